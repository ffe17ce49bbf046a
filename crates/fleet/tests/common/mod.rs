//! Test support: two in-process mock servers, a simulated fleet accepted on old, the three
//! migration artifacts, an orchestrator factory and the invariant check ("devices rejected on
//! old and not accepted on new").
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mender_fleet::api::canonical_identity;
use mender_fleet::{
    Access, Api, Client, ClientOptions, FleetConfig, Orchestrator, Plan, Progress, RunError,
    Selection, TenantRoute, TokenSource,
};
use mender_fleet_sim::{Fleet as SimFleet, FleetSpec, InitialConfig, Unreachable};
use mender_release::stage_module_spec;
use menderartifact::{module_image_single_file, write_artifact_to_path};
use menderconf::{Mode, ServerUrl, Stage, StagePlan, MODULE_NAME};
use mock_mender_server::{AuthStatus, MockServer, ServerConfig};

pub const DEVICE_TYPE: &str = "qemux86-64";

/// What a scenario needs.
pub struct EnvSpec {
    /// Devices that poll normally.
    pub online: usize,
    /// Devices accepted on old (with inventory) that are powered off for the whole run.
    pub offline: usize,
    /// Devices that cannot reach new at all.
    pub cut_off_from_new: usize,
    pub poll: Duration,
}

impl EnvSpec {
    /// `count` devices that poll every 300 ms, nothing else (set the other fields with
    /// `EnvSpec { offline: 1, ..EnvSpec::online(5) }`).
    pub fn online(count: usize) -> EnvSpec {
        EnvSpec {
            online: count,
            offline: 0,
            cut_off_from_new: 0,
            poll: Duration::from_millis(300),
        }
    }
}

pub struct Env {
    pub old: MockServer,
    pub new: MockServer,
    pub fleets: Vec<SimFleet>,
    pub dir: tempfile::TempDir,
    pub artifacts: PathBuf,
    pub journal: PathBuf,
    pub old_token_file: PathBuf,
    pub new_token_file: PathBuf,
    /// Canonical identities of the offline and cut-off devices.
    pub offline_ids: Vec<String>,
    pub cut_off_ids: Vec<String>,
}

fn url(s: &str) -> ServerUrl {
    ServerUrl::parse(s).expect("mock URL is a valid ServerURL")
}

/// Module-install, stage 1 and stage 2, as `mender-migrate artifacts` writes them.
pub fn write_artifacts(dir: &Path, old: &str, new: &str) {
    write_artifacts_for(dir, old, new, DEVICE_TYPE, "srvmig");
}

/// [`write_artifacts`] for another device type, named `PREFIX-module-install`,
/// `PREFIX-stage1-dual`, `PREFIX-stage2-new-only` (the benchmark's fleet).
pub fn write_artifacts_for(dir: &Path, old: &str, new: &str, device_type: &str, prefix: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let module = dir.join(MODULE_NAME);
    std::fs::write(&module, b"#!/bin/sh\nexit 0\n").unwrap();
    let spec = module_image_single_file(
        format!("{prefix}-module-install"),
        vec![device_type.to_string()],
        &module,
        "/usr/share/mender/modules/v3",
    )
    .unwrap();
    write_artifact_to_path(spec, &dir.join(format!("{prefix}-module-install.mender"))).unwrap();
    std::fs::remove_file(&module).unwrap();
    for stage in [Stage::Dual, Stage::NewOnly] {
        let plan = StagePlan::new(stage, Mode::Patch, url(old), url(new));
        let spec = stage_module_spec(prefix, vec![device_type.to_string()], &plan, Vec::new());
        let path = dir.join(format!("{}.mender", spec.name));
        write_artifact_to_path(spec, &path).unwrap();
    }
}

fn api_for(server: &MockServer, name: &str, token_file: &Path) -> Api {
    let opts = ClientOptions {
        rate: 1000.0,
        concurrency: 8,
        max_retries: 12,
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_secs(2),
        timeout: Duration::from_secs(20),
        throttle_patience: Duration::from_secs(60),
        ca_file: None,
    };
    let token = TokenSource::load(Some(token_file), "FLEET_TEST_UNUSED", "--token-file").unwrap();
    Api::new(Client::new(name, server.url(), token, opts).unwrap())
}

