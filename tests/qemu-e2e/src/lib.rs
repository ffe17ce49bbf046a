//! QEMU end-to-end harness: builds the Debian guest image with the real mender-client 3.4 and
//! runs the two-stage server migration scenarios against mock servers on the host's loopback.
//! Entry points are `run_qemu_image` and `run_qemu_test` (`cargo xtask qemu-image|qemu-test`).

pub mod ext4;
pub mod host;
pub mod image;
pub mod progress;

use anyhow::{bail, Result};
use std::path::PathBuf;

const IMAGE_USAGE: &str = "usage: cargo xtask qemu-image [--rebuild-base] [--module PATH | --without-module]

Builds (or reuses from target/qemu-cache/, or $QEMU_E2E_CACHE) the Debian bookworm guest image:
  base layer     mmdebstrap of bookworm with systemd and mender-client 3.4 (cached by package set)
  overlay layer  debian-overlay/qemu-guest/rootfs + the server-migration module + device key
  --rebuild-base    ignore the cached base layer
  --module PATH     use this module binary instead of `cargo build --profile device -p server-migration`
  --without-module  leave the module and its inventory script out";

/// `cargo xtask qemu-image`.
pub fn run_qemu_image(args: &[String]) -> Result<()> {
    let mut req = image::ImageRequest {
        rebuild_base: false,
        module_binary: None,
        without_module: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--rebuild-base" => req.rebuild_base = true,
            "--without-module" => req.without_module = true,
            "--module" => match it.next() {
                Some(path) => req.module_binary = Some(PathBuf::from(path)),
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
    let img = image::ensure_image(&req)?;
    progress::note(
        "qemu-image",
        &format!(
            "ready in {}: disk {} kernel {} initrd {}{}",
            progress::secs(started.elapsed()),
            img.disk.display(),
            img.kernel.display(),
            img.initrd.display(),
            if img.has_module {
                ""
            } else {
                " (without the server-migration module)"
            }
        ),
    );
    Ok(())
}

/// `cargo xtask qemu-test`.
pub fn run_qemu_test(_args: &[String]) -> Result<()> {
    bail!("qemu-test is not implemented yet")
}
