//! The guest disk image: a Debian bookworm root filesystem with the real `mender-client` 3.4 and
//! systemd (slow, cached on its own), plus the project's overlay (fast, rebuilt when the module
//! binary or overlay files change). Written with `mkfs.ext4 -d` and `debugfs`, never mounted.

use crate::ext4::Edits;
use crate::host::{self, run};
use crate::progress::{note, step};
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

const TAG: &str = "qemu-image";

/// Bumped whenever the base recipe below changes in a way the argument list does not show.
const BASE_RECIPE_VERSION: &str = "qemu-e2e base v1";
const SUITE: &str = "bookworm";
/// Packages of the guest. No ca-certificates: the 3.4 client parses every system CA twice at
/// start, which costs about 25 s under TCG; HTTPS tests use `ServerCertificate` instead.
const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "linux-image-amd64",
    "mender-client",
    "iproute2",
    "udev",
    "dbus",
    "procps",
];
/// Kernel module trees a virtio guest never loads (keeps `drivers/input`: evdev is what lets
/// logind see the ACPI power button, i.e. what makes QMP `system_powerdown` work).
const PRUNED_MODULE_TREES: &[&str] = &[
    "sound",
    "drivers/gpu",
    "drivers/net/wireless",
    "net/wireless",
    "net/mac80211",
    "drivers/media",
    "drivers/infiniband",
    "drivers/staging",
    "drivers/scsi",
    "drivers/net/ethernet",
    "drivers/bluetooth",
    "net/bluetooth",
    "drivers/iio",
    "drivers/usb",
    "drivers/mtd",
    "drivers/isdn",
    "drivers/hid",
    "drivers/gpio",
];
/// Modules the initramfs needs to mount a virtio root; with `MODULES=list` each
/// update-initramfs takes ~2 s instead of ~40 s and the initrd is ~6 MB instead of ~36 MB.
/// `virtio_rng` (the runner's `virtio-rng-pci`) seeds the kernel's random pool before systemd
/// starts: without an entropy source a loaded TCG guest can stall in early boot inside
/// `getrandom` (seen as an RCU stall during a stage reboot).
const INITRD_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_rng",
    "virtio_blk",
    "virtio_net",
    "ext4",
    "crc32c_generic",
];
const IMAGE_SIZE: &str = "1G";

/// Where the module and its inventory script live in the guest.
pub const MODULE_GUEST_PATH: &str = "/usr/share/mender/modules/v3/server-migration";
pub const INVENTORY_GUEST_PATH: &str =
    "/usr/share/mender/inventory/mender-inventory-server-migration";
pub const DEVICE_KEY_GUEST_PATH: &str = "/data/mender/mender-agent.pem";

/// What to put in the overlay layer.
#[derive(Debug, Clone)]
pub struct ImageRequest {
    /// Rebuild the base root filesystem (and so the overlay image) even if cached.
    pub rebuild_base: bool,
    /// The update module binary (`cargo xtask` builds it for the guest); `None` leaves the
    /// module and its inventory script out (booting the stock client only).
    pub module_binary: Option<PathBuf>,
}

/// A finished image. The disk is shared: copy it (`Vm` does) before booting.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub disk: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The device key baked into the image (the runner normally replaces it per VM).
    pub device_key: PathBuf,
    /// The Update Module binary baked in (`None`: built without it); scenarios that wrap the
    /// module copy this same binary again.
    pub module: Option<PathBuf>,
    pub key: String,
}

struct BaseImage {
    disk: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
    key: String,
}

