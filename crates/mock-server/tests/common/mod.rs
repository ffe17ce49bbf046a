//! Test helpers: a management-API client and a simulated mender-client 3.4 device that
//! follows the documented client behaviour (signed auth requests, server walk from
//! `Servers[0]` on every re-authentication, failover only after a 401, chunked bodies).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use mock_mender_server::{MockServer, ServerConfig};
use serde_json::{json, Value};

pub const TOKEN: &str = "test-management-token";

pub fn start(name: &str) -> MockServer {
    start_with(name, |_| {})
}

/// A server started as [`start`] does, with its management client.
pub fn start_managed(name: &str) -> (MockServer, Mgmt) {
    let server = start(name);
    let mgmt = Mgmt::new(&server);
    (server, mgmt)
}

/// A server named `name` with the test management token, as `configure` adjusts it.
pub fn start_with(name: &str, configure: impl FnOnce(&mut ServerConfig)) -> MockServer {
    let mut config = ServerConfig::new(name, TOKEN);
    configure(&mut config);
    MockServer::start(config).expect("server starts")
}

/// [`test_support::require_tool`] for the calling test, named by its thread (the test harness
/// names each test's thread after it): the tool's path, or `None` after a skip notice.
pub fn require_tool(tool: &str, install: &str) -> Option<PathBuf> {
    let thread = std::thread::current();
    test_support::require_tool(thread.name().unwrap_or("this test"), tool, install)
}

/// Writes `contents` to the file `name` in `dir`; its path.
pub fn write_file(dir: &tempfile::TempDir, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
}

/// Status, headers and body of one HTTP exchange; transport errors are `Err`.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// Every response header (lower-case names).
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// A response header by (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// The id a `201 Created` names: the last segment of its `Location`.
    pub fn created_id(&self) -> String {
        let location = self.header("location").expect("Location header");
        location.rsplit('/').next().unwrap().to_string()
    }
}

fn into_reply(result: Result<ureq::Response, ureq::Error>) -> Result<Reply, String> {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => return Err(t.to_string()),
    };
    let mut reply = Reply {
        status: response.status(),
        body: Vec::new(),
        headers: response
            .headers_names()
            .into_iter()
            .filter_map(|n| {
                let v = response.header(&n)?.to_string();
                Some((n.to_lowercase(), v))
            })
            .collect(),
    };
    response
        .into_reader()
        .read_to_end(&mut reply.body)
        .map_err(|e| e.to_string())?;
    Ok(reply)
}

