//! The inputs every host-side command shares: the captured config files and the two servers.

use anyhow::{bail, Context, Result};
use clap::Args;
use menderconf::{plan_migration, ConfigSet, MigrationPlan, ServerUrl};
use std::path::PathBuf;

/// A captured `mender.conf` (and fallback) plus the servers to migrate between.
#[derive(Debug, Clone, Args)]
pub struct MigrationInputs {
    /// The device's captured main config (`/etc/mender/mender.conf`).
    #[arg(long, value_name = "CAPTURED.conf")]
    pub config: PathBuf,
    /// The device's captured fallback config (`/var/lib/mender/mender.conf`), if it has one.
    #[arg(long, value_name = "CAPTURED-FALLBACK.conf")]
    pub fallback_config: Option<PathBuf>,
    /// The server to move to, `https://host[:port]`.
    #[arg(long, value_name = "URL")]
    pub new_server: String,
    /// The server to move from; defaults to the one in the captured config.
    #[arg(long, value_name = "URL")]
    pub old_server: Option<String>,
}

impl MigrationInputs {
    /// Loads, validates and plans both stages; errors name the file and the problem.
    pub fn plan(&self) -> Result<MigrationPlan> {
        for path in std::iter::once(&self.config).chain(self.fallback_config.iter()) {
            if path.is_dir() {
                bail!(
                    "{}: is a directory; give the captured mender.conf file itself",
                    path.display()
                );
            }
            if !path.exists() {
                bail!(
                    "{}: no such file (give the captured mender.conf)",
                    path.display()
                );
            }
        }
        let captured = ConfigSet::load(&self.config, self.fallback_config.as_deref())?;
        let new = ServerUrl::parse(&self.new_server).context("--new-server")?;
        let old = self
            .old_server
            .as_deref()
            .map(ServerUrl::parse)
            .transpose()
            .context("--old-server")?;
        Ok(plan_migration(captured, &new, old.as_ref())?)
    }
}
