//! Client-exact validation rules and stage rendering of the config engine.

use menderconf::*;
use serde_json::json;

fn file(origin: &str, src: &str) -> ConfigFile {
    ConfigFile::parse(origin, src.as_bytes()).unwrap_or_else(|e| panic!("{origin}: {e}"))
}

fn main_only(src: &str) -> ConfigSet {
    ConfigSet {
        main: Some(file(MAIN_CONFIG_PATH, src)),
        fallback: None,
    }
}

fn both(main: &str, fallback: &str) -> ConfigSet {
    ConfigSet {
        main: Some(file(MAIN_CONFIG_PATH, main)),
        fallback: Some(file(FALLBACK_CONFIG_PATH, fallback)),
    }
}

fn url(s: &str) -> ServerUrl {
    ServerUrl::parse(s).unwrap()
}

/// Asserts `set` is refused for `Servers` next to a `ServerURL` string (3.4 exits, 4.x/5.x drop
/// the file) and returns the error; `case` names the config in the failure message.
fn servers_and_server_url(case: &str, set: &ConfigSet) -> ConfigError {
    let err = set
        .validate()
        .expect_err(&format!("{case}: must be refused"));
    assert!(
        matches!(err, ConfigError::ServersAndServerUrl { .. }),
        "{case}: {err}"
    );
    err
}

const OLD: &str = "https://old.example.com";
const NEW: &str = "https://new.example.com";

