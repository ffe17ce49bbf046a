//! `qemu-image` and `qemu-test`: thin glue over the `qemu-e2e` harness crate, which gets the
//! update module from the one module build in [`crate::artifacts`].

use anyhow::Result;
use mender_migrate::DeviceTarget;
use std::path::PathBuf;

/// The guest is x86_64 Debian: the module the project recommends for x86_64 devices.
fn build_guest_module() -> Result<PathBuf> {
    let target = DeviceTarget::parse("x86_64-unknown-linux-musl").map_err(anyhow::Error::msg)?;
    crate::artifacts::build_module(&target)
}

pub fn run_image(args: &[String]) -> Result<()> {
    qemu_e2e::run_qemu_image(args, &build_guest_module)
}

pub fn run_test(args: &[String]) -> Result<()> {
    qemu_e2e::run_qemu_test(args, &build_guest_module)
}
