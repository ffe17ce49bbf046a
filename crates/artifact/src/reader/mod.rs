//! Streaming artifact reader: checks member order, every checksum and (optionally) the
//! signature while reading once from an `io::Read`, and reports the header information.
//! The outer members are handled here, one method per member; the header tar and the data
//! tars have their own modules.

mod data;
mod header;
mod limits;

use crate::payload;
use crate::schema::{self, manifest::Manifest, parse_json, Version};
use crate::{ArtifactError, Compression, SignatureStatus, VerifyKey};
use header::HeaderData;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{self, Read};

/// One file of a payload, as found in the data tar (checksum verified against the manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFileInfo {
    /// Index of the payload (`data/NNNN`) the file belongs to.
    pub payload: usize,
    pub name: String,
    pub size: u64,
    /// Lowercase hex sha256 of the uncompressed content.
    pub sha256: String,
}

/// A payload file whose content is about to stream to the visitor of [`read_payloads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadStream<'a> {
    /// Index of the payload (`data/NNNN`).
    pub payload: usize,
    /// The payload's type (`rootfs-image`, a module type, or `""` for bootstrap).
    pub payload_type: &'a str,
    /// The file's base name.
    pub name: &'a str,
    /// The file's size, as its tar header declares it.
    pub size: u64,
}

/// What an artifact declares, after full verification.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactInfo {
    pub name: String,
    pub group: Option<String>,
    pub device_types: Vec<String>,
    /// One per payload, e.g. `rootfs-image` (also for the legacy `""`) or a module type;
    /// empty for a bootstrap payload (`type: null`).
    pub payload_types: Vec<String>,
    /// `artifact_provides` of header-info (incl. `artifact_name`) merged with the type-info
    /// provides of every payload.
    pub provides: BTreeMap<String, String>,
    /// `artifact_depends` of header-info (incl. `device_type`, as arrays) merged with the
    /// type-info depends of every payload.
    pub depends: BTreeMap<String, Value>,
    pub clears_provides: Vec<String>,
    pub payload_files: Vec<PayloadFileInfo>,
    pub signature: SignatureStatus,
    /// `headers/NNNN/meta-data` of each payload (`None` when absent or empty).
    pub meta_data: Vec<Option<serde_json::Map<String, Value>>>,
    /// State script names (`scripts/...`) in header order.
    pub scripts: Vec<String>,
}

/// Reads and fully verifies an artifact (all checksums). A signature is not checked:
/// `signature` is `Unsigned` or `Unverified`.
pub fn read_info<R: Read>(r: R) -> Result<ArtifactInfo, ArtifactError> {
    read_artifact(r, None, false, None)
}

/// Like [`read_info`], and with a key the artifact must be signed and the signature must
/// verify (the `mender-artifact validate -k` rule): otherwise `SignatureMissing` or
/// `SignatureInvalid`. Without a key it behaves like `read_info`.
pub fn read_verified<R: Read>(
    r: R,
    key: Option<&VerifyKey>,
) -> Result<ArtifactInfo, ArtifactError> {
    read_artifact(r, key, true, None)
}

/// Like [`read_verified`], but a bad or missing signature does not fail the read: it is
/// reported in `signature` (`Unsigned`, `Valid`, `Invalid`, `Unverified`), as
/// `mender-artifact read -k` prints it. Checksums are still enforced.
pub fn read_report<R: Read>(r: R, key: Option<&VerifyKey>) -> Result<ArtifactInfo, ArtifactError> {
    read_artifact(r, key, false, None)
}

/// Like [`read_verified`], and hands every payload file's decompressed content to `visit`
/// as it streams (e.g. a rootfs image, without holding it in memory or on disk). Whatever
/// `visit` does not read is skipped. With a key the signature is checked before any payload
/// data streams; a file's checksum is checked after `visit` returns, so act on the content
/// only when this function returns `Ok`. An error returned by `visit` stops the read.
pub fn read_payloads<R, F>(
    r: R,
    key: Option<&VerifyKey>,
    mut visit: F,
) -> Result<ArtifactInfo, ArtifactError>
where
    R: Read,
    F: FnMut(&PayloadStream<'_>, &mut dyn Read) -> io::Result<()>,
{
    read_artifact(r, key, true, Some(&mut visit))
}

/// The reader's limit on the `header.tar*` member, stored and decompressed (state scripts
/// included); the writer refuses state scripts that would not fit.
pub const MAX_HEADER_BYTES: u64 = limits::MAX_HEADER;

/// The reader's limit on each member it holds in memory: `version`, `manifest`,
/// `manifest.sig` and the JSON entries of the header.
pub const MAX_JSON_BYTES: u64 = limits::MAX_SMALL_MEMBER;

/// The visitor of [`read_payloads`], type-erased.
pub(crate) type PayloadVisitor<'v> =
    &'v mut dyn FnMut(&PayloadStream<'_>, &mut dyn Read) -> io::Result<()>;

