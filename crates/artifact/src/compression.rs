//! The one compression abstraction: a member's [`Compression`] names its suffix, makes the
//! encoder the writer streams through and the decoder the reader streams through.

use crate::blockgz::BlockGzWriter;
use crate::ArtifactError;
use std::io::{self, Read, Write};

/// How header and data tars are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// gzip (`.gz`), the mender-artifact default; no larger than its level-6 output.
    #[default]
    Gzip,
    /// No compression (no file suffix).
    None,
    /// xz (`.xz`), what `mender-artifact --compression lzma` writes (Yocto's
    /// `ARTIFACTIMG_COMPRESSION = "lzma"`). Read streaming; written single-threaded at
    /// preset 6, far slower than gzip, so only for callers that must keep an input's xz.
    Xz,
}

/// The xz decoder's memory limit (KiB) for one block's dictionary and state: xz preset 9, the
/// largest the official tool writes, needs about 65 MiB; a header declaring more is refused
/// before anything is allocated.
const XZ_MEM_LIMIT_KIB: u32 = 100 * 1024;

/// xz preset of the writer (the xz tool's default).
const XZ_PRESET: u32 = 6;

/// libdeflate level for gzip. Measured on a 512 MiB ext4 of real files (1 MiB blocks):
/// level 2 gives ratio 0.218 (the Go tool's level 6: 0.229) at 56% of level 6's CPU time;
/// level 1 (0.230) would be larger than the Go tool's output.
const GZIP_LEVEL: i32 = 2;

/// What an encoder is for: small members are compressed on the calling thread, bulk data
/// on all cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Volume {
    Small,
    Bulk,
    /// Small, and its compressed size must depend only on its length (gzip: stored blocks).
    FixedSize,
}

impl Compression {
    /// Suffix appended to `header.tar` and `data/0000.tar`.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Gzip => ".gz",
            Compression::None => "",
            Compression::Xz => ".xz",
        }
    }

    /// The compression of member `name`, given the part of its name after `base`
    /// (`rest`): `""`, `.gz` or `.xz`; `.zst` is refused as unsupported.
    pub(crate) fn from_member_name(
        name: &str,
        rest: &str,
        base: &str,
    ) -> Result<Self, ArtifactError> {
        match rest.strip_prefix(base) {
            Some("") => Ok(Compression::None),
            Some(".gz") => Ok(Compression::Gzip),
            Some(".xz") => Ok(Compression::Xz),
            Some(".zst") => Err(ArtifactError::UnsupportedCompression(name.to_string())),
            _ => Err(ArtifactError::Malformed(format!(
                "unexpected member name '{name}'"
            ))),
        }
    }

    /// A writer that compresses into `out`; call [`Encoder::finish`] to complete it. gzip is
    /// written as one gzip member per 1 MiB block (see `blockgz`).
    pub(crate) fn encoder<W: Write>(self, out: W, volume: Volume) -> Encoder<W> {
        let inner = match self {
            Compression::None => EncoderKind::Plain(out),
            Compression::Gzip => {
                let (level, threads) = match volume {
                    Volume::Small => (GZIP_LEVEL, 0),
                    Volume::FixedSize => (0, 0),
                    Volume::Bulk => (
                        GZIP_LEVEL,
                        std::thread::available_parallelism()
                            .map(|n| n.get())
                            .unwrap_or(1)
                            .min(8),
                    ),
                };
                EncoderKind::Gzip(Box::new(BlockGzWriter::new(out, level, threads)))
            }
            Compression::Xz => {
                let options = lzma_rust2::XzOptions::with_preset(XZ_PRESET);
                // Only more than 3 pre-filters make `new` fail; these options have none.
                match lzma_rust2::XzWriter::new(out, options) {
                    Ok(w) => EncoderKind::Xz(Box::new(w)),
                    Err(e) => unreachable!("xz options without pre-filters are valid: {e}"),
                }
            }
        };
        Encoder { inner }
    }

    /// A reader of the decompressed content of `r`. It does not bound the output: callers
    /// reading untrusted members cap it themselves (the reader's size limits do).
    pub fn decoder<'a, R: Read + 'a>(self, r: R) -> Box<dyn Read + 'a> {
        match self {
            // Multi-member aware: a gzip stream may be several members back to back.
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Compression::None => Box::new(r),
            // One stream, as the official tool writes; its block checks (CRC64/SHA-256) are
            // verified, so a corrupt member fails here, not only at the manifest checksum.
            Compression::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(
                r,
                false,
                XZ_MEM_LIMIT_KIB,
            )),
        }
    }
}

/// The writer end of a compressed member.
pub(crate) struct Encoder<W: Write> {
    inner: EncoderKind<W>,
}

enum EncoderKind<W: Write> {
    Gzip(Box<BlockGzWriter<W>>),
    Plain(W),
    Xz(Box<lzma_rust2::XzWriter<W>>),
}

impl<W: Write> Encoder<W> {
    /// Writes the trailer and returns the inner writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self.inner {
            EncoderKind::Gzip(g) => g.finish(),
            EncoderKind::Plain(w) => Ok(w),
            EncoderKind::Xz(x) => x.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            EncoderKind::Gzip(g) => g.write(buf),
            EncoderKind::Plain(w) => w.write(buf),
            EncoderKind::Xz(x) => x.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            EncoderKind::Gzip(g) => g.flush(),
            EncoderKind::Plain(w) => w.flush(),
            EncoderKind::Xz(x) => x.flush(),
        }
    }
}
