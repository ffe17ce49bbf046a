//! Mock Mender server: the device API subset the real mender-client 3.4 uses, the management
//! API subset a migration orchestrator needs, fault injection and a request log.
//!
//! Start one in-process with [`MockServer::start`]; it runs on its own Tokio runtime thread,
//! so it works from plain `#[test]`s and from async code alike:
//!
//! ```no_run
//! use mock_mender_server::{MockServer, ServerConfig};
//! let server = MockServer::start(ServerConfig::new("old", "secret-token")).unwrap();
//! println!("device ServerURL: {}", server.url());
//! // ... drive it through /api/management/... with `Authorization: Bearer secret-token`
//! for entry in server.request_log() {
//!     println!("{} {} {} -> {:?}", entry.server, entry.method, entry.path, entry.status);
//! }
//! server.shutdown();
//! ```
//!
//! The binary `mock-mender-server` runs one server per process (see `--help`); it prints
//! `url=…`, `public_url=…` and, with `--tls`, `ca=…` on stdout and stops on SIGTERM/SIGINT.
//!
//! # HTTP surface
//!
//! Routes are listed in [`routes`]; `README.md` documents every route, knob and fault rule,
//! and how a test gets a management token (the configured token, a login JWT or a PAT).
//! Device API: signed auth requests (RSA, ECDSA P-256, Ed25519), inventory, `next`, status
//! and log reports, ranged artifact downloads. Management API (`Authorization: Bearer`):
//! useradm login/PATs, deviceauth v2, deployments and artifacts, inventory. Test endpoints
//! under `/admin/` (configured token only): faults, down time, request log, token expiry.

mod api;
mod crypto;
mod error;
mod faults;
mod layers;
mod mgmt_auth;
mod ratelimit;
mod reqlog;
pub mod routes;
mod server;
mod settings;
mod shared;
mod state;
mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;

pub use faults::{Endpoint, FaultAction, FaultRule};
pub use mgmt_auth::User;
pub use reqlog::RequestLogEntry;
pub use settings::{Edition, RateLimit, RateLimitBody, RateLimitScope, Settings};
pub use state::{AuthSet, AuthStatus, Deployment, Device, DeviceDeployment, StatusReport};

/// How to start a server. Build with [`ServerConfig::new`] and adjust the fields. `Debug`
/// masks the secrets.
#[derive(Clone)]
pub struct ServerConfig {
    /// Name written into every request-log entry (e.g. `old`, `new`).
    pub name: String,
    /// Listen address; the default `127.0.0.1:0` picks a free loopback port.
    pub listen: SocketAddr,
    /// A management token that is always valid (unless expired through `/admin/expire-tokens`)
    /// and the only token `/admin/…` accepts. Tests use it directly; see
    /// [`MockServer::management_token`].
    pub management_token: String,
    /// Users that can log in with HTTP Basic (`POST /api/management/v1/useradm/auth/login`).
    pub users: Vec<User>,
    /// Lifetime of login JWTs (useradm's `jwt_exp_timeout`, default one week).
    pub jwt_lifetime: std::time::Duration,
    /// Base URL artifact downloads (`source.uri`) are built from, e.g.
    /// `http://10.0.2.2:PORT` for a QEMU guest; defaults to the local URL.
    pub public_url: Option<String>,
    /// Serve HTTPS with a generated CA and server certificate.
    pub tls: bool,
    /// Extra subject alternative names (IPs or DNS names) for the server certificate,
    /// besides 127.0.0.1, ::1, localhost and the public URL's host.
    pub extra_sans: Vec<String>,
    /// Also copy the CA certificate (PEM) to this file.
    pub ca_file: Option<PathBuf>,
    /// Keep devices, deployments, artifacts and the CA here across restarts.
    pub state_dir: Option<PathBuf>,
    /// Append the request log (JSON lines) to this file.
    pub request_log_file: Option<PathBuf>,
    /// Permit a listen address outside 127.0.0.0/8 and ::1.
    pub allow_non_loopback: bool,
    /// Tokio worker threads; `None` = number of CPUs.
    pub worker_threads: Option<usize>,
    /// Behaviour knobs (device limit, edition, rate limit, …); changeable at run time.
    pub settings: Settings,
    /// Multi-tenant mode: devices must send this tenant token in their auth requests (401
    /// otherwise). `None` = open source (tokens ignored).
    pub tenant_token: Option<String>,
    /// With `tenant_token`: devices with a missing or unknown token are put into this
    /// tenant, i.e. admitted when it equals `tenant_token` (deviceauth's
    /// `default_tenant_token`).
    pub default_tenant_token: Option<String>,
    /// When set, login needs `{"token2fa": <this>}` in its body (hosted/Enterprise 2FA;
    /// 401 otherwise).
    pub login_2fa_code: Option<String>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mask = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("ServerConfig")
            .field("name", &self.name)
            .field("listen", &self.listen)
            .field("management_token", &"***")
            .field("users", &self.users)
            .field("jwt_lifetime", &self.jwt_lifetime)
            .field("public_url", &self.public_url)
            .field("tls", &self.tls)
            .field("extra_sans", &self.extra_sans)
            .field("ca_file", &self.ca_file)
            .field("state_dir", &self.state_dir)
            .field("request_log_file", &self.request_log_file)
            .field("allow_non_loopback", &self.allow_non_loopback)
            .field("worker_threads", &self.worker_threads)
            .field("settings", &self.settings)
            .field("tenant_token", &mask(&self.tenant_token))
            .field("default_tenant_token", &mask(&self.default_tenant_token))
            .field("login_2fa_code", &mask(&self.login_2fa_code))
            .finish()
    }
}

