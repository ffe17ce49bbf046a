//! Foreign-architecture chroots with Debian's `mender-client` 3.4, run through qemu-user and
//! binfmt_misc: built once per input hash with `mmdebstrap --arch`, copied per test, and every
//! command in them bounded by `timeout`.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// Bump when the chroot recipe changes meaning without changing its arguments.
const RECIPE_VERSION: &str = "1";
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// `mount` is needed by the 3.4 client to read the active partition (it only warns without).
const PACKAGES: &[&str] = &["mender-client", "mount"];

/// A Debian architecture and what runs it on this host.
#[derive(Debug, Clone, Copy)]
pub struct ForeignArch {
    /// Debian's name (`arm64`, `armhf`).
    pub debian: &'static str,
    /// The qemu-user binfmt entry (`qemu-aarch64`, `qemu-arm`).
    pub binfmt: &'static str,
    /// The Rust target the module is built for.
    pub triple: &'static str,
    /// The architecture in the module-install artifact's name.
    pub arch: &'static str,
    /// ELF `e_machine` of a program for it.
    pub elf_machine: u16,
}

pub const ARM64: ForeignArch = ForeignArch {
    debian: "arm64",
    binfmt: "qemu-aarch64",
    triple: "aarch64-unknown-linux-musl",
    arch: "aarch64",
    elf_machine: 183,
};

pub const ARMHF: ForeignArch = ForeignArch {
    debian: "armhf",
    binfmt: "qemu-arm",
    triple: "armv7-unknown-linux-gnueabihf",
    arch: "armv7",
    elf_machine: 40,
};

/// The workspace root (this crate lives at `tests/foreign-arch`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/foreign-arch sits two levels below the root")
        .to_path_buf()
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// Why this host cannot run the chroot tests (missing tool, not root), or `None`.
pub fn missing_prerequisites(arch: &ForeignArch) -> Option<String> {
    if !test_support::is_root() {
        return Some("the chroot tests need root (chroot, mount)".into());
    }
    let static_qemu = format!("{}-static", arch.binfmt);
    let missing: Vec<&str> = ["mmdebstrap", "arch-test", "timeout", "update-binfmts"]
        .into_iter()
        .chain(std::iter::once(static_qemu.as_str()))
        .filter(|t| test_support::which(t).is_none())
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "missing host tools {missing:?}: run `sudo bash .ci/install-deps` (packages mmdebstrap arch-test qemu-user-static binfmt-support)"
        ))
    }
}

/// Makes sure the kernel runs `arch`'s programs through qemu-user: mounts binfmt_misc if absent
/// and enables the entry binfmt-support registered.
pub fn ensure_binfmt(arch: &ForeignArch) -> Result<()> {
    let dir = Path::new("/proc/sys/fs/binfmt_misc");
    if !dir.join("status").exists() {
        let status = Command::new("mount")
            .args(["-t", "binfmt_misc", "binfmt_misc"])
            .arg(dir)
            .status()
            .context("running mount for binfmt_misc")?;
        if !status.success() {
            bail!("cannot mount binfmt_misc on {}", dir.display());
        }
    }
    let entry = dir.join(arch.binfmt);
    if !entry.exists() {
        let _ = Command::new("update-binfmts")
            .args(["--enable", arch.binfmt])
            .status();
    }
    let text = std::fs::read_to_string(&entry).with_context(|| {
        format!(
            "{}: no binfmt entry for {} (install qemu-user-static and binfmt-support)",
            entry.display(),
            arch.debian
        )
    })?;
    if !text.starts_with("enabled") {
        bail!(
            "{}: the binfmt entry is disabled; run `update-binfmts --enable {}`",
            entry.display(),
            arch.binfmt
        );
    }
    Ok(())
}

fn mmdebstrap_args(arch: &ForeignArch, root: &Path) -> Vec<String> {
    let mut args = vec![format!("--arch={}", arch.debian)];
    args.extend(test_support::mmdebstrap_slim_args("apt", PACKAGES, &[]));
    args.push(SUITE.into());
    args.push(root.display().to_string());
    args.push(MIRROR.into());
    args
}

