//! Fleet orchestrator: moves every selected device of an old Mender server to a new one with
//! the project's artifacts (module-install, stage 1 `[old, new]`, stage 2 new-only), in
//! canary + doubling batches with gates, through both servers' Management APIs.
//!
//! Safety rules (reference `mender-management-api.md` §9.2): the fleet is snapshotted before
//! any change; a device is preauthorized on new only after its stage 1 succeeded; capacity on
//! new is checked right before each batch's rejections; old only rejects (never
//! decommissions); a device counts as moved once its own auth request made its preauthorized
//! set `accepted`; a device that does not appear within `--appear-timeout` is rolled back
//! (accepted on old again, preauthorization deleted, deployments on new aborted); stage 2 comes
//! only from new, and old never accepts a device again after its stage 2.
//!
//! Everything is journaled ([`journal`]): intent before each side effect, result after it;
//! [`run::Orchestrator::run`] on an existing journal reconciles open intents and resumes.
//!
//! Modules: [`http`] (rate-limited, retrying client), [`api`] (typed Management API calls),
//! [`preflight`] (checks and the batch plan), [`run`] (the state machine), [`report`],
//! [`progress`], [`artifacts`], [`secret`], [`duration`].

pub mod api;
pub mod artifacts;
pub mod duration;
pub mod http;
pub mod journal;
pub mod preflight;
pub mod progress;
pub mod report;
pub mod run;
pub mod secret;

use std::path::PathBuf;
use std::time::Duration;

pub use api::Api;
pub use http::{ApiError, Client, ClientOptions};
pub use journal::{DevState, OpKind};
pub use preflight::{PreflightReport, TenantRoute};
pub use progress::{Mode, Progress};
pub use report::Report;
pub use run::{Access, KillSwitch, Orchestrator, RunError};
pub use secret::{Secret, TokenSource};

/// Caps glibc's malloc arenas for this process; call it first, before any thread starts.
///
/// The orchestrator runs up to `--concurrency` HTTP threads, and glibc gives busy threads
/// arenas of their own (up to 8 per core), each keeping the memory its thread freed. At 10,000
/// devices that is about 8 MiB of the orchestrator's 50 MiB budget (measured with the
/// `fleet_migration` bench: 49.9 MiB → 41.8 MiB). Two arenas keep lock contention low at the
/// request rates this tool uses. Nothing to do on other C libraries (musl has one heap).
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX takes any positive count.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Which devices of old take part (default: every accepted device).
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only these device types (inventory `device_type`); all when empty.
    pub device_types: Vec<String>,
    /// Only members of these static groups; all when empty.
    pub groups: Vec<String>,
    /// Only these device ids (old's ids).
    pub devices: Option<Vec<String>>,
}

impl Selection {
    /// Reads a `--devices FILE`: one id per line, `#` comments and blank lines ignored.
    pub fn read_devices_file(path: &std::path::Path) -> Result<Vec<String>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read the device list: {e}", path.display()))?;
        let ids: Vec<String> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if ids.is_empty() {
            return Err(format!("{}: the device list holds no ids", path.display()));
        }
        if let Some(bad) = ids.iter().find(|id| id.contains(char::is_whitespace)) {
            return Err(format!(
                "{}: {bad:?} is not a device id (one id per line)",
                path.display()
            ));
        }
        Ok(ids)
    }
}

/// Batch sizes and gates.
#[derive(Clone, Debug)]
pub struct Plan {
    /// First batch size.
    pub canary: usize,
    /// Batches double up to this size.
    pub max_batch: usize,
    /// Largest tolerated share of failed devices among the finished ones (0.0..=1.0).
    pub failure_threshold: f64,
    /// The failure share is judged only once this many devices of a batch finished.
    pub min_sample: usize,
    /// How long a batch's stage deployment may take before unfinished devices are stragglers.
    pub stage_timeout: Duration,
    /// How long a rejected device may take to authenticate on new before it is rolled back.
    pub appear_timeout: Duration,
    /// How often deployment statistics and devauth are polled.
    pub poll_interval: Duration,
    /// Parallel per-device calls (preauthorize, reject, rollback).
    pub concurrency: usize,
    /// Largest number of active deployments a server may have (hosted: 800).
    pub deployment_cap: u64,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            canary: 5,
            max_batch: 500,
            failure_threshold: 0.1,
            min_sample: 5,
            stage_timeout: Duration::from_secs(2 * 3600),
            appear_timeout: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(30),
            concurrency: 8,
            deployment_cap: 800,
        }
    }
}

impl Plan {
    /// Batch sizes for `n` devices: canary, then doubling up to `max_batch`.
    pub fn batch_sizes(&self, n: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut left = n;
        let mut k = 0u32;
        while left > 0 {
            let size = self.batch_size(k).min(left);
            out.push(size);
            left -= size;
            k += 1;
        }
        out
    }

    /// Size of the batch with 0-based index `k`.
    pub fn batch_size(&self, k: u32) -> usize {
        let canary = self.canary.max(1);
        canary
            .saturating_mul(1usize << k.min(40))
            .min(self.max_batch.max(canary))
    }

    /// Errors for option values that make no sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.canary == 0 {
            return Err("--canary must be at least 1".into());
        }
        if self.max_batch < self.canary {
            return Err("--max-batch must be at least --canary".into());
        }
        if !(0.0..=1.0).contains(&self.failure_threshold) {
            return Err("--failure-threshold must be a share between 0 and 1 (e.g. 0.05) or a percentage like 5%".into());
        }
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if self.max_batch > 20_000 {
            return Err("--max-batch above 20000 would exceed the server's 1 MiB request limit for a device list".into());
        }
        Ok(())
    }
}

/// Everything a fleet command needs besides the servers.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    pub artifacts_dir: PathBuf,
    pub selection: Selection,
    pub tenant: TenantRoute,
    pub plan: Plan,
    /// Continue after a paused gate (the operator looked at it).
    pub resume_paused: bool,
    /// Put stragglers and rolled-back devices into new batches again.
    pub retry_stragglers: bool,
    /// Put devices whose stage 1 or stage 2 failed into new batches again.
    pub retry_failed: bool,
}

/// Parses `5%` or `0.05` into a share.
pub fn parse_share(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let v = if let Some(p) = t.strip_suffix('%') {
        p.trim().parse::<f64>().map(|v| v / 100.0)
    } else {
        t.parse::<f64>()
    }
    .map_err(|_| format!("invalid share {text:?}: write 5% or 0.05"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("share {text:?} must be between 0% and 100%"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_double_up_to_the_cap() {
        let plan = Plan {
            canary: 5,
            max_batch: 40,
            ..Plan::default()
        };
        assert_eq!(plan.batch_sizes(100), vec![5, 10, 20, 40, 25]);
        assert_eq!(plan.batch_sizes(3), vec![3]);
        assert!(plan.batch_sizes(0).is_empty());
    }

    #[test]
    fn shares() {
        assert_eq!(parse_share("5%").unwrap(), 0.05);
        assert_eq!(parse_share("0.2").unwrap(), 0.2);
        assert!(parse_share("120%").is_err());
        assert!(parse_share("x").is_err());
    }

    #[test]
    fn device_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ids");
        std::fs::write(&p, "# fleet\nabc\n\n def # canary\n").unwrap();
        assert_eq!(
            Selection::read_devices_file(&p).unwrap(),
            vec!["abc", "def"]
        );
        std::fs::write(&p, "#\n").unwrap();
        assert!(Selection::read_devices_file(&p).is_err());
    }
}
