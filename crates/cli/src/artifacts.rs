//! `artifacts`: the module installer and the two stage artifacts, written atomically.

use crate::elf::{check_module_binary, ModuleBinary};
use crate::inputs::{ClientChoice, MigrationInputs};
use crate::target::{how_to_pick, Arch, DeviceTarget};
use crate::UsageError;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use mender_release::{stage_module_spec, stage_suffix};
use menderartifact::{write_artifact_to_path, ArtifactSpec, Compression, PayloadFile, SigningKey};
use menderconf::{
    MigrationPlan, Mode, Restart, Stage, FALLBACK_CONFIG_PATH, MAIN_CONFIG_PATH, MODULE_NAME,
    STAGE_PROVIDES_KEY,
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
    #[command(flatten)]
    pub client: ClientChoice,
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
    #[command(flatten)]
    pub device: DeviceArch,
    /// The `server-migration` update module binary for the module-install artifact; checked to
    /// be an executable for --target or --arch.
    #[arg(long, value_name = "PATH")]
    pub module_binary: Option<PathBuf>,
    /// Sign all three artifacts (RSA or ECDSA P-256 private key, PEM).
    #[arg(long, value_name = "KEY.pem")]
    pub sign_key: Option<PathBuf>,
    /// Write unsigned artifacts even though the captured config has ArtifactVerifyKey.
    #[arg(long)]
    pub allow_unsigned: bool,
    /// Print the report as JSON on stdout, and an error as one JSON object on stderr.
    #[arg(long)]
    pub json: bool,
}

/// What `artifacts` wrote, and the human summary of it.
#[derive(Debug)]
pub struct ArtifactsReport {
    /// The devices' architecture the module was built for (in the module-install name).
    pub arch: String,
    pub module_install: PathBuf,
    pub stage1: PathBuf,
    pub stage2: PathBuf,
    pub summary: String,
    /// The `--json` report: paths, sizes, sha256, names, device types, architecture.
    pub json: serde_json::Value,
}

pub(crate) fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let pem = std::fs::read(path)
        .with_context(|| format!("{}: cannot read the signing key", path.display()))?;
    SigningKey::from_pem(&pem).with_context(|| format!("{}: unusable signing key", path.display()))
}

/// The module built for `target` by cargo next to this program (`target/TRIPLE/device/`), or an
/// installed `server-migration-TRIPLE` beside it. Every candidate is still checked by its header.
fn prebuilt_module(target: &DeviceTarget) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this program")?;
    let dir = exe.parent().context("locating this program's directory")?;
    let candidates = [
        dir.join(format!("{MODULE_NAME}-{}", target.triple)),
        dir.join("..")
            .join(target.triple)
            .join("device")
            .join(MODULE_NAME),
    ];
    candidates
        .iter()
        .find(|c| c.is_file())
        .cloned()
        .with_context(|| {
            format!(
                "no {MODULE_NAME} module built for {t} (looked for {}); build it with \
                 `cargo xtask artifacts --target {t} ...` (which builds and packs it), or \
                 `cargo build --manifest-path crates/device/Cargo.toml --profile device --target {t}`, \
                 or pass --module-binary PATH",
                candidates
                    .iter()
                    .map(|c| c.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                t = target.triple
            )
        })
}

/// The devices' CPU, as `artifacts` and `plan` take it: a Rust target triple or an
/// architecture name.
#[derive(Debug, Clone, Args)]
pub struct DeviceArch {
    /// Rust target triple of the devices' CPU (from `uname -m` on a device: aarch64 →
    /// aarch64-unknown-linux-musl, armv7l → armv7-unknown-linux-gnueabihf, x86_64 →
    /// x86_64-unknown-linux-musl). It names the module-install artifact; `cargo xtask
    /// artifacts` builds the module for it and `artifacts` uses the module built for it
    /// (target/TRIPLE/device/server-migration).
    #[arg(long, value_name = "TRIPLE")]
    pub target: Option<String>,
    /// The devices' architecture instead of --target (aarch64, armv7, armv6, x86_64, i686,
    /// riscv64, or a `uname -m` name): names the module-install artifact and checks a
    /// --module-binary built elsewhere.
    #[arg(long, value_name = "ARCH", conflicts_with = "target")]
    pub arch: Option<String>,
}

