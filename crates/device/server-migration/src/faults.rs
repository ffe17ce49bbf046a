//! Fault injection for the crash and power-loss tests: numbers every durable write step and can
//! stop the process at one of them. Compiled in only with the `fault-injection` cargo feature;
//! the shipped module (built without it) reads no environment variable and stops nowhere.
//!
//! Every operation that changes persistent state (writing a temp file, fsync, rename, directory
//! fsync, removal, journal update) calls [`Faults::step`] *before* doing its work, so stopping
//! at step N means steps `1..N` happened and step N did not. With the feature:
//! - `SERVER_MIGRATION_CRASH_AT=N` aborts the process at step N (SIGABRT: no cleanup, no
//!   destructors). The kernel keeps the page cache, so this is a *process crash*: it shows
//!   ordering bugs, never a missing fsync. The host crash tests loop N upward until a run
//!   completes.
//! - `SERVER_MIGRATION_PAUSE_AT=N` stops at step N and sleeps until killed, after writing a
//!   marker line to stderr and to the file `SERVER_MIGRATION_PAUSE_NOTIFY` names (the QEMU
//!   power-loss tests point it at the serial console, then kill the whole VM: a real power
//!   loss, page cache included).
//! - `SERVER_MIGRATION_TRACE_STEPS=1` prints each step to stderr.

/// Env var naming the step at which to abort (feature `fault-injection` only).
pub const CRASH_AT_ENV: &str = "SERVER_MIGRATION_CRASH_AT";
/// Env var naming the step at which to pause until killed (feature `fault-injection` only).
pub const PAUSE_AT_ENV: &str = "SERVER_MIGRATION_PAUSE_AT";
/// Env var naming a file (e.g. `/dev/ttyS0`) that gets the pause marker line.
pub const PAUSE_NOTIFY_ENV: &str = "SERVER_MIGRATION_PAUSE_NOTIFY";
/// Env var that makes every step print itself to stderr (feature `fault-injection` only).
pub const TRACE_ENV: &str = "SERVER_MIGRATION_TRACE_STEPS";
/// The start of the line a paused module writes: `server-migration: paused at step N (what)`.
pub const PAUSE_MARKER: &str = "server-migration: paused at step";

/// Step counter plus the optional stop point.
#[derive(Debug, Default)]
pub struct Faults {
    #[cfg(feature = "fault-injection")]
    inject: injection::Injection,
}

impl Faults {
    /// No stop point, no tracing: what the shipped module always runs with.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// Abort at step `n` (1-based).
    #[cfg(feature = "fault-injection")]
    pub fn crash_at(n: u64) -> Faults {
        Faults {
            inject: injection::Injection {
                crash_at: Some(n),
                ..Default::default()
            },
        }
    }

    /// With the `fault-injection` feature: reads the env vars above (an unparsable step number
    /// is ignored with a warning). Without it: [`Faults::none`].
    pub fn from_env() -> Faults {
        Faults {
            #[cfg(feature = "fault-injection")]
            inject: injection::Injection::from_env(),
        }
    }

    /// Marks the start of one durable step; with the feature, stops if it is the chosen point.
    #[inline]
    pub fn step(&self, what: &str) {
        #[cfg(feature = "fault-injection")]
        self.inject.step(what);
        #[cfg(not(feature = "fault-injection"))]
        let _ = what;
    }

    /// How many steps were started so far (always 0 without the feature).
    pub fn steps_taken(&self) -> u64 {
        #[cfg(feature = "fault-injection")]
        return self.inject.steps.get();
        #[cfg(not(feature = "fault-injection"))]
        0
    }
}

#[cfg(feature = "fault-injection")]
mod injection {
    use super::*;
    use std::cell::Cell;
    use std::io::Write;

    #[derive(Debug, Default)]
    pub(super) struct Injection {
        pub(super) crash_at: Option<u64>,
        pub(super) pause_at: Option<u64>,
        pub(super) trace: bool,
        pub(super) steps: Cell<u64>,
    }

    fn step_number(var: &str) -> Option<u64> {
        let v = std::env::var(var).ok()?;
        match v.trim().parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                crate::diag::report(&format!("ignoring {var}={v:?}: not a number"));
                None
            }
        }
    }

    impl Injection {
        pub(super) fn from_env() -> Injection {
            Injection {
                crash_at: step_number(CRASH_AT_ENV),
                pause_at: step_number(PAUSE_AT_ENV),
                trace: std::env::var_os(TRACE_ENV).is_some_and(|v| !v.is_empty() && v != "0"),
                steps: Cell::new(0),
            }
        }

        pub(super) fn step(&self, what: &str) {
            let n = self.steps.get() + 1;
            self.steps.set(n);
            if self.trace {
                crate::diag::report(&format!("step {n}: {what}"));
            }
            if self.crash_at == Some(n) {
                crate::diag::report(&format!("injected crash at step {n} ({what})"));
                std::process::abort();
            }
            if self.pause_at == Some(n) {
                let line = format!("{PAUSE_MARKER} {n} ({what})\n");
                crate::diag::plain(&line);
                if let Some(path) = std::env::var_os(PAUSE_NOTIFY_ENV) {
                    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
                        let _ = f.write_all(line.as_bytes());
                    }
                }
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
        }
    }
}
