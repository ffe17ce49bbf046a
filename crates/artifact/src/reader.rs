//! Streaming artifact reader: checks member order, every checksum and (optionally) the
//! signature while reading once from an `io::Read`, and reports the header information.

use crate::writer::{hex, valid_payload_file_name};
use crate::{ArtifactError, SignatureStatus, VerifyKey};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
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
    read_artifact(r, None, false)
}

/// Like [`read_info`], and with a key the artifact must be signed and the signature must
/// verify (the `mender-artifact validate -k` rule): otherwise `SignatureMissing` or
/// `SignatureInvalid`. Without a key it behaves like `read_info`.
pub fn read_verified<R: Read>(
    r: R,
    key: Option<&VerifyKey>,
) -> Result<ArtifactInfo, ArtifactError> {
    read_artifact(r, key, true)
}

/// Like [`read_verified`], but a bad or missing signature does not fail the read: it is
/// reported in `signature` (`Unsigned`, `Valid`, `Invalid`, `Unverified`), as
/// `mender-artifact read -k` prints it. Checksums are still enforced.
pub fn read_report<R: Read>(r: R, key: Option<&VerifyKey>) -> Result<ArtifactInfo, ArtifactError> {
    read_artifact(r, key, false)
}

const MAX_SMALL_MEMBER: u64 = 1 << 20;

