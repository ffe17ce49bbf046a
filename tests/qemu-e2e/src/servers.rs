//! The mock Mender servers as separate processes (`mock-mender-server` binary), driven only
//! through the real Mender management API over HTTP(S) and read through their JSON-lines request
//! logs, so the harness exercises the same surface an operator's tooling would.

use anyhow::{bail, Context, Result};
use mock_mender_server::routes;
use serde_json::Value;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One line of a server's request log: the mock's own type, read back from its JSON lines.
pub use mock_mender_server::RequestLogEntry;

/// What the scenarios ask of a request-log line.
pub trait LoggedRequest {
    /// Seconds since the Unix epoch (the log's RFC 3339 UTC time; 0 if unreadable).
    fn epoch(&self) -> f64;
    fn is_auth(&self) -> bool;
    /// A request at the device API or an artifact download (management calls excluded).
    fn is_device_api(&self) -> bool;
}

impl LoggedRequest for RequestLogEntry {
    fn epoch(&self) -> f64 {
        parse_rfc3339(&self.time).unwrap_or(0.0)
    }
    fn is_auth(&self) -> bool {
        self.path == routes::AUTH_REQUESTS
    }
    fn is_device_api(&self) -> bool {
        self.path.starts_with(routes::DEVICES_PREFIX)
            || self.path.starts_with(routes::DOWNLOAD_PREFIX)
    }
}

/// `2026-11-22T03:10:00.123Z` (or `+00:00`) to seconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<f64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp() as f64 + f64::from(t.nanosecond()) / 1e9)
}

/// Current time in seconds since the epoch (comparable with log times).
pub fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// How to start one mock server.
#[derive(Debug, Clone)]
pub struct MockOptions {
    pub name: String,
    /// What the guest uses to reach it, e.g. `http://10.0.2.100` (artifact download URLs).
    pub public_url: String,
    pub tls: bool,
}

/// A running `mock-mender-server` process. Dropping it kills the process.
pub struct MockServer {
    child: Option<Child>,
    pub name: String,
    pub port: u16,
    pub local_url: String,
    pub public_url: String,
    pub request_log: PathBuf,
    pub stderr_log: PathBuf,
    /// The server's CA certificate (PEM) when it serves HTTPS.
    pub ca_file: Option<PathBuf>,
    token: String,
    agent: ureq::Agent,
    binary: PathBuf,
    dir: PathBuf,
    tls: bool,
}

