//! Benchmark (not a test): a full two-stage migration of a simulated fleet (default 10,000
//! devices, `FLEET_BENCH_DEVICES` to change) between two in-process mock servers with
//! compressed poll intervals (devices check for updates every 2 s and retry every 2 s after
//! a failed auth, reboot in 200 ms; the orchestrator polls every 500 ms; canary = a tenth of
//! the fleet, batches doubling up to 5,000). The orchestrator runs in a child process (this
//! binary again, in orchestrator mode) so its peak RSS is measured alone: its own `VmHWM`
//! (see [`own_peak_rss_kib`]). Prints wall time, requests per device, p99 API latency, peak
//! RSS and the CPU seconds of the orchestrator and of this process (mock servers + simulated
//! fleet) during the run; fails unless every device went through both stages and none is
//! left rejected on old and not accepted on new.
//!
//!     cargo bench -p mender-fleet --bench fleet_migration
//!
//! `FLEET_BENCH_PROGRESS=1`: the orchestrator's log lines on stderr. `FLEET_BENCH_WRAP="heaptrack
//! -o /tmp/orch"`: the orchestrator runs under that command (a profiler).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mender_fleet::{
    Access, Api, Client, ClientOptions, FleetConfig, Mode, Orchestrator, Plan, Progress, Selection,
    TenantRoute, TokenSource,
};
use mender_fleet_sim::{Fleet, FleetSpec, InitialConfig};
use mock_mender_server::{MockServer, ServerConfig};

/// The tests' environment helpers (one artifact writer for tests and benchmark).
#[path = "../tests/common/mod.rs"]
mod common;

const DEVICE_TYPE: &str = "bench-device";

fn opts(concurrency: usize) -> ClientOptions {
    ClientOptions {
        rate: 5000.0,
        concurrency,
        max_retries: 12,
        backoff_base: Duration::from_millis(50),
        backoff_max: Duration::from_secs(2),
        timeout: Duration::from_secs(60),
        throttle_patience: Duration::from_secs(60),
        ca_file: None,
    }
}

fn plan(devices: usize) -> Plan {
    Plan {
        canary: (devices / 10).max(1),
        max_batch: 5000,
        failure_threshold: 0.05,
        min_sample: 20,
        stage_timeout: Duration::from_secs(300),
        appear_timeout: Duration::from_secs(120),
        poll_interval: Duration::from_millis(500),
        concurrency: 32,
        deployment_cap: 800,
    }
}

/// This process's own peak RSS (`VmHWM`, KiB). Not `getrusage(RUSAGE_CHILDREN)` in the
/// parent: Linux carries the high-water mark of the address space an `exec` replaces into
/// the child's `ru_maxrss`, and a spawned child starts in the parent's (the mock servers and
/// the simulated fleet), so that figure is the parent's peak, not the orchestrator's.
fn own_peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

/// CPU seconds (user + system) this process used so far (`RUSAGE_SELF`): all threads.
fn own_cpu_s() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

/// Child mode: run the orchestrator only, print the report as JSON.
fn orchestrate() {
    // As `mender-migrate fleet` does before anything else.
    mender_fleet::limit_malloc_arenas();
    let env = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    let devices: usize = env("FLEET_BENCH_N").parse().unwrap();
    let api = |name: &str, url_var: &str, token_var: &str| {
        let token = TokenSource::load(None, token_var, "-").unwrap();
        Api::new(Client::new(name, &env(url_var), token, opts(32)).unwrap())
    };
    let old = api("old", "FLEET_BENCH_OLD", "MENDER_MIGRATE_OLD_TOKEN");
    let new = api("new", "FLEET_BENCH_NEW", "MENDER_MIGRATE_NEW_TOKEN");
    let cfg = FleetConfig {
        artifacts_dir: PathBuf::from(env("FLEET_BENCH_ARTIFACTS")),
        selection: Selection::default(),
        tenant: TenantRoute::default(),
        plan: plan(devices),
        resume_paused: false,
        retry_stragglers: false,
        retry_failed: false,
    };
    let started = Instant::now();
    let orch = Orchestrator::open(
        old,
        new,
        cfg,
        &PathBuf::from(env("FLEET_BENCH_JOURNAL")),
        // FLEET_BENCH_PROGRESS=1: the orchestrator's log lines on stderr (where time goes).
        Arc::new(Progress::new(
            if std::env::var_os("FLEET_BENCH_PROGRESS").is_some() {
                Mode::Plain
            } else {
                Mode::Quiet
            },
        )),
        Access::Run,
    )
    .unwrap_or_else(|e| panic!("open: {e}"));
    let report = orch.run().unwrap_or_else(|e| panic!("run: {e}"));
    let mut v = serde_json::to_value(&report).unwrap();
    v["not_on_new"] = serde_json::json!(report.not_on_new.len());
    v["wall_s"] = serde_json::json!(started.elapsed().as_secs_f64());
    v["peak_rss_kib"] = serde_json::json!(own_peak_rss_kib());
    v["cpu_s"] = serde_json::json!(own_cpu_s());
    println!("{v}");
}