/// Hashes and counts everything read through it; keeps the source's own error apart from
/// errors of whoever reads through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    source_error: Option<io::Error>,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            source_error: None,
        }
    }
    fn finish_hex(self) -> String {
        format!("{:x}", self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.count += n as u64;
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.source_error = Some(io::Error::new(e.kind(), e.to_string()));
                }
                Err(e)
            }
        }
    }
}

fn tar_err(what: &str, e: io::Error) -> ArtifactError {
    // The tar crate reports short input as `Other` with an "unexpected EOF" message.
    if e.to_string().contains("unexpected EOF") {
        return ArtifactError::Truncated(what.to_string());
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => ArtifactError::Truncated(what.to_string()),
        io::ErrorKind::InvalidData | io::ErrorKind::Other | io::ErrorKind::InvalidInput => {
            ArtifactError::Malformed(format!("{what}: {e}"))
        }
        _ => ArtifactError::io(format!("reading {what}"), e),
    }
}

/// Reads a small member fully, refusing oversized ones.
fn read_small<R: Read>(r: R, name: &str, declared: u64) -> Result<Vec<u8>, ArtifactError> {
    limits::check_size(
        name,
        "a member read into memory",
        declared,
        limits::MAX_SMALL_MEMBER,
    )?;
    let mut out = Vec::with_capacity(declared as usize);
    r.take(limits::MAX_SMALL_MEMBER + 1)
        .read_to_end(&mut out)
        .map_err(|e| tar_err(&format!("member '{name}'"), e))?;
    if (out.len() as u64) < declared {
        return Err(ArtifactError::Truncated(format!("member '{name}'")));
    }
    Ok(out)
}

/// Drains a member to its end, failing if it is shorter than its tar header says.
fn drain_member<R: Read>(
    mut r: R,
    name: &str,
    declared: u64,
    already: u64,
) -> Result<(), ArtifactError> {
    let rest =
        io::copy(&mut r, &mut io::sink()).map_err(|e| tar_err(&format!("member '{name}'"), e))?;
    if already + rest < declared {
        return Err(ArtifactError::Truncated(format!("member '{name}'")));
    }
    Ok(())
}

/// Where the reader is in the fixed member order.
#[derive(PartialEq, PartialOrd, Clone, Copy)]
enum Stage {
    Start,
    Version,
    Manifest,
    Signature,
    Header,
    Data,
}

/// The state of one read: what has been seen so far.
struct ArtifactReader<'k, 'v> {
    key: Option<&'k VerifyKey>,
    strict_signature: bool,
    visit: Option<PayloadVisitor<'v>>,
    stage: Stage,
    version_hash: String,
    manifest_bytes: Vec<u8>,
    manifest: Option<Manifest>,
    signature: SignatureStatus,
    header: Option<HeaderData>,
    header_name: String,
    files: Vec<PayloadFileInfo>,
    data_seen: usize,
}

