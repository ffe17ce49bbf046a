//! The Management API calls the orchestrator makes, typed: device authentication (v2),
//! inventory, deployments and artifacts. Paths and semantics as in the real server
//! (reference `mender-management-api.md` §2).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::http::{enc, ApiError, ApiErrorDetail, Body, Client, ErrorKind, Retry};

const DEVAUTH: &str = "/api/management/v2/devauth";
const DEPLOYMENTS_V1: &str = "/api/management/v1/deployments";
const DEPLOYMENTS_V2: &str = "/api/management/v2/deployments";
const INVENTORY_V1: &str = "/api/management/v1/inventory";

/// One auth set of a device (identity + key).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AuthSet {
    pub id: String,
    #[serde(default)]
    pub identity_data: Option<Value>,
    #[serde(default)]
    pub pubkey: String,
    #[serde(default)]
    pub status: String,
}

/// A device as devauth lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Device {
    pub id: String,
    #[serde(default)]
    pub identity_data: Map<String, Value>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub auth_sets: Vec<AuthSet>,
    #[serde(default)]
    pub decommissioning: bool,
    #[serde(default)]
    pub check_in_time: Option<String>,
}

impl Device {
    pub fn accepted_sets(&self) -> Vec<&AuthSet> {
        self.auth_sets
            .iter()
            .filter(|a| a.status == "accepted")
            .collect()
    }
}

/// Canonical identity: compact JSON with sorted keys (what the server hashes).
pub fn canonical_identity(identity: &Map<String, Value>) -> String {
    let sorted: BTreeMap<&String, &Value> = identity.iter().collect();
    serde_json::to_string(&sorted).unwrap_or_default()
}

/// Keys compared without PEM line-ending or trailing-whitespace differences.
pub fn same_key(a: &str, b: &str) -> bool {
    let norm = |s: &str| -> String { s.split_whitespace().collect::<Vec<_>>().join("") };
    norm(a) == norm(b)
}

/// What preauthorizing got.
#[derive(Debug, Clone, PartialEq)]
pub enum Preauth {
    /// 201: created (device id from `Location`).
    Created { device_id: String },
    /// 409: the identity already exists; the existing device from the body.
    Conflict(Box<Device>),
}

/// Per-device state of a deployment (`devices/list`).
#[derive(Clone, Debug, Deserialize)]
pub struct DeploymentDevice {
    pub id: String,
    #[serde(default)]
    pub status: String,
}

/// A deployment from the v2 list.
#[derive(Clone, Debug, Deserialize)]
pub struct DeploymentSummary {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub artifact_name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub created: String,
}

/// An artifact as the server lists it.
#[derive(Clone, Debug, Deserialize)]
pub struct ServerArtifact {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub device_types_compatible: Vec<String>,
    #[serde(default)]
    pub size: Option<u64>,
}

/// Inventory facts of one device the plan needs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct InventoryFacts {
    pub device_type: Option<String>,
    pub group: Option<String>,
    pub artifact_name: Option<String>,
}

fn api_err_from_body(client: &Client, path: &str, msg: String) -> ApiError {
    ApiErrorDetail {
        server: client.name().to_string(),
        method: "GET".into(),
        path: path.into(),
        status: None,
        kind: ErrorKind::Status,
        message: msg,
        request_id: None,
        body: Vec::new(),
    }
    .into()
}

fn parse<T: serde::de::DeserializeOwned>(
    client: &Client,
    path: &str,
    v: Value,
) -> Result<T, ApiError> {
    serde_json::from_value(v)
        .map_err(|e| api_err_from_body(client, path, format!("unexpected response shape: {e}")))
}

/// Management API of one server.
pub struct Api {
    pub client: Client,
}

impl Api {
    pub fn new(client: Client) -> Api {
        Api { client }
    }

    pub fn name(&self) -> &str {
        self.client.name()
    }

