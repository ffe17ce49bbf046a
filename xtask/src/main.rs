//! `cargo xtask`: developer and release tasks, each a thin module over the library crates.

mod artifacts;
mod debian_overlay;
mod fuzz;
mod qemu;
mod recipes;
mod test;
mod yocto_layer;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <task> [args]

tasks:
  artifacts       build the module, then write the two-stage artifacts and the module installer
  plan            dry run: print both stages' config files and a diff (--json for machines)
  recipes         regenerate the cargo-bitbake recipes in recipes/ (--check: verify they are fresh)
  yocto-layer     write a meta-migration layer instance with the transformed configs baked in
  debian-overlay  write mender-convert rootfs overlays (--check: verify debian-overlay/ is fresh)
  qemu-image      build (or reuse the cached) Debian guest image with the real mender-client 3.4
  qemu-test       run the end-to-end migration scenarios in QEMU
  fuzz            run the cargo-fuzz targets (tests/fuzz) over the corpus: --seconds N, --runs N
  test            run all tests: host tools, cargo test, linters, then qemu-test (--no-qemu to skip)
";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args[0] == "-h" || args[0] == "--help" {
        eprint!("{USAGE}");
        return if args.is_empty() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let task = args.remove(0);
    let result = match task.as_str() {
        "artifacts" => artifacts::run_artifacts(&args),
        "plan" => artifacts::run_plan(&args),
        "recipes" => recipes::run(&args),
        "yocto-layer" => yocto_layer::run(&args),
        "debian-overlay" => debian_overlay::run(&args),
        "qemu-image" => qemu::run_image(&args),
        "qemu-test" => qemu::run_test(&args),
        "fuzz" => fuzz::run(&args),
        "test" => test::run(&args),
        other => {
            eprint!("unknown task `{other}`\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
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

/// Shared by the clap-based tasks: `--help` prints and succeeds; a usage error prints clap's
/// message and fails.
pub fn args_error(e: clap::Error) -> anyhow::Result<()> {
    let _ = e.print();
    if matches!(
        e.kind(),
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
    ) {
        return Ok(());
    }
    anyhow::bail!("bad arguments")
}
