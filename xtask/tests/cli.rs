//! The `cargo xtask` command line: help succeeds, usage errors exit 2, every task is listed.

use std::process::{Command, Output};

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("running xtask")
}

#[test]
fn help_exits_0_and_lists_every_task() {
    let out = xtask(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for task in [
        "artifacts",
        "plan",
        "recipes",
        "yocto-layer",
        "debian-overlay",
        "qemu-image",
        "qemu-test",
        "fuzz",
        "test",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(task)),
            "{task} missing from:\n{help}"
        );
    }
    for task in ["recipes", "yocto-layer", "debian-overlay", "test", "plan"] {
        let out = xtask(&[task, "--help"]);
        assert_eq!(out.status.code(), Some(0), "{task} --help");
        assert!(!out.stdout.is_empty(), "{task} --help printed nothing");
    }
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["no-such-task"][..],
        &["recipes", "--no-such-flag"][..],
        &["recipes", "--check", "--srcrev", "HEAD"][..],
        &["test", "--no-such-flag"][..],
        &["yocto-layer"][..],
        &["plan", "--no-such-flag"][..],
    ] {
        let out = xtask(args);
        assert_eq!(out.status.code(), Some(2), "xtask {args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Usage:"),
            "xtask {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
