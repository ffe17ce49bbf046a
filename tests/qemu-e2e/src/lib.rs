//! QEMU end-to-end harness: builds the Debian guest image with the real mender-client 3.4 and
//! runs the two-stage server migration scenarios against mock servers on the host's loopback.
//! Entry points are `run_qemu_image` and `run_qemu_test` (`cargo xtask qemu-image|qemu-test`).

pub mod artifacts;
pub mod ext4;
pub mod fleet;
pub mod guest;
pub mod harness;
pub mod host;
pub mod image;
pub mod progress;
pub mod scenarios;
pub mod servers;
pub mod speed;
pub mod vm;

use anyhow::{bail, Result};
use std::path::PathBuf;

const IMAGE_USAGE: &str =
    "usage: cargo xtask qemu-image [--rebuild-base] [--module PATH | --without-module]

Builds (or reuses from target/qemu-cache/, or $QEMU_E2E_CACHE) the Debian bookworm guest image:
  base layer     mmdebstrap of bookworm with systemd and mender-client 3.4 (cached by package set)
  overlay layer  debian-overlay/qemu-guest/rootfs + the server-migration module + device key
  --rebuild-base    ignore the cached base layer
  --module PATH     use this module binary instead of building it for the guest (x86_64 musl)
  --without-module  leave the module and its inventory script out";

/// Builds the update module for the guest and returns the binary's path: `cargo xtask`'s
/// one module build, handed in so the harness has no second copy of it.
pub type ModuleBuilder<'a> = &'a dyn Fn() -> Result<PathBuf>;

/// `cargo xtask qemu-image`.
pub fn run_qemu_image(args: &[String], build_module: ModuleBuilder) -> Result<()> {
    let mut req = image::ImageRequest {
        rebuild_base: false,
        module_binary: None,
    };
    let mut without_module = false;
    let mut module_binary = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rebuild-base" => req.rebuild_base = true,
            "--without-module" => without_module = true,
            "--module" => match it.next() {
                Some(path) => module_binary = Some(PathBuf::from(path)),
                None => bail!("--module needs a path\n\n{IMAGE_USAGE}"),
            },
            "-h" | "--help" => {
                eprintln!("{IMAGE_USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument `{other}`\n\n{IMAGE_USAGE}"),
        }
    }
    let started = std::time::Instant::now();
    if !without_module {
        req.module_binary = Some(match module_binary {
            Some(path) => path,
            None => build_module()?,
        });
    }
    let img = image::ensure_image(&req)?;
    progress::note(
        "qemu-image",
        &format!(
            "ready in {}: disk {} kernel {} initrd {}{}",
            progress::secs(started.elapsed()),
            img.disk.display(),
            img.kernel.display(),
            img.initrd.display(),
            if img.module.is_some() {
                ""
            } else {
                " (without the server-migration module)"
            }
        ),
    );
    Ok(())
}

const TEST_USAGE: &str = "usage: cargo xtask qemu-test [--scenario NAME]... [--power-loss POINTS] [--keep-logs] [--list]

Boots the guest image under qemu-system-x86_64 (TCG unless the CPU has vmx/svm and /dev/kvm works)
against two mock-mender-server processes on 127.0.0.1 and runs the migration scenarios.
  --scenario NAME      run only this scenario (repeatable; comma-separated lists work too)
  --power-loss POINTS  power-loss runs: QEMU killed while the module pauses at durable step k of
                       stage 1's ArtifactInstall. POINTS: all | ci (3 representative steps) |
                       k,k,... | none. Without --scenario/--power-loss: every scenario plus `ci`;
                       --power-loss alone runs only the power-loss points
  --keep-logs          keep target/qemu-e2e/<scenario>/ (serial console, request logs, journal) on success
  --list               list the scenarios
Every wait is its quiet-machine figure x the speed factor (the slowest boot so far / a quiet boot,
measured from the first boot on) x a margin; a boot that hangs is cut and started once more.
Environment: QEMU_E2E_TIMEOUT_SCALE (the margin, default 3),
QEMU_E2E_SMP (guest CPUs, default 2), QEMU_E2E_ACCEL=tcg, QEMU_E2E_CACHE (image cache dir),
QEMU_E2E_OUT (logs and artifacts, default target/qemu-e2e; give parallel runs their own).";

/// The host's 1/5/15-minute load averages, for the summary (how busy the run's machine was).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// One line of the summary table.
struct Row {
    name: String,
    timings: Option<harness::Timings>,
    power_loss: bool,
}

