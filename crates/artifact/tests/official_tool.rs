//! Artifacts written by our writer must pass `mender-artifact validate`/`read` (3.9), signed
//! and unsigned, and tampering / wrong keys must fail both the official tool and our reader.

mod common;

use common::*;
use menderartifact::*;
use std::path::{Path, PathBuf};
use test_support::{gen_key, KeyKind};

fn module_spec(dir: &Path, compression: Compression) -> ArtifactSpec {
    let f1 = scratch_file(dir, "file1.txt", b"hello from file one\n");
    let f2 = dir.join("blob.bin");
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7919 % 251) as u8).collect();
    std::fs::write(&f2, &blob).unwrap();
    let meta: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"zeta":1,"alpha":{"b":"<x&y>","a":[1,2]}}"#).unwrap();
    let files = vec![
        PayloadFile::from_path(&f1).unwrap(),
        PayloadFile::from_path(&f2).unwrap(),
        PayloadFile::from_bytes("inline.cfg", b"k=v\n".to_vec(), 0o640),
    ];
    let mut spec = my_module_spec(files, Some(meta), true);
    spec.scripts = vec![
        PayloadFile::from_bytes(
            "ArtifactCommit_Leave_10_cleanup",
            b"#!/bin/sh\nexit 0\n".to_vec(),
            0o755,
        ),
        PayloadFile::from_bytes(
            "ArtifactInstall_Enter_00",
            b"#!/bin/sh\ntrue\n".to_vec(),
            0o755,
        ),
    ];
    spec.compression = compression;
    spec
}

fn rootfs_spec(dir: &Path, compression: Compression) -> ArtifactSpec {
    let img = dir.join("rootfs.img");
    let data: Vec<u8> = (0..1_048_576u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&img, &data).unwrap();
    let mut spec = ArtifactSpec::new(
        "rootfs-1",
        vec!["dev1".into()],
        Payload::RootfsImage {
            file: PayloadFile::from_path(&img).unwrap(),
        },
    );
    spec.compression = compression;
    spec
}

fn write_to(dir: &Path, name: &str, spec: ArtifactSpec) -> PathBuf {
    let out = dir.join(name);
    write_artifact_to_path(spec, &out).unwrap();
    out
}

fn assert_tool_accepts(tool: &Path, file: &Path, public: Option<&Path>) -> String {
    let r = read(tool, file, public);
    for (verb, o) in [("validate", &validate(tool, file, public)), ("read", &r)] {
        assert!(
            o.status.success(),
            "{verb} rejected {}: {}",
            file.display(),
            out_text(o)
        );
    }
    let text = String::from_utf8_lossy(&r.stdout).into_owned();
    if public.is_some() {
        assert!(
            text.contains("signed and verified correctly"),
            "read did not verify the signature: {}",
            out_text(&r)
        );
    }
    text
}

#[test]
fn unsigned_module_and_rootfs_pass_official_tool() {
    let Some((tool, dir)) = mender_artifact_and_scratch() else {
        return;
    };
    for (i, c) in [Compression::Gzip, Compression::None]
        .into_iter()
        .enumerate()
    {
        let m = write_to(
            dir.path(),
            &format!("m{i}.mender"),
            module_spec(dir.path(), c),
        );
        let text = assert_tool_accepts(&tool, &m, None);
        for needle in [
            "Name: rel-2",
            "Type:   my-module",
            "rootfs-image.my-module.version: rel-2",
            "custom.key: val1",
            "dep.key: dval",
            r#"["foo.*", "rootfs-image.my-module.*"]"#,
            "name:     inline.cfg",
            "ArtifactInstall_Enter_00",
            "ArtifactCommit_Leave_10_cleanup",
        ] {
            assert!(
                text.contains(needle),
                "missing '{needle}' in read output:\n{text}"
            );
        }
        let info = read_info(std::fs::File::open(&m).unwrap()).unwrap();
        assert_eq!(info.payload_types, vec!["my-module"]);
        assert_eq!(info.payload_files.len(), 3);
        assert_eq!(
            info.scripts,
            [
                "ArtifactCommit_Leave_10_cleanup",
                "ArtifactInstall_Enter_00"
            ]
        );
        assert_eq!(info.signature, SignatureStatus::Unsigned);

        let r = write_to(
            dir.path(),
            &format!("r{i}.mender"),
            rootfs_spec(dir.path(), c),
        );
        let text = assert_tool_accepts(&tool, &r, None);
        assert!(text.contains("rootfs-image.version: rootfs-1"), "{text}");
        let info = read_info(std::fs::File::open(&r).unwrap()).unwrap();
        assert_eq!(
            info.provides["rootfs-image.checksum"],
            info.payload_files[0].sha256
        );
        assert_eq!(
            info.clears_provides,
            vec!["artifact_group", "rootfs_image_checksum", "rootfs-image.*"]
        );
    }
}

