//! Test helpers shared by every suite (device and host workspaces; it lives in the device one,
//! which depends on no host crate): one definition of "running in CI", one way to handle a test
//! whose tool or privilege is missing, one assertion that a child process succeeded, and the
//! fixtures several suites make alike (ext4 images, openssl signing keys). Locally
//! a test missing its tool is skipped with a notice written straight to the terminal's stderr
//! (the test harness captures `eprintln!` of passing tests, which would hide the skip); in CI it
//! fails, naming what to install. Rust 1.75; its one dependency is `libc`
//! (benchmarks measure their children with [`usage`]).

pub mod usage;

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Whether the suite runs in CI: `CI` is set to anything but empty, `0` or `false` (CI services
/// set `CI=true`; `cargo xtask test` sets it too).
pub fn in_ci() -> bool {
    ci_value(std::env::var_os("CI").as_deref())
}

fn ci_value(value: Option<&OsStr>) -> bool {
    match value.and_then(OsStr::to_str) {
        None => value.is_some(),
        Some(v) => {
            let v = v.trim();
            !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false"))
        }
    }
}

/// Looks `tool` up on `PATH` (and the sbin directories a non-root `PATH` may lack). Missing: in
/// CI the calling test panics naming `install`; locally it prints a visible skip notice for
/// `test` and returns `None`, and the test returns early.
pub fn require_tool(test: &str, tool: &str, install: &str) -> Option<PathBuf> {
    match which(tool) {
        Some(path) => Some(path),
        None => {
            skip(test, &format!("`{tool}` is not installed ({install})"));
            None
        }
    }
}

/// Skips `test` for `reason`: panics in CI, else prints a notice that test output capture does
/// not swallow. The caller returns right after.
pub fn skip(test: &str, reason: &str) {
    if in_ci() {
        panic!("{test}: {reason}, and CI is set: a CI run must not skip this test");
    }
    // Straight to the stderr handle, not `eprintln!`: libtest captures the print macros only.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {reason} (fails when CI is set)"
    );
}

/// Panics unless the process `what` ran as exited 0, with its exit status and stderr in the
/// message (a bare `assert!(out.status.success())` would hide why it failed).
pub fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes the ext4 image `img` of `size` (mkfs units, e.g. `4M`) holding the directory `root`,
/// the way every suite makes root filesystems: `mkfs.ext4 -d`, nothing mounted. `None` when
/// e2fsprogs is missing (after [`require_tool`]'s notice; the test returns early).
pub fn mkfs_ext4(test: &str, root: &Path, img: &Path, size: &str) -> Option<()> {
    let mkfs = require_tool(test, "mkfs.ext4", "run .ci/install-deps (e2fsprogs)")?;
    let out = Command::new(mkfs)
        .args(["-q", "-F", "-d"])
        .arg(root)
        .arg(img)
        .arg(size)
        .output()
        .expect("running mkfs.ext4");
    assert_success("mkfs.ext4", &out);
    Some(())
}

/// `TOOL write rootfs-image -n NAME -t DEVICE_TYPE -f IMG -o ART`: the official
/// `mender-artifact`'s rootfs artifact of `img`, the one suites and benchmarks compare against
/// (callers add flags and run it).
pub fn official_rootfs_write(
    tool: impl AsRef<OsStr>,
    name: &str,
    device_type: &str,
    img: &Path,
    art: &Path,
) -> Command {
    let mut cmd = Command::new(tool);
    cmd.args(["write", "rootfs-image", "-n", name, "-t", device_type, "-f"])
        .arg(img)
        .arg("-o")
        .arg(art);
    cmd
}

/// Runs `openssl` with `args`, panicking with its stderr on failure.
fn openssl_run(openssl: &Path, args: &[&str]) {
    let out = Command::new(openssl)
        .args(args)
        .output()
        .expect("running openssl");
    assert_success(&format!("openssl {args:?}"), &out);
}

