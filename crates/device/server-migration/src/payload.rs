//! Turns the artifact payload (`plan.json`, rendered files) plus the device's current config into the new file contents, via `menderconf`.
//!
//! No mender.conf rule lives here: parsing, the stage precondition, rendering (patch mode) and
//! validation are all `menderconf`'s. This module only reads files and maps paths.

use crate::client::DeviceClient;
use crate::device::DeviceRoot;
use crate::error::{Error, Result};
use crate::journal::RestartMode;
use crate::transaction::{read_current, CurrentFile, Intent};
use menderconf::{ClientGeneration, ConfigFile, ConfigSet, Mode, Restart, StagePlan, Warning};
use menderconf::{FALLBACK_CONFIG_PATH, MAIN_CONFIG_PATH, PLAN_FILE_NAME};
use std::fs;
use std::io;
use std::path::Path;

/// The device paths the module manages, in journal order.
pub const MANAGED_PATHS: [&str; 2] = [MAIN_CONFIG_PATH, FALLBACK_CONFIG_PATH];

/// Everything ArtifactInstall needs to run the transaction.
#[derive(Debug)]
pub struct PreparedInstall {
    pub intent: Intent,
    pub current: Vec<CurrentFile>,
    /// Same order as `current`; `None` = the file must be absent.
    pub new: Vec<Option<Vec<u8>>>,
    pub warnings: Vec<Warning>,
    /// The client found on the device, and whose rules were applied.
    pub client: DeviceClient,
    pub rules: ClientGeneration,
}

/// Reads `<tree>/files/plan.json`.
pub fn read_plan(tree: &Path) -> Result<StagePlan> {
    let path = tree.join("files").join(PLAN_FILE_NAME);
    let bytes = fs::read(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::new(format!(
                "the payload has no {PLAN_FILE_NAME} ({} missing): not a server-migration artifact, or built wrong",
                path.display()
            ))
        } else {
            Error::new(format!("cannot read {}: {e}", path.display()))
        }
    })?;
    StagePlan::from_json(&bytes).map_err(|e| Error::new(format!("{}: {e}", path.display())))
}

/// The device's current files, parsed as the `rules` client reads them. Any unreadable or
/// unparsable file is an error naming it.
pub fn read_device(
    root: &DeviceRoot,
    rules: ClientGeneration,
) -> Result<(Vec<CurrentFile>, ConfigSet)> {
    let current: Vec<CurrentFile> = MANAGED_PATHS
        .iter()
        .map(|p| read_current(root, p))
        .collect::<Result<_>>()?;
    let set = parse_set(&current, rules)?;
    Ok((current, set))
}

/// The files as they would be with `new` contents (`None`: removed), the rest of each kept.
fn with_contents(current: &[CurrentFile], new: &[Option<Vec<u8>>]) -> Vec<CurrentFile> {
    current
        .iter()
        .zip(new)
        .map(|(cur, bytes)| CurrentFile {
            contents: bytes.clone(),
            ..cur.clone()
        })
        .collect()
}

fn parse_set(files: &[CurrentFile], rules: ClientGeneration) -> Result<ConfigSet> {
    let parse = |f: &CurrentFile| -> Result<Option<ConfigFile>> {
        match &f.contents {
            None => Ok(None),
            Some(bytes) => Ok(Some(ConfigFile::parse_for(
                f.device_path.clone(),
                bytes,
                rules,
            )?)),
        }
    };
    Ok(ConfigSet {
        main: parse(&files[0])?,
        fallback: parse(&files[1])?,
    })
}

