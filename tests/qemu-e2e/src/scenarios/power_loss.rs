//! Real power loss inside the module's write sequence: stage 1's ArtifactInstall runs a module
//! built with the test-only `fault-injection` feature that pauses at durable step k (temp file
//! written, fsync, rename, directory fsync, journal update, ...); the harness then kills QEMU,
//! so whatever the guest kernel had not written to the disk is lost, as in a real power cut.
//! After the next boot the config files must be exactly the old set or exactly the new set
//! (byte for byte, matching the outcome the client reports), the client must run and report the
//! deployment's outcome, and no temp file may be left.
//!
//! The step list and the exact new set come from a reference run of the same module binary on
//! the host (a fake device root with the guest's config), traced step by step.

use crate::artifacts::{artifact_name, original_config, Mode, Transport};
use crate::guest::{FALLBACK_CONF, MAIN_CONF};
use crate::harness::{Env, Run, Which, FINAL};
use crate::host;
use crate::image::MODULE_GUEST_PATH;
use crate::progress::step;
use crate::servers::{now_epoch, LoggedRequest as _};
use crate::speed::{self, budget};
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What the paused module writes to the console (`server_migration::faults::PAUSE_MARKER`).
const PAUSE_MARKER: &str = "server-migration: paused at step";
/// Where the wrapper keeps the real (fault-injection) module in the guest.
const REAL_MODULE: &str = "/usr/share/mender/server-migration.real";
/// The file the wrapper creates (and syncs) when it arms the pause: one pause per guest disk.
const ARMED_FLAG: &str = "/data/qemu-e2e-power-loss-armed";

/// The two config files: `(main, fallback)`, `None` = absent.
pub(crate) type Configs = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The module's stage-1 write sequence as measured on the host, shared by every point.
pub(crate) struct Reference {
    /// The module built with `--features fault-injection` (a private copy).
    binary: PathBuf,
    /// The durable steps of ArtifactInstall, in order (step k = `steps[k - 1]`).
    pub(crate) steps: Vec<String>,
    old: Configs,
    new: Configs,
}

impl Reference {
    /// The points CI runs: the first durable step (journal only), the rename that makes the
    /// new main config visible (data written and fsynced, rename not yet durable) and the last
    /// step (everything written, the final directory fsync pending).
    pub(crate) fn representative(&self) -> Vec<usize> {
        let rename_main = self
            .steps
            .iter()
            .position(|s| s.starts_with("rename ") && s.ends_with("/etc/mender/mender.conf"))
            .map(|i| i + 1);
        let mut points = vec![1];
        points.extend(rename_main);
        points.push(self.steps.len());
        points.dedup();
        points
    }

    /// Parses `all`, `ci` or a comma-separated list of step numbers.
    pub(crate) fn select(&self, spec: &str) -> Result<Vec<usize>> {
        match spec {
            "all" => Ok((1..=self.steps.len()).collect()),
            "ci" => Ok(self.representative()),
            list => {
                let mut points = Vec::new();
                for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let k: usize = item
                        .parse()
                        .with_context(|| format!("--power-loss: `{item}` is not a step number"))?;
                    ensure!(
                        (1..=self.steps.len()).contains(&k),
                        "--power-loss: step {k} does not exist: stage 1's ArtifactInstall has \
                         steps 1..={}",
                        self.steps.len()
                    );
                    points.push(k);
                }
                ensure!(
                    !points.is_empty(),
                    "--power-loss needs all, ci or step numbers"
                );
                Ok(points)
            }
        }
    }
}

