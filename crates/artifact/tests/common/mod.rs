//! Shared test helpers: locating `mender-artifact`/`openssl`, key generation, running the tool.
#![allow(dead_code)]

pub mod craft;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of an external tool, or `None` (after a loud SKIP) when it is missing locally.
/// Under CI (env `CI` set) a missing tool is a test failure.
pub fn tool(name: &str, apt_package: &str) -> Option<PathBuf> {
    test_support::require_tool(
        "this test",
        name,
        &format!("apt-get install -y {apt_package}"),
    )
}

pub fn mender_artifact() -> Option<PathBuf> {
    tool("mender-artifact", "mender-artifact")
}

pub fn openssl() -> Option<PathBuf> {
    tool("openssl", "openssl")
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn out_text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `openssl` with `args`, panicking with its output on failure.
pub fn openssl_run(openssl: &Path, args: &[&str]) {
    let o = run(Command::new(openssl).args(args));
    assert!(
        o.status.success(),
        "openssl {args:?} failed: {}",
        out_text(&o)
    );
}

/// Converts a PKCS#8 key to the traditional form that mender-artifact 3.9 can load.
pub fn traditional(openssl: &Path, key: &Path, out: &Path, rsa: bool) {
    let sub = if rsa { "rsa" } else { "ec" };
    let mut args = vec![
        sub,
        "-in",
        key.to_str().unwrap(),
        "-out",
        out.to_str().unwrap(),
    ];
    if rsa {
        args.push("-traditional");
    }
    openssl_run(openssl, &args);
}

/// `mender-artifact <subcommand> [-k pub] file`.
fn with_key(tool: &Path, subcommand: &str, file: &Path, public: Option<&Path>) -> Output {
    let mut c = Command::new(tool);
    c.arg(subcommand);
    if let Some(p) = public {
        c.arg("-k").arg(p);
    }
    run(c.arg(file))
}

/// `mender-artifact validate [-k pub] file`.
pub fn validate(tool: &Path, file: &Path, public: Option<&Path>) -> Output {
    with_key(tool, "validate", file, public)
}

/// `mender-artifact read [-k pub] file`.
pub fn read(tool: &Path, file: &Path, public: Option<&Path>) -> Output {
    with_key(tool, "read", file, public)
}
