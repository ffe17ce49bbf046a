//! BitBake recipes for the project's binary crates in cargo-bitbake's layout, generated offline
//! from `Cargo.lock`, `cargo metadata` and the license files.

use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

use crate::license::RecipeLicense;
use crate::lockfile::LockedCrate;
use crate::GenError;

/// Which BitBake releases the recipe text targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// cargo-bitbake's own output: `S = "${WORKDIR}/git"`. Works kirkstone..walnascar; wrynose's
    /// `do_qa_unpack` rejects that S.
    Classic,
    /// No `S` line and `;destsuffix=${BP}` on the project URL, so the checkout lands where the
    /// default `S` points on every release: works on scarthgap and wrynose alike.
    Unpackdir,
}

impl Variant {
    /// Directory name under `recipes/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Variant::Classic => "scarthgap",
            Variant::Unpackdir => "wrynose",
        }
    }
}

/// What a recipe needs to know about one workspace package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageInfo {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub homepage: Option<String>,
    pub repository: Option<String>,
    pub license: Option<String>,
    /// Has at least one `bin` target (only those get recipes: they ship something installable).
    pub has_bin: bool,
    /// Manifest directory relative to the project root, `/`-separated.
    pub rel_dir: String,
    /// The package's workspace root relative to the project root (`""` = the project root):
    /// the recipe's `CARGO_SRC_DIR`, where cargo finds the workspace's `Cargo.lock`.
    pub workspace_dir: String,
}

impl PackageInfo {
    /// The recipe's `HOMEPAGE`: `homepage`, else `repository`.
    pub fn homepage_url(&self) -> Result<&str, GenError> {
        self.url_of(&self.homepage, &self.repository, "HOMEPAGE")
    }

    /// Where BitBake fetches the sources from: `repository`, else `homepage`.
    pub fn repository_url(&self) -> Result<&str, GenError> {
        self.url_of(
            &self.repository,
            &self.homepage,
            "the git URL to fetch the sources from",
        )
    }

    fn url_of<'a>(
        &self,
        preferred: &'a Option<String>,
        fallback: &'a Option<String>,
        purpose: &str,
    ) -> Result<&'a str, GenError> {
        match preferred.as_deref().or(fallback.as_deref()) {
            Some(url) => Ok(url.trim()),
            None => Err(GenError::Invalid(format!(
                "{}/Cargo.toml (package {}): neither homepage nor repository is set, \
                 so there is no {purpose}",
                self.rel_dir, self.name
            ))),
        }
    }
}

/// `path` relative to `root`, `/`-separated.
fn relative(path: &Path, root: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    Some(
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
    )
}

#[derive(Deserialize)]
struct Metadata {
    packages: Vec<MetaPackage>,
    workspace_members: Vec<String>,
    workspace_root: String,
}

#[derive(Deserialize)]
struct MetaPackage {
    id: String,
    name: String,
    version: String,
    description: Option<String>,
    homepage: Option<String>,
    repository: Option<String>,
    license: Option<String>,
    manifest_path: String,
    targets: Vec<MetaTarget>,
}

#[derive(Deserialize)]
struct MetaTarget {
    kind: Vec<String>,
}

