//! HTTP routes: the device API the 3.4 client uses, the management API subset an orchestrator
//! needs, artifact downloads and the `/admin/…` test endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Multipart, Path, Query, State};
use axum::http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Digest as _;
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};

use crate::faults::FaultRule;
use crate::server::Shared;
use crate::state::{now_rfc3339, AuthOutcome, AuthStatus, Device, OpError};

/// Path prefix of artifact downloads (`source.uri`); no authorization needed, like the
/// pre-signed URLs of a real server.
pub(crate) const DOWNLOAD_PREFIX: &str = "/download/artifacts/";

tokio::task_local! {
    /// The id of the request being handled, echoed in JSON error bodies.
    pub(crate) static REQUEST_ID: String;
}

/// Marks a response with the device it concerned, for the request log.
#[derive(Clone)]
pub(crate) struct DeviceIdExt(pub(crate) String);

/// An API error answered as `{"error": …, "request_id": …}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        let status = match e {
            OpError::NotFound(_) => StatusCode::NOT_FOUND,
            OpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            OpError::Conflict(_) => StatusCode::CONFLICT,
            OpError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status, &self.message)
    }
}

/// Builds the JSON error body real Mender services answer with.
pub(crate) fn error_response(status: StatusCode, message: &str) -> Response {
    let request_id = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
    (
        status,
        Json(json!({ "error": message, "request_id": request_id })),
    )
        .into_response()
}

type ApiResult<T = Response> = Result<T, ApiError>;

pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// An authorized device (valid, unrevoked token); 401 otherwise.
struct DeviceAuth(String);

impl FromRequestParts<Arc<Shared>> for DeviceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized =
            || ApiError::new(StatusCode::UNAUTHORIZED, "invalid or missing device token");
        let token = bearer_token(&parts.headers).ok_or_else(unauthorized)?;
        let device_id = shared.check_in(token).ok_or_else(unauthorized)?;
        Ok(DeviceAuth(device_id))
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed request body: {e}")))
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let devices = Router::new()
        .route(
            "/api/devices/v1/authentication/auth_requests",
            post(auth_request),
        )
        .route(
            "/api/devices/v1/inventory/device/attributes",
            put(inventory_put).patch(inventory_patch),
        )
        .route(
            "/api/devices/v1/deployments/device/deployments/next",
            get(next_get).post(next_post),
        )
        .route(
            "/api/devices/v1/deployments/device/deployments/{id}/status",
            put(status_put),
        )
        .route(
            "/api/devices/v1/deployments/device/deployments/{id}/log",
            put(log_put),
        )
        .route("/download/artifacts/{id}", get(download));
    let management = Router::new()
        .route(
            "/api/management/v2/devauth/devices",
            get(devices_list).post(preauthorize),
        )
        .route(
            "/api/management/v2/devauth/devices/count",
            get(devices_count),
        )
        .route(
            "/api/management/v2/devauth/devices/{id}",
            get(device_get).delete(decommission),
        )
        .route(
            "/api/management/v2/devauth/devices/{id}/auth/{aid}",
            axum::routing::delete(auth_set_delete),
        )
        .route(
            "/api/management/v2/devauth/devices/{id}/auth/{aid}/status",
            put(auth_status_put).get(auth_status_get),
        )
        .route(
            "/api/management/v1/deployments/artifacts",
            get(artifacts_list)
                .post(artifact_upload)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/api/management/v1/deployments/artifacts/{id}",
            get(artifact_get),
        )
        .route(
            "/api/management/v1/deployments/deployments",
            get(deployments_list).post(deployment_create),
        )
        .route(
            "/api/management/v1/deployments/deployments/{id}",
            get(deployment_get),
        )
        .route(
            "/api/management/v1/deployments/deployments/{id}/status",
            put(deployment_abort),
        )
        .route(
            "/api/management/v1/deployments/deployments/{id}/statistics",
            get(deployment_statistics),
        )
        .route(
            "/api/management/v1/deployments/deployments/{id}/devices",
            get(deployment_devices),
        )
        .route(
            "/api/management/v1/deployments/deployments/{id}/devices/list",
            get(deployment_devices),
        )
        .route(
            "/api/management/v1/deployments/deployments/{id}/devices/{device_id}/log",
            get(deployment_device_log),
        )
        .route("/api/management/v1/inventory/devices", get(inventory_list))
        .route(
            "/api/management/v1/inventory/devices/{id}",
            get(inventory_get),
        );
    let admin = Router::new()
        .route(
            "/admin/faults",
            get(faults_get)
                .post(faults_add)
                .put(faults_replace)
                .delete(faults_clear),
        )
        .route("/admin/down", post(admin_down))
        .route("/admin/requests", get(admin_requests));
    devices
        .merge(management)
        .merge(admin)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state(shared)
}

