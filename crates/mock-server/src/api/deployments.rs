//! deployments management routes: artifacts (upload, lists) and deployments (create, lists,
//! statistics, per-device records, abort).

use std::sync::Arc;

use axum::extract::{Multipart, Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::paging::PagedQuery;
use super::JsonBody;
use crate::error::{ApiError, ApiResult};
use crate::routes;
use crate::shared::Shared;
use crate::state::{now_rfc3339, DeploymentLimits, NewDeployment};
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;

fn artifact_view(a: &crate::state::Artifact) -> Value {
    let updates: Vec<Value> = a
        .payload_types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let files: Vec<Value> = a
                .files
                .iter()
                .filter(|f| f.payload == i)
                .map(|f| json!({"name": f.name, "checksum": f.checksum, "size": f.size}))
                .collect();
            json!({"type_info": {"type": t}, "files": files})
        })
        .collect();
    json!({
        "id": a.id,
        "name": a.name,
        "description": a.description,
        "device_types_compatible": a.device_types_compatible,
        "info": {"format": "mender", "version": 3},
        "signed": a.signed,
        "updates": updates,
        "artifact_provides": a.artifact_provides,
        "artifact_depends": a.artifact_depends,
        "clears_artifact_provides": a.clears_artifact_provides,
        "size": a.size,
        "modified": a.modified,
    })
}

pub(super) async fn artifacts_list(State(shared): State<Arc<Shared>>) -> ApiResult {
    let list: Vec<Value> = shared.read(|s| s.artifacts.values().map(artifact_view).collect());
    Ok(Json(list).into_response())
}

/// `GET /api/management/v2/deployments/artifacts?name=X|prefix*&device_type=&page=&per_page=`
/// (name exact, or a prefix with a trailing `*`): the idempotent-upload lookup.
pub(super) async fn artifacts_list_v2(
    State(shared): State<Arc<Shared>>,
    paged: PagedQuery,
) -> ApiResult {
    let names = paged.query.all("name");
    let device_type = paged.query.get("device_type").map(str::to_string);
    let all: Vec<Value> = shared.read(|s| {
        let mut list: Vec<&crate::state::Artifact> = s
            .artifacts
            .values()
            .filter(|a| {
                names.is_empty()
                    || names.iter().any(|n| match n.strip_suffix('*') {
                        Some(prefix) => a.name.starts_with(prefix),
                        None => &a.name == n,
                    })
            })
            .filter(|a| {
                device_type
                    .as_ref()
                    .is_none_or(|t| a.device_types_compatible.contains(t))
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name).then(a.modified.cmp(&b.modified)));
        list.into_iter().map(artifact_view).collect()
    });
    Ok(paged.respond(routes::ARTIFACTS_V2, all, true))
}

