//! The in-memory server model (devices, auth sets, tokens, artifacts, deployments) and its
//! optional persistence to `<state-dir>/state.json`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Current time as RFC 3339 with milliseconds (UTC), the format of every timestamp we store.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

/// A random (v4) UUID from the thread-local generator: no system call per id, which matters
/// because every request gets one.
pub(crate) fn new_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

/// Status of one auth set (identity + key pair) of a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthStatus {
    Pending,
    Accepted,
    Rejected,
    Preauthorized,
}

impl AuthStatus {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "accepted" => Some(Self::Accepted),
            "rejected" => Some(Self::Rejected),
            "preauthorized" => Some(Self::Preauthorized),
            _ => None,
        }
    }
}

/// One identity + public key pair a device authenticated (or was preauthorized) with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthSet {
    pub id: String,
    pub identity_data: BTreeMap<String, Value>,
    /// SPKI PEM, normalised (parsed and re-encoded).
    pub pubkey: String,
    pub status: AuthStatus,
    pub ts: String,
}

/// A device as the deviceauth management API shows it, plus its inventory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub identity_data: BTreeMap<String, Value>,
    pub status: AuthStatus,
    pub created_ts: String,
    pub updated_ts: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check_in_time: Option<String>,
    pub decommissioning: bool,
    pub auth_sets: Vec<AuthSet>,
    /// Inventory attributes reported by the device (`name` → `value`).
    #[serde(default)]
    pub inventory: BTreeMap<String, Value>,
    #[serde(default)]
    pub inventory_updated_ts: Option<String>,
    /// Static inventory group (one per device).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Device {
    /// Device status derived from its auth sets, most permissive first, as deviceauth does.
    fn recompute_status(&mut self) {
        let has = |s| self.auth_sets.iter().any(|a| a.status == s);
        self.status = if has(AuthStatus::Accepted) {
            AuthStatus::Accepted
        } else if has(AuthStatus::Preauthorized) {
            AuthStatus::Preauthorized
        } else if has(AuthStatus::Pending) {
            AuthStatus::Pending
        } else {
            AuthStatus::Rejected
        };
        self.updated_ts = now_rfc3339();
    }
}

/// An uploaded artifact: what was read from its header plus where its bytes live.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Artifact {
    pub id: String,
    pub name: String,
    pub description: String,
    pub device_types_compatible: Vec<String>,
    pub payload_types: Vec<String>,
    pub artifact_provides: BTreeMap<String, String>,
    pub artifact_depends: BTreeMap<String, Value>,
    pub clears_artifact_provides: Vec<String>,
    pub signed: bool,
    pub size: u64,
    pub sha256: String,
    /// Payload files (payload index, name, size, sha256) as the artifact's header lists them.
    #[serde(default)]
    pub files: Vec<ArtifactFile>,
    pub modified: String,
    /// File name inside the server's artifact directory.
    pub file_name: String,
}

/// One payload file of an artifact.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArtifactFile {
    pub payload: usize,
    pub name: String,
    pub size: u64,
    pub checksum: String,
}

/// Whether a device with `provides` may install an artifact with `depends`, as the
/// enterprise/hosted server is documented to decide on v2 `next`: every depends key other than
/// `device_type` (matched separately) must be provided with one of the accepted values;
/// otherwise the device's deployment ends as `noartifact`. The open-source server never makes
/// this check (the client refuses by itself and reports `failure`).
pub(crate) fn depends_satisfied(
    depends: &BTreeMap<String, Value>,
    provides: &serde_json::Map<String, Value>,
) -> bool {
    depends
        .iter()
        .filter(|(k, _)| k.as_str() != "device_type")
        .all(|(key, accepted)| {
            let Some(have) = provides.get(key).and_then(Value::as_str) else {
                return false;
            };
            match accepted {
                Value::String(s) => s == have,
                Value::Array(values) => values.iter().any(|v| v.as_str() == Some(have)),
                _ => false,
            }
        })
}

