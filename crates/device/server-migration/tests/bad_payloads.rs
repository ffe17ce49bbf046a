//! Bad payloads and bad device configs: ArtifactInstall refuses with a clear message and leaves the device files byte-identical.

mod common;
use common::*;
use menderconf::{Restart, Stage};
use std::fs;
use std::os::unix::fs::PermissionsExt;

/// Runs the 3.4 failure path and returns ArtifactInstall's stderr; asserts nothing changed.
fn refused(dev: &Device, tree: &std::path::Path) -> String {
    let before = dev.configs();
    let (code, out, err) = dev.state("ArtifactInstall", tree);
    assert_eq!(code, 1, "ArtifactInstall must fail; stderr: {err}");
    assert_eq!(out, "");
    assert!(err.starts_with("server-migration: error: "), "{err}");
    assert_eq!(
        dev.configs(),
        before,
        "device files changed after a refused install"
    );
    let answers = dev.sequence(
        tree,
        &[
            "ArtifactRollback",
            "NeedsArtifactReboot",
            "ArtifactFailure",
            "Cleanup",
        ],
        &[],
    );
    assert_eq!(answers[1].1, "No\n", "nothing changed, so no reboot");
    assert_eq!(
        dev.configs(),
        before,
        "device files changed by the rollback path"
    );
    err
}

