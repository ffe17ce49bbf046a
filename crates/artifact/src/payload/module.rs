//! The `module-image` payload: any number of files for an update module of type `T`,
//! optional meta-data, and the `rootfs-image.T.version` provide.

use super::{DefaultProvides, HashedFile, PayloadType, SoftwareOptions};
use crate::schema::gojson::{sorted, to_go_json};
use crate::spec::check_header_string;
use crate::{ArtifactError, PayloadFileInfo};

/// `write module-image -T TYPE`.
pub(crate) struct ModuleImage<'a> {
    pub type_name: &'a str,
    /// Written as `headers/NNNN/meta-data` (sorted keys, Go escaping) when given.
    pub meta_data: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl PayloadType for ModuleImage<'_> {
    fn type_name(&self) -> Option<&str> {
        Some(self.type_name)
    }

    fn check_spec(&self, _files: usize) -> Result<(), ArtifactError> {
        check_header_string("payload type", self.type_name)?;
        if self
            .type_name
            .chars()
            .any(|c| c.is_whitespace() || c == '/')
        {
            return Err(ArtifactError::InvalidSpec(format!(
                "payload type '{}' must not contain whitespace or '/'",
                self.type_name
            )));
        }
        Ok(())
    }

    fn default_provides(&self, sw: &SoftwareOptions, _files: &[HashedFile]) -> DefaultProvides {
        let mut d = DefaultProvides::default();
        let prefix = format!("{}.{}", sw.filesystem(), sw.name.unwrap_or(self.type_name));
        if !sw.no_default_version {
            d.provides
                .insert(format!("{prefix}.version"), sw.version.to_string());
            d.clears.push(format!("{prefix}.*"));
        }
        d
    }

    fn meta_data(&self) -> Option<Vec<u8>> {
        self.meta_data
            .map(|m| to_go_json(&sorted(&serde_json::Value::Object(m.clone()))))
    }

    fn check_files(&self, _index: usize, _files: &[&PayloadFileInfo]) -> Result<(), ArtifactError> {
        Ok(())
    }
}