/// Device deployment statuses that end a device's part of a deployment.
pub(crate) const FINAL_STATUSES: &[&str] = &[
    "success",
    "failure",
    "noartifact",
    "already-installed",
    "aborted",
    "decommissioned",
];
/// Statuses a device may report through `PUT …/status`.
pub(crate) const DEVICE_REPORTABLE: &[&str] = &[
    "downloading",
    "installing",
    "rebooting",
    "pause_before_installing",
    "pause_before_rebooting",
    "pause_before_committing",
    "success",
    "failure",
    "already-installed",
];
/// Every key the statistics endpoint must return.
pub(crate) const STATISTICS_KEYS: &[&str] = &[
    "success",
    "pending",
    "downloading",
    "rebooting",
    "installing",
    "failure",
    "noartifact",
    "already-installed",
    "aborted",
    "pause_before_installing",
    "pause_before_rebooting",
    "pause_before_committing",
    "decommissioned",
];

/// One status report a device sent for a deployment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusReport {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub substate: Option<String>,
    pub time: String,
}

/// One device's part of a deployment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceDeployment {
    pub status: String,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub device_type: Option<String>,
    pub substate: Option<String>,
    /// Every status the device reported, in order (for assertions in tests).
    pub history: Vec<StatusReport>,
    /// Log messages uploaded with `PUT …/log`.
    pub log: Option<Vec<Value>>,
    /// Whether the device has asked for updates since the deployment was created; the real
    /// server creates device-deployment records only then, so `devices/list` shows only these.
    #[serde(default)]
    pub polled: bool,
}

impl DeviceDeployment {
    pub(crate) fn is_finished(&self) -> bool {
        FINAL_STATUSES.contains(&self.status.as_str())
    }
}

/// A deployment of one artifact name to a list of devices.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Deployment {
    pub id: String,
    pub name: String,
    pub artifact_name: String,
    pub created: String,
    pub finished: Option<String>,
    pub aborted: bool,
    pub devices: BTreeMap<String, DeviceDeployment>,
    /// Creation order, so `next` offers the oldest unfinished deployment first.
    pub seq: u64,
    #[serde(default)]
    pub force_installation: bool,
    /// SHA-256 of the constructor (name, artifact name, devices, all_devices, force), the
    /// key of the ≥ 4.0 server's "identical active deployment" check.
    #[serde(default)]
    pub constructor_checksum: String,
    /// The group the deployment was created for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Deployment {
    pub(crate) fn status(&self) -> &'static str {
        if self.finished.is_some() || self.devices.values().all(|d| d.is_finished()) {
            "finished"
        } else if self.devices.values().all(|d| d.status == "pending") {
            "pending"
        } else {
            "inprogress"
        }
    }

    pub(crate) fn statistics(&self) -> serde_json::Map<String, Value> {
        let mut stats: serde_json::Map<String, Value> = STATISTICS_KEYS
            .iter()
            .map(|k| (k.to_string(), Value::from(0u64)))
            .collect();
        for dd in self.devices.values() {
            let entry = stats.entry(dd.status.clone()).or_insert(Value::from(0u64));
            *entry = Value::from(entry.as_u64().unwrap_or(0) + 1);
        }
        stats
    }

    pub(crate) fn refresh_finished(&mut self) {
        if self.finished.is_none() && self.devices.values().all(|d| d.is_finished()) {
            self.finished = Some(now_rfc3339());
        }
    }
}

/// The whole server state; everything a restarted mock needs to keep its devices.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub devices: BTreeMap<String, Device>,
    /// Opaque device token → device id.
    pub tokens: HashMap<String, String>,
    /// Revoked token → device id, so requests with a dead token are still attributed.
    #[serde(default)]
    pub revoked_tokens: HashMap<String, String>,
    pub artifacts: BTreeMap<String, Artifact>,
    pub deployments: BTreeMap<String, Deployment>,
    pub next_seq: u64,
    /// Lookups by identity and by device (rebuilt from the fields above when out of step).
    #[serde(skip)]
    index: Index,
}

/// Indexes over [`State`] that turn the per-auth-request scans (identity → device, device →
/// tokens) into hash lookups: with 10,000 devices each scan cost milliseconds under the lock.
#[derive(Debug, Default)]
struct Index {
    /// Canonical identity JSON → device id (one entry per device).
    identities: HashMap<String, String>,
    /// Device id → its live tokens; `tokens` counts them.
    tokens_of: HashMap<String, Vec<String>>,
    tokens: usize,
}

