//! One simulated device: its "disk" (config files, key, provides, installed modules) and its
//! client daemon, modelled on the 3.4 state machine (client reference §4–§10) with the 4.x/5.x
//! differences of §17–§18. Each device is one Tokio task; everything it publishes for reports
//! goes into its status slot.

use crate::config::{ClientGeneration, LoadedConfig};
use crate::install::{self, ConfigFiles, ParsedArtifact};
use crate::keys::DeviceKey;
use crate::net::{Kind, Resp};
use crate::{
    Counts, DeploymentOutcome, DeviceIdentity, DeviceReport, DeviceState, FleetSpec, Shared,
};
use hyper::body::Bytes;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep, sleep_until, Instant};

/// What a device publishes for reports.
pub(crate) struct Status {
    index: usize,
    id_data: BTreeMap<String, String>,
    id_data_json: String,
    pubkey: String,
    client: ClientGeneration,
    state: DeviceState,
    server: Option<String>,
    loaded_servers: Vec<String>,
    files: ConfigFiles,
    provides: BTreeMap<String, String>,
    modules: Vec<String>,
    deployments: Vec<DeploymentOutcome>,
    key_generation: u32,
    last_error: Option<String>,
    polled: bool,
}

impl Status {
    pub(crate) fn identity(&self) -> DeviceIdentity {
        DeviceIdentity {
            index: self.index,
            id_data: self.id_data.clone(),
            id_data_json: self.id_data_json.clone(),
            pubkey: self.pubkey.clone(),
        }
    }

    pub(crate) fn report(&self, _shared: &Shared) -> DeviceReport {
        let config_servers = self.files.servers(self.client);
        let text = |b: &Option<Vec<u8>>| {
            b.as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        DeviceReport {
            index: self.index,
            id_data_json: self.id_data_json.clone(),
            client: self.client,
            state: self.state.clone(),
            server: self.server.clone(),
            loaded_servers: self.loaded_servers.clone(),
            config_servers,
            provides: self.provides.clone(),
            modules: self.modules.clone(),
            deployments: self.deployments.clone(),
            key_generation: self.key_generation,
            last_error: self.last_error.clone(),
            main_config: text(&self.files.main),
            fallback_config: text(&self.files.fallback),
        }
    }
}

pub(crate) fn counts(shared: &Shared) -> Counts {
    let old = shared
        .spec
        .old_server
        .as_deref()
        .map(|u| u.trim_end_matches('/'));
    let new = shared
        .spec
        .new_server
        .as_deref()
        .map(|u| u.trim_end_matches('/'));
    let mut c = Counts {
        devices: shared.slots.len(),
        ..Counts::default()
    };
    for slot in &shared.slots {
        let s = slot.lock().expect("status lock");
        c.polled += usize::from(s.polled);
        match &s.state {
            DeviceState::Offline => {
                c.offline += 1;
                continue;
            }
            DeviceState::Restarting => c.restarting += 1,
            DeviceState::Dead(_) => c.dead += 1,
            DeviceState::Running => {}
        }
        match s.server.as_deref() {
            None => c.stranded += 1,
            Some(url) if Some(url) == new => c.on_new += 1,
            Some(url) if Some(url) == old => c.on_old += 1,
            Some(_) => c.on_other += 1,
        }
    }
    c
}

/// A deployment as `next` offered it.
struct Offer {
    id: String,
    artifact_name: String,
    uri: String,
    device_types: Vec<String>,
}

/// What survives a reboot in the client's store (the update in progress).
/// An installed, not yet committed update: what the commit phase needs.
struct Installed {
    offer: Offer,
    server: String,
    artifact: Arc<ParsedArtifact>,
    old_files: ConfigFiles,
    module_installed: Option<String>,
}

enum Resume {
    /// Rebooted for `NeedsArtifactReboot: Automatic`: verify, then the commit phase.
    Commit(Installed),
    /// Power lost inside ArtifactInstall: the client rolls back and reports failure.
    InstallInterrupted {
        offer: Offer,
        server: String,
        old_files: ConfigFiles,
    },
    /// Rolled back after a reboot: report failure.
    ReportFailure {
        offer: Offer,
        server: String,
        error: String,
    },
}

/// Why the daemon's run ended.
enum Exit {
    /// Restart the client (reboot or service restart) after this long.
    Restart(Duration),
}

enum ApiError {
    /// Transport error at the server: the 3.4 proxy answers 503, 4.x/5.x drop the
    /// connection; neither is a failover trigger.
    Unreachable(String),
    /// Every server refused (or no server): "authorization request failed".
    NoAuth,
    /// 5.1.0: mender-updated aborted (JSON 401 on `next`) and is restarted.
    Crash,
}

pub(crate) struct Device {
    index: usize,
    client: ClientGeneration,
    id_data_json: String,
    key: DeviceKey,
    key_generation: u32,
    files: ConfigFiles,
    provides: BTreeMap<String, String>,
    modules: BTreeSet<String>,
    device_type: String,
    rng: rand::rngs::StdRng,
    // Network profile.
    unreachable: Vec<String>,
    loss: f64,
    offline_until: Option<Option<Duration>>,
    boot_delay: Duration,
    key_regen_at: Option<Duration>,
    // Daemon (in-memory, lost at restart).
    config: LoadedConfig,
    auth: Option<(String, String)>,
    resume: Option<Resume>,
    restart_at: Option<Instant>,
    /// The update-check requests for the current provides (built once, not every poll).
    next_requests: Option<Arc<NextRequests>>,
}

/// The update-check variants (method, path, body) for one set of provides, in the client's
/// order, and the provides and device type they were built from.
struct NextRequests {
    provides: BTreeMap<String, String>,
    device_type: String,
    variants: Vec<(&'static str, String, Option<Bytes>)>,
}

fn mac_for(prefix: &str, index: usize) -> String {
    let mut h: u32 = 2166136261;
    for b in prefix.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(16777619);
    }
    let v = index as u32;
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        (h >> 8) as u8,
        h as u8,
        (v >> 16) as u8,
        (v >> 8) as u8,
        v as u8
    )
}

