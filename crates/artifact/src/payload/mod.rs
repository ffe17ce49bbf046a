//! One handler per payload type: what differs between a rootfs-image and a module-image
//! payload (type name, meta-data, default provides and clears, the files it must carry),
//! for the writer and the reader alike.

mod module;
mod rootfs;

pub(crate) use module::ModuleImage;
pub(crate) use rootfs::RootfsImage;

use crate::{ArtifactError, PayloadFileInfo};
use std::collections::BTreeMap;

/// The name and hash of a payload file that was written.
pub(crate) struct HashedFile {
    pub name: String,
    pub sha256: String,
}

/// The spec options that mender-artifact's default provides depend on (reference §8).
pub(crate) struct SoftwareOptions<'a> {
    /// `--software-name`.
    pub name: Option<&'a str>,
    /// `--software-version`, or the artifact name.
    pub version: &'a str,
    /// `--software-filesystem`.
    pub filesystem: Option<&'a str>,
    /// `--no-default-software-version`.
    pub no_default_version: bool,
    /// `--no-checksum-provide`.
    pub no_checksum_provide: bool,
}

impl SoftwareOptions<'_> {
    /// `--software-filesystem`, default `rootfs-image`.
    fn filesystem(&self) -> &str {
        self.filesystem.unwrap_or("rootfs-image")
    }
}

/// Default type-info provides and clears of one payload.
#[derive(Default)]
pub(crate) struct DefaultProvides {
    pub provides: BTreeMap<String, String>,
    pub clears: Vec<String>,
}

/// What a payload type decides.
pub(crate) trait PayloadType {
    /// `type` in header-info and type-info; `None` for a bootstrap payload.
    fn type_name(&self) -> Option<&str>;
    /// Writer: refuses a spec with `files` payload files this type cannot carry, or bad
    /// fields of its own.
    fn check_spec(&self, files: usize) -> Result<(), ArtifactError>;
    /// Writer: mender-artifact's default type-info provides and clears.
    fn default_provides(&self, sw: &SoftwareOptions, files: &[HashedFile]) -> DefaultProvides;
    /// Writer: the content of `headers/NNNN/meta-data`, `None` for no such entry.
    fn meta_data(&self) -> Option<Vec<u8>>;
    /// Reader: refuses a payload whose data tar held `files` that this type cannot carry.
    fn check_files(&self, index: usize, files: &[&PayloadFileInfo]) -> Result<(), ArtifactError>;
}

/// A payload with `type: null` (bootstrap artifact); read only.
struct Bootstrap;

impl PayloadType for Bootstrap {
    fn type_name(&self) -> Option<&str> {
        None
    }
    fn check_spec(&self, _files: usize) -> Result<(), ArtifactError> {
        Err(ArtifactError::InvalidSpec(
            "bootstrap artifacts are not written".into(),
        ))
    }
    fn default_provides(&self, _sw: &SoftwareOptions, _files: &[HashedFile]) -> DefaultProvides {
        DefaultProvides::default()
    }
    fn meta_data(&self) -> Option<Vec<u8>> {
        None
    }
    fn check_files(&self, _index: usize, _files: &[&PayloadFileInfo]) -> Result<(), ArtifactError> {
        Ok(())
    }
}

/// The handler for a payload read from an artifact: header-info's type decides; its legacy
/// rootfs form `""` (3.x–4.3 write it) is a rootfs-image, and so is a `null` whose type-info
/// says `rootfs-image`.
pub(crate) fn for_reading<'a>(
    header_type: Option<&'a str>,
    type_info_type: Option<&'a str>,
) -> Box<dyn PayloadType + 'a> {
    match (header_type, type_info_type) {
        (None, Some(RootfsImage::TYPE)) | (Some("" | RootfsImage::TYPE), _) => {
            Box::new(RootfsImage)
        }
        (None, _) => Box::new(Bootstrap),
        (Some(t), _) => Box::new(ModuleImage {
            type_name: t,
            meta_data: None,
        }),
    }
}