impl ServerConfig {
    pub fn new(name: impl Into<String>, management_token: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            management_token: management_token.into(),
            users: Vec::new(),
            jwt_lifetime: std::time::Duration::from_secs(604_800),
            public_url: None,
            tls: false,
            extra_sans: Vec::new(),
            ca_file: None,
            state_dir: None,
            request_log_file: None,
            allow_non_loopback: false,
            worker_threads: None,
            settings: Settings::default(),
            tenant_token: None,
            default_tenant_token: None,
            login_2fa_code: None,
        }
    }
}

/// A running mock server. Dropping it shuts it down.
pub struct MockServer {
    shared: Arc<shared::Shared>,
    url: String,
    local_addr: SocketAddr,
    ca_path: Option<PathBuf>,
    ca_pem: Option<String>,
    shutdown_tx: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _scratch: Option<tempfile::TempDir>,
}

fn host_of_url(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?.to_string()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(h, _)| h)
            .to_string()
    };
    (!host.is_empty()).then_some(host)
}

impl MockServer {
    /// Binds the listener, loads or creates state (and TLS material) and starts serving on a
    /// background thread. Errors name the file or address that was the problem.
    pub fn start(config: ServerConfig) -> anyhow::Result<MockServer> {
        if !config.allow_non_loopback && !config.listen.ip().is_loopback() {
            anyhow::bail!(
                "refusing to listen on non-loopback address {} (allow it explicitly)",
                config.listen
            );
        }
        if config.management_token.is_empty() {
            anyhow::bail!("the management token must not be empty");
        }
        let scratch = if config.state_dir.is_none() {
            Some(
                tempfile::Builder::new()
                    .prefix("mock-mender-server-")
                    .tempdir()
                    .context("creating a scratch directory")?,
            )
        } else {
            None
        };
        let base_dir: PathBuf = match (&config.state_dir, &scratch) {
            (Some(dir), _) => dir.clone(),
            (None, Some(tmp)) => tmp.path().to_path_buf(),
            (None, None) => unreachable!("scratch exists without a state dir"),
        };
        let artifacts_dir = base_dir.join("artifacts");
        std::fs::create_dir_all(&artifacts_dir)
            .with_context(|| format!("{}: cannot create directory", artifacts_dir.display()))?;

        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder
            .enable_all()
            .thread_name(format!("mock-{}", config.name));
        if let Some(n) = config.worker_threads {
            builder.worker_threads(n.max(1));
        }
        let runtime = builder.build().context("starting the Tokio runtime")?;
        let std_listener = {
            let _guard = runtime.enter();
            server::bind(config.listen)
        }
        .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = std_listener.local_addr()?;
        let url = server::local_url(local_addr, config.tls);
        let public_url = config
            .public_url
            .clone()
            .unwrap_or_else(|| url.clone())
            .trim_end_matches('/')
            .to_string();
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            anyhow::bail!("public URL {public_url:?} must start with http:// or https://");
        }

        let (tls_acceptor, ca_path, ca_pem) = if config.tls {
            let tls_dir = base_dir.join("tls");
            std::fs::create_dir_all(&tls_dir)
                .with_context(|| format!("{}: cannot create directory", tls_dir.display()))?;
            let mut sans: Vec<String> = vec!["127.0.0.1".into(), "::1".into(), "localhost".into()];
            sans.extend(host_of_url(&public_url));
            sans.extend(config.extra_sans.iter().cloned());
            let material = tls::prepare(&tls_dir, &config.name, &sans)?;
            let ca_path = match &config.ca_file {
                Some(path) => {
                    tls::write_atomically(path, material.ca_pem.as_bytes())?;
                    path.clone()
                }
                None => tls_dir.join("ca.pem"),
            };
            (
                Some(tokio_rustls::TlsAcceptor::from(material.server_config)),
                Some(ca_path),
                Some(material.ca_pem),
            )
        } else {
            (None, None, None)
        };

