//! Streaming artifact writer: payload data is compressed into a temp file while hashed, then
//! the outer tar (version, manifest, signature, header, data) is written in one pass.

use crate::gojson::{sorted, to_go_json};
use crate::tarfmt::{self, Owner};
use crate::{ArtifactError, SigningKey};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The exact `version` member (31 bytes).
pub(crate) const VERSION_JSON: &[u8] = br#"{"format":"mender","version":3}"#;

/// Copy buffer size for payload streaming.
const CHUNK: usize = 256 * 1024;

/// How header and data tars are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// gzip at level 6 (`.gz`), the mender-artifact default.
    #[default]
    Gzip,
    /// No compression (no file suffix).
    None,
}

impl Compression {
    /// Suffix appended to `header.tar` and `data/0000.tar`.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Gzip => ".gz",
            Compression::None => "",
        }
    }
}

/// Where a payload file's bytes come from.
pub enum PayloadSource {
    /// A file on disk; size, mode and mtime come from its metadata.
    Path(PathBuf),
    /// Small in-memory content (e.g. the `dest_dir` helper files of `single-file`).
    Bytes(Vec<u8>),
    /// A stream of exactly `size` bytes; any other length is an error.
    Reader {
        reader: Box<dyn Read + Send>,
        size: u64,
    },
}

impl std::fmt::Debug for PayloadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayloadSource::Path(p) => write!(f, "Path({})", p.display()),
            PayloadSource::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            PayloadSource::Reader { size, .. } => write!(f, "Reader({size} bytes)"),
        }
    }
}

/// One file inside the payload's data tar.
#[derive(Debug)]
pub struct PayloadFile {
    /// Base name stored in the artifact (`^[A-Za-z0-9_.,-]+$`, at most 100 bytes).
    pub name: String,
    pub source: PayloadSource,
    /// Permission bits stored in the data tar; `None` = from the file (Path) or 0644.
    pub mode: Option<u32>,
}

impl PayloadFile {
    /// A file on disk, stored under its base name.
    pub fn from_path(path: impl Into<PathBuf>) -> Result<Self, ArtifactError> {
        let path = path.into();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                ArtifactError::InvalidSpec(format!(
                    "payload path {} has no UTF-8 file name",
                    path.display()
                ))
            })?
            .to_string();
        Ok(PayloadFile {
            name,
            source: PayloadSource::Path(path),
            mode: None,
        })
    }

    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>, mode: u32) -> Self {
        PayloadFile {
            name: name.into(),
            source: PayloadSource::Bytes(bytes),
            mode: Some(mode),
        }
    }

    pub fn from_reader(
        name: impl Into<String>,
        reader: Box<dyn Read + Send>,
        size: u64,
        mode: u32,
    ) -> Self {
        PayloadFile {
            name: name.into(),
            source: PayloadSource::Reader { reader, size },
            mode: Some(mode),
        }
    }
}

/// The single payload of the artifact.
#[derive(Debug)]
pub enum Payload {
    /// `write module-image -T <type_name>`.
    Module {
        type_name: String,
        files: Vec<PayloadFile>,
        /// Written as `headers/0000/meta-data` (sorted keys, Go escaping) when given.
        meta_data: Option<serde_json::Map<String, serde_json::Value>>,
    },
    /// `write rootfs-image -f <file>`.
    RootfsImage { file: PayloadFile },
}

