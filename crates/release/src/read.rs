//! Getting at an artifact's content: the payload files stream out of `menderartifact`'s
//! verifying reader (one decompression; a rootfs image is spooled to a sparse temp file), and
//! for rewriting, the header members (state scripts, the JSON as stored) are read from the
//! front of the file. Nothing is used unless the verifying reader accepted the whole artifact.

use crate::ReleaseError;
use menderartifact::{ArtifactInfo, VerifyKey};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Chunk size of the spool writes.
const CHUNK: usize = 256 * 1024;
/// Header members and module payload files larger than this are not kept in memory.
const MAX_SMALL: u64 = 4 << 20;
/// Zero runs of this size (aligned) become holes in the spooled image.
const HOLE: usize = 64 * 1024;

/// How a member (header or data tar) was compressed, taken from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberCompression {
    Gzip,
    None,
    /// `mender-artifact --compression lzma`.
    Xz,
}

impl MemberCompression {
    fn from_suffix(member: &str, base: &str) -> Result<Self, String> {
        match member.strip_prefix(base) {
            Some(".gz") => Ok(MemberCompression::Gzip),
            Some("") => Ok(MemberCompression::None),
            Some(".xz") => Ok(MemberCompression::Xz),
            Some(other) => Err(format!(
                "member '{member}' uses '{other}' compression, which this tool cannot read yet (gzip, xz and none are supported)"
            )),
            None => Err(format!("unexpected member '{member}'")),
        }
    }

    fn decoder<'a, R: Read + 'a>(self, r: R) -> Box<dyn Read + 'a> {
        match self {
            // Multi-member tolerant: a block-parallel writer may emit several gzip members.
            MemberCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            MemberCompression::None => Box::new(r),
            MemberCompression::Xz => menderartifact::Compression::Xz.decoder(r),
        }
    }
}

/// A state script from the header (`scripts/<name>`).
#[derive(Debug, Clone)]
pub(crate) struct Script {
    pub name: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// Where an extracted payload file's bytes are.
#[derive(Debug)]
pub(crate) enum Content {
    /// A sparse temp file (rootfs images), deleted on drop.
    Spooled(tempfile::NamedTempFile),
    Memory(Vec<u8>),
    /// Too large to keep and not a rootfs image.
    Skipped,
}

#[derive(Debug)]
pub(crate) struct ExtractedFile {
    pub name: String,
    pub size: u64,
    pub mode: u32,
    pub content: Content,
}

/// The header members as stored, for rewriting the artifact.
#[derive(Debug, Default)]
pub(crate) struct Extracted {
    pub header_info: Option<Value>,
    pub type_info: Option<Value>,
    pub scripts: Vec<Script>,
    pub data_compression: Option<MemberCompression>,
    /// Permission bits of the first payload file in the data tar.
    pub first_file_mode: Option<u32>,
}

/// Reads `input` once with `menderartifact`'s verifying reader (every checksum; the signature
/// too when a key is given), keeping the payload files as they stream: a rootfs image is
/// spooled into `spool_dir`, small module files are kept in memory.
pub(crate) fn read_artifact<R: Read>(
    input: R,
    label: &str,
    key: Option<&VerifyKey>,
    spool_dir: &Path,
) -> Result<(ArtifactInfo, Vec<ExtractedFile>), ReleaseError> {
    let mut files = Vec::new();
    let info = menderartifact::read_payloads(input, key, |stream, content| {
        let rootfs = stream.payload_type == "rootfs-image";
        let kept = if rootfs {
            let mut tmp = tempfile::Builder::new()
                .prefix(".rootfs-spool-")
                .tempfile_in(spool_dir)?;
            spool_sparse(content, tmp.as_file_mut(), stream.size)?;
            Content::Spooled(tmp)
        } else if stream.size <= MAX_SMALL {
            let mut v = Vec::with_capacity(stream.size as usize);
            content.read_to_end(&mut v)?;
            Content::Memory(v)
        } else {
            Content::Skipped
        };
        files.push(ExtractedFile {
            name: stream.name.to_string(),
            size: stream.size,
            mode: 0o644,
            content: kept,
        });
        Ok(())
    })
    .map_err(|err| ReleaseError::Artifact {
        path: label.to_string(),
        err,
    })?;
    Ok((info, files))
}

/// The header members of the artifact at `path` (and the mode of its first payload file),
/// read without touching the bulk of the data. The header's checksum is checked against the
/// manifest here; the full verification is [`read_artifact`]'s.
pub(crate) fn read_header_of(path: &Path) -> Result<Extracted, ReleaseError> {
    let label = path.display().to_string();
    let file =
        std::fs::File::open(path).map_err(|e| ReleaseError::io(format!("opening {label}"), e))?;
    read_header(io::BufReader::new(file))
        .map_err(|HeaderError(msg)| ReleaseError::Unsupported(format!("{label}: {msg}")))
}

/// What is wrong with the front of the artifact, in words.
struct HeaderError(String);

impl From<String> for HeaderError {
    fn from(s: String) -> Self {
        HeaderError(s)
    }
}

fn fmt_err(what: &str) -> impl Fn(io::Error) -> HeaderError + '_ {
    move |e| HeaderError(format!("{what}: {e}"))
}

