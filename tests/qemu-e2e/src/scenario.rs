//! The migration scenarios: the real mender-client 3.4 in a QEMU guest moved from an old to a new
//! mock server in two stages (the hosted-Mender tenant-migration procedure, automated), plus the
//! fault runs. Each scenario asserts from the servers' management API, their request logs and the
//! guest's disk after shutdown.

use crate::ext4::Edits;
use crate::host;
use crate::image::{self, GuestImage, MODULE_GUEST_PATH};
use crate::progress::{note, secs};
use crate::servers::{now_epoch, parse_rfc3339, MockOptions, MockServer};
use crate::speed::{self, budget};
use crate::vm::{tail_file, BootState, Disk, Forward, Vm, VmConfig};
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const OLD_IP: &str = "10.0.2.100";
const NEW_IP: &str = "10.0.2.101";
const DEVICE_TYPE: &str = "qemux86-64";
const BASE_ARTIFACT: &str = "debian-bookworm-qemu-base";
const MAIN_CONF: &str = "/etc/mender/mender.conf";
/// `/var/lib/mender` is a symlink to `/data/mender`, which debugfs does not follow.
const FALLBACK_CONF: &str = "/data/mender/mender.conf";
const SERVER_CERT: &str = "/etc/mender/server.crt";
/// Where a signature-checking device keeps the public key (`ArtifactVerifyKey`).
const VERIFY_KEY: &str = "/etc/mender/artifact-verify-key.pem";
/// The 3.4 client's reason for refusing an unsigned artifact when `ArtifactVerifyKey` is set.
const UNSIGNED_REFUSAL: &str = "expecting signed artifact, but no signature file found";
/// The deployment statuses after which the device does nothing more for that deployment.
const FINAL: &[&str] = &[
    "success",
    "failure",
    "already-installed",
    "noartifact",
    "aborted",
    "decommissioned",
];

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Mode {
    Patch,
    Replace,
    /// Patch mode with `--restart service`: no reboot; the module restarts the client 30 s
    /// after a successful deployment.
    PatchServiceRestart,
}

impl Mode {
    fn cli_mode(self) -> &'static str {
        match self {
            Mode::Patch | Mode::PatchServiceRestart => "patch",
            Mode::Replace => "replace",
        }
    }
    fn restart(self) -> &'static str {
        match self {
            Mode::PatchServiceRestart => "service",
            Mode::Patch | Mode::Replace => "reboot",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Mode::Patch => "patch",
            Mode::Replace => "replace",
            Mode::PatchServiceRestart => "service",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Transport {
    Http,
    Https,
}

impl Transport {
    fn scheme(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Https => "https",
        }
    }
    fn guest_port(self) -> u16 {
        match self {
            Transport::Http => 80,
            Transport::Https => 443,
        }
    }
    fn url(self, ip: &str) -> String {
        format!("{}://{ip}", self.scheme())
    }
}

/// Artifact signatures: whether the device checks them and whether the artifacts carry one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Verify {
    /// No `ArtifactVerifyKey` on the device; unsigned artifacts.
    Off,
    /// `ArtifactVerifyKey` on the device; artifacts signed with the run's key (`--sign-key`).
    Signed,
    /// `ArtifactVerifyKey` on the device, artifacts built without `--sign-key`.
    Unsigned,
}

impl Verify {
    fn device_verifies(self) -> bool {
        self != Verify::Off
    }
    fn label(self) -> &'static str {
        match self {
            Verify::Off => "",
            Verify::Signed => "-signed",
            Verify::Unsigned => "-unsigned",
        }
    }
}

/// Which artifact set: stage mode, transport and signing.
type ArtifactKind = (Mode, Transport, Verify);

/// The three artifacts `cargo xtask artifacts` writes.
struct ArtifactSet {
    module_install: PathBuf,
    stage1: PathBuf,
    stage2: PathBuf,
}

/// One scenario: name, what it proves, and its body.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// The artifact set it deploys (built before the scenario's clock starts).
    needs: &'static [ArtifactKind],
    run: fn(&mut Run) -> Result<()>,
}

pub fn all() -> Vec<Scenario> {
    vec![
        Scenario { name: "boot", about: "guest boots, the real client authenticates on old and sends inventory", needs: &[],
            run: boot },
        Scenario { name: "migration", about: "module-install + stage 1 from old, reject/preauthorize, failover, stage 2 from new", needs: &[(Mode::Patch, Transport::Http, Verify::Off)],
            run: migration_patch },
        Scenario { name: "new-down-stage1", about: "new server down during stage 1: device stays on old, migration continues later", needs: &[(Mode::Patch, Transport::Http, Verify::Off)],
            run: new_down_stage1 },
        Scenario { name: "invalid-result", about: "replace-mode stage 1 whose result is invalid (fallback holds ServerURL): refused, rollback", needs: &[(Mode::Replace, Transport::Http, Verify::Off)],
            run: invalid_result },
        Scenario { name: "stage2-first", about: "stage 2 before stage 1: refused by the depends check, config untouched", needs: &[(Mode::Patch, Transport::Http, Verify::Off)],
            run: stage2_first },
        Scenario { name: "power-cut", about: "QEMU killed in ArtifactInstall: config exactly old or exactly new, deployment ends, client runs", needs: &[(Mode::Patch, Transport::Http, Verify::Off)],
            run: power_cut },
        Scenario { name: "power-cut-stage2", about: "QEMU killed in stage 2's ArtifactInstall (device on new): config exactly [old, new] or exactly new", needs: &[(Mode::Patch, Transport::Http, Verify::Off)],
            run: power_cut_stage2 },
        Scenario { name: "migration-replace", about: "the full migration with --mode replace artifacts", needs: &[(Mode::Replace, Transport::Http, Verify::Off)],
            run: migration_replace },
        Scenario { name: "migration-service-restart", about: "the full migration with --restart service (no reboot; the module restarts the client)", needs: &[(Mode::PatchServiceRestart, Transport::Http, Verify::Off)],
            run: migration_service_restart },
        Scenario { name: "migration-https", about: "the full migration against HTTPS servers (ServerCertificate)", needs: &[(Mode::Patch, Transport::Https, Verify::Off)],
            run: migration_https },
        Scenario { name: "migration-signed", about: "ArtifactVerifyKey on the device: unsigned stage 1 refused (config untouched), signed artifacts migrate it", needs: &[(Mode::Patch, Transport::Http, Verify::Signed), (Mode::Patch, Transport::Http, Verify::Unsigned)],
            run: migration_signed },
    ]
}

/// What a scenario run measured.
#[derive(Default, Debug, Clone)]
pub struct Timings {
    pub wall: Duration,
    /// QEMU start to the first request at a server, plus every guest reboot (the `rebooting`
    /// report to the next report of the same deployment).
    pub booting: Duration,
    /// Time spent waiting for the client's polls, deployments and reports (waits minus booting).
    pub poll_wait: Duration,
    waited: Duration,
}

/// Shared inputs of all scenarios.
pub struct Env {
    pub image: GuestImage,
    pub mock_binary: PathBuf,
    pub out_dir: PathBuf,
    pub keep_logs: bool,
    artifacts: BTreeMap<ArtifactKind, ArtifactSet>,
    /// This run's artifact signing key, generated on first use.
    sign_key: Option<SignKey>,
    /// Time spent building artifacts (not part of any scenario's wall time).
    artifact_build: Duration,
}

