//! Process-crash tests: abort the module (SIGABRT) at every durable step of install, rollback,
//! commit and cleanup (and of the recovery after an install crash), then check that recovery
//! leaves both config files exactly old or exactly new — together —, that a second recovery
//! changes nothing, and that the client's next states work.
//!
//! A process crash keeps the kernel's page cache, so these tests find ordering and recovery
//! bugs but can never show a missing fsync. Power loss, page cache included, is tested in QEMU
//! (`cargo xtask qemu-test --power-loss all`, a subset in every `cargo xtask qemu-test`).

mod common;
use common::*;
use menderconf::{Restart, Stage};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

type Configs = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The files after a clean install of stage 1 on a fresh Debian device.
fn new_configs() -> Configs {
    let dev = Device::debian();
    let tree = dev.tree("ref", Some(&stage1()));
    dev.client(&tree, &[INSTALL_34], &[]);
    dev.configs()
}

fn which(c: &Configs, old: &Configs, new: &Configs) -> &'static str {
    if c == old {
        "old"
    } else if c == new {
        "new"
    } else {
        "mixed"
    }
}

fn assert_consistent(ctx: &str, c: &Configs, old: &Configs, new: &Configs) -> &'static str {
    let w = which(c, old, new);
    assert_ne!(
        w,
        "mixed",
        "{ctx}: files are neither all-old nor all-new:\nmain: {}\nfallback: {}",
        text(&c.0),
        text(&c.1)
    );
    assert_parse(c);
    w
}

/// Every file under the device root with its bytes and mode: what recovery may change.
fn snapshot(dev: &Device) -> Vec<(String, Option<Vec<u8>>, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Option<Vec<u8>>, u32)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                out.push((rel, None, mode));
                walk(root, &path, out);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.push((rel, Some(target.display().to_string().into_bytes()), mode));
            } else {
                out.push((rel, Some(std::fs::read(&path).unwrap()), mode));
            }
        }
    }
    let mut out = Vec::new();
    walk(dev.root(), dev.root(), &mut out);
    out
}

/// Recovers, then recovers again and asserts the second run changed nothing at all, and that
/// no temp file is left anywhere under the device root.
fn recover_idempotent(dev: &Device, ctx: &str) {
    recover(dev, ctx);
    let temps: Vec<String> = snapshot(dev)
        .into_iter()
        .map(|e| e.0)
        .filter(|p| p.ends_with(".server-migration.tmp"))
        .collect();
    assert!(
        temps.is_empty(),
        "{ctx}: recovery left temp files: {temps:?}"
    );
    let once = snapshot(dev);
    recover(dev, ctx);
    let twice = snapshot(dev);
    if once != twice {
        let names = |s: &[(String, Option<Vec<u8>>, u32)]| -> Vec<String> {
            s.iter().map(|e| e.0.clone()).collect()
        };
        panic!(
            "{ctx}: a second recovery changed the device:\nafter one: {:?}\nafter two: {:?}",
            names(&once),
            names(&twice)
        );
    }
}

