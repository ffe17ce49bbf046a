//! Whole two-stage migration between two mock servers, driven only over HTTP, with a
//! simulated 3.4 device; plus the client's "back to Servers[0]" behaviour.

mod common;

use common::*;
use mock_mender_server::{Endpoint, FaultAction, FaultRule, MockServer, RequestLogEntry};
use serde_json::json;

fn device_requests<'a>(log: &'a [RequestLogEntry], device_id: &str) -> Vec<&'a RequestLogEntry> {
    log.iter()
        .filter(|e| e.device_id.as_deref() == Some(device_id))
        .collect()
}

#[test]
fn two_stage_migration_between_two_servers() {
    let (old, old_mgmt) = start_managed("old");
    let (new, new_mgmt) = start_managed("new");

    // The device starts with ServerURL = old and an RSA 3072 key.
    let mut dev = SimDevice::new(
        &[("mac", "52:54:00:12:34:56"), ("serial", "QEMU-0001")],
        DeviceKey::rsa_fixture(),
        vec![old.url().to_string()],
    );
    let err = dev.poll().unwrap_err();
    assert!(err.contains("HTTP 401"), "{err}");
    let (old_id, old_aid) = old_mgmt.accept_single_pending();
    assert_eq!(dev.poll().unwrap().map(|u| u.id), None);
    assert_eq!(dev.current_server(), Some(old.url()));

    // Stage 1 from old: Servers = [old, new].
    let stage1_conf = json!({"Servers": [{"ServerURL": old.url()}, {"ServerURL": new.url()}],
                             "UpdatePollIntervalSeconds": 5});
    let upload = old_mgmt.upload_artifact(
        &build_artifact("migration-stage1", "qemux86-64", &stage1_conf),
        "stage 1",
    );
    assert_eq!(upload.status, 201, "{}", upload.text());
    assert!(upload
        .header("location")
        .unwrap()
        .starts_with("/api/management/v1/deployments/artifacts/"));
    let stage1 = old_mgmt.deploy("stage-1", "migration-stage1", &[&old_id]);
    assert_eq!(old_mgmt.deployment(&stage1)["status"], "pending");
    let update = dev.poll().unwrap().expect("stage 1 offered");
    assert_eq!(update.id, stage1);
    assert_eq!(update.artifact_name, "migration-stage1");
    assert!(update.uri.starts_with(old.url()));
    let stats = old_mgmt.statistics(&stage1);
    assert_eq!(stats["success"], 1, "{stats}");
    assert_eq!(old_mgmt.deployment(&stage1)["status"], "finished");
    let inventory = old_mgmt.inventory(&old_id);
    assert!(inventory["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "artifact_name" && a["value"] == "migration-stage1"));
    dev.restart();
    assert_eq!(
        dev.servers,
        vec![old.url().to_string(), new.url().to_string()]
    );
    assert_eq!(dev.poll().unwrap().map(|u| u.id), None);
    assert_eq!(dev.current_server(), Some(old.url()), "walk starts at old");

    // Server trouble that is not a 401 does not move the device.
    old.add_fault(FaultRule {
        endpoint: Endpoint::Inventory,
        path: None,
        method: None,
        action: FaultAction::Status(503),
        times: Some(1),
    });
    assert!(dev.poll().unwrap_err().contains("503"));
    assert_eq!(dev.current_server(), Some(old.url()));
    assert!(new.request_log().is_empty(), "nothing reached new yet");

    // Switch: preauthorize on new with the identity and key old knows, reject on old.
    let old_device = old_mgmt.device(&old_id);
    let auth_set = &old_device["auth_sets"][0];
    let new_id = new_mgmt.preauthorize(
        &old_device["identity_data"],
        auth_set["pubkey"].as_str().unwrap(),
    );
    assert_eq!(new_mgmt.device(&new_id)["status"], "preauthorized");
    old_mgmt.set_auth_status(&old_id, &old_aid, "rejected");
    assert_eq!(dev.poll().unwrap().map(|u| u.id), None);
    assert_eq!(dev.current_server(), Some(new.url()), "failed over to new");
    assert_eq!(new_mgmt.device(&new_id)["status"], "accepted");
    assert_eq!(old_mgmt.device(&old_id)["status"], "rejected");

    // Stage 2 from new: ServerURL = new only.
    let stage2_conf = json!({"ServerURL": new.url(), "UpdatePollIntervalSeconds": 5});
    let upload = new_mgmt.upload_artifact(
        &build_artifact("migration-stage2", "qemux86-64", &stage2_conf),
        "stage 2",
    );
    assert_eq!(upload.status, 201, "{}", upload.text());
    let stage2 = new_mgmt.deploy("stage-2", "migration-stage2", &[&new_id]);
    let update = dev.poll().unwrap().expect("stage 2 offered");
    assert_eq!(update.id, stage2);
    assert!(update.uri.starts_with(new.url()));
    assert_eq!(new_mgmt.statistics(&stage2)["success"], 1);
    dev.restart();
    assert_eq!(dev.servers, vec![new.url().to_string()]);
    assert_eq!(dev.poll().unwrap().map(|u| u.id), None);
    assert_eq!(dev.current_server(), Some(new.url()));

    // The request logs tell the same story.
    let old_log = old.request_log();
    let new_log = new.request_log();
    let on_old = device_requests(&old_log, &old_id);
    let on_new = device_requests(&new_log, &new_id);
    let stage1_reports: Vec<_> = on_old
        .iter()
        .filter(|e| e.path.ends_with(&format!("{stage1}/status")))
        .collect();
    assert_eq!(stage1_reports.len(), 7, "all stage-1 reports went to old");
    assert!(stage1_reports.iter().all(|e| e.status == Some(204)));
    assert!(new_log.iter().all(|e| !e.path.contains(&stage1)));
    assert!(old_log.iter().all(|e| !e.path.contains(&stage2)));
    assert_eq!(
        on_new
            .iter()
            .filter(|e| e.path.ends_with(&format!("{stage2}/status")))
            .count(),
        7
    );
    let downloads: Vec<_> = on_new
        .iter()
        .filter(|e| e.path.starts_with("/download/artifacts/"))
        .collect();
    assert_eq!(downloads.len(), 1, "stage 2 downloaded once, from new");
    assert_eq!(downloads[0].status, Some(200));
    assert_eq!(
        on_old
            .iter()
            .filter(|e| e.path.starts_with("/download/artifacts/"))
            .count(),
        1,
        "stage 1 downloaded once, from old"
    );
    // Failover came right after old's 401s: old answered the API call and the auth walk with
    // 401, then new's first auth request succeeded.
    let first_new_auth = new_log
        .iter()
        .find(|e| e.path == "/api/devices/v1/authentication/auth_requests")
        .expect("device authenticated at new");
    assert_eq!(first_new_auth.status, Some(200));
    let first_401 = on_old
        .iter()
        .position(|e| {
            e.status == Some(401) && e.path == "/api/devices/v1/inventory/device/attributes"
        })
        .expect("old answered the API call with 401");
    let walk = on_old[first_401 + 1];
    assert_eq!(walk.path, "/api/devices/v1/authentication/auth_requests");
    assert_eq!(walk.status, Some(401));
    assert!(on_old[first_401].time <= first_new_auth.time && walk.time <= first_new_auth.time);
    let first_accept = on_old.iter().position(|e| e.status == Some(200)).unwrap();
    assert!(
        on_old[first_accept..first_401]
            .iter()
            .all(|e| e.status != Some(401)),
        "no 401 on old between acceptance and rejection"
    );
    // Later re-authentications (stage-2 commit phase) still start at old, which refuses.
    assert!(on_old[first_401..].iter().all(|e| e.status == Some(401)));
    // After stage 2 the device never contacts old again.
    let stage2_done = on_new
        .iter()
        .rfind(|e| e.path.ends_with(&format!("{stage2}/status")))
        .unwrap()
        .time
        .clone();
    assert!(old_log.iter().all(|e| e.time <= stage2_done));
}

type Managed = (MockServer, Mgmt);

/// Servers `a` and `b`, each with its management client, and a device (`serial`, key `seed`)
/// listing a then b. Unknown on both, its first poll fails and leaves it pending on both.
fn walking_device(serial: &str, seed: u8) -> (Managed, Managed, SimDevice) {
    let (a, ma) = start_managed("a");
    let (b, mb) = start_managed("b");
    let mut dev = SimDevice::with_serial(serial, seed, &[&a, &b]);
    assert!(dev.poll().is_err());
    ((a, ma), (b, mb), dev)
}

#[test]
fn device_returns_to_first_server_after_a_401() {
    let ((a, ma), (b, mb), mut dev) = walking_device("RETURN-1", 11);
    let (a_id, a_aid) = ma.accept_single_pending();
    ma.set_auth_status(&a_id, &a_aid, "rejected");
    mb.accept_single_pending();
    dev.poll().unwrap();
    assert_eq!(dev.current_server(), Some(b.url()));

    // A accepts again: no 401 from B, so the device stays on B.
    ma.set_auth_status(&a_id, &a_aid, "accepted");
    dev.poll().unwrap();
    assert_eq!(dev.current_server(), Some(b.url()));
    let a_requests_before = a.request_log().len();
    dev.poll().unwrap();
    assert_eq!(
        a.request_log().len(),
        a_requests_before,
        "no traffic to A while on B"
    );

    // B revokes (decommission): 401 → walk from Servers[0] → A accepts → back on A.
    let b_id = mb.devices("accepted")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = mb.call(
        "DELETE",
        &format!("/api/management/v2/devauth/devices/{b_id}"),
        None,
    );
    assert_eq!(r.status, 204);
    dev.poll().unwrap();
    assert_eq!(dev.current_server(), Some(a.url()));
    // Decommissioning is asynchronous: the device is still listed, marked, until it is gone.
    assert!(mb
        .devices("accepted")
        .iter()
        .all(|d| d["decommissioning"] == true));
    assert_eq!(mb.devices("pending").len(), 0, "B was not asked again");
}

#[test]
fn auth_failures_of_any_kind_move_the_walk_on() {
    let ((a, ma), (b, mb), mut dev) = walking_device("WALK-1", 12);
    ma.accept_single_pending();
    mb.accept_single_pending();
    for action in [FaultAction::Status(500), FaultAction::Drop] {
        a.set_faults(vec![FaultRule::new(Endpoint::Auth, action)]);
        dev.restart();
        dev.poll().unwrap();
        assert_eq!(dev.current_server(), Some(b.url()), "{action:?}");
    }
    a.set_faults(Vec::new());
    a.set_down(true);
    dev.restart();
    dev.poll().unwrap();
    assert_eq!(dev.current_server(), Some(b.url()), "A down");
    a.set_down(false);
    dev.restart();
    let mut tries = 0;
    // The listener is re-bound asynchronously; give it a moment.
    while dev.poll().is_err() || dev.current_server() != Some(a.url()) {
        tries += 1;
        assert!(tries < 50, "A never came back");
        std::thread::sleep(std::time::Duration::from_millis(20));
        dev.restart();
    }
    let dropped: Vec<_> = a
        .request_log()
        .into_iter()
        .filter(|e| e.fault.as_deref() == Some("drop"))
        .collect();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0].status, None);
}
