//! Malformed artifacts (truncated, bad checksums, missing or misordered members, bad JSON,
//! bad manifest lines) must be rejected with a specific error; invalid specs too.

mod common;

use common::craft::*;
use menderartifact::*;

/// A valid uncompressed module artifact (easy to edit byte-wise).
fn valid_artifact() -> Vec<u8> {
    module_artifact(
        Compression::None,
        vec![
            PayloadFile::from_bytes("a.txt", b"alpha\n".to_vec(), 0o644),
            PayloadFile::from_bytes("b.bin", vec![7u8; 5000], 0o600),
        ],
    )
}

/// The error reading the valid artifact after `edit` changed its outer members.
fn err_after(edit: impl FnOnce(&mut Members)) -> ArtifactError {
    let mut m = members(&valid_artifact());
    edit(&mut m);
    err_of(&assemble(&m))
}

#[test]
fn valid_artifact_reads() {
    let info = read_info(valid_artifact().as_slice()).unwrap();
    assert_eq!(info.name, "rel-1");
    assert_eq!(info.payload_files[1].sha256, sha_hex(&[7u8; 5000]));
}

#[test]
fn truncated_anywhere_is_rejected() {
    let art = valid_artifact();
    // Cut inside every member and at member boundaries; none may read successfully.
    for cut in (0..art.len() - 1024).step_by(97) {
        assert!(
            read_info(&art[..cut]).is_err(),
            "truncated at {cut} was accepted"
        );
    }
    let m = members(&art);
    let data_start = art.len() - 1024 - m.last().unwrap().1.len().div_ceil(512) * 512;
    let err = err_of(&art[..data_start + 700]);
    assert!(matches!(err, ArtifactError::Truncated(_)), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
}

#[test]
fn lenient_tar_framing_is_accepted() {
    // Like the Go reader: no end-of-archive blocks, or extra record padding, is fine.
    let art = valid_artifact();
    read_info(&art[..art.len() - 1024]).unwrap();
    let mut padded = art.clone();
    padded.resize(art.len().div_ceil(10240) * 10240 + 10240, 0);
    read_info(padded.as_slice()).unwrap();
    // GNU-format outer headers (what `tar::Builder` writes by default).
    let m = members(&art);
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in &m {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, data.as_slice()).unwrap();
    }
    read_info(b.into_inner().unwrap().as_slice()).unwrap();
}

