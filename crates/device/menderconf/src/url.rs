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
    /// `servers` as one comma-separated line (`a, b`), for messages.
    pub fn comma_list<'a>(servers: impl IntoIterator<Item = &'a ServerUrl>) -> String {
        servers
            .into_iter()
            .map(ServerUrl::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }

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
        check_host(host, rest.starts_with('[')).map_err(|why| bad(&why))?;
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

/// The one host rule (host tool and device module alike): a DNS name (labels of letters, digits
/// and hyphens, 1-63 characters, no hyphen at either end, 253 characters in all), an IPv4
/// literal, or a bracketed IPv6 literal. An internationalised name is refused with its ASCII
/// (punycode) form to use instead: the clients resolve the name as written, so the configs
/// must carry the ASCII form.
fn check_host(host: &str, bracketed: bool) -> Result<(), String> {
    if bracketed {
        return host
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("[{host}] is not a valid IPv6 address"));
    }
    if !host.is_ascii() {
        return Err(match to_ascii_name(host) {
            Some(ascii) => format!(
                "host {host:?} is an internationalised name; write its ASCII (punycode) form instead: {ascii}"
            ),
            None => format!("host {host:?} is not a valid host name"),
        });
    }
    if host
        .split('.')
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
    {
        return host
            .parse::<std::net::Ipv4Addr>()
            .map(|_| ())
            .map_err(|_| format!("host {host:?} is not a valid IPv4 address"));
    }
    if host.len() > 253 {
        return Err(format!(
            "host name is {} characters long; DNS allows 253",
            host.len()
        ));
    }
    for label in host.split('.') {
        let why = if label.is_empty() {
            "has an empty label (two dots in a row, or a dot at an end)"
        } else if label.len() > 63 {
            "has a label longer than 63 characters"
        } else if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            "may hold only letters, digits, hyphens and dots"
        } else if label.starts_with('-') || label.ends_with('-') {
            "has a label starting or ending with a hyphen"
        } else {
            continue;
        };
        return Err(format!("host {host:?} {why}"));
    }
    Ok(())
}

/// The ASCII form of an internationalised host name: each non-ASCII label (lower-cased) as
/// `xn--` + its punycode (RFC 3492). `None` if a label cannot be encoded.
pub(crate) fn to_ascii_name(host: &str) -> Option<String> {
    let labels: Option<Vec<String>> = host
        .split('.')
        .map(|label| {
            let label = label.to_lowercase();
            if label.is_ascii() {
                Some(label)
            } else {
                punycode(&label).map(|p| format!("xn--{p}"))
            }
        })
        .collect();
    labels.map(|l| l.join("."))
}

/// RFC 3492 punycode encoding of one label.
fn punycode(input: &str) -> Option<String> {
    const BASE: u64 = 36;
    const TMIN: u64 = 1;
    const TMAX: u64 = 26;
    const SKEW: u64 = 38;
    const DAMP: u64 = 700;
    fn adapt(delta: u64, points: u64, first: bool) -> u64 {
        let mut delta = if first { delta / DAMP } else { delta / 2 };
        delta += delta / points;
        let mut k = 0;
        while delta > ((BASE - TMIN) * TMAX) / 2 {
            delta /= BASE - TMIN;
            k += BASE;
        }
        k + ((BASE - TMIN + 1) * delta) / (delta + SKEW)
    }
    fn digit(d: u64) -> char {
        let d = d as u8;
        (if d < 26 { b'a' + d } else { b'0' + d - 26 }) as char
    }
    let chars: Vec<u64> = input.chars().map(|c| u64::from(u32::from(c))).collect();
    let mut out: String = input.chars().filter(char::is_ascii).collect();
    let basic = out.len() as u64;
    let mut handled = basic;
    if basic > 0 {
        out.push('-');
    }
    let (mut n, mut delta, mut bias) = (128u64, 0u64, 72u64);
    while handled < chars.len() as u64 {
        let m = chars.iter().copied().filter(|&c| c >= n).min()?;
        delta = delta.checked_add((m - n).checked_mul(handled + 1)?)?;
        n = m;
        for &c in &chars {
            if c < n {
                delta = delta.checked_add(1)?;
            }
            if c == n {
                let mut q = delta;
                let mut k = BASE;
                loop {
                    let t = if k <= bias {
                        TMIN
                    } else if k >= bias + TMAX {
                        TMAX
                    } else {
                        k - bias
                    };
                    if q < t {
                        break;
                    }
                    out.push(digit(t + (q - t) % (BASE - t)));
                    q = (q - t) / (BASE - t);
                    k += BASE;
                }
                out.push(digit(q));
                bias = adapt(delta, handled + 1, handled == basic);
                delta = 0;
                handled += 1;
            }
        }
        delta += 1;
        n += 1;
    }
    Some(out)
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

    #[test]
    fn hosts_must_be_dns_names_or_ip_literals() {
        for bad in [
            "https://n]{b[ew.example.com",
            "https://new..example.com",
            "https://-bad-.example.com",
            "https://new_host.example.com",
            "https://new.example.com.",
            "https://999.1.1.1",
            "https://[::g]",
            "https://[1.2.3.4]",
        ] {
            assert!(ServerUrl::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long_label = format!("https://{}.example.com", "a".repeat(64));
        assert!(ServerUrl::parse(&long_label).is_err());
        for good in [
            "https://new.example.com",
            "https://10.0.2.2:8443",
            "https://[fe80::1]:443",
            "http://localhost",
            "https://a-b.c9.example.com",
        ] {
            ServerUrl::parse(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        let msg = ServerUrl::parse("https://ñew.example.com")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("xn--ew-yja.example.com"), "{msg}");
    }

    #[test]
    fn punycode_matches_rfc_3492_examples() {
        assert_eq!(to_ascii_name("münchen.de").unwrap(), "xn--mnchen-3ya.de");
        assert_eq!(
            to_ascii_name("BÜCHER.example").unwrap(),
            "xn--bcher-kva.example"
        );
    }
}
