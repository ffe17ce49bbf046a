//! `data/NNNN.tar*`: every payload file is hashed as it streams (and handed to the caller's
//! visitor, if any) and checked against the manifest.

use super::limits::{check_entry_name, drain_trailer};
use super::{tar_err, HashingReader, PayloadVisitor};
use crate::schema::{self, manifest::Manifest};
use crate::{ArtifactError, PayloadFileInfo, PayloadStream};
use std::io::{self, Read};

/// Reads one data member's decompressed tar `r`, verifying every file against the manifest.
pub(super) fn read_data_tar<R: Read>(
    r: R,
    member: &str,
    index: usize,
    payload_type: &str,
    manifest: &mut Manifest,
    files: &mut Vec<PayloadFileInfo>,
    visit: &mut Option<PayloadVisitor<'_>>,
) -> Result<(), ArtifactError> {
    let mut archive = tar::Archive::new(r);
    let ctx = format!("{member} (inner tar)");
    for entry in archive.entries().map_err(|e| tar_err(&ctx, e))? {
        let entry = entry.map_err(|e| tar_err(&ctx, e))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        check_entry_name(member, &name)?;
        if !entry.header().entry_type().is_file() {
            return Err(ArtifactError::Malformed(format!(
                "{member}: entry '{name}' is not a regular file"
            )));
        }
        if !schema::valid_payload_file_name(&name) {
            return Err(ArtifactError::Malformed(format!(
                "{member}: payload file name '{name}' is invalid (only a base name of letters, digits and '.,_-' is allowed)"
            )));
        }
        let size = entry.size();
        let manifest_name = schema::manifest_data_name(index, &name);
        manifest.require(&manifest_name)?;
        let what = format!("payload file '{manifest_name}'");
        let mut hr = HashingReader::new(entry);
        if let Some(visit) = visit.as_mut() {
            let stream = PayloadStream {
                payload: index,
                payload_type,
                name: &name,
                size,
            };
            if let Err(e) = visit(&stream, &mut hr) {
                // A failing source (truncation, corrupt compression) is the artifact's fault.
                if let Some(src) = hr.source_error.take() {
                    return Err(tar_err(&what, src));
                }
                return Err(ArtifactError::io(format!("processing {what}"), e));
            }
        }
        io::copy(&mut hr, &mut io::sink()).map_err(|e| tar_err(&what, e))?;
        if hr.count != size {
            return Err(ArtifactError::Truncated(what));
        }
        let actual = hr.finish_hex();
        manifest.check(&manifest_name, &actual)?;
        files.push(PayloadFileInfo {
            payload: index,
            name,
            size,
            sha256: actual,
        });
    }
    drain_trailer(archive.into_inner(), member)?;
    Ok(())
}
