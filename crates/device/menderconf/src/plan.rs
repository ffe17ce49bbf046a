//! The two migration stages: the plan a stage artifact carries, how it applies to a device's
//! files, and the host-side plan for both stages from a captured config.

use crate::{ClientGeneration, ConfigError, ConfigSet, ServerUrl, TenantToken, Warning};
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
    /// The new server's tenant token, set by both stages (the client sends one token to every
    /// server). `None`: the device's own token is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_token: Option<TenantToken>,
    /// Further servers the device lists today that stay, after the new one (DR/HA servers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_servers: Vec<ServerUrl>,
    /// Stage 1 may drop servers the device lists besides old, new and `keep_servers` (the user
    /// named the old server explicitly and was told which are dropped).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop_other_servers: bool,
    /// Whose rules apply: the host's `--client`. The module refuses a device running another
    /// generation and, for `any`, applies the rules of the client it finds. Left out of
    /// `plan.json` when `any`, so modules from before this field still read the plan.
    #[serde(default, skip_serializing_if = "ClientGeneration::is_any")]
    pub client: ClientGeneration,
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
            tenant_token: None,
            keep_servers: Vec::new(),
            drop_other_servers: false,
            client: ClientGeneration::Any,
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
        check_keep_servers(&plan.keep_servers, &plan.old_server, &plan.new_server)?;
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
        let mut list = match self.stage {
            Stage::Dual => vec![self.old_server.clone(), self.new_server.clone()],
            Stage::NewOnly => vec![self.new_server.clone()],
        };
        list.extend(self.keep_servers.iter().cloned());
        list
    }

    /// Servers the device lists that this stage 1 would drop without being allowed to.
    fn unplanned_servers(&self, servers: &[ServerUrl]) -> Vec<ServerUrl> {
        if self.drop_other_servers {
            return Vec::new();
        }
        servers
            .iter()
            .skip(1)
            .filter(|s| **s != self.new_server && !self.keep_servers.contains(s))
            .cloned()
            .collect()
    }

    /// Refuses a device this stage must not touch: stage 1 only where the device talks to the
    /// old server first (or is already dual), stage 2 only where it lists the new server.
    fn check_precondition(&self, current: &ConfigSet) -> Result<(), ConfigError> {
        let servers = current.servers();
        let list = || {
            if servers.is_empty() {
                "none".to_string()
            } else {
                ServerUrl::comma_list(&servers)
            }
        };
        let ok = match self.stage {
            Stage::Dual => {
                servers == self.target_servers() || servers.first() == Some(&self.old_server)
            }
            Stage::NewOnly => servers.contains(&self.new_server),
        };
        if ok && self.stage == Stage::Dual && servers != self.target_servers() {
            let extra = self.unplanned_servers(&servers);
            if !extra.is_empty() {
                return Err(ConfigError::ExtraServers {
                    servers: list(),
                    extra: ServerUrl::comma_list(&extra),
                });
            }
        }
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
        let target = self.target_servers();
        // One server: `ServerURL` (what a single-server client is set up with); several:
        // `Servers`. Never both, never a blank `ServerURL`.
        let servers = if target.len() == 1 {
            ("ServerURL", Value::String(target[0].to_string()))
        } else {
            (
                "Servers",
                Value::Array(
                    target
                        .iter()
                        .map(|s| json!({ "ServerURL": s.as_str() }))
                        .collect(),
                ),
            )
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
        if let Some(token) = &self.tenant_token {
            next.set_tenant_token(token.expose());
        }
        self.check_result(&next)?;
        Ok(next)
    }

    /// Replace mode: the same precondition, the given files must be a valid result, and they
    /// must not change anything but the server keys (and the token, if the plan sets one).
    ///
    /// Replace mode writes the captured device's files; a device whose other settings differ
    /// (its own `RootfsPartA`, poll intervals, ...) would silently get the captured values, so it
    /// is refused with nothing changed: use patch mode for fleets whose files differ.
    pub fn check_replacement(
        &self,
        current: &ConfigSet,
        replacement: &ConfigSet,
    ) -> Result<(), ConfigError> {
        self.check_precondition(current)?;
        self.check_result(replacement)?;
        let mut managed = vec!["ServerURL", "Servers"];
        if self.tenant_token.is_some() {
            managed.push("TenantToken");
        }
        // What the client ends up with (fallback, then main overriding key by key): moving a
        // key from one file to the other is no change.
        let (now, then) = (
            current.effective_settings(&managed),
            replacement.effective_settings(&managed),
        );
        let differing: Vec<&str> = now
            .iter()
            .filter(|(k, (_, v))| then.get(*k).map(|(_, w)| w) != Some(v))
            .chain(then.iter().filter(|(k, _)| !now.contains_key(*k)))
            .map(|(_, (name, _))| name.as_str())
            .collect();
        if !differing.is_empty() {
            return Err(ConfigError::Precondition(format!(
                "this device's own settings differ from the captured config's ({}); replace mode would overwrite them, so nothing was changed: build the artifacts from this device's config, or use --mode patch",
                differing.join(", ")
            )));
        }
        Ok(())
    }

    fn check_result(&self, result: &ConfigSet) -> Result<(), ConfigError> {
        result.validate_for(self.client)?;
        if let Some(token) = &self.tenant_token {
            if result.tenant_token() != Some(token.expose()) {
                return Err(ConfigError::Precondition(format!(
                    "the {} result would not make the client send the new tenant token ({})",
                    self.stage,
                    token.masked()
                )));
            }
        }
        let servers = result.servers();
        if servers != self.target_servers() {
            return Err(ConfigError::Precondition(format!(
                "the {} result would make the client use [{}] instead of [{}]",
                self.stage,
                ServerUrl::comma_list(&servers),
                ServerUrl::comma_list(&self.target_servers()),
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
    /// What the user decided (token, kept servers); carried by every stage plan.
    pub options: PlanOptions,
    /// Whether the captured config names servers besides old and new that stage 1 drops.
    pub drops_servers: bool,
    /// Where this route stands on tenant tokens (§5.3 of the management API notes).
    pub tenant_route: String,
}

/// The user's decisions beyond the two servers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// The new server's tenant token, for both stages.
    pub new_tenant_token: Option<TenantToken>,
    /// Servers of the captured `Servers` list to keep, after the new one.
    pub keep_servers: Vec<ServerUrl>,
    /// The fleet's client generation, whose rules apply (`Any`: the strictest common ones).
    pub client: ClientGeneration,
}

impl MigrationPlan {
    /// The plan a stage artifact carries in patch mode.
    pub fn stage_plan(&self, stage: Stage) -> StagePlan {
        let mut plan = StagePlan::new(
            stage,
            Mode::Patch,
            self.old_server.clone(),
            self.new_server.clone(),
        );
        plan.tenant_token = self.options.new_tenant_token.clone();
        plan.keep_servers = self.options.keep_servers.clone();
        plan.drop_other_servers = self.drops_servers;
        plan.client = self.options.client;
        plan
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

/// `--keep-server` entries must differ from old and new and from each other.
fn check_keep_servers(
    keep: &[ServerUrl],
    old: &ServerUrl,
    new: &ServerUrl,
) -> Result<(), ConfigError> {
    for (i, k) in keep.iter().enumerate() {
        if k == old || k == new || keep[..i].contains(k) {
            return Err(ConfigError::Plan(format!(
                "kept server {k} is the old or new server or listed twice; list each further server once"
            )));
        }
    }
    Ok(())
}

/// Computes both stages from a captured config: stage 1 by applying the dual plan to the captured
/// files, stage 2 by applying the new-only plan to stage 1's result, exactly as the device will.
/// `old` given explicitly means the user chose the server being left: other servers of the
/// captured `Servers` list are then dropped (with a warning naming them) unless kept.
pub fn plan_migration(
    captured: ConfigSet,
    new: &ServerUrl,
    old: Option<&ServerUrl>,
) -> Result<MigrationPlan, ConfigError> {
    plan_migration_with(captured, new, old, PlanOptions::default())
}

/// [`plan_migration`] with the user's decisions on tokens and further servers.
pub fn plan_migration_with(
    captured: ConfigSet,
    new: &ServerUrl,
    old: Option<&ServerUrl>,
    options: PlanOptions,
) -> Result<MigrationPlan, ConfigError> {
    let mut warnings = captured.validate_rules(false, options.client)?;
    let captured_servers = captured.servers();
    let old_given = old.is_some();
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
    check_keep_servers(&options.keep_servers, &old, new)?;
    if let Some(k) = options
        .keep_servers
        .iter()
        .find(|k| !captured_servers.contains(k))
    {
        return Err(ConfigError::Plan(format!(
            "--keep-server {k} is not in the captured config's servers ({}); keep only servers the devices list today",
            ServerUrl::comma_list(&captured_servers)
        )));
    }
    let dropped: Vec<&ServerUrl> = captured_servers
        .iter()
        .skip(1)
        .filter(|s| **s != old && *s != new && !options.keep_servers.contains(s))
        .collect();
    let drops_servers = old_given && !dropped.is_empty();
    if drops_servers {
        warnings.push(Warning(format!(
            "stage 1 drops {} from the devices' servers (not kept with --keep-server)",
            ServerUrl::comma_list(dropped.iter().copied())
        )));
    }
    let mut stage_plan = StagePlan::new(Stage::Dual, Mode::Patch, old.clone(), new.clone());
    stage_plan.tenant_token = options.new_tenant_token.clone();
    stage_plan.keep_servers = options.keep_servers.clone();
    stage_plan.drop_other_servers = drops_servers;
    stage_plan.client = options.client;
    let stage1 = stage_plan.apply(&captured)?;
    stage_plan.stage = Stage::NewOnly;
    let stage2 = stage_plan.apply(&stage1)?;
    let captured_token = captured.tenant_token().filter(|t| !t.is_empty());
    let tenant_route = tenant_route(captured_token, options.new_tenant_token.as_ref());
    if captured_token.is_some() || options.new_tenant_token.is_some() {
        warnings.push(Warning(format!(
            "TenantToken is sent to every server in `Servers` (entries cannot carry their own token): {tenant_route}"
        )));
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
        options,
        drops_servers,
        tenant_route,
    })
}

/// What the servers must accept for this token route (one token per device, for all servers):
/// what the tool knows from the configs, and what only the servers can tell.
fn tenant_route(captured: Option<&str>, new: Option<&TenantToken>) -> String {
    match (captured, new) {
        (None, None) => "no tenant token: fine between open-source servers; a hosted or Enterprise (multi-tenant) new server needs --new-tenant-token-file".into(),
        (None, Some(t)) => format!(
            "both stages carry the new tenant's token ({}); the old server must ignore tokens (open source) — only the servers can tell",
            t.masked()
        ),
        (Some(c), None) => format!(
            "the devices keep their token ({}): the new server must accept it — an open-source server (ignores it), a clone of the same tenant, or an on-prem Enterprise server with that default tenant; a different hosted tenant cannot work this way (give --new-tenant-token-file only if the old server ignores tokens) — only the servers can tell, the fleet orchestrator checks",
            crate::file::mask(c)
        ),
        (Some(c), Some(t)) if c == t.expose() => format!(
            "the new tenant token equals the devices' token ({}): the new server must be a clone of the same tenant (or ignore tokens) — only the servers can tell",
            t.masked()
        ),
        (Some(c), Some(t)) => format!(
            "both stages replace the devices' token ({}) with the new tenant's ({}): this works only if the old server ignores tokens (open source); if the old server is multi-tenant it rejects the device as soon as stage 1 is active, before the switch is planned — only the servers can tell",
            crate::file::mask(c),
            t.masked()
        ),
    }
}
