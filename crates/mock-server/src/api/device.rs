//! Device API: what mender-client 3.4 and 4.x/5.x call (auth, inventory, `next`, status and
//! log reports) and the artifact download behind `source.uri`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{parse_json, DeviceAuth, JsonBody};
use crate::error::{error_response, ApiError, ApiResult};
use crate::layers::DeviceIdExt;
use crate::routes::DOWNLOAD_PREFIX;
use crate::settings::Edition;
use crate::shared::Shared;
use crate::state::{self, now_rfc3339, AuthOutcome, OpError};
use tokio::io::AsyncSeekExt as _;

#[derive(Deserialize)]
struct AuthRequestBody {
    id_data: String,
    pubkey: String,
    #[serde(default)]
    tenant_token: Option<String>,
}

pub(super) async fn auth_request(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let signature = headers
        .get("x-men-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("missing X-MEN-Signature header"))?;
    let request: AuthRequestBody = parse_json(&body)?;
    let identity: BTreeMap<String, Value> = serde_json::from_str(&request.id_data)
        .map_err(|e| ApiError::bad_request(format!("id_data is not a JSON object: {e}")))?;
    super::devauth::nonempty_identity(&identity, "id_data")?;
    let (key, pubkey) = crate::crypto::parse_public_key(&request.pubkey)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    crate::crypto::verify_signature(&key, &body, signature).map_err(|e| match e {
        crate::crypto::KeyError::BadSignature => {
            ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
        }
        other => ApiError::bad_request(other.to_string()),
    })?;
    // Multi-tenant mode: an unknown tenant token is 401 and registers nothing, unless the
    // default tenant token admits the device.
    if !shared.tenant_admits(request.tenant_token.as_deref()) {
        return Err(ApiError::unauthorized("unauthorized: unknown tenant token"));
    }
    let max_devices = shared.settings().max_devices;
    match shared.write(|s| s.authenticate(identity, &pubkey, max_devices))? {
        AuthOutcome::Token { device_id, token } => {
            let mut response = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/jwt")],
                token,
            )
                .into_response();
            response.extensions_mut().insert(DeviceIdExt(device_id));
            Ok(response)
        }
        AuthOutcome::Refused { device_id, reason } => {
            let mut response = error_response(StatusCode::UNAUTHORIZED, reason);
            response.extensions_mut().insert(DeviceIdExt(device_id));
            Ok(response)
        }
    }
}

#[derive(Deserialize)]
struct Attribute {
    name: String,
    value: Value,
}

fn parse_attributes(body: &[u8]) -> ApiResult<Vec<Attribute>> {
    let attributes: Vec<Attribute> = parse_json(body)?;
    for a in &attributes {
        let ok = match &a.value {
            Value::String(_) | Value::Number(_) => true,
            Value::Array(items) => items.iter().all(|i| i.is_string() || i.is_number()),
            _ => false,
        };
        if a.name.is_empty() || !ok {
            return Err(ApiError::bad_request(format!(
                "attribute {:?}: value must be a string, number or array of them",
                a.name
            )));
        }
    }
    Ok(attributes)
}

/// The device's inventory attributes → 200: `PUT` (`REPLACE`) makes them the whole inventory,
/// `PATCH` merges them into it.
pub(super) async fn inventory_update<const REPLACE: bool>(
    State(shared): State<Arc<Shared>>,
    DeviceAuth(device_id): DeviceAuth,
    body: Bytes,
) -> ApiResult {
    let attributes = parse_attributes(&body)?;
    shared.write_if_changed(|s| {
        let Some(device) = s.devices.get_mut(&device_id) else {
            return ((), false);
        };
        let mut inventory = if REPLACE {
            BTreeMap::new()
        } else {
            device.inventory.clone()
        };
        for a in attributes {
            inventory.insert(a.name, a.value);
        }
        device.inventory_updated_ts = Some(now_rfc3339());
        let changed = inventory != device.inventory;
        device.inventory = inventory;
        ((), changed)
    })?;
    Ok(StatusCode::OK.into_response())
}

