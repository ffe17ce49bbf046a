//! The config engine: parse `mender.conf`, validate it exactly as the real clients do, and render
//! the two migration stages.
//!
//! Every rule about what a valid `mender.conf` is lives in this crate; the CLI, the generators and
//! the on-device update module call it and never re-implement a rule. The rules were measured on
//! the Debian `mender-client` 3.4.0 (Go) and the 5.1.0 C++ client (see `ARCHITECTURE.md`).

mod client;
mod error;
mod file;
mod keys;
mod plan;
mod set;
mod token;
mod url;

pub use client::ClientGeneration;
pub use error::{ConfigError, Warning};
pub use file::{masked, ConfigFile};
pub use plan::{
    plan_migration, plan_migration_with, MigrationPlan, Mode, PlanOptions, Restart, Stage,
    StagePlan,
};
pub use set::ConfigSet;
pub use token::TenantToken;
pub use url::ServerUrl;

/// Where the client reads its main config.
pub const MAIN_CONFIG_PATH: &str = "/etc/mender/mender.conf";
/// The fallback config, decoded first and overridden key by key by the main one.
pub const FALLBACK_CONFIG_PATH: &str = "/var/lib/mender/mender.conf";
/// The payload file of a stage artifact that holds its [`StagePlan`].
pub const PLAN_FILE_NAME: &str = "plan.json";
/// The update module's name: payload type of the stage artifacts and module file name.
pub const MODULE_NAME: &str = "server-migration";
/// Provides key set by stage 1 (`dual`) and depended on by stage 2.
pub const STAGE_PROVIDES_KEY: &str = "server-migration.stage";
