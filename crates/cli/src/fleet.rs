//! `mender-migrate fleet plan|run|status|rollback`: argument parsing and output for the fleet
//! orchestrator (`mender-fleet`). Tokens come from files or environment variables only.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use mender_fleet::duration::parse_duration;
use mender_fleet::preflight::preflight;
use mender_fleet::{
    parse_share, Access, Api, Client, ClientOptions, FleetConfig, Mode, Orchestrator, Plan,
    Progress, RunError, Selection, TenantRoute, TokenSource,
};

/// Exit code of a run that stopped at a failed gate (resumable with `--resume`).
pub const EXIT_PAUSED: u8 = 3;

#[derive(Debug, Args)]
pub struct FleetArgs {
    #[command(subcommand)]
    command: FleetCommand,
}

#[derive(Debug, Subcommand)]
enum FleetCommand {
    /// Dry run: pre-flight checks and the batch plan (GETs and read-only searches only).
    Plan(Box<PlanArgs>),
    /// Carry out the migration; run it again with the same journal to resume.
    Run(Box<RunArgs>),
    /// Where every device is, from the journal (and with --refresh, from the servers).
    Status(Box<StatusArgs>),
    /// Devices not yet on stage 2 go back to old.
    Rollback(Box<RollbackArgs>),
}

