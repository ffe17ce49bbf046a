//! `mender-fleet-sim`: runs N simulated devices against given servers for a bounded time and
//! prints the JSON report (counts, request statistics, every device). Exit 0 when the `--until`
//! condition was met (or none was given), 1 when it was not, 2 on usage errors.

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use mender_fleet_sim::{Counts, Fleet, FleetSpec, InitialConfig, KeyKind, Knobs, Unreachable};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "mender-fleet-sim", version, about)]
struct Args {
    /// Number of devices.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Server for the initial config: one gives `{"ServerURL": URL}`, several give `Servers`.
    #[arg(long = "server", value_name = "URL")]
    servers: Vec<String>,
    /// Initial main config file instead of --server (bytes used as they are).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Initial fallback config file (`/var/lib/mender/mender.conf`).
    #[arg(long, value_name = "FILE")]
    fallback_config: Option<PathBuf>,
    /// File holding the TenantToken to add to the initial config (never passed in argv).
    #[arg(long, value_name = "FILE")]
    tenant_token_file: Option<PathBuf>,
    /// Base URL counted as "old" in the report.
    #[arg(long, value_name = "URL")]
    old_server: Option<String>,
    /// Base URL counted as "new" in the report.
    #[arg(long, value_name = "URL")]
    new_server: Option<String>,
    /// Stop after this many seconds at most.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Stop early once this holds: `all-on-new`, `all-on-old`, `none-stranded`, `all-polled`.
    #[arg(long)]
    until: Option<String>,
    #[arg(long, default_value_t = 1000)]
    update_poll_ms: u64,
    #[arg(long, default_value_t = 10000)]
    inventory_poll_ms: u64,
    #[arg(long, default_value_t = 1000)]
    retry_poll_ms: u64,
    #[arg(long, default_value_t = 1000)]
    start_spread_ms: u64,
    #[arg(long, default_value_t = 0.0)]
    v5_fraction: f64,
    #[arg(long, default_value_t = 0.0)]
    offline_fraction: f64,
    /// `URL=FRACTION`: that share of devices cannot reach URL (repeatable).
    #[arg(long, value_name = "URL=FRACTION")]
    unreachable: Vec<String>,
    #[arg(long, default_value_t = 0.0)]
    flaky_fraction: f64,
    #[arg(long, default_value_t = 0.0)]
    flaky_loss: f64,
    /// Probability of a power cut during a stage install.
    #[arg(long, default_value_t = 0.0)]
    power_cut: f64,
    #[arg(long, default_value_t = 0.0)]
    key_regeneration_fraction: f64,
    #[arg(long, default_value_t = 0)]
    key_regeneration_at_ms: u64,
    #[arg(long, value_enum, default_value_t = KeyArg::Ed25519)]
    key: KeyArg,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value = "SIM")]
    id_prefix: String,
    #[arg(long, default_value = "qemux86-64")]
    device_type: String,
    #[arg(long, default_value = "release-1")]
    artifact_name: String,
    /// Update modules installed from the start (repeatable), e.g. `server-migration`.
    #[arg(long = "module")]
    modules: Vec<String>,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Write every device's identity and public key (JSON) here before booting them.
    #[arg(long, value_name = "FILE")]
    identities_out: Option<PathBuf>,
    /// Write the report here instead of stdout.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Leave out the per-device list from the report.
    #[arg(long)]
    counts_only: bool,
    /// Permit servers outside 127.0.0.0/8 and ::1.
    #[arg(long)]
    allow_non_loopback: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum KeyArg {
    Ed25519,
    P256,
    Rsa2048,
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or_default();
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    use std::io::Write as _;
    tmp.1.write_all(bytes)?;
    tmp.1.sync_all()?;
    std::fs::rename(&tmp.0, path).with_context(|| format!("{}: cannot write", path.display()))
}

fn tempfile_in(dir: &std::path::Path) -> Result<(PathBuf, std::fs::File)> {
    for i in 0..100u32 {
        let p = dir.join(format!(".fleet-sim-{}-{i}.tmp", std::process::id()));
        if let Ok(f) = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            return Ok((p, f));
        }
    }
    bail!("{}: cannot create a temporary file", dir.display())
}

