//! The module built for arm64 and armhf, installed by Debian's `mender-client` 3.4 of that
//! architecture in a qemu-user chroot: module-install, stage 1, a stage-2 rollback, stage 2.

use anyhow::{ensure, Context, Result};
use foreign_arch::{
    describe, scratch_chroot, workspace_root, ForeignArch, Scratch, ARM64, ARMHF, CLIENT_CALL_LIMIT,
};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const OLD: &str = "https://old.mender.example.com";
const NEW: &str = "https://new.mender.example.com";
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
        describe(&o)
    );
    Ok(())
}

fn run_scenario(arch: ForeignArch) -> Result<()> {
    let Some(chroot) = scratch_chroot(&arch, arch.debian, arch.debian)? else {
        return Ok(());
    };
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
    chroot.make_device(&original_bytes, "foreign-arch-initial", &device_type)?;

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
    chroot.install_and_commit(&module_install)?;
    let module = chroot.path("/usr/share/mender/modules/v3/server-migration");
    let head = std::fs::read(&module).with_context(|| format!("reading {}", module.display()))?;
    ensure!(
        head.len() > 20 && u16::from_le_bytes([head[18], head[19]]) == arch.elf_machine,
        "the installed module is not a {} program",
        arch.debian
    );
    let version = chroot.run(
        &["/usr/share/mender/modules/v3/server-migration", "--version"],
        CLIENT_CALL_LIMIT,
    )?;
    ensure!(
        version.status.success()
            && String::from_utf8_lossy(&version.stdout).contains("server-migration"),
        "the module does not run on {}: {}",
        arch.debian,
        describe(&version)
    );

    // 2. stage 1 (dual), committed.
    chroot.install_and_commit("/tmp/artifacts/fa-stage1-dual.mender")?;
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
    chroot.mender(&["install", "/tmp/artifacts/fa-stage2-new-only.mender"])?;
    ensure!(
        config(&chroot)?["ServerURL"] == NEW,
        "stage 2 did not write ServerURL"
    );
    chroot.mender(&["rollback"])?;
    ensure!(
        std::fs::read(chroot.path("/etc/mender/mender.conf"))? == stage1_bytes,
        "rollback did not restore stage 1's file: {}",
        config(&chroot)?
    );

    // 4. stage 2 again, committed: new server only.
    chroot.install_and_commit("/tmp/artifacts/fa-stage2-new-only.mender")?;
    let stage2 = config(&chroot)?;
    ensure!(
        stage2["ServerURL"] == NEW
            && stage2.get("Servers").is_none()
            && stage2["TenantToken"] == original["TenantToken"],
        "stage 2 left {stage2}"
    );
    let provides = chroot.mender(&["show-artifact"])?;
    ensure!(
        String::from_utf8_lossy(&provides.stdout).contains("fa-stage2-new-only"),
        "show-artifact after stage 2: {}",
        describe(&provides)
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
