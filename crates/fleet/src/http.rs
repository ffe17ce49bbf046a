//! HTTP client for one Management API: Bearer token, per-server token bucket and concurrency
//! limit, retries (429/502/503/504/connection errors: `Retry-After`, then `X-Retry-In`, then
//! exponential backoff with jitter), lenient error parsing with the server's request id, and
//! TLS with the system roots plus an extra CA file.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;

use crate::secret::TokenSource;

/// Largest page the real server accepts (`per_page` > 500 is a 400, not clamped).
pub const PER_PAGE_MAX: usize = 500;

/// Limits and retry policy of one server's client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Requests per second (token bucket refill rate; the burst is the same number).
    pub rate: f64,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Retries of a retryable failure before giving up.
    pub max_retries: u32,
    /// First backoff step (doubled per attempt, full jitter).
    pub backoff_base: Duration,
    /// Cap of one backoff or `Retry-After` wait.
    pub backoff_max: Duration,
    /// Timeout of one request (connect + read + write).
    pub timeout: Duration,
    /// How long one request keeps retrying 429s (throttling is "come back later", not a
    /// failure: it gets this time budget instead of `max_retries`).
    pub throttle_patience: Duration,
    /// Extra CA certificates (PEM) trusted besides the system roots.
    pub ca_file: Option<PathBuf>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            rate: 20.0,
            concurrency: 8,
            max_retries: 8,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(60),
            timeout: Duration::from_secs(60),
            throttle_patience: Duration::from_secs(600),
            ca_file: None,
        }
    }
}

/// What kind of failure an [`ApiError`] is; decides what the caller may do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The server answered with an error status (see `status`).
    Status,
    /// 401: the management token is expired or revoked.
    Unauthorized,
    /// The request may or may not have reached the server (connection dropped after sending,
    /// timeout, 502/503/504 on a non-idempotent call): reconcile before repeating it.
    Unknown,
    /// The server could not be reached at all (nothing was sent), retries exhausted.
    Unreachable,
    /// 429 or 5xx kept coming back until the retries ran out.
    RetriesExhausted,
}

/// A failed API call: which server, which call, what came back, and the request id.
/// Boxed so `Result<_, ApiError>` stays small.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct ApiError(pub Box<ApiErrorDetail>);

/// The fields of an [`ApiError`].
#[derive(Clone, Debug, thiserror::Error)]
#[error("{server} server: {method} {path}: {message}{}", request_id_suffix(.request_id))]
pub struct ApiErrorDetail {
    pub server: String,
    pub method: String,
    pub path: String,
    pub status: Option<u16>,
    pub kind: ErrorKind,
    pub message: String,
    pub request_id: Option<String>,
    /// The raw response body (error bodies are small), for 409 bodies and the like.
    pub body: Vec<u8>,
}

impl std::ops::Deref for ApiError {
    type Target = ApiErrorDetail;
    fn deref(&self) -> &ApiErrorDetail {
        &self.0
    }
}

impl From<ApiErrorDetail> for ApiError {
    fn from(d: ApiErrorDetail) -> Self {
        ApiError(Box::new(d))
    }
}

fn request_id_suffix(id: &Option<String>) -> String {
    match id {
        Some(id) => format!(" (request id {id})"),
        None => " (no request id)".into(),
    }
}

impl ApiError {
    pub fn is_status(&self, code: u16) -> bool {
        self.status == Some(code)
    }

    /// 404 or 405: the server lacks this endpoint (an older or open-source server); the
    /// caller falls back to the older call.
    pub fn endpoint_missing(&self) -> bool {
        self.is_status(404) || self.is_status(405)
    }
}

/// A successful response (status < 400) with the headers the orchestrator reads.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub location: Option<String>,
    pub link_next: bool,
    pub total_count: Option<u64>,
    pub request_id: Option<String>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Result<Value, String> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&self.body).map_err(|e| format!("response is not JSON: {e}"))
    }
}

/// Whether a request may be sent again after an ambiguous failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// GET, PUT of a status, DELETE, read-only search POSTs: repeat freely.
    Idempotent,
    /// Creating POSTs: only repeat when the request certainly did not reach the handler
    /// (connection refused, 429); otherwise report [`ErrorKind::Unknown`].
    NotIdempotent,
}

