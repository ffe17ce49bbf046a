//! The `mender-migrate` binary end to end: plan output, refusals, artifacts accepted by the
//! official `mender-artifact` tool and by our reader, and the checked-in example plan.

mod common;

use common::*;
use std::path::Path;

fn have_mender_artifact() -> bool {
    have("mender-artifact")
}

fn write_artifacts(dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--device-type", "raspberrypi4"];
    args.extend_from_slice(extra);
    common::write_artifacts(dir, &dir.join("out"), &args)
}

#[test]
fn plan_json_has_the_documented_shape() {
    let out = plan(EXAMPLE, EXAMPLE_NEW, &["--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s1 = &v["stage1"]["/etc/mender/mender.conf"];
    assert_eq!(
        s1["Servers"][0]["ServerURL"],
        "https://old.mender.example.com"
    );
    assert_eq!(s1["Servers"][1]["ServerURL"], EXAMPLE_NEW);
    assert!(s1.get("ServerURL").is_none());
    assert!(v["stage1"]["/var/lib/mender/mender.conf"].is_null());
    let s2 = &v["stage2"]["/etc/mender/mender.conf"];
    assert_eq!(s2["ServerURL"], EXAMPLE_NEW);
    assert!(s2.get("Servers").is_none());
    assert!(v["warnings"].is_array());
    // the tenant token is masked everywhere
    let all = text(&out.stdout);
    assert!(!all.contains("example-tenant-token"), "{all}");
    assert!(s2["TenantToken"].as_str().unwrap().ends_with("wbGU"));
}

#[test]
fn checked_in_example_plan_is_fresh() {
    let out = plan(
        EXAMPLE,
        EXAMPLE_NEW,
        &["--target", "aarch64-unknown-linux-musl", "--json"],
    );
    assert!(out.status.success());
    let expected_path = root().join("examples/expected/plan.json");
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::create_dir_all(expected_path.parent().unwrap()).unwrap();
        std::fs::write(&expected_path, &out.stdout).unwrap();
        return;
    }
    assert_eq!(
        expected,
        text(&out.stdout),
        "examples/expected/plan.json is stale: run `UPDATE_EXPECT=1 cargo test -p mender-migrate --test cli` and commit"
    );
}

#[test]
fn bad_inputs_fail_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        (
            "{\n  \"ServerURL\": \"https://old.example.com\",\n}",
            "line 3, column 1",
        ),
        (
            r#"{"Servers": [{"ServerURL": "https://a.example.com"}], "serverurl": "https://b.example.com"}"#,
            "Servers",
        ),
        (r#"{"Servers": []}"#, "panic"),
        (
            r#"{"ServerURL": "https://old.example.com/mender"}"#,
            "path prefix",
        ),
        (
            r#"{"ServerURL": "https://old.example.com", "UpdatePollIntervalSeconds": "5"}"#,
            "UpdatePollIntervalSeconds",
        ),
        (r#"{"ServerURL": "https://new.example.com"}"#, "same"),
    ];
    for (i, (content, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("case{i}.conf"));
        std::fs::write(&path, content).unwrap();
        let out = plan(path.to_str().unwrap(), "https://new.example.com", &[]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "case {i}: {err}");
        assert!(err.contains(needle), "case {i}: {err}");
        if i < 5 {
            assert!(
                err.contains(&format!("case{i}.conf")),
                "case {i} does not name the file: {err}"
            );
        }
    }
    // fallback holding ServerURL while main holds Servers: fatal across files
    let main = dir.path().join("main.conf");
    let fallback = dir.path().join("fallback.conf");
    std::fs::write(
        &main,
        r#"{"Servers": [{"ServerURL": "https://old.example.com"}]}"#,
    )
    .unwrap();
    std::fs::write(&fallback, r#"{"ServerURL": "https://old.example.com"}"#).unwrap();
    let out = plan(
        main.to_str().unwrap(),
        "https://new.example.com",
        &["--fallback-config", fallback.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("fallback.conf"),
        "{}",
        text(&out.stderr)
    );
    // missing file
    let out = plan("/nonexistent/mender.conf", "https://new.example.com", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/mender.conf"));
}

#[test]
fn artifacts_are_written_once_and_not_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = write_artifacts(dir.path(), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stage1 = dir.path().join("out/fleet-stage1-dual.mender");
    let before = std::fs::read(&stage1).unwrap();
    let again = write_artifacts(dir.path(), &[]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("--force"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(std::fs::read(&stage1).unwrap(), before);
    let forced = write_artifacts(dir.path(), &["--force"]);
    assert!(forced.status.success());
    // no temp files left behind
    let names: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn stage_artifacts_carry_the_plan_and_the_stage_dependency() {
    let dir = tempfile::tempdir().unwrap();
    assert!(write_artifacts(dir.path(), &[]).status.success());
    let read = |name: &str| {
        let f = std::fs::File::open(dir.path().join("out").join(name)).unwrap();
        menderartifact::read_info(std::io::BufReader::new(f)).unwrap()
    };
    let s1 = read("fleet-stage1-dual.mender");
    assert_eq!(s1.payload_types, ["server-migration"]);
    assert_eq!(s1.provides["server-migration.stage"], "dual");
    assert_eq!(s1.device_types, ["qemux86-64", "raspberrypi4"]);
    assert!(!s1.depends.contains_key("server-migration.stage"));
    let s2 = read("fleet-stage2-new-only.mender");
    assert_eq!(s2.provides["server-migration.stage"], "new-only");
    assert_eq!(
        s2.depends["server-migration.stage"],
        serde_json::json!("dual")
    );
    let m = read("fleet-module-install-x86_64.mender");
    assert_eq!(m.payload_types, ["single-file"]);
    let names: Vec<_> = m.payload_files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["dest_dir", "filename", "permissions", "server-migration"]
    );
}

#[test]
fn official_tool_accepts_every_artifact_in_both_modes_and_compressions() {
    if !have_mender_artifact() {
        return;
    }
    for extra in [
        &[][..],
        &["--mode", "replace"],
        &["--compression", "none"],
        &["--mode", "replace", "--restart", "service"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = write_artifacts(dir.path(), extra);
        assert!(out.status.success(), "{extra:?}: {}", text(&out.stderr));
        for name in FLEET_ARTIFACTS {
            let path = dir.path().join("out").join(name);
            assert_official_tool_accepts(&path, None, &format!("{extra:?}"));
        }
    }
}

#[test]
fn inspect_reports_and_refuses_corruption() {
    let dir = tempfile::tempdir().unwrap();
    assert!(write_artifacts(dir.path(), &[]).status.success());
    let path = dir.path().join("out/fleet-stage1-dual.mender");
    let ok = cli(&["inspect", path.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("unsigned"));
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    bytes.truncate(len / 2);
    let bad = dir.path().join("truncated.mender");
    std::fs::write(&bad, bytes).unwrap();
    let out = cli(&["inspect", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("truncated.mender"));
}
