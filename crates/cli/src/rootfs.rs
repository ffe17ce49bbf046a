//! `rootfs --from`: a stage rootfs artifact made from an existing release, with only
//! `/etc/mender/mender.conf` (and the name and content provides) changed.

use crate::check_release::{MigrationArgs, StageArg};
use anyhow::{Context, Result};
use clap::Args;
use mender_release::{stage_rootfs, RootfsOptions};
use menderconf::masked;
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct RootfsArgs {
    /// The current release: a rootfs-image artifact, gzip, lzma (xz) or uncompressed. The new
    /// artifact is written with gzip (uncompressed stays uncompressed): an lzma input comes
    /// out larger but is written many times faster, and every Mender client reads gzip.
    #[arg(long, value_name = "CURRENT.mender")]
    pub from: PathBuf,
    #[command(flatten)]
    pub migration: MigrationArgs,
    /// Output directory (created if missing); the artifact is `<name>.mender` in it.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Compute the stage config from this file instead of the image's own mender.conf.
    #[arg(long, value_name = "mender.conf")]
    pub config: Option<PathBuf>,
    /// Sign the new artifact (RSA or ECDSA P-256 private key, PEM).
    #[arg(long, value_name = "KEY.pem")]
    pub sign_key: Option<PathBuf>,
    /// Artifact name; default `<current name>-stage1-dual` or `-stage2-new-only`.
    #[arg(long)]
    pub name: Option<String>,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: &RootfsArgs) -> Result<()> {
    let (old_server, new_server) = args.migration.servers()?;
    let signing_key = match &args.sign_key {
        Some(path) => Some(crate::artifacts::load_signing_key(path)?),
        None => None,
    };
    let staged = stage_rootfs(&RootfsOptions {
        from: args.from.clone(),
        stage: args.migration.stage.into(),
        old_server,
        new_server,
        out_dir: args.out.clone(),
        config: args.config.clone(),
        signing_key,
        name: args.name.clone(),
        force: args.force,
    })
    .with_context(|| format!("rootfs --from {}", args.from.display()))?;
    let show = |f: &menderconf::ConfigFile| {
        serde_json::to_string_pretty(&masked(&f.object)).expect("JSON object")
    };
    println!(
        "wrote {} (artifact {}, from {}{})",
        staged.path.display(),
        staged.artifact_name,
        staged.previous_name,
        if staged.signed {
            ", signed"
        } else {
            ", unsigned"
        }
    );
    println!(
        "  /etc/mender/mender.conf servers: [{}] -> [{}]",
        staged.servers_before.join(", "),
        staged.servers_after.join(", ")
    );
    println!("  before:\n{}", show(&staged.config_before));
    println!("  after:\n{}", show(&staged.config_after));
    println!(
        "  gate every later release with: mender-migrate check-release ARTIFACT --stage {} --old-server {} --new-server {}",
        match args.migration.stage {
            StageArg::Dual => "dual",
            StageArg::NewOnly => "new-only",
        },
        args.migration.old_server,
        args.migration.new_server
    );
    Ok(())
}
