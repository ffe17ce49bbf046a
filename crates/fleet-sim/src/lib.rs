//! Fleet simulator: N simulated Mender clients in one process, each with its own key and
//! identity, behaving like the real 3.4 and 4.x/5.x clients where a server migration depends on
//! it: signed auth requests, the failover walk from `Servers[0]` after a 401, stickiness to a
//! server that is down, update checks with provides, downloads, status reports in the client's
//! order, client-side depends checks, and stage artifacts installed by the project's real
//! `menderconf::StagePlan` on in-memory config files, followed by a simulated restart that
//! reloads the config — so a wrong stage really strands a device.
//!
//! ```no_run
//! use mender_fleet_sim::{Fleet, FleetSpec, InitialConfig};
//! use std::time::Duration;
//! let mut spec = FleetSpec::new(100, InitialConfig::server_url("http://127.0.0.1:8080"));
//! spec.knobs.update_poll = Duration::from_millis(500);
//! let fleet = Fleet::start(spec).unwrap();
//! for device in fleet.identities() {
//!     // preauthorize device.id_data / device.pubkey on the server ...
//! #   let _ = device;
//! }
//! let report = fleet.wait_until(Duration::from_secs(30), |c| c.stranded == 0);
//! println!("{}", serde_json::to_string_pretty(&report.counts).unwrap());
//! let _final_report = fleet.stop();
//! ```
//!
//! The model of each client is documented in `README.md` (what is simulated, what is not).

mod config;
mod device;
mod install;
mod keys;
mod net;

pub use config::ClientGeneration;
pub use keys::KeyKind;
pub use net::NetStats;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The config files every device starts with (device paths `/etc/mender/mender.conf` and
/// `/var/lib/mender/mender.conf`; `None` = absent). Bytes as they would be on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialConfig {
    pub main: Option<Vec<u8>>,
    pub fallback: Option<Vec<u8>>,
}

impl InitialConfig {
    /// `{"ServerURL": url}` in the main file.
    pub fn server_url(url: &str) -> InitialConfig {
        InitialConfig::main_json(serde_json::json!({ "ServerURL": url }))
    }

    /// `{"Servers": [{"ServerURL": ...}, ...]}` in the main file.
    pub fn servers(urls: &[&str]) -> InitialConfig {
        let list: Vec<_> = urls
            .iter()
            .map(|u| serde_json::json!({ "ServerURL": u }))
            .collect();
        InitialConfig::main_json(serde_json::json!({ "Servers": list }))
    }

    /// Any JSON value as the main file, no fallback.
    pub fn main_json(value: serde_json::Value) -> InitialConfig {
        let mut bytes = serde_json::to_vec_pretty(&value).expect("JSON serialises");
        bytes.push(b'\n');
        InitialConfig {
            main: Some(bytes),
            fallback: None,
        }
    }

    /// Adds `TenantToken` to the file that holds the server setting (the main file if both).
    pub fn with_tenant_token(mut self, token: &str) -> InitialConfig {
        let target = if self.main.is_some() {
            &mut self.main
        } else {
            &mut self.fallback
        };
        let mut object: serde_json::Map<String, serde_json::Value> = target
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or_default();
        object.insert("TenantToken".into(), token.into());
        let mut bytes = serde_json::to_vec_pretty(&object).expect("JSON serialises");
        bytes.push(b'\n');
        *target = Some(bytes);
        self
    }
}

/// A share of the fleet that cannot reach one server (connection refused, locally simulated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unreachable {
    /// Base URL as it appears in the device's config (e.g. `http://127.0.0.1:PORT`).
    pub server: String,
    /// Share of the devices (0.0–1.0) affected.
    pub fraction: f64,
}

