//! HTTP routes: the device API the Mender clients use, the management API an orchestrator
//! needs, artifact downloads and the `/admin/…` test endpoints. Paths come from
//! [`crate::routes`]; cross-cutting concerns (request ids, logging, faults, auth) are the
//! layers of [`crate::layers`].

mod admin;
mod deployments;
mod devauth;
mod device;
mod inventory;
mod paging;
mod useradm;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Json, Router};

use crate::error::{ApiError, ApiResult};
use crate::layers::{self, bearer_token};
use crate::routes as r;
use crate::shared::Shared;

/// An authorized device (valid, unrevoked token); 401 otherwise.
pub(crate) struct DeviceAuth(pub(crate) String);

impl FromRequestParts<Arc<Shared>> for DeviceAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized = || ApiError::unauthorized("invalid or missing device token");
        let token = bearer_token(&parts.headers).ok_or_else(unauthorized)?;
        let device_id = shared.check_in(token).ok_or_else(unauthorized)?;
        Ok(DeviceAuth(device_id))
    }
}

/// `GET …/{id}` of one object: what `find` finds by the path's `{id}`, as JSON; 404
/// `"{what} not found"` when it finds nothing. Every single-object read is this one handler.
fn get_by_id<T: serde::Serialize + 'static>(
    what: &'static str,
    find: fn(&crate::state::State, &str) -> Option<T>,
) -> MethodRouter<Arc<Shared>> {
    get(
        move |State(shared): State<Arc<Shared>>, Path(id): Path<String>| async move {
            shared
                .read(|s| find(s, &id))
                .map(|v| Json(v).into_response())
                .ok_or_else(|| ApiError::not_found(format!("{what} not found")))
        },
    )
}

/// Extractor of a JSON request body, whatever its `Content-Type` (clients differ in what they
/// send): 400 `malformed request body` when it does not parse as `T`.
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        parse_json(&body)
            .map(JsonBody)
            .map_err(IntoResponse::into_response)
    }
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed request body: {e}")))
}

/// The whole application: routes plus the layers every request passes.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let devices = Router::new()
        .route(r::AUTH_REQUESTS, post(device::auth_request))
        .route(
            r::DEVICE_INVENTORY,
            put(device::inventory_update::<true>).patch(device::inventory_update::<false>),
        )
        .route(r::NEXT_V1, get(device::next_get).post(device::next_post))
        .route(r::NEXT_V2, post(device::next_v2))
        .route(
            r::DEVICE_DEPLOYMENT_STATUS,
            put(device::report_put::<device::StatusReport>),
        )
        .route(
            r::DEVICE_DEPLOYMENT_LOG,
            put(device::report_put::<device::LogReport>),
        )
        .route(r::DOWNLOAD, get(device::download));
    let useradm = Router::new()
        .route(r::LOGIN, post(useradm::login))
        .route(r::LOGOUT, post(useradm::logout))
        .route(r::USERS_ME, get(useradm::me))
        .route(r::PATS, get(useradm::pats_list).post(useradm::pat_create))
        .route(r::PAT, delete(useradm::pat_delete));
    let devauth = Router::new()
        .route(
            r::DEVAUTH_DEVICES,
            get(devauth::devices_list).post(devauth::preauthorize),
        )
        .route(r::DEVAUTH_SEARCH, post(devauth::devices_search))
        .route(r::DEVAUTH_COUNT, get(devauth::devices_count))
        .route(r::DEVAUTH_MAX_DEVICES, get(devauth::max_devices))
        .route(
            r::DEVAUTH_DEVICE,
            get_by_id("device", devauth::device_get).delete(devauth::decommission),
        )
        .route(r::DEVAUTH_AUTH_SET, delete(devauth::auth_set_delete))
        .route(
            r::DEVAUTH_AUTH_STATUS,
            put(devauth::auth_status_put).get(devauth::auth_status_get),
        );
    let deployments = Router::new()
        .route(
            r::ARTIFACTS,
            get(deployments::artifacts_list)
                .post(deployments::artifact_upload)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            r::ARTIFACT,
            get_by_id("artifact", deployments::artifact_get),
        )
        .route(
            r::ARTIFACT_DOWNLOAD,
            get(deployments::artifact_download_link),
        )
        .route(r::ARTIFACTS_V2, get(deployments::artifacts_list_v2))
        .route(r::DEPLOYMENTS_V2, get(deployments::deployments_list_v2))
        .route(
            r::DEPLOYMENT_GROUP,
            post(deployments::deployment_create_for_group),
        )
        .route(
            r::DEPLOYMENTS_STATISTICS_LIST,
            post(deployments::statistics_list),
        )
        .route(r::DEPLOYMENTS_FOR_DEVICE, delete(deployments::abort_device))
        .route(
            r::DEPLOYMENT_DEVICE_LIST,
            get_by_id("deployment", deployments::deployment_device_list),
        )
        .route(
            r::DEPLOYMENTS,
            get(deployments::deployments_list).post(deployments::deployment_create),
        )
        .route(
            r::DEPLOYMENT,
            get_by_id("deployment", deployments::deployment_get),
        )
        .route(r::DEPLOYMENT_STATUS, put(deployments::deployment_abort))
        .route(
            r::DEPLOYMENT_STATISTICS,
            get_by_id("deployment", deployments::deployment_statistics),
        )
        .route(
            r::DEPLOYMENT_DEVICES,
            get_by_id("deployment", deployments::deployment_devices),
        )
        .route(
            r::DEPLOYMENT_DEVICES_LIST,
            get(deployments::deployment_devices_list),
        )
        .route(
            r::DEPLOYMENT_DEVICE_LOG,
            get(deployments::deployment_device_log),
        );
    let inventory = Router::new()
        .route(r::INVENTORY_DEVICES, get(inventory::inventory_list))
        .route(
            r::INVENTORY_DEVICE,
            get_by_id("device", inventory::inventory_get),
        )
        .route(r::INVENTORY_DEVICE_GROUP, put(inventory::device_group_put))
        .route(
            r::INVENTORY_DEVICE_GROUP_NAMED,
            delete(inventory::device_group_delete),
        )
        .route(r::INVENTORY_GROUPS, get(inventory::groups_list))
        .route(
            r::INVENTORY_GROUP_DEVICES,
            get(inventory::group_devices)
                .patch(inventory::group_add)
                .delete(inventory::group_remove),
        )
        .route(r::INVENTORY_SEARCH_V2, post(inventory::search));
    let admin = Router::new()
        .route(
            r::ADMIN_FAULTS,
            get(admin::faults_get)
                .post(admin::faults_add)
                .put(admin::faults_replace)
                .delete(admin::faults_clear),
        )
        .route(r::ADMIN_DOWN, post(admin::admin_down))
        .route(r::ADMIN_REQUESTS, get(admin::admin_requests))
        .route(
            r::ADMIN_SETTINGS,
            get(admin::settings_get).patch(admin::settings_patch),
        )
        .route(
            r::ADMIN_EXPIRE_TOKENS,
            post(admin::expire_tokens).delete(admin::restore_token),
        );
    devices
        .merge(useradm)
        .merge(devauth)
        .merge(deployments)
        .merge(inventory)
        .merge(admin)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(from_fn_with_state(shared.clone(), layers::pipeline))
        .with_state(shared)
}