fn recover(dev: &Device, ctx: &str) {
    let out = dev.run(&["recover"], None);
    assert!(
        out.status.success(),
        "{ctx}: recover failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One crash point: `out` is the run the injected abort stopped (`ctx` says where). Recovery must
/// be idempotent and leave the files all-old or all-new; then the client's `after` states must
/// succeed and leave them `expect_final` (`old`/`new`).
fn check_crash_point(
    ctx: &str,
    dev: &Device,
    tree: &Path,
    out: &Output,
    after: &[&str],
    (old, new): (&Configs, &Configs),
    expect_final: &str,
) {
    assert!(
        aborted(out),
        "{ctx}: expected the injected abort, got {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    recover_idempotent(dev, ctx);
    assert_consistent(ctx, &dev.configs(), old, new);
    dev.sequence(tree, after, &[]);
    let final_state =
        assert_consistent(&format!("{ctx}, after {after:?}"), &dev.configs(), old, new);
    assert_eq!(final_state, expect_final, "{ctx}: after {after:?}");
}

/// Runs `state` with a crash at steps 1, 2, … until it completes; `prefix` runs first without
/// faults. After each crash: recovery, consistency, then `after` (the client's continuation)
/// must succeed and leave `expect_final`. Returns the number of crash points. The scenario:
/// stage 1 on the Debian device (both files change).
fn crash_loop(prefix: &[&str], state: &str, after: &[&str], expect_final: &str) -> u64 {
    let plan_bytes = &stage1();
    let old = Device::debian().configs();
    let new = new_configs();
    assert_ne!(old.0, new.0, "scenario must change the main file");
    assert_ne!(old.1, new.1, "scenario must change the fallback file");
    crash_points(state, |n| {
        let dev = Device::debian();
        let tree = dev.tree("stage", Some(plan_bytes));
        dev.sequence(&tree, prefix, &[]);
        let out = dev.state_crashing_at(state, &tree, n);
        if out.status.success() {
            // Ran past the last step: every crash point is covered.
            dev.sequence(&tree, after, &[]);
            let end = which(&dev.configs(), &old, &new);
            assert_eq!(end, expect_final, "{state} without crash");
            return true;
        }
        let ctx = format!("{state} crashed at step {n}");
        check_crash_point(&ctx, &dev, &tree, &out, after, (&old, &new), expect_final);
        false
    })
}

/// Calls `run(n)` for the crash steps n = 1, 2, … until a run gets past the last step (returns
/// true); returns the number of crash points.
fn crash_points(what: &str, mut run: impl FnMut(u64) -> bool) -> u64 {
    let mut n = 1;
    while !run(n) {
        n += 1;
        assert!(n < 500, "{what} never completed");
    }
    n - 1
}

fn stage1() -> Vec<u8> {
    plan(Stage::Dual, Restart::Reboot)
}

/// Crash points of ArtifactInstall (after Download and SupportsRollback) of stage 1 on the
/// Debian device, each followed by recovery and the client's `after` phases.
fn install_crash_points(after: &[&[&str]], expect_final: &str) -> u64 {
    let prefix = &INSTALL_34[..2];
    let after = after.concat();
    crash_loop(prefix, "ArtifactInstall", &after, expect_final)
}

/// Reports how many crash points `what` covered and fails below `at_least` (a test that stops
/// crashing early would otherwise pass vacuously).
fn assert_covered(what: &str, n: u64, at_least: u64) {
    eprintln!("{what}: {n} crash points");
    assert!(
        n >= at_least,
        "{what} covered only {n} crash points, expected at least {at_least}"
    );
}

#[test]
fn process_crash_during_install_recovers_then_client_rolls_back() {
    // The 3.4 client resumes an update killed in ArtifactInstall with a rollback.
    let n = install_crash_points(&[ROLLBACK_34, FAILURE], "old");
    assert_covered("install", n, 25);
}

#[test]
fn process_crash_during_install_recovers_then_retry_installs() {
    // After recovery a fresh install of the same artifact must succeed (no stale state blocks it).
    let n = install_crash_points(
        &[&["ArtifactInstall", "ArtifactVerifyReboot"], COMMIT],
        "new",
    );
    assert_covered("install (retry)", n, 25);
}

#[test]
fn process_crash_during_rollback_ends_old() {
    let n = crash_loop(
        &[INSTALL_34, REBOOT_34].concat(),
        "ArtifactRollback",
        &[&["ArtifactRollback"], ROLLBACK_REBOOT, FAILURE].concat(),
        "old",
    );
    assert_covered("rollback", n, 14);
}

#[test]
fn process_crash_during_commit_and_cleanup_ends_new() {
    let prefix = [INSTALL_34, REBOOT_34].concat();
    let a = crash_loop(&prefix, "ArtifactCommit", COMMIT, "new");
    let mut with_commit = prefix.to_vec();
    with_commit.push("ArtifactCommit");
    let b = crash_loop(&with_commit, "Cleanup", &["Cleanup"], "new");
    assert_covered("commit", a, 4);
    assert_covered("cleanup", b, 4);
}

#[test]
fn process_crash_during_install_of_removal_and_symlinked_fallback() {
    // Stage 2 on a dual device whose config is split over both files (fallback via the
    // /var/lib/mender symlink): covers file removal paths in replace mode.
    fn dual_device() -> Device {
        let dev = Device::debian();
        let tree = dev.tree("s1", Some(&plan(Stage::Dual, Restart::Reboot)));
        dev.client(&tree, SUCCESS_34_AUTOMATIC, &[]);
        dev
    }
    let old = dual_device().configs();
    // The device's own settings, merged into main (replace mode refuses to change them).
    let main_new = format!(
        "{{\n  \"ServerURL\": \"{NEW}\",\n  \"UpdatePollIntervalSeconds\": 5,\n  \"InventoryPollIntervalSeconds\": 5,\n  \"TenantToken\": \"tok-1234\"\n}}\n"
    );
    let new: Configs = (Some(main_new.clone().into_bytes()), None);
    let rollback = [&["ArtifactRollback"], FAILURE].concat();
    let n = crash_points("replace install", |n| {
        let dev = dual_device();
        let tree = dev.replace_tree(
            "s2",
            "new-only",
            &[(MAIN, Some("main.conf")), (FALLBACK, None)],
            &[("main.conf", &main_new)],
        );
        let out = dev.state_crashing_at("ArtifactInstall", &tree, n);
        if out.status.success() {
            assert_eq!(dev.configs(), new);
            return true;
        }
        let ctx = format!("replace install crashed at step {n}");
        check_crash_point(&ctx, &dev, &tree, &out, &rollback, (&old, &new), "old");
        false
    });
    assert_covered("replace install with removal", n, 22);
}

#[test]
fn process_crash_during_recovery_itself() {
    // Crash the install at every step, then crash the recovery at every step, then recover.
    let plan_bytes = stage1();
    let old = Device::debian().configs();
    let new = new_configs();
    let mut covered = 0u64;
    crash_points("install", |n| {
        let probe = Device::debian();
        let tree = probe.tree("stage", Some(&plan_bytes));
        if probe
            .state_crashing_at("ArtifactInstall", &tree, n)
            .status
            .success()
        {
            return true;
        }
        covered += crash_points("recovery", |m| {
            let dev = Device::debian();
            let tree = dev.tree("stage", Some(&plan_bytes));
            assert!(aborted(&dev.state_crashing_at("ArtifactInstall", &tree, n)));
            let out = dev.run(&["recover"], Some(m));
            if out.status.success() {
                return true;
            }
            let ctx = format!("install crash {n}, recovery crash {m}");
            let rollback = ["ArtifactRollback"];
            check_crash_point(&ctx, &dev, &tree, &out, &rollback, (&old, &new), "old");
            false
        });
        false
    });
    assert_covered("recovery (summed over install crash points)", covered, 200);
}

#[test]
fn leftover_temp_files_are_removed_by_recovery() {
    let dev = Device::debian();
    let tree = dev.tree("stage", Some(&stage1()));
    // Crash right after the first temp file of a config file was written (find it by trace).
    let trace = std::process::Command::new(BIN)
        .args(["ArtifactInstall", tree.to_str().unwrap()])
        .env("SERVER_MIGRATION_ROOT", dev.root())
        .env("SERVER_MIGRATION_TRACE_STEPS", "1")
        .env("SERVER_MIGRATION_CRASH_AT", "1000")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&trace.stderr);
    let step = stderr
        .lines()
        .find(|l| {
            l.contains("fsync")
                && l.contains(".mender.conf.server-migration.tmp")
                && l.contains("etc/mender")
        })
        .and_then(|l| l.split("step ").nth(1))
        .and_then(|l| l.split(':').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no temp fsync step in trace:\n{stderr}"));
    let dev = Device::debian();
    let tree = dev.tree("stage", Some(&stage1()));
    assert!(aborted(&dev.state_crashing_at(
        "ArtifactInstall",
        &tree,
        step
    )));
    let tmp = dev.path("etc/mender/.mender.conf.server-migration.tmp");
    assert!(tmp.exists(), "crash should leave the temp file");
    recover_idempotent(&dev, "temp");
    assert!(!tmp.exists(), "recovery must remove the temp file");
    assert!(!Path::new(
        &dev.path("data/mender/server-migration/.journal.cbor.server-migration.tmp")
    )
    .exists());
}
