//! The `--artifacts DIR` set: what the `artifacts` command wrote (module-install, possibly one
//! per architecture, stage 1, stage 2), read and verified with `menderartifact`, classified by
//! what they provide, and matched to the fleet's device types.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use menderconf::{MODULE_NAME, STAGE_PROVIDES_KEY};
use serde::Serialize;
use serde_json::Value;

/// Which step an artifact serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Installs the `server-migration` update module (deployed from old first).
    ModuleInstall,
    /// Stage 1 (`Servers: [old, new]`), deployed from old.
    Stage1,
    /// Stage 2 (new only), deployed from new.
    Stage2,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ModuleInstall => "module",
            Role::Stage1 => "stage1",
            Role::Stage2 => "stage2",
        }
    }
}

/// One artifact file of the set.
#[derive(Clone, Debug, Serialize)]
pub struct LocalArtifact {
    pub path: PathBuf,
    pub name: String,
    pub role: Role,
    pub device_types: Vec<String>,
    pub size: u64,
}

/// All artifacts of the directory, by role.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ArtifactSet {
    pub artifacts: Vec<LocalArtifact>,
    /// Files that are no migration artifact (ignored) or inconsistent, with the reason.
    pub problems: Vec<String>,
}

fn depends_has(depends: &BTreeMap<String, Value>, key: &str, want: &str) -> bool {
    match depends.get(key) {
        Some(Value::String(s)) => s == want,
        Some(Value::Array(xs)) => xs.iter().any(|x| x.as_str() == Some(want)),
        _ => false,
    }
}

impl ArtifactSet {
    /// Reads every `*.mender` file of `dir` (checksums verified).
    pub fn load(dir: &Path) -> Result<ArtifactSet, String> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            format!(
                "{}: cannot read the artifacts directory: {e}",
                dir.display()
            )
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "mender") && p.is_file())
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(format!(
                "{}: no *.mender files; run `mender-migrate artifacts --out {}` first",
                dir.display(),
                dir.display()
            ));
        }
        let mut set = ArtifactSet::default();
        for path in paths {
            let file = std::fs::File::open(&path)
                .map_err(|e| format!("{}: cannot open: {e}", path.display()))?;
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            let info = menderartifact::read_info(std::io::BufReader::new(file))
                .map_err(|e| format!("{}: not a valid Mender artifact: {e}", path.display()))?;
            let stage = info.provides.get(STAGE_PROVIDES_KEY).map(String::as_str);
            let role = match stage {
                Some("dual") => {
                    if !info.payload_types.iter().any(|t| t == MODULE_NAME) {
                        set.problems.push(format!(
                            "{}: provides {STAGE_PROVIDES_KEY}=dual but its payload type is not {MODULE_NAME}",
                            path.display()
                        ));
                    }
                    Role::Stage1
                }
                Some("new-only") => {
                    if !depends_has(&info.depends, STAGE_PROVIDES_KEY, "dual") {
                        set.problems.push(format!(
                            "{}: stage 2 does not depend on {STAGE_PROVIDES_KEY}=dual, so a device could take it before stage 1",
                            path.display()
                        ));
                    }
                    Role::Stage2
                }
                Some(other) => {
                    set.problems.push(format!(
                        "{}: unknown {STAGE_PROVIDES_KEY}={other}",
                        path.display()
                    ));
                    continue;
                }
                None if info.payload_files.iter().any(|f| f.name == MODULE_NAME) => {
                    Role::ModuleInstall
                }
                None => {
                    set.problems.push(format!(
                        "{}: neither a stage artifact nor the module installer (ignored)",
                        path.display()
                    ));
                    continue;
                }
            };
            set.artifacts.push(LocalArtifact {
                path,
                name: info.name,
                role,
                device_types: info.device_types,
                size,
            });
        }
        Ok(set)
    }

    /// The artifact name each device type gets for `role`; an error names a device type
    /// with two different artifact names for one role.
    pub fn names_by_device_type(&self, role: Role) -> Result<BTreeMap<String, String>, String> {
        let mut m: BTreeMap<String, String> = BTreeMap::new();
        for a in self.artifacts.iter().filter(|a| a.role == role) {
            for t in &a.device_types {
                if let Some(prev) = m.get(t) {
                    if *prev != a.name {
                        return Err(format!(
                            "device type {t:?} has two {} artifacts: {prev:?} and {:?}",
                            role.as_str(),
                            a.name
                        ));
                    }
                }
                m.insert(t.clone(), a.name.clone());
            }
        }
        Ok(m)
    }

    /// Device types of `types` that lack an artifact for some role, with the missing roles.
    pub fn missing_for(&self, types: &BTreeSet<String>) -> Vec<(String, Vec<Role>)> {
        let mut out = Vec::new();
        for t in types {
            let missing: Vec<Role> = [Role::ModuleInstall, Role::Stage1, Role::Stage2]
                .into_iter()
                .filter(|r| {
                    !self
                        .artifacts
                        .iter()
                        .any(|a| a.role == *r && a.device_types.contains(t))
                })
                .collect();
            if !missing.is_empty() {
                out.push((t.clone(), missing));
            }
        }
        out
    }

    /// Files (one per name + device-type set) that must exist on a server for `role`.
    pub fn of_role(&self, role: Role) -> impl Iterator<Item = &LocalArtifact> {
        self.artifacts.iter().filter(move |a| a.role == role)
    }
}
