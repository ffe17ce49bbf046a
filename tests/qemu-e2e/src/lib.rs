//! QEMU end-to-end harness (placeholder until the QEMU issue lands).

/// `cargo xtask qemu-image`.
pub fn run_qemu_image(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("qemu-image is not implemented yet")
}

/// `cargo xtask qemu-test`.
pub fn run_qemu_test(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("qemu-test is not implemented yet")
}
