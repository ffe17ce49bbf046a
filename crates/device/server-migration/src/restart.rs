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
//! The 4.x/5.x client runs as `mender-authd` + `mender-updated` (both read mender.conf); when
//! there is no `mender-client.service` but a `mender-updated.service`, both of those are restarted.

use crate::device::DeviceRoot;
use std::io;
use std::path::Path;
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

const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

fn unit_exists(root: &DeviceRoot, unit: &str) -> bool {
    UNIT_DIRS
        .iter()
        .any(|d| root.host_path(&Path::new(d).join(unit)).exists())
}

/// The client's units on this device: `mender-client` (3.x), else `mender-authd mender-updated` (4.x/5.x).
pub fn client_units(root: &DeviceRoot) -> Vec<&'static str> {
    if !unit_exists(root, "mender-client.service") && unit_exists(root, "mender-updated.service") {
        vec!["mender-authd", "mender-updated"]
    } else {
        vec!["mender-client"]
    }
}

/// The `systemd-run` call that restarts the client later.
pub fn restart_command(root: &DeviceRoot) -> (String, Vec<String>) {
    let mut args = vec![
        format!("--on-active={RESTART_DELAY_SECS}"),
        format!("--unit={RESTART_UNIT}"),
        "systemctl".to_string(),
        "restart".to_string(),
    ];
    args.extend(client_units(root).into_iter().map(String::from));
    ("systemd-run".to_string(), args)
}

/// Schedules the deferred restart.
pub fn schedule_restart(root: &DeviceRoot, runner: &dyn CommandRunner) -> io::Result<()> {
    let (program, args) = restart_command(root);
    runner.run(&program, &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_units_by_installed_client() {
        let d = tempfile::tempdir().unwrap();
        let root = DeviceRoot::new(d.path());
        assert_eq!(client_units(&root), vec!["mender-client"]);
        std::fs::create_dir_all(d.path().join("usr/lib/systemd/system")).unwrap();
        std::fs::write(
            d.path()
                .join("usr/lib/systemd/system/mender-updated.service"),
            "",
        )
        .unwrap();
        assert_eq!(client_units(&root), vec!["mender-authd", "mender-updated"]);
        let (p, args) = restart_command(&root);
        assert_eq!(p, "systemd-run");
        assert_eq!(
            args.join(" "),
            "--on-active=30 --unit=server-migration-restart systemctl restart mender-authd mender-updated"
        );
    }
}