/// Builds or reuses the guest image.
pub fn ensure_image(req: &ImageRequest) -> Result<GuestImage> {
    host::require_tools(&["mmdebstrap", "mkfs.ext4", "debugfs", "openssl"])?;
    let cache = host::cache_dir();
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("cannot create {}", cache.display()))?;
    let base = ensure_base(&cache, req.rebuild_base)?;
    ensure_overlay(&cache, &base, req)
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn mmdebstrap_args(root: &Path, sources_file: &Path) -> Vec<String> {
    let mut args = test_support::mmdebstrap_slim_args("minbase", PACKAGES, &["/usr/share/info/*"]);
    args.push("--dpkgopt=path-include=/usr/share/doc/mender-client/*".to_string());
    for tree in PRUNED_MODULE_TREES {
        // dpkg matches the paths in the .deb, which are /lib/modules/..., even on merged /usr.
        args.push(format!(
            "--dpkgopt=path-exclude=/lib/modules/*/kernel/{tree}/*"
        ));
    }
    args.push(format!(
        "--essential-hook=mkdir -p \"$1/etc/initramfs-tools/conf.d\" \"$1/usr/share/initramfs-tools/modules.d\" \
         && echo MODULES=list > \"$1/etc/initramfs-tools/conf.d/qemu-e2e.conf\" \
         && printf '%s\\n' {} > \"$1/usr/share/initramfs-tools/modules.d/qemu-e2e\"",
        INITRD_MODULES.join(" ")
    ));
    // Package-level configuration that belongs with the packages (the file overlay is separate).
    args.push(
        "--customize-hook=chroot \"$1\" passwd -d root \
         && chroot \"$1\" systemctl enable systemd-networkd.service \
         && chroot \"$1\" systemctl mask systemd-networkd-wait-online.service apt-daily.timer \
            apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
         && mkdir -p \"$1/var/log/journal\" \"$1/data/mender\" && chmod 0700 \"$1/data/mender\" \
         && rm -rf \"$1/var/cache/apt/archives\"/*.deb \"$1/var/lib/apt/lists\"/*_Packages"
            .to_string(),
    );
    args.push(SUITE.to_string());
    args.push(root.display().to_string());
    args.push(sources_file.display().to_string());
    args
}

fn ensure_base(cache: &Path, rebuild: bool) -> Result<BaseImage> {
    let sources = host::debian_sources(SUITE)?;
    let sources_text = host::render_sources(&sources);
    // Candidate versions of the package set from the host's apt lists: a point release that
    // changes the kernel or the client gives a new key.
    let policy = Command::new("apt-cache")
        .arg("policy")
        .args(PACKAGES)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let candidates: String = policy
        .lines()
        .filter(|l| !l.starts_with(' ') || l.trim_start().starts_with("Candidate:"))
        .collect::<Vec<_>>()
        .join("\n");
    let recipe = mmdebstrap_args(Path::new("ROOT"), Path::new("SOURCES")).join("\n");
    let key = sha256_hex(&[
        BASE_RECIPE_VERSION.as_bytes(),
        recipe.as_bytes(),
        sources_text.as_bytes(),
        candidates.as_bytes(),
    ]);
    let dir = cache.join(format!("base-{}", &key[..16]));
    let done = dir.join("complete");
    let base = BaseImage {
        disk: dir.join("base.img"),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        key: key.clone(),
    };
    if done.exists() && !rebuild {
        note(TAG, &format!("base rootfs: cached ({})", dir.display()));
        return Ok(base);
    }
    let tmp = cache.join(format!("base-{}.tmp-{}", &key[..16], std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let root = tmp.join("rootfs");
    let sources_file = tmp.join("debian.sources");
    std::fs::write(&sources_file, &sources_text)?;
    let log_path = tmp.join("mmdebstrap.log");
    step(
        TAG,
        "base rootfs: mmdebstrap bookworm (30-90 s quiet, up to ~3 min loaded)",
        || {
            let log = std::fs::File::create(&log_path)?;
            let status = Command::new("mmdebstrap")
                .args(mmdebstrap_args(&root, &sources_file))
                .stdout(log.try_clone()?)
                .stderr(log)
                .status()
                .context("cannot run mmdebstrap")?;
            if !status.success() {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                bail!(
                    "mmdebstrap failed ({status}); log {}:\n{}",
                    log_path.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            Ok(())
        },
    )?;
    step(TAG, "base rootfs: checks, kernel and initrd", || {
        if root.join("usr/share/ca-certificates").exists() {
            bail!("ca-certificates ended up in the guest (slows every client start by ~25 s under TCG)");
        }
        for required in [
            "usr/bin/mender",
            "lib/systemd/system/mender-client.service",
            "usr/share/doc/mender-client/examples/mender-device-identity",
        ] {
            if !root.join(required).exists() {
                bail!("base rootfs lacks /{required}");
            }
        }
        // An absolute symlink into the guest: check the link itself, not its (host) target.
        let wants = root.join("etc/systemd/system/multi-user.target.wants/mender-client.service");
        if std::fs::symlink_metadata(&wants).is_err() {
            bail!("mender-client.service is not enabled in the base rootfs");
        }
        copy_glob(&root.join("boot"), "vmlinuz-", &tmp.join("vmlinuz"))?;
        copy_glob(&root.join("boot"), "initrd.img-", &tmp.join("initrd.img"))?;
        let packages = run(Command::new("dpkg-query")
            .arg(format!(
                "--admindir={}",
                root.join("var/lib/dpkg").display()
            ))
            .args(["-W", "-f", "${Package} ${Version}\n"]))?;
        std::fs::write(tmp.join("packages.txt"), packages)?;
        Ok(())
    })?;
    step(TAG, "base image: mkfs.ext4 -d", || {
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "root", "-d"])
            .arg(&root)
            .arg(tmp.join("base.img"))
            .arg(IMAGE_SIZE))?;
        std::fs::remove_dir_all(&root).context("cannot remove the temporary rootfs")?;
        std::fs::write(
            tmp.join("recipe.txt"),
            format!("{recipe}\n\n{sources_text}\n{candidates}\n"),
        )?;
        std::fs::write(tmp.join("complete"), &key)?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir)
            .with_context(|| format!("cannot move {} into place", tmp.display()))?;
        Ok(())
    })?;
    Ok(base)
}

