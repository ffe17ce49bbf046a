//! `cargo xtask`: developer and release tasks, each a thin module over the library crates. Every
//! task is declared once, in [`Task`]; its flags live in its module (or, for tasks that hand
//! their arguments on, in the crate that parses them).

mod artifacts;
mod debian_overlay;
mod fuzz;
mod qemu;
mod recipes;
mod test;
mod yocto_layer;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer and release tasks for mender-server-migration",
    disable_help_subcommand = true
)]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Build the module, then write the two-stage artifacts and the module installer
    /// (the flags of `mender-migrate artifacts`).
    Artifacts(PassThrough),
    /// Dry run: print both stages' config files and a diff (the flags of `mender-migrate plan`).
    Plan(PassThrough),
    /// Regenerate the cargo-bitbake recipes in recipes/ and the layer's module recipe.
    Recipes(recipes::Args),
    /// Write a meta-migration layer instance with the transformed configs baked in.
    YoctoLayer(yocto_layer::Args),
    /// Write mender-convert rootfs overlays (or --check that debian-overlay/ is fresh).
    DebianOverlay(debian_overlay::Args),
    /// Build (or reuse the cached) Debian guest image with the real mender-client 3.4.
    QemuImage(PassThrough),
    /// Run the end-to-end migration scenarios in QEMU.
    QemuTest(PassThrough),
    /// Run the cargo-fuzz targets (tests/fuzz) over the seed corpus, for a time or a count each.
    Fuzz(fuzz::Args),
    /// Run all tests: host tools, cargo test, clippy, linters, then qemu-test (--no-qemu to skip).
    Test(test::Args),
}

/// A task whose arguments are parsed by the crate it hands them to (one declaration of each
/// flag, there); `--help` goes there too.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
struct PassThrough {
    /// Arguments for the task (see the task's --help).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<String>,
}

fn main() -> ExitCode {
    let xtask = match Xtask::try_parse() {
        Ok(xtask) => xtask,
        Err(err) => {
            // --help/--version: exit 0; usage errors: exit 2.
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match xtask.task {
        Task::Artifacts(a) => artifacts::run_artifacts(&a.args),
        Task::Plan(a) => artifacts::run_plan(&a.args),
        Task::Recipes(args) => recipes::run(&args).map(|()| ExitCode::SUCCESS),
        Task::YoctoLayer(args) => yocto_layer::run(&args).map(|()| ExitCode::SUCCESS),
        Task::DebianOverlay(args) => debian_overlay::run(&args).map(|()| ExitCode::SUCCESS),
        Task::QemuImage(a) => qemu::run_image(&a.args).map(|()| ExitCode::SUCCESS),
        Task::QemuTest(a) => qemu::run_test(&a.args).map(|()| ExitCode::SUCCESS),
        Task::Fuzz(args) => fuzz::run(&args).map(|()| ExitCode::SUCCESS),
        Task::Test(args) => test::run(&args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn project_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
        .to_path_buf()
}
