//! The full two-stage migration and its variants (patch, replace, service restart, HTTPS,
//! signed artifacts with an unsigned stage refused first).

use crate::artifacts::{artifact_name, ArtifactKind, Mode, Transport, Verify};
use crate::guest::{FALLBACK_CONF, MAIN_CONF, UNSIGNED_REFUSAL, VERIFY_KEY};
use crate::harness::{inventory_attr, Run, Which};
use crate::servers::{now_epoch, parse_rfc3339, LoggedRequest as _};
use crate::speed::budget;
use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The five steps of the tenant migration, automated. With `unsigned_stage1` (a device that
/// checks signatures) that artifact is deployed first and must be refused.
pub(crate) fn full_migration(
    run: &mut Run,
    kind: ArtifactKind,
    unsigned_stage1: Option<&Path>,
) -> Result<()> {
    let (mode, transport, verify) = kind;
    if verify.device_verifies() {
        run.verify_key = Some(run.env.sign_key()?.public.clone());
    }
    let set = run.env.artifacts_of(kind)?;
    let (module_install, stage1, stage2) = (
        set.module_install.clone(),
        set.stage1.clone(),
        set.stage2.clone(),
    );
    run.start_servers(transport, false)?;
    run.prepare_disk(false, |_, _| Ok(()))?;
    let verify_key_before = run.disk.as_ref().context("no disk")?.read(VERIFY_KEY)?;
    ensure!(
        verify_key_before.is_some() == verify.device_verifies(),
        "{VERIFY_KEY} on the disk does not match the scenario's signing setup"
    );
    run.boot()?;
    run.accept_on_old()?;

    // Step 2: module, then the dual config, both from old.
    let r = run.deploy(Which::Old, &module_install)?;
    run.expect_status(&r, "success")?;
    if let Some(unsigned) = unsigned_stage1 {
        refuse_unsigned(run, unsigned)?;
    }
    let r = run.deploy(Which::Old, &stage1)?;
    run.expect_status(&r, "success")?;
    if mode == Mode::PatchServiceRestart {
        ensure!(
            r["history"]
                .as_array()
                .is_some_and(|h| !h.iter().any(|x| x["status"] == "rebooting")),
            "a service-restart stage rebooted: {}",
            r["history"]
        );
        run.wait_service_restart(Which::Old, &r)?;
    }
    let inv = run.wait_inventory(
        Which::Old,
        "inventory on old reporting the dual stage",
        |inv| inventory_attr(inv, "server_migration_stage").is_some_and(|v| v == "dual"),
    )?;
    let servers_attr = inventory_attr(&inv, "server_migration_servers").unwrap_or_default();
    ensure!(
        servers_attr == serde_json::json!([run.old_url(), run.new_url()]),
        "after stage 1 the device reports servers {servers_attr}, expected [old, new]"
    );
    run.log(&format!(
        "device runs stage 1: inventory server_migration_servers = {servers_attr}"
    ));
    ensure!(
        run.server(Which::New)?.device_requests()?.is_empty(),
        "the device contacted new while old still accepted it (Servers[0] must win)"
    );

    // Steps 3 + 4: preauthorize on new, reject on old; the device fails over.
    let rejected_at = run.switch_to_new()?;

    // Step 5: the new-only config, deployed from new.
    let r = run.deploy(Which::New, &stage2)?;
    run.expect_status(&r, "success")?;
    if mode == Mode::PatchServiceRestart {
        run.wait_service_restart(Which::New, &r)?;
    }
    let stage2_name = artifact_name(&stage2);
    let reports = r["history"].as_array().cloned().unwrap_or_default();
    let cutoff = reports
        .iter()
        .rev()
        .find(|x| x["status"] == "rebooting")
        .or_else(|| reports.last())
        .and_then(|x| x["time"].as_str())
        .and_then(parse_rfc3339)
        .context("stage-2 deployment without report times")?;
    run.wait_inventory(
        Which::New,
        "new's inventory showing the stage-2 artifact",
        |inv| inventory_attr(inv, "artifact_name").is_some_and(|v| v == stage2_name.as_str()),
    )?;
    // A few more poll rounds on the new-only config, then: old heard nothing since the switch.
    let quiet_from = now_epoch();
    run.wait_polls(
        Which::New,
        quiet_from,
        3,
        "three more update checks at new",
        budget(20),
    )?;
    let late: Vec<String> = run
        .server(Which::Old)?
        .device_requests()?
        .iter()
        .filter(|r| r.epoch() > cutoff)
        .map(|r| format!("{} {} {} -> {:?}", r.time, r.method, r.path, r.status))
        .collect();
    ensure!(
        late.is_empty(),
        "old received requests after the device switched to the new-only config: {late:?}"
    );
    // Between the reject and stage 2 the client still walks [old, new] from the top, so old
    // sees auth requests, but it must never have served the device again.
    let served: Vec<String> = run
        .server(Which::Old)?
        .device_requests()?
        .iter()
        .filter(|r| r.epoch() > rejected_at + 1.0 && r.status.is_some_and(|s| s < 300))
        .map(|r| format!("{} {} {} -> {:?}", r.time, r.method, r.path, r.status))
        .collect();
    ensure!(
        served.is_empty(),
        "old served the device after it was rejected: {served:?}"
    );
    run.stop_vm()?;
    run.expect_servers(&[run.new_url()], "after stage 2")?;
    let main = run.read_conf(MAIN_CONF)?.unwrap_or_default();
    ensure!(
        main.get("Servers").is_none(),
        "stage 2 left a Servers list: {main}"
    );
    if verify.device_verifies() {
        ensure!(
            main.get("ArtifactVerifyKey") == Some(&Value::from(VERIFY_KEY)),
            "stage 2 lost ArtifactVerifyKey: {main}"
        );
        ensure!(
            run.disk.as_ref().context("no disk")?.read(VERIFY_KEY)? == verify_key_before,
            "the migration changed {VERIFY_KEY}"
        );
        let disk = run.disk.as_ref().context("no disk")?;
        let journal = disk.journal("mender-client.service", &run.dir.join("journal"))?;
        let verified = journal
            .matches("authenticated digital signature of artifact")
            .count();
        ensure!(
            verified >= 3,
            "the client verified the signature of {verified} artifact(s), expected the module \
             installer and both stages"
        );
        run.log(&format!(
            "ArtifactVerifyKey and its key file unchanged after stage 2; {verified} signatures verified"
        ));
    }
    if mode == Mode::PatchServiceRestart {
        let disk = run.disk.as_ref().context("no disk")?;
        let journal = disk.journal("mender-client.service", &run.dir.join("journal"))?;
        let starts = journal.matches("Started mender-client.service").count();
        ensure!(starts >= 3, "expected the client started at boot and restarted after each stage, saw {starts} start(s)");
        ensure!(
            !journal.contains("-- Boot "),
            "a service-restart migration rebooted the guest"
        );
    }
    run.expect_client_healthy()
}

pub(crate) fn migration_patch(run: &mut Run) -> Result<()> {
    full_migration(run, (Mode::Patch, Transport::Http, Verify::Off), None)
}
pub(crate) fn migration_replace(run: &mut Run) -> Result<()> {
    full_migration(run, (Mode::Replace, Transport::Http, Verify::Off), None)
}
pub(crate) fn migration_service_restart(run: &mut Run) -> Result<()> {
    full_migration(
        run,
        (Mode::PatchServiceRestart, Transport::Http, Verify::Off),
        None,
    )
}
pub(crate) fn migration_https(run: &mut Run) -> Result<()> {
    full_migration(run, (Mode::Patch, Transport::Https, Verify::Off), None)
}
pub(crate) fn migration_signed(run: &mut Run) -> Result<()> {
    let unsigned = run
        .env
        .artifacts_of((Mode::Patch, Transport::Http, Verify::Unsigned))?
        .stage1
        .clone();
    full_migration(
        run,
        (Mode::Patch, Transport::Http, Verify::Signed),
        Some(&unsigned),
    )
}

/// On a device with `ArtifactVerifyKey`: an unsigned stage 1 ends `failure` for the client's
/// signature check (no reboot, nothing installed), the config stays byte-for-byte as it was
/// and the client keeps polling old. Checks the disk with the guest powered off, then boots
/// it again for the rest of the migration.
pub(crate) fn refuse_unsigned(run: &mut Run, unsigned: &Path) -> Result<()> {
    let conf_before = std::fs::read(run.dir.join("inject/mender.conf"))?;
    let disk = run.disk.as_ref().context("no disk")?;
    let fallback_before = disk.read(FALLBACK_CONF)?;
    let r = run.deploy(Which::Old, unsigned)?;
    run.expect_refused(&r, "the unsigned artifact got past the signature check")?;
    let deployment = r["deployment_id"].as_str().context("no deployment id")?;
    let device = run.device_id(Which::Old)?;
    // The client uploads the deployment log after its `failure` report.
    let log = run.wait_for(
        "the deployment log of the refused unsigned stage 1",
        budget(20),
        |run| {
            Ok(run
                .server(Which::Old)?
                .deployment_log(deployment, &device)
                .ok()
                .filter(|log| !log.trim().is_empty()))
        },
    )?;
    ensure!(
        log.contains(UNSIGNED_REFUSAL),
        "the deployment log of the unsigned stage 1 lacks `{UNSIGNED_REFUSAL}`: {log}"
    );
    let t = now_epoch();
    run.wait_polls(
        Which::Old,
        t,
        2,
        "the client to keep polling old after refusing the unsigned artifact",
        budget(20),
    )?;
    ensure!(
        run.server(Which::New)?.requests()?.is_empty(),
        "the device contacted new after the refused unsigned stage 1"
    );
    run.stop_vm()?;
    let disk = run.disk.as_ref().context("no disk")?;
    let conf_after = disk.read(MAIN_CONF)?.context("main config missing")?;
    ensure!(
        conf_after == conf_before,
        "the refused unsigned stage 1 changed {MAIN_CONF}: {}",
        String::from_utf8_lossy(&conf_after)
    );
    ensure!(
        disk.read(FALLBACK_CONF)? == fallback_before,
        "the refused unsigned stage 1 changed {FALLBACK_CONF}"
    );
    run.expect_journal(
        &[UNSIGNED_REFUSAL],
        "the client must name the missing signature",
    )?;
    run.log(&format!(
        "unsigned stage 1 refused ({UNSIGNED_REFUSAL}); config byte-identical; booting again"
    ));
    run.boot()?;
    let restarted = now_epoch();
    let first = run.wait_polls(
        Which::Old,
        restarted,
        1,
        "an update check at old after the restart",
        budget(60),
    )?;
    run.timings.booting += Duration::from_secs_f64((first - restarted).max(0.0));
    Ok(())
}
