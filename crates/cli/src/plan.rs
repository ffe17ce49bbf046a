//! `plan`: the dry run. Shows both stages' files, a diff against the captured ones, warnings.

use crate::inputs::{ClientChoice, MigrationInputs};
use anyhow::Result;
use clap::Args;
use menderconf::{
    masked, ClientGeneration, ConfigFile, ConfigSet, MigrationPlan, Stage, FALLBACK_CONFIG_PATH,
    MAIN_CONFIG_PATH,
};
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Debug, Args)]
#[command(after_long_help = PLAN_JSON_HELP)]
pub struct PlanArgs {
    #[command(flatten)]
    pub inputs: MigrationInputs,
    #[command(flatten)]
    pub client: ClientChoice,
    /// Print the plan as one JSON object (shape below, under --help); errors as one JSON object
    /// on stderr.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub device: crate::artifacts::DeviceArch,
    /// Artifact name prefix, as given to `artifacts`.
    #[arg(long, default_value = "server-migration")]
    pub name: String,
    /// The key the artifacts will be signed with (checked, and silences the unsigned warning).
    #[arg(long, value_name = "KEY.pem")]
    pub sign_key: Option<PathBuf>,
}

/// The `--json` shape, shown by `plan --help`; a test keeps it in step with the output.
const PLAN_JSON_HELP: &str = r#"JSON output (--json):
  {
    "old_server": "https://old.example.com",      the server the devices leave
    "new_server": "https://new.example.com",      the server they move to
    "module_install": {"artifact_name": "NAME-module-install-ARCH", "arch": "ARCH"} | null
                                                  null without --target/--arch
    "client": {
      "generation": "3" | "4" | "5" | "any",      --client: the devices' Mender client
      "rules": "..."                              which rules were applied
    },
    "tenant_token": {
      "stages": "********abcd" | null,            the new tenant's token both stages set
                                                  (masked); null: devices keep their own
      "route": "..."                              what the servers must accept for this route
    },
    "stage1": {                                   files after stage 1 (dual), by device path
      "/etc/mender/mender.conf": {...} | null,
      "/var/lib/mender/mender.conf": {...} | null
    },
    "stage2": { same paths },                     files after stage 2 (new-only)
    "warnings": ["...", ...]
  }
  A file's value is its whole JSON object (TenantToken masked); null means the file is absent
  after that stage (or, for a file not captured, that the stage leaves the device's own file
  alone and checks it on the device)."#;

pub fn run(args: &PlanArgs) -> Result<()> {
    let arch = args.device.resolve()?.map(|(arch, _)| arch.name);
    let plan = args.inputs.plan_for(args.client.client)?;
    if let Some(path) = &args.sign_key {
        crate::artifacts::load_signing_key(path)?;
    }
    let warnings = all_warnings(&plan, args.sign_key.is_some());
    let report = PlanReport {
        plan: &plan,
        warnings: &warnings,
        name: &args.name,
        arch,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.json())?);
    } else {
        print!("{}", plan_text(report, &args.inputs));
    }
    Ok(())
}

/// The engine's warnings plus the ones only the CLI can know (signing).
pub fn all_warnings(plan: &MigrationPlan, signing: bool) -> Vec<String> {
    let mut warnings: Vec<String> = plan.warnings.iter().map(|w| w.to_string()).collect();
    if let (Some(key), false) = (plan.artifact_verify_key(), signing) {
        warnings.push(format!(
            "the device verifies artifact signatures (ArtifactVerifyKey = {key}) but no --sign-key was given: it will refuse the unsigned artifacts"
        ));
    }
    warnings
}

fn files_json(set: &ConfigSet) -> Value {
    let file = |f: &Option<ConfigFile>| {
        f.as_ref()
            .map_or(Value::Null, |f| Value::Object(masked(&f.object)))
    };
    json!({ MAIN_CONFIG_PATH: file(&set.main), FALLBACK_CONFIG_PATH: file(&set.fallback) })
}

/// What `plan` prints, as JSON or as text: the plan, every warning, and the artifact names the
/// `artifacts` command will use (prefix `name`, module for `arch` when known).
#[derive(Clone, Copy)]
struct PlanReport<'a> {
    plan: &'a MigrationPlan,
    warnings: &'a [String],
    name: &'a str,
    arch: Option<&'a str>,
}

impl PlanReport<'_> {
    /// The machine-readable plan; `TenantToken` masked like everything printed.
    fn json(self) -> Value {
        let PlanReport {
            plan,
            warnings,
            name,
            arch,
        } = self;
        let mut out = Map::new();
        out.insert("old_server".into(), json!(plan.old_server));
        out.insert("new_server".into(), json!(plan.new_server));
        out.insert(
        "module_install".into(),
        arch.map_or(Value::Null, |arch| {
            json!({ "artifact_name": crate::artifacts::module_install_name(name, arch), "arch": arch })
        }),
    );
        out.insert("client".into(), client_json(plan.options.client));
        out.insert(
            "tenant_token".into(),
            json!({
                "stages": plan.options.new_tenant_token.as_ref().map(|t| t.masked()),
                "route": plan.tenant_route,
            }),
        );
        out.insert("stage1".into(), files_json(&plan.stage1));
        out.insert("stage2".into(), files_json(&plan.stage2));
        out.insert("warnings".into(), json!(warnings));
        Value::Object(out)
    }
}

