//! deviceauth v2 management routes: device lists and search, preauthorization, auth set
//! status, decommission, device limit.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::paging::{PagedQuery, QueryPairs};
use super::{parse_json, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::routes;
use crate::shared::Shared;
use crate::state::OpError;
use crate::state::{AuthStatus, Device};

pub(super) fn device_view(d: &Device) -> Value {
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

/// A status filter: `noauth` is valid and matches devices without auth sets.
fn parse_status(s: &str) -> ApiResult<Option<AuthStatus>> {
    if s == "noauth" {
        return Ok(None);
    }
    AuthStatus::parse(s)
        .map(Some)
        .ok_or_else(|| ApiError::bad_request(format!("invalid status {s:?}")))
}

/// Devices matching any of `statuses` (all when empty) and any of `ids` (all when empty),
/// sorted by (status, id) as deviceauth's store does.
fn matching_devices(shared: &Shared, statuses: &[String], ids: &[String]) -> ApiResult<Vec<Value>> {
    let statuses: Vec<Option<AuthStatus>> = statuses
        .iter()
        .map(|s| parse_status(s))
        .collect::<ApiResult<_>>()?;
    Ok(shared.read(|s| {
        let mut list: Vec<&Device> = s
            .devices
            .values()
            .filter(|d| {
                statuses.is_empty()
                    || statuses.iter().any(|st| match st {
                        Some(st) => d.status == *st,
                        None => d.auth_sets.is_empty(),
                    })
            })
            .filter(|d| ids.is_empty() || ids.contains(&d.id))
            .collect();
        list.sort_by(|a, b| {
            status_name(a.status)
                .cmp(status_name(b.status))
                .then(a.id.cmp(&b.id))
        });
        list.into_iter().map(device_view).collect()
    }))
}

fn status_name(s: AuthStatus) -> &'static str {
    match s {
        AuthStatus::Pending => "pending",
        AuthStatus::Accepted => "accepted",
        AuthStatus::Rejected => "rejected",
        AuthStatus::Preauthorized => "preauthorized",
    }
}

/// `GET …/devauth/devices?status=&id=&id=&page=&per_page=`: `Link`, no `X-Total-Count`.
pub(super) async fn devices_list(
    State(shared): State<Arc<Shared>>,
    paged: PagedQuery,
) -> ApiResult {
    let all = matching_devices(&shared, &paged.query.all("status"), &paged.query.all("id"))?;
    Ok(paged.respond(routes::DEVAUTH_DEVICES, all, false))
}

#[derive(Deserialize, Default)]
struct SearchBody {
    #[serde(default)]
    status: OneOrMany,
    #[serde(default)]
    id: OneOrMany,
}

/// A JSON field that may be one string or an array of strings.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `POST …/devauth/devices/search` with `{"status": …, "id": …}` (string or array) and
/// `page`/`per_page` in the query: batch status checks by id without long URLs.
pub(super) async fn devices_search(
    State(shared): State<Arc<Shared>>,
    query: QueryPairs,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        ));
    }
    let paging = query.paging(20)?;
    let req: SearchBody = if body.iter().all(u8::is_ascii_whitespace) {
        SearchBody::default()
    } else {
        parse_json(&body)?
    };
    let all = matching_devices(&shared, &req.status.into_vec(), &req.id.into_vec())?;
    Ok(paging.respond(routes::DEVAUTH_SEARCH, &query, all, false))
}

pub(super) async fn devices_count(
    State(shared): State<Arc<Shared>>,
    query: QueryPairs,
) -> ApiResult {
    let statuses: Vec<String> = query
        .get("status")
        .map(str::to_string)
        .into_iter()
        .collect();
    let count = matching_devices(&shared, &statuses, &[])?.len();
    Ok(Json(json!({ "count": count })).into_response())
}

/// `GET …/devauth/limits/max_devices` → `{"limit": N}` (0 = unlimited).
pub(super) async fn max_devices(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(Json(json!({ "limit": shared.settings().max_devices })).into_response())
}

/// `GET …/devauth/devices/{id}`.
pub(super) fn device_get(s: &crate::state::State, id: &str) -> Option<Value> {
    s.devices.get(id).map(device_view)
}

#[derive(Deserialize)]
pub(super) struct PreauthBody {
    identity_data: BTreeMap<String, Value>,
    pubkey: String,
    #[serde(default)]
    force: bool,
}

/// A device identity needs at least one attribute (auth requests and preauthorization alike):
/// 400 `"{field} is empty"` otherwise.
pub(super) fn nonempty_identity(identity: &BTreeMap<String, Value>, field: &str) -> ApiResult<()> {
    if identity.is_empty() {
        return Err(ApiError::bad_request(format!("{field} is empty")));
    }
    Ok(())
}

pub(super) async fn preauthorize(
    State(shared): State<Arc<Shared>>,
    JsonBody(req): JsonBody<PreauthBody>,
) -> ApiResult {
    nonempty_identity(&req.identity_data, "identity_data")?;
    let (_, pubkey) = crate::crypto::parse_public_key(&req.pubkey)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (id, forced) =
        match shared.write(|s| s.preauthorize(req.identity_data, &pubkey, req.force))? {
            Ok(done) => done,
            // 409 carries the existing device, not an error object.
            Err(OpError::DeviceExists(existing)) => {
                let device = shared.read(|s| s.devices.get(&existing).map(device_view));
                return Ok((StatusCode::CONFLICT, Json(device)).into_response());
            }
            Err(e) => return Err(e.into()),
        };
    // With `force` on an existing device the real handler still answers a freshly
    // generated id (ref §0.4): clients must look the device up again.
    let location = if forced { crate::state::new_id() } else { id };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("devices/{location}"))],
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
    JsonBody(req): JsonBody<AuthStatusBody>,
) -> ApiResult {
    let status = AuthStatus::parse(&req.status)
        .filter(|s| *s != AuthStatus::Preauthorized)
        .ok_or_else(|| {
            ApiError::bad_request("status must be one of accepted, rejected, pending")
        })?;
    let max_devices = shared.settings().max_devices;
    shared.write_if_changed(
        |s| match s.set_auth_status(&id, &aid, status, max_devices) {
            Ok(changed) => (Ok(()), changed),
            Err(e) => (Err(e), false),
        },
    )??;
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
    shared.write(|s| s.start_decommission(&id))??;
    let delay = std::time::Duration::from_millis(shared.settings().decommission_delay_ms);
    let finisher = shared.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = finisher.write(|s| s.finish_decommission(&id));
    });
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn auth_set_delete(
    State(shared): State<Arc<Shared>>,
    Path((id, aid)): Path<(String, String)>,
) -> ApiResult {
    shared.write(|s| s.delete_auth_set(&id, &aid))??;
    Ok(StatusCode::NO_CONTENT.into_response())
}
