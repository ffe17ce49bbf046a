//! deployments and artifacts as the real server behaves (ref §0.5, §0.6, §0.10, §2.3): the
//! constructor-checksum 409 (and the pre-4.0 behaviour), v2 lists by name, statistics for many
//! deployments, lazy `devices/list`, per-device abort, the active-deployment cap, artifact
//! lookups and conflicts, and the device side of `next` per edition.

mod common;

use common::*;
use mock_mender_server::{Edition, MockServer};
use serde_json::{json, Value};

const DEPLOYMENTS: &str = "/api/management/v1/deployments/deployments";
const DEPLOYMENTS_V2: &str = "/api/management/v2/deployments/deployments";

fn upload(mgmt: &Mgmt, name: &str) {
    let r = mgmt.upload_artifact(&build_artifact(name, "qemux86-64", &json!({})), "");
    assert_eq!(r.status, 201, "{}", r.text());
}

fn create(mgmt: &Mgmt, body: Value) -> Reply {
    mgmt.call("POST", DEPLOYMENTS, Some(body))
}

#[test]
fn identical_active_deployment_is_409_unless_pre_4_0() {
    let (server, mgmt) = start_managed("dedup");
    upload(&mgmt, "a1");
    let body = json!({"name": "b001", "artifact_name": "a1", "devices": ["d1", "d2"]});
    // Device ids are not validated (the real server stores them as given).
    assert_eq!(create(&mgmt, body.clone()).status, 201);
    let r = create(&mgmt, body.clone());
    assert_eq!(r.status, 409, "{}", r.text());
    // Another constructor (other devices) is fine.
    assert_eq!(
        create(
            &mgmt,
            json!({"name": "b001", "artifact_name": "a1", "devices": ["d3"]})
        )
        .status,
        201
    );
    // Unknown artifact: 422; both devices and all_devices: 400.
    assert_eq!(
        create(
            &mgmt,
            json!({"name": "x", "artifact_name": "nope", "devices": ["d1"]})
        )
        .status,
        422
    );
    assert_eq!(
        create(
            &mgmt,
            json!({"name": "x", "artifact_name": "a1", "devices": ["d1"], "all_devices": true})
        )
        .status,
        400
    );
    // Older servers create a second identical deployment.
    server.update_settings(|s| s.duplicate_deployment_check = false);
    assert_eq!(create(&mgmt, body.clone()).status, 201);
    let r = mgmt.call("GET", &format!("{DEPLOYMENTS_V2}?name=b001"), None);
    assert_eq!(r.json().as_array().unwrap().len(), 3);
}

#[test]
fn v2_list_by_name_with_paging_headers() {
    let (_server, mgmt) = start_managed("v2list");
    upload(&mgmt, "a1");
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = create(
            &mgmt,
            json!({"name": format!("srvmig-run-s1-b{i:03}"), "artifact_name": "a1", "devices": [format!("d{i}")]}),
        );
        ids.push(r.created_id());
    }
    let r = mgmt.call(
        "GET",
        &format!("{DEPLOYMENTS_V2}?name=srvmig-run-s1-b003"),
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["id"], ids[3].as_str());
    assert_eq!(r.header("x-total-count"), Some("1"));
    let r = mgmt.call(
        "GET",
        &format!("{DEPLOYMENTS_V2}?name=srvmig-run-s1-b000&name=srvmig-run-s1-b004&status=pending"),
        None,
    );
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    let r = mgmt.call("GET", &format!("{DEPLOYMENTS_V2}?per_page=2"), None);
    assert_eq!(r.header("x-total-count"), Some("5"));
    // Newest first.
    assert_eq!(r.json()[0]["id"], ids[4].as_str());
    let link = r.header("link").unwrap();
    assert!(
        link.contains(&format!(
            "<{DEPLOYMENTS_V2}?page=3&per_page=2>; rel=\"last\""
        )),
        "{link}"
    );
    assert_eq!(
        mgmt.call("GET", &format!("{DEPLOYMENTS_V2}?per_page=501"), None)
            .status,
        400
    );
    assert_eq!(
        mgmt.call("GET", &format!("{DEPLOYMENTS_V2}?id={}", ids[1]), None)
            .json()[0]["name"],
        "srvmig-run-s1-b001"
    );
    // Statistics of several deployments in one call.
    let r = mgmt.call(
        "POST",
        &format!("{DEPLOYMENTS}/statistics/list"),
        Some(json!({"deployment_ids": [ids[0], ids[2], "unknown"]})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["id"], ids[0].as_str());
    assert_eq!(list[0]["stats"]["pending"], 1);
}

