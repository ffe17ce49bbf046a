//! The persistent journal (CBOR) that makes an install/rollback recoverable after a power loss.
//!
//! Lives in the state dir as `journal.cbor`, replaced atomically on every update. Phases, in order:
//!
//! | phase | on disk | recovery goes to |
//! |---|---|---|
//! | `Prepared` | journal names old/new checksums; backups may be incomplete; config files untouched | old |
//! | `Writing` | backups complete and durable; config files being replaced one by one | old |
//! | `Installed` | **commit point**: every new file is durable | new |
//! | `Committed` | client ran ArtifactCommit | new (final) |
//! | `RollingBack` | backups being copied back | old |
//! | `RolledBack` | old files restored | old (final) |
//!
//! `finished` is set by Cleanup: the journal then only documents the last migration (and its
//! backups stay for manual recovery); a later install starts a new journal.

use crate::atomic::{self, hex, Ownership};
use crate::faults::Faults;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::Path;

pub const JOURNAL_FILE: &str = "journal.cbor";
pub const BACKUP_DIR: &str = "backup";
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Prepared,
    Writing,
    Installed,
    Committed,
    RollingBack,
    RolledBack,
}

impl Phase {
    /// True from the commit point on, until a rollback starts.
    pub fn targets_new(self) -> bool {
        matches!(self, Phase::Installed | Phase::Committed)
    }
    pub fn name(self) -> &'static str {
        match self {
            Phase::Prepared => "prepared",
            Phase::Writing => "writing",
            Phase::Installed => "installed",
            Phase::Committed => "committed",
            Phase::RollingBack => "rolling-back",
            Phase::RolledBack => "rolled-back",
        }
    }
}

/// How the client is made to re-read its config (copied from the plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartMode {
    /// NeedsArtifactReboot = Automatic.
    Reboot,
    /// NeedsArtifactReboot = No; Cleanup schedules a restart of the client service.
    Service,
}

/// One version of a file: what it hashed to, plus mode/owner so a restore is exact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileVersion {
    #[serde(with = "sha_hex")]
    pub sha256: [u8; 32],
    pub len: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl FileVersion {
    pub fn ownership(&self) -> Ownership {
        Ownership {
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
        }
    }
}

/// One config file touched by the migration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Path as the client knows it, e.g. `/var/lib/mender/mender.conf`.
    pub device_path: String,
    /// Symlink-free path actually written, e.g. `/data/mender/mender.conf`.
    pub real_path: String,
    /// Before the migration; `None` = absent.
    pub old: Option<FileVersion>,
    /// After the migration; `None` = must be absent.
    pub new: Option<FileVersion>,
    /// File name of the copy of `old` under `<state>/backup/`.
    pub backup: Option<String>,
}

impl FileRecord {
    pub fn changes(&self) -> bool {
        self.old.as_ref().map(|v| v.sha256) != self.new.as_ref().map(|v| v.sha256)
    }
}

/// A timestamped phase change, kept for `status` and post-mortems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub unix_time: u64,
    pub what: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub format: u32,
    /// `header/artifact_name` of the deployment, for humans.
    pub artifact_name: String,
    /// `dual` or `new-only`.
    pub stage: String,
    pub old_server: String,
    pub new_server: String,
    pub restart: RestartMode,
    pub phase: Phase,
    /// Whether this deployment ever reached `Installed` (also after a rollback): decides whether a
    /// reboot is needed to un-load the new config.
    pub commit_point_reached: bool,
    /// Set by Cleanup.
    pub finished: bool,
    /// Cleanup already asked systemd to restart the client.
    pub restart_scheduled: bool,
    pub files: Vec<FileRecord>,
    pub history: Vec<Event>,
}

impl Journal {
    pub fn note(&mut self, what: impl Into<String>) {
        let unix_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.history.push(Event {
            unix_time,
            what: what.into(),
        });
    }

    /// Moves to `phase`, records it in the history and persists the journal (the durable step).
    pub fn advance(&mut self, phase: Phase, state_dir: &Path, faults: &Faults) -> io::Result<()> {
        self.phase = phase;
        if phase == Phase::Installed {
            self.commit_point_reached = true;
        }
        self.note(format!("phase {}", phase.name()));
        self.save(state_dir, faults)
    }

    /// Atomic, durable replace of `<state_dir>/journal.cbor`.
    pub fn save(&self, state_dir: &Path, faults: &Faults) -> io::Result<()> {
        let mut bytes = Vec::new();
        ciborium::into_writer(self, &mut bytes)
            .map_err(|e| io::Error::other(format!("cannot encode journal: {e}")))?;
        let owner = Ownership {
            mode: 0o600,
            ..Ownership::new_file()
        };
        atomic::write_atomic(faults, &state_dir.join(JOURNAL_FILE), &bytes, owner)
    }

