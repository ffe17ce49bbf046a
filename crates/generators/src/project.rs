//! This repository's recipes: gathers the inputs (`cargo metadata`, `Cargo.lock`, license files,
//! git) and lays out every generated `.bb` file, for `cargo xtask recipes` and its freshness test.
//!
//! SRCREV policy: a recipe pins the commit it was generated from (default `HEAD`), and that
//! commit must hold the same `Cargo.lock` and license files as the working tree. So the recipe builds what it describes, is reproducible
//! (no `${AUTOREV}`, no floating tag) and can be re-derived: `--check` takes the SRCREV from the
//! checked-in file, regenerates, compares, and checks that the inputs still equal those at
//! SRCREV. A recipe cannot name the commit that contains it, so after changing dependencies:
//! commit, run `cargo xtask recipes`, commit the recipes.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::depgraph;
use crate::license::{self, RecipeLicense};
use crate::lockfile::{self, LockedCrate};
use crate::recipe::{self, PackageInfo, ProjectSource, Variant};
use crate::tree::FileTree;
use crate::GenError;

/// Directory (relative to the project root) of the Update Module recipe in the layer.
pub const LAYER_RECIPE_DIR: &str = "meta-migration/recipes-mender/server-migration";
/// The Update Module's crate.
pub const MODULE_CRATE: &str = "server-migration";
/// The native tool the layer's mender bbappend runs to make the image's configs a stage.
pub const STAGE_TOOL_CRATE: &str = "migration-stage-config";
/// The crates whose recipes also go into the layer (its `LAYER_RECIPE_DIR`).
pub const LAYER_CRATES: [&str; 2] = [MODULE_CRATE, STAGE_TOOL_CRATE];
/// The project's Cargo workspaces, relative to the project root: the host tools (`""`) and the
/// device side (`crates/device`, its own `Cargo.lock`). A recipe lists its own workspace's lock.
pub const WORKSPACES: [&str; 2] = ["", "crates/device"];

/// One Cargo workspace's recipe inputs.
pub struct WorkspaceRecipes {
    /// Relative to the project root (`""` = the root); the recipes' `CARGO_SRC_DIR`.
    pub dir: String,
    /// Members under `crates/` with a binary target, sorted by name.
    pub packages: Vec<PackageInfo>,
    /// One per package, same order.
    pub licenses: Vec<RecipeLicense>,
    /// Every crates.io package of this workspace's `Cargo.lock`.
    pub crates: Vec<LockedCrate>,
}

impl WorkspaceRecipes {
    /// `Cargo.lock`, relative to the project root.
    pub fn lock_path(&self) -> String {
        if self.dir.is_empty() {
            "Cargo.lock".to_string()
        } else {
            format!("{}/Cargo.lock", self.dir)
        }
    }

