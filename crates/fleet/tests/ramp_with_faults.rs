//! Canary + ramp of 160 simulated devices with faults: 5% offline for the whole run
//! (stragglers: stay accepted on old, never rejected), 1% that cannot reach new (rolled back
//! automatically), a 429 storm on both servers, a 503 on old's auth during the stage-1
//! commits, and new's management token expiring mid-run (the run stops cleanly and resumes
//! with the same journal). After each step: no device rejected on old and not accepted on new.

mod common;

use std::time::Duration;

use common::{Env, EnvSpec};
use mender_fleet::http::ErrorKind;
use mender_fleet::{DevState, RunError};
use mock_mender_server::{AuthStatus, Endpoint, FaultAction, FaultRule};

#[test]
fn canary_and_ramp_with_faults() {
    let (env, mut plan) = Env::with_batches(
        EnvSpec {
            offline: 8,
            cut_off_from_new: 2,
            poll: Duration::from_millis(400),
            ..EnvSpec::online(150)
        },
        10,
        80,
    );
    // Only the last batch (the devices that stopped checking in go last) waits this long.
    plan.stage_timeout = Duration::from_secs(25);
    plan.appear_timeout = Duration::from_secs(12);
    let orch = env
        .orchestrator(env.config(plan.clone()))
        .expect("pre-flight passes");

    // Faults: the next auth requests on old (the stage-1 commits re-authenticate) get 503,
    // and 429 storms hit both Management APIs.
    env.old.add_fault(FaultRule {
        endpoint: Endpoint::Auth,
        path: None,
        method: None,
        action: FaultAction::Status(503),
        times: Some(15),
    });
    for server in [&env.old, &env.new] {
        server.add_fault(FaultRule {
            endpoint: Endpoint::Management,
            path: None,
            method: None,
            action: FaultAction::Status(429),
            times: Some(25),
        });
    }
    // New's token expires while the run is going.
    let expired = std::thread::scope(|s| {
        let expirer = s.spawn(|| {
            std::thread::sleep(Duration::from_secs(10));
            env.new.expire_management_tokens(true);
        });
        let r = orch.run();
        expirer.join().unwrap();
        r
    });
    match &expired {
        Err(RunError::Api(e)) => assert_eq!(e.kind, ErrorKind::Unauthorized, "{e}"),
        other => panic!("expected the run to stop on the expired token, got {other:?}"),
    }
    assert_eq!(env.lost(), Vec::<String>::new(), "after the token expiry");
    let throttled: u64 = orch.report().calls.values().map(|c| c.throttled).sum();
    assert!(throttled > 0, "the 429 storm was seen and ridden out");
    drop(orch);

    // A fresh token, the same journal: it resumes and finishes.
    env.new.restore_management_token();
    let orch = env.orchestrator(env.config(plan)).expect("resume");
    let report = orch.run().expect("the resumed run finishes");
    assert_eq!(env.stranded(), Vec::<String>::new(), "at the end");
    assert_eq!(env.duplicate_deployments(), Vec::<String>::new());

    let devices = orch.devices();
    let by_identity = |id: &str| {
        devices
            .iter()
            .find(|d| mender_fleet::api::canonical_identity(&d.snapshot.identity) == id)
            .unwrap_or_else(|| panic!("{id} is in the journal"))
            .clone()
    };
    for id in &env.offline_ids {
        let d = by_identity(id);
        assert_eq!(d.state, DevState::Straggler, "{id}: {:?}", d.reason);
        assert_eq!(
            env.old_status(id),
            Some(AuthStatus::Accepted),
            "{id} stays accepted on old"
        );
    }
    for id in &env.cut_off_ids {
        let d = by_identity(id);
        assert_eq!(d.state, DevState::RolledBack, "{id}: {:?}", d.reason);
        assert!(d
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("did not authenticate on new"));
        assert_eq!(
            env.old_status(id),
            Some(AuthStatus::Accepted),
            "{id} accepted on old again"
        );
    }
    assert_eq!(report.migrated, 150, "{}", report.to_text());
    assert_eq!(report.not_on_new.len(), 10, "{}", report.to_text());
    // The simulator agrees: every online device is on new with the new-only config.
    let sim = env.fleets.last().unwrap().report();
    assert_eq!(sim.counts.on_new, 150, "{:?}", sim.counts);
}
