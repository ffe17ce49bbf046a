//! Our reader must read artifacts written by the official `mender-artifact` 3.9 tool:
//! module-image and rootfs-image, gzip, none and lzma (xz), unsigned and signed (RSA, ECDSA P-256).

mod common;

use common::*;
use menderartifact::*;
use sha2::Digest;
use std::path::Path;
use std::process::Command;
use test_support::{gen_key, KeyKind};

fn sha_hex(data: &[u8]) -> String {
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn write_official(tool: &Path, args: &[&str], extra: &[&std::ffi::OsStr]) {
    let o = run(Command::new(tool).args(args).args(extra));
    assert!(
        o.status.success(),
        "mender-artifact {args:?} failed: {}",
        out_text(&o)
    );
}

/// The official tool's rootfs-image artifact `out` of `img` (device type `dev1`).
fn write_official_rootfs(tool: &Path, name: &str, compression: &str, img: &Path, out: &Path) {
    let mut cmd = test_support::official_rootfs_write(tool, name, "dev1", img, out);
    cmd.args(["--compression", compression]);
    let o = run(&mut cmd);
    assert!(o.status.success(), "{cmd:?} failed: {}", out_text(&o));
}

#[test]
fn reads_official_module_and_rootfs_artifacts() {
    let Some((tool, dir)) = mender_artifact_and_scratch() else {
        return;
    };
    let d = dir.path();
    let f1 = scratch_file(d, "file1.txt", b"one\n");
    let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let f2 = scratch_file(d, "file2.bin", &blob);
    let meta = scratch_file(d, "meta.json", br#"{"b":2,"a":{"x":"y"}}"#);
    let script = scratch_file(d, "ArtifactInstall_Enter_00", b"#!/bin/sh\nexit 0\n");
    let img = scratch_file(d, "img.ext4", vec![0x5au8; 300_000]);

    for compression in ["gzip", "none"] {
        let m = d.join(format!("m-{compression}.mender"));
        write_official(
            &tool,
            &my_module_args(
                "rpi4",
                &[&["--compression", compression][..], &MY_MODULE_EXTRAS].concat(),
            ),
            &[
                "-f".as_ref(),
                f1.as_os_str(),
                "-f".as_ref(),
                f2.as_os_str(),
                "-m".as_ref(),
                meta.as_os_str(),
                "-s".as_ref(),
                script.as_os_str(),
                "-o".as_ref(),
                m.as_os_str(),
            ],
        );
        let info = read_info(std::fs::File::open(&m).unwrap()).unwrap();
        assert_eq!(info.name, "rel-2");
        assert_eq!(info.group.as_deref(), Some("grpA"));
        assert_eq!(info.device_types, ["qemux86-64", "rpi4"]);
        assert_eq!(info.payload_types, ["my-module"]);
        assert_eq!(info.provides["artifact_name"], "rel-2");
        assert_eq!(info.provides["artifact_group"], "grpA");
        assert_eq!(info.provides["custom.key"], "val1");
        assert_eq!(info.provides["rootfs-image.my-module.version"], "rel-2");
        assert_eq!(info.depends["dep.key"], "dval");
        assert_eq!(
            info.depends["device_type"],
            serde_json::json!(["qemux86-64", "rpi4"])
        );
        assert_eq!(info.depends["artifact_name"], serde_json::json!(["rel-1"]));
        assert_eq!(info.clears_provides, ["foo.*", "rootfs-image.my-module.*"]);
        assert_eq!(info.scripts, ["ArtifactInstall_Enter_00"]);
        assert_eq!(info.meta_data[0].as_ref().unwrap()["b"], 2);
        assert_eq!(info.signature, SignatureStatus::Unsigned);
        let files: Vec<(&str, u64)> = info
            .payload_files
            .iter()
            .map(|f| (f.name.as_str(), f.size))
            .collect();
        assert_eq!(files, [("file1.txt", 4), ("file2.bin", 200_000)]);
        assert_eq!(info.payload_files[1].sha256, sha_hex(&blob));

        let r = d.join(format!("r-{compression}.mender"));
        write_official_rootfs(&tool, "rootfs-1", compression, &img, &r);
        let info = read_info(std::fs::File::open(&r).unwrap()).unwrap();
        // 3.9 writes the legacy `"type":""`; we report it as rootfs-image.
        assert_eq!(info.payload_types, ["rootfs-image"]);
        assert_eq!(info.provides["rootfs-image.version"], "rootfs-1");
        assert_eq!(
            info.provides["rootfs-image.checksum"],
            sha_hex(&vec![0x5au8; 300_000])
        );
        assert_eq!(info.payload_files.len(), 1);
    }
}

#[test]
fn reads_official_signed_artifacts() {
    let (Some(tool), Some(openssl)) = (mender_artifact(), openssl()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f1 = scratch_file(d, "payload.bin", b"signed payload\n");
    for (i, kind) in [
        KeyKind::Rsa2048Pkcs1,
        KeyKind::Rsa3072Pkcs1,
        KeyKind::P256Sec1,
    ]
    .into_iter()
    .enumerate()
    {
        let (key, public) = gen_key(&openssl, d, kind);
        let compression = if i % 2 == 0 { "gzip" } else { "none" };
        let m = d.join(format!("s{i}.mender"));
        write_official(
            &tool,
            &[
                "write",
                "module-image",
                "--compression",
                compression,
                "-T",
                "single-file",
                "-n",
                "s-1",
                "-t",
                "dev1",
            ],
            &[
                "-f".as_ref(),
                f1.as_os_str(),
                "-k".as_ref(),
                key.as_os_str(),
                "-o".as_ref(),
                m.as_os_str(),
            ],
        );
        let vk = VerifyKey::from_pem(&std::fs::read(&public).unwrap()).unwrap();
        let info = read_verified(std::fs::File::open(&m).unwrap(), Some(&vk)).unwrap();
        assert_eq!(info.signature, SignatureStatus::Valid, "{kind:?}");
        assert_eq!(
            read_info(std::fs::File::open(&m).unwrap())
                .unwrap()
                .signature,
            SignatureStatus::Unverified
        );

        // A different key of another type must not verify.
        let other = if matches!(kind, KeyKind::P256Sec1) {
            KeyKind::Rsa2048Pkcs1
        } else {
            KeyKind::P256Pkcs8
        };
        let sub = d.join(format!("other{i}"));
        std::fs::create_dir(&sub).unwrap();
        let (_, wrong) = gen_key(&openssl, &sub, other);
        let wk = VerifyKey::from_pem(&std::fs::read(&wrong).unwrap()).unwrap();
        assert!(matches!(
            read_verified(std::fs::File::open(&m).unwrap(), Some(&wk)),
            Err(ArtifactError::SignatureInvalid)
        ));
        assert_eq!(
            read_report(std::fs::File::open(&m).unwrap(), Some(&wk))
                .unwrap()
                .signature,
            SignatureStatus::Invalid
        );
    }
}

#[test]
fn reads_official_lzma_rootfs_and_module_artifacts() {
    let Some((tool, dir)) = mender_artifact_and_scratch() else {
        return;
    };
    let d = dir.path();
    let root = d.join("root");
    std::fs::create_dir_all(root.join("etc/mender")).unwrap();
    std::fs::write(root.join("etc/mender/mender.conf"), b"{}\n").unwrap();
    let blob: Vec<u8> = (0..300_000u32)
        .flat_map(|i| (i % 251).to_le_bytes())
        .collect();
    std::fs::write(root.join("blob"), &blob).unwrap();
    let img = d.join("rootfs.ext4");
    if test_support::mkfs_ext4(
        "reads_official_lzma_rootfs_and_module_artifacts",
        &root,
        &img,
        "4M",
    )
    .is_none()
    {
        return;
    }
    let image = std::fs::read(&img).unwrap();

    let r = d.join("r-lzma.mender");
    write_official_rootfs(&tool, "rootfs-xz", "lzma", &img, &r);
    let mut streamed = Vec::new();
    let info = read_payloads(std::fs::File::open(&r).unwrap(), None, |_, content| {
        content.read_to_end(&mut streamed)?;
        Ok(())
    })
    .unwrap();
    assert_eq!(info.provides["rootfs-image.version"], "rootfs-xz");
    assert_eq!(info.provides["rootfs-image.checksum"], sha_hex(&image));
    assert_eq!(info.payload_files.len(), 1);
    assert_eq!(info.payload_files[0].size, image.len() as u64);
    assert!(streamed == image, "streamed payload differs from the image");

    let f1 = scratch_file(d, "payload.bin", b"x");
    let m = d.join("m-lzma.mender");
    write_official(
        &tool,
        &[
            "write",
            "module-image",
            "--compression",
            "lzma",
            "-T",
            "t",
            "-n",
            "n",
            "-t",
            "dev1",
        ],
        &["-f".as_ref(), f1.as_os_str(), "-o".as_ref(), m.as_os_str()],
    );
    let info = read_info(std::fs::File::open(&m).unwrap()).unwrap();
    assert_eq!(info.payload_files[0].sha256, sha_hex(b"x"));
}
