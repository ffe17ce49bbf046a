//! The per-device state machine and the batch loop of `fleet run`, plus `fleet rollback`.
//!
//! Batch phases: deploy module-install + stage 1 from old → stage-1 gate (stragglers aborted
//! per device, failure share judged) → preauthorize on new → capacity check on new → reject
//! on old → wait until each device authenticated on new (roll back the ones that do not
//! within `--appear-timeout`) → deploy stage 2 from new → stage-2 gate. Every side effect is
//! journaled (intent, then result); [`Orchestrator::run`] on an existing journal first
//! reconciles the open intents, then finishes started batches, then starts new ones.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::{same_key, Api, Preauth};
use crate::artifacts::{ArtifactSet, Role};
use crate::duration::format_duration;
use crate::http::{ApiError, ErrorKind};
use crate::journal::{
    now, now_ms, DevState, DeviceView, Fleet, Journal, Op, OpKind, Record, Side, SnapshotDevice,
    JOURNAL_VERSION,
};
use crate::preflight::{preflight, PreflightReport};
use crate::progress::Progress;
use crate::report::Report;
use crate::FleetConfig;

/// Test hook: behave like a process killed at the `nth` side effect of `kind`, either right
/// before it is sent (`after = false`, intent durable) or right after it returned and before
/// its result is journaled (`after = true`).
#[derive(Clone, Copy, Debug)]
pub struct KillSwitch {
    pub kind: OpKind,
    pub nth: usize,
    pub after: bool,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Api(#[from] ApiError),
    #[error("journal: {0}")]
    Journal(String),
    #[error("{0}")]
    Config(String),
    #[error("pre-flight failed")]
    Preflight(Box<PreflightReport>),
    #[error("paused at batch {batch} ({gate} gate): {reason}; look at the failed devices, then run again with --resume to continue")]
    Paused {
        batch: u32,
        gate: String,
        reason: String,
    },
    #[error("killed by the test hook")]
    Killed,
    /// A batch stopped waiting because another batch of the pipeline stopped the run (that
    /// batch's error is the one reported).
    #[error("stopped: another batch of this run stopped first")]
    Stopped,
}

impl From<String> for RunError {
    fn from(s: String) -> Self {
        RunError::Journal(s)
    }
}

type R<T> = Result<T, RunError>;

enum PreauthOutcome {
    Done { new_id: String, new_aid: String },
    Refused(String),
}

/// What an [`Orchestrator`] is opened for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `fleet run`: opens the journal (resume) or, when it does not exist, runs the pre-flight
    /// and creates it with the fleet snapshot (a failed pre-flight creates nothing); loads the
    /// artifacts.
    Run,
    /// `status`/`rollback`: an existing journal only (no pre-flight, no artifacts needed).
    Existing,
}

/// Orchestrates one journal's migration.
pub struct Orchestrator {
    old: Api,
    new: Api,
    cfg: FleetConfig,
    journal: Journal,
    fleet: Mutex<Fleet>,
    artifacts: ArtifactSet,
    names: BTreeMap<Role, BTreeMap<String, String>>,
    progress: Arc<Progress>,
    kill: Option<KillSwitch>,
    kill_count: Mutex<HashMap<(OpKind, bool), usize>>,
    killed: AtomicBool,
    /// Set when a batch's thread stopped (error or pause): no further batch starts.
    stopping: AtomicBool,
    /// Held from a batch's preauthorize to its reject (see [`Orchestrator::pipeline`]).
    moving: Mutex<()>,
}

/// Batches past their stage-1 trigger at once (each in its own thread).
const TAILS_IN_FLIGHT: usize = 2;

fn stage_ok(status: &str) -> Option<bool> {
    match status {
        "success" | "already-installed" => Some(true),
        "failure" | "noartifact" | "aborted" | "decommissioned" => Some(false),
        _ => None,
    }
}

/// The device's id on `side` (empty on new before it was preauthorized there).
fn side_id(d: &DeviceView, side: Side) -> &str {
    match side {
        Side::Old => &d.snapshot.id,
        Side::New => d.new_id.as_deref().unwrap_or_default(),
    }
}

/// Opens a journal, replaying it record by record, and checks it migrates these servers.
fn open_journal(path: &Path, old: &Api, new: &Api) -> R<(Journal, Fleet)> {
    let mut fleet = Fleet::default();
    let journal = Journal::open_with(path, |r| fleet.apply(&r))?;
    if fleet.old != old.client.base_url() || fleet.new != new.client.base_url() {
        return Err(RunError::Config(format!(
            "{}: this journal migrates {} → {}, not {} → {}",
            path.display(),
            fleet.old,
            fleet.new,
            old.client.base_url(),
            new.client.base_url()
        )));
    }
    Ok((journal, fleet))
}

/// Journals the snapshot (consumed: each device is held once, in the fleet view) and marks
/// it complete, durably.
fn write_snapshot(journal: &Journal, fleet: &mut Fleet, snapshot: Vec<SnapshotDevice>) -> R<()> {
    let count = snapshot.len();
    for d in snapshot {
        let r = Record::Device(d);
        journal.append(&r)?;
        fleet.apply(&r);
    }
    let done = Record::SnapshotDone { count };
    journal.append_sync(&done)?;
    fleet.apply(&done);
    Ok(())
}