/// Builds the fault-injection module and traces stage 1's ArtifactInstall on the host.
pub(crate) fn prepare(env: &mut Env) -> Result<Reference> {
    let stage1 = env.artifacts(Mode::Patch, Transport::Http)?.stage1.clone();
    let dir = env.out_dir.join("power-loss");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let binary = dir.join("server-migration");
    step(
        "qemu-test",
        "cargo build -p server-migration --features fault-injection",
        || {
            let status = Command::new(host::cargo())
                .current_dir(host::workspace_root())
                .arg("build")
                .arg("--quiet")
                .arg("--manifest-path")
                .arg(host::workspace_root().join("crates/device/Cargo.toml"))
                .arg("--target-dir")
                .arg(host::target_dir())
                .args(["-p", "server-migration", "--bin", "server-migration"])
                .args(["--features", "fault-injection"])
                .status()
                .context("cannot run cargo")?;
            ensure!(
                status.success(),
                "building the fault-injection module failed"
            );
            // A private copy: other builds write the same target path.
            std::fs::copy(host::target_dir().join("debug/server-migration"), &binary)?;
            Ok(())
        },
    )?;
    let main_old = serde_json::to_vec_pretty(&original_config(Transport::Http, false))?;
    let root = dir.join("reference-root");
    std::fs::create_dir_all(root.join("etc/mender"))?;
    std::fs::create_dir_all(root.join("data/mender"))?;
    std::fs::create_dir_all(root.join("var/lib"))?;
    std::os::unix::fs::symlink("/data/mender", root.join("var/lib/mender"))?;
    std::fs::write(root.join("etc/mender/mender.conf"), &main_old)?;
    let tree = dir.join("reference-tree");
    unpack_module_tree(&stage1, &tree)?;
    let mut steps = Vec::new();
    for state in ["Download", "SupportsRollback", "ArtifactInstall"] {
        let out = Command::new(&binary)
            .arg(state)
            .arg(&tree)
            .env("SERVER_MIGRATION_ROOT", &root)
            .env("SERVER_MIGRATION_TRACE_STEPS", "1")
            .output()
            .with_context(|| format!("cannot run {}", binary.display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success(),
            "reference {state} on the host failed ({}): {stderr}",
            out.status
        );
        if state == "ArtifactInstall" {
            steps = parse_trace(&stderr, &root)?;
        }
    }
    ensure!(
        steps.len() >= 20,
        "stage 1's ArtifactInstall has only {} durable steps; the sweep needs at least 20",
        steps.len()
    );
    let read = |rel: &str| std::fs::read(root.join(rel)).ok();
    let new = (
        read("etc/mender/mender.conf"),
        read("data/mender/mender.conf"),
    );
    let old = (Some(main_old), None);
    ensure!(new != old, "the reference install changed nothing");
    Ok(Reference {
        binary,
        steps,
        old,
        new,
    })
}

/// `server-migration: step N: what` lines → the step descriptions in order, with the host's
/// reference root taken out of the paths (so they read like the guest's).
fn parse_trace(stderr: &str, root: &Path) -> Result<Vec<String>> {
    let root = root.display().to_string();
    let mut steps = Vec::new();
    for line in stderr.lines() {
        let Some(rest) = line.strip_prefix("server-migration: step ") else {
            continue;
        };
        let (n, what) = rest
            .split_once(": ")
            .with_context(|| format!("unexpected trace line `{line}`"))?;
        let n: usize = n.parse().with_context(|| format!("trace line `{line}`"))?;
        ensure!(n == steps.len() + 1, "trace steps out of order at `{line}`");
        steps.push(what.replace(&root, ""));
    }
    Ok(steps)
}

/// Unpacks a module artifact into the file tree the client gives update modules:
/// `header/artifact_name` and the payload files under `files/`.
fn unpack_module_tree(artifact: &Path, tree: &Path) -> Result<()> {
    let outer = tree.with_extension("outer");
    for d in [
        &outer,
        &tree.join("files"),
        &tree.join("header"),
        &tree.join("tmp"),
    ] {
        std::fs::create_dir_all(d)?;
    }
    host::run(
        Command::new("tar")
            .arg("-xf")
            .arg(artifact)
            .arg("-C")
            .arg(&outer),
    )?;
    let data = std::fs::read_dir(outer.join("data"))
        .with_context(|| format!("{} has no data/ member", artifact.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("0000.tar"))
        })
        .with_context(|| format!("{} has no data/0000.tar*", artifact.display()))?;
    host::run(
        Command::new("tar")
            .arg("-xf")
            .arg(&data)
            .arg("-C")
            .arg(tree.join("files")),
    )?;
    std::fs::write(tree.join("version"), "3\n")?;
    std::fs::write(
        tree.join("header/artifact_name"),
        format!("{}\n", artifact_name(artifact)),
    )?;
    std::fs::write(tree.join("header/payload_type"), "server-migration\n")?;
    ensure!(
        tree.join("files/plan.json").is_file(),
        "{} carries no plan.json",
        artifact.display()
    );
    Ok(())
}

