//! Stage semantics of every generated mender.conf (layer instance and overlays), parsed as plain
//! JSON independently of `menderconf`, plus the refusals of the generators.

use std::path::{Path, PathBuf};

use menderconf::{plan_migration, ConfigSet, ServerUrl};
use migration_generators::layer::{self, BakedLayer};
use migration_generators::overlay;
use serde_json::{Map, Value};

const OLD: &str = "https://old.mender.example.com";
const NEW: &str = "https://new.eu.mender.example.com";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example_plan() -> menderconf::MigrationPlan {
    let captured = ConfigSet::load(&root().join(overlay::EXAMPLE_CONFIG), None).unwrap();
    plan_migration(captured, &ServerUrl::parse(NEW).unwrap(), None).unwrap()
}

fn object(bytes: &[u8]) -> Map<String, Value> {
    match serde_json::from_slice::<Value>(bytes).expect("valid JSON") {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn captured() -> Map<String, Value> {
    object(&std::fs::read(root().join(overlay::EXAMPLE_CONFIG)).unwrap())
}

/// Stage 1: `Servers` = [old, new] and no key that the client reads as ServerURL.
fn assert_dual(conf: &Map<String, Value>, what: &str) {
    assert!(
        !conf.keys().any(|k| k.eq_ignore_ascii_case("serverurl")),
        "{what}: stage 1 must not have ServerURL in any letter case: {conf:?}"
    );
    let servers: Vec<&str> = conf["Servers"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: Servers is not an array"))
        .iter()
        .map(|s| s["ServerURL"].as_str().unwrap())
        .collect();
    assert_eq!(servers, [OLD, NEW], "{what}");
}

/// Stage 2: only the new server.
fn assert_new_only(conf: &Map<String, Value>, what: &str) {
    assert!(
        !conf.keys().any(|k| k.eq_ignore_ascii_case("servers")),
        "{what}: stage 2 must not list Servers"
    );
    let urls: Vec<_> = conf
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("serverurl"))
        .collect();
    assert_eq!(urls.len(), 1, "{what}");
    assert_eq!(urls[0].1, NEW, "{what}");
}

/// Everything but the server keys (and `skip`) is carried over from the captured config unchanged.
fn assert_rest_kept(conf: &Map<String, Value>, what: &str, skip: &[&str]) {
    for (key, value) in captured() {
        if key.eq_ignore_ascii_case("serverurl") {
            continue;
        }
        if skip.contains(&key.as_str()) {
            assert!(
                !conf.contains_key(&key),
                "{what}: {key} must be left to the build"
            );
            continue;
        }
        assert_eq!(conf.get(&key), Some(&value), "{what}: key {key}");
    }
}

fn baked_instance() -> migration_generators::tree::FileTree {
    let plan = example_plan();
    layer::baked_layer(&BakedLayer {
        plan: &plan,
        device_types: &["qemux86-64".to_string(), "raspberrypi4".to_string()],
        captured_from: overlay::EXAMPLE_CONFIG,
        recipes: &[(
            "server-migration_0.1.0.bb".to_string(),
            "inherit cargo\n".to_string(),
        )],
    })
    .unwrap()
}

#[test]
fn baked_layer_configs_have_the_stage_semantics() {
    let tree = baked_instance();
    let dual = &tree.files["recipes-mender/mender-client/files/migration-dual/mender.conf"];
    let new_only = &tree.files["recipes-mender/mender-client/files/migration-new-only/mender.conf"];
    let dual = object(&dual.contents);
    let new_only = object(&new_only.contents);
    assert_dual(&dual, "layer stage 1");
    assert_new_only(&new_only, "layer stage 2");
    assert_rest_kept(&dual, "layer stage 1", layer::BUILD_OWNED_KEYS);
    assert_rest_kept(&new_only, "layer stage 2", layer::BUILD_OWNED_KEYS);
}

#[test]
fn baked_include_switches_the_layer_to_the_files_and_keeps_captured_values() {
    let tree = baked_instance();
    let inc = String::from_utf8(tree.files[layer::BAKED_INC].contents.clone()).unwrap();
    assert!(inc.contains("MIGRATION_BAKED_CONFIG = \"1\"\n"));
    assert!(inc.contains("MIGRATION_DEVICE_TYPES = \"qemux86-64 raspberrypi4\"\n"));
    assert!(inc.contains(
        "FILESEXTRAPATHS:prepend := \"${THISDIR}/files/migration-${MIGRATION_STAGE}:\"\n"
    ));
    assert!(inc.contains("SRC_URI:append = \" file://mender.conf\"\n"));
    // The example has a token and all three intervals, no DeviceTier.
    for var in [
        "MENDER_TENANT_TOKEN",
        "MENDER_INVENTORY_POLL_INTERVAL_SECONDS",
        "MENDER_RETRY_POLL_INTERVAL_SECONDS",
        "MENDER_UPDATE_POLL_INTERVAL_SECONDS",
    ] {
        assert!(
            inc.contains(&format!("{var}:forcevariable = \"\"\n")),
            "{var}"
        );
    }
    assert!(!inc.contains("MENDER_DEVICE_TIER"));
    // The static layer files are all there, unchanged.
    for (path, text) in layer::STATIC_FILES {
        assert_eq!(tree.files[*path].contents, text.as_bytes(), "{path}");
    }
    assert!(tree
        .files
        .contains_key("recipes-mender/server-migration/server-migration_0.1.0.bb"));
}

#[test]
fn static_layer_is_opt_in_and_declares_its_dependencies() {
    let conf = layer::STATIC_FILES
        .iter()
        .find(|(p, _)| *p == "conf/layer.conf")
        .unwrap()
        .1;
    assert!(conf.contains("BBFILE_COLLECTIONS += \"migration\""));
    assert!(conf.contains("LAYERDEPENDS_migration = \"core mender\""));
    assert!(conf.contains("LAYERSERIES_COMPAT_migration = \"scarthgap wrynose\""));
    let bbappend = layer::STATIC_FILES
        .iter()
        .find(|(p, _)| p.ends_with(".bbappend"))
        .unwrap()
        .1;
    // Only the weak default and the gated require: adding the layer changes nothing.
    let statements: Vec<&str> = bbappend
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(statements.len(), 2, "{statements:?}");
    assert_eq!(statements[0], "MIGRATION_STAGE ??= \"\"");
    assert!(statements[1].starts_with("require ${@") && statements[1].ends_with("else ''}"));
    // No new MENDER_ variable names (meta-mender warns about unknown ones).
    for (path, text) in layer::STATIC_FILES {
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("MENDER_") {
                assert!(
                    [
                        "MENDER_SERVER_URL",
                        "MENDER_TENANT_TOKEN",
                        "MENDER_DEVICE_TYPE",
                        "MENDER_"
                    ]
                    .contains(&word),
                    "{path}: {word}"
                );
            }
        }
    }
}

#[test]
fn checked_in_overlays_have_the_stage_semantics_and_modes() {
    let dir = root().join("debian-overlay");
    let dual = object(&std::fs::read(dir.join("stage1-dual").join(overlay::CONFIG_PATH)).unwrap());
    let new_only =
        object(&std::fs::read(dir.join("stage2-new-only").join(overlay::CONFIG_PATH)).unwrap());
    assert_dual(&dual, "overlay stage 1");
    assert_new_only(&new_only, "overlay stage 2");
    assert_rest_kept(&dual, "overlay stage 1", layer::BUILD_OWNED_KEYS);
    assert_rest_kept(&new_only, "overlay stage 2", layer::BUILD_OWNED_KEYS);

    let tree = overlay::reference_overlays(&root()).unwrap();
    for stage in ["stage1-dual", "stage2-new-only"] {
        assert_eq!(
            tree.files[&format!("{stage}/{}", overlay::CONFIG_PATH)].mode,
            0o600
        );
        assert_eq!(
            tree.files[&format!("{stage}/{}", overlay::INVENTORY_PATH)].mode,
            0o755
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(stage).join(overlay::INVENTORY_PATH))
                .unwrap()
                .permissions()
                .mode();
            assert_ne!(
                mode & 0o111,
                0,
                "{stage}: inventory script must be executable"
            );
        }
    }
}

#[test]
fn server_settings_in_the_fallback_cannot_be_shipped_in_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("main.conf");
    let fallback = dir.path().join("fallback.conf");
    std::fs::write(&main, "{\"TenantToken\": \"t\"}\n").unwrap();
    std::fs::write(
        &fallback,
        format!("{{\"ServerURL\": \"{OLD}\", \"RootfsPartA\": \"/dev/a\"}}\n"),
    )
    .unwrap();
    let captured = ConfigSet::load(&main, Some(&fallback)).unwrap();
    let plan = plan_migration(captured, &ServerUrl::parse(NEW).unwrap(), None).unwrap();
    let err = overlay::overlays(&plan, b"#!/bin/sh\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/var/lib/mender/mender.conf"), "{err}");
    assert!(err.contains("stage artifacts"), "{err}");
}

#[test]
fn bad_device_types_are_refused() {
    let plan = example_plan();
    for types in [vec![], vec!["a b".to_string()], vec!["x\"y".to_string()]] {
        let result = layer::baked_layer(&BakedLayer {
            plan: &plan,
            device_types: &types,
            captured_from: "c",
            recipes: &[("m.bb".to_string(), String::new())],
        });
        assert!(result.is_err(), "{types:?}");
    }
}
