//! inventory management (ref §2.2): the v2 filter search on reported attributes (e.g.
//! `server_migration_stage`) and identity `status`, paging, and static groups (including a
//! deployment to a group).

mod common;

use common::*;
use mock_mender_server::MockServer;
use serde_json::{json, Value};

const SEARCH: &str = "/api/management/v2/inventory/filters/search";

fn accepted(server: &MockServer, serial: &str, seed: u8, stage: Option<&str>) -> String {
    let mgmt = Mgmt::new(server);
    let key = DeviceKey::ed25519(seed);
    let id = mgmt.preauthorize(&json!({"serial": serial}), &key.public_pem());
    let mut dev = SimDevice::new(&[("serial", serial)], key, vec![server.url().to_string()]);
    dev.authenticate().unwrap();
    let mut attrs = vec![
        json!({"name": "device_type", "value": "qemux86-64"}),
        json!({"name": "rank", "value": seed}),
    ];
    if let Some(stage) = stage {
        attrs.push(json!({"name": "server_migration_stage", "value": stage}));
    }
    let r = dev
        .api(
            "PATCH",
            "/api/devices/v1/inventory/device/attributes",
            Some(&json!(attrs)),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    id
}

fn ids(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn filter_search_on_migration_stage_and_status() {
    let (server, mgmt) = start_managed("inv");
    let dual1 = accepted(&server, "A", 1, Some("dual"));
    let dual2 = accepted(&server, "B", 2, Some("dual"));
    let _single = accepted(&server, "C", 3, Some("single"));
    let none = accepted(&server, "D", 4, None);
    let _pre = mgmt.preauthorize(&json!({"serial": "E"}), &DeviceKey::ed25519(5).public_pem());
    let body = json!({"filters": [
        {"scope": "inventory", "attribute": "server_migration_stage", "type": "$eq", "value": "dual"},
        {"scope": "identity", "attribute": "status", "type": "$eq", "value": "accepted"}],
        "per_page": 500, "page": 1});
    let r = mgmt.call("POST", SEARCH, Some(body));
    assert_eq!(r.status, 200, "{}", r.text());
    let mut want = vec![dual1.clone(), dual2.clone()];
    want.sort();
    assert_eq!(ids(&r.json()), want);
    assert_eq!(r.header("x-total-count"), Some("2"));
    assert!(r.json()[0]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["scope"] == "inventory" && a["name"] == "server_migration_stage"));
    // Not yet dual: $ne includes devices without the attribute; $exists false only those.
    let r = mgmt.call("POST", SEARCH, Some(json!({"filters": [
        {"scope": "inventory", "attribute": "server_migration_stage", "type": "$exists", "value": false},
        {"scope": "identity", "attribute": "status", "type": "$in", "value": ["accepted"]}]})));
    assert_eq!(ids(&r.json()), vec![none.clone()]);
    let r = mgmt.call("POST", SEARCH, Some(json!({"filters": [
        {"scope": "inventory", "attribute": "server_migration_stage", "type": "$ne", "value": "dual"}]})));
    assert_eq!(r.json().as_array().unwrap().len(), 3);
    // Numbers compare numerically; sort and per_page; attribute selection.
    let r = mgmt.call(
        "POST",
        SEARCH,
        Some(json!({
        "filters": [{"scope": "inventory", "attribute": "rank", "type": "$gte", "value": 2}],
        "sort": [{"scope": "inventory", "attribute": "rank", "order": "desc"}],
        "attributes": [{"scope": "identity", "attribute": "serial"}],
        "per_page": 2})),
    );
    let page = r.json();
    assert_eq!(r.header("x-total-count"), Some("3"));
    assert_eq!(
        page[0]["attributes"],
        json!([{"name": "serial", "value": "D", "scope": "identity"}])
    );
    assert_eq!(page[1]["attributes"][0]["value"], "C");
    assert!(r.header("link").unwrap().contains("rel=\"next\""));
    let r = mgmt.call(
        "POST",
        SEARCH,
        Some(json!({"device_ids": [dual1], "filters": []})),
    );
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert_eq!(
        mgmt.call("POST", SEARCH, Some(json!({"per_page": 501})))
            .status,
        400
    );
    assert_eq!(mgmt.call("POST", SEARCH, Some(json!({"filters": [{"scope": "inventory", "attribute": "x", "type": "$like", "value": 1}]}))).status, 400);
    let r = mgmt.call("POST", SEARCH, Some(json!({"filters": [{"scope": "identity", "attribute": "serial", "type": "$regex", "value": "^A"}]})));
    assert_eq!(r.json().as_array().unwrap().len(), 1);
}

#[test]
fn static_groups_and_group_deployment() {
    let (server, mgmt) = start_managed("groups");
    let a = accepted(&server, "A", 1, None);
    let b = accepted(&server, "B", 2, None);
    let c = accepted(&server, "C", 3, None);
    let inv = "/api/management/v1/inventory";
    // Joined; an unknown device; an invalid group name.
    for (device, group, want) in [
        (a.as_str(), "canary", 204),
        ("nope", "canary", 404),
        (a.as_str(), "bad name", 400),
    ] {
        let path = format!("{inv}/devices/{device}/group");
        let r = mgmt.call("PUT", &path, Some(json!({ "group": group })));
        assert_eq!(r.status, want, "{path} {group:?}: {}", r.text());
    }
    let r = mgmt.call(
        "PATCH",
        &format!("{inv}/groups/canary/devices"),
        Some(json!([a, b, "unknown"])),
    );
    assert_eq!(r.json(), json!({"updated_count": 1, "matched_count": 2}));
    assert_eq!(mgmt.get_ok(&format!("{inv}/groups")), json!(["canary"]));
    let r = mgmt.call("GET", &format!("{inv}/groups/canary/devices"), None);
    assert_eq!(r.header("x-total-count"), Some("2"));
    mgmt.expect_statuses(&[("GET", &format!("{inv}/groups/none/devices"), 404)]);
    let r = mgmt.call(
        "GET",
        &format!("{inv}/devices?group=canary&per_page=1"),
        None,
    );
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert_eq!(r.header("x-total-count"), Some("2"));
    let r = mgmt.call("GET", &format!("{inv}/devices?has_group=false"), None);
    assert_eq!(ids(&r.json()), vec![c.clone()]);
    // Group in the system scope of the search.
    let r = mgmt.call("POST", SEARCH, Some(json!({"filters": [{"scope": "system", "attribute": "group", "type": "$eq", "value": "canary"}]})));
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    // A deployment to the group targets its members at creation.
    assert_eq!(
        mgmt.upload_artifact(&build_artifact("a1", "qemux86-64", &json!({})), "")
            .status,
        201
    );
    let r = mgmt.call(
        "POST",
        "/api/management/v1/deployments/deployments/group/canary",
        Some(json!({"name": "canary", "artifact_name": "a1"})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let dep = r.created_id();
    let targeted = mgmt.get_ok(&format!(
        "/api/management/v1/deployments/deployments/{dep}/device_list"
    ));
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(targeted, json!(want));
    // Leave the group.
    mgmt.expect_statuses(&[("DELETE", &format!("{inv}/devices/{a}/group/canary"), 204)]);
    let r = mgmt.call(
        "DELETE",
        &format!("{inv}/groups/canary/devices"),
        Some(json!([b])),
    );
    assert_eq!(r.json(), json!({"updated_count": 1}));
    assert_eq!(mgmt.get_ok(&format!("{inv}/groups")), json!([]));
}