impl Orchestrator {
    /// Opens the journal at `journal_path` for `access` (see [`Access`]).
    pub fn open(
        old: Api,
        new: Api,
        cfg: FleetConfig,
        journal_path: &Path,
        progress: Arc<Progress>,
        access: Access,
    ) -> R<Orchestrator> {
        if access == Access::Existing {
            let (journal, fleet) = open_journal(journal_path, &old, &new)?;
            return Ok(Orchestrator::assemble(
                old, new, cfg, journal, fleet, progress,
            ));
        }
        cfg.plan.validate().map_err(RunError::Config)?;
        let old_token = old.client.token();
        let new_token = new.client.token();
        let (journal, fleet) = if journal_path.exists() {
            let (journal, mut fleet) = open_journal(journal_path, &old, &new)?;
            let report = preflight(
                &old,
                &new,
                &old_token,
                &new_token,
                &cfg,
                fleet.snapshot_complete,
            );
            let fatal = report.checks.iter().any(|c| {
                c.status == crate::preflight::Status::Fail
                    && matches!(
                        c.name,
                        "old credentials"
                            | "new credentials"
                            | "artifacts"
                            | "artifacts per device type"
                            | "tenant token route"
                    )
            });
            if fatal || (!fleet.snapshot_complete && !report.passed()) {
                return Err(RunError::Preflight(Box::new(report)));
            }
            if !fleet.snapshot_complete {
                // Crashed while writing the snapshot: nothing was changed yet; write it again.
                write_snapshot(&journal, &mut fleet, report.snapshot)?;
            }
            (journal, fleet)
        } else {
            let report = preflight(&old, &new, &old_token, &new_token, &cfg, false);
            if !report.passed() {
                return Err(RunError::Preflight(Box::new(report)));
            }
            let header = Record::Run {
                version: JOURNAL_VERSION,
                run: format!("{:08x}", rand::random::<u32>()),
                old: old.client.base_url().to_string(),
                new: new.client.base_url().to_string(),
                created: now(),
            };
            let journal = Journal::create(journal_path, &header)?;
            let mut fleet = Fleet::default();
            fleet.apply(&header);
            write_snapshot(&journal, &mut fleet, report.snapshot)?;
            (journal, fleet)
        };
        let artifacts = ArtifactSet::load(&cfg.artifacts_dir).map_err(RunError::Config)?;
        let mut names = BTreeMap::new();
        for role in [Role::ModuleInstall, Role::Stage1, Role::Stage2] {
            names.insert(
                role,
                artifacts
                    .names_by_device_type(role)
                    .map_err(RunError::Config)?,
            );
        }
        let mut orch = Orchestrator::assemble(old, new, cfg, journal, fleet, progress);
        orch.artifacts = artifacts;
        orch.names = names;
        Ok(orch)
    }

    fn assemble(
        old: Api,
        new: Api,
        cfg: FleetConfig,
        journal: Journal,
        fleet: Fleet,
        progress: Arc<Progress>,
    ) -> Orchestrator {
        Orchestrator {
            old,
            new,
            cfg,
            journal,
            fleet: Mutex::new(fleet),
            artifacts: ArtifactSet::default(),
            names: BTreeMap::new(),
            progress,
            kill: None,
            kill_count: Mutex::new(HashMap::new()),
            killed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            moving: Mutex::new(()),
        }
    }

    /// Arms the crash-test hook.
    pub fn set_kill_switch(&mut self, kill: KillSwitch) {
        self.kill = Some(kill);
    }

    pub fn old(&self) -> &Api {
        &self.old
    }

    pub fn new_api(&self) -> &Api {
        &self.new
    }

    fn fleet(&self) -> std::sync::MutexGuard<'_, Fleet> {
        self.fleet.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The journal's view of every device.
    pub fn devices(&self) -> Vec<DeviceView> {
        self.fleet().devices.values().cloned().collect()
    }

    pub fn report(&self) -> Report {
        Report::build(&self.fleet(), Some((&self.old, &self.new)))
    }

    fn hook(&self, kind: OpKind, after: bool) -> R<()> {
        if self.killed.load(Ordering::SeqCst) {
            return Err(RunError::Killed);
        }
        if let Some(k) = self.kill {
            if k.kind == kind && k.after == after {
                let mut counts = self.kill_count.lock().unwrap_or_else(|e| e.into_inner());
                let c = counts.entry((kind, after)).or_insert(0);
                *c += 1;
                if *c == k.nth {
                    self.killed.store(true, Ordering::SeqCst);
                    self.journal.kill();
                    return Err(RunError::Killed);
                }
            }
        }
        Ok(())
    }

    fn record(&self, r: Record) -> R<()> {
        if self.killed.load(Ordering::SeqCst) {
            return Err(RunError::Killed);
        }
        self.journal.append(&r)?;
        self.fleet().apply(&r);
        Ok(())
    }

    fn sync(&self) -> R<()> {
        if self.killed.load(Ordering::SeqCst) {
            return Err(RunError::Killed);
        }
        self.journal.sync()?;
        Ok(())
    }

    /// Records an intent durably before the side effect; returns its sequence number.
    fn intent(&self, op: Op) -> R<u64> {
        let seq = {
            let mut f = self.fleet();
            let s = f.next_seq;
            f.next_seq += 1;
            s
        };
        self.record(Record::Intent { seq, op })?;
        self.sync()?;
        Ok(seq)
    }

    fn done(&self, seq: u64, deployment_id: Option<String>, error: Option<String>) -> R<()> {
        self.record(Record::Done {
            seq,
            deployment_id,
            error,
        })?;
        self.sync()
    }

    fn set_state(
        &self,
        dev: &str,
        state: DevState,
        reason: Option<String>,
        new_ids: Option<(String, String)>,
    ) -> R<()> {
        let batch = self.fleet().devices.get(dev).and_then(|d| d.batch);
        let (new_id, new_aid) = match new_ids {
            Some((a, b)) => (Some(a), Some(b)),
            None => (None, None),
        };
        self.record(Record::State {
            dev: dev.to_string(),
            state,
            reason,
            new_id,
            new_aid,
            batch,
            at: now_ms(),
        })
    }

    fn device(&self, id: &str) -> Option<DeviceView> {
        self.fleet().devices.get(id).cloned()
    }

    /// The devices of batch `n` in `state`, in batch order. Looks up the batch's members
    /// instead of scanning the fleet, and clones only small views (the snapshot is shared).
    fn batch_devices(&self, n: u32, state: DevState) -> Vec<DeviceView> {
        let f = self.fleet();
        let Some(ids) = f.batches.get(&n) else {
            return Vec::new();
        };
        ids.iter()
            .filter_map(|id| f.devices.get(id))
            .filter(|d| d.batch == Some(n) && d.state == state)
            .cloned()
            .collect()
    }

    fn api(&self, side: Side) -> &Api {
        match side {
            Side::Old => &self.old,
            Side::New => &self.new,
        }
    }

    fn emit_counts(&self) {
        let counts = self.fleet().counts();
        self.progress.counts(&counts);
    }