/// One power-loss point: pause stage 1's ArtifactInstall at step `point`, cut the power,
/// boot, and check the outcome.
pub(crate) fn power_loss_at(run: &mut Run, reference: &Reference, point: usize) -> Result<()> {
    let what = reference
        .steps
        .get(point - 1)
        .with_context(|| format!("no step {point}"))?
        .clone();
    let stage1 = run
        .env
        .artifacts(Mode::Patch, Transport::Http)?
        .stage1
        .clone();
    let held = artifact_name(&stage1);
    run.start_servers(Transport::Http, false)?;
    // The wrapper arms the pause once per disk, for this artifact's ArtifactInstall only, and
    // makes the arming durable before the module runs (the power loss must not undo it).
    let wrapper = format!(
        "#!/bin/sh\n\
         if [ \"$1\" = ArtifactInstall ] && [ ! -e {ARMED_FLAG} ] \
         && grep -qx '{held}' \"$2/header/artifact_name\"; then\n    \
         touch {ARMED_FLAG} && sync\n    \
         export SERVER_MIGRATION_PAUSE_AT={point} SERVER_MIGRATION_PAUSE_NOTIFY=/dev/ttyS0\n\
         fi\n\
         exec {REAL_MODULE} \"$@\"\n"
    );
    let binary = reference.binary.clone();
    run.prepare_disk(true, |edits, scratch| {
        let w = scratch.join("wrapper.sh");
        std::fs::write(&w, wrapper)?;
        edits.write(&binary, REAL_MODULE, 0o755)?;
        edits.write(&w, MODULE_GUEST_PATH, 0o755)?;
        Ok(())
    })?;
    let main_before = std::fs::read(run.dir.join("inject/mender.conf"))?;
    ensure!(
        Some(&main_before) == reference.old.0.as_ref(),
        "the guest's mender.conf differs from the reference run's"
    );
    run.boot()?;
    run.accept_on_old()?;
    run.server(Which::Old)?.upload_artifact(&stage1)?;
    let device = run.device_id(Which::Old)?;
    let deployment = run
        .server(Which::Old)?
        .create_deployment("power-loss", &held, &device)?;
    run.log(&format!(
        "deployed {held}; the module pauses at step {point}/{} ({what})",
        reference.steps.len()
    ));
    let marker = format!("{PAUSE_MARKER} {point} ");
    run.wait_for(
        &format!("the module to pause at step {point}"),
        budget(60),
        |run| {
            Ok(run
                .vm
                .as_ref()
                .is_some_and(|vm| vm.console().contains(&marker))
                .then_some(()))
        },
    )?;
    run.vm.take().context("no VM")?.power_cut();
    run.log(&format!("power cut at step {point} ({what})"));
    run.boot()?;
    let restarted = now_epoch();
    let first = run.wait_for("the first request after the power cut", budget(60), |run| {
        Ok(run
            .server(Which::Old)?
            .device_requests()?
            .iter()
            .find(|r| r.epoch() > restarted)
            .map(|r| r.epoch()))
    })?;
    let took = Duration::from_secs_f64((first - restarted).max(0.0));
    run.timings.booting += took;
    speed::observe_boot(took);
    let result = run.wait_for("the interrupted deployment to end", budget(150), |run| {
        let dd = run
            .server(Which::Old)?
            .deployment_device(&deployment, &device)?;
        Ok(dd.filter(|d| d["status"].as_str().is_some_and(|s| FINAL.contains(&s))))
    })?;
    run.account_reboots(&result);
    let status = result["status"].as_str().unwrap_or("?").to_string();
    ensure!(
        status == "success" || status == "failure",
        "the interrupted deployment ended `{status}`: {}",
        result["history"]
    );
    let t = now_epoch();
    run.wait_polls(
        Which::Old,
        t,
        1,
        "the client to poll old after the power loss",
        budget(30),
    )?;
    run.stop_vm()?;
    let disk = run.disk.as_ref().context("no disk")?;
    let configs: Configs = (disk.read(MAIN_CONF)?, disk.read(FALLBACK_CONF)?);
    let state = if configs == reference.old {
        "old"
    } else if configs == reference.new {
        "new"
    } else {
        bail!(
            "after a power loss at step {point} ({what}) the config files are neither exactly \
             the old set nor exactly the new set:\nmain: {}\nfallback: {}",
            show(&configs.0),
            show(&configs.1)
        );
    };
    let expected = if status == "success" { "new" } else { "old" };
    ensure!(
        state == expected,
        "the deployment reported `{status}` but the config files are the {state} set"
    );
    let leftovers = temp_files(run)?;
    ensure!(
        leftovers.is_empty(),
        "temp files left after a power loss at step {point}: {leftovers:?}"
    );
    run.expect_client_healthy()?;
    run.log(&format!(
        "step {point} ({what}): deployment `{status}`, config files exactly the {state} set, \
         no temp files"
    ));
    Ok(())
}