/// Everything needed to write one artifact. Build it with [`ArtifactSpec::new`] and adjust
/// the public fields.
#[derive(Debug)]
pub struct ArtifactSpec {
    /// `artifact_name` (no whitespace, printable, at most 256 bytes).
    pub name: String,
    /// `artifact_provides.artifact_group` (`-g`).
    pub group: Option<String>,
    /// `artifact_depends.device_type` (`-t`); must not be empty.
    pub device_types: Vec<String>,
    /// `artifact_depends.artifact_name` (`-N`).
    pub depends_artifact_names: Vec<String>,
    /// `artifact_depends.artifact_group` (`-G`).
    pub depends_groups: Vec<String>,
    pub payload: Payload,
    /// Extra type-info provides (`-p KEY:VALUE`); they override the defaults.
    pub provides: BTreeMap<String, String>,
    /// Type-info depends (`-d KEY:VALUE`).
    pub depends: BTreeMap<String, String>,
    /// Extra clears (`--clears-provides`); placed before the default ones.
    pub clears_provides: Vec<String>,
    /// `--software-name`.
    pub software_name: Option<String>,
    /// `--software-version`; defaults to the artifact name.
    pub software_version: Option<String>,
    /// `--software-filesystem`; defaults to `rootfs-image`.
    pub software_filesystem: Option<String>,
    /// `--no-default-software-version`: no version provide and no default clears.
    pub no_default_software_version: bool,
    /// `--no-default-clears-provides`.
    pub no_default_clears_provides: bool,
    /// `--no-checksum-provide` (rootfs-image only).
    pub no_checksum_provide: bool,
    /// State scripts (`-s`), stored as `scripts/<name>` (mode 0755, sorted by name). Names
    /// must look like `ArtifactInstall_Enter_00[_desc]`; content is held in memory (small).
    pub scripts: Vec<PayloadFile>,
    pub compression: Compression,
    pub signing_key: Option<SigningKey>,
    /// mtime for the header/data members and in-memory payload files; `None` = now.
    pub mtime: Option<u64>,
    /// Directory for the temporary compressed data tar; `None` = the system temp dir
    /// ([`write_artifact_to_path`] uses the output's directory).
    pub temp_dir: Option<PathBuf>,
}

impl ArtifactSpec {
    pub fn new(name: impl Into<String>, device_types: Vec<String>, payload: Payload) -> Self {
        ArtifactSpec {
            name: name.into(),
            group: None,
            device_types,
            depends_artifact_names: Vec::new(),
            depends_groups: Vec::new(),
            payload,
            provides: BTreeMap::new(),
            depends: BTreeMap::new(),
            clears_provides: Vec::new(),
            software_name: None,
            software_version: None,
            software_filesystem: None,
            no_default_software_version: false,
            no_default_clears_provides: false,
            no_checksum_provide: false,
            scripts: Vec::new(),
            compression: Compression::Gzip,
            signing_key: None,
            mtime: None,
            temp_dir: None,
        }
    }
}

/// Builds the spec of a `single-file` update-module artifact, the same content as
/// `single-file-artifact-gen -n NAME -t DEV... -d DEST_DIR FILE`: payload files
/// `dest_dir`, `filename`, `permissions` (octal mode) and the file itself.
///
/// ```no_run
/// # fn main() -> Result<(), menderartifact::ArtifactError> {
/// let mut spec = menderartifact::module_image_single_file(
///     "mender-conf-stage1",
///     vec!["raspberrypi4".into()],
///     std::path::Path::new("mender.conf"),
///     "/etc/mender",
/// )?;
/// spec.software_version = Some("1".into()); // optional, like --software-version
/// menderartifact::write_artifact_to_path(spec, std::path::Path::new("stage1.mender"))?;
/// # Ok(()) }
/// ```
pub fn module_image_single_file(
    name: impl Into<String>,
    device_types: Vec<String>,
    file: &Path,
    dest_dir: &str,
) -> Result<ArtifactSpec, ArtifactError> {
    if !dest_dir.starts_with('/') {
        return Err(ArtifactError::InvalidSpec(format!(
            "destination directory '{dest_dir}' must be an absolute path"
        )));
    }
    let meta = std::fs::metadata(file).map_err(|source| ArtifactError::PayloadFile {
        path: file.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(ArtifactError::InvalidSpec(format!(
            "{} is not a regular file",
            file.display()
        )));
    }
    let payload_file = PayloadFile::from_path(file)?;
    let mode = file_mode(&meta);
    let files = vec![
        PayloadFile::from_bytes("dest_dir", format!("{dest_dir}\n").into_bytes(), 0o644),
        PayloadFile::from_bytes(
            "filename",
            format!("{}\n", payload_file.name).into_bytes(),
            0o644,
        ),
        PayloadFile::from_bytes("permissions", format!("{mode:o}\n").into_bytes(), 0o644),
        payload_file,
    ];
    Ok(ArtifactSpec::new(
        name,
        device_types,
        Payload::Module {
            type_name: "single-file".into(),
            files,
            meta_data: None,
        },
    ))
}

#[cfg(unix)]
fn file_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}
#[cfg(not(unix))]
fn file_mode(_meta: &std::fs::Metadata) -> u32 {
    0o644
}

fn file_mtime(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn valid_payload_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b','))
}

