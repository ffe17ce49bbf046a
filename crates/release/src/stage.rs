//! `rootfs --from`: a stage rootfs artifact made from an existing release. The image is
//! decompressed once (spooled sparse next to the output), its `/etc/mender/mender.conf` is
//! replaced by the stage config, and it is recompressed into a new artifact whose header keeps
//! everything but the name and the provides that depend on the content.

use crate::gate::has_server_key;
use crate::image::{self, MainConfig};
use crate::read::{self, Content, MemberCompression};
use crate::ReleaseError;
use menderartifact::{ArtifactSpec, Compression, Payload, PayloadFile, SigningKey};
use menderconf::{
    plan_migration, ConfigFile, ConfigSet, ServerUrl, Stage, FALLBACK_CONFIG_PATH, MAIN_CONFIG_PATH,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct RootfsOptions {
    /// The current release (a rootfs-image artifact).
    pub from: PathBuf,
    pub stage: Stage,
    pub old_server: ServerUrl,
    pub new_server: ServerUrl,
    /// Output directory; the artifact is written as `<name>.mender`.
    pub out_dir: PathBuf,
    /// The config to compute the stage config from, instead of the image's own.
    pub config: Option<PathBuf>,
    pub signing_key: Option<SigningKey>,
    /// The new artifact name; default `<current name>-stage1-dual` / `-stage2-new-only`.
    pub name: Option<String>,
    pub force: bool,
}

/// What [`stage_rootfs`] wrote.
#[derive(Debug, Clone)]
pub struct StagedRootfs {
    pub path: PathBuf,
    pub artifact_name: String,
    pub previous_name: String,
    pub servers_before: Vec<String>,
    pub servers_after: Vec<String>,
    /// The image's config before and after (as stored; may hold a tenant token: mask it).
    pub config_before: ConfigFile,
    pub config_after: ConfigFile,
    pub signed: bool,
}

fn refuse(msg: String) -> ReleaseError {
    ReleaseError::Refused(msg)
}

/// Writes the stage rootfs artifact. Refuses, changing nothing, when the image's server
/// setting is not in its own `/etc/mender/mender.conf` (a rootfs update cannot reach the data
/// partition) or when the stage config would be invalid.
pub fn stage_rootfs(opts: &RootfsOptions) -> Result<StagedRootfs, ReleaseError> {
    let label = opts.from.display().to_string();
    if opts.old_server == opts.new_server {
        return Err(ReleaseError::Config(menderconf::ConfigError::SameServer {
            url: opts.new_server.to_string(),
        }));
    }
    let override_config = match &opts.config {
        Some(p) => {
            let bytes = std::fs::read(p)
                .map_err(|e| ReleaseError::io(format!("reading {}", p.display()), e))?;
            Some(ConfigFile::parse(p.display().to_string(), &bytes)?)
        }
        None => None,
    };
    std::fs::create_dir_all(&opts.out_dir)
        .map_err(|e| ReleaseError::io(format!("creating {}", opts.out_dir.display()), e))?;
    let input = std::fs::File::open(&opts.from)
        .map_err(|e| ReleaseError::io(format!("opening {label}"), e))?;
    let (info, files) = read::read_artifact(
        std::io::BufReader::with_capacity(256 * 1024, input),
        &label,
        None,
        &opts.out_dir,
    )?;
    // The header as stored (scripts, JSON) from the front of the same, now verified, file.
    let extracted = read::read_header_of(&opts.from)?;
    let scripts: Vec<&str> = extracted.scripts.iter().map(|s| s.name.as_str()).collect();
    let expected: Vec<&str> = info
        .scripts
        .iter()
        .map(|s| s.strip_prefix("scripts/").unwrap_or(s))
        .collect();
    if scripts != expected {
        return Err(ReleaseError::Unsupported(format!(
            "{label} changed while it was read (state scripts differ between two reads)"
        )));
    }
    if info.payload_types.first().map(String::as_str) != Some("rootfs-image") {
        return Err(refuse(format!(
            "{label} is not a rootfs-image artifact (payload type '{}'): only a root filesystem release can carry the stage config; use `mender-migrate artifacts` for the stage module artifacts",
            info.payload_types.join(",")
        )));
    }
    let file = match files.as_slice() {
        [f] => f,
        fs => {
            return Err(ReleaseError::Unsupported(format!(
                "{label}: a rootfs-image payload must hold exactly one file, found {}",
                fs.len()
            )))
        }
    };
    let Content::Spooled(spool) = &file.content else {
        return Err(ReleaseError::Unsupported(format!(
            "{label}: the image was not extracted"
        )));
    };
    let image_err = |detail| ReleaseError::Image {
        artifact: label.clone(),
        detail,
    };
    let origin = format!("{label}:{MAIN_CONFIG_PATH}");
    let on_data = |why: String| {
        refuse(format!(
            "{label}: {why}, so the device's server setting lives in {FALLBACK_CONFIG_PATH} on the data partition, which a rootfs update does not replace: use the stage module artifacts (`mender-migrate artifacts`) instead"
        ))
    };
    let (image_config, mode, uid, gid) = match image::read_main_config(spool.path()).map_err(image_err)? {
        MainConfig::File { bytes, mode, uid, gid } => (ConfigFile::parse(origin.clone(), &bytes), mode, uid, gid),
        MainConfig::Absent => return Err(on_data(format!("the image has no {MAIN_CONFIG_PATH}"))),
        MainConfig::Symlink { link, target } => {
            return Err(refuse(format!(
                "{label}: {link} in the image is a symlink to {target}: the config is outside the root filesystem and a rootfs update cannot change it; use the stage module artifacts (`mender-migrate artifacts`)"
            )))
        }
        MainConfig::NotAFile(kind) => {
            return Err(refuse(format!("{label}: {MAIN_CONFIG_PATH} in the image is a {kind}, not a file")))
        }
    };
    if let Ok(f) = &image_config {
        if !has_server_key(f) {
            return Err(on_data(format!(
                "{MAIN_CONFIG_PATH} in the image sets neither ServerURL nor Servers"
            )));
        }
    }
    let current = match (override_config, image_config) {
        (Some(c), _) => c,
        (None, Ok(c)) => c,
        (None, Err(e)) => {
            return Err(refuse(format!(
                "{label}: the image's config is invalid ({e}); pass --config with the config the release should have"
            )))
        }
    };
    if !has_server_key(&current) {
        return Err(refuse(format!(
            "{}: sets neither ServerURL nor Servers: nothing to compute the stage servers from",
            current.origin
        )));
    }
    let captured = ConfigSet {
        main: Some(current.clone()),
        fallback: None,
    };
    let servers_before: Vec<String> = captured.servers().iter().map(|s| s.to_string()).collect();
    let target = match opts.stage {
        Stage::Dual => vec![opts.old_server.clone(), opts.new_server.clone()],
        Stage::NewOnly => vec![opts.new_server.clone()],
    };
    let staged = if captured.servers() == target {
        captured.validate()?;
        current.clone()
    } else {
        let plan = plan_migration(captured, &opts.new_server, Some(&opts.old_server))?;
        let set = plan.stage_files(opts.stage);
        if set.fallback.is_some() {
            return Err(on_data(
                "the stage would have to write the fallback file".into(),
            ));
        }
        set.main
            .clone()
            .expect("a stage of a main config keeps the main file")
    };
    let new_bytes = staged.to_bytes();
    image::write_main_config(spool.path(), &new_bytes, mode, uid, gid).map_err(image_err)?;

    let previous_name = info.name.clone();
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| format!("{previous_name}-{}", crate::stage_suffix(opts.stage)));
    let out_path = opts.out_dir.join(format!("{name}.mender"));
    if out_path.exists() && !opts.force {
        return Err(ReleaseError::Exists(out_path));
    }
    let spec = rewrite_spec(
        &label,
        &extracted,
        &name,
        &previous_name,
        file,
        spool.path(),
        opts,
    )?;
    menderartifact::write_artifact_to_path(spec, &out_path).map_err(|err| ReleaseError::Write {
        path: out_path.clone(),
        err,
    })?;
    Ok(StagedRootfs {
        path: out_path,
        artifact_name: name,
        previous_name,
        servers_before,
        servers_after: target.iter().map(|s| s.to_string()).collect(),
        config_before: current,
        config_after: staged,
        signed: opts.signing_key.is_some(),
    })
}

