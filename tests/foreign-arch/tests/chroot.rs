//! The module built for arm64 and armhf, installed by Debian's `mender-client` 3.4 of that
//! architecture in a qemu-user chroot: module-install, stage 1, a stage-2 rollback, stage 2.

use anyhow::{ensure, Context, Result};
use foreign_arch::{
    ensure_binfmt, ensure_chroot, missing_prerequisites, tail, workspace_root, ForeignArch,
    Scratch, ARM64, ARMHF,
};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const OLD: &str = "https://old.mender.example.com";
const NEW: &str = "https://new.mender.example.com";
/// A client call normally takes about 1 s under qemu-user; the bound only catches a hang.
const CALL_LIMIT: Duration = Duration::from_secs(180);

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        tail(&String::from_utf8_lossy(&o.stderr), 40)
    )
}

/// `mender --no-syslog ARGS` in the chroot; must exit 0.
fn mender(chroot: &Scratch, args: &[&str]) -> Result<Output> {
    let mut argv = vec!["mender", "--no-syslog"];
    argv.extend_from_slice(args);
    let out = chroot.run(&argv, CALL_LIMIT)?;
    ensure!(
        out.status.success(),
        "mender {args:?} failed: {}",
        text(&out)
    );
    Ok(out)
}

fn config(chroot: &Scratch) -> Result<Value> {
    let path = chroot.path("/etc/mender/mender.conf");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// `cargo xtask artifacts --target TRIPLE` (builds the module for the devices' CPU).
fn make_artifacts(
    arch: &ForeignArch,
    captured: &Path,
    out: &Path,
    device_type: &str,
) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["xtask", "artifacts", "--config"])
        .arg(captured)
        .args(["--new-server", NEW, "--device-type", device_type])
        .args(["--target", arch.triple, "--name", "fa", "--force", "--out"])
        .arg(out)
        .output()
        .context("running cargo xtask artifacts")?;
    ensure!(
        o.status.success(),
        "cargo xtask artifacts --target {} failed: {}",
        arch.triple,
        text(&o)
    );
    Ok(())
}

fn run_scenario(arch: ForeignArch) -> Result<()> {
    if let Some(why) = missing_prerequisites(&arch) {
        if std::env::var_os("CI").is_some() {
            anyhow::bail!("{why}");
        }
        eprintln!(
            "SKIP foreign-arch {}: {why}; this test runs in CI",
            arch.debian
        );
        return Ok(());
    }
    ensure_binfmt(&arch)?;
    let base = ensure_chroot(&arch)?;
    let chroot = Scratch::copy_of(&base, arch.debian)?;
    let device_type = format!("foreign-{}", arch.debian);

    // The device: a 3.x config with a tenant token and device-specific keys.
    let original = json!({
        "ServerURL": OLD,
        "TenantToken": "tenant-token-for-the-foreign-arch-test",
        "UpdatePollIntervalSeconds": 1800,
        "InventoryPollIntervalSeconds": 28800,
        "RetryPollIntervalSeconds": 300,
    });
    let original_bytes = serde_json::to_vec_pretty(&original)?;
    std::fs::create_dir_all(chroot.path("/etc/mender"))?;
    std::fs::write(chroot.path("/etc/mender/mender.conf"), &original_bytes)?;
    std::fs::write(
        chroot.path("/etc/mender/artifact_info"),
        "artifact_name=foreign-arch-initial\n",
    )?;
    // /var/lib/mender is Debian's symlink to /data/mender.
    std::fs::create_dir_all(chroot.path("/data/mender"))?;
    std::fs::write(
        chroot.path("/data/mender/device_type"),
        format!("device_type={device_type}\n"),
    )?;

    let work = chroot.path("/tmp/artifacts");
    std::fs::create_dir_all(&work)?;
    let captured = work.join("captured.conf");
    std::fs::write(&captured, &original_bytes)?;
    make_artifacts(&arch, &captured, &work, &device_type)?;
    let module_install = format!("/tmp/artifacts/fa-module-install-{}.mender", arch.arch);
    ensure!(
        chroot.path(&module_install).is_file(),
        "no {module_install}: the module-install name must carry the architecture"
    );

    // 1. module-install: the module lands in the modules dir and runs on this CPU.
    mender(&chroot, &["install", &module_install])?;
    mender(&chroot, &["commit"])?;
    let module = chroot.path("/usr/share/mender/modules/v3/server-migration");
    let head = std::fs::read(&module).with_context(|| format!("reading {}", module.display()))?;
    ensure!(
        head.len() > 20 && u16::from_le_bytes([head[18], head[19]]) == arch.elf_machine,
        "the installed module is not a {} program",
        arch.debian
    );
    let version = chroot.run(
        &["/usr/share/mender/modules/v3/server-migration", "--version"],
        CALL_LIMIT,
    )?;
    ensure!(
        version.status.success()
            && String::from_utf8_lossy(&version.stdout).contains("server-migration"),
        "the module does not run on {}: {}",
        arch.debian,
        text(&version)
    );

    // 2. stage 1 (dual), committed.
    mender(
        &chroot,
        &["install", "/tmp/artifacts/fa-stage1-dual.mender"],
    )?;
    mender(&chroot, &["commit"])?;
    let stage1 = config(&chroot)?;
    ensure!(
        stage1["Servers"] == json!([{ "ServerURL": OLD }, { "ServerURL": NEW }])
            && stage1.get("ServerURL").is_none()
            && stage1["TenantToken"] == original["TenantToken"]
            && stage1["RetryPollIntervalSeconds"] == 300,
        "stage 1 left {stage1}"
    );
    let stage1_bytes = std::fs::read(chroot.path("/etc/mender/mender.conf"))?;

    // 3. stage 2 installed, then rolled back: stage 1's exact bytes come back.
    mender(
        &chroot,
        &["install", "/tmp/artifacts/fa-stage2-new-only.mender"],
    )?;
    ensure!(
        config(&chroot)?["ServerURL"] == NEW,
        "stage 2 did not write ServerURL"
    );
    mender(&chroot, &["rollback"])?;
    ensure!(
        std::fs::read(chroot.path("/etc/mender/mender.conf"))? == stage1_bytes,
        "rollback did not restore stage 1's file: {}",
        config(&chroot)?
    );

    // 4. stage 2 again, committed: new server only.
    mender(
        &chroot,
        &["install", "/tmp/artifacts/fa-stage2-new-only.mender"],
    )?;
    mender(&chroot, &["commit"])?;
    let stage2 = config(&chroot)?;
    ensure!(
        stage2["ServerURL"] == NEW
            && stage2.get("Servers").is_none()
            && stage2["TenantToken"] == original["TenantToken"],
        "stage 2 left {stage2}"
    );
    let provides = mender(&chroot, &["show-artifact"])?;
    ensure!(
        String::from_utf8_lossy(&provides.stdout).contains("fa-stage2-new-only"),
        "show-artifact after stage 2: {}",
        text(&provides)
    );
    Ok(())
}

#[test]
fn arm64_client_installs_module_stages_and_rollback() {
    if let Err(e) = run_scenario(ARM64) {
        panic!("arm64: {e:#}");
    }
}

#[test]
fn armhf_client_installs_module_stages_and_rollback() {
    if let Err(e) = run_scenario(ARMHF) {
        panic!("armhf: {e:#}");
    }
}
