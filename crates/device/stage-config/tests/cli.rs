//! The tool as the layer calls it: files rewritten in place, refusals leave them untouched.

use std::path::Path;
use std::process::{Command, Output};

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_migration-stage-config"))
        .args(args)
        .output()
        .unwrap()
}

/// The tool's arguments as the layer passes them: `--old-server` only for stage 1 (`dual`),
/// `--fallback` only when the image has one.
fn stage_args<'a>(
    stage: &'a str,
    old: Option<&'a str>,
    new: &'a str,
    main: &'a str,
    fallback: Option<&'a str>,
) -> Vec<&'a str> {
    let mut args = vec!["--stage", stage];
    if let Some(old) = old {
        args.extend(["--old-server", old]);
    }
    args.extend(["--new-server", new, "--main", main]);
    if let Some(fallback) = fallback {
        args.extend(["--fallback", fallback]);
    }
    args
}

/// Runs the tool and asserts it succeeded, showing its stderr if not.
fn tool_ok(args: &[&str]) {
    let out = tool(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn dual_then_new_only_in_place_with_normalised_servers() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("transient_mender.conf");
    let fallback = dir.path().join("persistent_mender.conf");
    std::fs::write(
        &main,
        r#"{"ServerURL": "https://old.example.com", "TenantToken": "t"}"#,
    )
    .unwrap();
    std::fs::write(
        &fallback,
        r#"{"RootfsPartA": "/dev/a", "serverurl": "https://old.example.com"}"#,
    )
    .unwrap();
    let (m, f) = (main.to_str().unwrap(), fallback.to_str().unwrap());
    tool_ok(&stage_args(
        "dual",
        Some("https://old.example.com/"),
        "https://NEW.Example.com",
        m,
        Some(f),
    ));
    assert_eq!(
        json(&main),
        serde_json::json!({"TenantToken": "t", "Servers": [
            {"ServerURL": "https://old.example.com"}, {"ServerURL": "https://new.example.com"}]})
    );
    assert_eq!(
        json(&fallback),
        serde_json::json!({"RootfsPartA": "/dev/a"})
    );
    tool_ok(&stage_args("new-only", None, "new.example.com", m, Some(f)));
    assert_eq!(
        json(&main),
        serde_json::json!({"TenantToken": "t", "ServerURL": "https://new.example.com"})
    );
}

#[test]
fn refusals_exit_1_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("mender.conf");
    let original = r#"{"ServerURL": "https://old.example.com"}"#;
    std::fs::write(&main, original).unwrap();
    let m = main.to_str().unwrap();
    for new in [
        "https://new.example.com/?x=1",
        "https://user@new.example.com",
        "https://new.example.com:0",
        "https://new.example.com/api",
        "ftp://new.example.com",
        "https://old.example.com",
    ] {
        let out = tool(&stage_args(
            "dual",
            Some("https://old.example.com"),
            new,
            m,
            None,
        ));
        assert_eq!(out.status.code(), Some(1), "{new}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("error: "),
            "{new}"
        );
        assert_eq!(std::fs::read_to_string(&main).unwrap(), original, "{new}");
    }
    // A device (or build) whose server is not the old one is refused, as on a device.
    let out = tool(&stage_args(
        "dual",
        Some("https://other.example.com"),
        "https://new.example.com",
        m,
        None,
    ));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_to_string(&main).unwrap(), original);
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    assert_eq!(tool(&["--help"]).status.code(), Some(0));
    for args in [
        &[][..],
        &["--stage", "triple", "--new-server", "x", "--main", "m"][..],
        &["--stage", "dual", "--new-server", "x", "--main", "m"][..],
        &["--stage", "new-only", "--main", "m"][..],
        &["--bogus"][..],
    ] {
        assert_eq!(tool(args).status.code(), Some(2), "{args:?}");
    }
}