    fn load(root: &Path, dir: &str) -> Result<WorkspaceRecipes, GenError> {
        let ws_root = root.join(dir);
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // The full resolve (every platform's packages, so cargo downloads any it lacks): the
        // license files of every crate a binary is built from are read from the unpacked crates.
        let out = Command::new(&cargo)
            .current_dir(&ws_root)
            .args(["metadata", "--format-version", "1", "--locked"])
            .output()
            .map_err(|e| GenError::io(&cargo, e))?;
        if !out.status.success() {
            return Err(GenError::Invalid(format!(
                "`cargo metadata --locked` failed in {} (it needs every locked crate unpacked: run `cargo fetch --locked` there with network access): {}",
                ws_root.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let all = recipe::packages_from_metadata(&out.stdout, root)?;
        let packages: Vec<PackageInfo> =
            recipe::recipe_packages(&all).into_iter().cloned().collect();
        let lock_path = ws_root.join("Cargo.lock");
        let lock_text =
            std::fs::read_to_string(&lock_path).map_err(|e| GenError::io(&lock_path, e))?;
        let crates = lockfile::registry_crates(&lock_path, &lock_text)?;
        let mut licenses = Vec::new();
        for p in &packages {
            let closure = depgraph::shipped_closure(&out.stdout, &p.name)?;
            licenses.push(graph_license(root, &closure)?);
        }
        Ok(WorkspaceRecipes {
            dir: dir.to_string(),
            packages,
            licenses,
            crates,
        })
    }
}

/// Where BitBake's crate fetcher unpacks `name-version` (cargo_common.bbclass points cargo's
/// vendored source at this directory, so it is right on every release, whatever the release
/// calls its unpack directory).
pub const VENDORED_CRATES: &str = "${CARGO_VENDORING_DIRECTORY}";

/// A binary's license from everything it is built from: all of the packages' licenses apply
/// (each one's choices kept), and every license text is checksummed, the project's own files
/// relative to `S`, each crate's in its vendored directory.
pub fn graph_license(
    root: &Path,
    closure: &[depgraph::GraphPackage],
) -> Result<RecipeLicense, GenError> {
    let mut parts = Vec::new();
    let mut files: Vec<license::LicenseFile> = Vec::new();
    for p in closure {
        let spdx = p.license.as_deref().ok_or_else(|| {
            GenError::Invalid(format!(
                "{} {} ({}): no SPDX `license` in its Cargo.toml; a recipe needs one",
                p.name,
                p.version,
                p.dir.display()
            ))
        })?;
        parts.push(license::License::parse(spdx)?);
        let found = if p.registry {
            license::crate_license_files(
                &p.dir,
                &format!("{VENDORED_CRATES}/{}-{}", p.name, p.version),
            )?
        } else {
            license::resolve(spdx, root)?.files
        };
        for f in found {
            if !files.contains(&f) {
                files.push(f);
            }
        }
    }
    Ok(RecipeLicense {
        expression: license::License::all_of(parts).to_string(),
        files,
    })
}

/// Everything the recipes are rendered from, read from the working tree.
pub struct RecipeInputs {
    pub root: PathBuf,
    /// One per entry of [`WORKSPACES`], same order.
    pub workspaces: Vec<WorkspaceRecipes>,
    pub git_url: String,
}

impl RecipeInputs {
    /// Reads both workspaces under `root` (runs `cargo metadata --locked` in each).
    pub fn load(root: &Path) -> Result<RecipeInputs, GenError> {
        let workspaces = WORKSPACES
            .iter()
            .map(|dir| WorkspaceRecipes::load(root, dir))
            .collect::<Result<Vec<_>, _>>()?;
        let first = workspaces
            .iter()
            .flat_map(|w| &w.packages)
            .next()
            .ok_or_else(|| {
                GenError::Invalid("no workspace member under crates/ has a binary target".into())
            })?;
        Ok(RecipeInputs {
            root: root.to_path_buf(),
            git_url: recipe::bitbake_git_url(first.repository_url()?)?,
            workspaces,
        })
    }

    /// Every package that gets a recipe, with its license and its workspace's crates.
    pub fn recipes(&self) -> impl Iterator<Item = (&PackageInfo, &RecipeLicense, &[LockedCrate])> {
        self.workspaces.iter().flat_map(|w| {
            w.packages
                .iter()
                .zip(&w.licenses)
                .map(move |(p, l)| (p, l, w.crates.as_slice()))
        })
    }

    /// The workspace that holds the Update Module.
    pub fn module_workspace(&self) -> Result<&WorkspaceRecipes, GenError> {
        self.workspaces
            .iter()
            .find(|w| w.packages.iter().any(|p| p.name == MODULE_CRATE))
            .ok_or_else(|| {
                GenError::Invalid(format!("no workspace has a `{MODULE_CRATE}` binary crate"))
            })
    }

    /// Files that must be identical at SRCREV for the recipe to build what it lists: the locks
    /// (crate lines and checksums; cargo builds `--frozen` against them) and the project's
    /// license files (md5s). Manifest metadata (SUMMARY, LICENSE, version) is compared through
    /// the rendered text instead, so a manifest edit that changes neither a lock nor the recipe
    /// text does not force a new SRCREV.
    pub fn input_paths(&self) -> Vec<String> {
        let mut paths = Vec::new();
        for w in &self.workspaces {
            paths.push(w.lock_path());
            for l in &w.licenses {
                // The project's own files; crates' files are pinned by the lock's checksums.
                paths.extend(
                    l.files
                        .iter()
                        .filter(|f| !f.path.starts_with("${"))
                        .map(|f| f.path.clone()),
                );
            }
        }
        paths.sort();
        paths.dedup();
        paths
    }

    /// The generated recipes, grouped by output directory (relative to the root).
    pub fn render(&self, source: &ProjectSource) -> Result<Vec<(String, FileTree)>, GenError> {
        let mut dirs = Vec::new();
        for variant in [Variant::Classic, Variant::Unpackdir] {
            let mut tree = FileTree::new();
            for (p, l, crates) in self.recipes() {
                tree.add(
                    recipe::recipe_file_name(p),
                    recipe::render(p, source, crates, l, variant)?,
                    0o644,
                );
            }
            dirs.push((format!("recipes/{}", variant.dir_name()), tree));
        }
        let mut layer = FileTree::new();
        for name in LAYER_CRATES {
            let (p, license, crates) =
                self.recipes()
                    .find(|(p, _, _)| p.name == name)
                    .ok_or_else(|| {
                        GenError::Invalid(format!("no workspace has a `{name}` binary crate"))
                    })?;
            layer.add(
                recipe::recipe_file_name(p),
                recipe::render(p, source, crates, license, Variant::Unpackdir)?,
                0o644,
            );
        }
        dirs.push((LAYER_RECIPE_DIR.to_string(), layer));
        Ok(dirs)
    }
}

/// In the generated directories only `.bb` files are ours; READMEs and the hand-written `.inc`
/// beside the layer recipe are not.
pub fn is_not_generated(rel: &str) -> bool {
    !rel.ends_with(".bb")
}

/// git helpers (the recipes pin commits).
pub mod git {
    use super::*;

    fn git(root: &Path, args: &[&str]) -> Result<Vec<u8>, GenError> {
        let out = Command::new("git")
            .current_dir(root)
            .args(args)
            .output()
            .map_err(|e| GenError::io("git", e))?;
        if !out.status.success() {
            return Err(GenError::Invalid(format!(
                "`git {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(out.stdout)
    }

    /// Full commit id of `rev`.
    pub fn resolve_commit(root: &Path, rev: &str) -> Result<String, GenError> {
        let spec = format!("{rev}^{{commit}}");
        let out = git(root, &["rev-parse", "--verify", "--quiet", &spec]).map_err(|_| {
            GenError::Invalid(format!(
                "`{rev}` is not a commit in {} (a shallow clone may lack it: fetch the full history)",
                root.display()
            ))
        })?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    /// Whether the tag `v<version>` points at `commit`.
    pub fn has_release_tag(root: &Path, commit: &str, version: &str) -> Result<bool, GenError> {
        let out = git(root, &["tag", "--points-at", commit])?;
        let tag = format!("v{version}");
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .any(|l| l.trim() == tag))
    }

    /// Paths whose content at `commit` differs from the working tree.
    pub fn changed_since(
        root: &Path,
        commit: &str,
        paths: &[String],
    ) -> Result<Vec<String>, GenError> {
        let mut changed = Vec::new();
        for path in paths {
            let at_commit = git(root, &["show", &format!("{commit}:{path}")]).ok();
            let now = std::fs::read(root.join(path)).ok();
            if at_commit != now {
                changed.push(path.clone());
            }
        }
        Ok(changed)
    }

    /// The source description for a pinned commit.
    pub fn project_source(
        root: &Path,
        inputs: &RecipeInputs,
        commit: &str,
    ) -> Result<ProjectSource, GenError> {
        let version = inputs
            .recipes()
            .next()
            .map(|(p, _, _)| p.version.as_str())
            .unwrap_or_default();
        Ok(ProjectSource {
            git_url: inputs.git_url.clone(),
            srcrev: commit.to_string(),
            tagged: has_release_tag(root, commit, version)?,
        })
    }
}

/// `cargo xtask recipes --check`: every problem with the checked-in recipes, one line each
/// naming the file (empty = fresh). Needs the git history that holds the recipes' SRCREV.
pub fn check_recipes(inputs: &RecipeInputs) -> Result<Vec<String>, GenError> {
    let root = &inputs.root;
    let mut problems = Vec::new();
    // Which files must exist: the layout does not depend on the SRCREV.
    let layout = inputs.render(&ProjectSource {
        git_url: inputs.git_url.clone(),
        srcrev: "0".repeat(40),
        tagged: false,
    })?;
    let mut srcrev: Option<String> = None;
    for (dir, files) in &layout {
        for name in files.files.keys() {
            match std::fs::read_to_string(root.join(dir).join(name)) {
                Err(_) => problems.push(format!("{dir}/{name}: missing")),
                Ok(text) => match recipe::srcrev_of(&text) {
                    None => problems.push(format!("{dir}/{name}: has no SRCREV line")),
                    Some(rev) => match &srcrev {
                        None => srcrev = Some(rev),
                        Some(first) if *first != rev => problems.push(format!(
                            "{dir}/{name}: SRCREV {rev} differs from the other recipes' {first}"
                        )),
                        Some(_) => {}
                    },
                },
            }
        }
    }
    let Some(rev) = srcrev else {
        return Ok(problems);
    };
    let commit = match git::resolve_commit(root, &rev) {
        Ok(commit) => commit,
        Err(e) => {
            problems.push(format!("SRCREV {rev}: {e}"));
            return Ok(problems);
        }
    };
    for path in git::changed_since(root, &commit, &inputs.input_paths())? {
        problems.push(format!(
            "{path}: changed since the recipes' SRCREV {commit} (commit it, then regenerate)"
        ));
    }
    let source = git::project_source(root, inputs, &commit)?;
    let prefix = format!("{}/", root.display());
    for (dir, files) in inputs.render(&source)? {
        for line in files.compare_with_dir(&root.join(&dir), &is_not_generated) {
            let line = line.strip_prefix(&prefix).unwrap_or(&line).to_string();
            let file = line.split(": ").next().unwrap_or_default().to_string();
            if !problems.iter().any(|p| p.starts_with(&format!("{file}: "))) {
                problems.push(line);
            }
        }
    }
    Ok(problems)
}