impl DeviceArch {
    /// The architecture (and the target, when given as one); `None` when neither flag is set.
    /// An unknown triple or architecture is a usage error.
    pub(crate) fn resolve(&self) -> Result<Option<(Arch, Option<DeviceTarget>)>> {
        match (self.target.as_deref(), self.arch.as_deref()) {
            (Some(t), _) => {
                let t = DeviceTarget::parse(t).map_err(UsageError)?;
                Ok(Some((t.arch(), Some(t))))
            }
            (None, Some(a)) => {
                let arch = Arch::parse(a).ok_or_else(|| {
                UsageError(format!(
                    "--arch {a:?} is not an architecture this project knows (aarch64, armv7, armv6, x86_64, i686, riscv64)"
                ))
            })?;
                Ok(Some((arch, None)))
            }
            (None, None) => Ok(None),
        }
    }
}

fn module_binary(args: &ArtifactsArgs) -> Result<(PathBuf, Arch, ModuleBinary)> {
    let Some((arch, target)) = args.device.resolve()? else {
        return Err(UsageError(match &args.module_binary {
            Some(_) => format!(
                "--module-binary needs --target TRIPLE or --arch ARCH: say which CPU the devices have, the binary is checked against it\n{}",
                how_to_pick()
            ),
            None => format!(
                "which CPU do the devices have? The module-install artifact carries a compiled program, so pass --target TRIPLE (or --module-binary PATH with --arch ARCH)\n{}",
                how_to_pick()
            ),
        })
        .into());
    };
    let path = match (&args.module_binary, target) {
        (Some(p), _) => p.clone(),
        (None, Some(t)) => prebuilt_module(&t)?,
        (None, None) => {
            return Err(UsageError(
                "--arch checks a --module-binary; pass --module-binary PATH, or --target TRIPLE to use the module built for it".into(),
            )
            .into())
        }
    };
    if path.is_dir() {
        bail!(
            "{}: --module-binary is a directory, not a program",
            path.display()
        );
    }
    let info = check_module_binary(&path, &arch)?;
    Ok((path, arch, info))
}