/// Behaviour and timing knobs. Times are compressed: the defaults poll every second instead of
/// the clients' 30 minutes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Knobs {
    /// `UpdatePollIntervalSeconds`.
    #[serde(with = "millis")]
    pub update_poll: Duration,
    /// `InventoryPollIntervalSeconds`.
    #[serde(with = "millis")]
    pub inventory_poll: Duration,
    /// `RetryPollIntervalSeconds`: spacing of status-report and download retries.
    #[serde(with = "millis")]
    pub retry_poll: Duration,
    /// First boots are spread uniformly over this window (0 = all at once).
    #[serde(with = "millis")]
    pub start_spread: Duration,
    /// How long a reboot takes (daemon down).
    #[serde(with = "millis")]
    pub reboot_time: Duration,
    /// `restart: service` stages: the module restarts the client this long after Cleanup
    /// (30 s on a real device).
    #[serde(with = "millis")]
    pub service_restart_delay: Duration,
    /// Share of devices running the 4.x/5.x client (the rest run 3.4).
    pub v5_fraction: f64,
    /// Share of devices powered off from the start.
    pub offline_fraction: f64,
    /// When the offline devices come online (`None` = never during the run).
    #[serde(with = "opt_millis")]
    pub offline_until: Option<Duration>,
    /// Devices that cannot reach a given server.
    pub unreachable: Vec<Unreachable>,
    /// Share of devices on a flaky network …
    pub flaky_fraction: f64,
    /// … where each request fails at transport level with this probability.
    pub flaky_loss: f64,
    /// Probability that a device loses power while the `server-migration` module installs a
    /// stage (then half before, half after the module's commit point).
    pub power_cut_during_install: f64,
    /// Share of devices that generate a new key (and restart) at `key_regeneration_at`.
    pub key_regeneration_fraction: f64,
    #[serde(with = "millis")]
    pub key_regeneration_at: Duration,
    /// 5.1.0 bug: a 401 with a JSON body on `deployments/next` aborts mender-updated, which
    /// systemd restarts (client reference §18).
    pub v5_abort_on_json_401: bool,
    /// Requests in flight across the fleet at most (the rest wait).
    pub max_in_flight: usize,
    /// Per-request timeout.
    #[serde(with = "millis")]
    pub request_timeout: Duration,
    /// Seed for every random choice (which devices are offline, flaky, …).
    pub seed: u64,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            update_poll: Duration::from_secs(1),
            inventory_poll: Duration::from_secs(10),
            retry_poll: Duration::from_secs(1),
            start_spread: Duration::from_secs(1),
            reboot_time: Duration::from_millis(200),
            service_restart_delay: Duration::from_secs(3),
            v5_fraction: 0.0,
            offline_fraction: 0.0,
            offline_until: None,
            unreachable: Vec::new(),
            flaky_fraction: 0.0,
            flaky_loss: 0.0,
            power_cut_during_install: 0.0,
            key_regeneration_fraction: 0.0,
            key_regeneration_at: Duration::ZERO,
            v5_abort_on_json_401: true,
            max_in_flight: 256,
            request_timeout: Duration::from_secs(10),
            seed: 1,
        }
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    pub count: usize,
    pub initial_config: InitialConfig,
    /// Identity prefix: device `i` has `{"mac": "<prefix-derived MAC>", "serial": "<prefix>-<i>"}`.
    /// Use different prefixes for fleets sharing a server.
    pub id_prefix: String,
    pub device_type: String,
    /// `artifact_name` the devices start with.
    pub artifact_name: String,
    pub key_kind: KeyKind,
    /// Update modules installed from the start (`single-file` always is).
    pub modules: Vec<String>,
    pub knobs: Knobs,
    /// Tokio worker threads of the simulator's runtime.
    pub worker_threads: usize,
    /// The server a device counts as "on old" / "on new" in the report (base URLs).
    pub old_server: Option<String>,
    pub new_server: Option<String>,
}

impl FleetSpec {
    pub fn new(count: usize, initial_config: InitialConfig) -> FleetSpec {
        FleetSpec {
            count,
            initial_config,
            id_prefix: "SIM".into(),
            device_type: "qemux86-64".into(),
            artifact_name: "release-1".into(),
            key_kind: KeyKind::Ed25519,
            modules: Vec::new(),
            knobs: Knobs::default(),
            worker_threads: 2,
            old_server: None,
            new_server: None,
        }
    }
}

