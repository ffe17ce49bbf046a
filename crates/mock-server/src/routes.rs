//! Every route string the server answers, in one place: the router, the fault classifier, the
//! auth layer and the README all refer to these (axum `{param}` syntax).

/// Device API: `POST` signed auth request.
pub const AUTH_REQUESTS: &str = "/api/devices/v1/authentication/auth_requests";
/// Device API: `PUT|PATCH` inventory attributes.
pub const DEVICE_INVENTORY: &str = "/api/devices/v1/inventory/device/attributes";
/// Device API: `GET|POST` next deployment (open source and enterprise).
pub const NEXT_V1: &str = "/api/devices/v1/deployments/device/deployments/next";
/// Device API: `POST` next deployment with provides (enterprise edition only; 404 otherwise).
pub const NEXT_V2: &str = "/api/devices/v2/deployments/device/deployments/next";
/// Device API: `PUT` deployment status report.
pub const DEVICE_DEPLOYMENT_STATUS: &str =
    "/api/devices/v1/deployments/device/deployments/{id}/status";
/// Device API: `PUT` deployment log.
pub const DEVICE_DEPLOYMENT_LOG: &str = "/api/devices/v1/deployments/device/deployments/{id}/log";
/// Common prefix of the device deployment report routes.
pub const DEVICE_DEPLOYMENTS_PREFIX: &str = "/api/devices/v1/deployments/device/deployments/";
/// Prefix of every device API route.
pub const DEVICES_PREFIX: &str = "/api/devices/";

/// Artifact download (`source.uri`), no authorization, like a pre-signed URL.
pub const DOWNLOAD: &str = "/download/artifacts/{id}";
pub const DOWNLOAD_PREFIX: &str = "/download/artifacts/";

/// Prefix of every management route (Bearer token required, except [`LOGIN`]).
pub const MANAGEMENT_PREFIX: &str = "/api/management/";

// useradm
pub const LOGIN: &str = "/api/management/v1/useradm/auth/login";
pub const LOGOUT: &str = "/api/management/v1/useradm/auth/logout";
pub const USERS_ME: &str = "/api/management/v1/useradm/users/me";
pub const PATS: &str = "/api/management/v1/useradm/settings/tokens";
pub const PAT: &str = "/api/management/v1/useradm/settings/tokens/{id}";

// deviceauth v2
pub const DEVAUTH_DEVICES: &str = "/api/management/v2/devauth/devices";
pub const DEVAUTH_SEARCH: &str = "/api/management/v2/devauth/devices/search";
pub const DEVAUTH_COUNT: &str = "/api/management/v2/devauth/devices/count";
pub const DEVAUTH_DEVICE: &str = "/api/management/v2/devauth/devices/{id}";
pub const DEVAUTH_AUTH_SET: &str = "/api/management/v2/devauth/devices/{id}/auth/{aid}";
pub const DEVAUTH_AUTH_STATUS: &str = "/api/management/v2/devauth/devices/{id}/auth/{aid}/status";
pub const DEVAUTH_MAX_DEVICES: &str = "/api/management/v2/devauth/limits/max_devices";

// deployments: artifacts
pub const ARTIFACTS: &str = "/api/management/v1/deployments/artifacts";
pub const ARTIFACT: &str = "/api/management/v1/deployments/artifacts/{id}";
pub const ARTIFACT_DOWNLOAD: &str = "/api/management/v1/deployments/artifacts/{id}/download";
pub const ARTIFACTS_V2: &str = "/api/management/v2/deployments/artifacts";

// deployments: deployments
pub const DEPLOYMENTS: &str = "/api/management/v1/deployments/deployments";
pub const DEPLOYMENTS_V2: &str = "/api/management/v2/deployments/deployments";
pub const DEPLOYMENT_GROUP: &str = "/api/management/v1/deployments/deployments/group/{name}";
pub const DEPLOYMENTS_STATISTICS_LIST: &str =
    "/api/management/v1/deployments/deployments/statistics/list";
pub const DEPLOYMENTS_FOR_DEVICE: &str = "/api/management/v1/deployments/deployments/devices/{id}";
pub const DEPLOYMENT: &str = "/api/management/v1/deployments/deployments/{id}";
pub const DEPLOYMENT_STATUS: &str = "/api/management/v1/deployments/deployments/{id}/status";
pub const DEPLOYMENT_STATISTICS: &str =
    "/api/management/v1/deployments/deployments/{id}/statistics";
pub const DEPLOYMENT_DEVICES: &str = "/api/management/v1/deployments/deployments/{id}/devices";
pub const DEPLOYMENT_DEVICES_LIST: &str =
    "/api/management/v1/deployments/deployments/{id}/devices/list";
pub const DEPLOYMENT_DEVICE_LIST: &str =
    "/api/management/v1/deployments/deployments/{id}/device_list";
pub const DEPLOYMENT_DEVICE_LOG: &str =
    "/api/management/v1/deployments/deployments/{id}/devices/{device_id}/log";

// inventory
pub const INVENTORY_DEVICES: &str = "/api/management/v1/inventory/devices";
pub const INVENTORY_DEVICE: &str = "/api/management/v1/inventory/devices/{id}";
pub const INVENTORY_DEVICE_GROUP: &str = "/api/management/v1/inventory/devices/{id}/group";
pub const INVENTORY_DEVICE_GROUP_NAMED: &str =
    "/api/management/v1/inventory/devices/{id}/group/{name}";
pub const INVENTORY_GROUPS: &str = "/api/management/v1/inventory/groups";
pub const INVENTORY_GROUP_DEVICES: &str = "/api/management/v1/inventory/groups/{name}/devices";
pub const INVENTORY_SEARCH_V2: &str = "/api/management/v2/inventory/filters/search";

// test endpoints (configured management token only)
pub const ADMIN_PREFIX: &str = "/admin/";
pub const ADMIN_FAULTS: &str = "/admin/faults";
pub const ADMIN_DOWN: &str = "/admin/down";
pub const ADMIN_REQUESTS: &str = "/admin/requests";
pub const ADMIN_SETTINGS: &str = "/admin/settings";
pub const ADMIN_EXPIRE_TOKENS: &str = "/admin/expire-tokens";

/// Whether `path` matches a glob `pattern`: `*` is one path segment, a final `**` any rest
/// (also nothing), anything else must be equal. Used by path-based fault rules.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let mut pat = pattern.trim_end_matches('/').split('/');
    let mut segs = path.trim_end_matches('/').split('/');
    loop {
        match (pat.next(), segs.next()) {
            (Some("**"), _) => return true,
            (Some(p), Some(s)) => {
                if p != "*" && p != s {
                    return false;
                }
                if p == "*" && s.is_empty() {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::path_matches;

    #[test]
    fn globs() {
        let p = "/api/management/v2/devauth/devices/*/auth/*/status";
        assert!(path_matches(
            p,
            "/api/management/v2/devauth/devices/a/auth/b/status"
        ));
        assert!(!path_matches(p, "/api/management/v2/devauth/devices/a"));
        assert!(path_matches(
            "/api/management/**",
            "/api/management/v2/devauth/devices"
        ));
        assert!(path_matches("/api/management/**", "/api/management"));
        assert!(!path_matches("/api/management/**", "/api/devices/v1/x"));
        assert!(path_matches("/admin/faults", "/admin/faults"));
        assert!(!path_matches("/a/*", "/a/"));
    }
}
