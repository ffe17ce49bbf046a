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

/// Permission bits of `path` (following symlinks).
fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().mode() & 0o777
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).unwrap().file_type().is_symlink()
}

/// What the module's `inventory` command prints on this device.
fn inventory(dev: &Device) -> String {
    let out = dev.run(&["inventory"], None);
    assert!(out.status.success(), "inventory: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// One client run from a fresh device: the states in the client's order, and what the module
/// must answer and leave behind.
struct ClientRun {
    /// Names the run in every failure message (each was once a test of its own).
    name: &'static str,
    device: fn() -> Device,
    plan: (Stage, Restart),
    /// A fake `systemd-run` exiting with this code is installed first.
    systemd_run: Option<i32>,
    phases: &'static [&'static [&'static str]],
    fails: &'static [&'static str],
    /// What the query states print, occurrence by occurrence; every other state prints nothing.
    answers: &'static [(&'static str, &'static [&'static str])],
    /// The servers the device ends with; `None`: both files byte-identical to before.
    servers: Option<&'static [&'static str]>,
    /// The run's own further checks.
    then: fn(&Ran),
}

/// A finished [`ClientRun`] for its `then` checks.
struct Ran {
    name: &'static str,
    dev: Device,
    tree: std::path::PathBuf,
    before: (Option<Vec<u8>>, Option<Vec<u8>>),
    /// The fake `systemd-run`'s log.
    systemd_log: Option<std::path::PathBuf>,
}

impl ClientRun {
    fn run(&self) {
        let name = self.name;
        // Shown with a failure's output, also for a failing `then` check.
        eprintln!("client run: {name}");
        let dev = (self.device)();
        let before = dev.configs();
        let systemd_log = self.systemd_run.map(|code| dev.fake_systemd_run(code));
        let tree_name = match self.plan.0 {
            Stage::Dual => "stage1",
            Stage::NewOnly => "stage2",
        };
        let tree = dev.tree(tree_name, Some(&plan(self.plan.0, self.plan.1)));
        let answers = dev.client(&tree, self.phases, self.fails);
        for (state, expected) in self.answers {
            assert_eq!(answer(&answers, state), *expected, "{name}: {state}");
        }
        for (state, out) in &answers {
            if !self.answers.iter().any(|(s, _)| s == state) {
                assert_eq!(out, "", "{name}: state {state} must print nothing");
            }
        }
        match self.servers {
            Some(expected) => {
                assert_eq!(servers(&dev), expected, "{name}: servers");
                let valid = loaded(&dev).validate();
                valid.unwrap_or_else(|e| panic!("{name}: result invalid: {e}"));
            }
            None => assert_eq!(dev.configs(), before, "{name}: files must be the old ones"),
        }
        (self.then)(&Ran {
            name,
            dev,
            tree,
            before,
            systemd_log,
        });
    }
}

const DUAL: &[&str] = &[OLD, NEW];
const YES: &[&str] = &["Yes\n"];
const NO: &[&str] = &["No\n"];
const AUTOMATIC: &[&str] = &["Automatic\n"];

/// The 3.4 client with a service-restart plan, up to ArtifactCommit: Cleanup is left to the
/// row's checks (it schedules the client's restart).
const SERVICE_34_COMMITTED: ClientRun = ClientRun {
    name: "service restart mode answers No and schedules the restart from Cleanup",
    device: Device::debian,
    plan: (Stage::Dual, Restart::Service),
    systemd_run: Some(0),
    phases: &[INSTALL_34, &["NeedsArtifactReboot", "ArtifactCommit"]],
    fails: &[],
    answers: &[("SupportsRollback", YES), ("NeedsArtifactReboot", NO)],
    servers: Some(DUAL),
    then: |ran| {
        let (name, log) = (ran.name, ran.systemd_log.as_ref().unwrap());
        assert!(
            !log.exists(),
            "{name}: no restart may be scheduled before Cleanup"
        );
        ran.dev.sequence(&ran.tree, &["Cleanup"], &[]);
        assert_eq!(
            fs::read_to_string(log).unwrap(),
            "--on-active=30 --unit=server-migration-restart systemctl restart mender-client\n",
            "{name}"
        );
        // Cleanup again (client retry) does not schedule twice.
        ran.dev.sequence(&ran.tree, &["Cleanup"], &[]);
        assert_eq!(
            fs::read_to_string(log).unwrap().lines().count(),
            1,
            "{name}"
        );
        assert_eq!(servers(&ran.dev), DUAL, "{name}");
    },
};