/// v1 `POST next` with `{"artifact_name", "device_type", …provides}`: offered by device type
/// only, whatever the artifact depends (the open-source server never compares them).
pub(super) async fn next_post(
    State(shared): State<Arc<Shared>>,
    DeviceAuth(device_id): DeviceAuth,
    JsonBody(provides): JsonBody<serde_json::Map<String, Value>>,
) -> ApiResult {
    let (name, device_type) = name_and_type(&provides)?;
    next_response(&shared, &device_id, &name, &device_type, None)
}

fn name_and_type(provides: &serde_json::Map<String, Value>) -> ApiResult<(String, String)> {
    let field = |k: &str| {
        provides
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ApiError::bad_request(format!("missing string field {k:?}")))
    };
    Ok((field("artifact_name")?, field("device_type")?))
}

#[derive(Deserialize)]
struct NextV2Body {
    device_provides: serde_json::Map<String, Value>,
    #[serde(default)]
    #[allow(dead_code)]
    update_control_map: bool,
}

/// v2 `POST next` with `{"device_provides": {…}, "update_control_map": bool}`: 404 on the
/// open-source edition (the 5.x client then falls back to v1 GET); the enterprise edition
/// honours artifact depends against the posted provides (`noartifact` otherwise).
pub(super) async fn next_v2(
    State(shared): State<Arc<Shared>>,
    DeviceAuth(device_id): DeviceAuth,
    body: Bytes,
) -> ApiResult {
    if shared.settings().edition != Edition::Enterprise {
        return Err(ApiError::not_found("no such endpoint"));
    }
    let req: NextV2Body = parse_json(&body)?;
    let (name, device_type) = name_and_type(&req.device_provides)?;
    next_response(
        &shared,
        &device_id,
        &name,
        &device_type,
        Some(&req.device_provides),
    )
}

#[derive(Deserialize)]
pub(super) struct NextQuery {
    artifact_name: Option<String>,
    device_type: Option<String>,
}

/// v1 `GET next?artifact_name=&device_type=` (the 3.4 client, and 5.x after a v2 404).
pub(super) async fn next_get(
    State(shared): State<Arc<Shared>>,
    DeviceAuth(device_id): DeviceAuth,
    Query(q): Query<NextQuery>,
) -> ApiResult {
    let (Some(name), Some(device_type)) = (q.artifact_name, q.device_type) else {
        return Err(ApiError::bad_request(
            "artifact_name and device_type query parameters are required",
        ));
    };
    next_response(&shared, &device_id, &name, &device_type, None)
}

fn next_response(
    shared: &Shared,
    device_id: &str,
    artifact_name: &str,
    device_type: &str,
    depends_check: Option<&serde_json::Map<String, Value>>,
) -> ApiResult {
    let offer = shared.write_if_changed(|s| {
        let (offer, changed) =
            s.next_deployment(device_id, artifact_name, device_type, depends_check);
        let offer = offer.and_then(|(dep, art)| s.artifacts.get(&art).cloned().map(|a| (dep, a)));
        (offer, changed)
    })?;
    let Some((deployment_id, artifact)) = offer else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let expire = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + std::time::Duration::from_secs(24 * 3600),
    )
    .to_string();
    Ok(Json(json!({
        "id": deployment_id,
        "artifact": {
            "id": artifact.id,
            "artifact_name": artifact.name,
            "source": {
                // The query only labels the download in the request log (like the
                // parameters of a pre-signed URL); it grants nothing.
                "uri": format!(
                    "{}{}{}?deployment={}&device={}",
                    shared.public_url, DOWNLOAD_PREFIX, artifact.id, deployment_id, device_id
                ),
                "expire": expire,
            },
            "device_types_compatible": artifact.device_types_compatible,
        }
    }))
    .into_response())
}

/// What a device reports on one of its deployments: the body of `PUT …/{id}/status` or
/// `PUT …/{id}/log`, both answered by [`report_put`].
pub(super) trait DeploymentReport: DeserializeOwned {
    /// 400 for a body that parses but is not acceptable.
    fn check(&self) -> ApiResult<()> {
        Ok(())
    }