fn copy_glob(dir: &Path, prefix: &str, to: &Path) -> Result<()> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    found.sort();
    let Some(latest) = found.last() else {
        bail!("no {prefix}* in {}", dir.display())
    };
    std::fs::copy(latest, to).with_context(|| format!("cannot copy {}", latest.display()))?;
    Ok(())
}

/// The overlay's source directory in the repository.
pub fn overlay_dir() -> PathBuf {
    host::workspace_root().join("debian-overlay/qemu-guest/rootfs")
}

/// The module's inventory script in the repository.
pub fn inventory_script() -> PathBuf {
    host::workspace_root()
        .join("crates/device/server-migration/support/mender-inventory-server-migration")
}

struct OverlayEntry {
    guest_path: String,
    kind: EntryKind,
}

enum EntryKind {
    Dir(u32),
    File(PathBuf, u32),
    Symlink(String),
}

fn walk_overlay(root: &Path, dir: &Path, out: &mut Vec<OverlayEntry>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read overlay directory {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let rel = path
            .strip_prefix(root)?
            .to_str()
            .context("non UTF-8 overlay path")?;
        let guest_path = format!("/{rel}");
        let meta = std::fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path)?.to_string_lossy().into_owned();
            out.push(OverlayEntry {
                guest_path,
                kind: EntryKind::Symlink(target),
            });
        } else if meta.is_dir() {
            // /data/mender holds the device key: keep it private like the client does.
            let mode = if rel == "data/mender" { 0o700 } else { 0o755 };
            out.push(OverlayEntry {
                guest_path,
                kind: EntryKind::Dir(mode),
            });
            walk_overlay(root, &path, out)?;
        } else {
            let exec = meta.permissions().mode() & 0o111 != 0;
            out.push(OverlayEntry {
                guest_path,
                kind: EntryKind::File(path.clone(), if exec { 0o755 } else { 0o644 }),
            });
        }
    }
    Ok(())
}

/// Generates an RSA 3072 key in the PKCS#1 form the 3.4 client writes itself.
pub fn generate_device_key(path: &Path) -> Result<()> {
    run(Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(path)
        .arg("3072"))?;
    Ok(())
}

