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

/// Runs `mender-migrate plan --config CONFIG --new-server NEW_SERVER EXTRA...`.
pub fn plan(config: &str, new_server: &str, extra: &[&str]) -> Output {
    let mut args = vec!["plan", "--config", config, "--new-server", new_server];
    args.extend_from_slice(extra);
    cli(&args)
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `tool` is installed. Missing in CI is a failure; locally a visible skip.
pub fn have(tool: &str) -> bool {
    test_support::require_tool("this test", tool, "run .ci/install-deps").is_some()
}

/// A minimal ELF executable header for `machine` (EM_*) and word size: enough for the
/// module-binary check, never run. `interp` adds a PT_INTERP (a dynamically linked binary).
pub fn fake_elf(machine: u16, bits: u8, interp: Option<&str>) -> Vec<u8> {
    let mut b = vec![0u8; 256];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = if bits == 64 { 2 } else { 1 };
    b[5] = 1;
    b[16..18].copy_from_slice(&2u16.to_le_bytes());
    b[18..20].copy_from_slice(&machine.to_le_bytes());
    let ph = 64usize;
    if bits == 64 {
        b[24..32].copy_from_slice(&0x400000u64.to_le_bytes());
        b[32..40].copy_from_slice(&(ph as u64).to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&1u16.to_le_bytes());
    } else {
        b[24..28].copy_from_slice(&0x10000u32.to_le_bytes());
        b[28..32].copy_from_slice(&(ph as u32).to_le_bytes());
        b[42..44].copy_from_slice(&32u16.to_le_bytes());
        b[44..46].copy_from_slice(&1u16.to_le_bytes());
    }
    let ptype: u32 = if interp.is_some() { 3 } else { 1 };
    b[ph..ph + 4].copy_from_slice(&ptype.to_le_bytes());
    if let Some(i) = interp {
        let off = 160usize;
        b[off..off + i.len()].copy_from_slice(i.as_bytes());
        if bits == 64 {
            b[ph + 8..ph + 16].copy_from_slice(&(off as u64).to_le_bytes());
            b[ph + 32..ph + 40].copy_from_slice(&(i.len() as u64 + 1).to_le_bytes());
        } else {
            b[ph + 4..ph + 8].copy_from_slice(&(off as u32).to_le_bytes());
            b[ph + 16..ph + 20].copy_from_slice(&(i.len() as u32 + 1).to_le_bytes());
        }
    }
    b
}

/// `mender-migrate artifacts` on the example config with a stand-in (never run) static x86-64
/// module binary and `--arch x86_64`, into `out`.
pub fn write_artifacts(dir: &Path, out: &Path, extra: &[&str]) -> Output {
    let module = dir.join("fake-module");
    std::fs::write(&module, fake_elf(62, 64, None)).unwrap();
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
        "--arch",
        "x86_64",
    ];
    args.extend_from_slice(extra);
    cli(&args)
}
