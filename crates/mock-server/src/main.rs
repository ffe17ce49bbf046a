//! `mock-mender-server` binary: one mock server per process, configured from the command line
//! (secrets from files or environment variables, never argv), stopped by SIGTERM or SIGINT.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use mock_mender_server::{
    Edition, MockServer, RateLimit, RateLimitBody, RateLimitScope, ServerConfig, Settings, User,
};

/// Environment variable holding the management token (when `--management-token-file` is absent).
const TOKEN_ENV: &str = "MOCK_MENDER_MANAGEMENT_TOKEN";
/// Environment variable holding login users, `email:password` per line.
const USERS_ENV: &str = "MOCK_MENDER_USERS";

/// Mock Mender server (device API for mender-client 3.4, management API subset).
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
    #[arg(long)]
    listen: SocketAddr,
    /// File holding the management token (Bearer token accepted on /api/management/... and
    /// the only one /admin/... takes). Without it the token comes from the environment
    /// variable MOCK_MENDER_MANAGEMENT_TOKEN. Never pass tokens on the command line.
    #[arg(long)]
    management_token_file: Option<PathBuf>,
    /// File with login users, one `email:password` per line (for
    /// POST /api/management/v1/useradm/auth/login); also read from MOCK_MENDER_USERS.
    #[arg(long)]
    users_file: Option<PathBuf>,
    /// Lifetime of login JWTs, e.g. `1h` or `30s` (default one week, as useradm).
    #[arg(long, value_parser = humantime::parse_duration)]
    jwt_lifetime: Option<std::time::Duration>,
    /// Keep state (devices, deployments, artifacts, CA) in this directory across restarts.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Serve HTTPS with a generated CA and server certificate.
    #[arg(long)]
    tls: bool,
    /// Base URL for artifact download links, e.g. http://10.0.2.2:8080 for a QEMU guest.
    #[arg(long)]
    public_url: Option<String>,
    /// Extra subject alternative name for the TLS certificate (repeatable), e.g. 10.0.2.100.
    #[arg(long = "san")]
    sans: Vec<String>,
    /// Also write the CA certificate (PEM) to this file.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Append one JSON line per request to this file.
    #[arg(long)]
    request_log: Option<PathBuf>,
    /// Server name written into the request log.
    #[arg(long, default_value = "mock")]
    name: String,
    /// Permit listening on a non-loopback address.
    #[arg(long)]
    allow_non_loopback: bool,
    /// Tokio worker threads (default: number of CPUs).
    #[arg(long)]
    worker_threads: Option<usize>,
    /// Device limit: accepting beyond it fails with 422, a preauthorized device's first auth
    /// beyond it gets 401 (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    max_devices: u64,
    /// How long a decommission takes before the device is gone, in milliseconds.
    #[arg(long, default_value_t = 500)]
    decommission_delay_ms: u64,
    /// Behave like a server before 4.0: no 409 for an identical active deployment.
    #[arg(long)]
    no_duplicate_deployment_check: bool,
    /// Active deployments allowed before creating one more is refused (0 = unlimited, as the
    /// open-source server; hosted Mender: 800).
    #[arg(long, default_value_t = 0)]
    max_active_deployments: u64,
    /// HTTP status of that refusal (the real one is closed-source; 400 = documented generic).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u16).range(400..=599))]
    max_active_deployments_status: u16,
    /// Which server to imitate on the device side: open-source (v1 `next` by device type only,
    /// v2 404) or enterprise (v2 `next` honouring artifact depends).
    #[arg(long, value_enum, default_value = "open-source")]
    edition: EditionArg,
    /// Rate limit: requests per second refilling a per-server token bucket (off by default);
    /// past it, 429 with Retry-After and X-Retry-In.
    #[arg(long)]
    rate_limit: Option<f64>,
    /// Token bucket size (requests allowed at once).
    #[arg(long, default_value_t = 100)]
    rate_limit_burst: u32,
    /// 429 body: `plain` (text, like the Traefik gateway) or `json` (like the services).
    #[arg(long, value_enum, default_value = "plain")]
    rate_limit_body: BodyArg,
    /// Which requests count: `management`, `devices` or `all`.
    #[arg(long, value_enum, default_value = "management")]
    rate_limit_scope: ScopeArg,
    /// Multi-tenant mode: file with the tenant token devices must send (or
    /// MOCK_MENDER_TENANT_TOKEN).
    #[arg(long)]
    tenant_token_file: Option<PathBuf>,
    /// File with the default tenant token (or MOCK_MENDER_DEFAULT_TENANT_TOKEN): devices with
    /// a missing or unknown token go to that tenant.
    #[arg(long)]
    default_tenant_token_file: Option<PathBuf>,
    /// File with a two-factor code login must carry as `token2fa` (or
    /// MOCK_MENDER_LOGIN_2FA_CODE).
    #[arg(long)]
    login_2fa_code_file: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum BodyArg {
    Plain,
    Json,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum ScopeArg {
    Management,
    Devices,
    All,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum EditionArg {
    OpenSource,
    Enterprise,
}

impl Cli {
    /// The behaviour knobs these options ask for (not yet validated).
    fn settings(&self) -> Settings {
        Settings {
            max_devices: self.max_devices,
            decommission_delay_ms: self.decommission_delay_ms,
            duplicate_deployment_check: !self.no_duplicate_deployment_check,
            max_active_deployments: self.max_active_deployments,
            max_active_deployments_status: self.max_active_deployments_status,
            edition: match self.edition {
                EditionArg::OpenSource => Edition::OpenSource,
                EditionArg::Enterprise => Edition::Enterprise,
            },
            rate_limit: self.rate_limit.map(|rps| RateLimit {
                requests_per_second: rps,
                burst: self.rate_limit_burst,
                body: match self.rate_limit_body {
                    BodyArg::Plain => RateLimitBody::Plain,
                    BodyArg::Json => RateLimitBody::Json,
                },
                scope: match self.rate_limit_scope {
                    ScopeArg::Management => RateLimitScope::Management,
                    ScopeArg::Devices => RateLimitScope::Devices,
                    ScopeArg::All => RateLimitScope::All,
                },
            }),
        }
    }
}

/// A usage problem (missing or unreadable secret): exit status 2.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-mender-server: error: {e:#}");
            if e.downcast_ref::<Usage>().is_some() {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

/// A secret from `file` (trimmed) or else from the environment variable `env`.
fn secret(file: Option<&std::path::Path>, env: &str, what: &str) -> anyhow::Result<Option<String>> {
    let value = match file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| Usage(format!("{}: cannot read {what}: {e}", path.display())))?,
        ),
        None => std::env::var(env).ok(),
    };
    match value.map(|v| v.trim().to_string()) {
        Some(v) if v.is_empty() => Err(Usage(match file {
            Some(path) => format!("{}: the {what} is empty", path.display()),
            None => format!("{env}: the {what} is empty"),
        })
        .into()),
        other => Ok(other),
    }
}