/// `Artifact(Install|Reboot|Rollback|RollbackReboot|Commit|Failure)_(Enter|Leave|Error)_NN[_desc]`,
/// the names the Mender client runs.
pub(crate) fn valid_script_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("Artifact") else {
        return false;
    };
    let Some((state, rest)) = rest.split_once('_') else {
        return false;
    };
    if !matches!(
        state,
        "Install" | "Reboot" | "Rollback" | "RollbackReboot" | "Commit" | "Failure"
    ) {
        return false;
    }
    let Some((action, rest)) = rest.split_once('_') else {
        return false;
    };
    if !matches!(action, "Enter" | "Leave" | "Error") {
        return false;
    }
    let (num, desc) = match rest.split_once('_') {
        Some((n, d)) => (n, Some(d)),
        None => (rest, None),
    };
    num.len() == 2
        && num.bytes().all(|b| b.is_ascii_digit())
        && desc.is_none_or(|d| {
            !d.is_empty() && !d.chars().any(char::is_whitespace) && !d.contains('/')
        })
}

/// Maximum size of one state script (they are held in memory).
const MAX_SCRIPT: u64 = 16 << 20;

/// Reads a state script into memory: (name, content, mode, mtime).
fn load_script(
    f: PayloadFile,
    default_mtime: u64,
) -> Result<(String, Vec<u8>, u32, u64), ArtifactError> {
    let PayloadFile { name, source, mode } = f;
    let too_big = |size: u64| {
        ArtifactError::InvalidSpec(format!(
            "state script '{name}' is {size} bytes; the limit is {MAX_SCRIPT}"
        ))
    };
    match source {
        PayloadSource::Path(path) => {
            let meta = std::fs::metadata(&path).map_err(|source| ArtifactError::PayloadFile {
                path: path.clone(),
                source,
            })?;
            if meta.len() > MAX_SCRIPT {
                return Err(too_big(meta.len()));
            }
            let data = std::fs::read(&path).map_err(|source| ArtifactError::PayloadFile {
                path: path.clone(),
                source,
            })?;
            Ok((name, data, mode.unwrap_or(0o755), file_mtime(&meta)))
        }
        PayloadSource::Bytes(b) => Ok((name, b, mode.unwrap_or(0o755), default_mtime)),
        PayloadSource::Reader { reader, size } => {
            if size > MAX_SCRIPT {
                return Err(too_big(size));
            }
            let mut data = Vec::with_capacity(size as usize);
            reader
                .take(size + 1)
                .read_to_end(&mut data)
                .map_err(|e| ArtifactError::io(format!("reading state script '{name}'"), e))?;
            if data.len() as u64 != size {
                return Err(ArtifactError::InvalidSpec(format!(
                    "state script stream '{name}' has {} bytes, declared {size}",
                    data.len()
                )));
            }
            Ok((name, data, mode.unwrap_or(0o755), default_mtime))
        }
    }
}

fn check_header_string(what: &str, s: &str) -> Result<(), ArtifactError> {
    if s.is_empty() {
        return Err(ArtifactError::InvalidSpec(format!(
            "{what} must not be empty"
        )));
    }
    if s.len() > 256 {
        return Err(ArtifactError::InvalidSpec(format!(
            "{what} '{s}' is longer than 256 bytes"
        )));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(ArtifactError::InvalidSpec(format!(
            "{what} '{}' contains control characters",
            s.escape_debug()
        )));
    }
    Ok(())
}

