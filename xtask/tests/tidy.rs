//! Tidy checks over the whole tree: module docs, ARCHITECTURE.md's crate list, manifests
//! (dependencies declared once, shared lints), dependency licenses of both locks, crate
//! metadata.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every Rust module opens with a `//!` line saying what it owns.
#[test]
fn every_module_starts_with_a_doc_line() {
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} .rs files", files.len());
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| {
            !std::fs::read_to_string(f)
                .unwrap_or_default()
                .starts_with("//!")
        })
        .map(|f| f.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(
        offenders.is_empty(),
        "modules without an opening `//!` line:\n  {}",
        offenders.join("\n  ")
    );
}

/// The product's workspaces (the fuzz workspace is checked for the crate list only).
const WORKSPACES: [&str; 2] = ["", "crates/device"];

fn metadata(workspace: &str, extra: &[&str]) -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root().join(workspace))
        .args(["metadata", "--format-version", "1"])
        .args(extra)
        .output()
        .expect("running cargo metadata");
    test_support::assert_success("cargo metadata", &out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The licenses our dependency graph carries. BitBake recipes list them, so a new one must be a
/// decision: review it, then add it here.
const ALLOWED_LICENSES: &[&str] = &[
    "(Apache-2.0 OR MIT) AND BSD-3-Clause",
    "(MIT OR Apache-2.0) AND Unicode-3.0",
    "0BSD OR MIT OR Apache-2.0",
    "Apache-2.0",
    "Apache-2.0 AND ISC",
    "Apache-2.0 OR BSL-1.0",
    "Apache-2.0 OR ISC OR MIT",
    "Apache-2.0 OR MIT",
    "Apache-2.0 WITH LLVM-exception OR Apache-2.0 OR MIT",
    "Apache-2.0/MIT",
    "BSD-2-Clause OR Apache-2.0 OR MIT",
    "BSD-3-Clause",
    "BSD-3-Clause OR MIT OR Apache-2.0",
    "CC0-1.0 OR MIT-0 OR Apache-2.0",
    "CDLA-Permissive-2.0",
    "ISC",
    "MIT",
    "MIT AND BSD-3-Clause",
    "MIT OR Apache-2.0",
    "MIT OR Apache-2.0 OR BSD-1-Clause",
    "MIT OR Apache-2.0 OR LGPL-2.1-or-later",
    "MIT OR Apache-2.0 OR Zlib",
    "MIT OR Zlib OR Apache-2.0",
    "MIT/Apache-2.0",
    "Unicode-3.0",
    "Unlicense OR MIT",
    "Unlicense/MIT",
    "Zlib",
    "Zlib OR Apache-2.0 OR MIT",
];

#[test]
fn dependency_licenses_are_known() {
    let mut unknown = BTreeSet::new();
    let metas: Vec<_> = WORKSPACES.iter().map(|w| metadata(w, &[])).collect();
    for package in metas.iter().flat_map(|m| m["packages"].as_array().unwrap()) {
        let license = package["license"].as_str().unwrap_or("<none>");
        if !ALLOWED_LICENSES.contains(&license) {
            unknown.insert(format!(
                "{} {}: {license}",
                package["name"].as_str().unwrap(),
                package["version"].as_str().unwrap()
            ));
        }
    }
    assert!(unknown.is_empty(), "dependencies with a license not yet reviewed (add it to ALLOWED_LICENSES after review):\n  {}", unknown.into_iter().collect::<Vec<_>>().join("\n  "));
}

/// BitBake recipes are generated from these fields.
#[test]
fn workspace_crates_carry_recipe_metadata() {
    for workspace in WORKSPACES {
        crates_carry_recipe_metadata(&metadata(workspace, &["--no-deps"]));
    }
}

fn crates_carry_recipe_metadata(meta: &serde_json::Value) {
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for package in meta["packages"].as_array().unwrap() {
        if !members.contains(package["id"].as_str().unwrap()) {
            continue;
        }
        let name = package["name"].as_str().unwrap();
        for field in ["description", "license", "repository", "homepage"] {
            assert!(
                package[field].as_str().is_some_and(|v| !v.is_empty()),
                "crate {name} lacks `{field}` in Cargo.toml"
            );
        }
        assert_eq!(package["license"], "MIT OR Apache-2.0", "crate {name}");
    }
}

/// Workspace members as (manifest directory relative to the root, package name).
fn members(workspace: &str) -> Vec<(String, String)> {
    let meta = metadata(workspace, &["--no-deps"]);
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let dir = Path::new(p["manifest_path"].as_str().unwrap())
                .parent()
                .unwrap()
                .strip_prefix(root().canonicalize().unwrap())
                .or_else(|_| {
                    Path::new(p["manifest_path"].as_str().unwrap())
                        .parent()
                        .unwrap()
                        .strip_prefix(root())
                })
                .unwrap()
                .display()
                .to_string();
            (dir, p["name"].as_str().unwrap().to_string())
        })
        .collect()
}

/// ARCHITECTURE.md is the code map: every crate of every workspace has its row, by path and
/// package name.
#[test]
fn architecture_lists_every_crate() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    for workspace in WORKSPACES.iter().chain(&["tests/fuzz"]) {
        for (dir, name) in members(workspace) {
            if !text.contains(&format!("| `{dir}` | `{name}`")) {
                missing.push(format!("`{dir}` (package `{name}`)"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "crates without a row `| `DIR` | `PACKAGE` (kind) | what it owns |` in ARCHITECTURE.md's crate table:\n  {}",
        missing.join("\n  ")
    );
}

/// Dependencies are declared once per workspace (`[workspace.dependencies]`) and crates share
/// the workspace's lints: every dependency line of a member is `NAME.workspace = true` or
/// `NAME = { workspace = true, ... }`, and `[lints]` has `workspace = true`.
#[test]
fn manifests_inherit_dependencies_and_lints() {
    let mut problems = Vec::new();
    for workspace in WORKSPACES {
        for (dir, name) in members(workspace) {
            let path = root().join(&dir).join("Cargo.toml");
            let text = std::fs::read_to_string(&path).unwrap();
            let mut section = String::new();
            let mut lints_inherited = false;
            for line in text.lines().map(str::trim) {
                if line.starts_with('[') {
                    section = line.trim_matches(['[', ']']).to_string();
                    continue;
                }
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if section == "lints" && line.replace(' ', "") == "workspace=true" {
                    lints_inherited = true;
                }
                let is_deps =
                    section.ends_with("dependencies") && !section.starts_with("workspace");
                let inherits = line.contains(".workspace = true")
                    || line.replace(' ', "").contains("={workspace=true");
                // A crate's dev-dependency on itself (to turn on a test-only feature).
                let on_itself = line
                    .replace(' ', "")
                    .starts_with(&format!("{name}={{path=\".\""));
                if is_deps && !inherits && !on_itself {
                    problems.push(format!(
                        "{dir}/Cargo.toml [{section}]: `{line}`: declare it in the workspace's [workspace.dependencies] and use `workspace = true`"
                    ));
                }
            }
            if !lints_inherited {
                problems.push(format!(
                    "{dir}/Cargo.toml: add `[lints]` with `workspace = true`"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
