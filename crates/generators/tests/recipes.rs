//! The checked-in recipes (`recipes/`, the layer's module recipe) and overlays against their
//! sources: freshness, and an independent re-check of crate lines, checksums, license md5s and
//! metadata straight from Cargo.lock, the license files and `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use md5::{Digest, Md5};
use migration_generators::overlay;
use migration_generators::project::{self, RecipeInputs};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Every generated recipe file on disk, with the variant it must be.
fn recipe_files() -> Vec<(PathBuf, bool /* classic S line */)> {
    let mut out = Vec::new();
    for (dir, classic) in [
        ("recipes/scarthgap", true),
        ("recipes/wrynose", false),
        (project::LAYER_RECIPE_DIR, false),
    ] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "bb") {
                out.push((path, classic));
            }
        }
    }
    assert!(
        out.len() >= 7,
        "expected 3+3 recipes and the layer's: {out:?}"
    );
    out
}

/// How the tests key a crate: `name-version`.
fn crate_id(name: &str, version: &str) -> String {
    format!("{name}-{version}")
}

/// name-version -> checksum of every crates.io package of the lock in `workspace_dir`, read with
/// a plain TOML parse.
fn lock_crates(workspace_dir: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join(workspace_dir).join("Cargo.lock")).unwrap();
    let lock: toml::Value = toml::from_str(&text).unwrap();
    lock["package"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p.get("source").and_then(|s| s.as_str()).is_some_and(|s| {
                s.starts_with("registry+https://github.com/rust-lang/crates.io-index")
            })
        })
        .map(|p| {
            let field = |key: &str| p[key].as_str().unwrap().to_string();
            (
                crate_id(&field("name"), &field("version")),
                field("checksum"),
            )
        })
        .collect()
}

fn value_of<'a>(text: &'a str, var: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{var} = \""))?.strip_suffix('"'))
}

/// `cargo metadata` of a workspace, run once per test binary.
fn metadata(workspace_dir: &str) -> serde_json::Value {
    static CACHE: Mutex<BTreeMap<String, serde_json::Value>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().unwrap();
    cache
        .entry(workspace_dir.to_string())
        .or_insert_with(|| run_metadata(workspace_dir))
        .clone()
}

fn run_metadata(workspace_dir: &str) -> serde_json::Value {
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(root().join(workspace_dir))
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .unwrap();
    test_support::assert_success("cargo metadata", &out);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `name-version` -> unpacked source directory, for every registry crate of the workspace.
fn unpacked_crates(workspace_dir: &str) -> BTreeMap<String, PathBuf> {
    metadata(workspace_dir)["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["source"].is_null())
        .map(|p| {
            (
                format!(
                    "{}-{}",
                    p["name"].as_str().unwrap(),
                    p["version"].as_str().unwrap()
                ),
                Path::new(p["manifest_path"].as_str().unwrap())
                    .parent()
                    .unwrap()
                    .to_path_buf(),
            )
        })
        .collect()
}

/// `name-version` -> SPDX license of every registry crate `package` is built from (normal and
/// build edges of the resolve, followed here independently of the generator).
fn shipped_crates(workspace_dir: &str, package: &str) -> BTreeMap<String, String> {
    let meta = metadata(workspace_dir);
    let packages: BTreeMap<&str, &serde_json::Value> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p))
        .collect();
    let nodes: BTreeMap<&str, &serde_json::Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let start = packages
        .iter()
        .find(|(_, p)| p["name"] == package && p["source"].is_null())
        .map(|(id, _)| *id)
        .unwrap();
    let mut seen = BTreeSet::from([start]);
    let mut todo = vec![start];
    while let Some(id) = todo.pop() {
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let built = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"] != "dev");
            let dep_id = dep["pkg"].as_str().unwrap();
            if built && seen.insert(dep_id) {
                todo.push(dep_id);
            }
        }
    }
    seen.into_iter()
        .map(|id| packages[id])
        .filter(|p| !p["source"].is_null())
        .map(|p| {
            let field = |key: &str| p[key].as_str().unwrap().to_string();
            (
                crate_id(&field("name"), &field("version")),
                field("license"),
            )
        })
        .collect()
}

