//! The one error type of the crate: each variant says what failed and what to do about it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    // The underlying errors are part of the message, not a `source`: printing the chain
    // would repeat them.
    #[error("{context}: {err}")]
    Io {
        context: String,
        err: std::io::Error,
    },
    #[error("{path}: not a valid Mender artifact: {err}")]
    Artifact {
        path: String,
        err: menderartifact::ArtifactError,
    },
    #[error("{0}")]
    Config(#[from] menderconf::ConfigError),
    /// The artifact is readable but its payload is not something this tool can handle.
    #[error("{0}")]
    Unsupported(String),
    /// The root filesystem image inside the artifact could not be read or edited.
    #[error("{artifact}: root filesystem image: {detail}")]
    Image { artifact: String, detail: String },
    /// A rootfs update cannot carry the stage config; the message says why and what to use.
    #[error("{0}")]
    Refused(String),
    #[error("{0} already exists; pass --force to replace it")]
    Exists(PathBuf),
    #[error("writing {path}: {err}")]
    Write {
        path: PathBuf,
        err: menderartifact::ArtifactError,
    },
}

impl ReleaseError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ReleaseError::Io {
            context: context.into(),
            err: source,
        }
    }
}
