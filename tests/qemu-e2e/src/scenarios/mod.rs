//! The migration scenarios, one file per group: the real mender-client 3.4 in a QEMU guest moved
//! from an old to a new mock server in two stages (the hosted-Mender tenant-migration procedure,
//! automated), plus the refusals and the fault runs (power cuts after the module wrote, and
//! power losses at each durable step inside its write sequence: `power_loss`). Each scenario
//! asserts from the servers' management API, their request logs and the guest's disk after
//! shutdown.

mod boot;
mod migration;
mod outage;
mod power_cut;
pub(crate) mod power_loss;
mod refusals;

use crate::artifacts::{ArtifactKind, Mode, Transport, Verify};
use crate::harness::Run;
use anyhow::Result;

/// One scenario: name, what it proves, and its body.
pub struct Scenario {
    pub name: &'static str,
    pub about: &'static str,
    /// The artifact set it deploys (built before the scenario's clock starts).
    pub(crate) needs: &'static [ArtifactKind],
    pub(crate) run: fn(&mut Run) -> Result<()>,
}

pub fn all() -> Vec<Scenario> {
    vec![
        Scenario { name: "boot", about: "guest boots, the real client authenticates on old and sends inventory", needs: &[],
            run: boot::boot },
        Scenario { name: "migration", about: "mender-migrate fleet run: module-install + stage 1 from old, preauthorize/reject, failover, stage 2 from new", needs: &[(Mode::Patch, Transport::Http, Verify::Off)],
            run: migration::migration_patch },
        Scenario { name: "new-down-stage1", about: "new server down during stage 1: device stays on old, migration continues later", needs: &[(Mode::Patch, Transport::Http, Verify::Off)],
            run: outage::new_down_stage1 },
        Scenario { name: "invalid-result", about: "replace-mode stage 1 whose result is invalid (fallback holds ServerURL): refused, rollback", needs: &[(Mode::Replace, Transport::Http, Verify::Off)],
            run: refusals::invalid_result },
        Scenario { name: "stage2-first", about: "stage 2 before stage 1: offered by the open-source server, refused by the client's depends check, config untouched", needs: &[(Mode::Patch, Transport::Http, Verify::Off)],
            run: refusals::stage2_first },
        Scenario { name: "power-cut", about: "QEMU killed in ArtifactInstall: config exactly old or exactly new, deployment ends, client runs", needs: &[(Mode::Patch, Transport::Http, Verify::Off)],
            run: power_cut::power_cut },
        Scenario { name: "power-cut-stage2", about: "QEMU killed in stage 2's ArtifactInstall (device on new): config exactly [old, new] or exactly new", needs: &[(Mode::Patch, Transport::Http, Verify::Off)],
            run: power_cut::power_cut_stage2 },
        Scenario { name: "migration-replace", about: "the full migration with --mode replace artifacts", needs: &[(Mode::Replace, Transport::Http, Verify::Off)],
            run: migration::migration_replace },
        Scenario { name: "migration-service-restart", about: "the full migration with --restart service (no reboot; the module restarts the client)", needs: &[(Mode::PatchServiceRestart, Transport::Http, Verify::Off)],
            run: migration::migration_service_restart },
        Scenario { name: "migration-https", about: "the full migration against HTTPS servers (ServerCertificate)", needs: &[(Mode::Patch, Transport::Https, Verify::Off)],
            run: migration::migration_https },
        Scenario { name: "migration-signed", about: "ArtifactVerifyKey on the device: unsigned stage 1 refused (config untouched), signed artifacts migrate it", needs: &[(Mode::Patch, Transport::Http, Verify::Signed), (Mode::Patch, Transport::Http, Verify::Unsigned)],
            run: migration::migration_signed },
    ]
}