/// The value of `CARGO_SRC_DIR`: the workspace whose lock the recipe must list.
fn cargo_src_dir(text: &str) -> String {
    value_of(text, "CARGO_SRC_DIR")
        .expect("CARGO_SRC_DIR line")
        .to_string()
}

#[test]
fn crate_lines_and_checksums_are_exactly_cargo_lock() {
    for (path, _) in recipe_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let lock = lock_crates(&cargo_src_dir(&text));
        let lines: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("crate://crates.io/"))
            .map(|l| l.trim_end_matches(" \\").replacen('/', "-", 1))
            .collect();
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted, "{}: crate lines not sorted", path.display());
        let listed: Vec<&String> = lock.keys().collect();
        assert_eq!(
            lines.iter().collect::<Vec<_>>(),
            listed,
            "{}: crate lines differ from Cargo.lock",
            path.display()
        );
        let mut sums = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("SRC_URI[")) {
            let key = line
                .strip_prefix("SRC_URI[")
                .and_then(|l| l.split_once(".sha256sum] = \""))
                .unwrap_or_else(|| panic!("{}: odd line {line}", path.display()));
            let previous = sums.insert(key.0.to_string(), key.1.trim_end_matches('"').to_string());
            assert!(
                previous.is_none(),
                "{}: duplicate {}",
                path.display(),
                key.0
            );
        }
        assert_eq!(
            sums,
            lock,
            "{}: checksums differ from Cargo.lock",
            path.display()
        );
    }
}

#[test]
fn license_md5s_match_the_files_and_metadata_matches_cargo() {
    let inputs = RecipeInputs::load(&root()).unwrap();
    for (path, classic) in recipe_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
        let pkg = inputs
            .recipes()
            .map(|(p, _, _)| p)
            .find(|p| file_name == format!("{}_{}.bb", p.name, p.version))
            .unwrap_or_else(|| panic!("{}: no such binary crate/version", path.display()));
        let crate_dirs = unpacked_crates(&pkg.workspace_dir);
        let lic_lines: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("file://"))
            .collect();
        let mut covered = BTreeSet::new();
        for line in &lic_lines {
            let (file, md5) = line.trim_end_matches(" \\").rsplit_once(";md5=").unwrap();
            let (file, lines) = match file.split_once(";beginline=") {
                Some((f, range)) => {
                    let (b, e) = range.split_once(";endline=").unwrap();
                    (
                        f,
                        Some((b.parse::<usize>().unwrap(), e.parse::<usize>().unwrap())),
                    )
                }
                None => (file, None),
            };
            let on_disk = match file.strip_prefix("${CARGO_VENDORING_DIRECTORY}/") {
                Some(rest) => {
                    let (krate, name) = rest.split_once('/').unwrap();
                    covered.insert(krate.to_string());
                    crate_dirs
                        .get(krate)
                        .unwrap_or_else(|| panic!("{}: {krate} is not in the lock", path.display()))
                        .join(name)
                }
                None => root().join(file),
            };
            let bytes = std::fs::read(&on_disk).unwrap();
            let checked: Vec<u8> = match lines {
                None => bytes,
                Some((b, e)) => bytes
                    .split_inclusive(|&c| c == b'\n')
                    .skip(b - 1)
                    .take(e + 1 - b)
                    .flatten()
                    .copied()
                    .collect(),
            };
            let actual = format!("{:x}", Md5::digest(&checked));
            assert_eq!(md5, actual, "{}: md5 of {file}", path.display());
        }
        // Every crate the binary is built from has its license text checksummed, and its
        // license ids appear in LICENSE.
        let license = value_of(&text, "LICENSE").unwrap();
        for (krate, spdx) in shipped_crates(&pkg.workspace_dir, &pkg.name) {
            assert!(
                covered.contains(&krate),
                "{}: no license file of {krate}",
                path.display()
            );
            for id in spdx
                .replace(['(', ')', '/'], " ")
                .split_whitespace()
                .filter(|t| !matches!(*t, "AND" | "OR" | "WITH" | "LLVM-exception"))
            {
                assert!(
                    license.split([' ', '(', ')', '&', '|']).any(|l| l == id),
                    "{}: LICENSE lacks {id} ({krate}: {spdx})",
                    path.display()
                );
            }
        }
        assert!(
            license.contains("Apache-2.0") && license.contains("MIT"),
            "{}: {license}",
            path.display()
        );
        assert_eq!(value_of(&text, "SUMMARY"), pkg.description.as_deref());
        assert_eq!(value_of(&text, "HOMEPAGE"), pkg.homepage.as_deref());
        assert_eq!(
            value_of(&text, "CARGO_BUILD_FLAGS += ").or(text
                .lines()
                .find_map(|l| l.strip_prefix("CARGO_BUILD_FLAGS += \"-p "))
                .map(|l| l.trim_end_matches('"'))),
            Some(pkg.name.as_str())
        );
        assert_eq!(
            value_of(&text, "CARGO_SRC_DIR"),
            Some(pkg.workspace_dir.as_str())
        );
        let srcrev = value_of(&text, "SRCREV").unwrap();
        assert!(srcrev.len() == 40 && srcrev.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(text.starts_with("# Auto-Generated by"));
        assert!(text.contains("\ninherit cargo\n"));
        let git_line = text
            .lines()
            .find(|l| l.starts_with("SRC_URI += \"git://"))
            .unwrap();
        if classic {
            assert!(
                text.contains("\nS = \"${WORKDIR}/git\"\n"),
                "{}",
                path.display()
            );
            assert!(!git_line.contains("destsuffix"));
        } else {
            assert!(
                !text.lines().any(|l| l.starts_with("S ")),
                "{}",
                path.display()
            );
            assert!(
                git_line.ends_with(";nobranch=1;destsuffix=${BP}\""),
                "{git_line}"
            );
        }
        assert!(!text.contains("generateme") && !text.contains("AUTOREV"));
    }
}

