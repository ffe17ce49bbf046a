//! `cargo xtask yocto-layer`: write a ready-to-add `meta-migration` layer instance with both
//! stage configs, rendered from a captured mender.conf by `menderconf`, baked in.

use anyhow::{bail, Context, Result};
use mender_migrate::MigrationInputs;
use migration_generators::layer::{self, BakedLayer};
use std::path::PathBuf;

/// Write a meta-migration layer instance with the captured, transformed configs baked in.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    inputs: MigrationInputs,
    /// Device type(s) of the fleet (repeat, or several values); other MENDER_DEVICE_TYPEs stop the build.
    #[arg(long = "device-type", value_name = "T", required = true, num_args = 1..)]
    device_types: Vec<String>,
    /// Name of the layer directory.
    #[arg(long, default_value = "meta-migration")]
    name: String,
    /// Directory to create the layer in.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Replace an existing layer directory.
    #[arg(long)]
    force: bool,
}

pub fn run(args: &Args) -> Result<()> {
    if args.name.is_empty() || args.name.contains(['/', '\\']) || args.name.starts_with('.') {
        bail!("--name `{}` must be a plain directory name", args.name);
    }
    let plan = args.inputs.plan()?;
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    let recipes = layer_recipes()?;
    let tree = layer::baked_layer(&BakedLayer {
        plan: &plan,
        device_types: &args.device_types,
        captured_from: &args.inputs.config.display().to_string(),
        recipes: &recipes,
    })?;
    let dest = args.out.join(&args.name);
    let source_layer = crate::project_root().join("meta-migration");
    if let (Ok(a), Ok(b)) = (dest.canonicalize(), source_layer.canonicalize()) {
        if a == b {
            bail!(
                "{}: that is the layer's source in this repository; choose another --out or --name",
                dest.display()
            );
        }
    }
    tree.write_new_dir(&dest, args.force)?;
    println!(
        "wrote layer {} ({} files)",
        dest.display(),
        tree.files.len()
    );
    println!("  old server: {}", plan.old_server.as_str());
    println!("  new server: {}", plan.new_server.as_str());
    println!("enable it with `bitbake-layers add-layer {}`, then set MIGRATION_STAGE = \"dual\" (stage 1) or \"new-only\" (stage 2)", dest.display());
    Ok(())
}

/// The checked-in generated recipes of the layer (`cargo xtask recipes` keeps them fresh): the
/// Update Module and the native stage tool.
fn layer_recipes() -> Result<Vec<(String, String)>> {
    let dir = crate::project_root().join(migration_generators::project::LAYER_RECIPE_DIR);
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".bb") {
            let path = dir.join(&name);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            found.push((name, text));
        }
    }
    found.sort();
    let wanted = migration_generators::project::LAYER_CRATES;
    let names: Vec<&str> = found
        .iter()
        .filter_map(|(n, _)| n.split_once('_').map(|(crate_name, _)| crate_name))
        .collect();
    if names.len() != wanted.len() || wanted.iter().any(|w| !names.contains(w)) {
        bail!(
            "{}: expected one recipe each of {} (found: {}); run `cargo xtask recipes`",
            dir.display(),
            wanted.join(", "),
            names.join(", ")
        );
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::os::unix::fs::PermissionsExt;

    /// `cargo xtask debian-overlay`'s flags, parsed as the command line would.
    #[derive(Parser)]
    struct Overlay {
        #[command(flatten)]
        args: crate::debian_overlay::Args,
    }

    /// Both generators' stage configs hold the example's TenantToken and must be owner-only.
    #[test]
    fn stage_configs_with_the_token_are_owner_only() {
        let out = tempfile::tempdir().unwrap();
        let config = crate::project_root().join("examples/captured/etc/mender/mender.conf");
        let new_server = "https://new.example.com";
        run(&Args {
            inputs: MigrationInputs {
                config: config.clone(),
                fallback_config: None,
                new_server: new_server.into(),
                old_server: None,
                keep_servers: Vec::new(),
                new_tenant_token_file: None,
            },
            device_types: vec!["raspberrypi4".into()],
            name: "meta-test".into(),
            out: out.path().to_path_buf(),
            force: false,
        })
        .unwrap();
        let overlays = out.path().join("overlays");
        let overlay = Overlay::parse_from([
            "debian-overlay".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--new-server".as_ref(),
            new_server.as_ref(),
            "--out".as_ref(),
            overlays.as_os_str(),
        ]);
        crate::debian_overlay::run(&overlay.args).unwrap();
        let mut files = Vec::new();
        for stage in ["dual", "new-only"] {
            files.push(out.path().join(format!(
                "meta-test/recipes-mender/mender-client/files/migration-{stage}/mender.conf"
            )));
        }
        for stage in ["stage1-dual", "stage2-new-only"] {
            files.push(overlays.join(stage).join("etc/mender/mender.conf"));
        }
        for conf in &files {
            let text = std::fs::read_to_string(conf).unwrap();
            assert!(text.contains("TenantToken"), "{}", conf.display());
            let mode = std::fs::metadata(conf).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", conf.display());
        }
    }
}