// ---------------------------------------------------------------- device API

#[derive(Deserialize)]
struct AuthRequestBody {
    id_data: String,
    pubkey: String,
    #[serde(default)]
    #[allow(dead_code)]
    tenant_token: Option<String>,
}

async fn auth_request(
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
    if identity.is_empty() {
        return Err(ApiError::bad_request("id_data is empty"));
    }
    let (key, pubkey) = crate::crypto::parse_public_key(&request.pubkey)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    crate::crypto::verify_signature(&key, &body, signature).map_err(|e| match e {
        crate::crypto::KeyError::BadSignature => {
            ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
        }
        other => ApiError::bad_request(other.to_string()),
    })?;
    match shared.write(|s| s.authenticate(identity, &pubkey))? {
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

async fn inventory_put(
    State(shared): State<Arc<Shared>>,
    DeviceAuth(device_id): DeviceAuth,
    body: Bytes,
) -> ApiResult {
    update_inventory(&shared, &device_id, &body, true)
}

async fn inventory_patch(
    State(shared): State<Arc<Shared>>,
    DeviceAuth(device_id): DeviceAuth,
    body: Bytes,
) -> ApiResult {
    update_inventory(&shared, &device_id, &body, false)
}

fn update_inventory(shared: &Shared, device_id: &str, body: &[u8], replace: bool) -> ApiResult {
    let attributes = parse_attributes(body)?;
    shared.write_if_changed(|s| {
        let Some(device) = s.devices.get_mut(device_id) else {
            return ((), false);
        };
        let mut inventory = if replace {
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

async fn next_post(
    State(shared): State<Arc<Shared>>,
    DeviceAuth(device_id): DeviceAuth,
    body: Bytes,
) -> ApiResult {
    let provides: serde_json::Map<String, Value> = parse_json(&body)?;
    let field = |k: &str| {
        provides
            .get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ApiError::bad_request(format!("missing string field {k:?}")))
    };
    let (name, device_type) = (field("artifact_name")?, field("device_type")?);
    next_response(&shared, &device_id, &name, &device_type, &provides)
}

#[derive(Deserialize)]
struct NextQuery {
    artifact_name: Option<String>,
    device_type: Option<String>,
}

async fn next_get(
    State(shared): State<Arc<Shared>>,
    DeviceAuth(device_id): DeviceAuth,
    Query(q): Query<NextQuery>,
) -> ApiResult {
    let (Some(name), Some(device_type)) = (q.artifact_name, q.device_type) else {
        return Err(ApiError::bad_request(
            "artifact_name and device_type query parameters are required",
        ));
    };
    let provides = serde_json::Map::from_iter([
        ("artifact_name".to_string(), Value::String(name.clone())),
        (
            "device_type".to_string(),
            Value::String(device_type.clone()),
        ),
    ]);
    next_response(&shared, &device_id, &name, &device_type, &provides)
}

fn next_response(
    shared: &Shared,
    device_id: &str,
    artifact_name: &str,
    device_type: &str,
    provides: &serde_json::Map<String, Value>,
) -> ApiResult {
    let offer = shared.write_if_changed(|s| {
        let (offer, changed) = s.next_deployment(device_id, artifact_name, device_type, provides);
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

#[derive(Deserialize)]
struct StatusBody {
    status: String,
    #[serde(default)]
    substate: Option<String>,
}

async fn status_put(
    State(shared): State<Arc<Shared>>,
    DeviceAuth(device_id): DeviceAuth,
    Path(deployment_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let report: StatusBody = parse_json(&body)?;
    shared.write(|s| {
        s.report_status(&device_id, &deployment_id, &report.status, report.substate)
    })??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct LogBody {
    messages: Vec<Value>,
}

async fn log_put(
    State(shared): State<Arc<Shared>>,
    DeviceAuth(device_id): DeviceAuth,
    Path(deployment_id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let log: LogBody = parse_json(&body)?;
    if log.messages.iter().any(|m| !m.is_object()) {
        return Err(ApiError::bad_request("messages must be objects"));
    }
    shared.write(|s| s.store_log(&device_id, &deployment_id, log.messages))??;
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

async fn download(
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

// ------------------------------------------------------------ management API

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
struct DevicesQuery {
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

async fn devices_list(
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

async fn devices_count(
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

async fn device_get(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
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

async fn preauthorize(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
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
struct AuthStatusBody {
    status: String,
}

async fn auth_status_put(
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

async fn auth_status_get(
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

async fn decommission(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    shared.write(|s| s.decommission(&id))??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn auth_set_delete(
    State(shared): State<Arc<Shared>>,
    Path((id, aid)): Path<(String, String)>,
) -> ApiResult {
    shared.write(|s| s.delete_auth_set(&id, &aid))??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn artifact_view(a: &crate::state::Artifact) -> Value {
    json!({
        "id": a.id,
        "name": a.name,
        "description": a.description,
        "device_types_compatible": a.device_types_compatible,
        "info": {"format": "mender", "version": 3},
        "signed": a.signed,
        "updates": a.payload_types.iter().map(|t| json!({"type_info": {"type": t}})).collect::<Vec<_>>(),
        "artifact_provides": a.artifact_provides,
        "artifact_depends": a.artifact_depends,
        "clears_artifact_provides": a.clears_artifact_provides,
        "size": a.size,
        "modified": a.modified,
    })
}

async fn artifacts_list(State(shared): State<Arc<Shared>>) -> ApiResult {
    let list: Vec<Value> = shared.read(|s| s.artifacts.values().map(artifact_view).collect());
    Ok(Json(list).into_response())
}

async fn artifact_get(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    shared
        .read(|s| s.artifacts.get(&id).map(artifact_view))
        .map(|v| Json(v).into_response())
        .ok_or_else(|| ApiError::not_found("artifact not found"))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// Streams the `artifact` part to a temp file in the artifact dir, indexes it with the
/// project's artifact reader, and keeps it under `<id>.mender`.
async fn artifact_upload(State(shared): State<Arc<Shared>>, mut multipart: Multipart) -> ApiResult {
    let mut description = String::new();
    let mut stored: Option<(tempfile::TempPath, u64, String)> = None;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request(format!("malformed multipart body: {e}")))?
    {
        match field.name().unwrap_or("") {
            "artifact" => {
                let tmp =
                    tempfile::NamedTempFile::new_in(&shared.artifacts_dir).map_err(internal)?;
                let (std_file, tmp_path) = tmp.into_parts();
                let mut file = tokio::fs::File::from_std(std_file);
                let mut hasher = sha2::Sha256::new();
                let mut size = 0u64;
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| ApiError::bad_request(format!("reading artifact part: {e}")))?
                {
                    hasher.update(&chunk);
                    size += chunk.len() as u64;
                    file.write_all(&chunk).await.map_err(internal)?;
                }
                file.flush().await.map_err(internal)?;
                file.sync_all().await.map_err(internal)?;
                let digest: String = hasher
                    .finalize()
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                stored = Some((tmp_path, size, digest));
            }
            "description" => {
                description = field
                    .text()
                    .await
                    .map_err(|e| ApiError::bad_request(format!("description: {e}")))?;
            }
            // `size` and unknown parts are read and ignored; the stored size is measured.
            _ => {
                while field
                    .chunk()
                    .await
                    .map_err(|e| ApiError::bad_request(e.to_string()))?
                    .is_some()
                {}
            }
        }
    }
    let Some((tmp_path, size, sha256)) = stored else {
        return Err(ApiError::bad_request(
            "multipart body has no \"artifact\" part",
        ));
    };
    let read_path = tmp_path.to_path_buf();
    let info = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&read_path)?;
        Ok::<_, std::io::Error>(menderartifact::read_info(std::io::BufReader::new(file)))
    })
    .await
    .map_err(internal)?
    .map_err(internal)?
    .map_err(|e| ApiError::bad_request(format!("invalid artifact: {e}")))?;
    let id = crate::state::new_id();
    let file_name = format!("{id}.mender");
    let artifact = crate::state::Artifact {
        id: id.clone(),
        name: info.name.clone(),
        description,
        device_types_compatible: info.device_types.clone(),
        payload_types: info.payload_types.clone(),
        artifact_provides: info.provides.clone(),
        artifact_depends: info.depends.clone().into_iter().collect(),
        clears_artifact_provides: info.clears_provides.clone(),
        signed: artifact_is_signed(&info),
        size,
        sha256,
        modified: now_rfc3339(),
        file_name: file_name.clone(),
    };
    let duplicate = shared.read(|s| {
        s.artifacts.values().any(|a| {
            a.name == artifact.name
                && a.device_types_compatible
                    .iter()
                    .any(|t| artifact.device_types_compatible.contains(t))
        })
    });
    if duplicate {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "an artifact named {:?} for these device types already exists",
                artifact.name
            ),
        ));
    }
    tmp_path
        .persist(shared.artifacts_dir.join(&file_name))
        .map_err(internal)?;
    shared.write(|s| s.artifacts.insert(id.clone(), artifact))?;
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/api/management/v1/deployments/artifacts/{id}"),
        )],
    )
        .into_response())
}

fn artifact_is_signed(info: &menderartifact::ArtifactInfo) -> bool {
    !matches!(info.signature, menderartifact::SignatureStatus::Unsigned)
}

#[derive(Deserialize)]
struct DeploymentBody {
    name: String,
    artifact_name: String,
    #[serde(default)]
    devices: Vec<String>,
    #[serde(default)]
    all_devices: bool,
}

async fn deployment_create(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let req: DeploymentBody = parse_json(&body)?;
    let id = shared.write(|s| {
        s.create_deployment(&req.name, &req.artifact_name, &req.devices, req.all_devices)
    })??;
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/api/management/v1/deployments/deployments/{id}"),
        )],
    )
        .into_response())
}

fn deployment_view(s: &crate::state::State, d: &crate::state::Deployment) -> Value {
    let artifacts: Vec<&str> = s
        .artifacts
        .values()
        .filter(|a| a.name == d.artifact_name)
        .map(|a| a.id.as_str())
        .collect();
    json!({
        "id": d.id,
        "name": d.name,
        "artifact_name": d.artifact_name,
        "created": d.created,
        "finished": d.finished,
        "status": d.status(),
        "device_count": d.devices.len(),
        "artifacts": artifacts,
        "type": "software",
        "statistics": {"status": d.statistics()},
    })
}

async fn deployments_list(State(shared): State<Arc<Shared>>) -> ApiResult {
    let list: Vec<Value> = shared.read(|s| {
        let mut deps: Vec<_> = s.deployments.values().collect();
        deps.sort_by_key(|d| std::cmp::Reverse(d.seq));
        deps.into_iter().map(|d| deployment_view(s, d)).collect()
    });
    Ok(Json(list).into_response())
}

async fn deployment_get(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    shared
        .read(|s| s.deployments.get(&id).map(|d| deployment_view(s, d)))
        .map(|v| Json(v).into_response())
        .ok_or_else(|| ApiError::not_found("deployment not found"))
}

async fn deployment_abort(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: AuthStatusBody = parse_json(&body)?;
    if req.status != "aborted" {
        return Err(ApiError::bad_request("status must be \"aborted\""));
    }
    shared.write(|s| s.abort_deployment(&id))??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn deployment_statistics(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult {
    shared
        .read(|s| s.deployments.get(&id).map(|d| d.statistics()))
        .map(|v| Json(v).into_response())
        .ok_or_else(|| ApiError::not_found("deployment not found"))
}

async fn deployment_devices(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult {
    shared
        .read(|s| {
            let d = s.deployments.get(&id)?;
            let image = s
                .artifacts
                .values()
                .find(|a| a.name == d.artifact_name)
                .map(artifact_view);
            Some(
                d.devices
                    .iter()
                    .map(|(device_id, dd)| {
                        json!({
                            "id": device_id,
                            "status": dd.status,
                            "created": dd.created,
                            "started": dd.started,
                            "finished": dd.finished,
                            "device_type": dd.device_type,
                            "substate": dd.substate,
                            "log": dd.log.is_some(),
                            "image": image,
                            "history": dd.history,
                        })
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .map(|v| Json(v).into_response())
        .ok_or_else(|| ApiError::not_found("deployment not found"))
}

async fn deployment_device_log(
    State(shared): State<Arc<Shared>>,
    Path((id, device_id)): Path<(String, String)>,
) -> ApiResult {
    let messages = shared
        .read(|s| {
            s.deployments
                .get(&id)
                .and_then(|d| d.devices.get(&device_id))
                .and_then(|dd| dd.log.clone())
        })
        .ok_or_else(|| ApiError::not_found("deployment log not found"))?;
    let mut text = String::new();
    for m in messages {
        let field = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        text.push_str(&format!(
            "{} {}: {}\n",
            field("timestamp"),
            field("level"),
            field("message")
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain")], text).into_response())
}

fn inventory_view(d: &Device) -> Value {
    let mut attributes: Vec<Value> = d
        .identity_data
        .iter()
        .map(|(k, v)| json!({"name": k, "value": v, "scope": "identity"}))
        .collect();
    attributes.push(json!({"name": "status", "value": d.status, "scope": "identity"}));
    attributes.extend(
        d.inventory
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v, "scope": "inventory"})),
    );
    json!({
        "id": d.id,
        "updated_ts": d.inventory_updated_ts.as_deref().unwrap_or(&d.updated_ts),
        "attributes": attributes,
    })
}

async fn inventory_list(State(shared): State<Arc<Shared>>) -> ApiResult {
    let list: Vec<Value> = shared.read(|s| s.devices.values().map(inventory_view).collect());
    Ok(Json(list).into_response())
}

async fn inventory_get(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> ApiResult {
    shared
        .read(|s| s.devices.get(&id).map(inventory_view))
        .map(|v| Json(v).into_response())
        .ok_or_else(|| ApiError::not_found("device not found"))
}

// ------------------------------------------------------------------ admin

async fn faults_get(State(shared): State<Arc<Shared>>) -> ApiResult {
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

async fn faults_add(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    for rule in parse_rules(&body)? {
        shared.faults.add(rule);
    }
    Ok((StatusCode::CREATED, Json(shared.faults.list())).into_response())
}

async fn faults_replace(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    shared.faults.replace(parse_rules(&body)?);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn faults_clear(State(shared): State<Arc<Shared>>) -> ApiResult {
    shared.faults.replace(Vec::new());
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
struct DownBody {
    seconds: f64,
}

/// Goes down (connections refused) for `seconds`, then comes back on the same address.
/// The answer is sent first; the server goes down a moment later.
async fn admin_down(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let req: DownBody = parse_json(&body)?;
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

async fn admin_requests(State(shared): State<Arc<Shared>>) -> ApiResult {
    Ok(Json(shared.reqlog.snapshot()).into_response())
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