impl Env {
    pub fn new(image: GuestImage, mock_binary: PathBuf, out_dir: PathBuf, keep_logs: bool) -> Env {
        Env {
            image,
            mock_binary,
            out_dir,
            keep_logs,
            artifacts: BTreeMap::new(),
            sign_key: None,
            artifact_build: Duration::ZERO,
        }
    }

    fn artifacts(&mut self, mode: Mode, transport: Transport) -> Result<&ArtifactSet> {
        self.artifacts_of((mode, transport, Verify::Off))
    }

    fn artifacts_of(&mut self, kind: ArtifactKind) -> Result<&ArtifactSet> {
        if !self.artifacts.contains_key(&kind) {
            let started = Instant::now();
            let key = match kind.2 {
                Verify::Signed => Some(self.sign_key()?.private.clone()),
                Verify::Off | Verify::Unsigned => None,
            };
            let set = build_artifacts(&self.out_dir.join("artifacts"), kind, key.as_deref())?;
            self.artifact_build += started.elapsed();
            self.artifacts.insert(kind, set);
        }
        Ok(&self.artifacts[&kind])
    }

    /// An RSA-3072 key pair made with openssl for this run (never reused across runs).
    fn sign_key(&mut self) -> Result<&SignKey> {
        if self.sign_key.is_none() {
            let dir = self.out_dir.join("artifacts");
            std::fs::create_dir_all(&dir)?;
            let key = SignKey {
                private: dir.join("artifact-sign-key.pem"),
                public: dir.join("artifact-verify-key.pem"),
            };
            host::run(
                Command::new("openssl")
                    .args(["genrsa", "-traditional", "-out"])
                    .arg(&key.private)
                    .arg("3072"),
            )?;
            host::run(
                Command::new("openssl")
                    .args(["pkey", "-pubout", "-in"])
                    .arg(&key.private)
                    .arg("-out")
                    .arg(&key.public),
            )?;
            ensure!(
                std::fs::read_to_string(&key.public)?.contains("BEGIN PUBLIC KEY"),
                "openssl wrote no public key to {}",
                key.public.display()
            );
            self.sign_key = Some(key);
        }
        self.sign_key.as_ref().context("no signing key")
    }
}

/// The artifact signing key pair of a run (PEM files on the host).
struct SignKey {
    private: PathBuf,
    public: PathBuf,
}

/// The device's original config as the release engineer captured it.
fn original_config(transport: Transport, verifies: bool) -> Value {
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

fn build_artifacts(dir: &Path, kind: ArtifactKind, sign_key: Option<&Path>) -> Result<ArtifactSet> {
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
        module_install: out.join(format!("{prefix}-module-install.mender")),
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

fn artifact_name(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string()
}

/// Which server a step talks to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Which {
    Old,
    New,
}

/// A scenario in progress: its servers, its VM and disk, and what it measured.
pub struct Run<'a> {
    pub name: String,
    pub dir: PathBuf,
    env: &'a mut Env,
    transport: Transport,
    /// The public key written to `VERIFY_KEY` (the device config then has `ArtifactVerifyKey`).
    verify_key: Option<PathBuf>,
    old: Option<MockServer>,
    new: Option<MockServer>,
    disk: Option<Disk>,
    vm: Option<Vm>,
    vm_config: Option<VmConfig>,
    serial_number: String,
    device_old: Option<String>,
    device_new: Option<String>,
    timings: Timings,
    uploaded: Vec<(Which, String)>,
    started: Instant,
    /// The current boot was already restarted once after it hung.
    boot_retried: bool,
}

