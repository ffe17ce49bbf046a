//! End-to-end migrations of simulated fleets between two in-process mock servers, driven by a
//! scripted sequence of management calls, with the stage artifacts built by the project's CLI.
//! The wrong sequences must show up as failures or stranded devices.

mod common;

use common::{build_artifacts, Mgmt};
use mender_fleet_sim::{ClientGeneration, Fleet, FleetReport, FleetSpec, InitialConfig, Knobs};
use mock_mender_server::{MockServer, ServerConfig};
use std::time::{Duration, Instant};

const DEVICE_TYPE: &str = "qemux86-64";
/// Generous: the suite runs on a loaded 2-core machine.
const PHASE_TIMEOUT: Duration = Duration::from_secs(180);

fn knobs() -> Knobs {
    Knobs {
        update_poll: Duration::from_millis(1000),
        inventory_poll: Duration::from_secs(5),
        retry_poll: Duration::from_millis(300),
        start_spread: Duration::from_millis(1000),
        reboot_time: Duration::from_millis(100),
        ..Knobs::default()
    }
}

struct Setup {
    old: MockServer,
    new: MockServer,
    mgmt_old: Mgmt,
    mgmt_new: Mgmt,
    fleet: Fleet,
    n: usize,
}

/// Two servers and `n` devices with `{"ServerURL": old}`, preauthorized and running on old.
fn setup(n: usize, prefix: &str) -> Setup {
    setup_with(n, prefix, |_| {})
}

fn setup_with(n: usize, prefix: &str, adjust: impl FnOnce(&mut FleetSpec)) -> Setup {
    let old = MockServer::start(ServerConfig::new("old", "token-old")).unwrap();
    let new = MockServer::start(ServerConfig::new("new", "token-new")).unwrap();
    let mut spec = FleetSpec::new(n, InitialConfig::server_url(old.url()));
    spec.id_prefix = prefix.into();
    spec.device_type = DEVICE_TYPE.into();
    spec.old_server = Some(old.url().into());
    spec.new_server = Some(new.url().into());
    spec.knobs = knobs();
    adjust(&mut spec);
    let fleet = Fleet::new(spec).unwrap();
    let (mgmt_old, mgmt_new) = (Mgmt::new(&old), Mgmt::new(&new));
    for d in fleet.identities() {
        mgmt_old.preauthorize(&d.id_data, &d.pubkey);
    }
    fleet.boot();
    let r = fleet.wait_until(PHASE_TIMEOUT, |c| c.on_old == n && c.polled == n);
    assert_eq!(r.counts.on_old, n, "{:?}", r.counts);
    Setup {
        old,
        new,
        mgmt_old,
        mgmt_new,
        fleet,
        n,
    }
}

