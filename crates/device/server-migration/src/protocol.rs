//! The Update Module v3 states as the 3.4 (Go) and 4.x/5.x (C++) clients call them, mapped onto the transaction.
//!
//! | state | behaviour |
//! |---|---|
//! | `ProvidePayloadFileSizes`, `Download` | nothing (the client stores the payload in `files/`) |
//! | `SupportsRollback` | prints `Yes` |
//! | `ArtifactInstall` | plan + device config → new files via menderconf; refuse (exit 1, nothing changed) or install up to the commit point |
//! | `NeedsArtifactReboot` | `Automatic` (`restart: reboot`) or `No` (`restart: service`, or nothing changed / nothing installed) |
//! | `ArtifactReboot`, `ArtifactRollbackReboot` | nothing (we never answer `Yes`; the client reboots itself for `Automatic`) |
//! | `ArtifactVerifyReboot` | files on disk are the journal's new versions and parse/validate |
//! | `ArtifactCommit` | checks the new files again, journal → `Committed` |
//! | `ArtifactRollback` | restores the backups (idempotent; nothing to do if nothing was installed) |
//! | `ArtifactVerifyRollbackReboot` | files on disk are the old versions |
//! | `ArtifactFailure` | rolls back if an uncommitted install is still in place |
//! | `Cleanup` | finishes the journal (backups kept); schedules the client restart in service mode |
//! | anything else | exit 0, no output (forward compatibility) |
//!
//! Every known state first runs recovery, so an install or rollback cut by a power loss is
//! completed (to old or new, see `transaction`) before the state does its own work.

use crate::device::{DeviceRoot, DEFAULT_STATE_DIR};
use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::journal::{Journal, Phase, RestartMode};
use crate::payload;
use crate::restart::{self, CommandRunner};
use crate::transaction::Store;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The states this module knows; everything else is ignored with exit 0.
pub const KNOWN_STATES: [&str; 14] = [
    "ProvidePayloadFileSizes",
    "Download",
    "SupportsRollback",
    "ArtifactInstall",
    "NeedsArtifactReboot",
    "ArtifactReboot",
    "ArtifactVerifyReboot",
    "ArtifactCommit",
    "ArtifactRollback",
    "ArtifactRollbackReboot",
    "ArtifactVerifyRollbackReboot",
    "ArtifactFailure",
    "Cleanup",
    "DownloadWithFileSizes",
];

/// How long a state waits for another server-migration process (e.g. a manual `recover`).
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Everything a state needs from the outside world.
pub struct Context {
    pub root: DeviceRoot,
    pub faults: Faults,
    pub runner: Box<dyn CommandRunner>,
    /// Where progress and warnings go (stderr in the binary; the client copies it into the
    /// deployment log).
    pub diagnostics: Box<dyn Fn(&str)>,
}

impl Context {
    /// Host path of the (symlink-resolved) state directory.
    pub fn state_dir(&self) -> Result<PathBuf> {
        Ok(self.root.resolve_host(Path::new(DEFAULT_STATE_DIR))?)
    }

    pub fn log(&self, msg: impl AsRef<str>) {
        (self.diagnostics)(msg.as_ref())
    }

    pub fn store(&self) -> Result<Store<'_>> {
        Ok(Store {
            root: &self.root,
            state_dir: self.state_dir()?,
            faults: &self.faults,
        })
    }
}

/// The journal of the deployment in progress (`None` if there is none or the last one is finished).
fn active(journal: Option<Journal>) -> Option<Journal> {
    journal.filter(|j| !j.finished)
}

