//! Restarting the Mender client after a `restart: service` migration, through an injectable command runner.
//!
//! The client reads mender.conf only at start, so the new config needs a restart. With
//! `restart: service` the module answers `NeedsArtifactReboot: No` and, from `Cleanup` after a
//! successful commit, asks systemd to restart the client **30 s later** in a transient unit:
//!
//! `systemd-run --on-active=30 --unit=server-migration-restart systemctl restart mender-client`
//!
//! Trade-off: restarting from inside a state would kill the client mid-deployment (the 3.4
//! daemon exits at once on SIGTERM and resumes the deployment as a failure/rollback), so the
//! restart is deferred until the client has left the module. The delay is a guess: Cleanup is
//! followed by the final `success` status report, which normally takes well under a second; if
//! that report is still being retried 30 s later (server down), the restarted 3.4 client resumes
//! in its status-report state and reports `failure` although the files are committed. A reboot
//! (`restart: reboot`, NeedsArtifactReboot `Automatic`) has no such window and is the default.
//! If `systemd-run` fails (no systemd), Cleanup exits 1 with the message; the config then takes
//! effect at the next reboot or manual restart.
//!
//! The 4.x/5.x client runs as `mender-authd` + `mender-updated` (both read mender.conf at start;
//! only `mender-authd` reads `Servers`): on a device where [`DeviceClient::detect`] finds it, both
//! are restarted; on 3.x, `mender-client`.

use crate::client::DeviceClient;
use crate::device::DeviceRoot;
use std::io;
use std::process::Command;

/// Transient unit name, so a second schedule fails instead of stacking restarts.
pub const RESTART_UNIT: &str = "server-migration-restart";
/// Seconds between Cleanup and the restart.
pub const RESTART_DELAY_SECS: u32 = 30;

/// Runs an external command; tests substitute a recorder.
pub trait CommandRunner {
    /// Returns Ok(()) on exit status 0, an error with the command's stderr otherwise.
    fn run(&self, program: &str, args: &[String]) -> io::Result<()>;
}

/// Runs commands for real (found via PATH).
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&self, program: &str, args: &[String]) -> io::Result<()> {
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program}: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "{program} {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }
}

/// The `systemd-run` call that restarts `client`'s units later.
pub fn restart_command(client: &DeviceClient) -> (String, Vec<String>) {
    let mut args = vec![
        format!("--on-active={RESTART_DELAY_SECS}"),
        format!("--unit={RESTART_UNIT}"),
        "systemctl".to_string(),
        "restart".to_string(),
    ];
    args.extend(client.units().iter().map(|u| u.to_string()));
    ("systemd-run".to_string(), args)
}

/// Schedules the deferred restart of the client found on the device.
pub fn schedule_restart(root: &DeviceRoot, runner: &dyn CommandRunner) -> io::Result<()> {
    let (program, args) = restart_command(&DeviceClient::detect(root));
    runner.run(&program, &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_the_units_of_the_client() {
        for (cpp, units) in [
            (false, "mender-client"),
            (true, "mender-authd mender-updated"),
        ] {
            let (program, args) = restart_command(&DeviceClient {
                cpp,
                evidence: String::new(),
            });
            assert_eq!(
                format!("{program} {}", args.join(" ")),
                format!("systemd-run --on-active=30 --unit=server-migration-restart systemctl restart {units}")
            );
        }
    }
}
