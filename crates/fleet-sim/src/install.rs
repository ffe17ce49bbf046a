//! What the simulated client does with a downloaded artifact: verify and read it with
//! `menderartifact`, check depends against its provides, run the payload's update module on the
//! in-memory config files (the `server-migration` module through the project's real
//! `menderconf::StagePlan`, exactly as the on-device module calls it), and apply provides/clears.

use menderconf::{
    ConfigFile, ConfigSet, Mode, Restart, StagePlan, FALLBACK_CONFIG_PATH, MAIN_CONFIG_PATH,
    MODULE_NAME, PLAN_FILE_NAME,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read as _;

/// Where update modules live; a `single-file` artifact writing here installs a module.
pub(crate) const MODULES_DIR: &str = "/usr/share/mender/modules/v3";

/// A verified artifact: its header facts and the files of its (only) payload.
pub(crate) struct ParsedArtifact {
    pub(crate) name: String,
    pub(crate) device_types: Vec<String>,
    pub(crate) payload_type: String,
    pub(crate) provides: BTreeMap<String, String>,
    pub(crate) depends: BTreeMap<String, Value>,
    pub(crate) clears_provides: Vec<String>,
    pub(crate) files: Vec<(String, Vec<u8>)>,
}

/// Verifies every checksum (`menderartifact::read_info`) and extracts the payload files.
pub(crate) fn parse_artifact(bytes: &[u8]) -> Result<ParsedArtifact, String> {
    let info = menderartifact::read_info(bytes).map_err(|e| format!("reading artifact: {e}"))?;
    if info.payload_types.len() != 1 {
        return Err(format!(
            "artifact has {} payloads; the client installs exactly one",
            info.payload_types.len()
        ));
    }
    let files = payload_files(bytes).map_err(|e| format!("reading the payload: {e}"))?;
    Ok(ParsedArtifact {
        name: info.name,
        device_types: info.device_types,
        payload_type: info.payload_types[0].clone(),
        provides: info.provides,
        depends: info.depends,
        clears_provides: info.clears_provides,
        files,
    })
}

/// The files of `data/0000.tar[.gz]` (checksums were verified by `read_info`).
fn payload_files(bytes: &[u8]) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut outer = tar::Archive::new(bytes);
    for entry in outer.entries()? {
        let entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        let inner: Box<dyn std::io::Read> = match name.as_str() {
            "data/0000.tar.gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            "data/0000.tar" => Box::new(entry),
            _ => continue,
        };
        let mut files = Vec::new();
        for file in tar::Archive::new(inner).entries()? {
            let mut file = file?;
            let name = file.path()?.to_string_lossy().into_owned();
            let mut content = Vec::new();
            file.read_to_end(&mut content)?;
            files.push((name, content));
        }
        return Ok(files);
    }
    Ok(Vec::new())
}

fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// The client's own check of `artifact_depends` against its stored provides (the open-source
/// server does not filter on depends). `Err` = refused before the module runs.
pub(crate) fn check_depends(
    artifact: &ParsedArtifact,
    device_type: &str,
    provides: &BTreeMap<String, String>,
) -> Result<(), String> {
    if !artifact.device_types.iter().any(|t| t == device_type) {
        return Err(format!(
            "Artifact device type doesn't match: {device_type} not in {:?}",
            artifact.device_types
        ));
    }
    for (key, wanted) in &artifact.depends {
        let wanted = strings(wanted);
        let have = if key == "device_type" {
            Some(device_type)
        } else {
            provides.get(key).map(String::as_str)
        };
        match have {
            None => return Err(format!("Missing '{key}' in provides, required by artifact depends")),
            Some(v) if !wanted.contains(&v) => {
                return Err(format!(
                    "Provides value '{v}' doesn't match any of the '{key}' artifact depends ({wanted:?})"
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

fn glob_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(tail) = text.strip_prefix(prefix) else {
                return false;
            };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob_match(rest, &tail[i..]))
        }
    }
}

/// Provides after a commit: drop what `clears_artifact_provides` matches, add the artifact's.
pub(crate) fn commit_provides(provides: &mut BTreeMap<String, String>, artifact: &ParsedArtifact) {
    provides.retain(|k, _| !artifact.clears_provides.iter().any(|p| glob_match(p, k)));
    for (k, v) in &artifact.provides {
        provides.insert(k.clone(), v.clone());
    }
    provides.insert("artifact_name".into(), artifact.name.clone());
}

/// The device's config files (`None` = absent), the way a filesystem holds them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ConfigFiles {
    pub(crate) main: Option<Vec<u8>>,
    pub(crate) fallback: Option<Vec<u8>>,
}

impl ConfigFiles {
    /// What a client of `generation` loads from these files at start.
    pub(crate) fn load(
        &self,
        generation: crate::ClientGeneration,
    ) -> Result<crate::config::LoadedConfig, String> {
        crate::config::load(generation, self.main.as_deref(), self.fallback.as_deref())
    }

    /// The server list such a client would use (empty when it cannot load the files).
    pub(crate) fn servers(&self, generation: crate::ClientGeneration) -> Vec<String> {
        self.load(generation).map(|c| c.servers).unwrap_or_default()
    }
}

/// Result of the `server-migration` module's ArtifactInstall.
pub(crate) struct StageInstall {
    pub(crate) new: ConfigFiles,
    /// `NeedsArtifactReboot`: `Automatic` for `restart: reboot` when something changed.
    pub(crate) reboot: bool,
    /// `restart: service`: the client is restarted after Cleanup instead.
    pub(crate) service_restart: bool,
}

fn parse_set(files: &ConfigFiles) -> Result<ConfigSet, String> {
    let parse = |path: &str, bytes: &Option<Vec<u8>>| {
        bytes
            .as_deref()
            .map(|b| ConfigFile::parse(path, b))
            .transpose()
            .map_err(|e| e.to_string())
    };
    Ok(ConfigSet {
        main: parse(MAIN_CONFIG_PATH, &files.main)?,
        fallback: parse(FALLBACK_CONFIG_PATH, &files.fallback)?,
    })
}

/// The `server-migration` module's ArtifactInstall on in-memory files: the plan from
/// `plan.json`, `StagePlan::apply` (patch) or `check_replacement` (replace), and the final
/// validation of the exact bytes. `Err` = exit 1, nothing changed.
pub(crate) fn server_migration_install(
    payload: &[(String, Vec<u8>)],
    current: &ConfigFiles,
) -> Result<StageInstall, String> {
    let plan_bytes = payload
        .iter()
        .find(|(n, _)| n == PLAN_FILE_NAME)
        .map(|(_, b)| b)
        .ok_or_else(|| {
            format!("the payload has no {PLAN_FILE_NAME}: not a {MODULE_NAME} artifact")
        })?;
    let plan = StagePlan::from_json(plan_bytes).map_err(|e| format!("{PLAN_FILE_NAME}: {e}"))?;
    let current_set = parse_set(current)?;
    let new = match plan.mode {
        Mode::Patch => {
            let next = plan.apply(&current_set).map_err(|e| e.to_string())?;
            let rendered = |before: &Option<ConfigFile>,
                            after: &Option<ConfigFile>,
                            bytes: &Option<Vec<u8>>| match after {
                None => None,
                Some(a) if Some(a) == before.as_ref() => bytes.clone(),
                Some(a) => Some(a.to_bytes()),
            };
            ConfigFiles {
                main: rendered(&current_set.main, &next.main, &current.main),
                fallback: rendered(&current_set.fallback, &next.fallback, &current.fallback),
            }
        }
        Mode::Replace => {
            let files = plan.files.as_ref().ok_or("replace plan without `files`")?;
            let pick = |path: &str, cur: &Option<Vec<u8>>| -> Result<Option<Vec<u8>>, String> {
                match files.get(path) {
                    None => Ok(cur.clone()),
                    Some(None) => Ok(None),
                    Some(Some(name)) => payload
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, b)| Some(b.clone()))
                        .ok_or_else(|| format!("payload file {name} for {path} is missing")),
                }
            };
            let new = ConfigFiles {
                main: pick(MAIN_CONFIG_PATH, &current.main)?,
                fallback: pick(FALLBACK_CONFIG_PATH, &current.fallback)?,
            };
            let replacement = parse_set(&new).map_err(|e| format!("payload file: {e}"))?;
            plan.check_replacement(&current_set, &replacement)
                .map_err(|e| e.to_string())?;
            new
        }
    };
    parse_set(&new)?.validate().map_err(|e| e.to_string())?;
    let changed = &new != current;
    Ok(StageInstall {
        new,
        reboot: changed && plan.restart == Restart::Reboot,
        service_restart: changed && plan.restart == Restart::Service,
    })
}

