//! `check-release`: the release gate. Would a device at the fleet's stage stay on the right
//! servers after installing this artifact? Exit 0 pass, 1 refuse (or unreadable), 2 usage.

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use mender_release::{check_release_file, GateOptions, Verdict};
use menderartifact::VerifyKey;
use menderconf::{ServerUrl, Stage};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StageArg {
    /// Stage 1 is installed: devices must keep `Servers: [old, new]`.
    Dual,
    /// Stage 2 is installed: devices must keep `ServerURL: new`.
    NewOnly,
}

impl From<StageArg> for Stage {
    fn from(s: StageArg) -> Stage {
        match s {
            StageArg::Dual => Stage::Dual,
            StageArg::NewOnly => Stage::NewOnly,
        }
    }
}

/// The stage and the two servers, as `check-release` and `rootfs` take them.
#[derive(Debug, Args)]
pub struct MigrationArgs {
    /// The stage: the one the fleet has reached (check-release), or whose config the new
    /// artifact carries (rootfs).
    #[arg(long, value_enum)]
    pub stage: StageArg,
    #[arg(long, value_name = "URL")]
    pub old_server: String,
    #[arg(long, value_name = "URL")]
    pub new_server: String,
}

impl MigrationArgs {
    /// Parses `--old-server`/`--new-server`, naming the flag in the error.
    pub(crate) fn servers(&self) -> Result<(ServerUrl, ServerUrl)> {
        let old = ServerUrl::parse(&self.old_server).context("--old-server")?;
        let new = ServerUrl::parse(&self.new_server).context("--new-server")?;
        if old == new {
            bail!("--old-server and --new-server are the same ({new})");
        }
        Ok((old, new))
    }
}

#[derive(Debug, Args)]
pub struct CheckReleaseArgs {
    /// The release artifact (`.mender`) to check: gzip, lzma (xz) or uncompressed members.
    pub artifact: PathBuf,
    #[command(flatten)]
    pub migration: MigrationArgs,
    /// Public key (PEM): the artifact must also carry a valid signature by it.
    #[arg(long, value_name = "PUB.pem")]
    pub verify_key: Option<PathBuf>,
    /// Print the verdict as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Reads a `--verify-key` public key (PEM), naming the file in the error.
pub(crate) fn load_verify_key(path: &Path) -> Result<VerifyKey> {
    let pem =
        std::fs::read(path).with_context(|| format!("{}: cannot read the key", path.display()))?;
    VerifyKey::from_pem(&pem)
        .with_context(|| format!("{}: unusable verification key", path.display()))
}

pub fn run(args: &CheckReleaseArgs) -> Result<()> {
    let (old_server, new_server) = args.migration.servers()?;
    let verify_key = args
        .verify_key
        .as_deref()
        .map(load_verify_key)
        .transpose()?;
    let opts = GateOptions {
        stage: args.migration.stage.into(),
        old_server,
        new_server,
        verify_key,
    };
    let verdict = check_release_file(&args.artifact, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        print!("{}", verdict_text(&verdict));
    }
    if !verdict.pass {
        bail!(
            "{}: release refused for stage {}: {}",
            verdict.artifact,
            verdict.stage,
            verdict.reasons.first().map(String::as_str).unwrap_or("")
        );
    }
    Ok(())
}

fn verdict_text(v: &Verdict) -> String {
    let mut out = format!(
        "{}: {} for a fleet at stage {} (artifact {}, {})\n",
        v.artifact,
        if v.pass { "PASS" } else { "REFUSE" },
        v.stage,
        v.artifact_name,
        if v.payload_type.is_empty() {
            "bootstrap"
        } else {
            &v.payload_type
        }
    );
    if let Some(s) = &v.release_servers {
        out.push_str(&format!("  release servers:  [{}]\n", s.join(", ")));
    }
    out.push_str(&format!(
        "  expected servers: [{}]\n",
        v.expected_servers.join(", ")
    ));
    for r in &v.reasons {
        out.push_str(&format!("  - {r}\n"));
    }
    if !v.conditions.is_empty() {
        out.push_str("  holds only if, on each device:\n");
        for c in &v.conditions {
            out.push_str(&format!("  - {c}\n"));
        }
    }
    out
}

/// The release-gate rule for `plan` and `artifacts`: after stage N every OS release must carry
/// stage N's config, how to build it in, and the CI check.
pub fn release_gate_text(old: &ServerUrl, new: &ServerUrl) -> String {
    format!(
        "\nRelease gate (every OS release after a stage):\n\
         \x20 After stage 1 every rootfs release must carry stage 1's /etc/mender/mender.conf (\"Servers\" [{old}, {new}], no \"ServerURL\");\n\
         \x20 after stage 2, for good, stage 2's (\"ServerURL\" {new}, no \"Servers\"). A release built with the old config puts\n\
         \x20 every device that installs it back on {old}, which rejects it.\n\
         \x20 Yocto: MIGRATION_STAGE = \"dual\", later \"new-only\" (meta-migration). mender-convert: --overlay stage1-dual,\n\
         \x20 later stage2-new-only (debian-overlay).\n\
         \x20 CI gate:  mender-migrate check-release IMAGE.mender --stage dual|new-only --old-server {old} --new-server {new}\n\
         \x20 Fix a built release:  mender-migrate rootfs --from IMAGE.mender --stage dual|new-only --old-server {old} --new-server {new} --out DIR\n"
    )
}