/// Workspace members from `cargo metadata --format-version 1` output (workspace inheritance
/// already resolved by cargo), sorted by name; `project_root` is what `rel_dir` is relative to
/// (the workspace root or a directory above it).
pub fn packages_from_metadata(
    json: &[u8],
    project_root: &Path,
) -> Result<Vec<PackageInfo>, GenError> {
    let meta: Metadata = serde_json::from_slice(json)
        .map_err(|e| GenError::Invalid(format!("cannot read `cargo metadata` output: {e}")))?;
    let root = project_root;
    let workspace_dir = relative(Path::new(&meta.workspace_root), root).ok_or_else(|| {
        GenError::Invalid(format!(
            "workspace {} is outside the project root {}",
            meta.workspace_root,
            root.display()
        ))
    })?;
    let mut out = Vec::new();
    for pkg in meta.packages {
        if !meta.workspace_members.contains(&pkg.id) {
            continue;
        }
        let rel_dir = Path::new(&pkg.manifest_path)
            .parent()
            .and_then(|d| relative(d, root))
            .ok_or_else(|| {
                GenError::Invalid(format!(
                    "{}: manifest is outside the project root {} (workspace {})",
                    pkg.manifest_path,
                    root.display(),
                    meta.workspace_root
                ))
            })?;
        out.push(PackageInfo {
            has_bin: pkg
                .targets
                .iter()
                .any(|t| t.kind.iter().any(|k| k == "bin")),
            name: pkg.name,
            version: pkg.version,
            description: pkg.description,
            homepage: pkg.homepage,
            repository: pkg.repository,
            license: pkg.license,
            rel_dir,
            workspace_dir: workspace_dir.clone(),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The packages that get a recipe: members under `crates/` that build a binary.
pub fn recipe_packages(all: &[PackageInfo]) -> Vec<&PackageInfo> {
    all.iter()
        .filter(|p| p.has_bin && p.rel_dir.starts_with("crates/"))
        .collect()
}

/// Where and at which commit BitBake fetches the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSource {
    /// BitBake form, e.g. `git://github.com/o/r.git;protocol=https;nobranch=1`.
    pub git_url: String,
    /// Full 40-hex commit.
    pub srcrev: String,
    /// The commit carries the release tag `v<version>`: no `PV:append` needed.
    pub tagged: bool,
}

/// `https://host/path[.git]` or `git@host:path[.git]` -> BitBake git URL (cargo-bitbake's rules,
/// without a `branch=`: the commit is pinned and `nobranch=1` lets it live on any branch).
pub fn bitbake_git_url(repository: &str) -> Result<String, GenError> {
    let repository = repository.trim().trim_end_matches('/');
    let (host_path, protocol) = if let Some(rest) = repository.strip_prefix("https://") {
        (rest.to_string(), "https")
    } else if let Some(rest) = repository.strip_prefix("http://") {
        (rest.to_string(), "http")
    } else if let Some(rest) = repository.strip_prefix("git@") {
        let (host, path) = rest.split_once(':').ok_or_else(|| {
            GenError::Invalid(format!("repository `{repository}`: expected git@host:path"))
        })?;
        (format!("git@{host}/{path}"), "ssh")
    } else {
        return Err(GenError::Invalid(format!(
            "repository `{repository}`: only https://, http:// and git@host:path URLs can become a BitBake git URL"
        )));
    };
    if !host_path.contains('/') || host_path.contains(';') {
        return Err(GenError::Invalid(format!(
            "repository `{repository}` has no path"
        )));
    }
    let with_git = if host_path.ends_with(".git") {
        host_path
    } else {
        format!("{host_path}.git")
    };
    Ok(format!("git://{with_git};protocol={protocol};nobranch=1"))
}

/// `{name}_{version}.bb`, cargo-bitbake's file name.
pub fn recipe_file_name(pkg: &PackageInfo) -> String {
    format!("{}_{}.bb", pkg.name, pkg.version)
}

/// The `SRCREV = "..."` value of an existing recipe, if any.
pub fn srcrev_of(recipe_text: &str) -> Option<String> {
    recipe_text.lines().find_map(|line| {
        let value = line.strip_prefix("SRCREV = \"")?.strip_suffix('"')?;
        Some(value.to_string())
    })
}

/// Render one recipe. `crates` must be sorted (see [`crate::lockfile::registry_crates`]).
pub fn render(
    pkg: &PackageInfo,
    source: &ProjectSource,
    crates: &[LockedCrate],
    license: &RecipeLicense,
    variant: Variant,
) -> Result<String, GenError> {
    if source.srcrev.len() != 40 || !source.srcrev.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(GenError::Invalid(format!(
            "SRCREV `{}` is not a full 40-hex commit id",
            source.srcrev
        )));
    }
    let summary = match &pkg.description {
        Some(d) => d.trim().replace('\n', " \\\n"),
        None => pkg.name.clone(),
    };
    let homepage = pkg.homepage_url()?;
    for (field, value) in [("description", summary.as_str()), ("homepage", homepage)] {
        if value.contains('"') {
            return Err(GenError::Invalid(format!(
                "package {}: {field} contains a double quote, which a BitBake string cannot hold here",
                pkg.name
            )));
        }
    }

    let mut r = String::new();
    r.push_str("# Auto-Generated by `cargo xtask recipes` (mender-server-migration) in cargo-bitbake's layout.\n");
    r.push_str("#\n");
    r.push_str("inherit cargo\n\n");
    r.push_str("# A versioned recipe, if one exists, should win over this git-based one:\n");
    r.push_str("# DEFAULT_PREFERENCE = \"-1\"\n\n");
    let _ = writeln!(
        r,
        "# {} is not fetched from crates.io but from the project's git repository:",
        pkg.name
    );
    let _ = writeln!(
        r,
        "# SRC_URI += \"crate://crates.io/{}/{}\"",
        pkg.name, pkg.version
    );
    let url = match variant {
        Variant::Classic => source.git_url.clone(),
        Variant::Unpackdir => format!("{};destsuffix=${{BP}}", source.git_url),
    };
    let _ = writeln!(r, "SRC_URI += \"{url}\"");
    let _ = writeln!(r, "SRCREV = \"{}\"", source.srcrev);
    if variant == Variant::Classic {
        r.push_str("S = \"${WORKDIR}/git\"\n");
    }
    let _ = writeln!(r, "CARGO_SRC_DIR = \"{}\"", pkg.workspace_dir);
    let _ = writeln!(r, "CARGO_BUILD_FLAGS += \"-p {}\"", pkg.name);
    if !source.tagged {
        let _ = writeln!(r, "PV:append = \".AUTOINC+{}\"", &source.srcrev[..10]);
    } else {
        r.push('\n');
    }
    r.push('\n');
    r.push_str(
        "# Every crates.io package of the workspace's Cargo.lock: cargo --frozen needs all of\n",
    );
    r.push_str("# them to resolve the workspace, even for one member.\n");
    r.push_str("SRC_URI += \" \\\n");
    for c in crates {
        let _ = writeln!(r, "    crate://crates.io/{}/{} \\", c.name, c.version);
    }
    r.push_str("\"\n\n");
    for c in crates {
        let _ = writeln!(
            r,
            "SRC_URI[{}-{}.sha256sum] = \"{}\"",
            c.name, c.version, c.checksum
        );
    }
    r.push('\n');
    r.push_str("# The license texts of everything the binary is built from (dev-dependencies\n");
    r.push_str("# excluded): the project's relative to S, each crate's where the crate fetcher\n");
    r.push_str("# unpacks it; a crate without a license file by its Cargo.toml `license` line.\n");
    r.push_str("LIC_FILES_CHKSUM = \" \\\n");
    for f in &license.files {
        let _ = writeln!(r, "    {} \\", f.entry());
    }
    r.push_str("\"\n\n");
    let _ = writeln!(r, "SUMMARY = \"{summary}\"");
    let _ = writeln!(r, "HOMEPAGE = \"{homepage}\"");
    let _ = writeln!(r, "LICENSE = \"{}\"", license.expression);
    r.push('\n');
    r.push_str("# Local additions, each included only if the file exists:\n");
    let _ = writeln!(r, "include {}-${{PV}}.inc", pkg.name);
    let _ = writeln!(r, "include {}.inc", pkg.name);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::LicenseFile;

    fn pkg() -> PackageInfo {
        PackageInfo {
            name: "server-migration".into(),
            version: "0.1.0".into(),
            description: Some("Module".into()),
            homepage: None,
            repository: Some("https://github.com/o/r".into()),
            license: Some("MIT".into()),
            has_bin: true,
            rel_dir: "crates/device/server-migration".into(),
            workspace_dir: "crates/device".into(),
        }
    }

    fn source() -> ProjectSource {
        ProjectSource {
            git_url: bitbake_git_url("https://github.com/o/r").unwrap(),
            srcrev: "0123456789abcdef0123456789abcdef01234567".into(),
            tagged: false,
        }
    }

    fn lic() -> RecipeLicense {
        RecipeLicense {
            expression: "MIT".into(),
            files: vec![LicenseFile {
                path: "LICENSE-MIT".into(),
                lines: None,
                md5: "d41d8cd98f00b204e9800998ecf8427e".into(),
            }],
        }
    }

    #[test]
    fn git_urls_follow_cargo_bitbake_rules() {
        assert_eq!(
            bitbake_git_url("https://github.com/o/r/").unwrap(),
            "git://github.com/o/r.git;protocol=https;nobranch=1"
        );
        assert_eq!(
            bitbake_git_url("git@github.com:o/r.git").unwrap(),
            "git://git@github.com/o/r.git;protocol=ssh;nobranch=1"
        );
        assert!(bitbake_git_url("ftp://x/y").is_err());
    }

    #[test]
    fn classic_and_unpackdir_differ_only_in_s_and_destsuffix() {
        let crates = vec![LockedCrate {
            name: "serde".into(),
            version: "1.0.0".into(),
            checksum: "a".repeat(64),
        }];
        let classic = render(&pkg(), &source(), &crates, &lic(), Variant::Classic).unwrap();
        let modern = render(&pkg(), &source(), &crates, &lic(), Variant::Unpackdir).unwrap();
        assert!(classic.contains("S = \"${WORKDIR}/git\"\n"));
        assert!(!modern.contains("S = "));
        assert!(modern.contains(";nobranch=1;destsuffix=${BP}\"\n"));
        assert!(classic.contains("    crate://crates.io/serde/1.0.0 \\\n"));
        assert!(classic.contains(&format!(
            "SRC_URI[serde-1.0.0.sha256sum] = \"{}\"",
            "a".repeat(64)
        )));
        assert!(classic.contains("PV:append = \".AUTOINC+0123456789\"\n"));
        assert!(classic.contains("HOMEPAGE = \"https://github.com/o/r\"\n"));
        assert_eq!(
            srcrev_of(&classic).as_deref(),
            Some(source().srcrev.as_str())
        );
    }

    #[test]
    fn short_srcrev_and_missing_homepage_are_refused() {
        let mut s = source();
        s.srcrev = "abc".into();
        assert!(render(&pkg(), &s, &[], &lic(), Variant::Classic).is_err());
        let mut p = pkg();
        p.repository = None;
        let err = render(&p, &source(), &[], &lic(), Variant::Classic).unwrap_err();
        assert!(err.to_string().contains("homepage"));
    }
}
