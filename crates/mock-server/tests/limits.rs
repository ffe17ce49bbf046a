//! Rate limiting (ref §3: a per-server token bucket, 429 with `Retry-After` and `X-Retry-In`,
//! plain text like the gateway or JSON like the services, switchable at run time) and
//! multi-tenant mode (ref §0.1, §5.3: the tenant token enforced on device auth, 401 on a
//! mismatch, an optional default tenant token).

mod common;

use common::*;
use mock_mender_server::{MockServer, RateLimit, RateLimitBody, RateLimitScope, ServerConfig};
use serde_json::{json, Value};

const DEVICES: &str = "/api/management/v2/devauth/devices";

fn limited(body: RateLimitBody, scope: RateLimitScope) -> RateLimit {
    RateLimit {
        requests_per_second: 0.5,
        burst: 3,
        body,
        scope,
    }
}

#[test]
fn token_bucket_answers_429_plain_like_the_gateway() {
    let server = start_with("rl", |config| {
        config.settings.rate_limit =
            Some(limited(RateLimitBody::Plain, RateLimitScope::Management));
    });
    let mgmt = Mgmt::new(&server);
    for _ in 0..3 {
        assert_eq!(mgmt.call("GET", DEVICES, None).status, 200);
    }
    let r = mgmt.call("GET", DEVICES, None);
    assert_eq!(r.status, 429);
    assert_eq!(r.text(), "Too Many Requests");
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let retry_after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let retry_in = r.header("x-retry-in").unwrap();
    assert!(retry_in.ends_with('s'), "{retry_in}");
    // Logged as such; /admin is never limited, and the device API is out of this scope.
    assert!(server
        .request_log()
        .iter()
        .any(|e| e.status == Some(429) && e.fault.as_deref() == Some("rate limited")));
    assert_eq!(mgmt.call("GET", "/admin/settings", None).status, 200);
    let mut dev = SimDevice::with_serial("X", 1, &[&server]);
    let err = dev.authenticate().unwrap_err();
    assert!(err.contains("401"), "{err}");
    // Off at run time.
    assert_eq!(
        mgmt.call(
            "PATCH",
            "/admin/settings",
            Some(json!({"rate_limit": null}))
        )
        .status,
        200
    );
    assert_eq!(mgmt.call("GET", DEVICES, None).status, 200);
}

#[test]
fn json_body_like_the_services_and_device_scope() {
    let (server, mgmt) = start_managed("rl-json");
    // On at run time, JSON body, devices only.
    let r = mgmt.call(
        "PATCH",
        "/admin/settings",
        Some(json!({"rate_limit": {"requests_per_second": 0.5, "burst": 1, "body": "json", "scope": "devices"}})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut dev = SimDevice::with_serial("Y", 2, &[&server]);
    assert!(dev.authenticate().unwrap_err().contains("401"));
    let err = dev.authenticate().unwrap_err();
    assert!(err.contains("429"), "{err}");
    // Management stays unlimited in this scope.
    for _ in 0..5 {
        assert_eq!(mgmt.call("GET", DEVICES, None).status, 200);
    }
    server.update_settings(|s| {
        s.rate_limit = Some(limited(RateLimitBody::Json, RateLimitScope::All))
    });
    let mut last = None;
    for _ in 0..5 {
        last = Some(mgmt.call("GET", DEVICES, None));
    }
    let r = last.unwrap();
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"], "too many requests");
    assert!(r.json()["request_id"].is_string());
    assert!(r.header("retry-after").is_some() && r.header("x-retry-in").is_some());
}

/// An auth request with a tenant token, signed by the device key.
fn auth_with_tenant(server: &MockServer, seed: u8, token: Option<&str>) -> u16 {
    let key = DeviceKey::ed25519(seed);
    let mut body: Value = serde_json::from_slice(&auth_body(
        &[("serial".to_string(), format!("T{seed}"))]
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
        &key.public_pem(),
    ))
    .unwrap();
    match token {
        Some(t) => body["tenant_token"] = json!(t),
        None => {
            body.as_object_mut().unwrap().remove("tenant_token");
        }
    }
    let bytes = serde_json::to_vec(&body).unwrap();
    auth_request(server, &bytes, Some(&key.sign_b64(&bytes))).status
}

#[test]
fn tenant_token_enforced_with_optional_default() {
    let mut config = ServerConfig::new("tenant", TOKEN);
    config.tenant_token = Some("tenant-B".into());
    assert!(
        !format!("{config:?}").contains("tenant-B"),
        "Debug masks the token"
    );
    assert!(!format!("{config:?}").contains(TOKEN));
    let server = MockServer::start(config.clone()).unwrap();
    let mgmt = Mgmt::new(&server);
    // Right token: registered (pending, 401 until accepted). Wrong or missing: 401 and
    // nothing registered.
    assert_eq!(auth_with_tenant(&server, 1, Some("tenant-A")), 401);
    assert_eq!(auth_with_tenant(&server, 2, None), 401);
    assert!(mgmt.devices("pending").is_empty());
    assert_eq!(auth_with_tenant(&server, 3, Some("tenant-B")), 401);
    assert_eq!(mgmt.devices("pending").len(), 1);
    mgmt.accept_single_pending();
    assert_eq!(auth_with_tenant(&server, 3, Some("tenant-B")), 200);
    assert_eq!(auth_with_tenant(&server, 3, Some("tenant-A")), 401);

    // default_tenant_token = this tenant: a device with tenant A's token lands here (§5.3).
    config.default_tenant_token = Some("tenant-B".into());
    let server = MockServer::start(config.clone()).unwrap();
    let mgmt = Mgmt::new(&server);
    assert_eq!(auth_with_tenant(&server, 4, Some("tenant-A")), 401);
    mgmt.accept_single_pending();
    assert_eq!(auth_with_tenant(&server, 4, Some("tenant-A")), 200);
    // A default pointing at another tenant admits nobody here.
    config.default_tenant_token = Some("tenant-C".into());
    let server = MockServer::start(config).unwrap();
    assert_eq!(auth_with_tenant(&server, 5, Some("tenant-A")), 401);
    assert!(Mgmt::new(&server).devices("pending").is_empty());
    // Open source ignores tokens.
    let open = start("open");
    assert_eq!(auth_with_tenant(&open, 6, Some("whatever")), 401);
    assert_eq!(Mgmt::new(&open).devices("pending").len(), 1);
}