/// Creates every device (keys included) with its share of the knobs.
pub(crate) fn build(spec: &FleetSpec) -> Vec<Device> {
    let knobs = &spec.knobs;
    let mut rng = rand::rngs::StdRng::seed_from_u64(knobs.seed);
    let mut modules: BTreeSet<String> = spec.modules.iter().cloned().collect();
    modules.insert("single-file".into());
    (0..spec.count)
        .map(|index| {
            let mut id_data = BTreeMap::new();
            id_data.insert("mac".to_string(), mac_for(&spec.id_prefix, index));
            id_data.insert(
                "serial".to_string(),
                format!("{}-{index:06}", spec.id_prefix),
            );
            let id_data_json = serde_json::to_string(&id_data).expect("identity serialises");
            let client = if rng.gen_bool(knobs.v5_fraction) {
                ClientGeneration::V5
            } else {
                ClientGeneration::V3
            };
            let offline = rng.gen_bool(knobs.offline_fraction);
            let unreachable = knobs
                .unreachable
                .iter()
                .filter(|u| rng.gen_bool(u.fraction))
                .map(|u| u.server.trim_end_matches('/').to_string())
                .collect();
            let loss = if rng.gen_bool(knobs.flaky_fraction) {
                knobs.flaky_loss
            } else {
                0.0
            };
            let key_regen_at = rng
                .gen_bool(knobs.key_regeneration_fraction)
                .then_some(knobs.key_regeneration_at);
            let boot_delay = if knobs.start_spread.is_zero() {
                Duration::ZERO
            } else {
                knobs.start_spread.mul_f64(rng.gen::<f64>())
            };
            let mut provides = BTreeMap::new();
            provides.insert("artifact_name".to_string(), spec.artifact_name.clone());
            Device {
                index,
                client,
                id_data_json,
                key: DeviceKey::generate(spec.key_kind),
                key_generation: 0,
                files: ConfigFiles {
                    main: spec.initial_config.main.clone(),
                    fallback: spec.initial_config.fallback.clone(),
                },
                provides,
                modules: modules.clone(),
                device_type: spec.device_type.clone(),
                rng: rand::rngs::StdRng::seed_from_u64(
                    knobs.seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                ),
                unreachable,
                loss,
                offline_until: offline.then_some(knobs.offline_until),
                boot_delay,
                key_regen_at,
                config: LoadedConfig {
                    servers: Vec::new(),
                    tenant_token: String::new(),
                },
                auth: None,
                resume: None,
                restart_at: None,
                next_requests: None,
            }
        })
        .collect()
}

