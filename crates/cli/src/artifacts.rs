//! `artifacts`: the module installer and the two stage artifacts, written atomically.

use crate::inputs::MigrationInputs;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use menderartifact::{
    module_image_single_file, write_artifact_to_path, ArtifactSpec, Compression, Payload,
    PayloadFile, SigningKey,
};
use menderconf::{
    MigrationPlan, Mode, Restart, Stage, StagePlan, FALLBACK_CONFIG_PATH, MAIN_CONFIG_PATH,
    MODULE_NAME, PLAN_FILE_NAME, STAGE_PROVIDES_KEY,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the stock clients look for update modules.
pub const MODULES_DIR: &str = "/usr/share/mender/modules/v3";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// The payload carries the stage's plan; the module applies it to the device's own files.
    Patch,
    /// The payload carries the fully rendered config files.
    Replace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RestartArg {
    /// The module asks the client for a reboot (`NeedsArtifactReboot` = Automatic).
    Reboot,
    /// No reboot: the module restarts the client service after the deployment finished.
    Service,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    Gzip,
    None,
}

#[derive(Debug, Clone, Args)]
pub struct ArtifactsArgs {
    #[command(flatten)]
    pub inputs: MigrationInputs,
    /// Device type the artifacts install on (repeat for several).
    #[arg(long = "device-type", value_name = "T", required = true)]
    pub device_types: Vec<String>,
    /// Artifact name prefix: NAME-stage1-dual, NAME-stage2-new-only, NAME-module-install.
    #[arg(long, default_value = "server-migration")]
    pub name: String,
    /// Output directory (created if missing).
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = ModeArg::Patch)]
    pub mode: ModeArg,
    #[arg(long, value_enum, default_value_t = RestartArg::Reboot)]
    pub restart: RestartArg,
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip)]
    pub compression: CompressionArg,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
    /// The `server-migration` update module binary for the module-install artifact
    /// (`cargo xtask artifacts` builds it; default: `server-migration` next to this program).
    #[arg(long, value_name = "PATH")]
    pub module_binary: Option<PathBuf>,
    /// Sign all three artifacts (RSA or ECDSA P-256 private key, PEM).
    #[arg(long, value_name = "KEY.pem")]
    pub sign_key: Option<PathBuf>,
}

/// What `artifacts` wrote, and the human summary of it.
#[derive(Debug)]
pub struct ArtifactsReport {
    pub module_install: PathBuf,
    pub stage1: PathBuf,
    pub stage2: PathBuf,
    pub summary: String,
}

pub(crate) fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let pem = std::fs::read(path)
        .with_context(|| format!("{}: cannot read the signing key", path.display()))?;
    SigningKey::from_pem(&pem).with_context(|| format!("{}: unusable signing key", path.display()))
}

fn default_module_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this program")?;
    let candidate = exe.with_file_name(MODULE_NAME);
    if candidate.is_file() {
        Ok(candidate)
    } else {
        bail!("no --module-binary given and no {} next to {}; build it with `cargo build --profile device -p server-migration`", MODULE_NAME, exe.display())
    }
}

