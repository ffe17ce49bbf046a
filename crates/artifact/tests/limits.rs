//! The reader refuses, with a specific error: absolute paths and `..` in member names (outer
//! tar, header tar, data tar), members over the documented size limits, and compressed
//! streams that expand past their limits (decompression bombs).

mod common;

use common::craft::*;
use menderartifact::*;

/// A valid artifact from our writer: one small file.
fn valid_artifact(compression: Compression) -> Vec<u8> {
    module_artifact(
        compression,
        vec![PayloadFile::from_bytes("a.txt", b"alpha\n".to_vec(), 0o644)],
    )
}

/// The raw bytes of complete members followed by one bare header (no content, no end).
fn members_then_bare_header(m: &[(String, Vec<u8>)], bare: &str, size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in m {
        out.extend_from_slice(raw_header(name, data.len() as u64).as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(raw_header(bare, size).as_bytes());
    out
}

#[test]
fn traversal_and_absolute_outer_names_are_refused() {
    let art = valid_artifact(Compression::None);
    for bad in ["../version", "/version", "data/../../etc/passwd"] {
        let mut m = members(&art);
        m[0].0 = bad.to_string();
        let err = err_of(&assemble(&m));
        assert!(
            matches!(&err, ArtifactError::UnsafePath { container, name } if container == "the artifact" && name == bad),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains("path traversal"), "{err}");
    }
}

#[test]
fn traversal_in_header_tar_is_refused() {
    let art = valid_artifact(Compression::None);
    let mut m = members(&art);
    let mut inner = members(member(&m, "header.tar"));
    inner.push(("headers/0000/../../../tmp/x".into(), b"{}".to_vec()));
    set_header(&mut m, "header.tar", assemble(&inner));
    let err = err_of(&assemble(&m));
    assert!(
        matches!(&err, ArtifactError::UnsafePath { container, name } if container == "header.tar" && name == "headers/0000/../../../tmp/x"),
        "{err}"
    );
}

#[test]
fn traversal_and_absolute_names_in_data_tar_are_refused() {
    for compression in [Compression::None, Compression::Gzip, Compression::Xz] {
        let art = valid_artifact(compression);
        let data_name = format!("data/0000.tar{}", compression.suffix());
        for bad in ["../a.txt", "/a.txt", "sub/../../a.txt"] {
            let mut m = members(&art);
            let inner = assemble(&[(bad.to_string(), b"alpha\n".to_vec())]);
            set_member(&mut m, &data_name, compress(compression, &inner));
            let err = err_of(&assemble(&m));
            assert!(
                matches!(&err, ArtifactError::UnsafePath { container, name } if *container == data_name && name == bad),
                "{bad}: {err}"
            );
        }
    }
}

#[test]
fn oversize_small_members_are_refused_before_reading() {
    let art = valid_artifact(Compression::None);
    let m = members(&art);
    // A manifest that declares 2 MiB (over the 1 MiB limit); the content is not even there.
    let out = members_then_bare_header(&m[..1], "manifest", 2 << 20);
    let err = err_of(&out);
    assert!(
        matches!(&err, ArtifactError::TooLarge { member, size, limit, .. } if member == "manifest" && *size == 2 << 20 && *limit == MAX_JSON_BYTES),
        "{err}"
    );
    // A header member over 32 MiB.
    let out = members_then_bare_header(&m[..2], "header.tar", MAX_HEADER_BYTES + 1);
    let err = err_of(&out);
    assert!(
        matches!(&err, ArtifactError::TooLarge { member, limit, .. } if member == "header.tar" && *limit == MAX_HEADER_BYTES),
        "{err}"
    );
}

#[test]
fn oversize_json_entry_in_header_is_refused() {
    let art = valid_artifact(Compression::None);
    let mut m = members(&art);
    let big = format!(r#"{{"k":"{}"}}"#, "x".repeat(1 << 20));
    set_header_entry(&mut m, "headers/0000/type-info", big.as_bytes());
    let err = err_of(&assemble(&m));
    assert!(
        matches!(&err, ArtifactError::TooLarge { member, .. } if member == "headers/0000/type-info"),
        "{err}"
    );
}

/// The header tar with a 40 MiB state script of zeros, compressed small: gzip as 40
/// members of 1 MiB of zeros each (cheap to build in debug builds), xz as one stream.
fn header_bomb(compression: Compression, header_tar: &[u8]) -> Vec<u8> {
    let mut inner = members(header_tar);
    let script_size: u64 = 40 << 20;
    let mut prefix = Vec::new();
    let (hi_name, hi) = &inner[0];
    prefix.extend_from_slice(raw_header(hi_name, hi.len() as u64).as_bytes());
    prefix.extend_from_slice(hi);
    prefix.resize(prefix.len().div_ceil(512) * 512, 0);
    prefix
        .extend_from_slice(raw_header("scripts/ArtifactInstall_Enter_00", script_size).as_bytes());
    let rest = assemble(&inner.split_off(1));
    match compression {
        Compression::Gzip => {
            let mut bomb = compress(compression, &prefix);
            let zeros = compress(compression, &vec![0u8; 1 << 20]);
            for _ in 0..40 {
                bomb.extend_from_slice(&zeros);
            }
            bomb.extend_from_slice(&compress(compression, &rest));
            bomb
        }
        _ => {
            prefix.resize(prefix.len() + script_size as usize, 0);
            prefix.extend_from_slice(&rest);
            compress(compression, &prefix)
        }
    }
}

/// Per compressed form (gzip, xz): the members of a valid artifact, the name of its member
/// `base` plus the suffix, and that member decompressed.
fn compressed_cases(base: &str) -> Vec<(Compression, Members, String, Vec<u8>)> {
    [Compression::Gzip, Compression::Xz]
        .into_iter()
        .map(|compression| {
            let m = members(&valid_artifact(compression));
            let name = format!("{base}{}", compression.suffix());
            let plain = decompress(compression, member(&m, &name));
            (compression, m, name, plain)
        })
        .collect()
}

#[test]
fn header_decompression_bombs_are_refused() {
    // 40 MiB of zeros in a state script compress to a few KiB: over the 32 MiB limit for
    // the decompressed header.
    for (compression, mut m, name, header_tar) in compressed_cases("header.tar") {
        let bomb = header_bomb(compression, &header_tar);
        assert!(bomb.len() < 1 << 20, "{name}: {}", bomb.len());
        set_header(&mut m, &name, bomb);
        let err = err_of(&assemble(&m));
        assert!(
            matches!(&err, ArtifactError::DecompressionBomb { member, limit, .. } if *member == name && *limit == MAX_HEADER_BYTES),
            "{name}: {err}"
        );
        assert!(
            err.to_string().contains("decompression bomb"),
            "{name}: {err}"
        );
    }
}

#[test]
fn endless_data_after_an_inner_tar_is_refused() {
    // A valid data tar followed by 4 MiB of zeros inside the same compressed stream.
    for (compression, mut m, name, data_tar) in compressed_cases("data/0000.tar") {
        let fresh = m.clone();
        let mut endless = data_tar.clone();
        endless.extend(std::iter::repeat_n(0u8, 4 << 20));
        set_member(&mut m, &name, compress(compression, &endless));
        let err = err_of(&assemble(&m));
        assert!(
            matches!(&err, ArtifactError::DecompressionBomb { member, limit, .. } if *member == name && *limit == 1 << 20),
            "{name}: {err}"
        );
        if compression == Compression::Gzip {
            // GNU tar's record padding (to 10 KiB) is not a bomb.
            let mut padded = data_tar;
            padded.resize(padded.len().div_ceil(10240) * 10240, 0);
            let mut m = fresh;
            set_member(&mut m, &name, compress(compression, &padded));
            read_info(assemble(&m).as_slice()).expect("record padding is accepted");
        }
    }
}

#[test]
fn writer_refuses_headers_the_reader_would_refuse() {
    let spec = |scripts: Vec<PayloadFile>,
                meta: Option<serde_json::Map<String, serde_json::Value>>| {
        let mut s = ArtifactSpec::new(
            "rel-1",
            vec!["dev1".into()],
            Payload::Module {
                type_name: "single-file".into(),
                files: vec![],
                meta_data: meta,
            },
        );
        s.scripts = scripts;
        s
    };
    let script = |name: &str| PayloadFile::from_bytes(name, vec![b'#'; 16 << 20], 0o755);
    let err = write_artifact(
        spec(
            vec![
                script("ArtifactInstall_Enter_00"),
                script("ArtifactInstall_Enter_01"),
            ],
            None,
        ),
        std::io::sink(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ArtifactError::InvalidSpec(s) if s.contains("state scripts total")),
        "{err}"
    );
    let mut meta = serde_json::Map::new();
    meta.insert("k".into(), "x".repeat(MAX_JSON_BYTES as usize).into());
    let err = write_artifact(spec(vec![], Some(meta)), std::io::sink()).unwrap_err();
    assert!(
        matches!(&err, ArtifactError::InvalidSpec(s) if s.contains("meta-data is")),
        "{err}"
    );
}

#[test]
fn corrupt_xz_member_is_a_clear_error() {
    let art = valid_artifact(Compression::Xz);
    let mut m = members(&art);
    let data = member_mut(&mut m, "data/0000.tar.xz");
    let mid = data.len() / 2;
    data[mid] ^= 0x55;
    let err = err_of(&assemble(&m));
    let text = err.to_string();
    assert!(text.contains("data/0000.tar.xz"), "{text}");
}

#[test]
fn xz_with_a_huge_dictionary_is_refused_before_allocating() {
    // An LZMA2 block header that declares a 2 GiB dictionary: refused by the decoder's
    // memory limit, not allocated.
    let art = valid_artifact(Compression::Xz);
    let m = members(&art);
    let data = member(&m, "data/0000.tar.xz").clone();
    // After the 12-byte stream header, the block header: size byte, flags, (optional sizes),
    // filter id 0x21 (LZMA2), props size 1, dictionary byte, padding, CRC32.
    let hsize = (data[12] as usize + 1) * 4;
    let pos = 12
        + data[12..12 + hsize]
            .windows(2)
            .position(|w| w == [0x21, 0x01])
            .expect("lzma2 filter flags");
    let mut bad = data.clone();
    bad[pos + 2] = 38; // (2 | 0) << (19 + 11): 2 GiB
                       // Recompute the block header's CRC32 so only the dictionary size is at fault.
    let crc = crc32(&bad[12..12 + hsize - 4]);
    bad[12 + hsize - 4..12 + hsize].copy_from_slice(&crc.to_le_bytes());
    let mut m = m;
    set_member(&mut m, "data/0000.tar.xz", bad);
    let err = err_of(&assemble(&m));
    assert!(err.to_string().contains("data/0000.tar.xz"), "{err}");
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
