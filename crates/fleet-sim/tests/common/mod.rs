//! Test support: a minimal management client for the mock server and stage artifacts built with
//! the project's own CLI (`mender_migrate`).
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Management calls against one mock server (`Authorization: Bearer <management token>`).
pub struct Mgmt {
    pub base: String,
    pub token: String,
    agent: ureq::Agent,
}

impl Mgmt {
    pub fn new(server: &mock_mender_server::MockServer) -> Mgmt {
        Mgmt::at(server.url(), server.management_token())
    }

    pub fn at(base: &str, token: &str) -> Mgmt {
        Mgmt {
            base: base.to_string(),
            token: token.to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(30))
                .build(),
        }
    }

    /// One call; transport errors (a server coming back up) are retried for a few seconds.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let mut attempt = 0;
        loop {
            let req = self
                .agent
                .request(method, &format!("{}{path}", self.base))
                .set("Authorization", &format!("Bearer {}", self.token));
            let result = match &body {
                Some(b) => req.send_json(b.clone()),
                None => req.call(),
            };
            match result {
                Ok(r) => return (r.status(), r.into_string().unwrap_or_default()),
                Err(ureq::Error::Status(code, r)) => {
                    return (code, r.into_string().unwrap_or_default())
                }
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    let _ = e;
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(e) => panic!("{method} {path}: {e}"),
            }
        }
    }

    pub fn preauthorize(&self, id_data: &BTreeMap<String, String>, pubkey: &str) {
        let (code, body) = self.call(
            "POST",
            "/api/management/v2/devauth/devices",
            Some(json!({ "identity_data": id_data, "pubkey": pubkey })),
        );
        assert_eq!(code, 201, "preauthorize: {body}");
    }

    /// Every device (all pages).
    pub fn devices(&self) -> Vec<Value> {
        let mut all = Vec::new();
        for page in 1.. {
            let (code, body) = self.call(
                "GET",
                &format!("/api/management/v2/devauth/devices?per_page=500&page={page}"),
                None,
            );
            assert_eq!(code, 200, "devices list: {body}");
            let list: Vec<Value> = serde_json::from_str(&body).unwrap();
            let n = list.len();
            all.extend(list);
            if n < 500 {
                break;
            }
        }
        all
    }

    /// serial → (device id, auth set id of the set with this pubkey or the first one).
    pub fn ids_by_serial(&self) -> BTreeMap<String, (String, String)> {
        self.devices()
            .into_iter()
            .map(|d| {
                let serial = d["identity_data"]["serial"].as_str().unwrap().to_string();
                let aid = d["auth_sets"][0]["id"].as_str().unwrap().to_string();
                (serial, (d["id"].as_str().unwrap().to_string(), aid))
            })
            .collect()
    }

    pub fn set_auth_status(&self, device: &str, aid: &str, status: &str) {
        let (code, body) = self.call(
            "PUT",
            &format!("/api/management/v2/devauth/devices/{device}/auth/{aid}/status"),
            Some(json!({ "status": status })),
        );
        assert!(
            code == 204 || code == 200,
            "auth status {status}: {code} {body}"
        );
    }

    pub fn upload(&self, artifact: &Path) {
        let bytes = std::fs::read(artifact).unwrap();
        let boundary = "fleet-sim-boundary-7d3f";
        let mut body = Vec::new();
        body.extend_from_slice(format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"artifact\"; filename=\"a.mender\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        ).as_bytes());
        body.extend_from_slice(&bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let r = self
            .agent
            .post(&format!(
                "{}/api/management/v1/deployments/artifacts",
                self.base
            ))
            .set("Authorization", &format!("Bearer {}", self.token))
            .set(
                "Content-Type",
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .send_bytes(&body);
        match r {
            Ok(r) => assert_eq!(r.status(), 201),
            Err(e) => panic!("upload {}: {e}", artifact.display()),
        }
    }

    pub fn deploy(&self, name: &str, artifact_name: &str, devices: &[String]) -> String {
        let (code, body) = self.call(
            "POST",
            "/api/management/v1/deployments/deployments",
            Some(json!({ "name": name, "artifact_name": artifact_name, "devices": devices })),
        );
        assert_eq!(code, 201, "deploy {artifact_name}: {body}");
        let list = self
            .call("GET", "/api/management/v1/deployments/deployments", None)
            .1;
        let list: Vec<Value> = serde_json::from_str(&list).unwrap();
        list.iter()
            .find(|d| d["name"] == name)
            .and_then(|d| d["id"].as_str())
            .expect("the new deployment is listed")
            .to_string()
    }
}

/// The three artifacts `mender-migrate artifacts` writes (module-install, stage 1, stage 2).
pub struct Artifacts {
    pub module_install: PathBuf,
    pub stage1: PathBuf,
    pub stage2: PathBuf,
    pub name: String,
}

/// Builds the artifacts with the project's CLI from a captured `{"ServerURL": old}` config.
pub fn build_artifacts(
    dir: &Path,
    name: &str,
    old: &str,
    new: &str,
    device_type: &str,
) -> Artifacts {
    std::fs::create_dir_all(dir).unwrap();
    let captured = dir.join(format!("{name}-captured.conf"));
    std::fs::write(&captured, format!("{{\"ServerURL\": \"{old}\"}}\n")).unwrap();
    // The module binary is never run: the simulated single-file module records the module as
    // installed under its file name. `artifacts` checks it is an x86-64 program (`--arch`), so
    // it is the CLI's stand-in static ELF header.
    let module = dir.join("server-migration");
    std::fs::write(&module, mender_migrate::fake_elf(62, 64, None)).unwrap();
    let args: Vec<String> = [
        "mender-migrate",
        "artifacts",
        "--config",
        captured.to_str().unwrap(),
        "--old-server",
        old,
        "--new-server",
        new,
        "--device-type",
        device_type,
        "--name",
        name,
        "--out",
        dir.to_str().unwrap(),
        "--module-binary",
        module.to_str().unwrap(),
        "--arch",
        "x86_64",
        "--force",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let code = mender_migrate::main_with_args(args);
    assert_eq!(
        format!("{code:?}"),
        format!("{:?}", std::process::ExitCode::SUCCESS)
    );
    Artifacts {
        module_install: dir.join(format!("{name}-module-install-x86_64.mender")),
        stage1: dir.join(format!("{name}-stage1-dual.mender")),
        stage2: dir.join(format!("{name}-stage2-new-only.mender")),
        name: name.to_string(),
    }
}
