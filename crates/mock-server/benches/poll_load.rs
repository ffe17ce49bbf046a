//! Load benchmark: N simulated devices (Ed25519 keys, preauthorized, each with its own
//! keep-alive connection) poll one `mock-mender-server` process on loopback as fast as it
//! answers (closed loop: `deployments/next`, plus an inventory PUT every 5th round).
//! Reports requests per second and latency percentiles for each N.
//!
//! `cargo bench -p mock-mender-server --bench poll_load` (defaults: N = 1000 and 10000,
//! 5 s each). `POLL_LOAD_DEVICES=500,2000 POLL_LOAD_SECONDS=3` to change;
//! `POLL_LOAD_INTERVAL_MS=1000` paces every device to one round per interval instead. Bounded: every
//! device stops after the time window or 100,000 requests, whichever comes first.
//!
//! Under `cargo test --all-targets` (CI) it is a bounded load test instead: 100 devices for
//! 1 s, every answer as expected, and the server's request log must hold exactly the
//! enrolment plus every poll, each attributed to its device.

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes_body::full;
use ed25519_dalek::Signer as _;
use http_body_util::BodyExt as _;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const TOKEN: &str = "bench-token";
const MAX_REQUESTS_PER_DEVICE: usize = 100_000;

mod bytes_body {
    pub fn full(b: impl Into<axum::body::Bytes>) -> http_body_util::Full<axum::body::Bytes> {
        http_body_util::Full::new(b.into())
    }
}

struct Server {
    child: Child,
    addr: SocketAddr,
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn start_server() -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-mender-server"))
        .env("MOCK_MENDER_MANAGEMENT_TOKEN", TOKEN)
        .args(["--listen", "127.0.0.1:0", "--name", "bench"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("server binary starts");
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("url=")
        .expect("url line")
        .to_string();
    let addr = url.trim_start_matches("http://").parse().unwrap();
    Server {
        child,
        addr,
        _stdout: stdout,
    }
}

struct Conn {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Full<axum::body::Bytes>>,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Conn { sender }
    }

    async fn call(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "bench");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.sender.ready().await.expect("connection ready");
        let resp = self
            .sender
            .send_request(req.body(full(body)).unwrap())
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, body)
    }
}

fn device_key(i: usize) -> ed25519_dalek::SigningKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    ed25519_dalek::SigningKey::from_bytes(&seed)
}

fn pubkey_pem(key: &ed25519_dalek::SigningKey) -> String {
    ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_pem(
        &key.verifying_key(),
        ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF,
    )
    .unwrap()
}

