//! Real-fleet cases from the user trial: the module's architecture, tenant tokens, extra
//! servers, signed fleets, usage errors (exit 2) and JSON output. No output is left behind on
//! any error.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

const OLD: &str = "https://old.mender.example.com";
const DR: &str = "https://dr.mender.example.com";
const NEW: &str = "https://new.mender.example.com";

fn write(dir: &Path, name: &str, content: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p.to_str().unwrap().to_string()
}

/// `artifacts` into `dir/out` with the given module binary and flags (no defaults added).
fn artifacts(dir: &Path, config: &str, extra: &[&str]) -> std::process::Output {
    let out = dir.join("out");
    let mut args = vec![
        "artifacts",
        "--config",
        config,
        "--new-server",
        NEW,
        "--name",
        "f",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cli(&args)
}

/// `plan --config CONFIG --new-server NEW` and `extra`.
fn plan(config: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["plan", "--config", config, "--new-server", NEW];
    args.extend_from_slice(extra);
    cli(&args)
}

/// `--device-type DT --module-binary BIN --arch ARCH`.
fn module_flags<'a>(device_type: &'a str, binary: &'a str, arch: &'a str) -> [&'a str; 6] {
    [
        "--device-type",
        device_type,
        "--module-binary",
        binary,
        "--arch",
        arch,
    ]
}

fn read_payload(artifact: &Path) -> Vec<u8> {
    // the whole artifact, uncompressed payloads included (`--compression none`)
    std::fs::read(artifact).unwrap()
}

/// Runs `artifacts` with `extra` and asserts it is refused with exit `code`, stderr naming
/// every needle, and no output directory left behind.
fn refused(dir: &Path, extra: &[&str], code: i32, needles: &[&str]) {
    let out = artifacts(dir, EXAMPLE, extra);
    assert_refused(&out, code, needles, &dir.join("out"), &format!("{extra:?}"));
}

/// A temp dir with the config `content` written as `name` and a stand-in static x86-64
/// module binary: (dir, config path, module path).
fn config_and_module(name: &str, content: &[u8]) -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(dir.path(), name, content);
    let m = write(dir.path(), "m", &fake_elf(62, 64, None));
    (dir, conf, m)
}

#[test]
fn without_target_or_module_it_refuses_and_says_how_to_pick() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m", &fake_elf(183, 64, None));
    let cases: [(&[&str], &[&str]); 3] = [
        (
            &["--device-type", "raspberrypi4"],
            &["uname -m", "aarch64-unknown-linux-musl"],
        ),
        // an unknown triple is a usage error too
        (
            &[
                "--device-type",
                "x",
                "--target",
                "armv7-unknown-linux-musleabihf",
            ],
            &[],
        ),
        // --module-binary alone does not say which CPU the devices have
        (&["--device-type", "x", "--module-binary", &m], &["--arch"]),
    ];
    for (extra, needles) in cases {
        refused(dir.path(), extra, 2, needles);
    }
}

#[test]
fn module_binary_is_checked_against_the_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let script = write(dir.path(), "script", b"#!/bin/sh\nexit 0\n");
    let text_file = write(dir.path(), "notes.txt", b"hello");
    let x86 = write(dir.path(), "x86", &fake_elf(62, 64, None));
    let arm32 = write(dir.path(), "arm32", &fake_elf(40, 32, None));
    let a_dir = dir.path().to_str().unwrap();
    for (module, arch, needle) in [
        (script.as_str(), "aarch64", "script"),
        (&text_file, "aarch64", "not an ELF"),
        (&x86, "aarch64", "x86-64"),
        (&arm32, "aarch64", "ARM, 32-bit"),
        (a_dir, "x86_64", "is a directory"),
    ] {
        let extra = module_flags("rpi", module, arch);
        refused(dir.path(), &extra, 1, &[needle, module]);
    }
    // the right machine: accepted; dynamic linking is said, the name carries the arch
    let dynamic = write(
        dir.path(),
        "dyn",
        &fake_elf(40, 32, Some("/lib/ld-linux-armhf.so.3")),
    );
    let out = artifacts(
        dir.path(),
        EXAMPLE,
        &module_flags("bbb", &dynamic, "armv7l"),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(stdout.contains("dynamically linked"), "{stdout}");
    assert!(stdout.contains("static build is preferred"), "{stdout}");
    assert!(dir
        .path()
        .join("out/f-module-install-armv7.mender")
        .is_file());
}

