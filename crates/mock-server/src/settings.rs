//! Server behaviour knobs that tests switch at start (`ServerConfig::settings`, binary flags)
//! or at run time (`PATCH /admin/settings`, `MockServer::update_settings`).

use serde::{Deserialize, Serialize};

/// Which server the mock imitates on the device side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Edition {
    /// Open source: v1 `next` (GET/POST) offers by device type only and never compares
    /// artifact depends with provides; v2 `next` is 404.
    #[default]
    OpenSource,
    /// Enterprise/hosted: additionally v2 `POST next` with the device's provides, honouring
    /// artifact depends (`noartifact` when they do not match).
    Enterprise,
}

/// The body of a 429.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitBody {
    /// `Too Many Requests` as text/plain, like the Traefik gateway.
    #[default]
    Plain,
    /// `{"error":"too many requests","request_id":…}`, like the services' own limiter.
    Json,
}

/// Which requests the limiter counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitScope {
    /// `/api/management/…` only.
    #[default]
    Management,
    /// `/api/devices/…` only.
    Devices,
    /// Both.
    All,
}

/// A per-server token bucket: `burst` requests at once, refilled at `requests_per_second`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub requests_per_second: f64,
    pub burst: u32,
    #[serde(default)]
    pub body: RateLimitBody,
    #[serde(default)]
    pub scope: RateLimitScope,
}

/// Behaviour knobs; every field has a default matching a current open-source server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Device limit (`GET …/devauth/limits/max_devices`); 0 = unlimited. Accepting beyond it
    /// → 422; a preauthorized device's first auth beyond it → 401.
    pub max_devices: u64,
    /// How long a decommission takes before the device is gone (the real one is a workflow);
    /// meanwhile `decommissioning: true` and the device's auth is refused.
    pub decommission_delay_ms: u64,
    /// Server ≥ 4.0: an identical deployment constructor while one is active → 409. `false`
    /// imitates older servers, which create a second deployment.
    pub duplicate_deployment_check: bool,
    /// Active (pending + in progress) deployments allowed; 0 = unlimited, as the open-source
    /// server (hosted: 800). See [`Settings::max_active_deployments_status`].
    pub max_active_deployments: u64,
    /// Status answered (JSON `{"error", "request_id"}` body) when the cap refuses a
    /// deployment. The cap is closed-source: the open-source deployments service takes a
    /// `maxActiveDeployments` argument and drops it (mender-server
    /// `backend/services/deployments/app/app.go` `NewDeployments`; `main.go` passes 0), the
    /// enforcement came with deployments-enterprise 4.3.0 (server `CHANGELOG.md`), and the
    /// documented answers of `POST …/deployments/deployments` are 201/400/401/409/422/500
    /// (`backend/docs/api/deployments/management_v1.yaml`). Hosted docs
    /// (`02.Overview/18.Limits`) give only the limit (800, env
    /// `DEPLOYMENTS_LIMIT_MAX_ACTIVE_DEPLOYMENTS`), not the answer. So the status is
    /// configurable; the default is the documented generic refusal, 400.
    pub max_active_deployments_status: u16,
    /// Rate limiting; `None` = off.
    pub rate_limit: Option<RateLimit>,
    pub edition: Edition,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_devices: 0,
            decommission_delay_ms: 500,
            duplicate_deployment_check: true,
            max_active_deployments: 0,
            max_active_deployments_status: 400,
            rate_limit: None,
            edition: Edition::OpenSource,
        }
    }
}

impl Settings {
    /// Applies a JSON merge patch (`{"max_devices": 5, "rate_limit": null}`); unknown keys
    /// or wrong types are an error naming them.
    pub fn patched(&self, patch: &serde_json::Value) -> Result<Settings, String> {
        let serde_json::Value::Object(patch) = patch else {
            return Err("settings patch must be a JSON object".into());
        };
        let mut current = serde_json::to_value(self).map_err(|e| e.to_string())?;
        let object = current
            .as_object_mut()
            .expect("settings serialise to an object");
        for (k, v) in patch {
            object.insert(k.clone(), v.clone());
        }
        let next: Settings =
            serde_json::from_value(current).map_err(|e| format!("invalid settings: {e}"))?;
        next.validate()?;
        Ok(next)
    }

    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = &self.rate_limit {
            if !(r.requests_per_second.is_finite() && r.requests_per_second > 0.0) {
                return Err("rate_limit.requests_per_second must be > 0".into());
            }
            if r.burst == 0 {
                return Err("rate_limit.burst must be at least 1".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_merge_and_refuse_unknown_keys() {
        let s = Settings::default();
        let p = s
            .patched(&serde_json::json!({"max_devices": 3, "edition": "enterprise"}))
            .unwrap();
        assert_eq!(p.max_devices, 3);
        assert_eq!(p.edition, Edition::Enterprise);
        assert_eq!(p.decommission_delay_ms, 500);
        assert!(s.patched(&serde_json::json!({"max_device": 3})).is_err());
        assert!(s
            .patched(&serde_json::json!({"rate_limit": {"requests_per_second": 0, "burst": 1}}))
            .is_err());
        let r = s
            .patched(&serde_json::json!({"rate_limit": {"requests_per_second": 5, "burst": 2, "body": "json"}}))
            .unwrap();
        assert_eq!(r.rate_limit.unwrap().body, RateLimitBody::Json);
    }
}
