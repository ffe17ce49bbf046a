//! `cargo xtask debian-overlay`: mender-convert rootfs overlays per stage. Without `--config` it
//! (re)writes or `--check`s the reference overlays in `debian-overlay/`, rendered from the example
//! captured config; with `--config` it writes a conversion-ready tree for a real fleet.

use anyhow::{bail, Context, Result};
use menderconf::Stage;
use migration_generators::overlay;
use std::path::{Path, PathBuf};

/// Write mender-convert rootfs overlays (stage1-dual/, stage2-new-only/).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Verify that debian-overlay/ is fresh instead of writing it (only without --config).
    #[arg(long, conflicts_with = "config")]
    check: bool,
    /// The device's captured main config; without it the reference overlays are written.
    #[arg(long, value_name = "CAPTURED.conf", requires_all = ["new_server", "out"])]
    config: Option<PathBuf>,
    /// The device's captured fallback config (/var/lib/mender/mender.conf), if it has one.
    #[arg(long, value_name = "CAPTURED-FALLBACK.conf", requires = "config")]
    fallback_config: Option<PathBuf>,
    /// The server to move to.
    #[arg(long, value_name = "URL", requires = "config")]
    new_server: Option<String>,
    /// The server to move from (default: the captured config's).
    #[arg(long, value_name = "URL", requires = "config")]
    old_server: Option<String>,
    /// Output directory (gets stage1-dual/, stage2-new-only/ and README.md).
    #[arg(long, value_name = "DIR", requires = "config")]
    out: Option<PathBuf>,
    /// The built server-migration module, copied into both overlays (mode 0755).
    #[arg(long, value_name = "PATH", requires = "config")]
    module_binary: Option<PathBuf>,
    /// The server certificate the config's ServerCertificate names, copied to that path.
    #[arg(long, value_name = "FILE", requires = "config")]
    server_cert: Option<PathBuf>,
    /// Replace an existing output directory.
    #[arg(long, requires = "config")]
    force: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let root = crate::project_root();
    match &args.config {
        None => reference(&root, args.check),
        Some(config) => custom(args, config, &read(&root.join(overlay::INVENTORY_SCRIPT))?),
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// The checked-in overlays: rendered from the example, compared or rewritten in place.
fn reference(root: &Path, check: bool) -> Result<()> {
    let tree = overlay::reference_overlays(root)?;
    let dir = root.join("debian-overlay");
    if check {
        let problems = tree.compare_with_dir(&dir, &overlay::is_foreign);
        if problems.is_empty() {
            println!("debian-overlay/ is fresh");
            return Ok(());
        }
        for p in &problems {
            eprintln!("stale: {p}");
        }
        bail!("debian-overlay/ is stale; regenerate with `cargo xtask debian-overlay`");
    }
    // Remove generated files that are no longer produced (never the QEMU guest's).
    for rel in tree.sync_into(&dir, &overlay::is_foreign)? {
        println!("removed debian-overlay/{rel}");
    }
    for rel in tree.files.keys() {
        println!("wrote debian-overlay/{rel}");
    }
    Ok(())
}

fn custom(args: &Args, config: &Path, inventory: &[u8]) -> Result<()> {
    let inputs = mender_migrate::MigrationInputs {
        config: config.to_path_buf(),
        fallback_config: args.fallback_config.clone(),
        new_server: args.new_server.clone().expect("clap requires --new-server"),
        old_server: args.old_server.clone(),
        keep_servers: Vec::new(),
        new_tenant_token_file: None,
    };
    let plan = inputs.plan()?;
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    let mut tree = overlay::overlays(&plan, inventory)?;
    let cert_path = certificate_path(&plan)?;
    for stage in [Stage::Dual, Stage::NewOnly] {
        let dir = overlay::stage_dir(stage);
        if let Some(module) = &args.module_binary {
            if !module.is_file() {
                bail!("{}: no such file (--module-binary)", module.display());
            }
            tree.add_copy(format!("{dir}/{}", overlay::MODULE_PATH), module, 0o755);
        }
        match (&cert_path, &args.server_cert) {
            (Some(target), Some(cert)) => {
                if !cert.is_file() {
                    bail!("{}: no such file (--server-cert)", cert.display());
                }
                tree.add_copy(format!("{dir}/{target}"), cert, 0o644);
            }
            (None, Some(cert)) => bail!(
                "--server-cert {}: the captured config has no ServerCertificate to install it as",
                cert.display()
            ),
            (Some(_), None) | (None, None) => {}
        }
    }
    if let (Some(target), None) = (&cert_path, &args.server_cert) {
        eprintln!("warning: the config names ServerCertificate /{target}; the image must already have it, or pass --server-cert FILE");
    }
    if args.module_binary.is_none() {
        eprintln!(
            "note: no --module-binary: the overlays do not contain the server-migration module"
        );
    }
    let out = args.out.as_ref().expect("clap requires --out");
    tree.write_new_dir(out, args.force)?;
    println!(
        "wrote {}/{{{}, {}}} (make them root-owned before mender-convert: sudo chown -R 0:0 {})",
        out.display(),
        overlay::stage_dir(Stage::Dual),
        overlay::stage_dir(Stage::NewOnly),
        out.display()
    );
    Ok(())
}

/// `ServerCertificate` of the stage configs as a path inside the overlay (no leading `/`).
fn certificate_path(plan: &menderconf::MigrationPlan) -> Result<Option<String>> {
    let main = migration_generators::layer::stage_main_config(plan, Stage::Dual)?;
    let Some(value) = main
        .object
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("ServerCertificate"))
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    let Some(path) = value.as_str().filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        bail!("ServerCertificate `{path}` is not an absolute path without `..`");
    }
    Ok(Some(path.trim_start_matches('/').to_string()))
}
