//! Native streaming writer and reader for Mender Artifact format v3 (module-image and
//! rootfs-image payloads, gzip or no compression, RSA / ECDSA P-256 manifest signatures),
//! compatible with `mender-artifact` 3.9 and the Mender client.
//!
//! Writing: build an [`ArtifactSpec`] (or use [`module_image_single_file`]) and call
//! [`write_artifact`] or [`write_artifact_to_path`]. Reading: [`read_info`] (checksums),
//! [`read_verified`] (checksums + mandatory valid signature when a key is given) or
//! [`read_report`] (signature status reported, never fatal).

mod error;
mod gojson;
mod keys;
mod pgzip;
mod reader;
mod tarfmt;
mod writer;

pub use error::ArtifactError;
pub use keys::{SignatureStatus, SigningKey, VerifyKey};
pub use reader::{read_info, read_report, read_verified, ArtifactInfo, PayloadFileInfo};
pub use writer::{
    module_image_single_file, write_artifact, write_artifact_to_path, ArtifactSpec, Compression,
    Payload, PayloadFile, PayloadSource,
};
