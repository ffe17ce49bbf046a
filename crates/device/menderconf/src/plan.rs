//! The two migration stages: the plan a stage artifact carries, how it applies to a device's
//! files, and the host-side plan for both stages from a captured config.

use crate::{ConfigError, ConfigSet, ServerUrl, Warning};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt;

/// Which config a stage leaves on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Stage 1, deployed from the old server: `Servers: [old, new]`, no `ServerURL`.
    Dual,
    /// Stage 2, deployed from the new server: `ServerURL: new`, no `Servers`.
    NewOnly,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Dual => "dual",
            Stage::NewOnly => "new-only",
        })
    }
}

/// What the stage payload carries: the plan only (the module patches the device's own files) or
/// the fully rendered files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Patch,
    Replace,
}

/// How the client picks up the new config (it reads it only at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    #[default]
    Reboot,
    Service,
}

/// The payload of a stage artifact (`plan.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagePlan {
    pub format: u32,
    pub mode: Mode,
    pub stage: Stage,
    pub old_server: ServerUrl,
    pub new_server: ServerUrl,
    #[serde(default)]
    pub restart: Restart,
    /// Replace mode only: device path → payload file name holding its content, or `null` when the
    /// file must be absent afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<BTreeMap<String, Option<String>>>,
}

impl StagePlan {
    pub const FORMAT: u32 = 1;

    pub fn new(stage: Stage, mode: Mode, old: ServerUrl, new: ServerUrl) -> StagePlan {
        StagePlan {
            format: Self::FORMAT,
            mode,
            stage,
            old_server: old,
            new_server: new,
            restart: Restart::Reboot,
            files: None,
        }
    }