fn read_artifact<R: Read>(
    r: R,
    key: Option<&VerifyKey>,
    strict_signature: bool,
    visit: Option<PayloadVisitor<'_>>,
) -> Result<ArtifactInfo, ArtifactError> {
    let mut reader = ArtifactReader {
        key,
        strict_signature,
        visit,
        stage: Stage::Start,
        version_hash: String::new(),
        manifest_bytes: Vec::new(),
        manifest: None,
        signature: SignatureStatus::Unsigned,
        header: None,
        header_name: String::new(),
        files: Vec::new(),
        data_seen: 0,
    };
    let mut archive = tar::Archive::new(r);
    let entries = archive.entries().map_err(|e| tar_err("artifact tar", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| tar_err("artifact tar", e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        limits::check_entry_name("the artifact", &name)?;
        if !entry.header().entry_type().is_file() {
            return Err(ArtifactError::Malformed(format!(
                "artifact member '{name}' is not a regular file"
            )));
        }
        reader.member(&name, entry.size(), entry)?;
    }
    reader.finish()
}

impl ArtifactReader<'_, '_> {
    /// Dispatches one outer member by the stage reached and its name.
    fn member<E: Read>(&mut self, name: &str, size: u64, entry: E) -> Result<(), ArtifactError> {
        let unexpected = |expected: String| ArtifactError::UnexpectedMember {
            expected,
            found: name.to_string(),
        };
        match (self.stage, name) {
            (Stage::Start, schema::VERSION) => self.version(entry, size),
            (Stage::Start, _) => Err(unexpected(schema::VERSION.into())),
            (Stage::Version, schema::MANIFEST) => self.manifest(entry, size),
            (Stage::Version, _) => Err(unexpected(schema::MANIFEST.into())),
            (Stage::Manifest, schema::MANIFEST_SIG) => self.signature(entry, size),
            (Stage::Manifest | Stage::Signature, schema::MANIFEST_AUGMENT) => Err(augmented(name)),
            (Stage::Header, n) if n.starts_with(schema::HEADER_AUGMENT_TAR) => Err(augmented(n)),
            (Stage::Manifest | Stage::Signature, n) if n.starts_with(schema::HEADER_TAR) => {
                self.header(n, entry, size)
            }
            (Stage::Manifest | Stage::Signature, _) => {
                Err(unexpected("header.tar.gz or header.tar".into()))
            }
            (Stage::Header | Stage::Data, n) if n.starts_with("data/") => self.data(n, entry, size),
            (Stage::Header | Stage::Data, _) => Err(unexpected(format!(
                "data/{0:04}.tar.gz or data/{0:04}.tar",
                self.data_seen
            ))),
        }
    }

    fn version<E: Read>(&mut self, entry: E, size: u64) -> Result<(), ArtifactError> {
        let mut hr = HashingReader::new(entry);
        let bytes = read_small(&mut hr, schema::VERSION, size)?;
        self.version_hash = hr.finish_hex();
        let v: Version = parse_json(schema::VERSION, &bytes)?;
        if v.format != "mender" {
            return Err(ArtifactError::Unsupported(format!(
                "version file says format '{}', expected 'mender'",
                v.format
            )));
        }
        if v.version != 3 {
            return Err(ArtifactError::Unsupported(format!(
                "artifact format version {} (only version 3 is supported)",
                v.version
            )));
        }
        self.stage = Stage::Version;
        Ok(())
    }

    fn manifest<E: Read>(&mut self, entry: E, size: u64) -> Result<(), ArtifactError> {
        self.manifest_bytes = read_small(entry, schema::MANIFEST, size)?;
        let mut m = Manifest::parse(&self.manifest_bytes)?;
        m.check(schema::VERSION, &self.version_hash)?;
        self.manifest = Some(m);
        self.signature = SignatureStatus::Unsigned;
        self.stage = Stage::Manifest;
        Ok(())
    }

    fn signature<E: Read>(&mut self, entry: E, size: u64) -> Result<(), ArtifactError> {
        let sig = read_small(entry, schema::MANIFEST_SIG, size)?;
        self.signature = match self.key {
            None => SignatureStatus::Unverified,
            Some(k) if k.verify_manifest(&self.manifest_bytes, &sig) => SignatureStatus::Valid,
            Some(_) => SignatureStatus::Invalid,
        };
        if self.strict_signature && self.signature == SignatureStatus::Invalid {
            return Err(ArtifactError::SignatureInvalid);
        }
        self.stage = Stage::Signature;
        Ok(())
    }

    fn header<E: Read>(&mut self, name: &str, entry: E, size: u64) -> Result<(), ArtifactError> {
        if self.strict_signature
            && self.key.is_some()
            && self.signature == SignatureStatus::Unsigned
        {
            return Err(ArtifactError::SignatureMissing);
        }
        let comp = Compression::from_member_name(name, name, schema::HEADER_TAR)?;
        limits::check_size(name, "the header", size, limits::MAX_HEADER)?;
        let m = self
            .manifest
            .as_mut()
            .expect("manifest parsed before header");
        m.require(name)?;
        let mut hr = HashingReader::new(entry);
        let mut unpacked = limits::Bounded::new(comp.decoder(&mut hr), limits::MAX_HEADER);
        let parsed = header::parse_header_tar(&mut unpacked, name);
        if unpacked.exceeded {
            return Err(ArtifactError::DecompressionBomb {
                member: name.to_string(),
                what: "the decompressed header",
                limit: limits::MAX_HEADER,
            });
        }
        drop(unpacked);
        let already = hr.count;
        let drained = drain_member(&mut hr, name, size, already);
        let actual = hr.finish_hex();
        // A corrupted header usually fails to parse first; if its checksum is also wrong,
        // that is the root cause to report.
        let hd = match parsed {
            Ok(hd) => hd,
            Err(e) => {
                if drained.is_ok() {
                    m.check(name, &actual)?;
                }
                return Err(e);
            }
        };
        drained?;
        m.check(name, &actual)?;
        self.header = Some(hd);
        self.header_name = name.to_string();
        self.stage = Stage::Header;
        Ok(())
    }

    fn data<E: Read>(&mut self, name: &str, entry: E, size: u64) -> Result<(), ArtifactError> {
        let (idx, comp) = schema::parse_data_member(name)?;
        let hd = self.header.as_ref().expect("header parsed before data");
        if idx != self.data_seen {
            return Err(ArtifactError::Malformed(format!(
                "data member '{name}' out of order: expected data/{:04}.tar*",
                self.data_seen
            )));
        }
        if idx >= hd.payload_types.len() {
            return Err(ArtifactError::Malformed(format!(
                "data member '{name}' has no payload in header-info ({} payload(s))",
                hd.payload_types.len()
            )));
        }
        let handler = payload::for_reading(
            hd.payload_types[idx].as_deref(),
            hd.type_infos[idx]
                .as_ref()
                .and_then(|t| t.type_name.as_deref()),
        );
        let payload_type = handler.type_name().unwrap_or("").to_string();
        let m = self.manifest.as_mut().expect("manifest parsed before data");
        let mut counted = HashingReader::new(entry);
        data::read_data_tar(
            comp.decoder(&mut counted),
            name,
            idx,
            &payload_type,
            m,
            &mut self.files,
            &mut self.visit,
        )?;
        let already = counted.count;
        drain_member(&mut counted, name, size, already)?;
        self.data_seen += 1;
        self.stage = Stage::Data;
        Ok(())
    }

    /// Checks completeness and merges the header's declarations into an [`ArtifactInfo`].
    fn finish(self) -> Result<ArtifactInfo, ArtifactError> {
        let missing_member = match self.stage {
            Stage::Start => {
                return Err(ArtifactError::Malformed(
                    "input is empty or not a tar archive".into(),
                ))
            }
            Stage::Version => Some(schema::MANIFEST),
            Stage::Manifest | Stage::Signature => Some("header.tar.gz"),
            _ => None,
        };
        if let Some(m) = missing_member {
            return Err(ArtifactError::MissingMember(m.into()));
        }
        let hd = self.header.expect("header present after header stage");
        let manifest = self.manifest.expect("manifest present");
        let unused = manifest.unused();
        if !unused.is_empty() {
            return Err(ArtifactError::MissingFromArtifact(unused));
        }
        // Every real payload needs its data member (devices fetch it before installing).
        for (i, t) in hd.payload_types.iter().enumerate() {
            if t.is_some() && i >= self.data_seen {
                let suffix = self
                    .header_name
                    .strip_prefix(schema::HEADER_TAR)
                    .unwrap_or("");
                return Err(ArtifactError::MissingMember(format!(
                    "data/{i:04}.tar{suffix}"
                )));
            }
        }

        let mut provides = BTreeMap::new();
        provides.insert("artifact_name".to_string(), hd.name.clone());
        if let Some(g) = &hd.group {
            provides.insert("artifact_group".to_string(), g.clone());
        }
        let mut depends = hd.depends.clone();
        let mut clears = Vec::new();
        let mut payload_types = Vec::new();
        for (i, (ptype, ti)) in hd.payload_types.iter().zip(&hd.type_infos).enumerate() {
            let ti = ti.as_ref().expect("checked when the header was parsed");
            let handler = payload::for_reading(ptype.as_deref(), ti.type_name.as_deref());
            let files: Vec<&PayloadFileInfo> =
                self.files.iter().filter(|f| f.payload == i).collect();
            handler.check_files(i, &files)?;
            payload_types.push(handler.type_name().unwrap_or("").to_string());
            merge_type_info(i, ti, &mut provides, &mut depends, &mut clears)?;
        }

        Ok(ArtifactInfo {
            name: hd.name,
            group: hd.group,
            device_types: hd.device_types,
            payload_types,
            provides,
            depends,
            clears_provides: clears,
            payload_files: self.files,
            signature: self.signature,
            meta_data: hd.meta_data,
            scripts: hd.scripts,
        })
    }
}

fn augmented(name: &str) -> ArtifactError {
    ArtifactError::Unsupported(format!("augmented artifacts ('{name}') are not supported"))
}

/// Merges payload `i`'s type-info into the artifact's provides, depends and clears.
fn merge_type_info(
    i: usize,
    ti: &schema::TypeInfo,
    provides: &mut BTreeMap<String, String>,
    depends: &mut BTreeMap<String, Value>,
    clears: &mut Vec<String>,
) -> Result<(), ArtifactError> {
    for (k, v) in ti.artifact_provides.iter().flatten() {
        let Value::String(s) = v else {
            return Err(ArtifactError::Malformed(format!(
                "{}: provide '{k}' is not a string",
                schema::type_info_entry(i)
            )));
        };
        provides.insert(k.clone(), s.clone());
    }
    for (k, v) in ti.artifact_depends.iter().flatten() {
        let ok = match v {
            Value::String(_) => true,
            Value::Array(a) => a.iter().all(Value::is_string),
            _ => false,
        };
        if !ok {
            return Err(ArtifactError::Malformed(format!(
                "{}: depend '{k}' is neither a string nor a list of strings",
                schema::type_info_entry(i)
            )));
        }
        depends.insert(k.clone(), v.clone());
    }
    for c in ti.clears_artifact_provides.iter().flatten() {
        if !clears.contains(c) {
            clears.push(c.clone());
        }
    }
    Ok(())
}
