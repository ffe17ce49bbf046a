//! The stage artifacts of the `server-migration` update module: one builder shared by the CLI's
//! `artifacts`, the fleet tests and the simulator's tests, so the payload layout and the
//! provides/depends that order the two stages are written down once.

use menderartifact::{ArtifactSpec, Payload, PayloadFile};
use menderconf::{Stage, StagePlan, MODULE_NAME, PLAN_FILE_NAME, STAGE_PROVIDES_KEY};

/// The artifact name suffix of a stage: `stage1-dual` or `stage2-new-only`.
pub fn stage_suffix(stage: Stage) -> &'static str {
    match stage {
        Stage::Dual => "stage1-dual",
        Stage::NewOnly => "stage2-new-only",
    }
}

/// The stage artifact `<prefix>-<stage suffix>` for `plan.stage`: payload type
/// `server-migration` with `plan.json` first, then `files` (the rendered configs of replace
/// mode). Stage 1 provides `server-migration.stage: dual`; stage 2 provides `new-only` and
/// depends on `dual`, so a device refuses stage 2 before stage 1.
pub fn stage_module_spec(
    prefix: &str,
    device_types: Vec<String>,
    plan: &StagePlan,
    files: Vec<PayloadFile>,
) -> ArtifactSpec {
    let stage = plan.stage;
    let mut payload_files = vec![PayloadFile::from_bytes(
        PLAN_FILE_NAME,
        plan.to_json(),
        0o644,
    )];
    payload_files.extend(files);
    let mut spec = ArtifactSpec::new(
        format!("{prefix}-{}", stage_suffix(stage)),
        device_types,
        Payload::Module {
            type_name: MODULE_NAME.into(),
            files: payload_files,
            meta_data: None,
        },
    );
    spec.provides
        .insert(STAGE_PROVIDES_KEY.into(), stage.to_string());
    if stage == Stage::NewOnly {
        spec.depends
            .insert(STAGE_PROVIDES_KEY.into(), Stage::Dual.to_string());
    }
    spec
}