/// A free loopback port (bound and released; the server binds it right after).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl MockServer {
    /// Starts the server on a free loopback port and waits until it answers.
    pub fn start(binary: &Path, options: &MockOptions, dir: &Path) -> Result<MockServer> {
        std::fs::create_dir_all(dir)?;
        let port = free_port()?;
        let scheme = if options.tls { "https" } else { "http" };
        let mut server = MockServer {
            child: None,
            name: options.name.clone(),
            port,
            local_url: format!("{scheme}://127.0.0.1:{port}"),
            public_url: options.public_url.clone(),
            request_log: dir.join(format!("{}-requests.jsonl", options.name)),
            stderr_log: dir.join(format!("{}-server.log", options.name)),
            ca_file: options
                .tls
                .then(|| dir.join(format!("{}-ca.pem", options.name))),
            token: format!("qemu-e2e-{}-token", options.name),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            tls: options.tls,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_log)?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .env("MOCK_MENDER_MANAGEMENT_TOKEN", &self.token)
            .arg("--public-url")
            .arg(&self.public_url)
            .arg("--request-log")
            .arg(&self.request_log)
            .arg("--state-dir")
            .arg(self.dir.join(format!("{}-state", self.name)));
        if let Some(ca) = &self.ca_file {
            cmd.arg("--tls").arg("--ca-file").arg(ca);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && (!self.tls || self.ca_file.as_ref().is_some_and(|f| f.exists()))
            {
                break;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "mock server `{}` exited at start ({status}): {}",
                    self.name,
                    crate::vm::tail_file(&self.stderr_log, 20)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "mock server `{}` did not listen on {addr} within 30 s",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(ca) = &self.ca_file {
            self.agent = tls_agent(ca)?;
        }
        Ok(())
    }

    /// Kills the server process (connections refused until `restart`). State is kept on disk.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same state directory.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.local_url, path)
    }

    fn call(&self, method: &str, path: &str) -> ureq::Request {
        self.agent
            .request(method, &self.url(path))
            .set("Authorization", &format!("Bearer {}", self.token))
    }

    fn describe(&self, method: &str, path: &str, err: ureq::Error) -> anyhow::Error {
        match err {
            ureq::Error::Status(code, resp) => {
                let body = resp.into_string().unwrap_or_default();
                anyhow::anyhow!("{} {method} {path}: HTTP {code}: {body}", self.name)
            }
            other => anyhow::anyhow!("{} {method} {path}: {other}", self.name),
        }
    }

    fn get_json(&self, path: &str) -> Result<Value> {
        let resp = self
            .call("GET", path)
            .call()
            .map_err(|e| self.describe("GET", path, e))?;
        Ok(resp.into_json()?)
    }

    fn send_json(&self, method: &str, path: &str, body: Value) -> Result<ureq::Response> {
        self.call(method, path)
            .send_json(body)
            .map_err(|e| self.describe(method, path, e))
    }

    /// All devices (deviceauth v2).
    pub fn devices(&self) -> Result<Vec<Value>> {
        let v = self.get_json("/api/management/v2/devauth/devices?per_page=500")?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// The device whose identity has `serial`, if it ever authenticated or was preauthorized.
    pub fn device_by_serial(&self, serial: &str) -> Result<Option<Value>> {
        Ok(self
            .devices()?
            .into_iter()
            .find(|d| d["identity_data"]["serial"].as_str() == Some(serial)))
    }

    /// `PUT .../auth/{aid}/status` with accepted|rejected|pending.
    pub fn set_auth_status(&self, device_id: &str, auth_id: &str, status: &str) -> Result<()> {
        let path = format!("/api/management/v2/devauth/devices/{device_id}/auth/{auth_id}/status");
        self.send_json("PUT", &path, serde_json::json!({ "status": status }))?;
        Ok(())
    }

    /// `POST /api/management/v2/devauth/devices` (preauthorize identity + key).
    pub fn preauthorize(&self, identity_data: &Value, pubkey: &str) -> Result<()> {
        self.send_json(
            "POST",
            "/api/management/v2/devauth/devices",
            serde_json::json!({ "identity_data": identity_data, "pubkey": pubkey }),
        )?;
        Ok(())
    }

    /// `POST /api/management/v1/deployments/artifacts` (multipart, streamed from the file).
    pub fn upload_artifact(&self, artifact: &Path) -> Result<()> {
        let path = "/api/management/v1/deployments/artifacts";
        let size = std::fs::metadata(artifact)
            .with_context(|| format!("{}", artifact.display()))?
            .len();
        let boundary = "qemu-e2e-boundary-7d1c0f";
        let file_name = artifact
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("artifact.mender");
        let head = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"size\"\r\n\r\n{size}\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"artifact\"; filename=\"{file_name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let total = head.len() as u64 + size + tail.len() as u64;
        let body = std::io::Cursor::new(head.into_bytes())
            .chain(std::fs::File::open(artifact)?)
            .chain(std::io::Cursor::new(tail.into_bytes()));
        self.call("POST", path)
            .set(
                "Content-Type",
                &format!("multipart/form-data; boundary={boundary}"),
            )
            .set("Content-Length", &total.to_string())
            .send(body)
            .map_err(|e| self.describe("POST", path, e))?;
        Ok(())
    }

    /// `POST /api/management/v1/deployments/deployments`; returns the deployment id.
    pub fn create_deployment(
        &self,
        name: &str,
        artifact_name: &str,
        device_id: &str,
    ) -> Result<String> {
        let path = "/api/management/v1/deployments/deployments";
        let resp = self.send_json(
            "POST",
            path,
            serde_json::json!({ "name": name, "artifact_name": artifact_name, "devices": [device_id] }),
        )?;
        let location = resp.header("Location").unwrap_or_default().to_string();
        let id = location.rsplit('/').next().unwrap_or_default().to_string();
        if id.is_empty() {
            bail!(
                "{}: deployment created without a Location header",
                self.name
            );
        }
        Ok(id)
    }

    /// Every deployment on the server (v1 list: `id`, `name`, `artifact_name`, ...).
    pub fn deployments(&self) -> Result<Vec<Value>> {
        let v = self.get_json("/api/management/v1/deployments/deployments")?;
        Ok(v.as_array().cloned().unwrap_or_default())
    }

    /// Issues a Personal Access Token (`POST .../useradm/settings/tokens`), as an operator
    /// does for the orchestrator, and writes it to `file` (mode 0600). The token is never
    /// printed nor passed on a command line.
    pub fn issue_pat(&self, name: &str, file: &Path) -> Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = "/api/management/v1/useradm/settings/tokens";
        let token = self
            .send_json(
                "POST",
                path,
                serde_json::json!({ "name": name, "expires_in": 86400 }),
            )?
            .into_string()?;
        if token.trim().is_empty() || token.trim().contains(char::is_whitespace) {
            bail!("{} POST {path}: the answer is not one token", self.name);
        }
        let _ = std::fs::remove_file(file);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
            .and_then(|mut f| f.write_all(token.trim().as_bytes()))
            .with_context(|| format!("cannot write {}", file.display()))?;
        Ok(())
    }

    /// This device's part of a deployment (`status`, `history` of reports).
    pub fn deployment_device(&self, deployment_id: &str, device_id: &str) -> Result<Option<Value>> {
        let v = self.get_json(&format!(
            "/api/management/v1/deployments/deployments/{deployment_id}/devices"
        ))?;
        Ok(v.as_array().and_then(|list| {
            list.iter()
                .find(|d| d["id"].as_str() == Some(device_id))
                .cloned()
        }))
    }

    /// `GET /api/management/v1/inventory/devices/{id}`.
    pub fn inventory(&self, device_id: &str) -> Result<Value> {
        self.get_json(&format!("/api/management/v1/inventory/devices/{device_id}"))
    }

    /// The device's deployment log, if it uploaded one.
    pub fn deployment_log(&self, deployment_id: &str, device_id: &str) -> Result<String> {
        let path = format!(
            "/api/management/v1/deployments/deployments/{deployment_id}/devices/{device_id}/log"
        );
        match self.call("GET", &path).call() {
            Ok(resp) => Ok(resp.into_string()?),
            Err(e) => Err(self.describe("GET", &path, e)),
        }
    }

    /// Every request logged so far (reads the JSON-lines file).
    pub fn requests(&self) -> Result<Vec<RequestLogEntry>> {
        let text = match std::fs::read_to_string(&self.request_log) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| self.request_log.display().to_string()),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).with_context(|| {
                    format!("{}: bad request-log line {l:?}", self.request_log.display())
                })
            })
            .collect()
    }

    /// Requests the device (by id) or anyone at the device API made; management calls excluded.
    pub fn device_requests(&self) -> Result<Vec<RequestLogEntry>> {
        Ok(self
            .requests()?
            .into_iter()
            .filter(|r| r.is_device_api())
            .collect())
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tls_agent(ca_file: &Path) -> Result<ureq::Agent> {
    let pem =
        std::fs::read(ca_file).with_context(|| format!("cannot read {}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.with_context(|| format!("{}: bad PEM", ca_file.display()))?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .tls_config(Arc::new(config))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_to_epoch() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2000-03-01T00:00:01.5Z"), Some(951868801.5));
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:01+00:00"),
            Some(951868801.0)
        );
    }
}
