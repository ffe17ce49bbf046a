//! The rules per client generation: a byte order mark, wrong value types, and what every
//! generation shares.

use menderconf::ClientGeneration::{self, Any, V3, V4, V5};
use menderconf::*;

const OLD: &str = "https://old.example.com";
const NEW: &str = "https://new.example.com";

fn url(s: &str) -> ServerUrl {
    ServerUrl::parse(s).unwrap()
}

fn with_bom(src: &str) -> Vec<u8> {
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(src.as_bytes());
    bytes
}

/// Stage 1 and 2 for a captured main file `bytes`, with `client`'s rules.
fn plan_for(bytes: &[u8], client: ClientGeneration) -> Result<MigrationPlan, ConfigError> {
    let captured = ConfigSet {
        main: Some(ConfigFile::parse_for(MAIN_CONFIG_PATH, bytes, client)?),
        fallback: None,
    };
    let options = PlanOptions {
        client,
        ..PlanOptions::default()
    };
    plan_migration_with(captured, &url(NEW), None, options)
}

#[test]
fn a_byte_order_mark_is_read_by_4_5_and_any_and_refused_for_3_naming_the_file() {
    let bytes = with_bom(r#"{"ServerURL": "https://old.example.com", "RetryPollCount": 3}"#);
    for client in [V4, V5, Any] {
        let plan = plan_for(&bytes, client).unwrap_or_else(|e| panic!("{client}: {e}"));
        for stage in [Stage::Dual, Stage::NewOnly] {
            let written = plan.stage_files(stage).main.as_ref().unwrap().to_bytes();
            assert!(
                written.starts_with(b"{"),
                "{client} {stage}: a BOM is never written"
            );
        }
        assert_eq!(
            plan.stage2.main.as_ref().unwrap().get("RetryPollCount"),
            Some(&3.into())
        );
    }
    let err = plan_for(&bytes, V3).unwrap_err();
    assert!(matches!(err, ConfigError::Bom { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with(MAIN_CONFIG_PATH), "{text}");
    assert!(
        text.contains("byte order mark") && text.contains("3.x"),
        "{text}"
    );
    // Not the invalid-JSON message that claimed 4.x/5.x ignore such a file.
    assert!(!text.contains("ignore the whole file"), "{text}");
}

#[test]
fn loading_a_bom_file_warns_for_any_and_names_the_file_for_3() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("mender.conf");
    std::fs::write(
        &main,
        with_bom(r#"{"ServerURL": "https://old.example.com"}"#),
    )
    .unwrap();
    let (set, warnings) = ConfigSet::load_for(&main, None, Any).unwrap();
    assert_eq!(set.servers(), vec![url(OLD)]);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].0.contains("byte order mark"), "{warnings:?}");
    assert!(warnings[0].0.contains(&main.display().to_string()));
    let (_, warnings) = ConfigSet::load_for(&main, None, V5).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let err = ConfigSet::load_for(&main, None, V3)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with(&main.display().to_string()), "{err}");
    // The default rules are `any`'s.
    assert_eq!(ConfigSet::load(&main, None).unwrap(), set);
}

#[test]
fn a_wrong_value_type_is_fatal_for_3_and_any_and_a_warning_for_4_5() {
    let src = br#"{"ServerURL": "https://old.example.com", "UpdatePollIntervalSeconds": "5"}"#;
    for client in [V3, Any] {
        match plan_for(src, client) {
            Err(ConfigError::WrongType { key, .. }) => assert_eq!(key, "UpdatePollIntervalSeconds"),
            other => panic!("{client}: {other:?}"),
        }
    }
    for client in [V4, V5] {
        let plan = plan_for(src, client).unwrap_or_else(|e| panic!("{client}: {e}"));
        assert!(
            plan.warnings
                .iter()
                .any(|w| w.0.contains("UpdatePollIntervalSeconds") && w.0.contains("ignores")),
            "{client}: {:?}",
            plan.warnings
        );
        // Kept as it is: the client ignores it, the migration does not change it.
        let main = plan.stage1.main.as_ref().unwrap();
        assert_eq!(main.get("UpdatePollIntervalSeconds"), Some(&"5".into()));
        // The stage plan carries the generation, so the device applies the same rules.
        let stage = plan.stage_plan(Stage::Dual);
        assert_eq!(stage.client, client);
        let json = String::from_utf8(stage.to_json()).unwrap();
        assert!(
            json.contains(&format!("\"client\": \"{}\"", client.as_str())),
            "{json}"
        );
        assert_eq!(StagePlan::from_json(json.as_bytes()).unwrap(), stage);
        stage.apply(&plan.captured).unwrap();
    }
}

#[test]
fn rules_every_generation_shares_stay_fatal() {
    let cases: [&[u8]; 4] = [
        // A wrongly typed server key: the migration must know the servers.
        br#"{"ServerURL": 5}"#,
        br#"{"Servers": {"ServerURL": "https://old.example.com"}}"#,
        // Servers next to a non-empty ServerURL (3.x exits 1, 4.x/5.x drop the file).
        br#"{"Servers": [{"ServerURL": "https://old.example.com"}], "ServerURL": "https://old.example.com"}"#,
        br#"{"Servers": []}"#,
    ];
    for client in ClientGeneration::ALL {
        for src in cases {
            assert!(
                plan_for(src, client).is_err(),
                "{client}: {}",
                String::from_utf8_lossy(src)
            );
        }
        // A blank ServerURL is never written: stage 2 has ServerURL new, stage 1 has none.
        let plan = plan_for(br#"{"ServerURL": "https://old.example.com"}"#, client).unwrap();
        let stage1 = plan.stage1.main.as_ref().unwrap();
        assert!(stage1.get("ServerURL").is_none() && stage1.get("Servers").is_some());
    }
}

#[test]
fn plan_json_without_a_client_means_any() {
    let plan = StagePlan::new(Stage::Dual, Mode::Patch, url(OLD), url(NEW));
    let json = String::from_utf8(plan.to_json()).unwrap();
    assert!(!json.contains("client"), "{json}");
    assert_eq!(StagePlan::from_json(json.as_bytes()).unwrap().client, Any);
}