fn parse_users(text: &str, source: &str) -> anyhow::Result<Vec<User>> {
    let mut users = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((email, password)) = line.split_once(':') else {
            return Err(Usage(format!(
                "{source}: line {}: expected `email:password`",
                n + 1
            ))
            .into());
        };
        users.push(User::new(email.trim(), password));
    }
    Ok(users)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(dir) = &cli.state_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create state dir: {e}", dir.display()))?;
    }
    let token = secret(
        cli.management_token_file.as_deref(),
        TOKEN_ENV,
        "management token",
    )?
    .ok_or_else(|| {
        Usage(format!(
            "no management token: pass --management-token-file FILE or set {TOKEN_ENV}"
        ))
    })?;
    let users = match (&cli.users_file, std::env::var(USERS_ENV)) {
        (Some(path), _) => parse_users(
            &std::fs::read_to_string(path)
                .map_err(|e| Usage(format!("{}: cannot read users: {e}", path.display())))?,
            &path.display().to_string(),
        )?,
        (None, Ok(text)) => parse_users(&text, USERS_ENV)?,
        (None, Err(_)) => Vec::new(),
    };
    let settings = cli.settings();
    settings
        .validate()
        .map_err(|e| Usage(format!("--rate-limit: {e}")))?;
    let defaults = ServerConfig::new(cli.name, token);
    // Every field named, so that a new one cannot be forgotten here; `new` lends defaults.
    let config = ServerConfig {
        tenant_token: secret(
            cli.tenant_token_file.as_deref(),
            "MOCK_MENDER_TENANT_TOKEN",
            "tenant token",
        )?,
        default_tenant_token: secret(
            cli.default_tenant_token_file.as_deref(),
            "MOCK_MENDER_DEFAULT_TENANT_TOKEN",
            "default tenant token",
        )?,
        login_2fa_code: secret(
            cli.login_2fa_code_file.as_deref(),
            "MOCK_MENDER_LOGIN_2FA_CODE",
            "two-factor code",
        )?,
        name: defaults.name,
        management_token: defaults.management_token,
        users,
        jwt_lifetime: cli.jwt_lifetime.unwrap_or(defaults.jwt_lifetime),
        settings,
        listen: cli.listen,
        state_dir: cli.state_dir,
        tls: cli.tls,
        public_url: cli.public_url,
        extra_sans: cli.sans,
        ca_file: cli.ca_file,
        request_log_file: cli.request_log,
        allow_non_loopback: cli.allow_non_loopback,
        worker_threads: cli.worker_threads,
    };
    let server = MockServer::start(config)?;

    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Install the handlers before announcing the URL, so a fast SIGTERM is not lost.
    let wait = signals.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        Ok::<_, std::io::Error>(async move {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        })
    })?;

    // One write, so a reader that stops after the first line cannot make a later line fail.
    let mut announcement = format!("url={}\npublic_url={}\n", server.url(), server.public_url());
    if let Some(ca) = server.ca_cert_path() {
        announcement.push_str(&format!("ca={}\n", ca.display()));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(announcement.as_bytes())?;
    out.flush()?;
    drop(out);

    let signal = signals.block_on(wait);
    eprintln!("mock-mender-server: {signal} received, shutting down");
    server.shutdown();
    Ok(())
}