impl<'a> Run<'a> {
    fn new(name: &str, env: &'a mut Env) -> Result<Run<'a>> {
        let dir = env.out_dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(Run {
            name: name.to_string(),
            dir,
            env,
            transport: Transport::Http,
            verify_key: None,
            old: None,
            new: None,
            disk: None,
            vm: None,
            vm_config: None,
            serial_number: format!("qemu-e2e-{name}-{}", std::process::id()),
            device_old: None,
            device_new: None,
            timings: Timings::default(),
            uploaded: Vec::new(),
            started: Instant::now(),
            boot_retried: false,
        })
    }

    fn log(&self, message: &str) {
        note(
            &self.name,
            &format!("{:>6.1} s  {message}", self.started.elapsed().as_secs_f64()),
        );
    }

    fn server(&self, which: Which) -> Result<&MockServer> {
        match which {
            Which::Old => self.old.as_ref().context("old server not started"),
            Which::New => self.new.as_ref().context("new server not started"),
        }
    }

    fn device_id(&self, which: Which) -> Result<String> {
        match which {
            Which::Old => self
                .device_old
                .clone()
                .context("device not known on old yet"),
            Which::New => self
                .device_new
                .clone()
                .context("device not known on new yet"),
        }
    }

    /// Starts old (and new unless `new_down`) on loopback with the transport of this run.
    fn start_servers(&mut self, transport: Transport, new_down: bool) -> Result<()> {
        self.transport = transport;
        let tls = transport == Transport::Https;
        let bin = self.env.mock_binary.clone();
        self.old = Some(MockServer::start(
            &bin,
            &MockOptions {
                name: "old".into(),
                public_url: transport.url(OLD_IP),
                tls,
            },
            &self.dir,
        )?);
        let mut new = MockServer::start(
            &bin,
            &MockOptions {
                name: "new".into(),
                public_url: transport.url(NEW_IP),
                tls,
            },
            &self.dir,
        )?;
        if new_down {
            new.stop();
        }
        self.new = Some(new);
        Ok(())
    }

    /// The VM's disk: a copy of the image, with this run's config and optional extra edits.
    fn prepare_disk(
        &mut self,
        module_preinstalled: bool,
        extra: impl FnOnce(&mut Edits, &Path) -> Result<()>,
    ) -> Result<()> {
        if !self.env.image.has_module {
            bail!("the guest image was built without the server-migration module");
        }
        let disk = Disk::copy_from(&self.env.image, &self.dir)?;
        let mut edits = Edits::new();
        let scratch = self.dir.join("inject");
        std::fs::create_dir_all(&scratch)?;
        let conf = scratch.join("mender.conf");
        std::fs::write(&conf, serde_json::to_vec_pretty(&self.original_config())?)?;
        edits.write(&conf, MAIN_CONF, 0o644)?;
        if let Some(key) = &self.verify_key {
            edits.write(key, VERIFY_KEY, 0o644)?;
        }
        if self.transport == Transport::Https {
            // One `ServerCertificate` bundle holding both servers' own CAs, as a fleet moving
            // between two private-CA servers would carry.
            let mut bundle = Vec::new();
            let mut cas = Vec::new();
            for which in [Which::Old, Which::New] {
                let server = self.server(which)?;
                let ca = server
                    .ca_file
                    .as_ref()
                    .context("TLS server without CA file")?;
                let pem = std::fs::read(ca).with_context(|| ca.display().to_string())?;
                ensure!(
                    !cas.contains(&pem),
                    "old and new serve from the same CA ({}); the bundle would not test two CAs",
                    ca.display()
                );
                bundle.extend_from_slice(&pem);
                if !bundle.ends_with(b"\n") {
                    bundle.push(b'\n');
                }
                cas.push(pem);
            }
            let cert = scratch.join("server.crt");
            std::fs::write(&cert, bundle)?;
            edits.write(&cert, SERVER_CERT, 0o644)?;
        }
        // A key of its own per VM (the image's key would be shared by every VM booted from it).
        let key = scratch.join("device-key.pem");
        image::generate_device_key(&key)?;
        edits.write(&key, image::DEVICE_KEY_GUEST_PATH, 0o600)?;
        if !module_preinstalled {
            // The module-install artifact has to bring it.
            edits.remove(MODULE_GUEST_PATH)?;
        }
        extra(&mut edits, &scratch)?;
        disk.edit(&edits)?;
        let forwards = vec![
            Forward {
                guest_ip: OLD_IP.into(),
                guest_port: self.transport.guest_port(),
                host_port: self.server(Which::Old)?.port,
            },
            Forward {
                guest_ip: NEW_IP.into(),
                guest_port: self.transport.guest_port(),
                host_port: self.server(Which::New)?.port,
            },
        ];
        self.vm_config = Some(VmConfig::new(&self.name, &self.serial_number, forwards));
        self.disk = Some(disk);
        Ok(())
    }

    fn boot(&mut self) -> Result<()> {
        let disk = self.disk.as_ref().context("no disk")?;
        let config = self.vm_config.as_ref().context("no VM config")?;
        self.vm = Some(Vm::start(&self.env.image, disk, config, &self.dir)?);
        self.boot_retried = false;
        self.log(&format!(
            "QEMU started ({}; speed factor {:.1}{})",
            host::accel_args().join(" "),
            speed::factor(),
            if speed::measured() {
                ""
            } else {
                ", not measured yet"
            }
        ));
        Ok(())
    }

    /// The boot watchdog, run on every poll: a boot (first start or a reboot inside the guest)
    /// that has not started the client within its budget is cut and started once more; a second
    /// hang fails with the console's last lines.
    /// Returns whether it restarted the guest.
    fn watch_boot(&mut self) -> Result<bool> {
        let limit = budget(speed::QUIET_KERNEL_TO_CLIENT_SECS);
        let Some(vm) = self.vm.as_mut() else {
            return Ok(false);
        };
        match vm.boot_state() {
            BootState::Booted => {
                self.boot_retried = false;
                Ok(false)
            }
            BootState::Booting(for_how_long) if for_how_long > limit => {
                let tail = vm.serial_tail(25);
                if self.boot_retried {
                    bail!(
                        "the guest's boot hung again after a restart: no client start within {} \
                         (speed factor {:.1}); serial console's last lines:\n{tail}",
                        secs(limit),
                        speed::factor()
                    );
                }
                self.log(&format!(
                    "boot hung: the client did not start within {}; cutting power and booting \
                     once more. Serial console's last lines:\n{tail}",
                    secs(limit)
                ));
                self.vm.take().context("no VM")?.power_cut();
                self.boot()?;
                self.boot_retried = true;
                Ok(true)
            }
            BootState::Booting(_) => Ok(false),
        }
    }

    /// Polls `check` every second until it yields a value; bounded, and fails at once if QEMU died.
    fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&mut Self) -> Result<Option<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let mut deadline = started + timeout;
        loop {
            if let Some(v) = check(self)? {
                self.timings.waited += started.elapsed();
                return Ok(v);
            }
            if let Some(vm) = self.vm.as_mut() {
                vm.check_alive()?;
            }
            if self.watch_boot()? {
                // The restarted guest gets the whole budget again.
                deadline = Instant::now() + timeout;
            }
            if Instant::now() > deadline {
                self.timings.waited += started.elapsed();
                bail!("timed out after {} waiting for {what}", secs(timeout));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// First boot on the original config: the device shows up pending on old, is accepted, and
    /// then talks to old (inventory, update checks).
    fn accept_on_old(&mut self) -> Result<()> {
        let vm_started = now_epoch()
            - self
                .vm
                .as_ref()
                .map_or(0.0, |v| v.started.elapsed().as_secs_f64());
        let serial = self.serial_number.clone();
        let device = self.wait_for(
            "the device's first auth request at old",
            budget(60),
            |run| run.server(Which::Old)?.device_by_serial(&serial),
        )?;
        let first_auth = self
            .server(Which::Old)?
            .device_requests()?
            .iter()
            .find(|r| r.is_auth())
            .map(|r| r.epoch())
            .unwrap_or_else(now_epoch);
        let boot_took = Duration::from_secs_f64((first_auth - vm_started).max(0.0));
        self.timings.booting += boot_took;
        let factor = speed::observe_boot(boot_took);
        let id = device["id"]
            .as_str()
            .context("device without id")?
            .to_string();
        let auth_id = device["auth_sets"][0]["id"]
            .as_str()
            .context("device without auth set")?
            .to_string();
        ensure!(
            device["status"] == "pending",
            "new device on old is {} instead of pending",
            device["status"]
        );
        self.log(&format!(
            "device {id} pending on old after {:.1} s of boot (speed factor now {factor:.1}); accepting",
            first_auth - vm_started
        ));
        self.server(Which::Old)?
            .set_auth_status(&id, &auth_id, "accepted")?;
        self.device_old = Some(id.clone());
        let accepted_at = now_epoch();
        self.wait_for(
            "inventory from the accepted device at old",
            budget(40),
            |run| {
                Ok(run
                    .server(Which::Old)?
                    .device_requests()?
                    .iter()
                    .any(|r| {
                        r.path.ends_with("/inventory/device/attributes")
                            && r.status.is_some_and(|s| s < 300)
                            && r.epoch() >= accepted_at - 1.0
                    })
                    .then_some(()))
            },
        )?;
        self.log("device accepted on old and sent its inventory");
        Ok(())
    }

    /// Uploads (once per server) and deploys an artifact to this device; waits for a final status.
    fn deploy(&mut self, which: Which, artifact: &Path) -> Result<Value> {
        let name = artifact_name(artifact);
        if !self.uploaded.contains(&(which, name.clone())) {
            self.server(which)?.upload_artifact(artifact)?;
            self.uploaded.push((which, name.clone()));
        }
        let device = self.device_id(which)?;
        let deployment = self.server(which)?.create_deployment(
            &format!("{name}-{}", self.uploaded.len()),
            &name,
            &device,
        )?;
        self.log(&format!(
            "deployed {name} from {which:?} (deployment {deployment})"
        ));
        let result = self.wait_for(
            &format!("deployment of {name} from {which:?} to finish"),
            budget(150),
            |run| {
                let dd = run.server(which)?.deployment_device(&deployment, &device)?;
                Ok(dd.filter(|d| d["status"].as_str().is_some_and(|s| FINAL.contains(&s))))
            },
        )?;
        self.account_reboots(&result);
        let statuses: Vec<&str> = result["history"]
            .as_array()
            .map(|h| h.iter().filter_map(|r| r["status"].as_str()).collect())
            .unwrap_or_default();
        self.log(&format!(
            "{name}: {} (reports: {})",
            result["status"].as_str().unwrap_or("?"),
            statuses.join(" > ")
        ));
        let mut result = result;
        result["deployment_id"] = deployment.into();
        Ok(result)
    }

    /// Counts `rebooting` → next report as booting time.
    fn account_reboots(&mut self, device_deployment: &Value) {
        let Some(history) = device_deployment["history"].as_array() else {
            return;
        };
        for pair in history.windows(2) {
            if pair[0]["status"] == "rebooting" {
                let t0 = pair[0]["time"].as_str().and_then(parse_rfc3339);
                let t1 = pair[1]["time"].as_str().and_then(parse_rfc3339);
                if let (Some(t0), Some(t1)) = (t0, t1) {
                    self.timings.booting += Duration::from_secs_f64((t1 - t0).max(0.0));
                }
            }
        }
    }

    fn expect_status(&self, result: &Value, expected: &str) -> Result<()> {
        let got = result["status"].as_str().unwrap_or("?");
        if got != expected {
            let log = match (result["deployment_id"].as_str(), self.device_old.as_ref()) {
                (Some(dep), Some(dev)) => self
                    .server(Which::Old)
                    .and_then(|s| s.deployment_log(dep, dev))
                    .unwrap_or_default(),
                _ => String::new(),
            };
            bail!(
                "deployment ended `{got}`, expected `{expected}`; history {}; device log: {log}",
                result["history"]
            );
        }
        Ok(())
    }

    /// With `--restart service` the module restarts the client some seconds after the
    /// deployment's `success`; a restarted 3.4 daemon has no token and authenticates again, so
    /// a fresh auth request at `which` after the report is the sign it now runs the new config.
    fn wait_service_restart(&mut self, which: Which, result: &Value) -> Result<()> {
        let success_at = result["history"]
            .as_array()
            .and_then(|h| h.last())
            .and_then(|x| x["time"].as_str())
            .and_then(parse_rfc3339)
            .context("deployment without report times")?;
        let restarted = self.wait_for(
            "the client restart the module scheduled",
            budget(60),
            |run| {
                Ok(run
                    .server(which)?
                    .device_requests()?
                    .iter()
                    .find(|r| r.is_auth() && r.status == Some(200) && r.epoch() > success_at + 5.0)
                    .map(|r| r.epoch()))
            },
        )?;
        self.log(&format!(
            "client restarted {:.1} s after reporting success",
            restarted - success_at
        ));
        Ok(())
    }

    /// Preauthorizes the device on new with the identity and key from old's auth set, then
    /// rejects it on old; waits until it authenticated on new and made an API call there.
    fn switch_to_new(&mut self) -> Result<f64> {
        let old = self.server(Which::Old)?;
        let id = self.device_id(Which::Old)?;
        let device = old
            .devices()?
            .into_iter()
            .find(|d| d["id"].as_str() == Some(&id))
            .context("device vanished from old")?;
        let auth = device["auth_sets"]
            .as_array()
            .and_then(|sets| sets.iter().find(|a| a["status"] == "accepted"))
            .context("device has no accepted auth set on old")?
            .clone();
        let new = self.server(Which::New)?;
        new.preauthorize(
            &auth["identity_data"],
            auth["pubkey"].as_str().context("auth set without pubkey")?,
        )?;
        let rejected_at = now_epoch();
        old.set_auth_status(
            &id,
            auth["id"].as_str().context("auth set without id")?,
            "rejected",
        )?;
        self.log("preauthorized on new, rejected on old");
        self.wait_for(
            "the device to authenticate on new and call its API",
            budget(60),
            |run| {
                let reqs = run.server(Which::New)?.device_requests()?;
                let authed = reqs.iter().any(|r| {
                    r.is_auth() && r.status == Some(200) && r.epoch() >= rejected_at - 1.0
                });
                let api = reqs.iter().any(|r| {
                    !r.is_auth()
                        && r.status.is_some_and(|s| s < 300)
                        && r.epoch() >= rejected_at - 1.0
                });
                Ok((authed && api).then_some(()))
            },
        )?;
        let serial = self.serial_number.clone();
        let on_new = self
            .server(Which::New)?
            .device_by_serial(&serial)?
            .context("device not listed on new")?;
        ensure!(
            on_new["status"] == "accepted",
            "device on new is {} instead of accepted",
            on_new["status"]
        );
        self.device_new = Some(
            on_new["id"]
                .as_str()
                .context("device without id")?
                .to_string(),
        );
        // The failover shows in the logs: old answered 401 after the reject, new 200 after that.
        let old_reqs = self.server(Which::Old)?.device_requests()?;
        ensure!(
            old_reqs
                .iter()
                .any(|r| r.status == Some(401) && r.epoch() >= rejected_at - 1.0),
            "old never answered 401 after the reject; the failover was not driven by the reject"
        );
        self.log("device failed over to new");
        Ok(rejected_at)
    }

    /// Clean guest shutdown (QMP powerdown, bounded, then kill).
    fn stop_vm(&mut self) -> Result<()> {
        if let Some(vm) = self.vm.take() {
            let clean = vm.shutdown(budget(20))?;
            self.log(if clean {
                "guest powered off"
            } else {
                "guest did not power off in time; QEMU killed"
            });
        }
        Ok(())
    }

    fn read_conf(&self, path: &str) -> Result<Option<Value>> {
        let disk = self.disk.as_ref().context("no disk")?;
        match disk.read(path)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{path} in the guest is not valid JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })?)),
        }
    }

    /// The config the client would use, as (server list, has fallback server keys).
    fn config_servers(&self) -> Result<Vec<String>> {
        let main = self
            .read_conf(MAIN_CONF)?
            .context("/etc/mender/mender.conf missing in the guest")?;
        let fallback = self.read_conf(FALLBACK_CONF)?;
        if let Some(fb) = &fallback {
            ensure!(
                fb.get("ServerURL").is_none() && fb.get("Servers").is_none()
                    || (main.get("ServerURL").is_none() && main.get("Servers").is_none()),
                "server keys in both {MAIN_CONF} and {FALLBACK_CONF}: {main} / {fb}"
            );
        }
        ensure!(
            !(main.get("Servers").is_some() && main.get("ServerURL").is_some_and(|u| u != "")),
            "{MAIN_CONF} has both Servers and ServerURL: {main}"
        );
        if let Some(list) = main.get("Servers").and_then(|s| s.as_array()) {
            return Ok(list
                .iter()
                .filter_map(|s| s["ServerURL"].as_str().map(str::to_string))
                .collect());
        }
        Ok(main
            .get("ServerURL")
            .and_then(|u| u.as_str())
            .map(|u| vec![u.to_string()])
            .unwrap_or_default())
    }

    fn expect_servers(&self, expected: &[String], context: &str) -> Result<()> {
        let got = self.config_servers()?;
        ensure!(
            got == expected,
            "{context}: the device's config lists {got:?}, expected {expected:?}"
        );
        let main = self.read_conf(MAIN_CONF)?.unwrap_or_default();
        let original = self.original_config();
        for key in [
            "ArtifactVerifyKey",
            "UpdatePollIntervalSeconds",
            "InventoryPollIntervalSeconds",
            "RetryPollIntervalSeconds",
            "ServerCertificate",
        ] {
            ensure!(
                main.get(key) == original.get(key),
                "{context}: {key} changed: {main}"
            );
        }
        Ok(())
    }

    /// The client process ran after the last boot: the journal of the last boot shows it
    /// started and no fatal config error.
    fn expect_client_healthy(&self) -> Result<()> {
        let disk = self.disk.as_ref().context("no disk")?;
        let journal = disk.journal("mender-client.service", &self.dir.join("journal"))?;
        std::fs::write(self.dir.join("mender-client.journal"), &journal)?;
        let last_boot = journal.rsplit("-- Boot ").next().unwrap_or(&journal);
        ensure!(
            last_boot.contains("Started mender-client.service")
                || last_boot.contains("Started mender-client"),
            "mender-client did not start on the last boot (journal in {})",
            self.dir.display()
        );
        for fatal in [
            "mender-client.service: Main process exited, code=exited",
            "mender-client.service: Failed with result",
        ] {
            ensure!(
                !last_boot.contains(fatal),
                "mender-client died on the last boot: `{fatal}` (journal in {})",
                self.dir.display()
            );
        }
        Ok(())
    }

    /// The client's journal (all boots) contains every one of `needles`.
    fn expect_journal(&self, needles: &[&str], why: &str) -> Result<()> {
        let disk = self.disk.as_ref().context("no disk")?;
        let journal = disk.journal("mender-client.service", &self.dir.join("journal"))?;
        for needle in needles {
            ensure!(
                journal.contains(needle),
                "{why}: the mender-client journal lacks `{needle}` (journal in {})",
                self.dir.display()
            );
        }
        Ok(())
    }

    fn original_config(&self) -> Value {
        original_config(self.transport, self.verify_key.is_some())
    }

    fn old_url(&self) -> String {
        self.transport.url(OLD_IP)
    }
    fn new_url(&self) -> String {
        self.transport.url(NEW_IP)
    }

    /// Prints what a person needs to see why a scenario failed.
    fn report_failure(&mut self) {
        if let Some(vm) = self.vm.take() {
            eprintln!(
                "----- {}: serial console (last 60 lines) -----\n{}",
                self.name,
                tail_file(&vm.serial_log, 60)
            );
            vm.power_cut();
        } else if self.dir.join("serial.log").exists() {
            eprintln!(
                "----- {}: serial console (last 60 lines) -----\n{}",
                self.name,
                tail_file(&self.dir.join("serial.log"), 60)
            );
        }
        for server in [self.old.as_ref(), self.new.as_ref()].into_iter().flatten() {
            eprintln!(
                "----- {}: {} request log (last 40) -----\n{}",
                self.name,
                server.name,
                tail_file(&server.request_log, 40)
            );
            eprintln!(
                "----- {}: {} server stderr (last 10) -----\n{}",
                self.name,
                server.name,
                tail_file(&server.stderr_log, 10)
            );
        }
        if let Some(disk) = self.disk.as_ref() {
            if let Ok(journal) = disk.journal("mender-client.service", &self.dir.join("journal")) {
                let _ = std::fs::write(self.dir.join("mender-client.journal"), &journal);
                let lines: Vec<&str> = journal.lines().collect();
                eprintln!(
                    "----- {}: mender-client journal (last 40) -----\n{}",
                    self.name,
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
        }
        eprintln!(
            "----- {}: logs kept in {} -----",
            self.name,
            self.dir.display()
        );
    }
}

/// Runs one scenario; returns its timings. Logs are kept on failure (and with `keep_logs`).
pub fn run_one(scenario: &Scenario, env: &mut Env) -> Result<Timings> {
    let keep_logs = env.keep_logs;
    for kind in scenario.needs {
        env.artifacts_of(*kind)?;
    }
    let build_before = env.artifact_build;
    let mut run = Run::new(scenario.name, env)?;
    let started = Instant::now();
    let result = (scenario.run)(&mut run);
    let mut timings = run.timings.clone();
    timings.wall = started
        .elapsed()
        .saturating_sub(run.env.artifact_build - build_before);
    timings.poll_wait = timings.waited.saturating_sub(timings.booting);
    match result {
        Ok(()) => {
            run.stop_vm()?;
            let dir = run.dir.clone();
            drop(run);
            let _ = std::fs::remove_file(dir.join("disk.img"));
            if !keep_logs {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Ok(timings)
        }
        Err(err) => {
            run.report_failure();
            Err(err.context(format!("scenario `{}` failed", scenario.name)))
        }
    }
}

// ------------------------------------------------------------------------------- scenarios

fn boot(run: &mut Run) -> Result<()> {
    run.start_servers(Transport::Http, false)?;
    run.prepare_disk(true, |_, _| Ok(()))?;
    run.boot()?;
    run.accept_on_old()?;
    let id = run.device_id(Which::Old)?;
    let inv = run.wait_for(
        "inventory with device_type and artifact_name",
        budget(30),
        |run| {
            let inv = run.server(Which::Old)?.inventory(&id)?;
            let attr = |n: &str| {
                inv["attributes"].as_array().and_then(|a| {
                    a.iter()
                        .find(|x| x["name"] == n)
                        .map(|x| x["value"].clone())
                })
            };
            Ok((attr("device_type").is_some() && attr("artifact_name").is_some()).then_some(inv))
        },
    )?;
    let attr = |n: &str| {
        inv["attributes"].as_array().and_then(|a| {
            a.iter()
                .find(|x| x["name"] == n)
                .map(|x| x["value"].clone())
        })
    };
    ensure!(
        attr("device_type") == Some(DEVICE_TYPE.into()),
        "inventory device_type is {:?}",
        attr("device_type")
    );
    ensure!(
        attr("artifact_name") == Some(BASE_ARTIFACT.into()),
        "inventory artifact_name is {:?}",
        attr("artifact_name")
    );
    ensure!(
        attr("serial") == Some(run.serial_number.clone().into()),
        "identity serial is {:?}",
        attr("serial")
    );
    // The client used the key provisioned on the disk (it generates none under emulation).
    let provisioned = crate::host::run(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(run.dir.join("inject/device-key.pem")),
    )?;
    let device = run
        .server(Which::Old)?
        .device_by_serial(&run.serial_number)?
        .context("device gone")?;
    let sent = device["auth_sets"][0]["pubkey"]
        .as_str()
        .unwrap_or_default();
    let squash = |s: &str| s.split_whitespace().collect::<String>();
    ensure!(
        squash(sent) == squash(&provisioned),
        "the device authenticated with a key other than the provisioned one"
    );
    // The guest can reach only the two forwarded addresses: nothing arrived at new.
    ensure!(
        run.server(Which::New)?.requests()?.is_empty(),
        "the device contacted new although its config lists only old"
    );
    run.stop_vm()?;
    run.expect_servers(&[run.old_url()], "after boot")?;
    run.expect_client_healthy()
}

/// The five steps of the tenant migration, automated. With `unsigned_stage1` (a device that
/// checks signatures) that artifact is deployed first and must be refused.
fn full_migration(run: &mut Run, kind: ArtifactKind, unsigned_stage1: Option<&Path>) -> Result<()> {
    let (mode, transport, verify) = kind;
    if verify.device_verifies() {
        run.verify_key = Some(run.env.sign_key()?.public.clone());
    }
    let set = run.env.artifacts_of(kind)?;
    let (module_install, stage1, stage2) = (
        set.module_install.clone(),
        set.stage1.clone(),
        set.stage2.clone(),
    );
    run.start_servers(transport, false)?;
    run.prepare_disk(false, |_, _| Ok(()))?;
    let verify_key_before = run.disk.as_ref().context("no disk")?.read(VERIFY_KEY)?;
    ensure!(
        verify_key_before.is_some() == verify.device_verifies(),
        "{VERIFY_KEY} on the disk does not match the scenario's signing setup"
    );
    run.boot()?;
    run.accept_on_old()?;

    // Step 2: module, then the dual config, both from old.
    let r = run.deploy(Which::Old, &module_install)?;
    run.expect_status(&r, "success")?;
    if let Some(unsigned) = unsigned_stage1 {
        refuse_unsigned(run, unsigned)?;
    }
    let r = run.deploy(Which::Old, &stage1)?;
    run.expect_status(&r, "success")?;
    if mode == Mode::PatchServiceRestart {
        ensure!(
            r["history"]
                .as_array()
                .is_some_and(|h| !h.iter().any(|x| x["status"] == "rebooting")),
            "a service-restart stage rebooted: {}",
            r["history"]
        );
        run.wait_service_restart(Which::Old, &r)?;
    }
    let dev = run.device_id(Which::Old)?;
    let inv = run.wait_for(
        "inventory on old reporting the dual stage",
        budget(30),
        |run| {
            let inv = run.server(Which::Old)?.inventory(&dev)?;
            let dual = inv["attributes"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["name"] == "server_migration_stage" && x["value"] == "dual")
            });
            Ok(dual.then_some(inv))
        },
    )?;
    let servers_attr = inv["attributes"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == "server_migration_servers"))
        .map(|x| x["value"].clone())
        .unwrap_or_default();
    ensure!(
        servers_attr == serde_json::json!([run.old_url(), run.new_url()]),
        "after stage 1 the device reports servers {servers_attr}, expected [old, new]"
    );
    run.log(&format!(
        "device runs stage 1: inventory server_migration_servers = {servers_attr}"
    ));
    ensure!(
        run.server(Which::New)?.device_requests()?.is_empty(),
        "the device contacted new while old still accepted it (Servers[0] must win)"
    );

    // Steps 3 + 4: preauthorize on new, reject on old; the device fails over.
    let rejected_at = run.switch_to_new()?;

    // Step 5: the new-only config, deployed from new.
    let r = run.deploy(Which::New, &stage2)?;
    run.expect_status(&r, "success")?;
    if mode == Mode::PatchServiceRestart {
        run.wait_service_restart(Which::New, &r)?;
    }
    let stage2_name = artifact_name(&stage2);
    let reports = r["history"].as_array().cloned().unwrap_or_default();
    let cutoff = reports
        .iter()
        .rev()
        .find(|x| x["status"] == "rebooting")
        .or_else(|| reports.last())
        .and_then(|x| x["time"].as_str())
        .and_then(parse_rfc3339)
        .context("stage-2 deployment without report times")?;
    let dev_new = run.device_id(Which::New)?;
    let inv = run.wait_for(
        "new's inventory showing the stage-2 artifact",
        budget(30),
        |run| {
            let inv = run.server(Which::New)?.inventory(&dev_new)?;
            Ok(inv["attributes"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["name"] == "artifact_name"))
                .filter(|x| x["value"] == stage2_name.as_str())
                .map(|_| inv.clone()))
        },
    )?;
    let _ = inv;
    // A few more poll rounds on the new-only config, then: old heard nothing since the switch.
    let quiet_from = now_epoch();
    run.wait_for("three more update checks at new", budget(20), |run| {
        Ok((run
            .server(Which::New)?
            .device_requests()?
            .iter()
            .filter(|r| r.path.contains("/deployments/next") && r.epoch() > quiet_from)
            .count()
            >= 3)
            .then_some(()))
    })?;
    let late: Vec<String> = run
        .server(Which::Old)?
        .device_requests()?
        .iter()
        .filter(|r| r.epoch() > cutoff)
        .map(|r| format!("{} {} {} -> {:?}", r.time, r.method, r.path, r.status))
        .collect();
    ensure!(
        late.is_empty(),
        "old received requests after the device switched to the new-only config: {late:?}"
    );
    // Between the reject and stage 2 the client still walks [old, new] from the top, so old
    // sees auth requests, but it must never have served the device again.
    let served: Vec<String> = run
        .server(Which::Old)?
        .device_requests()?
        .iter()
        .filter(|r| r.epoch() > rejected_at + 1.0 && r.status.is_some_and(|s| s < 300))
        .map(|r| format!("{} {} {} -> {:?}", r.time, r.method, r.path, r.status))
        .collect();
    ensure!(
        served.is_empty(),
        "old served the device after it was rejected: {served:?}"
    );
    run.stop_vm()?;
    run.expect_servers(&[run.new_url()], "after stage 2")?;
    let main = run.read_conf(MAIN_CONF)?.unwrap_or_default();
    ensure!(
        main.get("Servers").is_none(),
        "stage 2 left a Servers list: {main}"
    );
    if verify.device_verifies() {
        ensure!(
            main.get("ArtifactVerifyKey") == Some(&Value::from(VERIFY_KEY)),
            "stage 2 lost ArtifactVerifyKey: {main}"
        );
        ensure!(
            run.disk.as_ref().context("no disk")?.read(VERIFY_KEY)? == verify_key_before,
            "the migration changed {VERIFY_KEY}"
        );
        let disk = run.disk.as_ref().context("no disk")?;
        let journal = disk.journal("mender-client.service", &run.dir.join("journal"))?;
        let verified = journal
            .matches("authenticated digital signature of artifact")
            .count();
        ensure!(
            verified >= 3,
            "the client verified the signature of {verified} artifact(s), expected the module \
             installer and both stages"
        );
        run.log(&format!(
            "ArtifactVerifyKey and its key file unchanged after stage 2; {verified} signatures verified"
        ));
    }
    if mode == Mode::PatchServiceRestart {
        let disk = run.disk.as_ref().context("no disk")?;
        let journal = disk.journal("mender-client.service", &run.dir.join("journal"))?;
        let starts = journal.matches("Started mender-client.service").count();
        ensure!(starts >= 3, "expected the client started at boot and restarted after each stage, saw {starts} start(s)");
        ensure!(
            !journal.contains("-- Boot "),
            "a service-restart migration rebooted the guest"
        );
    }
    run.expect_client_healthy()
}

