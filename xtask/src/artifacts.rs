//! `artifacts` and `plan`: build the update module for the module-install artifact, then hand
//! the arguments to the `mender-migrate` CLI library (same flags, same output).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// Builds the update module from the device workspace (`crates/device`) with `--profile device`
/// into the host's target directory; returns the binary's path.
pub fn build_module() -> Result<PathBuf> {
    let root = crate::project_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(root.join("crates/device/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .args([
            "--profile",
            "device",
            "-p",
            "server-migration",
            "--bin",
            "server-migration",
        ])
        .status()
        .context("running cargo to build the update module")?;
    if !status.success() {
        bail!("building the server-migration module failed");
    }
    Ok(target.join("device").join("server-migration"))
}

/// The CLI's exit code (it printed the reason): 0 ok, 1 refused/failed, 2 usage error.
fn run_cli(subcommand: &str, args: &[String]) -> Result<ExitCode> {
    let argv = ["mender-migrate".to_string(), subcommand.to_string()]
        .into_iter()
        .chain(args.iter().cloned());
    Ok(mender_migrate::main_with_args(argv))
}

pub fn run_artifacts(args: &[String]) -> Result<ExitCode> {
    let mut args = args.to_vec();
    let wants_help = args.iter().any(|a| a == "-h" || a == "--help");
    if !wants_help
        && !args
            .iter()
            .any(|a| a == "--module-binary" || a.starts_with("--module-binary="))
    {
        let module = build_module()?;
        args.push("--module-binary".into());
        args.push(module.display().to_string());
    }
    run_cli("artifacts", &args)
}

pub fn run_plan(args: &[String]) -> Result<ExitCode> {
    run_cli("plan", args)
}