    /// Runs `f` over `items` on `--concurrency` threads; the first error stops the rest.
    fn parallel<T: Sync>(&self, items: &[T], f: impl Fn(&T) -> R<()> + Sync) -> R<()> {
        let next = AtomicUsize::new(0);
        let first_err: Mutex<Option<RunError>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        let workers = self.cfg.plan.concurrency.max(1).min(items.len());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    if let Err(e) = f(item) {
                        stop.store(true, Ordering::SeqCst);
                        let mut slot = first_err.lock().unwrap_or_else(|e| e.into_inner());
                        // A kill wins over follow-up errors of other workers.
                        if slot.is_none() || matches!(e, RunError::Killed) {
                            *slot = Some(e);
                        }
                        break;
                    }
                });
            }
        });
        match first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits one poll interval (less when `until_ms` comes first). Ends the wait with an
    /// error once the run was killed (test hook) or, for an `interruptible` wait (the front
    /// of that batch), once an earlier batch paused or another batch failed.
    fn sleep_poll(&self, until_ms: Option<u64>, interruptible: Option<u32>) -> R<()> {
        let mut d = self.cfg.plan.poll_interval;
        if let Some(u) = until_ms {
            let left = u.saturating_sub(now_ms());
            d = d.min(Duration::from_millis(left.max(10)));
        }
        std::thread::sleep(d);
        if self.killed.load(Ordering::SeqCst) {
            return Err(RunError::Killed);
        }
        if let Some(n) = interruptible {
            self.check_go_on(n)?;
            if self.stopping.load(Ordering::SeqCst) {
                return Err(RunError::Stopped);
            }
        }
        Ok(())
    }

    // ------------------------------------------------------------------ the run

    /// Carries out (or resumes) the migration. Returns the final report, or why it stopped.
    pub fn run(&self) -> R<Report> {
        self.reconcile_open_intents()?;
        self.ensure_artifacts()?;
        let paused = self.fleet().paused.clone();
        if let Some((batch, gate, reason)) = paused {
            if !self.cfg.resume_paused {
                return Err(RunError::Paused {
                    batch,
                    gate,
                    reason,
                });
            }
            self.record(Record::Resume {
                batch,
                gate: gate.clone(),
            })?;
            self.sync()?;
            self.progress.log(&format!(
                "resuming after the paused {gate} gate of batch {batch}"
            ));
        }
        self.requeue()?;
        self.emit_counts();
        self.pipeline()?;
        let report = self.report();
        self.progress.emit(
            "report",
            serde_json::to_value(&report).unwrap_or_default(),
            &report.summary_line(),
        );
        Ok(report)
    }

    /// Drives every batch, pipelined like hawkBit's rollout groups: batch `n + 1` starts its
    /// stage 1 as soon as batch `n`'s stage-1 gate passed its trigger (enough devices finished,
    /// failure share under the threshold), while batch `n` goes on with preauthorize → reject →
    /// appear → stage 2 in its own thread. At most [`TAILS_IN_FLIGHT`] batches are past their
    /// trigger at once. Safety does not depend on the overlap: each device's own order is
    /// unchanged, the preauthorize→capacity→reject step is serialized across batches, and a
    /// pause (or any error) stops new batches and every later step of the others.
    fn pipeline(&self) -> R<()> {
        let mut resumed: std::collections::VecDeque<u32> =
            self.fleet().batches.keys().copied().collect();
        let mut errors: Vec<RunError> = Vec::new();
        std::thread::scope(|s| {
            let mut tails: std::collections::VecDeque<std::thread::ScopedJoinHandle<'_, R<()>>> =
                std::collections::VecDeque::new();
            loop {
                if self.stopping.load(Ordering::SeqCst) {
                    break;
                }
                while tails.len() >= TAILS_IN_FLIGHT {
                    if let Some(t) = tails.pop_front() {
                        errors.extend(
                            t.join()
                                .unwrap_or_else(|p| std::panic::resume_unwind(p))
                                .err(),
                        );
                    }
                }
                let n = match resumed.pop_front() {
                    Some(n) => n,
                    None => match self.next_batch() {
                        Ok(Some(n)) => n,
                        Ok(None) => break,
                        Err(e) => {
                            errors.push(e);
                            break;
                        }
                    },
                };
                if let Err(e) = self.batch_front(n) {
                    errors.push(e);
                    break;
                }
                tails.push_back(s.spawn(move || {
                    let r = self.batch_tail(n);
                    if r.is_err() {
                        self.stopping.store(true, Ordering::SeqCst);
                    }
                    r
                }));
            }
            if !errors.is_empty() {
                self.stopping.store(true, Ordering::SeqCst);
            }
            for t in tails {
                errors.extend(
                    t.join()
                        .unwrap_or_else(|p| std::panic::resume_unwind(p))
                        .err(),
                );
            }
        });
        self.stopping.store(false, Ordering::SeqCst);
        // A kill wins (the process is "dead"), then a pause, then the first other error.
        let pick = errors
            .iter()
            .position(|e| matches!(e, RunError::Killed))
            .or_else(|| {
                errors
                    .iter()
                    .position(|e| matches!(e, RunError::Paused { .. }))
            })
            .or_else(|| errors.iter().position(|e| !matches!(e, RunError::Stopped)));
        match pick {
            Some(i) => Err(errors.swap_remove(i)),
            None => errors.into_iter().next().map_or(Ok(()), Err),
        }
    }

    /// Journals the next batch (the next devices in snapshot order); `None` when none is left
    /// or a gate paused the run.
    fn next_batch(&self) -> R<Option<u32>> {
        let (n, ids) = {
            let f = self.fleet();
            if let Some((batch, gate, reason)) = f.paused.clone() {
                return Err(RunError::Paused {
                    batch,
                    gate,
                    reason,
                });
            }
            let k = f.batches.len() as u32;
            let size = self.cfg.plan.batch_size(k);
            let ids: Vec<String> = f
                .order
                .iter()
                .filter_map(|id| f.devices.get(id))
                .filter(|d| {
                    d.batch.is_none() && matches!(d.state, DevState::Selected | DevState::OnNew)
                })
                .take(size)
                .map(|d| d.snapshot.id.clone())
                .collect();
            (f.batches.keys().last().copied().unwrap_or(0) + 1, ids)
        };
        if ids.is_empty() {
            return Ok(None);
        }
        self.record(Record::Batch { n, devices: ids })?;
        self.sync()?;
        Ok(Some(n))
    }

    /// Stops batch `n` before its next step when an earlier batch paused the run (as if the
    /// batches had run one after the other), or when the run was killed.
    fn check_go_on(&self, n: u32) -> R<()> {
        if let Some((batch, gate, reason)) = self.fleet().paused.clone().filter(|p| p.0 < n) {
            return Err(RunError::Paused {
                batch,
                gate,
                reason,
            });
        }
        if self.killed.load(Ordering::SeqCst) {
            return Err(RunError::Killed);
        }
        Ok(())
    }

    fn batches_hint(&self) -> usize {
        let f = self.fleet();
        let queued = f
            .devices
            .values()
            .filter(|d| d.batch.is_none() && !d.state.is_final())
            .count();
        let k = f.batches.len();
        let mut left = queued;
        let mut extra = 0;
        while left > 0 {
            left = left.saturating_sub(self.cfg.plan.batch_size((k + extra) as u32));
            extra += 1;
        }
        k + extra
    }

    /// Devices that may be tried again get back into the queue (no batch).
    fn requeue(&self) -> R<()> {
        let candidates: Vec<(String, DevState)> = self
            .fleet()
            .devices
            .values()
            .filter_map(|d| {
                let back_to = match d.state {
                    DevState::Straggler | DevState::RolledBack if self.cfg.retry_stragglers => {
                        DevState::Selected
                    }
                    DevState::Stage1Failed if self.cfg.retry_failed => DevState::Selected,
                    DevState::Stage2Failed | DevState::Stage2Pending if self.cfg.retry_failed => {
                        DevState::OnNew
                    }
                    _ => return None,
                };
                // Rolled back by the operator or excluded: leave alone.
                if d.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("operator rollback"))
                {
                    return None;
                }
                Some((d.snapshot.id.clone(), back_to))
            })
            .collect();
        for (id, state) in &candidates {
            self.record(Record::State {
                dev: id.clone(),
                state: *state,
                reason: Some("queued again".into()),
                new_id: None,
                new_aid: None,
                batch: None,
                at: now_ms(),
            })?;
        }
        if !candidates.is_empty() {
            self.sync()?;
            self.progress
                .log(&format!("{} devices queued again", candidates.len()));
        }
        Ok(())
    }

    /// A batch up to its stage-1 trigger: module-install + stage 1 deployed from old, then
    /// the stage-1 gate until the trigger (see [`Orchestrator::stage1_trigger`]), judged.
    fn batch_front(&self, n: u32) -> R<()> {
        let hint = self.batches_hint();
        self.deploy_stage(
            n,
            hint,
            Side::Old,
            &[Role::ModuleInstall, Role::Stage1],
            DevState::Selected,
            DevState::Stage1Deployed,
        )?;
        self.stage_gate(n, Role::Stage1, hint, Some(self.stage1_trigger(n)))?;
        self.judge(n, "stage1")
    }

    /// How many devices of batch `n` may still be unfinished in stage 1 when the next batch
    /// starts: the share the failure threshold tolerates (they may all still fail, and the
    /// run would then pause before any of this batch is rejected on old).
    fn stage1_trigger(&self, n: u32) -> usize {
        let size = self.fleet().batches.get(&n).map_or(0, Vec::len);
        (size as f64 * self.cfg.plan.failure_threshold).floor() as usize
    }

    /// The rest of a batch, in its own thread: stage-1 gate to the end, preauthorize on new
    /// (only devices whose stage 1 succeeded), capacity on new, reject on old, wait until they
    /// authenticated on new (roll back the ones that do not), stage 2 from new, stage-2 gate.
    fn batch_tail(&self, n: u32) -> R<()> {
        let hint = self.batches_hint();
        self.stage_gate(n, Role::Stage1, hint, None)?;
        self.judge(n, "stage1")?;
        {
            // One batch at a time between preauthorize and reject, so each capacity check
            // sees every other batch's preauthorized devices.
            let _moving = self.moving.lock().unwrap_or_else(|e| e.into_inner());
            self.check_go_on(n)?;
            self.preauthorize_and_reject(n, hint)?;
        }
        if !self.batch_devices(n, DevState::RejectedOnOld).is_empty() {
            self.appear_gate(n, hint)?;
        }
        self.check_go_on(n)?;
        self.deploy_stage(
            n,
            hint,
            Side::New,
            &[Role::Stage2],
            DevState::OnNew,
            DevState::Stage2Deployed,
        )?;
        self.stage_gate(n, Role::Stage2, hint, None)?;
        self.judge(n, "stage2")?;
        self.emit_counts();
        Ok(())
    }

    /// Deploys `roles` from `side` to the batch's devices in state `from`, which then move to
    /// `to`.
    fn deploy_stage(
        &self,
        n: u32,
        hint: usize,
        side: Side,
        roles: &[Role],
        from: DevState,
        to: DevState,
    ) -> R<()> {
        let devices = self.batch_devices(n, from);
        if devices.is_empty() {
            return Ok(());
        }
        let stage = roles.last().map_or("", |r| r.as_str());
        self.progress.phase(
            n,
            hint,
            stage,
            &format!(
                "deploying to {} devices on {}",
                devices.len(),
                self.api(side).name()
            ),
        );
        self.deploy(n, side, roles, &devices)?;
        for d in &devices {
            self.set_state(&d.snapshot.id, to, None, None)?;
        }
        self.sync()
    }

    fn preauthorize_and_reject(&self, n: u32, hint: usize) -> R<()> {
        let ok = self.batch_devices(n, DevState::Stage1Ok);
        if !ok.is_empty() {
            self.progress.phase(
                n,
                hint,
                "preauthorize",
                &format!("{} devices on new", ok.len()),
            );
            self.preauthorize(&ok)?;
        }
        let pre = self.batch_devices(n, DevState::Preauthorized);
        if pre.is_empty() {
            return Ok(());
        }
        let allowed = self.capacity_check(n, &pre)?;
        if allowed < pre.len() {
            let over = &pre[allowed..];
            let reason = "new server's device limit reached before the reject".to_string();
            self.rollback(over, &reason)?;
            self.record(Record::Pause {
                batch: n,
                gate: "capacity".into(),
                reason: format!(
                    "{} devices did not fit under new's device limit",
                    over.len()
                ),
            })?;
            self.sync()?;
        }
        let pre = &pre[..allowed];
        if !pre.is_empty() {
            self.progress
                .phase(n, hint, "reject on old", &format!("{} devices", pre.len()));
            self.reject(pre)?;
        }
        Ok(())
    }

    /// The failure-share gate of one batch stage; pauses (journaled) when it fails.
    fn judge(&self, n: u32, gate: &str) -> R<()> {
        let (ok, failed, beyond) = {
            let f = self.fleet();
            if f.acked.contains(&(n, gate.to_string())) {
                return Ok(());
            }
            let mut ok = 0usize;
            let mut failed = 0usize;
            let mut beyond = false;
            for d in f.devices.values().filter(|d| d.batch == Some(n)) {
                match (gate, d.state) {
                    ("stage1", DevState::Stage1Ok) => ok += 1,
                    ("stage1", DevState::Stage1Failed) => failed += 1,
                    (
                        "stage1",
                        DevState::Stage1Deployed | DevState::Selected | DevState::Straggler,
                    ) => {}
                    ("stage1", _) => beyond = true,
                    ("stage2", DevState::Done) => ok += 1,
                    ("stage2", DevState::Stage2Failed) => failed += 1,
                    ("stage2", DevState::Stage2Deployed) => beyond = true,
                    _ => {}
                }
            }
            (ok, failed, beyond)
        };
        // Stage 1 is judged only before anything of the batch moved on (then it passed).
        if beyond {
            return Ok(());
        }
        let finished = ok + failed;
        if finished == 0 || finished < self.cfg.plan.min_sample {
            return Ok(());
        }
        let share = failed as f64 / finished as f64;
        if share > self.cfg.plan.failure_threshold {
            let reason = format!(
                "{failed} of {finished} finished devices failed {gate} ({:.1}% > {:.1}%)",
                share * 100.0,
                self.cfg.plan.failure_threshold * 100.0
            );
            let already = self.fleet().paused.is_some();
            if !already {
                self.record(Record::Pause {
                    batch: n,
                    gate: gate.to_string(),
                    reason: reason.clone(),
                })?;
                self.sync()?;
            }
            self.progress.emit(
                "paused",
                serde_json::json!({"batch": n, "gate": gate, "reason": reason}),
                &format!("PAUSED at batch {n}: {reason}"),
            );
            return Err(RunError::Paused {
                batch: n,
                gate: gate.to_string(),
                reason,
            });
        }
        Ok(())
    }

    fn deployment_name(&self, n: u32, artifact: &str) -> String {
        format!("srvmig-{}-b{n:03}-{artifact}", self.fleet().run)
    }

    /// Creates (or finds) one deployment per (role, artifact name) for these devices.
    fn deploy(&self, n: u32, side: Side, roles: &[Role], devices: &[DeviceView]) -> R<()> {
        for role in roles {
            let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for d in devices {
                let t = d.snapshot.device_type.clone().unwrap_or_default();
                let Some(artifact) = self.names.get(role).and_then(|m| m.get(&t)) else {
                    return Err(RunError::Config(format!(
                        "no {} artifact for device type {t:?} (device {})",
                        role.as_str(),
                        d.snapshot.id
                    )));
                };
                let id = match side {
                    Side::Old => d.snapshot.id.clone(),
                    Side::New => d.new_id.clone().ok_or_else(|| {
                        RunError::Config(format!("device {} has no id on new", d.snapshot.id))
                    })?,
                };
                groups.entry(artifact.clone()).or_default().push(id);
            }
            for (artifact, ids) in groups {
                let name = self.deployment_name(n, &artifact);
                self.ensure_deployment(n, role.as_str(), side, &name, &artifact, &ids)?;
            }
        }
        Ok(())
    }

    fn known_deployment(&self, n: u32, name: &str) -> bool {
        self.fleet()
            .deployments
            .get(&n)
            .is_some_and(|l| l.iter().any(|d| d.name == name))
    }

    /// Looks a deployment up by its deterministic name and journals it when found.
    fn adopt_by_name(&self, n: u32, stage: &str, side: Side, name: &str) -> R<bool> {
        let found = self.api(side).deployments_by_name(name)?;
        if let Some(d) = found.into_iter().next() {
            self.record(Record::Deployment {
                batch: n,
                stage: stage.into(),
                server: side,
                name: name.into(),
                id: d.id,
                created: now_ms(),
            })?;
            self.sync()?;
            return Ok(true);
        }
        Ok(false)
    }

    fn ensure_deployment(
        &self,
        n: u32,
        stage: &str,
        side: Side,
        name: &str,
        artifact: &str,
        devices: &[String],
    ) -> R<()> {
        if self.known_deployment(n, name) {
            return Ok(());
        }
        for _attempt in 0..4 {
            let seq = self.intent(Op::CreateDeployment {
                server: side,
                batch: n,
                stage: stage.into(),
                name: name.into(),
                artifact: artifact.into(),
                devices: devices.to_vec(),
            })?;
            self.hook(OpKind::CreateDeployment, false)?;
            let r = self.api(side).create_deployment(name, artifact, devices);
            self.hook(OpKind::CreateDeployment, true)?;
            match r {
                Ok(id) => {
                    self.record(Record::Deployment {
                        batch: n,
                        stage: stage.into(),
                        server: side,
                        name: name.into(),
                        id: id.clone(),
                        created: now_ms(),
                    })?;
                    self.done(seq, Some(id), None)?;
                    self.progress.log(&format!(
                        "created deployment {name} ({} devices) on {}",
                        devices.len(),
                        self.api(side).name()
                    ));
                    return Ok(());
                }
                Err(e) if e.kind == ErrorKind::Unknown || e.is_status(409) => {
                    // It may exist: look it up by name before anything else.
                    let adopted = self.adopt_by_name(n, stage, side, name)?;
                    self.done(seq, None, (!adopted).then(|| e.to_string()))?;
                    if adopted {
                        return Ok(());
                    }
                }
                Err(e) => {
                    let _ = self.done(seq, None, Some(e.to_string()));
                    return Err(e.into());
                }
            }
        }
        Err(RunError::Config(format!(
            "deployment {name} could not be created on {} after 4 attempts",
            self.api(side).name()
        )))
    }

    /// Polls one batch stage until every device has a final status or the stage timeout;
    /// unfinished devices become stragglers (stage 1) or stage-2-pending, their deployments
    /// aborted per device.
    ///
    /// `front`: called for the batch front with this trigger: returns as soon as at most that
    /// many devices are unfinished and at least `--min-sample` finished (the rest is waited
    /// for by the batch's own thread); the wait stops early when another batch stopped.
    fn stage_gate(&self, n: u32, role: Role, hint: usize, front: Option<usize>) -> R<()> {
        let (side, waiting_state, ok_state, fail_state, late_state) = match role {
            Role::Stage2 => (
                Side::New,
                DevState::Stage2Deployed,
                DevState::Done,
                DevState::Stage2Failed,
                DevState::Stage2Pending,
            ),
            _ => (
                Side::Old,
                DevState::Stage1Deployed,
                DevState::Stage1Ok,
                DevState::Stage1Failed,
                DevState::Straggler,
            ),
        };
        let deps: Vec<crate::journal::BatchDeployment> = self
            .fleet()
            .deployments
            .get(&n)
            .map(|l| {
                l.iter()
                    .filter(|d| d.stage == role.as_str())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let all_deps: Vec<crate::journal::BatchDeployment> = self
            .fleet()
            .deployments
            .get(&n)
            .map(|l| l.iter().filter(|d| d.server == side).cloned().collect())
            .unwrap_or_default();
        if deps.is_empty() {
            return Ok(());
        }
        let started = deps.iter().map(|d| d.created).min().unwrap_or_else(now_ms);
        let deadline = started + self.cfg.plan.stage_timeout.as_millis() as u64;
        let api = self.api(side);
        // Status of each device that has polled, by its id on `side` (`filter`: only those).
        let list = |filter: Option<&str>| -> R<HashMap<String, String>> {
            let mut statuses = HashMap::new();
            for dep in &deps {
                for dd in api.deployment_devices(&dep.id, filter)? {
                    statuses.insert(dd.id, dd.status);
                }
            }
            Ok(statuses)
        };
        let dep_ids: Vec<String> = deps.iter().map(|d| d.id.clone()).collect();
        // Finished devices per the statistics at the last listing: a poll costs one
        // statistics call, and pages through the finished devices only when more finished.
        let mut listed_finished: Option<u64> = None;
        loop {
            let waiting = self.batch_devices(n, waiting_state);
            if waiting.is_empty() {
                break;
            }
            let finished: u64 = api
                .statistics(&dep_ids)?
                .values()
                .flatten()
                .filter(|(status, _)| stage_ok(status).is_some())
                .map(|(_, count)| *count)
                .sum();
            let statuses = if listed_finished == Some(finished) {
                HashMap::new()
            } else {
                listed_finished = Some(finished);
                list(Some("finished"))?
            };
            let mut changed = 0;
            for d in &waiting {
                let Some(st) = statuses.get(side_id(d, side)) else {
                    continue;
                };
                match stage_ok(st) {
                    Some(true) => {
                        self.set_state(&d.snapshot.id, ok_state, None, None)?;
                        changed += 1;
                    }
                    Some(false) => {
                        self.set_state(
                            &d.snapshot.id,
                            fail_state,
                            Some(format!(
                                "{} ended with status {st} on {}",
                                role.as_str(),
                                api.name()
                            )),
                            None,
                        )?;
                        changed += 1;
                    }
                    None => {}
                }
            }
            if changed > 0 {
                self.sync()?;
                self.emit_counts();
            }
            let waiting = self.batch_devices(n, waiting_state);
            if waiting.is_empty() {
                break;
            }
            if let Some(trigger) = front.filter(|t| *t > 0) {
                let size = self.fleet().batches.get(&n).map_or(0, Vec::len);
                if waiting.len() <= trigger
                    && size.saturating_sub(waiting.len()) >= self.cfg.plan.min_sample
                {
                    return Ok(());
                }
            }
            if now_ms() >= deadline {
                // The last status of every unfinished device, for the reports.
                let last_status = list(None)?;
                let ids: Vec<String> = waiting
                    .iter()
                    .map(|d| side_id(d, side).to_string())
                    .collect();
                self.progress.phase(
                    n,
                    hint,
                    role.as_str(),
                    &format!(
                        "{} devices did not finish within {}; aborting their deployments",
                        ids.len(),
                        format_duration(self.cfg.plan.stage_timeout)
                    ),
                );
                let seq = self.intent(Op::AbortDevices {
                    server: side,
                    devices: ids.clone(),
                })?;
                self.parallel(&ids, |id| {
                    self.hook(OpKind::AbortDevices, false)?;
                    api.abort_device_deployments(id)?;
                    self.hook(OpKind::AbortDevices, true)
                })?;
                for d in &waiting {
                    let last = last_status
                        .get(side_id(d, side))
                        .map(|s| format!("last status {s}"))
                        .unwrap_or_else(|| "never polled".into());
                    let reason = match role {
                        Role::Stage2 => format!("on new, stage 2 not finished within {} ({last}); retry with --retry-failed", format_duration(self.cfg.plan.stage_timeout)),
                        _ => format!("straggler: stage 1 not finished within {} ({last}); still accepted on old, retry with --retry-stragglers", format_duration(self.cfg.plan.stage_timeout)),
                    };
                    self.set_state(&d.snapshot.id, late_state, Some(reason), None)?;
                }
                self.done(seq, None, None)?;
                self.emit_counts();
                break;
            }
            self.progress.phase(
                n,
                hint,
                role.as_str(),
                &format!(
                    "{} waiting, {} left before the stage timeout",
                    waiting.len(),
                    format_duration(Duration::from_millis(deadline.saturating_sub(now_ms())))
                ),
            );
            self.sleep_poll(Some(deadline), front.map(|_| n))?;
        }
        // Devices were carried over as late: the batch's deployments on this server would
        // stay active for them (and count against the cap); abort the unfinished ones. Runs
        // again on every resume, so an abort cut short by a crash is completed.
        let late = self
            .fleet()
            .devices
            .values()
            .any(|d| d.batch == Some(n) && d.state == late_state);
        if late {
            for dep in &all_deps {
                if matches!(
                    api.deployment_status(&dep.id)?.as_deref(),
                    None | Some("finished")
                ) {
                    continue;
                }
                let seq = self.intent(Op::AbortDeployment {
                    server: side,
                    id: dep.id.clone(),
                })?;
                self.hook(OpKind::AbortDeployment, false)?;
                api.abort_deployment(&dep.id)?;
                self.hook(OpKind::AbortDeployment, true)?;
                self.done(seq, None, None)?;
            }
        }
        Ok(())
    }

    fn preauth_one(&self, d: &DeviceView) -> R<PreauthOutcome> {
        let s = &d.snapshot;
        for _attempt in 0..5 {
            self.hook(OpKind::Preauth, false)?;
            let r = self.new.preauthorize(&s.identity, &s.pubkey);
            self.hook(OpKind::Preauth, true)?;
            match r {
                Ok(Preauth::Created { device_id }) => {
                    for i in 0..5u64 {
                        if let Some(dev) = self.new.device(&device_id)? {
                            if let Some(set) = dev
                                .auth_sets
                                .iter()
                                .find(|a| same_key(&a.pubkey, &s.pubkey))
                            {
                                return Ok(PreauthOutcome::Done {
                                    new_id: dev.id,
                                    new_aid: set.id.clone(),
                                });
                            }
                        }
                        std::thread::sleep(Duration::from_millis(50 * (i + 1)));
                    }
                    // Location did not lead to it: the next POST's 409 body will.
                }
                Ok(Preauth::Conflict(dev)) => {
                    match dev
                        .auth_sets
                        .iter()
                        .find(|a| same_key(&a.pubkey, &s.pubkey))
                    {
                        Some(set) if set.status == "preauthorized" || set.status == "accepted" => {
                            return Ok(PreauthOutcome::Done {
                                new_id: dev.id.clone(),
                                new_aid: set.id.clone(),
                            });
                        }
                        Some(set) => {
                            // A pending/rejected set from an earlier auth attempt of the
                            // device: remove it and preauthorize properly, so "accepted" keeps
                            // meaning "the device itself authenticated".
                            self.new.delete_auth_set(&dev.id, &set.id)?;
                        }
                        None => {
                            return Ok(PreauthOutcome::Refused(format!(
                                "identity already on new (device {}) with another key; left on old",
                                dev.id
                            )))
                        }
                    }
                }
                Err(e) if e.kind == ErrorKind::Unknown => continue,
                Err(e)
                    if e.kind == ErrorKind::Status
                        && e.status.is_some_and(|s| s == 400 || s == 422) =>
                {
                    return Ok(PreauthOutcome::Refused(format!(
                        "new refused the preauthorization: {e}"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RunError::Config(format!(
            "device {}: preauthorization on new did not settle after 5 attempts",
            s.id
        )))
    }

    fn preauthorize(&self, devices: &[DeviceView]) -> R<()> {
        let ids: Vec<String> = devices.iter().map(|d| d.snapshot.id.clone()).collect();
        let seq = self.intent(Op::Preauth { devices: ids })?;
        let r = self.parallel(devices, |d| match self.preauth_one(d)? {
            PreauthOutcome::Done { new_id, new_aid } => self.set_state(
                &d.snapshot.id,
                DevState::Preauthorized,
                None,
                Some((new_id, new_aid)),
            ),
            PreauthOutcome::Refused(reason) => {
                self.set_state(&d.snapshot.id, DevState::Excluded, Some(reason), None)
            }
        });
        self.close_per_device_op(seq, r)
    }

    /// Ends a per-device side effect run over many devices: the per-device states recorded so
    /// far are made durable, and the intent is closed only when every device succeeded (a
    /// kill leaves everything as the crash would).
    fn close_per_device_op(&self, seq: u64, r: R<()>) -> R<()> {
        if matches!(r, Err(RunError::Killed)) {
            return r;
        }
        self.sync()?;
        r?;
        self.done(seq, None, None)?;
        self.emit_counts();
        Ok(())
    }

    /// How many of this batch's preauthorized devices fit under new's device limit.
    fn capacity_check(&self, n: u32, pre: &[DeviceView]) -> R<usize> {
        let Some(limit) = self.new.max_devices()?.filter(|l| *l > 0) else {
            return Ok(pre.len());
        };
        let accepted = self.new.count_devices("accepted")?;
        let preauthorized = self.new.count_devices("preauthorized")?;
        let ours = pre.len() as u64;
        let others = preauthorized.saturating_sub(ours);
        let allowed = limit.saturating_sub(accepted + others).min(ours) as usize;
        if allowed < pre.len() {
            self.progress.log(&format!(
                "batch {n}: new's device limit {limit} with {accepted} accepted and {others} other preauthorized: only {allowed} of {} devices move",
                pre.len()
            ));
        }
        Ok(allowed)
    }

    fn reject(&self, devices: &[DeviceView]) -> R<()> {
        let ids: Vec<String> = devices.iter().map(|d| d.snapshot.id.clone()).collect();
        let seq = self.intent(Op::Reject { devices: ids })?;
        let r = self.parallel(devices, |d| {
            self.hook(OpKind::Reject, false)?;
            let r = self
                .old
                .set_auth_status(&d.snapshot.id, &d.snapshot.aid, "rejected");
            self.hook(OpKind::Reject, true)?;
            let reason = match r {
                Ok(()) => None,
                Err(e) if e.is_status(404) => Some("gone from old before the reject".to_string()),
                Err(e) => return Err(e.into()),
            };
            self.set_state(&d.snapshot.id, DevState::RejectedOnOld, reason, None)
        });
        self.close_per_device_op(seq, r)
    }

    fn appear_gate(&self, n: u32, hint: usize) -> R<()> {
        let timeout = self.cfg.plan.appear_timeout.as_millis() as u64;
        loop {
            let waiting = self.batch_devices(n, DevState::RejectedOnOld);
            if waiting.is_empty() {
                return Ok(());
            }
            let new_ids: Vec<String> = waiting.iter().filter_map(|d| d.new_id.clone()).collect();
            let found: HashMap<String, crate::api::Device> = self
                .new
                .devices_by_ids(&new_ids)?
                .into_iter()
                .map(|d| (d.id.clone(), d))
                .collect();
            let mut moved = 0;
            let mut late = Vec::new();
            for d in &waiting {
                let appeared = d
                    .new_id
                    .as_ref()
                    .and_then(|id| found.get(id))
                    .is_some_and(|dev| {
                        dev.auth_sets.iter().any(|a| {
                            a.status == "accepted"
                                && (Some(&a.id) == d.new_aid.as_ref()
                                    || same_key(&a.pubkey, &d.snapshot.pubkey))
                        })
                    });
                if appeared {
                    self.set_state(&d.snapshot.id, DevState::OnNew, None, None)?;
                    moved += 1;
                } else if now_ms().saturating_sub(d.since_ms) >= timeout {
                    late.push(d.clone());
                }
            }
            if moved > 0 {
                self.sync()?;
                self.emit_counts();
            }
            if !late.is_empty() {
                let reason = format!(
                    "did not authenticate on new within {}; rolled back to old",
                    format_duration(self.cfg.plan.appear_timeout)
                );
                self.rollback(&late, &reason)?;
            }
            let left = self.batch_devices(n, DevState::RejectedOnOld);
            if left.is_empty() {
                return Ok(());
            }
            let first_deadline = left.iter().map(|d| d.since_ms + timeout).min();
            self.progress.phase(
                n,
                hint,
                "appear on new",
                &format!("{} devices not yet authenticated on new", left.len()),
            );
            self.sleep_poll(first_deadline, None)?;
        }
    }

    /// Back to old: accepted on old again (idempotent), preauthorization on new deleted, its
    /// deployments on new aborted. Never for a device whose stage 2 was deployed.
    fn rollback(&self, devices: &[DeviceView], reason: &str) -> R<()> {
        let devices: Vec<DeviceView> = devices
            .iter()
            .filter(|d| !d.state.stage2_started())
            .cloned()
            .collect();
        if devices.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = devices.iter().map(|d| d.snapshot.id.clone()).collect();
        let seq = self.intent(Op::Rollback { devices: ids })?;
        let r = self.parallel(&devices, |d| {
            self.hook(OpKind::Rollback, false)?;
            let mut note = String::new();
            match self
                .old
                .set_auth_status(&d.snapshot.id, &d.snapshot.aid, "accepted")
            {
                Ok(()) => {}
                Err(e) if e.is_status(404) => note.push_str("; it is gone from old"),
                Err(e) => return Err(e.into()),
            }
            if let (Some(nid), Some(aid)) = (&d.new_id, &d.new_aid) {
                self.new.delete_auth_set(nid, aid)?;
                self.new.abort_device_deployments(nid)?;
            }
            self.hook(OpKind::Rollback, true)?;
            self.set_state(
                &d.snapshot.id,
                DevState::RolledBack,
                Some(format!("{reason}{note}")),
                None,
            )
        });
        self.close_per_device_op(seq, r)
    }

    /// Uploads the artifacts a server lacks (module-install and stage 1 to old, stage 2 to
    /// new), looked up by name first.
    fn ensure_artifacts(&self) -> R<()> {
        for (role, side) in [
            (Role::ModuleInstall, Side::Old),
            (Role::Stage1, Side::Old),
            (Role::Stage2, Side::New),
        ] {
            for a in self.artifacts.of_role(role) {
                let api = self.api(side);
                let present = |api: &Api| -> R<bool> {
                    Ok(api.artifacts_by_name(&a.name)?.iter().any(|s| {
                        s.device_types_compatible
                            .iter()
                            .any(|t| a.device_types.contains(t))
                    }))
                };
                if present(api)? {
                    continue;
                }
                let seq = self.intent(Op::Upload {
                    server: side,
                    artifact: a.name.clone(),
                    file: a.path.display().to_string(),
                })?;
                self.hook(OpKind::Upload, false)?;
                let r = api.upload_artifact(&a.path, "server migration (mender-migrate fleet)");
                self.hook(OpKind::Upload, true)?;
                match r {
                    Ok(()) => {}
                    Err(e) if e.is_status(409) => {}
                    Err(e) if e.kind == ErrorKind::Unknown => {
                        if !present(api)? {
                            let _ = self.done(seq, None, Some(e.to_string()));
                            return Err(e.into());
                        }
                    }
                    Err(e) => {
                        let _ = self.done(seq, None, Some(e.to_string()));
                        return Err(e.into());
                    }
                }
                self.done(seq, None, None)?;
                self.progress
                    .log(&format!("uploaded {} to {}", a.name, api.name()));
            }
        }
        Ok(())
    }

    /// Settles every intent without a result (a crash between a side effect and its record).
    fn reconcile_open_intents(&self) -> R<()> {
        let open: Vec<(u64, Op)> = self.fleet().open_intents.clone().into_iter().collect();
        if open.is_empty() {
            return Ok(());
        }
        self.progress.log(&format!(
            "reconciling {} unfinished steps from the journal",
            open.len()
        ));
        for (seq, op) in open {
            match &op {
                Op::Upload { .. } => {
                    // ensure_artifacts looks every artifact up by name again.
                    self.done(seq, None, Some("reconciled by name".into()))?;
                }
                Op::CreateDeployment {
                    server,
                    batch,
                    stage,
                    name,
                    ..
                } => {
                    if !self.known_deployment(*batch, name) {
                        let adopted = self.adopt_by_name(*batch, stage, *server, name)?;
                        self.done(
                            seq,
                            None,
                            (!adopted).then(|| "not created; will be created again".to_string()),
                        )?;
                    } else {
                        self.done(seq, None, None)?;
                    }
                }
                Op::AbortDeployment { server, id } => {
                    self.api(*server).abort_deployment(id)?;
                    self.done(seq, None, None)?;
                }
                Op::AbortDevices { server, devices } => {
                    let api = self.api(*server);
                    self.parallel(devices, |id| Ok(api.abort_device_deployments(id)?))?;
                    self.done(seq, None, None)?;
                }
                Op::Preauth { .. } => {
                    // Devices still in stage1_ok are preauthorized again; a 409 body tells
                    // what exists.
                    self.done(seq, None, Some("reconciled through the 409 body".into()))?;
                }
                Op::Reject { devices } => {
                    let todo: Vec<DeviceView> = devices
                        .iter()
                        .filter_map(|id| self.device(id))
                        .filter(|d| d.state == DevState::Preauthorized)
                        .collect();
                    if !todo.is_empty() {
                        self.reject(&todo)?;
                    }
                    self.done(seq, None, None)?;
                }
                Op::Rollback { devices } => {
                    let todo: Vec<DeviceView> = devices
                        .iter()
                        .filter_map(|id| self.device(id))
                        .filter(|d| d.state != DevState::RolledBack && !d.state.stage2_started())
                        .collect();
                    if !todo.is_empty() {
                        self.rollback(&todo, "rolled back (completed after a restart)")?;
                    }
                    self.done(seq, None, None)?;
                }
            }
        }
        Ok(())
    }

    /// `fleet rollback`: devices not yet on stage 2 go back to old. `ids` = all when `None`.
    /// Devices whose stage 2 was deployed are refused (old never accepts them again).
    pub fn rollback_devices(&self, ids: Option<&[String]>) -> R<Report> {
        self.reconcile_open_intents()?;
        let targets: Vec<DeviceView> = {
            let f = self.fleet();
            match ids {
                Some(ids) => {
                    let mut v = Vec::new();
                    for id in ids {
                        match f.devices.get(id) {
                            Some(d) => v.push(d.clone()),
                            None => {
                                return Err(RunError::Config(format!(
                                    "device {id} is not in this journal"
                                )))
                            }
                        }
                    }
                    v
                }
                None => f.devices.values().cloned().collect(),
            }
        };
        let refused: Vec<String> = targets
            .iter()
            .filter(|d| d.state.stage2_started())
            .map(|d| d.snapshot.id.clone())
            .collect();
        if ids.is_some() && !refused.is_empty() {
            return Err(RunError::Config(format!(
                "stage 2 was already deployed to {}: old never accepts a device again after its stage 2",
                refused.join(", ")
            )));
        }
        let touched: Vec<DeviceView> = targets
            .iter()
            .filter(|d| {
                matches!(
                    d.state,
                    DevState::Preauthorized | DevState::RejectedOnOld | DevState::OnNew
                )
            })
            .cloned()
            .collect();
        self.rollback(&touched, "operator rollback")?;
        for d in targets.iter().filter(|d| {
            matches!(
                d.state,
                DevState::Selected | DevState::Stage1Deployed | DevState::Stage1Ok
            )
        }) {
            self.set_state(
                &d.snapshot.id,
                DevState::RolledBack,
                Some(format!(
                    "operator rollback (was {}; nothing changed on the servers)",
                    d.state.as_str()
                )),
                None,
            )?;
        }
        self.sync()?;
        Ok(self.report())
    }
}
