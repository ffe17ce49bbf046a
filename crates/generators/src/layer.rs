//! The `meta-migration` Yocto layer: its static files (the checked-in `meta-migration/` is the
//! source, embedded here) and layer instances with both stage configs rendered by `menderconf`
//! and baked in.

use menderconf::{ConfigFile, ConfigSet, MigrationPlan};

use crate::tree::FileTree;
use crate::GenError;

/// Directory of the bbappend and its includes inside the layer.
pub const MENDER_CLIENT_DIR: &str = "recipes-mender/mender-client";
/// Directory of the generated recipes (the Update Module and the native stage tool) inside the
/// layer.
pub const MODULE_RECIPE_DIR: &str = "recipes-mender/server-migration";
/// The include a baked instance adds (the static layer `include`s it if present).
pub const BAKED_INC: &str = "recipes-mender/mender-client/mender-migration-baked.inc";

/// The layer's hand-written files, as checked in under `meta-migration/` (without `scripts/`,
/// which is CI tooling, and without the generated module `.bb`, which `recipes` owns).
pub const STATIC_FILES: &[(&str, &str)] = &[
    ("README", include_str!("../../../meta-migration/README")),
    ("COPYING.MIT", include_str!("../../../meta-migration/COPYING.MIT")),
    ("conf/layer.conf", include_str!("../../../meta-migration/conf/layer.conf")),
    (
        "recipes-mender/mender-client/mender_%.bbappend",
        include_str!("../../../meta-migration/recipes-mender/mender-client/mender_%.bbappend"),
    ),
    (
        "recipes-mender/mender-client/mender-migration-common.inc",
        include_str!("../../../meta-migration/recipes-mender/mender-client/mender-migration-common.inc"),
    ),
    (
        "recipes-mender/mender-client/mender-migration-dual.inc",
        include_str!("../../../meta-migration/recipes-mender/mender-client/mender-migration-dual.inc"),
    ),
    (
        "recipes-mender/mender-client/mender-migration-new-only.inc",
        include_str!("../../../meta-migration/recipes-mender/mender-client/mender-migration-new-only.inc"),
    ),
    (
        "recipes-mender/mender-client/mender-migration-invalid-stage.inc",
        include_str!("../../../meta-migration/recipes-mender/mender-client/mender-migration-invalid-stage.inc"),
    ),
    (
        "recipes-mender/server-migration/server-migration.inc",
        include_str!("../../../meta-migration/recipes-mender/server-migration/server-migration.inc"),
    ),
    (
        "recipes-mender/server-migration/migration-stage-config.inc",
        include_str!("../../../meta-migration/recipes-mender/server-migration/migration-stage-config.inc"),
    ),
];

/// mender.conf keys that meta-mender also sets from a MENDER_* variable (variables win). A baked
/// config that has one of these keys clears the variable so the captured value survives.
/// `ServerURL` is handled by the stage includes themselves.
const VARIABLE_KEYS: &[(&str, &str)] = &[
    ("TenantToken", "MENDER_TENANT_TOKEN"),
    (
        "InventoryPollIntervalSeconds",
        "MENDER_INVENTORY_POLL_INTERVAL_SECONDS",
    ),
    (
        "RetryPollIntervalSeconds",
        "MENDER_RETRY_POLL_INTERVAL_SECONDS",
    ),
    (
        "UpdatePollIntervalSeconds",
        "MENDER_UPDATE_POLL_INTERVAL_SECONDS",
    ),
    ("DeviceTier", "MENDER_DEVICE_TIER"),
];

/// Keys an image builder always sets itself; image configs leave them out.
pub const BUILD_OWNED_KEYS: &[&str] = &["RootfsPartA", "RootfsPartB"];

/// The static layer plus the generated recipes, `(file name, text)` each.
pub fn static_layer(recipes: &[(String, String)]) -> FileTree {
    let mut tree = FileTree::new();
    for (path, text) in STATIC_FILES {
        tree.add(*path, *text, 0o644);
    }
    for (name, text) in recipes {
        tree.add(format!("{MODULE_RECIPE_DIR}/{name}"), text.as_str(), 0o644);
    }
    tree
}

/// Inputs of a baked layer instance.
pub struct BakedLayer<'a> {
    pub plan: &'a MigrationPlan,
    /// The fleet's device types; the build stops for any other MENDER_DEVICE_TYPE.
    pub device_types: &'a [String],
    /// Where the captured config came from, for the generated comments.
    pub captured_from: &'a str,
    /// `(file name, text)` of the generated recipes (Update Module, native stage tool).
    pub recipes: &'a [(String, String)],
}

/// The stage's `/etc/mender/mender.conf`. An image carries only that file: if the stage needs
/// to change the fallback config (the captured server keys live in `/var/lib/mender`), no image
/// can do it and the caller must use the stage artifacts instead.
pub fn stage_main_config(
    plan: &MigrationPlan,
    stage: menderconf::Stage,
) -> Result<&ConfigFile, GenError> {
    let set: &ConfigSet = plan.stage_files(stage);
    let same_fallback = match (&set.fallback, &plan.captured.fallback) {
        (None, None) => true,
        (Some(a), Some(b)) => a.object == b.object,
        _ => false,
    };
    let name = stage_name(stage);
    if !same_fallback {
        return Err(GenError::Invalid(format!(
            "stage {name} has to change the fallback config {} (it holds server settings); \
             an image or overlay only carries {} — use the server-migration stage artifacts for these devices",
            menderconf::FALLBACK_CONFIG_PATH,
            menderconf::MAIN_CONFIG_PATH
        )));
    }
    set.main.as_ref().ok_or_else(|| {
        GenError::Invalid(format!(
            "stage {name} has no {} to ship",
            menderconf::MAIN_CONFIG_PATH
        ))
    })
}

