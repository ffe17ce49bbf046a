//! The build-time half of the Yocto layer: make a pair of `mender.conf` files (the image's
//! `/etc` and `/data` copies, as meta-mender's `do_prepare_mender_conf` left them) a migration
//! stage, with `menderconf`'s `StagePlan::apply`, the code the device's update module runs.
//! The layer calls the native build of this tool, so it carries no rule of its own.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use menderconf::{
    plan_migration, ConfigError, ConfigFile, ConfigSet, Mode, ServerUrl, Stage, StagePlan,
};

/// What to do: parsed from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub stage: Stage,
    /// Needed for `dual`; `new-only` only ever uses the new server.
    pub old_server: Option<String>,
    pub new_server: String,
    pub main: PathBuf,
    pub fallback: Option<PathBuf>,
}

pub const USAGE: &str = "usage: migration-stage-config --stage dual|new-only --new-server URL [--old-server URL] --main FILE [--fallback FILE]

Rewrites FILE (and the fallback FILE) in place so that they are the given migration stage:
  dual      Servers [old, new] and no ServerURL (needs --old-server)
  new-only  ServerURL = the new server and no Servers
Server keys are set in the file that holds the server setting and removed from the other one;
every other key is kept. The result is validated like the Mender client reads it.
Exit status: 0 written, 1 refused (nothing written), 2 usage error.";

/// A usage error (exit 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\n\n{USAGE}", self.0)
    }
}

/// `None` = `--help`.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Option<Request>, UsageError> {
    let mut stage = None;
    let (mut old, mut new, mut main, mut fallback) = (None, None, None, None);
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let arg = arg
            .into_string()
            .map_err(|a| UsageError(format!("argument {a:?} is not UTF-8")))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(None);
        }
        let mut value = || -> Result<String, UsageError> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| UsageError(format!("{flag} needs a value"))),
            }
        };
        match flag.as_str() {
            "--stage" => {
                stage = Some(match value()?.as_str() {
                    "dual" => Stage::Dual,
                    "new-only" => Stage::NewOnly,
                    other => {
                        return Err(UsageError(format!(
                            "--stage `{other}`: use dual or new-only"
                        )))
                    }
                })
            }
            "--old-server" => old = Some(value()?),
            "--new-server" => new = Some(value()?),
            "--main" => main = Some(PathBuf::from(value()?)),
            "--fallback" => fallback = Some(PathBuf::from(value()?)),
            other => return Err(UsageError(format!("unknown argument `{other}`"))),
        }
    }
    let stage = stage.ok_or_else(|| UsageError("--stage is required".into()))?;
    let new_server = new.ok_or_else(|| UsageError("--new-server is required".into()))?;
    let main = main.ok_or_else(|| UsageError("--main is required".into()))?;
    if stage == Stage::Dual && old.is_none() {
        return Err(UsageError("--stage dual needs --old-server".into()));
    }
    Ok(Some(Request {
        stage,
        old_server: old,
        new_server,
        main,
        fallback,
    }))
}

/// The stage's files for `current`, or why not: stage 1 exactly as the host tools compute it
/// from a captured config, stage 2 exactly what the update module leaves on a device. The server arguments are parsed by `menderconf` (normalised,
/// path/query/credentials/port 0 refused).
pub fn render(request: &Request, current: &ConfigSet) -> Result<ConfigSet, ConfigError> {
    let new = ServerUrl::parse_in(&request.new_server, "--new-server")?;
    // new-only never reads the old server (its precondition and result name only the new one).
    let old = match &request.old_server {
        Some(old) => ServerUrl::parse_in(old, "--old-server")?,
        None => new.clone(),
    };
    match request.stage {
        // As the host tools do for a captured config: validate it as the client reads it, then
        // apply stage 1 (the plan also checks old != new).
        Stage::Dual => plan_migration(current.clone(), &new, Some(&old)).map(|plan| plan.stage1),
        // Stage 2 replaces every server key; the result is validated.
        Stage::NewOnly => StagePlan::new(Stage::NewOnly, Mode::Patch, old, new).apply(current),
    }
}

/// Loads the files, renders the stage and replaces the files (temp file + rename each; nothing
/// is written unless the whole result is valid).
pub fn run(request: &Request) -> Result<(), String> {
    let current =
        ConfigSet::load(&request.main, request.fallback.as_deref()).map_err(|e| e.to_string())?;
    let next = render(request, &current).map_err(|e| e.to_string())?;
    let targets = [
        (Some(request.main.as_path()), &current.main, &next.main),
        (
            request.fallback.as_deref(),
            &current.fallback,
            &next.fallback,
        ),
    ];
    for (path, before, after) in targets {
        let (Some(path), Some(after)) = (path, after) else {
            continue;
        };
        if before.as_ref().map(|b| &b.object) != Some(&after.object) {
            write_atomically(path, after)?;
        }
    }
    Ok(())
}

fn write_atomically(path: &Path, file: &ConfigFile) -> Result<(), String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file path", path.display()))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    std::fs::write(&tmp, file.to_bytes())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: cannot write: {e}", path.display())
        })
}
