//! How fast emulation runs on this host right now, and the wait budgets derived from it.
//!
//! Under TCG the same boot takes 13 s on a quiet 2-core host and 40-60 s when other builds and
//! guests share the cores, so fixed timeouts are either too tight under load or far too slow to
//! notice a hang when quiet. The harness therefore measures: every boot's time from QEMU start to
//! the guest's first request at a server is compared with the quiet figure, and the slowest ratio
//! seen so far is the speed factor. Every wait is `quiet figure × speed factor × margin`.

use std::sync::Mutex;
use std::time::Duration;

/// QEMU start to the client's first request on a quiet 2-core host (measured 12-17 s).
pub const QUIET_BOOT_SECS: f64 = 15.0;
/// Kernel start to `mender-client.service` started, quiet (measured 10-13 s): the boot watchdog.
pub const QUIET_KERNEL_TO_CLIENT_SECS: u64 = 15;
/// The longest silence of a booting guest's console on a quiet host (module loading, fsck).
pub const QUIET_CONSOLE_SILENCE_SECS: u64 = 10;
/// The factor assumed before the first boot was measured: a loaded host, so the first boot is
/// not declared hung while it is merely slow.
const UNMEASURED_FACTOR: f64 = 2.5;
/// A boot slower than this many quiet boots is a hang, not load; the factor stops growing here.
const MAX_FACTOR: f64 = 8.0;
/// Default margin over the scaled quiet figure (`QEMU_E2E_TIMEOUT_SCALE` overrides it).
const DEFAULT_MARGIN: f64 = 3.0;

/// The slowest observed boot divided by the quiet boot (`None` until the first boot).
static MEASURED: Mutex<Option<f64>> = Mutex::new(None);

/// Records one boot (QEMU start or kernel start to the first request at a server) and returns
/// the speed factor from now on. The factor only grows: a host that was slow once may be again.
pub fn observe_boot(took: Duration) -> f64 {
    let ratio = (took.as_secs_f64() / QUIET_BOOT_SECS).clamp(1.0, MAX_FACTOR);
    let mut measured = MEASURED.lock().unwrap_or_else(|e| e.into_inner());
    let factor = measured.map_or(ratio, |m| m.max(ratio));
    *measured = Some(factor);
    factor
}

/// The current speed factor (≥ 1): how many times slower than quiet the guest boots.
pub fn factor() -> f64 {
    MEASURED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(UNMEASURED_FACTOR)
}

/// Whether a boot has been measured yet.
pub fn measured() -> bool {
    MEASURED.lock().unwrap_or_else(|e| e.into_inner()).is_some()
}

/// The margin over the scaled quiet figure: `QEMU_E2E_TIMEOUT_SCALE`, default 3.
pub fn margin() -> f64 {
    std::env::var("QEMU_E2E_TIMEOUT_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .unwrap_or(DEFAULT_MARGIN)
}

/// The wait budget for a step that takes `quiet_secs` on a quiet host.
pub fn budget(quiet_secs: u64) -> Duration {
    scaled(quiet_secs, factor(), margin())
}

fn scaled(quiet_secs: u64, factor: f64, margin: f64) -> Duration {
    Duration::from_secs_f64(quiet_secs as f64 * factor * margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_scale_with_factor_and_margin() {
        assert_eq!(scaled(10, 1.0, 3.0), Duration::from_secs(30));
        assert_eq!(scaled(10, 2.5, 3.0), Duration::from_secs(75));
        assert_eq!(scaled(60, 4.0, 1.0), Duration::from_secs(240));
    }

    #[test]
    fn factor_is_the_slowest_boot_and_bounded() {
        // One test touches the global: the order of these observations is the point.
        assert!(!measured());
        assert_eq!(factor(), UNMEASURED_FACTOR);
        assert_eq!(
            observe_boot(Duration::from_secs(10)),
            1.0,
            "faster than quiet is 1"
        );
        assert_eq!(observe_boot(Duration::from_secs(45)), 3.0);
        assert_eq!(observe_boot(Duration::from_secs(30)), 3.0, "never shrinks");
        assert_eq!(observe_boot(Duration::from_secs(600)), MAX_FACTOR);
        assert!(measured());
    }
}
