//! `--client 3|4|5|any` on `plan` and `artifacts`: which generation's rules apply, what the
//! reports say, and what the stage artifacts carry to the device.

mod common;

use common::{cli, fake_elf, text};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

const OLD: &str = "https://old.example.com";
const NEW: &str = "https://new.example.com";

/// A captured config starting with a UTF-8 byte order mark, as some editors save it.
fn bom_config(dir: &Path) -> String {
    let path = dir.join("bom-mender.conf");
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(
        format!("{{\"ServerURL\": \"{OLD}\", \"TenantToken\": \"tenant-token-0123456789\"}}\n")
            .as_bytes(),
    );
    std::fs::write(&path, bytes).unwrap();
    path.display().to_string()
}

fn plan(config: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["plan", "--config", config, "--new-server", NEW];
    args.extend_from_slice(extra);
    cli(&args)
}

#[test]
fn each_client_generation_gets_its_rules() {
    let dir = tempfile::tempdir().unwrap();
    let bom = bom_config(dir.path());
    let typed = dir.path().join("typed.conf");
    let typed_text = format!("{{\"ServerURL\": \"{OLD}\", \"RetryPollIntervalSeconds\": \"300\"}}");
    std::fs::write(&typed, typed_text).unwrap();
    let typed = typed.display().to_string();
    // (captured config, --client, planned?, what the output or the error says)
    let cases = [
        (&bom, "3", false, "byte order mark"),
        (&bom, "4", true, "NEW"),
        (&bom, "5", true, "NEW"),
        (&bom, "any", true, "a 3.x client exits 1 on this file"),
        (&typed, "3", false, "RetryPollIntervalSeconds"),
        (
            &typed,
            "4",
            true,
            "the 4.x client ignores `RetryPollIntervalSeconds`",
        ),
        (
            &typed,
            "5",
            true,
            "the 5.x client ignores `RetryPollIntervalSeconds`",
        ),
        (&typed, "any", false, "RetryPollIntervalSeconds"),
    ];
    for (config, client, planned, says) in cases {
        let out = plan(config, &["--client", client, "--json"]);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr)).replace(NEW, "NEW");
        assert_eq!(out.status.success(), planned, "{client} {config}: {all}");
        assert!(all.contains(says), "{client} {config}: {all}");
        if planned {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(v["client"]["generation"], client);
            assert_eq!(
                v["stage1"]["/etc/mender/mender.conf"]["Servers"][1]["ServerURL"],
                NEW
            );
        } else {
            // The refusal names the file, and is not the invalid-JSON message that claimed
            // 4.x/5.x ignore such a file.
            assert!(all.contains(config.as_str()), "{all}");
            assert!(!all.contains("ignore the whole file"), "{all}");
        }
    }
    // The default is `any`, and the text report says so.
    let out = plan(&bom, &[]);
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success() && report.contains("rules:      any client"),
        "{report}"
    );
}

#[test]
fn an_unknown_client_is_a_usage_error() {
    let out = plan(common::EXAMPLE, &["--client", "6"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("3, 4, 5, any"),
        "{}",
        text(&out.stderr)
    );
}

/// The payload files of an artifact, by name.
fn payload_files(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    menderartifact::read_payloads(file, None, |stream, content| {
        let mut bytes = Vec::new();
        content.read_to_end(&mut bytes)?;
        files.insert(stream.name.to_string(), bytes);
        Ok(())
    })
    .unwrap();
    files
}

#[test]
fn the_stage_artifacts_carry_the_generation_and_never_a_bom() {
    let dir = tempfile::tempdir().unwrap();
    let config = bom_config(dir.path());
    let module = dir.path().join("module");
    std::fs::write(&module, fake_elf(62, 64, None)).unwrap();
    for (client, mode) in [("5", "replace"), ("any", "patch")] {
        let out_dir = dir.path().join(format!("out-{client}"));
        let out = cli(&[
            "artifacts",
            "--config",
            &config,
            "--new-server",
            NEW,
            "--device-type",
            "qemux86-64",
            "--module-binary",
            module.to_str().unwrap(),
            "--arch",
            "x86_64",
            "--out",
            out_dir.to_str().unwrap(),
            "--mode",
            mode,
            "--client",
            client,
            "--json",
        ]);
        assert!(out.status.success(), "{client}: {}", text(&out.stderr));
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["client"]["generation"], client);
        for stage in ["stage1-dual", "stage2-new-only"] {
            let files = payload_files(&out_dir.join(format!("server-migration-{stage}.mender")));
            let plan: Value = serde_json::from_slice(&files["plan.json"]).unwrap();
            // `any` is left out, so modules from before the field still read the plan.
            assert_eq!(
                plan.get("client").and_then(Value::as_str),
                (client != "any").then_some(client)
            );
            for (name, bytes) in &files {
                assert!(
                    !bytes.starts_with(b"\xEF\xBB\xBF"),
                    "{client} {stage} {name}"
                );
            }
            assert_eq!(
                files.len(),
                if mode == "replace" { 2 } else { 1 },
                "{files:?}"
            );
        }
    }
}
