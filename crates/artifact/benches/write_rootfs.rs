//! Benchmark: rootfs-image write speed and peak RSS vs mender-artifact (in progress).
fn main() {}
