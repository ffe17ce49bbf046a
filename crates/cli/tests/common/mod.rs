//! Helpers shared by the CLI integration tests: run the binary, find tools.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const EXAMPLE: &str = "examples/captured/etc/mender/mender.conf";
pub const EXAMPLE_NEW: &str = "https://new.eu.mender.example.com";

/// The workspace root: the example paths are relative to it.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `mender-migrate ARGS` in the workspace root.
pub fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mender-migrate"))
        .current_dir(root())
        .args(args)
        .output()
        .unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `tool` is installed. Missing in CI is a failure; locally a visible skip.
pub fn have(tool: &str) -> bool {
    test_support::require_tool("this test", tool, "run .ci/install-deps").is_some()
}

/// `mender-migrate artifacts` on the example config with a stand-in module binary, into `out`.
pub fn write_artifacts(dir: &Path, out: &Path, extra: &[&str]) -> Output {
    let module = dir.join("fake-module");
    std::fs::write(&module, "#!/bin/sh\nexit 0\n").unwrap();
    let mut args = vec![
        "artifacts",
        "--config",
        EXAMPLE,
        "--new-server",
        EXAMPLE_NEW,
        "--device-type",
        "qemux86-64",
        "--name",
        "fleet",
        "--out",
        out.to_str().unwrap(),
        "--module-binary",
        module.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cli(&args)
}