/// Validates `--device-type`s: none empty or blank; repeats are dropped (first one kept).
pub(crate) fn device_types(given: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for t in given {
        if t.trim().is_empty() {
            return Err(UsageError(format!(
                "--device-type {t:?} is empty; give the device type the devices report (/var/lib/mender/device_type)"
            ))
            .into());
        }
        if t.trim() != t || t.chars().any(char::is_control) {
            return Err(UsageError(format!(
                "--device-type {t:?} has surrounding whitespace or control characters"
            ))
            .into());
        }
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    Ok(out)
}

/// The module-install artifact's name: the devices' architecture is part of it, so a fleet
/// with several CPUs gets one installer per architecture and none is uploaded to the wrong one.
pub fn module_install_name(name: &str, arch: &str) -> String {
    format!("{name}-module-install-{arch}")
}

/// The stock `single-file` payload that puts the module into [`MODULES_DIR`], always as
/// `server-migration` with mode 0755 whatever the binary's own file name and mode.
fn module_install_spec(
    name: String,
    device_types: Vec<String>,
    binary: &Path,
) -> Result<ArtifactSpec> {
    let mut file = PayloadFile::from_path(binary)?;
    file.name = MODULE_NAME.into();
    file.mode = Some(0o755);
    Ok(ArtifactSpec::new(
        name,
        device_types,
        menderartifact::single_file_payload(MODULES_DIR, file, 0o755),
    ))
}

pub fn run(args: &ArtifactsArgs) -> Result<ArtifactsReport> {
    if args.name.is_empty() || args.name.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(UsageError(format!(
            "--name {:?}: use a name without whitespace or '/'",
            args.name
        ))
        .into());
    }
    let device_types = device_types(&args.device_types)?;
    let (module_path, arch, module_info) = module_binary(args)?;
    let plan = args.inputs.plan_for(args.client.client)?;
    let signing_key = args.sign_key.as_deref().map(load_signing_key).transpose()?;
    if let (Some(key), None, false) = (
        plan.artifact_verify_key(),
        &signing_key,
        args.allow_unsigned,
    ) {
        bail!(
            "the captured config has ArtifactVerifyKey ({key}): the devices refuse unsigned artifacts; \
             pass --sign-key KEY.pem (the private half of that key), or --allow-unsigned if you know \
             the devices do not verify"
        );
    }
    let out = |suffix: &str| args.out.join(format!("{}-{suffix}.mender", args.name));
    let module_install = args.out.join(format!(
        "{}.mender",
        module_install_name(&args.name, arch.name)
    ));
    let (stage1, stage2) = (
        out(stage_suffix(Stage::Dual)),
        out(stage_suffix(Stage::NewOnly)),
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
    // Every check is done: only now may the output directory appear. If it did not exist and
    // writing fails, it is removed again, so an error leaves nothing behind.
    let created_out = !args.out.exists();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create the output directory", args.out.display()))?;
    let written = write_all(
        args,
        &plan,
        &device_types,
        signing_key,
        &module_path,
        arch,
        [&module_install, &stage1, &stage2],
    );
    if written.is_err() && created_out {
        let _ = std::fs::remove_dir(&args.out);
    }
    written?;

    let mut warnings = crate::plan::all_warnings(&plan, args.sign_key.is_some());
    if args.restart == RestartArg::Service {
        warnings.push("--restart service: the client is restarted ~30 s after each deployment finished instead of rebooting".into());
    }
    if let Some(loader) = &module_info.interpreter {
        warnings.push(format!(
            "the module binary is dynamically linked (loader {loader}): it runs only on devices with that loader and a compatible C library; a static build is preferred (`cargo xtask artifacts --target TRIPLE` builds one: musl, or glibc with crt-static)"
        ));
    }
    let paths = [&module_install, &stage1, &stage2];
    let summary = summary(
        &plan,
        args,
        &device_types,
        &arch,
        &module_info,
        &paths,
        &warnings,
    )?;
    let json = report_json(args, &device_types, &arch, &module_info, &paths, &warnings)?;
    Ok(ArtifactsReport {
        arch: arch.name.to_string(),
        module_install,
        stage1,
        stage2,
        summary,
        json,
    })
}

/// Writes the three artifacts into a scratch directory beside the outputs and renames them into
/// place only when every one succeeded: a failure leaves no partial set behind.
fn write_all(
    args: &ArtifactsArgs,
    plan: &MigrationPlan,
    device_types: &[String],
    signing_key: Option<SigningKey>,
    module_path: &Path,
    arch: Arch,
    [module_install, stage1, stage2]: [&PathBuf; 3],
) -> Result<()> {
    let compression = match args.compression {
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::None => Compression::None,
    };
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
    let spec = module_install_spec(
        module_install_name(&args.name, arch.name),
        device_types.to_vec(),
        module_path,
    )?;
    let mut staged = vec![(finish(spec, module_install)?, module_install)];
    for (stage, path) in [(Stage::Dual, stage1), (Stage::NewOnly, stage2)] {
        let file = finish(stage_spec(plan, stage, args, device_types)?, path)?;
        if carries_tenant_token(plan, stage, args.mode) {
            owner_only(&file)?;
        }
        staged.push((file, path));
    }
    for (from, to) in staged {
        std::fs::rename(&from, to).with_context(|| {
            format!(
                "{}: cannot move the finished artifact into place",
                to.display()
            )
        })?;
    }
    Ok(())
}

/// Whether a stage artifact holds a `TenantToken`: the new tenant's (in `plan.json`), or the
/// captured one inside the rendered files of replace mode.
fn carries_tenant_token(plan: &MigrationPlan, stage: Stage, mode: ModeArg) -> bool {
    plan.options.new_tenant_token.is_some()
        || (mode == ModeArg::Replace
            && plan
                .stage_files(stage)
                .tenant_token()
                .is_some_and(|t| !t.is_empty()))
}

/// Mode 0600: a file holding a secret must not be readable by group or others.
fn owner_only(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("{}: cannot make it owner-only (0600)", path.display()))
}