    /// `Ok(None)` when there is no journal yet.
    pub fn load(state_dir: &Path) -> io::Result<Option<Journal>> {
        let path = state_dir.join(JOURNAL_FILE);
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(atomic::annotate(e, "open", &path)),
        };
        Self::decode(BufReader::new(f))
            .map(Some)
            .map_err(|e| io::Error::new(e.kind(), format!("journal {}: {e}", path.display())))
    }

    /// Decodes a journal from its CBOR bytes; refuses a corrupt one or another format.
    pub fn decode(r: impl io::Read) -> io::Result<Journal> {
        let j: Journal = ciborium::from_reader(r)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("corrupt: {e}")))?;
        if j.format != FORMAT {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("format {}, this module understands {FORMAT}", j.format),
            ));
        }
        Ok(j)
    }
}

impl fmt::Display for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "artifact: {}", self.artifact_name)?;
        writeln!(
            f,
            "stage: {} (old server {}, new server {}), restart: {}",
            self.stage,
            self.old_server,
            self.new_server,
            match self.restart {
                RestartMode::Reboot => "reboot",
                RestartMode::Service => "service",
            }
        )?;
        writeln!(
            f,
            "phase: {} (recovery target: {}; commit point {}reached)",
            self.phase.name(),
            if self.phase.targets_new() {
                "new files"
            } else {
                "old files"
            },
            if self.commit_point_reached {
                ""
            } else {
                "not "
            }
        )?;
        writeln!(f, "finished: {}", if self.finished { "yes" } else { "no" })?;
        if self.restart == RestartMode::Service {
            writeln!(
                f,
                "client restart scheduled: {}",
                if self.restart_scheduled { "yes" } else { "no" }
            )?;
        }
        for r in &self.files {
            writeln!(f, "file {} (real path {}):", r.device_path, r.real_path)?;
            writeln!(f, "  old: {}", describe(r.old.as_ref()))?;
            writeln!(f, "  new: {}", describe(r.new.as_ref()))?;
            if let Some(b) = &r.backup {
                writeln!(f, "  backup: {BACKUP_DIR}/{b}")?;
            }
        }
        writeln!(f, "history:")?;
        for e in &self.history {
            writeln!(f, "  {} {}", e.unix_time, e.what)?;
        }
        Ok(())
    }
}

fn describe(v: Option<&FileVersion>) -> String {
    match v {
        None => "absent".to_string(),
        Some(v) => format!(
            "sha256 {} ({} bytes, mode {:04o}, uid {}, gid {})",
            hex(&v.sha256),
            v.len,
            v.mode,
            v.uid,
            v.gid
        ),
    }
}

/// Checksums as lowercase hex strings, so a `cbor2json` dump of the journal is readable.
mod sha_hex {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::atomic::hex(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        crate::atomic::sha256_from_hex(&s)
            .ok_or_else(|| D::Error::custom("sha256 must be 64 hex digits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_cbor() {
        let d = tempfile::tempdir().unwrap();
        let mut j = Journal {
            format: FORMAT,
            artifact_name: "a".into(),
            stage: "dual".into(),
            old_server: "https://o".into(),
            new_server: "https://n".into(),
            restart: RestartMode::Reboot,
            phase: Phase::Prepared,
            commit_point_reached: false,
            finished: false,
            restart_scheduled: false,
            files: vec![FileRecord {
                device_path: "/etc/mender/mender.conf".into(),
                real_path: "/etc/mender/mender.conf".into(),
                old: None,
                new: Some(FileVersion {
                    sha256: atomic::sha256_bytes(b"x"),
                    len: 1,
                    mode: 0o600,
                    uid: 0,
                    gid: 0,
                }),
                backup: None,
            }],
            history: vec![],
        };
        assert_eq!(Journal::load(d.path()).unwrap(), None);
        j.advance(Phase::Installed, d.path(), &Faults::none())
            .unwrap();
        let back = Journal::load(d.path()).unwrap().unwrap();
        assert_eq!(back, j);
        assert!(back.commit_point_reached);
        assert!(format!("{back}").contains("recovery target: new files"));
    }

    #[test]
    fn corrupt_journal_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(JOURNAL_FILE), b"\xff\x00garbage").unwrap();
        let e = Journal::load(d.path()).unwrap_err();
        assert!(e.to_string().contains("corrupt"), "{e}");
    }
}
