//! Shared test helpers: locating `mender-artifact`/`openssl`, key generation, running the tool.
#![allow(dead_code)]

pub mod craft;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Path of an external tool, or `None` (after a loud SKIP) when it is missing locally.
/// Under CI (env `CI` set) a missing tool is a test failure.
pub fn tool(name: &str, apt_package: &str) -> Option<PathBuf> {
    test_support::require_tool(
        "this test",
        name,
        &format!("apt-get install -y {apt_package}"),
    )
}

pub fn mender_artifact() -> Option<PathBuf> {
    tool("mender-artifact", "mender-artifact")
}

/// `mender-artifact` and a scratch directory for what the test writes with it.
pub fn mender_artifact_and_scratch() -> Option<(PathBuf, tempfile::TempDir)> {
    Some((mender_artifact()?, tempfile::tempdir().unwrap()))
}

/// `mender-artifact write module-image` arguments for the comparison tests' module artifact
/// (type `my-module`, name `rel-2`, devices `qemux86-64` and `other_device`), then `extra`.
pub fn my_module_args<'a>(other_device: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "write",
        "module-image",
        "-T",
        "my-module",
        "-n",
        "rel-2",
        "-t",
        "qemux86-64",
        "-t",
        other_device,
    ];
    args.extend_from_slice(extra);
    args
}

/// The group, depends, provides and clears both writers are given for the module artifact.
pub const MY_MODULE_EXTRAS: [&str; 10] = [
    "-g",
    "grpA",
    "-N",
    "rel-1",
    "-p",
    "custom.key:val1",
    "-d",
    "dep.key:dval",
    "--clears-provides",
    "foo.*",
];

/// Our writer's counterpart of [`my_module_args`] for `raspberrypi4`: a `my-module` payload
/// of `files` and `meta_data`; `extras` adds [`MY_MODULE_EXTRAS`].
pub fn my_module_spec(
    files: Vec<menderartifact::PayloadFile>,
    meta_data: Option<serde_json::Map<String, serde_json::Value>>,
    extras: bool,
) -> menderartifact::ArtifactSpec {
    let mut spec = menderartifact::ArtifactSpec::new(
        "rel-2",
        vec!["qemux86-64".into(), "raspberrypi4".into()],
        menderartifact::Payload::Module {
            type_name: "my-module".into(),
            files,
            meta_data,
        },
    );
    if extras {
        spec.group = Some("grpA".into());
        spec.depends_artifact_names = vec!["rel-1".into()];
        spec.provides.insert("custom.key".into(), "val1".into());
        spec.depends.insert("dep.key".into(), "dval".into());
        spec.clears_provides = vec!["foo.*".into()];
    }
    spec
}

pub fn openssl() -> Option<PathBuf> {
    tool("openssl", "openssl")
}

/// Writes `bytes` to `dir/name` (a test input); its path.
pub fn scratch_file(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn out_text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `openssl` with `args`, panicking with its output on failure.
pub fn openssl_run(openssl: &Path, args: &[&str]) {
    let o = run(Command::new(openssl).args(args));
    assert!(
        o.status.success(),
        "openssl {args:?} failed: {}",
        out_text(&o)
    );
}

/// Converts a PKCS#8 key to the traditional form that mender-artifact 3.9 can load.
pub fn traditional(openssl: &Path, key: &Path, out: &Path, rsa: bool) {
    let sub = if rsa { "rsa" } else { "ec" };
    let mut args = vec![
        sub,
        "-in",
        key.to_str().unwrap(),
        "-out",
        out.to_str().unwrap(),
    ];
    if rsa {
        args.push("-traditional");
    }
    openssl_run(openssl, &args);
}

/// `mender-artifact <subcommand> [-k pub] file`.
fn with_key(tool: &Path, subcommand: &str, file: &Path, public: Option<&Path>) -> Output {
    let mut c = Command::new(tool);
    c.arg(subcommand);
    if let Some(p) = public {
        c.arg("-k").arg(p);
    }
    run(c.arg(file))
}

/// `mender-artifact validate [-k pub] file`.
pub fn validate(tool: &Path, file: &Path, public: Option<&Path>) -> Output {
    with_key(tool, "validate", file, public)
}

/// `mender-artifact read [-k pub] file`.
pub fn read(tool: &Path, file: &Path, public: Option<&Path>) -> Output {
    with_key(tool, "read", file, public)
}