/// One stage artifact: payload type `server-migration`, `plan.json` (+ rendered files in
/// replace mode); stage 1 provides `server-migration.stage: dual`, stage 2 depends on it.
fn stage_spec(
    plan: &MigrationPlan,
    stage: Stage,
    args: &ArtifactsArgs,
    device_types: &[String],
) -> Result<ArtifactSpec> {
    let mode = match args.mode {
        ModeArg::Patch => Mode::Patch,
        ModeArg::Replace => Mode::Replace,
    };
    let mut stage_plan = plan.stage_plan(stage);
    stage_plan.mode = mode;
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
    Ok(stage_module_spec(
        &args.name,
        device_types.to_vec(),
        &stage_plan,
        files,
    ))
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
    device_types: &[String],
    arch: &Arch,
    module: &ModuleBinary,
    paths: &[&PathBuf],
    warnings: &[String],
) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Wrote {} artifacts for device types {}:",
        paths.len(),
        device_types.join(", ")
    );
    for path in paths {
        let (size, sha) = sha256_file(path)?;
        let _ = writeln!(out, "  {}  {size} bytes  sha256 {sha}", path.display());
    }
    let _ = writeln!(
        out,
        "\n  module: {} for {arch} devices ({}), {}",
        module_install_name(&args.name, arch.name),
        Arch::describe_machine(module.machine, module.bits),
        module.linkage()
    );
    let _ = writeln!(
        out,
        "  mode: {}, restart: {}, signed: {}",
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
    let _ = writeln!(out, "  rules: {}", plan.options.client.rules());
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
    for step in crate::plan::procedure(plan, &args.name, Some(arch.name)) {
        let _ = writeln!(out, "  {step}");
    }
    out.push_str(&crate::check_release::release_gate_text(
        &plan.old_server,
        &plan.new_server,
    ));
    Ok(out)
}

/// `--json`: what was written, for scripts (`TenantToken` never appears: artifacts are files).
fn report_json(
    args: &ArtifactsArgs,
    device_types: &[String],
    arch: &Arch,
    module: &ModuleBinary,
    paths: &[&PathBuf; 3],
    warnings: &[String],
) -> Result<serde_json::Value> {
    let mut artifacts = Vec::new();
    for (path, kind, name) in [
        (
            paths[0],
            "module-install",
            module_install_name(&args.name, arch.name),
        ),
        (paths[1], "stage1", format!("{}-stage1-dual", args.name)),
        (paths[2], "stage2", format!("{}-stage2-new-only", args.name)),
    ] {
        let (size, sha) = sha256_file(path)?;
        artifacts.push(serde_json::json!({
            "path": path.display().to_string(),
            "artifact_name": name,
            "stage": kind,
            "size": size,
            "sha256": sha,
        }));
    }
    Ok(serde_json::json!({
        "artifacts": artifacts,
        "device_types": device_types,
        "arch": arch.name,
        "target": args.device.target,
        "module_linkage": if module.is_static() { "static" } else { "dynamic" },
        "signed": args.sign_key.is_some(),
        "client": crate::plan::client_json(args.client.client),
        "warnings": warnings,
    }))
}