        let persistence = state::Persistence::new(config.state_dir.as_deref());
        let state = persistence.load()?;
        let reqlog = reqlog::RequestLog::open(&config.name, config.request_log_file.as_deref())?;
        let auth = mgmt_auth::MgmtAuth::new(
            config.management_token.clone(),
            config.users.clone(),
            config.jwt_lifetime,
        );
        config
            .settings
            .validate()
            .map_err(|e| anyhow::anyhow!("settings: {e}"))?;
        let mut shared = shared::Shared::new(
            config.name.clone(),
            auth,
            config.settings.clone(),
            public_url,
            artifacts_dir,
            reqlog,
            persistence,
            state,
        );
        shared.tenant_token = config.tenant_token.clone().filter(|t| !t.is_empty());
        shared.default_tenant_token = config
            .default_tenant_token
            .clone()
            .filter(|t| !t.is_empty());
        shared.login_2fa_code = config.login_2fa_code.clone();
        let shared = Arc::new(shared);

        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)?
        };
        let serve_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("mock-{}", config.name))
            .spawn(move || {
                runtime.block_on(server::serve(
                    serve_shared,
                    listener,
                    tls_acceptor,
                    shutdown_rx,
                ));
                runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            })
            .context("spawning the server thread")?;
        Ok(MockServer {
            shared,
            url,
            local_addr,
            ca_path,
            ca_pem,
            shutdown_tx,
            thread: Some(thread),
            _scratch: scratch,
        })
    }

    /// Base URL on this host (`http://127.0.0.1:PORT` or `https://…`), no trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Base URL used in artifact `source.uri` links.
    pub fn public_url(&self) -> &str {
        &self.shared.public_url
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The configured management token: `Authorization: Bearer <it>` works on every
    /// `/api/management/…` and `/admin/…` route.
    pub fn management_token(&self) -> &str {
        self.shared.auth.configured_token()
    }

    /// Expires every login JWT and PAT issued so far, and with `configured` also the
    /// configured token (for `/api/management/…`; `/admin/…` keeps taking it), so the next
    /// management call gets 401. [`MockServer::restore_management_token`] undoes the latter.
    pub fn expire_management_tokens(&self, configured: bool) {
        self.shared.auth.expire_all(configured);
    }

    /// The current behaviour knobs.
    pub fn settings(&self) -> Settings {
        self.shared.settings()
    }

    /// Changes behaviour knobs at run time, e.g.
    /// `server.update_settings(|s| s.max_devices = 10)`.
    pub fn update_settings(&self, change: impl FnOnce(&mut Settings)) {
        let mut settings = self.shared.settings();
        change(&mut settings);
        self.shared.set_settings(settings);
    }

    /// Makes the configured token valid again after [`MockServer::expire_management_tokens`].
    pub fn restore_management_token(&self) {
        self.shared.auth.set_configured_expired(false);
    }

    /// The CA file a client's `ServerCertificate` should point to (TLS mode only).
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }

    /// The CA certificate as PEM (TLS mode only).
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Adds a fault rule (checked after the ones already active).
    pub fn add_fault(&self, rule: FaultRule) {
        self.shared.faults.add(rule);
    }

    /// Replaces all fault rules; an empty list clears them.
    pub fn set_faults(&self, rules: Vec<FaultRule>) {
        self.shared.faults.replace(rules);
    }

    /// The active fault rules (counted rules show their remaining uses).
    pub fn faults(&self) -> Vec<FaultRule> {
        self.shared.faults.list()
    }

    /// Takes the server down (listener closed, connections cut) or brings it back on the
    /// same address.
    pub fn set_down(&self, down: bool) {
        self.shared.set_up(!down);
    }

    pub fn is_down(&self) -> bool {
        !self.shared.is_up()
    }

    /// The request log so far (the most recent 200,000 entries).
    pub fn request_log(&self) -> Vec<RequestLogEntry> {
        self.shared.reqlog.snapshot()
    }

    /// All devices with their auth sets and inventory.
    pub fn devices(&self) -> Vec<Device> {
        self.shared
            .read(|s| s.devices().values().cloned().collect())
    }

    pub fn device(&self, id: &str) -> Option<Device> {
        self.shared.read(|s| s.devices().get(id).cloned())
    }

    /// All deployments with every device's status history and log.
    pub fn deployments(&self) -> Vec<Deployment> {
        self.shared
            .read(|s| s.deployments.values().cloned().collect())
    }

    /// Stops serving and waits for the server thread to finish.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shutdown_tx.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::host_of_url;

    #[test]
    fn hosts() {
        assert_eq!(
            host_of_url("http://10.0.2.2:8080").as_deref(),
            Some("10.0.2.2")
        );
        assert_eq!(
            host_of_url("https://example.test/x").as_deref(),
            Some("example.test")
        );
        assert_eq!(host_of_url("https://[::1]:443").as_deref(), Some("::1"));
        assert_eq!(host_of_url("nonsense"), None);
    }
}
