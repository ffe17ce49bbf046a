//! Load benchmark: two mock servers (each its own process, release build) and N simulated
//! devices (default 10,000, Ed25519, `Servers: [old, new]`) polling at a compressed interval.
//!
//! Phase 1: every device is accepted on old and polls it. Phase 2: every device is rejected on
//! old (and preauthorized on new from the start), so the fleet fails over to new under load and
//! then polls new. Each phase is measured for a bounded window after a warm-up; reported per
//! phase: update checks/s, requests/s, transport errors, p50/p99/max latency (send → full
//! body, bucket upper bounds), and at the end the peak RSS (VmHWM) of both mock processes and
//! of the simulator process.
//!
//! `cargo bench -p mender-fleet-sim --bench fleet_load`; environment: `FLEET_LOAD_DEVICES`
//! (10000), `FLEET_LOAD_POLL_MS` (1000), `FLEET_LOAD_SECONDS` (20 per phase, capped at 60),
//! `FLEET_LOAD_WORKERS` (simulator threads, 2). The 3.4 client asks v2 `next` (404 on the
//! open-source server) before v1, so one update check is two requests.

#[path = "../tests/common/mod.rs"]
mod common;

use mender_fleet_sim::{peak_rss_kib, Counts, Fleet, FleetSpec, InitialConfig, Knobs};
use std::io::{BufRead as _, Write as _};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ROLE_ENV: &str = "FLEET_LOAD_ROLE";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Child process: one mock server until stdin closes.
fn serve_mock(name: &str) {
    let server = mock_mender_server::MockServer::start(mock_mender_server::ServerConfig::new(
        name,
        "bench-token",
    ))
    .expect("mock server starts");
    println!("url={}", server.url());
    std::io::stdout().flush().unwrap();
    let mut sink = String::new();
    while std::io::stdin()
        .read_line(&mut sink)
        .map(|n| n > 0)
        .unwrap_or(false)
    {}
    server.shutdown();
}

struct MockProcess {
    child: Child,
    url: String,
}

impl MockProcess {
    fn start(name: &str) -> MockProcess {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE_ENV, name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the bench binary re-executes itself as a mock server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("url=")
            .expect("url= line")
            .to_string();
        MockProcess { child, url }
    }

    fn peak_rss_mib(&self) -> f64 {
        peak_rss_kib(Some(self.child.id())).unwrap_or(0) as f64 / 1024.0
    }
}

impl Drop for MockProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

fn measure(fleet: &Fleet, label: &str, secs: u64) {
    fleet.reset_net_stats();
    let checks = fleet.update_checks();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let elapsed = started.elapsed().as_secs_f64();
    let net = fleet.net_stats();
    let c = fleet.counts();
    println!(
        "{label}: {:.0} update checks/s, {:.0} requests/s, {} transport errors, latency p50 {:?} ms p99 {:?} ms max {:?} ms (next p99 {:?} ms); on_old {} on_new {} stranded {}",
        (fleet.update_checks() - checks) as f64 / elapsed,
        net.requests as f64 / elapsed,
        net.transport_errors,
        net.p50_ms,
        net.p99_ms,
        net.max_ms,
        net.next_p99_ms,
        c.on_old,
        c.on_new,
        c.stranded
    );
}

/// Waits (at most 120 s) until the fleet has `settled`, lets it run 2 s more, then measures.
fn phase(
    fleet: &Fleet,
    settled_name: &str,
    settled: impl Fn(&Counts) -> bool,
    label: &str,
    secs: u64,
) {
    let r = fleet.wait_until(Duration::from_secs(120), settled);
    println!("{settled_name} after {} ms: {:?}", r.elapsed_ms, r.counts);
    std::thread::sleep(Duration::from_secs(2));
    measure(fleet, label, secs);
}

fn main() {
    if let Ok(name) = std::env::var(ROLE_ENV) {
        serve_mock(&name);
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --benches` would too: run only for bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("fleet_load: run with `cargo bench -p mender-fleet-sim --bench fleet_load`");
        return;
    }
    let n = env_u64("FLEET_LOAD_DEVICES", 10_000) as usize;
    let poll_ms = env_u64("FLEET_LOAD_POLL_MS", 1000);
    let secs = env_u64("FLEET_LOAD_SECONDS", 20).min(60);
    let old = MockProcess::start("old");
    let new = MockProcess::start("new");
    let (mgmt_old, mgmt_new) = (
        common::Mgmt::at(&old.url, "bench-token"),
        common::Mgmt::at(&new.url, "bench-token"),
    );
    let mut spec = FleetSpec::new(n, InitialConfig::servers(&[&old.url, &new.url]));
    spec.old_server = Some(old.url.clone());
    spec.new_server = Some(new.url.clone());
    spec.worker_threads = env_u64("FLEET_LOAD_WORKERS", 2) as usize;
    spec.knobs = Knobs {
        update_poll: Duration::from_millis(poll_ms),
        inventory_poll: Duration::from_millis(poll_ms * 30),
        retry_poll: Duration::from_millis(poll_ms),
        start_spread: Duration::from_millis(poll_ms),
        ..Knobs::default()
    };
    let t = Instant::now();
    let fleet = Fleet::new(spec).unwrap();
    println!(
        "{n} devices, keys generated in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    for d in fleet.identities() {
        mgmt_old.preauthorize(&d.id_data, &d.pubkey);
        mgmt_new.preauthorize(&d.id_data, &d.pubkey);
    }
    println!(
        "preauthorized on both servers in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    fleet.boot();
    phase(
        &fleet,
        "all on old",
        |c| c.on_old == c.devices && c.polled == c.devices,
        &format!("phase 1 ({n} devices on old, poll {poll_ms} ms)"),
        secs,
    );

    let t = Instant::now();
    for (id, aid) in mgmt_old.ids_by_serial().into_values() {
        mgmt_old.set_auth_status(&id, &aid, "rejected");
    }
    println!("rejected on old in {:.1} s", t.elapsed().as_secs_f64());
    phase(
        &fleet,
        "all on new",
        |c| c.on_new == c.devices,
        &format!("phase 2 ({n} devices on new, poll {poll_ms} ms)"),
        secs,
    );
    drop(fleet);
    println!(
        "peak RSS: simulator {:.0} MiB (bench process), mock old {:.0} MiB, mock new {:.0} MiB",
        peak_rss_kib(None).unwrap_or(0) as f64 / 1024.0,
        old.peak_rss_mib(),
        new.peak_rss_mib()
    );
}
