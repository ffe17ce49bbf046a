//! The crash-safe file transaction: back up, replace, roll back and recover the config files, driven by the journal.
//!
//! Install order (each arrow is durable before the next starts):
//! journal `Prepared` (old+new checksums) → backups → journal `Writing` → each file replaced
//! (temp, fsync, rename, dir fsync) or removed → journal `Installed` = **commit point**.
//! Recovery (run at the start of every module call and by `server-migration recover`) finishes an
//! interrupted transaction: before the commit point, or in `RollingBack`, it restores the old files;
//! from the commit point on the new files are already complete and stay.

use crate::atomic::{self, Ownership};
use crate::device::DeviceRoot;
use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::journal::{FileRecord, FileVersion, Journal, Phase, RestartMode, BACKUP_DIR, FORMAT};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A config file as found on the device before the migration.
#[derive(Debug, Clone)]
pub struct CurrentFile {
    /// Path as the client knows it.
    pub device_path: String,
    /// Symlink-free device path.
    pub real_path: PathBuf,
    /// `None` = absent.
    pub contents: Option<Vec<u8>>,
    pub owner: Option<Ownership>,
}

/// Reads one config file (following symlinks inside the root); absent is fine, unreadable is an error.
pub fn read_current(root: &DeviceRoot, device_path: &str) -> Result<CurrentFile> {
    let real_path = root.resolve(Path::new(device_path))?;
    let host = root.host_path(&real_path);
    let (contents, owner) = match fs::read(&host) {
        Ok(bytes) => {
            let meta = fs::metadata(&host).map_err(|e| atomic::annotate(e, "stat", &host))?;
            if !meta.is_file() {
                return Err(Error::new(format!(
                    "{device_path} ({}) is not a regular file",
                    host.display()
                )));
            }
            (Some(bytes), Some(Ownership::of(&meta)))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => (None, None),
        Err(e) => {
            return Err(Error::new(format!(
                "cannot read device config {device_path}: {e}"
            )))
        }
    };
    Ok(CurrentFile {
        device_path: device_path.to_string(),
        real_path,
        contents,
        owner,
    })
}

/// What a deployment is about, copied into the journal.
#[derive(Debug, Clone)]
pub struct Intent {
    pub artifact_name: String,
    pub stage: String,
    pub old_server: String,
    pub new_server: String,
    pub restart: RestartMode,
}

/// Where the module keeps its journal and backups, plus how it touches the file system.
pub struct Store<'a> {
    pub root: &'a DeviceRoot,
    /// Host path of the state directory.
    pub state_dir: PathBuf,
    pub faults: &'a Faults,
}

impl<'a> Store<'a> {
    pub fn backup_dir(&self) -> PathBuf {
        self.state_dir.join(BACKUP_DIR)
    }

    fn host(&self, real_path: &str) -> PathBuf {
        self.root.host_path(Path::new(real_path))
    }

    pub fn load(&self) -> Result<Option<Journal>> {
        Ok(Journal::load(&self.state_dir)?)
    }

    /// Installs `new` (same order as `current`; `None` = remove) for `intent`.
    /// Returns the journal in phase `Installed`.
    pub fn install(
        &self,
        intent: &Intent,
        current: &[CurrentFile],
        new: &[Option<Vec<u8>>],
    ) -> Result<Journal> {
        assert_eq!(current.len(), new.len());
        atomic::create_dir_all_durable(self.faults, &self.state_dir, true)?;
        atomic::create_dir_all_durable(self.faults, &self.backup_dir(), true)?;
        let files = current
            .iter()
            .zip(new)
            .map(|(cur, new)| {
                let old = cur
                    .contents
                    .as_ref()
                    .map(|c| version(c, cur.owner.unwrap_or_else(Ownership::new_file)));
                let new = new
                    .as_ref()
                    .map(|c| version(c, cur.owner.unwrap_or_else(Ownership::new_file)));
                FileRecord {
                    device_path: cur.device_path.clone(),
                    real_path: cur.real_path.to_string_lossy().into_owned(),
                    backup: old.as_ref().map(|_| backup_name(&cur.device_path)),
                    old,
                    new,
                }
            })
            .collect();
        let mut journal = Journal {
            format: FORMAT,
            artifact_name: intent.artifact_name.clone(),
            stage: intent.stage.clone(),
            old_server: intent.old_server.clone(),
            new_server: intent.new_server.clone(),
            restart: intent.restart,
            phase: Phase::Prepared,
            commit_point_reached: false,
            finished: false,
            restart_scheduled: false,
            files,
            history: Vec::new(),
        };
        journal.advance(Phase::Prepared, &self.state_dir, self.faults)?;

        for (rec, cur) in journal.files.iter().zip(current) {
            if let (Some(name), Some(bytes), Some(old)) = (&rec.backup, &cur.contents, &rec.old) {
                let owner = Ownership {
                    mode: 0o600,
                    ..old.ownership()
                };
                atomic::write_atomic(self.faults, &self.backup_dir().join(name), bytes, owner)?;
            }
        }
        // The files must still be what we read and backed up; otherwise someone else is writing them.
        for rec in &journal.files {
            if !self.matches(rec, rec.old.as_ref())? {
                let e = Error::new(format!(
                    "{} changed while the migration was being prepared; nothing was changed, try again",
                    rec.device_path
                ));
                journal.note(format!("aborted: {e}"));
                journal.advance(Phase::RolledBack, &self.state_dir, self.faults)?;
                return Err(e);
            }
        }
        journal.advance(Phase::Writing, &self.state_dir, self.faults)?;

        for (rec, new) in journal.files.iter().zip(new) {
            if !rec.changes() {
                continue;
            }
            let host = self.host(&rec.real_path);
            match (new, &rec.new) {
                (Some(bytes), Some(v)) => {
                    if let Some(dir) = host.parent() {
                        atomic::create_dir_all_durable(self.faults, dir, false)?;
                    }
                    atomic::write_atomic(self.faults, &host, bytes, v.ownership())?
                }
                _ => atomic::remove_durable(self.faults, &host)?,
            }
        }
        journal.advance(Phase::Installed, &self.state_dir, self.faults)?;
        Ok(journal)
    }

