//! The run journal: an append-only, fsync'd JSON-lines file. Every side effect is preceded by
//! an `intent` record (fsync'd before the request is sent) and followed by a `done` record;
//! per-device `state` records carry the state machine. Replaying the file gives the
//! [`Fleet`] view; intents without a `done` are what a resume must reconcile.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const JOURNAL_VERSION: u32 = 1;

/// Which server a side effect went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Old,
    New,
}

/// Per-device state (reference §9.2), journal key = the device id on old.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DevState {
    /// In the snapshot and selected; nothing done yet.
    Selected,
    /// Module-install and stage-1 deployments created on old for its batch.
    Stage1Deployed,
    /// Stage 1 reported success (or already-installed) on old.
    Stage1Ok,
    /// Stage 1 failed; the device stays accepted on old (retry with `--retry-failed`).
    Stage1Failed,
    /// Never finished stage 1 within `--stage-timeout`; stays accepted on old.
    Straggler,
    /// Preauthorized on new (new id and auth set id known).
    Preauthorized,
    /// Rejected on old, waiting for it to authenticate on new.
    RejectedOnOld,
    /// Authenticated on new (its preauthorized set became accepted).
    OnNew,
    /// Stage 2 deployment created on new.
    Stage2Deployed,
    /// Stage 2 succeeded: migrated.
    Done,
    /// Stage 2 failed; the device stays on new with the dual config.
    Stage2Failed,
    /// On new, stage 2 not finished within `--stage-timeout`.
    Stage2Pending,
    /// Rolled back: accepted on old again, preauthorization on new removed.
    RolledBack,
    /// Not migrated because of a pre-flight finding (collision, key mismatch, capacity).
    Excluded,
}

impl DevState {
    pub fn as_str(self) -> &'static str {
        match self {
            DevState::Selected => "selected",
            DevState::Stage1Deployed => "stage1_deployed",
            DevState::Stage1Ok => "stage1_ok",
            DevState::Stage1Failed => "stage1_failed",
            DevState::Straggler => "straggler",
            DevState::Preauthorized => "preauthorized",
            DevState::RejectedOnOld => "rejected_on_old",
            DevState::OnNew => "on_new",
            DevState::Stage2Deployed => "stage2_deployed",
            DevState::Done => "done",
            DevState::Stage2Failed => "stage2_failed",
            DevState::Stage2Pending => "stage2_pending",
            DevState::RolledBack => "rolled_back",
            DevState::Excluded => "excluded",
        }
    }

    /// The device authenticates with new (old rejects it).
    pub fn is_on_new(self) -> bool {
        matches!(
            self,
            DevState::OnNew
                | DevState::Stage2Deployed
                | DevState::Done
                | DevState::Stage2Failed
                | DevState::Stage2Pending
        )
    }

    /// Stage 2 was deployed: old must never accept it again.
    pub fn stage2_started(self) -> bool {
        matches!(
            self,
            DevState::Stage2Deployed
                | DevState::Done
                | DevState::Stage2Failed
                | DevState::Stage2Pending
        )
    }

    /// Finished for this run (nothing more happens without a retry flag).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DevState::Done
                | DevState::Stage1Failed
                | DevState::Straggler
                | DevState::Stage2Failed
                | DevState::Stage2Pending
                | DevState::RolledBack
                | DevState::Excluded
        )
    }
}

/// A device of old's snapshot: what preauthorizing it on new needs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SnapshotDevice {
    pub id: String,
    pub identity: Map<String, Value>,
    pub pubkey: String,
    /// Its accepted auth set on old.
    pub aid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Old's `check_in_time` at the snapshot (devices seen recently go first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_in: Option<String>,
}

