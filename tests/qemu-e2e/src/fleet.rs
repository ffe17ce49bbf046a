//! The orchestrator driving the migration scenarios: the real `mender-migrate fleet run`
//! against the scenario's two mock servers, as a release engineer runs it (Personal Access
//! Tokens in 0600 files, both servers' CAs with `--ca-file` over HTTPS, timeouts scaled by the
//! measured speed factor), waited for while the boot watchdog keeps watching the guest's own
//! reboots; then its final report and `fleet status --refresh --json`, which must both say the
//! device moved. The harness does none of the server-side steps itself.

use crate::harness::{Run, Which};
use crate::speed::budget;
use crate::vm::tail_file;
use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One stage on a quiet host: module-install + stage 1, or stage 2, each with its reboot
/// (the hand-driven harness gave a single deployment 150 s).
const QUIET_STAGE_SECS: u64 = 300;
/// Rejected on old until the device's own auth on new (a service restart adds the module's
/// 30 s delay before the client re-reads its config).
const QUIET_APPEAR_SECS: u64 = 120;
/// How often the orchestrator polls deployments and devauth (the clients poll every 5 s).
const POLL_INTERVAL: &str = "2s";

/// The run's journal, credentials and CA bundle, all files (never arguments).
struct FleetFiles {
    journal: PathBuf,
    old_token: PathBuf,
    new_token: PathBuf,
    ca: Option<PathBuf>,
}

impl Run<'_> {
    /// Issues a PAT on each server and, over HTTPS, writes one bundle of both servers' CAs.
    fn fleet_files(&self) -> Result<FleetFiles> {
        let files = FleetFiles {
            journal: self.dir.join("fleet.journal"),
            old_token: self.dir.join("old.pat"),
            new_token: self.dir.join("new.pat"),
            ca: self
                .server(Which::Old)?
                .ca_file
                .as_ref()
                .map(|_| self.dir.join("fleet-ca.pem")),
        };
        self.server(Which::Old)?
            .issue_pat("qemu-e2e-fleet", &files.old_token)?;
        self.server(Which::New)?
            .issue_pat("qemu-e2e-fleet", &files.new_token)?;
        if let Some(ca) = &files.ca {
            std::fs::write(ca, self.ca_bundle()?)?;
        }
        Ok(files)
    }

    /// `mender-migrate fleet SUB --journal … --old-token-file … --new-token-file … [--ca-file …]`.
    fn fleet_command(&mut self, sub: &str, files: &FleetFiles) -> Result<Command> {
        let mut cmd = Command::new(self.env.migrate_binary()?);
        cmd.args(["fleet", sub, "--journal"])
            .arg(&files.journal)
            .arg("--old-token-file")
            .arg(&files.old_token)
            .arg("--new-token-file")
            .arg(&files.new_token)
            .env_remove("MENDER_MIGRATE_OLD_TOKEN")
            .env_remove("MENDER_MIGRATE_NEW_TOKEN")
            .stdin(Stdio::null());
        if let Some(ca) = &files.ca {
            cmd.arg("--ca-file").arg(ca);
        }
        Ok(cmd)
    }

    /// Runs `mender-migrate fleet run` over the device (accepted on old) with the artifacts
    /// in `artifacts`, waits for it to exit 0, and checks that its final report and
    /// `fleet status --refresh` have the device on new with stage 2 done.
    pub(crate) fn run_fleet(&mut self, artifacts: &Path) -> Result<()> {
        let files = self.fleet_files()?;
        let stage_timeout = budget(QUIET_STAGE_SECS);
        let appear_timeout = budget(QUIET_APPEAR_SECS);
        let events_file = self.dir.join("fleet-run.jsonl");
        let log_file = self.dir.join("fleet-run.log");
        let mut cmd = self.fleet_command("run", &files)?;
        cmd.arg("--old-server")
            .arg(&self.server(Which::Old)?.local_url)
            .arg("--new-server")
            .arg(&self.server(Which::New)?.local_url)
            .arg("--artifacts")
            .arg(artifacts)
            // One device: the canary is the whole fleet, and its failure pauses the run.
            .args(["--canary", "1", "--max-batch", "1", "--min-sample", "1"])
            .args([
                "--failure-threshold",
                "0%",
                "--poll-interval",
                POLL_INTERVAL,
            ])
            .arg("--stage-timeout")
            .arg(format!("{}s", stage_timeout.as_secs()))
            .arg("--appear-timeout")
            .arg(format!("{}s", appear_timeout.as_secs()))
            .arg("--json")
            .stdout(std::fs::File::create(&events_file)?)
            .stderr(std::fs::File::create(&log_file)?);
        self.log(&format!(
            "mender-migrate fleet run (stage timeout {} s, appear timeout {} s); events in {}",
            stage_timeout.as_secs(),
            appear_timeout.as_secs(),
            events_file.display()
        ));
        let mut child = cmd.spawn().context("cannot start mender-migrate")?;
        let limit = stage_timeout * 2 + appear_timeout + budget(60);
        let exited = self.wait_for("mender-migrate fleet run to exit", limit, |_| {
            Ok(child.try_wait()?)
        });
        let status = match exited {
            Ok(status) => status,
            Err(err) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err.context(format!(
                    "fleet run's last lines:\n{}",
                    tail_file(&log_file, 20)
                )));
            }
        };
        let tail = || {
            format!(
                "fleet run's log:\n{}\nevents:\n{}",
                tail_file(&log_file, 20),
                tail_file(&events_file, 10)
            )
        };
        ensure!(
            status.success(),
            "mender-migrate fleet run exited {status}; {}",
            tail()
        );
        let report = std::fs::read_to_string(&events_file)?
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["event"] == "report")
            .with_context(|| format!("fleet run printed no final report; {}", tail()))?;
        expect_moved(&report, "fleet run's final report")?;
        self.log(&format!("fleet run: {}", summary(&report)));

        let mut cmd = self.fleet_command("status", &files)?;
        let output = cmd
            .args(["--json", "--refresh"])
            .output()
            .context("cannot run mender-migrate fleet status")?;
        ensure!(
            output.status.success(),
            "mender-migrate fleet status --refresh exited {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let status: Value = serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "fleet status --json printed no JSON: {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })?;
        expect_moved(&status, "fleet status --refresh")?;
        let refresh = &status["refresh"];
        for list in ["stranded", "mismatches"] {
            ensure!(
                refresh[list].as_array().is_some_and(Vec::is_empty),
                "fleet status --refresh lists {list}: {refresh}"
            );
        }
        self.log(&format!(
            "fleet status --refresh: {}; no device stranded, journal matches both servers",
            summary(&status)
        ));

        Ok(())
    }
}

/// The one device of the run is on new with stage 2 done, and nothing is left over.
fn expect_moved(report: &Value, what: &str) -> Result<()> {
    let done = report["counts"]["done"].as_u64();
    let counted: u64 = report["counts"]
        .as_object()
        .map(|m| m.values().filter_map(Value::as_u64).sum())
        .unwrap_or(0);
    ensure!(
        report["total"] == 1 && report["migrated"] == 1 && done == Some(1) && counted == 1,
        "{what}: expected the one device migrated with stage 2 done: {report}"
    );
    for list in ["not_on_new", "on_new_unfinished"] {
        ensure!(
            report[list].as_array().is_some_and(Vec::is_empty),
            "{what}: {list} is not empty: {}",
            report[list]
        );
    }
    Ok(())
}

fn summary(report: &Value) -> String {
    format!(
        "{} of {} devices migrated, states {}",
        report["migrated"], report["total"], report["counts"]
    )
}