    /// Brings the files back to the old versions and marks the journal `RolledBack`. Idempotent:
    /// files that already are old are not touched; a journal that never wrote a file just
    /// changes phase.
    pub fn rollback(&self, journal: &mut Journal) -> Result<()> {
        match journal.phase {
            Phase::RolledBack => return Ok(()),
            Phase::Prepared => {
                // No config file is written before `Writing` is durable.
                self.remove_temps(journal)?;
                return journal
                    .advance(Phase::RolledBack, &self.state_dir, self.faults)
                    .map_err(Into::into);
            }
            Phase::RollingBack => {}
            Phase::Writing | Phase::Installed | Phase::Committed => {
                journal.advance(Phase::RollingBack, &self.state_dir, self.faults)?;
            }
        }
        self.remove_temps(journal)?;
        for rec in &journal.files {
            self.restore(rec)?;
        }
        journal.advance(Phase::RolledBack, &self.state_dir, self.faults)?;
        Ok(())
    }

    fn restore(&self, rec: &FileRecord) -> Result<()> {
        let host = self.host(&rec.real_path);
        if self.matches(rec, rec.old.as_ref())? {
            if rec.changes() {
                atomic::sync_entry(self.faults, &host)?;
            }
            return Ok(());
        }
        match (&rec.old, &rec.backup) {
            (None, _) => atomic::remove_durable(self.faults, &host)?,
            (Some(old), Some(name)) => {
                let backup = self.backup_dir().join(name);
                let bytes = fs::read(&backup).map_err(|e| {
                    Error::new(format!(
                        "cannot restore {}: backup {} unreadable: {e}",
                        rec.device_path,
                        backup.display()
                    ))
                })?;
                if atomic::sha256_bytes(&bytes) != old.sha256 {
                    return Err(Error::new(format!(
                        "cannot restore {}: backup {} does not match the checksum in the journal",
                        rec.device_path,
                        backup.display()
                    )));
                }
                if let Some(dir) = host.parent() {
                    atomic::create_dir_all_durable(self.faults, dir, false)?;
                }
                atomic::write_atomic(self.faults, &host, &bytes, old.ownership())?;
            }
            (Some(_), None) => {
                return Err(Error::new(format!(
                    "cannot restore {}: the journal names no backup",
                    rec.device_path
                )))
            }
        }
        Ok(())
    }

    /// Removes temp files a crash may have left beside the config files, backups and journal.
    fn remove_temps(&self, journal: &Journal) -> Result<()> {
        for rec in &journal.files {
            atomic::remove_stale_temp(self.faults, &self.host(&rec.real_path))?;
            if let Some(b) = &rec.backup {
                atomic::remove_stale_temp(self.faults, &self.backup_dir().join(b))?;
            }
        }
        atomic::remove_stale_temp(
            self.faults,
            &self.state_dir.join(crate::journal::JOURNAL_FILE),
        )?;
        Ok(())
    }

