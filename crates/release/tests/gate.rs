//! The release gate on artifacts built here: ext4 images made with `mkfs.ext4 -d` holding a
//! stage-1, a stage-2, an old-only and a broken config, and a module-image artifact.

use mender_release::{check_release_file, GateOptions, Verdict};
use menderartifact::{
    module_image_single_file, write_artifact_to_path, ArtifactSpec, Compression, Payload,
    PayloadFile,
};
use menderconf::{ServerUrl, Stage};
use std::path::{Path, PathBuf};

const OLD: &str = "https://old.example.com";
const NEW: &str = "https://new.example.com";

/// A rootfs artifact whose ext4 image holds `files` (path relative to / → content).
/// Uncompressed (fast in debug builds) except for `gz-` names, which cover the gzip path.
fn rootfs_artifact(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> Option<PathBuf> {
    let root = dir.join(format!("{name}-root"));
    for (path, content) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("usr/bin/tool"), vec![7u8; 100_000]).unwrap();
    let img = dir.join(format!("{name}.ext4"));
    test_support::mkfs_ext4("this test", &root, &img, "4M")?;
    let art = dir.join(format!("{name}.mender"));
    let spec = ArtifactSpec::new(
        name,
        vec!["qemux86-64".into()],
        Payload::RootfsImage {
            file: PayloadFile::from_path(&img).unwrap(),
        },
    );
    let mut spec = spec;
    if !name.starts_with("gz-") {
        spec.compression = Compression::None;
    }
    write_artifact_to_path(spec, &art).unwrap();
    Some(art)
}

fn options(stage: Stage) -> GateOptions {
    GateOptions {
        stage,
        old_server: ServerUrl::parse(OLD).unwrap(),
        new_server: ServerUrl::parse(NEW).unwrap(),
        verify_key: None,
    }
}

fn gate(art: &Path, stage: Stage) -> Verdict {
    check_release_file(art, &options(stage)).unwrap()
}

/// Gates `art` at `stage`: refused, the first reason saying `reason`.
fn refused(art: &Path, stage: Stage, reason: &str) -> Verdict {
    let v = gate(art, stage);
    assert!(!v.pass, "{stage}: {v:#?}");
    assert!(v.reasons[0].contains(reason), "{stage}: {v:#?}");
    v
}

/// Gates `art` at `stage`: passed.
fn passed(art: &Path, stage: Stage) -> Verdict {
    let v = gate(art, stage);
    assert!(v.pass, "{stage}: {v:#?}");
    v
}

/// A `single-file` module-image artifact `NAME.mender` installing `file` (with `content`) into
/// `dest`.
fn single_file_artifact(dir: &Path, name: &str, file: &str, content: &str, dest: &str) -> PathBuf {
    let path = dir.join(file);
    std::fs::write(&path, content).unwrap();
    let spec = module_image_single_file(name, vec!["qemux86-64".into()], &path, dest).unwrap();
    let art = dir.join(format!("{name}.mender"));
    write_artifact_to_path(spec, &art).unwrap();
    art
}

const CONF: &str = "etc/mender/mender.conf";

