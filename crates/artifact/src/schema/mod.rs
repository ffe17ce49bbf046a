//! The format's vocabulary, shared by the writer and the reader: member names, the `version`
//! member, the header-info and type-info JSON documents, the manifest, and the rules for
//! payload file and state script names. Neither side defines any of these on its own.

pub(crate) mod gojson;
pub(crate) mod manifest;

use crate::{ArtifactError, Compression};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Name of the first outer member.
pub(crate) const VERSION: &str = "version";
/// Name of the second outer member.
pub(crate) const MANIFEST: &str = "manifest";
/// Name of the optional signature member that follows the manifest.
pub(crate) const MANIFEST_SIG: &str = "manifest.sig";
/// Name of the augment manifest (not supported).
pub(crate) const MANIFEST_AUGMENT: &str = "manifest-augment";
/// Base name of the header member (plus the compression suffix).
pub(crate) const HEADER_TAR: &str = "header.tar";
/// Base name of the augment header member (not supported).
pub(crate) const HEADER_AUGMENT_TAR: &str = "header-augment.tar";
/// First entry of the header tar.
pub(crate) const HEADER_INFO: &str = "header-info";
/// Directory of state scripts inside the header tar.
pub(crate) const SCRIPTS_DIR: &str = "scripts/";

/// The exact `version` member (31 bytes, no newline).
pub(crate) const VERSION_JSON: &[u8] = br#"{"format":"mender","version":3}"#;

/// `header.tar[.gz]`.
pub(crate) fn header_member(c: Compression) -> String {
    format!("{HEADER_TAR}{}", c.suffix())
}

/// `data/NNNN.tar[.gz]`.
pub(crate) fn data_member(index: usize, c: Compression) -> String {
    format!("data/{index:04}.tar{}", c.suffix())
}

/// Manifest name of a payload file: `data/NNNN/<file>`.
pub(crate) fn manifest_data_name(index: usize, file: &str) -> String {
    format!("data/{index:04}/{file}")
}

/// `headers/NNNN/type-info`.
pub(crate) fn type_info_entry(index: usize) -> String {
    format!("headers/{index:04}/type-info")
}

/// `headers/NNNN/meta-data`.
pub(crate) fn meta_data_entry(index: usize) -> String {
    format!("headers/{index:04}/meta-data")
}

/// Splits `data/NNNN.tar[.gz]` into the payload index and its compression.
pub(crate) fn parse_data_member(name: &str) -> Result<(usize, Compression), ArtifactError> {
    let rest = name.strip_prefix("data/").unwrap_or("");
    let idx = rest.get(..4).unwrap_or("");
    if idx.len() != 4 || !idx.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ArtifactError::Malformed(format!(
            "invalid data member name '{name}' (expected data/NNNN.tar[.gz])"
        )));
    }
    let comp = Compression::from_member_name(name, &rest[4..], ".tar")?;
    Ok((idx.parse().expect("4 digits"), comp))
}

/// Splits `headers/NNNN/<file>` into (index, file).
pub(crate) fn parse_header_payload_entry(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("headers/")?;
    let (idx, file) = rest.split_once('/')?;
    if idx.len() != 4 || !idx.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((idx.parse().ok()?, file))
}

/// Payload file names: `^[A-Za-z0-9_.,-]+$`, at most 100 bytes (the client's limit).
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

/// The `version` member. Unknown keys are refused, as the Go reader does.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Version {
    pub format: String,
    pub version: i64,
}

/// One entry of header-info's `payloads`; `type` is `null` for a bootstrap artifact.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PayloadEntry {
    #[serde(rename = "type")]
    pub type_name: Option<String>,
}

/// header-info's `artifact_provides` (Go field order, empty fields omitted).
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderProvides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_group: Option<String>,
}

/// header-info's `artifact_depends` (Go field order, empty fields omitted).
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderDepends {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_name: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_type: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_group: Option<Vec<String>>,
}

/// The `header-info` document. Unknown keys are refused at every level, as the Go reader
/// does, so the writer cannot add any either.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeaderInfo {
    pub payloads: Vec<PayloadEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_provides: Option<HeaderProvides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_depends: Option<HeaderDepends>,
}

/// A `headers/NNNN/type-info` document. Unknown keys are accepted (Go decodes it leniently);
/// maps serialize with sorted keys.
#[derive(Serialize, Deserialize)]
pub(crate) struct TypeInfo {
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_depends: Option<BTreeMap<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_provides: Option<BTreeMap<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clears_artifact_provides: Option<Vec<String>>,
}

/// `Some(v)` unless `v` is empty (Go's `omitempty`).
pub(crate) fn non_empty<T: IsEmpty>(v: T) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        Some(v)
    }
}

/// Containers that Go's `omitempty` drops when empty.
pub(crate) trait IsEmpty {
    fn is_empty(&self) -> bool;
}
impl<T> IsEmpty for Vec<T> {
    fn is_empty(&self) -> bool {
        Vec::is_empty(self)
    }
}
impl<K, V> IsEmpty for BTreeMap<K, V> {
    fn is_empty(&self) -> bool {
        BTreeMap::is_empty(self)
    }
}

/// Parses a JSON member, naming it in the error.
pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(
    member: &str,
    bytes: &[u8],
) -> Result<T, ArtifactError> {
    serde_json::from_slice(bytes).map_err(|e| ArtifactError::InvalidJson {
        member: member.to_string(),
        detail: e.to_string(),
    })
}