    /// Finishes an interrupted transaction (see the module docs for which way). Returns the
    /// journal, or `None` if there is none.
    pub fn recover(&self) -> Result<Option<Journal>> {
        let Some(mut journal) = self.load()? else {
            // Interrupted during the very first journal write: only its temp file is left
            // (found by the QEMU power-loss runs at the journal's first fsync and rename).
            atomic::remove_stale_temp(
                self.faults,
                &self.state_dir.join(crate::journal::JOURNAL_FILE),
            )?;
            return Ok(None);
        };
        match journal.phase {
            Phase::Prepared | Phase::Writing | Phase::RollingBack => {
                journal.note(format!(
                    "recovery: interrupted in phase {}, restoring old files",
                    journal.phase.name()
                ));
                self.rollback(&mut journal)?;
            }
            Phase::Installed | Phase::Committed | Phase::RolledBack => {
                self.remove_temps(&journal)?
            }
        }
        Ok(Some(journal))
    }

    /// Whether the file on disk is exactly `want` (`None` = absent).
    pub fn matches(&self, rec: &FileRecord, want: Option<&FileVersion>) -> Result<bool> {
        let host = self.host(&rec.real_path);
        let have = atomic::sha256_file(&host)?;
        Ok(have == want.map(|v| v.sha256))
    }

    /// Error unless every file is exactly its `new` (or `old`) version.
    pub fn verify(&self, journal: &Journal, new: bool) -> Result<()> {
        for rec in &journal.files {
            let want = if new {
                rec.new.as_ref()
            } else {
                rec.old.as_ref()
            };
            if !self.matches(rec, want)? {
                return Err(Error::new(format!(
                    "{} is not the {} version recorded in the journal (expected {})",
                    rec.device_path,
                    if new { "new" } else { "old" },
                    match want {
                        Some(v) => format!("sha256 {}", atomic::hex(&v.sha256)),
                        None => "no file".to_string(),
                    }
                )));
            }
        }
        Ok(())
    }

