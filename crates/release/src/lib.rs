//! Rootfs releases after a server migration.
//!
//! After stage N every ordinary OS release must carry stage N's `mender.conf`, or installing it
//! quietly puts devices back on the old server. [`check_release`] is the gate for that (one
//! artifact in, a [`Verdict`] with reasons out); [`stage_rootfs`] makes a stage rootfs artifact
//! from an existing release by replacing only `/etc/mender/mender.conf` inside its image.
//! [`stage_module_spec`] is the matching `server-migration` module artifact of a stage.
//! Artifact format: `menderartifact`; config rules: `menderconf`.
//!
//! Both read gzip, lzma (`.xz`, `mender-artifact --compression lzma`) and uncompressed members
//! (`zstd` is refused with a clear error: `mender-artifact` 3.9 cannot write it). The stage
//! artifact keeps an uncompressed input uncompressed and writes everything else with gzip:
//! block-parallel gzip is many times faster to write than xz and every Mender client reads it.

mod error;
mod gate;
mod image;
mod read;
mod stage;
mod stage_module;

pub use error::ReleaseError;
pub use gate::Verdict;
pub use stage::{stage_rootfs, RootfsOptions, StagedRootfs};
pub use stage_module::{stage_module_spec, stage_suffix};

use gate::Gate;
use image::MainConfig;
use menderconf::{ServerUrl, Stage, StagePlan, MAIN_CONFIG_PATH};
use read::{Content, ExtractedFile};
use std::io::Read;
use std::path::Path;

/// What the gate checks a release against.
#[derive(Debug, Clone)]
pub struct GateOptions {
    /// The stage the fleet has reached.
    pub stage: Stage,
    pub old_server: ServerUrl,
    pub new_server: ServerUrl,
    /// When given, the artifact must carry a valid signature by this key.
    pub verify_key: Option<menderartifact::VerifyKey>,
}

/// [`check_release`] on a file.
pub fn check_release_file(path: &Path, opts: &GateOptions) -> Result<Verdict, ReleaseError> {
    let file = std::fs::File::open(path)
        .map_err(|e| ReleaseError::io(format!("opening {}", path.display()), e))?;
    check_release(
        std::io::BufReader::with_capacity(256 * 1024, file),
        &path.display().to_string(),
        opts,
    )
}

/// Reads one artifact (verifying every checksum, and the signature when a key is given) and
/// decides whether a device at `opts.stage` stays on the migration's servers after installing
/// it. `Err` means the artifact could not be read at all (also a reason not to release it).
/// A rootfs image is spooled to a sparse file in the system temp dir while it is read.
pub fn check_release<R: Read>(
    input: R,
    label: &str,
    opts: &GateOptions,
) -> Result<Verdict, ReleaseError> {
    let (info, files) = read::read_artifact(
        input,
        label,
        opts.verify_key.as_ref(),
        &std::env::temp_dir(),
    )?;
    if opts.verify_key.is_some() && info.signature != menderartifact::SignatureStatus::Valid {
        return Err(ReleaseError::Unsupported(format!(
            "{label}: signature {:?} with the given key: devices that verify signatures would refuse it",
            info.signature
        )));
    }
    let gate = Gate {
        stage: opts.stage,
        old: &opts.old_server,
        new: &opts.new_server,
    };
    let payload_type = info.payload_types.first().cloned().unwrap_or_default();
    let (pass, release_servers, reasons, conditions) = if payload_type == "rootfs-image" {
        let image = rootfs_image(&files, label)?;
        let main = image::read_main_config(image).map_err(|detail| ReleaseError::Image {
            artifact: label.to_string(),
            detail,
        })?;
        gate.judge_main(&format!("{label}:{MAIN_CONFIG_PATH}"), &main)
    } else {
        judge_module(&gate, label, &payload_type, &files)
    };
    Ok(Verdict {
        pass,
        artifact: label.to_string(),
        artifact_name: info.name,
        payload_type,
        stage: opts.stage.to_string(),
        release_servers,
        expected_servers: gate.expected().iter().map(|s| s.to_string()).collect(),
        reasons,
        conditions,
    })
}