fn validate(spec: &ArtifactSpec) -> Result<(), ArtifactError> {
    check_header_string("artifact name", &spec.name)?;
    if spec.name.chars().any(char::is_whitespace) {
        return Err(ArtifactError::InvalidSpec(format!(
            "artifact name '{}' must not contain whitespace",
            spec.name
        )));
    }
    if let Some(g) = &spec.group {
        check_header_string("artifact group", g)?;
    }
    if spec.device_types.is_empty() {
        return Err(ArtifactError::InvalidSpec(
            "at least one device type (compatible type) is required".into(),
        ));
    }
    for d in &spec.device_types {
        check_header_string("device type", d)?;
    }
    for n in &spec.depends_artifact_names {
        check_header_string("depended-on artifact name", n)?;
    }
    for g in &spec.depends_groups {
        check_header_string("depended-on artifact group", g)?;
    }
    let mut script_names = std::collections::HashSet::new();
    for sc in &spec.scripts {
        if !valid_script_name(&sc.name) {
            return Err(ArtifactError::InvalidSpec(format!(
                "state script name '{}' is invalid: expected Artifact<State>_<Enter|Leave|Error>_NN[_desc], \
                 State one of Install, Reboot, Rollback, RollbackReboot, Commit, Failure",
                sc.name
            )));
        }
        if !script_names.insert(sc.name.as_str()) {
            return Err(ArtifactError::InvalidSpec(format!(
                "state script '{}' is given twice",
                sc.name
            )));
        }
    }
    let files: Vec<&PayloadFile> = match &spec.payload {
        Payload::Module {
            type_name, files, ..
        } => {
            check_header_string("payload type", type_name)?;
            if type_name.chars().any(|c| c.is_whitespace() || c == '/') {
                return Err(ArtifactError::InvalidSpec(format!(
                    "payload type '{type_name}' must not contain whitespace or '/'"
                )));
            }
            files.iter().collect()
        }
        Payload::RootfsImage { file } => vec![file],
    };
    let mut seen = std::collections::HashSet::new();
    for f in files {
        if !valid_payload_file_name(&f.name) {
            return Err(ArtifactError::InvalidSpec(format!(
                "payload file name '{}' is invalid: use only letters, digits and '.,_-', at most 100 bytes",
                f.name
            )));
        }
        if !seen.insert(f.name.as_str()) {
            return Err(ArtifactError::InvalidSpec(format!(
                "payload file name '{}' is given twice",
                f.name
            )));
        }
    }
    for k in spec.provides.keys().chain(spec.depends.keys()) {
        if k.is_empty() || k == "artifact_name" || k == "artifact_group" {
            return Err(ArtifactError::InvalidSpec(format!(
                "type-info key '{k}' is not allowed (empty, or reserved for the artifact header)"
            )));
        }
    }
    Ok(())
}

/// Writer end of the compressed data/header tar.
enum Compressor<W: Write> {
    Gzip(Box<flate2::write::GzEncoder<W>>),
    ParallelGzip(Box<crate::pgzip::ParallelGzWriter<W>>),
    Plain(W),
}

impl<W: Write> Compressor<W> {
    fn new(inner: W, c: Compression) -> Self {
        match c {
            Compression::Gzip => Compressor::Gzip(Box::new(
                flate2::GzBuilder::new()
                    .operating_system(255)
                    .write(inner, flate2::Compression::new(6)),
            )),
            Compression::None => Compressor::Plain(inner),
        }
    }
    /// For large data: gzip on all cores (the Go tool's pgzip is parallel too).
    fn new_parallel(inner: W, c: Compression) -> Self {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(8);
        match c {
            Compression::Gzip => Compressor::ParallelGzip(Box::new(
                crate::pgzip::ParallelGzWriter::new(inner, 6, threads),
            )),
            Compression::None => Compressor::Plain(inner),
        }
    }
    fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Gzip(g) => g.finish(),
            Compressor::ParallelGzip(g) => g.finish(),
            Compressor::Plain(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Gzip(g) => g.write(buf),
            Compressor::ParallelGzip(g) => g.write(buf),
            Compressor::Plain(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Gzip(g) => g.flush(),
            Compressor::ParallelGzip(g) => g.flush(),
            Compressor::Plain(w) => w.flush(),
        }
    }
}

/// sha256 hex of what was streamed, by file name, in payload order.
struct HashedFile {
    name: String,
    sha256: String,
}

