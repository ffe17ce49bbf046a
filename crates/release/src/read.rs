//! One read of an artifact that both verifies it and extracts what this crate needs.
//!
//! `menderartifact`'s reader checks structure, every checksum and the signature but does not
//! hand out payload bytes. The same byte stream is therefore teed to a second thread that walks
//! the outer tar itself and keeps the header members (for rewriting) and the payload files (a
//! rootfs image is spooled to a sparse temp file, small module files are kept in memory).
//! Nothing extracted is used unless the verifying reader accepted the whole artifact.

use crate::ReleaseError;
use menderartifact::{ArtifactInfo, VerifyKey};
use serde_json::Value;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Chunk size of the tee and of the spool writes.
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
}

impl MemberCompression {
    fn from_suffix(member: &str, base: &str) -> Result<Self, String> {
        match member.strip_prefix(base) {
            Some(".gz") => Ok(MemberCompression::Gzip),
            Some("") => Ok(MemberCompression::None),
            Some(other) => Err(format!(
                "member '{member}' uses '{other}' compression, which this tool cannot read yet (gzip and none are supported)"
            )),
            None => Err(format!("unexpected member '{member}'")),
        }
    }

    fn decoder<'a, R: Read + 'a>(self, r: R) -> Box<dyn Read + 'a> {
        match self {
            // Multi-member tolerant: a block-parallel writer may emit several gzip members.
            MemberCompression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
            MemberCompression::None => Box::new(r),
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

/// What the extraction thread kept.
#[derive(Debug, Default)]
pub(crate) struct Extracted {
    pub header_info: Option<Value>,
    pub type_info: Option<Value>,
    pub scripts: Vec<Script>,
    pub data_compression: Option<MemberCompression>,
    pub files: Vec<ExtractedFile>,
}

impl Extracted {
    /// The payload type as header-info states it (`""` legacy rootfs reads as rootfs-image).
    fn payload_type(&self) -> Option<String> {
        let t = self
            .header_info
            .as_ref()?
            .get("payloads")?
            .get(0)?
            .get("type")?;
        Some(match t.as_str() {
            Some("") => "rootfs-image".into(),
            Some(s) => s.into(),
            None => String::new(),
        })
    }
}

/// Reads `input` once: verified by `menderartifact` (signature reported, checked only when a
/// key is given), extracted on the side. Rootfs images are spooled into `spool_dir`.
pub(crate) fn read_artifact<R: Read>(
    input: R,
    label: &str,
    key: Option<&VerifyKey>,
    spool_dir: &Path,
) -> Result<(ArtifactInfo, Extracted), ReleaseError> {
    let (tx, rx) = sync_channel::<Vec<u8>>(16);
    let dir = spool_dir.to_path_buf();
    let worker = std::thread::spawn(move || extract(ChannelReader::new(rx), &dir));
    let info = menderartifact::read_report(
        Tee {
            inner: input,
            tx: Some(tx),
        },
        key,
    );
    let extracted = worker.join().map_err(|_| {
        ReleaseError::Unsupported(format!("{label}: the extraction thread panicked"))
    })?;
    let info = info.map_err(|source| ReleaseError::Artifact {
        path: label.to_string(),
        source,
    })?;
    let extracted = extracted.map_err(|detail| match detail {
        ExtractError::Io(e) => ReleaseError::io(format!("{label}: spooling the payload"), e),
        ExtractError::Format(msg) => ReleaseError::Unsupported(format!("{label}: {msg}")),
    })?;
    if let Some(t) = extracted.payload_type() {
        if info.payload_types.first().map(String::as_str) != Some(t.as_str()) {
            return Err(ReleaseError::Unsupported(format!(
                "{label}: payload type '{t}' does not match what the reader saw"
            )));
        }
    }
    Ok((info, extracted))
}

/// Passes every byte read through to the extraction thread.
struct Tee<R> {
    inner: R,
    tx: Option<SyncSender<Vec<u8>>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            if let Some(tx) = &self.tx {
                // The extractor stops early only on error; its error is reported then.
                if tx.send(buf[..n].to_vec()).is_err() {
                    self.tx = None;
                }
            }
        }
        Ok(n)
    }
}