    /// Parses `plan.json`, refusing unknown formats and malformed plans.
    pub fn from_json(bytes: &[u8]) -> Result<StagePlan, ConfigError> {
        let plan: StagePlan =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Plan(e.to_string()))?;
        if plan.format != Self::FORMAT {
            return Err(ConfigError::Plan(format!(
                "format {} is not supported (this module reads format {}); update the module first",
                plan.format,
                Self::FORMAT
            )));
        }
        if plan.old_server == plan.new_server {
            return Err(ConfigError::SameServer {
                url: plan.new_server.to_string(),
            });
        }
        match (plan.mode, &plan.files) {
            (Mode::Replace, None) => {
                return Err(ConfigError::Plan("replace mode needs `files`".into()))
            }
            (Mode::Patch, Some(_)) => {
                return Err(ConfigError::Plan(
                    "patch mode must not carry `files`".into(),
                ))
            }
            _ => {}
        }
        Ok(plan)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("a plan always serialises");
        bytes.push(b'\n');
        bytes
    }

    /// The servers the device must end up with.
    pub fn target_servers(&self) -> Vec<ServerUrl> {
        match self.stage {
            Stage::Dual => vec![self.old_server.clone(), self.new_server.clone()],
            Stage::NewOnly => vec![self.new_server.clone()],
        }
    }

    /// Refuses a device this stage must not touch: stage 1 only where the device talks to the
    /// old server first (or is already dual), stage 2 only where it lists the new server.
    fn check_precondition(&self, current: &ConfigSet) -> Result<(), ConfigError> {
        let servers = current.servers();
        let list = || {
            if servers.is_empty() {
                "none".to_string()
            } else {
                servers
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let ok = match self.stage {
            Stage::Dual => {
                servers == self.target_servers() || servers.first() == Some(&self.old_server)
            }
            Stage::NewOnly => servers.contains(&self.new_server),
        };
        if ok {
            return Ok(());
        }
        Err(ConfigError::Precondition(match self.stage {
            Stage::Dual if servers.first() == Some(&self.new_server) => format!(
                "the device already uses the new server {} first (servers: {}); stage 1 would move it back",
                self.new_server,
                list()
            ),
            Stage::Dual => format!(
                "the device's servers are [{}] but this stage-1 artifact was made for old server {}; build it from this device's captured config",
                list(),
                self.old_server
            ),
            Stage::NewOnly => format!(
                "the device's servers are [{}], which do not include the new server {}; install stage 1 (dual) first",
                list(),
                self.new_server
            ),
        }))
    }

    /// Patch mode: the device's files after this stage. Nothing but the server keys changes;
    /// the result is validated with the same rules as the host tool. An error means: refuse,
    /// change nothing.
    pub fn apply(&self, current: &ConfigSet) -> Result<ConfigSet, ConfigError> {
        self.check_precondition(current)?;
        let mut next = current.clone();
        let home_is_main = next.server_home_is_main();
        let servers = match self.stage {
            Stage::Dual => (
                "Servers",
                json!([{ "ServerURL": self.old_server.as_str() }, { "ServerURL": self.new_server.as_str() }]),
            ),
            Stage::NewOnly => ("ServerURL", Value::String(self.new_server.to_string())),
        };
        next.ensure_home().replace_server_keys(Some(servers));
        let other = if home_is_main {
            next.fallback.as_mut()
        } else {
            next.main.as_mut()
        };
        if let Some(other) = other {
            other.replace_server_keys(None);
        }
        self.check_result(&next)?;
        Ok(next)
    }

    /// Replace mode: the same precondition, and the given files must be a valid result.
    pub fn check_replacement(
        &self,
        current: &ConfigSet,
        replacement: &ConfigSet,
    ) -> Result<(), ConfigError> {
        self.check_precondition(current)?;
        self.check_result(replacement)
    }

    fn check_result(&self, result: &ConfigSet) -> Result<(), ConfigError> {
        result.validate()?;
        let servers = result.servers();
        if servers != self.target_servers() {
            return Err(ConfigError::Precondition(format!(
                "the {} result would make the client use [{}] instead of [{}]",
                self.stage,
                servers
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.target_servers()
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            )));
        }
        Ok(())
    }
}

/// Both stages computed from a captured config, for the artifacts, generators and dry run.
#[derive(Debug, Clone)]
pub struct MigrationPlan {
    pub captured: ConfigSet,
    pub stage1: ConfigSet,
    pub stage2: ConfigSet,
    pub warnings: Vec<Warning>,
    pub old_server: ServerUrl,
    pub new_server: ServerUrl,
}

impl MigrationPlan {
    /// The plan a stage artifact carries in patch mode.
    pub fn stage_plan(&self, stage: Stage) -> StagePlan {
        StagePlan::new(
            stage,
            Mode::Patch,
            self.old_server.clone(),
            self.new_server.clone(),
        )
    }

    /// The rendered files of a stage.
    pub fn stage_files(&self, stage: Stage) -> &ConfigSet {
        match stage {
            Stage::Dual => &self.stage1,
            Stage::NewOnly => &self.stage2,
        }
    }

    /// `ArtifactVerifyKey` of the captured config: the device refuses unsigned artifacts.
    pub fn artifact_verify_key(&self) -> Option<String> {
        [&self.captured.main, &self.captured.fallback]
            .into_iter()
            .flatten()
            .filter_map(|f| f.get("ArtifactVerifyKey").and_then(Value::as_str))
            .find(|k| !k.is_empty())
            .map(str::to_string)
    }
}

/// Computes both stages from a captured config: stage 1 by applying the dual plan to the captured
/// files, stage 2 by applying the new-only plan to stage 1's result, exactly as the device will.
pub fn plan_migration(
    captured: ConfigSet,
    new: &ServerUrl,
    old: Option<&ServerUrl>,
) -> Result<MigrationPlan, ConfigError> {
    let mut warnings = captured.validate_rules(false)?;
    let captured_servers = captured.servers();
    let old = match old {
        Some(old) => old.clone(),
        None => captured_servers
            .first()
            .cloned()
            .ok_or_else(|| ConfigError::NoServer {
                origin: captured
                    .main
                    .as_ref()
                    .or(captured.fallback.as_ref())
                    .map(|f| f.origin.clone())
                    .unwrap_or_else(|| "the captured config".into()),
            })?,
    };
    if &old == new {
        return Err(ConfigError::SameServer {
            url: new.to_string(),
        });
    }
    let stage1 =
        StagePlan::new(Stage::Dual, Mode::Patch, old.clone(), new.clone()).apply(&captured)?;
    let stage2 =
        StagePlan::new(Stage::NewOnly, Mode::Patch, old.clone(), new.clone()).apply(&stage1)?;
    if [&captured.fallback, &captured.main]
        .into_iter()
        .flatten()
        .any(|f| {
            f.get("TenantToken")
                .is_some_and(|t| t.as_str().is_some_and(|t| !t.is_empty()))
        })
    {
        warnings.push(Warning(
            "TenantToken is sent to every server in `Servers` (entries cannot carry their own token): the new server must accept the same tenant token, e.g. a cloned tenant".into(),
        ));
    }
    if let Some(cert) = [&captured.main, &captured.fallback]
        .into_iter()
        .flatten()
        .find_map(|f| {
            f.get("ServerCertificate")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
        })
    {
        warnings.push(Warning(format!(
            "ServerCertificate ({cert}) is the only extra CA for both servers: the new server's certificate must chain to it or to the system CAs"
        )));
    }
    if new.scheme() == "http" {
        warnings.push(Warning(format!("the new server {new} uses plain HTTP")));
    }
    Ok(MigrationPlan {
        captured,
        stage1,
        stage2,
        warnings,
        old_server: old,
        new_server: new.clone(),
    })
}
