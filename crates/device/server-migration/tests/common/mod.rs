//! Test harness: a fake device root (Debian layout), module FILE_TREEs, and a driver for the module binary.
#![allow(dead_code)]

use menderconf::{ConfigFile, Mode, Restart, ServerUrl, Stage, StagePlan};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_server-migration");
pub const OLD: &str = "https://old.example.com";
pub const NEW: &str = "https://new.example.com";
/// The two config files as the client (and a plan) names them; [`Device::path`] takes them too.
pub const MAIN: &str = "/etc/mender/mender.conf";
pub const FALLBACK: &str = "/var/lib/mender/mender.conf";
/// The fallback's real location: `/var/lib/mender` is a symlink to `/data/mender` on Debian.
pub const FALLBACK_REAL: &str = "data/mender/mender.conf";

/// A device file system under a temp dir, Debian-style.
pub struct Device {
    pub dir: tempfile::TempDir,
    /// Module work trees live outside the root (the client deletes them anyway).
    pub trees: tempfile::TempDir,
    /// Extra PATH entry (fake `systemd-run`).
    pub bin_dir: PathBuf,
}

impl Device {
    /// Both files present (main 0644, fallback 0600), `/var/lib/mender -> /data/mender`. Main
    /// has `ServerURL` and other keys (bytes deliberately not in menderconf's format).
    pub fn debian() -> Device {
        let d = Device::fallback_only();
        let main = format!("{{\"ServerURL\": \"{OLD}\", \"UpdatePollIntervalSeconds\": 5,\n \"InventoryPollIntervalSeconds\": 5}}\n");
        d.write(MAIN, &main, 0o644);
        d
    }

    /// Only the Debian fallback holds the config: a second `ServerURL` and the tenant token.
    pub fn fallback_only() -> Device {
        let d = Device::empty();
        let fallback = format!("{{\"TenantToken\": \"tok-1234\", \"ServerURL\": \"{OLD}\"}}\n");
        d.write(FALLBACK_REAL, &fallback, 0o600);
        d
    }

    pub fn empty() -> Device {
        let dir = scratch_dir();
        fs::create_dir_all(dir.path().join("etc/mender")).unwrap();
        fs::create_dir_all(dir.path().join("data/mender")).unwrap();
        fs::create_dir_all(dir.path().join("var/lib")).unwrap();
        symlink("/data/mender", dir.path().join("var/lib/mender")).unwrap();
        let trees = scratch_dir();
        let bin_dir = trees.path().join("bin");
        fs::create_dir_all(&bin_dir).unwrap();
        Device {
            dir,
            trees,
            bin_dir,
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `path` (relative, or absolute as on the device) inside the device root.
    pub fn path(&self, path: &str) -> PathBuf {
        self.dir.path().join(path.trim_start_matches('/'))
    }

    pub fn write(&self, rel: &str, contents: &str, mode: u32) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, contents).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Both config files: `None` = absent.
    pub fn configs(&self) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
        (
            fs::read(self.path(MAIN)).ok(),
            fs::read(self.path(FALLBACK_REAL)).ok(),
        )
    }

    /// A fresh module FILE_TREE with `plan` as `files/plan.json` (or raw bytes).
    pub fn tree(&self, name: &str, plan_json: Option<&[u8]>) -> PathBuf {
        let t = self.trees.path().join(name);
        fs::create_dir_all(t.join("header")).unwrap();
        fs::create_dir_all(t.join("files")).unwrap();
        fs::create_dir_all(t.join("tmp")).unwrap();
        fs::write(t.join("version"), "3\n").unwrap();
        fs::write(t.join("header/artifact_name"), format!("{name}\n")).unwrap();
        fs::write(t.join("header/payload_type"), "server-migration\n").unwrap();
        if let Some(p) = plan_json {
            fs::write(t.join("files/plan.json"), p).unwrap();
        }
        t
    }