/// Streams one payload file into the inner data tar while hashing it.
fn append_payload_file<W: Write>(
    tar_out: &mut W,
    file: PayloadFile,
    default_mtime: u64,
    buf: &mut [u8],
) -> Result<HashedFile, ArtifactError> {
    let PayloadFile { name, source, mode } = file;
    let (mut reader, size, mode, mtime, label): (Box<dyn Read>, u64, u32, u64, String) =
        match source {
            PayloadSource::Path(path) => {
                let f = File::open(&path).map_err(|source| ArtifactError::PayloadFile {
                    path: path.clone(),
                    source,
                })?;
                let meta = f.metadata().map_err(|source| ArtifactError::PayloadFile {
                    path: path.clone(),
                    source,
                })?;
                if !meta.is_file() {
                    return Err(ArtifactError::InvalidSpec(format!(
                        "payload {} is not a regular file",
                        path.display()
                    )));
                }
                let mode = mode.unwrap_or_else(|| file_mode(&meta));
                let label = path.display().to_string();
                (Box::new(f), meta.len(), mode, file_mtime(&meta), label)
            }
            PayloadSource::Bytes(b) => {
                let len = b.len() as u64;
                let label = format!("in-memory payload '{name}'");
                (
                    Box::new(io::Cursor::new(b)),
                    len,
                    mode.unwrap_or(0o644),
                    default_mtime,
                    label,
                )
            }
            PayloadSource::Reader { reader, size } => {
                let label = format!("payload stream '{name}'");
                (reader, size, mode.unwrap_or(0o644), default_mtime, label)
            }
        };
    let header = tarfmt::file_header(&name, size, mode, mtime, Owner::Root)
        .map_err(|e| ArtifactError::io(format!("building tar header for '{name}'"), e))?;
    let werr = |e| ArtifactError::io("writing the compressed data tar to the temp file", e);
    tar_out.write_all(header.as_bytes()).map_err(werr)?;
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    while done < size {
        let want = (size - done).min(buf.len() as u64) as usize;
        let n = match reader.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(ArtifactError::InvalidSpec(format!(
                    "{label} ended after {done} of {size} bytes (did it change while writing?)"
                )))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ArtifactError::io(format!("reading {label}"), e)),
        };
        hasher.update(&buf[..n]);
        tar_out.write_all(&buf[..n]).map_err(werr)?;
        done += n as u64;
    }
    let mut probe = [0u8; 1];
    loop {
        match reader.read(&mut probe) {
            Ok(0) => break,
            Ok(_) => {
                return Err(ArtifactError::InvalidSpec(format!(
                    "{label} is longer than its declared size of {size} bytes"
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ArtifactError::io(format!("reading {label}"), e)),
        }
    }
    tarfmt::write_padding(tar_out, size).map_err(werr)?;
    Ok(HashedFile {
        name,
        sha256: hex(&hasher.finalize()),
    })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[derive(Serialize)]
struct PayloadTypeOut<'a> {
    #[serde(rename = "type")]
    type_name: &'a str,
}

#[derive(Serialize)]
struct ProvidesOut<'a> {
    artifact_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    artifact_group: Option<&'a str>,
}

#[derive(Serialize)]
struct DependsOut<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    artifact_name: &'a [String],
    device_type: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    artifact_group: &'a [String],
}

#[derive(Serialize)]
struct HeaderInfoOut<'a> {
    payloads: Vec<PayloadTypeOut<'a>>,
    artifact_provides: ProvidesOut<'a>,
    artifact_depends: DependsOut<'a>,
}

#[derive(Serialize)]
struct TypeInfoOut<'a> {
    #[serde(rename = "type")]
    type_name: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    artifact_depends: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    artifact_provides: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    clears_artifact_provides: &'a [String],
}

/// Type-info provides and clears with mender-artifact's defaults applied (reference §8).
fn type_info_provides(
    spec: &ArtifactSpec,
    rootfs_checksum: Option<&str>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut provides = BTreeMap::new();
    let mut default_clears: Vec<String> = Vec::new();
    let version = spec
        .software_version
        .clone()
        .unwrap_or_else(|| spec.name.clone());
    let (key_prefix, rootfs_plain) = match (&spec.payload, &spec.software_name) {
        (Payload::RootfsImage { .. }, None) => (
            spec.software_filesystem
                .clone()
                .unwrap_or_else(|| "rootfs-image".into()),
            true,
        ),
        (Payload::RootfsImage { .. }, Some(n)) => (
            format!(
                "{}.{n}",
                spec.software_filesystem
                    .as_deref()
                    .unwrap_or("rootfs-image")
            ),
            false,
        ),
        (Payload::Module { type_name, .. }, name) => (
            format!(
                "{}.{}",
                spec.software_filesystem
                    .as_deref()
                    .unwrap_or("rootfs-image"),
                name.as_deref().unwrap_or(type_name)
            ),
            false,
        ),
    };
    if !spec.no_default_software_version {
        provides.insert(format!("{key_prefix}.version"), version);
        if rootfs_plain && spec.software_filesystem.is_none() {
            default_clears.push("artifact_group".into());
            default_clears.push("rootfs_image_checksum".into());
        }
        default_clears.push(format!("{key_prefix}.*"));
    }
    if let (Some(sum), false) = (rootfs_checksum, spec.no_checksum_provide) {
        provides.insert("rootfs-image.checksum".into(), sum.to_string());
    }
    for (k, v) in &spec.provides {
        provides.insert(k.clone(), v.clone());
    }
    let mut clears = spec.clears_provides.clone();
    if !spec.no_default_clears_provides {
        for c in default_clears {
            if !clears.contains(&c) {
                clears.push(c);
            }
        }
    }
    (provides, clears)
}