/// Loads the plan and the device config and computes the new files; validation errors refuse.
pub fn prepare_install(root: &DeviceRoot, tree: &Path) -> Result<PreparedInstall> {
    let mut plan = read_plan(tree)?;
    let client = DeviceClient::detect(root);
    plan.client = client.rules_for(plan.client)?;
    let rules = plan.client;
    let artifact_name = fs::read_to_string(tree.join("header").join("artifact_name"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    let (current, current_set) = read_device(root, rules)?;

    let new: Vec<Option<Vec<u8>>> = match plan.mode {
        Mode::Patch => {
            let next = plan.apply(&current_set)?;
            vec![
                rendered(&current[0], current_set.main.as_ref(), next.main.as_ref()),
                rendered(
                    &current[1],
                    current_set.fallback.as_ref(),
                    next.fallback.as_ref(),
                ),
            ]
        }
        Mode::Replace => {
            let files = plan
                .files
                .as_ref()
                .ok_or_else(|| Error::new("replace plan without `files`"))?;
            if let Some(unknown) = files.keys().find(|k| !MANAGED_PATHS.contains(&k.as_str())) {
                return Err(Error::new(format!(
                    "{PLAN_FILE_NAME}: `files` names {unknown:?}; this module only manages {} and {}",
                    MAIN_CONFIG_PATH, FALLBACK_CONFIG_PATH
                )));
            }
            let mut new = Vec::new();
            for cur in &current {
                new.push(match files.get(&cur.device_path) {
                    // Not mentioned: the file stays as it is.
                    None => cur.contents.clone(),
                    Some(None) => None,
                    Some(Some(name)) => Some(read_payload_file(tree, name, &cur.device_path)?),
                });
            }
            let replacement = parse_set(&with_contents(&current, &new), rules)
                .map_err(|e| Error::new(format!("payload file: {e}")))?;
            plan.check_replacement(&current_set, &replacement)?;
            new
        }
    };

    // Belt and braces: the exact bytes that will be written must parse and validate together.
    let warnings = parse_set(&with_contents(&current, &new), rules)?.validate_for(rules)?;

    Ok(PreparedInstall {
        intent: Intent {
            artifact_name,
            stage: plan.stage.to_string(),
            old_server: plan.old_server.to_string(),
            new_server: plan.new_server.to_string(),
            restart: match plan.restart {
                Restart::Reboot => RestartMode::Reboot,
                Restart::Service => RestartMode::Service,
            },
        },
        current,
        new,
        warnings,
        client,
        rules,
    })
}

/// Keeps the device's own bytes when menderconf left a file unchanged (no reformatting churn).
fn rendered(
    cur: &CurrentFile,
    before: Option<&ConfigFile>,
    after: Option<&ConfigFile>,
) -> Option<Vec<u8>> {
    match after {
        None => None,
        Some(a) if Some(a) == before => cur.contents.clone(),
        Some(a) => Some(a.to_bytes()),
    }
}

fn read_payload_file(tree: &Path, name: &str, for_path: &str) -> Result<Vec<u8>> {
    if name.is_empty()
        || name.contains('/')
        || name == "."
        || name == ".."
        || name == PLAN_FILE_NAME
    {
        return Err(Error::new(format!(
            "{PLAN_FILE_NAME}: payload file name {name:?} for {for_path} is not a plain file name"
        )));
    }
    let path = tree.join("files").join(name);
    let bytes = fs::read(&path).map_err(|e| {
        Error::new(format!(
            "payload file {} (content for {for_path}) cannot be read: {e}",
            path.display()
        ))
    })?;
    // Never written: a 3.x client cannot read a file that starts with one (the host never
    // renders one, so such a payload was not made by this project's tools).
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        return Err(Error::new(format!(
            "payload file {} (content for {for_path}) starts with a UTF-8 byte order mark; this module never writes one: rebuild the artifact with mender-migrate",
            path.display()
        )));
    }
    Ok(bytes)
}

/// The config files on disk parse and pass validation with the rules of the client on the
/// device (ArtifactVerifyReboot).
pub fn check_device_config(root: &DeviceRoot) -> Result<()> {
    let rules = DeviceClient::detect(root).generation();
    let (_, set) = read_device(root, rules)?;
    set.validate_for(rules)?;
    Ok(())
}