    /// `GET useradm/users/me`; a 404 (a server without useradm) falls back to a devauth count.
    pub fn check_credentials(&self) -> Result<Option<String>, ApiError> {
        match self.client.get_json("/api/management/v1/useradm/users/me") {
            Ok(v) => Ok(v.get("email").and_then(Value::as_str).map(str::to_string)),
            Err(e) if e.is_status(404) => {
                self.count_devices("accepted")?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    pub fn count_devices(&self, status: &str) -> Result<u64, ApiError> {
        let v = self
            .client
            .get_json(&format!("{DEVAUTH}/devices/count?status={}", enc(status)))?;
        Ok(v.get("count").and_then(Value::as_u64).unwrap_or(0))
    }

    /// `limits/max_devices`: `Some(0)` = unlimited, `None` = the server has no such endpoint.
    pub fn max_devices(&self) -> Result<Option<u64>, ApiError> {
        match self
            .client
            .get_json(&format!("{DEVAUTH}/limits/max_devices"))
        {
            Ok(v) => Ok(Some(v.get("limit").and_then(Value::as_u64).unwrap_or(0))),
            Err(e) if e.is_status(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every device with the given status (all statuses with `None`), fully paged through the
    /// v2 search (falling back to the v2 list where search is missing).
    pub fn devices_by_status(
        &self,
        status: Option<&str>,
        mut each: impl FnMut(Device),
    ) -> Result<usize, ApiError> {
        let body = match status {
            Some(s) => json!({ "status": s }),
            None => json!({}),
        };
        let mut bad: Option<ApiError> = None;
        let r =
            self.client
                .get_all_pages(&format!("{DEVAUTH}/devices/search"), "", Some(&body), |v| {
                    match serde_json::from_value::<Device>(v) {
                        Ok(d) => each(d),
                        Err(e) => {
                            bad.get_or_insert(api_err_from_body(
                                &self.client,
                                "devices/search",
                                format!("unexpected device shape: {e}"),
                            ));
                        }
                    }
                });
        match r {
            Err(e) if e.endpoint_missing() => {
                let query = status
                    .map(|s| format!("status={}", enc(s)))
                    .unwrap_or_default();
                self.client
                    .get_all_pages(&format!("{DEVAUTH}/devices"), &query, None, |v| {
                        if let Ok(d) = serde_json::from_value::<Device>(v) {
                            each(d)
                        }
                    })
            }
            Err(e) => Err(e),
            Ok(n) => match bad {
                Some(e) => Err(e),
                None => Ok(n),
            },
        }
    }

    /// Every item of a paged list that decodes as `T` (items of another shape are skipped).
    fn decoded_pages<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &str,
        body: Option<&Value>,
    ) -> Result<Vec<T>, ApiError> {
        let mut out = Vec::new();
        self.client.get_all_pages(path, query, body, |v| {
            if let Ok(item) = serde_json::from_value::<T>(v) {
                out.push(item)
            }
        })?;
        Ok(out)
    }

    /// Devices by id (search in chunks of 500 ids; missing ids are simply absent).
    pub fn devices_by_ids(&self, ids: &[String]) -> Result<Vec<Device>, ApiError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(crate::http::PER_PAGE_MAX) {
            let body = json!({ "id": chunk });
            match self.decoded_pages(&format!("{DEVAUTH}/devices/search"), "", Some(&body)) {
                Ok(found) => out.extend(found),
                Err(e) if e.endpoint_missing() => {
                    // No search endpoint: one GET per device.
                    for id in chunk {
                        if let Some(d) = self.device(id)? {
                            out.push(d);
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub fn device(&self, id: &str) -> Result<Option<Device>, ApiError> {
        let path = format!("{DEVAUTH}/devices/{}", enc(id));
        match self.client.get_json(&path) {
            Ok(v) => Ok(Some(parse(&self.client, &path, v)?)),
            Err(e) if e.is_status(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST devauth/devices` without `force`. A 409 body is the existing device.
    pub fn preauthorize(
        &self,
        identity: &Map<String, Value>,
        pubkey: &str,
    ) -> Result<Preauth, ApiError> {
        let body = json!({ "identity_data": identity, "pubkey": pubkey });
        match self.client.request(
            "POST",
            &format!("{DEVAUTH}/devices"),
            Body::Json(&body),
            Retry::NotIdempotent,
        ) {
            Ok(resp) => {
                let loc = resp.location.unwrap_or_default();
                let id = loc.trim_end_matches('/').rsplit('/').next().unwrap_or("");
                if id.is_empty() {
                    return Err(api_err_from_body(
                        &self.client,
                        "devauth/devices",
                        "201 without a Location header".into(),
                    ));
                }
                Ok(Preauth::Created {
                    device_id: id.to_string(),
                })
            }
            Err(e) if e.is_status(409) => match serde_json::from_slice::<Device>(&e.body) {
                Ok(d) if !d.id.is_empty() => Ok(Preauth::Conflict(Box::new(d))),
                // Servers before 4.0 answer 409 with an error body: find the device by its
                // identity instead (one full listing; only on this rare path).
                _ => match self.find_by_identity(identity)? {
                    Some(d) => Ok(Preauth::Conflict(Box::new(d))),
                    None => {
                        let mut d = (*e.0).clone();
                        d.message = format!(
                            "{} (409, and no device with this identity is listed)",
                            d.message
                        );
                        Err(d.into())
                    }
                },
            },
            Err(e) => Err(e),
        }
    }

    /// The device with this identity (any status), by listing every device.
    pub fn find_by_identity(
        &self,
        identity: &Map<String, Value>,
    ) -> Result<Option<Device>, ApiError> {
        let want = canonical_identity(identity);
        let mut found = None;
        self.devices_by_status(None, |d| {
            if found.is_none() && canonical_identity(&d.identity_data) == want {
                found = Some(d);
            }
        })?;
        Ok(found)
    }

    /// `PUT …/auth/{aid}/status`: idempotent (same status = 204).
    pub fn set_auth_status(&self, device: &str, aid: &str, status: &str) -> Result<(), ApiError> {
        let body = json!({ "status": status });
        self.client.request(
            "PUT",
            &format!("{DEVAUTH}/devices/{}/auth/{}/status", enc(device), enc(aid)),
            Body::Json(&body),
            Retry::Idempotent,
        )?;
        Ok(())
    }

    /// `DELETE …/auth/{aid}`; already gone (404) counts as done.
    pub fn delete_auth_set(&self, device: &str, aid: &str) -> Result<(), ApiError> {
        match self.client.request(
            "DELETE",
            &format!("{DEVAUTH}/devices/{}/auth/{}", enc(device), enc(aid)),
            Body::Empty,
            Retry::Idempotent,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.is_status(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Inventory facts of every device (v1 list, paged).
    pub fn inventory(&self) -> Result<BTreeMap<String, InventoryFacts>, ApiError> {
        let mut out = BTreeMap::new();
        self.client
            .get_all_pages(&format!("{INVENTORY_V1}/devices"), "", None, |v| {
                let Some(id) = v.get("id").and_then(Value::as_str) else {
                    return;
                };
                let mut facts = InventoryFacts::default();
                for a in v
                    .get("attributes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let name = a.get("name").and_then(Value::as_str).unwrap_or("");
                    let value = match a.get("value") {
                        Some(Value::String(s)) => Some(s.clone()),
                        Some(Value::Array(xs)) => {
                            xs.first().and_then(Value::as_str).map(str::to_string)
                        }
                        _ => None,
                    };
                    match name {
                        "device_type" => facts.device_type = value,
                        "group" => facts.group = value,
                        "artifact_name" => facts.artifact_name = value,
                        _ => {}
                    }
                }
                out.insert(id.to_string(), facts);
            })?;
        Ok(out)
    }

    /// Deployments with exactly this name (v2 list; v1 list filtered here where v2 is missing).
    pub fn deployments_by_name(&self, name: &str) -> Result<Vec<DeploymentSummary>, ApiError> {
        self.list_by_name("deployments", name, |d: &DeploymentSummary| &d.name)
    }

    /// Items of a deployments-service list (`deployments`, `artifacts`) with exactly this name:
    /// the v2 list filtered by the server, the v1 list where v2 is missing, filtered here.
    fn list_by_name<T: serde::de::DeserializeOwned>(
        &self,
        list: &str,
        name: &str,
        name_of: impl Fn(&T) -> &str,
    ) -> Result<Vec<T>, ApiError> {
        let v2 = self.decoded_pages(
            &format!("{DEPLOYMENTS_V2}/{list}"),
            &format!("name={}", enc(name)),
            None,
        );
        let mut out = match v2 {
            Ok(items) => items,
            Err(e) if e.endpoint_missing() => {
                let v = self.client.get_json(&format!("{DEPLOYMENTS_V1}/{list}"))?;
                serde_json::from_value::<Vec<T>>(v).unwrap_or_default()
            }
            Err(e) => return Err(e),
        };
        out.retain(|item| name_of(item) == name);
        Ok(out)
    }

    /// Active and pending deployments (for the hosted cap of 800).
    pub fn active_deployments(&self) -> Result<u64, ApiError> {
        let mut total = 0;
        for status in ["inprogress", "pending"] {
            let path = format!("{DEPLOYMENTS_V2}/deployments?status={status}&per_page=1&page=1");
            match self
                .client
                .request("GET", &path, Body::Empty, Retry::Idempotent)
            {
                Ok(resp) => {
                    total += match resp.total_count {
                        Some(n) => n,
                        None => {
                            let mut n = 0u64;
                            self.client.get_all_pages(
                                &format!("{DEPLOYMENTS_V2}/deployments"),
                                &format!("status={status}"),
                                None,
                                |_| n += 1,
                            )?;
                            n
                        }
                    }
                }
                Err(e) if e.endpoint_missing() => {
                    let v = self
                        .client
                        .get_json(&format!("{DEPLOYMENTS_V1}/deployments"))?;
                    return Ok(v
                        .as_array()
                        .map(|l| {
                            l.iter()
                                .filter(|d| {
                                    d.get("status").and_then(Value::as_str) != Some("finished")
                                })
                                .count() as u64
                        })
                        .unwrap_or(0));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// `POST deployments` to a device list. Not idempotent: the caller journals the intent
    /// and reconciles by name. 409 (identical active deployment, server ≥ 4.0) is returned
    /// as an error for the caller to resolve by name.
    pub fn create_deployment(
        &self,
        name: &str,
        artifact_name: &str,
        devices: &[String],
    ) -> Result<String, ApiError> {
        let body = json!({ "name": name, "artifact_name": artifact_name, "devices": devices });
        let resp = self.client.request(
            "POST",
            &format!("{DEPLOYMENTS_V1}/deployments"),
            Body::Json(&body),
            Retry::NotIdempotent,
        )?;
        let loc = resp.location.unwrap_or_default();
        let id = loc
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string();
        if id.is_empty() {
            return Err(api_err_from_body(
                &self.client,
                "deployments",
                "201 without a Location header".into(),
            ));
        }
        Ok(id)
    }

    /// Statistics of several deployments (one call; per-deployment GETs where
    /// `statistics/list` is missing).
    pub fn statistics(
        &self,
        ids: &[String],
    ) -> Result<BTreeMap<String, BTreeMap<String, u64>>, ApiError> {
        let mut out = BTreeMap::new();
        if ids.is_empty() {
            return Ok(out);
        }
        let body = json!({ "deployment_ids": ids });
        let to_map = |v: &Value| -> BTreeMap<String, u64> {
            v.as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_u64().map(|n| (k.clone(), n)))
                        .collect()
                })
                .unwrap_or_default()
        };
        match self.client.request(
            "POST",
            &format!("{DEPLOYMENTS_V1}/deployments/statistics/list"),
            Body::Json(&body),
            Retry::Idempotent,
        ) {
            Ok(resp) => {
                let v = self.client.parse_json(&resp, "POST", "statistics/list")?;
                for item in v.as_array().into_iter().flatten() {
                    if let Some(id) = item.get("id").and_then(Value::as_str) {
                        out.insert(
                            id.to_string(),
                            to_map(item.get("stats").unwrap_or(&Value::Null)),
                        );
                    }
                }
            }
            Err(e) if e.endpoint_missing() => {
                for id in ids {
                    let v = self.client.get_json(&format!(
                        "{DEPLOYMENTS_V1}/deployments/{}/statistics",
                        enc(id)
                    ))?;
                    out.insert(id.clone(), to_map(&v));
                }
            }
            Err(e) => return Err(e),
        }
        Ok(out)
    }

    /// Per-device statuses of one deployment (only devices that have polled appear), all of
    /// them or only those matching `status` (a status or an aggregate such as `finished`).
    pub fn deployment_devices(
        &self,
        id: &str,
        status: Option<&str>,
    ) -> Result<Vec<DeploymentDevice>, ApiError> {
        let query = status
            .map(|s| format!("status={}", enc(s)))
            .unwrap_or_default();
        self.decoded_pages(
            &format!("{DEPLOYMENTS_V1}/deployments/{}/devices/list", enc(id)),
            &query,
            None,
        )
    }

    /// A deployment's status (`pending`, `inprogress`, `finished`); `None` when gone.
    pub fn deployment_status(&self, id: &str) -> Result<Option<String>, ApiError> {
        match self
            .client
            .get_json(&format!("{DEPLOYMENTS_V1}/deployments/{}", enc(id)))
        {
            Ok(v) => Ok(Some(
                v.get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )),
            Err(e) if e.is_status(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PUT …/status {"status":"aborted"}`; already finished (422) or gone (404) is fine.
    pub fn abort_deployment(&self, id: &str) -> Result<(), ApiError> {
        let body = json!({ "status": "aborted" });
        match self.client.request(
            "PUT",
            &format!("{DEPLOYMENTS_V1}/deployments/{}/status", enc(id)),
            Body::Json(&body),
            Retry::Idempotent,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.is_status(422) || e.is_status(404) || e.is_status(409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `DELETE deployments/devices/{id}`: aborts every active or pending deployment of one
    /// device on this server.
    pub fn abort_device_deployments(&self, device: &str) -> Result<(), ApiError> {
        match self.client.request(
            "DELETE",
            &format!("{DEPLOYMENTS_V1}/deployments/devices/{}", enc(device)),
            Body::Empty,
            Retry::Idempotent,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.is_status(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Artifacts with exactly this name (v2 list; v1 where v2 is missing).
    pub fn artifacts_by_name(&self, name: &str) -> Result<Vec<ServerArtifact>, ApiError> {
        self.list_by_name("artifacts", name, |a: &ServerArtifact| &a.name)
    }

    /// Multipart upload (`size`, then `artifact` last), streamed from the file. Not
    /// idempotent: callers look the name up first and again after an unknown outcome.
    pub fn upload_artifact(&self, path: &Path, description: &str) -> Result<(), ApiError> {
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let boundary = format!("mender-migrate-{:016x}", rand::random::<u64>());
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().replace('"', ""))
            .unwrap_or_else(|| "artifact.mender".into());
        let head = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"size\"\r\n\r\n{size}\r\n--{b}\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\n{description}\r\n--{b}\r\nContent-Disposition: form-data; name=\"artifact\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
            b = boundary
        );
        let tail = format!("\r\n--{boundary}--\r\n");
        let path = path.to_path_buf();
        let open = move || -> std::io::Result<Box<dyn std::io::Read + Send>> {
            use std::io::Read as _;
            let file = std::fs::File::open(&path)?;
            Ok(Box::new(
                std::io::Cursor::new(head.clone().into_bytes())
                    .chain(file)
                    .chain(std::io::Cursor::new(tail.clone().into_bytes())),
            ))
        };
        self.client.request(
            "POST",
            &format!("{DEPLOYMENTS_V1}/artifacts"),
            Body::Stream {
                content_type: format!("multipart/form-data; boundary={boundary}"),
                open: &open,
            },
            Retry::NotIdempotent,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_canonical() {
        let a: Map<String, Value> = serde_json::from_str(r#"{"serial":"1","mac":"aa"}"#).unwrap();
        assert_eq!(canonical_identity(&a), r#"{"mac":"aa","serial":"1"}"#);
    }

    #[test]
    fn keys_compare_without_whitespace() {
        assert!(same_key("-----BEGIN\nAB\n", "-----BEGIN\r\nAB"));
        assert!(!same_key("A", "B"));
    }
}