/// Hashes and counts everything read through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    fn finish_hex(self) -> String {
        hex(&self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
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
    if declared > MAX_SMALL_MEMBER {
        return Err(ArtifactError::Malformed(format!(
            "member '{name}' is {declared} bytes, larger than the {MAX_SMALL_MEMBER}-byte limit"
        )));
    }
    let mut out = Vec::with_capacity(declared as usize);
    r.take(MAX_SMALL_MEMBER + 1)
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

/// The parsed `manifest`: name -> hash, and which entries were matched.
struct Manifest {
    entries: HashMap<String, String>,
    order: Vec<String>,
    used: HashMap<String, bool>,
}

impl Manifest {
    fn parse(bytes: &[u8]) -> Result<Self, ArtifactError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ArtifactError::InvalidManifest {
            line: 0,
            detail: "manifest is not UTF-8 text".into(),
        })?;
        if text.is_empty() {
            return Err(ArtifactError::InvalidManifest {
                line: 0,
                detail: "manifest is empty".into(),
            });
        }
        if !text.ends_with('\n') {
            return Err(ArtifactError::InvalidManifest {
                line: text.lines().count(),
                detail: "last line does not end with a newline".into(),
            });
        }
        let mut m = Manifest {
            entries: HashMap::new(),
            order: Vec::new(),
            used: HashMap::new(),
        };
        for (i, line) in text[..text.len() - 1].split('\n').enumerate() {
            let line_no = i + 1;
            let bad = |detail: String| ArtifactError::InvalidManifest {
                line: line_no,
                detail,
            };
            if line.contains('\r') {
                return Err(bad("carriage return (CRLF line ending) not allowed".into()));
            }
            let (hash, name) = line.split_once("  ").ok_or_else(|| {
                bad(format!(
                    "expected '<sha256>  <name>' (two spaces), got '{line}'"
                ))
            })?;
            if hash.len() != 64
                || !hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(bad(format!(
                    "'{hash}' is not a 64-character lowercase hex sha256"
                )));
            }
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(bad(format!("invalid file name '{name}'")));
            }
            if m.entries
                .insert(name.to_string(), hash.to_string())
                .is_some()
            {
                return Err(bad(format!("duplicate entry for '{name}'")));
            }
            m.order.push(name.to_string());
            m.used.insert(name.to_string(), false);
        }
        Ok(m)
    }

    /// Compares `actual` with the manifest line for `name` and marks it used.
    fn check(&mut self, name: &str, actual: &str) -> Result<(), ArtifactError> {
        let expected = self
            .entries
            .get(name)
            .ok_or_else(|| ArtifactError::NotInManifest(name.to_string()))?;
        if expected != actual {
            return Err(ArtifactError::ChecksumMismatch {
                name: name.to_string(),
                expected: expected.clone(),
                actual: actual.to_string(),
            });
        }
        self.used.insert(name.to_string(), true);
        Ok(())
    }

    fn unused(&self) -> Vec<String> {
        self.order
            .iter()
            .filter(|n| !self.used[*n])
            .cloned()
            .collect()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionIn {
    format: String,
    version: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PayloadIn {
    #[serde(rename = "type")]
    type_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ProvidesIn {
    artifact_name: Option<String>,
    artifact_group: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DependsIn {
    artifact_name: Option<Vec<String>>,
    device_type: Option<Vec<String>>,
    artifact_group: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderInfoIn {
    payloads: Vec<PayloadIn>,
    artifact_provides: Option<ProvidesIn>,
    artifact_depends: Option<DependsIn>,
}

#[derive(Deserialize)]
struct TypeInfoIn {
    #[serde(rename = "type")]
    type_name: Option<String>,
    artifact_provides: Option<BTreeMap<String, Value>>,
    artifact_depends: Option<BTreeMap<String, Value>>,
    clears_artifact_provides: Option<Vec<String>>,
}

fn parse_json<T: for<'de> Deserialize<'de>>(
    member: &str,
    bytes: &[u8],
) -> Result<T, ArtifactError> {
    serde_json::from_slice(bytes).map_err(|e| ArtifactError::InvalidJson {
        member: member.to_string(),
        detail: e.to_string(),
    })
}

/// Compression of a member, from its name.
#[derive(Clone, Copy)]
enum MemberCompression {
    Gzip,
    None,
}

fn member_compression(name: &str, base: &str) -> Result<MemberCompression, ArtifactError> {
    match name.strip_prefix(base) {
        Some("") => Ok(MemberCompression::None),
        Some(".gz") => Ok(MemberCompression::Gzip),
        Some(".xz") | Some(".zst") => Err(ArtifactError::UnsupportedCompression(name.to_string())),
        _ => Err(ArtifactError::Malformed(format!(
            "unexpected member name '{name}'"
        ))),
    }
}

fn decompressor<'a, R: Read + 'a>(r: R, c: MemberCompression) -> Box<dyn Read + 'a> {
    match c {
        MemberCompression::Gzip => Box::new(flate2::read::GzDecoder::new(r)),
        MemberCompression::None => Box::new(r),
    }
}

/// Header contents collected while parsing `header.tar*`.
#[derive(Default)]
struct HeaderData {
    name: String,
    group: Option<String>,
    device_types: Vec<String>,
    depends: BTreeMap<String, Value>,
    payload_types: Vec<Option<String>>,
    type_infos: Vec<Option<TypeInfoIn>>,
    meta_data: Vec<Option<serde_json::Map<String, Value>>>,
    scripts: Vec<String>,
}

fn parse_header_info(bytes: &[u8], hd: &mut HeaderData) -> Result<(), ArtifactError> {
    let hi: HeaderInfoIn = parse_json("header-info", bytes)?;
    if hi.payloads.is_empty() {
        return Err(ArtifactError::Malformed(
            "header-info lists no payloads".into(),
        ));
    }
    let provides = hi.artifact_provides.unwrap_or_default();
    hd.name = provides
        .artifact_name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ArtifactError::Malformed("header-info has no artifact_provides.artifact_name".into())
        })?;
    hd.group = provides.artifact_group.filter(|g| !g.is_empty());
    let depends = hi.artifact_depends.unwrap_or_default();
    hd.device_types = depends.device_type.unwrap_or_default();
    if hd.device_types.is_empty() {
        return Err(ArtifactError::Malformed(
            "header-info has no artifact_depends.device_type (compatible device types)".into(),
        ));
    }
    let strings = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    hd.depends
        .insert("device_type".into(), strings(&hd.device_types));
    if let Some(n) = depends.artifact_name.filter(|v| !v.is_empty()) {
        hd.depends.insert("artifact_name".into(), strings(&n));
    }
    if let Some(g) = depends.artifact_group.filter(|v| !v.is_empty()) {
        hd.depends.insert("artifact_group".into(), strings(&g));
    }
    hd.payload_types = hi.payloads.into_iter().map(|p| p.type_name).collect();
    hd.type_infos = (0..hd.payload_types.len()).map(|_| None).collect();
    hd.meta_data = vec![None; hd.payload_types.len()];
    Ok(())
}

/// Splits `headers/NNNN/<file>` into (index, file).
fn header_payload_path(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("headers/")?;
    let (idx, file) = rest.split_once('/')?;
    if idx.len() != 4 || !idx.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((idx.parse().ok()?, file))
}

fn parse_header_tar<R: Read>(r: R, member: &str) -> Result<HeaderData, ArtifactError> {
    let mut hd = HeaderData::default();
    let mut archive = tar::Archive::new(r);
    let ctx = format!("{member} (inner tar)");
    let mut first = true;
    for entry in archive.entries().map_err(|e| tar_err(&ctx, e))? {
        let entry = entry.map_err(|e| tar_err(&ctx, e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let size = entry.size();
        let kind = entry.header().entry_type();
        if first {
            if name != "header-info" {
                return Err(ArtifactError::UnexpectedMember {
                    expected: format!("header-info as the first entry of {member}"),
                    found: name,
                });
            }
            let bytes = read_small(entry, "header-info", size)?;
            parse_header_info(&bytes, &mut hd)?;
            first = false;
            continue;
        }
        if kind.is_dir() {
            drain_member(entry, &name, 0, 0)?;
            continue;
        }
        if !kind.is_file() {
            return Err(ArtifactError::Malformed(format!(
                "{member}: entry '{name}' is not a regular file"
            )));
        }
        if let Some(script) = name.strip_prefix("scripts/") {
            if script.is_empty() || script.contains('/') {
                return Err(ArtifactError::Malformed(format!(
                    "{member}: bad script entry '{name}'"
                )));
            }
            hd.scripts.push(script.to_string());
            drain_member(entry, &name, size, 0)?;
            continue;
        }
        let Some((idx, file)) = header_payload_path(&name) else {
            return Err(ArtifactError::Malformed(format!(
                "{member}: unexpected entry '{name}' (expected scripts/* or headers/NNNN/*)"
            )));
        };
        if idx >= hd.payload_types.len() {
            return Err(ArtifactError::Malformed(format!(
                "{member}: '{name}' refers to payload {idx}, but header-info lists {} payload(s)",
                hd.payload_types.len()
            )));
        }
        match file {
            "type-info" => {
                let bytes = read_small(entry, &name, size)?;
                let ti: TypeInfoIn = parse_json(&name, &bytes)?;
                hd.type_infos[idx] = Some(ti);
            }
            "meta-data" => {
                let bytes = read_small(entry, &name, size)?;
                if !bytes.iter().all(u8::is_ascii_whitespace) {
                    match parse_json::<Value>(&name, &bytes)? {
                        Value::Object(m) => hd.meta_data[idx] = Some(m),
                        _ => {
                            return Err(ArtifactError::InvalidJson {
                                member: name,
                                detail: "top-level value must be a JSON object".into(),
                            })
                        }
                    }
                }
            }
            // Legacy v2 rootfs header files, tolerated like the Go reader does.
            f if f == "files" || f.starts_with("checksums/") || f.starts_with("signatures/") => {
                drain_member(entry, &name, size, 0)?;
            }
            _ => {
                return Err(ArtifactError::Malformed(format!(
                    "{member}: unsupported header file '{name}'"
                )))
            }
        }
    }
    if first {
        return Err(ArtifactError::MissingMember(format!(
            "header-info (in {member})"
        )));
    }
    for (i, ti) in hd.type_infos.iter().enumerate() {
        if ti.is_none() {
            return Err(ArtifactError::MissingMember(format!(
                "headers/{i:04}/type-info (in {member})"
            )));
        }
    }
    // Consume the rest of the (decompressed) stream so gzip trailers are checked.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| tar_err(member, e))?;
    Ok(hd)
}

/// Reads one `data/NNNN.tar*` member, verifying every file against the manifest.
fn read_data_tar<R: Read>(
    r: R,
    member: &str,
    index: usize,
    manifest: &mut Manifest,
    files: &mut Vec<PayloadFileInfo>,
) -> Result<(), ArtifactError> {
    let mut archive = tar::Archive::new(r);
    let ctx = format!("{member} (inner tar)");
    let mut buf = vec![0u8; 256 * 1024];
    for entry in archive.entries().map_err(|e| tar_err(&ctx, e))? {
        let mut entry = entry.map_err(|e| tar_err(&ctx, e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if !entry.header().entry_type().is_file() {
            return Err(ArtifactError::Malformed(format!(
                "{member}: entry '{name}' is not a regular file"
            )));
        }
        if !valid_payload_file_name(&name) {
            return Err(ArtifactError::Malformed(format!(
                "{member}: payload file name '{name}' is invalid (only a base name of letters, digits and '.,_-' is allowed)"
            )));
        }
        let size = entry.size();
        let manifest_name = format!("data/{index:04}/{name}");
        if !manifest.entries.contains_key(&manifest_name) {
            return Err(ArtifactError::NotInManifest(manifest_name));
        }
        let mut hasher = Sha256::new();
        let mut count = 0u64;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(tar_err(&format!("payload file '{manifest_name}'"), e)),
            };
            hasher.update(&buf[..n]);
            count += n as u64;
        }
        if count != size {
            return Err(ArtifactError::Truncated(format!(
                "payload file '{manifest_name}'"
            )));
        }
        let actual = hex(&hasher.finalize());
        manifest.check(&manifest_name, &actual)?;
        files.push(PayloadFileInfo {
            payload: index,
            name,
            size,
            sha256: actual,
        });
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| tar_err(member, e))?;
    Ok(())
}

#[derive(PartialEq, PartialOrd, Clone, Copy)]
enum Stage {
    Start,
    Version,
    Manifest,
    Signature,
    Header,
    Data,
}

fn read_artifact<R: Read>(
    r: R,
    key: Option<&VerifyKey>,
    strict_signature: bool,
) -> Result<ArtifactInfo, ArtifactError> {
    let mut archive = tar::Archive::new(r);
    let mut stage = Stage::Start;
    let mut manifest: Option<Manifest> = None;
    let mut manifest_bytes = Vec::new();
    let mut version_hash = String::new();
    let mut signature = SignatureStatus::Unsigned;
    let mut header: Option<HeaderData> = None;
    let mut header_name = String::new();
    let mut files: Vec<PayloadFileInfo> = Vec::new();
    let mut data_seen = 0usize;

    let entries = archive.entries().map_err(|e| tar_err("artifact tar", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| tar_err("artifact tar", e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let size = entry.size();
        if !entry.header().entry_type().is_file() {
            return Err(ArtifactError::Malformed(format!(
                "artifact member '{name}' is not a regular file"
            )));
        }
        match (stage, name.as_str()) {
            (Stage::Start, "version") => {
                let mut hr = HashingReader::new(entry);
                let bytes = read_small(&mut hr, "version", size)?;
                version_hash = hr.finish_hex();
                let v: VersionIn = parse_json("version", &bytes)?;
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
                stage = Stage::Version;
            }
            (Stage::Start, _) => {
                return Err(ArtifactError::UnexpectedMember {
                    expected: "version".into(),
                    found: name,
                })
            }
            (Stage::Version, "manifest") => {
                manifest_bytes = read_small(entry, "manifest", size)?;
                let mut m = Manifest::parse(&manifest_bytes)?;
                m.check("version", &version_hash)?;
                manifest = Some(m);
                signature = SignatureStatus::Unsigned;
                stage = Stage::Manifest;
            }
            (Stage::Version, _) => {
                return Err(ArtifactError::UnexpectedMember {
                    expected: "manifest".into(),
                    found: name,
                })
            }
            (Stage::Manifest, "manifest.sig") => {
                let sig = read_small(entry, "manifest.sig", size)?;
                signature = match key {
                    None => SignatureStatus::Unverified,
                    Some(k) if k.verify_manifest(&manifest_bytes, &sig) => SignatureStatus::Valid,
                    Some(_) => SignatureStatus::Invalid,
                };
                if strict_signature && signature == SignatureStatus::Invalid {
                    return Err(ArtifactError::SignatureInvalid);
                }
                stage = Stage::Signature;
            }
            (Stage::Manifest | Stage::Signature, "manifest-augment")
            | (
                Stage::Header,
                "header-augment.tar" | "header-augment.tar.gz" | "header-augment.tar.xz",
            ) => {
                return Err(ArtifactError::Unsupported(format!(
                    "augmented artifacts ('{name}') are not supported"
                )))
            }
            (Stage::Manifest | Stage::Signature, n) if n.starts_with("header.tar") => {
                if strict_signature && key.is_some() && signature == SignatureStatus::Unsigned {
                    return Err(ArtifactError::SignatureMissing);
                }
                let comp = member_compression(n, "header.tar")?;
                let m = manifest.as_mut().expect("manifest parsed before header");
                if !m.entries.contains_key(n) {
                    return Err(ArtifactError::NotInManifest(n.to_string()));
                }
                let mut hr = HashingReader::new(entry);
                let parsed = {
                    let dec = decompressor(&mut hr, comp);
                    parse_header_tar(dec, n)
                };
                let already = hr.count;
                let drained = drain_member(&mut hr, n, size, already);
                let actual = hr.finish_hex();
                // A corrupted header usually fails to parse first; if its checksum is also
                // wrong, that is the root cause to report.
                let hd = match parsed {
                    Ok(hd) => hd,
                    Err(e) => {
                        if drained.is_ok() {
                            m.check(n, &actual)?;
                        }
                        return Err(e);
                    }
                };
                drained?;
                m.check(n, &actual)?;
                header = Some(hd);
                header_name = n.to_string();
                stage = Stage::Header;
            }
            (Stage::Manifest | Stage::Signature, _) => {
                return Err(ArtifactError::UnexpectedMember {
                    expected: "header.tar.gz or header.tar".into(),
                    found: name,
                })
            }
            (Stage::Header | Stage::Data, n) if n.starts_with("data/") => {
                let rest = &n["data/".len()..];
                let idx_str = rest.get(..4).unwrap_or("");
                if idx_str.len() != 4 || !idx_str.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ArtifactError::Malformed(format!(
                        "invalid data member name '{n}' (expected data/NNNN.tar[.gz])"
                    )));
                }
                let idx: usize = idx_str.parse().expect("4 digits");
                let comp = member_compression(&rest[4..], ".tar")?;
                let hd = header.as_ref().expect("header parsed before data");
                if idx != data_seen {
                    return Err(ArtifactError::Malformed(format!(
                        "data member '{n}' out of order: expected data/{data_seen:04}.tar*"
                    )));
                }
                if idx >= hd.payload_types.len() {
                    return Err(ArtifactError::Malformed(format!(
                        "data member '{n}' has no payload in header-info ({} payload(s))",
                        hd.payload_types.len()
                    )));
                }
                let m = manifest.as_mut().expect("manifest parsed before data");
                let mut counted = HashingReader::new(entry);
                {
                    let dec = decompressor(&mut counted, comp);
                    read_data_tar(dec, n, idx, m, &mut files)?;
                }
                let already = counted.count;
                drain_member(&mut counted, n, size, already)?;
                data_seen += 1;
                stage = Stage::Data;
            }
            (Stage::Header | Stage::Data, _) => {
                return Err(ArtifactError::UnexpectedMember {
                    expected: format!("data/{data_seen:04}.tar.gz or data/{data_seen:04}.tar"),
                    found: name,
                })
            }
        }
    }

    let missing_member = match stage {
        Stage::Start => Some("version"),
        Stage::Version => Some("manifest"),
        Stage::Manifest | Stage::Signature => Some("header.tar.gz"),
        _ => None,
    };
    if let Some(m) = missing_member {
        if stage == Stage::Start {
            return Err(ArtifactError::Malformed(
                "input is empty or not a tar archive".into(),
            ));
        }
        return Err(ArtifactError::MissingMember(m.into()));
    }
    let hd = header.expect("header present after header stage");
    let manifest = manifest.expect("manifest present");
    let unused = manifest.unused();
    if !unused.is_empty() {
        return Err(ArtifactError::MissingFromArtifact(unused));
    }
    // Every real payload needs its data member (devices fetch it before installing).
    for (i, t) in hd.payload_types.iter().enumerate() {
        if t.is_some() && i >= data_seen {
            let suffix = header_name.strip_prefix("header.tar").unwrap_or("");
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
        let ti = ti.as_ref().expect("checked above");
        let header_type = ptype.clone().unwrap_or_default();
        let ti_type = ti.type_name.clone().unwrap_or_default();
        let is_rootfs =
            header_type == "rootfs-image" || (header_type.is_empty() && ti_type == "rootfs-image");
        let effective = if header_type.is_empty() && ptype.is_some() {
            "rootfs-image".to_string()
        } else {
            header_type
        };
        let effective = if is_rootfs {
            "rootfs-image".to_string()
        } else {
            effective
        };
        if effective == "rootfs-image" {
            let n = files.iter().filter(|f| f.payload == i).count();
            if n != 1 {
                return Err(ArtifactError::Malformed(format!(
                    "rootfs-image payload {i} must contain exactly one file, found {n}"
                )));
            }
        }
        payload_types.push(effective);
        for (k, v) in ti.artifact_provides.iter().flatten() {
            let Value::String(s) = v else {
                return Err(ArtifactError::Malformed(format!(
                    "headers/{i:04}/type-info: provide '{k}' is not a string"
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
                    "headers/{i:04}/type-info: depend '{k}' is neither a string nor a list of strings"
                )));
            }
            depends.insert(k.clone(), v.clone());
        }
        for c in ti.clears_artifact_provides.iter().flatten() {
            if !clears.contains(c) {
                clears.push(c.clone());
            }
        }
    }

    Ok(ArtifactInfo {
        name: hd.name,
        group: hd.group,
        device_types: hd.device_types,
        payload_types,
        provides,
        depends,
        clears_provides: clears,
        payload_files: files,
        signature,
        meta_data: hd.meta_data,
        scripts: hd.scripts,
    })
}
