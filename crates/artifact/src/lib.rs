//! Native streaming writer and reader for Mender Artifact format v3 (module-image and
//! rootfs-image payloads, gzip, xz (read; written slowly) or no compression, RSA / ECDSA P-256 manifest signatures),
//! compatible with `mender-artifact` 3.9 and the Mender client.
//!
//! Writing: build an [`ArtifactSpec`] (or use [`module_image_single_file`]) and call
//! [`write_artifact`] or [`write_artifact_to_path`]. Reading: [`read_info`] (checksums),
//! [`read_verified`] (checksums + mandatory valid signature when a key is given),
//! [`read_report`] (signature status reported, never fatal) or [`read_payloads`] (like
//! `read_verified`, streaming each payload file's content to a visitor).
//!
//! Layout, like the format: `schema` (member names, JSON documents, manifest) is shared by
//! `writer` and `reader`; `payload` has one handler per payload type; `compression` makes
//! every encoder and decoder; `tarfmt` is the tar dialect.

mod blockgz;
mod compression;
mod error;
mod keys;
mod payload;
mod reader;
mod schema;
mod spec;
mod tarfmt;
mod writer;

pub use compression::Compression;
pub use error::ArtifactError;
pub use keys::{SignatureStatus, SigningKey, VerifyKey};
pub use reader::{
    read_info, read_payloads, read_report, read_verified, ArtifactInfo, PayloadFileInfo,
    PayloadStream,
};
pub use reader::{MAX_HEADER_BYTES, MAX_JSON_BYTES};
pub use spec::{
    module_image_single_file, single_file_payload, ArtifactSpec, Payload, PayloadFile,
    PayloadSource,
};
pub use writer::{write_artifact, write_artifact_to_path};
