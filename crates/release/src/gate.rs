//! The release gate: would a device at a given migration stage stay on the right servers after
//! installing this artifact? The rules are `menderconf`'s; this module only applies them to
//! the config a release carries and states what the device's own fallback file must hold.

use crate::image::MainConfig;
use menderconf::{ConfigFile, ConfigSet, ServerUrl, Stage, FALLBACK_CONFIG_PATH, MAIN_CONFIG_PATH};
use serde::Serialize;

/// What the gate decided, with every reason; `pass == false` means: do not release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub pass: bool,
    pub artifact: String,
    pub artifact_name: String,
    pub payload_type: String,
    pub stage: String,
    /// The servers the release's own config names, in the client's order (`None`: the release
    /// carries no server setting, or no config at all).
    pub release_servers: Option<Vec<String>>,
    /// The servers a device at `stage` must keep.
    pub expected_servers: Vec<String>,
    /// Why it passes or fails, one sentence each.
    pub reasons: Vec<String>,
    /// What must hold on the device (its fallback file, unknown to the image) for the verdict.
    pub conditions: Vec<String>,
}

pub(crate) struct Gate<'a> {
    pub stage: Stage,
    pub old: &'a ServerUrl,
    pub new: &'a ServerUrl,
}

fn list(servers: &[ServerUrl]) -> String {
    format!("[{}]", ServerUrl::comma_list(servers))
}

impl Gate<'_> {
    pub fn expected(&self) -> Vec<ServerUrl> {
        match self.stage {
            Stage::Dual => vec![self.old.clone(), self.new.clone()],
            Stage::NewOnly => vec![self.new.clone()],
        }
    }

    fn setting(&self) -> String {
        match self.stage {
            Stage::Dual => format!(
                "\"Servers\": [{{\"ServerURL\": \"{}\"}}, {{\"ServerURL\": \"{}\"}}] and no \"ServerURL\"",
                self.old, self.new
            ),
            Stage::NewOnly => format!("\"ServerURL\": \"{}\" and no \"Servers\"", self.new),
        }
    }

    /// Judges the main config a rootfs release installs: (pass, servers, reasons, conditions).
    pub fn judge_main(
        &self,
        origin: &str,
        main: &MainConfig,
    ) -> (bool, Option<Vec<String>>, Vec<String>, Vec<String>) {
        let expected = self.expected();
        let fallback_holds = format!(
            "the device's {FALLBACK_CONFIG_PATH} (data partition, kept across updates) must hold the stage's server setting ({}): true only where the migration wrote it there, i.e. where {MAIN_CONFIG_PATH} had no server key when the stage was installed",
            self.setting()
        );
        match main {
            MainConfig::Absent => (
                true,
                None,
                vec![format!(
                    "the release has no {MAIN_CONFIG_PATH}: the client reads its servers from {FALLBACK_CONFIG_PATH} only"
                )],
                vec![fallback_holds],
            ),
            MainConfig::Symlink { link, target } => (
                true,
                None,
                vec![format!(
                    "{link} in the release is a symlink to {target}: the config lives outside the root filesystem and this release does not change it"
                )],
                vec![format!(
                    "{target} on the device must hold the stage's server setting ({})",
                    self.setting()
                )],
            ),
            MainConfig::NotAFile(kind) => (
                false,
                None,
                vec![format!(
                    "{MAIN_CONFIG_PATH} in the release is a {kind}, not a file: the client cannot read its config"
                )],
                Vec::new(),
            ),
            MainConfig::File { bytes, .. } => {
                let file = match ConfigFile::parse(origin, bytes) {
                    Ok(f) => f,
                    Err(e) => {
                        return (
                            false,
                            None,
                            vec![format!("the release breaks the config: {e}")],
                            Vec::new(),
                        )
                    }
                };
                let set = ConfigSet {
                    main: Some(file.clone()),
                    fallback: None,
                };
                if let Err(e) = set.validate() {
                    return (
                        false,
                        None,
                        vec![format!(
                            "the release breaks the config (the client would refuse or ignore it): {e}"
                        )],
                        Vec::new(),
                    );
                }
                if !has_server_key(&file) {
                    return (
                        true,
                        None,
                        vec![format!(
                            "{origin} sets neither \"ServerURL\" nor \"Servers\": the client takes its servers from {FALLBACK_CONFIG_PATH}"
                        )],
                        vec![fallback_holds],
                    );
                }
                let servers = set.servers();
                let shown = Some(servers.iter().map(|s| s.to_string()).collect());
                let no_fallback_servers = match self.stage {
                    Stage::Dual => format!(
                        "the device's {FALLBACK_CONFIG_PATH} must have no \"ServerURL\" key at all, not even \"\" (the 3.4 client refuses a non-empty one next to \"Servers\", 4.x/5.x ignore the file for any string): the migration removed it there"
                    ),
                    Stage::NewOnly => format!(
                        "the device's {FALLBACK_CONFIG_PATH} must have no \"Servers\" key (it would override \"ServerURL\"): the migration removed it there"
                    ),
                };
                if servers == expected {
                    return (
                        true,
                        shown,
                        vec![format!(
                            "{origin} carries the {} stage's servers {}",
                            self.stage,
                            list(&servers)
                        )],
                        vec![no_fallback_servers],
                    );
                }
                let mut reasons = Vec::new();
                if servers.first() == Some(self.old) && self.stage == Stage::NewOnly {
                    reasons.push(format!(
                        "the release points devices back to the old server {}: {origin} names {}, but after stage 2 devices must use only {}",
                        self.old,
                        list(&servers),
                        self.new
                    ));
                } else if !servers.contains(self.new) && servers.contains(self.old) {
                    reasons.push(format!(
                        "the release points devices back to the old server {}: {origin} names {} without the new server {}",
                        self.old,
                        list(&servers),
                        self.new
                    ));
                } else if !servers.contains(self.new) {
                    reasons.push(format!(
                        "the release points devices away from the migration: {origin} names {}, neither {} nor {}",
                        list(&servers),
                        self.old,
                        self.new
                    ));
                } else if self.stage == Stage::NewOnly {
                    reasons.push(format!(
                        "the release still lists {} besides the new server: after stage 2 devices must use only {}",
                        list(&servers),
                        self.new
                    ));
                } else if servers == [self.new.clone()] {
                    reasons.push(format!(
                        "the release moves devices to the new server only ({origin} names {}) while the fleet is at stage 1 (dual): run stage 2 first, or gate with --stage new-only if that is intended",
                        list(&servers)
                    ));
                } else {
                    reasons.push(format!(
                        "{origin} names {}, not the stage-1 list {} in that order",
                        list(&servers),
                        list(&expected)
                    ));
                }
                reasons.push(format!(
                    "fix: build the release with the stage's config ({}), e.g. MIGRATION_STAGE in meta-migration or the stage overlay of debian-overlay, or make it with `mender-migrate rootfs --from`",
                    self.setting()
                ));
                (false, shown, reasons, Vec::new())
            }
        }
    }
}

/// Whether the file sets `ServerURL` or `Servers` (the client's case-insensitive match).
pub(crate) fn has_server_key(file: &ConfigFile) -> bool {
    file.get("ServerURL").is_some() || file.get("Servers").is_some()
}
