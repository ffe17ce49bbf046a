//! `server-migration inventory`: `key=value` lines for the Mender inventory, read-only.
//!
//! - `server_migration_stage` = `dual` when the client's servers are `[old, new]` of the last
//!   migration, `new-only` when they are `[new]`, else `none` (also when no migration ever ran).
//!   Derived from the config on disk, so a manual edit or a rollback shows up as it is.
//! - `server_migration_servers` = one line per server the client will try, in order (the client
//!   turns repeated keys into a list).
//! - `server_migration_phase` = phase of the last migration's journal, when there is one.
//! - `server_migration_error` = why the config or journal could not be read, when that happens.

use crate::error::Result;
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
    let servers: Vec<String> = match payload::read_device(&ctx.root) {
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
