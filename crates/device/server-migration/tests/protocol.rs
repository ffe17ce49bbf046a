//! Drives the module binary through the state sequences the real 3.4 and 5.x clients run.

mod common;
use common::*;
use menderconf::{ConfigFile, ConfigSet, Restart, Stage};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

fn answer<'a>(answers: &'a [(String, String)], state: &str) -> Vec<&'a str> {
    answers
        .iter()
        .filter(|(s, _)| s == state)
        .map(|(_, o)| o.as_str())
        .collect()
}

/// Loads the device's files with the engine, as the client would see them.
fn loaded(dev: &Device) -> ConfigSet {
    // Real paths: the device's symlinks are absolute, i.e. only meaningful inside the root.
    ConfigSet::load(&dev.path(MAIN), Some(&dev.path(FALLBACK_REAL))).unwrap()
}

fn servers(dev: &Device) -> Vec<String> {
    loaded(dev)
        .servers()
        .iter()
        .map(|s| s.as_str().to_string())
        .collect()
}

#[test]
fn client_34_success_automatic_then_stage2() {
    let dev = Device::debian();
    let before = dev.configs();
    let tree = dev.tree("stage1", Some(&plan(Stage::Dual, Restart::Reboot)));
    let answers = dev.sequence(&tree, &SUCCESS_34_AUTOMATIC, &[]);
    assert_eq!(answer(&answers, "SupportsRollback"), vec!["Yes\n"]);
    assert_eq!(answer(&answers, "NeedsArtifactReboot"), vec!["Automatic\n"]);
    for (s, out) in &answers {
        if s != "SupportsRollback" && s != "NeedsArtifactReboot" {
            assert_eq!(out, "", "state {s} must print nothing");
        }
    }
    let after = dev.configs();
    assert_ne!(after.0, before.0);
    assert_ne!(after.1, before.1);
    assert_eq!(servers(&dev), vec![OLD, NEW]);
    loaded(&dev).validate().unwrap();
    // Unrelated keys stay; ServerURL is removed from both files, not blanked.
    let main = ConfigFile::parse("m", after.0.as_ref().unwrap()).unwrap();
    assert_eq!(main.object.get("UpdatePollIntervalSeconds").unwrap(), 5);
    let fb = ConfigFile::parse("f", after.1.as_ref().unwrap()).unwrap();
    assert!(fb.object.get("ServerURL").is_none());
    assert_eq!(fb.object.get("TenantToken").unwrap(), "tok-1234");
    // Mode and owner kept; the fallback symlink directory still a symlink.
    assert_eq!(fs::metadata(dev.path(MAIN)).unwrap().mode() & 0o777, 0o644);
    assert_eq!(
        fs::metadata(dev.path(FALLBACK_REAL)).unwrap().mode() & 0o777,
        0o600
    );
    assert!(fs::symlink_metadata(dev.path("var/lib/mender"))
        .unwrap()
        .file_type()
        .is_symlink());
    // Backups kept for manual recovery.
    let backup = dev.path("data/mender/server-migration/backup");
    assert_eq!(
        fs::read(backup.join("etc_mender_mender.conf")).unwrap(),
        before.0.unwrap()
    );
    assert_eq!(
        fs::read(backup.join("var_lib_mender_mender.conf")).unwrap(),
        before.1.unwrap()
    );
    assert!(!dev.path("var/lib/mender-migration").exists());

    let inv = dev.run(&["inventory"], None);
    assert_eq!(
        String::from_utf8(inv.stdout).unwrap(),
        format!("server_migration_stage=dual\nserver_migration_servers={OLD}\nserver_migration_servers={NEW}\nserver_migration_phase=committed\n")
    );

    // Stage 2 from the new server.
    let tree2 = dev.tree("stage2", Some(&plan(Stage::NewOnly, Restart::Reboot)));
    dev.sequence(&tree2, &SUCCESS_34_AUTOMATIC, &[]);
    assert_eq!(servers(&dev), vec![NEW]);
    loaded(&dev).validate().unwrap();
    let inv = dev.run(&["inventory"], None);
    assert_eq!(
        String::from_utf8(inv.stdout).unwrap(),
        format!("server_migration_stage=new-only\nserver_migration_servers={NEW}\nserver_migration_phase=committed\n")
    );
    let status = String::from_utf8(dev.run(&["status"], None).stdout).unwrap();
    assert!(status.contains("artifact: stage2"), "{status}");
    assert!(status.contains("phase: committed"), "{status}");
    assert!(
        status.contains("/etc/mender/mender.conf: new version"),
        "{status}"
    );
}