fn sim_spec(count: usize, prefix: &str, old: &str, poll: Duration) -> FleetSpec {
    let mut spec = FleetSpec::new(count, InitialConfig::server_url(old));
    spec.id_prefix = prefix.into();
    spec.device_type = DEVICE_TYPE.into();
    spec.knobs.update_poll = poll;
    spec.knobs.inventory_poll = poll * 4;
    spec.knobs.retry_poll = poll;
    spec.knobs.start_spread = poll;
    spec.knobs.reboot_time = Duration::from_millis(100);
    spec.worker_threads = 2;
    spec
}

/// Preauthorizes a simulated fleet on old, boots it and waits until every device is accepted
/// there and has reported its inventory.
fn admit(old: &MockServer, api: &Api, fleet: &SimFleet, what: &str) -> Vec<String> {
    let mut idents = Vec::new();
    for d in fleet.identities() {
        let identity: serde_json::Map<String, serde_json::Value> = d
            .id_data
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        api.preauthorize(&identity, &d.pubkey).unwrap();
        idents.push(canonical_identity(&identity));
    }
    fleet.boot();
    let wanted: std::collections::HashSet<&String> = idents.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = old
            .devices()
            .iter()
            .filter(|d| {
                d.status == AuthStatus::Accepted
                    && d.inventory.contains_key("device_type")
                    && wanted.contains(&canonical_identity(&to_map(&d.identity_data)))
            })
            .count();
        if ready == idents.len() {
            return idents;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: only {ready} of {} devices accepted with inventory on old",
            idents.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Identities rejected (or missing) on old and not accepted on new: must be empty once a run
/// finished (tests and the benchmark).
pub fn stranded(old: &MockServer, new: &MockServer) -> Vec<String> {
    rejected_on_old_and(old, new, |sets| sets.contains(&AuthStatus::Accepted))
}

/// Identities not accepted on old whose sets on new do not satisfy `fine_on_new`.
fn rejected_on_old_and(
    old: &MockServer,
    new: &MockServer,
    fine_on_new: impl Fn(&[AuthStatus]) -> bool,
) -> Vec<String> {
    let on_new: HashMap<String, Vec<AuthStatus>> = new
        .devices()
        .iter()
        .map(|d| {
            (
                canonical_identity(&to_map(&d.identity_data)),
                d.auth_sets.iter().map(|a| a.status).collect(),
            )
        })
        .collect();
    old.devices()
        .iter()
        .filter(|d| d.status != AuthStatus::Accepted)
        .map(|d| canonical_identity(&to_map(&d.identity_data)))
        .filter(|id| !on_new.get(id).is_some_and(|sets| fine_on_new(sets)))
        .collect()
}

fn to_map(m: &BTreeMap<String, serde_json::Value>) -> serde_json::Map<String, serde_json::Value> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

impl Env {
    pub fn start(spec: EnvSpec) -> Env {
        let old = MockServer::start(ServerConfig::new("old", "old-management-token")).unwrap();
        let new = MockServer::start(ServerConfig::new("new", "new-management-token")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let artifacts = dir.path().join("artifacts");
        write_artifacts(&artifacts, old.url(), new.url());
        let old_token_file = dir.path().join("old.token");
        let new_token_file = dir.path().join("new.token");
        std::fs::write(&old_token_file, old.management_token()).unwrap();
        std::fs::write(&new_token_file, new.management_token()).unwrap();
        let old_api = api_for(&old, "old", &old_token_file);
        let mut fleets = Vec::new();
        let mut offline_ids = Vec::new();
        if spec.offline > 0 {
            // Accepted on old earlier, then powered off for good.
            let f = SimFleet::new(sim_spec(spec.offline, "OFF", old.url(), spec.poll)).unwrap();
            offline_ids = admit(&old, &old_api, &f, "offline devices");
            f.stop();
        }
        let mut cut_off_ids = Vec::new();
        if spec.cut_off_from_new > 0 {
            let mut s = sim_spec(spec.cut_off_from_new, "CUT", old.url(), spec.poll);
            s.knobs.unreachable = vec![Unreachable {
                server: new.url().to_string(),
                fraction: 1.0,
            }];
            s.old_server = Some(old.url().into());
            s.new_server = Some(new.url().into());
            let f = SimFleet::new(s).unwrap();
            cut_off_ids = admit(&old, &old_api, &f, "devices cut off from new");
            fleets.push(f);
        }
        if spec.online > 0 {
            let mut s = sim_spec(spec.online, "SIM", old.url(), spec.poll);
            s.old_server = Some(old.url().into());
            s.new_server = Some(new.url().into());
            let f = SimFleet::new(s).unwrap();
            admit(&old, &old_api, &f, "online devices");
            fleets.push(f);
        }
        let journal = dir.path().join("fleet.journal");
        Env {
            old,
            new,
            fleets,
            dir,
            artifacts,
            journal,
            old_token_file,
            new_token_file,
            offline_ids,
            cut_off_ids,
        }
    }

    /// A scenario's environment and the test plan with these batch sizes.
    pub fn with_batches(spec: EnvSpec, canary: usize, max_batch: usize) -> (Env, Plan) {
        let env = Env::start(spec);
        let mut plan = env.plan();
        plan.canary = canary;
        plan.max_batch = max_batch;
        (env, plan)
    }

    pub fn plan(&self) -> Plan {
        Plan {
            canary: 5,
            max_batch: 40,
            failure_threshold: 0.2,
            min_sample: 5,
            stage_timeout: Duration::from_secs(10),
            appear_timeout: Duration::from_secs(6),
            poll_interval: Duration::from_millis(200),
            concurrency: 8,
            deployment_cap: 800,
        }
    }

    pub fn config(&self, plan: Plan) -> FleetConfig {
        FleetConfig {
            artifacts_dir: self.artifacts.clone(),
            selection: Selection::default(),
            tenant: TenantRoute::default(),
            plan,
            resume_paused: false,
            retry_stragglers: false,
            retry_failed: false,
        }
    }

    pub fn apis(&self) -> (Api, Api) {
        (
            api_for(&self.old, "old", &self.old_token_file),
            api_for(&self.new, "new", &self.new_token_file),
        )
    }

    pub fn orchestrator(&self, cfg: FleetConfig) -> Result<Orchestrator, RunError> {
        let (old, new) = self.apis();
        Orchestrator::open(
            old,
            new,
            cfg,
            &self.journal,
            Arc::new(Progress::recording()),
            Access::Run,
        )
    }

    /// Identities rejected (or missing) on old and not accepted on new: must be empty once a
    /// run finished.
    pub fn stranded(&self) -> Vec<String> {
        stranded(&self.old, &self.new)
    }

    /// Identities rejected on old with neither an accepted nor a preauthorized set on new:
    /// must be empty at every moment (a stopped run leaves devices in flight, preauthorized).
    pub fn lost(&self) -> Vec<String> {
        rejected_on_old_and(&self.old, &self.new, |sets| {
            sets.iter()
                .any(|s| matches!(s, AuthStatus::Accepted | AuthStatus::Preauthorized))
        })
    }

    /// Status on old of a device by canonical identity.
    pub fn old_status(&self, identity: &str) -> Option<AuthStatus> {
        self.old
            .devices()
            .into_iter()
            .find(|d| canonical_identity(&to_map(&d.identity_data)) == identity)
            .map(|d| d.status)
    }

    /// Deployment names created more than once on either server.
    pub fn duplicate_deployments(&self) -> Vec<String> {
        let mut dups = Vec::new();
        for server in [&self.old, &self.new] {
            let mut seen: HashMap<String, usize> = HashMap::new();
            for d in server.deployments() {
                *seen.entry(d.name.clone()).or_insert(0) += 1;
            }
            dups.extend(
                seen.into_iter()
                    .filter(|(_, n)| *n > 1)
                    .map(|(k, n)| format!("{}: {k} ×{n}", server.name())),
            );
        }
        dups
    }
}