fn migration_patch(run: &mut Run) -> Result<()> {
    full_migration(run, (Mode::Patch, Transport::Http, Verify::Off), None)
}
fn migration_replace(run: &mut Run) -> Result<()> {
    full_migration(run, (Mode::Replace, Transport::Http, Verify::Off), None)
}
fn migration_service_restart(run: &mut Run) -> Result<()> {
    full_migration(
        run,
        (Mode::PatchServiceRestart, Transport::Http, Verify::Off),
        None,
    )
}
fn migration_https(run: &mut Run) -> Result<()> {
    full_migration(run, (Mode::Patch, Transport::Https, Verify::Off), None)
}
fn migration_signed(run: &mut Run) -> Result<()> {
    let unsigned = run
        .env
        .artifacts_of((Mode::Patch, Transport::Http, Verify::Unsigned))?
        .stage1
        .clone();
    full_migration(
        run,
        (Mode::Patch, Transport::Http, Verify::Signed),
        Some(&unsigned),
    )
}

/// On a device with `ArtifactVerifyKey`: an unsigned stage 1 ends `failure` for the client's
/// signature check (no reboot, nothing installed), the config stays byte-for-byte as it was
/// and the client keeps polling old. Checks the disk with the guest powered off, then boots
/// it again for the rest of the migration.
fn refuse_unsigned(run: &mut Run, unsigned: &Path) -> Result<()> {
    let conf_before = std::fs::read(run.dir.join("inject/mender.conf"))?;
    let disk = run.disk.as_ref().context("no disk")?;
    let fallback_before = disk.read(FALLBACK_CONF)?;
    let r = run.deploy(Which::Old, unsigned)?;
    run.expect_status(&r, "failure")?;
    let statuses: Vec<&str> = r["history"]
        .as_array()
        .map(|h| h.iter().filter_map(|x| x["status"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        !statuses
            .iter()
            .any(|s| *s == "rebooting" || *s == "installing"),
        "the unsigned artifact got past the signature check: {statuses:?}"
    );
    let deployment = r["deployment_id"].as_str().context("no deployment id")?;
    let device = run.device_id(Which::Old)?;
    // The client uploads the deployment log after its `failure` report.
    let log = run.wait_for(
        "the deployment log of the refused unsigned stage 1",
        budget(20),
        |run| {
            Ok(run
                .server(Which::Old)?
                .deployment_log(deployment, &device)
                .ok()
                .filter(|log| !log.trim().is_empty()))
        },
    )?;
    ensure!(
        log.contains(UNSIGNED_REFUSAL),
        "the deployment log of the unsigned stage 1 lacks `{UNSIGNED_REFUSAL}`: {log}"
    );
    let t = now_epoch();
    run.wait_for(
        "the client to keep polling old after refusing the unsigned artifact",
        budget(20),
        |run| {
            Ok((run
                .server(Which::Old)?
                .device_requests()?
                .iter()
                .filter(|r| {
                    r.path.contains("/deployments/next")
                        && r.status.is_some_and(|s| s < 300)
                        && r.epoch() > t
                })
                .count()
                >= 2)
                .then_some(()))
        },
    )?;
    ensure!(
        run.server(Which::New)?.requests()?.is_empty(),
        "the device contacted new after the refused unsigned stage 1"
    );
    run.stop_vm()?;
    let disk = run.disk.as_ref().context("no disk")?;
    let conf_after = disk.read(MAIN_CONF)?.context("main config missing")?;
    ensure!(
        conf_after == conf_before,
        "the refused unsigned stage 1 changed {MAIN_CONF}: {}",
        String::from_utf8_lossy(&conf_after)
    );
    ensure!(
        disk.read(FALLBACK_CONF)? == fallback_before,
        "the refused unsigned stage 1 changed {FALLBACK_CONF}"
    );
    run.expect_journal(
        &[UNSIGNED_REFUSAL],
        "the client must name the missing signature",
    )?;
    run.log(&format!(
        "unsigned stage 1 refused ({UNSIGNED_REFUSAL}); config byte-identical; booting again"
    ));
    run.boot()?;
    let restarted = now_epoch();
    let first = run.wait_for(
        "an update check at old after the restart",
        budget(60),
        |run| {
            Ok(run
                .server(Which::Old)?
                .device_requests()?
                .iter()
                .find(|r| {
                    r.path.contains("/deployments/next")
                        && r.status.is_some_and(|s| s < 300)
                        && r.epoch() > restarted
                })
                .map(|r| r.epoch()))
        },
    )?;
    run.timings.booting += Duration::from_secs_f64((first - restarted).max(0.0));
    Ok(())
}

fn new_down_stage1(run: &mut Run) -> Result<()> {
    let set = run.env.artifacts(Mode::Patch, Transport::Http)?;
    let (stage1, stage2) = (set.stage1.clone(), set.stage2.clone());
    run.start_servers(Transport::Http, true)?;
    run.prepare_disk(true, |_, _| Ok(()))?;
    run.boot()?;
    run.accept_on_old()?;
    let r = run.deploy(Which::Old, &stage1)?;
    let status = r["status"].as_str().unwrap_or("?").to_string();
    ensure!(
        status == "success" || status == "failure",
        "stage 1 with new down ended `{status}`"
    );
    // The device keeps working with old: more update checks answered there.
    let t = now_epoch();
    run.wait_for("update checks at old after stage 1", budget(20), |run| {
        Ok((run
            .server(Which::Old)?
            .device_requests()?
            .iter()
            .filter(|r| {
                r.path.contains("/deployments/next")
                    && r.status.is_some_and(|s| s < 300)
                    && r.epoch() > t
            })
            .count()
            >= 2)
            .then_some(()))
    })?;
    run.log(&format!(
        "stage 1 ended `{status}` with new down; device still polling old"
    ));
    // Later the new server comes up and the migration continues.
    run.new.as_mut().context("no new server")?.restart()?;
    if status == "failure" {
        let r = run.deploy(Which::Old, &stage1)?;
        run.expect_status(&r, "success")?;
    }
    run.switch_to_new()?;
    let r = run.deploy(Which::New, &stage2)?;
    run.expect_status(&r, "success")?;
    run.stop_vm()?;
    run.expect_servers(&[run.new_url()], "after continuing the migration")?;
    run.expect_client_healthy()
}

fn invalid_result(run: &mut Run) -> Result<()> {
    let set = run.env.artifacts(Mode::Replace, Transport::Http)?;
    let stage1 = set.stage1.clone();
    run.start_servers(Transport::Http, false)?;
    let fallback = serde_json::json!({ "ServerURL": run.old_url() });
    run.prepare_disk(true, |edits, scratch| {
        let f = scratch.join("fallback.conf");
        std::fs::write(&f, serde_json::to_vec_pretty(&fallback)?)?;
        edits.write(&f, FALLBACK_CONF, 0o600)?;
        Ok(())
    })?;
    let main_before = std::fs::read(run.dir.join("inject/mender.conf"))?;
    run.boot()?;
    run.accept_on_old()?;
    let r = run.deploy(Which::Old, &stage1)?;
    run.expect_status(&r, "failure")?;
    let statuses: Vec<String> = r["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|x| x["status"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        !statuses.iter().any(|s| s == "rebooting"),
        "the refused stage rebooted the device: {statuses:?}"
    );
    let t = now_epoch();
    run.wait_for(
        "the client to keep polling old after the refusal",
        budget(20),
        |run| {
            Ok((run
                .server(Which::Old)?
                .device_requests()?
                .iter()
                .filter(|r| {
                    r.path.contains("/deployments/next")
                        && r.status.is_some_and(|s| s < 300)
                        && r.epoch() > t
                })
                .count()
                >= 2)
                .then_some(()))
        },
    )?;
    run.stop_vm()?;
    let disk = run.disk.as_ref().context("no disk")?;
    let main_after = disk.read(MAIN_CONF)?.context("main config missing")?;
    ensure!(
        serde_json::from_slice::<Value>(&main_after)?
            == serde_json::from_slice::<Value>(&main_before)?,
        "the refused stage changed {MAIN_CONF}: {}",
        String::from_utf8_lossy(&main_after)
    );
    ensure!(
        run.read_conf(FALLBACK_CONF)? == Some(fallback),
        "the refused stage changed {FALLBACK_CONF}"
    );
    run.expect_journal(
        &["server-migration: error: `Servers`", "(in /var/lib/mender/mender.conf)", "[ArtifactRollback]"],
        "the module must refuse in ArtifactInstall naming the conflicting files, and the client roll back",
    )?;
    run.expect_client_healthy()
}

fn stage2_first(run: &mut Run) -> Result<()> {
    let set = run.env.artifacts(Mode::Patch, Transport::Http)?;
    let stage2 = set.stage2.clone();
    run.start_servers(Transport::Http, false)?;
    run.prepare_disk(true, |_, _| Ok(()))?;
    run.boot()?;
    run.accept_on_old()?;
    let deployed_at = now_epoch();
    let r = run.deploy(Which::Old, &stage2)?;
    // Either check refuses it: the server's (artifact depends vs the provides the device sends
    // with `next`: `noartifact`, nothing downloaded) or the client's own (`failure`).
    let refused_by_server = r["status"] == "noartifact";
    if !refused_by_server {
        run.expect_status(&r, "failure")?;
    }
    let statuses: Vec<String> = r["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter_map(|x| x["status"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        !statuses.iter().any(|s| s == "rebooting"),
        "stage 2 before stage 1 rebooted the device: {statuses:?}"
    );
    let t = now_epoch();
    run.wait_for("the client to keep polling old", budget(20), |run| {
        Ok((run
            .server(Which::Old)?
            .device_requests()?
            .iter()
            .filter(|r| {
                r.path.contains("/deployments/next")
                    && r.status.is_some_and(|s| s < 300)
                    && r.epoch() > t
            })
            .count()
            >= 2)
            .then_some(()))
    })?;
    ensure!(
        run.server(Which::New)?.requests()?.is_empty(),
        "the device contacted new"
    );
    run.stop_vm()?;
    run.expect_servers(&[run.old_url()], "after the refused stage 2")?;
    if refused_by_server {
        let downloads = run
            .server(Which::Old)?
            .device_requests()?
            .into_iter()
            .filter(|r| r.path.starts_with("/download/") && r.epoch() >= deployed_at)
            .count();
        ensure!(
            downloads == 0,
            "the server answered noartifact but the device downloaded {downloads} time(s)"
        );
        run.log("stage 2 refused by the server's depends check (noartifact)");
    } else {
        run.expect_journal(
            &["Artifact dependency \"server-migration.stage\" not satisfied"],
            "the client itself must refuse stage 2 on its depends",
        )?;
        run.log("stage 2 refused by the client's depends check");
    }
    run.expect_client_healthy()
}

/// Marker the wrapped module prints on the console once ArtifactInstall has done its work.
const HOLD_MARKER: &str = "qemu-e2e: ArtifactInstall done, holding for power cut";

fn power_cut(run: &mut Run) -> Result<()> {
    power_cut_in(run, 1)
}

fn power_cut_stage2(run: &mut Run) -> Result<()> {
    power_cut_in(run, 2)
}

/// Kills QEMU while the given stage's ArtifactInstall is in progress, boots again, and checks
/// that the deployment ends, the config is exactly the before- or the after-state of that stage
/// (matching the reported result) and the client polls the right server again.
fn power_cut_in(run: &mut Run, stage: u8) -> Result<()> {
    let set = run.env.artifacts(Mode::Patch, Transport::Http)?;
    let (stage1, stage2) = (set.stage1.clone(), set.stage2.clone());
    let target = if stage == 1 {
        stage1.clone()
    } else {
        stage2.clone()
    };
    let held = artifact_name(&target);
    run.start_servers(Transport::Http, false)?;
    // The real module runs; for the chosen artifact the wrapper then holds ArtifactInstall open
    // (the v3 file tree names the artifact in header/artifact_name), so the power cut lands after
    // the module changed the config but before the client recorded the install as done.
    let wrapper = format!(
        "#!/bin/sh\n/usr/share/mender/server-migration.real \"$@\"\nrc=$?\n\
         if [ \"$1\" = ArtifactInstall ] && grep -qx '{held}' \"$2/header/artifact_name\"; then\n    \
         echo \"{HOLD_MARKER} (rc=$rc)\" > /dev/ttyS0\n    sleep 300\nfi\nexit $rc\n"
    );
    let binary = crate::host::target_dir().join("device/server-migration");
    run.prepare_disk(true, |edits, scratch| {
        let w = scratch.join("wrapper.sh");
        std::fs::write(&w, wrapper)?;
        edits.write(&binary, "/usr/share/mender/server-migration.real", 0o755)?;
        edits.write(&w, MODULE_GUEST_PATH, 0o755)?;
        Ok(())
    })?;
    run.boot()?;
    run.accept_on_old()?;
    let (which, before, after) = if stage == 1 {
        (
            Which::Old,
            vec![run.old_url()],
            vec![run.old_url(), run.new_url()],
        )
    } else {
        let r = run.deploy(Which::Old, &stage1)?;
        run.expect_status(&r, "success")?;
        run.switch_to_new()?;
        (
            Which::New,
            vec![run.old_url(), run.new_url()],
            vec![run.new_url()],
        )
    };
    run.server(which)?.upload_artifact(&target)?;
    let device = run.device_id(which)?;
    let deployment = run
        .server(which)?
        .create_deployment("power-cut", &held, &device)?;
    run.log(&format!(
        "deployed {held} from {which:?}; waiting for its ArtifactInstall"
    ));
    run.wait_for("the module's ArtifactInstall to run", budget(60), |run| {
        Ok(run
            .vm
            .as_ref()
            .is_some_and(|vm| vm.serial_text().contains(HOLD_MARKER))
            .then_some(()))
    })?;
    run.vm.take().context("no VM")?.power_cut();
    run.log("power cut during ArtifactInstall (QEMU killed)");
    run.boot()?;
    let restarted = now_epoch();
    run.wait_for("the first request after the restart", budget(60), |run| {
        let mut first = None;
        for w in [Which::Old, Which::New] {
            if let Some(r) = run
                .server(w)?
                .device_requests()?
                .iter()
                .find(|r| r.epoch() > restarted)
            {
                first = Some(first.map_or(r.epoch(), |f: f64| f.min(r.epoch())));
            }
        }
        Ok(first)
    })
    .map(|first| run.timings.booting += Duration::from_secs_f64(first - restarted))?;
    let result = run.wait_for("the interrupted deployment to end", budget(120), |run| {
        let dd = run.server(which)?.deployment_device(&deployment, &device)?;
        Ok(dd.filter(|d| d["status"].as_str().is_some_and(|s| FINAL.contains(&s))))
    })?;
    let status = result["status"].as_str().unwrap_or("?").to_string();
    ensure!(
        status == "success" || status == "failure",
        "interrupted deployment ended `{status}`"
    );
    run.log(&format!(
        "interrupted deployment ended `{status}` (reports {})",
        result["history"]
    ));
    let t = now_epoch();
    run.wait_for(
        "the client to poll again after the power cut",
        budget(30),
        |run| {
            Ok((run
                .server(which)?
                .device_requests()?
                .iter()
                .filter(|r| {
                    r.path.contains("/deployments/next")
                        && r.status.is_some_and(|s| s < 300)
                        && r.epoch() > t
                })
                .count()
                >= 2)
                .then_some(()))
        },
    )?;
    run.stop_vm()?;
    let servers = run.config_servers()?;
    ensure!(
        servers == before || servers == after,
        "after the power cut the config lists {servers:?}: neither {before:?} nor {after:?}"
    );
    let expected = if status == "success" { &after } else { &before };
    ensure!(
        &servers == expected,
        "deployment reported {status} but the config lists {servers:?}"
    );
    run.expect_servers(&servers, "after the power cut")?;
    if status == "failure" {
        run.expect_journal(
            &["[ArtifactRollback]", "server-migration: rolled back"],
            "a failed interrupted install must be rolled back by the module",
        )?;
    }
    run.expect_client_healthy()
}

/// Builds the mock server binary (debug profile: fast to build, fast enough to serve one VM).
pub fn build_mock_server() -> Result<PathBuf> {
    crate::progress::step("qemu-test", "cargo build -p mock-mender-server", || {
        let status = Command::new(host::cargo())
            .current_dir(host::workspace_root())
            .args([
                "build",
                "--quiet",
                "-p",
                "mock-mender-server",
                "--bin",
                "mock-mender-server",
            ])
            .status()
            .context("cannot run cargo")?;
        ensure!(status.success(), "building mock-mender-server failed");
        Ok(host::target_dir().join("debug/mock-mender-server"))
    })
}

/// The image the scenarios boot (with the module built from this tree).
pub fn scenario_image() -> Result<GuestImage> {
    image::ensure_image(&image::ImageRequest {
        rebuild_base: false,
        module_binary: None,
        without_module: false,
    })
}
