//! Management auth as useradm has it: Bearer required, login with HTTP Basic → raw JWT,
//! Personal Access Tokens, logout, token expiry on demand, `/admin/…` only with the
//! configured token.

mod common;

use base64::Engine as _;
use common::*;
use mock_mender_server::{MockServer, ServerConfig, User};
use serde_json::json;

fn server_with_user() -> MockServer {
    let mut config = ServerConfig::new("auth", TOKEN);
    config.users = vec![User {
        email: "Ops@Example.com".into(),
        password: "pw:1".into(),
    }];
    MockServer::start(config).unwrap()
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

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

const DEVICES: &str = "/api/management/v2/devauth/devices";
const LOGIN: &str = "/api/management/v1/useradm/auth/login";
const TOKENS: &str = "/api/management/v1/useradm/settings/tokens";

#[test]
fn login_gives_a_raw_jwt_that_works_as_bearer() {
    let server = server_with_user();
    // Bearer required on every management route, unknown ones included.
    for path in [DEVICES, "/api/management/v1/nothing", TOKENS] {
        let r = call(&server, "GET", path, None, None);
        assert_eq!(r.status, 401, "{path}");
        assert!(r.json()["request_id"].is_string());
    }
    assert_eq!(
        call(
            &server,
            "POST",
            LOGIN,
            Some(&basic("ops@example.com", "bad")),
            None
        )
        .status,
        401
    );
    assert_eq!(call(&server, "POST", LOGIN, None, None).status, 401);
    // The e-mail is compared lower-cased, as useradm does.
    let r = call(
        &server,
        "POST",
        LOGIN,
        Some(&basic("OPS@example.com", "pw:1")),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.content_type.as_deref(), Some("application/jwt"));
    let jwt = r.text();
    assert_eq!(jwt.split('.').count(), 3, "{jwt}");
    let bearer = format!("Bearer {jwt}");
    assert_eq!(
        call(&server, "GET", DEVICES, Some(&bearer), None).status,
        200
    );
    let me = call(
        &server,
        "GET",
        "/api/management/v1/useradm/users/me",
        Some(&bearer),
        None,
    );
    assert_eq!(me.json()["email"], "Ops@Example.com");
    // A login token is no admin token.
    assert_eq!(
        call(&server, "GET", "/admin/faults", Some(&bearer), None).status,
        401
    );
    // Logout revokes it.
    assert_eq!(
        call(
            &server,
            "POST",
            "/api/management/v1/useradm/auth/logout",
            Some(&bearer),
            None
        )
        .status,
        202
    );
    assert_eq!(
        call(&server, "GET", DEVICES, Some(&bearer), None).status,
        401
    );
}

#[test]
fn personal_access_tokens() {
    let server = server_with_user();
    let jwt = call(
        &server,
        "POST",
        LOGIN,
        Some(&basic("ops@example.com", "pw:1")),
        None,
    )
    .text();
    let bearer = format!("Bearer {jwt}");
    let r = call(
        &server,
        "POST",
        TOKENS,
        Some(&bearer),
        Some(r#"{"name":"orchestrator","expires_in":3600}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let pat = r.text();
    assert_eq!(
        call(
            &server,
            "GET",
            DEVICES,
            Some(&format!("Bearer {pat}")),
            None
        )
        .status,
        200
    );
    // Same name: 409; too long: 400.
    assert_eq!(
        call(
            &server,
            "POST",
            TOKENS,
            Some(&bearer),
            Some(r#"{"name":"orchestrator"}"#)
        )
        .status,
        409
    );
    assert_eq!(
        call(
            &server,
            "POST",
            TOKENS,
            Some(&bearer),
            Some(r#"{"name":"x","expires_in":31536001}"#)
        )
        .status,
        400
    );
    // Listed without the value.
    let list = call(&server, "GET", TOKENS, Some(&bearer), None).json();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["name"], "orchestrator");
    assert!(!list.to_string().contains(&pat));
    // Ten per user, then 422.
    for i in 0..9 {
        let body = json!({"name": format!("t{i}")}).to_string();
        assert_eq!(
            call(&server, "POST", TOKENS, Some(&bearer), Some(&body)).status,
            200
        );
    }
    assert_eq!(
        call(
            &server,
            "POST",
            TOKENS,
            Some(&bearer),
            Some(r#"{"name":"eleventh"}"#)
        )
        .status,
        422
    );
    // Revoked: 204, then the PAT is refused.
    let id = list[0]["id"].as_str().unwrap();
    assert_eq!(
        call(
            &server,
            "DELETE",
            &format!("{TOKENS}/{id}"),
            Some(&bearer),
            None
        )
        .status,
        204
    );
    assert_eq!(
        call(
            &server,
            "GET",
            DEVICES,
            Some(&format!("Bearer {pat}")),
            None
        )
        .status,
        401
    );
    // The configured token may create PATs too.
    let conf = format!("Bearer {TOKEN}");
    assert_eq!(
        call(
            &server,
            "POST",
            TOKENS,
            Some(&conf),
            Some(r#"{"name":"ci"}"#)
        )
        .status,
        200
    );
}

#[test]
fn tokens_expire_mid_run_through_admin() {
    let server = server_with_user();
    let conf = format!("Bearer {TOKEN}");
    let pat = call(
        &server,
        "POST",
        TOKENS,
        Some(&conf),
        Some(r#"{"name":"ci"}"#),
    )
    .text();
    let pat = format!("Bearer {pat}");
    assert_eq!(call(&server, "GET", DEVICES, Some(&pat), None).status, 200);
    assert_eq!(
        call(&server, "POST", "/admin/expire-tokens", Some(&conf), None).status,
        204
    );
    let r = call(&server, "GET", DEVICES, Some(&pat), None);
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap().contains("expired"));
    // Only issued tokens by default; with "configured" the configured token too, except on /admin.
    assert_eq!(call(&server, "GET", DEVICES, Some(&conf), None).status, 200);
    assert_eq!(
        call(
            &server,
            "POST",
            "/admin/expire-tokens",
            Some(&conf),
            Some(r#"{"configured":true}"#)
        )
        .status,
        204
    );
    assert_eq!(call(&server, "GET", DEVICES, Some(&conf), None).status, 401);
    assert_eq!(
        call(&server, "GET", "/admin/faults", Some(&conf), None).status,
        200
    );
    assert_eq!(
        call(&server, "DELETE", "/admin/expire-tokens", Some(&conf), None).status,
        204
    );
    assert_eq!(call(&server, "GET", DEVICES, Some(&conf), None).status, 200);
    // The same through the in-process API.
    server.expire_management_tokens(true);
    assert_eq!(call(&server, "GET", DEVICES, Some(&conf), None).status, 401);
    server.restore_management_token();
    assert_eq!(call(&server, "GET", DEVICES, Some(&conf), None).status, 200);
}

#[test]
fn short_jwt_lifetime_expires_by_itself() {
    let mut config = ServerConfig::new("short", TOKEN);
    config.users = vec![User {
        email: "a@b.c".into(),
        password: "p".into(),
    }];
    config.jwt_lifetime = std::time::Duration::from_millis(300);
    let server = MockServer::start(config).unwrap();
    let jwt = call(&server, "POST", LOGIN, Some(&basic("a@b.c", "p")), None).text();
    let bearer = format!("Bearer {jwt}");
    assert_eq!(
        call(&server, "GET", DEVICES, Some(&bearer), None).status,
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(
        call(&server, "GET", DEVICES, Some(&bearer), None).status,
        401
    );
    // no_expiry gives a token without an expiry.
    let jwt = call(
        &server,
        "POST",
        LOGIN,
        Some(&basic("a@b.c", "p")),
        Some(r#"{"no_expiry":true}"#),
    )
    .text();
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(
        call(
            &server,
            "GET",
            DEVICES,
            Some(&format!("Bearer {jwt}")),
            None
        )
        .status,
        200
    );
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
    let mut config = ServerConfig::new("2fa", TOKEN);
    config.users = vec![User {
        email: "a@b.c".into(),
        password: "p".into(),
    }];
    config.login_2fa_code = Some("123456".into());
    let server = MockServer::start(config).unwrap();
    let auth = basic("a@b.c", "p");
    assert_eq!(call(&server, "POST", LOGIN, Some(&auth), None).status, 401);
    assert_eq!(
        call(
            &server,
            "POST",
            LOGIN,
            Some(&auth),
            Some(r#"{"token2fa":"000000"}"#)
        )
        .status,
        401
    );
    let r = call(
        &server,
        "POST",
        LOGIN,
        Some(&auth),
        Some(r#"{"token2fa":"123456"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}