/// Waits until every device reports a final outcome for `artifact`; returns the report.
fn wait_outcomes(fleet: &Fleet, artifact: &str, n: usize) -> FleetReport {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        let report = fleet.report();
        let done = report
            .devices
            .iter()
            .filter(|d| d.deployments.iter().any(|o| o.artifact_name == artifact))
            .count();
        if done == n || Instant::now() >= deadline {
            eprintln!(
                "[{}] {done}/{n} outcomes for {artifact} after {} ms: {:?}",
                report
                    .devices
                    .first()
                    .map(|d| d.id_data_json.as_str())
                    .unwrap_or(""),
                report.elapsed_ms,
                report.counts
            );
            assert_eq!(done, n, "devices with an outcome for {artifact}");
            return report;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_all_succeeded(report: &FleetReport, artifact: &str) {
    for d in &report.devices {
        let o = d
            .deployments
            .iter()
            .find(|o| o.artifact_name == artifact)
            .unwrap();
        assert_eq!(o.status, "success", "device {}: {o:?}", d.index);
        assert_eq!(o.error, None, "device {}: {o:?}", d.index);
    }
}

fn old_ids(s: &Setup) -> Vec<String> {
    s.mgmt_old
        .ids_by_serial()
        .into_values()
        .map(|(id, _)| id)
        .collect()
}

/// Builds the artifacts (stage 1 on `[old, new_in_stage1]`), uploads the module install and
/// the stage `pick` chooses to old, and deploys the module install to every device there,
/// waiting for every outcome. Returns the artifacts, the devices' ids on old and the module
/// install's report.
fn install_the_module(
    s: &Setup,
    dir: &std::path::Path,
    new_in_stage1: &str,
    pick: impl Fn(&common::Artifacts) -> &std::path::PathBuf,
) -> (common::Artifacts, Vec<String>, FleetReport) {
    let arts = build_artifacts(dir, "mig", s.old.url(), new_in_stage1, DEVICE_TYPE);
    s.mgmt_old.upload(&arts.module_install);
    s.mgmt_old.upload(pick(&arts));
    let ids = old_ids(s);
    s.mgmt_old
        .deploy("module", "mig-module-install-x86_64", &ids);
    let report = wait_outcomes(&s.fleet, "mig-module-install-x86_64", s.n);
    (arts, ids, report)
}

/// Module install and stage 1 from old; every device ends on `[old, new_in_stage1]`.
fn run_stage1(s: &Setup, dir: &std::path::Path, new_in_stage1: &str) -> common::Artifacts {
    let (arts, ids, module) = install_the_module(s, dir, new_in_stage1, |a| &a.stage1);
    assert_eq!(ids.len(), s.n);
    assert_all_succeeded(&module, "mig-module-install-x86_64");
    s.mgmt_old.deploy("stage1", "mig-stage1-dual", &ids);
    let report = wait_outcomes(&s.fleet, "mig-stage1-dual", s.n);
    assert_all_succeeded(&report, "mig-stage1-dual");
    for d in &report.devices {
        assert_eq!(
            d.config_servers,
            [s.old.url(), new_in_stage1],
            "device {}",
            d.index
        );
        assert_eq!(
            d.provides.get("server-migration.stage").map(String::as_str),
            Some("dual")
        );
    }
    arts
}

fn preauthorize_on_new_and_reject_on_old(s: &Setup) {
    for d in s.fleet.identities() {
        s.mgmt_new.preauthorize(&d.id_data, &d.pubkey);
    }
    for (id, aid) in s.mgmt_old.ids_by_serial().into_values() {
        s.mgmt_old.set_auth_status(&id, &aid, "rejected");
    }
}

/// Stage 2 from new: the fleet fails over to new (preauthorized there, rejected on old), then
/// every device installs `arts.stage2` from new; returns the report of that deployment.
fn fail_over_and_run_stage2(s: &Setup, arts: &common::Artifacts) -> FleetReport {
    s.mgmt_new.upload(&arts.stage2);
    preauthorize_on_new_and_reject_on_old(s);
    let r = s.fleet.wait_until(PHASE_TIMEOUT, |c| c.on_new == s.n);
    assert_eq!(r.counts.on_new, s.n, "{:?}", r.counts);
    let new_ids: Vec<String> = s
        .mgmt_new
        .ids_by_serial()
        .into_values()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(new_ids.len(), s.n);
    s.mgmt_new.deploy("stage2", "mig-stage2-new-only", &new_ids);
    let report = wait_outcomes(&s.fleet, "mig-stage2-new-only", s.n);
    assert_all_succeeded(&report, "mig-stage2-new-only");
    report
}

#[test]
fn two_hundred_devices_migrate_with_zero_stranded() {
    let s = setup(200, "MIG");
    let dir = tempfile::tempdir().unwrap();
    let arts = run_stage1(&s, dir.path(), s.new.url());
    // Stage 1 leaves them on old: the walk starts at Servers[0], which still accepts them.
    assert_eq!(s.fleet.counts().on_old, s.n);

    fail_over_and_run_stage2(&s, &arts);

    // After the stage-2 reboot every client runs with the new-only config, on new.
    let report = s
        .fleet
        .wait_until(PHASE_TIMEOUT, |c| c.on_new == s.n && c.restarting == 0);
    assert_eq!(report.counts.stranded, 0, "{:?}", report.counts);
    assert_eq!(report.counts.on_new, s.n);
    for d in &report.devices {
        assert_eq!(d.config_servers, [s.new.url()], "device {}", d.index);
        assert_eq!(d.loaded_servers, [s.new.url()], "device {}", d.index);
        assert_eq!(d.server.as_deref(), Some(s.new.url()));
        assert_eq!(
            d.provides.get("server-migration.stage").map(String::as_str),
            Some("new-only")
        );
        let main = d.main_config.as_deref().unwrap();
        assert!(!main.contains("Servers"), "{main}");
    }
    // The new server saw every device's stage-2 success.
    let stage2 = s
        .new
        .deployments()
        .into_iter()
        .find(|d| d.artifact_name == "mig-stage2-new-only")
        .unwrap();
    let text = serde_json::to_string(&stage2).unwrap();
    let successes = text.matches("\"success\"").count();
    assert!(successes >= s.n, "{successes} success reports on new");
    s.fleet.stop();
}

#[test]
fn stage1_without_the_new_server_strands_the_fleet() {
    let s = setup(40, "BAD");
    let dir = tempfile::tempdir().unwrap();
    // A stage 1 built for the wrong new server (nothing listens on port 9).
    run_stage1(&s, dir.path(), "http://127.0.0.1:9");
    preauthorize_on_new_and_reject_on_old(&s);
    let r = s.fleet.wait_until(PHASE_TIMEOUT, |c| c.stranded == s.n);
    for d in r.devices.iter().filter(|d| d.server.is_some()).take(3) {
        eprintln!("{}", serde_json::to_string_pretty(d).unwrap());
    }
    assert_eq!(r.counts.stranded, s.n, "{:?}", r.counts);
    assert_eq!(r.counts.on_new, 0);
    assert_eq!(r.stranded().count(), s.n);
    s.fleet.stop();
}

/// Stage 2 deployed first (from old): the stage depends on `server-migration.stage: dual`,
/// which no device provides yet. The open-source server (and the mock) offers it anyway, by
/// device type only; the client refuses it, reports `failure`, and nothing changes.
#[test]
fn stage2_first_is_refused_and_changes_nothing() {
    let s = setup(30, "S2F");
    let dir = tempfile::tempdir().unwrap();
    let (_, ids, _) = install_the_module(&s, dir.path(), s.new.url(), |a| &a.stage2);
    s.mgmt_old
        .deploy("stage2-first", "mig-stage2-new-only", &ids);
    // Bounded: until every device has an outcome, or 6 more update checks per device.
    let checks = s.fleet.update_checks();
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let report = loop {
        let r = s.fleet.report();
        let outcomes = r
            .devices
            .iter()
            .filter(|d| {
                d.deployments
                    .iter()
                    .any(|o| o.artifact_name == "mig-stage2-new-only")
            })
            .count();
        if outcomes == s.n
            || r.update_checks >= checks + 6 * s.n as u64
            || Instant::now() >= deadline
        {
            eprintln!(
                "stage 2 first: {outcomes}/{} devices were offered it and refused it",
                s.n
            );
            assert!(outcomes == 0 || outcomes == s.n, "{outcomes}");
            break r;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for d in &report.devices {
        if let Some(o) = d
            .deployments
            .iter()
            .find(|o| o.artifact_name == "mig-stage2-new-only")
        {
            assert_eq!(o.status, "failure", "device {}", d.index);
            let error = o.error.as_deref().unwrap();
            assert!(
                error.contains("Missing 'server-migration.stage' in provides"),
                "{error}"
            );
        }
        assert_eq!(d.config_servers, [s.old.url()]);
        assert_eq!(
            d.main_config.as_deref().unwrap(),
            format!("{{\n  \"ServerURL\": \"{}\"\n}}\n", s.old.url())
        );
        assert_eq!(
            d.provides.get("artifact_name").unwrap(),
            "mig-module-install-x86_64"
        );
    }
    assert_eq!(report.counts.on_old, s.n);
    s.fleet.stop();
}

#[test]
fn a_dead_active_server_is_sticky_until_a_401() {
    let s = setup(20, "STK");
    let dir = tempfile::tempdir().unwrap();
    run_stage1(&s, dir.path(), s.new.url());
    for d in s.fleet.identities() {
        s.mgmt_new.preauthorize(&d.id_data, &d.pubkey);
    }
    // Old goes down: connection errors are not a failover trigger (3.4 proxy 503).
    s.old.set_down(true);
    let checks = s.fleet.update_checks();
    std::thread::sleep(Duration::from_secs(4));
    let c = s.fleet.counts();
    assert_eq!(c.on_old, s.n, "{c:?}");
    assert_eq!(c.on_new, 0);
    assert_eq!(
        s.fleet.update_checks(),
        checks,
        "no update check got an answer while old was down"
    );
    // Old comes back and rejects: the 401 makes every device walk over to new.
    s.old.set_down(false);
    for (id, aid) in s.mgmt_old.ids_by_serial().into_values() {
        s.mgmt_old.set_auth_status(&id, &aid, "rejected");
    }
    let r = s.fleet.wait_until(PHASE_TIMEOUT, |c| c.on_new == s.n);
    assert_eq!(r.counts.on_new, s.n, "{:?}", r.counts);
    s.fleet.stop();
}

#[test]
fn a_5x_fleet_migrates_too() {
    let s = setup_with(30, "V5X", |spec| spec.knobs.v5_fraction = 1.0);
    assert!(s
        .fleet
        .report()
        .devices
        .iter()
        .all(|d| d.client == ClientGeneration::V5));
    let dir = tempfile::tempdir().unwrap();
    let arts = run_stage1(&s, dir.path(), s.new.url());
    fail_over_and_run_stage2(&s, &arts);
    let r = s
        .fleet
        .wait_until(PHASE_TIMEOUT, |c| c.on_new == s.n && c.restarting == 0);
    assert_eq!(r.counts.stranded, 0);
    for d in &r.devices {
        assert_eq!(d.loaded_servers, [s.new.url()]);
    }
    s.fleet.stop();
}

#[test]
fn a_power_cut_during_the_stage_install_leaves_the_old_config() {
    let s = setup_with(20, "PWR", |spec| spec.knobs.power_cut_during_install = 1.0);
    let dir = tempfile::tempdir().unwrap();
    let (_, ids, _) = install_the_module(&s, dir.path(), s.new.url(), |a| &a.stage1);
    s.mgmt_old.deploy("stage1", "mig-stage1-dual", &ids);
    let report = wait_outcomes(&s.fleet, "mig-stage1-dual", s.n);
    let mut booted_with_new = 0;
    for d in &report.devices {
        let o = d
            .deployments
            .iter()
            .find(|o| o.artifact_name == "mig-stage1-dual")
            .unwrap();
        assert_eq!(o.status, "failure", "device {}", d.index);
        assert!(o.error.as_deref().unwrap().contains("power lost"), "{o:?}");
        // Rolled back on disk; a cut after the module's commit point booted the client with
        // the new (dual) config, which it keeps until its next start.
        assert_eq!(d.config_servers, [s.old.url()], "device {}", d.index);
        booted_with_new += usize::from(d.loaded_servers.len() == 2);
        assert_ne!(
            d.provides.get("server-migration.stage").map(String::as_str),
            Some("dual")
        );
    }
    eprintln!(
        "{booted_with_new}/{} booted with the new config after the cut",
        s.n
    );
    assert_eq!(report.counts.stranded, 0);
    assert_eq!(report.counts.on_old, s.n);
    s.fleet.stop();
}

#[test]
fn regenerated_keys_strand_devices_until_their_new_auth_set_is_accepted() {
    let s = setup_with(20, "KEY", |spec| {
        spec.knobs.key_regeneration_fraction = 0.5;
        spec.knobs.key_regeneration_at = Duration::from_secs(3);
    });
    let regenerated = || {
        s.fleet
            .report()
            .devices
            .iter()
            .filter(|d| d.key_generation > 0)
            .count()
    };
    let r = s
        .fleet
        .wait_until(PHASE_TIMEOUT, |c| c.stranded > 0 && c.restarting == 0);
    std::thread::sleep(Duration::from_secs(2));
    let k = regenerated();
    assert!(k > 0 && k < s.n, "{k} regenerated");
    let r2 = s.fleet.wait_until(PHASE_TIMEOUT, |c| c.stranded == k);
    assert_eq!(
        r2.counts.stranded, k,
        "{:?} (first {:?})",
        r2.counts, r.counts
    );
    for d in r2.stranded() {
        assert_eq!(d.key_generation, 1);
    }
    // The new keys show up as pending sets on old; accepting them brings the devices back.
    for device in s.mgmt_old.devices() {
        for set in device["auth_sets"].as_array().unwrap() {
            if set["status"] == "pending" {
                s.mgmt_old.set_auth_status(
                    device["id"].as_str().unwrap(),
                    set["id"].as_str().unwrap(),
                    "accepted",
                );
            }
        }
    }
    let r3 = s.fleet.wait_until(PHASE_TIMEOUT, |c| c.on_old == s.n);
    assert_eq!(r3.counts.on_old, s.n, "{:?}", r3.counts);
    s.fleet.stop();
}