#[test]
fn bad_payload_checksum() {
    let err = err_after(|m| {
        let data = member_mut(m, "data/0000.tar");
        data[512 + 2] ^= 1; // first byte of content of a.txt is at 512
    });
    match err {
        ArtifactError::ChecksumMismatch { name, .. } => assert_eq!(name, "data/0000/a.txt"),
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn bad_header_and_version_checksums() {
    let err = err_after(|m| {
        let h = member_mut(m, "header.tar");
        let pos = h.len() - 1030; // inside the last entry's content region or padding
        h[pos] ^= 0x20;
    });
    assert!(
        matches!(&err, ArtifactError::ChecksumMismatch { name, .. } if name == "header.tar")
            || matches!(
                &err,
                ArtifactError::Malformed(_) | ArtifactError::InvalidJson { .. }
            ),
        "{err}"
    );

    let err = err_after(|m| m[0].1 = br#"{"format":"mender","version":3} "#.to_vec());
    assert!(
        matches!(&err, ArtifactError::ChecksumMismatch { name, .. } if name == "version"),
        "{err}"
    );
}

#[test]
fn missing_members() {
    let m = members(&valid_artifact());
    let without =
        |name: &str| -> Members { m.iter().filter(|(n, _)| n != name).cloned().collect() };
    type Check = fn(&ArtifactError) -> bool;
    let cases: [(&str, Members, Check); 5] = [
        (
            "no version",
            without("version"),
            |err| matches!(err, ArtifactError::UnexpectedMember { expected, found } if expected == "version" && found == "manifest"),
        ),
        (
            "no manifest",
            without("manifest"),
            |err| matches!(err, ArtifactError::UnexpectedMember { expected, found } if expected == "manifest" && found == "header.tar"),
        ),
        (
            "no header.tar",
            without("header.tar"),
            |err| matches!(err, ArtifactError::UnexpectedMember { found, .. } if found == "data/0000.tar"),
        ),
        (
            "no data/0000.tar",
            without("data/0000.tar"),
            |err| matches!(err, ArtifactError::MissingFromArtifact(v) if v == &["data/0000/a.txt", "data/0000/b.bin"]),
        ),
        (
            "version and manifest only",
            m[..2].to_vec(),
            |err| matches!(err, ArtifactError::MissingMember(n) if n == "header.tar.gz"),
        ),
    ];
    for (case, members, check) in cases {
        let err = err_of(&assemble(&members));
        assert!(check(&err), "{case}: {err}");
    }
    assert!(matches!(err_of(b""), ArtifactError::Malformed(_)));
    assert!(
        matches!(err_of(&[b'x'; 2048]), ArtifactError::Malformed(_)),
        "{}",
        err_of(&[b'x'; 2048])
    );
}

#[test]
fn wrong_member_order() {
    let err = err_after(|m| m.swap(2, 3)); // data before header
    assert!(
        matches!(&err, ArtifactError::UnexpectedMember { found, .. } if found == "data/0000.tar"),
        "{err}"
    );
    assert!(matches!(
        err_after(|m| m.swap(0, 1)),
        ArtifactError::UnexpectedMember { .. }
    ));
    let err = err_after(|m| m.push(("README".into(), b"hi".to_vec())));
    assert!(
        matches!(&err, ArtifactError::UnexpectedMember { found, .. } if found == "README"),
        "{err}"
    );
}

#[test]
fn bad_json() {
    let m = members(&valid_artifact());
    type Check = fn(&ArtifactError) -> bool;
    let cases: [(&str, &str, &[u8], Check); 5] = [
        (
            "truncated header-info",
            "header-info",
            br#"{"payloads":[{"type":"x"}"#,
            |e| matches!(e, ArtifactError::InvalidJson { member, .. } if member == "header-info"),
        ),
        (
            "unknown field in header-info",
            "header-info",
            br#"{"payloads":[{"type":"x"}],"artifact_provides":{"artifact_name":"a"},"artifact_depends":{"device_type":["d"]},"extra":1}"#,
            |e| e.to_string().contains("unknown field `extra`"),
        ),
        (
            "header-info without device_type",
            "header-info",
            br#"{"payloads":[{"type":"x"}],"artifact_provides":{"artifact_name":"a"},"artifact_depends":{}}"#,
            |e| e.to_string().contains("device_type"),
        ),
        (
            "truncated type-info",
            "headers/0000/type-info",
            b"{\"type\":",
            |e| matches!(e, ArtifactError::InvalidJson { member, .. } if member == "headers/0000/type-info"),
        ),
        (
            "list-valued provide in type-info",
            "headers/0000/type-info",
            br#"{"type":"x","artifact_provides":{"k":["list"]}}"#,
            |e| e.to_string().contains("provide 'k' is not a string"),
        ),
    ];
    for (case, entry, content, check) in cases {
        let mut bad = m.clone();
        set_header_entry(&mut bad, entry, content);
        let err = err_of(&assemble(&bad));
        assert!(check(&err), "{case}: {err}");
    }

    let mut bad = m.clone();
    bad[0].1 = br#"{"format":"mender","version":4}"#.to_vec();
    let man = String::from_utf8(bad[1].1.clone()).unwrap();
    let man = man.replace(
        &sha_hex(br#"{"format":"mender","version":3}"#),
        &sha_hex(&bad[0].1),
    );
    bad[1].1 = man.into_bytes();
    let err = err_of(&assemble(&bad));
    assert!(
        matches!(&err, ArtifactError::Unsupported(s) if s.contains("version 4")),
        "{err}"
    );
}

#[test]
fn bad_manifest_lines() {
    let m = members(&valid_artifact());
    let manifest = String::from_utf8(m[1].1.clone()).unwrap();
    let with_manifest = |text: String| {
        let mut v = m.clone();
        v[1].1 = text.into_bytes();
        assemble(&v)
    };
    let cases: Vec<(String, &str)> = vec![
        (manifest.replacen("  ", " ", 1), "two spaces"),
        (manifest.trim_end().to_string(), "newline"),
        (manifest.replace('\n', "\r\n"), "carriage return"),
        (
            manifest
                .to_uppercase()
                .replace("DATA/0000/", "data/0000/")
                .replace("HEADER.TAR", "header.tar")
                .replace("VERSION", "version"),
            "lowercase hex",
        ),
        (
            format!(
                "{manifest}{}",
                manifest.lines().next().unwrap().to_string() + "\n"
            ),
            "duplicate",
        ),
    ];
    for (text, needle) in cases {
        let err = err_of(&with_manifest(text));
        assert!(
            matches!(err, ArtifactError::InvalidManifest { .. }),
            "{err}"
        );
        assert!(err.to_string().contains(needle), "'{err}' lacks '{needle}'");
    }
    let ghost = format!("{manifest}{}  data/0000/ghost.bin\n", "0".repeat(64));
    let err = err_of(&with_manifest(ghost));
    assert!(
        matches!(&err, ArtifactError::MissingFromArtifact(v) if v == &["data/0000/ghost.bin"]),
        "{err}"
    );
    let without_line = |suffix: &str| -> String {
        manifest
            .lines()
            .filter(|l| !l.ends_with(suffix))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let err = err_of(&with_manifest(without_line("b.bin")));
    assert!(
        matches!(&err, ArtifactError::NotInManifest(n) if n == "data/0000/b.bin"),
        "{err}"
    );
    let err = err_of(&with_manifest(without_line("header.tar")));
    assert!(
        matches!(&err, ArtifactError::NotInManifest(n) if n == "header.tar"),
        "{err}"
    );
}

#[test]
fn invalid_specs_are_rejected_before_writing() {
    let mk = |name: &str, devs: Vec<String>, file: &str| {
        ArtifactSpec::new(
            name,
            devs,
            Payload::Module {
                type_name: "t".into(),
                files: vec![PayloadFile::from_bytes(file, b"x".to_vec(), 0o644)],
                meta_data: None,
            },
        )
    };
    for (spec, needle) in [
        (mk("has space", vec!["d".into()], "f"), "whitespace"),
        (mk("", vec!["d".into()], "f"), "must not be empty"),
        (mk("n", vec![], "f"), "device type"),
        (mk("n", vec!["d".into()], "pay load.bin"), "invalid"),
        (mk("n", vec!["d".into()], "sub/x"), "invalid"),
    ] {
        let mut out = Vec::new();
        let err = write_artifact(spec, &mut out).unwrap_err();
        assert!(matches!(err, ArtifactError::InvalidSpec(_)), "{err}");
        assert!(err.to_string().contains(needle), "'{err}' lacks '{needle}'");
        assert!(out.is_empty(), "bytes were written for an invalid spec");
    }
    for bad in [
        "ArtifactInstall_Enter_0",
        "ArtifactDownload_Enter_00",
        "Sync_Enter_00",
        "ArtifactInstall_Start_00",
        "ArtifactInstall_Enter_00_",
    ] {
        let mut spec = mk("n", vec!["d".into()], "f");
        spec.scripts = vec![PayloadFile::from_bytes(bad, b"#!/bin/sh\n".to_vec(), 0o755)];
        let err = write_artifact(spec, &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string().contains("state script name"),
            "{bad}: {err}"
        );
    }
    // A reader that is shorter or longer than declared.
    for (content, size) in [(vec![1u8; 10], 11u64), (vec![1u8; 10], 9u64)] {
        let spec = ArtifactSpec::new(
            "n",
            vec!["d".into()],
            Payload::Module {
                type_name: "t".into(),
                files: vec![PayloadFile::from_reader(
                    "f",
                    Box::new(std::io::Cursor::new(content)),
                    size,
                    0o644,
                )],
                meta_data: None,
            },
        );
        let mut out = Vec::new();
        let err = write_artifact(spec, &mut out).unwrap_err();
        assert!(err.to_string().contains("bytes"), "{err}");
    }
    // write_artifact_to_path leaves nothing behind on failure.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out.mender");
    assert!(write_artifact_to_path(mk("a b", vec!["d".into()], "f"), &target).is_err());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn streaming_reader_source_roundtrip() {
    // A payload from a plain io::Read (not seekable), gzip, read back with matching hashes.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 97) as u8).collect();
    let spec = ArtifactSpec::new(
        "n",
        vec!["d".into()],
        Payload::RootfsImage {
            file: PayloadFile::from_reader(
                "img.ext4",
                Box::new(std::io::Cursor::new(data.clone())),
                data.len() as u64,
                0o644,
            ),
        },
    );
    let mut out = Vec::new();
    write_artifact(spec, &mut out).unwrap();
    let info = read_info(out.as_slice()).unwrap();
    assert_eq!(info.payload_files[0].sha256, sha_hex(&data));
    assert_eq!(info.payload_files[0].size, data.len() as u64);
    assert_eq!(info.provides["rootfs-image.checksum"], sha_hex(&data));
    assert_eq!(info.payload_types, ["rootfs-image"]);
}
