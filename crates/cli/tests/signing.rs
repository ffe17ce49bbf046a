//! `--sign-key` and `--verify-key` through the CLI, cross-checked with the official tool.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use test_support::{gen_key, KeyKind};

/// `mender-migrate inspect ART --verify-key PUBLIC`.
fn inspect_verified(art: &Path, public: &Path) -> Output {
    cli(&[
        "inspect",
        art.to_str().unwrap(),
        "--verify-key",
        public.to_str().unwrap(),
    ])
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    test_support::assert_success(&format!("openssl {args:?}"), &out);
}

/// (form, private key PEM, public key PEM) for each algorithm and PEM form we accept.
fn keys(dir: &Path) -> Vec<(String, PathBuf, PathBuf)> {
    let openssl = test_support::which("openssl").expect("the caller checked openssl");
    [
        KeyKind::Rsa2048Pkcs8,
        KeyKind::Rsa2048Pkcs1,
        KeyKind::Rsa3072Pkcs8,
        KeyKind::P256Sec1,
        KeyKind::P256Pkcs8,
    ]
    .into_iter()
    .map(|kind| {
        let (private, public) = gen_key(&openssl, dir, kind);
        (format!("{kind:?}"), private, public)
    })
    .collect()
}

fn artifacts(dir: &Path, out: &Path, sign_key: Option<&Path>) -> Output {
    match sign_key {
        Some(key) => write_artifacts(dir, out, &["--sign-key", key.to_str().unwrap()]),
        None => write_artifacts(dir, out, &[]),
    }
}

#[test]
fn signed_artifacts_verify_with_the_official_tool_and_ours() {
    if !have("openssl") || !have("mender-artifact") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let all = keys(dir.path());
    let (_, _, other_public) = &all[2];
    for (name, private, public) in &all {
        let out_dir = dir.path().join(format!("out-{name}"));
        let out = artifacts(dir.path(), &out_dir, Some(private));
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        for artifact in FLEET_ARTIFACTS {
            let path = out_dir.join(artifact);
            assert_official_tool_accepts(&path, Some(public), name);
            let ours = inspect_verified(&path, public);
            assert!(
                ours.status.success(),
                "{name} inspect {artifact}: {}",
                text(&ours.stderr)
            );
            assert!(
                text(&ours.stdout).contains("signature:     valid"),
                "{}",
                text(&ours.stdout)
            );
        }
        // the wrong key fails both tools
        if public != other_public {
            let path = out_dir.join("fleet-stage1-dual.mender");
            let o = Command::new("mender-artifact")
                .args(["validate", "-k"])
                .arg(other_public)
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                !o.status.success(),
                "{name}: official tool accepted the wrong key"
            );
            let ours = inspect_verified(&path, other_public);
            assert_eq!(
                ours.status.code(),
                Some(1),
                "{name}: inspect accepted the wrong key"
            );
            assert!(
                text(&ours.stdout).contains("INVALID"),
                "{}",
                text(&ours.stdout)
            );
        }
    }
    // unsigned artifact with a verify key: refused, and distinctly reported
    let out_dir = dir.path().join("out-unsigned");
    assert!(artifacts(dir.path(), &out_dir, None).status.success());
    let ours = inspect_verified(&out_dir.join("fleet-stage1-dual.mender"), &all[0].2);
    assert_eq!(ours.status.code(), Some(1));
    assert!(text(&ours.stdout).contains("unsigned"));
}

#[test]
fn unusable_signing_keys_are_refused_before_writing() {
    if !have("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    let openssl_path = test_support::which("openssl").expect("checked above");
    let (p384, _) = gen_key(&openssl_path, dir.path(), KeyKind::P384Sec1);
    std::fs::rename(p384, p("p384.pem")).unwrap();
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-aes-256-cbc",
        "-pass",
        "pass:secret",
        "-out",
        &p("encrypted.pem"),
    ]);
    std::fs::write(p("garbage.pem"), "not a key").unwrap();
    for (key, needle) in [
        ("p384.pem", "p384.pem"),
        ("encrypted.pem", "encrypted"),
        ("garbage.pem", "garbage.pem"),
    ] {
        let out_dir = dir.path().join(format!("out-{key}"));
        let out = artifacts(dir.path(), &out_dir, Some(&dir.path().join(key)));
        let stage1 = out_dir.join("fleet-stage1-dual.mender");
        assert_refused(&out, 1, &[needle], &stage1, key);
    }
}

#[test]
fn plan_warns_when_the_device_verifies_signatures_and_no_key_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("mender.conf");
    std::fs::write(&conf, r#"{"ServerURL": "https://old.example.com", "ArtifactVerifyKey": "/etc/mender/artifact-verify-key.pem"}"#).unwrap();
    let out = plan(
        conf.to_str().unwrap(),
        "https://new.example.com",
        &["--json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(has_warning(&v, "--sign-key"), "{v}");
    // the key is kept in both stages
    for stage in ["stage1", "stage2"] {
        assert_eq!(
            v[stage]["/etc/mender/mender.conf"]["ArtifactVerifyKey"],
            "/etc/mender/artifact-verify-key.pem",
            "{stage}"
        );
    }
}