/// A device's identity and current public key, e.g. to preauthorize it.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceIdentity {
    pub index: usize,
    /// The identity attributes (what `id_data` encodes).
    pub id_data: BTreeMap<String, String>,
    /// `id_data` exactly as sent in auth requests (a JSON string, keys sorted).
    pub id_data_json: String,
    /// SPKI PEM of the device's current key.
    pub pubkey: String,
}

/// Whether the device's client is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "kebab-case")]
pub enum DeviceState {
    /// Not yet booted (start spread) or powered off by the offline knob.
    Offline,
    Running,
    /// Rebooting or restarting the client.
    Restarting,
    /// The client refused to start (3.4: config it cannot load) and is not restarted.
    Dead(String),
}

/// One deployment as the device saw it end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeploymentOutcome {
    pub id: String,
    pub server: String,
    pub artifact_name: String,
    /// `success`, `failure`, `already-installed` or `aborted`.
    pub status: String,
    /// Why it failed (the client's message), if it did.
    pub error: Option<String>,
}

/// A device at report time.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    pub index: usize,
    pub id_data_json: String,
    pub client: ClientGeneration,
    #[serde(flatten)]
    pub state: DeviceState,
    /// The server it is authenticated with (last auth walk or API call succeeded there).
    pub server: Option<String>,
    /// Servers the running client uses (read at its last start).
    pub loaded_servers: Vec<String>,
    /// Servers its config files on "disk" give now (what the next start would use; empty if
    /// the client could not load them).
    pub config_servers: Vec<String>,
    pub provides: BTreeMap<String, String>,
    pub modules: Vec<String>,
    pub deployments: Vec<DeploymentOutcome>,
    /// How many times the key was regenerated.
    pub key_generation: u32,
    pub last_error: Option<String>,
    /// The config files now (UTF-8, lossy).
    pub main_config: Option<String>,
    pub fallback_config: Option<String>,
}

/// Fleet-wide counts. `stranded` = running (or dead) and authenticated nowhere; offline devices
/// are counted apart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub devices: usize,
    pub on_new: usize,
    pub on_old: usize,
    /// Authenticated with some other server (neither `old_server` nor `new_server`).
    pub on_other: usize,
    pub stranded: usize,
    pub offline: usize,
    pub restarting: usize,
    pub dead: usize,
    /// Devices that completed at least one update check.
    pub polled: usize,
}

/// Everything at one moment.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub elapsed_ms: u64,
    pub counts: Counts,
    pub update_checks: u64,
    pub net: NetStats,
    pub devices: Vec<DeviceReport>,
}

impl FleetReport {
    /// Devices authenticated nowhere (excluding offline ones).
    pub fn stranded(&self) -> impl Iterator<Item = &DeviceReport> {
        self.devices
            .iter()
            .filter(|d| d.server.is_none() && !matches!(d.state, DeviceState::Offline))
    }
}

pub(crate) struct Shared {
    pub(crate) net: net::Net,
    pub(crate) spec: FleetSpec,
    pub(crate) slots: Vec<Mutex<device::Status>>,
    pub(crate) artifact_cache:
        Mutex<std::collections::HashMap<String, Arc<install::ParsedArtifact>>>,
    pub(crate) update_checks: AtomicU64,
    /// Set at boot: the fleet clock for offline windows and key regeneration.
    pub(crate) started: std::sync::OnceLock<tokio::time::Instant>,
}

/// A running simulated fleet. Dropping it stops every device.
pub struct Fleet {
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
    unbooted: Mutex<Option<Vec<device::Device>>>,
    wall_start: Instant,
}

impl Fleet {
    /// [`Fleet::new`] + [`Fleet::boot`].
    pub fn start(spec: FleetSpec) -> anyhow::Result<Fleet> {
        let fleet = Fleet::new(spec)?;
        fleet.boot();
        Ok(fleet)
    }

