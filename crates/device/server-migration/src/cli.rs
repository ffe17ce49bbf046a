//! Command line: the Update Module protocol (`STATE FILE_TREE`) plus `recover`, `status`, `inventory` for humans and scripts.

use crate::device::{DeviceRoot, ROOT_ENV};
use crate::diag;
use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::inventory;
use crate::journal::Phase;
use crate::protocol::{self, Context};
use crate::restart::SystemRunner;
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

const USAGE: &str = "\
usage: server-migration [--root DIR] STATE FILE_TREE   Update Module v3 protocol (called by the Mender client)
       server-migration [--root DIR] recover           finish an interrupted install/rollback
       server-migration [--root DIR] status            show the journal of the last migration
       server-migration [--root DIR] inventory         print inventory attributes (key=value)
       server-migration --help | --version
--root DIR (or env SERVER_MIGRATION_ROOT) prefixes every device path; default /.
";

/// Entry point used by `main`; returns the process exit code.
pub fn main_with(args: Vec<OsString>) -> i32 {
    let mut root: Option<PathBuf> = std::env::var_os(ROOT_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    let mut rest: Vec<String> = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let Some(s) = a.to_str().map(str::to_string) else {
            diag::report(&format!("argument {a:?} is not UTF-8"));
            diag::plain(USAGE);
            return 2;
        };
        if rest.is_empty() && s == "--root" {
            match it.next() {
                Some(v) => root = Some(PathBuf::from(v)),
                None => {
                    diag::report("--root needs a directory");
                    diag::plain(USAGE);
                    return 2;
                }
            }
        } else if let (true, Some(v)) = (rest.is_empty(), s.strip_prefix("--root=")) {
            root = Some(PathBuf::from(v));
        } else {
            rest.push(s);
        }
    }
    let ctx = Context {
        root: DeviceRoot::new(root.unwrap_or_else(|| PathBuf::from("/"))),
        faults: Faults::from_env(),
        runner: Box::new(SystemRunner),
        diagnostics: Box::new(diag::report),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = match rest
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--help"] | ["-h"] | ["help"] => {
            let _ = out.write_all(USAGE.as_bytes());
            Ok(())
        }
        ["--version"] | ["-V"] => {
            let _ = writeln!(out, "server-migration {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        ["recover"] => recover(&ctx, &mut out),
        ["status"] => status(&ctx, &mut out),
        ["inventory"] => inventory::inventory(&ctx).and_then(|s| {
            out.write_all(s.as_bytes())
                .map_err(|e| Error::new(format!("cannot write: {e}")))
        }),
        [state, tree] => protocol::run_state(&ctx, state, &PathBuf::from(tree), &mut out),
        // The protocol: "print nothing and return zero if invoked with an unknown first
        // argument". States are CamelCase; our own commands are lower case.
        [first, ..] if is_unknown_state(first) => Ok(()),
        _ => {
            diag::report(&format!("unexpected arguments {rest:?}"));
            diag::plain(USAGE);
            return 2;
        }
    };
    let _ = out.flush();
    match result {
        Ok(()) => 0,
        Err(e) => {
            diag::report(&format!("error: {e}"));
            1
        }
    }
}

fn recover(ctx: &Context, out: &mut dyn Write) -> Result<()> {
    let store = ctx.store()?;
    let _lock = store.lock(protocol::LOCK_WAIT)?;
    let text = match store.recover()? {
        None => "no journal: no migration has run on this device\n".to_string(),
        Some(j) => format!(
            "journal phase {}{}: the config files are the {} versions\n",
            j.phase.name(),
            if j.finished { " (finished)" } else { "" },
            if j.phase.targets_new() { "new" } else { "old" }
        ),
    };
    out.write_all(text.as_bytes())
        .map_err(|e| Error::new(format!("cannot write: {e}")))
}

fn status(ctx: &Context, out: &mut dyn Write) -> Result<()> {
    let store = ctx.store()?;
    let mut text = format!("state dir: {}\n", store.state_dir.display());
    match store.load()? {
        None => text.push_str("no journal: no migration has run on this device\n"),
        Some(j) => {
            text.push_str(&j.to_string());
            text.push_str("on disk now:\n");
            for rec in &j.files {
                let what = if store.matches(rec, rec.new.as_ref())? {
                    "new version"
                } else if store.matches(rec, rec.old.as_ref())? {
                    "old version"
                } else {
                    "NEITHER old nor new (changed outside the module?)"
                };
                text.push_str(&format!("  {}: {what}\n", rec.device_path));
            }
            if matches!(
                j.phase,
                Phase::Prepared | Phase::Writing | Phase::RollingBack
            ) {
                text.push_str("interrupted: run `server-migration recover` (or let the next module call do it)\n");
            }
        }
    }
    out.write_all(text.as_bytes())
        .map_err(|e| Error::new(format!("cannot write: {e}")))
}

fn is_unknown_state(arg: &str) -> bool {
    arg.starts_with(|c: char| c.is_ascii_uppercase()) && !protocol::KNOWN_STATES.contains(&arg)
}