impl Retry {
    /// The kind of a request given up on: when the failure may have let it take effect
    /// (`maybe_applied`) a creating POST's outcome is [`ErrorKind::Unknown`]; anything else
    /// ran out of retries.
    fn gave_up(self, maybe_applied: bool) -> ErrorKind {
        if maybe_applied && self == Retry::NotIdempotent {
            ErrorKind::Unknown
        } else {
            ErrorKind::RetriesExhausted
        }
    }
}

/// A request body.
pub enum Body<'a> {
    Empty,
    Json(&'a Value),
    /// A streamed body with its content type (re-opened on each attempt).
    Stream {
        content_type: String,
        open: &'a dyn Fn() -> std::io::Result<Box<dyn Read + Send>>,
    },
}

/// Call statistics of one client (for the benchmark and the final report).
#[derive(Default, Debug)]
pub struct Stats {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub throttled: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

impl Stats {
    fn record(&self, latency: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let us = latency.as_micros().min(u32::MAX as u128) as u32;
        self.latencies_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(us);
    }

    /// The given percentile (0..=100) of request latencies.
    pub fn latency_percentile(&self, pct: f64) -> Option<Duration> {
        let mut v = self
            .latencies_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let idx = ((pct / 100.0) * (v.len() - 1) as f64).round() as usize;
        Some(Duration::from_micros(v[idx.min(v.len() - 1)] as u64))
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
    /// Set by a 429: nobody sends before this instant.
    blocked_until: Option<Instant>,
}

struct Slots {
    free: Mutex<usize>,
    cv: Condvar,
}

/// Client of one server's Management API. Cheap to share between threads (`Arc`).
pub struct Client {
    name: String,
    base: String,
    token: TokenSource,
    agent: ureq::Agent,
    opts: ClientOptions,
    bucket: Mutex<Bucket>,
    slots: Slots,
    pub stats: Stats,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.name)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Normalizes a server URL: scheme required (http or https), no trailing slash, no path.
pub fn normalize_server_url(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("server URL {url:?} must start with https:// or http://"))?;
    if rest.is_empty() || rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(format!(
            "server URL {url:?} must be scheme://host[:port] with no path"
        ));
    }
    Ok(url.to_string())
}

/// Standard locations of the system CA bundle (Debian, Fedora, Alpine, SUSE, macOS ports).
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/usr/local/etc/openssl/cert.pem",
];

fn add_pem_file(roots: &mut rustls::RootCertStore, path: &Path) -> Result<usize, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let mut n = 0;
    for cert in rustls_pemfile::certs(&mut data.as_slice()) {
        let cert = cert.map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
        if roots.add(cert).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

/// Root store: `SSL_CERT_FILE` or the first system bundle found, plus `ca_file` (which must
/// hold at least one certificate).
pub fn root_store(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    for path in env
        .iter()
        .map(PathBuf::as_path)
        .chain(SYSTEM_BUNDLES.iter().map(Path::new))
    {
        if path.is_file() && add_pem_file(&mut roots, path).unwrap_or(0) > 0 {
            break;
        }
    }
    if let Some(ca) = ca_file {
        if add_pem_file(&mut roots, ca)? == 0 {
            return Err(format!("{}: no PEM certificate in --ca-file", ca.display()));
        }
    }
    Ok(roots)
}

fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = root_store(ca_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn header_request_id(resp: &ureq::Response) -> Option<String> {
    resp.header("X-MEN-RequestID")
        .or_else(|| resp.header("X-Request-Id"))
        .map(str::to_string)
}

/// Seconds or a Go duration (`1.5s`, `250ms`, `1m30s`) as in Traefik's `X-Retry-In`.
pub fn parse_retry_header(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs >= 0.0 && secs.is_finite()).then(|| Duration::from_secs_f64(secs));
    }
    crate::duration::parse_go_duration(v)
}

fn retry_delay(resp: &ureq::Response) -> Option<Duration> {
    resp.header("Retry-After")
        .and_then(parse_retry_header)
        .or_else(|| resp.header("X-Retry-In").and_then(parse_retry_header))
}

/// The error text of a body: JSON `{"error": …}` or the plain text, shortened.
pub fn error_message(body: &[u8]) -> (String, Option<String>) {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        let rid = v
            .get("request_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            return (e.to_string(), rid);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let short: String = text.chars().take(300).collect();
    (
        if short.is_empty() {
            "(empty body)".into()
        } else {
            short
        },
        None,
    )
}

fn link_has_next(resp: &ureq::Response) -> bool {
    resp.all("Link")
        .iter()
        .flat_map(|h| h.split(','))
        .any(|part| {
            part.split(';')
                .skip(1)
                .any(|p| p.trim().trim_matches('"') == "rel=\"next\"" || p.trim() == "rel=next")
                || part.contains("rel=\"next\"")
        })
}

const MAX_BODY: u64 = 64 << 20;

fn read_body(resp: ureq::Response) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    resp.into_reader().take(MAX_BODY).read_to_end(&mut body)?;
    Ok(body)
}

