//! The single error type of the crate: every failure names the member, file or key at fault.

use std::path::PathBuf;

/// Everything that can go wrong while writing, reading or signing an artifact.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot open payload file {path}: {source}")]
    PayloadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid artifact specification: {0}")]
    InvalidSpec(String),

    #[error("artifact is truncated: input ended while reading {0}")]
    Truncated(String),

    #[error("malformed artifact: {0}")]
    Malformed(String),

    #[error("malformed artifact: expected member '{expected}' but found '{found}'")]
    UnexpectedMember { expected: String, found: String },

    #[error("malformed artifact: member '{0}' is missing")]
    MissingMember(String),

    #[error("malformed artifact: invalid JSON in '{member}': {detail}")]
    InvalidJson { member: String, detail: String },

    #[error("malformed manifest line {line}: {detail}")]
    InvalidManifest { line: usize, detail: String },

    #[error(
        "checksum mismatch for '{name}': manifest says {expected}, content hashes to {actual}"
    )]
    ChecksumMismatch {
        name: String,
        expected: String,
        actual: String,
    },

    #[error("'{0}' is in the artifact but has no checksum line in the manifest")]
    NotInManifest(String),

    #[error("manifest lists files that are not in the artifact: {}", .0.join(", "))]
    MissingFromArtifact(Vec<String>),

    #[error("unsafe name '{name}' in {container}: absolute paths and '..' components are refused (path traversal)")]
    UnsafePath { container: String, name: String },

    #[error("member '{member}' is {size} bytes, over the {limit}-byte limit for {what}")]
    TooLarge {
        member: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },

    #[error("'{member}' decompresses to more than {limit} bytes, the limit for {what}: refused as a possible decompression bomb")]
    DecompressionBomb {
        member: String,
        what: &'static str,
        limit: u64,
    },

    #[error("unsupported compression for member '{0}': only gzip (.gz) and none are supported")]
    UnsupportedCompression(String),

    #[error("unsupported artifact: {0}")]
    Unsupported(String),

    #[error("the private key is encrypted; decrypt it first, e.g. `openssl pkey -in key.pem -out key-plain.pem`")]
    EncryptedKey,

    #[error("unsupported key type: {0}; use an RSA key or an ECDSA P-256 key")]
    UnsupportedKeyType(String),

    #[error("cannot parse key: {0}")]
    InvalidKey(String),

    #[error("signing the manifest failed: {0}")]
    Signing(String),

    #[error("the artifact is not signed but a verification key was given")]
    SignatureMissing,

    #[error("the artifact signature does not verify with the given key (wrong key or tampered manifest)")]
    SignatureInvalid,
}

impl ArtifactError {
    /// The error for an I/O failure on the payload file `path` (for `map_err`).
    pub(crate) fn payload_file(
        path: &std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> ArtifactError {
        let path = path.to_path_buf();
        move |source| ArtifactError::PayloadFile { path, source }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        let context = context.into();
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            return ArtifactError::Truncated(context);
        }
        ArtifactError::Io { context, source }
    }
}
