//! Server-level behaviour: HTTPS with the generated CA, persistence across restarts, the
//! request log file, and the command-line binary (URL on stdout, SIGTERM, loopback guard).

mod common;

use std::io::BufRead as _;
use std::process::{Command, Stdio};

use common::*;
use mock_mender_server::{MockServer, ServerConfig};
use serde_json::json;

const DEVICES: &str = "/api/management/v2/devauth/devices";

#[test]
fn tls_with_generated_ca() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_with("tls", |config| {
        config.tls = true;
        config.extra_sans = vec!["10.0.2.100".into(), "mender.test".into()];
        config.ca_file = Some(dir.path().join("server.crt"));
    });
    assert!(server.url().starts_with("https://127.0.0.1:"));
    let ca = std::fs::read_to_string(server.ca_cert_path().unwrap()).unwrap();
    assert_eq!(Some(ca.as_str()), server.ca_cert_pem());
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));

    let agent = tls_agent(&ca);
    let mut dev = SimDevice::with_agent(
        &[("serial", "TLS-1")],
        DeviceKey::ed25519(21),
        vec![server.url().to_string()],
        agent.clone(),
    );
    assert!(dev.authenticate().is_err());
    let mut mgmt = Mgmt::new(&server);
    mgmt.agent = agent.clone();
    mgmt.accept_single_pending();
    dev.authenticate().unwrap();
    assert_eq!(dev.send_inventory().unwrap(), 200);
    // "localhost" is a SAN as well.
    let by_name = Mgmt {
        base: format!("https://localhost:{}", server.local_addr().port()),
        ..mgmt.clone()
    };
    by_name.get_ok(DEVICES);
    // A client without the CA refuses the server.
    let err = send(&tls_agent(""), "GET", server.url(), &[], None, false).unwrap_err();
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
}

#[test]
fn state_dir_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new("persist", TOKEN);
    config.state_dir = Some(dir.path().to_path_buf());
    config.tls = true;
    let server = MockServer::start(config.clone()).unwrap();
    let ca_before = server.ca_cert_pem().unwrap().to_string();
    let mut mgmt = Mgmt::new(&server);
    mgmt.agent = tls_agent(&ca_before);
    let key = DeviceKey::ed25519(22);
    let id = mgmt.preauthorize(&json!({"serial": "P-1"}), &key.public_pem());
    let artifact = build_artifact("persisted", "qemux86-64", &json!({}));
    assert_eq!(mgmt.upload_artifact(&artifact, "").status, 201);
    let mut dev = SimDevice::with_agent(
        &[("serial", "P-1")],
        key,
        vec![server.url().to_string()],
        tls_agent(&ca_before),
    );
    dev.authenticate().unwrap();
    let dep = mgmt.deploy("d", "persisted", &[&id]);
    server.shutdown();
    assert!(dir.path().join("state.json").exists());

    // Same port again so the device's URL and token still work.
    config.listen = dev.servers[0]
        .trim_start_matches("https://")
        .parse()
        .unwrap();
    let server = MockServer::start(config).unwrap();
    assert_eq!(server.ca_cert_pem().unwrap(), ca_before, "CA kept");
    assert_eq!(
        server.device(&id).unwrap().status,
        mock_mender_server::AuthStatus::Accepted
    );
    let update = dev.check_update().unwrap().expect("deployment kept");
    assert_eq!(update.id, dep);
    assert_eq!(dev.download(&update.uri).unwrap(), artifact);
    let auths = server
        .request_log()
        .iter()
        .filter(|e| e.path.ends_with("/auth_requests"))
        .count();
    assert_eq!(auths, 0, "the token survived the restart");

    // A corrupt state file is refused with its name.
    server.shutdown();
    std::fs::write(dir.path().join("state.json"), b"{broken").unwrap();
    let mut config = ServerConfig::new("persist", TOKEN);
    config.state_dir = Some(dir.path().to_path_buf());
    let err = MockServer::start(config).err().unwrap().to_string();
    assert!(err.contains("state.json"), "{err}");
}

#[test]
fn request_log_file_has_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("requests.jsonl");
    let server = start_with("logged", |config| {
        config.request_log_file = Some(path.clone());
    });
    let mut dev = SimDevice::with_serial("L-1", 23, &[&server]);
    assert!(dev.authenticate().is_err());
    let device_id = server.devices()[0].id.clone();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["server"], "logged");
    assert_eq!(lines[0]["method"], "POST");
    assert_eq!(
        lines[0]["path"],
        "/api/devices/v1/authentication/auth_requests"
    );
    assert_eq!(lines[0]["status"], 401);
    assert_eq!(lines[0]["device_id"], device_id.as_str());
    assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
    let from_api: Vec<_> = server.request_log();
    assert_eq!(serde_json::to_value(&from_api).unwrap(), json!(lines));
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mock-mender-server"))
}