    /// Takes the exclusive lock on the state dir (created if needed) so a human's `recover`
    /// cannot interleave with a state the client is running. Released when the guard drops or
    /// the process dies. Gives up after `wait` with a clear error.
    pub fn lock(&self, wait: std::time::Duration) -> Result<StateLock> {
        atomic::create_dir_all_durable(self.faults, &self.state_dir, true)?;
        let path = self.state_dir.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| atomic::annotate(e, "open lock file", &path))?;
        let start = std::time::Instant::now();
        loop {
            // SAFETY: flock on a file descriptor we own; no memory is involved.
            let rc = unsafe {
                libc::flock(
                    std::os::fd::AsRawFd::as_raw_fd(&file),
                    libc::LOCK_EX | libc::LOCK_NB,
                )
            };
            if rc == 0 {
                return Ok(StateLock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(Error::new(format!("cannot lock {}: {err}", path.display())));
            }
            if start.elapsed() >= wait {
                return Err(Error::new(format!(
                    "another server-migration process holds {} (waited {} s)",
                    path.display(),
                    wait.as_secs()
                )));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    pub fn save(&self, journal: &Journal) -> Result<()> {
        Ok(journal.save(&self.state_dir, self.faults)?)
    }
}

/// Lock file inside the state dir.
pub const LOCK_FILE: &str = "lock";

/// Holds the state-dir lock while alive.
#[derive(Debug)]
pub struct StateLock {
    _file: fs::File,
}

fn version(bytes: &[u8], owner: Ownership) -> FileVersion {
    FileVersion {
        sha256: atomic::sha256_bytes(bytes),
        len: bytes.len() as u64,
        mode: owner.mode,
        uid: owner.uid,
        gid: owner.gid,
    }
}

/// `/var/lib/mender/mender.conf` → `var_lib_mender_mender.conf`.
fn backup_name(device_path: &str) -> String {
    device_path.trim_start_matches('/').replace('/', "_")
}

/// Current owner of a host file, if it exists (for tests and status).
pub fn owner_of(path: &Path) -> Option<(u32, u32, u32)> {
    fs::metadata(path)
        .ok()
        .map(|m| (m.mode() & 0o7777, m.uid(), m.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device root with two files for a stand-in "migration" that rewrites one and removes
    /// the other, and the fault-free store over it.
    struct Fixture {
        dir: tempfile::TempDir,
        root: DeviceRoot,
        faults: Faults,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("etc/app")).unwrap();
            fs::write(dir.path().join("etc/app/a.conf"), b"old a\n").unwrap();
            fs::write(dir.path().join("etc/app/b.conf"), b"old b\n").unwrap();
            let root = DeviceRoot::new(dir.path());
            Fixture {
                dir,
                root,
                faults: Faults::none(),
            }
        }

        fn store(&self) -> Store<'_> {
            Store {
                root: &self.root,
                state_dir: self.dir.path().join("state"),
                faults: &self.faults,
            }
        }

        /// Host path of `rel` below the device root.
        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        /// Contents of `rel` below the device root.
        fn read(&self, rel: &str) -> Vec<u8> {
            fs::read(self.path(rel)).unwrap()
        }

        /// Installs "new a" over the current `a.conf` (the files as read before).
        fn install_a(&self, store: &Store<'_>, current: &[CurrentFile]) -> Result<Journal> {
            store.install(&intent(), current, &[Some(b"new a\n".to_vec())])
        }
    }

    fn intent() -> Intent {
        Intent {
            artifact_name: "t".into(),
            stage: "dual".into(),
            old_server: "https://o".into(),
            new_server: "https://n".into(),
            restart: RestartMode::Reboot,
        }
    }

    #[test]
    fn install_rollback_recover_with_stand_in_contents() {
        let f = Fixture::new();
        let store = f.store();
        let current = vec![
            read_current(&f.root, "/etc/app/a.conf").unwrap(),
            read_current(&f.root, "/etc/app/b.conf").unwrap(),
            read_current(&f.root, "/etc/app/c.conf").unwrap(),
        ];
        assert!(current[2].contents.is_none());
        let new = vec![Some(b"new a\n".to_vec()), None, Some(b"new c\n".to_vec())];
        let mut j = store.install(&intent(), &current, &new).unwrap();
        assert_eq!(j.phase, Phase::Installed);
        assert_eq!(f.read("etc/app/a.conf"), b"new a\n");
        assert!(!f.path("etc/app/b.conf").exists());
        assert_eq!(owner_of(&f.path("etc/app/c.conf")).unwrap().0, 0o600);
        store.verify(&j, true).unwrap();
        assert!(store.verify(&j, false).is_err());
        // Recovery from the commit point keeps the new files.
        assert_eq!(store.recover().unwrap().unwrap().phase, Phase::Installed);
        store.verify(&j, true).unwrap();

        store.rollback(&mut j).unwrap();
        assert_eq!(j.phase, Phase::RolledBack);
        assert_eq!(f.read("etc/app/a.conf"), b"old a\n");
        assert_eq!(f.read("etc/app/b.conf"), b"old b\n");
        assert!(!f.path("etc/app/c.conf").exists());
        store.verify(&j, false).unwrap();
        // Idempotent.
        store.rollback(&mut j).unwrap();
        store.verify(&j, false).unwrap();
    }

    #[test]
    fn recovery_from_writing_restores_old_and_refuses_a_bad_backup() {
        let f = Fixture::new();
        let store = f.store();
        let current = vec![read_current(&f.root, "/etc/app/a.conf").unwrap()];
        let mut j = f.install_a(&store, &current).unwrap();
        // Pretend the power went out before the commit point.
        j.phase = Phase::Writing;
        store.save(&j).unwrap();
        assert_eq!(store.recover().unwrap().unwrap().phase, Phase::RolledBack);
        assert_eq!(f.read("etc/app/a.conf"), b"old a\n");

        // Same, with a tampered backup: recovery must not write garbage.
        let mut j = f.install_a(&store, &current).unwrap();
        j.phase = Phase::Writing;
        store.save(&j).unwrap();
        fs::write(store.backup_dir().join("etc_app_a.conf"), b"evil").unwrap();
        let e = store.recover().unwrap_err();
        assert!(e.to_string().contains("does not match the checksum"), "{e}");
        assert_eq!(f.read("etc/app/a.conf"), b"new a\n");
    }

    #[test]
    fn second_lock_times_out_with_a_clear_error() {
        let f = Fixture::new();
        let store = f.store();
        let held = store.lock(std::time::Duration::ZERO).unwrap();
        let e = store
            .lock(std::time::Duration::from_millis(150))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("another server-migration process holds"),
            "{e}"
        );
        drop(held);
        store.lock(std::time::Duration::ZERO).unwrap();
    }

    #[test]
    fn file_changed_between_read_and_write_aborts_install() {
        let f = Fixture::new();
        let store = f.store();
        let current = vec![read_current(&f.root, "/etc/app/a.conf").unwrap()];
        fs::write(f.path("etc/app/a.conf"), b"someone else\n").unwrap();
        let e = f.install_a(&store, &current).unwrap_err();
        assert!(e.to_string().contains("changed while"), "{e}");
        assert_eq!(f.read("etc/app/a.conf"), b"someone else\n");
        assert_eq!(store.load().unwrap().unwrap().phase, Phase::RolledBack);
    }
}
