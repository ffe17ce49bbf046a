//! Streaming artifact writer: the data tar is compressed into a temp file while every payload
//! file is hashed (one read of each file), then the outer tar (version, manifest, signature,
//! header, data) is written in one pass.

use crate::compression::Volume;
use crate::payload::{HashedFile, SoftwareOptions};
use crate::schema::gojson::to_go_json;
use crate::schema::{self, manifest, non_empty, HeaderDepends, HeaderInfo, HeaderProvides};
use crate::schema::{PayloadEntry, TypeInfo, VERSION_JSON};
use crate::spec::{file_mode, file_mtime};
use crate::tarfmt::{self, Owner};
use crate::{ArtifactError, ArtifactSpec, Payload, PayloadFile, PayloadSource};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// I/O buffer size for payload streaming.
const CHUNK: usize = 256 * 1024;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

const MAX_SCRIPT: u64 = 16 << 20;
/// Maximum size of all state scripts together: the header (scripts, JSON and tar
/// overhead) must stay within the reader's [`crate::MAX_HEADER_BYTES`].
const MAX_SCRIPTS_TOTAL: u64 = crate::MAX_HEADER_BYTES - (2 << 20);

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
            let meta = std::fs::metadata(&path).map_err(ArtifactError::payload_file(&path))?;
            if meta.len() > MAX_SCRIPT {
                return Err(too_big(meta.len()));
            }
            let data = std::fs::read(&path).map_err(ArtifactError::payload_file(&path))?;
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

/// Yields exactly `size` bytes of `inner` (hashing them when asked) and records why not
/// when the source is shorter, longer or fails: `tar::Builder` would pad a short member
/// silently.
struct ExactReader<R> {
    inner: R,
    size: u64,
    remaining: u64,
    hasher: Option<Sha256>,
    label: String,
    failure: Option<ArtifactError>,
}

impl<R: Read> ExactReader<R> {
    fn new(inner: R, size: u64, hash: bool, label: String) -> Self {
        ExactReader {
            inner,
            size,
            remaining: size,
            hasher: hash.then(Sha256::new),
            label,
            failure: None,
        }
    }

    fn fail(&mut self, e: ArtifactError) -> io::Error {
        let msg = e.to_string();
        self.failure = Some(e);
        io::Error::other(msg)
    }

    /// The failure of the source, else `err` (a failure of the destination).
    fn outcome(&mut self, res: io::Result<()>, context: &str) -> Result<(), ArtifactError> {
        if let Some(f) = self.failure.take() {
            return Err(f);
        }
        res.map_err(|e| ArtifactError::io(context, e))
    }
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe) {
                Ok(0) => Ok(0),
                Ok(_) => Err(self.fail(ArtifactError::InvalidSpec(format!(
                    "{} is longer than its declared size of {} bytes",
                    self.label, self.size
                )))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
                Err(e) => Err(self.fail(ArtifactError::io(format!("reading {}", self.label), e))),
            };
        }
        let want = (self.remaining.min(buf.len() as u64)) as usize;
        match self.inner.read(&mut buf[..want]) {
            Ok(0) => Err(self.fail(ArtifactError::InvalidSpec(format!(
                "{} ended after {} of {} bytes (did it change while writing?)",
                self.label,
                self.size - self.remaining,
                self.size
            )))),
            Ok(n) => {
                if let Some(h) = &mut self.hasher {
                    h.update(&buf[..n]);
                }
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => Err(self.fail(ArtifactError::io(format!("reading {}", self.label), e))),
        }
    }
}

