//! Our gzip members (one per 1 MiB block, stored where data does not compress) are read by
//! every reader that matters: `mender-artifact` 3.9 (Go's gzip, as in the 3.x client),
//! libarchive's `bsdtar` (the reader of the 4.x/5.x client), GNU gzip, and our own reader.

mod common;

use common::*;
use menderartifact::*;
use std::path::Path;
use std::process::Command;

/// 3.5 MiB: text, random (stored) and zero blocks, so the stream has compressed and stored
/// members and a short last one.
fn payload() -> Vec<u8> {
    let mut data: Vec<u8> = b"a line of text for the image\n"
        .iter()
        .cycle()
        .take(1 << 20)
        .copied()
        .collect();
    let mut x = 0x2545f491u32;
    data.extend((0..(1 << 20)).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        (x >> 24) as u8
    }));
    data.resize(data.len() + (3 << 19), 0);
    data
}

fn write_rootfs(dir: &Path, data: &[u8]) -> std::path::PathBuf {
    let img = scratch_file(dir, "rootfs.ext4", data);
    let spec = ArtifactSpec::new(
        "rootfs-1",
        vec!["dev1".into()],
        Payload::RootfsImage {
            file: PayloadFile::from_path(&img).unwrap(),
        },
    );
    let out = dir.join("rootfs.mender");
    write_artifact_to_path(spec, &out).unwrap();
    out
}

fn bsdtar_extract(bsdtar: &Path, archive: &Path, into: &Path, members: &[&str]) {
    std::fs::create_dir_all(into).unwrap();
    let o = run(Command::new(bsdtar)
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .args(members));
    assert!(
        o.status.success(),
        "bsdtar -xf {} failed: {}",
        archive.display(),
        out_text(&o)
    );
}

#[test]
fn bsdtar_reads_our_multi_member_gzip() {
    let Some(bsdtar) = tool("bsdtar", "libarchive-tools") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = payload();
    let art = write_rootfs(dir.path(), &data);
    let outer = dir.path().join("outer");
    bsdtar_extract(
        &bsdtar,
        &art,
        &outer,
        &["header.tar.gz", "data/0000.tar.gz"],
    );
    let inner = dir.path().join("inner");
    bsdtar_extract(&bsdtar, &outer.join("data/0000.tar.gz"), &inner, &[]);
    let back = std::fs::read(inner.join("rootfs.ext4")).unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "bsdtar extracted different payload bytes");
    let header = dir.path().join("header");
    bsdtar_extract(&bsdtar, &outer.join("header.tar.gz"), &header, &[]);
    let type_info = std::fs::read_to_string(header.join("headers/0000/type-info")).unwrap();
    assert!(
        type_info.contains(r#""type":"rootfs-image""#),
        "{type_info}"
    );
}

#[test]
fn mender_artifact_and_gnu_gzip_read_our_multi_member_gzip() {
    let Some(tool_path) = mender_artifact() else {
        return;
    };
    let Some(gzip) = tool("gzip", "gzip") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = payload();
    let art = write_rootfs(dir.path(), &data);
    // validate decompresses the whole payload with Go's gzip reader and checks its hash.
    let v = validate(&tool_path, &art, None);
    assert!(v.status.success(), "validate: {}", out_text(&v));
    let r = read(&tool_path, &art, None);
    assert!(r.status.success(), "read: {}", out_text(&r));
    // GNU gzip: the data member decompresses to a tar holding our bytes.
    let members = {
        let mut a = tar::Archive::new(std::fs::File::open(&art).unwrap());
        let mut gz = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path_bytes().as_ref() == b"data/0000.tar.gz" {
                std::io::Read::read_to_end(&mut e, &mut gz).unwrap();
            }
        }
        gz
    };
    let gz_path = scratch_file(dir.path(), "data.tar.gz", &members);
    let o = run(Command::new(&gzip).arg("-t").arg(&gz_path));
    assert!(o.status.success(), "gzip -t: {}", out_text(&o));
    let o = run(Command::new(&gzip).arg("-dc").arg(&gz_path));
    assert!(o.status.success(), "gzip -dc: {}", out_text(&o));
    let mut a = tar::Archive::new(o.stdout.as_slice());
    let mut e = a.entries().unwrap().next().unwrap().unwrap();
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut e, &mut back).unwrap();
    assert!(back == data, "gzip -dc gave different payload bytes");
    // And our reader.
    let info = read_info(std::fs::File::open(&art).unwrap()).unwrap();
    assert_eq!(info.payload_files[0].size, data.len() as u64);
}

#[test]
fn rootfs_written_in_place_equals_rootfs_written_as_a_stream() {
    // write_artifact_to_path writes a rootfs artifact in place (gzip-stored header, prefix
    // written last); write_artifact streams it. Same content, both valid, signed or not.
    let dir = tempfile::tempdir().unwrap();
    let data = payload();
    let img = scratch_file(dir.path(), "rootfs.ext4", &data);
    let key = SigningKey::EcdsaP256(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng));
    let spec = |signed: bool| {
        let mut s = ArtifactSpec::new(
            "rootfs-1",
            vec!["dev1".into()],
            Payload::RootfsImage {
                file: PayloadFile::from_path(&img).unwrap(),
            },
        );
        s.mtime = Some(1_700_000_000);
        s.scripts = vec![PayloadFile::from_bytes(
            "ArtifactInstall_Enter_00",
            b"#!/bin/sh\ntrue\n".to_vec(),
            0o755,
        )];
        if signed {
            s.signing_key = Some(key.clone());
        }
        s
    };
    for signed in [false, true] {
        let in_place = dir.path().join(format!("in-place-{signed}.mender"));
        write_artifact_to_path(spec(signed), &in_place).unwrap();
        let mut streamed = Vec::new();
        write_artifact(spec(signed), &mut streamed).unwrap();
        let a = read_info(std::fs::File::open(&in_place).unwrap()).unwrap();
        let b = read_info(streamed.as_slice()).unwrap();
        assert_eq!(a.provides, b.provides);
        assert_eq!(a.payload_files, b.payload_files);
        assert_eq!(a.scripts, b.scripts);
        assert_eq!(a.signature, b.signature);
        // Signed in-place rootfs artifacts are validated with keys in official_tool.rs.
        if let (false, Some(tool_path)) = (signed, mender_artifact()) {
            let v = validate(&tool_path, &in_place, None);
            assert!(v.status.success(), "validate: {}", out_text(&v));
        }
    }
}
