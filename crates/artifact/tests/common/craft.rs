//! One builder for hand-crafted (malformed) artifacts: split a valid artifact into its outer
//! members, edit them (raw names, replaced headers with their manifest line fixed), reassemble.

use menderartifact::*;
use sha2::Digest;
use std::io::{Read, Write};

/// Outer (or inner) tar members in order: (name, content).
pub type Members = Vec<(String, Vec<u8>)>;

/// A valid module artifact from our writer holding `files`, with a fixed mtime.
pub fn module_artifact(compression: Compression, files: Vec<PayloadFile>) -> Vec<u8> {
    let spec = ArtifactSpec {
        compression,
        mtime: Some(1_700_000_000),
        ..ArtifactSpec::new(
            "rel-1",
            vec!["dev1".into()],
            Payload::Module {
                type_name: "single-file".into(),
                files,
                meta_data: None,
            },
        )
    };
    let mut out = Vec::new();
    write_artifact(spec, &mut out).unwrap();
    out
}

/// The members of a tar, names as written (not normalised).
pub fn members(tar_bytes: &[u8]) -> Members {
    let mut a = tar::Archive::new(tar_bytes);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            (name, v)
        })
        .collect()
}

/// A tar header with `name` written raw (tar-rs's `set_path` refuses `..`) and `size`.
pub fn raw_header(name: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(size);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

/// A tar of `members`, names written raw.
pub fn assemble(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        b.append(&raw_header(name, data.len() as u64), data.as_slice())
            .unwrap();
    }
    b.into_inner().unwrap()
}

/// `data` compressed as the artifact's members are (xz at preset 0: fast in debug builds).
pub fn compress(compression: Compression, data: &[u8]) -> Vec<u8> {
    match compression {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Xz => {
            let options = lzma_rust2::XzOptions::with_preset(0);
            let mut w = lzma_rust2::XzWriter::new(Vec::new(), options).unwrap();
            w.write_all(data).unwrap();
            w.finish().unwrap()
        }
    }
}

/// `data` decompressed.
pub fn decompress(compression: Compression, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    compression.decoder(data).read_to_end(&mut out).unwrap();
    out
}

/// Lowercase hex SHA-256, as in the manifest.
pub fn sha_hex(data: &[u8]) -> String {
    format!("{:x}", sha2::Sha256::digest(data))
}

/// The content of member `name`.
pub fn member<'a>(m: &'a [(String, Vec<u8>)], name: &str) -> &'a Vec<u8> {
    &m.iter().find(|(n, _)| n == name).unwrap().1
}

/// The content of member `name`, to edit in place.
pub fn member_mut<'a>(m: &'a mut [(String, Vec<u8>)], name: &str) -> &'a mut Vec<u8> {
    &mut m.iter_mut().find(|(n, _)| n == name).unwrap().1
}

pub fn set_member(m: &mut [(String, Vec<u8>)], name: &str, content: Vec<u8>) {
    *member_mut(m, name) = content;
}

/// Replaces member `name` and its manifest line (as whoever crafts an unsigned artifact can),
/// so that only the member's content is at fault.
pub fn set_header(m: &mut [(String, Vec<u8>)], name: &str, content: Vec<u8>) {
    let line = format!("{}  {name}", sha_hex(&content));
    set_member(m, name, content);
    let man = member_mut(m, "manifest");
    let text = String::from_utf8(man.clone()).unwrap();
    *man = text
        .lines()
        .map(|l| {
            if l.ends_with(&format!("  {name}")) {
                format!("{line}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect::<String>()
        .into_bytes();
}

/// Replaces entry `entry` of the (uncompressed) `header.tar`, fixing the manifest line.
pub fn set_header_entry(m: &mut [(String, Vec<u8>)], entry: &str, content: &[u8]) {
    let mut inner = members(member(m, "header.tar"));
    *member_mut(&mut inner, entry) = content.to_vec();
    set_header(m, "header.tar", assemble(&inner));
}

/// The error reading `bytes` gives (panics if it reads).
pub fn err_of(bytes: &[u8]) -> ArtifactError {
    read_info(bytes).expect_err("crafted artifact was accepted")
}