/// A side effect.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Upload {
        server: Side,
        artifact: String,
        file: String,
    },
    CreateDeployment {
        server: Side,
        batch: u32,
        stage: String,
        name: String,
        artifact: String,
        devices: Vec<String>,
    },
    AbortDeployment {
        server: Side,
        id: String,
    },
    /// Abort every pending deployment of these devices (ids on that server).
    AbortDevices {
        server: Side,
        devices: Vec<String>,
    },
    Preauth {
        devices: Vec<String>,
    },
    Reject {
        devices: Vec<String>,
    },
    /// Accept on old again and remove the preauthorization on new.
    Rollback {
        devices: Vec<String>,
    },
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Upload { .. } => OpKind::Upload,
            Op::CreateDeployment { .. } => OpKind::CreateDeployment,
            Op::AbortDeployment { .. } => OpKind::AbortDeployment,
            Op::AbortDevices { .. } => OpKind::AbortDevices,
            Op::Preauth { .. } => OpKind::Preauth,
            Op::Reject { .. } => OpKind::Reject,
            Op::Rollback { .. } => OpKind::Rollback,
        }
    }
}

/// Kinds of side effects (crash-test hook points, counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    Upload,
    CreateDeployment,
    AbortDeployment,
    AbortDevices,
    Preauth,
    Reject,
    Rollback,
}

impl OpKind {
    pub const ALL: [OpKind; 7] = [
        OpKind::Upload,
        OpKind::CreateDeployment,
        OpKind::AbortDeployment,
        OpKind::AbortDevices,
        OpKind::Preauth,
        OpKind::Reject,
        OpKind::Rollback,
    ];
}

