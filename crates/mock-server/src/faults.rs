//! Fault injection: per-server rules that make chosen endpoints (an endpoint group, optionally
//! narrowed by a path glob and a method) answer an error status or drop the connection,
//! optionally only for the next N matching requests.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The endpoint groups faults (and the request log) distinguish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /api/devices/v1/authentication/auth_requests`
    Auth,
    /// `PUT|PATCH /api/devices/v1/inventory/device/attributes`
    Inventory,
    /// `…/deployments/device/deployments/next` (v1 and v2, GET and POST)
    DeploymentsNext,
    /// `PUT …/deployments/device/deployments/{id}/status`
    DeploymentStatus,
    /// `PUT …/deployments/device/deployments/{id}/log`
    DeploymentLog,
    /// Artifact downloads (`source.uri`).
    Download,
    /// Any other `/api/devices/…` path.
    OtherDevice,
    /// `/api/management/…` (narrow it with a rule's `path`).
    Management,
    /// Every endpoint above (never the `/admin/…` endpoints).
    Any,
}

impl Endpoint {
    /// Classifies a request path. `/admin/…` and unknown paths give `None`.
    pub fn classify(path: &str) -> Option<Endpoint> {
        use crate::routes;
        if path == routes::AUTH_REQUESTS {
            Some(Endpoint::Auth)
        } else if path == routes::DEVICE_INVENTORY {
            Some(Endpoint::Inventory)
        } else if path == routes::NEXT_V1 || path == routes::NEXT_V2 {
            Some(Endpoint::DeploymentsNext)
        } else if path.starts_with(routes::DEVICE_DEPLOYMENTS_PREFIX) && path.ends_with("/status") {
            Some(Endpoint::DeploymentStatus)
        } else if path.starts_with(routes::DEVICE_DEPLOYMENTS_PREFIX) && path.ends_with("/log") {
            Some(Endpoint::DeploymentLog)
        } else if path.starts_with(routes::DOWNLOAD_PREFIX) {
            Some(Endpoint::Download)
        } else if path.starts_with(routes::DEVICES_PREFIX) {
            Some(Endpoint::OtherDevice)
        } else if path.starts_with(routes::MANAGEMENT_PREFIX) {
            Some(Endpoint::Management)
        } else {
            None
        }
    }
}

/// What a matching request gets instead of its normal answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// Answer with this HTTP status and a JSON error body.
    Status(u16),
    /// Close the connection without an answer.
    Drop,
}

/// One fault rule. JSON form: `{"endpoint":"auth","action":{"status":401},"times":2}`,
/// `{"endpoint":"any","action":"drop"}` or, for one management route,
/// `{"endpoint":"management","path":"/api/management/v2/devauth/devices/*/auth/*/status",
/// "method":"PUT","action":{"status":503},"times":1}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    pub endpoint: Endpoint,
    /// Only paths matching this glob (`*` = one segment, a final `**` = the rest); all
    /// paths of the endpoint group when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Only requests with this method (e.g. `"PUT"`); all methods when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    pub action: FaultAction,
    /// Apply to the next `times` matching requests only; forever when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

impl FaultRule {
    /// A rule that applies until cleared.
    pub fn new(endpoint: Endpoint, action: FaultAction) -> Self {
        Self {
            endpoint,
            path: None,
            method: None,
            action,
            times: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if let FaultAction::Status(code) = self.action {
            if !(100..=599).contains(&code) {
                return Err(format!("status {code} is not an HTTP status code"));
            }
        }
        if self.times == Some(0) {
            return Err("times must be at least 1".into());
        }
        Ok(())
    }
}

/// The active fault rules of one server; the first matching rule wins.
#[derive(Default)]
pub(crate) struct Faults {
    rules: Mutex<Vec<FaultRule>>,
}

impl Faults {
    pub(crate) fn list(&self) -> Vec<FaultRule> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn add(&self, rule: FaultRule) {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rule);
    }

    pub(crate) fn replace(&self, rules: Vec<FaultRule>) {
        *self.rules.lock().unwrap_or_else(|e| e.into_inner()) = rules;
    }

    /// Finds the action for a request, consuming one use of a counted rule.
    pub(crate) fn check(
        &self,
        endpoint: Endpoint,
        path: &str,
        method: &str,
    ) -> Option<FaultAction> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let idx = rules.iter().position(|r| {
            (r.endpoint == Endpoint::Any || r.endpoint == endpoint)
                && r.path
                    .as_deref()
                    .is_none_or(|p| crate::routes::path_matches(p, path))
                && r.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
        })?;
        let action = rules[idx].action;
        if let Some(times) = rules[idx].times.as_mut() {
            *times -= 1;
            if *times == 0 {
                rules.remove(idx);
            }
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_paths() {
        assert_eq!(
            Endpoint::classify("/api/devices/v2/deployments/device/deployments/next"),
            Some(Endpoint::DeploymentsNext)
        );
        assert_eq!(
            Endpoint::classify("/api/devices/v1/deployments/device/deployments/abc/status"),
            Some(Endpoint::DeploymentStatus)
        );
        assert_eq!(Endpoint::classify("/admin/faults"), None);
        assert_eq!(
            Endpoint::classify("/api/management/v2/devauth/devices"),
            Some(Endpoint::Management)
        );
    }

    #[test]
    fn counted_rules_expire_and_method_filters() {
        let faults = Faults::default();
        faults.add(FaultRule {
            endpoint: Endpoint::Auth,
            path: None,
            method: Some("POST".into()),
            action: FaultAction::Status(503),
            times: Some(2),
        });
        faults.add(FaultRule::new(Endpoint::Any, FaultAction::Drop));
        // In order: the method matches case-insensitively, another method falls through to
        // the catch-all, and the counted rule is gone after its second use.
        let checks = [
            ("post", FaultAction::Status(503)),
            ("GET", FaultAction::Drop),
            ("POST", FaultAction::Status(503)),
            ("POST", FaultAction::Drop),
        ];
        for (i, (method, want)) in checks.into_iter().enumerate() {
            assert_eq!(
                faults.check(Endpoint::Auth, "/", method),
                Some(want),
                "check {i}: {method}"
            );
        }
        assert_eq!(faults.list().len(), 1);
        let json = serde_json::to_string(&faults.list()[0]).unwrap();
        assert_eq!(json, r#"{"endpoint":"any","action":"drop"}"#);
        let parsed: FaultRule =
            serde_json::from_str(r#"{"endpoint":"inventory","action":{"status":500},"times":1}"#)
                .unwrap();
        assert_eq!(parsed.action, FaultAction::Status(500));
    }

    #[test]
    fn path_rules_narrow_the_management_group() {
        let faults = Faults::default();
        faults.add(FaultRule {
            endpoint: Endpoint::Management,
            path: Some("/api/management/v2/devauth/devices/*/auth/*/status".into()),
            method: Some("PUT".into()),
            action: FaultAction::Status(503),
            times: None,
        });
        let status = "/api/management/v2/devauth/devices/d/auth/a/status";
        assert_eq!(
            faults.check(
                Endpoint::Management,
                "/api/management/v2/devauth/devices",
                "PUT"
            ),
            None
        );
        assert_eq!(faults.check(Endpoint::Management, status, "GET"), None);
        assert_eq!(
            faults.check(Endpoint::Management, status, "PUT"),
            Some(FaultAction::Status(503))
        );
    }
}