    /// Generates every device's identity and key without booting any device, so the caller
    /// can preauthorize them first ([`Fleet::identities`]). Usable from sync and async code:
    /// the devices run on the simulator's own Tokio runtime.
    pub fn new(spec: FleetSpec) -> anyhow::Result<Fleet> {
        anyhow::ensure!(spec.count > 0, "a fleet needs at least one device");
        for (name, v) in [
            ("v5_fraction", spec.knobs.v5_fraction),
            ("offline_fraction", spec.knobs.offline_fraction),
            ("flaky_fraction", spec.knobs.flaky_fraction),
            ("flaky_loss", spec.knobs.flaky_loss),
            (
                "power_cut_during_install",
                spec.knobs.power_cut_during_install,
            ),
            (
                "key_regeneration_fraction",
                spec.knobs.key_regeneration_fraction,
            ),
        ] {
            anyhow::ensure!(
                (0.0..=1.0).contains(&v),
                "knob {name} = {v}: must be within 0..1"
            );
        }
        for u in &spec.knobs.unreachable {
            anyhow::ensure!(
                (0.0..=1.0).contains(&u.fraction),
                "unreachable fraction {} for {}: must be within 0..1",
                u.fraction,
                u.server
            );
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(spec.worker_threads.max(1))
            .thread_name("fleet-sim")
            .enable_all()
            .build()?;
        let devices = device::build(&spec);
        let shared = {
            let _guard = runtime.enter();
            Arc::new(Shared {
                net: net::Net::new(spec.knobs.max_in_flight, spec.knobs.request_timeout),
                slots: devices
                    .iter()
                    .map(|d| Mutex::new(d.initial_status()))
                    .collect(),
                spec,
                artifact_cache: Mutex::new(Default::default()),
                update_checks: AtomicU64::new(0),
                started: std::sync::OnceLock::new(),
            })
        };
        Ok(Fleet {
            shared,
            runtime: Some(runtime),
            unbooted: Mutex::new(Some(devices)),
            wall_start: Instant::now(),
        })
    }

    /// Boots every device (first boots spread over `start_spread`); a second call does nothing.
    pub fn boot(&self) {
        let devices = self.unbooted.lock().expect("boot lock").take();
        if let (Some(devices), Some(rt)) = (devices, &self.runtime) {
            // The fleet clock (offline windows, key regeneration) starts at boot.
            let shared = self.shared.clone();
            let _guard = rt.enter();
            shared.started.get_or_init(tokio::time::Instant::now);
            for d in devices {
                rt.spawn(d.run(shared.clone()));
            }
        }
    }

    /// Every device's identity and current key (changes after a key regeneration).
    pub fn identities(&self) -> Vec<DeviceIdentity> {
        self.shared
            .slots
            .iter()
            .map(|s| s.lock().expect("status lock").identity())
            .collect()
    }

    /// Counts only (cheaper than a full report).
    pub fn counts(&self) -> Counts {
        device::counts(&self.shared)
    }

    /// Request statistics so far.
    pub fn net_stats(&self) -> NetStats {
        self.shared.net.stats.snapshot()
    }

    /// Zeroes the request statistics (e.g. after a warm-up).
    pub fn reset_net_stats(&self) {
        self.shared.net.stats.reset();
    }

    /// Update checks completed so far (any answer).
    pub fn update_checks(&self) -> u64 {
        self.shared.update_checks.load(Relaxed)
    }

    /// A full report now.
    pub fn report(&self) -> FleetReport {
        let devices: Vec<DeviceReport> = self
            .shared
            .slots
            .iter()
            .map(|s| s.lock().expect("status lock").report(&self.shared))
            .collect();
        FleetReport {
            elapsed_ms: self.wall_start.elapsed().as_millis() as u64,
            counts: device::counts(&self.shared),
            update_checks: self.update_checks(),
            net: self.net_stats(),
            devices,
        }
    }

    /// Polls the counts every 100 ms until `done` holds or `timeout` passes; returns the
    /// final full report either way (check it, or [`FleetReport::counts`]).
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(&Counts) -> bool) -> FleetReport {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.counts()) || Instant::now() >= deadline {
                return self.report();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops every device and returns the final report.
    pub fn stop(mut self) -> FleetReport {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
        self.report()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Peak resident set size of this process (`VmHWM`), in KiB, on Linux.
pub fn peak_rss_kib(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".into(),
    };
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        l.strip_prefix("VmHWM:")
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    })
}