fn show(file: &Option<Vec<u8>>) -> String {
    file.as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_else(|| "<absent>".into())
}

/// The module's temp files (`.NAME.server-migration.tmp`) anywhere under the config and state
/// directories of the powered-off guest.
fn temp_files(run: &Run) -> Result<Vec<String>> {
    let disk = run.disk.as_ref().context("no disk")?;
    let scratch = run.dir.join("dirs");
    let _ = std::fs::remove_dir_all(&scratch);
    let mut found = Vec::new();
    for guest_dir in ["/etc/mender", "/data/mender"] {
        let into = scratch.join(guest_dir.trim_start_matches('/').replace('/', "_"));
        crate::ext4::dump_dir(&disk.path, guest_dir, &into)?;
        collect_temp(&into, &mut found)?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(found)
}

fn collect_temp(dir: &Path, found: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            collect_temp(&path, found)?;
        } else if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with(".server-migration.tmp"))
        {
            found.push(path.display().to_string());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_lines_become_guest_paths_in_order() {
        let root = Path::new("/tmp/ref");
        let trace = "server-migration: step 1: write temp /tmp/ref/data/mender/x.tmp\n\
                     noise\n\
                     server-migration: step 2: rename /tmp/ref/etc/mender/.mender.conf.server-migration.tmp -> /tmp/ref/etc/mender/mender.conf\n";
        let steps = parse_trace(trace, root).unwrap();
        assert_eq!(
            steps,
            [
                "write temp /data/mender/x.tmp",
                "rename /etc/mender/.mender.conf.server-migration.tmp -> /etc/mender/mender.conf"
            ]
        );
        assert!(parse_trace("server-migration: step 2: x\n", root).is_err());
    }

    #[test]
    fn selections() {
        let steps: Vec<String> = (1..=22)
            .map(|i| {
                if i == 9 {
                    "rename /etc/mender/.mender.conf.server-migration.tmp -> /etc/mender/mender.conf"
                        .to_string()
                } else {
                    format!("fsync {i}")
                }
            })
            .collect();
        let r = Reference {
            binary: PathBuf::new(),
            steps,
            old: (None, None),
            new: (None, None),
        };
        assert_eq!(r.select("ci").unwrap(), [1, 9, 22]);
        assert_eq!(r.select("all").unwrap().len(), 22);
        assert_eq!(r.select("3, 5").unwrap(), [3, 5]);
        assert!(r.select("23").is_err());
        assert!(r.select("x").is_err());
    }
}
