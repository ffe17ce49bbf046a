//! Server URLs normalised the way the client uses them, with the proxy's no-path-prefix rule.

use crate::ConfigError;
use std::fmt;

/// A server base URL: `scheme://host[:port]`, no trailing slash.
///
/// The 3.4 client prepends `https://` to a URL without scheme and trims a trailing `/`; its local
/// proxy keeps only scheme and host, so a path prefix would silently be dropped: refused here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerUrl(String);

impl ServerUrl {
    pub fn parse(input: &str) -> Result<Self, ConfigError> {
        let bad = |reason: &str| ConfigError::BadServerUrl {
            origin: String::new(),
            url: input.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(bad("is empty"));
        }
        if trimmed != input {
            return Err(bad("has leading or trailing whitespace"));
        }
        let (scheme, rest) = match trimmed.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None => ("https".to_string(), trimmed),
        };
        if scheme != "http" && scheme != "https" {
            return Err(bad("scheme must be http or https"));
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains(['?', '#']) {
            return Err(bad("must not have a query or fragment"));
        }
        if rest.contains('/') {
            return Err(bad(
                "has a path prefix; the client's proxy keeps only scheme and host, use scheme://host[:port]",
            ));
        }
        if rest.contains('@') {
            return Err(bad("must not carry user credentials"));
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| bad("has no valid host"))?;
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("has no valid host"));
        }
        if let Some(port) = port {
            match port.parse::<u16>() {
                Ok(p) if p > 0 => {}
                _ => return Err(bad("has an invalid port")),
            }
        }
        Ok(ServerUrl(format!(
            "{scheme}://{}",
            rest.to_ascii_lowercase()
        )))
    }

    /// Like [`parse`](Self::parse), with the file the URL comes from in the error.
    pub fn parse_in(input: &str, origin: &str) -> Result<Self, ConfigError> {
        Self::parse(input).map_err(|e| match e {
            ConfigError::BadServerUrl { url, reason, .. } => ConfigError::BadServerUrl {
                origin: origin.to_string(),
                url,
                reason,
            },
            other => other,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &str {
        self.0.split_once("://").map(|(s, _)| s).unwrap_or("https")
    }
}

fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?))),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port))),
        None => Some((authority, None)),
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for ServerUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ServerUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ServerUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_the_client() {
        assert_eq!(
            ServerUrl::parse("https://a.example.com/").unwrap().as_str(),
            "https://a.example.com"
        );
        assert_eq!(
            ServerUrl::parse("a.example.com").unwrap().as_str(),
            "https://a.example.com"
        );
        assert_eq!(
            ServerUrl::parse("HTTP://A.example.com:8080")
                .unwrap()
                .as_str(),
            "http://a.example.com:8080"
        );
        assert_eq!(
            ServerUrl::parse("http://[::1]:80").unwrap().as_str(),
            "http://[::1]:80"
        );
    }

    #[test]
    fn refuses_path_prefix_and_junk() {
        for bad in [
            "https://a.example.com/mender",
            "https://a.example.com/api/devices",
            "ftp://a.example.com",
            "",
            " https://a",
            "https://",
            "https://a:99999",
            "https://a:0",
            "https://a?x=1",
            "https://u:p@a",
        ] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
        let msg = ServerUrl::parse("https://a/x").unwrap_err().to_string();
        assert!(msg.contains("path prefix"), "{msg}");
    }
}
