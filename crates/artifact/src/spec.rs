//! What to write: [`ArtifactSpec`] (the `mender-artifact write` options), its [`Payload`]
//! and payload files, and the checks a spec must pass before anything is written.

use crate::payload::{ModuleImage, PayloadType, RootfsImage};
use crate::schema::{valid_payload_file_name, valid_script_name};
use crate::{ArtifactError, Compression, SigningKey};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where a payload file's bytes come from.
pub enum PayloadSource {
    /// A file on disk; size, mode and mtime come from its metadata.
    Path(PathBuf),
    /// Small in-memory content (e.g. the `dest_dir` helper files of `single-file`).
    Bytes(Vec<u8>),
    /// A stream of exactly `size` bytes; any other length is an error.
    Reader {
        reader: Box<dyn Read + Send>,
        size: u64,
    },
}

impl std::fmt::Debug for PayloadSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PayloadSource::Path(p) => write!(f, "Path({})", p.display()),
            PayloadSource::Bytes(b) => write!(f, "Bytes({} bytes)", b.len()),
            PayloadSource::Reader { size, .. } => write!(f, "Reader({size} bytes)"),
        }
    }
}

/// One file inside the payload's data tar.
#[derive(Debug)]
pub struct PayloadFile {
    /// Base name stored in the artifact (`^[A-Za-z0-9_.,-]+$`, at most 100 bytes).
    pub name: String,
    pub source: PayloadSource,
    /// Permission bits stored in the data tar; `None` = from the file (Path) or 0644.
    pub mode: Option<u32>,
}

impl PayloadFile {
    /// A file on disk, stored under its base name.
    pub fn from_path(path: impl Into<PathBuf>) -> Result<Self, ArtifactError> {
        let path = path.into();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                ArtifactError::InvalidSpec(format!(
                    "payload path {} has no UTF-8 file name",
                    path.display()
                ))
            })?
            .to_string();
        Ok(PayloadFile {
            name,
            source: PayloadSource::Path(path),
            mode: None,
        })
    }

    pub fn from_bytes(name: impl Into<String>, bytes: Vec<u8>, mode: u32) -> Self {
        PayloadFile {
            name: name.into(),
            source: PayloadSource::Bytes(bytes),
            mode: Some(mode),
        }
    }

    pub fn from_reader(
        name: impl Into<String>,
        reader: Box<dyn Read + Send>,
        size: u64,
        mode: u32,
    ) -> Self {
        PayloadFile {
            name: name.into(),
            source: PayloadSource::Reader { reader, size },
            mode: Some(mode),
        }
    }
}

/// The single payload of the artifact.
#[derive(Debug)]
pub enum Payload {
    /// `write module-image -T <type_name>`.
    Module {
        type_name: String,
        files: Vec<PayloadFile>,
        /// Written as `headers/0000/meta-data` (sorted keys, Go escaping) when given.
        meta_data: Option<serde_json::Map<String, serde_json::Value>>,
    },
    /// `write rootfs-image -f <file>`.
    RootfsImage { file: PayloadFile },
}

/// Everything needed to write one artifact. Build it with [`ArtifactSpec::new`] and adjust
/// the public fields.
#[derive(Debug)]
pub struct ArtifactSpec {
    /// `artifact_name` (no whitespace, printable, at most 256 bytes).
    pub name: String,
    /// `artifact_provides.artifact_group` (`-g`).
    pub group: Option<String>,
    /// `artifact_depends.device_type` (`-t`); must not be empty.
    pub device_types: Vec<String>,
    /// `artifact_depends.artifact_name` (`-N`).
    pub depends_artifact_names: Vec<String>,
    /// `artifact_depends.artifact_group` (`-G`).
    pub depends_groups: Vec<String>,
    pub payload: Payload,
    /// Extra type-info provides (`-p KEY:VALUE`); they override the defaults.
    pub provides: BTreeMap<String, String>,
    /// Type-info depends (`-d KEY:VALUE`).
    pub depends: BTreeMap<String, String>,
    /// Extra clears (`--clears-provides`); placed before the default ones.
    pub clears_provides: Vec<String>,
    /// `--software-name`.
    pub software_name: Option<String>,
    /// `--software-version`; defaults to the artifact name.
    pub software_version: Option<String>,
    /// `--software-filesystem`; defaults to `rootfs-image`.
    pub software_filesystem: Option<String>,
    /// `--no-default-software-version`: no version provide and no default clears.
    pub no_default_software_version: bool,
    /// `--no-default-clears-provides`.
    pub no_default_clears_provides: bool,
    /// `--no-checksum-provide` (rootfs-image only).
    pub no_checksum_provide: bool,
    /// State scripts (`-s`), stored as `scripts/<name>` (mode 0755, sorted by name). Names
    /// must look like `ArtifactInstall_Enter_00[_desc]`; content is held in memory (small).
    pub scripts: Vec<PayloadFile>,
    pub compression: Compression,
    pub signing_key: Option<SigningKey>,
    /// mtime for the header/data members and in-memory payload files; `None` = now.
    pub mtime: Option<u64>,
    /// Directory for the temporary compressed data tar; `None` = the system temp dir
    /// ([`write_artifact_to_path`] uses the output's directory).
    pub temp_dir: Option<PathBuf>,
}

