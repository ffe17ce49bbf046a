//! `cargo xtask recipes`: (re)generate the cargo-bitbake style recipes in `recipes/` and the
//! layer's Update Module recipe, or `--check` that the checked-in ones are fresh.

use anyhow::{bail, Result};
use migration_generators::project::{self, git, RecipeInputs};

/// Generate BitBake recipes (cargo-bitbake layout) for the workspace's binary crates, offline,
/// from Cargo.lock. SRCREV pins a commit that must hold the same Cargo.lock and license files
/// as the working tree (see recipes/README.md).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Verify instead of writing: exit non-zero naming each stale or missing file.
    #[arg(long)]
    check: bool,
    /// Commit to pin as SRCREV when writing (default: HEAD).
    #[arg(long, value_name = "REV", conflicts_with = "check")]
    srcrev: Option<String>,
}

pub fn run(args: &Args) -> Result<()> {
    let root = crate::project_root();
    let inputs = RecipeInputs::load(&root)?;
    if args.check {
        check(&inputs)
    } else {
        write(&inputs, args.srcrev.as_deref().unwrap_or("HEAD"))
    }
}

fn write(inputs: &RecipeInputs, rev: &str) -> Result<()> {
    let root = &inputs.root;
    let commit = git::resolve_commit(root, rev)?;
    let changed = git::changed_since(root, &commit, &inputs.input_paths())?;
    if !changed.is_empty() {
        bail!(
            "{} differ(s) from commit {commit} ({rev}); the recipes pin that commit, so commit these files first, then run `cargo xtask recipes`",
            changed.join(", ")
        );
    }
    let source = git::project_source(root, inputs, &commit)?;
    for (dir, files) in inputs.render(&source)? {
        let dir_path = root.join(&dir);
        // Drop recipes of versions or crates that no longer exist (only generated files at the
        // top of the folder).
        let keep = |rel: &str| project::is_not_generated(rel) || rel.contains('/');
        for rel in files.sync_into(&dir_path, &keep)? {
            println!("removed {dir}/{rel}");
        }
        for name in files.files.keys() {
            println!("wrote {dir}/{name}");
        }
    }
    println!("SRCREV = {commit} ({})", crate_counts(inputs));
    Ok(())
}

fn check(inputs: &RecipeInputs) -> Result<()> {
    let problems = project::check_recipes(inputs)?;
    if problems.is_empty() {
        println!("recipes are fresh ({})", crate_counts(inputs));
        return Ok(());
    }
    for p in &problems {
        eprintln!("stale: {p}");
    }
    bail!(
        "{} recipe problem(s); regenerate with `cargo xtask recipes`",
        problems.len()
    )
}

/// `N crates from Cargo.lock, M crates from crates/device/Cargo.lock`.
fn crate_counts(inputs: &RecipeInputs) -> String {
    inputs
        .workspaces
        .iter()
        .map(|w| format!("{} crates from {}", w.crates.len(), w.lock_path()))
        .collect::<Vec<_>>()
        .join(", ")
}
