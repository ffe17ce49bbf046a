//! The full two-stage migration, carried out by the orchestrator (`mender-migrate fleet run`),
//! and its variants (patch, replace, service restart, HTTPS, signed artifacts with an
//! unsigned stage refused first).

use crate::artifacts::{artifact_name, ArtifactKind, Mode, Transport, Verify};
use crate::guest::{FALLBACK_CONF, MAIN_CONF, UNSIGNED_REFUSAL, VERIFY_KEY};
use crate::harness::{inventory_attr, Run, Which};
use crate::servers::{now_epoch, parse_rfc3339, LoggedRequest as _, RequestLogEntry};
use crate::speed::budget;
use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

/// The tenant migration carried out by the orchestrator (`mender-migrate fleet run`): the
/// harness boots the device and has it accepted on old, the orchestrator does every
/// server-side step (module-install + stage 1 from old, preauthorize on new, reject on old,
/// stage 2 from new) and the reboots happen through the real client; then the harness checks
/// the servers' views, their request logs and the disk. With `unsigned_stage1` (a device that
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
    let artifacts_dir = stage1
        .parent()
        .context("stage 1 artifact without a directory")?
        .to_path_buf();
    run.start_servers(transport, false)?;
    run.prepare_disk(false, |_, _| Ok(()))?;
    let disk = run.disk.as_ref().context("no disk")?;
    let verify_key_before = disk.read(VERIFY_KEY)?;
    let fallback_before = disk.read(FALLBACK_CONF)?;
    ensure!(
        verify_key_before.is_some() == verify.device_verifies(),
        "{VERIFY_KEY} on the disk does not match the scenario's signing setup"
    );
    run.boot()?;
    run.accept_on_old()?;
    if let Some(unsigned) = unsigned_stage1 {
        // The 3.4 client looks for the payload's update module before it checks the
        // signature, so the refusal needs the module installed: the harness deploys the signed
        // module-install itself (the orchestrator's later one is then `already-installed`).
        let r = run.deploy(Which::Old, &module_install)?;
        run.expect_status(&r, "success")?;
        refuse_unsigned(run, unsigned, fallback_before)?;
    }
    let handed_over = now_epoch();

    run.run_fleet(&artifacts_dir)?;

    // What the orchestrator did, seen from the servers: module-install and stage 1 from old,
    // both `success`; preauthorized on new only after stage 1's success, before the reject.
    let module_expected = if unsigned_stage1.is_some() {
        "already-installed"
    } else {
        "success"
    };
    let r = finished_deployment(run, Which::Old, &module_install, module_expected)?;
    // An `already-installed` deployment has no reports to order.
    let module_done = last_report_time(&r).ok();
    let r = finished_deployment(run, Which::Old, &stage1, "success")?;
    let stage1_done = last_report_time(&r)?;
    ensure!(
        module_done.is_none_or(|t| t <= stage1_done),
        "stage 1 finished before the module installer"
    );
    if mode == Mode::PatchServiceRestart {
        ensure!(
            r["history"]
                .as_array()
                .is_some_and(|h| !h.iter().any(|x| x["status"] == "rebooting")),
            "a service-restart stage rebooted: {}",
            r["history"]
        );
    }
    let rejected_at = first_request_at(
        run,
        Which::Old,
        "the orchestrator's auth status change on old",
        |r| {
            r.method == "PUT"
                && r.path.contains("/devauth/devices/")
                && r.path.ends_with("/status")
                && r.epoch() > handed_over
        },
    )?;
    let preauthorized_at = first_request_at(run, Which::New, "a preauthorization on new", |r| {
        r.method == "POST"
            && r.path == "/api/management/v2/devauth/devices"
            && r.status.is_some_and(|s| s < 300)
    })?;
    ensure!(
        stage1_done <= preauthorized_at && preauthorized_at <= rejected_at,
        "order broken: stage 1 success {stage1_done}, preauthorized on new {preauthorized_at}, \
         rejected on old {rejected_at}"
    );
    let early: Vec<String> = run
        .server(Which::New)?
        .device_requests()?
        .iter()
        .filter(|r| r.epoch() < rejected_at - 1.0)
        .map(|r| format!("{} {} {} -> {:?}", r.time, r.method, r.path, r.status))
        .collect();
    ensure!(
        early.is_empty(),
        "the device contacted new while old still accepted it (Servers[0] must win): {early:?}"
    );
    check_dual_inventory(run)?;

    // The failover: old answered 401 after the reject, the device authenticated on new (with
    // old's identity and key) and used its API.
    run.expect_failover(rejected_at)?;
    expect_same_auth_set(run)?;

    // Stage 2 from new.
    let r = finished_deployment(run, Which::New, &stage2, "success")?;
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
    let inv = run.wait_inventory(
        Which::New,
        "new's inventory showing the stage-2 artifact and the new-only stage",
        |inv| {
            inventory_attr(inv, "artifact_name").is_some_and(|v| v == stage2_name.as_str())
                && inventory_attr(inv, "server_migration_stage").is_some_and(|v| v == "new-only")
        },
    )?;
    let servers_attr = inventory_attr(&inv, "server_migration_servers");
    ensure!(
        servers_attr == Some(Value::from(run.new_url()))
            || servers_attr == Some(serde_json::json!([run.new_url()])),
        "after stage 2 the device reports servers {servers_attr:?}, expected [new]"
    );
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

