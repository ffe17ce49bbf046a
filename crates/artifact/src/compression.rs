//! The one compression abstraction: a member's [`Compression`] names its suffix, makes the
//! encoder the writer streams through and the decoder the reader streams through.

use crate::ArtifactError;
use std::io::{self, Read, Write};

/// How header and data tars are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// gzip at level 6 (`.gz`), the mender-artifact default.
    #[default]
    Gzip,
    /// No compression (no file suffix).
    None,
}

/// What an encoder is for: small members are compressed on the calling thread, bulk data
/// on all cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Volume {
    Small,
    Bulk,
}

impl Compression {
    /// Suffix appended to `header.tar` and `data/0000.tar`.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Gzip => ".gz",
            Compression::None => "",
        }
    }

    /// The compression of member `name`, given the part of its name after `base`
    /// (`rest`): `""` or `.gz`; `.xz` and `.zst` are refused as unsupported.
    pub(crate) fn from_member_name(
        name: &str,
        rest: &str,
        base: &str,
    ) -> Result<Self, ArtifactError> {
        match rest.strip_prefix(base) {
            Some("") => Ok(Compression::None),
            Some(".gz") => Ok(Compression::Gzip),
            Some(".xz") | Some(".zst") => {
                Err(ArtifactError::UnsupportedCompression(name.to_string()))
            }
            _ => Err(ArtifactError::Malformed(format!(
                "unexpected member name '{name}'"
            ))),
        }
    }

    /// A writer that compresses into `out`; call [`Encoder::finish`] to complete it.
    pub(crate) fn encoder<W: Write>(self, out: W, volume: Volume) -> Encoder<W> {
        let inner = match (self, volume) {
            (Compression::None, _) => EncoderKind::Plain(out),
            (Compression::Gzip, Volume::Small) => EncoderKind::Gzip(Box::new(
                flate2::GzBuilder::new()
                    .operating_system(255)
                    .write(out, flate2::Compression::new(6)),
            )),
            (Compression::Gzip, Volume::Bulk) => {
                let threads = std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
                    .min(8);
                EncoderKind::ParallelGzip(Box::new(crate::pgzip::ParallelGzWriter::new(
                    out, 6, threads,
                )))
            }
        };
        Encoder { inner }
    }

    /// A reader of the decompressed content of `r`.
    pub(crate) fn decoder<'a, R: Read + 'a>(self, r: R) -> Box<dyn Read + 'a> {
        match self {
            // Multi-member aware: a gzip stream may be several members back to back.
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            Compression::None => Box::new(r),
        }
    }
}

/// The writer end of a compressed member.
pub(crate) struct Encoder<W: Write> {
    inner: EncoderKind<W>,
}

enum EncoderKind<W: Write> {
    Gzip(Box<flate2::write::GzEncoder<W>>),
    ParallelGzip(Box<crate::pgzip::ParallelGzWriter<W>>),
    Plain(W),
}

impl<W: Write> Encoder<W> {
    /// Writes the trailer and returns the inner writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        match self.inner {
            EncoderKind::Gzip(g) => g.finish(),
            EncoderKind::ParallelGzip(g) => g.finish(),
            EncoderKind::Plain(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            EncoderKind::Gzip(g) => g.write(buf),
            EncoderKind::ParallelGzip(g) => g.write(buf),
            EncoderKind::Plain(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            EncoderKind::Gzip(g) => g.flush(),
            EncoderKind::ParallelGzip(g) => g.flush(),
            EncoderKind::Plain(w) => w.flush(),
        }
    }
}