#[test]
fn cli_prints_url_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("req.jsonl");
    let token_file = write_file(&dir, "token", "cli-token\n");
    let users = "# login users\nOps@Example.com:s3cret:with-colon\n";
    let users_file = write_file(&dir, "users", users);
    let mut child = binary()
        .env_remove("MOCK_MENDER_MANAGEMENT_TOKEN")
        .args(["--listen", "127.0.0.1:0", "--tls", "--name", "cli"])
        .arg("--management-token-file")
        .arg(&token_file)
        .arg("--users-file")
        .arg(&users_file)
        .args(["--public-url", "https://10.0.2.100:443", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--request-log")
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        lines.push(line.trim().to_string());
    }
    let url = lines[0].strip_prefix("url=").expect("url line").to_string();
    assert_eq!(lines[1], "public_url=https://10.0.2.100:443");
    let ca_path = lines[2].strip_prefix("ca=").expect("ca line");
    let ca = std::fs::read_to_string(ca_path).unwrap();
    Mgmt::at(&url, "cli-token", tls_agent(&ca)).get_ok(DEVICES);
    // The users file's user logs in with HTTP Basic (the password may contain ':').
    let basic = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "ops@example.com:s3cret:with-colon",
    );
    let r = send(
        &tls_agent(&ca),
        "POST",
        &format!("{url}/api/management/v1/useradm/auth/login"),
        &[("Authorization", &format!("Basic {basic}"))],
        None,
        false,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/jwt"));
    let started = std::time::Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("\"server\":\"cli\""));
}

#[test]
fn cli_refuses_non_loopback_and_bad_state() {
    let out = binary()
        .env("MOCK_MENDER_MANAGEMENT_TOKEN", "t")
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("non-loopback"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.json"), b"[]").unwrap();
    let out = binary()
        .env("MOCK_MENDER_MANAGEMENT_TOKEN", "t")
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("state.json"), "{err}");
}

#[test]
fn cli_takes_the_token_from_a_file_or_the_environment_never_argv() {
    // No token at all: a usage error naming both ways to give one.
    let out = binary()
        .env_remove("MOCK_MENDER_MANAGEMENT_TOKEN")
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--management-token-file") && err.contains("MOCK_MENDER_MANAGEMENT_TOKEN"),
        "{err}"
    );
    // The old argv flag is gone.
    let out = binary()
        .args(["--listen", "127.0.0.1:0", "--management-token", "t"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // An empty token file is refused, naming the file.
    let dir = tempfile::tempdir().unwrap();
    let empty = write_file(&dir, "empty-token", "\n");
    let out = binary()
        .args(["--listen", "127.0.0.1:0", "--management-token-file"])
        .arg(&empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty-token"));
    // From the environment (with a few behaviour flags, visible in /admin/settings).
    let mut child = binary()
        .env("MOCK_MENDER_MANAGEMENT_TOKEN", "env-token")
        .args([
            "--listen",
            "127.0.0.1:0",
            "--max-devices",
            "7",
            "--edition",
            "enterprise",
        ])
        .args([
            "--no-duplicate-deployment-check",
            "--max-active-deployments",
            "800",
            "--max-active-deployments-status",
            "429",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let url = line.trim().strip_prefix("url=").unwrap().to_string();
    let mgmt = Mgmt::at(&url, "env-token", agent());
    mgmt.expect_statuses(&[("GET", DEVICES, 200)]);
    Mgmt::at(&url, "other", agent()).expect_statuses(&[("GET", DEVICES, 401)]);
    let settings = mgmt.get_ok("/admin/settings");
    assert_eq!(settings["max_devices"], 7);
    assert_eq!(settings["edition"], "enterprise");
    assert_eq!(settings["duplicate_deployment_check"], false);
    assert_eq!(settings["max_active_deployments"], 800);
    assert_eq!(settings["max_active_deployments_status"], 429);
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().unwrap().success());
}

/// Regression (found with the real client in QEMU): a device trusting old's and new's CAs in one
/// `ServerCertificate` bundle must verify both servers with OpenSSL, which picks issuers by
/// subject and authority key identifier. Identical CA subjects made new's certificate fail
/// with "certificate signature failure" (verify rc 7).
#[test]
fn two_mock_cas_in_one_bundle_verify_both_servers_with_openssl() {
    let Some(openssl) = require_tool("openssl", "run .ci/install-deps") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str| {
        start_with(name, |config| {
            config.tls = true;
        })
    };
    let (old, new) = (start("old"), start("new"));
    let cas = format!(
        "{}{}",
        old.ca_cert_pem().unwrap(),
        new.ca_cert_pem().unwrap()
    );
    let bundle = write_file(&dir, "server.crt", cas);
    for server in [&old, &new] {
        let out = Command::new(&openssl)
            .args(["s_client", "-verify_return_error", "-brief", "-connect"])
            .arg(server.local_addr().to_string())
            .arg("-CAfile")
            .arg(&bundle)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && all.contains("Verification: OK"),
            "{}: {all}",
            server.name()
        );
    }
}