#[test]
fn servers_with_server_url_in_one_file_is_fatal() {
    let set = main_only(r#"{"Servers": [{"ServerURL": "https://a"}], "ServerURL": "https://b"}"#);
    servers_and_server_url("one file", &set);
}

#[test]
fn servers_with_server_url_split_across_files_is_fatal() {
    let set = both(
        r#"{"Servers": [{"ServerURL": "https://a"}]}"#,
        r#"{"ServerURL": "https://b"}"#,
    );
    let msg = servers_and_server_url("Servers in main", &set).to_string();
    assert!(
        msg.contains(MAIN_CONFIG_PATH) && msg.contains(FALLBACK_CONFIG_PATH),
        "{msg}"
    );
    // and the other way round
    let set = both(
        r#"{"ServerURL": "https://b"}"#,
        r#"{"Servers": [{"ServerURL": "https://a"}]}"#,
    );
    servers_and_server_url("Servers in the fallback", &set);
}

#[test]
fn server_url_key_matches_case_insensitively() {
    for key in ["serverurl", "SERVERURL", "serverUrl", "ſerverURL"] {
        let set = main_only(&format!(
            r#"{{"Servers": [{{"ServerURL": "https://a"}}], "{key}": "https://b"}}"#
        ));
        servers_and_server_url(key, &set);
    }
    let set = main_only(r#"{"servers": [{"serverurl": "https://a"}], "ServerURL": "https://b"}"#);
    servers_and_server_url("lower-case servers", &set);
}

#[test]
fn blank_server_url_next_to_servers_is_refused_for_4x_5x() {
    let set = main_only(r#"{"Servers": [{"ServerURL": "https://a"}], "ServerURL": ""}"#);
    servers_and_server_url("blank ServerURL", &set);
    // but `null` is not a string: accepted by every client
    main_only(r#"{"Servers": [{"ServerURL": "https://a"}], "ServerURL": null}"#)
        .validate()
        .unwrap();
}

#[test]
fn main_null_servers_resets_the_fallbacks() {
    let set = both(
        r#"{"Servers": null, "ServerURL": "https://b"}"#,
        r#"{"Servers": [{"ServerURL": "https://a"}]}"#,
    );
    // Go: Servers becomes nil again, so only ServerURL remains -- valid for 3.4, but the
    // fallback's Servers next to a ServerURL string still makes 4.x/5.x drop the file.
    assert!(set.validate().is_err());
    assert_eq!(set.servers(), vec![url("https://b")]);
}

#[test]
fn empty_servers_is_fatal() {
    let err = main_only(r#"{"Servers": []}"#).validate().unwrap_err();
    assert!(matches!(err, ConfigError::EmptyServers { .. }));
    assert!(err.to_string().contains("panic"));
}

#[test]
fn path_prefix_is_fatal() {
    let err = main_only(r#"{"ServerURL": "https://a.example.com/mender"}"#)
        .validate()
        .unwrap_err();
    assert!(matches!(err, ConfigError::BadServerUrl { .. }), "{err}");
    let err = main_only(r#"{"Servers": [{"ServerURL": "https://a.example.com/x/"}]}"#)
        .validate()
        .unwrap_err();
    assert!(matches!(err, ConfigError::BadServerUrl { .. }), "{err}");
}

#[test]
fn invalid_json_and_types_name_the_file() {
    let err = ConfigFile::parse(FALLBACK_CONFIG_PATH, b"{\"ServerURL\": }").unwrap_err();
    assert!(err.to_string().starts_with(FALLBACK_CONFIG_PATH), "{err}");
    assert!(err.to_string().contains("line 1, column 15"), "{err}");
    let err =
        ConfigFile::parse(MAIN_CONFIG_PATH, br#"{"UpdatePollIntervalSeconds": "5"}"#).unwrap_err();
    assert!(
        err.to_string().contains("UpdatePollIntervalSeconds"),
        "{err}"
    );
}

#[test]
fn warnings_for_unknown_and_duplicate_keys() {
    let w = main_only(r#"{"ServerURL": "https://a", "ServerUrl2": 1, "serverurl": "https://a"}"#)
        .validate()
        .unwrap();
    let text: Vec<String> = w.iter().map(|w| w.to_string()).collect();
    assert!(text.iter().any(|t| t.contains("ServerUrl2")), "{text:?}");
    assert!(
        text.iter().any(|t| t.contains("case-insensitive")),
        "{text:?}"
    );
}

#[test]
fn old_equal_new_is_refused() {
    let set = main_only(&format!(r#"{{"ServerURL": "{OLD}/"}}"#));
    let err = plan_migration(set, &url(OLD), None).unwrap_err();
    assert!(matches!(err, ConfigError::SameServer { .. }));
}

#[test]
fn stage1_replaces_server_url_in_place_and_keeps_everything_else() {
    let src = format!(
        r#"{{"InventoryPollIntervalSeconds": 5, "ServerURL": "{OLD}", "TenantToken": "tok-123456", "X-Custom": {{"a": [1, "b"]}}, "ArtifactVerifyKey": "/etc/mender/artifact-verify-key.pem"}}"#
    );
    let plan = plan_migration(main_only(&src), &url(NEW), None).unwrap();
    // Key order kept: the server key stays where ServerURL was, in both stages.
    let keys_with = |server_key: &'static str| {
        [
            "InventoryPollIntervalSeconds",
            server_key,
            "TenantToken",
            "X-Custom",
            "ArtifactVerifyKey",
        ]
    };
    let s1 = &plan.stage1.main.as_ref().unwrap().object;
    let keys: Vec<&str> = s1.keys().map(|k| k.as_str()).collect();
    assert_eq!(keys, keys_with("Servers"));
    assert_eq!(
        s1["Servers"],
        json!([{"ServerURL": OLD}, {"ServerURL": NEW}])
    );
    assert_eq!(s1["X-Custom"], json!({"a": [1, "b"]}));
    assert_eq!(s1["TenantToken"], "tok-123456");
    assert_eq!(
        plan.artifact_verify_key().as_deref(),
        Some("/etc/mender/artifact-verify-key.pem")
    );
    let s2 = &plan.stage2.main.as_ref().unwrap().object;
    let keys: Vec<&str> = s2.keys().map(|k| k.as_str()).collect();
    assert_eq!(keys, keys_with("ServerURL"));
    assert_eq!(s2["ServerURL"], NEW);
    plan.stage1.validate().unwrap();
    plan.stage2.validate().unwrap();
    assert_eq!(plan.stage1.servers(), vec![url(OLD), url(NEW)]);
    assert_eq!(plan.stage2.servers(), vec![url(NEW)]);
}

#[test]
fn debian_layout_server_in_fallback_stays_in_fallback() {
    let set = both(
        r#"{"UpdatePollIntervalSeconds": 5}"#,
        &format!(r#"{{"ServerURL": "{OLD}", "RetryPollIntervalSeconds": 5}}"#),
    );
    let plan = plan_migration(set, &url(NEW), None).unwrap();
    let main = &plan.stage1.main.as_ref().unwrap().object;
    assert!(!main.contains_key("Servers") && !main.contains_key("ServerURL"));
    let fb = &plan.stage1.fallback.as_ref().unwrap().object;
    assert_eq!(
        fb["Servers"],
        json!([{"ServerURL": OLD}, {"ServerURL": NEW}])
    );
    assert_eq!(fb.keys().next().unwrap(), "Servers");
    let fb2 = &plan.stage2.fallback.as_ref().unwrap().object;
    assert_eq!(fb2["ServerURL"], NEW);
    assert!(!fb2.contains_key("Servers"));
}

#[test]
fn a_blank_server_url_in_the_other_file_is_removed_not_kept() {
    let set = both(
        &format!(r#"{{"ServerURL": "{OLD}"}}"#),
        r#"{"ServerURL": "", "serverurl": "", "Other": 1}"#,
    );
    let plan = plan_migration(set, &url(NEW), None).unwrap();
    let fb = &plan.stage1.fallback.as_ref().unwrap().object;
    assert_eq!(fb.keys().collect::<Vec<_>>(), ["Other"]);
}

#[test]
fn no_server_needs_old_server() {
    let set = main_only(r#"{"UpdatePollIntervalSeconds": 5}"#);
    assert!(matches!(
        plan_migration(set.clone(), &url(NEW), None),
        Err(ConfigError::NoServer { .. })
    ));
    // with an explicit old server the captured device must still be on it
    assert!(matches!(
        plan_migration(set, &url(NEW), Some(&url(OLD))),
        Err(ConfigError::Precondition(_))
    ));
}

#[test]
fn device_side_preconditions() {
    let dual = StagePlan::new(Stage::Dual, Mode::Patch, url(OLD), url(NEW));
    let new_only = StagePlan::new(Stage::NewOnly, Mode::Patch, url(OLD), url(NEW));
    let on_old = main_only(&format!(r#"{{"ServerURL": "{OLD}"}}"#));
    let on_other = main_only(r#"{"ServerURL": "https://elsewhere.example.com"}"#);
    let on_new = main_only(&format!(r#"{{"ServerURL": "{NEW}"}}"#));
    // stage 2 before stage 1 is refused
    let err = new_only.apply(&on_old).unwrap_err();
    assert!(err.to_string().contains("install stage 1"), "{err}");
    // a stage-1 artifact for another fleet is refused
    assert!(dual
        .apply(&on_other)
        .unwrap_err()
        .to_string()
        .contains("made for old server"));
    // stage 1 on a migrated device would move it back
    assert!(dual
        .apply(&on_new)
        .unwrap_err()
        .to_string()
        .contains("move it back"));
    // both stages are idempotent
    let s1 = dual.apply(&on_old).unwrap();
    assert_eq!(dual.apply(&s1).unwrap(), s1);
    let s2 = new_only.apply(&s1).unwrap();
    assert_eq!(new_only.apply(&s2).unwrap(), s2);
}

#[test]
fn device_result_is_validated_with_the_same_rules() {
    // The device's fallback has ServerURL: stage 1 writes Servers into main (the home of the
    // server setting) and must remove the fallback's ServerURL, never leave both.
    let set = both(
        &format!(r#"{{"ServerURL": "{OLD}"}}"#),
        r#"{"ServerURL": "https://stale.example.com"}"#,
    );
    let dual = StagePlan::new(Stage::Dual, Mode::Patch, url(OLD), url(NEW));
    let out = dual.apply(&set).unwrap();
    out.validate().unwrap();
    // replacement files that would kill the client are refused
    let bad = both(
        r#"{"Servers": [{"ServerURL": "https://old.example.com"}, {"ServerURL": "https://new.example.com"}]}"#,
        r#"{"ServerURL": "https://x"}"#,
    );
    let mut replace = dual.clone();
    replace.mode = Mode::Replace;
    assert!(matches!(
        replace.check_replacement(&set, &bad),
        Err(ConfigError::ServersAndServerUrl { .. })
    ));
    let wrong = main_only(r#"{"Servers": [{"ServerURL": "https://old.example.com"}]}"#);
    assert!(matches!(
        replace.check_replacement(&set, &wrong),
        Err(ConfigError::Precondition(_))
    ));
}

#[test]
fn device_without_any_config_file() {
    let empty = ConfigSet::default();
    let dual = StagePlan::new(Stage::Dual, Mode::Patch, url(OLD), url(NEW));
    assert!(dual.apply(&empty).is_err());
}

#[test]
fn plan_json_roundtrip_and_refusals() {
    let p = StagePlan::new(Stage::NewOnly, Mode::Patch, url(OLD), url(NEW));
    assert_eq!(StagePlan::from_json(&p.to_json()).unwrap(), p);
    let text = String::from_utf8(p.to_json()).unwrap();
    assert!(
        text.contains("\"new-only\"") && text.contains("\"patch\""),
        "{text}"
    );
    for bad in [
        r#"{"format": 2, "mode": "patch", "stage": "dual", "old_server": "https://a", "new_server": "https://b"}"#,
        r#"{"format": 1, "mode": "patch", "stage": "dual", "old_server": "https://a", "new_server": "https://a/"}"#,
        r#"{"format": 1, "mode": "patch", "stage": "triple", "old_server": "https://a", "new_server": "https://b"}"#,
        r#"{"format": 1, "mode": "replace", "stage": "dual", "old_server": "https://a", "new_server": "https://b"}"#,
        r#"{"format": 1, "mode": "patch", "stage": "dual", "old_server": "https://a/p", "new_server": "https://b"}"#,
        r#"{"format": 1, "mode": "patch", "stage": "dual", "old_server": "https://a"}"#,
        "not json",
    ] {
        assert!(StagePlan::from_json(bad.as_bytes()).is_err(), "{bad}");
    }
}

#[test]
fn load_reads_missing_files_as_absent() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("mender.conf");
    std::fs::write(&main, format!(r#"{{"ServerURL": "{OLD}"}}"#)).unwrap();
    let set = ConfigSet::load(&main, Some(&dir.path().join("missing.conf"))).unwrap();
    assert!(set.main.is_some() && set.fallback.is_none());
    assert_eq!(set.main.unwrap().origin, main.display().to_string());
}

#[test]
fn plan_warns_about_tenant_token() {
    let plan = plan_migration(
        main_only(&format!(
            r#"{{"ServerURL": "{OLD}", "TenantToken": "abc"}}"#
        )),
        &url(NEW),
        None,
    )
    .unwrap();
    assert!(plan.warnings.iter().any(|w| w.0.contains("TenantToken")));
}

/// Found by the `mender_conf` fuzz target: serde_json's default float parser is not correctly
/// rounded, so a float in an unknown key changed on every rewrite. Values must survive a
/// render/parse round trip bit for bit.
#[test]
fn float_values_survive_rewrites_exactly() {
    let src = r#"{"ServerURL": "https://old.example.com", "Custom": 9999999000000000000000000000000000000001578511669393358846, "Ratio": 0.30000000000000004, "Tiny": 4.9e-324}"#;
    let once = file(MAIN_CONFIG_PATH, src).to_bytes();
    let twice = file(MAIN_CONFIG_PATH, std::str::from_utf8(&once).unwrap()).to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&once),
        String::from_utf8_lossy(&twice),
        "a rewrite changed a number"
    );
    let parsed = file(MAIN_CONFIG_PATH, src);
    assert_eq!(
        parsed.get("Custom").and_then(|v| v.as_f64()),
        Some(9999999000000000000000000000000000000001578511669393358846f64)
    );
}