/// Runs one protocol state. Query answers go to `out`; diagnostics to stderr.
pub fn run_state(ctx: &Context, state: &str, tree: &Path, out: &mut dyn Write) -> Result<()> {
    if !KNOWN_STATES.contains(&state) {
        return Ok(());
    }
    let store = ctx.store()?;
    let _lock = store.lock(LOCK_WAIT)?;
    let journal = store.recover()?;
    match state {
        "SupportsRollback" => answer(out, "Yes"),
        "ArtifactInstall" => install(ctx, &store, journal, tree),
        "NeedsArtifactReboot" => answer(out, needs_reboot(active(journal).as_ref())),
        "ArtifactVerifyReboot" => {
            let j = active(journal)
                .ok_or_else(|| Error::new("ArtifactVerifyReboot: no migration is installed"))?;
            if !j.phase.targets_new() {
                return Err(Error::new(format!(
                    "ArtifactVerifyReboot: the migration is in phase {}, not installed",
                    j.phase.name()
                )));
            }
            store.verify(&j, true)?;
            payload::check_device_config(&ctx.root)
        }
        "ArtifactCommit" => {
            let mut j = active(journal)
                .ok_or_else(|| Error::new("ArtifactCommit: no migration is installed"))?;
            match j.phase {
                Phase::Committed => Ok(()),
                Phase::Installed => {
                    store.verify(&j, true)?;
                    j.advance(Phase::Committed, &store.state_dir, &ctx.faults)?;
                    ctx.log(format!("committed stage {} ({})", j.stage, j.artifact_name));
                    Ok(())
                }
                other => Err(Error::new(format!(
                    "ArtifactCommit: the migration is in phase {}, cannot commit",
                    other.name()
                ))),
            }
        }
        "ArtifactRollback" => {
            if let Some(mut j) = active(journal) {
                store.rollback(&mut j)?;
                ctx.log(format!(
                    "rolled back to the files before {}",
                    j.artifact_name
                ));
            }
            Ok(())
        }
        "ArtifactVerifyRollbackReboot" => match active(journal) {
            Some(j) if j.phase == Phase::RolledBack => store.verify(&j, false),
            Some(j) => Err(Error::new(format!(
                "ArtifactVerifyRollbackReboot: the migration is in phase {}, not rolled back",
                j.phase.name()
            ))),
            None => Ok(()),
        },
        "ArtifactFailure" => {
            if let Some(mut j) = active(journal) {
                if j.phase != Phase::Committed && j.phase != Phase::RolledBack {
                    j.note("ArtifactFailure with the install still in place: rolling back");
                    store.rollback(&mut j)?;
                }
            }
            Ok(())
        }
        "Cleanup" => cleanup(ctx, &store, active(journal)),
        // ProvidePayloadFileSizes, Download, DownloadWithFileSizes, ArtifactReboot, ArtifactRollbackReboot
        _ => Ok(()),
    }
}

fn answer(out: &mut dyn Write, text: &str) -> Result<()> {
    writeln!(out, "{text}").map_err(|e| Error::new(format!("cannot write answer: {e}")))
}

/// `Automatic` only when this deployment changed a file the running client has to re-read.
fn needs_reboot(journal: Option<&Journal>) -> &'static str {
    match journal {
        Some(j)
            if j.commit_point_reached
                && j.restart == RestartMode::Reboot
                && j.files.iter().any(|f| f.changes()) =>
        {
            "Automatic"
        }
        _ => "No",
    }
}

fn install(ctx: &Context, store: &Store<'_>, journal: Option<Journal>, tree: &Path) -> Result<()> {
    if let Some(mut previous) = active(journal) {
        // A deployment the client abandoned without Cleanup: uncommitted work goes back to old.
        if previous.phase != Phase::Committed && previous.phase != Phase::RolledBack {
            ctx.log(format!(
                "an earlier migration ({}) was left in phase {}; rolling it back first",
                previous.artifact_name,
                previous.phase.name()
            ));
            previous.note("abandoned by the client: rolled back before a new install");
            store.rollback(&mut previous)?;
        }
        previous.finished = true;
        previous.note("superseded by a new install");
        store.save(&previous)?;
    }
    let prepared = payload::prepare_install(&ctx.root, tree)?;
    ctx.log(format!(
        "client {} on this device ({}); applying the rules of {}",
        prepared.client,
        prepared.client.evidence,
        prepared.rules.rules()
    ));
    for w in &prepared.warnings {
        ctx.log(format!("warning: {w}"));
    }
    match store.install(&prepared.intent, &prepared.current, &prepared.new) {
        Ok(j) => {
            let changed: Vec<&str> = j
                .files
                .iter()
                .filter(|f| f.changes())
                .map(|f| f.device_path.as_str())
                .collect();
            ctx.log(format!(
                "installed stage {} (servers: {}{}); changed: {}",
                j.stage,
                if j.stage == "dual" {
                    format!("{}, ", j.old_server)
                } else {
                    String::new()
                },
                j.new_server,
                if changed.is_empty() {
                    "nothing".to_string()
                } else {
                    changed.join(", ")
                }
            ));
            // Best effort: reporting the stage must never fail a config switch.
            match crate::inventory::ensure_inventory_script(ctx) {
                Ok(true) => ctx.log(format!(
                    "installed the inventory script {}",
                    crate::inventory::INVENTORY_SCRIPT_PATH
                )),
                Ok(false) => {}
                Err(e) => ctx.log(format!("warning: inventory script not installed: {e}")),
            }
            Ok(())
        }
        Err(e) => {
            // Put everything back now rather than waiting for ArtifactRollback.
            if let Ok(Some(mut j)) = store.load() {
                if !j.finished && j.phase != Phase::RolledBack {
                    j.note(format!("install failed: {e}"));
                    if let Err(re) = store.rollback(&mut j) {
                        ctx.log(format!(
                            "rollback after the failed install also failed: {re}"
                        ));
                    }
                }
            }
            Err(e)
        }
    }
}

