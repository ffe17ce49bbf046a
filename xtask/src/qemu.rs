//! `qemu-image` and `qemu-test`: thin glue over the `qemu-e2e` harness crate.

pub fn run_image(args: &[String]) -> anyhow::Result<()> {
    qemu_e2e::run_qemu_image(args)
}

pub fn run_test(args: &[String]) -> anyhow::Result<()> {
    qemu_e2e::run_qemu_test(args)
}