    /// Runs the module binary with this device as root.
    pub fn run(&self, args: &[&str], crash_at: Option<u64>) -> Output {
        let path = format!(
            "{}:{}",
            self.bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("SERVER_MIGRATION_ROOT", self.root())
            .env("PATH", path)
            .env_remove("SERVER_MIGRATION_CRASH_AT")
            .env_remove("SERVER_MIGRATION_TRACE_STEPS");
        if let Some(n) = crash_at {
            cmd.env("SERVER_MIGRATION_CRASH_AT", n.to_string());
        }
        cmd.output().unwrap()
    }

    /// Runs one state with the injected abort at durable step `n` (fault injection).
    pub fn state_crashing_at(&self, state: &str, tree: &Path, n: u64) -> Output {
        self.run(&[state, tree.to_str().unwrap()], Some(n))
    }

    /// Runs one state like the client does and returns (exit code, stdout, stderr).
    pub fn state(&self, state: &str, tree: &Path) -> (i32, String, String) {
        let out = self.run(&[state, tree.to_str().unwrap()], None);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A fresh FILE_TREE named `name` carrying a replace-mode plan (see [`replace_plan`]) and the
    /// `payload` files (name, contents) it may refer to.
    pub fn replace_tree(
        &self,
        name: &str,
        stage: &str,
        files: &[(&str, Option<&str>)],
        payload: &[(&str, &str)],
    ) -> PathBuf {
        let t = self.tree(name, Some(replace_plan(stage, files).as_bytes()));
        for (file, contents) in payload {
            fs::write(t.join("files").join(file), contents).unwrap();
        }
        t
    }

    /// A stage-1 (dual) FILE_TREE from OLD to NEW in patch mode, named `stage1`.
    pub fn stage1(&self, restart: Restart) -> PathBuf {
        self.tree("stage1", Some(&plan(Stage::Dual, restart)))
    }

    /// Runs a client's states, given as phases (see [`INSTALL_34`] and the others), like
    /// [`Device::sequence`].
    pub fn client(
        &self,
        tree: &Path,
        phases: &[&[&str]],
        expect_fail: &[&str],
    ) -> Vec<(String, String)> {
        self.sequence(tree, &phases.concat(), expect_fail)
    }

    /// Runs a sequence of states; panics with the state and stderr if one's exit code differs
    /// from `expect_fail` membership. Returns the stdout of each state.
    pub fn sequence(
        &self,
        tree: &Path,
        states: &[&str],
        expect_fail: &[&str],
    ) -> Vec<(String, String)> {
        let mut answers = Vec::new();
        for s in states {
            let (code, out, err) = self.state(s, tree);
            let should_fail = expect_fail.contains(s);
            assert_eq!(
                code != 0,
                should_fail,
                "state {s}: exit {code}, expected {}; stderr:\n{err}",
                if should_fail { "failure" } else { "success" }
            );
            answers.push((s.to_string(), out));
        }
        answers
    }

    /// Installs a fake `systemd-run` that logs its arguments to `<trees>/systemd-run.log`.
    pub fn fake_systemd_run(&self, exit_code: i32) -> PathBuf {
        let log = self.trees.path().join("systemd-run.log");
        let script = self.bin_dir.join("systemd-run");
        fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$@\" >> '{}'\nexit {exit_code}\n",
                log.display()
            ),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        log
    }
}

/// A temp dir on tmpfs when there is one: the crash tests run thousands of fsyncs, which on a
/// busy disk take most of the test time and prove nothing a process abort can observe.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("server-migration-test")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

pub fn plan(stage: Stage, restart: Restart) -> Vec<u8> {
    let mut p = StagePlan::new(
        stage,
        Mode::Patch,
        ServerUrl::parse(OLD).unwrap(),
        ServerUrl::parse(NEW).unwrap(),
    );
    p.restart = restart;
    p.to_json()
}

/// Was the process killed by the injected abort?
pub fn aborted(out: &Output) -> bool {
    out.status.signal() == Some(libc_sigabrt())
}

fn libc_sigabrt() -> i32 {
    6
}

/// Both files parse (when present) with the engine's parser.
pub fn assert_parse(configs: &(Option<Vec<u8>>, Option<Vec<u8>>)) {
    if let Some(m) = &configs.0 {
        ConfigFile::parse("main", m).expect("main config parses");
    }
    if let Some(f) = &configs.1 {
        ConfigFile::parse("fallback", f).expect("fallback config parses");
    }
}

pub fn text(c: &Option<Vec<u8>>) -> String {
    c.as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_else(|| "<absent>".into())
}

// The clients' state sequences, in named phases (measured on mender-client 3.4 and
// mender-update 5.1.0); a test composes a client run from them with [`Device::client`].

/// 3.4: download, ask whether rollback is supported, install.
pub const INSTALL_34: &[&str] = &["Download", "SupportsRollback", "ArtifactInstall"];
/// 3.4 after an `Automatic` answer: the client reboots, then verifies after boot.
pub const REBOOT_34: &[&str] = &["NeedsArtifactReboot", "ArtifactVerifyReboot"];
/// 5.x: sizes query, download, install; then it asks [`QUESTIONS_5X`].
pub const INSTALL_5X: &[&str] = &["ProvidePayloadFileSizes", "Download", "ArtifactInstall"];
/// 5.x's questions after the install, in this order.
pub const QUESTIONS_5X: &[&str] = &["NeedsArtifactReboot", "SupportsRollback"];
/// The end of a successful deployment.
pub const COMMIT: &[&str] = &["ArtifactCommit", "Cleanup"];
/// The end of a failed deployment.
pub const FAILURE: &[&str] = &["ArtifactFailure", "Cleanup"];
/// 3.4's rollback: it asks whether the rollback needs a reboot.
pub const ROLLBACK_34: &[&str] = &["ArtifactRollback", "NeedsArtifactReboot"];
/// The reboot of a rollback (after `ArtifactRollback` on a device that booted the new config).
pub const ROLLBACK_REBOOT: &[&str] = &["ArtifactRollbackReboot", "ArtifactVerifyRollbackReboot"];
/// The 3.4 client's whole successful deployment with `NeedsArtifactReboot` = `Automatic`.
pub const SUCCESS_34_AUTOMATIC: &[&[&str]] = &[INSTALL_34, REBOOT_34, COMMIT];

/// Replace-mode `plan.json` for `stage` (`dual`/`new-only`) from OLD to NEW: each device path
/// maps to a payload file name under `files/`, or to `null` (the file must end up absent).
pub fn replace_plan(stage: &str, files: &[(&str, Option<&str>)]) -> String {
    let files: Vec<String> = files
        .iter()
        .map(|(path, name)| match name {
            Some(name) => format!("\"{path}\":\"{name}\""),
            None => format!("\"{path}\":null"),
        })
        .collect();
    format!(
        "{{\"format\":1,\"mode\":\"replace\",\"stage\":\"{stage}\",\"old_server\":\"{OLD}\",\"new_server\":\"{NEW}\",\"files\":{{{}}}}}",
        files.join(",")
    )
}

/// A config listing `servers` in `Servers`, as rendered payload files have it.
pub fn servers_config(servers: &[&str]) -> String {
    let entries: Vec<String> = servers
        .iter()
        .map(|s| format!("{{\"ServerURL\": \"{s}\"}}"))
        .collect();
    format!("{{\"Servers\": [{}]}}\n", entries.join(", "))
}
