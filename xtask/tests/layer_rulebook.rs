//! One rulebook: the Yocto layer's stage step (the postfunc of mender-migration-common.inc,
//! run as BitBake would with the native `migration-stage-config`) and the CLI
//! (`mender-migrate`'s inputs and `menderconf`'s plan) give the same files, or both refuse, for
//! every mender.conf case in the repository and for the cases where the layer's old Python
//! rules disagreed with `menderconf` (upper-case hosts, `?`, `@`, port 0).

use std::path::{Path, PathBuf};
use std::process::Command;

use menderconf::{ConfigSet, Stage};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds the native tool the layer runs, from the device workspace; returns its directory
/// (what BitBake calls STAGING_BINDIR_NATIVE).
fn stage_tool_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let status = Command::new(env!("CARGO"))
        .arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(root().join("crates/device/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .args(["-p", "migration-stage-config", "--locked"])
        .status()
        .unwrap();
    assert!(status.success(), "building migration-stage-config");
    target.join("debug")
}

/// What both parity tests need: the native tool's directory and a scratch dir; `None` when
/// python3 cannot run (after the skip notice; a failure in CI).
fn layer_setup() -> Option<(PathBuf, tempfile::TempDir)> {
    if let Err(e) = Command::new("python3").arg("--version").output() {
        test_support::skip(
            "layer rulebook parity",
            &format!("python3 cannot run ({e}; apt-get install python3)"),
        );
        return None;
    }
    Some((stage_tool_dir(), tempfile::tempdir().unwrap()))
}

/// One config case: the captured files and the servers as a user would type them.
struct Case {
    name: String,
    main: Vec<u8>,
    fallback: Option<Vec<u8>>,
    old: Option<String>,
    new: String,
}

/// A stage's files as compared: canonical JSON text (key order kept) or why it was refused.
type Outcome = Result<(Option<String>, Option<String>), String>;

fn canonical(bytes: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    serde_json::to_string(&value).unwrap()
}

fn set_outcome(set: &ConfigSet) -> (Option<String>, Option<String>) {
    (
        set.main.as_ref().map(|f| canonical(&f.to_bytes())),
        set.fallback.as_ref().map(|f| canonical(&f.to_bytes())),
    )
}

/// Through the CLI's inputs: both stages, or the refusal.
fn cli(case: &Case, dir: &Path) -> (Outcome, Outcome, Option<String>) {
    let config = dir.join("captured.conf");
    std::fs::write(&config, &case.main).unwrap();
    let fallback_config = case.fallback.as_ref().map(|f| {
        let path = dir.join("captured-fallback.conf");
        std::fs::write(&path, f).unwrap();
        path
    });
    let inputs = mender_migrate::MigrationInputs {
        config,
        fallback_config,
        new_server: case.new.clone(),
        old_server: case.old.clone(),
        keep_servers: Vec::new(),
        new_tenant_token_file: None,
    };
    match inputs.plan() {
        Ok(plan) => (
            Ok(set_outcome(plan.stage_files(Stage::Dual))),
            Ok(set_outcome(plan.stage_files(Stage::NewOnly))),
            Some(plan.old_server.as_str().to_string()),
        ),
        Err(e) => (Err(format!("{e:#}")), Err(format!("{e:#}")), None),
    }
}

/// Through the layer: meta-mender's two files in B, the stage variables, the postfunc.
fn layer(
    tool_dir: &Path,
    stage: &str,
    old: Option<&str>,
    new: &str,
    files: (&[u8], Option<&[u8]>),
) -> Outcome {
    let b = tempfile::tempdir().unwrap();
    let transient = b.path().join("transient_mender.conf");
    let persistent = b.path().join("persistent_mender.conf");
    std::fs::write(&transient, files.0).unwrap();
    if let Some(f) = files.1 {
        std::fs::write(&persistent, f).unwrap();
    }
    let mut values = serde_json::json!({
        "MIGRATION_STAGE": stage,
        "MIGRATION_NEW_SERVER": new,
        "MIGRATION_BAKED_CONFIG": "0",
        "B": b.path(),
        "STAGING_BINDIR_NATIVE": tool_dir,
    });
    if let Some(old) = old {
        values["MIGRATION_OLD_SERVER"] = old.into();
    }
    let values_path = b.path().join("values.json");
    std::fs::write(&values_path, values.to_string()).unwrap();
    let out = Command::new("python3")
        .arg(root().join("xtask/tests/support/layer_postfunc.py"))
        .arg(root().join("meta-migration/recipes-mender/mender-client/mender-migration-common.inc"))
        .arg(&values_path)
        .output()
        .unwrap();
    match out.status.code() {
        Some(0) => Ok((
            Some(canonical(&std::fs::read(&transient).unwrap())),
            persistent
                .exists()
                .then(|| canonical(&std::fs::read(&persistent).unwrap())),
        )),
        Some(1) => Err(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        other => panic!(
            "layer harness exited {other:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn repo_cases() -> Vec<Case> {
    let mut files = vec![
        root().join("examples/captured/etc/mender/mender.conf"),
        root().join("debian-overlay/qemu-guest/rootfs/etc/mender/mender.conf"),
        root().join("debian-overlay/stage1-dual/etc/mender/mender.conf"),
        root().join("debian-overlay/stage2-new-only/etc/mender/mender.conf"),
    ];
    if let Ok(entries) = std::fs::read_dir(root().join("tests/fuzz/corpus/mender_conf")) {
        let mut corpus: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        corpus.sort();
        files.extend(corpus);
    }
    let mut cases = Vec::new();
    for path in files {
        let Ok(main) = std::fs::read(&path) else {
            continue;
        };
        let name = path.strip_prefix(root()).unwrap().display().to_string();
        for new in ["https://new.example.com", "HTTPS://New.Example.COM:8443/"] {
            cases.push(Case {
                name: format!("{name} -> {new}"),
                main: main.clone(),
                fallback: None,
                old: None,
                new: new.into(),
            });
        }
    }
    assert!(cases.len() >= 8, "found only {} repo cases", cases.len());
    cases
}

/// name, main file, fallback file.
type ConfigCase = (&'static str, &'static [u8], Option<&'static [u8]>);

fn inline_cases() -> Vec<Case> {
    let old_conf = br#"{"ServerURL": "https://old.example.com", "TenantToken": "t"}"#.to_vec();
    let mut cases = Vec::new();
    // Where the old Python rules and menderconf disagreed, and the usual refusals.
    for new in [
        "https://NEW.Example.com",
        "https://new.example.com/?tenant=1",
        "https://new.example.com?x",
        "https://user@new.example.com",
        "https://new.example.com:0",
        "https://new.example.com/api",
        "ftp://new.example.com",
        "new.example.com",
        "http://new.example.com",
        "https://new.example.com/",
        " https://new.example.com",
        "https://OLD.example.com",
    ] {
        cases.push(Case {
            name: format!("new server {new:?}"),
            main: old_conf.clone(),
            fallback: None,
            old: Some("https://old.example.com".into()),
            new: new.into(),
        });
    }
    for old in [
        "https://OLD.EXAMPLE.com",
        "https://old.example.com/?q",
        "old.example.com/",
    ] {
        cases.push(Case {
            name: format!("old server {old:?}"),
            main: old_conf.clone(),
            fallback: None,
            old: Some(old.into()),
            new: "https://new.example.com".into(),
        });
    }
    let configs: [ConfigCase; 5] = [
        (
            "upper-case host in the config",
            br#"{"ServerURL": "https://OLD.Example.com/"}"#,
            None,
        ),
        (
            "server in the fallback",
            br#"{"TenantToken": "t"}"#,
            Some(br#"{"RootfsPartA": "/dev/a", "serverurl": "https://old.example.com"}"#),
        ),
        (
            "server in both",
            br#"{"ServerURL": "https://old.example.com"}"#,
            Some(br#"{"ServerURL": "https://old.example.com", "RootfsPartB": "/dev/b"}"#),
        ),
        (
            "Servers next to ServerURL",
            br#"{"ServerURL": "https://old.example.com", "Servers": [{"ServerURL": "https://old.example.com"}]}"#,
            None,
        ),
        ("not JSON", b"{\"ServerURL\": ", None),
    ];
    for (name, main, fallback) in configs {
        cases.push(Case {
            name: name.into(),
            main: main.to_vec(),
            fallback: fallback.map(<[u8]>::to_vec),
            old: Some("https://old.example.com".into()),
            new: "https://new.example.com".into(),
        });
    }
    cases
}

#[test]
fn layer_and_cli_agree_on_every_config_case() {
    let Some((tool_dir, scratch)) = layer_setup() else {
        return;
    };
    let mut disagreements = Vec::new();
    let mut compared = 0;
    for case in repo_cases().into_iter().chain(inline_cases()) {
        let (cli_dual, cli_new_only, cli_old) = cli(&case, scratch.path());
        // The layer needs the old server spelled out (MIGRATION_OLD_SERVER); a captured config
        // names it, and the CLI read it from there.
        let old = case.old.clone().or(cli_old);
        let Some(old) = old else {
            // The CLI found no old server in the config: the layer cannot be asked either.
            continue;
        };
        let layer_dual = layer(
            &tool_dir,
            "dual",
            Some(&old),
            &case.new,
            (&case.main, case.fallback.as_deref()),
        );
        compared += 1;
        match (&cli_dual, &layer_dual) {
            (Ok(a), Ok(b)) if a == b => {}
            (Err(_), Err(_)) => {}
            _ => disagreements.push(format!(
                "{} (dual):\n  cli:   {cli_dual:?}\n  layer: {layer_dual:?}",
                case.name
            )),
        }
        // Stage 2 is built on stage 1's files, as on a device (and as an image build for
        // stage 2 starts from the new server).
        if let Ok((Some(main), fallback)) = &cli_dual {
            let layer_new_only = layer(
                &tool_dir,
                "new-only",
                None,
                &case.new,
                (main.as_bytes(), fallback.as_deref().map(str::as_bytes)),
            );
            compared += 1;
            if cli_new_only != layer_new_only {
                disagreements.push(format!(
                    "{} (new-only):\n  cli:   {cli_new_only:?}\n  layer: {layer_new_only:?}",
                    case.name
                ));
            }
        }
    }
    assert!(compared >= 30, "only {compared} comparisons");
    assert!(
        disagreements.is_empty(),
        "{} disagreement(s):\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

/// The cases the issue names: an upper-case host is normalised and a URL with `?` refused, the
/// same way through the layer and the CLI.
#[test]
fn upper_case_host_and_query_behave_alike() {
    let Some((tool_dir, scratch)) = layer_setup() else {
        return;
    };
    let main = br#"{"ServerURL": "https://old.example.com"}"#;
    // The dual-stage result through the CLI and through the layer, for new server `new`.
    let both_dual = |new: &str| {
        let case = Case {
            name: new.into(),
            main: main.to_vec(),
            fallback: None,
            old: Some("https://old.example.com".into()),
            new: new.into(),
        };
        let (cli_dual, _, _) = cli(&case, scratch.path());
        let layer_dual = layer(
            &tool_dir,
            "dual",
            case.old.as_deref(),
            &case.new,
            (main, None),
        );
        (cli_dual, layer_dual)
    };
    let (cli_dual, layer_dual) = both_dual("https://NEW.Example.com");
    let expected = r#"{"Servers":[{"ServerURL":"https://old.example.com"},{"ServerURL":"https://new.example.com"}]}"#;
    assert_eq!(cli_dual, Ok((Some(expected.to_string()), None)));
    assert_eq!(layer_dual, cli_dual);

    let (cli_dual, layer_dual) = both_dual("https://new.example.com/?tenant=1");
    let cli_err = cli_dual.unwrap_err();
    let layer_err = layer_dual.unwrap_err();
    assert!(cli_err.contains("query"), "{cli_err}");
    assert!(layer_err.contains("query"), "{layer_err}");
}
