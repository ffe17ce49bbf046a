//! The orchestrator killed at every kind of side effect (right before it is sent, and right
//! after it returned but before its result was journaled), then started again with the same
//! journal: the same end state as an uninterrupted run, no duplicate deployment, and never a
//! device rejected on old and not accepted on new.

mod common;

use std::time::Duration;

use common::{Env, EnvSpec};
use mender_fleet::{DevState, KillSwitch, OpKind, RunError};

#[test]
fn killed_at_every_side_effect_and_resumed() {
    // One batch holding every situation: normal devices, one that never polls (straggler:
    // per-device and deployment aborts) and one that cannot reach new (rollback).
    let (env, mut plan) = Env::with_batches(
        EnvSpec {
            offline: 1,
            cut_off_from_new: 1,
            ..EnvSpec::online(5)
        },
        7,
        7,
    );
    plan.stage_timeout = Duration::from_secs(8);
    plan.appear_timeout = Duration::from_secs(4);
    let points: Vec<KillSwitch> = [
        OpKind::Upload,
        OpKind::CreateDeployment,
        OpKind::AbortDevices,
        OpKind::Preauth,
        OpKind::Reject,
        OpKind::Rollback,
        // Last: a batch deployment is aborted only when the per-device aborts did not
        // finish it (a server that keeps it active), so this point may not be reached.
        OpKind::AbortDeployment,
    ]
    .into_iter()
    .flat_map(|kind| {
        [false, true].map(|after| KillSwitch {
            kind,
            nth: 1,
            after,
        })
    })
    .collect();
    let mut hit = Vec::new();
    let mut finished = None;
    for point in &points {
        let mut orch = env.orchestrator(env.config(plan.clone())).expect("open");
        orch.set_kill_switch(*point);
        match orch.run() {
            Err(RunError::Killed) => hit.push(format!(
                "{:?}/{}",
                point.kind,
                if point.after { "after" } else { "before" }
            )),
            Ok(report) => {
                finished = Some(report);
                break;
            }
            Err(e) => panic!("run with {point:?} failed: {e}"),
        }
        assert_eq!(
            env.lost(),
            Vec::<String>::new(),
            "after a kill at {point:?}"
        );
        assert_eq!(
            env.duplicate_deployments(),
            Vec::<String>::new(),
            "after a kill at {point:?}"
        );
    }
    let report = match finished {
        Some(r) => r,
        None => env
            .orchestrator(env.config(plan))
            .unwrap()
            .run()
            .expect("the last resume finishes"),
    };
    let must: Vec<String> = points
        .iter()
        .filter(|p| p.kind != OpKind::AbortDeployment)
        .map(|p| format!("{:?}/{}", p.kind, if p.after { "after" } else { "before" }))
        .collect();
    for p in &must {
        assert!(hit.contains(p), "kill point {p} was not reached: {hit:?}");
    }
    assert_eq!(env.stranded(), Vec::<String>::new());
    assert_eq!(env.duplicate_deployments(), Vec::<String>::new());
    assert_eq!(report.migrated, 5, "{}", report.to_text());
    let states: Vec<DevState> = report
        .not_on_new
        .iter()
        .map(|d| match d.state.as_str() {
            "straggler" => DevState::Straggler,
            "rolled_back" => DevState::RolledBack,
            other => panic!("unexpected state {other}: {}", report.to_text()),
        })
        .collect();
    assert_eq!(states.len(), 2);
    assert!(states.contains(&DevState::Straggler) && states.contains(&DevState::RolledBack));
}