/// A `single-file` payload: `(dest_dir, filename)` it installs.
pub(crate) fn single_file_target(
    payload: &[(String, Vec<u8>)],
) -> Result<(String, String), String> {
    let get = |name: &str| {
        payload
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| String::from_utf8_lossy(b).trim().to_string())
            .ok_or_else(|| format!("single-file payload without `{name}`"))
    };
    Ok((get("dest_dir")?, get("filename")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage_artifact(stage: menderconf::Stage) -> Vec<u8> {
        use menderconf::ServerUrl;
        let plan = StagePlan::new(
            stage,
            Mode::Patch,
            ServerUrl::parse("https://old.example").unwrap(),
            ServerUrl::parse("https://new.example").unwrap(),
        );
        let spec = mender_release::stage_module_spec("sim", vec!["dev".into()], &plan, Vec::new());
        let mut out = Vec::new();
        menderartifact::write_artifact(spec, &mut out).unwrap();
        out
    }

    #[test]
    fn stages_through_the_real_plan_code() {
        let old_only = ConfigFiles {
            main: Some(
                b"{\"ServerURL\": \"https://old.example\", \"TenantToken\": \"t\"}".to_vec(),
            ),
            fallback: None,
        };
        let mut provides = BTreeMap::from([("artifact_name".to_string(), "r1".to_string())]);
        let stage2 = parse_artifact(&stage_artifact(menderconf::Stage::NewOnly)).unwrap();
        // Stage 2 first: the client refuses it on depends …
        let err = check_depends(&stage2, "dev", &provides).unwrap_err();
        assert!(err.contains("Missing 'server-migration.stage'"), "{err}");
        // … and the module's precondition would refuse it too.
        assert!(server_migration_install(&stage2.files, &old_only).is_err());

        let stage1 = parse_artifact(&stage_artifact(menderconf::Stage::Dual)).unwrap();
        check_depends(&stage1, "dev", &provides).unwrap();
        assert!(check_depends(&stage1, "other", &provides).is_err());
        let r = server_migration_install(&stage1.files, &old_only).unwrap();
        assert!(r.reboot);
        let dual = r.new;
        let text = String::from_utf8(dual.main.clone().unwrap()).unwrap();
        assert!(
            text.contains("Servers")
                && !text.contains("ServerURL\": \"https://old.example\",\n  \"Tenant")
        );
        commit_provides(&mut provides, &stage1);
        assert_eq!(provides["server-migration.stage"], "dual");
        check_depends(&stage2, "dev", &provides).unwrap();
        let r = server_migration_install(&stage2.files, &dual).unwrap();
        let loaded = r.new.load(crate::ClientGeneration::V3).unwrap();
        assert_eq!(loaded.servers, ["https://new.example"]);
        assert_eq!(loaded.tenant_token, "t");
    }

    #[test]
    fn globs() {
        assert!(glob_match(
            "rootfs-image.cfgmod.*",
            "rootfs-image.cfgmod.version"
        ));
        assert!(!glob_match("rootfs-image.cfgmod.*", "rootfs-image.version"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("artifact_name", "artifact_name"));
    }
}
