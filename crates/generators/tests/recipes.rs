//! The checked-in recipes (`recipes/`, the layer's module recipe) and overlays against their
//! sources: freshness, and an independent re-check of crate lines, checksums, license md5s and
//! metadata straight from Cargo.lock, the license files and `cargo metadata`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
            (
                format!(
                    "{}-{}",
                    p["name"].as_str().unwrap(),
                    p["version"].as_str().unwrap()
                ),
                p["checksum"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn value_of<'a>(text: &'a str, var: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{var} = \""))?.strip_suffix('"'))
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
        let lic_lines: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("file://"))
            .collect();
        assert_eq!(
            lic_lines.len(),
            2,
            "{}: MIT and Apache-2.0 files",
            path.display()
        );
        for line in lic_lines {
            let (file, md5) = line.trim_end_matches(" \\").split_once(";md5=").unwrap();
            let actual = format!(
                "{:x}",
                Md5::digest(std::fs::read(root().join(file)).unwrap())
            );
            assert_eq!(md5, actual, "{}: md5 of {file}", path.display());
        }
        assert_eq!(value_of(&text, "LICENSE"), Some("MIT | Apache-2.0"));
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