fn cleanup(ctx: &Context, store: &Store<'_>, journal: Option<Journal>) -> Result<()> {
    let Some(mut j) = journal else { return Ok(()) };
    let mut result = Ok(());
    match j.phase {
        Phase::Committed => {
            let changed = j.files.iter().any(|f| f.changes());
            if j.restart == RestartMode::Service && changed && !j.restart_scheduled {
                match restart::schedule_restart(&ctx.root, ctx.runner.as_ref()) {
                    Ok(()) => {
                        j.restart_scheduled = true;
                        j.note("client restart scheduled");
                        ctx.log(format!(
                            "the Mender client will be restarted in {} s to load the new config",
                            restart::RESTART_DELAY_SECS
                        ));
                    }
                    Err(e) => {
                        j.note(format!("scheduling the client restart failed: {e}"));
                        result = Err(Error::new(format!(
                            "cannot schedule the client restart ({e}); the new config takes effect at the next restart of the Mender client"
                        )));
                    }
                }
            }
        }
        Phase::RolledBack => {}
        other => {
            j.note(format!(
                "Cleanup in phase {}: the deployment ended without commit",
                other.name()
            ));
            ctx.log(format!(
                "the deployment ended without commit (phase {}); restoring the old files",
                other.name()
            ));
            store.rollback(&mut j)?;
        }
    }
    j.finished = true;
    j.note("finished");
    store.save(&j)?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::{read_current, Intent};
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Records every command instead of running it.
    struct Recorder(Rc<RefCell<Vec<String>>>, bool);

    impl CommandRunner for Recorder {
        fn run(&self, program: &str, args: &[String]) -> std::io::Result<()> {
            self.0
                .borrow_mut()
                .push(format!("{program} {}", args.join(" ")));
            if self.1 {
                Ok(())
            } else {
                Err(std::io::Error::other("systemd-run: not found"))
            }
        }
    }

    fn committed_service_journal(
        ok: bool,
    ) -> (tempfile::TempDir, Context, Rc<RefCell<Vec<String>>>) {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/mender")).unwrap();
        std::fs::write(d.path().join("etc/mender/mender.conf"), b"{}").unwrap();
        let calls = Rc::new(RefCell::new(Vec::new()));
        let ctx = Context {
            root: DeviceRoot::new(d.path()),
            faults: Faults::none(),
            runner: Box::new(Recorder(calls.clone(), ok)),
            diagnostics: Box::new(|_| {}),
        };
        let store = ctx.store().unwrap();
        let intent = Intent {
            artifact_name: "a".into(),
            stage: "dual".into(),
            old_server: "https://o".into(),
            new_server: "https://n".into(),
            restart: RestartMode::Service,
        };
        let current = vec![read_current(&ctx.root, "/etc/mender/mender.conf").unwrap()];
        // Stand-in content: this test is about Cleanup, not about config rules.
        let mut j = store
            .install(&intent, &current, &[Some(b"{\"x\":1}".to_vec())])
            .unwrap();
        j.advance(Phase::Committed, &store.state_dir, &ctx.faults)
            .unwrap();
        (d, ctx, calls)
    }

    #[test]
    fn cleanup_schedules_restart_once_through_the_runner() {
        let (_d, ctx, calls) = committed_service_journal(true);
        let tree = Path::new("/nonexistent");
        run_state(&ctx, "Cleanup", tree, &mut Vec::new()).unwrap();
        run_state(&ctx, "Cleanup", tree, &mut Vec::new()).unwrap();
        assert_eq!(
            *calls.borrow(),
            vec!["systemd-run --on-active=30 --unit=server-migration-restart systemctl restart mender-client"]
        );
        let j = ctx.store().unwrap().load().unwrap().unwrap();
        assert!(j.finished && j.restart_scheduled);
    }

    #[test]
    fn cleanup_reports_a_failed_schedule() {
        let (_d, ctx, calls) = committed_service_journal(false);
        let e = run_state(&ctx, "Cleanup", Path::new("/nonexistent"), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("systemd-run: not found"), "{e}");
        assert_eq!(calls.borrow().len(), 1);
        let j = ctx.store().unwrap().load().unwrap().unwrap();
        assert!(j.finished && !j.restart_scheduled);
    }
}
