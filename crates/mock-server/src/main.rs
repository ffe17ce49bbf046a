//! `mock-mender-server` binary: one mock server per process, configured from the command line,
//! stopped by SIGTERM or SIGINT.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use mock_mender_server::{MockServer, ServerConfig};

/// Mock Mender server (device API for mender-client 3.4, management API subset).
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free one).
    #[arg(long)]
    listen: SocketAddr,
    /// Bearer token required on /api/management/... and /admin/... calls.
    #[arg(long)]
    management_token: String,
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
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mock-mender-server: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(dir) = &cli.state_dir {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create state dir: {e}", dir.display()))?;
    }
    let mut config = ServerConfig::new(cli.name, cli.management_token);
    config.listen = cli.listen;
    config.state_dir = cli.state_dir;
    config.tls = cli.tls;
    config.public_url = cli.public_url;
    config.extra_sans = cli.sans;
    config.ca_file = cli.ca_file;
    config.request_log_file = cli.request_log;
    config.allow_non_loopback = cli.allow_non_loopback;
    config.worker_threads = cli.worker_threads;
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
