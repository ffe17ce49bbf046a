//! `/admin/…` test endpoints: fault rules, down time, the request log, token expiry.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::{parse_json, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::faults::FaultRule;
use crate::shared::Shared;

pub(super) async fn faults_get(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(Json(shared.faults.list()).into_response())
}

fn parse_rules(body: &[u8]) -> ApiResult<Vec<FaultRule>> {
    let value: Value = parse_json(body)?;
    let rules: Vec<FaultRule> = if value.is_array() {
        serde_json::from_value(value)
    } else {
        serde_json::from_value(value).map(|r| vec![r])
    }
    .map_err(|e| ApiError::bad_request(format!("invalid fault rule: {e}")))?;
    for r in &rules {
        r.validate().map_err(ApiError::bad_request)?;
    }
    Ok(rules)
}

pub(super) async fn faults_add(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    for rule in parse_rules(&body)? {
        shared.faults.add(rule);
    }
    Ok((StatusCode::CREATED, Json(shared.faults.list())).into_response())
}

pub(super) async fn faults_replace(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    shared.faults.replace(parse_rules(&body)?);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn faults_clear(State(shared): State<Arc<Shared>>) -> ApiResult {
    shared.faults.replace(Vec::new());
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
pub(super) struct DownBody {
    seconds: f64,
}

/// Goes down (connections refused) for `seconds`, then comes back on the same address.
/// The answer is sent first; the server goes down a moment later.
pub(super) async fn admin_down(
    State(shared): State<Arc<Shared>>,
    JsonBody(req): JsonBody<DownBody>,
) -> ApiResult {
    if !(req.seconds.is_finite() && req.seconds > 0.0 && req.seconds <= 3600.0) {
        return Err(ApiError::bad_request("seconds must be in (0, 3600]"));
    }
    let down_for = std::time::Duration::from_secs_f64(req.seconds);
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        shared.set_up(false);
        tokio::time::sleep(down_for).await;
        shared.set_up(true);
    });
    Ok(StatusCode::ACCEPTED.into_response())
}

pub(super) async fn admin_requests(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(Json(shared.reqlog.snapshot()).into_response())
}

#[derive(Deserialize, Default)]
pub(super) struct ExpireBody {
    /// Also expire the configured token (for the management API only).
    #[serde(default)]
    configured: bool,
}

/// Expires every login token and PAT issued so far (and optionally the configured token):
/// the next management call with them gets 401 "management token expired".
pub(super) async fn expire_tokens(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let req: ExpireBody = if body.iter().all(u8::is_ascii_whitespace) {
        ExpireBody::default()
    } else {
        parse_json(&body)?
    };
    shared.auth.expire_all(req.configured);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Makes the configured token valid again.
pub(super) async fn restore_token(State(shared): State<Arc<Shared>>) -> ApiResult {
    shared.auth.set_configured_expired(false);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn settings_get(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(Json(shared.settings()).into_response())
}

/// Merges a JSON object into the settings (`{"max_devices": 5, "rate_limit": null}`) and
/// answers the result.
pub(super) async fn settings_patch(
    State(shared): State<Arc<Shared>>,
    JsonBody(patch): JsonBody<Value>,
) -> ApiResult {
    let next = shared
        .settings()
        .patched(&patch)
        .map_err(ApiError::bad_request)?;
    shared.set_settings(next.clone());
    Ok(Json(next).into_response())
}