fn main() {
    if std::env::var_os("FLEET_BENCH_ROLE").is_some() {
        orchestrate();
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("FLEET_BENCH_DEVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut old_cfg = ServerConfig::new("old", "bench-old-token");
    old_cfg.worker_threads = Some(2);
    let mut new_cfg = ServerConfig::new("new", "bench-new-token");
    new_cfg.worker_threads = Some(2);
    let old = MockServer::start(old_cfg).unwrap();
    let new = MockServer::start(new_cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    common::write_artifacts_for(&artifacts, old.url(), new.url(), DEVICE_TYPE, "bench");

    let mut spec = FleetSpec::new(n, InitialConfig::server_url(old.url()));
    spec.device_type = DEVICE_TYPE.into();
    spec.knobs.update_poll = Duration::from_secs(2);
    spec.knobs.inventory_poll = Duration::from_secs(600);
    spec.knobs.retry_poll = Duration::from_secs(2);
    spec.knobs.start_spread = Duration::from_secs(2);
    spec.knobs.reboot_time = Duration::from_millis(200);
    spec.knobs.max_in_flight = 512;
    spec.worker_threads = 2;
    spec.old_server = Some(old.url().into());
    spec.new_server = Some(new.url().into());
    let fleet = Fleet::new(spec).unwrap();

    // Admit the fleet on old (setup, not measured).
    let setup = Instant::now();
    let admin = Api::new(
        Client::new(
            "old",
            old.url(),
            TokenSource::fixed(old.management_token()),
            opts(16),
        )
        .unwrap(),
    );
    let ids = fleet.identities();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..16 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(d) = ids.get(i) else { break };
                let identity = d
                    .id_data
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect();
                admin.preauthorize(&identity, &d.pubkey).unwrap();
            });
        }
    });
    fleet.boot();
    loop {
        let ready = old
            .devices()
            .iter()
            .filter(|d| {
                d.inventory.contains_key("device_type")
                    && d.status == mock_mender_server::AuthStatus::Accepted
            })
            .count();
        if ready == n {
            break;
        }
        assert!(
            setup.elapsed() < Duration::from_secs(600),
            "setup: only {ready} of {n} devices accepted with inventory"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "setup: {n} devices accepted on old in {:.1}s",
        setup.elapsed().as_secs_f64()
    );

    // The orchestrator, alone in a child process.
    let started = Instant::now();
    let servers_cpu_before = own_cpu_s();
    // FLEET_BENCH_WRAP="heaptrack -o /tmp/orch": run the orchestrator under a profiler.
    let exe = std::env::current_exe().unwrap();
    let wrap = std::env::var("FLEET_BENCH_WRAP").unwrap_or_default();
    let mut argv: Vec<std::ffi::OsString> = wrap.split_whitespace().map(Into::into).collect();
    argv.push(exe.into());
    let out = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env("FLEET_BENCH_ROLE", "orchestrator")
        .env("FLEET_BENCH_N", n.to_string())
        .env("FLEET_BENCH_OLD", old.url())
        .env("FLEET_BENCH_NEW", new.url())
        .env("MENDER_MIGRATE_OLD_TOKEN", old.management_token())
        .env("MENDER_MIGRATE_NEW_TOKEN", new.management_token())
        .env("FLEET_BENCH_ARTIFACTS", &artifacts)
        .env("FLEET_BENCH_JOURNAL", dir.path().join("bench.journal"))
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    let wall = started.elapsed();
    // This process is the two mock servers and the simulated fleet.
    let servers_and_fleet_cpu = own_cpu_s() - servers_cpu_before;
    assert!(
        out.status.success(),
        "orchestrator failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report JSON");
    let calls = &report["calls"];
    let p99: f64 = ["old", "new"]
        .iter()
        .filter_map(|k| calls[*k]["p99_ms"].as_f64())
        .fold(0.0, f64::max);
    let requests: u64 = ["old", "new"]
        .iter()
        .filter_map(|k| calls[*k]["requests"].as_u64())
        .sum();
    let rss_kib = report["peak_rss_kib"].as_u64().expect("peak_rss_kib");
    let stranded = common::stranded(&old, &new);
    assert!(
        stranded.is_empty(),
        "{} devices rejected on old and not accepted on new: {:?}",
        stranded.len(),
        &stranded[..stranded.len().min(10)]
    );
    assert_eq!(
        report["migrated"].as_u64(),
        Some(n as u64),
        "every device through both stages: {}",
        report["counts"]
    );
    let sim = fleet.counts();
    let mut figures = BTreeMap::new();
    figures.insert("devices", serde_json::json!(n));
    figures.insert("migrated", report["migrated"].clone());
    figures.insert("not_on_new", report["not_on_new"].clone());
    figures.insert("sim_on_new", serde_json::json!(sim.on_new));
    figures.insert("stranded", serde_json::json!(stranded.len()));
    figures.insert("wall_s", serde_json::json!(wall.as_secs_f64()));
    figures.insert(
        "requests_per_device",
        serde_json::json!(requests as f64 / n as f64),
    );
    figures.insert("p99_api_latency_ms", serde_json::json!(p99));
    figures.insert("orchestrator_cpu_s", report["cpu_s"].clone());
    figures.insert(
        "mocks_and_simulator_cpu_s",
        serde_json::json!(servers_and_fleet_cpu),
    );
    figures.insert(
        "orchestrator_peak_rss_mib",
        serde_json::json!(rss_kib as f64 / 1024.0),
    );
    println!("{}", serde_json::to_string_pretty(&figures).unwrap());
    drop(fleet);
}