/// The real clients' sequences, successful and failing.
const CLIENT_RUNS: &[ClientRun] = &[
    ClientRun {
        name: "client 3.4: success with automatic reboot, then stage 2",
        device: Device::debian,
        plan: (Stage::Dual, Restart::Reboot),
        systemd_run: None,
        phases: SUCCESS_34_AUTOMATIC,
        fails: &[],
        answers: &[
            ("SupportsRollback", YES),
            ("NeedsArtifactReboot", AUTOMATIC),
        ],
        servers: Some(DUAL),
        then: stage1_kept_files_and_backups_then_stage2,
    },
    ClientRun {
        // A stage-2 artifact on a device that never got stage 1: precondition refuses.
        name: "client 3.4: failure in install rolls back without reboot",
        device: Device::debian,
        plan: (Stage::NewOnly, Restart::Reboot),
        systemd_run: None,
        phases: &[INSTALL_34, ROLLBACK_34, FAILURE],
        fails: &["ArtifactInstall"],
        answers: &[("SupportsRollback", YES), ("NeedsArtifactReboot", NO)],
        servers: None,
        then: |ran| {
            let (_, _, err) = ran.dev.state("ArtifactInstall", &ran.tree);
            assert!(
                err.contains("install stage 1"),
                "{}: message should say what to do: {err}",
                ran.name
            );
        },
    },
    ClientRun {
        // Commit-phase status report failed: no ArtifactCommit. The running client loaded the
        // new config at boot: rolling back needs another reboot.
        name: "client 3.4: failure after reboot rolls back with rollback reboot",
        device: Device::debian,
        plan: (Stage::Dual, Restart::Reboot),
        systemd_run: None,
        phases: &[INSTALL_34, REBOOT_34, ROLLBACK_34, ROLLBACK_REBOOT, FAILURE],
        fails: &[],
        answers: &[
            ("SupportsRollback", YES),
            ("NeedsArtifactReboot", &["Automatic\n", "Automatic\n"]),
        ],
        servers: None,
        then: |ran| {
            let inv = String::from_utf8(ran.dev.run(&["inventory"], None).stdout).unwrap();
            assert!(
                inv.starts_with("server_migration_stage=none\n"),
                "{}: {inv}",
                ran.name
            );
            assert!(
                inv.contains("server_migration_phase=rolled-back"),
                "{}: {inv}",
                ran.name
            );
        },
    },
    ClientRun {
        // Only the fallback held the config: main stays absent, fallback rewritten.
        name: "client 5.x: success",
        device: Device::fallback_only,
        plan: (Stage::Dual, Restart::Reboot),
        systemd_run: None,
        phases: &[INSTALL_5X, QUESTIONS_5X, &["ArtifactVerifyReboot"], COMMIT],
        fails: &[],
        answers: &[
            ("ProvidePayloadFileSizes", &[""]),
            ("NeedsArtifactReboot", AUTOMATIC),
            ("SupportsRollback", YES),
        ],
        servers: Some(DUAL),
        then: |ran| {
            assert_eq!(ran.dev.configs().0, None, "{}", ran.name);
            assert_ne!(ran.dev.configs().1, ran.before.1, "{}", ran.name);
        },
    },
    ClientRun {
        // 5.x rollback: SupportsRollback twice, ArtifactRollback, ArtifactFailure.
        name: "client 5.x: rollback",
        device: Device::fallback_only,
        plan: (Stage::Dual, Restart::Reboot),
        systemd_run: None,
        phases: &[
            INSTALL_5X,
            QUESTIONS_5X,
            &["SupportsRollback", "ArtifactRollback"],
            FAILURE,
        ],
        fails: &[],
        answers: &[
            ("NeedsArtifactReboot", AUTOMATIC),
            ("SupportsRollback", &["Yes\n", "Yes\n"]),
        ],
        servers: None,
        then: |_| {},
    },
    SERVICE_34_COMMITTED,
    ClientRun {
        name: "a rolled-back service-mode deployment restarts nothing",
        device: Device::debian,
        plan: (Stage::Dual, Restart::Service),
        systemd_run: Some(0),
        phases: &[INSTALL_34, &["ArtifactRollback"], FAILURE],
        fails: &[],
        answers: &[("SupportsRollback", YES)],
        servers: None,
        then: |ran| assert!(!ran.systemd_log.as_ref().unwrap().exists(), "{}", ran.name),
    },
    ClientRun {
        name: "service restart failure is reported by Cleanup",
        systemd_run: Some(1),
        then: |ran| {
            let (code, _, err) = ran.dev.state("Cleanup", &ran.tree);
            assert_eq!(code, 1, "{}", ran.name);
            assert!(
                err.contains("cannot schedule the client restart"),
                "{}: {err}",
                ran.name
            );
            // The migration itself stays committed.
            assert_eq!(servers(&ran.dev), DUAL, "{}", ran.name);
        },
        ..SERVICE_34_COMMITTED
    },
    ClientRun {
        // The exact order measured on mender-update 5.1.0 (NeedsArtifactReboot answered No).
        name: "client 5.x: measured sequence with service restart",
        device: || {
            let dev = Device::fallback_only();
            for unit in ["mender-updated", "mender-authd"] {
                let path = format!("usr/lib/systemd/system/{unit}.service");
                dev.write(&path, "[Unit]\n", 0o644);
            }
            dev
        },
        plan: (Stage::Dual, Restart::Service),
        systemd_run: Some(0),
        phases: &[INSTALL_5X, QUESTIONS_5X, COMMIT],
        fails: &[],
        answers: &[
            ("NeedsArtifactReboot", NO),
            ("SupportsRollback", YES),
            ("ProvidePayloadFileSizes", &[""]),
        ],
        servers: Some(DUAL),
        then: |ran| {
            assert_eq!(
                fs::read_to_string(ran.systemd_log.as_ref().unwrap()).unwrap(),
                "--on-active=30 --unit=server-migration-restart systemctl restart mender-authd mender-updated\n",
                "{}",
                ran.name
            );
        },
    },
];

