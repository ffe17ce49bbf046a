//! `fuzz`: runs the cargo-fuzz targets in `tests/fuzz` (libFuzzer, nightly) over the checked-in
//! corpus, and fails on the first crash, hang or out-of-memory, naming the input that caused it.
//!
//! New inputs found during a run go to `target/fuzz/corpus/<target>`, never into the repository:
//! a CI run leaves the tree as it was. Promote an interesting input to `tests/fuzz/corpus/` by
//! hand (`cargo fuzz cmin` keeps the corpus small).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Every target in `tests/fuzz/fuzz_targets`, in the order they run.
pub const TARGETS: &[&str] = &["mender_conf", "stage_plan", "artifact_reader", "journal"];

/// The toolchain cargo-fuzz needs (sanitizers and `-Z` flags).
const TOOLCHAIN: &str = "nightly";

/// Run the fuzz targets (all by default) for a time or an execution budget each.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Targets to run (default: all of them).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    targets: Vec<String>,
    /// Seconds per target (libFuzzer -max_total_time); the run also ends at --runs.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Executions per target (libFuzzer -runs); 0 = no limit but --seconds.
    #[arg(long, default_value_t = 0)]
    runs: u64,
}

/// One target's outcome, parsed from libFuzzer's closing lines.
struct Outcome {
    target: String,
    executions: u64,
    seconds: f64,
    corpus_files: usize,
}

pub fn run(args: &Args) -> Result<()> {
    let root = crate::project_root();
    check_tools()?;
    let targets: Vec<String> = if args.targets.is_empty() {
        TARGETS.iter().map(|t| t.to_string()).collect()
    } else {
        args.targets.clone()
    };
    let work = target_dir(&root).join("fuzz");
    let mut outcomes = Vec::new();
    for target in &targets {
        let seeds = root.join("tests/fuzz/corpus").join(target);
        let corpus = work.join("corpus").join(target);
        let crashes = work.join("artifacts").join(target);
        std::fs::create_dir_all(&corpus)
            .and_then(|_| std::fs::create_dir_all(&crashes))
            .with_context(|| format!("creating {}", corpus.display()))?;
        let log_path = work.join(format!("{target}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        eprintln!(
            "==> fuzz {target}: {} s{}",
            args.seconds,
            if args.runs > 0 {
                format!(" or {} executions", args.runs)
            } else {
                String::new()
            }
        );
        let started = Instant::now();
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&root)
            .env_remove("CARGO")
            .env_remove("RUSTC")
            .arg(format!("+{TOOLCHAIN}"))
            .args(["fuzz", "run", "--fuzz-dir", "tests/fuzz", target])
            .arg(&corpus)
            .arg(&seeds)
            .arg("--")
            .arg(format!("-max_total_time={}", args.seconds))
            .arg(format!("-artifact_prefix={}/", crashes.display()))
            .args(["-rss_limit_mb=2048", "-timeout=10", "-print_final_stats=1"]);
        if args.runs > 0 {
            cmd.arg(format!("-runs={}", args.runs));
        }
        let status = cmd
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("starting cargo +nightly fuzz (run `bash .ci/install-deps`)")?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if !status.success() {
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "fuzz target {target} failed ({status}); crash inputs in {}, full log {}:\n{}",
                crashes.display(),
                log_path.display(),
                tail.join("\n")
            );
        }
        let executions = final_executions(&text).with_context(|| {
            format!(
                "fuzz target {target}: no execution count in {}",
                log_path.display()
            )
        })?;
        outcomes.push(Outcome {
            target: target.clone(),
            executions,
            // libFuzzer's own run time (the wall also counts the build).
            seconds: fuzzing_seconds(&text).unwrap_or_else(|| started.elapsed().as_secs_f64()),
            corpus_files: count_files(&corpus) + count_files(&seeds),
        });
    }
    for o in &outcomes {
        eprintln!(
            "fuzz {}: {} executions in {:.0} s ({:.0}/s), corpus {} files, no crash",
            o.target,
            o.executions,
            o.seconds,
            o.executions as f64 / o.seconds.max(1.0),
            o.corpus_files
        );
    }
    if outcomes.iter().any(|o| o.executions == 0) {
        bail!("a fuzz target ran no input");
    }
    Ok(())
}

/// Fails with the install command when nightly or cargo-fuzz is missing.
fn check_tools() -> Result<()> {
    let ok = Command::new("cargo")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .args([&format!("+{TOOLCHAIN}"), "fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        bail!("cargo +{TOOLCHAIN} fuzz is not available: run `bash .ci/install-deps` (installs the nightly toolchain and cargo-fuzz)");
    }
    Ok(())
}

/// libFuzzer's `stat::number_of_executed_units: N`, else its `Done N runs` line.
fn final_executions(log: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("stat::number_of_executed_units:")
                .and_then(|n| n.trim().parse().ok())
        })
        .or_else(|| {
            log.lines().rev().find_map(|l| {
                l.strip_prefix("Done ")
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|n| n.parse().ok())
            })
        })
}

/// The seconds of libFuzzer's `Done N runs in S second(s)` line.
fn fuzzing_seconds(log: &str) -> Option<f64> {
    log.lines().rev().find_map(|l| {
        let rest = l.strip_prefix("Done ")?;
        let secs = rest.split(" runs in ").nth(1)?.split_whitespace().next()?;
        secs.parse().ok()
    })
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).count())
        .unwrap_or(0)
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executions_come_from_the_final_stats() {
        let log =
            "#2 INITED\nDone 65873 runs in 21 second(s)\nstat::number_of_executed_units: 65874\n";
        assert_eq!(final_executions(log), Some(65874));
        assert_eq!(final_executions("Done 12 runs in 1 second(s)\n"), Some(12));
        assert_eq!(final_executions("nothing"), None);
        assert_eq!(fuzzing_seconds(log), Some(21.0));
    }

    #[test]
    fn every_target_has_a_source_and_a_seed_corpus() {
        let root = crate::project_root();
        for t in TARGETS {
            assert!(
                root.join(format!("tests/fuzz/fuzz_targets/{t}.rs"))
                    .is_file(),
                "{t}: no source"
            );
            assert!(
                count_files(&root.join("tests/fuzz/corpus").join(t)) > 0,
                "{t}: no seeds"
            );
        }
    }
}