fn strings(v: Option<&Value>, what: &str, label: &str) -> Result<Vec<String>, ReleaseError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str().map(str::to_string).ok_or_else(|| {
                    ReleaseError::Unsupported(format!("{label}: {what} holds a non-string"))
                })
            })
            .collect(),
        Some(_) => Err(ReleaseError::Unsupported(format!(
            "{label}: {what} is not a list"
        ))),
    }
}

fn string_map(
    v: Option<&Value>,
    what: &str,
    label: &str,
) -> Result<BTreeMap<String, String>, ReleaseError> {
    match v {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(ReleaseError::Unsupported(format!(
                    "{label}: {what} '{k}' is not a string value; this tool rewrites only string values (as the Mender client reads them)"
                ))),
            })
            .collect(),
        Some(_) => Err(ReleaseError::Unsupported(format!("{label}: {what} is not an object"))),
    }
}

/// The new artifact's spec: the old header with the new name and content-derived provides.
fn rewrite_spec(
    label: &str,
    extracted: &read::Extracted,
    name: &str,
    previous_name: &str,
    file: &read::ExtractedFile,
    image: &Path,
    opts: &RootfsOptions,
) -> Result<ArtifactSpec, ReleaseError> {
    let hi = extracted.header_info.as_ref().ok_or_else(|| {
        ReleaseError::Unsupported(format!("{label}: no header-info was extracted"))
    })?;
    let empty = Value::Object(Default::default());
    let ti = extracted.type_info.as_ref().unwrap_or(&empty);
    let provides_hi = hi.get("artifact_provides");
    let depends_hi = hi.get("artifact_depends");
    let reader = std::fs::File::open(image).map_err(|e| {
        ReleaseError::io(format!("reopening the edited image {}", image.display()), e)
    })?;
    let payload = PayloadFile::from_reader(
        file.name.clone(),
        Box::new(reader),
        file.size,
        extracted.first_file_mode.unwrap_or(file.mode),
    );
    let mut spec = ArtifactSpec::new(
        name,
        strings(
            depends_hi.and_then(|d| d.get("device_type")),
            "artifact_depends.device_type",
            label,
        )?,
        Payload::RootfsImage { file: payload },
    );
    spec.group = provides_hi
        .and_then(|p| p.get("artifact_group"))
        .and_then(Value::as_str)
        .map(str::to_string);
    spec.depends_artifact_names = strings(
        depends_hi.and_then(|d| d.get("artifact_name")),
        "artifact_depends.artifact_name",
        label,
    )?;
    spec.depends_groups = strings(
        depends_hi.and_then(|d| d.get("artifact_group")),
        "artifact_depends.artifact_group",
        label,
    )?;
    let mut provides = string_map(ti.get("artifact_provides"), "type-info provides", label)?;
    let had_checksum = provides.remove("rootfs-image.checksum").is_some();
    if provides.contains_key("rootfs_image_checksum") {
        return Err(ReleaseError::Unsupported(format!(
            "{label}: carries the legacy 'rootfs_image_checksum' provide, which this tool does not recompute"
        )));
    }
    if let Some(v) = provides.get_mut("rootfs-image.version") {
        if v == previous_name {
            *v = name.to_string();
        }
    }
    spec.provides = provides;
    spec.depends = string_map(ti.get("artifact_depends"), "type-info depends", label)?;
    spec.clears_provides = strings(
        ti.get("clears_artifact_provides"),
        "clears_artifact_provides",
        label,
    )?;
    spec.no_default_software_version = true;
    spec.no_default_clears_provides = true;
    spec.no_checksum_provide = !had_checksum;
    spec.scripts = extracted
        .scripts
        .iter()
        .map(|s| PayloadFile::from_bytes(s.name.clone(), s.content.clone(), s.mode))
        .collect();
    // An xz (`--compression lzma`) input is written as gzip: our block-parallel gzip writer is
    // many times faster than xz and every Mender client reads it; the payload is unchanged.
    spec.compression = match extracted.data_compression {
        Some(MemberCompression::None) => Compression::None,
        _ => Compression::Gzip,
    };
    spec.signing_key = opts.signing_key.clone();
    Ok(spec)
}
