//! The HTTP client against a mock server: HTTPS trusted through `--ca-file` (refused
//! without it), full paging of more than one page (`per_page` = 500, never more), and errors
//! carrying the server's request id.

use std::time::Duration;

use mender_fleet::{Api, Client, ClientOptions, TokenSource};
use mock_mender_server::{MockServer, ServerConfig};

fn opts(ca: Option<std::path::PathBuf>) -> ClientOptions {
    ClientOptions {
        rate: 1000.0,
        concurrency: 4,
        max_retries: 2,
        backoff_base: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        timeout: Duration::from_secs(10),
        throttle_patience: Duration::from_secs(5),
        ca_file: ca,
    }
}

/// An API client of `server` with its management token, trusting `ca` when given.
fn api_of(server: &MockServer, name: &str, token: &str, ca: Option<std::path::PathBuf>) -> Api {
    Api::new(Client::new(name, server.url(), TokenSource::fixed(token), opts(ca)).unwrap())
}

#[test]
fn https_with_ca_file() {
    let mut cfg = ServerConfig::new("new", "tls-token");
    cfg.tls = true;
    let server = MockServer::start(cfg).unwrap();
    let ca = server.ca_cert_path().unwrap().to_path_buf();
    let api = api_of(&server, "new", "tls-token", Some(ca));
    assert_eq!(api.count_devices("accepted").unwrap(), 0);
    let untrusted = api_of(&server, "new", "tls-token", None);
    let err = untrusted.count_devices("accepted").unwrap_err();
    assert!(err.to_string().contains("new server"), "{err}");
}

#[test]
fn pages_through_more_than_500_and_reports_request_ids() {
    let server = MockServer::start(ServerConfig::new("old", "page-token")).unwrap();
    let api = api_of(&server, "old", "page-token", None);
    // 1,100 preauthorized devices: three pages of devauth search.
    let key = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEARnIpVnV05cUOcbgvGsfFhiSCirtI4IsbMJD6p7E1DGY=\n-----END PUBLIC KEY-----\n";
    for i in 0..1100 {
        let mut identity = serde_json::Map::new();
        identity.insert("serial".into(), format!("PAGE-{i:05}").into());
        api.preauthorize(&identity, key).unwrap();
    }
    let mut n = 0;
    api.devices_by_status(Some("preauthorized"), |_| n += 1)
        .unwrap();
    assert_eq!(n, 1100);
    let log = server.request_log();
    assert!(
        log.iter()
            .filter(|e| e.path.ends_with("/devices/search"))
            .count()
            >= 3
    );
    // A 409 names the server, the call and the request id.
    let bogus = api
        .set_auth_status("no-such-device", "no-such-set", "accepted")
        .unwrap_err();
    let text = bogus.to_string();
    assert!(
        text.contains("old server: PUT /api/management/v2/devauth/devices/no-such-device"),
        "{text}"
    );
    assert!(text.contains("request id"), "{text}");
}
