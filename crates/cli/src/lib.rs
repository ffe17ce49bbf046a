//! The `mender-migrate` command line: argument parsing, human and JSON output, exit codes.
//! Thin over `menderconf` (rules, stages) and `menderartifact` (the artifact format).

mod artifacts;
mod check_release;
mod elf;
mod fleet;
mod inputs;
mod inspect;
mod plan;
mod rootfs;
pub mod target;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::process::ExitCode;

pub use artifacts::{module_install_name, ArtifactsArgs, ArtifactsReport};
#[doc(hidden)]
pub use elf::fake_elf;
pub use inputs::MigrationInputs;
pub use target::{Arch, DeviceTarget, Linker};

/// A usage error found after parsing (a flag combination or value clap cannot judge): exit 2,
/// like clap's own usage errors.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

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
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // `--json` anywhere: errors too are one JSON object on stderr.
    let json = args.iter().skip(1).any(|a| a == "--json");
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(err) => {
            if !err.use_stderr() {
                let _ = err.print();
                return ExitCode::SUCCESS;
            }
            if json {
                print_json_error(&err.kind().to_string(), &err.render().to_string(), 2);
            } else {
                let _ = err.print();
            }
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Plan(args) => plan::run(&args),
        Command::Artifacts(args) => artifacts::run(&args).map(|report| {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report.json).expect("JSON value")
                );
            } else {
                print!("{}", report.summary);
            }
        }),
        Command::Inspect(args) => inspect::run(&args),
        Command::CheckRelease(args) => check_release::run(&args),
        Command::Rootfs(args) => rootfs::run(&args),
        Command::Fleet(args) => return fleet::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = if err.downcast_ref::<UsageError>().is_some() {
                2
            } else {
                1
            };
            if json {
                print_json_error(
                    if code == 2 { "usage" } else { "refused" },
                    &format!("{err:#}"),
                    code,
                );
            } else {
                eprintln!("error: {err:#}");
            }
            ExitCode::from(code)
        }
    }
}

fn print_json_error(kind: &str, message: &str, code: u8) {
    let value = serde_json::json!({
        "error": message.trim_end().trim_start_matches("error: "),
        "kind": kind,
        "exit_code": code,
    });
    eprintln!("{value}");
}
