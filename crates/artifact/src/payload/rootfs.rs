//! The `rootfs-image` payload: exactly one file (the filesystem image), an empty meta-data
//! entry, and the `rootfs-image.version` / `rootfs-image.checksum` provides.

use super::{DefaultProvides, HashedFile, PayloadType, SoftwareOptions};
use crate::{ArtifactError, PayloadFileInfo};

/// `write rootfs-image -f FILE`.
pub(crate) struct RootfsImage;

impl RootfsImage {
    /// The type name written (3.x–4.3 wrote `""`; 4.4 refuses that).
    pub(crate) const TYPE: &'static str = "rootfs-image";
}

impl PayloadType for RootfsImage {
    fn type_name(&self) -> Option<&str> {
        Some(Self::TYPE)
    }

    fn check_spec(&self, files: usize) -> Result<(), ArtifactError> {
        if files != 1 {
            return Err(ArtifactError::InvalidSpec(format!(
                "a rootfs-image payload has exactly one file, not {files}"
            )));
        }
        Ok(())
    }

    fn default_provides(&self, sw: &SoftwareOptions, files: &[HashedFile]) -> DefaultProvides {
        let mut d = DefaultProvides::default();
        // Without --software-name the keys are the plain `rootfs-image.*` ones.
        let (prefix, plain) = match sw.name {
            None => (sw.filesystem().to_string(), true),
            Some(n) => (format!("{}.{n}", sw.filesystem()), false),
        };
        if !sw.no_default_version {
            d.provides
                .insert(format!("{prefix}.version"), sw.version.to_string());
            if plain && sw.filesystem.is_none() {
                d.clears.push("artifact_group".into());
                d.clears.push("rootfs_image_checksum".into());
            }
            d.clears.push(format!("{prefix}.*"));
        }
        if let (Some(f), false) = (files.first(), sw.no_checksum_provide) {
            d.provides
                .insert("rootfs-image.checksum".into(), f.sha256.clone());
        }
        d
    }

    fn meta_data(&self) -> Option<Vec<u8>> {
        // Always an empty meta-data entry, as `write rootfs-image` does.
        Some(Vec::new())
    }

    fn check_files(&self, index: usize, files: &[&PayloadFileInfo]) -> Result<(), ArtifactError> {
        if files.len() != 1 {
            return Err(ArtifactError::Malformed(format!(
                "rootfs-image payload {index} must contain exactly one file, found {}",
                files.len()
            )));
        }
        Ok(())
    }
}
