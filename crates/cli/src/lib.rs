//! The `mender-migrate` command line: argument parsing, human and JSON output, exit codes.
//! Thin over `menderconf` (rules, stages) and `menderartifact` (the artifact format).

mod artifacts;
mod check_release;
mod fleet;
mod inputs;
mod inspect;
mod plan;
mod rootfs;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::process::ExitCode;

pub use artifacts::{ArtifactsArgs, ArtifactsReport};
pub use inputs::MigrationInputs;

#[derive(Debug, Parser)]
#[command(
    name = "mender-migrate",
    version,
    about = "Move a Mender fleet to another server in two safe stages"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dry run: print both stages' config files and their diff against the captured ones.
    Plan(plan::PlanArgs),
    /// Write the stage-1 (dual), stage-2 (new-only) and module-install artifacts.
    Artifacts(ArtifactsArgs),
    /// Read an artifact, verify every checksum and (with --verify-key) its signature.
    Inspect(inspect::InspectArgs),
    /// Release gate: refuse an OS release that would undo the migration stage (exit 1).
    CheckRelease(check_release::CheckReleaseArgs),
    /// Make a stage rootfs artifact from an existing release (only mender.conf changes).
    Rootfs(rootfs::RootfsArgs),
    /// Migrate the fleet on both servers: plan, run (resumable), status, rollback.
    Fleet(fleet::FleetArgs),
}

/// Runs the CLI with the given arguments (first = program name) and returns the exit code:
/// 0 success, 1 refused input or failed operation (message on stderr), 2 usage error.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Plan(args) => plan::run(&args),
        Command::Artifacts(args) => {
            artifacts::run(&args).map(|report| print!("{}", report.summary))
        }
        Command::Inspect(args) => inspect::run(&args),
        Command::CheckRelease(args) => check_release::run(&args),
        Command::Rootfs(args) => rootfs::run(&args),
        Command::Fleet(args) => return fleet::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