/// Signing-key forms the suites generate with the openssl CLI (every form the tools read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Rsa2048Pkcs1,
    Rsa2048Pkcs8,
    Rsa3072Pkcs8,
    Rsa3072Pkcs1,
    P256Sec1,
    P256Pkcs8,
    /// Forms the tools refuse (they sign with RSA or P-256 only).
    P384Sec1,
    P384Pkcs8,
    Ed25519,
}

/// Generates a `kind` private key and its SPKI public key in `dir` with `openssl` (the path of
/// the tool); returns (private, public).
pub fn gen_key(openssl: &Path, dir: &Path, kind: KeyKind) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{kind:?}.key.pem"));
    let public = dir.join(format!("{kind:?}.pub.pem"));
    let k = key.to_str().unwrap();
    let genrsa = |bits| vec!["genrsa", "-traditional", "-out", k, bits];
    let genpkey = |algorithm, option| {
        vec![
            "genpkey",
            "-algorithm",
            algorithm,
            "-pkeyopt",
            option,
            "-out",
            k,
        ]
    };
    let ecparam = |curve| vec!["ecparam", "-name", curve, "-genkey", "-noout", "-out", k];
    let args = match kind {
        KeyKind::Rsa2048Pkcs1 => genrsa("2048"),
        KeyKind::Rsa2048Pkcs8 => genpkey("RSA", "rsa_keygen_bits:2048"),
        KeyKind::Rsa3072Pkcs1 => genrsa("3072"),
        KeyKind::Rsa3072Pkcs8 => genpkey("RSA", "rsa_keygen_bits:3072"),
        KeyKind::P256Sec1 => ecparam("prime256v1"),
        KeyKind::P256Pkcs8 => genpkey("EC", "ec_paramgen_curve:P-256"),
        KeyKind::P384Sec1 => ecparam("secp384r1"),
        KeyKind::P384Pkcs8 => genpkey("EC", "ec_paramgen_curve:P-384"),
        KeyKind::Ed25519 => vec!["genpkey", "-algorithm", "ed25519", "-out", k],
    };
    openssl_run(openssl, &args);
    openssl_run(
        openssl,
        &[
            "pkey",
            "-in",
            k,
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    );
    (key, public)
}

/// Whether this process runs as root (`id -u` says 0): chroots, mounts and installing host tools
/// need it.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// `tool`'s path on `PATH` plus `/usr/sbin` and `/sbin`.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// The `mmdebstrap` options the suites' Debian chroots share: the variant, the packages, no
/// recommends, unsafe I/O (a chroot is throw-away until it is cached) and no man pages, docs or
/// locales, plus `extra_excludes` (dpkg path globs). The caller adds its own options, then the
/// suite, target and mirror.
pub fn mmdebstrap_slim_args(
    variant: &str,
    packages: &[&str],
    extra_excludes: &[&str],
) -> Vec<String> {
    let mut args = vec![
        format!("--variant={variant}"),
        format!("--include={}", packages.join(",")),
        "--aptopt=APT::Install-Recommends \"false\"".to_string(),
        "--dpkgopt=force-unsafe-io".to_string(),
    ];
    let excludes = [
        "/usr/share/man/*",
        "/usr/share/doc/*",
        "/usr/share/locale/*",
    ];
    for pattern in excludes.iter().chain(extra_excludes) {
        args.push(format!("--dpkgopt=path-exclude={pattern}"));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_definition_of_ci() {
        assert!(ci_value(Some(OsStr::new("true"))));
        assert!(ci_value(Some(OsStr::new("1"))));
        assert!(ci_value(Some(OsStr::new("yes"))));
        assert!(!ci_value(None));
        assert!(!ci_value(Some(OsStr::new(""))));
        assert!(!ci_value(Some(OsStr::new("0"))));
        assert!(!ci_value(Some(OsStr::new("False"))));
    }

    #[test]
    fn which_finds_sh_and_not_nonsense() {
        assert!(which("sh").is_some());
        assert!(which("no-such-tool-test-support").is_none());
    }
}