fn identity_key(identity: &BTreeMap<String, Value>) -> String {
    serde_json::to_string(identity).expect("JSON values serialise")
}

/// A deployment constructor: the body of `POST …/deployments` as it is, or of
/// `POST …/deployments/group/{name}` with the group resolved to its devices.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct NewDeployment {
    pub name: String,
    pub artifact_name: String,
    #[serde(default)]
    pub devices: Vec<String>,
    #[serde(default)]
    pub all_devices: bool,
    #[serde(default)]
    pub force_installation: bool,
    /// Set by the group route, never read from a body.
    #[serde(skip)]
    pub group: Option<String>,
}

impl NewDeployment {
    fn checksum(&self) -> String {
        use sha2::Digest as _;
        let canonical = serde_json::json!({
            "name": self.name,
            "artifact_name": self.artifact_name,
            "devices": self.devices,
            "all_devices": self.all_devices,
            "force_installation": self.force_installation,
            "group": self.group,
        });
        sha2::Sha256::digest(canonical.to_string().as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The deployment-creation checks that depend on settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeploymentLimits {
    pub duplicate_check: bool,
    pub max_active: u64,
    /// Status of the cap's refusal (see `Settings::max_active_deployments_status`).
    pub cap_status: u16,
}

/// Result of an authentication request against the registry.
pub(crate) enum AuthOutcome {
    Token {
        device_id: String,
        token: String,
    },
    Refused {
        device_id: String,
        reason: &'static str,
    },
}

/// Reasons a management operation fails; mapped to HTTP codes by the API layer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    /// The active-deployment cap is reached; answered with the configured status.
    #[error("{1}")]
    TooManyDeployments(u16, String),
    /// Preauthorization of an identity that exists (409 with that device as the body).
    #[error("device with the same identity already exists: {0}")]
    DeviceExists(String),
}

impl State {
    /// The device with this identity (identities are unique: auth and preauthorize reuse it).
    fn device_by_identity(&mut self, identity: &BTreeMap<String, Value>) -> Option<&str> {
        if self.index.identities.len() != self.devices.len() {
            self.index.identities = self
                .devices
                .values()
                .map(|d| (identity_key(&d.identity_data), d.id.clone()))
                .collect();
        }
        let id = self.index.identities.get(&identity_key(identity))?;
        self.devices
            .get(id)
            .filter(|d| &d.identity_data == identity)
            .map(|d| d.id.as_str())
    }

    fn remove_device(&mut self, device_id: &str) {
        if let Some(d) = self.devices.remove(device_id) {
            self.index
                .identities
                .remove(&identity_key(&d.identity_data));
        }
    }

    fn issue_token(&mut self, device_id: &str) -> String {
        let token = format!("mock.{}", new_token_secret());
        self.tokens.insert(token.clone(), device_id.to_string());
        self.index
            .tokens_of
            .entry(device_id.to_string())
            .or_default()
            .push(token.clone());
        self.index.tokens += 1;
        token
    }

    /// Devices counted against the device limit (accepted ones).
    pub(crate) fn accepted_count(&self) -> u64 {
        self.devices
            .values()
            .filter(|d| d.status == AuthStatus::Accepted)
            .count() as u64
    }

    /// Removes every token that belongs to `device_id`.
    pub(crate) fn revoke_tokens(&mut self, device_id: &str) {
        if self.index.tokens != self.tokens.len() {
            let mut tokens_of: HashMap<String, Vec<String>> = HashMap::new();
            for (token, device) in &self.tokens {
                tokens_of
                    .entry(device.clone())
                    .or_default()
                    .push(token.clone());
            }
            self.index.tokens_of = tokens_of;
            self.index.tokens = self.tokens.len();
        }
        for token in self.index.tokens_of.remove(device_id).unwrap_or_default() {
            self.index.tokens -= 1;
            if self.tokens.remove(&token).is_some() {
                self.revoked_tokens.insert(token, device_id.to_string());
            }
        }
    }

    /// Handles a verified auth request: registers unknown identities/keys as pending, turns a
    /// matching preauthorized set into accepted, and issues a token only for accepted sets.
    /// `max_devices` (0 = unlimited) refuses the first auth of a preauthorized set with 401
    /// when the limit is reached, as deviceauth does.
    pub(crate) fn authenticate(
        &mut self,
        identity: BTreeMap<String, Value>,
        pubkey: &str,
        max_devices: u64,
    ) -> AuthOutcome {
        let limit_reached = max_devices > 0 && self.accepted_count() >= max_devices;
        let now = now_rfc3339();
        let device_id = match self.device_by_identity(&identity) {
            Some(id) => id.to_string(),
            None => self.add_device(&identity, AuthStatus::Pending, Vec::new(), &now),
        };
        let device = self
            .devices
            .get_mut(&device_id)
            .expect("device just looked up");
        let idx = match device.auth_sets.iter().position(|a| a.pubkey == pubkey) {
            Some(idx) => idx,
            None => {
                device.auth_sets.push(AuthSet {
                    id: new_id(),
                    identity_data: identity,
                    pubkey: pubkey.to_string(),
                    status: AuthStatus::Pending,
                    ts: now.clone(),
                });
                device.recompute_status();
                return AuthOutcome::Refused {
                    device_id,
                    reason: "device is pending authorization",
                };
            }
        };
        if device.decommissioning {
            return AuthOutcome::Refused {
                device_id,
                reason: "device is being decommissioned",
            };
        }
        match device.auth_sets[idx].status {
            AuthStatus::Preauthorized if limit_reached && device.status != AuthStatus::Accepted => {
                AuthOutcome::Refused {
                    device_id,
                    reason: "maximum number of accepted devices reached",
                }
            }
            AuthStatus::Preauthorized | AuthStatus::Accepted => {
                if device.auth_sets[idx].status == AuthStatus::Preauthorized {
                    // Accepting one set rejects the device's other accepted sets.
                    for (i, set) in device.auth_sets.iter_mut().enumerate() {
                        if i != idx && set.status == AuthStatus::Accepted {
                            set.status = AuthStatus::Rejected;
                        }
                    }
                    device.auth_sets[idx].status = AuthStatus::Accepted;
                    device.auth_sets[idx].ts = now.clone();
                    device.recompute_status();
                }
                device.check_in_time = Some(now);
                let token = self.issue_token(&device_id);
                AuthOutcome::Token { device_id, token }
            }
            AuthStatus::Pending => AuthOutcome::Refused {
                device_id,
                reason: "device is pending authorization",
            },
            AuthStatus::Rejected => AuthOutcome::Refused {
                device_id,
                reason: "device auth set is rejected",
            },
        }
    }

    /// Creates a preauthorized device (management API). An existing identity is
    /// [`OpError::DeviceExists`] unless `force`: then the (identity, key) set is forced to
    /// preauthorized, or a preauthorized set is added. Returns the device id and whether an
    /// existing device was changed.
    pub(crate) fn preauthorize(
        &mut self,
        identity: BTreeMap<String, Value>,
        pubkey: &str,
        force: bool,
    ) -> Result<(String, bool), OpError> {
        let now = now_rfc3339();
        if let Some(existing) = self.device_by_identity(&identity).map(str::to_string) {
            if !force || self.devices[&existing].decommissioning {
                return Err(OpError::DeviceExists(existing));
            }
            let device = self.devices.get_mut(&existing).expect("exists");
            match device.auth_sets.iter_mut().find(|a| a.pubkey == pubkey) {
                Some(set) => {
                    set.status = AuthStatus::Preauthorized;
                    set.ts = now;
                }
                None => device.auth_sets.push(AuthSet {
                    id: new_id(),
                    identity_data: identity,
                    pubkey: pubkey.to_string(),
                    status: AuthStatus::Preauthorized,
                    ts: now,
                }),
            }
            device.recompute_status();
            if device.status != AuthStatus::Accepted {
                self.revoke_tokens(&existing);
            }
            return Ok((existing, true));
        }
        let auth_set = AuthSet {
            id: new_id(),
            identity_data: identity.clone(),
            pubkey: pubkey.to_string(),
            status: AuthStatus::Preauthorized,
            ts: now.clone(),
        };
        let id = self.add_device(&identity, AuthStatus::Preauthorized, vec![auth_set], &now);
        Ok((id, false))
    }

    /// Registers a new device (fresh id, no inventory yet); returns its id.
    fn add_device(
        &mut self,
        identity: &BTreeMap<String, Value>,
        status: AuthStatus,
        auth_sets: Vec<AuthSet>,
        now: &str,
    ) -> String {
        let id = new_id();
        self.devices.insert(
            id.clone(),
            Device {
                id: id.clone(),
                identity_data: identity.clone(),
                status,
                created_ts: now.to_string(),
                updated_ts: now.to_string(),
                check_in_time: None,
                decommissioning: false,
                auth_sets,
                inventory: BTreeMap::new(),
                inventory_updated_ts: None,
                group: None,
            },
        );
        self.index
            .identities
            .insert(identity_key(identity), id.clone());
        id
    }

    /// Sets an auth set's status with deviceauth's transition rules: nothing leaves
    /// `preauthorized` (400), the same status is a no-op, accepting beyond `max_devices`
    /// (0 = unlimited) is 422, leaving `accepted` revokes the device's tokens, and accepting
    /// one set rejects the device's other accepted sets. Returns whether anything changed.
    pub(crate) fn set_auth_status(
        &mut self,
        device_id: &str,
        auth_id: &str,
        status: AuthStatus,
        max_devices: u64,
    ) -> Result<bool, OpError> {
        let accepted = self.accepted_count();
        let device = self
            .devices
            .get_mut(device_id)
            .ok_or_else(|| OpError::NotFound(format!("device {device_id} not found")))?;
        let idx = device
            .auth_sets
            .iter()
            .position(|a| a.id == auth_id)
            .ok_or_else(|| OpError::NotFound(format!("auth set {auth_id} not found")))?;
        if status == AuthStatus::Preauthorized {
            return Err(OpError::BadRequest(
                "status must be one of accepted, rejected, pending".into(),
            ));
        }
        let current = device.auth_sets[idx].status;
        if current == status {
            return Ok(false);
        }
        if current == AuthStatus::Preauthorized {
            return Err(OpError::BadRequest(format!(
                "invalid status transition from preauthorized to {}",
                serde_json::to_value(status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            )));
        }
        if status == AuthStatus::Accepted
            && device.status != AuthStatus::Accepted
            && max_devices > 0
            && accepted >= max_devices
        {
            return Err(OpError::Unprocessable(
                "maximum number of accepted devices reached".into(),
            ));
        }
        let mut revoke = false;
        if status == AuthStatus::Accepted {
            // Accepting one set rejects the others; tokens issued for them die with them.
            for (i, set) in device.auth_sets.iter_mut().enumerate() {
                if i != idx && set.status == AuthStatus::Accepted {
                    set.status = AuthStatus::Rejected;
                    revoke = true;
                }
            }
        }
        let was_accepted = current == AuthStatus::Accepted;
        device.auth_sets[idx].status = status;
        device.auth_sets[idx].ts = now_rfc3339();
        device.recompute_status();
        if revoke || (was_accepted && status != AuthStatus::Accepted) {
            self.revoke_tokens(device_id);
        }
        Ok(true)
    }

    /// Deletes one auth set; the device goes away with its last set.
    pub(crate) fn delete_auth_set(
        &mut self,
        device_id: &str,
        auth_id: &str,
    ) -> Result<(), OpError> {
        let device = self
            .devices
            .get_mut(device_id)
            .ok_or_else(|| OpError::NotFound(format!("device {device_id} not found")))?;
        let before = device.auth_sets.len();
        device.auth_sets.retain(|a| a.id != auth_id);
        if device.auth_sets.len() == before {
            return Err(OpError::NotFound(format!("auth set {auth_id} not found")));
        }
        let empty = device.auth_sets.is_empty();
        device.recompute_status();
        self.revoke_tokens(device_id);
        if empty {
            self.remove_device(device_id);
        }
        Ok(())
    }

    /// Starts a decommission: `decommissioning: true`, tokens revoked, auth refused until
    /// [`State::finish_decommission`] removes the device (the real one runs a workflow).
    pub(crate) fn start_decommission(&mut self, device_id: &str) -> Result<(), OpError> {
        let device = self
            .devices
            .get_mut(device_id)
            .ok_or_else(|| OpError::NotFound(format!("device {device_id} not found")))?;
        device.decommissioning = true;
        device.updated_ts = now_rfc3339();
        self.revoke_tokens(device_id);
        Ok(())
    }

    /// Removes a decommissioned device and ends its open deployments (`decommissioned`).
    pub(crate) fn finish_decommission(&mut self, device_id: &str) {
        if !self
            .devices
            .get(device_id)
            .is_some_and(|d| d.decommissioning)
        {
            return;
        }
        self.remove_device(device_id);
        self.revoke_tokens(device_id);
        let now = now_rfc3339();
        for dep in self.deployments.values_mut() {
            if let Some(dd) = dep.devices.get_mut(device_id) {
                if !dd.is_finished() {
                    dd.status = "decommissioned".into();
                    dd.finished = Some(now.clone());
                }
            }
            dep.refresh_finished();
        }
    }

    /// Creates a deployment. The artifact name must exist (422). Device ids are not
    /// validated, as on the real server. With `limits.duplicate_check`, an identical
    /// constructor while such a deployment is unfinished is 409 (server ≥ 4.0); with
    /// `limits.max_active` > 0, creating one more than that many unfinished deployments is
    /// refused (hosted's cap).
    pub(crate) fn create_deployment(
        &mut self,
        req: &NewDeployment,
        limits: DeploymentLimits,
    ) -> Result<String, OpError> {
        if req.name.trim().is_empty() {
            return Err(OpError::BadRequest("name must not be empty".into()));
        }
        if req.artifact_name.trim().is_empty() {
            return Err(OpError::BadRequest(
                "artifact_name must not be empty".into(),
            ));
        }
        if req.all_devices && !req.devices.is_empty() {
            return Err(OpError::BadRequest(
                "devices and all_devices are mutually exclusive".into(),
            ));
        }
        let targets: Vec<String> = if req.all_devices {
            self.devices
                .values()
                .filter(|d| d.status == AuthStatus::Accepted)
                .map(|d| d.id.clone())
                .collect()
        } else {
            req.devices.clone()
        };
        if targets.is_empty() {
            return Err(OpError::BadRequest("no devices to deploy to".into()));
        }
        if !self.artifacts.values().any(|a| a.name == req.artifact_name) {
            return Err(OpError::Unprocessable(format!(
                "no artifact named {:?}",
                req.artifact_name
            )));
        }
        let checksum = req.checksum();
        if limits.duplicate_check
            && self
                .deployments
                .values()
                .any(|d| d.constructor_checksum == checksum && d.status() != "finished")
        {
            return Err(OpError::Conflict(
                "an identical deployment is already active".into(),
            ));
        }
        if limits.max_active > 0 {
            let active = self
                .deployments
                .values()
                .filter(|d| d.status() != "finished")
                .count() as u64;
            if active >= limits.max_active {
                return Err(OpError::TooManyDeployments(
                    limits.cap_status,
                    format!(
                        "the limit of {} active deployments is reached",
                        limits.max_active
                    ),
                ));
            }
        }
        let now = now_rfc3339();
        let id = new_id();
        let seq = self.next_seq;
        self.next_seq += 1;
        let devices = targets
            .into_iter()
            .map(|d| {
                (
                    d,
                    DeviceDeployment {
                        status: "pending".into(),
                        created: now.clone(),
                        started: None,
                        finished: None,
                        device_type: None,
                        substate: None,
                        history: Vec::new(),
                        log: None,
                        polled: false,
                    },
                )
            })
            .collect();
        self.deployments.insert(
            id.clone(),
            Deployment {
                id: id.clone(),
                name: req.name.clone(),
                artifact_name: req.artifact_name.clone(),
                created: now,
                finished: None,
                aborted: false,
                devices,
                seq,
                force_installation: req.force_installation,
                constructor_checksum: checksum,
                group: req.group.clone(),
            },
        );
        Ok(id)
    }

    /// Aborts every unfinished deployment of one device (`DELETE …/deployments/devices/{id}`):
    /// its records become `aborted`, so it drops out of each batch.
    pub(crate) fn abort_device(&mut self, device_id: &str) -> bool {
        let now = now_rfc3339();
        let mut changed = false;
        for dep in self.deployments.values_mut() {
            if let Some(dd) = dep.devices.get_mut(device_id) {
                if !dd.is_finished() {
                    dd.status = "aborted".into();
                    dd.finished = Some(now.clone());
                    changed = true;
                }
            }
            dep.refresh_finished();
        }
        changed
    }

    /// Aborts a deployment (management API); devices reporting on it get 409 afterwards.
    pub(crate) fn abort_deployment(&mut self, id: &str) -> Result<(), OpError> {
        let dep = self
            .deployments
            .get_mut(id)
            .ok_or_else(|| OpError::NotFound(format!("deployment {id} not found")))?;
        if dep.status() == "finished" {
            return Err(OpError::Unprocessable("deployment already finished".into()));
        }
        let now = now_rfc3339();
        for dd in dep.devices.values_mut() {
            if !dd.is_finished() {
                dd.status = "aborted".into();
                dd.finished = Some(now.clone());
            }
        }
        dep.aborted = true;
        dep.finished = Some(now);
        Ok(())
    }

    /// Picks the deployment to offer a device on `deployments/next`, updating device
    /// deployments that end without an install (already-installed, noartifact). The
    /// open-source server matches device type only (`depends_check` = `None`); enterprise's
    /// v2 `next` also requires the artifact's depends to match the device's provides.
    /// Returns ((deployment id, artifact id) if any, whether anything changed).
    pub(crate) fn next_deployment(
        &mut self,
        device_id: &str,
        artifact_name: &str,
        device_type: &str,
        depends_check: Option<&serde_json::Map<String, Value>>,
    ) -> (Option<(String, String)>, bool) {
        let mut order: Vec<(u64, String)> = self
            .deployments
            .values()
            .filter(|d| !d.aborted && d.devices.get(device_id).is_some_and(|dd| !dd.is_finished()))
            .map(|d| (d.seq, d.id.clone()))
            .collect();
        if order.is_empty() {
            // The common poll: nothing to offer, nothing to record.
            return (None, false);
        }
        order.sort();
        let now = now_rfc3339();
        let mut changed = false;
        for (_, dep_id) in order {
            let dep = self.deployments.get_mut(&dep_id).expect("listed");
            let artifact = self
                .artifacts
                .values()
                .filter(|a| a.name == dep.artifact_name)
                .filter(|a| a.device_types_compatible.iter().any(|t| t == device_type))
                .find(|a| depends_check.is_none_or(|p| depends_satisfied(&a.artifact_depends, p)))
                .map(|a| a.id.clone());
            let dd = dep.devices.get_mut(device_id).expect("filtered");
            if !dd.polled {
                dd.polled = true;
                changed = true;
            }
            if dd.device_type.as_deref() != Some(device_type) {
                dd.device_type = Some(device_type.to_string());
                changed = true;
            }
            if dd.status == "pending"
                && dep.artifact_name == artifact_name
                && !dep.force_installation
            {
                dd.status = "already-installed".into();
                dd.finished = Some(now.clone());
                dep.refresh_finished();
                changed = true;
                continue;
            }
            match artifact {
                None => {
                    dd.status = "noartifact".into();
                    dd.finished = Some(now.clone());
                    dep.refresh_finished();
                    changed = true;
                }
                Some(artifact_id) => {
                    if dd.started.is_none() {
                        dd.started = Some(now.clone());
                        changed = true;
                    }
                    return (Some((dep_id, artifact_id)), changed);
                }
            }
        }
        (None, changed)
    }

    /// Records a device's status report. Errors: unknown deployment for this device (404),
    /// aborted (409), unknown status (400).
    pub(crate) fn report_status(
        &mut self,
        device_id: &str,
        deployment_id: &str,
        status: &str,
        substate: Option<String>,
    ) -> Result<(), OpError> {
        let dep = self.deployment_of_device(deployment_id, device_id)?;
        let dd = dep.devices.get_mut(device_id).expect("checked");
        if dep.aborted || dd.status == "aborted" {
            return Err(OpError::Conflict("deployment aborted".into()));
        }
        if !DEVICE_REPORTABLE.contains(&status) {
            return Err(OpError::BadRequest(format!("invalid status {status:?}")));
        }
        let now = now_rfc3339();
        dd.polled = true;
        dd.history.push(StatusReport {
            status: status.to_string(),
            substate: substate.clone(),
            time: now.clone(),
        });
        if dd.is_finished() {
            // A final status is kept; late duplicates are recorded in the history only.
            return Ok(());
        }
        dd.status = status.to_string();
        dd.substate = substate;
        if dd.started.is_none() {
            dd.started = Some(now.clone());
        }
        if dd.is_finished() {
            dd.finished = Some(now);
        }
        dep.refresh_finished();
        Ok(())
    }

    /// Stores the messages of a deployment log upload.
    pub(crate) fn store_log(
        &mut self,
        device_id: &str,
        deployment_id: &str,
        messages: Vec<Value>,
    ) -> Result<(), OpError> {
        let dep = self.deployment_of_device(deployment_id, device_id)?;
        dep.devices.get_mut(device_id).expect("checked").log = Some(messages);
        Ok(())
    }

    /// A deployment that targets `device_id`; 404 otherwise (device-side reports).
    fn deployment_of_device(
        &mut self,
        deployment_id: &str,
        device_id: &str,
    ) -> Result<&mut Deployment, OpError> {
        self.deployments
            .get_mut(deployment_id)
            .filter(|d| d.devices.contains_key(device_id))
            .ok_or_else(|| {
                OpError::NotFound(format!(
                    "deployment {deployment_id} not found for this device"
                ))
            })
    }
}

fn new_token_secret() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the state lives on disk (if anywhere) and how it is written.
pub(crate) struct Persistence {
    path: Option<PathBuf>,
    last_written: std::sync::Mutex<u64>,
}

impl Persistence {
    pub(crate) fn new(state_dir: Option<&Path>) -> Self {
        Self {
            path: state_dir.map(|d| d.join("state.json")),
            last_written: std::sync::Mutex::new(0),
        }
    }

    /// Loads `state.json` if present; a corrupt file is an error naming the file.
    pub(crate) fn load(&self) -> anyhow::Result<State> {
        let Some(path) = &self.path else {
            return Ok(State::default());
        };
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: invalid state file: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(anyhow::anyhow!("{}: {e}", path.display())),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Writes a serialised snapshot atomically (temp file + rename). `generation` orders
    /// concurrent writers: an older snapshot never overwrites a newer one.
    pub(crate) fn write(&self, generation: u64, json: &[u8]) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut last = self.last_written.lock().unwrap_or_else(|e| e.into_inner());
        if generation <= *last {
            return Ok(());
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(json)?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        *last = generation;
        Ok(())
    }
}

#[cfg(test)]
mod depends_tests {
    use super::depends_satisfied;
    use serde_json::{json, Value};
    use std::collections::BTreeMap;

    fn depends(v: Value) -> BTreeMap<String, Value> {
        v.as_object().unwrap().clone().into_iter().collect()
    }

    #[test]
    fn enterprise_depends_check_needs_stage_one_provides() {
        let d = depends(json!({"device_type": ["qemux86-64"], "server-migration.stage": "dual"}));
        let before = json!({"artifact_name": "orig", "device_type": "qemux86-64"});
        let after = json!({"artifact_name": "s1", "device_type": "qemux86-64", "server-migration.stage": "dual"});
        let other = json!({"artifact_name": "s1", "device_type": "qemux86-64", "server-migration.stage": "new-only"});
        assert!(!depends_satisfied(&d, before.as_object().unwrap()));
        assert!(depends_satisfied(&d, after.as_object().unwrap()));
        assert!(!depends_satisfied(&d, other.as_object().unwrap()));
        let names = depends(json!({"artifact_name": ["a", "b"]}));
        assert!(depends_satisfied(
            &names,
            json!({"artifact_name": "b"}).as_object().unwrap()
        ));
        assert!(!depends_satisfied(
            &names,
            json!({"artifact_name": "c"}).as_object().unwrap()
        ));
    }
}