/// The cached chroot for `arch` (built on first use): `target/foreign-arch/<arch>-<hash>/root`.
/// The hash covers the recipe and the client version apt would install today.
pub fn ensure_chroot(arch: &ForeignArch) -> Result<PathBuf> {
    let cache = target_dir().join("foreign-arch");
    let candidate = Command::new("apt-cache")
        .args(["policy", "mender-client"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let candidate: String = candidate
        .lines()
        .filter(|l| l.trim_start().starts_with("Candidate:"))
        .collect();
    let mut hash = Sha256::new();
    for part in [
        RECIPE_VERSION.to_string(),
        mmdebstrap_args(arch, Path::new("ROOT")).join("\n"),
        candidate,
    ] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    let key: String = hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache.join(format!("{}-{key}", arch.debian));
    let root = dir.join("root");
    if dir.join("complete").exists() {
        eprintln!(
            "foreign-arch: {} chroot cached ({})",
            arch.debian,
            dir.display()
        );
        return Ok(root);
    }
    std::fs::create_dir_all(&cache)?;
    let tmp = cache.join(format!("{}-{key}.tmp-{}", arch.debian, std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    eprintln!(
        "foreign-arch: mmdebstrap --arch={} {SUITE} with mender-client (about 6 min, once; cached in {})",
        arch.debian,
        dir.display()
    );
    let log = tmp.join("mmdebstrap.log");
    let out = Command::new("timeout")
        .args(["-k", "30", "2400", "mmdebstrap"])
        .args(mmdebstrap_args(arch, &tmp.join("root")))
        .output()
        .context("running mmdebstrap")?;
    std::fs::write(
        &log,
        [out.stdout.as_slice(), out.stderr.as_slice()].concat(),
    )?;
    if !out.status.success() {
        bail!(
            "mmdebstrap --arch={} failed ({}); log: {}\n{}",
            arch.debian,
            out.status,
            log.display(),
            tail(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }
    std::fs::write(tmp.join("complete"), b"")?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("moving the chroot into {}", dir.display()))?;
    Ok(root)
}

/// A client call normally takes seconds under qemu-user; the bound only catches a hang.
pub const CLIENT_CALL_LIMIT: Duration = Duration::from_secs(180);

/// A finished child for an error message: exit code, stdout and the tail of stderr.
pub fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        tail(&String::from_utf8_lossy(&o.stderr), 40)
    )
}

/// A private copy of `arch`'s cached chroot named `name`, with qemu-user enabled; `None` when
/// this host cannot run it outside CI (after a SKIP notice naming `test`); in CI a missing
/// prerequisite is an error.
pub fn scratch_chroot(arch: &ForeignArch, name: &str, test: &str) -> Result<Option<Scratch>> {
    if let Some(why) = missing_prerequisites(arch) {
        if test_support::in_ci() {
            bail!("{why}");
        }
        eprintln!("SKIP foreign-arch {test}: {why}; this test runs in CI");
        return Ok(None);
    }
    ensure_binfmt(arch)?;
    let base = ensure_chroot(arch)?;
    Scratch::copy_of(&base, name).map(Some)
}

/// A private copy of the cached chroot, removed on drop.
pub struct Scratch {
    pub root: PathBuf,
}

impl Scratch {
    pub fn copy_of(base: &Path, name: &str) -> Result<Scratch> {
        let root = target_dir()
            .join("foreign-arch")
            .join(format!("run-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let status = Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(base)
            .arg(&root)
            .status()
            .context("running cp")?;
        if !status.success() {
            bail!("cannot copy {} to {}", base.display(), root.display());
        }
        Ok(Scratch { root })
    }

    /// Host path of a path inside the chroot.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    /// Runs `args` inside the chroot, killed after `limit`; a timeout is an error naming the call.
    pub fn run(&self, args: &[&str], limit: Duration) -> Result<Output> {
        let out = Command::new("timeout")
            .args(["-k", "10"])
            .arg(format!("{}", limit.as_secs()))
            .arg("chroot")
            .arg(&self.root)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8")
            .output()
            .with_context(|| format!("running {args:?} in the chroot"))?;
        if out.status.code() == Some(124) || out.status.code() == Some(137) {
            bail!(
                "{args:?} in the {} chroot did not finish within {} s (killed); output:\n{}{}",
                self.root.display(),
                limit.as_secs(),
                String::from_utf8_lossy(&out.stdout),
                tail(&String::from_utf8_lossy(&out.stderr), 30)
            );
        }
        Ok(out)
    }

    /// `mender --no-syslog ARGS` in the chroot, bounded by [`CLIENT_CALL_LIMIT`]; must exit 0.
    pub fn mender(&self, args: &[&str]) -> Result<Output> {
        let mut argv = vec!["mender", "--no-syslog"];
        argv.extend_from_slice(args);
        let out = self.run(&argv, CLIENT_CALL_LIMIT)?;
        if !out.status.success() {
            bail!("mender {args:?} failed: {}", describe(&out));
        }
        Ok(out)
    }

    /// The client installs `artifact` (a path inside the chroot) and commits it.
    pub fn install_and_commit(&self, artifact: &str) -> Result<()> {
        self.mender(&["install", artifact])?;
        self.mender(&["commit"])?;
        Ok(())
    }

    /// Makes the chroot a device: `config` as `/etc/mender/mender.conf`, `artifact_name`
    /// installed and `device_type` (in `/data/mender`, Debian's target of `/var/lib/mender`).
    pub fn make_device(&self, config: &[u8], artifact_name: &str, device_type: &str) -> Result<()> {
        std::fs::create_dir_all(self.path("/etc/mender"))?;
        std::fs::write(self.path("/etc/mender/mender.conf"), config)?;
        std::fs::write(
            self.path("/etc/mender/artifact_info"),
            format!("artifact_name={artifact_name}\n"),
        )?;
        std::fs::create_dir_all(self.path("/data/mender"))?;
        std::fs::write(
            self.path("/data/mender/device_type"),
            format!("device_type={device_type}\n"),
        )?;
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