/// The spooled image of a rootfs artifact.
fn rootfs_image<'a>(files: &'a [ExtractedFile], label: &str) -> Result<&'a Path, ReleaseError> {
    match files {
        [f] => match &f.content {
            Content::Spooled(tmp) => Ok(tmp.path()),
            _ => Err(ReleaseError::Unsupported(format!(
                "{label}: the rootfs payload '{}' was not extracted",
                f.name
            ))),
        },
        files => Err(ReleaseError::Unsupported(format!(
            "{label}: a rootfs-image payload must hold exactly one file, found {}",
            files.len()
        ))),
    }
}

fn memory_file<'a>(files: &'a [ExtractedFile], name: &str) -> Option<&'a [u8]> {
    files.iter().find_map(|f| match &f.content {
        Content::Memory(b) if f.name == name => Some(b.as_slice()),
        _ => None,
    })
}

type Judgement = (bool, Option<Vec<String>>, Vec<String>, Vec<String>);

/// Module-image artifacts: only a `single-file` update of a `mender.conf` or the migration's
/// own stage artifacts touch the config; every other module leaves the root filesystem alone.
fn judge_module(
    gate: &Gate,
    label: &str,
    payload_type: &str,
    files: &[ExtractedFile],
) -> Judgement {
    if payload_type == menderconf::MODULE_NAME {
        let Some(bytes) = memory_file(files, menderconf::PLAN_FILE_NAME) else {
            return (
                false,
                None,
                vec![format!(
                    "{label}: a {payload_type} artifact without {}",
                    menderconf::PLAN_FILE_NAME
                )],
                Vec::new(),
            );
        };
        return match StagePlan::from_json(bytes) {
            Ok(plan) if &plan.old_server == gate.old && &plan.new_server == gate.new => (
                true,
                Some(plan.target_servers().iter().map(|s| s.to_string()).collect()),
                vec![format!(
                    "a migration stage artifact ({}, {} -> {}): it is the migration itself, not an OS release",
                    plan.stage, plan.old_server, plan.new_server
                )],
                Vec::new(),
            ),
            Ok(plan) => (
                false,
                Some(plan.target_servers().iter().map(|s| s.to_string()).collect()),
                vec![format!(
                    "a migration stage artifact for other servers ({} -> {}), not {} -> {}",
                    plan.old_server, plan.new_server, gate.old, gate.new
                )],
                Vec::new(),
            ),
            Err(e) => (
                false,
                None,
                vec![format!("{label}: {}: {e}", menderconf::PLAN_FILE_NAME)],
                Vec::new(),
            ),
        };
    }
    if payload_type == "single-file" {
        let text = |n| memory_file(files, n).map(|b| String::from_utf8_lossy(b).trim().to_string());
        if let (Some(dir), Some(name)) = (text("dest_dir"), text("filename")) {
            let dest = format!("{}/{}", dir.trim_end_matches('/'), name);
            if dest == MAIN_CONFIG_PATH || dest == menderconf::FALLBACK_CONFIG_PATH {
                let main = match files.iter().find(|f| f.name == name) {
                    Some(f) => match &f.content {
                        Content::Memory(b) => MainConfig::File {
                            bytes: b.clone(),
                            mode: 0o600,
                            uid: 0,
                            gid: 0,
                        },
                        _ => MainConfig::NotAFile("file too large to be a mender.conf".into()),
                    },
                    None => MainConfig::Absent,
                };
                let mut j = gate.judge_main(&format!("{label}:{dest}"), &main);
                j.2.insert(0, format!("a single-file update that installs {dest}"));
                return j;
            }
        }
    }
    let kind = if payload_type.is_empty() {
        "a bootstrap artifact (no payload)".to_string()
    } else {
        format!("a module-image artifact of type '{payload_type}'")
    };
    (
        true,
        None,
        vec![format!(
            "{kind}: it does not replace the root filesystem, so {MAIN_CONFIG_PATH} is not changed by it (no config change)"
        )],
        Vec::new(),
    )
}
