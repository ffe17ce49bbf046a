//! The inputs every host-side command shares: the captured config files and the two servers.

use anyhow::{bail, Context, Result};
use clap::builder::TypedValueParser as _;
use clap::Args;
use menderconf::{
    plan_migration_with, ClientGeneration, ConfigSet, MigrationPlan, PlanOptions, ServerUrl,
    TenantToken,
};
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
    /// The server to move from; defaults to the first one in the captured config. Naming it
    /// also decides that other servers the config lists are dropped (unless --keep-server).
    #[arg(long, value_name = "URL")]
    pub old_server: Option<String>,
    /// A further server of the captured `Servers` list to keep, after the new one (repeat).
    #[arg(long = "keep-server", value_name = "URL")]
    pub keep_servers: Vec<String>,
    /// File holding the new server's tenant token (hosted or Enterprise): both stages set it,
    /// replacing the devices' token. Read from a file, never from the command line; masked in
    /// everything printed.
    #[arg(long, value_name = "FILE")]
    pub new_tenant_token_file: Option<PathBuf>,
}

/// `--client`: which Mender client generation the devices run, and so whose rules apply.
#[derive(Debug, Clone, Copy, Args)]
pub struct ClientChoice {
    /// The devices' Mender client: 3 (the Go client, `mender`), 4 or 5 (the C++ client,
    /// `mender-update` + `mender-auth`), or any (default: a mixed or unknown fleet). 3: a config
    /// starting with a UTF-8 byte order mark is refused (3.x exits 1 on it); 4/5: a BOM is read
    /// and a wrongly typed setting is only a warning (those clients ignore it); any: the
    /// strictest common rules, except that a BOM is read. No stage is ever written with a BOM
    /// or a blank `ServerURL`. The stage artifacts carry the choice: the module refuses a
    /// device running the other generation, and for `any` applies the rules of the client it
    /// finds.
    #[arg(
        long = "client",
        value_name = "3|4|5|any",
        default_value = "any",
        value_parser = clap::builder::PossibleValuesParser::new(["3", "4", "5", "any"])
            .map(|v| ClientGeneration::parse(&v).expect("only listed values")),
    )]
    pub client: ClientGeneration,
}

impl MigrationInputs {
    /// Loads, validates and plans both stages with the rules every client shares.
    pub fn plan(&self) -> Result<MigrationPlan> {
        self.plan_for(ClientGeneration::Any)
    }

    /// Loads, validates and plans both stages with `client`'s rules; errors name the file and
    /// the problem.
    pub fn plan_for(&self, client: ClientGeneration) -> Result<MigrationPlan> {
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
        let (captured, load_warnings) =
            ConfigSet::load_for(&self.config, self.fallback_config.as_deref(), client)?;
        let new = ServerUrl::parse(&self.new_server).context("--new-server")?;
        let old = self
            .old_server
            .as_deref()
            .map(ServerUrl::parse)
            .transpose()
            .context("--old-server")?;
        let keep_servers = self
            .keep_servers
            .iter()
            .map(|k| ServerUrl::parse(k).context("--keep-server"))
            .collect::<Result<Vec<_>>>()?;
        let new_tenant_token = match &self.new_tenant_token_file {
            None => None,
            Some(path) => {
                if path.is_dir() {
                    bail!(
                        "{}: is a directory; give the file holding the new tenant token",
                        path.display()
                    );
                }
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("{}: cannot read the new tenant token", path.display())
                })?;
                Some(
                    TenantToken::parse(&text)
                        .with_context(|| format!("{} (--new-tenant-token-file)", path.display()))?,
                )
            }
        };
        let options = PlanOptions {
            new_tenant_token,
            keep_servers,
            client,
        };
        let mut plan = plan_migration_with(captured, &new, old.as_ref(), options)?;
        plan.warnings.splice(0..0, load_warnings);
        Ok(plan)
    }
}