#[test]
fn single_file_artifact_passes_official_tool() {
    let Some((tool, dir)) = mender_artifact_and_scratch() else {
        return;
    };
    let file = scratch_file(dir.path(), "app.conf", b"setting=1\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let spec = module_image_single_file("sf-1", vec!["dev1".into()], &file, "/etc/myapp").unwrap();
    let out = write_to(dir.path(), "sf.mender", spec);
    let text = assert_tool_accepts(&tool, &out, None);
    assert!(
        text.contains("rootfs-image.single-file.version: sf-1"),
        "{text}"
    );
    let info = read_info(std::fs::File::open(&out).unwrap()).unwrap();
    let names: Vec<&str> = info.payload_files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["dest_dir", "filename", "permissions", "app.conf"]);
    assert_eq!(info.payload_types, ["single-file"]);
}

#[test]
fn signed_artifacts_pass_official_tool_and_our_reader() {
    let (Some(tool), Some(openssl)) = (mender_artifact(), openssl()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (KeyKind::Rsa2048Pkcs1, Compression::Gzip, true),
        (KeyKind::Rsa3072Pkcs8, Compression::None, false),
        (KeyKind::Rsa3072Pkcs1, Compression::Gzip, false),
        (KeyKind::P256Sec1, Compression::None, true),
        (KeyKind::P256Pkcs8, Compression::Gzip, false),
        (KeyKind::P256Sec1, Compression::Gzip, true),
    ];
    for (i, (kind, c, module)) in cases.into_iter().enumerate() {
        let (key, public) = gen_key(&openssl, dir.path(), kind);
        let mut spec = if module {
            module_spec(dir.path(), c)
        } else {
            rootfs_spec(dir.path(), c)
        };
        spec.signing_key = Some(SigningKey::from_pem(&std::fs::read(&key).unwrap()).unwrap());
        let out = write_to(dir.path(), &format!("s{i}.mender"), spec);
        assert_tool_accepts(&tool, &out, Some(&public));
        let vk = VerifyKey::from_pem(&std::fs::read(&public).unwrap()).unwrap();
        let info = read_verified(std::fs::File::open(&out).unwrap(), Some(&vk)).unwrap();
        assert_eq!(info.signature, SignatureStatus::Valid, "{kind:?}");
        let info = read_info(std::fs::File::open(&out).unwrap()).unwrap();
        assert_eq!(info.signature, SignatureStatus::Unverified);
        // Raw r||s for ECDSA: 64 bytes -> 88 base64 chars.
        let sig = manifest_member(&std::fs::read(&out).unwrap(), "manifest.sig");
        match kind {
            KeyKind::P256Sec1 | KeyKind::P256Pkcs8 => assert_eq!(sig.len(), 88),
            KeyKind::Rsa2048Pkcs1 => assert_eq!(sig.len(), 344),
            _ => assert_eq!(sig.len(), 512),
        }
    }
}

/// Content of an outer member (small members only), found by walking the tar headers.
fn manifest_member(art: &[u8], name: &str) -> Vec<u8> {
    let (off, size) = member_range(art, name);
    art[off..off + size].to_vec()
}

fn member_range(art: &[u8], name: &str) -> (usize, usize) {
    let mut a = tar::Archive::new(art);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.path_bytes().as_ref() == name.as_bytes() {
            return (e.raw_file_position() as usize, e.size() as usize);
        }
    }
    panic!("member {name} not found");
}