/// The receiving end of the tee as an `io::Read`; EOF when the sender is dropped.
struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: Receiver<Vec<u8>>) -> Self {
        ChannelReader {
            rx,
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.recv() {
                Ok(chunk) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

enum ExtractError {
    Io(io::Error),
    Format(String),
}

impl From<String> for ExtractError {
    fn from(s: String) -> Self {
        ExtractError::Format(s)
    }
}

fn fmt_err(what: &str) -> impl Fn(io::Error) -> ExtractError + '_ {
    move |e| ExtractError::Format(format!("{what}: {e}"))
}

fn extract<R: Read>(r: R, spool_dir: &Path) -> Result<Extracted, ExtractError> {
    let mut out = Extracted::default();
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries().map_err(fmt_err("outer tar"))? {
        let entry = entry.map_err(fmt_err("outer tar"))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if name.starts_with("header.tar") {
            let comp = MemberCompression::from_suffix(&name, "header.tar")?;
            read_header(comp.decoder(entry), &mut out)?;
        } else if name.starts_with("data/") {
            let comp = MemberCompression::from_suffix(&name, "data/0000.tar")?;
            if out.data_compression.is_some() {
                return Err(
                    format!("second data member '{name}': only one payload is supported").into(),
                );
            }
            out.data_compression = Some(comp);
            let rootfs = out.payload_type().as_deref() == Some("rootfs-image");
            read_data(comp.decoder(entry), rootfs, spool_dir, &mut out)?;
        }
        // version, manifest, manifest.sig, augments: the verifying reader handles them.
    }
    Ok(out)
}

fn read_small<R: Read>(r: R, what: &str) -> Result<Vec<u8>, ExtractError> {
    let mut v = Vec::new();
    r.take(MAX_SMALL + 1)
        .read_to_end(&mut v)
        .map_err(fmt_err(what))?;
    if v.len() as u64 > MAX_SMALL {
        return Err(format!("{what} is larger than {MAX_SMALL} bytes").into());
    }
    Ok(v)
}

fn read_header<R: Read>(r: R, out: &mut Extracted) -> Result<(), ExtractError> {
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
                .map_err(|e| ExtractError::Format(format!("header member '{name}': {e}")))
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

fn read_data<R: Read>(
    r: R,
    rootfs: bool,
    spool_dir: &Path,
    out: &mut Extracted,
) -> Result<(), ExtractError> {
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries().map_err(fmt_err("data tar"))? {
        let mut entry = entry.map_err(fmt_err("data tar"))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let size = entry.size();
        let mode = entry.header().mode().unwrap_or(0o644);
        let content = if rootfs {
            let mut tmp = tempfile::Builder::new()
                .prefix(".rootfs-spool-")
                .tempfile_in(spool_dir)
                .map_err(ExtractError::Io)?;
            spool_sparse(&mut entry, tmp.as_file_mut(), size)?;
            Content::Spooled(tmp)
        } else if size <= MAX_SMALL {
            Content::Memory(read_small(&mut entry, &format!("payload file '{name}'"))?)
        } else {
            io::copy(&mut entry, &mut io::sink()).map_err(fmt_err("data tar"))?;
            Content::Skipped
        };
        out.files.push(ExtractedFile {
            name,
            size,
            mode,
            content,
        });
    }
    Ok(())
}

/// Copies `size` bytes into `file`, leaving aligned all-zero runs as holes.
fn spool_sparse<R: Read>(
    r: &mut R,
    file: &mut std::fs::File,
    size: u64,
) -> Result<(), ExtractError> {
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
                Err(e) => return Err(fmt_err("payload")(e)),
            };
            filled += n;
        }
        if filled == 0 {
            break;
        }
        for piece in buf[..filled].chunks(HOLE) {
            if piece.len() == HOLE && piece.iter().all(|&b| b == 0) {
                w.seek(SeekFrom::Current(HOLE as i64))
                    .map_err(ExtractError::Io)?;
            } else {
                w.write_all(piece).map_err(ExtractError::Io)?;
            }
        }
        done += filled as u64;
    }
    if done != size {
        return Err(format!("payload ended after {done} of {size} bytes").into());
    }
    let file = w
        .into_inner()
        .map_err(|e| ExtractError::Io(e.into_error()))?;
    file.set_len(size).map_err(ExtractError::Io)?;
    Ok(())
}
