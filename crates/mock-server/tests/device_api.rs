//! Device API edge cases and refusals: signatures, malformed input, tokens, deployments
//! that are foreign or aborted, ranged downloads, management auth, faults over /admin.

mod common;

use common::*;
use serde_json::{json, Value};

fn accepted_device(
    server: &mock_mender_server::MockServer,
    serial: &str,
    seed: u8,
) -> (SimDevice, String) {
    let mgmt = Mgmt::new(server);
    let mut dev = SimDevice::with_serial(serial, seed, &[server]);
    assert!(dev.authenticate().is_err());
    let pending = mgmt.devices("pending");
    let d = pending
        .iter()
        .find(|d| d["identity_data"]["serial"] == serial)
        .unwrap();
    let id = d["id"].as_str().unwrap().to_string();
    mgmt.set_auth_status(&id, d["auth_sets"][0]["id"].as_str().unwrap(), "accepted");
    dev.authenticate().unwrap();
    (dev, id)
}

#[test]
fn signature_and_body_checks() {
    let server = start("s");
    let key = DeviceKey::ed25519(1);
    let identity = [("mac".to_string(), "aa".to_string())]
        .into_iter()
        .collect();
    let body = auth_body(&identity, &key.public_pem());
    let good = key.sign_b64(&body);

    let other = DeviceKey::ed25519(2).sign_b64(&body);
    let r = auth_request(&server, &body, Some(&other));
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "signature verification failed");
    assert!(!r.json()["request_id"].as_str().unwrap().is_empty());

    // Signature over the body without its trailing newline does not verify the real body.
    let trimmed = key.sign_b64(&body[..body.len() - 1]);
    assert_eq!(auth_request(&server, &body, Some(&trimmed)).status, 401);
    assert_eq!(auth_request(&server, &body, None).status, 400);
    assert_eq!(auth_request(&server, b"{not json", Some(&good)).status, 400);
    let bad_id = br#"{"id_data":"not-json","tenant_token":"","pubkey":"x"}"#;
    assert_eq!(auth_request(&server, bad_id, Some(&good)).status, 400);
    let bad_key = br#"{"id_data":"{\"mac\":\"aa\"}","tenant_token":"","pubkey":"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}"#;
    assert_eq!(auth_request(&server, bad_key, Some(&good)).status, 400);
    assert!(
        server.devices().is_empty(),
        "no device from refused requests"
    );

    // A good request registers a pending device (401), RSA signatures work as well.
    let r = auth_request(&server, &body, Some(&good));
    assert_eq!(r.status, 401);
    let rsa = DeviceKey::rsa_fixture();
    let rsa_body = auth_body(
        &[("mac".to_string(), "bb".to_string())]
            .into_iter()
            .collect(),
        &rsa.public_pem(),
    );
    assert_eq!(
        auth_request(&server, &rsa_body, Some(&rsa.sign_b64(&rsa_body))).status,
        401
    );
    let devices = server.devices();
    assert_eq!(devices.len(), 2);
    assert!(devices
        .iter()
        .all(|d| d.status == mock_mender_server::AuthStatus::Pending));

    // Accepted: 200 with the raw token, application/jwt, no newline.
    let mgmt = Mgmt::new(&server);
    let d = mgmt
        .devices("pending")
        .into_iter()
        .find(|d| d["identity_data"]["mac"] == "aa")
        .unwrap();
    mgmt.set_auth_status(
        d["id"].as_str().unwrap(),
        d["auth_sets"][0]["id"].as_str().unwrap(),
        "accepted",
    );
    let r = auth_request(&server, &body, Some(&good));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/jwt"));
    assert!(r.text().len() >= 8 && !r.text().contains('\n'));
    let log = server.request_log();
    let last = log.last().unwrap();
    assert_eq!(last.device_id.as_deref(), d["id"].as_str());
    assert_eq!(last.server, "s");
}