impl ArtifactSpec {
    pub fn new(name: impl Into<String>, device_types: Vec<String>, payload: Payload) -> Self {
        ArtifactSpec {
            name: name.into(),
            group: None,
            device_types,
            depends_artifact_names: Vec::new(),
            depends_groups: Vec::new(),
            payload,
            provides: BTreeMap::new(),
            depends: BTreeMap::new(),
            clears_provides: Vec::new(),
            software_name: None,
            software_version: None,
            software_filesystem: None,
            no_default_software_version: false,
            no_default_clears_provides: false,
            no_checksum_provide: false,
            scripts: Vec::new(),
            compression: Compression::Gzip,
            signing_key: None,
            mtime: None,
            temp_dir: None,
        }
    }
}

/// Builds the spec of a `single-file` update-module artifact, the same content as
/// `single-file-artifact-gen -n NAME -t DEV... -d DEST_DIR FILE`: payload files
/// `dest_dir`, `filename`, `permissions` (octal mode) and the file itself.
///
/// ```no_run
/// # fn main() -> Result<(), menderartifact::ArtifactError> {
/// let mut spec = menderartifact::module_image_single_file(
///     "mender-conf-stage1",
///     vec!["raspberrypi4".into()],
///     std::path::Path::new("mender.conf"),
///     "/etc/mender",
/// )?;
/// spec.software_version = Some("1".into()); // optional, like --software-version
/// menderartifact::write_artifact_to_path(spec, std::path::Path::new("stage1.mender"))?;
/// # Ok(()) }
/// ```
pub fn module_image_single_file(
    name: impl Into<String>,
    device_types: Vec<String>,
    file: &Path,
    dest_dir: &str,
) -> Result<ArtifactSpec, ArtifactError> {
    if !dest_dir.starts_with('/') {
        return Err(ArtifactError::InvalidSpec(format!(
            "destination directory '{dest_dir}' must be an absolute path"
        )));
    }
    let meta = std::fs::metadata(file).map_err(ArtifactError::payload_file(file))?;
    if !meta.is_file() {
        return Err(ArtifactError::InvalidSpec(format!(
            "{} is not a regular file",
            file.display()
        )));
    }
    let payload_file = PayloadFile::from_path(file)?;
    let mode = file_mode(&meta);
    Ok(ArtifactSpec::new(
        name,
        device_types,
        single_file_payload(dest_dir, payload_file, mode),
    ))
}

/// The stock `single-file` update module's payload: `file` installed into `dest_dir` as
/// `file.name` with permissions `mode` (the module reads `dest_dir`, `filename` and
/// `permissions` from files of their own).
pub fn single_file_payload(dest_dir: &str, file: PayloadFile, mode: u32) -> Payload {
    let small =
        |name: &str, content: String| PayloadFile::from_bytes(name, content.into_bytes(), 0o644);
    let files = vec![
        small("dest_dir", format!("{dest_dir}\n")),
        small("filename", format!("{}\n", file.name)),
        small("permissions", format!("{mode:o}\n")),
        file,
    ];
    Payload::Module {
        type_name: "single-file".into(),
        files,
        meta_data: None,
    }
}

#[cfg(unix)]
pub(crate) fn file_mode(meta: &std::fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}
#[cfg(not(unix))]
pub(crate) fn file_mode(_meta: &std::fs::Metadata) -> u32 {
    0o644
}

