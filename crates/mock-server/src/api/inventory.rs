//! inventory management routes: device lists, v2 filter search, static groups.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::shared::Shared;
use crate::state::Device;

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

pub(super) async fn inventory_list(State(shared): State<Arc<Shared>>) -> ApiResult {
    let list: Vec<Value> = shared.read(|s| s.devices.values().map(inventory_view).collect());
    Ok(Json(list).into_response())
}

pub(super) async fn inventory_get(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> ApiResult {
    shared
        .read(|s| s.devices.get(&id).map(inventory_view))
        .map(|v| Json(v).into_response())
        .ok_or_else(|| ApiError::not_found("device not found"))
}