#[test]
fn wrong_key_and_tampered_manifest_fail_everywhere() {
    let (Some(tool), Some(openssl)) = (mender_artifact(), openssl()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (kind, other) in [
        (KeyKind::Rsa2048Pkcs1, KeyKind::P256Sec1),
        (KeyKind::P256Sec1, KeyKind::Rsa2048Pkcs1),
    ] {
        let sub = dir.path().join(format!("{kind:?}"));
        std::fs::create_dir(&sub).unwrap();
        let (key, _public) = gen_key(&openssl, &sub, kind);
        let (_k2, wrong_public) = gen_key(&openssl, &sub, other);
        let (_k3, same_kind_public) = {
            let s2 = sub.join("second");
            std::fs::create_dir(&s2).unwrap();
            gen_key(&openssl, &s2, kind)
        };
        let mut spec = module_spec(&sub, Compression::Gzip);
        spec.signing_key = Some(SigningKey::from_pem(&std::fs::read(&key).unwrap()).unwrap());
        let out = write_to(&sub, "signed.mender", spec);

        for wrong in [&wrong_public, &same_kind_public] {
            let v = validate(&tool, &out, Some(wrong));
            assert!(
                !v.status.success(),
                "validate accepted a wrong key: {}",
                out_text(&v)
            );
            let r = read(&tool, &out, Some(wrong));
            assert!(
                String::from_utf8_lossy(&r.stdout)
                    .contains("verification using provided key failed"),
                "{}",
                out_text(&r)
            );
            let vk = VerifyKey::from_pem(&std::fs::read(wrong).unwrap()).unwrap();
            let err = read_verified(std::fs::File::open(&out).unwrap(), Some(&vk)).unwrap_err();
            assert!(matches!(err, ArtifactError::SignatureInvalid), "{err}");
            let info = read_report(std::fs::File::open(&out).unwrap(), Some(&vk)).unwrap();
            assert_eq!(info.signature, SignatureStatus::Invalid);
        }

        // Tamper: swap the first two manifest lines. Checksums still match, signature must not.
        let (_, public) = (key.clone(), sub.join(format!("{kind:?}.pub.pem")));
        let mut bytes = std::fs::read(&out).unwrap();
        let (off, size) = member_range(&bytes, "manifest");
        let manifest = String::from_utf8(bytes[off..off + size].to_vec()).unwrap();
        let mut lines: Vec<&str> = manifest.lines().collect();
        lines.swap(0, 1);
        let swapped = lines.join("\n") + "\n";
        assert_eq!(swapped.len(), size);
        bytes[off..off + size].copy_from_slice(swapped.as_bytes());
        let tampered = scratch_file(&sub, "tampered.mender", &bytes);
        let v = validate(&tool, &tampered, Some(&public));
        assert!(
            !v.status.success(),
            "validate accepted a tampered manifest: {}",
            out_text(&v)
        );
        let vk = VerifyKey::from_pem(&std::fs::read(&public).unwrap()).unwrap();
        let err = read_verified(std::fs::File::open(&tampered).unwrap(), Some(&vk)).unwrap_err();
        assert!(matches!(err, ArtifactError::SignatureInvalid), "{err}");

        // Tamper a hash digit: the checksum check fails even without a key.
        let mut bytes = std::fs::read(&out).unwrap();
        bytes[off] = if bytes[off] == b'0' { b'1' } else { b'0' };
        std::fs::write(&tampered, &bytes).unwrap();
        let v = validate(&tool, &tampered, Some(&public));
        assert!(
            !v.status.success(),
            "validate accepted a tampered checksum: {}",
            out_text(&v)
        );
        let err = read_info(std::fs::File::open(&tampered).unwrap()).unwrap_err();
        assert!(
            matches!(err, ArtifactError::ChecksumMismatch { .. }),
            "{err}"
        );
    }
}

#[test]
fn header_json_matches_official_tool_bytes() {
    // Same inputs through both writers: header-info and type-info must be byte-identical.
    let Some((tool, dir)) = mender_artifact_and_scratch() else {
        return;
    };
    let f1 = scratch_file(dir.path(), "payload.bin", b"abc");
    let meta_text = r#"{"zz":{"b":[1,"x<y>&z"],"a":true},"aa":null,"n":-3}"#;
    let meta_file = scratch_file(dir.path(), "meta.json", meta_text);
    let theirs = dir.path().join("theirs.mender");
    let o = run(std::process::Command::new(&tool)
        .args(my_module_args(
            "raspberrypi4",
            &[&MY_MODULE_EXTRAS[..], &["-G", "grpB", "-o"]].concat(),
        ))
        .arg(&theirs)
        .arg("-f")
        .arg(&f1)
        .arg("-m")
        .arg(&meta_file));
    assert!(o.status.success(), "{}", out_text(&o));
    let mut spec = my_module_spec(
        vec![PayloadFile::from_path(&f1).unwrap()],
        Some(serde_json::from_str(meta_text).unwrap()),
        true,
    );
    spec.depends_groups = vec!["grpB".into()];
    let ours = write_to(dir.path(), "ours.mender", spec);
    let a = header_members(&std::fs::read(&theirs).unwrap());
    let b = header_members(&std::fs::read(&ours).unwrap());
    assert_eq!(a.len(), 3, "header-info, type-info, meta-data");
    assert_eq!(a, b);
    // Manifest lines differ only if data differs: same file -> identical data line.
    let ma = String::from_utf8(manifest_member(
        &std::fs::read(&theirs).unwrap(),
        "manifest",
    ))
    .unwrap();
    let mb =
        String::from_utf8(manifest_member(&std::fs::read(&ours).unwrap(), "manifest")).unwrap();
    assert_eq!(ma.lines().next(), mb.lines().next());
    assert_eq!(ma.lines().last(), mb.lines().last());
}

/// (name, content) of the entries of `header.tar.gz`.
fn header_members(art: &[u8]) -> Vec<(String, String)> {
    let gz = manifest_member(art, "header.tar.gz");
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()));
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut e, &mut s).unwrap();
        out.push((name, s));
    }
    out
}