#[test]
fn client_34_failure_in_install_rolls_back_without_reboot() {
    let dev = Device::debian();
    let before = dev.configs();
    // A stage-2 artifact on a device that never got stage 1: precondition refuses.
    let tree = dev.tree(
        "stage2-too-early",
        Some(&plan(Stage::NewOnly, Restart::Reboot)),
    );
    let answers = dev.sequence(
        &tree,
        &[
            "Download",
            "SupportsRollback",
            "ArtifactInstall",
            "ArtifactRollback",
            "NeedsArtifactReboot",
            "ArtifactFailure",
            "Cleanup",
        ],
        &["ArtifactInstall"],
    );
    assert_eq!(answer(&answers, "NeedsArtifactReboot"), vec!["No\n"]);
    assert_eq!(dev.configs(), before);
    let (_, _, err) = dev.state("ArtifactInstall", &tree);
    assert!(
        err.contains("install stage 1"),
        "message should say what to do: {err}"
    );
}

#[test]
fn client_34_failure_after_reboot_rolls_back_with_rollback_reboot() {
    let dev = Device::debian();
    let before = dev.configs();
    let tree = dev.tree("stage1", Some(&plan(Stage::Dual, Restart::Reboot)));
    let answers = dev.sequence(
        &tree,
        &[
            "Download",
            "SupportsRollback",
            "ArtifactInstall",
            "NeedsArtifactReboot",
            "ArtifactVerifyReboot",
            // commit-phase status report failed: no ArtifactCommit
            "ArtifactRollback",
            "NeedsArtifactReboot",
            "ArtifactRollbackReboot",
            "ArtifactVerifyRollbackReboot",
            "ArtifactFailure",
            "Cleanup",
        ],
        &[],
    );
    // The running client loaded the new config at boot: rolling back needs another reboot.
    assert_eq!(
        answer(&answers, "NeedsArtifactReboot"),
        vec!["Automatic\n", "Automatic\n"]
    );
    assert_eq!(dev.configs(), before);
    let inv = String::from_utf8(dev.run(&["inventory"], None).stdout).unwrap();
    assert!(inv.starts_with("server_migration_stage=none\n"), "{inv}");
    assert!(inv.contains("server_migration_phase=rolled-back"), "{inv}");
}

#[test]
fn verify_reboot_fails_when_file_changed_and_rollback_restores() {
    let dev = Device::debian();
    let before = dev.configs();
    let tree = dev.tree("stage1", Some(&plan(Stage::Dual, Restart::Reboot)));
    dev.sequence(
        &tree,
        &["Download", "SupportsRollback", "ArtifactInstall"],
        &[],
    );
    dev.write(
        MAIN,
        "{\"ServerURL\": \"https://tampered.example.com\"}",
        0o644,
    );
    let (code, _, err) = dev.state("ArtifactVerifyReboot", &tree);
    assert_ne!(code, 0);
    assert!(
        err.contains("/etc/mender/mender.conf is not the new version"),
        "{err}"
    );
    dev.sequence(
        &tree,
        &[
            "ArtifactRollback",
            "ArtifactRollbackReboot",
            "ArtifactVerifyRollbackReboot",
            "ArtifactFailure",
            "Cleanup",
        ],
        &[],
    );
    assert_eq!(dev.configs(), before);
}

#[test]
fn client_5x_success_and_rollback_sequences() {
    let dev = Device::fallback_only();
    let before = dev.configs();
    let tree = dev.tree("stage1", Some(&plan(Stage::Dual, Restart::Reboot)));
    let answers = dev.sequence(
        &tree,
        &[
            "ProvidePayloadFileSizes",
            "Download",
            "ArtifactInstall",
            "NeedsArtifactReboot",
            "SupportsRollback",
            "ArtifactVerifyReboot",
            "ArtifactCommit",
            "Cleanup",
        ],
        &[],
    );
    assert_eq!(answer(&answers, "ProvidePayloadFileSizes"), vec![""]);
    assert_eq!(answer(&answers, "NeedsArtifactReboot"), vec!["Automatic\n"]);
    assert_eq!(servers(&dev), vec![OLD, NEW]);
    // Only the fallback held the config: main stays absent, fallback rewritten.
    assert_eq!(dev.configs().0, None);
    assert_ne!(dev.configs().1, before.1);

    // 5.x rollback: SupportsRollback twice, ArtifactRollback, ArtifactFailure.
    let dev = Device::fallback_only();
    let tree = dev.tree("stage1", Some(&plan(Stage::Dual, Restart::Reboot)));
    let answers = dev.sequence(
        &tree,
        &[
            "ProvidePayloadFileSizes",
            "Download",
            "ArtifactInstall",
            "NeedsArtifactReboot",
            "SupportsRollback",
            "SupportsRollback",
            "ArtifactRollback",
            "ArtifactFailure",
            "Cleanup",
        ],
        &[],
    );
    assert_eq!(answer(&answers, "SupportsRollback"), vec!["Yes\n", "Yes\n"]);
    assert_eq!(dev.configs(), before);
}

