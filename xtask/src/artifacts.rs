//! `artifacts` and `plan`: build the update module for the devices' architecture (`--target`),
//! then hand the arguments to the `mender-migrate` CLI library (same flags, same output).

use anyhow::{bail, Context, Result};
use mender_migrate::{DeviceTarget, Linker};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// Whether `program` is on PATH.
fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Adds the rustup target if the active toolchain lacks it (the first build on a fresh clone).
fn ensure_rustup_target(triple: &str) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let installed = match installed {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        _ => {
            // No rustup: cargo will say whether the standard library for the target exists.
            eprintln!("note: rustup not found; assuming the Rust standard library for {triple} is installed");
            return Ok(());
        }
    };
    if installed.lines().any(|l| l.trim() == triple) {
        return Ok(());
    }
    eprintln!("==> rustup target add {triple} (once per toolchain)");
    let status = Command::new("rustup")
        .args(["target", "add", triple])
        .status()
        .context("running rustup target add")?;
    if !status.success() {
        bail!("`rustup target add {triple}` failed; run it yourself and retry");
    }
    Ok(())
}

/// Builds the update module for `target` from the device workspace (`crates/device`) with
/// `--profile device` into the host's target directory; returns the binary's path. Always with
/// an explicit `--target`, so `CARGO_BUILD_TARGET` or an old host build can never be packed.
pub fn build_module(target: &DeviceTarget) -> Result<PathBuf> {
    let root = crate::project_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    ensure_rustup_target(target.triple)?;
    let env_triple = target.triple.to_uppercase().replace('-', "_");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "--manifest-path"])
        .arg(root.join("crates/device/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .args([
            "--profile",
            "device",
            "-p",
            "server-migration",
            "--bin",
            "server-migration",
            "--target",
            target.triple,
        ])
        // Flags from the environment would replace the per-target ones below.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    match target.linker {
        Linker::RustLld => {
            cmd.env(format!("CARGO_TARGET_{env_triple}_LINKER"), "rust-lld");
        }
        Linker::Gcc {
            command,
            debian_package,
        } => {
            if !on_path(command) {
                bail!(
                    "the linker for {} ({command}) is missing: install the Debian package {debian_package} \
                     (`sudo apt-get install {debian_package}`, or `sudo bash .ci/install-deps`), \
                     or pick a musl target that needs no cross compiler",
                    target.triple
                );
            }
            cmd.env(format!("CARGO_TARGET_{env_triple}_LINKER"), command);
        }
        Linker::HostCc => {}
    }
    if target.needs_crt_static() {
        cmd.env(
            format!("CARGO_TARGET_{env_triple}_RUSTFLAGS"),
            "-C target-feature=+crt-static",
        );
    }
    eprintln!(
        "==> building the server-migration module for {} (a first build takes a few minutes)",
        target.triple
    );
    let status = cmd
        .status()
        .context("running cargo to build the update module")?;
    if !status.success() {
        bail!(
            "building the server-migration module for {} failed (see cargo's output above)",
            target.triple
        );
    }
    Ok(target_dir
        .join(target.triple)
        .join("device")
        .join("server-migration"))
}

/// The value of `--NAME V` / `--NAME=V` in `args`.
fn flag_value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let eq = format!("{name}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == name {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&eq)
        }
    })
}

/// The CLI's exit code (it printed the reason): 0 ok, 1 refused/failed, 2 usage error. Its
/// usage lines name `cargo xtask SUBCOMMAND`.
fn run_cli(subcommand: &str, args: &[String]) -> Result<ExitCode> {
    let argv = ["cargo xtask".to_string(), subcommand.to_string()]
        .into_iter()
        .chain(args.iter().cloned());
    Ok(mender_migrate::main_with_args(argv))
}

pub fn run_artifacts(args: &[String]) -> Result<ExitCode> {
    let mut args = args.to_vec();
    let wants_help = args.iter().any(|a| a == "-h" || a == "--help");
    let has_module = flag_value(&args, "--module-binary").is_some()
        || args.iter().any(|a| a == "--module-binary");
    if !wants_help && !has_module {
        if let Some(triple) = flag_value(&args, "--target") {
            // An unknown triple falls through to the CLI, which explains the choice (exit 2).
            if let Ok(target) = DeviceTarget::parse(triple) {
                let module = build_module(&target)?;
                args.push("--module-binary".into());
                args.push(module.display().to_string());
            }
        }
    }
    run_cli("artifacts", &args)
}

pub fn run_plan(args: &[String]) -> Result<ExitCode> {
    run_cli("plan", args)
}