fn ensure_overlay(cache: &Path, base: &BaseImage, req: &ImageRequest) -> Result<GuestImage> {
    let module = match &req.module_binary {
        None => None,
        Some(binary) => {
            let script = inventory_script();
            for file in [binary, &script] {
                if !file.is_file() {
                    bail!("{} does not exist", file.display());
                }
            }
            Some((binary.clone(), script))
        }
    };
    let overlay = overlay_dir();
    let mut entries = Vec::new();
    walk_overlay(&overlay, &overlay, &mut entries)?;

    let mut parts: Vec<Vec<u8>> = vec![base.key.as_bytes().to_vec()];
    for e in &entries {
        parts.push(e.guest_path.as_bytes().to_vec());
        match &e.kind {
            EntryKind::Dir(mode) => parts.push(format!("dir {mode:o}").into_bytes()),
            EntryKind::Symlink(t) => parts.push(format!("symlink {t}").into_bytes()),
            EntryKind::File(p, mode) => {
                parts.push(format!("file {mode:o}").into_bytes());
                parts.push(std::fs::read(p)?);
            }
        }
    }
    if let Some((binary, script)) = &module {
        parts.push(
            std::fs::read(binary).with_context(|| format!("cannot read {}", binary.display()))?,
        );
        parts.push(
            std::fs::read(script).with_context(|| format!("cannot read {}", script.display()))?,
        );
    }
    let refs: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
    let key = sha256_hex(&refs);
    let dir = cache.join(format!("image-{}", &key[..16]));
    let image = GuestImage {
        disk: dir.join("disk.img"),
        kernel: base.kernel.clone(),
        initrd: base.initrd.clone(),
        device_key: dir.join("device-key.pem"),
        module: module.as_ref().map(|(binary, _)| binary.clone()),
        key: key.clone(),
    };
    if dir.join("complete").exists() && !req.rebuild_base {
        note(
            TAG,
            &format!("overlay image: cached ({})", image.disk.display()),
        );
        return Ok(image);
    }
    let tmp = cache.join(format!("image-{}.tmp-{}", &key[..16], std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    step(
        TAG,
        "overlay image: copy base, write overlay with debugfs",
        || {
            let disk = tmp.join("disk.img");
            run(Command::new("cp")
                .arg("--sparse=always")
                .arg(&base.disk)
                .arg(&disk))?;
            let device_key = tmp.join("device-key.pem");
            generate_device_key(&device_key)?;
            let mut edits = Edits::new();
            for e in &entries {
                match &e.kind {
                    EntryKind::Dir(mode) => edits.mkdir_p(&e.guest_path, *mode)?,
                    EntryKind::File(p, mode) => edits.write(p, &e.guest_path, *mode)?,
                    EntryKind::Symlink(t) => edits.symlink(&e.guest_path, t)?,
                };
            }
            edits.mkdir_p("/data/mender", 0o700)?;
            edits.write(&device_key, DEVICE_KEY_GUEST_PATH, 0o600)?;
            if let Some((binary, script)) = &module {
                edits.mkdir_p("/usr/share/mender/modules/v3", 0o755)?;
                edits.write(binary, MODULE_GUEST_PATH, 0o755)?;
                edits.mkdir_p("/usr/share/mender/inventory", 0o755)?;
                edits.write(script, INVENTORY_GUEST_PATH, 0o755)?;
            }
            edits.apply(&disk)?;
            std::fs::write(tmp.join("complete"), &key)?;
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir)?;
            Ok(())
        },
    )?;
    prune_old_images(cache, &dir);
    Ok(image)
}

/// Keeps the cache from growing by one ~400 MB image per module rebuild: keeps the current and
/// the most recent other overlay image.
fn prune_old_images(cache: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    let mut others: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p != keep)
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("image-"))
        })
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    others.sort();
    others.reverse();
    for (_, old) in others.into_iter().skip(1) {
        let _ = std::fs::remove_dir_all(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<OverlayEntry> {
        let root = overlay_dir();
        let mut out = Vec::new();
        walk_overlay(&root, &root, &mut out).unwrap();
        out
    }

    fn file(entries: &[OverlayEntry], path: &str) -> (PathBuf, u32) {
        match entries
            .iter()
            .find(|e| e.guest_path == path)
            .map(|e| &e.kind)
        {
            Some(EntryKind::File(p, mode)) => (p.clone(), *mode),
            _ => panic!("overlay lacks file {path}"),
        }
    }

    #[test]
    fn overlay_holds_what_the_debian_package_lacks() {
        let entries = entries();
        let (conf, _) = file(&entries, "/etc/mender/mender.conf");
        let conf: serde_json::Value =
            serde_json::from_slice(&std::fs::read(conf).unwrap()).unwrap();
        assert_eq!(
            conf["ServerURL"], "http://10.0.2.100",
            "devices start on the old server"
        );
        assert!(conf.get("Servers").is_none());
        let (identity, mode) = file(
            &entries,
            "/usr/share/mender/identity/mender-device-identity",
        );
        assert_eq!(
            mode, 0o755,
            "the client must be able to execute the identity script"
        );
        assert!(std::fs::read_to_string(identity)
            .unwrap()
            .contains("product_serial"));
        let (device_type, _) = file(&entries, "/data/mender/device_type");
        assert_eq!(
            std::fs::read_to_string(device_type).unwrap().trim(),
            "device_type=qemux86-64"
        );
        file(&entries, "/etc/mender/artifact_info");
        assert!(entries
            .iter()
            .any(|e| e.guest_path == "/data/mender" && matches!(e.kind, EntryKind::Dir(0o700))));
    }

    #[test]
    fn mmdebstrap_recipe_keeps_ca_certificates_out_and_prunes_with_lib_paths() {
        let args = mmdebstrap_args(Path::new("/r"), Path::new("/s.sources")).join("\n");
        assert!(!args.contains("ca-certificates"));
        assert!(args.contains("APT::Install-Recommends \"false\""));
        assert!(args.contains("path-exclude=/lib/modules/*/kernel/sound/*"));
        assert!(
            !args.contains("/usr/lib/modules"),
            "dpkg matches /lib/modules paths from the .deb"
        );
        assert!(
            !args.contains("drivers/input"),
            "evdev is needed for the ACPI power button"
        );
    }
}