#[test]
fn service_restart_mode_answers_no_and_schedules_restart_from_cleanup() {
    let dev = Device::debian();
    let log = dev.fake_systemd_run(0);
    let tree = dev.tree("stage1", Some(&plan(Stage::Dual, Restart::Service)));
    let answers = dev.sequence(
        &tree,
        &[
            "Download",
            "SupportsRollback",
            "ArtifactInstall",
            "NeedsArtifactReboot",
            "ArtifactCommit",
        ],
        &[],
    );
    assert_eq!(answer(&answers, "NeedsArtifactReboot"), vec!["No\n"]);
    assert!(!log.exists(), "no restart may be scheduled before Cleanup");
    dev.sequence(&tree, &["Cleanup"], &[]);
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "--on-active=30 --unit=server-migration-restart systemctl restart mender-client\n"
    );
    // Cleanup again (client retry) does not schedule twice.
    dev.sequence(&tree, &["Cleanup"], &[]);
    assert_eq!(fs::read_to_string(&log).unwrap().lines().count(), 1);
    assert_eq!(servers(&dev), vec![OLD, NEW]);

    // A rolled-back service-mode deployment restarts nothing.
    let dev = Device::debian();
    let log = dev.fake_systemd_run(0);
    let tree = dev.tree("stage1", Some(&plan(Stage::Dual, Restart::Service)));
    dev.sequence(
        &tree,
        &[
            "Download",
            "SupportsRollback",
            "ArtifactInstall",
            "ArtifactRollback",
            "ArtifactFailure",
            "Cleanup",
        ],
        &[],
    );
    assert!(!log.exists());
}

#[test]
fn service_restart_failure_is_reported_by_cleanup() {
    let dev = Device::debian();
    dev.fake_systemd_run(1);
    let tree = dev.tree("stage1", Some(&plan(Stage::Dual, Restart::Service)));
    dev.sequence(
        &tree,
        &[
            "Download",
            "SupportsRollback",
            "ArtifactInstall",
            "NeedsArtifactReboot",
            "ArtifactCommit",
        ],
        &[],
    );
    let (code, _, err) = dev.state("Cleanup", &tree);
    assert_eq!(code, 1);
    assert!(err.contains("cannot schedule the client restart"), "{err}");
    // The migration itself stays committed.
    assert_eq!(servers(&dev), vec![OLD, NEW]);
}

#[test]
fn unknown_states_exit_zero_silently() {
    let dev = Device::debian();
    let before = dev.configs();
    let tree = dev.tree("x", None);
    for s in [
        "SomeFutureState",
        "ArtifactInstall_Enter",
        "",
        "PerformRollback",
    ] {
        let (code, out, err) = dev.state(s, &tree);
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (0, "", ""),
            "state {s:?}"
        );
    }
    for args in [
        &["SupportsAugmentedArtifacts"][..],
        &["FutureQuery", "a", "b"][..],
    ] {
        let out = dev.run(args, None);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{args:?}");
    }
    assert_eq!(dev.configs(), before);
    assert!(!dev.path("data/mender/server-migration").exists());
}