    /// Records the report of `device` on `deployment`.
    fn record(self, s: &mut state::State, device: &str, deployment: &str) -> Result<(), OpError>;
}

#[derive(Deserialize)]
pub(super) struct StatusReport {
    status: String,
    #[serde(default)]
    substate: Option<String>,
}

impl DeploymentReport for StatusReport {
    fn record(self, s: &mut state::State, device: &str, deployment: &str) -> Result<(), OpError> {
        s.report_status(device, deployment, &self.status, self.substate)
    }
}

#[derive(Deserialize)]
pub(super) struct LogReport {
    messages: Vec<Value>,
}

impl DeploymentReport for LogReport {
    fn check(&self) -> ApiResult<()> {
        if self.messages.iter().any(|m| !m.is_object()) {
            return Err(ApiError::bad_request("messages must be objects"));
        }
        Ok(())
    }

    fn record(self, s: &mut state::State, device: &str, deployment: &str) -> Result<(), OpError> {
        s.store_log(device, deployment, self.messages)
    }
}

/// `PUT …/deployments/{id}/status` ([`StatusReport`]) and `…/{id}/log` ([`LogReport`]) → 204.
pub(super) async fn report_put<R: DeploymentReport>(
    State(shared): State<Arc<Shared>>,
    DeviceAuth(device_id): DeviceAuth,
    Path(deployment_id): Path<String>,
    JsonBody(report): JsonBody<R>,
) -> ApiResult {
    report.check()?;
    shared.write(|s| report.record(s, &device_id, &deployment_id))??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Parses a single `bytes=` range against `size`; `Err(())` means unsatisfiable, `Ok(None)`
/// means "serve everything" (absent, multi-range or unparsable header).
fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((start, end)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (start, end) = (start.trim(), end.trim());
    let range = if start.is_empty() {
        let Ok(suffix) = end.parse::<u64>() else {
            return Ok(None);
        };
        if suffix == 0 || size == 0 {
            return Err(());
        }
        (size.saturating_sub(suffix), size - 1)
    } else {
        let Ok(start) = start.parse::<u64>() else {
            return Ok(None);
        };
        let end = if end.is_empty() {
            size.saturating_sub(1)
        } else {
            match end.parse::<u64>() {
                Ok(e) => e.min(size.saturating_sub(1)),
                Err(_) => return Ok(None),
            }
        };
        if start >= size || start > end {
            return Err(());
        }
        (start, end)
    };
    Ok(Some(range))
}

pub(super) async fn download(
    State(shared): State<Arc<Shared>>,
    Path(artifact_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let file_name = shared
        .read(|s| s.artifacts.get(&artifact_id).map(|a| a.file_name.clone()))
        .ok_or_else(|| ApiError::not_found("artifact not found"))?;
    let path = shared.artifacts_dir.join(file_name);
    let mut file = tokio::fs::File::open(&path).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("artifact file: {e}"),
        )
    })?;
    let size = file
        .metadata()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .len();
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, len, content_range) = match parse_range(range, size) {
        Ok(None) => (StatusCode::OK, 0, size, None),
        Ok(Some((start, end))) => (
            StatusCode::PARTIAL_CONTENT,
            start,
            end - start + 1,
            Some(format!("bytes {start}-{end}/{size}")),
        ),
        Err(()) => {
            let mut response =
                error_response(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
            return Ok(response);
        }
    };
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let stream = tokio_util::io::ReaderStream::new(tokio::io::AsyncReadExt::take(file, len));
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.mender-artifact"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(cr) = content_range {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&cr).expect("ascii"),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=2-"), 10), Ok(Some((2, 9))));
        assert_eq!(parse_range(Some("bytes=2-4"), 10), Ok(Some((2, 4))));
        assert_eq!(parse_range(Some("bytes=2-40"), 10), Ok(Some((2, 9))));
        assert_eq!(parse_range(Some("bytes=-3"), 10), Ok(Some((7, 9))));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Err(()));
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 10), Ok(None));
    }
}