impl Client {
    /// A client for `base` (e.g. `https://old.example.com`), authenticating with `token`.
    pub fn new(
        name: &str,
        base: &str,
        token: TokenSource,
        opts: ClientOptions,
    ) -> Result<Client, String> {
        let base = normalize_server_url(base)?;
        let mut builder = ureq::AgentBuilder::new()
            .timeout(opts.timeout)
            .timeout_connect(Duration::from_secs(10).min(opts.timeout))
            .max_idle_connections_per_host(opts.concurrency.max(1) * 2)
            .user_agent(concat!("mender-migrate-fleet/", env!("CARGO_PKG_VERSION")));
        if base.starts_with("https://") {
            builder = builder.tls_config(tls_config(opts.ca_file.as_deref())?);
        }
        let burst = opts.rate.max(1.0);
        Ok(Client {
            name: name.to_string(),
            base,
            token,
            agent: builder.build(),
            bucket: Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
                blocked_until: None,
            }),
            slots: Slots {
                free: Mutex::new(opts.concurrency.max(1)),
                cv: Condvar::new(),
            },
            opts,
            stats: Stats::default(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The current token (masked when formatted).
    pub fn token(&self) -> crate::secret::Secret {
        self.token.get()
    }

    /// Waits for a token of the bucket and for a 429 block to pass.
    fn take_token(&self) {
        loop {
            let wait = {
                let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                if let Some(until) = b.blocked_until {
                    if until > now {
                        Some(until - now)
                    } else {
                        b.blocked_until = None;
                        None
                    }
                } else {
                    None
                }
                .or_else(|| {
                    let burst = self.opts.rate.max(1.0);
                    let elapsed = now.duration_since(b.last).as_secs_f64();
                    b.tokens = (b.tokens + elapsed * self.opts.rate).min(burst);
                    b.last = now;
                    if b.tokens >= 1.0 {
                        b.tokens -= 1.0;
                        None
                    } else {
                        Some(Duration::from_secs_f64(
                            (1.0 - b.tokens) / self.opts.rate.max(0.001),
                        ))
                    }
                })
            };
            match wait {
                None => return,
                Some(d) => std::thread::sleep(d.min(Duration::from_secs(5))),
            }
        }
    }

    fn acquire_slot(&self) {
        let mut free = self.slots.free.lock().unwrap_or_else(|e| e.into_inner());
        while *free == 0 {
            free = self.slots.cv.wait(free).unwrap_or_else(|e| e.into_inner());
        }
        *free -= 1;
    }

    fn release_slot(&self) {
        *self.slots.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.slots.cv.notify_one();
    }

    fn block_for(&self, d: Duration) {
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let until = Instant::now() + d;
        if b.blocked_until.is_none_or(|u| u < until) {
            b.blocked_until = Some(until);
        }
    }

    /// When the request `may_repeat` and retries are left: counts the retry, waits the
    /// backoff of the next attempt and returns true (the caller sends again).
    fn backed_off(&self, attempt: &mut u32, may_repeat: bool) -> bool {
        if !may_repeat || *attempt >= self.opts.max_retries {
            return false;
        }
        *attempt += 1;
        self.stats.retries.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(self.backoff(*attempt));
        true
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .opts
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.opts.backoff_max);
        let ms = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::thread_rng().gen_range(ms / 2..=ms))
    }

    #[allow(clippy::too_many_arguments)]
    fn err(
        &self,
        method: &str,
        path: &str,
        status: Option<u16>,
        kind: ErrorKind,
        message: String,
        request_id: Option<String>,
        body: Vec<u8>,
    ) -> ApiError {
        ApiErrorDetail {
            server: self.name.clone(),
            method: method.to_string(),
            path: path.to_string(),
            status,
            kind,
            message,
            request_id,
            body,
        }
        .into()
    }

