//! `Cargo.lock` reading: the crates.io packages (name, version, sha256) a recipe must fetch.

use std::path::Path;

use serde::Deserialize;

use crate::GenError;

/// The registry every `crate://crates.io/...` line refers to.
pub const CRATES_IO_SOURCE: &str = "registry+https://github.com/rust-lang/crates.io-index";

/// One registry package from `Cargo.lock`; `checksum` is the sha256 of the `.crate` file, which is
/// exactly what BitBake's crate fetcher verifies (`SRC_URI[name-version.sha256sum]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LockedCrate {
    pub name: String,
    pub version: String,
    pub checksum: String,
}

#[derive(Deserialize)]
struct RawLock {
    version: Option<u32>,
    #[serde(default)]
    package: Vec<RawPackage>,
}

#[derive(Deserialize)]
struct RawPackage {
    name: String,
    version: String,
    source: Option<String>,
    checksum: Option<String>,
}

/// All crates.io packages of a lock file, sorted by name and version.
///
/// This is the whole lock on purpose: cargo-bitbake resolves the entire workspace (all members,
/// all features, dev-dependencies included, every target platform), and `cargo build --frozen`
/// against BitBake's vendored sources needs every locked package to resolve the workspace, even
/// when building one member with `-p`.
pub fn registry_crates(origin: &Path, text: &str) -> Result<Vec<LockedCrate>, GenError> {
    let lock: RawLock = toml::from_str(text)
        .map_err(|e| GenError::bad_input(origin, format!("not a Cargo.lock: {e}")))?;
    match lock.version {
        Some(3) | Some(4) => {}
        Some(v) => {
            return Err(GenError::bad_input(
                origin,
                format!("lock file version {v} is not supported (need 3 or 4, which carry per-package checksums)"),
            ))
        }
        None => {
            return Err(GenError::bad_input(
                origin,
                "lock file has no `version` (version 1/2 keep checksums elsewhere); regenerate it with a current cargo",
            ))
        }
    }
    let mut crates = Vec::new();
    for pkg in lock.package {
        let Some(source) = pkg.source else {
            continue; // path package: part of the project's own git checkout
        };
        if source != CRATES_IO_SOURCE {
            return Err(GenError::bad_input(
                origin,
                format!(
                    "package {} {} comes from `{source}`; only crates.io and path dependencies can be turned into recipe lines",
                    pkg.name, pkg.version
                ),
            ));
        }
        let checksum = pkg.checksum.ok_or_else(|| {
            GenError::bad_input(
                origin,
                format!("package {} {} has no checksum", pkg.name, pkg.version),
            )
        })?;
        if checksum.len() != 64 || !checksum.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(GenError::bad_input(
                origin,
                format!(
                    "package {} {} has a malformed checksum `{checksum}`",
                    pkg.name, pkg.version
                ),
            ));
        }
        crates.push(LockedCrate {
            name: pkg.name,
            version: pkg.version,
            checksum,
        });
    }
    crates.sort();
    Ok(crates)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUM: &str = "824a212faf96e9acacdbd09febd34438f8f711fb84e09a8916013cd7815ca28d";

    #[test]
    fn keeps_registry_packages_sorted_and_skips_path_ones() {
        let text = format!(
            "version = 3\n\n[[package]]\nname = \"zeta\"\nversion = \"1.0.0\"\nsource = \"{CRATES_IO_SOURCE}\"\nchecksum = \"{SUM}\"\n\n\
             [[package]]\nname = \"local\"\nversion = \"0.1.0\"\n\n\
             [[package]]\nname = \"alpha\"\nversion = \"0.2.0\"\nsource = \"{CRATES_IO_SOURCE}\"\nchecksum = \"{SUM}\"\n"
        );
        let crates = registry_crates(Path::new("Cargo.lock"), &text).unwrap();
        let names: Vec<_> = crates.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);
    }

    #[test]
    fn rejects_git_sources_and_missing_checksums() {
        let git = "version = 3\n[[package]]\nname = \"g\"\nversion = \"1.0.0\"\nsource = \"git+https://example.com/g#abc\"\n";
        let err = registry_crates(Path::new("L"), git)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("L: ") && err.contains("git+https"), "{err}");
        let nosum = format!("version = 4\n[[package]]\nname = \"n\"\nversion = \"1.0.0\"\nsource = \"{CRATES_IO_SOURCE}\"\n");
        let err = registry_crates(Path::new("L"), &nosum)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no checksum"), "{err}");
        let old = "[[package]]\nname = \"n\"\nversion = \"1.0.0\"\n";
        assert!(registry_crates(Path::new("L"), old).is_err());
    }
}