#[test]
fn rollback_without_install_is_a_no_op() {
    let dev = Device::debian();
    let before = dev.configs();
    let tree = dev.tree("stage1", Some(&plan(Stage::Dual, Restart::Reboot)));
    dev.sequence(
        &tree,
        &[
            "ArtifactRollback",
            "ArtifactVerifyRollbackReboot",
            "ArtifactFailure",
            "Cleanup",
        ],
        &[],
    );
    assert_eq!(dev.configs(), before);
    // After a finished migration, a stray rollback does not undo it.
    dev.sequence(&tree, &SUCCESS_34_AUTOMATIC, &[]);
    let after = dev.configs();
    dev.sequence(&tree, &["ArtifactRollback"], &[]);
    assert_eq!(dev.configs(), after);
    // Rolling back twice is harmless.
    let dev = Device::debian();
    let tree = dev.tree("stage1", Some(&plan(Stage::Dual, Restart::Reboot)));
    dev.sequence(
        &tree,
        &["ArtifactInstall", "ArtifactRollback", "ArtifactRollback"],
        &[],
    );
    assert_eq!(dev.configs(), before);
}

#[test]
fn replace_mode_writes_rendered_files_and_removes_absent_ones() {
    let dev = Device::debian();
    let tree = dev.tree("stage1-replace", None);
    // The device's own settings, all in the fallback now (replace mode may move keys between
    // the files, never change them).
    let fallback_new = format!(
        "{{\n  \"TenantToken\": \"tok-1234\",\n  \"UpdatePollIntervalSeconds\": 5,\n  \"InventoryPollIntervalSeconds\": 5,\n  \"Servers\": [{{\"ServerURL\": \"{OLD}\"}}, {{\"ServerURL\": \"{NEW}\"}}]\n}}\n"
    );
    fs::write(tree.join("files/var-lib-mender.conf"), &fallback_new).unwrap();
    let plan = format!(
        "{{\"format\":1,\"mode\":\"replace\",\"stage\":\"dual\",\"old_server\":\"{OLD}\",\"new_server\":\"{NEW}\",\"restart\":\"reboot\",\
         \"files\":{{\"/etc/mender/mender.conf\":null,\"/var/lib/mender/mender.conf\":\"var-lib-mender.conf\"}}}}"
    );
    fs::write(tree.join("files/plan.json"), plan).unwrap();
    dev.sequence(&tree, &SUCCESS_34_AUTOMATIC, &[]);
    assert_eq!(dev.configs(), (None, Some(fallback_new.into_bytes())));
    assert!(dev
        .path("data/mender/server-migration/backup/etc_mender_mender.conf")
        .exists());
}