    /// Sends one request with retries. `path_and_query` starts with `/api/…`.
    pub fn request(
        &self,
        method: &str,
        path_and_query: &str,
        body: Body<'_>,
        retry: Retry,
    ) -> Result<Response, ApiError> {
        let url = format!("{}{}", self.base, path_and_query);
        let path = path_and_query.split('?').next().unwrap_or(path_and_query);
        let mut attempt = 0u32;
        let mut throttled_since: Option<Instant> = None;
        let mut token_reloaded = false;
        loop {
            self.take_token();
            self.acquire_slot();
            let token = self.token.get();
            let req = self
                .agent
                .request(method, &url)
                .set("Authorization", &format!("Bearer {}", token.expose()))
                .set("Accept", "application/json");
            let started = Instant::now();
            let result = match &body {
                Body::Empty => req.call(),
                Body::Json(v) => req.send_json(*v),
                Body::Stream { content_type, open } => match open() {
                    Ok(reader) => req.set("Content-Type", content_type).send(reader),
                    Err(e) => {
                        self.release_slot();
                        return Err(self.err(
                            method,
                            path,
                            None,
                            ErrorKind::Status,
                            format!("cannot read the request body: {e}"),
                            None,
                            Vec::new(),
                        ));
                    }
                },
            };
            // Read the body while still holding the slot, then account the latency.
            let outcome: Result<(u16, ureq::Response), ureq::Transport> = match result {
                Ok(resp) => Ok((resp.status(), resp)),
                Err(ureq::Error::Status(code, resp)) => Ok((code, resp)),
                Err(ureq::Error::Transport(t)) => Err(t),
            };
            match outcome {
                Ok((status, resp)) => {
                    let request_id = header_request_id(&resp);
                    let delay = retry_delay(&resp);
                    let location = resp.header("Location").map(str::to_string);
                    let total_count = resp
                        .header("X-Total-Count")
                        .and_then(|v| v.trim().parse().ok());
                    let link_next = link_has_next(&resp);
                    let body_bytes = read_body(resp);
                    self.stats.record(started.elapsed());
                    self.release_slot();
                    let body_bytes = match body_bytes {
                        Ok(b) => b,
                        Err(e) => {
                            if self.backed_off(&mut attempt, retry == Retry::Idempotent) {
                                continue;
                            }
                            return Err(self.err(
                                method,
                                path,
                                Some(status),
                                retry.gave_up(status < 400),
                                format!("reading the response body: {e}"),
                                request_id,
                                Vec::new(),
                            ));
                        }
                    };
                    if status < 400 {
                        return Ok(Response {
                            status,
                            location,
                            link_next,
                            total_count,
                            request_id,
                            body: body_bytes,
                        });
                    }
                    let (message, body_rid) = error_message(&body_bytes);
                    let request_id = request_id.or(body_rid);
                    if status == 401 {
                        if !token_reloaded && self.token.reload() {
                            token_reloaded = true;
                            continue;
                        }
                        return Err(self.err(
                            method,
                            path,
                            Some(401),
                            ErrorKind::Unauthorized,
                            format!(
                                "401 {message}: the {} server's token is expired or revoked; put a fresh Personal Access Token into the token file (or env var) and run again with the same journal",
                                self.name
                            ),
                            request_id,
                            body_bytes,
                        ));
                    }
                    // 429 never reached the handler (gateway or forward-auth limiter):
                    // safe to repeat even for creating POSTs.
                    if status == 429 {
                        let since = *throttled_since.get_or_insert_with(Instant::now);
                        if since.elapsed() < self.opts.throttle_patience {
                            self.stats.retries.fetch_add(1, Ordering::Relaxed);
                            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                            let wait = match delay {
                                Some(d) => d.min(self.opts.backoff_max),
                                None => self.backoff(attempt.min(8)),
                            };
                            attempt = attempt.saturating_add(1);
                            self.block_for(wait);
                            continue;
                        }
                    }
                    let gateway = matches!(status, 502..=504);
                    let retryable = status == 429 || (gateway && retry == Retry::Idempotent);
                    if retryable && attempt < self.opts.max_retries {
                        attempt += 1;
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        let wait = match delay {
                            Some(d) => d.min(self.opts.backoff_max),
                            None => self.backoff(attempt),
                        };
                        if status == 429 {
                            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
                            self.block_for(wait);
                        } else {
                            std::thread::sleep(wait);
                        }
                        continue;
                    }
                    let kind = if retryable || gateway {
                        retry.gave_up(gateway)
                    } else {
                        ErrorKind::Status
                    };
                    return Err(self.err(
                        method,
                        path,
                        Some(status),
                        kind,
                        format!("{status} {message}"),
                        request_id,
                        body_bytes,
                    ));
                }
                Err(t) => {
                    self.stats.record(started.elapsed());
                    self.release_slot();
                    let not_sent = matches!(
                        t.kind(),
                        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns
                    );
                    let may_repeat = not_sent || retry == Retry::Idempotent;
                    if self.backed_off(&mut attempt, may_repeat) {
                        continue;
                    }
                    let kind = if not_sent {
                        ErrorKind::Unreachable
                    } else {
                        retry.gave_up(true)
                    };
                    return Err(self.err(
                        method,
                        path,
                        None,
                        kind,
                        format!("connection error: {t}"),
                        None,
                        Vec::new(),
                    ));
                }
            }
        }
    }