/// Sends a request; `chunked` bodies go without Content-Length like the 3.4 client's proxy.
pub fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    chunked: bool,
) -> Result<Reply, String> {
    let mut req = agent.request(method, url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let result = match body {
        None => req.call(),
        Some(b) if chunked => req.send(std::io::Cursor::new(b.to_vec())),
        Some(b) => req.send_bytes(b),
    };
    into_reply(result)
}

/// `POST auth_requests` with `body` as sent and an optional `X-MEN-Signature`.
pub fn auth_request(server: &MockServer, body: &[u8], signature: Option<&str>) -> Reply {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(s) = signature {
        headers.push(("X-MEN-Signature", s));
    }
    send(
        &agent(),
        "POST",
        &format!(
            "{}/api/devices/v1/authentication/auth_requests",
            server.url()
        ),
        &headers,
        Some(body),
        false,
    )
    .unwrap()
}

/// The orchestrator side: management API calls with the bearer token.
#[derive(Clone)]
pub struct Mgmt {
    pub base: String,
    pub token: String,
    pub agent: ureq::Agent,
}

impl Mgmt {
    pub fn new(server: &MockServer) -> Self {
        Self::at(server.url(), server.management_token(), agent())
    }

    /// A client of the server at `base` (e.g. one the binary started) with `token`.
    pub fn at(base: &str, token: &str, agent: ureq::Agent) -> Self {
        Self {
            base: base.to_string(),
            token: token.to_string(),
            agent,
        }
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Reply {
        let auth = format!("Bearer {}", self.token);
        let body = body.map(|b| b.to_string());
        send(
            &self.agent,
            method,
            &format!("{}{}", self.base, path),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_deref().map(str::as_bytes),
            false,
        )
        .expect("management call reaches the server")
    }

    /// Sends each bodiless `(method, path)` in order and asserts its status.
    pub fn expect_statuses(&self, steps: &[(&str, &str, u16)]) {
        for &(method, path, want) in steps {
            let r = self.call(method, path, None);
            assert_eq!(r.status, want, "{method} {path}: {}", r.text());
        }
    }

    /// `GET path`, which must answer 200; the JSON body.
    pub fn get_ok(&self, path: &str) -> Value {
        let r = self.call("GET", path, None);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        r.json()
    }

    pub fn devices(&self, status: &str) -> Vec<Value> {
        self.get_ok(&format!(
            "/api/management/v2/devauth/devices?status={status}"
        ))
        .as_array()
        .unwrap()
        .clone()
    }

    pub fn device(&self, id: &str) -> Value {
        self.get_ok(&format!("/api/management/v2/devauth/devices/{id}"))
    }

    pub fn set_auth_status(&self, device_id: &str, auth_id: &str, status: &str) {
        let r = self.call(
            "PUT",
            &format!("/api/management/v2/devauth/devices/{device_id}/auth/{auth_id}/status"),
            Some(json!({ "status": status })),
        );
        assert_eq!(r.status, 204, "{}", r.text());
    }

    /// Accepts the device's (only) auth set; returns (device id, auth set id).
    pub fn accept_single_pending(&self) -> (String, String) {
        let pending = self.devices("pending");
        assert_eq!(pending.len(), 1, "exactly one pending device: {pending:?}");
        let id = pending[0]["id"].as_str().unwrap().to_string();
        let aid = pending[0]["auth_sets"][0]["id"]
            .as_str()
            .unwrap()
            .to_string();
        self.set_auth_status(&id, &aid, "accepted");
        (id, aid)
    }

    pub fn preauthorize(&self, identity: &Value, pubkey: &str) -> String {
        let r = self.call(
            "POST",
            "/api/management/v2/devauth/devices",
            Some(json!({ "identity_data": identity, "pubkey": pubkey })),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        let location = r.header("location").expect("Location header");
        location
            .strip_prefix("devices/")
            .expect("Location devices/<id>")
            .to_string()
    }

    /// Uploads an artifact file as multipart/form-data; returns the Reply.
    pub fn upload_artifact(&self, bytes: &[u8], description: &str) -> Reply {
        let boundary = "----mock-mender-test-boundary-7MA4YWxkTrZu0gW";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\n{description}\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"size\"\r\n\r\n{}\r\n\
                 --{boundary}\r\nContent-Disposition: form-data; name=\"artifact\"; filename=\"a.mender\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n",
                bytes.len()
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let auth = format!("Bearer {}", self.token);
        let ct = format!("multipart/form-data; boundary={boundary}");
        send(
            &self.agent,
            "POST",
            &format!("{}/api/management/v1/deployments/artifacts", self.base),
            &[("Authorization", &auth), ("Content-Type", &ct)],
            Some(&body),
            false,
        )
        .expect("upload reaches the server")
    }

    pub fn deploy(&self, name: &str, artifact_name: &str, devices: &[&str]) -> String {
        let r = self.call(
            "POST",
            "/api/management/v1/deployments/deployments",
            Some(json!({ "name": name, "artifact_name": artifact_name, "devices": devices })),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.created_id()
    }

    pub fn statistics(&self, deployment_id: &str) -> Value {
        self.get_ok(&format!(
            "/api/management/v1/deployments/deployments/{deployment_id}/statistics"
        ))
    }

    pub fn deployment(&self, deployment_id: &str) -> Value {
        self.get_ok(&format!(
            "/api/management/v1/deployments/deployments/{deployment_id}"
        ))
    }

    pub fn inventory(&self, device_id: &str) -> Value {
        self.get_ok(&format!("/api/management/v1/inventory/devices/{device_id}"))
    }
}

/// Builds a module-image artifact with the project's writer; the payload carries a config
/// file plus padding so the download is well above the client's 4096-byte minimum.
pub fn build_artifact(name: &str, device_type: &str, config: &Value) -> Vec<u8> {
    build_artifact_with(name, device_type, config, &[], &[])
}

/// Like [`build_artifact`], with artifact provides and depends.
pub fn build_artifact_with(
    name: &str,
    device_type: &str,
    config: &Value,
    provides: &[(&str, &str)],
    depends: &[(&str, &str)],
) -> Vec<u8> {
    use menderartifact::{ArtifactSpec, Compression, Payload, PayloadFile};
    let files = vec![
        PayloadFile::from_bytes("mender.conf", config.to_string().into_bytes(), 0o600),
        PayloadFile::from_bytes(
            "padding.bin",
            (0..8192u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect(),
            0o644,
        ),
    ];
    let mut spec = ArtifactSpec::new(
        name,
        vec![device_type.to_string()],
        Payload::Module {
            type_name: "mender-config".into(),
            files,
            meta_data: None,
        },
    );
    spec.compression = Compression::None;
    spec.mtime = Some(1_700_000_000);
    for (k, v) in provides {
        spec.provides.insert(k.to_string(), v.to_string());
    }
    for (k, v) in depends {
        spec.depends.insert(k.to_string(), v.to_string());
    }
    let mut out = Vec::new();
    menderartifact::write_artifact(spec, &mut out).expect("artifact is written");
    out
}

/// The private key of a simulated device.
#[allow(clippy::large_enum_variant)]
pub enum DeviceKey {
    Rsa(Box<rsa::RsaPrivateKey>),
    Ed25519(ed25519_dalek::SigningKey),
}

impl DeviceKey {
    /// The fixed RSA 3072 test key (the size the 3.4 client generates).
    pub fn rsa_fixture() -> Self {
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        let pem = include_str!("../device-rsa3072.pem");
        DeviceKey::Rsa(Box::new(rsa::RsaPrivateKey::from_pkcs1_pem(pem).unwrap()))
    }

    pub fn ed25519(seed: u8) -> Self {
        DeviceKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[seed; 32]))
    }

    pub fn public_pem(&self) -> String {
        use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
        match self {
            DeviceKey::Rsa(k) => k.to_public_key().to_public_key_pem(LineEnding::LF).unwrap(),
            DeviceKey::Ed25519(k) => ed25519_dalek::pkcs8::EncodePublicKey::to_public_key_pem(
                &k.verifying_key(),
                ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF,
            )
            .unwrap(),
        }
    }

    pub fn sign_b64(&self, body: &[u8]) -> String {
        let raw = match self {
            DeviceKey::Rsa(k) => {
                use rsa::signature::{SignatureEncoding as _, Signer as _};
                let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new((**k).clone());
                signer.sign(body).to_vec()
            }
            DeviceKey::Ed25519(k) => {
                use ed25519_dalek::Signer as _;
                k.sign(body).to_bytes().to_vec()
            }
        };
        base64::engine::general_purpose::STANDARD.encode(raw)
    }
}

/// Body of an auth request exactly as the Go client encodes it (fixed key order, trailing LF).
pub fn auth_body(identity: &BTreeMap<String, String>, pubkey: &str) -> Vec<u8> {
    let id_data = serde_json::to_string(identity).unwrap();
    let mut body = format!(
        "{{\"id_data\":{},\"tenant_token\":\"\",\"pubkey\":{}}}",
        serde_json::to_string(&id_data).unwrap(),
        serde_json::to_string(pubkey).unwrap()
    );
    body.push('\n');
    body.into_bytes()
}

/// What a `deployments/next` 200 carried.
#[derive(Debug, Clone)]
pub struct Update {
    pub id: String,
    pub artifact_name: String,
    pub uri: String,
    pub device_types: Vec<String>,
}

/// A simulated mender-client 3.4 daemon (only what matters for server selection).
pub struct SimDevice {
    pub identity: BTreeMap<String, String>,
    pub key: DeviceKey,
    /// The `Servers` list (a single `ServerURL` is a one-entry list).
    pub servers: Vec<String>,
    /// In-memory token and the index of the server that issued it.
    pub session: Option<(String, usize)>,
    pub artifact_name: String,
    pub device_type: String,
    /// Config delivered by the last installed artifact (applied on `restart`).
    pub pending_config: Option<Value>,
    agent: ureq::Agent,
}

impl SimDevice {
    pub fn new(identity: &[(&str, &str)], key: DeviceKey, servers: Vec<String>) -> Self {
        Self::with_agent(identity, key, servers, agent())
    }

    /// A device identified by `serial` alone, with the ed25519 key from `seed`, whose server
    /// list is `servers` in order.
    pub fn with_serial(serial: &str, seed: u8, servers: &[&MockServer]) -> Self {
        let urls = servers.iter().map(|s| s.url().to_string()).collect();
        Self::new(&[("serial", serial)], DeviceKey::ed25519(seed), urls)
    }

    pub fn with_agent(
        identity: &[(&str, &str)],
        key: DeviceKey,
        servers: Vec<String>,
        agent: ureq::Agent,
    ) -> Self {
        Self {
            identity: identity
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            key,
            servers,
            session: None,
            artifact_name: "debian-bookworm-base".into(),
            device_type: "qemux86-64".into(),
            pending_config: None,
            agent,
        }
    }

    pub fn identity_json(&self) -> Value {
        serde_json::to_value(&self.identity).unwrap()
    }

    /// Which server the device currently talks to.
    pub fn current_server(&self) -> Option<&str> {
        self.session
            .as_ref()
            .map(|(_, i)| self.servers[*i].as_str())
    }

    /// Walks `Servers` from the first entry; the first 200 wins. Any failure (401, 5xx,
    /// transport error) moves on. With every entry failing, the previous session is kept
    /// unless the last failure was a 401 (the 3.4 quirk).
    pub fn authenticate(&mut self) -> Result<(), String> {
        let body = auth_body(&self.identity, &self.key.public_pem());
        let signature = self.key.sign_b64(&body);
        let mut last_error = String::new();
        let mut last_was_401 = false;
        for (i, server) in self.servers.iter().enumerate() {
            let reply = send(
                &self.agent,
                "POST",
                &format!("{server}/api/devices/v1/authentication/auth_requests"),
                &[
                    ("Content-Type", "application/json"),
                    ("Authorization", "Bearer"),
                    ("X-MEN-Signature", &signature),
                ],
                Some(&body),
                false,
            );
            match reply {
                Ok(r) if r.status == 200 => {
                    let token = r.text();
                    assert!(
                        token.len() >= 8 && !token.ends_with('\n'),
                        "token {token:?}"
                    );
                    self.session = Some((token, i));
                    return Ok(());
                }
                Ok(r) => {
                    last_was_401 = r.status == 401;
                    last_error = format!("{server}: HTTP {} {}", r.status, r.text());
                }
                Err(e) => {
                    last_was_401 = false;
                    last_error = format!("{server}: {e}");
                }
            }
        }
        if last_was_401 {
            self.session = None;
        }
        Err(format!("authorization request failed: {last_error}"))
    }

    /// One authorized API call through the "proxy": no token → authenticate; a 401 →
    /// re-authenticate once and retry once. A server transport error is a 503 (the proxy's
    /// answer), which does not trigger re-authentication.
    pub fn api(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<Reply, String> {
        if self.session.is_none() {
            self.authenticate()?;
        }
        let reply = self.api_once(method, path, body);
        if reply.status != 401 {
            return Ok(reply);
        }
        self.authenticate()?;
        Ok(self.api_once(method, path, body))
    }

    fn api_once(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let (token, idx) = self.session.as_ref().expect("authenticated");
        let auth = format!("Bearer {token}");
        let body = body.map(|b| {
            let mut s = b.to_string();
            s.push('\n');
            s
        });
        let result = send(
            &self.agent,
            method,
            &format!("{}{}", self.servers[*idx], path),
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            body.as_deref().map(str::as_bytes),
            true,
        );
        result.unwrap_or_else(|e| Reply {
            status: 503,
            body: e.into_bytes(),
            headers: Vec::new(),
        })
    }

    pub fn send_inventory(&mut self) -> Result<u16, String> {
        let attrs = json!([
            {"name": "device_type", "value": self.device_type},
            {"name": "artifact_name", "value": self.artifact_name},
            {"name": "mender_client_version", "value": "3.4.0+ds1-5+b1"},
            {"name": "ipv4_ens2", "value": ["10.0.2.15/24"]},
        ]);
        let r = self.api(
            "PUT",
            "/api/devices/v1/inventory/device/attributes",
            Some(&attrs),
        )?;
        if r.status == 405 {
            return Ok(self
                .api(
                    "PATCH",
                    "/api/devices/v1/inventory/device/attributes",
                    Some(&attrs),
                )?
                .status);
        }
        Ok(r.status)
    }

    /// Update check in the client's order: v2 POST, v1 POST, v1 GET (404 moves on).
    pub fn check_update(&mut self) -> Result<Option<Update>, String> {
        let v2 = json!({"device_provides": {"artifact_name": self.artifact_name, "device_type": self.device_type}, "update_control_map": true});
        let v1 = json!({"artifact_name": self.artifact_name, "device_type": self.device_type});
        let mut reply = self.api(
            "POST",
            "/api/devices/v2/deployments/device/deployments/next",
            Some(&v2),
        )?;
        if reply.status == 404 {
            reply = self.api(
                "POST",
                "/api/devices/v1/deployments/device/deployments/next",
                Some(&v1),
            )?;
        }
        if reply.status == 404 {
            let path = format!(
                "/api/devices/v1/deployments/device/deployments/next?artifact_name={}&device_type={}",
                self.artifact_name, self.device_type
            );
            reply = self.api("GET", &path, None)?;
        }
        match reply.status {
            204 => Ok(None),
            200 => {
                let v = reply.json();
                let artifact = &v["artifact"];
                Ok(Some(Update {
                    id: v["id"].as_str().ok_or("no id")?.to_string(),
                    artifact_name: artifact["artifact_name"].as_str().ok_or("no name")?.into(),
                    uri: artifact["source"]["uri"].as_str().ok_or("no uri")?.into(),
                    device_types: serde_json::from_value(
                        artifact["device_types_compatible"].clone(),
                    )
                    .map_err(|e| e.to_string())?,
                }))
            }
            other => Err(format!(
                "update check failed: HTTP {other} {}",
                reply.text()
            )),
        }
    }

    pub fn report(&mut self, deployment_id: &str, status: &str) -> Result<u16, String> {
        Ok(self
            .api(
                "PUT",
                &format!("/api/devices/v1/deployments/device/deployments/{deployment_id}/status"),
                Some(&json!({ "status": status })),
            )?
            .status)
    }

    /// Direct download of `source.uri`, without Authorization (not through the proxy).
    pub fn download(&self, uri: &str) -> Result<Vec<u8>, String> {
        let reply = send(&self.agent, "GET", uri, &[], None, false)?;
        if reply.status != 200 {
            return Err(format!("download: HTTP {}", reply.status));
        }
        let declared: usize = reply
            .header("content-length")
            .ok_or("Will not continue with unknown image size")?
            .parse()
            .map_err(|e| format!("content-length: {e}"))?;
        if declared < 4096 || declared != reply.body.len() {
            return Err(format!("bad length {declared} vs {}", reply.body.len()));
        }
        Ok(reply.body)
    }

    /// Runs an update the way 3.4 reports a module answering NeedsArtifactReboot=Yes:
    /// downloading×3, installing, rebooting, re-auth from Servers[0] (commit phase),
    /// installing, success. The delivered mender.conf becomes `pending_config`.
    pub fn install(&mut self, update: &Update) -> Result<(), String> {
        for _ in 0..3 {
            expect_204(self.report(&update.id, "downloading")?)?;
        }
        let bytes = self.download(&update.uri)?;
        let info = menderartifact::read_info(bytes.as_slice()).map_err(|e| e.to_string())?;
        if info.name != update.artifact_name || !info.device_types.contains(&self.device_type) {
            return Err(format!(
                "artifact mismatch: {} {:?}",
                info.name, info.device_types
            ));
        }
        expect_204(self.report(&update.id, "installing")?)?;
        expect_204(self.report(&update.id, "rebooting")?)?;
        // Commit phase: the client clears its token and re-authenticates from Servers[0].
        self.session = None;
        expect_204(self.report(&update.id, "installing")?)?;
        expect_204(self.report(&update.id, "success")?)?;
        self.artifact_name = info.name;
        self.pending_config = Some(extract_config(&bytes)?);
        self.send_inventory()?;
        Ok(())
    }

    /// Daemon restart: tokens are lost; a delivered config takes effect now.
    pub fn restart(&mut self) {
        self.session = None;
        if let Some(config) = self.pending_config.take() {
            self.servers = match config.get("Servers") {
                Some(list) => list
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["ServerURL"].as_str().unwrap().to_string())
                    .collect(),
                None => vec![config["ServerURL"].as_str().unwrap().to_string()],
            };
        }
    }

    /// One idle-loop round: inventory, then an update check; installs what it gets.
    pub fn poll(&mut self) -> Result<Option<Update>, String> {
        let inv = self.send_inventory()?;
        if inv != 200 {
            return Err(format!("inventory: HTTP {inv}"));
        }
        let update = self.check_update()?;
        if let Some(u) = &update {
            self.install(u)?;
        }
        Ok(update)
    }
}

fn expect_204(status: u16) -> Result<(), String> {
    if status == 204 {
        Ok(())
    } else {
        Err(format!("status report answered {status}"))
    }
}

/// Pulls `mender.conf` out of an uncompressed module artifact (data/0000.tar inside).
fn extract_config(artifact: &[u8]) -> Result<Value, String> {
    let mut outer = tar::Archive::new(artifact);
    for entry in outer.entries().map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        if entry.path().map_err(|e| e.to_string())?.to_string_lossy() != "data/0000.tar" {
            continue;
        }
        let mut inner = tar::Archive::new(entry);
        for file in inner.entries().map_err(|e| e.to_string())? {
            let mut file = file.map_err(|e| e.to_string())?;
            if file.path().map_err(|e| e.to_string())?.to_string_lossy() == "mender.conf" {
                let mut text = String::new();
                file.read_to_string(&mut text).map_err(|e| e.to_string())?;
                return serde_json::from_str(&text).map_err(|e| e.to_string());
            }
        }
    }
    Err("mender.conf not found in artifact".into())
}

/// Agent trusting only the given CA (PEM).
pub fn tls_agent(ca_pem: &str) -> ureq::Agent {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    ureq::AgentBuilder::new()
        .tls_config(Arc::new(config))
        .timeout(Duration::from_secs(10))
        .build()
}