/// The orchestrator's one deployment of `artifact` on `which`: this device's part of it,
/// which must have ended `expected` (its reboots counted as booting time).
fn finished_deployment(
    run: &mut Run,
    which: Which,
    artifact: &Path,
    expected: &str,
) -> Result<Value> {
    let name = artifact_name(artifact);
    let device = run.device_id(which)?;
    let ids: Vec<String> = run
        .server(which)?
        .deployments()?
        .iter()
        .filter(|d| d["artifact_name"] == name.as_str())
        // The orchestrator's deterministic names; the harness names its own `{artifact}-{n}`.
        .filter(|d| d["name"].as_str().is_some_and(|n| n.starts_with("srvmig-")))
        .filter_map(|d| d["id"].as_str().map(str::to_string))
        .collect();
    ensure!(
        ids.len() == 1,
        "expected one deployment of {name} on {which:?} (the orchestrator's), found {}",
        ids.len()
    );
    let mut r = run
        .server(which)?
        .deployment_device(&ids[0], &device)?
        .with_context(|| format!("the deployment of {name} on {which:?} lacks the device"))?;
    r["deployment_id"] = ids[0].clone().into();
    run.note_deployment(&format!("{name} from {which:?}"), &r);
    run.expect_status(&r, expected)?;
    Ok(r)
}

/// When `which` logged its first request matching `wanted` (epoch seconds).
fn first_request_at(
    run: &Run,
    which: Which,
    what: &str,
    wanted: impl Fn(&RequestLogEntry) -> bool,
) -> Result<f64> {
    run.server(which)?
        .requests()?
        .iter()
        .find(|r| wanted(r))
        .map(|r| r.epoch())
        .with_context(|| format!("{which:?}'s request log shows no {what}"))
}

/// When the device's last report of a deployment arrived (epoch seconds).
fn last_report_time(device_deployment: &Value) -> Result<f64> {
    device_deployment["history"]
        .as_array()
        .and_then(|h| h.last())
        .and_then(|x| x["time"].as_str())
        .and_then(parse_rfc3339)
        .context("deployment without report times")
}

/// Old's inventory of the device after stage 1. The orchestrator rejects the device seconds
/// after its `success`, so its last inventory at old may predate stage 1 (then its stage is
/// `none` or not reported yet); when it reports the dual stage, the servers must be
/// `[old, new]`.
fn check_dual_inventory(run: &mut Run) -> Result<()> {
    let dev = run.device_id(Which::Old)?;
    let inv = run.server(Which::Old)?.inventory(&dev)?;
    let stage = inventory_attr(&inv, "server_migration_stage");
    let servers = inventory_attr(&inv, "server_migration_servers");
    if stage == Some(Value::from("dual")) {
        ensure!(
            servers == Some(serde_json::json!([run.old_url(), run.new_url()])),
            "after stage 1 the device reports servers {servers:?}, expected [old, new]"
        );
        run.log(&format!(
            "old's inventory after stage 1: dual, servers {servers:?}"
        ));
    } else {
        // Before the module-install, the module's inventory script is not there yet.
        ensure!(
            matches!(stage.as_ref().and_then(Value::as_str), None | Some("none"))
                && servers
                    .as_ref()
                    .is_none_or(|u| u.as_str() == Some(run.old_url().as_str())),
            "old's inventory shows stage {stage:?} with servers {servers:?}"
        );
        run.log(&format!(
            "old's last inventory predates stage 1 (stage {stage:?}, servers {servers:?})"
        ));
    }
    Ok(())
}

/// The device's accepted auth set on new carries the identity and key it had on old, where
/// that set is now rejected (never decommissioned).
fn expect_same_auth_set(run: &mut Run) -> Result<()> {
    let find = |which: Which, id: String| -> Result<Value> {
        run.server(which)?
            .devices()?
            .into_iter()
            .find(|d| d["id"].as_str() == Some(&id))
            .with_context(|| format!("device {id} not listed on {which:?}"))
    };
    let old = find(Which::Old, run.device_id(Which::Old)?)?;
    let new = find(Which::New, run.device_id(Which::New)?)?;
    let set = |device: &Value, status: &str| -> Option<(Value, String)> {
        device["auth_sets"]
            .as_array()?
            .iter()
            .find(|a| a["status"] == status)
            .map(|a| {
                (
                    a["identity_data"].clone(),
                    a["pubkey"].as_str().unwrap_or_default().trim().to_string(),
                )
            })
    };
    let on_old = set(&old, "rejected").context("no rejected auth set on old")?;
    let on_new = set(&new, "accepted").context("no accepted auth set on new")?;
    ensure!(
        on_old == on_new,
        "new accepted {on_new:?}, but old had {on_old:?}"
    );
    ensure!(
        old["status"] == "rejected",
        "device on old is {}",
        old["status"]
    );
    Ok(())
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
///
/// `fallback_before` is the fallback config as it was on the disk before the first boot (the
/// disk is not read while the guest runs: debugfs may see half-written bitmaps).
pub(crate) fn refuse_unsigned(
    run: &mut Run,
    unsigned: &Path,
    fallback_before: Option<Vec<u8>>,
) -> Result<()> {
    let conf_before = std::fs::read(run.dir.join("inject/mender.conf"))?;
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