    /// GET returning JSON.
    pub fn get_json(&self, path_and_query: &str) -> Result<Value, ApiError> {
        let resp = self.request("GET", path_and_query, Body::Empty, Retry::Idempotent)?;
        self.parse_json(&resp, "GET", path_and_query)
    }

    pub fn parse_json(&self, resp: &Response, method: &str, path: &str) -> Result<Value, ApiError> {
        resp.json().map_err(|m| {
            self.err(
                method,
                path.split('?').next().unwrap_or(path),
                Some(resp.status),
                ErrorKind::Status,
                m,
                resp.request_id.clone(),
                Vec::new(),
            )
        })
    }

    /// Fetches every page of a list: `per_page=500`, page numbers counted here; a full page
    /// or `Link rel="next"` means "more". Items are deduplicated by `id` (a server that
    /// ignores paging cannot loop us). `body` makes it a read-only POST search.
    pub fn get_all_pages(
        &self,
        path: &str,
        query: &str,
        body: Option<&Value>,
        mut each: impl FnMut(Value),
    ) -> Result<usize, ApiError> {
        let mut seen = std::collections::HashSet::new();
        let mut count = 0;
        for page in 1..=100_000usize {
            let sep = if query.is_empty() { "" } else { "&" };
            let pq = format!("{path}?{query}{sep}page={page}&per_page={PER_PAGE_MAX}");
            let resp = match body {
                None => self.request("GET", &pq, Body::Empty, Retry::Idempotent)?,
                Some(b) => self.request("POST", &pq, Body::Json(b), Retry::Idempotent)?,
            };
            let method = if body.is_some() { "POST" } else { "GET" };
            let items = match self.parse_json(&resp, method, &pq)? {
                Value::Array(items) => items,
                Value::Null => Vec::new(),
                other => {
                    return Err(self.err(
                        method,
                        path,
                        Some(resp.status),
                        ErrorKind::Status,
                        format!(
                            "expected a JSON list, got {}",
                            other.to_string().chars().take(100).collect::<String>()
                        ),
                        resp.request_id.clone(),
                        Vec::new(),
                    ))
                }
            };
            let n = items.len();
            let mut new_items = 0;
            for item in items {
                let id = item.get("id").and_then(Value::as_str).map(str::to_string);
                if let Some(id) = id {
                    if !seen.insert(id) {
                        continue;
                    }
                }
                new_items += 1;
                count += 1;
                each(item);
            }
            let more = n >= PER_PAGE_MAX || resp.link_next;
            if !more || n == 0 || new_items == 0 {
                break;
            }
        }
        Ok(count)
    }
}

/// Bytes a URL component keeps as they are: RFC 3986's unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// URL-encodes a query value or path segment.
pub fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            normalize_server_url("https://x.example.com/").unwrap(),
            "https://x.example.com"
        );
        assert!(normalize_server_url("x.example.com").is_err());
        assert!(normalize_server_url("https://x/api").is_err());
        assert_eq!(
            normalize_server_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
    }

    #[test]
    fn retry_headers() {
        assert_eq!(parse_retry_header("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_header("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_retry_header("250ms"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_header("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_retry_header("soon"), None);
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_message(br#"{"error":"too many requests","request_id":"r1"}"#),
            ("too many requests".to_string(), Some("r1".to_string()))
        );
        assert_eq!(
            error_message(b"Too Many Requests\n"),
            ("Too Many Requests".to_string(), None)
        );
        assert_eq!(error_message(b"").0, "(empty body)");
    }

    #[test]
    fn encoding() {
        assert_eq!(enc("a b/c"), "a%20b%2Fc");
    }
}