/// Builds the compressed header tar in memory (it holds only small JSON members).
fn build_header(
    spec: &ArtifactSpec,
    scripts: &[(String, Vec<u8>, u32, u64)],
    rootfs_checksum: Option<&str>,
) -> Result<Vec<u8>, ArtifactError> {
    let (type_name, meta_data): (&str, Option<Vec<u8>>) = match &spec.payload {
        Payload::Module {
            type_name,
            meta_data,
            ..
        } => (
            type_name,
            meta_data
                .as_ref()
                .map(|m| to_go_json(&sorted(&serde_json::Value::Object(m.clone())))),
        ),
        // rootfs-image: always an empty meta-data member, as `write rootfs-image` does.
        Payload::RootfsImage { .. } => ("rootfs-image", Some(Vec::new())),
    };
    let header_info = to_go_json(&HeaderInfoOut {
        payloads: vec![PayloadTypeOut { type_name }],
        artifact_provides: ProvidesOut {
            artifact_name: &spec.name,
            artifact_group: spec.group.as_deref(),
        },
        artifact_depends: DependsOut {
            artifact_name: &spec.depends_artifact_names,
            device_type: &spec.device_types,
            artifact_group: &spec.depends_groups,
        },
    });
    let (provides, clears) = type_info_provides(spec, rootfs_checksum);
    let type_info = to_go_json(&TypeInfoOut {
        type_name,
        artifact_depends: &spec.depends,
        artifact_provides: &provides,
        clears_artifact_provides: &clears,
    });
    let mut comp = Compressor::new(Vec::new(), spec.compression);
    let ioerr = |e| ArtifactError::io("building the header tar", e);
    tarfmt::write_member(
        &mut comp,
        "header-info",
        &header_info,
        0o600,
        0,
        Owner::Anonymous,
    )
    .map_err(ioerr)?;
    for (name, data, mode, mtime) in scripts {
        let path = format!("scripts/{name}");
        tarfmt::write_member(&mut comp, &path, data, *mode, *mtime, Owner::Root).map_err(ioerr)?;
    }
    tarfmt::write_member(
        &mut comp,
        "headers/0000/type-info",
        &type_info,
        0o600,
        0,
        Owner::Anonymous,
    )
    .map_err(ioerr)?;
    if let Some(md) = meta_data {
        tarfmt::write_member(
            &mut comp,
            "headers/0000/meta-data",
            &md,
            0o600,
            0,
            Owner::Anonymous,
        )
        .map_err(ioerr)?;
    }
    tarfmt::write_end(&mut comp).map_err(ioerr)?;
    comp.finish().map_err(ioerr)
}

