//! `test`: the README's "run all tests" command: host tools, fast suites, clippy and the other
//! linters, then QEMU.

use anyhow::{bail, Context, Result};
use std::process::Command;
use std::time::Instant;

/// Tools some test needs; a missing one is a failure, never a silent skip.
const REQUIRED_TOOLS: &[&str] = &[
    "mender-artifact",
    "oelint-adv",
    "qemu-system-x86_64",
    "mmdebstrap",
    "mkfs.ext4",
    "debugfs",
    // tests/foreign-arch and `artifacts --target armv7-unknown-linux-gnueabihf`
    "qemu-aarch64-static",
    "qemu-arm-static",
    "arch-test",
    "arm-linux-gnueabihf-gcc",
];

/// The device workspace's `rust-version` (scarthgap's Rust); CI builds and tests with it.
pub const DEVICE_MSRV: &str = "1.75.0";

fn missing_tools() -> Vec<&'static str> {
    REQUIRED_TOOLS
        .iter()
        .copied()
        .filter(|tool| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
        .collect()
}

fn step(name: &str, cmd: &mut Command) -> Result<()> {
    let started = Instant::now();
    eprintln!("==> {name}");
    let status = cmd.status().with_context(|| format!("starting: {name}"))?;
    eprintln!(
        "==> {name}: {} in {:.1} s",
        if status.success() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("{name} failed");
    }
    Ok(())
}

/// The README's "run the main job" command, so this task proves it still works.
fn readme_main_command(root: &std::path::Path) -> Result<String> {
    let readme = std::fs::read_to_string(root.join("README.md")).context("reading README.md")?;
    readme
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("cargo xtask artifacts "))
        .map(str::to_string)
        .context("README.md has no `cargo xtask artifacts ...` main command")
}

/// Run all tests: the README's main command, cargo fmt, cargo test (host and device
/// workspaces, the device one also with its MSRV), clippy with `-D warnings` (both workspaces),
/// oelint, then the QEMU scenarios.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Skip the QEMU end-to-end scenarios.
    #[arg(long)]
    no_qemu: bool,
}

/// Clippy's flags for both workspaces: every target, the lock as committed, warnings denied.
const CLIPPY_ARGS: &[&str] = &[
    "--workspace",
    "--all-targets",
    "--locked",
    "--",
    "-D",
    "warnings",
];

pub fn run(args: &Args) -> Result<()> {
    let qemu = !args.no_qemu;
    let root = crate::project_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Every step runs in the project root.
    let at_root = |program: &str| {
        let mut command = Command::new(program);
        command.current_dir(&root);
        command
    };
    let missing = missing_tools();
    if !missing.is_empty() {
        if !test_support::is_root() {
            bail!("missing host tools {missing:?}: run `sudo bash .ci/install-deps` first");
        }
        step(
            &format!("install missing host tools {missing:?}"),
            Command::new("bash").arg(root.join(".ci/install-deps")),
        )?;
    }
    let main_job = readme_main_command(&root)?;
    step(
        &format!("README main command: {main_job}"),
        at_root("sh").args(["-c", &main_job]),
    )?;
    step(
        "cargo fmt --check",
        at_root(&cargo).args(["fmt", "--all", "--", "--check"]),
    )?;
    // CI=true turns every "tool missing" into a failure inside the test suites too.
    step(
        "cargo test --workspace",
        at_root(&cargo)
            .env("CI", "true")
            .args(["test", "--workspace", "--no-fail-fast"])
            .args(["--exclude", "foreign-arch"]),
    )?;
    // The module on the devices' CPUs: Debian's arm64/armhf mender-client in qemu-user chroots.
    step(
        "foreign-architecture chroots (cargo test -p foreign-arch)",
        at_root(&cargo)
            .env("CI", "true")
            .args(["test", "-p", "foreign-arch"]),
    )?;
    // The device workspace is its own workspace: its tests, and its build with the Rust of the
    // oldest Yocto release we claim (scarthgap: 1.75, installed by .ci/install-deps).
    let device_manifest = root.join("crates/device/Cargo.toml");
    step(
        "cargo test (device workspace)",
        at_root(&cargo)
            .env("CI", "true")
            .arg("test")
            .arg("--manifest-path")
            .arg(&device_manifest)
            .args(["--workspace", "--locked", "--no-fail-fast"]),
    )?;
    step(
        &format!("cargo +{DEVICE_MSRV} test (device workspace, MSRV)"),
        at_root("rustup")
            .env("CI", "true")
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .args(["run", DEVICE_MSRV, "cargo", "test", "--manifest-path"])
            .arg(&device_manifest)
            .args(["--workspace", "--locked", "--no-fail-fast"])
            .arg("--target-dir")
            .arg(root.join("target/msrv")),
    )?;
    // Lints after the tests, so a lint finding never hides a test failure.
    step(
        "cargo clippy --workspace --all-targets -- -D warnings",
        at_root(&cargo).arg("clippy").args(CLIPPY_ARGS),
    )?;
    step(
        "cargo clippy (device workspace) -- -D warnings",
        at_root(&cargo)
            .arg("clippy")
            .arg("--manifest-path")
            .arg(&device_manifest)
            .args(CLIPPY_ARGS),
    )?;
    // A representative fuzz run (30 s per target); long runs are `cargo xtask fuzz --runs N`.
    step(
        "fuzz: every target for 30 s (cargo xtask fuzz)",
        at_root(&cargo).args(["xtask", "fuzz", "--seconds", "30"]),
    )?;
    step(
        "oelint-adv on meta-migration/ and recipes/",
        at_root("bash").arg("meta-migration/scripts/oelint.sh"),
    )?;
    if qemu {
        step(
            "QEMU end-to-end (cargo xtask qemu-test)",
            at_root(&cargo).args(["xtask", "qemu-test"]),
        )?;
    }
    Ok(())
}