/// A release whose config names `url` as its only server (a 3.x `ServerURL`).
fn single_server_release(dir: &Path, name: &str, url: &str) -> Option<PathBuf> {
    let conf = format!(r#"{{"ServerURL":"{url}","RootfsPartA":"/dev/sda2"}}"#);
    rootfs_artifact(dir, name, &[(CONF, conf.as_bytes())])
}

fn stage1_conf() -> String {
    format!(
        r#"{{"Servers":[{{"ServerURL":"{OLD}"}},{{"ServerURL":"{NEW}"}}],"RootfsPartA":"/dev/sda2","TenantToken":"tok-abcd"}}"#
    )
}

#[test]
fn stage1_release_passes_at_stage1() {
    let dir = tempfile::tempdir().unwrap();
    let Some(art) = rootfs_artifact(dir.path(), "gz-s1", &[(CONF, stage1_conf().as_bytes())])
    else {
        return;
    };
    let v = passed(&art, Stage::Dual);
    assert_eq!(
        v.release_servers,
        Some(vec![OLD.to_string(), NEW.to_string()])
    );
    assert!(v.conditions[0].contains("no \"ServerURL\""), "{v:#?}");
    // The same release after stage 2 would put devices back on the old server.
    refused(
        &art,
        Stage::NewOnly,
        "points devices back to the old server",
    );
}

#[test]
fn stage2_release_passes_at_stage2() {
    let dir = tempfile::tempdir().unwrap();
    let Some(art) = single_server_release(dir.path(), "s2", NEW) else {
        return;
    };
    let v = passed(&art, Stage::NewOnly);
    assert_eq!(v.release_servers, Some(vec![NEW.to_string()]));
    refused(&art, Stage::Dual, "new server only");
}

#[test]
fn old_only_release_is_refused_at_both_stages() {
    let dir = tempfile::tempdir().unwrap();
    let Some(art) = single_server_release(dir.path(), "old", OLD) else {
        return;
    };
    for stage in [Stage::Dual, Stage::NewOnly] {
        let v = refused(&art, stage, "points devices back to the old server");
        assert!(
            v.reasons.iter().any(|r| r.contains("MIGRATION_STAGE")),
            "{v:#?}"
        );
    }
}

#[test]
fn broken_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let both = format!(r#"{{"ServerURL":"{OLD}","Servers":[{{"ServerURL":"{NEW}"}}]}}"#);
    let cases: [(&str, &[u8], &str); 4] = [
        ("syntax", b"{\"ServerURL\": ", "breaks the config"),
        ("both", both.as_bytes(), "breaks the config"),
        ("empty", b"{\"Servers\": []}", "breaks the config"),
        ("type", b"{\"Servers\": \"x\"}", "breaks the config"),
    ];
    for (name, conf, want) in cases {
        let Some(art) = rootfs_artifact(dir.path(), name, &[(CONF, conf)]) else {
            return;
        };
        let v = gate(&art, Stage::Dual);
        assert!(!v.pass && v.reasons[0].contains(want), "{name}: {v:#?}");
    }
}

#[test]
fn release_without_server_key_passes_with_the_fallback_condition() {
    let dir = tempfile::tempdir().unwrap();
    let Some(art) = rootfs_artifact(
        dir.path(),
        "nokey",
        &[(CONF, b"{\"RootfsPartA\":\"/dev/sda2\"}")],
    ) else {
        return;
    };
    let v = passed(&art, Stage::Dual);
    assert_eq!(v.release_servers, None);
    assert!(
        v.conditions[0].contains("/var/lib/mender/mender.conf"),
        "{v:#?}"
    );
    let Some(art) = rootfs_artifact(dir.path(), "noconf", &[("etc/hostname", b"dev\n")]) else {
        return;
    };
    let v = passed(&art, Stage::NewOnly);
    assert!(
        v.reasons[0].contains("has no /etc/mender/mender.conf"),
        "{v:#?}"
    );
}

#[test]
fn module_image_does_not_touch_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let art = single_file_artifact(dir.path(), "app-1", "app.conf", "x=1\n", "/etc/app");
    let v = passed(&art, Stage::NewOnly);
    assert_eq!(v.payload_type, "single-file");
    assert!(v.reasons[0].contains("no config change"), "{v:#?}");
}

#[test]
fn single_file_update_of_mender_conf_is_judged() {
    let dir = tempfile::tempdir().unwrap();
    let conf = format!(r#"{{"ServerURL":"{OLD}"}}"#);
    let art = single_file_artifact(dir.path(), "conf-1", "mender.conf", &conf, "/etc/mender");
    refused(&art, Stage::Dual, "single-file update");
}

#[test]
fn a_corrupt_artifact_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let Some(art) = rootfs_artifact(dir.path(), "s1", &[(CONF, stage1_conf().as_bytes())]) else {
        return;
    };
    let mut bytes = std::fs::read(&art).unwrap();
    let n = bytes.len();
    bytes[n - 3000] ^= 0xff;
    std::fs::write(&art, &bytes).unwrap();
    let err = check_release_file(&art, &options(Stage::Dual)).unwrap_err();
    assert!(
        err.to_string().contains("not a valid Mender artifact"),
        "{err}"
    );
}