fn tries(knobs: &crate::Knobs) -> u32 {
    // 3.4 `maxSendingAttempts`: 1 + (3 if update/retry ≤ 3, else min(2 × ratio, 10)).
    let ratio = knobs.update_poll.as_secs_f64() / knobs.retry_poll.as_secs_f64().max(1e-3);
    if ratio <= 3.0 {
        4
    } else {
        1 + ((2.0 * ratio) as u32).min(10)
    }
}

/// A query value as the Go client's `url.Values.Encode` writes it (`+` for a space).
fn query_escape(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Device {
    pub(crate) fn initial_status(&self) -> Status {
        let id_data = serde_json::from_str(&self.id_data_json).expect("own identity parses");
        Status {
            index: self.index,
            id_data,
            id_data_json: self.id_data_json.clone(),
            pubkey: self.key.public_pem.clone(),
            client: self.client,
            state: DeviceState::Offline,
            server: None,
            loaded_servers: Vec::new(),
            files: self.files.clone(),
            provides: self.provides.clone(),
            modules: self.modules.iter().cloned().collect(),
            deployments: Vec::new(),
            key_generation: 0,
            last_error: None,
            polled: false,
        }
    }

    fn publish(&self, shared: &Shared, f: impl FnOnce(&mut Status)) {
        let mut s = shared.slots[self.index].lock().expect("status lock");
        f(&mut s);
    }

    fn publish_disk(&self, shared: &Shared) {
        let files = self.files.clone();
        let provides = self.provides.clone();
        let modules = self.modules.iter().cloned().collect();
        self.publish(shared, |s| {
            s.files = files;
            s.provides = provides;
            s.modules = modules;
        });
    }

    fn set_server(&self, shared: &Shared, server: Option<&str>) {
        self.publish(shared, |s| {
            if s.server.as_deref() != server {
                s.server = server.map(str::to_string);
            }
        });
    }

    fn error(&self, shared: &Shared, e: impl Into<String>) {
        let e = e.into();
        self.publish(shared, |s| s.last_error = Some(e));
    }

    /// The device's life: boot, run the daemon, restart it when it exits, forever (the task is
    /// cancelled when the fleet stops).
    pub(crate) async fn run(mut self, shared: Arc<Shared>) {
        sleep(self.boot_delay).await;
        if let Some(until) = self.offline_until {
            match until {
                Some(t) => sleep_until(*shared.started.get().expect("set at boot") + t).await,
                None => std::future::pending::<()>().await,
            }
        }
        loop {
            match self.files.load(self.client) {
                Err(reason) => {
                    // 3.4 exits 1 (or panics); `Restart=on-abort` does not restart it.
                    self.publish(&shared, |s| {
                        s.state = DeviceState::Dead(reason);
                        s.server = None;
                        s.loaded_servers.clear();
                    });
                    // Only a key regeneration (re-provisioning) would touch this device again;
                    // it does not revive a config the client cannot load.
                    std::future::pending::<()>().await;
                }
                Ok(cfg) => {
                    let servers = cfg.servers.clone();
                    self.config = cfg;
                    self.auth = None;
                    self.publish(&shared, |s| {
                        s.state = DeviceState::Running;
                        s.server = None;
                        s.loaded_servers = servers;
                    });
                }
            }
            let Exit::Restart(after) = self.daemon(&shared).await;
            self.auth = None;
            self.publish(&shared, |s| {
                s.state = DeviceState::Restarting;
                s.server = None;
            });
            sleep(after).await;
        }
    }

    async fn daemon(&mut self, shared: &Shared) -> Exit {
        let knobs = &shared.spec.knobs;
        self.restart_at = None;
        if let Some(resume) = self.resume.take() {
            if let Some(exit) = self.resume_update(shared, resume).await {
                return exit;
            }
        }
        let mut next_inventory = Instant::now();
        loop {
            if Instant::now() >= next_inventory {
                if let Err(ApiError::Crash) = self.send_inventory(shared).await {
                    return Exit::Restart(knobs.retry_poll);
                }
                next_inventory = Instant::now() + knobs.inventory_poll;
            }
            match self.check_update(shared).await {
                Ok(Some((offer, server))) => {
                    if let Some(exit) = self.deploy(shared, offer, server).await {
                        return exit;
                    }
                    next_inventory = Instant::now();
                }
                Ok(None) => {}
                Err(ApiError::Crash) => return Exit::Restart(knobs.retry_poll),
                Err(ApiError::Unreachable(e)) => self.error(shared, e),
                Err(ApiError::NoAuth) => {
                    self.error(shared, "authorization request failed on every server")
                }
            }
            let next_update = Instant::now() + knobs.update_poll;
            loop {
                let regen = self
                    .key_regen_at
                    .map(|t| *shared.started.get().expect("set at boot") + t);
                let wake = [
                    Some(next_update),
                    Some(next_inventory),
                    self.restart_at,
                    regen,
                ]
                .into_iter()
                .flatten()
                .min()
                .expect("next_update is always set");
                sleep_until(wake).await;
                let now = Instant::now();
                if self.restart_at.is_some_and(|t| now >= t) {
                    return Exit::Restart(Duration::ZERO);
                }
                if regen.is_some_and(|t| now >= t) {
                    self.key_regen_at = None;
                    self.key = DeviceKey::generate(shared.spec.key_kind);
                    self.key_generation += 1;
                    let (pem, generation) = (self.key.public_pem.clone(), self.key_generation);
                    self.publish(shared, |s| {
                        s.pubkey = pem;
                        s.key_generation = generation;
                    });
                    return Exit::Restart(knobs.reboot_time);
                }
                if now >= next_inventory {
                    if let Err(ApiError::Crash) = self.send_inventory(shared).await {
                        return Exit::Restart(knobs.retry_poll);
                    }
                    next_inventory = Instant::now() + knobs.inventory_poll;
                }
                if Instant::now() >= next_update {
                    break;
                }
            }
        }
    }

    /// Sends a request unless this device's network loses it.
    async fn raw(
        &mut self,
        shared: &Shared,
        kind: Kind,
        method: &'static str,
        url: &str,
        headers: Vec<(&'static str, String)>,
        body: Option<Bytes>,
    ) -> Result<Resp, String> {
        if self
            .unreachable
            .iter()
            .any(|u| url.starts_with(u.as_str()) && url[u.len()..].starts_with('/'))
        {
            return Err(format!(
                "{url}: connection refused (unreachable from this device)"
            ));
        }
        if self.loss > 0.0 && self.rng.gen_bool(self.loss / 2.0) {
            return Err(format!("{url}: connection reset (flaky network)"));
        }
        let resp = shared.net.send(kind, method, url, headers, body).await?;
        if self.loss > 0.0 && self.rng.gen_bool(self.loss / 2.0) {
            return Err(format!("{url}: response lost (flaky network)"));
        }
        Ok(resp)
    }

    /// The server walk: every server from the first, stop at the first 200.
    async fn authorize(&mut self, shared: &Shared) -> bool {
        let body = format!(
            "{{\"id_data\":{},\"tenant_token\":{},\"pubkey\":{}}}\n",
            Value::String(self.id_data_json.clone()),
            Value::String(self.config.tenant_token.clone()),
            Value::String(self.key.public_pem.clone()),
        )
        .into_bytes();
        let body = Bytes::from(body);
        let signature = self.key.sign_b64(&body);
        let mut last_was_401 = false;
        for server in self.config.servers.clone() {
            if server.is_empty() {
                last_was_401 = false;
                continue;
            }
            let url = format!("{server}/api/devices/v1/authentication/auth_requests");
            let headers = vec![
                ("content-type", "application/json".to_string()),
                (
                    "authorization",
                    format!("Bearer {}", self.config.tenant_token),
                ),
                ("x-men-signature", signature.clone()),
            ];
            match self
                .raw(
                    shared,
                    Kind::Auth,
                    "POST",
                    &url,
                    headers,
                    Some(body.clone()),
                )
                .await
            {
                Ok(r) if r.status == 200 && !r.body.is_empty() => {
                    let token = String::from_utf8_lossy(&r.body).into_owned();
                    self.set_server(shared, Some(&server));
                    self.auth = Some((server, token));
                    return true;
                }
                Ok(r) => last_was_401 = r.status == 401,
                Err(_) => last_was_401 = false,
            }
        }
        self.set_server(shared, None);
        // 3.4 quirk (§6.6): if the last server failed with something other than 401, the
        // previous token/server pair is kept and used again.
        if self.client == ClientGeneration::V5 || last_was_401 {
            self.auth = None;
        }
        self.auth.is_some()
    }

    /// An authorized API call: lazy auth, re-auth from `Servers[0]` and one retry on 401.
    async fn api(
        &mut self,
        shared: &Shared,
        kind: Kind,
        method: &'static str,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(Resp, String), ApiError> {
        if self.auth.is_none() && !self.authorize(shared).await {
            return Err(ApiError::NoAuth);
        }
        let mut retried = false;
        loop {
            let (server, token) = self.auth.as_ref().expect("authorized above");
            let url = format!("{server}{path}");
            let mut headers = vec![("authorization", format!("Bearer {token}"))];
            if body.is_some() {
                headers.push(("content-type", "application/json".into()));
            }
            let resp = self
                .raw(shared, kind, method, &url, headers, body.clone())
                .await
                .map_err(ApiError::Unreachable)?;
            if resp.status != 401 || retried {
                // Only a 2xx proves the token is good: a 404 may come from a router that
                // never looked at it (e.g. the open-source server's missing v2 `next`).
                let server = self.auth.as_ref().expect("still authorized").0.clone();
                if (200..300).contains(&resp.status) {
                    self.set_server(shared, Some(&server));
                }
                return Ok((resp, server));
            }
            if self.client == ClientGeneration::V5
                && kind == Kind::Next
                && resp.json_body
                && shared.spec.knobs.v5_abort_on_json_401
            {
                return Err(ApiError::Crash);
            }
            if !self.authorize(shared).await {
                return Err(ApiError::NoAuth);
            }
            retried = true;
        }
    }

    async fn send_inventory(&mut self, shared: &Shared) -> Result<(), ApiError> {
        let version = match self.client {
            ClientGeneration::V3 => "3.4.0+ds1-5+b1",
            ClientGeneration::V5 => "5.1.0",
        };
        let mut attrs = vec![
            json!({"name": "device_type", "value": self.device_type}),
            json!({"name": "artifact_name", "value": self.provides.get("artifact_name")}),
            json!({"name": "mender_client_version", "value": version}),
        ];
        if self.modules.contains(menderconf::MODULE_NAME) {
            let stage = self
                .provides
                .get(menderconf::STAGE_PROVIDES_KEY)
                .cloned()
                .unwrap_or_else(|| "none".into());
            let servers = self.files.servers(self.client);
            attrs.push(json!({"name": "server_migration_stage", "value": stage}));
            attrs.push(json!({"name": "server_migration_servers", "value": servers}));
        }
        let body = Bytes::from(serde_json::to_vec(&attrs).expect("JSON serialises"));
        let path = "/api/devices/v1/inventory/device/attributes";
        let (resp, _) = self
            .api(shared, Kind::Inventory, "PUT", path, Some(body.clone()))
            .await?;
        if resp.status == 405 {
            self.api(shared, Kind::Inventory, "PATCH", path, Some(body))
                .await?;
        }
        Ok(())
    }

    /// One update check in the client's order of endpoint variants (404 = try the next).
    async fn check_update(&mut self, shared: &Shared) -> Result<Option<(Offer, String)>, ApiError> {
        let requests = self.next_requests();
        for (method, path, body) in &requests.variants {
            let (method, path, body) = (*method, path.as_str(), body.clone());
            let (resp, server) = self.api(shared, Kind::Next, method, path, body).await?;
            match resp.status {
                404 => continue,
                204 => {
                    self.polled(shared);
                    return Ok(None);
                }
                200 => {
                    self.polled(shared);
                    let v: Value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
                    let s = |p: &str| {
                        v.pointer(p)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string()
                    };
                    let offer = Offer {
                        id: s("/id"),
                        artifact_name: s("/artifact/artifact_name"),
                        uri: s("/artifact/source/uri"),
                        device_types: v
                            .pointer("/artifact/device_types_compatible")
                            .and_then(Value::as_array)
                            .map(|a| {
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_string)
                                    .collect()
                            })
                            .unwrap_or_default(),
                    };
                    return Ok(Some((offer, server)));
                }
                other => {
                    self.polled(shared);
                    self.error(shared, format!("update check: HTTP {other}"));
                    return Ok(None);
                }
            }
        }
        self.polled(shared);
        Ok(None)
    }

    /// The update-check requests for the current provides, rebuilt only when they changed.
    fn next_requests(&mut self) -> Arc<NextRequests> {
        if let Some(r) = &self.next_requests {
            if r.provides == self.provides && r.device_type == self.device_type {
                return r.clone();
            }
        }
        let artifact_name = self
            .provides
            .get("artifact_name")
            .cloned()
            .unwrap_or_default();
        let mut provides: serde_json::Map<String, Value> = self
            .provides
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        provides.insert(
            "device_type".into(),
            Value::String(self.device_type.clone()),
        );
        let json_bytes = |v: &Value| Bytes::from(serde_json::to_vec(v).expect("JSON serialises"));
        let v2 = json_bytes(&json!({"device_provides": provides, "update_control_map": false}));
        let get_path = format!(
            "/api/devices/v1/deployments/device/deployments/next?artifact_name={}&device_type={}",
            query_escape(&artifact_name),
            query_escape(&self.device_type)
        );
        let mut variants: Vec<(&'static str, String, Option<Bytes>)> = vec![(
            "POST",
            "/api/devices/v2/deployments/device/deployments/next".into(),
            Some(v2),
        )];
        if self.client == ClientGeneration::V3 {
            variants.push((
                "POST",
                "/api/devices/v1/deployments/device/deployments/next".into(),
                Some(json_bytes(&Value::Object(provides))),
            ));
        }
        variants.push(("GET", get_path, None));
        let requests = Arc::new(NextRequests {
            provides: self.provides.clone(),
            device_type: self.device_type.clone(),
            variants,
        });
        self.next_requests = Some(requests.clone());
        requests
    }

    fn polled(&self, shared: &Shared) {
        shared
            .update_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.publish(shared, |s| s.polled = true);
    }

    /// Status report with the client's retries. `Ok(true)` = accepted, `Ok(false)` = gave up,
    /// `Err(())` = 409, the deployment was aborted.
    async fn report(&mut self, shared: &Shared, id: &str, status: &str) -> Result<bool, ()> {
        let path = format!("/api/devices/v1/deployments/device/deployments/{id}/status");
        let body =
            Bytes::from(serde_json::to_vec(&json!({ "status": status })).expect("JSON serialises"));
        let n = tries(&shared.spec.knobs);
        for attempt in 0..n {
            if attempt > 0 {
                sleep(shared.spec.knobs.retry_poll).await;
            }
            match self
                .api(shared, Kind::Status, "PUT", &path, Some(body.clone()))
                .await
            {
                Ok((r, _)) if r.status == 204 || r.status == 200 => return Ok(true),
                Ok((r, _)) if r.status == 409 => return Err(()),
                Ok((r, server)) => self.error(
                    shared,
                    format!("status {status} to {server}: HTTP {}", r.status),
                ),
                Err(ApiError::Unreachable(e)) => self.error(shared, e),
                Err(_) => self.error(shared, format!("status {status}: authorization failed")),
            }
        }
        Ok(false)
    }

    async fn send_log(&mut self, shared: &Shared, id: &str, message: &str) {
        let path = format!("/api/devices/v1/deployments/device/deployments/{id}/log");
        let body = serde_json::to_vec(&json!({"messages": [{
            "level": "error", "message": message, "timestamp": "2026-01-01T00:00:00Z"}]}))
        .expect("JSON serialises");
        let _ = self
            .api(shared, Kind::Log, "PUT", &path, Some(body.into()))
            .await;
    }

    fn record(
        &self,
        shared: &Shared,
        offer: &Offer,
        server: &str,
        status: &str,
        error: Option<String>,
    ) {
        let outcome = DeploymentOutcome {
            id: offer.id.clone(),
            server: server.to_string(),
            artifact_name: offer.artifact_name.clone(),
            status: status.to_string(),
            error: error.clone(),
        };
        self.publish(shared, |s| {
            s.deployments.push(outcome);
            if error.is_some() {
                s.last_error = error;
            }
        });
    }

    async fn fail(&mut self, shared: &Shared, offer: &Offer, server: &str, error: String) {
        let _ = self.report(shared, &offer.id, "failure").await;
        self.send_log(shared, &offer.id, &error).await;
        self.record(shared, offer, server, "failure", Some(error));
    }

    async fn download(
        &mut self,
        shared: &Shared,
        uri: &str,
    ) -> Result<Arc<ParsedArtifact>, String> {
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                sleep(shared.spec.knobs.retry_poll).await;
            }
            match self
                .raw(shared, Kind::Download, "GET", uri, Vec::new(), None)
                .await
            {
                Ok(r) if r.status == 200 && !r.body.is_empty() => {
                    if let Some(a) = shared.artifact_cache.lock().expect("cache lock").get(uri) {
                        return Ok(a.clone());
                    }
                    let parsed = Arc::new(install::parse_artifact(&r.body)?);
                    shared
                        .artifact_cache
                        .lock()
                        .expect("cache lock")
                        .insert(uri.to_string(), parsed.clone());
                    return Ok(parsed);
                }
                Ok(r) => last = format!("download {uri}: HTTP {}", r.status),
                Err(e) => last = format!("download: {e}"),
            }
        }
        Err(last)
    }

    /// Runs one offered deployment. `Some(exit)` = the client restarts (reboot).
    async fn deploy(&mut self, shared: &Shared, offer: Offer, server: String) -> Option<Exit> {
        let knobs = &shared.spec.knobs;
        if offer.id.is_empty()
            || offer.artifact_name.is_empty()
            || offer.uri.is_empty()
            || offer.device_types.is_empty()
        {
            self.fail(
                shared,
                &offer,
                &server,
                "update check: incomplete deployment in the response".into(),
            )
            .await;
            return None;
        }
        if self.provides.get("artifact_name") == Some(&offer.artifact_name) {
            let _ = self.report(shared, &offer.id, "already-installed").await;
            self.record(shared, &offer, &server, "already-installed", None);
            return None;
        }
        if !offer.device_types.contains(&self.device_type) {
            let e = format!(
                "device type {} not in {:?}",
                self.device_type, offer.device_types
            );
            self.fail(shared, &offer, &server, e).await;
            return None;
        }
        if self.report(shared, &offer.id, "downloading").await.is_err() {
            self.record(shared, &offer, &server, "aborted", None);
            return None;
        }
        let artifact = match self.download(shared, &offer.uri).await {
            Ok(a) => a,
            Err(e) => {
                self.fail(shared, &offer, &server, e).await;
                return None;
            }
        };
        if artifact.name != offer.artifact_name {
            let e = format!(
                "artifact name {} does not match the deployment's {}",
                artifact.name, offer.artifact_name
            );
            self.fail(shared, &offer, &server, e).await;
            return None;
        }
        if let Err(e) = install::check_depends(&artifact, &self.device_type, &self.provides) {
            self.fail(shared, &offer, &server, e).await;
            return None;
        }
        let payload_type = artifact.payload_type.clone();
        if !self.modules.contains(&payload_type) {
            let e = format!("Update module {payload_type} not found: no such update module");
            self.fail(shared, &offer, &server, e).await;
            return None;
        }
        if self.report(shared, &offer.id, "installing").await.is_err() {
            self.record(shared, &offer, &server, "aborted", None);
            return None;
        }
        let old_files = self.files.clone();
        let mut module_installed = None;
        let mut reboot = false;
        let mut service_restart = false;
        if payload_type == "single-file" {
            match install::single_file_target(&artifact.files) {
                Ok((dir, name)) if dir.trim_end_matches('/') == install::MODULES_DIR => {
                    self.modules.insert(name.clone());
                    module_installed = Some(name);
                }
                Ok(_) => {}
                Err(e) => {
                    self.fail(shared, &offer, &server, e).await;
                    return None;
                }
            }
        } else if payload_type == menderconf::MODULE_NAME {
            let result = install::server_migration_install(&artifact.files, &self.files);
            if self.rng.gen_bool(knobs.power_cut_during_install) {
                // The module's journal: before the commit point recovery leaves the old
                // files, from it on the new ones.
                if let Ok(r) = &result {
                    if self.rng.gen_bool(0.5) {
                        self.files = r.new.clone();
                    }
                }
                self.publish_disk(shared);
                self.resume = Some(Resume::InstallInterrupted {
                    offer,
                    server,
                    old_files,
                });
                return Some(Exit::Restart(knobs.reboot_time));
            }
            match result {
                Ok(r) => {
                    self.files = r.new;
                    reboot = r.reboot;
                    service_restart = r.service_restart;
                    self.publish_disk(shared);
                }
                Err(e) => {
                    // ArtifactInstall exit 1 → rollback (nothing to restore) → failure.
                    self.fail(shared, &offer, &server, e).await;
                    return None;
                }
            }
        } else {
            // Any other module: nothing this simulator models beyond "installed".
        }
        if reboot && self.report(shared, &offer.id, "rebooting").await.is_err() {
            self.files = old_files;
            self.publish_disk(shared);
            self.record(shared, &offer, &server, "aborted", None);
            return None;
        }
        let installed = Installed {
            offer,
            server,
            artifact,
            old_files,
            module_installed,
        };
        if reboot {
            self.resume = Some(Resume::Commit(installed));
            return Some(Exit::Restart(knobs.reboot_time));
        }
        self.commit(shared, installed, false, service_restart).await
    }

    /// The commit phase: forced re-auth from `Servers[0]`, the pre-commit `installing` report
    /// (a failure there rolls back), provides, `success`.
    #[allow(clippy::too_many_arguments)]
    async fn commit(
        &mut self,
        shared: &Shared,
        installed: Installed,
        after_reboot: bool,
        service_restart: bool,
    ) -> Option<Exit> {
        let Installed {
            offer,
            server,
            artifact,
            old_files,
            module_installed,
        } = installed;
        self.auth = None;
        let pre_commit = self.report(shared, &offer.id, "installing").await;
        if pre_commit != Ok(true) {
            // Rollback: the module restores the old files.
            self.files = old_files;
            if let Some(m) = module_installed {
                self.modules.remove(&m);
            }
            self.publish_disk(shared);
            let error = format!(
                "pre-commit status report to {} failed (the deployment belongs to {server}); rolled back",
                self.auth.as_ref().map(|a| a.0.as_str()).unwrap_or("no server")
            );
            if after_reboot {
                self.resume = Some(Resume::ReportFailure {
                    offer,
                    server,
                    error,
                });
                return Some(Exit::Restart(shared.spec.knobs.reboot_time));
            }
            self.fail(shared, &offer, &server, error).await;
            return None;
        }
        install::commit_provides(&mut self.provides, &artifact);
        self.publish_disk(shared);
        let delivered = self.report(shared, &offer.id, "success").await;
        let error =
            (delivered != Ok(true)).then(|| "the success report was not delivered".to_string());
        self.record(shared, &offer, &server, "success", error);
        let _ = self.send_inventory(shared).await;
        if service_restart {
            self.restart_at = Some(Instant::now() + shared.spec.knobs.service_restart_delay);
        }
        None
    }

    async fn resume_update(&mut self, shared: &Shared, resume: Resume) -> Option<Exit> {
        match resume {
            Resume::Commit(installed) => self.commit(shared, installed, true, false).await,
            Resume::InstallInterrupted {
                offer,
                server,
                old_files,
            } => {
                // Killed in ArtifactInstall: the module rolls back to the old files. The
                // running client keeps the config it read at this boot.
                self.files = old_files;
                self.publish_disk(shared);
                let e = "power lost during ArtifactInstall; rolled back".to_string();
                self.fail(shared, &offer, &server, e).await;
                None
            }
            Resume::ReportFailure {
                offer,
                server,
                error,
            } => {
                self.fail(shared, &offer, &server, error).await;
                None
            }
        }
    }
}
