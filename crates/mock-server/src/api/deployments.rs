//! deployments management routes: artifacts (upload, lists) and deployments (create, lists,
//! statistics, per-device records, abort).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Multipart, Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::parse_json;
use crate::error::{ApiError, ApiResult};
use crate::shared::Shared;
use crate::state::now_rfc3339;
use sha2::Digest as _;
use tokio::io::AsyncWriteExt as _;

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

pub(super) async fn artifacts_list(State(shared): State<Arc<Shared>>) -> ApiResult {
    let list: Vec<Value> = shared.read(|s| s.artifacts.values().map(artifact_view).collect());
    Ok(Json(list).into_response())
}

pub(super) async fn artifact_get(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult {
    shared
        .read(|s| s.artifacts.get(&id).map(artifact_view))
        .map(|v| Json(v).into_response())
        .ok_or_else(|| ApiError::not_found("artifact not found"))
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

#[derive(Deserialize)]
struct DeploymentBody {
    name: String,
    artifact_name: String,
    #[serde(default)]
    devices: Vec<String>,
    #[serde(default)]
    all_devices: bool,
}

pub(super) async fn deployment_create(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
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

pub(super) async fn deployments_list(State(shared): State<Arc<Shared>>) -> ApiResult {
    let list: Vec<Value> = shared.read(|s| {
        let mut deps: Vec<_> = s.deployments.values().collect();
        deps.sort_by_key(|d| std::cmp::Reverse(d.seq));
        deps.into_iter().map(|d| deployment_view(s, d)).collect()
    });
    Ok(Json(list).into_response())
}

pub(super) async fn deployment_get(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult {
    shared
        .read(|s| s.deployments.get(&id).map(|d| deployment_view(s, d)))
        .map(|v| Json(v).into_response())
        .ok_or_else(|| ApiError::not_found("deployment not found"))
}

pub(super) async fn deployment_abort(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: super::devauth::AuthStatusBody = parse_json(&body)?;
    if req.status != "aborted" {
        return Err(ApiError::bad_request("status must be \"aborted\""));
    }
    shared.write(|s| s.abort_deployment(&id))??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn deployment_statistics(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult {
    shared
        .read(|s| s.deployments.get(&id).map(|d| d.statistics()))
        .map(|v| Json(v).into_response())
        .ok_or_else(|| ApiError::not_found("deployment not found"))
}

pub(super) async fn deployment_devices(
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
