//! deviceauth v2 as the real server behaves (ref §2.1, §4.1): paging limits and `Link`,
//! repeated ids, the search endpoint, preauthorization conflicts and `force`, the
//! status-transition rules, the device limit and asynchronous decommissioning.

mod common;

use common::*;
use mock_mender_server::Settings;
use serde_json::{json, Value};

const DEVICES: &str = "/api/management/v2/devauth/devices";

fn preauth_n(mgmt: &Mgmt, n: u8) -> Vec<String> {
    (0..n)
        .map(|i| {
            mgmt.preauthorize(
                &json!({"serial": format!("S-{i:03}")}),
                &DeviceKey::ed25519(100 + i).public_pem(),
            )
        })
        .collect()
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn paging_link_and_no_total_count() {
    let (_server, mgmt) = start_managed("paging");
    let mut all = preauth_n(&mgmt, 5);
    all.sort();
    let paths: Vec<String> = ["per_page=501", "per_page=0", "page=0", "per_page=500"]
        .iter()
        .map(|q| format!("{DEVICES}?{q}"))
        .collect();
    mgmt.expect_statuses(&[
        ("GET", &paths[0], 400),
        ("GET", &paths[1], 400),
        ("GET", &paths[2], 400),
        ("GET", &paths[3], 200),
    ]);
    let r = mgmt.call(
        "GET",
        &format!("{DEVICES}?status=preauthorized&per_page=2&page=2"),
        None,
    );
    assert_eq!(r.status, 200);
    // Sorted by (status, id): page 2 holds the 3rd and 4th ids.
    assert_eq!(ids(&r.json()), all[2..4].to_vec());
    assert_eq!(
        r.header("x-total-count"),
        None,
        "devauth sends no X-Total-Count"
    );
    let link = r.header("link").expect("Link header");
    assert!(
        link.contains(&format!(
            "<{DEVICES}?status=preauthorized&page=1&per_page=2>; rel=\"first\""
        )),
        "{link}"
    );
    assert!(link.contains("page=1&per_page=2>; rel=\"prev\""), "{link}");
    assert!(link.contains("page=3&per_page=2>; rel=\"next\""), "{link}");
    assert!(!link.contains("rel=\"last\""), "{link}");
    let last = mgmt.call("GET", &format!("{DEVICES}?per_page=2&page=3"), None);
    assert_eq!(ids(&last.json()), all[4..].to_vec());
    assert!(!last.header("link").unwrap().contains("rel=\"next\""));
}

#[test]
fn repeated_ids_and_search() {
    let (server, mgmt) = start_managed("search");
    let all = preauth_n(&mgmt, 4);
    let r = mgmt.call(
        "GET",
        &format!("{DEVICES}?id={}&id={}", all[0], all[3]),
        None,
    );
    let mut want = vec![all[0].clone(), all[3].clone()];
    want.sort();
    assert_eq!(ids(&r.json()), want);
    let search = format!("{DEVICES}/search");
    let r = mgmt.call(
        "POST",
        &search,
        Some(json!({"id": [all[1], all[2]], "status": "preauthorized"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().as_array().unwrap().len(), 2);
    let r = mgmt.call(
        "POST",
        &search,
        Some(json!({"id": all[1], "status": ["accepted"]})),
    );
    assert_eq!(r.json(), json!([]));
    let r = mgmt.call("POST", &format!("{search}?per_page=501"), Some(json!({})));
    assert_eq!(r.status, 400);
    let r = mgmt.call("POST", &format!("{search}?per_page=3"), Some(json!({})));
    assert_eq!(r.json().as_array().unwrap().len(), 3);
    assert!(r.header("link").unwrap().contains("rel=\"next\""));
    let form = send(
        &agent(),
        "POST",
        &format!("{}{search}", server.url()),
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        Some(b"status=accepted"),
        false,
    )
    .unwrap();
    assert_eq!(form.status, 415);
    assert_eq!(
        mgmt.call("GET", &format!("{DEVICES}?status=noauth"), None)
            .json(),
        json!([])
    );
}

#[test]
fn preauthorize_conflict_body_and_force() {
    let (_server, mgmt) = start_managed("preauth");
    let key = DeviceKey::ed25519(1).public_pem();
    let id = mgmt.preauthorize(&json!({"mac": "m"}), &key);
    let r = mgmt.call(
        "POST",
        DEVICES,
        Some(json!({"identity_data": {"mac": "m"}, "pubkey": key})),
    );
    assert_eq!(r.status, 409);
    // The body is the existing Device, not an error object.
    assert_eq!(r.json()["id"], id.as_str());
    assert_eq!(r.json()["auth_sets"][0]["status"], "preauthorized");
    // force with a new key: a second preauthorized set on the same device, and a Location
    // that does not name it (the real server's bogus id).
    let key2 = DeviceKey::ed25519(2).public_pem();
    let r = mgmt.call(
        "POST",
        DEVICES,
        Some(json!({"identity_data": {"mac": "m"}, "pubkey": key2, "force": true})),
    );
    assert_eq!(r.status, 201);
    let location = r.header("location").unwrap();
    assert_ne!(location, format!("devices/{id}"));
    assert_eq!(mgmt.device(&id)["auth_sets"].as_array().unwrap().len(), 2);
    assert_eq!(mgmt.devices("preauthorized").len(), 1);
}

#[test]
fn status_transitions() {
    let (server, mgmt) = start_managed("transitions");
    let key = DeviceKey::ed25519(3);
    let id = mgmt.preauthorize(&json!({"serial": "T"}), &key.public_pem());
    let aid = mgmt.device(&id)["auth_sets"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let put = |status: &str| {
        mgmt.call(
            "PUT",
            &format!("{DEVICES}/{id}/auth/{aid}/status"),
            Some(json!({ "status": status })),
        )
    };
    // Nothing leaves preauthorized through the status API.
    for s in ["accepted", "rejected", "pending"] {
        assert_eq!(put(s).status, 400, "preauthorized -> {s}");
    }
    assert_eq!(put("preauthorized").status, 400);
    // The device connects: accepted. Same status again = 204 no-op, token kept.
    let mut dev = SimDevice::new(&[("serial", "T")], key, vec![server.url().to_string()]);
    dev.authenticate().unwrap();
    assert_eq!(put("accepted").status, 204);
    assert_eq!(dev.send_inventory().unwrap(), 200);
    // accepted -> pending is allowed and revokes the token.
    assert_eq!(put("pending").status, 204);
    assert_eq!(mgmt.device(&id)["status"], "pending");
    assert_eq!(put("rejected").status, 204);
    assert_eq!(put("accepted").status, 204);
    // DELETE of the only auth set removes the device.
    assert_eq!(
        mgmt.call("DELETE", &format!("{DEVICES}/{id}/auth/{aid}"), None)
            .status,
        204
    );
    assert_eq!(
        mgmt.call("GET", &format!("{DEVICES}/{id}"), None).status,
        404
    );
}

#[test]
fn device_limit_422_on_accept_and_401_on_auto_accept() {
    let server = start_with("limit", |config| {
        config.settings = Settings {
            max_devices: 1,
            ..Settings::default()
        };
    });
    let mgmt = Mgmt::new(&server);
    assert_eq!(
        mgmt.call("GET", "/api/management/v2/devauth/limits/max_devices", None)
            .json(),
        json!({"limit": 1})
    );
    let mut a = SimDevice::with_serial("A", 10, &[&server]);
    assert!(a.authenticate().is_err());
    mgmt.accept_single_pending();
    a.authenticate().unwrap();
    // A second pending device cannot be accepted: 422.
    let mut b = SimDevice::with_serial("B", 11, &[&server]);
    assert!(b.authenticate().is_err());
    let pending = &mgmt.devices("pending")[0];
    let r = mgmt.call(
        "PUT",
        &format!(
            "{DEVICES}/{}/auth/{}/status",
            pending["id"].as_str().unwrap(),
            pending["auth_sets"][0]["id"].as_str().unwrap()
        ),
        Some(json!({"status": "accepted"})),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    // A preauthorized device beyond the limit gets a plain 401 on its first auth.
    let key = DeviceKey::ed25519(12);
    mgmt.preauthorize(&json!({"serial": "C"}), &key.public_pem());
    let mut c = SimDevice::new(&[("serial", "C")], key, vec![server.url().to_string()]);
    let err = c.authenticate().unwrap_err();
    assert!(err.contains("401"), "{err}");
    assert_eq!(mgmt.devices("preauthorized").len(), 1);
    // Raising the limit at run time (admin) lets it in.
    let r = mgmt.call("PATCH", "/admin/settings", Some(json!({"max_devices": 0})));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["max_devices"], 0);
    c.authenticate().unwrap();
    assert_eq!(
        mgmt.call("PATCH", "/admin/settings", Some(json!({"max_devicez": 0})))
            .status,
        400
    );
}

#[test]
fn decommission_is_asynchronous() {
    let server = start_with("decom", |config| {
        config.settings.decommission_delay_ms = 1500;
    });
    let mgmt = Mgmt::new(&server);
    let key = DeviceKey::ed25519(20);
    let id = mgmt.preauthorize(&json!({"serial": "D"}), &key.public_pem());
    let mut dev = SimDevice::with_serial("D", 20, &[&server]);
    dev.authenticate().unwrap();
    assert_eq!(
        mgmt.call("DELETE", &format!("{DEVICES}/{id}"), None).status,
        204
    );
    // Meanwhile: still listed with decommissioning=true, its token is dead, auth refused,
    // and a preauthorization of the same identity conflicts (even with force).
    assert_eq!(mgmt.device(&id)["decommissioning"], true);
    assert_eq!(dev.send_inventory().unwrap_or(401), 401);
    assert!(dev.authenticate().is_err());
    let r = mgmt.call(
        "POST",
        DEVICES,
        Some(json!({"identity_data": {"serial": "D"}, "pubkey": key.public_pem(), "force": true})),
    );
    assert_eq!(r.status, 409);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while mgmt.call("GET", &format!("{DEVICES}/{id}"), None).status != 404 {
        assert!(
            std::time::Instant::now() < deadline,
            "decommission never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Gone: its next auth creates a fresh pending device.
    assert!(dev.authenticate().is_err());
    assert_eq!(mgmt.devices("pending").len(), 1);
}
