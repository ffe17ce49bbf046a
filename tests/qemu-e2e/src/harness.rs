//! The scenario harness: a run's servers, disk and VM, the polling waits (bounded, scaled by the
//! measured speed factor, with the boot watchdog), the steps every scenario shares (accept on
//! old, deploy, fail over to new) and the checks of the device's config and journal after
//! shutdown. The scenarios themselves are in `scenarios/`.

use crate::artifacts::{
    artifact_name, build_artifacts, original_config, ArtifactKind, ArtifactSet, Mode, SignKey,
    Transport, Verify,
};
use crate::ext4::Edits;
use crate::guest::{FALLBACK_CONF, MAIN_CONF, NEW_IP, OLD_IP, SERVER_CERT, VERIFY_KEY};
use crate::host;
use crate::image::{self, GuestImage, MODULE_GUEST_PATH};
use crate::progress::{note, secs};
use crate::scenarios::Scenario;
use crate::servers::{now_epoch, parse_rfc3339, LoggedRequest as _, MockOptions, MockServer};
use crate::speed::{self, budget};
use crate::vm::{tail_file, BootState, Disk, Forward, Vm, VmConfig};
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The deployment statuses after which the device does nothing more for that deployment.
pub(crate) const FINAL: &[&str] = &[
    "success",
    "failure",
    "already-installed",
    "noartifact",
    "aborted",
    "decommissioned",
];

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
    /// `mender-migrate`, built on first use.
    migrate_binary: Option<PathBuf>,
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
            migrate_binary: None,
        }
    }

    /// The `mender-migrate` binary (built on first use; the build counts as artifact
    /// preparation, not as scenario time).
    pub(crate) fn migrate_binary(&mut self) -> Result<PathBuf> {
        if self.migrate_binary.is_none() {
            let started = Instant::now();
            self.migrate_binary = Some(build_migrate()?);
            self.artifact_build += started.elapsed();
        }
        self.migrate_binary
            .clone()
            .context("mender-migrate not built")
    }

    pub(crate) fn artifacts(&mut self, mode: Mode, transport: Transport) -> Result<&ArtifactSet> {
        self.artifacts_of((mode, transport, Verify::Off))
    }

    pub(crate) fn artifacts_of(&mut self, kind: ArtifactKind) -> Result<&ArtifactSet> {
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
    pub(crate) fn sign_key(&mut self) -> Result<&SignKey> {
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

/// Which server a step talks to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Which {
    Old,
    New,
}

/// A scenario in progress: its servers, its VM and disk, and what it measured.
pub struct Run<'a> {
    pub name: String,
    pub dir: PathBuf,
    pub(crate) env: &'a mut Env,
    pub(crate) transport: Transport,
    /// The public key written to `VERIFY_KEY` (the device config then has `ArtifactVerifyKey`).
    pub(crate) verify_key: Option<PathBuf>,
    pub(crate) old: Option<MockServer>,
    pub(crate) new: Option<MockServer>,
    pub(crate) disk: Option<Disk>,
    pub(crate) vm: Option<Vm>,
    pub(crate) vm_config: Option<VmConfig>,
    pub(crate) serial_number: String,
    pub(crate) device_old: Option<String>,
    pub(crate) device_new: Option<String>,
    pub(crate) timings: Timings,
    pub(crate) uploaded: Vec<(Which, String)>,
    pub(crate) started: Instant,
    /// The current boot was already restarted once after it hung.
    pub(crate) boot_retried: bool,
}

