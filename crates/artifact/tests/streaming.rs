//! `read_payloads` streams every payload file's content to the visitor, verified against the
//! manifest after the visitor returns; a visitor error or a bad checksum fails the read.

use menderartifact::*;

fn rootfs_artifact(content: &[u8], compression: Compression) -> Vec<u8> {
    let mut spec = ArtifactSpec::new(
        "rootfs-1",
        vec!["dev1".into()],
        Payload::RootfsImage {
            file: PayloadFile::from_bytes("rootfs.ext4", content.to_vec(), 0o644),
        },
    );
    spec.compression = compression;
    let mut out = Vec::new();
    write_artifact(spec, &mut out).unwrap();
    out
}

fn content() -> Vec<u8> {
    (0..3_000_000u32).map(|i| (i * 31 % 253) as u8).collect()
}

#[test]
fn visitor_sees_the_payload_content() {
    let data = content();
    for c in [Compression::Gzip, Compression::None] {
        let art = rootfs_artifact(&data, c);
        let mut seen = Vec::new();
        let info = read_payloads(art.as_slice(), None, |f, r| {
            assert_eq!(f.payload, 0);
            assert_eq!(f.payload_type, "rootfs-image");
            assert_eq!(f.name, "rootfs.ext4");
            assert_eq!(f.size, data.len() as u64);
            seen.clear();
            r.read_to_end(&mut seen).map(|_| ())
        })
        .unwrap();
        assert!(seen == data, "{c:?}: streamed content differs");
        assert_eq!(info.payload_files.len(), 1);
    }
}

#[test]
fn unread_content_is_still_verified() {
    let data = content();
    let art = rootfs_artifact(&data, Compression::None);
    // Read only the first bytes; the rest is skipped but hashed.
    read_payloads(art.as_slice(), None, |_, r| {
        let mut head = [0u8; 10];
        r.read_exact(&mut head)
    })
    .unwrap();
    // Flip one payload byte near the end: the checksum check after the visitor fails.
    let mut bad = art.clone();
    let at = bad.len() - 1024 - 512 - 100_000;
    bad[at] ^= 1;
    let err = read_payloads(bad.as_slice(), None, |_, _| Ok(())).unwrap_err();
    assert!(
        matches!(&err, ArtifactError::ChecksumMismatch { name, .. } if name == "data/0000/rootfs.ext4"),
        "{err}"
    );
}

#[test]
fn visitor_error_stops_the_read() {
    let art = rootfs_artifact(&content(), Compression::Gzip);
    let err = read_payloads(art.as_slice(), None, |_, _| {
        Err(std::io::Error::other("disk full"))
    })
    .unwrap_err();
    assert!(
        matches!(&err, ArtifactError::Io { context, .. } if context.contains("data/0000/rootfs.ext4")),
        "{err}"
    );
    assert!(err.to_string().contains("disk full"), "{err}");
}