/// One journal line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record {
    Run {
        version: u32,
        run: String,
        old: String,
        new: String,
        created: u64,
    },
    Device(SnapshotDevice),
    SnapshotDone {
        count: usize,
    },
    Batch {
        n: u32,
        devices: Vec<String>,
    },
    Intent {
        seq: u64,
        #[serde(flatten)]
        op: Op,
    },
    Done {
        seq: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deployment_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    State {
        dev: String,
        state: DevState,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        new_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        new_aid: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        batch: Option<u32>,
        at: u64,
    },
    /// A deployment of a batch exists (`stage` = module, stage1, stage2).
    Deployment {
        batch: u32,
        stage: String,
        server: Side,
        name: String,
        id: String,
        created: u64,
    },
    /// A gate failed: no new batch starts until an operator resumes.
    Pause {
        batch: u32,
        gate: String,
        reason: String,
    },
    /// The operator acknowledged the pause of this batch's gate.
    Resume {
        batch: u32,
        gate: String,
    },
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the epoch (for `at` fields: timeouts below a second in tests).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The first record must be a run header of this journal version.
fn check_header(path: &Path, first: Option<&Record>) -> Result<(), String> {
    match first {
        Some(Record::Run { version, .. }) if *version == JOURNAL_VERSION => Ok(()),
        Some(Record::Run { version, .. }) => Err(format!(
            "{}: journal version {version} is not supported (this tool writes {JOURNAL_VERSION})",
            path.display()
        )),
        _ => Err(format!(
            "{}: not a fleet journal (no run header)",
            path.display()
        )),
    }
}

/// The open journal file. Appends are serialized; `sync` makes them durable.
pub struct Journal {
    path: PathBuf,
    file: Mutex<File>,
    /// Test hook: once set, nothing more is written (the process "died").
    dead: AtomicBool,
}

impl Journal {
    /// Creates a new journal (refusing to overwrite one) with its header, fsync'd.
    pub fn create(path: &Path, header: &Record) -> Result<Journal, String> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: cannot create the journal: {e}", path.display()))?;
        let j = Journal {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            dead: AtomicBool::new(false),
        };
        j.append(header)?;
        j.sync()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(j)
    }

    /// Opens an existing journal and returns its records. A torn last line (a crash while
    /// writing it) is cut off so the next append starts on a clean line.
    pub fn open(path: &Path) -> Result<(Journal, Vec<Record>), String> {
        let mut records = Vec::new();
        let journal = Journal::open_with(path, |r| records.push(r))?;
        Ok((journal, records))
    }

    /// [`Journal::open`] handing each record to `each` instead of collecting them (a resume
    /// of a large fleet replays without holding the whole file).
    pub fn open_with(path: &Path, mut each: impl FnMut(Record)) -> Result<Journal, String> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: cannot open the journal: {e}", path.display()))?;
        let mut good_len = 0u64;
        {
            let mut reader = BufReader::new(&mut file);
            let mut line = String::new();
            let mut lineno = 0usize;
            loop {
                line.clear();
                let n = reader
                    .read_line(&mut line)
                    .map_err(|e| format!("{}: cannot read the journal: {e}", path.display()))?;
                if n == 0 {
                    break;
                }
                lineno += 1;
                if !line.ends_with('\n') {
                    break; // torn tail
                }
                match serde_json::from_str::<Record>(line.trim_end()) {
                    Ok(r) => {
                        if lineno == 1 {
                            check_header(path, Some(&r))?;
                        }
                        each(r)
                    }
                    Err(e) => {
                        return Err(format!(
                            "{}: line {lineno} is not a journal record ({e}); the file is damaged or not a fleet journal",
                            path.display()
                        ))
                    }
                }
                good_len += n as u64;
            }
        }
        let len = file
            .seek(SeekFrom::End(0))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if len != good_len {
            file.set_len(good_len)
                .map_err(|e| format!("{}: cannot cut the torn last line: {e}", path.display()))?;
            file.sync_all()
                .map_err(|e| format!("{}: fsync: {e}", path.display()))?;
        }
        if good_len == 0 {
            check_header(path, None)?;
        }
        Ok(Journal {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            dead: AtomicBool::new(false),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (one `write` of the whole line).
    pub fn append(&self, record: &Record) -> Result<(), String> {
        if self.dead.load(Ordering::SeqCst) {
            return Err("journal closed".into());
        }
        let mut line = serde_json::to_vec(record).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(&line)
            .map_err(|e| format!("{}: cannot append to the journal: {e}", self.path.display()))
    }

    /// Makes everything appended so far durable.
    pub fn sync(&self) -> Result<(), String> {
        if self.dead.load(Ordering::SeqCst) {
            return Err("journal closed".into());
        }
        let f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.sync_data()
            .map_err(|e| format!("{}: fsync of the journal failed: {e}", self.path.display()))
    }

    pub fn append_sync(&self, record: &Record) -> Result<(), String> {
        self.append(record)?;
        self.sync()
    }

    /// Test hook: behave like a killed process from now on (no more writes).
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }
}

/// What the orchestrator knows about one device. Cheap to clone: the snapshot (identity,
/// key) is shared, so the per-poll lists of a batch's devices copy only the small fields.
#[derive(Clone, Debug)]
pub struct DeviceView {
    pub snapshot: Arc<SnapshotDevice>,
    pub state: DevState,
    pub reason: Option<String>,
    pub new_id: Option<String>,
    pub new_aid: Option<String>,
    pub batch: Option<u32>,
    /// When it entered its current state (ms since the epoch).
    pub since_ms: u64,
}

/// A deployment created for a batch.
#[derive(Clone, Debug, Serialize)]
pub struct BatchDeployment {
    pub stage: String,
    pub server: Side,
    pub name: String,
    pub id: String,
    pub created: u64,
}

/// The journal replayed.
#[derive(Debug, Default)]
pub struct Fleet {
    pub run: String,
    pub old: String,
    pub new: String,
    pub snapshot_complete: bool,
    pub devices: BTreeMap<String, DeviceView>,
    /// Device ids in snapshot order (the order batches are filled in).
    pub order: Vec<String>,
    pub batches: BTreeMap<u32, Vec<String>>,
    pub deployments: BTreeMap<u32, Vec<BatchDeployment>>,
    /// Intents without a `done` record, by sequence number.
    pub open_intents: BTreeMap<u64, Op>,
    pub next_seq: u64,
    /// The unacknowledged pause: (batch, gate, reason).
    pub paused: Option<(u32, String, String)>,
    /// Gates an operator acknowledged: (batch, gate).
    pub acked: std::collections::BTreeSet<(u32, String)>,
}

impl Fleet {
    pub fn replay(records: &[Record]) -> Fleet {
        let mut f = Fleet::default();
        for r in records {
            f.apply(r);
        }
        f
    }

    pub fn apply(&mut self, r: &Record) {
        match r {
            Record::Run { run, old, new, .. } => {
                self.run = run.clone();
                self.old = old.clone();
                self.new = new.clone();
            }
            Record::Device(d) => {
                if !self.devices.contains_key(&d.id) {
                    self.order.push(d.id.clone());
                }
                self.devices.insert(
                    d.id.clone(),
                    DeviceView {
                        snapshot: Arc::new(d.clone()),
                        state: DevState::Selected,
                        reason: None,
                        new_id: None,
                        new_aid: None,
                        batch: None,
                        since_ms: 0,
                    },
                );
            }
            Record::SnapshotDone { .. } => self.snapshot_complete = true,
            Record::Batch { n, devices } => {
                for id in devices {
                    if let Some(d) = self.devices.get_mut(id) {
                        d.batch = Some(*n);
                    }
                }
                self.batches.insert(*n, devices.clone());
            }
            Record::Intent { seq, op } => {
                self.open_intents.insert(*seq, op.clone());
                self.next_seq = self.next_seq.max(seq + 1);
            }
            Record::Done { seq, .. } => {
                self.open_intents.remove(seq);
            }
            Record::State {
                dev,
                state,
                reason,
                new_id,
                new_aid,
                batch,
                at,
            } => {
                if let Some(d) = self.devices.get_mut(dev) {
                    d.state = *state;
                    d.reason = reason.clone();
                    if new_id.is_some() {
                        d.new_id = new_id.clone();
                    }
                    if new_aid.is_some() {
                        d.new_aid = new_aid.clone();
                    }
                    d.batch = *batch;
                    d.since_ms = *at;
                }
            }
            Record::Deployment {
                batch,
                stage,
                server,
                name,
                id,
                created,
            } => {
                let list = self.deployments.entry(*batch).or_default();
                if !list.iter().any(|d| d.name == *name) {
                    list.push(BatchDeployment {
                        stage: stage.clone(),
                        server: *server,
                        name: name.clone(),
                        id: id.clone(),
                        created: *created,
                    });
                }
            }
            Record::Pause {
                batch,
                gate,
                reason,
            } => self.paused = Some((*batch, gate.clone(), reason.clone())),
            Record::Resume { batch, gate } => {
                self.paused = None;
                self.acked.insert((*batch, gate.clone()));
            }
        }
    }

    /// Count of devices per state.
    pub fn counts(&self) -> BTreeMap<DevState, usize> {
        let mut m = BTreeMap::new();
        for d in self.devices.values() {
            *m.entry(d.state).or_insert(0) += 1;
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Record {
        Record::Run {
            version: JOURNAL_VERSION,
            run: "r1".into(),
            old: "http://o".into(),
            new: "http://n".into(),
            created: 1,
        }
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let j = Journal::create(&path, &header()).unwrap();
        assert!(
            Journal::create(&path, &header()).is_err(),
            "never overwrites"
        );
        j.append_sync(&Record::Intent {
            seq: 0,
            op: Op::Preauth {
                devices: vec!["a".into()],
            },
        })
        .unwrap();
        drop(j);
        // A crash in the middle of a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"t":"done","se"#)
            .unwrap();
        let (j, records) = Journal::open(&path).unwrap();
        assert_eq!(records.len(), 2);
        let fleet = Fleet::replay(&records);
        assert_eq!(fleet.open_intents.len(), 1);
        assert_eq!(fleet.next_seq, 1);
        j.append_sync(&Record::Done {
            seq: 0,
            deployment_id: None,
            error: None,
        })
        .unwrap();
        drop(j);
        let (_, records) = Journal::open(&path).unwrap();
        assert!(Fleet::replay(&records).open_intents.is_empty());
    }

    #[test]
    fn refuses_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        std::fs::write(&path, "hello\n").unwrap();
        let err = Journal::open(&path).err().unwrap();
        assert!(err.contains("line 1"), "{err}");
    }
}
