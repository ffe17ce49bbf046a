//! What a benchmark's child process used, measured by the kernel: `wait4` gives the child's
//! own CPU time and peak RSS, `getrusage(RUSAGE_CHILDREN)` the CPU of everything reaped so far
//! (grandchildren included). One place for the unsafe calls every benchmark needs.

use std::process::Command;
use std::time::{Duration, Instant};

/// The resources one finished child used itself (not its children).
#[derive(Clone, Copy, Debug)]
pub struct ChildUsage {
    pub wall: Duration,
    pub user: Duration,
    pub sys: Duration,
    /// Peak resident set size in KiB (`ru_maxrss`).
    pub max_rss_kib: i64,
}

fn duration(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// Spawns `cmd`, waits for it with `wait4` and returns its own usage; panics unless it exits 0.
pub fn run_measured(cmd: &mut Command) -> ChildUsage {
    let start = Instant::now();
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our child; status and ru are valid out-pointers.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    assert_eq!(r, pid, "wait4 failed");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed (status {status})"
    );
    std::mem::forget(child); // already reaped
    ChildUsage {
        wall,
        user: duration(ru.ru_utime),
        sys: duration(ru.ru_stime),
        max_rss_kib: ru.ru_maxrss,
    }
}

/// User + system CPU of every child this process has reaped so far, grandchildren included
/// (the difference around a run counts the tools a child ran, e.g. debugfs under the Go tool).
pub fn children_cpu() -> Duration {
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    duration(ru.ru_utime) + duration(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_child_that_burns_cpu() {
        let before = children_cpu();
        let usage = run_measured(
            Command::new("sh").args(["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"]),
        );
        assert!(usage.max_rss_kib > 0, "{usage:?}");
        assert!(usage.wall > Duration::ZERO, "{usage:?}");
        assert!(children_cpu() >= before + usage.user + usage.sys - Duration::from_millis(1));
    }

    #[test]
    #[should_panic(expected = "failed")]
    fn a_failing_child_panics() {
        run_measured(&mut Command::new("false"));
    }
}
