//! Helpers shared by the CLI integration tests: run the binary, find tools.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const EXAMPLE: &str = "examples/captured/etc/mender/mender.conf";
pub const EXAMPLE_NEW: &str = "https://new.eu.mender.example.com";

/// The workspace root: the example paths are relative to it.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `mender-migrate ARGS` in the workspace root.
pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mender-migrate"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

/// Runs `mender-migrate plan --config CONFIG --new-server NEW_SERVER EXTRA...`.
pub fn plan(config: &str, new_server: &str, extra: &[&str]) -> Output {
    let mut args = vec!["plan", "--config", config, "--new-server", new_server];
    args.extend_from_slice(extra);
    cli(&args)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `tool` is installed. Missing in CI is a failure; locally a visible skip.
pub fn have(tool: &str) -> bool {
    test_support::require_tool("this test", tool, "run .ci/install-deps").is_some()
}

/// The three artifacts `artifacts --name fleet --arch x86_64` writes.
pub const FLEET_ARTIFACTS: [&str; 3] = [
    "fleet-module-install-x86_64.mender",
    "fleet-stage1-dual.mender",
    "fleet-stage2-new-only.mender",
];

/// `mender-artifact validate` and `read` (with `-k PUBLIC` when given) accept `path`; `case`
/// names the case in a failure.
pub fn assert_official_tool_accepts(path: &Path, public: Option<&Path>, case: &str) {
    for verb in ["validate", "read"] {
        let mut cmd = Command::new("mender-artifact");
        cmd.arg(verb);
        if let Some(public) = public {
            cmd.arg("-k").arg(public);
        }
        let o = cmd.arg(path).output().unwrap();
        assert!(
            o.status.success(),
            "{case}: {verb} {}: {}{}",
            path.display(),
            text(&o.stdout),
            text(&o.stderr)
        );
    }
}

/// `out` is a refusal: exit `code`, stderr naming every needle, and `not_written` absent
/// (nothing left behind). `case` names the case in a failure.
pub fn assert_refused(out: &Output, code: i32, needles: &[&str], not_written: &Path, case: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{case}: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{case}: no {needle:?} in {err}");
    }
    assert!(
        !not_written.exists(),
        "{case}: {} left behind",
        not_written.display()
    );
}

/// Whether the `plan --json` output `v` warns with a text containing `needle`.
pub fn has_warning(v: &serde_json::Value, needle: &str) -> bool {
    v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains(needle))
}

/// The crate's stand-in module binary (an ELF header, never run).
pub use mender_migrate::fake_elf;

/// `mender-migrate artifacts` on the example config with a stand-in (never run) static x86-64
/// module binary and `--arch x86_64`, into `out`.
pub fn write_artifacts(dir: &Path, out: &Path, extra: &[&str]) -> Output {
    let module = dir.join("fake-module");
    std::fs::write(&module, fake_elf(62, 64, None)).unwrap();
    let mut args = vec![
        "artifacts",
        "--config",
        EXAMPLE,
        "--new-server",
        EXAMPLE_NEW,
        "--device-type",
        "qemux86-64",
        "--name",
        "fleet",
        "--out",
        out.to_str().unwrap(),
        "--module-binary",
        module.to_str().unwrap(),
        "--arch",
        "x86_64",
    ];
    args.extend_from_slice(extra);
    cli(&args)
}