impl<'a> Run<'a> {
    pub(crate) fn new(name: &str, env: &'a mut Env) -> Result<Run<'a>> {
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

    pub(crate) fn log(&self, message: &str) {
        note(
            &self.name,
            &format!("{:>6.1} s  {message}", self.started.elapsed().as_secs_f64()),
        );
    }

    pub(crate) fn server(&self, which: Which) -> Result<&MockServer> {
        match which {
            Which::Old => self.old.as_ref().context("old server not started"),
            Which::New => self.new.as_ref().context("new server not started"),
        }
    }

    pub(crate) fn device_id(&self, which: Which) -> Result<String> {
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
    pub(crate) fn start_servers(&mut self, transport: Transport, new_down: bool) -> Result<()> {
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
    pub(crate) fn prepare_disk(
        &mut self,
        module_preinstalled: bool,
        extra: impl FnOnce(&mut Edits, &Path) -> Result<()>,
    ) -> Result<()> {
        if self.env.image.module.is_none() {
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
            let cert = scratch.join("server.crt");
            std::fs::write(&cert, self.ca_bundle()?)?;
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

    /// Both HTTPS servers' own CAs in one PEM bundle (the device's `ServerCertificate`, the
    /// orchestrator's `--ca-file`).
    pub(crate) fn ca_bundle(&self) -> Result<Vec<u8>> {
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
        Ok(bundle)
    }

    pub(crate) fn boot(&mut self) -> Result<()> {
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
    pub(crate) fn watch_boot(&mut self) -> Result<bool> {
        let limit = budget(speed::QUIET_KERNEL_TO_CLIENT_SECS);
        let silence = budget(speed::QUIET_CONSOLE_SILENCE_SECS);
        let Some(vm) = self.vm.as_mut() else {
            return Ok(false);
        };
        let state = vm.boot_state();
        if state == BootState::Booted {
            self.boot_retried = false;
            return Ok(false);
        }
        let why = hang_reason(state, limit, silence);
        let Some(why) = why else {
            return Ok(false);
        };
        let tail = vm.serial_tail(25);
        if self.boot_retried {
            bail!(
                "the guest's boot hung again after a restart: {why} (speed factor {:.1}); \
                 serial console's last lines:\n{tail}",
                speed::factor()
            );
        }
        self.log(&format!(
            "boot hung: {why}; cutting power and booting once more. Serial console's last \
             lines:\n{tail}"
        ));
        self.vm.take().context("no VM")?.power_cut();
        self.boot()?;
        self.boot_retried = true;
        Ok(true)
    }

    /// Polls `check` every second until it yields a value; bounded, and fails at once if QEMU died.
    /// Waits until the device's inventory at `which` satisfies `ready` (`what` names the wait);
    /// returns that inventory.
    pub(crate) fn wait_inventory(
        &mut self,
        which: Which,
        what: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let device = self.device_id(which)?;
        self.wait_for(what, budget(30), |run| {
            let inv = run.server(which)?.inventory(&device)?;
            Ok(ready(&inv).then_some(inv))
        })
    }

    pub(crate) fn wait_for<T>(
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

    /// Waits until `which` has answered `count` of the device's update checks (`deployments/next`,
    /// 2xx) made after `since` (epoch seconds): the client is alive and working with that server.
    /// Returns the time of the `count`-th check. The one polling check every scenario uses.
    pub(crate) fn wait_polls(
        &mut self,
        which: Which,
        since: f64,
        count: usize,
        what: &str,
        timeout: Duration,
    ) -> Result<f64> {
        self.wait_for(what, timeout, |run| {
            Ok(run
                .server(which)?
                .device_requests()?
                .iter()
                .filter(|r| {
                    r.path.contains("/deployments/next")
                        && r.status.is_some_and(|s| s < 300)
                        && r.epoch() > since
                })
                .nth(count.saturating_sub(1))
                .map(|r| r.epoch()))
        })
    }

    /// First boot on the original config: the device shows up pending on old, is accepted, and
    /// then talks to old (inventory, update checks).
    pub(crate) fn accept_on_old(&mut self) -> Result<()> {
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
    pub(crate) fn deploy(&mut self, which: Which, artifact: &Path) -> Result<Value> {
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
        self.note_deployment(&format!("{name} from {which:?}"), &result);
        let mut result = result;
        result["deployment_id"] = deployment.into();
        Ok(result)
    }

    /// Logs how this device's part of a deployment ended, with its reports, and counts its
    /// reboots as booting time.
    pub(crate) fn note_deployment(&mut self, what: &str, device_deployment: &Value) {
        self.account_reboots(device_deployment);
        let statuses = history_statuses(device_deployment);
        self.log(&format!(
            "{what}: {} (reports: {})",
            device_deployment["status"].as_str().unwrap_or("?"),
            statuses.join(" > ")
        ));
    }

    /// Counts `rebooting` → next report as booting time.
    pub(crate) fn account_reboots(&mut self, device_deployment: &Value) {
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

    /// The deployment ended `failure` with nothing installed (no `installing`, no
    /// `rebooting` report); `what` says what got through otherwise.
    pub(crate) fn expect_refused(&self, result: &Value, what: &str) -> Result<()> {
        self.expect_status(result, "failure")?;
        let statuses = history_statuses(result);
        ensure!(
            !statuses
                .iter()
                .any(|s| *s == "rebooting" || *s == "installing"),
            "{what}: {statuses:?}"
        );
        Ok(())
    }

    pub(crate) fn expect_status(&self, result: &Value, expected: &str) -> Result<()> {
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
    pub(crate) fn wait_service_restart(&mut self, which: Which, result: &Value) -> Result<()> {
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
    pub(crate) fn switch_to_new(&mut self) -> Result<f64> {
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
        self.expect_failover(rejected_at)?;
        Ok(rejected_at)
    }

    /// After the reject on old at `rejected_at` (epoch seconds): waits until the device
    /// authenticated on new and made an API call there, records its id on new, and checks the
    /// failover was driven by the reject (old answered 401 after it).
    pub(crate) fn expect_failover(&mut self, rejected_at: f64) -> Result<()> {
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
        Ok(())
    }

    /// Clean guest shutdown (QMP powerdown, bounded, then kill).
    pub(crate) fn stop_vm(&mut self) -> Result<()> {
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

    pub(crate) fn read_conf(&self, path: &str) -> Result<Option<Value>> {
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
    pub(crate) fn config_servers(&self) -> Result<Vec<String>> {
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

    pub(crate) fn expect_servers(&self, expected: &[String], context: &str) -> Result<()> {
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

    /// The client ran healthy through the whole scenario: no boot's journal shows it dying, and
    /// it started on the last boot (a client crash early in a scenario fails it too).
    pub(crate) fn expect_client_healthy(&self) -> Result<()> {
        let disk = self.disk.as_ref().context("no disk")?;
        let journal = disk.journal("mender-client.service", &self.dir.join("journal"))?;
        std::fs::write(self.dir.join("mender-client.journal"), &journal)?;
        check_client_journal(&journal).with_context(|| {
            format!(
                "journal in {}",
                self.dir.join("mender-client.journal").display()
            )
        })
    }

    /// The client's journal (all boots) contains every one of `needles`.
    pub(crate) fn expect_journal(&self, needles: &[&str], why: &str) -> Result<()> {
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

    pub(crate) fn original_config(&self) -> Value {
        original_config(self.transport, self.verify_key.is_some())
    }

    pub(crate) fn old_url(&self) -> String {
        self.transport.url(OLD_IP)
    }
    pub(crate) fn new_url(&self) -> String {
        self.transport.url(NEW_IP)
    }

    /// Prints what a person needs to see why a scenario failed.
    pub(crate) fn report_failure(&mut self) {
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

/// Whether a boot in `state` hangs: a kernel panic or stall report the console stays on is a
/// hang at once; otherwise a boot gets `limit` to start the client, past which a console
/// silent for over `silence` is a hang, and a boot still printing gets three limits in all.
fn hang_reason(state: BootState, limit: Duration, silence: Duration) -> Option<String> {
    let BootState::Booting {
        for_how_long,
        silent_for,
        stalled,
    } = state
    else {
        return None;
    };
    if stalled && silent_for > Duration::from_secs(5) {
        // A panic or a stall report that the console has not moved on from: no need to wait.
        Some("the kernel reports a panic or a CPU stall".to_string())
    } else if for_how_long <= limit {
        None
    } else if silent_for > silence {
        Some(format!(
            "the console has been silent for {}",
            secs(silent_for)
        ))
    } else if for_how_long > limit * 3 {
        Some(format!(
            "the client has not started after {}",
            secs(for_how_long)
        ))
    } else {
        None
    }
}

/// Lines systemd writes when the client's main process dies (a clean stop logs none of them).
const CLIENT_DEATHS: &[&str] = &[
    "mender-client.service: Main process exited, code=exited",
    "mender-client.service: Main process exited, code=killed",
    "mender-client.service: Main process exited, code=dumped",
    "mender-client.service: Failed with result",
];

/// Checks a `journalctl -u mender-client.service` rendering: every boot free of client deaths,
/// and the client started on the last boot. Boots are separated by journalctl's `-- Boot` lines.
fn check_client_journal(journal: &str) -> Result<()> {
    let boots: Vec<&str> = journal
        .split("-- Boot ")
        .filter(|b| b.lines().any(|l| l.contains("mender-client")))
        .collect();
    let last = boots
        .last()
        .context("the journal has no mender-client entries")?;
    for (i, boot) in boots.iter().enumerate() {
        if let Some(line) = boot
            .lines()
            .find(|l| CLIENT_DEATHS.iter().any(|d| l.contains(d)))
        {
            bail!(
                "mender-client died on boot {} of {}: `{}`",
                i + 1,
                boots.len(),
                line.trim()
            );
        }
    }
    ensure!(
        last.contains("Started mender-client"),
        "mender-client did not start on the last boot ({} boots in the journal)",
        boots.len()
    );
    Ok(())
}

/// Runs one scenario; returns its timings. Logs are kept on failure (and with `keep_logs`).
pub fn run_one(scenario: &Scenario, env: &mut Env) -> Result<Timings> {
    run_named(scenario.name, scenario.needs, env, scenario.run)
}

/// Runs `body` as the scenario `name` (after building the artifact sets it `needs`, which is
/// not counted in its wall time); returns its timings. Logs are kept on failure (and with
/// `keep_logs`).
pub(crate) fn run_named(
    name: &str,
    needs: &[ArtifactKind],
    env: &mut Env,
    body: impl FnOnce(&mut Run) -> Result<()>,
) -> Result<Timings> {
    let keep_logs = env.keep_logs;
    for kind in needs {
        env.artifacts_of(*kind)?;
    }
    let build_before = env.artifact_build;
    let mut run = Run::new(name, env)?;
    let started = Instant::now();
    let result = body(&mut run);
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
            Err(err.context(format!("scenario `{name}` failed")))
        }
    }
}

/// Builds the mock server binary (debug profile: fast to build, fast enough to serve one VM).
pub fn build_mock_server() -> Result<PathBuf> {
    build_host_binary("mock-mender-server", "mock-mender-server")
}

/// Builds the toolkit's command line (`mender-migrate`), whose `fleet run` drives the
/// migration scenarios (debug profile, like the mock server).
pub fn build_migrate() -> Result<PathBuf> {
    build_host_binary("mender-migrate", "mender-migrate")
}

/// `cargo build -p PACKAGE --bin BIN` in this workspace; the path of the debug binary.
fn build_host_binary(package: &str, bin: &str) -> Result<PathBuf> {
    crate::progress::step("qemu-test", &format!("cargo build -p {package}"), || {
        let status = Command::new(host::cargo())
            .current_dir(host::workspace_root())
            .args(["build", "--quiet", "-p", package, "--bin", bin])
            .status()
            .context("cannot run cargo")?;
        ensure!(status.success(), "building {package} failed");
        Ok(host::target_dir().join("debug").join(bin))
    })
}

/// The value of the inventory attribute `name`, if the inventory has it.
pub fn inventory_attr(inv: &Value, name: &str) -> Option<Value> {
    inv["attributes"]
        .as_array()?
        .iter()
        .find(|x| x["name"] == name)
        .map(|x| x["value"].clone())
}

/// The statuses a device deployment reported, in order (its `history`).
pub fn history_statuses(device_deployment: &Value) -> Vec<&str> {
    device_deployment["history"]
        .as_array()
        .map(|h| h.iter().filter_map(|r| r["status"].as_str()).collect())
        .unwrap_or_default()
}

/// The image the scenarios boot, with `module` (built from this tree).
pub fn scenario_image(module: PathBuf) -> Result<GuestImage> {
    image::ensure_image(&image::ImageRequest {
        rebuild_base: false,
        module_binary: Some(module),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STARTED: &str =
        "[   12.1] qemu systemd[1]: Started mender-client.service - Mender OTA update service.\n";
    const DIED: &str = "[   40.2] qemu systemd[1]: mender-client.service: Main process exited, code=exited, status=2/INVALIDARGUMENT\n";

    #[test]
    fn hangs_are_stalls_silence_or_three_budgets() {
        let booting = |t: u64, quiet: u64, stalled: bool| BootState::Booting {
            for_how_long: Duration::from_secs(t),
            silent_for: Duration::from_secs(quiet),
            stalled,
        };
        let (limit, silence) = (Duration::from_secs(100), Duration::from_secs(60));
        let reason = |state| hang_reason(state, limit, silence);
        assert_eq!(reason(BootState::Booted), None);
        assert_eq!(
            reason(booting(90, 2, true)),
            None,
            "stall report, console moving"
        );
        assert!(reason(booting(20, 6, true))
            .unwrap()
            .contains("panic or a CPU stall"));
        assert_eq!(reason(booting(90, 80, false)), None, "within budget");
        assert!(reason(booting(110, 70, false)).unwrap().contains("silent"));
        assert_eq!(reason(booting(250, 5, false)), None, "still printing");
        assert!(reason(booting(301, 5, false))
            .unwrap()
            .contains("has not started"));
    }

    #[test]
    fn a_client_death_on_an_early_boot_is_seen() {
        let journal = format!("{STARTED}{DIED}-- Boot 2b --\n{STARTED}");
        let err = check_client_journal(&journal).unwrap_err().to_string();
        assert!(err.contains("died on boot 1 of 2"), "{err}");
        assert!(err.contains("status=2/INVALIDARGUMENT"), "{err}");
    }

    #[test]
    fn healthy_boots_pass_and_the_last_boot_must_start_the_client() {
        let healthy = format!("{STARTED}-- Boot 2b --\n{STARTED}");
        check_client_journal(&healthy).unwrap();
        let not_started = format!(
            "{STARTED}-- Boot 2b --\n[ 3.0] qemu mender-client[9]: Stopping mender-client\n"
        );
        let err = check_client_journal(&not_started).unwrap_err().to_string();
        assert!(err.contains("did not start on the last boot"), "{err}");
        let err = check_client_journal("-- No entries --\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no mender-client entries"), "{err}");
    }
}