/// `GET …/artifacts/{id}/download` → `{uri, expire}` (a link that needs no auth).
pub(super) async fn artifact_download_link(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult {
    if !shared.read(|s| s.artifacts.contains_key(&id)) {
        return Err(ApiError::not_found("artifact not found"));
    }
    let expire = humantime::format_rfc3339_seconds(
        std::time::SystemTime::now() + std::time::Duration::from_secs(15 * 60),
    )
    .to_string();
    Ok(Json(json!({
        "uri": format!("{}{}{id}", shared.public_url, routes::DOWNLOAD_PREFIX),
        "expire": expire,
    }))
    .into_response())
}

/// `GET …/artifacts/{id}` (through [`super::get_by_id`]).
pub(super) fn artifact_get(s: &crate::state::State, id: &str) -> Option<Value> {
    s.artifacts.get(id).map(artifact_view)
}

/// Streams the `artifact` part to a temp file in the artifact dir, indexes it with the
/// project's artifact reader, and keeps it under `<id>.mender`.
pub(super) async fn artifact_upload(
    State(shared): State<Arc<Shared>>,
    mut multipart: Multipart,
) -> ApiResult {
    let mut description = String::new();
    let mut stored: Option<(tempfile::TempPath, u64, String)> = None;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| ApiError::bad_request(format!("malformed multipart body: {e}")))?
    {
        match field.name().unwrap_or("") {
            "artifact" => {
                let tmp = tempfile::NamedTempFile::new_in(&shared.artifacts_dir)
                    .map_err(ApiError::internal)?;
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
                    file.write_all(&chunk).await.map_err(ApiError::internal)?;
                }
                file.flush().await.map_err(ApiError::internal)?;
                file.sync_all().await.map_err(ApiError::internal)?;
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
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?
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
        files: info
            .payload_files
            .iter()
            .map(|f| crate::state::ArtifactFile {
                payload: f.payload,
                name: f.name.clone(),
                size: f.size,
                checksum: f.sha256.clone(),
            })
            .collect(),
        modified: now_rfc3339(),
        file_name: file_name.clone(),
    };
    let duplicate = shared.read(|s| {
        s.artifacts
            .values()
            .find(|a| {
                a.name == artifact.name
                    && a.device_types_compatible
                        .iter()
                        .any(|t| artifact.device_types_compatible.contains(t))
            })
            .map(artifact_view)
    });
    if let Some(existing) = duplicate {
        // ErrorExt: the error plus the conflicting artifact in `metadata.conflict`.
        return Ok((
            StatusCode::CONFLICT,
            Json(json!({
                "error": format!(
                    "an artifact with the same name and depends already exists: {:?}",
                    artifact.name
                ),
                "request_id": crate::error::request_id(),
                "metadata": {"conflict": existing},
            })),
        )
            .into_response());
    }
    tmp_path
        .persist(shared.artifacts_dir.join(&file_name))
        .map_err(ApiError::internal)?;
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

fn limits(shared: &Shared) -> DeploymentLimits {
    let settings = shared.settings();
    DeploymentLimits {
        duplicate_check: settings.duplicate_deployment_check,
        max_active: settings.max_active_deployments,
        cap_status: settings.max_active_deployments_status,
    }
}

fn created(id: &str) -> Response {
    (
        StatusCode::CREATED,
        [(
            header::LOCATION,
            format!("/api/management/v1/deployments/deployments/{id}"),
        )],
    )
        .into_response()
}

pub(super) async fn deployment_create(
    State(shared): State<Arc<Shared>>,
    JsonBody(new): JsonBody<NewDeployment>,
) -> ApiResult {
    let limits = limits(&shared);
    let id = shared.write(|s| s.create_deployment(&new, limits))??;
    Ok(created(&id))
}

/// `POST …/deployments/group/{name}`: the group's devices, fixed at creation.
pub(super) async fn deployment_create_for_group(
    State(shared): State<Arc<Shared>>,
    Path(group): Path<String>,
    JsonBody(mut new): JsonBody<NewDeployment>,
) -> ApiResult {
    let limits = limits(&shared);
    let id = shared.write(|s| {
        let devices: Vec<String> = s
            .devices
            .values()
            .filter(|d| d.group.as_deref() == Some(group.as_str()))
            .filter(|d| d.status == crate::state::AuthStatus::Accepted)
            .map(|d| d.id.clone())
            .collect();
        if devices.is_empty() {
            return Err(crate::state::OpError::BadRequest(format!(
                "group {group:?} has no accepted devices"
            )));
        }
        new.devices = devices;
        new.all_devices = false;
        new.group = Some(group.clone());
        s.create_deployment(&new, limits)
    })??;
    Ok(created(&id))
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
        "groups": d.group.iter().collect::<Vec<_>>(),
        "statistics": {"status": d.statistics()},
    })
}

/// `GET /api/management/v2/deployments/deployments?id=&name=&status=&page=&per_page=`
/// (`id` and `name` repeatable, names exact), newest first, `X-Total-Count` and `Link`.
pub(super) async fn deployments_list_v2(
    State(shared): State<Arc<Shared>>,
    paged: PagedQuery,
) -> ApiResult {
    let q = &paged.query;
    let (ids, names, statuses) = (q.all("id"), q.all("name"), q.all("status"));
    for st in &statuses {
        if !["pending", "inprogress", "finished"].contains(&st.as_str()) {
            return Err(ApiError::bad_request(format!("invalid status {st:?}")));
        }
    }
    let all: Vec<Value> = shared.read(|s| {
        let mut deps: Vec<_> = s
            .deployments
            .values()
            .filter(|d| ids.is_empty() || ids.contains(&d.id))
            .filter(|d| names.is_empty() || names.contains(&d.name))
            .filter(|d| statuses.is_empty() || statuses.iter().any(|st| st == d.status()))
            .collect();
        deps.sort_by_key(|d| std::cmp::Reverse(d.seq));
        deps.into_iter().map(|d| deployment_view(s, d)).collect()
    });
    Ok(paged.respond(routes::DEPLOYMENTS_V2, all, true))
}

#[derive(Deserialize)]
pub(super) struct StatisticsListBody {
    deployment_ids: Vec<String>,
}

/// `POST …/deployments/statistics/list` `{"deployment_ids": […]}` → `[{id, stats}]` (unknown
/// ids are left out).
pub(super) async fn statistics_list(
    State(shared): State<Arc<Shared>>,
    JsonBody(req): JsonBody<StatisticsListBody>,
) -> ApiResult {
    if req.deployment_ids.is_empty() {
        return Err(ApiError::bad_request("deployment_ids must not be empty"));
    }
    let list: Vec<Value> = shared.read(|s| {
        req.deployment_ids
            .iter()
            .filter_map(|id| s.deployments.get(id))
            .map(|d| json!({"id": d.id, "stats": d.statistics()}))
            .collect()
    });
    Ok(Json(list).into_response())
}

/// `GET …/deployments/{id}/device_list` → the targeted device ids.
pub(super) fn deployment_device_list(s: &crate::state::State, id: &str) -> Option<Vec<String>> {
    let d = s.deployments.get(id)?;
    Some(d.devices.keys().cloned().collect())
}