#[test]
fn client_sequences_answer_and_end_like_the_clients() {
    for run in CLIENT_RUNS {
        run.run();
    }
}

/// Stage 1 by the 3.4 client kept unrelated keys, modes and symlinks and left backups; then
/// stage 2 from the new server.
fn stage1_kept_files_and_backups_then_stage2(ran: &Ran) {
    let (dev, before) = (&ran.dev, &ran.before);
    let after = dev.configs();
    assert_ne!(after.0, before.0);
    assert_ne!(after.1, before.1);
    // Unrelated keys stay; ServerURL is removed from both files, not blanked.
    let main = ConfigFile::parse("m", after.0.as_ref().unwrap()).unwrap();
    assert_eq!(main.object.get("UpdatePollIntervalSeconds").unwrap(), 5);
    let fb = ConfigFile::parse("f", after.1.as_ref().unwrap()).unwrap();
    assert!(fb.object.get("ServerURL").is_none());
    assert_eq!(fb.object.get("TenantToken").unwrap(), "tok-1234");
    // Mode and owner kept; the fallback symlink directory still a symlink.
    assert_eq!(mode(&dev.path(MAIN)), 0o644);
    assert_eq!(mode(&dev.path(FALLBACK_REAL)), 0o600);
    assert!(is_symlink(&dev.path("var/lib/mender")));
    // Backups kept for manual recovery.
    let backup = dev.path("data/mender/server-migration/backup");
    let main_backup = fs::read(backup.join("etc_mender_mender.conf")).unwrap();
    assert_eq!(Some(main_backup), before.0);
    let fallback_backup = fs::read(backup.join("var_lib_mender_mender.conf")).unwrap();
    assert_eq!(Some(fallback_backup), before.1);
    assert!(!dev.path("var/lib/mender-migration").exists());
    assert_eq!(
        inventory(dev),
        format!("server_migration_stage=dual\nserver_migration_servers={OLD}\nserver_migration_servers={NEW}\nserver_migration_phase=committed\n")
    );

    // Stage 2 from the new server.
    let tree2 = dev.tree("stage2", Some(&plan(Stage::NewOnly, Restart::Reboot)));
    dev.client(&tree2, SUCCESS_34_AUTOMATIC, &[]);
    assert_eq!(servers(dev), vec![NEW]);
    loaded(dev).validate().unwrap();
    assert_eq!(
        inventory(dev),
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
fn verify_reboot_fails_when_file_changed_and_rollback_restores() {
    let dev = Device::debian();
    let before = dev.configs();
    let tree = dev.stage1(Restart::Reboot);
    dev.client(&tree, &[INSTALL_34], &[]);
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
    dev.client(
        &tree,
        &[&["ArtifactRollback"], ROLLBACK_REBOOT, FAILURE],
        &[],
    );
    assert_eq!(dev.configs(), before);
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
    let tree = dev.stage1(Restart::Reboot);
    dev.client(
        &tree,
        &[
            &["ArtifactRollback", "ArtifactVerifyRollbackReboot"],
            FAILURE,
        ],
        &[],
    );
    assert_eq!(dev.configs(), before);
    // After a finished migration, a stray rollback does not undo it.
    dev.client(&tree, SUCCESS_34_AUTOMATIC, &[]);
    let after = dev.configs();
    dev.sequence(&tree, &["ArtifactRollback"], &[]);
    assert_eq!(dev.configs(), after);
    // Rolling back twice is harmless.
    let dev = Device::debian();
    let tree = dev.stage1(Restart::Reboot);
    dev.sequence(
        &tree,
        &["ArtifactInstall", "ArtifactRollback", "ArtifactRollback"],
        &[],
    );
    assert_eq!(dev.configs(), before);
}

/// The device's own settings (`UpdatePollIntervalSeconds` as given) moved into the fallback,
/// with both servers: what a replace-mode stage 1 for the Debian device may write.
fn fallback_with_device_settings(update_poll: u32) -> String {
    format!(
        "{{\"TenantToken\": \"tok-1234\", \"UpdatePollIntervalSeconds\": {update_poll}, \"InventoryPollIntervalSeconds\": 5, \"Servers\": [{{\"ServerURL\": \"{OLD}\"}}, {{\"ServerURL\": \"{NEW}\"}}]}}\n"
    )
}

/// Replace mode removing the main file and writing the fallback as `fallback`.
fn replace_main_by_fallback(dev: &Device, name: &str, fallback: &str) -> std::path::PathBuf {
    dev.replace_tree(
        name,
        "dual",
        &[(MAIN, None), (FALLBACK, Some("fb.conf"))],
        &[("fb.conf", fallback)],
    )
}

#[test]
fn replace_mode_writes_rendered_files_and_removes_absent_ones() {
    let dev = Device::debian();
    // The device's own settings, all in the fallback now (replace mode may move keys between
    // the files, never change them).
    let fallback_new = fallback_with_device_settings(5);
    let tree = replace_main_by_fallback(&dev, "stage1-replace", &fallback_new);
    dev.client(&tree, SUCCESS_34_AUTOMATIC, &[]);
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
    let tree =
        replace_main_by_fallback(&dev, "replace-foreign", &fallback_with_device_settings(60));
    let (code, _, err) = dev.state("ArtifactInstall", &tree);
    assert_eq!(code, 1);
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
    let tree = replace_main_by_fallback(&dev, "replace", &fallback_with_device_settings(5));
    dev.client(&tree, &[INSTALL_34], &[]);
    assert_eq!(dev.configs().0, None);
    dev.client(&tree, &[&["ArtifactRollback"], FAILURE], &[]);
    assert_eq!(dev.configs(), before);
    assert_eq!(mode(&dev.path(MAIN)), 0o644);
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
    let tree = dev.stage1(Restart::Reboot);
    dev.client(&tree, SUCCESS_34_AUTOMATIC, &[]);
    assert!(is_symlink(&dev.path("etc/mender")));
    assert_eq!(mode(&dev.path("opt/conf/mender.conf")), 0o640);
    let set = ConfigSet::load(&dev.path("opt/conf/mender.conf"), None).unwrap();
    assert_eq!(
        set.servers().iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        vec![OLD, NEW]
    );

    // Replace mode creating a file that did not exist: 0600.
    let dev = Device::fallback_only();
    let tree = dev.replace_tree(
        "replace",
        "dual",
        &[(MAIN, Some("main.conf")), (FALLBACK, Some("fb.conf"))],
        &[
            ("main.conf", &servers_config(&[OLD, NEW])),
            ("fb.conf", "{\"TenantToken\": \"tok-1234\"}\n"),
        ],
    );
    dev.client(&tree, SUCCESS_34_AUTOMATIC, &[]);
    assert_eq!(mode(&dev.path(MAIN)), 0o600);
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
    assert_eq!(
        inventory(&dev),
        format!("server_migration_stage=none\nserver_migration_servers={OLD}\n")
    );
    let dev = Device::debian();
    dev.write(MAIN, "{not json", 0o644);
    let out = inventory(&dev);
    assert!(
        out.starts_with("server_migration_stage=none\nserver_migration_error="),
        "{out}"
    );
    assert!(out.contains("/etc/mender/mender.conf"), "{out}");
}

/// The inventory script as shipped.
fn inventory_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("support/mender-inventory-server-migration")
}

#[test]
fn inventory_script_is_posix_sh_and_calls_the_module() {
    let script = inventory_script();
    let text = fs::read_to_string(&script).unwrap();
    assert!(text.starts_with("#!/bin/sh\n"));
    let dev = Device::debian();
    let out = std::process::Command::new("sh")
        .arg(&script)
        .env("SERVER_MIGRATION_MODULE", BIN)
        .env("SERVER_MIGRATION_ROOT", dev.root())
        .output()
        .unwrap();
    test_support::assert_success("the inventory script", &out);
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
    let owner_and_mode = || {
        let m = fs::metadata(&main).unwrap();
        (m.uid(), m.gid(), m.mode() & 0o777)
    };
    let tree = dev.stage1(Restart::Reboot);
    dev.client(&tree, &[INSTALL_34], &[]);
    assert_eq!(owner_and_mode(), (1234, 5678, 0o644));
    dev.sequence(&tree, &["ArtifactRollback"], &[]);
    assert_eq!(owner_and_mode(), (1234, 5678, 0o644));
    // Backups and journal are private to root.
    let state = dev.path("data/mender/server-migration");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("backup/etc_mender_mender.conf")), 0o600);
}

#[test]
fn install_puts_the_inventory_script_in_place_when_the_directory_exists() {
    let script = "usr/share/mender/inventory/mender-inventory-server-migration";
    // Without the client's inventory directory nothing is created (and the install still works).
    let bare = Device::debian();
    let tree = bare.stage1(Restart::Reboot);
    let (code, _, _) = bare.state("ArtifactInstall", &tree);
    assert_eq!(code, 0);
    assert!(!bare.path(script).exists());
    assert!(!bare.path("usr/share/mender/inventory").exists());

    let dev = Device::debian();
    fs::create_dir_all(dev.path("usr/share/mender/inventory")).unwrap();
    let tree = dev.stage1(Restart::Reboot);
    let (code, _, err) = dev.state("ArtifactInstall", &tree);
    assert_eq!(code, 0, "{err}");
    let installed = fs::read_to_string(dev.path(script)).unwrap();
    assert!(installed.starts_with("#!/bin/sh") && installed.contains("server-migration"));
    assert_eq!(mode(&dev.path(script)), 0o755);
    assert_eq!(installed, fs::read_to_string(inventory_script()).unwrap());
}
