//! Errors (the client would stop or misbehave) and warnings (it would run, maybe not as meant).

use std::fmt;

/// Why a config, a plan or a stage is refused. Messages name the file and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The reason is in the message and deliberately not a `#[source]`: printers that walk the
    // source chain would show it twice ("Permission denied ... Permission denied").
    #[error("{origin}: cannot read: {error}")]
    Io {
        origin: String,
        error: std::io::Error,
    },
    #[error("{origin}: invalid JSON at line {line}, column {column}: {message} (the 3.4 client exits 1 on this; 4.x/5.x ignore the whole file)")]
    Json {
        origin: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{origin}: starts with a UTF-8 byte order mark (bytes EF BB BF): the 3.x client cannot parse such a file and exits 1 (4.x/5.x read it); remove those 3 bytes, or migrate with the 4.x/5.x rules if the devices run that client")]
    Bom { origin: String },
    #[error("{origin}: the top level must be a JSON object, found {found}")]
    NotObject { origin: String, found: &'static str },
    #[error("{origin}: `{key}` must be {expected}, found {found} (the 3.x client exits 1 on a wrong type; 4.x/5.x ignore the setting)")]
    WrongType {
        origin: String,
        key: String,
        expected: &'static str,
        found: String,
    },
    #[error("`Servers` (in {servers_in}) together with `ServerURL` {server_url:?} (in {server_url_in}): the 3.4 client exits 1 and 4.x/5.x silently drop the file; remove the `ServerURL` key (do not blank it)")]
    ServersAndServerUrl {
        servers_in: String,
        server_url_in: String,
        server_url: String,
    },
    #[error("{origin}: `\"Servers\": []` makes the 3.4 client panic at its first request; list at least one server")]
    EmptyServers { origin: String },
    #[error("{}server URL {url:?}: {reason}", in_file(origin))]
    BadServerUrl {
        origin: String,
        url: String,
        reason: String,
    },
    #[error("old and new server are the same ({url}); give the new server with --new-server")]
    SameServer { url: String },
    #[error("no server configured in {origin} and none given; pass --old-server")]
    NoServer { origin: String },
    #[error("{0}")]
    Precondition(String),
    #[error("the servers are [{servers}] and {extra} would be dropped by stage 1 (a DR/HA server, or an earlier migration?); keep them with --keep-server URL (each is kept after the new server), or name the server being left with --old-server to drop the others")]
    ExtraServers { servers: String, extra: String },
    #[error("tenant token {0}")]
    BadTenantToken(String),
    #[error("invalid plan: {0}")]
    Plan(String),
}

fn in_file(origin: &str) -> String {
    if origin.is_empty() {
        String::new()
    } else {
        format!("{origin}: ")
    }
}

/// Something the client accepts but that is probably not what was meant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Warning(pub String);

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_reason_is_said_once_even_by_chain_printers() {
        let e = ConfigError::Io {
            origin: "/etc/mender/mender.conf".into(),
            error: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        // Printers like anyhow's `{:#}` append every source: there must be none to repeat.
        assert!(std::error::Error::source(&e).is_none());
        let text = e.to_string();
        assert_eq!(text.matches("permission denied").count(), 1, "{text}");
    }
}