/// Writes the artifact described by `spec` to `out`. Payload data is streamed through a
/// temporary file (compressed), so memory use does not depend on payload size.
pub fn write_artifact<W: Write>(spec: ArtifactSpec, out: W) -> Result<(), ArtifactError> {
    validate(&spec)?;
    let mtime = spec.mtime.unwrap_or_else(now);
    let suffix = spec.compression.suffix();

    // 1. Data tar -> compressed temp file, hashing every payload file on the way.
    let tmp = match &spec.temp_dir {
        Some(d) => tempfile::tempfile_in(d),
        None => tempfile::tempfile(),
    }
    .map_err(|e| ArtifactError::io("creating a temp file for the data tar", e))?;
    let mut spec = spec;
    let files: Vec<PayloadFile> = match &mut spec.payload {
        Payload::Module { files, .. } => std::mem::take(files),
        Payload::RootfsImage { file } => vec![std::mem::replace(
            file,
            PayloadFile::from_bytes(String::new(), Vec::new(), 0),
        )],
    };
    let is_rootfs = matches!(spec.payload, Payload::RootfsImage { .. });
    let mut scripts = std::mem::take(&mut spec.scripts)
        .into_iter()
        .map(|f| load_script(f, mtime))
        .collect::<Result<Vec<_>, _>>()?;
    scripts.sort_by(|a, b| a.0.cmp(&b.0));
    let mut comp = Compressor::new_parallel(BufWriter::with_capacity(CHUNK, tmp), spec.compression);
    let mut buf = vec![0u8; CHUNK];
    let mut hashed = Vec::with_capacity(files.len());
    for f in files {
        hashed.push(append_payload_file(&mut comp, f, mtime, &mut buf)?);
    }
    let werr = |e| ArtifactError::io("writing the compressed data tar to the temp file", e);
    tarfmt::write_end(&mut comp).map_err(werr)?;
    let mut tmp = comp
        .finish()
        .map_err(werr)?
        .into_inner()
        .map_err(|e| werr(e.into_error()))?;
    let data_size = tmp.stream_position().map_err(werr)?;
    tmp.seek(SeekFrom::Start(0)).map_err(werr)?;

    // 2. Header and manifest (small, in memory).
    let rootfs_checksum = if is_rootfs {
        Some(hashed[0].sha256.as_str())
    } else {
        None
    };
    let header = build_header(&spec, &scripts, rootfs_checksum)?;
    let header_name = format!("header.tar{suffix}");
    let mut manifest = String::new();
    for h in &hashed {
        manifest.push_str(&format!("{}  data/0000/{}\n", h.sha256, h.name));
    }
    manifest.push_str(&format!(
        "{}  {header_name}\n",
        hex(&Sha256::digest(&header))
    ));
    manifest.push_str(&format!(
        "{}  version\n",
        hex(&Sha256::digest(VERSION_JSON))
    ));
    let signature = match &spec.signing_key {
        Some(k) => Some(k.sign_manifest(manifest.as_bytes())?),
        None => None,
    };

    // 3. Outer tar.
    let mut out = BufWriter::with_capacity(CHUNK, out);
    let oerr = |e| ArtifactError::io("writing the artifact", e);
    tarfmt::write_member(
        &mut out,
        "version",
        VERSION_JSON,
        0o600,
        0,
        Owner::Anonymous,
    )
    .map_err(oerr)?;
    tarfmt::write_member(
        &mut out,
        "manifest",
        manifest.as_bytes(),
        0o600,
        0,
        Owner::Anonymous,
    )
    .map_err(oerr)?;
    if let Some(sig) = &signature {
        tarfmt::write_member(
            &mut out,
            "manifest.sig",
            sig.as_bytes(),
            0o600,
            0,
            Owner::Anonymous,
        )
        .map_err(oerr)?;
    }
    tarfmt::write_member(&mut out, &header_name, &header, 0o600, mtime, Owner::Root)
        .map_err(oerr)?;
    let data_header = tarfmt::file_header(
        &format!("data/0000.tar{suffix}"),
        data_size,
        0o600,
        mtime,
        Owner::Root,
    )
    .map_err(oerr)?;
    out.write_all(data_header.as_bytes()).map_err(oerr)?;
    let copied = io::copy(&mut (&mut tmp).take(data_size), &mut out)
        .map_err(|e| ArtifactError::io("copying the data tar from the temp file", e))?;
    if copied != data_size {
        return Err(ArtifactError::Truncated("the temporary data tar".into()));
    }
    tarfmt::write_padding(&mut out, data_size).map_err(oerr)?;
    tarfmt::write_end(&mut out).map_err(oerr)?;
    out.flush().map_err(oerr)?;
    Ok(())
}

/// Writes the artifact to `path` atomically: a temp file in the same directory, renamed
/// over `path` only when complete. The data temp file also goes to that directory unless
/// `spec.temp_dir` is set.
pub fn write_artifact_to_path(mut spec: ArtifactSpec, path: &Path) -> Result<(), ArtifactError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if spec.temp_dir.is_none() {
        spec.temp_dir = Some(dir.clone());
    }
    let tmp = tempfile::NamedTempFile::new_in(&dir)
        .map_err(|e| ArtifactError::io(format!("creating a temp file in {}", dir.display()), e))?;
    write_artifact(spec, tmp.as_file())?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| ArtifactError::io(format!("syncing the output for {}", path.display()), e))?;
    // NamedTempFile is created 0600; an artifact is not secret, make it readable like the
    // output of `mender-artifact write`.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| {
                ArtifactError::io(format!("setting permissions of {}", path.display()), e)
            })?;
    }
    tmp.persist(path).map_err(|e| {
        ArtifactError::io(
            format!("renaming the output to {}", path.display()),
            e.error,
        )
    })?;
    Ok(())
}
