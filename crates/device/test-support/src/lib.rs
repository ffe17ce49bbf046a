//! Test helpers shared by every suite (device and host workspaces; it lives in the device one,
//! which depends on no host crate): one definition of "running in CI", one way to handle a test
//! whose tool or privilege is missing, and one assertion that a child process succeeded. Locally
//! a test missing its tool is skipped with a notice written straight to the terminal's stderr
//! (the test harness captures `eprintln!` of passing tests, which would hide the skip); in CI it
//! fails, naming what to install. No dependencies, Rust 1.75.

use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;
use std::process::Output;

/// Whether the suite runs in CI: `CI` is set to anything but empty, `0` or `false` (CI services
/// set `CI=true`; `cargo xtask test` sets it too).
pub fn in_ci() -> bool {
    ci_value(std::env::var_os("CI").as_deref())
}

fn ci_value(value: Option<&OsStr>) -> bool {
    match value.and_then(OsStr::to_str) {
        None => value.is_some(),
        Some(v) => {
            let v = v.trim();
            !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
        }
    }
}

/// Looks `tool` up on `PATH` (and the sbin directories a non-root `PATH` may lack). Missing: in
/// CI the calling test panics naming `install`; locally it prints a visible skip notice for
/// `test` and returns `None`, and the test returns early.
pub fn require_tool(test: &str, tool: &str, install: &str) -> Option<PathBuf> {
    match which(tool) {
        Some(path) => Some(path),
        None => {
            skip(test, &format!("`{tool}` is not installed ({install})"));
            None
        }
    }
}

/// Skips `test` for `reason`: panics in CI, else prints a notice that test output capture does
/// not swallow. The caller returns right after.
pub fn skip(test: &str, reason: &str) {
    if in_ci() {
        panic!("{test}: {reason}, and CI is set: a CI run must not skip this test");
    }
    // Straight to the stderr handle, not `eprintln!`: libtest captures the print macros only.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {reason} (fails when CI is set)"
    );
}

/// Panics unless the process `what` ran as exited 0, with its exit status and stderr in the
/// message (a bare `assert!(out.status.success())` would hide why it failed).
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `tool`'s path on `PATH` plus `/usr/sbin` and `/sbin`.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_definition_of_ci() {
        assert!(ci_value(Some(OsStr::new("true"))));
        assert!(ci_value(Some(OsStr::new("1"))));
        assert!(ci_value(Some(OsStr::new("yes"))));
        assert!(!ci_value(None));
        assert!(!ci_value(Some(OsStr::new(""))));
        assert!(!ci_value(Some(OsStr::new("0"))));
        assert!(!ci_value(Some(OsStr::new("False"))));
    }

    #[test]
    fn which_finds_sh_and_not_nonsense() {
        assert!(which("sh").is_some());
        assert!(which("no-such-tool-test-support").is_none());
    }
}
