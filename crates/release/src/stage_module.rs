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

#[cfg(test)]
mod tests {
    use super::*;
    use menderconf::{Mode, ServerUrl};

    #[test]
    fn stage_two_depends_on_stage_one_and_the_plan_comes_first() {
        let url = |u: &str| ServerUrl::parse(u).unwrap();
        for (stage, name, depends) in [
            (Stage::Dual, "f-stage1-dual", None),
            (Stage::NewOnly, "f-stage2-new-only", Some("dual")),
        ] {
            let plan = StagePlan::new(
                stage,
                Mode::Patch,
                url("https://a.example"),
                url("https://b.example"),
            );
            let extra = PayloadFile::from_bytes("etc-mender.conf", b"{}".to_vec(), 0o600);
            let spec = stage_module_spec("f", vec!["dt".into()], &plan, vec![extra]);
            assert_eq!(spec.name, name);
            assert_eq!(spec.device_types, ["dt"]);
            assert_eq!(
                spec.provides.get(STAGE_PROVIDES_KEY),
                Some(&stage.to_string())
            );
            assert_eq!(
                spec.depends.get(STAGE_PROVIDES_KEY).map(String::as_str),
                depends
            );
            let Payload::Module {
                type_name, files, ..
            } = &spec.payload
            else {
                panic!("{name}: not a module payload");
            };
            assert_eq!(type_name, MODULE_NAME);
            let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, [PLAN_FILE_NAME, "etc-mender.conf"]);
        }
    }
}
