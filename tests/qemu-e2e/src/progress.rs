//! Step lines with wall-clock timings on stderr: the harness is driven by people and CI logs, and
//! a 30-300 s emulated step without a line saying what it waits for looks like a hang.

use std::time::{Duration, Instant};

/// Prints `[tag] what ...` before and `[tag] what: 12.3 s` after a step.
pub fn step<T>(tag: &str, what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    eprintln!("[{tag}] {what} ...");
    let started = Instant::now();
    let result = f();
    let took = secs(started.elapsed());
    match &result {
        Ok(_) => eprintln!("[{tag}] {what}: {took}"),
        Err(_) => eprintln!("[{tag}] {what}: FAILED after {took}"),
    }
    result
}

/// A single progress line.
pub fn note(tag: &str, message: &str) {
    eprintln!("[{tag}] {message}");
}

/// `12.3 s`.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