fn accepted(server: &MockServer, serial: &str, seed: u8) -> (SimDevice, String) {
    let mgmt = Mgmt::new(server);
    let key = DeviceKey::ed25519(seed);
    let id = mgmt.preauthorize(&json!({"serial": serial}), &key.public_pem());
    let mut dev = SimDevice::new(&[("serial", serial)], key, vec![server.url().to_string()]);
    dev.authenticate().unwrap();
    (dev, id)
}

#[test]
fn devices_list_is_lazy_and_paged_and_abort_per_device() {
    let (server, mgmt) = start_managed("lazy");
    upload(&mgmt, "a1");
    let (mut a, a_id) = accepted(&server, "A", 1);
    let (_b, b_id) = accepted(&server, "B", 2);
    let dep = mgmt.deploy("batch", "a1", &[&a_id, &b_id]);
    let list_url = format!("{DEPLOYMENTS}/{dep}/devices/list");
    // Statistics count both as pending; devices/list shows nobody until someone polls.
    assert_eq!(mgmt.statistics(&dep)["pending"], 2);
    let r = mgmt.call("GET", &list_url, None);
    assert_eq!(r.json(), json!([]));
    assert_eq!(r.header("x-total-count"), Some("0"));
    let mut targeted = vec![a_id.clone(), b_id.clone()];
    targeted.sort();
    assert_eq!(
        mgmt.call("GET", &format!("{DEPLOYMENTS}/{dep}/device_list"), None)
            .json(),
        json!(targeted)
    );
    a.poll().unwrap().expect("offered");
    let r = mgmt.call("GET", &list_url, None);
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    assert_eq!(r.json()[0]["id"], a_id.as_str());
    assert_eq!(r.json()[0]["status"], "success");
    assert_eq!(
        mgmt.call("GET", &format!("{list_url}?status=finished"), None)
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        mgmt.call("GET", &format!("{list_url}?status=failure"), None)
            .json(),
        json!([])
    );
    mgmt.expect_statuses(&[
        ("GET", &format!("{list_url}?status=bogus"), 400),
        ("GET", &format!("{list_url}?per_page=501"), 400),
    ]);
    // B never polls: drop it from the batch; the deployment then finishes.
    assert_eq!(mgmt.deployment(&dep)["status"], "inprogress");
    let r = mgmt.call("DELETE", &format!("{DEPLOYMENTS}/devices/{b_id}"), None);
    assert_eq!(r.status, 204);
    let stats = mgmt.statistics(&dep);
    assert_eq!(
        (stats["success"].clone(), stats["aborted"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(mgmt.deployment(&dep)["status"], "finished");
}

#[test]
fn active_deployment_cap() {
    let server = start_with("cap", |config| {
        config.settings.max_active_deployments = 2;
    });
    let mgmt = Mgmt::new(&server);
    upload(&mgmt, "a1");
    let first = create(
        &mgmt,
        json!({"name": "1", "artifact_name": "a1", "devices": ["x"]}),
    );
    assert_eq!(first.status, 201);
    assert_eq!(
        create(
            &mgmt,
            json!({"name": "2", "artifact_name": "a1", "devices": ["x"]})
        )
        .status,
        201
    );
    let r = create(
        &mgmt,
        json!({"name": "3", "artifact_name": "a1", "devices": ["x"]}),
    );
    // Default refusal: 400 with the services' JSON error body (the real status is not public).
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("limit of 2 active deployments"),
        "{}",
        r.text()
    );
    // The status is configurable.
    server.update_settings(|s| s.max_active_deployments_status = 403);
    let r = create(
        &mgmt,
        json!({"name": "3", "artifact_name": "a1", "devices": ["x"]}),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    // Aborting one frees a slot.
    let id = first.created_id();
    assert_eq!(
        mgmt.call(
            "PUT",
            &format!("{DEPLOYMENTS}/{id}/status"),
            Some(json!({"status": "aborted"}))
        )
        .status,
        204
    );
    assert_eq!(
        create(
            &mgmt,
            json!({"name": "3", "artifact_name": "a1", "devices": ["x"]})
        )
        .status,
        201
    );
}

#[test]
fn artifacts_v2_by_name_conflict_body_and_download_link() {
    let (_server, mgmt) = start_managed("artifacts");
    for name in ["srvmig-stage1", "srvmig-stage2", "other"] {
        upload(&mgmt, name);
    }
    let v2 = "/api/management/v2/deployments/artifacts";
    let r = mgmt.call("GET", &format!("{v2}?name=srvmig-stage1"), None);
    assert_eq!(r.status, 200);
    let list = r.json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let files = &list[0]["updates"][0]["files"];
    assert_eq!(files[0]["name"], "mender.conf");
    assert_eq!(files[0]["checksum"].as_str().unwrap().len(), 64);
    assert_eq!(
        mgmt.call("GET", &format!("{v2}?name=srvmig-*"), None)
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        mgmt.call("GET", &format!("{v2}?device_type=other-board"), None)
            .json(),
        json!([])
    );
    assert_eq!(
        mgmt.call("GET", &format!("{v2}?per_page=501"), None).status,
        400
    );
    // Same name and device type again: 409 with the conflicting artifact in the metadata.
    let r = mgmt.upload_artifact(&build_artifact("other", "qemux86-64", &json!({"x": 1})), "");
    assert_eq!(r.status, 409);
    assert_eq!(r.json()["metadata"]["conflict"]["name"], "other");
    assert!(r.json()["error"].is_string());
    let id = list[0]["id"].as_str().unwrap();
    let link = mgmt
        .call(
            "GET",
            &format!("/api/management/v1/deployments/artifacts/{id}/download"),
            None,
        )
        .json();
    let uri = link["uri"].as_str().unwrap();
    let bytes = send(&agent(), "GET", uri, &[], None, false).unwrap();
    assert_eq!(bytes.status, 200);
    assert_eq!(
        menderartifact::read_info(bytes.body.as_slice())
            .unwrap()
            .name,
        "srvmig-stage1"
    );
}

const NEXT_V2: &str = "/api/devices/v2/deployments/device/deployments/next";

/// Stage 2 depends on `server-migration.stage=dual`; the device has no such provide yet.
fn stage2_setup(edition: Edition) -> (MockServer, SimDevice, String, String) {
    let server = start_with("edition", |config| {
        config.settings.edition = edition;
    });
    let mgmt = Mgmt::new(&server);
    let r = mgmt.upload_artifact(
        &build_artifact_with(
            "stage2",
            "qemux86-64",
            &json!({}),
            &[],
            &[("server-migration.stage", "dual")],
        ),
        "",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let (dev, id) = accepted(&server, "E", 7);
    let dep = mgmt.deploy("stage2", "stage2", &[&id]);
    (server, dev, id, dep)
}

#[test]
fn open_source_offers_by_device_type_only() {
    let (server, mut dev, _id, dep) = stage2_setup(Edition::OpenSource);
    // v2 next does not exist on the open-source server.
    let provides =
        json!({"device_provides": {"artifact_name": "orig", "device_type": "qemux86-64"}});
    assert_eq!(
        dev.api("POST", NEXT_V2, Some(&provides)).unwrap().status,
        404
    );
    // v1 offers stage 2 although its depends are not met: the client must refuse it itself.
    let update = dev.check_update().unwrap().expect("offered by device type");
    assert_eq!(update.id, dep);
    let mgmt = Mgmt::new(&server);
    assert_eq!(dev.report(&dep, "failure").unwrap(), 204);
    assert_eq!(mgmt.statistics(&dep)["failure"], 1);
    assert_eq!(mgmt.statistics(&dep)["noartifact"], 0);
}

#[test]
fn enterprise_v2_honours_depends() {
    let (server, mut dev, _id, dep) = stage2_setup(Edition::Enterprise);
    let mgmt = Mgmt::new(&server);
    let without = json!({"device_provides": {"artifact_name": "orig", "device_type": "qemux86-64"}, "update_control_map": false});
    let r = dev.api("POST", NEXT_V2, Some(&without)).unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(mgmt.statistics(&dep)["noartifact"], 1);

    let (_server2, mut dev2, _id2, dep2) = stage2_setup(Edition::Enterprise);
    let with = json!({"device_provides": {"artifact_name": "stage1", "device_type": "qemux86-64", "server-migration.stage": "dual"}});
    let r = dev2.api("POST", NEXT_V2, Some(&with)).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], dep2.as_str());
}
