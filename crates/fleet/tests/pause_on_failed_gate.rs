//! A batch whose failed share is over `--failure-threshold` pauses the run: nothing of that
//! batch is preauthorized or rejected, no further batch starts, a rerun without `--resume`
//! stays paused, `--resume` continues and `--retry-failed` migrates the failed devices later.

mod common;

use common::{Env, EnvSpec};
use mender_fleet::{DevState, RunError};
use mock_mender_server::{AuthStatus, Endpoint, FaultAction, FaultRule};

#[test]
fn failed_batch_pauses_until_resumed() {
    let (env, mut plan) = Env::with_batches(EnvSpec::online(24), 8, 16);
    plan.failure_threshold = 0.25;
    plan.min_sample = 4;
    let orch = env
        .orchestrator(env.config(plan.clone()))
        .expect("pre-flight passes");
    // Every artifact download from old fails: the canary's installs fail.
    env.old
        .add_fault(FaultRule::new(Endpoint::Download, FaultAction::Status(500)));
    let err = orch.run().expect_err("the canary fails");
    match &err {
        RunError::Paused { batch, gate, .. } => {
            assert_eq!(*batch, 1);
            assert_eq!(gate, "stage1");
        }
        other => panic!("expected a pause, got {other:?}"),
    }
    let devices = orch.devices();
    let failed = devices
        .iter()
        .filter(|d| d.state == DevState::Stage1Failed)
        .count();
    assert!(failed >= 2, "the canary failed: {failed}");
    assert!(devices
        .iter()
        .all(|d| !matches!(d.state, DevState::Preauthorized | DevState::RejectedOnOld)));
    assert_eq!(
        devices.iter().filter(|d| d.batch.is_some()).count(),
        8,
        "no second batch"
    );
    assert!(
        env.new
            .devices()
            .iter()
            .all(|d| d.status != AuthStatus::Preauthorized),
        "nothing preauthorized on new"
    );
    assert!(
        env.old
            .devices()
            .iter()
            .all(|d| d.status == AuthStatus::Accepted),
        "nothing rejected on old"
    );
    assert_eq!(env.stranded(), Vec::<String>::new());
    drop(orch);

    // The operator fixes the cause. A rerun without --resume stays paused.
    env.old.set_faults(Vec::new());
    let orch = env.orchestrator(env.config(plan.clone())).unwrap();
    assert!(matches!(orch.run(), Err(RunError::Paused { .. })));
    drop(orch);

    // --resume: the rest migrates; the canary's failed devices stay on old.
    let mut cfg = env.config(plan.clone());
    cfg.resume_paused = true;
    let orch = env.orchestrator(cfg).unwrap();
    let report = orch.run().expect("resumed run finishes");
    assert_eq!(report.migrated + failed, 24, "{}", report.to_text());
    assert_eq!(env.stranded(), Vec::<String>::new());
    drop(orch);

    // --retry-failed: the failed ones get a new batch and migrate too.
    let mut cfg = env.config(plan);
    cfg.retry_failed = true;
    let orch = env.orchestrator(cfg).unwrap();
    let report = orch.run().expect("retry run finishes");
    assert_eq!(report.migrated, 24, "{}", report.to_text());
    assert_eq!(env.stranded(), Vec::<String>::new());
    assert_eq!(env.duplicate_deployments(), Vec::<String>::new());
}
