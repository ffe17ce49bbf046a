//! An artifact written by the official `mender-artifact` tool uploads, is indexed (name,
//! device types, payload type, provides) and is served byte for byte.

mod common;

use common::*;

#[test]
fn upload_artifact_written_by_mender_artifact() {
    let Some(mender_artifact) = require_tool("mender-artifact", "apt-get install mender-artifact")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = "{\"ServerURL\": \"http://10.0.2.2:8080\"}\n".repeat(200);
    let payload = write_file(&dir, "mender.conf", config);
    let out = dir.path().join("cfg.mender");
    let status = std::process::Command::new(&mender_artifact)
        .args([
            "write",
            "module-image",
            "-T",
            "cfgmod",
            "-n",
            "cfg-1",
            "-t",
            "qemux86-64",
            "-t",
            "raspberrypi4",
        ])
        .args(["-p", "cfg.version:1", "-o"])
        .arg(&out)
        .arg("-f")
        .arg(&payload)
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&out).unwrap();

    let (server, mgmt) = start_managed("s");
    let r = mgmt.upload_artifact(&bytes, "official");
    assert_eq!(r.status, 201, "{}", r.text());
    let list = mgmt
        .call("GET", "/api/management/v1/deployments/artifacts", None)
        .json();
    let a = &list[0];
    assert_eq!(a["name"], "cfg-1");
    assert_eq!(
        a["device_types_compatible"],
        serde_json::json!(["qemux86-64", "raspberrypi4"])
    );
    assert_eq!(a["updates"][0]["type_info"]["type"], "cfgmod");
    assert_eq!(a["artifact_provides"]["cfg.version"], "1");
    assert_eq!(a["description"], "official");
    assert_eq!(a["size"], bytes.len());
    let id = a["id"].as_str().unwrap();
    let got = send(
        &agent(),
        "GET",
        &format!("{}/download/artifacts/{id}", server.url()),
        &[],
        None,
        false,
    )
    .unwrap();
    assert_eq!(got.body, bytes);
}
