//! `header.tar*`: header-info first, then state scripts, then each payload's type-info and
//! meta-data, parsed into [`HeaderData`].

use super::limits::{check_entry_name, drain_trailer};
use super::{drain_member, read_small, tar_err};
use crate::schema::{self, parse_json, HeaderInfo, TypeInfo};
use crate::ArtifactError;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;

/// Header contents collected while parsing `header.tar*`.
#[derive(Default)]
pub(super) struct HeaderData {
    pub name: String,
    pub group: Option<String>,
    pub device_types: Vec<String>,
    pub depends: BTreeMap<String, Value>,
    pub payload_types: Vec<Option<String>>,
    pub type_infos: Vec<Option<TypeInfo>>,
    pub meta_data: Vec<Option<serde_json::Map<String, Value>>>,
    pub scripts: Vec<String>,
}

fn parse_header_info(bytes: &[u8], hd: &mut HeaderData) -> Result<(), ArtifactError> {
    let hi: HeaderInfo = parse_json(schema::HEADER_INFO, bytes)?;
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

/// Parses the decompressed header tar `r` of member `member`.
pub(super) fn parse_header_tar<R: Read>(r: R, member: &str) -> Result<HeaderData, ArtifactError> {
    let mut hd = HeaderData::default();
    let mut archive = tar::Archive::new(r);
    let ctx = format!("{member} (inner tar)");
    let mut first = true;
    for entry in archive.entries().map_err(|e| tar_err(&ctx, e))? {
        let entry = entry.map_err(|e| tar_err(&ctx, e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        check_entry_name(member, &name)?;
        let size = entry.size();
        let kind = entry.header().entry_type();
        if first {
            if name != schema::HEADER_INFO {
                return Err(ArtifactError::UnexpectedMember {
                    expected: format!("header-info as the first entry of {member}"),
                    found: name,
                });
            }
            let bytes = read_small(entry, schema::HEADER_INFO, size)?;
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
        if let Some(script) = name.strip_prefix(schema::SCRIPTS_DIR) {
            if script.is_empty() || script.contains('/') {
                return Err(ArtifactError::Malformed(format!(
                    "{member}: bad script entry '{name}'"
                )));
            }
            hd.scripts.push(script.to_string());
            drain_member(entry, &name, size, 0)?;
            continue;
        }
        let Some((idx, file)) = schema::parse_header_payload_entry(&name) else {
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
                let ti: TypeInfo = parse_json(&name, &bytes)?;
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
                "{} (in {member})",
                schema::type_info_entry(i)
            )));
        }
    }
    // Consume the rest of the (decompressed) stream so gzip trailers are checked.
    drain_trailer(archive.into_inner(), member)?;
    Ok(hd)
}