/// A file's mtime in whole seconds, rounded to the nearest second as Go's tar writer does.
pub(crate) fn file_mtime(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() + u64::from(d.subsec_nanos() >= 500_000_000))
        .unwrap_or(0)
}

impl Payload {
    /// The handler of this payload's type.
    pub(crate) fn handler(&self) -> Box<dyn PayloadType + '_> {
        match self {
            Payload::Module {
                type_name,
                meta_data,
                ..
            } => Box::new(ModuleImage {
                type_name,
                meta_data: meta_data.as_ref(),
            }),
            Payload::RootfsImage { .. } => Box::new(RootfsImage),
        }
    }

    pub(crate) fn files(&self) -> Vec<&PayloadFile> {
        match self {
            Payload::Module { files, .. } => files.iter().collect(),
            Payload::RootfsImage { file } => vec![file],
        }
    }

    /// Moves the payload files out (the writer consumes their sources).
    pub(crate) fn take_files(&mut self) -> Vec<PayloadFile> {
        match self {
            Payload::Module { files, .. } => std::mem::take(files),
            Payload::RootfsImage { file } => vec![std::mem::replace(
                file,
                PayloadFile::from_bytes(String::new(), Vec::new(), 0),
            )],
        }
    }
}

/// Header strings: non-empty, at most 256 bytes, no control characters.
pub(crate) fn check_header_string(what: &str, s: &str) -> Result<(), ArtifactError> {
    if s.is_empty() {
        return Err(ArtifactError::InvalidSpec(format!(
            "{what} must not be empty"
        )));
    }
    if s.len() > 256 {
        return Err(ArtifactError::InvalidSpec(format!(
            "{what} '{s}' is longer than 256 bytes"
        )));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(ArtifactError::InvalidSpec(format!(
            "{what} '{}' contains control characters",
            s.escape_debug()
        )));
    }
    Ok(())
}

impl ArtifactSpec {
    /// Everything `mender-artifact write` would refuse, checked before anything is written.
    pub(crate) fn validate(&self) -> Result<(), ArtifactError> {
        check_header_string("artifact name", &self.name)?;
        if self.name.chars().any(char::is_whitespace) {
            return Err(ArtifactError::InvalidSpec(format!(
                "artifact name '{}' must not contain whitespace",
                self.name
            )));
        }
        if let Some(g) = &self.group {
            check_header_string("artifact group", g)?;
        }
        if self.device_types.is_empty() {
            return Err(ArtifactError::InvalidSpec(
                "at least one device type (compatible type) is required".into(),
            ));
        }
        for d in &self.device_types {
            check_header_string("device type", d)?;
        }
        for n in &self.depends_artifact_names {
            check_header_string("depended-on artifact name", n)?;
        }
        for g in &self.depends_groups {
            check_header_string("depended-on artifact group", g)?;
        }
        let mut script_names = std::collections::HashSet::new();
        for sc in &self.scripts {
            if !valid_script_name(&sc.name) {
                return Err(ArtifactError::InvalidSpec(format!(
                    "state script name '{}' is invalid: expected Artifact<State>_<Enter|Leave|Error>_NN[_desc], \
                     State one of Install, Reboot, Rollback, RollbackReboot, Commit, Failure",
                    sc.name
                )));
            }
            if !script_names.insert(sc.name.as_str()) {
                return Err(ArtifactError::InvalidSpec(format!(
                    "state script '{}' is given twice",
                    sc.name
                )));
            }
        }
        let files = self.payload.files();
        self.payload.handler().check_spec(files.len())?;
        let mut seen = std::collections::HashSet::new();
        for f in files {
            if !valid_payload_file_name(&f.name) {
                return Err(ArtifactError::InvalidSpec(format!(
                    "payload file name '{}' is invalid: use only letters, digits and '.,_-', at most 100 bytes",
                    f.name
                )));
            }
            if !seen.insert(f.name.as_str()) {
                return Err(ArtifactError::InvalidSpec(format!(
                    "payload file name '{}' is given twice",
                    f.name
                )));
            }
        }
        for k in self.provides.keys().chain(self.depends.keys()) {
            if k.is_empty() || k == "artifact_name" || k == "artifact_group" {
                return Err(ArtifactError::InvalidSpec(format!(
                    "type-info key '{k}' is not allowed (empty, or reserved for the artifact header)"
                )));
            }
        }
        Ok(())
    }
}
