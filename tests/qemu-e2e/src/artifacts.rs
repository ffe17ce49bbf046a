//! The artifacts the scenarios deploy: which set (stage mode, transport, signing), the device's
//! original config they are generated from, and building them with `cargo xtask artifacts` like
//! a release engineer would.

use crate::guest::{DEVICE_TYPE, NEW_IP, OLD_IP, SERVER_CERT, VERIFY_KEY};
use crate::host;
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Mode {
    Patch,
    Replace,
    /// Patch mode with `--restart service`: no reboot; the module restarts the client 30 s
    /// after a successful deployment.
    PatchServiceRestart,
}

impl Mode {
    pub(crate) fn cli_mode(self) -> &'static str {
        match self {
            Mode::Patch | Mode::PatchServiceRestart => "patch",
            Mode::Replace => "replace",
        }
    }
    pub(crate) fn restart(self) -> &'static str {
        match self {
            Mode::PatchServiceRestart => "service",
            Mode::Patch | Mode::Replace => "reboot",
        }
    }
    pub(crate) fn label(self) -> &'static str {
        match self {
            Mode::Patch => "patch",
            Mode::Replace => "replace",
            Mode::PatchServiceRestart => "service",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Transport {
    Http,
    Https,
}

impl Transport {
    pub(crate) fn scheme(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Https => "https",
        }
    }
    pub(crate) fn guest_port(self) -> u16 {
        match self {
            Transport::Http => 80,
            Transport::Https => 443,
        }
    }
    pub(crate) fn url(self, ip: &str) -> String {
        format!("{}://{ip}", self.scheme())
    }
}

/// Artifact signatures: whether the device checks them and whether the artifacts carry one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Verify {
    /// No `ArtifactVerifyKey` on the device; unsigned artifacts.
    Off,
    /// `ArtifactVerifyKey` on the device; artifacts signed with the run's key (`--sign-key`).
    Signed,
    /// `ArtifactVerifyKey` on the device, artifacts built without `--sign-key`.
    Unsigned,
}

impl Verify {
    pub(crate) fn device_verifies(self) -> bool {
        self != Verify::Off
    }
    pub(crate) fn label(self) -> &'static str {
        match self {
            Verify::Off => "",
            Verify::Signed => "-signed",
            Verify::Unsigned => "-unsigned",
        }
    }
}

/// Which artifact set: stage mode, transport and signing.
pub(crate) type ArtifactKind = (Mode, Transport, Verify);

/// The three artifacts `cargo xtask artifacts` writes.
pub(crate) struct ArtifactSet {
    pub(crate) module_install: PathBuf,
    pub(crate) stage1: PathBuf,
    pub(crate) stage2: PathBuf,
}

/// The artifact signing key pair of a run (PEM files on the host).
pub(crate) struct SignKey {
    pub(crate) private: PathBuf,
    pub(crate) public: PathBuf,
}

/// The device's original config as the release engineer captured it.
pub(crate) fn original_config(transport: Transport, verifies: bool) -> Value {
    let mut conf = serde_json::json!({ "ServerURL": transport.url(OLD_IP) });
    if transport == Transport::Https {
        conf["ServerCertificate"] = SERVER_CERT.into();
    }
    if verifies {
        conf["ArtifactVerifyKey"] = VERIFY_KEY.into();
    }
    conf["UpdatePollIntervalSeconds"] = 5.into();
    conf["InventoryPollIntervalSeconds"] = 5.into();
    conf["RetryPollIntervalSeconds"] = 5.into();
    conf
}

pub(crate) fn build_artifacts(
    dir: &Path,
    kind: ArtifactKind,
    sign_key: Option<&Path>,
) -> Result<ArtifactSet> {
    let (mode, transport, verify) = kind;
    ensure!(
        sign_key.is_some() == (verify == Verify::Signed),
        "a signing key exactly for the signed set"
    );
    let mode_name = mode.cli_mode();
    let prefix = format!(
        "e2e-{}-{}{}",
        mode.label(),
        transport.scheme(),
        verify.label()
    );
    let out = dir.join(&prefix);
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let config = out.join("captured-mender.conf");
    std::fs::write(
        &config,
        serde_json::to_vec_pretty(&original_config(transport, verify.device_verifies()))?,
    )?;
    crate::progress::step(
        "qemu-test",
        &format!(
            "cargo xtask artifacts --mode {mode_name} --restart {} ({}{})",
            mode.restart(),
            transport.scheme(),
            verify.label()
        ),
        || {
            let mut cmd = Command::new(host::cargo());
            if let Some(key) = sign_key {
                cmd.arg("xtask").arg("artifacts").arg("--sign-key").arg(key);
            } else if verify == Verify::Unsigned {
                // Deliberately unsigned for a verifying device: the scenario proves the client
                // refuses it, so the tool's own refusal is overridden.
                cmd.args(["xtask", "artifacts", "--allow-unsigned"]);
            } else {
                cmd.args(["xtask", "artifacts"]);
            }
            let output = cmd
                .current_dir(host::workspace_root())
                .arg("--config")
                .arg(&config)
                .args([
                    "--new-server",
                    &transport.url(NEW_IP),
                    "--old-server",
                    &transport.url(OLD_IP),
                ])
                .args([
                    "--device-type",
                    DEVICE_TYPE,
                    // The guest is x86-64; the static musl module runs on it.
                    "--target",
                    "x86_64-unknown-linux-musl",
                    "--name",
                    &prefix,
                    "--mode",
                    mode_name,
                    "--restart",
                    mode.restart(),
                    "--out",
                ])
                .arg(&out)
                .output()
                .context("cannot run cargo xtask artifacts")?;
            if !output.status.success() {
                bail!(
                    "cargo xtask artifacts failed ({}):\n{}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            Ok(())
        },
    )?;
    let set = ArtifactSet {
        module_install: out.join(format!("{prefix}-module-install-x86_64.mender")),
        stage1: out.join(format!("{prefix}-stage1-dual.mender")),
        stage2: out.join(format!("{prefix}-stage2-new-only.mender")),
    };
    for f in [&set.module_install, &set.stage1, &set.stage2] {
        ensure!(
            f.is_file(),
            "cargo xtask artifacts did not write {}",
            f.display()
        );
    }
    Ok(set)
}

pub(crate) fn artifact_name(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string()
}
