//! Management auth as useradm has it: Bearer required, login with HTTP Basic → raw JWT,
//! Personal Access Tokens, logout, token expiry on demand, `/admin/…` only with the
//! configured token.

mod common;

use base64::Engine as _;
use common::*;
use mock_mender_server::{MockServer, User};
use serde_json::json;

fn server_with_user() -> MockServer {
    start_with("auth", |config| {
        config.users = vec![User::new("Ops@Example.com", "pw:1")];
    })
}

fn call(
    server: &MockServer,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = auth {
        headers.push(("Authorization", a));
    }
    send(
        &agent(),
        method,
        &format!("{}{path}", server.url()),
        &headers,
        body.map(str::as_bytes),
        false,
    )
    .unwrap()
}

/// One request of a scripted sequence and the status it must get.
type Step<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, u16);

/// Sends the steps in order, asserting each status.
fn expect_statuses(server: &MockServer, steps: &[Step]) {
    for (i, &(method, path, auth, body, want)) in steps.iter().enumerate() {
        let r = call(server, method, path, auth, body);
        assert_eq!(r.status, want, "step {i}: {method} {path}: {}", r.text());
    }
}

/// `POST …/auth/login` with HTTP Basic credentials and an optional JSON body.
fn login(server: &MockServer, user: &str, password: &str, body: Option<&str>) -> Reply {
    call(server, "POST", LOGIN, Some(&basic(user, password)), body)
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

const DEVICES: &str = "/api/management/v2/devauth/devices";
const LOGIN: &str = "/api/management/v1/useradm/auth/login";
const TOKENS: &str = "/api/management/v1/useradm/settings/tokens";
const EXPIRE: &str = "/admin/expire-tokens";

#[test]
fn login_gives_a_raw_jwt_that_works_as_bearer() {
    let server = server_with_user();
    // Bearer required on every management route, unknown ones included.
    for path in [DEVICES, "/api/management/v1/nothing", TOKENS] {
        let r = call(&server, "GET", path, None, None);
        assert_eq!(r.status, 401, "{path}");
        assert!(r.json()["request_id"].is_string());
    }
    let bad = basic("ops@example.com", "bad");
    expect_statuses(
        &server,
        &[
            ("POST", LOGIN, Some(&bad), None, 401),
            ("POST", LOGIN, None, None, 401),
        ],
    );
    // The e-mail is compared lower-cased, as useradm does.
    let r = login(&server, "OPS@example.com", "pw:1", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/jwt"));
    let jwt = r.text();
    assert_eq!(jwt.split('.').count(), 3, "{jwt}");
    let bearer = format!("Bearer {jwt}");
    let me = call(
        &server,
        "GET",
        "/api/management/v1/useradm/users/me",
        Some(&bearer),
        None,
    );
    assert_eq!(me.json()["email"], "Ops@Example.com");
    let b = Some(bearer.as_str());
    expect_statuses(
        &server,
        &[
            ("GET", DEVICES, b, None, 200),
            // A login token is no admin token.
            ("GET", "/admin/faults", b, None, 401),
            // Logout revokes it.
            (
                "POST",
                "/api/management/v1/useradm/auth/logout",
                b,
                None,
                202,
            ),
            ("GET", DEVICES, b, None, 401),
        ],
    );
}

#[test]
fn personal_access_tokens() {
    let server = server_with_user();
    let jwt = login(&server, "ops@example.com", "pw:1", None).text();
    let bearer = format!("Bearer {jwt}");
    let b = Some(bearer.as_str());
    let r = call(
        &server,
        "POST",
        TOKENS,
        b,
        Some(r#"{"name":"orchestrator","expires_in":3600}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let pat = r.text();
    let pat_bearer = format!("Bearer {pat}");
    let p = Some(pat_bearer.as_str());
    expect_statuses(
        &server,
        &[
            ("GET", DEVICES, p, None, 200),
            // Same name: 409; too long: 400.
            ("POST", TOKENS, b, Some(r#"{"name":"orchestrator"}"#), 409),
            (
                "POST",
                TOKENS,
                b,
                Some(r#"{"name":"x","expires_in":31536001}"#),
                400,
            ),
        ],
    );
    // Listed without the value.
    let list = call(&server, "GET", TOKENS, b, None).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "orchestrator");
    assert!(!list.to_string().contains(&pat));
    // Ten per user, then 422.
    let bodies: Vec<String> = (0..9)
        .map(|i| json!({"name": format!("t{i}")}).to_string())
        .collect();
    let mut steps: Vec<Step> = bodies
        .iter()
        .map(|body| ("POST", TOKENS, b, Some(body.as_str()), 200))
        .collect();
    steps.push(("POST", TOKENS, b, Some(r#"{"name":"eleventh"}"#), 422));
    expect_statuses(&server, &steps);
    // Revoked: 204, then the PAT is refused; the configured token may create PATs too.
    let revoke = format!("{TOKENS}/{}", list[0]["id"].as_str().unwrap());
    let conf = format!("Bearer {TOKEN}");
    expect_statuses(
        &server,
        &[
            ("DELETE", &revoke, b, None, 204),
            ("GET", DEVICES, p, None, 401),
            ("POST", TOKENS, Some(&conf), Some(r#"{"name":"ci"}"#), 200),
        ],
    );
}

#[test]
fn tokens_expire_mid_run_through_admin() {
    let server = server_with_user();
    let conf = format!("Bearer {TOKEN}");
    let c = Some(conf.as_str());
    let pat = call(&server, "POST", TOKENS, c, Some(r#"{"name":"ci"}"#)).text();
    let pat = format!("Bearer {pat}");
    expect_statuses(
        &server,
        &[
            ("GET", DEVICES, Some(&pat), None, 200),
            ("POST", EXPIRE, c, None, 204),
        ],
    );
    let r = call(&server, "GET", DEVICES, Some(&pat), None);
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap().contains("expired"));
    // Only issued tokens by default; with "configured" the configured token too, except on /admin.
    expect_statuses(
        &server,
        &[
            ("GET", DEVICES, c, None, 200),
            ("POST", EXPIRE, c, Some(r#"{"configured":true}"#), 204),
            ("GET", DEVICES, c, None, 401),
            ("GET", "/admin/faults", c, None, 200),
            ("DELETE", EXPIRE, c, None, 204),
            ("GET", DEVICES, c, None, 200),
        ],
    );
    // The same through the in-process API.
    server.expire_management_tokens(true);
    expect_statuses(&server, &[("GET", DEVICES, c, None, 401)]);
    server.restore_management_token();
    expect_statuses(&server, &[("GET", DEVICES, c, None, 200)]);
}

#[test]
fn short_jwt_lifetime_expires_by_itself() {
    let server = start_with("short", |config| {
        config.users = vec![User::new("a@b.c", "p")];
        config.jwt_lifetime = std::time::Duration::from_millis(300);
    });
    let jwt = login(&server, "a@b.c", "p", None).text();
    let bearer = format!("Bearer {jwt}");
    expect_statuses(&server, &[("GET", DEVICES, Some(&bearer), None, 200)]);
    std::thread::sleep(std::time::Duration::from_millis(600));
    expect_statuses(&server, &[("GET", DEVICES, Some(&bearer), None, 401)]);
    // no_expiry gives a token without an expiry.
    let jwt = login(&server, "a@b.c", "p", Some(r#"{"no_expiry":true}"#)).text();
    std::thread::sleep(std::time::Duration::from_millis(600));
    let bearer = format!("Bearer {jwt}");
    expect_statuses(&server, &[("GET", DEVICES, Some(&bearer), None, 200)]);
}

#[test]
fn every_answer_carries_a_request_id() {
    let server = start("rid");
    let r = send(
        &agent(),
        "GET",
        &format!("{}{DEVICES}/nope", server.url()),
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        None,
        false,
    )
    .unwrap();
    assert_eq!(r.status, 404);
    let raw = ureq::get(&format!("{}{DEVICES}", server.url()))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap();
    let id = raw.header("x-men-requestid").unwrap().to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(r.json()["request_id"].as_str().unwrap().len(), 36);
}

#[test]
fn two_factor_code_when_configured() {
    let server = start_with("2fa", |config| {
        config.users = vec![User::new("a@b.c", "p")];
        config.login_2fa_code = Some("123456".into());
    });
    let auth = basic("a@b.c", "p");
    expect_statuses(
        &server,
        &[
            ("POST", LOGIN, Some(&auth), None, 401),
            (
                "POST",
                LOGIN,
                Some(&auth),
                Some(r#"{"token2fa":"000000"}"#),
                401,
            ),
        ],
    );
    let r = login(&server, "a@b.c", "p", Some(r#"{"token2fa":"123456"}"#));
    assert_eq!(r.status, 200, "{}", r.text());
}