/// The stage's `/etc/mender/mender.conf` for a new image (Yocto build or mender-convert): the
/// stage config without [`BUILD_OWNED_KEYS`]. The image's partition layout is the image
/// builder's (MENDER_ROOTFS_PART_A/B, mender-convert's `/data/mender/mender.conf`); the captured
/// device's values would at best cause conflict warnings and at worst point at wrong partitions,
/// since `/etc` overrides `/data`.
pub fn image_config(
    plan: &MigrationPlan,
    stage: menderconf::Stage,
) -> Result<ConfigFile, GenError> {
    let mut main = stage_main_config(plan, stage)?.clone();
    main.object
        .retain(|k, _| !BUILD_OWNED_KEYS.iter().any(|b| k.eq_ignore_ascii_case(b)));
    Ok(main)
}

/// `dual` / `new-only`, the values of MIGRATION_STAGE.
pub fn stage_name(stage: menderconf::Stage) -> &'static str {
    match stage {
        menderconf::Stage::Dual => "dual",
        menderconf::Stage::NewOnly => "new-only",
    }
}

fn check_device_types(types: &[String]) -> Result<(), GenError> {
    if types.is_empty() {
        return Err(GenError::Invalid(
            "at least one --device-type is needed".into(),
        ));
    }
    for t in types {
        if t.is_empty()
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
        {
            return Err(GenError::Invalid(format!(
                "device type `{t}` may only hold letters, digits and - _ . +"
            )));
        }
    }
    Ok(())
}

/// A complete layer instance: the static layer, both stage configs and the include that uses them.
pub fn baked_layer(input: &BakedLayer<'_>) -> Result<FileTree, GenError> {
    check_device_types(input.device_types)?;
    let mut tree = static_layer(input.recipes);
    let mut keys_in_configs: Vec<String> = Vec::new();
    for stage in [menderconf::Stage::Dual, menderconf::Stage::NewOnly] {
        let main = image_config(input.plan, stage)?;
        keys_in_configs.extend(main.object.keys().map(|k| k.to_ascii_lowercase()));
        tree.add(
            format!(
                "{MENDER_CLIENT_DIR}/files/migration-{}/mender.conf",
                stage_name(stage)
            ),
            main.to_bytes(),
            // Owner-only: the stage config may hold the TenantToken (a secret).
            0o600,
        );
    }
    tree.add(BAKED_INC, baked_inc(input, &keys_in_configs), 0o644);
    Ok(tree)
}

fn baked_inc(input: &BakedLayer<'_>, keys: &[String]) -> String {
    let mut s = String::new();
    s.push_str("# Generated by `cargo xtask yocto-layer`: both stage configs are baked in.\n");
    s.push_str(&format!(
        "# Captured config: {}\n# Old server: {}\n# New server: {}\n\n",
        input.captured_from.replace('\n', " "),
        input.plan.old_server.as_str(),
        input.plan.new_server.as_str()
    ));
    s.push_str("MIGRATION_BAKED_CONFIG = \"1\"\n");
    // The postfunc re-checks the baked files after meta-mender's merge with these servers.
    s.push_str(&format!(
        "MIGRATION_OLD_SERVER = \"{}\"\nMIGRATION_NEW_SERVER = \"{}\"\n",
        input.plan.old_server.as_str(),
        input.plan.new_server.as_str()
    ));
    s.push_str(&format!(
        "MIGRATION_DEVICE_TYPES = \"{}\"\n\n",
        input.device_types.join(" ")
    ));
    s.push_str("FILESEXTRAPATHS:prepend := \"${THISDIR}/files/migration-${MIGRATION_STAGE}:\"\n");
    s.push_str("SRC_URI:append = \" file://mender.conf\"\n\n");
    let cleared: Vec<_> = VARIABLE_KEYS
        .iter()
        .filter(|(key, _)| keys.contains(&key.to_ascii_lowercase()))
        .collect();
    if !cleared.is_empty() {
        s.push_str(
            "# The captured config has these keys; meta-mender's variables would override them.\n",
        );
        for (_, var) in cleared {
            s.push_str(&format!("{var}:forcevariable = \"\"\n"));
        }
        s.push('\n');
    }
    s.push_str("python () {\n");
    // mender-setup defaults MENDER_DEVICE_TYPE to MACHINE; builds without it get MACHINE too.
    s.push_str("    device_type = d.getVar('MENDER_DEVICE_TYPE') or d.getVar('MACHINE')\n");
    s.push_str("    allowed = (d.getVar('MIGRATION_DEVICE_TYPES') or '').split()\n");
    s.push_str("    if device_type not in allowed:\n");
    s.push_str("        bb.fatal('MENDER_DEVICE_TYPE \"%s\" is not one of the device types this migration layer was generated for (%s); regenerate it with --device-type %s if that is intended' % (device_type, ' '.join(allowed), device_type))\n");
    s.push_str("}\n");
    s
}
