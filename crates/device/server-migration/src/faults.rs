//! Fault injection for crash tests: numbers every durable write step and can abort the process at one of them.
//!
//! Every operation that changes persistent state (writing a temp file, fsync, rename, directory
//! fsync, removal, journal update) calls [`Faults::step`] *before* doing its work. With
//! `SERVER_MIGRATION_CRASH_AT=N` the process aborts (SIGABRT, no cleanup, no destructors) when
//! step N is reached, i.e. steps `1..N` happened and step N did not. A test loops N upward until a
//! run completes, which covers a "power loss" at every instant between two durable operations.
//! `SERVER_MIGRATION_TRACE_STEPS=1` prints each step to stderr.

use std::cell::Cell;

/// Env var naming the step at which to abort.
pub const CRASH_AT_ENV: &str = "SERVER_MIGRATION_CRASH_AT";
/// Env var that makes every step print itself to stderr.
pub const TRACE_ENV: &str = "SERVER_MIGRATION_TRACE_STEPS";

/// Step counter plus the optional crash point.
#[derive(Debug, Default)]
pub struct Faults {
    crash_at: Option<u64>,
    trace: bool,
    steps: Cell<u64>,
}

impl Faults {
    /// No crash point, no tracing: what production runs with unless the env vars are set.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// Abort at step `n` (1-based).
    pub fn crash_at(n: u64) -> Faults {
        Faults {
            crash_at: Some(n),
            ..Faults::default()
        }
    }

    /// Reads [`CRASH_AT_ENV`] and [`TRACE_ENV`]; an unparsable crash point is ignored with a warning.
    pub fn from_env() -> Faults {
        let crash_at = match std::env::var(CRASH_AT_ENV) {
            Ok(v) => match v.trim().parse::<u64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    eprintln!("server-migration: ignoring {CRASH_AT_ENV}={v:?}: not a number");
                    None
                }
            },
            Err(_) => None,
        };
        let trace = std::env::var_os(TRACE_ENV).is_some_and(|v| !v.is_empty() && v != "0");
        Faults {
            crash_at,
            trace,
            steps: Cell::new(0),
        }
    }

    /// Marks the start of one durable step; aborts the process if it is the chosen crash point.
    pub fn step(&self, what: &str) {
        let n = self.steps.get() + 1;
        self.steps.set(n);
        if self.trace {
            eprintln!("server-migration: step {n}: {what}");
        }
        if self.crash_at == Some(n) {
            eprintln!("server-migration: injected crash at step {n} ({what})");
            std::process::abort();
        }
    }

    /// How many steps were started so far.
    pub fn steps_taken(&self) -> u64 {
        self.steps.get()
    }
}