/// The Update Module's recipe lists exactly the device workspace's lock: not the host tools'
/// crates (mock server, TLS stacks, clap).
#[test]
fn module_recipe_lists_the_device_lock() {
    let device = lock_crates("crates/device");
    let host = lock_crates("");
    assert!(
        device.len() < host.len(),
        "{} vs {}",
        device.len(),
        host.len()
    );
    for dir in [
        "recipes/scarthgap",
        "recipes/wrynose",
        project::LAYER_RECIPE_DIR,
    ] {
        let path = root().join(dir).join("server-migration_0.1.0.bb");
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(cargo_src_dir(&text), "crates/device", "{}", path.display());
        let listed: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("crate://crates.io/"))
            .map(|l| l.trim_end_matches(" \\").replacen('/', "-", 1))
            .collect();
        assert_eq!(
            listed,
            device.keys().cloned().collect::<Vec<_>>(),
            "{}",
            path.display()
        );
        for name in ["axum", "rustls", "clap", "tokio"] {
            assert!(
                !listed.iter().any(|c| c.starts_with(&format!("{name}-"))),
                "{}: lists host crate {name}",
                path.display()
            );
        }
    }
}

#[test]
fn recipes_are_fresh() {
    let inputs = RecipeInputs::load(&root()).unwrap();
    let problems = project::check_recipes(&inputs).unwrap();
    assert!(
        problems.is_empty(),
        "stale recipes (run `cargo xtask recipes`; needs the full git history):\n{}",
        problems.join("\n")
    );
}

#[test]
fn debian_overlay_is_fresh() {
    let tree = overlay::reference_overlays(&root()).unwrap();
    let problems = tree.compare_with_dir(&root().join("debian-overlay"), &overlay::is_foreign);
    assert!(
        problems.is_empty(),
        "debian-overlay/ is stale (run `cargo xtask debian-overlay`):\n{}",
        problems.join("\n")
    );
}