/// `DELETE …/deployments/devices/{id}`: aborts the device's part of every unfinished
/// deployment.
pub(super) async fn abort_device(
    State(shared): State<Arc<Shared>>,
    Path(device_id): Path<String>,
) -> ApiResult {
    shared.write_if_changed(|s| ((), s.abort_device(&device_id)))?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Whether a device-deployment status matches a `devices/list` status filter (a status or
/// one of the aggregates `pause`, `active`, `finished`).
fn status_matches(filter: &str, status: &str) -> bool {
    match filter {
        "pause" => status.starts_with("pause_"),
        "active" => !crate::state::FINAL_STATUSES.contains(&status),
        "finished" => crate::state::FINAL_STATUSES.contains(&status),
        other => other == status,
    }
}

/// Valid `devices/list` status filters: every device-deployment status (pending, the
/// reportable ones, the final ones) and the aggregates.
fn is_status_filter(f: &str) -> bool {
    use crate::state::{DEVICE_REPORTABLE, FINAL_STATUSES};
    f == "pending"
        || DEVICE_REPORTABLE.contains(&f)
        || FINAL_STATUSES.contains(&f)
        || ["pause", "active", "finished"].contains(&f)
}

/// The device records of deployment `id` that pass `keep`, with the deployment's artifact;
/// `None` when there is no such deployment.
fn device_views(
    s: &crate::state::State,
    id: &str,
    history: bool,
    keep: impl Fn(&crate::state::DeviceDeployment) -> bool,
) -> Option<Vec<Value>> {
    let d = s.deployments.get(id)?;
    let image = s
        .artifacts
        .values()
        .find(|a| a.name == d.artifact_name)
        .map(artifact_view);
    Some(
        d.devices
            .iter()
            .filter(|(_, dd)| keep(dd))
            .map(|(device_id, dd)| device_deployment_view(device_id, dd, &image, history))
            .collect(),
    )
}

fn device_deployment_view(
    device_id: &str,
    dd: &crate::state::DeviceDeployment,
    image: &Option<Value>,
    history: bool,
) -> Value {
    let mut v = json!({
        "id": device_id,
        "status": dd.status,
        "created": dd.created,
        "started": dd.started,
        "finished": dd.finished,
        "device_type": dd.device_type,
        "substate": dd.substate,
        "log": dd.log.is_some(),
        "image": image,
    });
    if history {
        v["history"] = json!(dd.history);
    }
    v
}

/// `GET …/deployments/{id}/devices/list?status=&page=&per_page=`: only devices that have
/// asked for updates since the deployment was created (the real records are lazy), by
/// device id, `X-Total-Count` and `Link`.
pub(super) async fn deployment_devices_list(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    paged: PagedQuery,
) -> ApiResult {
    let status = paged.query.get("status").map(str::to_string);
    if let Some(st) = &status {
        if !is_status_filter(st) {
            return Err(ApiError::bad_request(format!("invalid status {st:?}")));
        }
    }
    let all = shared
        .read(|s| {
            device_views(s, &id, false, |dd| {
                dd.polled
                    && status
                        .as_deref()
                        .is_none_or(|f| status_matches(f, &dd.status))
            })
        })
        .ok_or_else(|| ApiError::not_found("deployment not found"))?;
    let path = format!("/api/management/v1/deployments/deployments/{id}/devices/list");
    Ok(paged.respond(&path, all, true))
}

pub(super) async fn deployments_list(State(shared): State<Arc<Shared>>) -> ApiResult {
    let list: Vec<Value> = shared.read(|s| {
        let mut deps: Vec<_> = s.deployments.values().collect();
        deps.sort_by_key(|d| std::cmp::Reverse(d.seq));
        deps.into_iter().map(|d| deployment_view(s, d)).collect()
    });
    Ok(Json(list).into_response())
}

/// `GET …/deployments/{id}`.
pub(super) fn deployment_get(s: &crate::state::State, id: &str) -> Option<Value> {
    s.deployments.get(id).map(|d| deployment_view(s, d))
}

pub(super) async fn deployment_abort(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<super::devauth::AuthStatusBody>,
) -> ApiResult {
    if req.status != "aborted" {
        return Err(ApiError::bad_request("status must be \"aborted\""));
    }
    shared.write(|s| s.abort_deployment(&id))??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET …/deployments/{id}/statistics` → count per device status.
pub(super) fn deployment_statistics(
    s: &crate::state::State,
    id: &str,
) -> Option<serde_json::Map<String, Value>> {
    s.deployments.get(id).map(|d| d.statistics())
}

/// Deprecated unpaged `GET …/deployments/{id}/devices`. Mock extension for tests: every
/// targeted device (polled or not) with its `history` of reports.
pub(super) fn deployment_devices(s: &crate::state::State, id: &str) -> Option<Vec<Value>> {
    device_views(s, id, true, |_| true)
}

pub(super) async fn deployment_device_log(
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