/// Streams one payload file into the data tar while hashing it.
fn append_payload_file<W: Write>(
    tar: &mut tar::Builder<W>,
    file: PayloadFile,
    default_mtime: u64,
) -> Result<HashedFile, ArtifactError> {
    let PayloadFile { name, source, mode } = file;
    let (reader, size, mode, mtime, label): (Box<dyn Read>, u64, u32, u64, String) = match source {
        PayloadSource::Path(path) => {
            let f = File::open(&path).map_err(ArtifactError::payload_file(&path))?;
            let meta = f.metadata().map_err(ArtifactError::payload_file(&path))?;
            if !meta.is_file() {
                return Err(ArtifactError::InvalidSpec(format!(
                    "payload {} is not a regular file",
                    path.display()
                )));
            }
            let mode = mode.unwrap_or_else(|| file_mode(&meta));
            let label = path.display().to_string();
            let reader = Box::new(BufReader::with_capacity(CHUNK, f));
            (reader, meta.len(), mode, file_mtime(&meta), label)
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
    let mut src = ExactReader::new(reader, size, true, label);
    let res = tarfmt::append_stream(tar, &name, size, mode, mtime, Owner::Root, &mut src);
    src.outcome(res, "writing the compressed data tar to the temp file")?;
    let sha256 = format!(
        "{:x}",
        src.hasher.take().expect("hashing reader").finalize()
    );
    Ok(HashedFile { name, sha256 })
}

/// Builds the compressed header tar in memory (it holds only small JSON members).
fn build_header(
    spec: &ArtifactSpec,
    scripts: &[(String, Vec<u8>, u32, u64)],
    hashed: &[HashedFile],
    volume: Volume,
) -> Result<Vec<u8>, ArtifactError> {
    let handler = spec.payload.handler();
    let header_info = to_go_json(&HeaderInfo {
        payloads: vec![PayloadEntry {
            type_name: handler.type_name().map(str::to_string),
        }],
        artifact_provides: Some(HeaderProvides {
            artifact_name: Some(spec.name.clone()),
            artifact_group: spec.group.clone(),
        }),
        artifact_depends: Some(HeaderDepends {
            artifact_name: non_empty(spec.depends_artifact_names.clone()),
            device_type: Some(spec.device_types.clone()),
            artifact_group: non_empty(spec.depends_groups.clone()),
        }),
    });
    let software = SoftwareOptions {
        name: spec.software_name.as_deref(),
        version: spec.software_version.as_deref().unwrap_or(&spec.name),
        filesystem: spec.software_filesystem.as_deref(),
        no_default_version: spec.no_default_software_version,
        no_checksum_provide: spec.no_checksum_provide,
    };
    let defaults = handler.default_provides(&software, hashed);
    // Given provides override the defaults; given clears come first.
    let mut provides = defaults.provides;
    provides.extend(spec.provides.clone());
    let mut clears = spec.clears_provides.clone();
    if !spec.no_default_clears_provides {
        for c in defaults.clears {
            if !clears.contains(&c) {
                clears.push(c);
            }
        }
    }
    let strings = |m: std::collections::BTreeMap<String, String>| {
        m.into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect()
    };
    let type_info = to_go_json(&TypeInfo {
        type_name: handler.type_name().map(str::to_string),
        artifact_depends: non_empty(strings(spec.depends.clone())),
        artifact_provides: non_empty(strings(provides)),
        clears_artifact_provides: non_empty(clears),
    });
    let ioerr = |e| ArtifactError::io("building the header tar", e);
    let mut tar = tar::Builder::new(spec.compression.encoder(Vec::new(), volume));
    tarfmt::append_bytes(
        &mut tar,
        schema::HEADER_INFO,
        &header_info,
        0o600,
        0,
        Owner::Anonymous,
    )
    .map_err(ioerr)?;
    for (name, data, mode, mtime) in scripts {
        let path = format!("{}{name}", schema::SCRIPTS_DIR);
        tarfmt::append_bytes(&mut tar, &path, data, *mode, *mtime, Owner::Root).map_err(ioerr)?;
    }
    tarfmt::append_bytes(
        &mut tar,
        &schema::type_info_entry(0),
        &type_info,
        0o600,
        0,
        Owner::Anonymous,
    )
    .map_err(ioerr)?;
    if let Some(md) = handler.meta_data() {
        if md.len() as u64 > crate::MAX_JSON_BYTES {
            return Err(ArtifactError::InvalidSpec(format!(
                "meta-data is {} bytes as JSON; the limit is {} (readers refuse larger)",
                md.len(),
                crate::MAX_JSON_BYTES
            )));
        }
        tarfmt::append_bytes(
            &mut tar,
            &schema::meta_data_entry(0),
            &md,
            0o600,
            0,
            Owner::Anonymous,
        )
        .map_err(ioerr)?;
    }
    tar.into_inner().map_err(ioerr)?.finish().map_err(ioerr)
}

/// A validated spec with its payload files and state scripts taken out.
struct Prepared {
    spec: ArtifactSpec,
    files: Vec<PayloadFile>,
    scripts: Vec<(String, Vec<u8>, u32, u64)>,
    mtime: u64,
}

fn prepare(mut spec: ArtifactSpec) -> Result<Prepared, ArtifactError> {
    spec.validate()?;
    let mtime = spec.mtime.unwrap_or_else(now);
    let files = spec.payload.take_files();
    let mut scripts = std::mem::take(&mut spec.scripts)
        .into_iter()
        .map(|f| load_script(f, mtime))
        .collect::<Result<Vec<_>, _>>()?;
    scripts.sort_by(|a, b| a.0.cmp(&b.0));
    let script_bytes: u64 = scripts.iter().map(|s| s.1.len() as u64).sum();
    if script_bytes > MAX_SCRIPTS_TOTAL {
        return Err(ArtifactError::InvalidSpec(format!(
            "state scripts total {script_bytes} bytes; the limit is {MAX_SCRIPTS_TOTAL} (readers refuse headers over {} bytes)",
            crate::MAX_HEADER_BYTES
        )));
    }
    Ok(Prepared {
        spec,
        files,
        scripts,
        mtime,
    })
}

/// Streams the compressed data tar into `out`, hashing every payload file on the way (the
/// only read of each file); returns the hashes and `out`.
fn write_data_tar<W: Write>(
    files: Vec<PayloadFile>,
    p: &Prepared,
    out: W,
) -> Result<(Vec<HashedFile>, W), ArtifactError> {
    let mut data_tar = tar::Builder::new(p.spec.compression.encoder(out, Volume::Bulk));
    let mut hashed = Vec::with_capacity(files.len());
    for f in files {
        hashed.push(append_payload_file(&mut data_tar, f, p.mtime)?);
    }
    let werr = |e| ArtifactError::io("writing the compressed data tar", e);
    let out = data_tar
        .into_inner()
        .map_err(werr)?
        .finish()
        .map_err(werr)?;
    Ok((hashed, out))
}

/// The members before the data: manifest, signature and header (`version` is constant).
struct Prefix {
    manifest: String,
    signature: Option<String>,
    header_name: String,
    header: Vec<u8>,
}

fn build_prefix(
    p: &Prepared,
    hashed: &[HashedFile],
    header_volume: Volume,
) -> Result<Prefix, ArtifactError> {
    let header = build_header(&p.spec, &p.scripts, hashed, header_volume)?;
    let header_name = schema::header_member(p.spec.compression);
    let data_names: Vec<String> = hashed
        .iter()
        .map(|h| schema::manifest_data_name(0, &h.name))
        .collect();
    let header_sha = format!("{:x}", Sha256::digest(&header));
    let version_sha = format!("{:x}", Sha256::digest(VERSION_JSON));
    let manifest = manifest::render(
        data_names
            .iter()
            .zip(hashed)
            .map(|(n, h)| (n.as_str(), h.sha256.as_str()))
            .chain([
                (header_name.as_str(), header_sha.as_str()),
                (schema::VERSION, version_sha.as_str()),
            ]),
    );
    let signature = match &p.spec.signing_key {
        Some(k) => Some(k.sign_manifest(manifest.as_bytes())?),
        None => None,
    };
    Ok(Prefix {
        manifest,
        signature,
        header_name,
        header,
    })
}

/// Appends `version`, `manifest`, [`manifest.sig`] and the header member to the outer tar.
fn append_prefix<W: Write>(
    outer: &mut tar::Builder<W>,
    prefix: &Prefix,
    mtime: u64,
) -> io::Result<()> {
    let small = [
        (schema::VERSION, VERSION_JSON),
        (schema::MANIFEST, prefix.manifest.as_bytes()),
    ];
    for (name, data) in small {
        tarfmt::append_bytes(outer, name, data, 0o600, 0, Owner::Anonymous)?;
    }
    if let Some(sig) = &prefix.signature {
        tarfmt::append_bytes(
            outer,
            schema::MANIFEST_SIG,
            sig.as_bytes(),
            0o600,
            0,
            Owner::Anonymous,
        )?;
    }
    tarfmt::append_bytes(
        outer,
        &prefix.header_name,
        &prefix.header,
        0o600,
        mtime,
        Owner::Root,
    )
}

/// Writes the artifact described by `spec` to `out`. Payload data is streamed through a
/// temporary file (compressed), so memory use does not depend on payload size.
pub fn write_artifact<W: Write>(spec: ArtifactSpec, out: W) -> Result<(), ArtifactError> {
    let mut p = prepare(spec)?;

    // 1. Data tar -> compressed temp file, hashing every payload file on the way.
    let tmp = match &p.spec.temp_dir {
        Some(d) => tempfile::tempfile_in(d),
        None => tempfile::tempfile(),
    }
    .map_err(|e| ArtifactError::io("creating a temp file for the data tar", e))?;
    let files = std::mem::take(&mut p.files);
    let (hashed, tmp) = write_data_tar(files, &p, BufWriter::with_capacity(CHUNK, tmp))?;
    let werr = |e| ArtifactError::io("writing the compressed data tar to the temp file", e);
    let mut tmp = tmp.into_inner().map_err(|e| werr(e.into_error()))?;
    let data_size = tmp.stream_position().map_err(werr)?;
    tmp.seek(SeekFrom::Start(0)).map_err(werr)?;

    // 2. Header and manifest (small, in memory).
    let prefix = build_prefix(&p, &hashed, Volume::Small)?;

    // 3. Outer tar.
    let oerr = |e| ArtifactError::io("writing the artifact", e);
    let mut outer = tar::Builder::new(BufWriter::with_capacity(CHUNK, out));
    append_prefix(&mut outer, &prefix, p.mtime).map_err(oerr)?;
    let mut data = ExactReader::new(&mut tmp, data_size, false, "the temporary data tar".into());
    let res = append_data_member(&mut outer, &p, data_size, &mut data);
    data.outcome(res, "writing the artifact")?;
    outer.into_inner().map_err(oerr)?.flush().map_err(oerr)?;
    Ok(())
}

/// Appends the outer tar's single data member (`data/0000.tar[.suffix]`, `data_size` bytes).
fn append_data_member<W: Write, R: Read>(
    outer: &mut tar::Builder<W>,
    p: &Prepared,
    data_size: u64,
    data: R,
) -> io::Result<()> {
    let name = schema::data_member(0, p.spec.compression);
    tarfmt::append_stream(outer, &name, data_size, 0o600, p.mtime, Owner::Root, data)
}

/// The outer tar up to the data member's content: `version`, `manifest`, [`manifest.sig`],
/// the header and the data member's tar header (for `data_size` bytes of data).
fn prefix_bytes(p: &Prepared, prefix: &Prefix, data_size: u64) -> io::Result<Vec<u8>> {
    let mut outer = tar::Builder::new(Vec::new());
    append_prefix(&mut outer, prefix, p.mtime)?;
    append_data_member(&mut outer, p, data_size, io::empty())?;
    let mut bytes = outer.into_inner()?;
    // Drop the end marker `into_inner` wrote: the data follows.
    bytes.truncate(bytes.len() - END_MARKER);
    Ok(bytes)
}

/// Size of the end-of-archive marker `tar::Builder` writes.
const END_MARKER: usize = 1024;

/// Writes the artifact into a seekable file without a temp file: the data goes straight to
/// its place after a prefix of known size, and the prefix is written last. The prefix's size
/// must not depend on the hashes, so the header is gzip-stored (not deflated) here: its size
/// then depends only on its length, which is the same with any hash.
fn write_artifact_seekable(spec: ArtifactSpec, mut file: &File) -> Result<(), ArtifactError> {
    let mut p = prepare(spec)?;
    let oerr = |e| ArtifactError::io("writing the artifact", e);
    let placeholder: Vec<HashedFile> = p
        .files
        .iter()
        .map(|f| HashedFile {
            name: f.name.clone(),
            sha256: "0".repeat(64),
        })
        .collect();
    let provisional = build_prefix(&p, &placeholder, Volume::FixedSize)?;
    let prefix_len = prefix_bytes(&p, &provisional, 0).map_err(oerr)?.len() as u64;

    file.seek(SeekFrom::Start(prefix_len)).map_err(oerr)?;
    let files = std::mem::take(&mut p.files);
    let (hashed, out) = write_data_tar(files, &p, BufWriter::with_capacity(CHUNK, file))?;
    let mut file = out.into_inner().map_err(|e| oerr(e.into_error()))?;
    let data_size = file.stream_position().map_err(oerr)? - prefix_len;
    let end = tar::Builder::new(Vec::new()).into_inner().map_err(oerr)?;
    let padding = (512 - data_size % 512) % 512;
    file.write_all(&vec![0u8; padding as usize]).map_err(oerr)?;
    file.write_all(&end).map_err(oerr)?;

    let prefix = build_prefix(&p, &hashed, Volume::FixedSize)?;
    let bytes = prefix_bytes(&p, &prefix, data_size).map_err(oerr)?;
    if bytes.len() as u64 != prefix_len {
        return Err(ArtifactError::io(
            "writing the artifact",
            io::Error::other(format!(
                "the artifact's prefix is {} bytes, {prefix_len} were reserved",
                bytes.len()
            )),
        ));
    }
    file.seek(SeekFrom::Start(0)).map_err(oerr)?;
    file.write_all(&bytes).map_err(oerr)?;
    file.flush().map_err(oerr)
}

/// Writes the artifact to `path` atomically: a temp file in the same directory, renamed
/// over `path` only when complete. A rootfs-image artifact is written in place (the data
/// once, no second temp file; its header is gzip-stored); for other payloads the data temp
/// file goes to that directory unless `spec.temp_dir` is set.
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
    // A rootfs image is large: write it in place rather than through a second temp file.
    if matches!(spec.payload, Payload::RootfsImage { .. }) {
        write_artifact_seekable(spec, tmp.as_file())?;
    } else {
        write_artifact(spec, tmp.as_file())?;
    }
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