/// `cargo xtask qemu-test`.
pub fn run_qemu_test(args: &[String], build_module: ModuleBuilder) -> Result<()> {
    let mut wanted: Vec<String> = Vec::new();
    let mut power_loss: Option<String> = None;
    let mut keep_logs = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--keep-logs" => keep_logs = true,
            "--scenario" => match it.next() {
                Some(names) => wanted.extend(names.split(',').map(|s| s.trim().to_string())),
                None => bail!("--scenario needs a name\n\n{TEST_USAGE}"),
            },
            "--power-loss" => match it.next() {
                Some(points) => power_loss = Some(points.trim().to_string()),
                None => bail!("--power-loss needs all, ci, none or step numbers\n\n{TEST_USAGE}"),
            },
            "--list" => {
                for s in scenarios::all() {
                    eprintln!("{:<26} {}", s.name, s.about);
                }
                eprintln!(
                    "{:<26} power loss at durable step k of stage 1's ArtifactInstall (--power-loss)",
                    "power-loss-<k>"
                );
                return Ok(());
            }
            "-h" | "--help" => {
                eprintln!("{TEST_USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument `{other}`\n\n{TEST_USAGE}"),
        }
    }
    let all = scenarios::all();
    for name in &wanted {
        if !all.iter().any(|s| s.name == name) {
            let names: Vec<&str> = all.iter().map(|s| s.name).collect();
            bail!("unknown scenario `{name}` (known: {})", names.join(", "));
        }
    }
    // Full run: every scenario plus the CI power-loss subset; --power-loss alone: only those.
    let (selected, power_loss): (Vec<&scenarios::Scenario>, Option<String>) =
        match (wanted.is_empty(), power_loss) {
            (true, None) => (all.iter().collect(), Some("ci".to_string())),
            (true, Some(p)) => (Vec::new(), Some(p)),
            (false, p) => (
                all.iter()
                    .filter(|s| wanted.iter().any(|w| w == s.name))
                    .collect(),
                p,
            ),
        };
    let power_loss = power_loss.filter(|p| p != "none");
    host::require_tools(&[
        "qemu-system-x86_64",
        "socat",
        "debugfs",
        "mkfs.ext4",
        "mmdebstrap",
        "journalctl",
        "tar",
    ])?;
    let started = std::time::Instant::now();
    let load_at_start = load_average();
    let image = harness::scenario_image(build_module()?)?;
    let mock = harness::build_mock_server()?;
    let out_dir = std::env::var_os("QEMU_E2E_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| host::target_dir().join("qemu-e2e"));
    let mut env = harness::Env::new(image, mock, out_dir, keep_logs);
    let mut rows: Vec<Row> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    for s in selected {
        progress::note("qemu-test", &format!("scenario {}: {}", s.name, s.about));
        let timings = match harness::run_one(s, &mut env) {
            Ok(t) => Some(t),
            Err(err) => {
                eprintln!("error: {err:#}");
                failed.push(s.name.to_string());
                None
            }
        };
        rows.push(Row {
            name: s.name.to_string(),
            timings,
            power_loss: false,
        });
    }
    if let Some(spec) = power_loss {
        let reference = scenarios::power_loss::prepare(&mut env)?;
        let points = reference.select(&spec)?;
        progress::note(
            "qemu-test",
            &format!(
                "power loss at {} of the {} durable steps of stage 1's ArtifactInstall: {:?}",
                points.len(),
                reference.steps.len(),
                points
            ),
        );
        for k in points {
            let name = format!("power-loss-{k}");
            progress::note(
                "qemu-test",
                &format!(
                    "scenario {name}: power loss at step {k} ({})",
                    reference.steps[k - 1]
                ),
            );
            let needs = [(
                artifacts::Mode::Patch,
                artifacts::Transport::Http,
                artifacts::Verify::Off,
            )];
            let timings = match harness::run_named(&name, &needs, &mut env, |run| {
                scenarios::power_loss::power_loss_at(run, &reference, k)
            }) {
                Ok(t) => Some(t),
                Err(err) => {
                    eprintln!("error: {err:#}");
                    failed.push(name.clone());
                    None
                }
            };
            rows.push(Row {
                name,
                timings,
                power_loss: true,
            });
        }
    }
    eprintln!(
        "\n{:<26} {:<7} {:>9} {:>9} {:>10}",
        "scenario", "result", "wall", "booting", "poll-wait"
    );
    for row in &rows {
        let name = &row.name;
        match &row.timings {
            Some(t) => eprintln!(
                "{name:<26} {:<7} {:>9} {:>9} {:>10}",
                "ok",
                progress::secs(t.wall),
                progress::secs(t.booting),
                progress::secs(t.poll_wait)
            ),
            None => eprintln!("{name:<26} FAILED"),
        }
    }
    eprintln!("total {}", progress::secs(started.elapsed()));
    eprintln!(
        "speed factor {:.1} (slowest boot / {} s quiet boot; waits are quiet figure x factor x {}); \
         load average at start {load_at_start}, at end {}",
        speed::factor(),
        speed::QUIET_BOOT_SECS,
        speed::margin(),
        load_average()
    );
    // The plain closing line CI readers count.
    let points = rows.iter().filter(|r| r.power_loss).count();
    let points_ok = rows
        .iter()
        .filter(|r| r.power_loss && r.timings.is_some())
        .count();
    println!(
        "qemu-test: {} passed, {} failed ({} scenarios, {points} power-loss points of which {points_ok} passed)",
        rows.len() - failed.len(),
        failed.len(),
        rows.len() - points,
    );
    if !failed.is_empty() {
        bail!("{} scenario(s) failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}
