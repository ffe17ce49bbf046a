//! Stages the module or the client must refuse without touching the config: a replace-mode
//! result that would be invalid, and stage 2 before stage 1.

use crate::artifacts::{Mode, Transport};
use crate::guest::{FALLBACK_CONF, MAIN_CONF};
use crate::harness::{history_statuses, Run, Which};
use crate::servers::{now_epoch, LoggedRequest as _};
use crate::speed::budget;
use anyhow::{ensure, Context, Result};
use serde_json::Value;

pub(crate) fn invalid_result(run: &mut Run) -> Result<()> {
    let set = run.env.artifacts(Mode::Replace, Transport::Http)?;
    let stage1 = set.stage1.clone();
    run.start_servers(Transport::Http, false)?;
    let fallback = serde_json::json!({ "ServerURL": run.old_url() });
    run.prepare_disk(true, |edits, scratch| {
        let f = scratch.join("fallback.conf");
        std::fs::write(&f, serde_json::to_vec_pretty(&fallback)?)?;
        edits.write(&f, FALLBACK_CONF, 0o600)?;
        Ok(())
    })?;
    let main_before = std::fs::read(run.dir.join("inject/mender.conf"))?;
    run.boot()?;
    run.accept_on_old()?;
    let r = run.deploy(Which::Old, &stage1)?;
    run.expect_status(&r, "failure")?;
    let statuses = history_statuses(&r);
    ensure!(
        !statuses.contains(&"rebooting"),
        "the refused stage rebooted the device: {statuses:?}"
    );
    let t = now_epoch();
    run.wait_polls(
        Which::Old,
        t,
        2,
        "the client to keep polling old after the refusal",
        budget(20),
    )?;
    run.stop_vm()?;
    let disk = run.disk.as_ref().context("no disk")?;
    let main_after = disk.read(MAIN_CONF)?.context("main config missing")?;
    ensure!(
        serde_json::from_slice::<Value>(&main_after)?
            == serde_json::from_slice::<Value>(&main_before)?,
        "the refused stage changed {MAIN_CONF}: {}",
        String::from_utf8_lossy(&main_after)
    );
    ensure!(
        run.read_conf(FALLBACK_CONF)? == Some(fallback),
        "the refused stage changed {FALLBACK_CONF}"
    );
    run.expect_journal(
        &["server-migration: error: `Servers`", "(in /var/lib/mender/mender.conf)", "[ArtifactRollback]"],
        "the module must refuse in ArtifactInstall naming the conflicting files, and the client roll back",
    )?;
    run.expect_client_healthy()
}

pub(crate) fn stage2_first(run: &mut Run) -> Result<()> {
    let set = run.env.artifacts(Mode::Patch, Transport::Http)?;
    let stage2 = set.stage2.clone();
    run.start_servers(Transport::Http, false)?;
    run.prepare_disk(true, |_, _| Ok(()))?;
    let main_before = std::fs::read(run.dir.join("inject/mender.conf"))?;
    run.boot()?;
    run.accept_on_old()?;
    let deployed_at = now_epoch();
    let r = run.deploy(Which::Old, &stage2)?;
    // The mock is the open-source server: its v1 `next` offers by device type only and never
    // compares depends with provides (as the real one). So the real 3.4 client downloads stage 2
    // and refuses it itself on the artifact's depends: `failure`, nothing installed.
    run.expect_refused(
        &r,
        "stage 2 before stage 1 got past the client's depends check",
    )?;
    let downloads = run
        .server(Which::Old)?
        .device_requests()?
        .into_iter()
        .filter(|r| r.path.starts_with("/download/") && r.epoch() >= deployed_at)
        .count();
    ensure!(
        downloads >= 1,
        "the open-source server offered stage 2, but the device never downloaded it"
    );
    let t = now_epoch();
    run.wait_polls(
        Which::Old,
        t,
        2,
        "the client to keep polling old",
        budget(20),
    )?;
    ensure!(
        run.server(Which::New)?.requests()?.is_empty(),
        "the device contacted new"
    );
    run.stop_vm()?;
    run.expect_servers(&[run.old_url()], "after the refused stage 2")?;
    let main_after = run
        .disk
        .as_ref()
        .context("no disk")?
        .read(MAIN_CONF)?
        .context("main config missing")?;
    ensure!(
        main_after == main_before,
        "the refused stage 2 changed {MAIN_CONF}: {}",
        String::from_utf8_lossy(&main_after)
    );
    run.expect_journal(
        // The client logs through logrus, which escapes the quotes inside `msg="..."`.
        &[r#"Artifact dependency \"server-migration.stage\" not satisfied by currently installed artifact"#],
        "the client itself must refuse stage 2 on its depends",
    )?;
    run.log("stage 2 refused by the client's own depends check; config byte-identical");
    run.expect_client_healthy()
}