#[test]
fn missing_plan() {
    let dev = Device::debian();
    let tree = dev.tree("no-plan", None);
    let err = refused(&dev, &tree);
    assert!(
        err.contains("plan.json") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn invalid_json_plan() {
    let dev = Device::debian();
    let tree = dev.tree("bad-json", Some(b"{\"format\": 1, \"mode\": "));
    let err = refused(&dev, &tree);
    assert!(
        err.contains("files/plan.json") && err.contains("invalid plan"),
        "{err}"
    );
}

#[test]
fn unknown_plan_format() {
    let dev = Device::debian();
    let plan = String::from_utf8(plan(Stage::Dual, Restart::Reboot))
        .unwrap()
        .replace("\"format\": 1", "\"format\": 7");
    assert!(plan.contains("\"format\": 7"));
    let tree = dev.tree("format7", Some(plan.as_bytes()));
    let err = refused(&dev, &tree);
    assert!(err.contains("format 7"), "{err}");
}

#[test]
fn plan_result_with_servers_and_serverurl_is_refused() {
    // Replace mode whose rendered main file has Servers while the fallback keeps its ServerURL:
    // the 3.4 client would exit 1 on this combination.
    let dev = Device::debian();
    let tree = dev.tree("conflict", None);
    fs::write(
        tree.join("files/main.conf"),
        format!("{{\"Servers\": [{{\"ServerURL\": \"{OLD}\"}}, {{\"ServerURL\": \"{NEW}\"}}]}}\n"),
    )
    .unwrap();
    fs::write(
        tree.join("files/plan.json"),
        format!(
            "{{\"format\":1,\"mode\":\"replace\",\"stage\":\"dual\",\"old_server\":\"{OLD}\",\"new_server\":\"{NEW}\",\
             \"files\":{{\"/etc/mender/mender.conf\":\"main.conf\"}}}}"
        ),
    )
    .unwrap();
    let err = refused(&dev, &tree);
    assert!(
        err.contains("ServerURL") && err.contains("Servers"),
        "{err}"
    );
}

#[test]
fn empty_servers_is_refused() {
    let dev = Device::debian();
    let tree = dev.tree("empty-servers", None);
    fs::write(tree.join("files/main.conf"), "{\"Servers\": []}\n").unwrap();
    fs::write(
        tree.join("files/fb.conf"),
        "{\"TenantToken\": \"tok-1234\"}\n",
    )
    .unwrap();
    fs::write(
        tree.join("files/plan.json"),
        format!(
            "{{\"format\":1,\"mode\":\"replace\",\"stage\":\"dual\",\"old_server\":\"{OLD}\",\"new_server\":\"{NEW}\",\
             \"files\":{{\"/etc/mender/mender.conf\":\"main.conf\",\"/var/lib/mender/mender.conf\":\"fb.conf\"}}}}"
        ),
    )
    .unwrap();
    let err = refused(&dev, &tree);
    assert!(err.contains("\"Servers\": []"), "{err}");
}

#[test]
fn unreadable_or_invalid_device_config_is_refused() {
    // Invalid JSON on the device.
    let dev = Device::debian();
    dev.write(MAIN, "{\"ServerURL\": ", 0o644);
    let tree = dev.tree("s1", Some(&plan(Stage::Dual, Restart::Reboot)));
    let err = refused(&dev, &tree);
    assert!(
        err.contains("/etc/mender/mender.conf") && err.contains("invalid JSON"),
        "{err}"
    );

    // A directory where the fallback file should be.
    let dev = Device::debian();
    fs::remove_file(dev.path(FALLBACK_REAL)).unwrap();
    fs::create_dir(dev.path(FALLBACK_REAL)).unwrap();
    let tree = dev.tree("s1", Some(&plan(Stage::Dual, Restart::Reboot)));
    let err = refused(&dev, &tree);
    assert!(err.contains("/var/lib/mender/mender.conf"), "{err}");

    // Unreadable (permissions); root reads anything, so only meaningful as non-root.
    let dev = Device::debian();
    fs::set_permissions(dev.path(MAIN), fs::Permissions::from_mode(0o000)).unwrap();
    if fs::read(dev.path(MAIN)).is_err() {
        let tree = dev.tree("s1", Some(&plan(Stage::Dual, Restart::Reboot)));
        let err = refused(&dev, &tree);
        assert!(
            err.contains("cannot read device config /etc/mender/mender.conf"),
            "{err}"
        );
    }
    fs::set_permissions(dev.path(MAIN), fs::Permissions::from_mode(0o644)).unwrap();
}

#[test]
fn wrong_device_for_the_stage_is_refused() {
    // Device talking to a third server: stage 1 built for another fleet.
    let dev = Device::empty();
    dev.write(
        FALLBACK_REAL,
        "{\"ServerURL\": \"https://other.example.com\"}\n",
        0o600,
    );
    let tree = dev.tree("s1", Some(&plan(Stage::Dual, Restart::Reboot)));
    let err = refused(&dev, &tree);
    assert!(err.contains("https://other.example.com"), "{err}");
}

#[test]
fn replace_payload_naming_missing_or_foreign_files_is_refused() {
    let dev = Device::debian();
    let tree = dev.tree("missing-file", None);
    fs::write(
        tree.join("files/plan.json"),
        format!(
            "{{\"format\":1,\"mode\":\"replace\",\"stage\":\"dual\",\"old_server\":\"{OLD}\",\"new_server\":\"{NEW}\",\
             \"files\":{{\"/etc/mender/mender.conf\":\"nope.conf\"}}}}"
        ),
    )
    .unwrap();
    let err = refused(&dev, &tree);
    assert!(
        err.contains("nope.conf") && err.contains("/etc/mender/mender.conf"),
        "{err}"
    );

    let tree = dev.tree("foreign-path", None);
    fs::write(
        tree.join("files/plan.json"),
        format!(
            "{{\"format\":1,\"mode\":\"replace\",\"stage\":\"dual\",\"old_server\":\"{OLD}\",\"new_server\":\"{NEW}\",\
             \"files\":{{\"/etc/passwd\":null}}}}"
        ),
    )
    .unwrap();
    let err = refused(&dev, &tree);
    assert!(err.contains("/etc/passwd"), "{err}");

    let tree = dev.tree("escape", None);
    fs::write(
        tree.join("files/plan.json"),
        format!(
            "{{\"format\":1,\"mode\":\"replace\",\"stage\":\"dual\",\"old_server\":\"{OLD}\",\"new_server\":\"{NEW}\",\
             \"files\":{{\"/etc/mender/mender.conf\":\"../header/artifact_name\"}}}}"
        ),
    )
    .unwrap();
    let err = refused(&dev, &tree);
    assert!(err.contains("not a plain file name"), "{err}");
}

#[test]
fn corrupt_journal_stops_the_module_with_a_clear_error() {
    let dev = Device::debian();
    let before = dev.configs();
    fs::create_dir_all(dev.path("data/mender/server-migration")).unwrap();
    fs::write(
        dev.path("data/mender/server-migration/journal.cbor"),
        b"garbage",
    )
    .unwrap();
    let tree = dev.tree("s1", Some(&plan(Stage::Dual, Restart::Reboot)));
    let (code, _, err) = dev.state("ArtifactInstall", &tree);
    assert_eq!(code, 1);
    assert!(err.contains("journal") && err.contains("corrupt"), "{err}");
    assert_eq!(dev.configs(), before);
}
