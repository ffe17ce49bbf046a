//! Our tar header bytes equal the official tool's (`mender-artifact` 3.9): every outer
//! member, every entry of the header tar and of the data tar, and the end-of-archive marker,
//! for a module-image and a rootfs-image artifact written from the same inputs.

mod common;

use common::*;
use menderartifact::*;
use std::path::Path;
use std::process::Command;

/// One tar member: its raw 512-byte header and its content.
struct RawMember {
    name: String,
    header: [u8; 512],
    content: Vec<u8>,
}

fn octal(field: &[u8]) -> u64 {
    let s = String::from_utf8_lossy(field);
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    u64::from_str_radix(s, 8).unwrap_or_else(|_| panic!("bad octal field {field:?}"))
}

/// Walks a tar by hand (no tar library, so the bytes are seen as written); returns the
/// members and the bytes after the last member.
fn raw_members(tar: &[u8]) -> (Vec<RawMember>, Vec<u8>) {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 512 <= tar.len() && tar[off..off + 512].iter().any(|&b| b != 0) {
        let header: [u8; 512] = tar[off..off + 512].try_into().unwrap();
        let name_end = header[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&header[..name_end]).into_owned();
        let size = octal(&header[124..136]) as usize;
        let start = off + 512;
        out.push(RawMember {
            name,
            header,
            content: tar[start..start + size].to_vec(),
        });
        off = start + size.div_ceil(512) * 512;
    }
    (out, tar[off..].to_vec())
}

const SIZE: std::ops::Range<usize> = 124..136;
const CHKSUM: std::ops::Range<usize> = 148..156;

/// Compares two headers byte for byte; size and checksum only when the contents have the
/// same length (compressed members and a legacy type-info differ in length, not in form).
fn assert_same_header(what: &str, ours: &RawMember, theirs: &RawMember) {
    assert_eq!(ours.name, theirs.name, "{what}: member order");
    let mut a = ours.header;
    let mut b = theirs.header;
    if ours.content.len() != theirs.content.len() {
        for r in [SIZE, CHKSUM] {
            a[r.clone()].fill(0);
            b[r].fill(0);
        }
    }
    assert!(
        a == b,
        "{what}: tar header of '{}' differs\n ours:   {:?}\n theirs: {:?}",
        ours.name,
        String::from_utf8_lossy(&ours.header),
        String::from_utf8_lossy(&theirs.header)
    );
}

fn assert_same_tar(what: &str, ours: &[u8], theirs: &[u8]) -> Vec<(RawMember, RawMember)> {
    let (a, a_end) = raw_members(ours);
    let (b, b_end) = raw_members(theirs);
    let names = |m: &[RawMember]| m.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "{what}: members");
    for (x, y) in a.iter().zip(&b) {
        assert_same_header(what, x, y);
    }
    // The end marker: exactly two zero blocks, no record padding.
    assert_eq!(a_end, vec![0u8; 1024], "{what}: our end of archive");
    assert_eq!(a_end, b_end, "{what}: end of archive");
    a.into_iter().zip(b).collect()
}

fn member<'a>(pairs: &'a [(RawMember, RawMember)], name: &str) -> &'a (RawMember, RawMember) {
    pairs
        .iter()
        .find(|(m, _)| m.name == name)
        .unwrap_or_else(|| panic!("no member {name}"))
}

/// Compares outer, header and data tars of an artifact pair written without compression.
/// Writes `spec` uncompressed with `theirs`'s header mtime into `dir` and compares the two
/// artifacts' layouts byte for byte.
fn assert_uncompressed_twin_matches(mut spec: ArtifactSpec, theirs: &Path, dir: &Path) {
    spec.compression = Compression::None;
    spec.mtime = Some(header_mtime(theirs));
    let ours = dir.join("ours.mender");
    write_artifact_to_path(spec, &ours).unwrap();
    assert_same_artifact_layout(&ours, theirs);
}

fn assert_same_artifact_layout(ours: &Path, theirs: &Path) {
    let ours = std::fs::read(ours).unwrap();
    let theirs = std::fs::read(theirs).unwrap();
    let outer = assert_same_tar("outer tar", &ours, &theirs);
    let (h_ours, h_theirs) = member(&outer, "header.tar");
    assert_same_tar("header.tar", &h_ours.content, &h_theirs.content);
    let (d_ours, d_theirs) = member(&outer, "data/0000.tar");
    assert_same_tar("data/0000.tar", &d_ours.content, &d_theirs.content);
}