pub fn run(args: &ArtifactsArgs) -> Result<ArtifactsReport> {
    if args.name.is_empty() || args.name.chars().any(|c| c.is_whitespace() || c == '/') {
        bail!(
            "--name {:?}: use a name without whitespace or '/'",
            args.name
        );
    }
    let plan = args.inputs.plan()?;
    let signing_key = args.sign_key.as_deref().map(load_signing_key).transpose()?;
    let module_binary = match &args.module_binary {
        Some(p) if p.is_file() => p.clone(),
        Some(p) => bail!("{}: --module-binary is not a file", p.display()),
        None => default_module_binary()?,
    };
    let out = |suffix: &str| args.out.join(format!("{}-{suffix}.mender", args.name));
    let (module_install, stage1, stage2) = (
        out("module-install"),
        out("stage1-dual"),
        out("stage2-new-only"),
    );
    if !args.force {
        for path in [&module_install, &stage1, &stage2] {
            if path.exists() {
                bail!(
                    "{}: already exists; pass --force to overwrite",
                    path.display()
                );
            }
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the output directory", args.out.display()))?;
    let compression = match args.compression {
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::None => Compression::None,
    };
    // All three are written into a scratch directory beside the outputs first and renamed into
    // place only when every one succeeded: a failure leaves no partial set behind.
    let scratch = tempfile::Builder::new()
        .prefix(".mender-migrate-")
        .tempdir_in(&args.out)
        .with_context(|| format!("{}: cannot create a scratch directory", args.out.display()))?;
    let finish = |mut spec: ArtifactSpec, path: &Path| -> Result<PathBuf> {
        spec.compression = compression;
        spec.signing_key = signing_key.clone();
        let staged = scratch
            .path()
            .join(path.file_name().expect("output paths have a file name"));
        write_artifact_to_path(spec, &staged)
            .with_context(|| format!("{}: writing the artifact", path.display()))?;
        Ok(staged)
    };
    let spec = module_image_single_file(
        format!("{}-module-install", args.name),
        args.device_types.clone(),
        &module_binary,
        MODULES_DIR,
    )?;
    let mut staged = vec![(finish(spec, &module_install)?, &module_install)];
    for (stage, path) in [(Stage::Dual, &stage1), (Stage::NewOnly, &stage2)] {
        staged.push((finish(stage_spec(&plan, stage, args)?, path)?, path));
    }
    for (from, to) in staged {
        std::fs::rename(&from, to).with_context(|| {
            format!(
                "{}: cannot move the finished artifact into place",
                to.display()
            )
        })?;
    }

    let mut warnings = crate::plan::all_warnings(&plan, signing_key.is_some());
    if args.restart == RestartArg::Service {
        warnings.push("--restart service: the client is restarted ~30 s after each deployment finished instead of rebooting".into());
    }
    let summary = summary(&plan, args, &[&module_install, &stage1, &stage2], &warnings)?;
    Ok(ArtifactsReport {
        module_install,
        stage1,
        stage2,
        summary,
    })
}

/// One stage artifact: payload type `server-migration`, `plan.json` (+ rendered files in
/// replace mode); stage 1 provides `server-migration.stage: dual`, stage 2 depends on it.
fn stage_spec(plan: &MigrationPlan, stage: Stage, args: &ArtifactsArgs) -> Result<ArtifactSpec> {
    let mode = match args.mode {
        ModeArg::Patch => Mode::Patch,
        ModeArg::Replace => Mode::Replace,
    };
    let mut stage_plan = StagePlan::new(
        stage,
        mode,
        plan.old_server.clone(),
        plan.new_server.clone(),
    );
    stage_plan.restart = match args.restart {
        RestartArg::Reboot => Restart::Reboot,
        RestartArg::Service => Restart::Service,
    };
    let mut files = Vec::new();
    if mode == Mode::Replace {
        let rendered = plan.stage_files(stage);
        let mut map = BTreeMap::new();
        // A file not captured is left out of the map: the module keeps the device's own and
        // validates the combination.
        let captured_fallback = args.inputs.fallback_config.is_some();
        for (device_path, payload_name, file, known) in [
            (MAIN_CONFIG_PATH, "etc-mender.conf", &rendered.main, true),
            (
                FALLBACK_CONFIG_PATH,
                "var-lib-mender.conf",
                &rendered.fallback,
                captured_fallback,
            ),
        ] {
            if !known {
                continue;
            }
            match file {
                Some(f) => {
                    files.push(PayloadFile::from_bytes(payload_name, f.to_bytes(), 0o600));
                    map.insert(device_path.to_string(), Some(payload_name.to_string()));
                }
                None => {
                    map.insert(device_path.to_string(), None);
                }
            }
        }
        stage_plan.files = Some(map);
    }
    files.insert(
        0,
        PayloadFile::from_bytes(PLAN_FILE_NAME, stage_plan.to_json(), 0o644),
    );
    let suffix = match stage {
        Stage::Dual => "stage1-dual",
        Stage::NewOnly => "stage2-new-only",
    };
    let mut spec = ArtifactSpec::new(
        format!("{}-{suffix}", args.name),
        args.device_types.clone(),
        Payload::Module {
            type_name: MODULE_NAME.into(),
            files,
            meta_data: None,
        },
    );
    spec.provides
        .insert(STAGE_PROVIDES_KEY.into(), stage.to_string());
    if stage == Stage::NewOnly {
        spec.depends
            .insert(STAGE_PROVIDES_KEY.into(), Stage::Dual.to_string());
    }
    Ok(spec)
}

fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut file, &mut hasher)?;
    let digest = hasher.finalize();
    Ok((size, digest.iter().map(|b| format!("{b:02x}")).collect()))
}

fn summary(
    plan: &MigrationPlan,
    args: &ArtifactsArgs,
    paths: &[&PathBuf],
    warnings: &[String],
) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Wrote {} artifacts for device types {}:",
        paths.len(),
        args.device_types.join(", ")
    );
    for path in paths {
        let (size, sha) = sha256_file(path)?;
        let _ = writeln!(out, "  {}  {size} bytes  sha256 {sha}", path.display());
    }
    let _ = writeln!(
        out,
        "\n  mode: {}, restart: {}, signed: {}",
        args.mode
            .to_possible_value()
            .expect("no skipped variants")
            .get_name(),
        args.restart
            .to_possible_value()
            .expect("no skipped variants")
            .get_name(),
        if args.sign_key.is_some() { "yes" } else { "no" }
    );
    let _ = writeln!(
        out,
        "  stage 1 sets Servers [{}, {}]; stage 2 sets ServerURL {}",
        plan.old_server, plan.new_server, plan.new_server
    );
    let _ = writeln!(
        out,
        "  stage 2 depends on {STAGE_PROVIDES_KEY}=dual, so a device refuses it before stage 1"
    );
    if !warnings.is_empty() {
        let _ = writeln!(out, "\nWarnings:");
        for w in warnings {
            let _ = writeln!(out, "  - {w}");
        }
    }
    let _ = writeln!(out, "\nProcedure:");
    for step in crate::plan::procedure(plan) {
        let _ = writeln!(out, "  {}", step.replace("NAME", &args.name));
    }
    out.push_str(&crate::check_release::release_gate_text(
        &plan.old_server,
        &plan.new_server,
    ));
    Ok(out)
}