#[test]
fn device_types_are_checked_and_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let m = write(dir.path(), "m", &fake_elf(62, 64, None));
    for bad in ["", "  ", " rpi"] {
        let extra = module_flags(bad, &m, "x86_64");
        refused(dir.path(), &extra, 2, &[]);
    }
    let out = artifacts(
        dir.path(),
        EXAMPLE,
        &[
            &["--device-type", "rpi", "--device-type", "bbb"][..],
            &module_flags("rpi", &m, "x86_64")[..],
            &["--json"][..],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["device_types"], serde_json::json!(["rpi", "bbb"]));
    assert_eq!(report["arch"], "x86_64");
    let arts = report["artifacts"].as_array().unwrap();
    assert_eq!(arts.len(), 3);
    for a in arts {
        let path = a["path"].as_str().unwrap();
        assert_eq!(
            a["size"].as_u64().unwrap(),
            std::fs::metadata(path).unwrap().len()
        );
        assert_eq!(a["sha256"].as_str().unwrap().len(), 64);
    }
    assert_eq!(arts[0]["artifact_name"], "f-module-install-x86_64");
    assert_eq!(arts[1]["stage"], "stage1");
}

#[test]
fn errors_are_one_json_object_with_json() {
    let (dir, conf, m) =
        config_and_module("bad.conf", b"{\"ServerURL\": \"https://old.example.com\",}");
    let out = artifacts(
        dir.path(),
        &conf,
        &[&module_flags("x", &m, "x86_64")[..], &["--json"][..]].concat(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err: Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("stderr is not one JSON object ({e}): {}", text(&out.stderr)));
    assert!(err["error"].as_str().unwrap().contains("bad.conf"), "{err}");
    assert_eq!(err["exit_code"], 1);
    // a usage error, too
    let out = cli(&["plan", "--json", "--config"]);
    assert_eq!(out.status.code(), Some(2));
    let err: Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(err["exit_code"], 2);
}

#[test]
fn config_that_is_a_directory_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let out = plan(dir.path().to_str().unwrap(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("is a directory"), "{err}");
}

#[test]
fn verify_key_device_needs_sign_key_or_allow_unsigned() {
    let (dir, conf, m) = config_and_module(
        "m.conf",
        format!(r#"{{"ServerURL": "{OLD}", "ArtifactVerifyKey": "/etc/mender/key.pem"}}"#)
            .as_bytes(),
    );
    let base = module_flags("x", &m, "x86_64");
    let out = artifacts(dir.path(), &conf, &base);
    let out_dir = dir.path().join("out");
    assert_refused(&out, 1, &["--sign-key"], &out_dir, "unsigned");
    let mut allowed = base.to_vec();
    allowed.push("--allow-unsigned");
    let out = artifacts(dir.path(), &conf, &allowed);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn extra_servers_are_refused_unless_kept_or_old_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        dir.path(),
        "ha.conf",
        format!(r#"{{"Servers": [{{"ServerURL": "{OLD}"}}, {{"ServerURL": "{DR}"}}]}}"#).as_bytes(),
    );
    let plan = |extra: &[&str]| plan(&conf, &[extra, &["--json"]].concat());
    let out = plan(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains(DR) && err.contains("--keep-server"), "{err}");

    let out = plan(&["--keep-server", DR]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let s1 = &v["stage1"]["/etc/mender/mender.conf"]["Servers"];
    assert_eq!(
        *s1,
        serde_json::json!([{"ServerURL": OLD}, {"ServerURL": NEW}, {"ServerURL": DR}])
    );
    let s2 = &v["stage2"]["/etc/mender/mender.conf"];
    assert_eq!(
        s2["Servers"],
        serde_json::json!([{"ServerURL": NEW}, {"ServerURL": DR}])
    );
    assert!(s2.get("ServerURL").is_none());

    let out = plan(&["--old-server", OLD]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let warnings = v["warnings"].to_string();
    assert!(
        warnings.contains("drops") && warnings.contains(DR),
        "{warnings}"
    );
    assert_eq!(
        v["stage1"]["/etc/mender/mender.conf"]["Servers"],
        serde_json::json!([{"ServerURL": OLD}, {"ServerURL": NEW}])
    );
    // a kept server must be one the devices list
    let out = plan(&["--keep-server", "https://other.example.com"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn new_tenant_token_is_set_in_both_stages_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "NEWTENANT.secret-token-value.Zx9Q";
    let token = write(dir.path(), "token", format!("{secret}\n").as_bytes());
    let m = write(dir.path(), "m", &fake_elf(62, 64, None));
    for mode in ["patch", "replace"] {
        let out = artifacts(
            dir.path(),
            EXAMPLE,
            &[
                &module_flags("x", &m, "x86_64")[..],
                &[
                    "--new-tenant-token-file",
                    token.as_str(),
                    "--compression",
                    "none",
                    "--mode",
                    mode,
                    "--force",
                ][..],
            ]
            .concat(),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(!printed.contains(secret), "token printed: {printed}");
        for stage in ["f-stage1-dual.mender", "f-stage2-new-only.mender"] {
            let bytes = read_payload(&dir.path().join("out").join(stage));
            let hay = String::from_utf8_lossy(&bytes);
            assert!(
                hay.contains(secret),
                "{mode} {stage} does not carry the new token"
            );
        }
    }
    let out = plan(EXAMPLE, &["--new-tenant-token-file", &token, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains(secret), "{all}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tenant_token"]["stages"], "********Zx9Q");
    assert_eq!(
        v["stage1"]["/etc/mender/mender.conf"]["TenantToken"],
        "********Zx9Q"
    );
    assert_eq!(
        v["stage2"]["/etc/mender/mender.conf"]["TenantToken"],
        "********Zx9Q"
    );
    let route = v["tenant_token"]["route"].as_str().unwrap();
    assert!(route.contains("only the servers can tell"), "{route}");
    // empty token file
    let empty = write(dir.path(), "empty", b"\n");
    let out = plan(EXAMPLE, &["--new-tenant-token-file", &empty]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("empty"));
}

#[test]
fn plan_help_documents_the_json_it_prints() {
    let help = text(&cli(&["plan", "--help"]).stdout);
    let out = plan(
        EXAMPLE,
        &["--target", "aarch64-unknown-linux-musl", "--json"],
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in v.as_object().unwrap().keys() {
        assert!(
            help.contains(&format!("\"{key}\"")),
            "plan --help lacks {key}:\n{help}"
        );
    }
    for key in v["tenant_token"].as_object().unwrap().keys() {
        assert!(
            help.contains(&format!("\"{key}\"")),
            "plan --help lacks {key}"
        );
    }
    assert!(help.contains("null means"), "{help}");
}

#[test]
fn unreachable_server_hosts_are_refused() {
    for (bad, needle) in [
        ("https://n]{b[ew.example.com", "letters, digits"),
        ("https://new..example.com", "empty label"),
        ("https://-bad-.example.com", "hyphen"),
        ("https://ñew.example.com", "xn--ew-yja.example.com"),
    ] {
        let out = cli(&["plan", "--config", EXAMPLE, "--new-server", bad]);
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(needle),
            "{bad}: {}",
            text(&out.stderr)
        );
    }
}

/// The fleet orchestrator's test environment (two mock servers, a simulated fleet, the
/// migration artifacts), shared with `crates/fleet/tests`.
#[path = "../../fleet/tests/common/mod.rs"]
mod fleet_env;

/// `mender-migrate fleet run` as a real process, killed with SIGKILL at several points of its
/// journal (after N records), then started again with the same journal until it finishes.
/// After every kill: no device rejected on old without a set on new, no deployment created
/// twice. At the end: every online device on new at stage 2, the straggler and the device cut
/// off from new accepted on old, and no device rejected on old before its stage 1 succeeded.
#[test]
fn fleet_run_killed_with_sigkill_and_resumed() {
    use std::time::{Duration, Instant};
    let env = fleet_env::Env::start(fleet_env::EnvSpec {
        offline: 1,
        cut_off_from_new: 1,
        ..fleet_env::EnvSpec::online(12)
    });
    let journal = env.journal.to_str().unwrap().to_string();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mender-migrate"))
            .args(["fleet", "run", "--journal", &journal, "--old-server"])
            .arg(env.old.url())
            .arg("--new-server")
            .arg(env.new.url())
            .arg("--old-token-file")
            .arg(&env.old_token_file)
            .arg("--new-token-file")
            .arg(&env.new_token_file)
            .arg("--artifacts")
            .arg(&env.artifacts)
            .args([
                "--canary",
                "4",
                "--max-batch",
                "8",
                "--failure-threshold",
                "50%",
            ])
            .args([
                "--min-sample",
                "2",
                "--stage-timeout",
                "8s",
                "--appear-timeout",
                "4s",
            ])
            .args([
                "--poll-interval",
                "200ms",
                "--rate",
                "1000",
                "--concurrency",
                "4",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("mender-migrate runs")
    };
    let lines = || {
        std::fs::read_to_string(&env.journal)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    // Kill after this many more journal records each time: the snapshot, a deployment, the
    // middle of a batch's per-device steps, later batches.
    let mut kills = 0;
    for more in [16, 5, 9, 23, 40, 70] {
        let start = lines();
        let mut child = run();
        let deadline = Instant::now() + Duration::from_secs(120);
        let exited = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if lines() >= start + more {
                child.kill().expect("SIGKILL");
                child.wait().unwrap();
                break None;
            }
            assert!(Instant::now() < deadline, "no journal progress in 120s");
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(status) = exited {
            // It finished before the kill point: the remaining points are past the end.
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(status.success(), "run ended with {status}: {err}");
            break;
        }
        kills += 1;
        assert_eq!(env.lost(), Vec::<String>::new(), "after kill {kills}");
        assert_eq!(
            env.duplicate_deployments(),
            Vec::<String>::new(),
            "after kill {kills}"
        );
    }
    assert!(kills >= 3, "only {kills} kills landed before the run ended");
    // Run to the end with the same journal (a finished journal just reports again).
    let out = run().wait_with_output().unwrap();
    assert!(out.status.success(), "final run: {}", text(&out.stderr));
    assert_eq!(env.stranded(), Vec::<String>::new());
    assert_eq!(env.duplicate_deployments(), Vec::<String>::new());
    let sim = env.fleets.last().unwrap().report();
    assert_eq!(sim.counts.on_new, 12, "{:?}", sim.counts);
    for id in env.offline_ids.iter().chain(&env.cut_off_ids) {
        assert_eq!(
            env.old_status(id),
            Some(mock_mender_server::AuthStatus::Accepted),
            "{id} stays accepted on old"
        );
    }
    // From the journal: every device rejected on old had reported stage-1 success before.
    let mut stage1_ok = std::collections::HashSet::new();
    for line in std::fs::read_to_string(&env.journal).unwrap().lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        if r["t"] != "state" {
            continue;
        }
        let dev = r["dev"].as_str().unwrap().to_string();
        match r["state"].as_str().unwrap() {
            "stage1_ok" => {
                stage1_ok.insert(dev);
            }
            "rejected_on_old" => assert!(
                stage1_ok.contains(&dev),
                "{dev} rejected on old before its stage 1 succeeded"
            ),
            _ => {}
        }
    }
}