fn run(args: Args) -> Result<bool> {
    let mut initial = match (&args.config, args.servers.as_slice()) {
        (Some(path), []) => InitialConfig {
            main: Some(
                std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?,
            ),
            fallback: None,
        },
        (None, [one]) => InitialConfig::server_url(one),
        (None, many) if !many.is_empty() => {
            InitialConfig::servers(&many.iter().map(String::as_str).collect::<Vec<_>>())
        }
        (Some(_), _) => bail!("give either --config or --server, not both"),
        (None, _) => bail!("give --server URL (repeat for a Servers list) or --config FILE"),
    };
    if let Some(path) = &args.fallback_config {
        initial.fallback =
            Some(std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?);
    }
    if let Some(path) = &args.tenant_token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the tenant token", path.display()))?;
        initial = initial.with_tenant_token(token.trim());
    }
    let mut unreachable = Vec::new();
    for u in &args.unreachable {
        let (server, fraction) = u
            .rsplit_once('=')
            .with_context(|| format!("--unreachable {u:?}: expected URL=FRACTION"))?;
        let fraction: f64 = fraction
            .parse()
            .with_context(|| format!("--unreachable {u:?}: {fraction:?} is not a number"))?;
        unreachable.push(Unreachable {
            server: server.to_string(),
            fraction,
        });
    }
    if !args.allow_non_loopback {
        for url in args
            .servers
            .iter()
            .chain(args.old_server.iter())
            .chain(args.new_server.iter())
        {
            if !is_loopback(url) {
                bail!("{url}: not a loopback server; pass --allow-non-loopback to simulate against it");
            }
        }
    }
    let until: Option<fn(&Counts) -> bool> = match args.until.as_deref() {
        None => None,
        Some("all-on-new") => Some(|c| c.on_new == c.devices - c.offline),
        Some("all-on-old") => Some(|c| c.on_old == c.devices - c.offline),
        Some("none-stranded") => Some(|c| c.polled == c.devices - c.offline && c.stranded == 0),
        Some("all-polled") => Some(|c| c.polled == c.devices - c.offline),
        Some(other) => {
            bail!("--until {other:?}: use all-on-new, all-on-old, none-stranded or all-polled")
        }
    };
    if until.is_some_and(|_| args.until.as_deref().unwrap().contains("new"))
        && args.new_server.is_none()
    {
        bail!("--until all-on-new needs --new-server");
    }
    if args.until.as_deref() == Some("all-on-old") && args.old_server.is_none() {
        bail!("--until all-on-old needs --old-server");
    }
    let ms = Duration::from_millis;
    let spec = FleetSpec {
        count: args.devices,
        initial_config: initial,
        id_prefix: args.id_prefix,
        device_type: args.device_type,
        artifact_name: args.artifact_name,
        key_kind: match args.key {
            KeyArg::Ed25519 => KeyKind::Ed25519,
            KeyArg::P256 => KeyKind::P256,
            KeyArg::Rsa2048 => KeyKind::Rsa2048,
        },
        modules: args.modules,
        knobs: Knobs {
            update_poll: ms(args.update_poll_ms),
            inventory_poll: ms(args.inventory_poll_ms),
            retry_poll: ms(args.retry_poll_ms),
            start_spread: ms(args.start_spread_ms),
            v5_fraction: args.v5_fraction,
            offline_fraction: args.offline_fraction,
            unreachable,
            flaky_fraction: args.flaky_fraction,
            flaky_loss: args.flaky_loss,
            power_cut_during_install: args.power_cut,
            key_regeneration_fraction: args.key_regeneration_fraction,
            key_regeneration_at: ms(args.key_regeneration_at_ms),
            seed: args.seed,
            ..Knobs::default()
        },
        worker_threads: args.workers,
        old_server: args.old_server,
        new_server: args.new_server,
    };
    let fleet = Fleet::new(spec)?;
    if let Some(path) = &args.identities_out {
        let bytes = serde_json::to_vec_pretty(&fleet.identities())?;
        write_atomically(path, &bytes)?;
    }
    fleet.boot();
    let timeout = Duration::from_secs(args.duration_secs);
    let met = match until {
        Some(done) => done(&fleet.wait_until(timeout, done).counts),
        None => {
            std::thread::sleep(timeout);
            true
        }
    };
    let mut report = fleet.stop();
    if args.counts_only {
        report.devices.clear();
    }
    let mut bytes = serde_json::to_vec_pretty(&report)?;
    bytes.push(b'\n');
    match &args.report {
        Some(path) => write_atomically(path, &bytes)?,
        None => {
            use std::io::Write as _;
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(met)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("mender-fleet-sim: the --until condition was not met in time");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("mender-fleet-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}