/// `{"generation": "5", "rules": "..."}`: whose rules were applied.
pub fn client_json(client: ClientGeneration) -> Value {
    json!({ "generation": client.as_str(), "rules": client.rules() })
}

fn masked_text(file: &Option<ConfigFile>) -> String {
    match file {
        Some(f) => {
            let mut text = serde_json::to_string_pretty(&masked(&f.object)).expect("JSON map");
            text.push('\n');
            text
        }
        None => String::new(),
    }
}

/// The plan for a person: servers, rules, artifacts, warnings and the procedure.
fn plan_text(report: PlanReport<'_>, inputs: &MigrationInputs) -> String {
    let PlanReport {
        plan,
        warnings,
        name,
        arch,
    } = report;
    let mut out = String::new();
    let _ = writeln!(out, "Migration plan");
    let _ = writeln!(out, "  old server: {}", plan.old_server);
    let _ = writeln!(out, "  new server: {}", plan.new_server);
    let _ = writeln!(out, "  rules:      {}", plan.options.client.rules());
    let _ = writeln!(
        out,
        "  tenant:     {}",
        match &plan.options.new_tenant_token {
            Some(t) => format!("both stages set the new tenant's token ({})", t.masked()),
            None => "the devices keep their own token (if any)".to_string(),
        }
    );
    match arch {
        Some(arch) => {
            let _ = writeln!(
                out,
                "  module:     {}.mender (update module for {arch} devices)",
                crate::artifacts::module_install_name(name, arch)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  module:     {}-module-install-ARCH.mender: pass --target (or --arch) to name the devices' architecture",
                name
            );
        }
    }
    let _ = writeln!(
        out,
        "  captured:   {} (as {MAIN_CONFIG_PATH})",
        inputs.config.display()
    );
    match &inputs.fallback_config {
        Some(p) => {
            let _ = writeln!(
                out,
                "              {} (as {FALLBACK_CONFIG_PATH})",
                p.display()
            );
        }
        None => {
            let _ = writeln!(out, "              no fallback captured: {FALLBACK_CONFIG_PATH} must not hold ServerURL or Servers on the devices");
        }
    }
    for (stage, before, title) in [
        (
            Stage::Dual,
            &plan.captured,
            "Stage 1 (dual): deploy from the OLD server",
        ),
        (
            Stage::NewOnly,
            &plan.stage1,
            "Stage 2 (new-only): deploy from the NEW server, after the device moved",
        ),
    ] {
        let after = plan.stage_files(stage);
        let _ = writeln!(out, "\n{title}");
        for (path, b, a) in [
            (MAIN_CONFIG_PATH, &before.main, &after.main),
            (FALLBACK_CONFIG_PATH, &before.fallback, &after.fallback),
        ] {
            if b.is_none() && a.is_none() {
                continue;
            }
            let (old_text, new_text) = (masked_text(b), masked_text(a));
            let _ = writeln!(out, "\n  {path}:");
            for line in new_text.lines() {
                let _ = writeln!(out, "    {line}");
            }
            if old_text == new_text {
                let _ = writeln!(out, "  (unchanged)");
            } else {
                let diff = similar::TextDiff::from_lines(&old_text, &new_text);
                let _ = write!(
                    out,
                    "\n{}",
                    diff.unified_diff()
                        .context_radius(2)
                        .header(&format!("{path} (before)"), &format!("{path} (after)"))
                );
            }
        }
    }
    let _ = writeln!(out, "\nWarnings:");
    if warnings.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for w in warnings {
        let _ = writeln!(out, "  - {w}");
    }
    let _ = writeln!(out, "\nProcedure:");
    for step in procedure(plan, name, arch) {
        let _ = writeln!(out, "  {step}");
    }
    out.push_str(&crate::check_release::release_gate_text(
        &plan.old_server,
        &plan.new_server,
    ));
    out
}

/// The seed procedure, made concrete for this plan.
pub fn procedure(plan: &MigrationPlan, name: &str, arch: Option<&str>) -> Vec<String> {
    let module = crate::artifacts::module_install_name(name, arch.unwrap_or("ARCH"));
    vec![
        format!("0. Make sure {} knows this fleet's tenant (clone) and keep a backup of both servers' device lists.", plan.new_server),
        format!("1. Upload {module}.mender and {name}-stage1-dual.mender to {} and deploy both (module first).", plan.old_server),
        "2. Wait until every device reports stage 1 success (inventory `server_migration_stage=dual`).".into(),
        format!("3. Preauthorize each device on {} with its identity and public key from the old server.", plan.new_server),
        format!("4. Reject (do not decommission) the devices on {}: each fails over to {} on its next request.", plan.old_server, plan.new_server),
        format!("5. Upload {name}-stage2-new-only.mender to {} and deploy it from there; never from the old server.", plan.new_server),
    ]
}