/// The official tool's mtime of `header.tar` (it uses the time of writing).
fn header_mtime(art: &Path) -> u64 {
    let (m, _) = raw_members(&std::fs::read(art).unwrap());
    let h = m.iter().find(|m| m.name == "header.tar").unwrap();
    octal(&h.header[136..148])
}

/// Runs the official tool. It stamps the header and the data member with the time each is
/// written; on a loaded machine a second may pass between them, while we use one mtime for
/// both: write again until both stamps agree.
fn run_tool(tool: &Path, args: &[&str], files: &[&Path], out: &Path) {
    for _ in 0..10 {
        let mut c = Command::new(tool);
        c.args(args);
        for f in files {
            c.arg("-f").arg(f);
        }
        let o = run(c.arg("-o").arg(out));
        assert!(o.status.success(), "{}", out_text(&o));
        let (m, _) = raw_members(&std::fs::read(out).unwrap());
        let mtimes: Vec<u64> = m
            .iter()
            .filter(|m| m.name.starts_with("header.tar") || m.name.starts_with("data/"))
            .map(|m| octal(&m.header[136..148]))
            .collect();
        if mtimes.windows(2).all(|w| w[0] == w[1]) {
            return;
        }
    }
    panic!("the official tool never wrote header and data within the same second");
}

#[test]
fn module_image_tar_headers_match_official_tool() {
    let Some((tool, dir)) = mender_artifact_and_scratch() else {
        return;
    };
    let f1 = dir.path().join("payload.bin");
    std::fs::write(&f1, vec![42u8; 70_000]).unwrap();
    let f2 = scratch_file(dir.path(), "app.conf", b"key=value\n");
    let theirs = dir.path().join("theirs.mender");
    run_tool(
        &tool,
        &my_module_args("raspberrypi4", &["--compression", "none"]),
        &[&f1, &f2],
        &theirs,
    );
    let files = vec![
        PayloadFile::from_path(&f1).unwrap(),
        PayloadFile::from_path(&f2).unwrap(),
    ];
    let spec = my_module_spec(files, None, false);
    assert_uncompressed_twin_matches(spec, &theirs, dir.path());
}

#[test]
fn rootfs_image_tar_headers_match_official_tool() {
    let Some((tool, dir)) = mender_artifact_and_scratch() else {
        return;
    };
    let img = dir.path().join("rootfs.ext4");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&img, &data).unwrap();
    let theirs = dir.path().join("theirs.mender");
    run_tool(
        &tool,
        &[
            "write",
            "rootfs-image",
            "--compression",
            "none",
            "-n",
            "rootfs-1",
            "-t",
            "dev1",
        ],
        &[&img],
        &theirs,
    );
    let spec = ArtifactSpec::new(
        "rootfs-1",
        vec!["dev1".into()],
        Payload::RootfsImage {
            file: PayloadFile::from_path(&img).unwrap(),
        },
    );
    assert_uncompressed_twin_matches(spec, &theirs, dir.path());
}

#[test]
fn gzip_member_headers_match_official_tool() {
    // With gzip only the outer member names and headers can be compared byte for byte.
    let Some((tool, dir)) = mender_artifact_and_scratch() else {
        return;
    };
    let f1 = scratch_file(dir.path(), "payload.bin", b"abc");
    let theirs = dir.path().join("theirs.mender");
    run_tool(
        &tool,
        &["write", "module-image", "-T", "m", "-n", "r", "-t", "d"],
        &[&f1],
        &theirs,
    );
    let (m, _) = raw_members(&std::fs::read(&theirs).unwrap());
    let mtime = octal(&m.iter().find(|m| m.name == "header.tar.gz").unwrap().header[136..148]);
    let mut spec = ArtifactSpec::new(
        "r",
        vec!["d".into()],
        Payload::Module {
            type_name: "m".into(),
            files: vec![PayloadFile::from_path(&f1).unwrap()],
            meta_data: None,
        },
    );
    spec.mtime = Some(mtime);
    let ours = dir.path().join("ours.mender");
    write_artifact_to_path(spec, &ours).unwrap();
    assert_same_tar(
        "outer tar (gzip)",
        &std::fs::read(&ours).unwrap(),
        &std::fs::read(&theirs).unwrap(),
    );
}
