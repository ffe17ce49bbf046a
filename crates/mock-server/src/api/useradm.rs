//! useradm management routes: login (HTTP Basic → raw JWT), logout, `users/me` and Personal
//! Access Tokens.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::{parse_json, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::layers::Caller;
use crate::mgmt_auth::{PatError, Principal};
use crate::shared::Shared;

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[derive(Deserialize, Default)]
struct LoginBody {
    #[serde(default)]
    no_expiry: bool,
    /// Two-factor code (hosted/Enterprise); required when the server has one configured.
    #[serde(default)]
    token2fa: Option<String>,
}

fn jwt_response(status: StatusCode, token: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/jwt")], token).into_response()
}

pub(super) async fn login(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let options: LoginBody = if body.iter().all(u8::is_ascii_whitespace) {
        LoginBody::default()
    } else {
        parse_json(&body)?
    };
    let (user, password) = basic_credentials(&headers)
        .ok_or_else(|| ApiError::unauthorized("missing or malformed Basic credentials"))?;
    if let Some(code) = &shared.login_2fa_code {
        if options.token2fa.as_deref() != Some(code.as_str()) {
            return Err(ApiError::unauthorized(
                "unauthorized: two-factor code required",
            ));
        }
    }
    let token = shared
        .auth
        .login(&user, &password, options.no_expiry)
        .ok_or_else(|| ApiError::unauthorized("unauthorized"))?;
    Ok(jwt_response(StatusCode::OK, token))
}

pub(super) async fn logout(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(_, token)): Extension<Caller>,
) -> ApiResult {
    shared.auth.logout(&token);
    Ok(StatusCode::ACCEPTED.into_response())
}

pub(super) async fn me(Extension(Caller(principal, _)): Extension<Caller>) -> ApiResult {
    let email = match principal {
        Principal::Configured => "configured-token@mock-mender-server".to_string(),
        Principal::User(email) => email,
    };
    Ok(Json(json!({"id": email, "email": email, "verified": true})).into_response())
}

#[derive(Deserialize)]
pub(super) struct PatBody {
    name: String,
    #[serde(default)]
    expires_in: u64,
}

pub(super) async fn pat_create(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(principal, _)): Extension<Caller>,
    JsonBody(req): JsonBody<PatBody>,
) -> ApiResult {
    if req.name.trim().is_empty() {
        return Err(ApiError::bad_request("name must not be empty"));
    }
    match shared
        .auth
        .create_pat(&principal, &req.name, req.expires_in)
    {
        Ok(token) => Ok(jwt_response(StatusCode::OK, token)),
        Err(PatError::TooLong) => Err(ApiError::bad_request(format!(
            "expires_in must be at most {}",
            crate::mgmt_auth::PAT_MAX_SECONDS
        ))),
        Err(PatError::NameTaken) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "Personal Access Token with a given name already exists",
        )),
        Err(PatError::TooMany) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "maximum number of Personal Access Tokens reached",
        )),
    }
}

pub(super) async fn pats_list(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(principal, _)): Extension<Caller>,
) -> ApiResult {
    Ok(Json(shared.auth.list_pats(&principal)).into_response())
}

pub(super) async fn pat_delete(
    State(shared): State<Arc<Shared>>,
    Extension(Caller(principal, _)): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    if shared.auth.delete_pat(&principal, &id) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found("token not found"))
    }
}