#[derive(Debug, Clone, Args)]
struct ServerArgs {
    /// Old server URL (https://… or http://127.0.0.1:PORT).
    #[arg(long, value_name = "URL")]
    old_server: Option<String>,
    /// New server URL.
    #[arg(long, value_name = "URL")]
    new_server: Option<String>,
    /// File holding the old server's Personal Access Token (else $MENDER_MIGRATE_OLD_TOKEN).
    #[arg(long, value_name = "FILE")]
    old_token_file: Option<PathBuf>,
    /// File holding the new server's Personal Access Token (else $MENDER_MIGRATE_NEW_TOKEN).
    #[arg(long, value_name = "FILE")]
    new_token_file: Option<PathBuf>,
    /// Extra CA certificate(s) (PEM) trusted besides the system roots.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Requests per second per server.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Requests in flight per server, and parallel per-device steps.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

#[derive(Debug, Clone, Args)]
struct MigrationArgs {
    /// Output directory of `mender-migrate artifacts` (module-install, stage 1, stage 2;
    /// module-install artifacts for several architectures may sit side by side).
    #[arg(long, value_name = "DIR")]
    artifacts: PathBuf,
    /// Only devices of this device type (repeat for several).
    #[arg(long = "device-type", value_name = "T")]
    device_types: Vec<String>,
    /// Only devices of this static group (repeat for several).
    #[arg(long = "group", value_name = "G")]
    groups: Vec<String>,
    /// Only the device ids listed in FILE (one per line, old server's ids).
    #[arg(long, value_name = "FILE")]
    devices: Option<PathBuf>,
    /// First batch size; batches then double.
    #[arg(long, default_value_t = 5)]
    canary: usize,
    /// Largest batch.
    #[arg(long, default_value_t = 500)]
    max_batch: usize,
    /// Pause when more than this share of a batch's finished devices failed (5% or 0.05).
    #[arg(long, default_value = "10%", value_parser = parse_share)]
    failure_threshold: f64,
    /// Judge the failure share only once this many devices of a batch finished.
    #[arg(long, default_value_t = 5)]
    min_sample: usize,
    /// Time a batch's stage deployment may take (90s, 15m, 2h).
    #[arg(long, default_value = "2h", value_parser = parse_duration)]
    stage_timeout: Duration,
    /// Time a rejected device may take to authenticate on new before it is rolled back.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    appear_timeout: Duration,
    /// How often deployment and device states are polled.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Active+pending deployments a server may hold (hosted Mender: 800).
    #[arg(long, default_value_t = 800)]
    deployment_cap: u64,
    /// File with the tenant token old's devices use (else $MENDER_MIGRATE_OLD_TENANT_TOKEN;
    /// none = old is single-tenant).
    #[arg(long, value_name = "FILE")]
    old_tenant_token_file: Option<PathBuf>,
    /// File with the tenant token new requires (else $MENDER_MIGRATE_NEW_TENANT_TOKEN;
    /// none = new is single-tenant).
    #[arg(long, value_name = "FILE")]
    new_tenant_token_file: Option<PathBuf>,
    /// New is on-prem Enterprise with default_tenant_token set to the new tenant.
    #[arg(long)]
    new_default_tenant: bool,
}

#[derive(Debug, Args)]
struct PlanArgs {
    #[command(flatten)]
    servers: ServerArgs,
    #[command(flatten)]
    migration: MigrationArgs,
    /// Print the plan as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    servers: ServerArgs,
    #[command(flatten)]
    migration: MigrationArgs,
    /// The run's journal (created on the first run, resumed afterwards).
    #[arg(long, value_name = "FILE")]
    journal: PathBuf,
    /// Continue after a paused gate.
    #[arg(long)]
    resume: bool,
    /// Put stragglers and rolled-back devices into new batches.
    #[arg(long)]
    retry_stragglers: bool,
    /// Put devices whose stage 1 or stage 2 failed into new batches.
    #[arg(long)]
    retry_failed: bool,
    /// JSON events, one per line, on stdout (the final report last).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    servers: ServerArgs,
    #[arg(long, value_name = "FILE")]
    journal: PathBuf,
    #[arg(long)]
    json: bool,
    /// Ask both servers where the devices are (needs the tokens).
    #[arg(long)]
    refresh: bool,
}

#[derive(Debug, Args)]
struct RollbackArgs {
    #[command(flatten)]
    servers: ServerArgs,
    #[arg(long, value_name = "FILE")]
    journal: PathBuf,
    /// Only this device (old server's id; repeat). Default: every device not yet on stage 2.
    #[arg(long = "device", value_name = "ID")]
    devices: Vec<String>,
    #[arg(long)]
    json: bool,
}

fn tenant_token(file: Option<&Path>, env: &str) -> Result<Option<mender_fleet::Secret>> {
    if file.is_none() && std::env::var(env).map_or(true, |v| v.trim().is_empty()) {
        return Ok(None);
    }
    let src = TokenSource::load(file, env, "--*-tenant-token-file").map_err(|e| anyhow!(e))?;
    Ok(Some(src.get()))
}

fn config(m: &MigrationArgs, concurrency: usize) -> Result<FleetConfig> {
    let plan = Plan {
        canary: m.canary,
        max_batch: m.max_batch,
        failure_threshold: m.failure_threshold,
        min_sample: m.min_sample,
        stage_timeout: m.stage_timeout,
        appear_timeout: m.appear_timeout,
        poll_interval: m.poll_interval,
        concurrency,
        deployment_cap: m.deployment_cap,
    };
    plan.validate().map_err(|e| anyhow!(e))?;
    let devices = m
        .devices
        .as_deref()
        .map(Selection::read_devices_file)
        .transpose()
        .map_err(|e| anyhow!(e))?;
    Ok(FleetConfig {
        artifacts_dir: m.artifacts.clone(),
        selection: Selection {
            device_types: m.device_types.clone(),
            groups: m.groups.clone(),
            devices,
        },
        tenant: TenantRoute {
            old_tenant_token: tenant_token(
                m.old_tenant_token_file.as_deref(),
                "MENDER_MIGRATE_OLD_TENANT_TOKEN",
            )?,
            new_tenant_token: tenant_token(
                m.new_tenant_token_file.as_deref(),
                "MENDER_MIGRATE_NEW_TENANT_TOKEN",
            )?,
            new_default_tenant: m.new_default_tenant,
        },
        plan,
        resume_paused: false,
        retry_stragglers: false,
        retry_failed: false,
    })
}

/// Both servers' APIs. URLs default to the journal's when one is given.
fn apis(s: &ServerArgs, journal: Option<&Path>) -> Result<(Api, Api)> {
    let from_journal = match journal.filter(|p| p.exists()) {
        Some(p) => {
            let (_, records) = mender_fleet::journal::Journal::open(p).map_err(|e| anyhow!(e))?;
            let f = mender_fleet::journal::Fleet::replay(&records);
            Some((f.old, f.new))
        }
        None => None,
    };
    let old_url = s
        .old_server
        .clone()
        .or_else(|| from_journal.as_ref().map(|j| j.0.clone()))
        .ok_or_else(|| anyhow!("--old-server URL is required"))?;
    let new_url = s
        .new_server
        .clone()
        .or_else(|| from_journal.as_ref().map(|j| j.1.clone()))
        .ok_or_else(|| anyhow!("--new-server URL is required"))?;
    if s.rate <= 0.0 || !s.rate.is_finite() {
        bail!("--rate must be a positive number of requests per second");
    }
    if s.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let opts = ClientOptions {
        rate: s.rate,
        concurrency: s.concurrency,
        ca_file: s.ca_file.clone(),
        ..ClientOptions::default()
    };
    let old_token = TokenSource::load(
        s.old_token_file.as_deref(),
        "MENDER_MIGRATE_OLD_TOKEN",
        "--old-token-file",
    )
    .map_err(|e| anyhow!(e))?;
    let new_token = TokenSource::load(
        s.new_token_file.as_deref(),
        "MENDER_MIGRATE_NEW_TOKEN",
        "--new-token-file",
    )
    .map_err(|e| anyhow!(e))?;
    let old = Client::new("old", &old_url, old_token, opts.clone())
        .map_err(|e| anyhow!("--old-server: {e}"))?;
    let new =
        Client::new("new", &new_url, new_token, opts).map_err(|e| anyhow!("--new-server: {e}"))?;
    Ok((Api::new(old), Api::new(new)))
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Runs a `fleet` subcommand and returns the process exit code.
pub fn run(args: &FleetArgs) -> ExitCode {
    mender_fleet::limit_malloc_arenas();
    match dispatch(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &FleetArgs) -> Result<ExitCode> {
    match &args.command {
        FleetCommand::Plan(a) => {
            let cfg = config(&a.migration, a.servers.concurrency)?;
            let (old, new) = apis(&a.servers, None)?;
            let report = preflight(
                &old,
                &new,
                &old.client.token(),
                &new.client.token(),
                &cfg,
                false,
            );
            if a.json {
                print_json(&report.to_json());
            } else {
                print!("{}", report.to_text());
            }
            Ok(if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        FleetCommand::Run(a) => {
            let mut cfg = config(&a.migration, a.servers.concurrency)?;
            cfg.resume_paused = a.resume;
            cfg.retry_stragglers = a.retry_stragglers;
            cfg.retry_failed = a.retry_failed;
            let (old, new) = apis(&a.servers, Some(&a.journal))?;
            let progress = Arc::new(Progress::new(Mode::detect(a.json)));
            let orch = match Orchestrator::open(old, new, cfg, &a.journal, progress, Access::Run) {
                Ok(o) => o,
                Err(RunError::Preflight(report)) => {
                    if a.json {
                        print_json(&report.to_json());
                    } else {
                        eprint!("{}", report.to_text());
                    }
                    bail!("pre-flight failed; nothing was changed");
                }
                Err(e) => return Err(anyhow!(e)),
            };
            let result = orch.run();
            let report = orch.report();
            if !a.json {
                print!("{}", report.to_text());
            }
            match result {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(RunError::Paused { .. }) => {
                    if a.json {
                        print_json(&serde_json::to_value(&report)?);
                    }
                    eprintln!(
                        "error: {}",
                        result.err().map(|e| e.to_string()).unwrap_or_default()
                    );
                    Ok(ExitCode::from(EXIT_PAUSED))
                }
                Err(e) => Err(anyhow!(e)).context(format!(
                    "the run stopped; fix the cause and run again with --journal {} to resume",
                    a.journal.display()
                )),
            }
        }
        FleetCommand::Status(a) => {
            let (_, records) =
                mender_fleet::journal::Journal::open(&a.journal).map_err(|e| anyhow!(e))?;
            let fleet = mender_fleet::journal::Fleet::replay(&records);
            let mut report = mender_fleet::Report::build(&fleet, None);
            if a.refresh {
                let (old, new) = apis(&a.servers, Some(&a.journal))?;
                report.refresh(&fleet, &old, &new)?;
            }
            if a.json {
                print_json(&serde_json::to_value(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            let stranded = report.refresh.as_ref().map_or(0, |r| r.stranded.len());
            Ok(if stranded > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        FleetCommand::Rollback(a) => {
            let (old, new) = apis(&a.servers, Some(&a.journal))?;
            let cfg = FleetConfig {
                artifacts_dir: PathBuf::new(),
                selection: Selection::default(),
                tenant: TenantRoute::default(),
                plan: Plan {
                    concurrency: a.servers.concurrency,
                    ..Plan::default()
                },
                resume_paused: false,
                retry_stragglers: false,
                retry_failed: false,
            };
            let progress = Arc::new(Progress::new(Mode::detect(a.json)));
            let orch = Orchestrator::open(old, new, cfg, &a.journal, progress, Access::Existing)?;
            let ids = (!a.devices.is_empty()).then_some(a.devices.as_slice());
            let report = orch.rollback_devices(ids)?;
            if a.json {
                print_json(&serde_json::to_value(&report)?);
            } else {
                print!("{}", report.to_text());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