#[test]
fn tokens_are_checked_and_revoked() {
    let server = start("s");
    let (mut dev, id) = accepted_device(&server, "TOK-1", 3);
    let r = send(
        &agent(),
        "PUT",
        &format!(
            "{}/api/devices/v1/inventory/device/attributes",
            server.url()
        ),
        &[("Authorization", "Bearer mock.unknown-token")],
        Some(b"[]"),
        true,
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert_eq!(dev.send_inventory().unwrap(), 200);
    // Chunked PATCH works too.
    let r = dev
        .api(
            "PATCH",
            "/api/devices/v1/inventory/device/attributes",
            Some(&json!([{"name": "extra", "value": "1"}])),
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let inv = Mgmt::new(&server).inventory(&id);
    let names: Vec<&str> = inv["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"extra") && names.contains(&"device_type"),
        "{names:?}"
    );
    let r = dev
        .api(
            "PUT",
            "/api/devices/v1/inventory/device/attributes",
            Some(&json!({"not": "a list"})),
        )
        .unwrap();
    assert_eq!(r.status, 400);

    // Rejecting the auth set revokes the token: the stored token now gets 401.
    let (token, _) = dev.session.clone().unwrap();
    let aid = server.device(&id).unwrap().auth_sets[0].id.clone();
    Mgmt::new(&server).set_auth_status(&id, &aid, "rejected");
    let r = send(
        &agent(),
        "POST",
        &format!(
            "{}/api/devices/v1/deployments/device/deployments/next",
            server.url()
        ),
        &[("Authorization", &format!("Bearer {token}"))],
        Some(b"{\"artifact_name\":\"a\",\"device_type\":\"t\"}\n"),
        true,
    )
    .unwrap();
    assert_eq!(r.status, 401);
    assert!(dev.authenticate().is_err());
}

#[test]
fn deployments_foreign_aborted_and_ranged_download() {
    let (server, mgmt) = start_managed("s");
    let (mut dev1, id1) = accepted_device(&server, "DEP-1", 4);
    let (mut dev2, id2) = accepted_device(&server, "DEP-2", 5);
    let artifact = build_artifact("release-2", "qemux86-64", &json!({"ServerURL": "http://x"}));
    assert_eq!(mgmt.upload_artifact(&artifact, "r2").status, 201);
    // Same name and device type again: conflict. Garbage: 400.
    assert_eq!(mgmt.upload_artifact(&artifact, "r2").status, 409);
    let r = mgmt.upload_artifact(b"definitely not a mender artifact", "junk");
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("invalid artifact"));
    // Unknown artifact name: 422.
    let r = mgmt.call(
        "POST",
        "/api/management/v1/deployments/deployments",
        Some(json!({"name": "x", "artifact_name": "nope", "devices": [id1]})),
    );
    assert_eq!(r.status, 422);

    let dep = mgmt.deploy("d", "release-2", &[&id1]);
    // v2 next is not implemented (404), v1 POST and GET are.
    let r = dev1
        .api(
            "POST",
            "/api/devices/v2/deployments/device/deployments/next",
            Some(&json!({"device_provides": {}})),
        )
        .unwrap();
    assert_eq!(r.status, 404);
    let get = dev1
        .api(
            "GET",
            "/api/devices/v1/deployments/device/deployments/next?artifact_name=base&device_type=qemux86-64",
            None,
        )
        .unwrap();
    assert_eq!(get.status, 200);
    let next: Value = get.json();
    assert_eq!(next["id"], dep.as_str());
    assert_eq!(next["artifact"]["artifact_name"], "release-2");
    assert_eq!(
        next["artifact"]["device_types_compatible"],
        json!(["qemux86-64"])
    );
    assert!(next["artifact"]["source"]["expire"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let uri = next["artifact"]["source"]["uri"]
        .as_str()
        .unwrap()
        .to_string();
    // Wrong device type: nothing (noartifact).
    assert!(dev2.check_update().unwrap().is_none());

    // Full download: exact Content-Length, not chunked; ranges give 206.
    let full = send(&agent(), "GET", &uri, &[], None, false).unwrap();
    assert_eq!(full.status, 200);
    assert_eq!(full.body, artifact);
    assert_eq!(
        full.header("content-length"),
        Some(artifact.len().to_string().as_str())
    );
    assert_eq!(full.header("transfer-encoding"), None);
    let part = send(
        &agent(),
        "GET",
        &uri,
        &[("Range", "bytes=100-")],
        None,
        false,
    )
    .unwrap();
    assert_eq!(part.status, 206);
    assert_eq!(part.body, artifact[100..]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 100-{}/{}", artifact.len() - 1, artifact.len()).as_str())
    );
    assert_eq!(
        part.header("content-length"),
        Some((artifact.len() - 100).to_string().as_str())
    );
    let bad = send(
        &agent(),
        "GET",
        &uri,
        &[("Range", &format!("bytes={}-", artifact.len()))],
        None,
        false,
    )
    .unwrap();
    assert_eq!(bad.status, 416);

    // Reports: own deployment 204, foreign 404, bad status 400, unknown 404.
    assert_eq!(dev1.report(&dep, "downloading").unwrap(), 204);
    assert_eq!(dev2.report(&dep, "downloading").unwrap(), 404);
    assert_eq!(dev1.report(&dep, "bogus").unwrap(), 400);
    assert_eq!(dev1.report("no-such-deployment", "success").unwrap(), 404);
    let r = dev1
        .api(
            "PUT",
            &format!("/api/devices/v1/deployments/device/deployments/{dep}/log"),
            Some(&json!({"messages": [{"level": "error", "message": "boom", "timestamp": "2026-11-22T01:07:16Z"}]})),
        )
        .unwrap();
    assert_eq!(r.status, 204);
    let log = mgmt.call(
        "GET",
        &format!("/api/management/v1/deployments/deployments/{dep}/devices/{id1}/log"),
        None,
    );
    assert_eq!(log.status, 200);
    assert!(log.text().contains("error: boom"));
    let stats = mgmt.statistics(&dep);
    assert_eq!(stats["downloading"], 1);
    assert_eq!(stats.as_object().unwrap().len(), 13);

    // Abort: device reports get 409, next gives nothing.
    let r = mgmt.call(
        "PUT",
        &format!("/api/management/v1/deployments/deployments/{dep}/status"),
        Some(json!({"status": "aborted"})),
    );
    assert_eq!(r.status, 204);
    assert_eq!(dev1.report(&dep, "installing").unwrap(), 409);
    assert!(dev1.check_update().unwrap().is_none());
    assert_eq!(mgmt.deployment(&dep)["status"], "finished");
    let devices = mgmt.call(
        "GET",
        &format!("/api/management/v1/deployments/deployments/{dep}/devices"),
        None,
    );
    assert_eq!(devices.json()[0]["status"], "aborted");
    let _ = id2;
}

#[test]
fn already_installed_is_recorded() {
    let (server, mgmt) = start_managed("s");
    let (mut dev, id) = accepted_device(&server, "SAME-1", 6);
    let artifact = build_artifact("debian-bookworm-base", "qemux86-64", &json!({}));
    assert_eq!(mgmt.upload_artifact(&artifact, "").status, 201);
    let dep = mgmt.deploy("d", "debian-bookworm-base", &[&id]);
    assert!(dev.check_update().unwrap().is_none());
    assert_eq!(mgmt.statistics(&dep)["already-installed"], 1);
}

#[test]
fn management_requires_the_token() {
    let server = start("s");
    for (auth, expected) in [
        (None, 401),
        (Some("Bearer wrong"), 401),
        (Some("Bearer test-management-token"), 200),
    ] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        for path in ["/api/management/v2/devauth/devices", "/admin/faults"] {
            let r = send(
                &agent(),
                "GET",
                &format!("{}{path}", server.url()),
                &headers,
                None,
                false,
            )
            .unwrap();
            assert_eq!(r.status, expected, "{path} {auth:?}");
            if expected == 401 {
                assert!(r.json()["error"].is_string());
            }
        }
    }
    let mgmt = Mgmt::new(&server);
    let r = mgmt.call("GET", "/api/management/v2/devauth/devices/nope", None);
    assert_eq!(r.status, 404);
    assert_eq!(
        mgmt.call(
            "GET",
            "/api/management/v2/devauth/devices?status=bogus",
            None
        )
        .status,
        400
    );
    let r = mgmt.call(
        "POST",
        "/api/management/v2/devauth/devices",
        Some(json!({"identity_data": {"mac": "x"}, "pubkey": "garbage"})),
    );
    assert_eq!(r.status, 400);
    let key = DeviceKey::ed25519(9).public_pem();
    let id = mgmt.preauthorize(&json!({"mac": "x"}), &key);
    let r = mgmt.call(
        "POST",
        "/api/management/v2/devauth/devices",
        Some(json!({"identity_data": {"mac": "x"}, "pubkey": key})),
    );
    assert_eq!(r.status, 409);
    assert_eq!(
        mgmt.call(
            "GET",
            "/api/management/v2/devauth/devices/count?status=preauthorized",
            None
        )
        .json()["count"],
        1
    );
    mgmt.expect_statuses(&[
        (
            "DELETE",
            &format!("/api/management/v2/devauth/devices/{id}"),
            204,
        ),
        ("GET", "/api/devices/v1/nothing-here", 404),
    ]);
}

#[test]
fn faults_through_the_admin_endpoint() {
    let (server, mgmt) = start_managed("s");
    let (mut dev, _) = accepted_device(&server, "FAULT-1", 7);
    let r = mgmt.call(
        "POST",
        "/admin/faults",
        Some(json!({"endpoint": "deployments_next", "action": {"status": 502}, "times": 2})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        mgmt.call(
            "POST",
            "/admin/faults",
            Some(json!({"endpoint": "auth", "action": {"status": 42}}))
        )
        .status,
        400
    );
    assert!(dev.check_update().unwrap_err().contains("502"));
    assert_eq!(
        mgmt.call("GET", "/admin/faults", None).json()[0]["times"],
        1
    );
    assert!(dev.check_update().unwrap_err().contains("502"));
    assert!(dev.check_update().unwrap().is_none());
    assert_eq!(mgmt.call("GET", "/admin/faults", None).json(), json!([]));

    // 401 fault on the API makes the device re-authenticate.
    let auths_before = server
        .request_log()
        .iter()
        .filter(|e| e.path.ends_with("/auth_requests"))
        .count();
    assert_eq!(
        mgmt.call(
            "PUT",
            "/admin/faults",
            Some(json!([{"endpoint": "inventory", "action": {"status": 401}, "times": 1}]))
        )
        .status,
        204
    );
    assert_eq!(dev.send_inventory().unwrap(), 200);
    let auths_after = server
        .request_log()
        .iter()
        .filter(|e| e.path.ends_with("/auth_requests"))
        .count();
    assert_eq!(auths_after, auths_before + 1);

    // Down for a moment through /admin/down, then back on the same port.
    assert_eq!(
        mgmt.call("POST", "/admin/down", Some(json!({"seconds": 0.5})))
            .status,
        202
    );
    std::thread::sleep(std::time::Duration::from_millis(250));
    assert!(send(
        &agent(),
        "GET",
        &format!("{}/admin/faults", server.url()),
        &[],
        None,
        false
    )
    .is_err());
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(mgmt.call("GET", "/admin/faults", None).status, 200);
    let log = mgmt.call("GET", "/admin/requests", None).json();
    assert!(log
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["path"] == "/admin/down"));
}
