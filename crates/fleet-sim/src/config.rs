//! How each client generation turns the two `mender.conf` files into the server list it uses.
//!
//! Written from the measured client behaviour (client reference §3, §17, §18), independently of
//! `menderconf`'s validator: the simulator is the check on that validator, so it must not share
//! its rules. 3.4 dies on what it cannot parse; 4.x/5.x skip or partly drop what they cannot use.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Which client the simulated device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ClientGeneration {
    /// The Go client 3.4 (Debian bookworm): one daemon, the local proxy, fatal config errors.
    #[default]
    #[serde(rename = "3.4")]
    V3,
    /// The C++ client 4.x/5.x: mender-auth + mender-update, lenient config loading.
    #[serde(rename = "5.x")]
    V5,
}

/// What the daemon took from the config files at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoadedConfig {
    /// Server URLs in walk order (normalised: scheme added, trailing `/` removed). May be
    /// empty (4.x/5.x run without a server) or hold `""` (3.4 warns and fails each request).
    pub(crate) servers: Vec<String>,
    pub(crate) tenant_token: String,
}

/// Loads the config as the daemon does at start. `Err` = the daemon does not run (3.4 exits 1 or
/// panics, and its unit does not restart it), with the reason.
pub(crate) fn load(
    generation: ClientGeneration,
    main: Option<&[u8]>,
    fallback: Option<&[u8]>,
) -> Result<LoadedConfig, String> {
    match generation {
        ClientGeneration::V3 => load_v3(main, fallback),
        ClientGeneration::V5 => Ok(load_v5(main, fallback)),
    }
}

fn fold(key: &str) -> String {
    key.to_ascii_lowercase()
}

fn normalise(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.is_empty() || url.contains("://") {
        url.to_string()
    } else {
        format!("https://{url}")
    }
}

fn load_v3(main: Option<&[u8]>, fallback: Option<&[u8]>) -> Result<LoadedConfig, String> {
    let mut server_url = String::new();
    let mut servers: Option<Vec<String>> = None;
    let mut tenant_token = String::new();
    for (origin, bytes) in [
        (menderconf::FALLBACK_CONFIG_PATH, fallback),
        (menderconf::MAIN_CONFIG_PATH, main),
    ] {
        let Some(bytes) = bytes else { continue };
        let object: Map<String, Value> = serde_json::from_slice(bytes)
            .map_err(|e| format!("{origin}: error parsing mender configuration file: {e}"))?;
        for (key, value) in &object {
            let type_error = || format!("{origin}: cannot decode `{key}`: wrong type {value}");
            match fold(key).as_str() {
                "serverurl" => match value {
                    Value::String(s) => server_url = s.clone(),
                    Value::Null => {}
                    _ => return Err(type_error()),
                },
                "tenanttoken" => match value {
                    Value::String(s) => tenant_token = s.trim().to_string(),
                    Value::Null => {}
                    _ => return Err(type_error()),
                },
                "servers" => match value {
                    Value::Null => servers = None,
                    Value::Array(items) => {
                        let previous = servers.take().unwrap_or_default();
                        let mut merged = Vec::with_capacity(items.len());
                        for (i, item) in items.iter().enumerate() {
                            let object = item.as_object().ok_or_else(type_error)?;
                            let mut url = previous.get(i).cloned().unwrap_or_default();
                            for (k, v) in object {
                                if fold(k) == "serverurl" {
                                    match v {
                                        Value::String(s) => url = s.clone(),
                                        Value::Null => {}
                                        _ => return Err(type_error()),
                                    }
                                }
                            }
                            merged.push(url);
                        }
                        servers = Some(merged);
                    }
                    _ => return Err(type_error()),
                },
                "updatepollintervalseconds"
                | "inventorypollintervalseconds"
                | "retrypollintervalseconds"
                    if !(value.is_i64() || value.is_null()) =>
                {
                    return Err(type_error());
                }
                _ => {}
            }
        }
    }
    let servers = match servers {
        Some(list) if !server_url.is_empty() => {
            let _ = list;
            return Err("Both Servers AND ServerURL given in mender.conf".into());
        }
        Some(list) if list.is_empty() => {
            return Err(
                "panic: runtime error: index out of range [0] with length 0 (\"Servers\": [])"
                    .into(),
            )
        }
        Some(list) => list.iter().map(|u| normalise(u)).collect(),
        None => vec![normalise(&server_url)],
    };
    Ok(LoadedConfig {
        servers,
        tenant_token,
    })
}