/// Preauthorizes and authenticates N devices; returns their tokens.
async fn enrol(addr: SocketAddr, n: usize) -> Vec<String> {
    let per_task = n.div_ceil(32);
    let mut tasks = Vec::new();
    for chunk in 0..32 {
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await;
            let mut tokens = Vec::new();
            for i in chunk * per_task..((chunk + 1) * per_task).min(n) {
                let key = device_key(i);
                let pem = pubkey_pem(&key);
                let serial = format!("BENCH-{i:05}");
                let pre = serde_json::json!({"identity_data": {"serial": serial}, "pubkey": pem});
                let (status, _) = conn
                    .call(
                        "POST",
                        "/api/management/v2/devauth/devices",
                        &[
                            ("authorization", &format!("Bearer {TOKEN}")),
                            ("content-type", "application/json"),
                        ],
                        pre.to_string().into_bytes(),
                    )
                    .await;
                assert_eq!(status, 201);
                let id_data = serde_json::json!({"serial": serial}).to_string();
                let body = format!(
                    "{{\"id_data\":{},\"tenant_token\":\"\",\"pubkey\":{}}}\n",
                    serde_json::to_string(&id_data).unwrap(),
                    serde_json::to_string(&pem).unwrap()
                );
                let sig = base64::engine::general_purpose::STANDARD
                    .encode(key.sign(body.as_bytes()).to_bytes());
                let (status, token) = conn
                    .call(
                        "POST",
                        "/api/devices/v1/authentication/auth_requests",
                        &[
                            ("content-type", "application/json"),
                            ("x-men-signature", &sig),
                        ],
                        body.into_bytes(),
                    )
                    .await;
                assert_eq!(status, 200);
                tokens.push(String::from_utf8(token).unwrap());
            }
            tokens
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

struct Outcome {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u32>,
}

/// `interval`: `None` = closed loop (next request as soon as the answer arrives); `Some(i)` =
/// each device starts a round every `i`, devices spread evenly over the first interval.
async fn poll_phase(
    addr: SocketAddr,
    tokens: Vec<String>,
    window: Duration,
    interval: Option<Duration>,
) -> Outcome {
    let n = tokens.len() as u32;
    // Open every connection first (limited parallelism keeps the accept backlog small).
    let connect_limit = Arc::new(tokio::sync::Semaphore::new(256));
    let start_gate = Arc::new(tokio::sync::Barrier::new(tokens.len() + 1));
    let mut tasks = Vec::new();
    for (index, token) in tokens.into_iter().enumerate() {
        let connect_limit = connect_limit.clone();
        let start_gate = start_gate.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = {
                let _permit = connect_limit.acquire().await.unwrap();
                Conn::open(addr).await
            };
            start_gate.wait().await;
            let started = Instant::now();
            let auth = format!("Bearer {token}");
            let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
            let next = br#"{"artifact_name":"bench-base","device_type":"qemux86-64"}"#.to_vec();
            let inventory = br#"[{"name":"artifact_name","value":"bench-base"},{"name":"device_type","value":"qemux86-64"}]"#.to_vec();
            let mut latencies = Vec::new();
            let mut errors = 0;
            let mut round = 0usize;
            let mut next_round = interval.map(|i| started + i * index as u32 / n.max(1));
            while started.elapsed() < window && latencies.len() < MAX_REQUESTS_PER_DEVICE {
                if let (Some(at), Some(i)) = (next_round.as_mut(), interval) {
                    tokio::time::sleep_until((*at).into()).await;
                    *at += i;
                    if started.elapsed() >= window {
                        break;
                    }
                }
                let t = Instant::now();
                let (status, expected) = if round % 5 == 4 {
                    let (s, _) = conn
                        .call("PUT", "/api/devices/v1/inventory/device/attributes", &headers, inventory.clone())
                        .await;
                    (s, 200)
                } else {
                    let (s, _) = conn
                        .call("POST", "/api/devices/v1/deployments/device/deployments/next", &headers, next.clone())
                        .await;
                    (s, 204)
                };
                latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                if status != expected {
                    errors += 1;
                }
                round += 1;
            }
            (latencies, errors)
        }));
    }
    start_gate.wait().await;
    let started = Instant::now();
    let mut outcome = Outcome {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
    };
    for t in tasks {
        let (lat, errors) = t.await.unwrap();
        outcome.requests += lat.len();
        outcome.errors += errors;
        outcome.latencies_us.extend(lat);
    }
    outcome.elapsed = started.elapsed();
    outcome
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx] as f64 / 1000.0
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this without it, and
    // then only a small smoke run is done so test runs stay quick.
    let full = std::env::args().any(|a| a == "--bench");
    let default_counts = if full { "1000,10000" } else { "100" };
    let counts: Vec<usize> = std::env::var("POLL_LOAD_DEVICES")
        .unwrap_or_else(|_| default_counts.into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("POLL_LOAD_DEVICES: comma-separated counts")
        })
        .collect();
    let seconds: f64 = std::env::var("POLL_LOAD_SECONDS")
        .ok()
        .map(|s| s.parse::<f64>().expect("POLL_LOAD_SECONDS: number"))
        .unwrap_or(if full { 5.0 } else { 1.0 })
        .clamp(0.5, 60.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let interval = std::env::var("POLL_LOAD_INTERVAL_MS")
        .ok()
        .map(|s| Duration::from_millis(s.parse().expect("POLL_LOAD_INTERVAL_MS: integer")));
    match interval {
        None => println!("poll_load: closed-loop polling, {seconds} s per run, server in its own process"),
        Some(i) => println!("poll_load: every device polls every {i:?}, {seconds} s per run, server in its own process"),
    }
    for n in counts {
        let server = start_server();
        let enrol_start = Instant::now();
        let tokens = runtime.block_on(enrol(server.addr, n));
        let enrol_time = enrol_start.elapsed();
        let mut outcome = runtime.block_on(poll_phase(
            server.addr,
            tokens,
            Duration::from_secs_f64(seconds),
            interval,
        ));
        outcome.latencies_us.sort_unstable();
        let l = &outcome.latencies_us;
        println!(
            "N={n:>6}: {:>8.0} req/s  ({} requests in {:.2} s, {} unexpected statuses)  latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  [enrolment of {n} devices: {:.2} s]",
            outcome.requests as f64 / outcome.elapsed.as_secs_f64(),
            outcome.requests,
            outcome.elapsed.as_secs_f64(),
            outcome.errors,
            percentile(l, 0.50),
            percentile(l, 0.90),
            percentile(l, 0.99),
            percentile(l, 1.0),
            enrol_time.as_secs_f64(),
        );
        assert_eq!(outcome.errors, 0, "every poll must be answered as expected");
        if !full {
            check_request_log(server.addr, n, outcome.requests);
        }
    }
}

/// The smoke run's server-side check: the request log holds exactly the enrolment (2 per
/// device) and every poll, each poll attributed to a device, nothing lost under concurrency.
fn check_request_log(addr: SocketAddr, devices: usize, polls: usize) {
    let log: Vec<serde_json::Value> = ureq::get(&format!("http://{addr}/admin/requests"))
        .set("authorization", &format!("Bearer {TOKEN}"))
        .call()
        .expect("request log")
        .into_json()
        .expect("request log is JSON");
    assert_eq!(log.len(), 2 * devices + polls, "request log entries");
    let polled = log
        .iter()
        .filter(|e| {
            e["path"].as_str().is_some_and(|p| {
                p.ends_with("/deployments/next") || p.ends_with("/inventory/device/attributes")
            })
        })
        .filter(|e| e["device_id"].is_string() && e["status"].is_u64())
        .count();
    assert_eq!(polled, polls, "polls logged with their device");
    println!(
        "request log: {} entries, {polled} polls attributed",
        log.len()
    );
}