fn read_header<R: Read>(r: R) -> Result<Extracted, HeaderError> {
    let mut out = Extracted::default();
    let mut manifest = String::new();
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries().map_err(fmt_err("outer tar"))? {
        let mut entry = entry.map_err(fmt_err("outer tar"))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if name == "manifest" {
            manifest = String::from_utf8_lossy(&read_small(&mut entry, "manifest")?).into_owned();
        } else if name.starts_with("header.tar") {
            let comp = MemberCompression::from_suffix(&name, "header.tar")?;
            let raw = read_small(&mut entry, &format!("member '{name}'"))?;
            let sum = format!("{:x}", Sha256::digest(&raw));
            if !manifest.lines().any(|l| l == format!("{sum}  {name}")) {
                return Err(format!("member '{name}' does not match its manifest checksum").into());
            }
            parse_header(comp.decoder(raw.as_slice()), &mut out)?;
        } else if name.starts_with("data/") {
            let comp = MemberCompression::from_suffix(&name, "data/0000.tar")?;
            out.data_compression = Some(comp);
            let mut inner = tar::Archive::new(comp.decoder(entry));
            if let Some(first) = inner.entries().map_err(fmt_err("data tar"))?.next() {
                let first = first.map_err(fmt_err("data tar"))?;
                out.first_file_mode = first.header().mode().ok();
            }
            break;
        }
    }
    Ok(out)
}

fn read_small<R: Read>(r: R, what: &str) -> Result<Vec<u8>, HeaderError> {
    let mut v = Vec::new();
    r.take(MAX_SMALL + 1)
        .read_to_end(&mut v)
        .map_err(fmt_err(what))?;
    if v.len() as u64 > MAX_SMALL {
        return Err(format!("{what} is larger than {MAX_SMALL} bytes").into());
    }
    Ok(v)
}

fn parse_header<R: Read>(r: R, out: &mut Extracted) -> Result<(), HeaderError> {
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries().map_err(fmt_err("header tar"))? {
        let entry = entry.map_err(fmt_err("header tar"))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let mode = entry.header().mode().unwrap_or(0o755);
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let bytes = read_small(entry, &format!("header member '{name}'"))?;
        let json = |b: &[u8]| {
            serde_json::from_slice::<Value>(b)
                .map_err(|e| HeaderError(format!("header member '{name}': {e}")))
        };
        if name == "header-info" {
            out.header_info = Some(json(&bytes)?);
        } else if name == "headers/0000/type-info" {
            out.type_info = Some(json(&bytes)?);
        } else if let Some(script) = name.strip_prefix("scripts/") {
            out.scripts.push(Script {
                name: script.to_string(),
                content: bytes,
                mode,
            });
        }
    }
    Ok(())
}

/// Copies `size` bytes into `file`, leaving aligned all-zero runs as holes.
fn spool_sparse(r: &mut dyn Read, file: &mut std::fs::File, size: u64) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    let mut w = io::BufWriter::with_capacity(CHUNK, file);
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = match r.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            filled += n;
        }
        if filled == 0 {
            break;
        }
        for piece in buf[..filled].chunks(HOLE) {
            if piece.len() == HOLE && piece.iter().all(|&b| b == 0) {
                w.seek(SeekFrom::Current(HOLE as i64))?;
            } else {
                w.write_all(piece)?;
            }
        }
        done += filled as u64;
    }
    if done != size {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("payload ended after {done} of {size} bytes"),
        ));
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.set_len(size)
}
