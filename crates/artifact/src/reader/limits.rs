//! What the reader refuses before it can hurt: names that could escape a directory, small
//! members too big to hold in memory, and compressed streams that expand without bound.
//! Payload files are not capped (a rootfs image is large by design): their content is
//! streamed, never held, and must match the size its tar header declares.

use crate::ArtifactError;
use std::io::{self, Read};

/// Largest `version`, `manifest`, `manifest.sig` member and header JSON entry (header-info,
/// type-info, meta-data) read into memory. Real ones are a few KiB.
pub(crate) const MAX_SMALL_MEMBER: u64 = 1 << 20;

/// Largest `header.tar*` member as stored, and largest decompressed header tar. Real
/// headers are a few KiB plus state scripts (the writer refuses scripts that would not fit).
/// Its entries are small or drained (scripts), so this bounds the work a crafted header can
/// cause, whatever its compression ratio.
pub(crate) const MAX_HEADER: u64 = 32 << 20;

/// Largest run of decompressed bytes after an inner tar's end marker (GNU tar pads to
/// 10 KiB records; anything much longer is not padding).
pub(crate) const MAX_TRAILER: u64 = 1 << 20;

/// Refuses absolute names and `..` components (and backslash-separated ones) in a tar
/// entry name of `container`.
pub(crate) fn check_entry_name(container: &str, name: &str) -> Result<(), ArtifactError> {
    let traversal = name.starts_with('/')
        || name.starts_with('\\')
        || name.split(['/', '\\']).any(|c| c == "..");
    if traversal {
        return Err(ArtifactError::UnsafePath {
            container: container.to_string(),
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Fails with `TooLarge` when a member's declared size is over `limit`.
pub(crate) fn check_size(
    member: &str,
    what: &'static str,
    size: u64,
    limit: u64,
) -> Result<(), ArtifactError> {
    if size > limit {
        return Err(ArtifactError::TooLarge {
            member: member.to_string(),
            what,
            size,
            limit,
        });
    }
    Ok(())
}

/// Passes at most `limit` bytes through; reading more fails and is remembered, so the
/// caller can report a `DecompressionBomb` rather than whatever error the parser made of it.
pub(crate) struct Bounded<R> {
    inner: R,
    left: u64,
    pub exceeded: bool,
}

impl<R: Read> Bounded<R> {
    pub(crate) fn new(inner: R, limit: u64) -> Self {
        Bounded {
            inner,
            left: limit,
            exceeded: false,
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // One byte more than allowed means the stream is over the limit.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded = true;
                    Err(io::Error::other("decompressed size limit exceeded"))
                }
            };
        }
        let want = (buf.len() as u64).min(self.left) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Reads the decompressed rest of an inner tar after its end marker (so a gzip trailer is
/// checked), refusing more than [`MAX_TRAILER`] bytes.
pub(crate) fn drain_trailer<R: Read>(rest: R, member: &str) -> Result<(), ArtifactError> {
    let mut bounded = Bounded::new(rest, MAX_TRAILER);
    match io::copy(&mut bounded, &mut io::sink()) {
        Ok(_) => Ok(()),
        Err(_) if bounded.exceeded => Err(ArtifactError::DecompressionBomb {
            member: member.to_string(),
            what: "data after the end of an inner tar",
            limit: MAX_TRAILER,
        }),
        Err(e) => Err(super::tar_err(member, e)),
    }
}