#[test]
fn replace_mode_refuses_a_device_whose_own_settings_differ() {
    // The captured config had other poll intervals than this device: replace mode would
    // overwrite the device's values, so it refuses with nothing changed.
    let dev = Device::debian();
    let before = dev.configs();
    let tree = dev.tree("replace-foreign", None);
    let fallback_new = format!(
        "{{\"TenantToken\": \"tok-1234\", \"UpdatePollIntervalSeconds\": 60, \"InventoryPollIntervalSeconds\": 5, \"Servers\": [{{\"ServerURL\": \"{OLD}\"}}, {{\"ServerURL\": \"{NEW}\"}}]}}\n"
    );
    fs::write(tree.join("files/fb.conf"), &fallback_new).unwrap();
    let plan = format!(
        "{{\"format\":1,\"mode\":\"replace\",\"stage\":\"dual\",\"old_server\":\"{OLD}\",\"new_server\":\"{NEW}\",\
         \"files\":{{\"/etc/mender/mender.conf\":null,\"/var/lib/mender/mender.conf\":\"fb.conf\"}}}}"
    );
    fs::write(tree.join("files/plan.json"), plan).unwrap();
    let out = dev.run(&["ArtifactInstall", tree.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UpdatePollIntervalSeconds") && err.contains("--mode patch"),
        "{err}"
    );
    assert_eq!(dev.configs(), before);
}

#[test]
fn removed_file_comes_back_on_rollback_with_mode() {
    let dev = Device::debian();
    let before = dev.configs();
    let tree = dev.tree("replace", None);
    let fallback_new = format!(
        "{{\"TenantToken\": \"tok-1234\", \"UpdatePollIntervalSeconds\": 5, \"InventoryPollIntervalSeconds\": 5, \"Servers\": [{{\"ServerURL\": \"{OLD}\"}}, {{\"ServerURL\": \"{NEW}\"}}]}}\n"
    );
    fs::write(tree.join("files/fb.conf"), &fallback_new).unwrap();
    let plan = format!(
        "{{\"format\":1,\"mode\":\"replace\",\"stage\":\"dual\",\"old_server\":\"{OLD}\",\"new_server\":\"{NEW}\",\
         \"files\":{{\"/etc/mender/mender.conf\":null,\"/var/lib/mender/mender.conf\":\"fb.conf\"}}}}"
    );
    fs::write(tree.join("files/plan.json"), plan).unwrap();
    dev.sequence(
        &tree,
        &["Download", "SupportsRollback", "ArtifactInstall"],
        &[],
    );
    assert_eq!(dev.configs().0, None);
    dev.sequence(
        &tree,
        &["ArtifactRollback", "ArtifactFailure", "Cleanup"],
        &[],
    );
    assert_eq!(dev.configs(), before);
    assert_eq!(fs::metadata(dev.path(MAIN)).unwrap().mode() & 0o777, 0o644);
}

#[test]
fn new_file_gets_mode_0600_and_file_symlink_is_kept() {
    // Device with no config at all except a main file reached through a symlink.
    let dev = Device::empty();
    dev.write(
        "opt/conf/real.conf",
        &format!("{{\"ServerURL\": \"{OLD}\"}}\n"),
        0o640,
    );
    fs::remove_dir(dev.path("etc/mender")).unwrap();
    std::os::unix::fs::symlink("/opt/conf", dev.path("etc/mender")).unwrap();
    fs::rename(
        dev.path("opt/conf/real.conf"),
        dev.path("opt/conf/mender.conf"),
    )
    .unwrap();
    let tree = dev.tree("stage1", Some(&plan(Stage::Dual, Restart::Reboot)));
    dev.sequence(&tree, &SUCCESS_34_AUTOMATIC, &[]);
    assert!(fs::symlink_metadata(dev.path("etc/mender"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::metadata(dev.path("opt/conf/mender.conf"))
            .unwrap()
            .mode()
            & 0o777,
        0o640
    );
    let set = ConfigSet::load(&dev.path("opt/conf/mender.conf"), None).unwrap();
    assert_eq!(
        set.servers().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        vec![OLD, NEW]
    );

    // Replace mode creating a file that did not exist: 0600.
    let dev = Device::fallback_only();
    let tree = dev.tree("replace", None);
    fs::write(
        tree.join("files/main.conf"),
        format!("{{\"Servers\": [{{\"ServerURL\": \"{OLD}\"}}, {{\"ServerURL\": \"{NEW}\"}}]}}\n"),
    )
    .unwrap();
    fs::write(
        tree.join("files/fb.conf"),
        "{\"TenantToken\": \"tok-1234\"}\n",
    )
    .unwrap();
    let plan = format!(
        "{{\"format\":1,\"mode\":\"replace\",\"stage\":\"dual\",\"old_server\":\"{OLD}\",\"new_server\":\"{NEW}\",\
         \"files\":{{\"/etc/mender/mender.conf\":\"main.conf\",\"/var/lib/mender/mender.conf\":\"fb.conf\"}}}}"
    );
    fs::write(tree.join("files/plan.json"), plan).unwrap();
    dev.sequence(&tree, &SUCCESS_34_AUTOMATIC, &[]);
    assert_eq!(fs::metadata(dev.path(MAIN)).unwrap().mode() & 0o777, 0o600);
    assert_eq!(servers(&dev), vec![OLD, NEW]);
}

#[test]
fn root_flag_works_like_env_and_usage_errors_exit_2() {
    let dev = Device::debian();
    let out = std::process::Command::new(BIN)
        .args(["--root", dev.root().to_str().unwrap(), "status"])
        .env_remove("SERVER_MIGRATION_ROOT")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no journal"));
    let out = std::process::Command::new(BIN)
        .args(["a", "b", "c"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = dev.run(&["recover"], None);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no journal"));
}

#[test]
fn inventory_without_migration_reports_none_and_servers() {
    let dev = Device::debian();
    let out = dev.run(&["inventory"], None);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("server_migration_stage=none\nserver_migration_servers={OLD}\n")
    );
    let dev = Device::debian();
    dev.write(MAIN, "{not json", 0o644);
    let out = String::from_utf8(dev.run(&["inventory"], None).stdout).unwrap();
    assert!(
        out.starts_with("server_migration_stage=none\nserver_migration_error="),
        "{out}"
    );
    assert!(out.contains("/etc/mender/mender.conf"), "{out}");
}

#[test]
fn inventory_script_is_posix_sh_and_calls_the_module() {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("support/mender-inventory-server-migration");
    let text = fs::read_to_string(&script).unwrap();
    assert!(text.starts_with("#!/bin/sh\n"));
    let dev = Device::debian();
    let out = std::process::Command::new("sh")
        .arg(&script)
        .env("SERVER_MIGRATION_MODULE", BIN)
        .env("SERVER_MIGRATION_ROOT", dev.root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("server_migration_stage=none\nserver_migration_servers={OLD}\n")
    );
    // Module missing: the script still prints a line instead of failing the client's inventory.
    let out = std::process::Command::new("sh")
        .arg(&script)
        .env("SERVER_MIGRATION_MODULE", "/nonexistent/server-migration")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("server_migration_error="));
}

#[test]
fn owner_is_kept_across_install_and_rollback() {
    let dev = Device::debian();
    let main = dev.path(MAIN);
    if std::os::unix::fs::chown(&main, Some(1234), Some(5678)).is_err() {
        // CI runs as root (the module's real environment); there a failing chown is a failure.
        test_support::skip(
            "owner_is_kept_across_install_and_rollback",
            "needs root to chown",
        );
        return;
    }
    let tree = dev.tree("stage1", Some(&plan(Stage::Dual, Restart::Reboot)));
    dev.sequence(
        &tree,
        &["Download", "SupportsRollback", "ArtifactInstall"],
        &[],
    );
    let m = fs::metadata(&main).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (1234, 5678, 0o644));
    dev.sequence(&tree, &["ArtifactRollback"], &[]);
    let m = fs::metadata(&main).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (1234, 5678, 0o644));
    // Backups and journal are private to root.
    let state = dev.path("data/mender/server-migration");
    assert_eq!(fs::metadata(&state).unwrap().mode() & 0o777, 0o700);
    assert_eq!(
        fs::metadata(state.join("backup/etc_mender_mender.conf"))
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn client_5x_measured_sequence_with_service_restart() {
    // The exact order measured on mender-update 5.1.0 (NeedsArtifactReboot answered No).
    let dev = Device::fallback_only();
    dev.write(
        "usr/lib/systemd/system/mender-updated.service",
        "[Unit]\n",
        0o644,
    );
    dev.write(
        "usr/lib/systemd/system/mender-authd.service",
        "[Unit]\n",
        0o644,
    );
    let log = dev.fake_systemd_run(0);
    let tree = dev.tree("stage1", Some(&plan(Stage::Dual, Restart::Service)));
    let answers = dev.sequence(
        &tree,
        &[
            "ProvidePayloadFileSizes",
            "Download",
            "ArtifactInstall",
            "NeedsArtifactReboot",
            "SupportsRollback",
            "ArtifactCommit",
            "Cleanup",
        ],
        &[],
    );
    assert_eq!(answer(&answers, "NeedsArtifactReboot"), vec!["No\n"]);
    assert_eq!(answer(&answers, "SupportsRollback"), vec!["Yes\n"]);
    assert_eq!(servers(&dev), vec![OLD, NEW]);
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        "--on-active=30 --unit=server-migration-restart systemctl restart mender-authd mender-updated\n"
    );
}

#[test]
fn install_puts_the_inventory_script_in_place_when_the_directory_exists() {
    let script = "usr/share/mender/inventory/mender-inventory-server-migration";
    // Without the client's inventory directory nothing is created (and the install still works).
    let bare = Device::debian();
    let tree = bare.tree("stage1", Some(&plan(Stage::Dual, Restart::Reboot)));
    let (code, _, _) = bare.state("ArtifactInstall", &tree);
    assert_eq!(code, 0);
    assert!(!bare.path(script).exists());
    assert!(!bare.path("usr/share/mender/inventory").exists());

    let dev = Device::debian();
    fs::create_dir_all(dev.path("usr/share/mender/inventory")).unwrap();
    let tree = dev.tree("stage1", Some(&plan(Stage::Dual, Restart::Reboot)));
    let (code, _, err) = dev.state("ArtifactInstall", &tree);
    assert_eq!(code, 0, "{err}");
    let installed = fs::read_to_string(dev.path(script)).unwrap();
    assert!(installed.starts_with("#!/bin/sh") && installed.contains("server-migration"));
    assert_eq!(
        fs::metadata(dev.path(script)).unwrap().mode() & 0o777,
        0o755
    );
    assert_eq!(
        installed,
        fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("support/mender-inventory-server-migration")
        )
        .unwrap()
    );
}
