//! deviceauth v2 management routes: device lists and search, preauthorization, auth set
//! status, decommission, device limit.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::parse_json;
use crate::error::{ApiError, ApiResult};
use crate::shared::Shared;
use crate::state::{AuthStatus, Device};

fn device_view(d: &Device) -> Value {
    json!({
        "id": d.id,
        "identity_data": d.identity_data,
        "status": d.status,
        "created_ts": d.created_ts,
        "updated_ts": d.updated_ts,
        "check_in_time": d.check_in_time,
        "decommissioning": d.decommissioning,
        "auth_sets": d.auth_sets,
    })
}

#[derive(Deserialize)]
pub(super) struct DevicesQuery {
    status: Option<String>,
    id: Option<String>,
    page: Option<usize>,
    per_page: Option<usize>,
}

fn parse_status_filter(status: Option<&str>) -> ApiResult<Option<AuthStatus>> {
    match status {
        None => Ok(None),
        Some(s) => AuthStatus::parse(s)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("invalid status {s:?}"))),
    }
}

pub(super) async fn devices_list(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<DevicesQuery>,
) -> ApiResult {
    let status = parse_status_filter(q.status.as_deref())?;
    let per_page = q.per_page.unwrap_or(20).clamp(1, 500);
    let page = q.page.unwrap_or(1).max(1);
    let list: Vec<Value> = shared.read(|s| {
        s.devices
            .values()
            .filter(|d| status.is_none_or(|st| d.status == st))
            .filter(|d| q.id.as_deref().is_none_or(|id| d.id == id))
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(device_view)
            .collect()
    });
    Ok(Json(list).into_response())
}

pub(super) async fn devices_count(
    State(shared): State<Arc<Shared>>,
    Query(q): Query<DevicesQuery>,
) -> ApiResult {
    let status = parse_status_filter(q.status.as_deref())?;
    let count = shared.read(|s| {
        s.devices
            .values()
            .filter(|d| status.is_none_or(|st| d.status == st))
            .count()
    });
    Ok(Json(json!({ "count": count })).into_response())
}

pub(super) async fn device_get(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult {
    shared
        .read(|s| s.devices.get(&id).map(device_view))
        .map(|v| Json(v).into_response())
        .ok_or_else(|| ApiError::not_found("device not found"))
}

#[derive(Deserialize)]
struct PreauthBody {
    identity_data: BTreeMap<String, Value>,
    pubkey: String,
    #[serde(default)]
    force: bool,
}

pub(super) async fn preauthorize(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let req: PreauthBody = parse_json(&body)?;
    if req.identity_data.is_empty() {
        return Err(ApiError::bad_request("identity_data is empty"));
    }
    let (_, pubkey) = crate::crypto::parse_public_key(&req.pubkey)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let id = shared.write(|s| s.preauthorize(req.identity_data, &pubkey, req.force))??;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("devices/{id}"))],
    )
        .into_response())
}

#[derive(Deserialize)]
pub(super) struct AuthStatusBody {
    pub(super) status: String,
}

pub(super) async fn auth_status_put(
    State(shared): State<Arc<Shared>>,
    Path((id, aid)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let req: AuthStatusBody = parse_json(&body)?;
    let status = AuthStatus::parse(&req.status)
        .filter(|s| *s != AuthStatus::Preauthorized)
        .ok_or_else(|| {
            ApiError::bad_request("status must be one of accepted, rejected, pending")
        })?;
    shared.write(|s| s.set_auth_status(&id, &aid, status))??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn auth_status_get(
    State(shared): State<Arc<Shared>>,
    Path((id, aid)): Path<(String, String)>,
) -> ApiResult {
    shared
        .read(|s| {
            s.devices
                .get(&id)
                .and_then(|d| d.auth_sets.iter().find(|a| a.id == aid))
                .map(|a| a.status)
        })
        .map(|st| Json(json!({ "status": st })).into_response())
        .ok_or_else(|| ApiError::not_found("auth set not found"))
}

pub(super) async fn decommission(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult {
    shared.write(|s| s.decommission(&id))??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn auth_set_delete(
    State(shared): State<Arc<Shared>>,
    Path((id, aid)): Path<(String, String)>,
) -> ApiResult {
    shared.write(|s| s.delete_auth_set(&id, &aid))??;
    Ok(StatusCode::NO_CONTENT.into_response())
}
