//! `power-cut` and `power-cut-stage2`: QEMU killed after the module's ArtifactInstall did its
//! work but before the client recorded it.

use crate::artifacts::{artifact_name, Mode, Transport};
use crate::harness::{Run, Which, FINAL};
use crate::image::MODULE_GUEST_PATH;
use crate::servers::{now_epoch, LoggedRequest as _};
use crate::speed::{self, budget};
use anyhow::{ensure, Context, Result};
use std::time::Duration;

/// Marker the wrapped module prints on the console once ArtifactInstall has done its work.
const HOLD_MARKER: &str = "qemu-e2e: ArtifactInstall done, holding for power cut";

pub(crate) fn power_cut(run: &mut Run) -> Result<()> {
    power_cut_in(run, 1)
}

pub(crate) fn power_cut_stage2(run: &mut Run) -> Result<()> {
    power_cut_in(run, 2)
}

/// Kills QEMU while the given stage's ArtifactInstall is in progress, boots again, and checks
/// that the deployment ends, the config is exactly the before- or the after-state of that stage
/// (matching the reported result) and the client polls the right server again.
pub(crate) fn power_cut_in(run: &mut Run, stage: u8) -> Result<()> {
    let set = run.env.artifacts(Mode::Patch, Transport::Http)?;
    let (stage1, stage2) = (set.stage1.clone(), set.stage2.clone());
    let target = if stage == 1 {
        stage1.clone()
    } else {
        stage2.clone()
    };
    let held = artifact_name(&target);
    run.start_servers(Transport::Http, false)?;
    // The real module runs; for the chosen artifact the wrapper then holds ArtifactInstall open
    // (the v3 file tree names the artifact in header/artifact_name), so the power cut lands after
    // the module changed the config but before the client recorded the install as done.
    let wrapper = format!(
        "#!/bin/sh\n/usr/share/mender/server-migration.real \"$@\"\nrc=$?\n\
         if [ \"$1\" = ArtifactInstall ] && grep -qx '{held}' \"$2/header/artifact_name\"; then\n    \
         echo \"{HOLD_MARKER} (rc=$rc)\" > /dev/ttyS0\n    sleep 300\nfi\nexit $rc\n"
    );
    // The same binary the image was built with (xtask's one module build, for the guest's target).
    let binary = run
        .env
        .image
        .module
        .clone()
        .context("the guest image was built without the server-migration module")?;
    run.prepare_disk(true, |edits, scratch| {
        let w = scratch.join("wrapper.sh");
        std::fs::write(&w, wrapper)?;
        edits.write(&binary, "/usr/share/mender/server-migration.real", 0o755)?;
        edits.write(&w, MODULE_GUEST_PATH, 0o755)?;
        Ok(())
    })?;
    run.boot()?;
    run.accept_on_old()?;
    let (which, before, after) = if stage == 1 {
        (
            Which::Old,
            vec![run.old_url()],
            vec![run.old_url(), run.new_url()],
        )
    } else {
        let r = run.deploy(Which::Old, &stage1)?;
        run.expect_status(&r, "success")?;
        run.switch_to_new()?;
        (
            Which::New,
            vec![run.old_url(), run.new_url()],
            vec![run.new_url()],
        )
    };
    run.server(which)?.upload_artifact(&target)?;
    let device = run.device_id(which)?;
    let deployment = run
        .server(which)?
        .create_deployment("power-cut", &held, &device)?;
    run.log(&format!(
        "deployed {held} from {which:?}; waiting for its ArtifactInstall"
    ));
    run.wait_for("the module's ArtifactInstall to run", budget(60), |run| {
        Ok(run
            .vm
            .as_ref()
            .is_some_and(|vm| vm.serial_text().contains(HOLD_MARKER))
            .then_some(()))
    })?;
    run.vm.take().context("no VM")?.power_cut();
    run.log("power cut during ArtifactInstall (QEMU killed)");
    run.boot()?;
    let restarted = now_epoch();
    run.wait_for("the first request after the restart", budget(60), |run| {
        let mut first = None;
        for w in [Which::Old, Which::New] {
            if let Some(r) = run
                .server(w)?
                .device_requests()?
                .iter()
                .find(|r| r.epoch() > restarted)
            {
                first = Some(first.map_or(r.epoch(), |f: f64| f.min(r.epoch())));
            }
        }
        Ok(first)
    })
    .map(|first| {
        let took = Duration::from_secs_f64((first - restarted).max(0.0));
        run.timings.booting += took;
        speed::observe_boot(took);
    })?;
    let result = run.wait_for("the interrupted deployment to end", budget(120), |run| {
        let dd = run.server(which)?.deployment_device(&deployment, &device)?;
        Ok(dd.filter(|d| d["status"].as_str().is_some_and(|s| FINAL.contains(&s))))
    })?;
    let status = result["status"].as_str().unwrap_or("?").to_string();
    ensure!(
        status == "success" || status == "failure",
        "interrupted deployment ended `{status}`"
    );
    run.log(&format!(
        "interrupted deployment ended `{status}` (reports {})",
        result["history"]
    ));
    let t = now_epoch();
    run.wait_polls(
        which,
        t,
        2,
        "the client to poll again after the power cut",
        budget(30),
    )?;
    run.stop_vm()?;
    let servers = run.config_servers()?;
    ensure!(
        servers == before || servers == after,
        "after the power cut the config lists {servers:?}: neither {before:?} nor {after:?}"
    );
    let expected = if status == "success" { &after } else { &before };
    ensure!(
        &servers == expected,
        "deployment reported {status} but the config lists {servers:?}"
    );
    run.expect_servers(&servers, "after the power cut")?;
    if status == "failure" {
        run.expect_journal(
            &["[ArtifactRollback]", "server-migration: rolled back"],
            "a failed interrupted install must be rolled back by the module",
        )?;
    }
    run.expect_client_healthy()
}
