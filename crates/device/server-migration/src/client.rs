//! Which Mender client runs on the device, found in its file system, and whose rules apply.
//!
//! The 4.x/5.x (C++) client installs `mender-update` (and `mender-auth`) and runs as the units
//! `mender-authd` + `mender-updated`; the 3.x (Go) client is `/usr/bin/mender`, unit
//! `mender-client`. The module looks for `mender-update` in the usual program directories and for
//! the `mender-updated.service` unit, below the device root (`--root` in tests), symlinks
//! resolved inside it. 4.x and 5.x share the config rules, so they are one case here.

use crate::device::DeviceRoot;
use crate::error::{Error, Result};
use menderconf::ClientGeneration;
use std::fmt;
use std::path::Path;

/// Where a package or image puts the 4.x/5.x client's `mender-update`.
pub const PROGRAM_DIRS: [&str; 5] = ["/usr/bin", "/usr/local/bin", "/bin", "/usr/sbin", "/sbin"];
/// Where systemd units are installed.
pub const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// The client generation found on the device, with what showed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceClient {
    /// `true`: 4.x/5.x (C++); `false`: 3.x (Go).
    pub cpp: bool,
    /// The file that showed a 4.x/5.x client, or what was looked for in vain.
    pub evidence: String,
}

impl DeviceClient {
    /// Looks for the 4.x/5.x client's program, then its unit; neither means 3.x.
    pub fn detect(root: &DeviceRoot) -> DeviceClient {
        let candidates = PROGRAM_DIRS
            .iter()
            .map(|d| format!("{d}/mender-update"))
            .chain(
                UNIT_DIRS
                    .iter()
                    .map(|d| format!("{d}/mender-updated.service")),
            );
        for path in candidates {
            let found = root
                .resolve_host(Path::new(&path))
                .map(|host| host.is_file())
                .unwrap_or(false);
            if found {
                return DeviceClient {
                    cpp: true,
                    evidence: format!("found {path}"),
                };
            }
        }
        DeviceClient {
            cpp: false,
            evidence: format!(
                "no mender-update in {} and no mender-updated.service",
                PROGRAM_DIRS.join(", ")
            ),
        }
    }

    /// The rules of this client (4.x and 5.x share theirs).
    pub fn generation(&self) -> ClientGeneration {
        if self.cpp {
            ClientGeneration::V5
        } else {
            ClientGeneration::V3
        }
    }

    /// The rules to apply for a plan built with `--client planned`: the plan's, unless it is
    /// `any` (then this device's); an error, nothing changed, when the plan was made for the
    /// other generation.
    pub fn rules_for(&self, planned: ClientGeneration) -> Result<ClientGeneration> {
        if planned.contradicts(self.generation()) {
            return Err(Error::new(format!(
                "this stage artifact was built for client {planned} (--client {}) but this device runs client {self} ({}); nothing was changed: rebuild the artifacts with --client {} or --client any",
                planned.as_str(),
                self.evidence,
                if self.cpp { "5" } else { "3" }
            )));
        }
        Ok(if planned.is_any() {
            self.generation()
        } else {
            planned
        })
    }

    /// The systemd units to restart so the client reads the new config: on 4.x/5.x
    /// `mender-authd` (the only one that reads `Servers`) and `mender-updated`.
    pub fn units(&self) -> &'static [&'static str] {
        if self.cpp {
            &["mender-authd", "mender-updated"]
        } else {
            &["mender-client"]
        }
    }
}

impl fmt::Display for DeviceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.cpp { "4.x/5.x" } else { "3.x" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn detects_the_cpp_client_by_program_or_unit_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = DeviceRoot::new(d.path());
        let client = DeviceClient::detect(&root);
        assert!(!client.cpp, "{client:?}");
        assert_eq!(client.generation(), ClientGeneration::V3);
        // Merged /usr: /bin -> usr/bin, resolved inside the root, not on the host.
        std::fs::create_dir_all(d.path().join("usr/bin")).unwrap();
        symlink("usr/bin", d.path().join("bin")).unwrap();
        std::fs::write(d.path().join("usr/bin/mender"), "").unwrap();
        assert!(!DeviceClient::detect(&root).cpp);
        std::fs::write(d.path().join("usr/bin/mender-update"), "").unwrap();
        let client = DeviceClient::detect(&root);
        assert!(
            client.cpp && client.evidence.contains("/usr/bin/mender-update"),
            "{client:?}"
        );

        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("lib/systemd/system")).unwrap();
        std::fs::write(
            d.path().join("lib/systemd/system/mender-updated.service"),
            "",
        )
        .unwrap();
        assert!(DeviceClient::detect(&DeviceRoot::new(d.path())).cpp);
    }

    #[test]
    fn a_plan_for_the_other_generation_is_refused() {
        use ClientGeneration::*;
        let go = DeviceClient {
            cpp: false,
            evidence: "none".into(),
        };
        let cpp = DeviceClient {
            cpp: true,
            evidence: "found /usr/bin/mender-update".into(),
        };
        assert_eq!(go.rules_for(Any).unwrap(), V3);
        assert_eq!(go.rules_for(V3).unwrap(), V3);
        assert_eq!(cpp.rules_for(Any).unwrap(), V5);
        assert_eq!(cpp.rules_for(V4).unwrap(), V4);
        let e = cpp.rules_for(V3).unwrap_err().to_string();
        assert!(
            e.contains("--client 3") && e.contains("4.x/5.x") && e.contains("nothing was changed"),
            "{e}"
        );
        let e = go.rules_for(V5).unwrap_err().to_string();
        assert!(
            e.contains("--client 5") && e.contains("runs client 3.x"),
            "{e}"
        );
        assert_eq!(go.units(), ["mender-client"]);
        assert_eq!(cpp.units(), ["mender-authd", "mender-updated"]);
    }
}