fn load_v5(main: Option<&[u8]>, fallback: Option<&[u8]>) -> LoadedConfig {
    let mut server_url: Option<String> = None;
    let mut servers: Option<Vec<String>> = None;
    let mut tenant_token = String::new();
    let mut servers_used = false;
    for bytes in [fallback, main].into_iter().flatten() {
        // Invalid JSON: the whole file is skipped with a warning.
        let Ok(object) = serde_json::from_slice::<Map<String, Value>>(bytes) else {
            continue;
        };
        let lookup = |name: &str| {
            object
                .iter()
                .rev()
                .find(|(k, _)| fold(k) == name)
                .map(|(_, v)| v)
        };
        // Wrong types are ignored silently; the last duplicate (any case) wins.
        if let Some(Value::String(t)) = lookup("tenanttoken") {
            tenant_token = t.trim().to_string();
        }
        let file_servers = match lookup("servers") {
            Some(Value::Array(items)) => Some(
                items
                    .iter()
                    .filter_map(|i| i.as_object())
                    .map(|o| {
                        o.iter()
                            .rev()
                            .find(|(k, _)| fold(k) == "serverurl")
                            .and_then(|(_, v)| v.as_str())
                            .unwrap_or_default()
                            .to_string()
                    })
                    .collect::<Vec<_>>(),
            ),
            _ => None,
        };
        let file_url = match lookup("serverurl") {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        // `Servers` next to any string `ServerURL` (this file or a `Servers` seen earlier):
        // validation fails and the file's server settings are dropped.
        if file_url.is_some() && (servers_used || file_servers.is_some()) {
            servers_used |= file_servers.is_some();
            continue;
        }
        if let Some(list) = file_servers {
            servers = Some(list);
            servers_used = true;
        }
        if let Some(url) = file_url {
            server_url = Some(url);
        }
    }
    let servers = match servers {
        Some(list) => list
            .iter()
            .filter(|u| !u.is_empty())
            .map(|u| normalise(u))
            .collect(),
        None => server_url
            .filter(|u| !u.is_empty())
            .map(|u| vec![normalise(&u)])
            .unwrap_or_default(),
    };
    LoadedConfig {
        servers,
        tenant_token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3(main: &str, fallback: Option<&str>) -> Result<Vec<String>, String> {
        load(
            ClientGeneration::V3,
            Some(main.as_bytes()),
            fallback.map(str::as_bytes),
        )
        .map(|c| c.servers)
    }

    fn v5(main: &str, fallback: Option<&str>) -> Vec<String> {
        load(
            ClientGeneration::V5,
            Some(main.as_bytes()),
            fallback.map(str::as_bytes),
        )
        .unwrap()
        .servers
    }

    #[test]
    fn v3_merge_and_fatal_cases() {
        assert_eq!(
            v3(
                r#"{"Servers":[{"ServerURL":"http://a/"},{"serverurl":"b"}]}"#,
                None
            )
            .unwrap(),
            ["http://a", "https://b"]
        );
        assert_eq!(
            v3(
                r#"{"TenantToken":"t"}"#,
                Some(r#"{"ServerURL":"http://a"}"#)
            )
            .unwrap(),
            ["http://a"]
        );
        // Servers in main + ServerURL in the fallback: fatal across files.
        assert!(v3(
            r#"{"Servers":[{"ServerURL":"http://a"}]}"#,
            Some(r#"{"ServerURL":"http://b"}"#)
        )
        .is_err());
        // A blank ServerURL is fine for 3.4.
        assert_eq!(
            v3(
                r#"{"Servers":[{"ServerURL":"http://a"}],"ServerURL":""}"#,
                None
            )
            .unwrap(),
            ["http://a"]
        );
        assert!(v3(r#"{"Servers":[]}"#, None).is_err());
        assert!(v3(r#"{"ServerURL":5}"#, None).is_err());
        assert!(v3("{", None).is_err());
    }

    #[test]
    fn v5_skips_and_drops() {
        // Servers + any string ServerURL: the file's server settings are lost.
        assert!(v5(
            r#"{"Servers":[{"ServerURL":"http://a"}],"ServerURL":""}"#,
            None
        )
        .is_empty());
        assert_eq!(
            v5(
                r#"{"Servers":[{"ServerURL":"http://a"}],"ServerURL":null}"#,
                None
            ),
            ["http://a"]
        );
        // Invalid main: the fallback alone counts.
        assert_eq!(v5("{", Some(r#"{"ServerURL":"http://b"}"#)), ["http://b"]);
        // Wrong types are ignored.
        assert_eq!(
            v5(
                r#"{"ServerURL":"http://a","UpdatePollIntervalSeconds":"x"}"#,
                None
            ),
            ["http://a"]
        );
        // Main's ServerURL overrides the fallback's.
        assert_eq!(
            v5(
                r#"{"ServerURL":"http://n"}"#,
                Some(r#"{"ServerURL":"http://o"}"#)
            ),
            ["http://n"]
        );
    }
}
