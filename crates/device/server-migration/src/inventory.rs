//! `server-migration inventory`: `key=value` lines for the Mender inventory, read-only.
//!
//! - `server_migration_stage` = `dual` when the client's servers are `[old, new]` of the last
//!   migration, `new-only` when they are `[new]`, else `none` (also when no migration ever ran).
//!   Derived from the config on disk, so a manual edit or a rollback shows up as it is.
//! - `server_migration_servers` = one line per server the client will try, in order (the client
//!   turns repeated keys into a list).
//! - `server_migration_phase` = phase of the last migration's journal, when there is one.
//! - `server_migration_error` = why the config or journal could not be read, when that happens.

use crate::atomic::{self, Ownership};
use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::payload;
use crate::protocol::Context;
use crate::transaction::Store;

/// The inventory lines, each ending in `\n`.
pub fn inventory(ctx: &Context) -> Result<String> {
    let mut out = String::new();
    let mut errors = Vec::new();
    let store: Store<'_> = ctx.store()?;
    let journal = match store.load() {
        Ok(j) => j,
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    };
    let rules = crate::client::DeviceClient::detect(&ctx.root).generation();
    let servers: Vec<String> = match payload::read_device(&ctx.root, rules) {
        Ok((_, set)) => set
            .servers()
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        Err(e) => {
            errors.push(e.to_string());
            Vec::new()
        }
    };
    let stage = match &journal {
        Some(j)
            if servers.len() == 2 && servers[0] == j.old_server && servers[1] == j.new_server =>
        {
            "dual"
        }
        Some(j) if servers.len() == 1 && servers[0] == j.new_server => "new-only",
        _ => "none",
    };
    out.push_str(&format!("server_migration_stage={stage}\n"));
    for s in &servers {
        out.push_str(&format!("server_migration_servers={s}\n"));
    }
    if let Some(j) = &journal {
        out.push_str(&format!("server_migration_phase={}\n", j.phase.name()));
    }
    for e in errors {
        out.push_str(&format!(
            "server_migration_error={}\n",
            e.replace('\n', " ")
        ));
    }
    Ok(out)
}

/// Where the client runs inventory scripts from (fixed in the clients).
pub const INVENTORY_SCRIPT_PATH: &str =
    "/usr/share/mender/inventory/mender-inventory-server-migration";

/// The script, shipped inside the binary: the module-install artifact (stock `single-file`
/// module) can carry only one file, so the module installs its own inventory script.
pub const INVENTORY_SCRIPT: &str = include_str!("../support/mender-inventory-server-migration");

/// Installs or refreshes the inventory script (atomic write, 0755). Returns whether it wrote.
/// The directory must exist (the client package ships it); nothing is created elsewhere.
pub fn ensure_inventory_script(ctx: &Context) -> Result<bool> {
    let path = ctx
        .root
        .host_path(std::path::Path::new(INVENTORY_SCRIPT_PATH));
    if std::fs::read(&path).ok().as_deref() == Some(INVENTORY_SCRIPT.as_bytes()) {
        return Ok(false);
    }
    if !path.parent().is_some_and(|d| d.is_dir()) {
        return Err(Error::new(format!(
            "{}: the inventory directory does not exist",
            path.parent().unwrap_or(&path).display()
        )));
    }
    let owner = Ownership {
        mode: 0o755,
        ..Ownership::new_file()
    };
    atomic::write_atomic(&Faults::none(), &path, INVENTORY_SCRIPT.as_bytes(), owner)
        .map_err(|e| Error::new(format!("installing {}: {e}", path.display())))?;
    Ok(true)
}
