//! Which Mender client generation the rules are for: the Go client 3.x, the C++ client 4.x/5.x,
//! or any of them (the strictest common rules).
//!
//! Where the generations differ (measured on 3.4.0 and 5.1.0, reference client doc §3, §17, §18):
//! - a UTF-8 byte order mark: 4.x/5.x read the file; 3.x (Go's `encoding/json`) cannot parse it
//!   and exits 1;
//! - a wrong value type (`"UpdatePollIntervalSeconds": "5"`): 3.x exits 1; 4.x/5.x ignore that
//!   setting.
//!
//! Everything else is refused for every generation, because one of them dies on it or silently
//! loses its server: invalid JSON, `Servers` next to any string `ServerURL` (3.x exits 1 on a
//! non-empty one, 4.x/5.x drop the file even for `""`), `"Servers": []`, a wrongly typed server
//! key. No generation ever gets a blank `ServerURL` or a byte order mark written.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The client generation whose rules apply. `Any` is the strictest common set, except that a
/// byte order mark on input is accepted (4.x/5.x read it; the rewritten files never have one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ClientGeneration {
    /// The Go client 3.x (`mender`, unit `mender-client`).
    #[serde(rename = "3")]
    V3,
    /// The C++ client 4.x (`mender-update` + `mender-auth`).
    #[serde(rename = "4")]
    V4,
    /// The C++ client 5.x (`mender-update` + `mender-auth`); the same rules as 4.x.
    #[serde(rename = "5")]
    V5,
    /// A fleet with any of them, or not known.
    #[default]
    #[serde(rename = "any")]
    Any,
}

impl ClientGeneration {
    /// Every value, in the order `--client` lists them.
    pub const ALL: [ClientGeneration; 4] = [Self::V3, Self::V4, Self::V5, Self::Any];

    /// `3`, `4`, `5` or `any` (case-insensitive); `None` for anything else.
    pub fn parse(text: &str) -> Option<ClientGeneration> {
        Self::ALL
            .into_iter()
            .find(|g| g.as_str().eq_ignore_ascii_case(text.trim()))
    }

    /// The `--client` value and the `client` field of `plan.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V3 => "3",
            Self::V4 => "4",
            Self::V5 => "5",
            Self::Any => "any",
        }
    }

    pub fn is_any(&self) -> bool {
        *self == Self::Any
    }

    /// The C++ client (4.x or 5.x).
    pub fn is_cpp(self) -> bool {
        matches!(self, Self::V4 | Self::V5)
    }

    /// Whether this client reads a config that starts with a UTF-8 byte order mark.
    pub fn reads_bom(self) -> bool {
        self != Self::V3
    }

    /// Whether a wrongly typed setting is only ignored (4.x/5.x) rather than fatal.
    pub fn ignores_wrong_types(self) -> bool {
        self.is_cpp()
    }

    /// Whether a device running `device` contradicts these rules (3.x rules on a 4.x/5.x
    /// device or the other way round). `Any` contradicts nothing.
    pub fn contradicts(self, device: ClientGeneration) -> bool {
        match (self, device) {
            (Self::Any, _) | (_, Self::Any) => false,
            (a, b) => a.is_cpp() != b.is_cpp(),
        }
    }

    /// Which rules these are, for reports.
    pub fn rules(self) -> &'static str {
        match self {
            Self::V3 => "client 3.x (Go): a byte order mark or a wrong value type is fatal",
            Self::V4 | Self::V5 => "client 4.x/5.x (C++): a byte order mark is read, a wrongly typed setting is ignored (warning)",
            Self::Any => "any client (3.x, 4.x, 5.x): the strictest common rules; a byte order mark is read (files are written without one), a wrong value type is fatal",
        }
    }
}

impl fmt::Display for ClientGeneration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V3 => "3.x",
            Self::V4 => "4.x",
            Self::V5 => "5.x",
            Self::Any => "any",
        })
    }
}

/// The UTF-8 byte order mark.
pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_compares() {
        for g in ClientGeneration::ALL {
            assert_eq!(ClientGeneration::parse(g.as_str()), Some(g));
            let json = serde_json::to_string(&g).unwrap();
            assert_eq!(json, format!("\"{}\"", g.as_str()));
            assert_eq!(serde_json::from_str::<ClientGeneration>(&json).unwrap(), g);
        }
        assert_eq!(ClientGeneration::parse("ANY"), Some(ClientGeneration::Any));
        assert_eq!(ClientGeneration::parse("6"), None);
        use ClientGeneration::*;
        assert!(V3.contradicts(V5) && V5.contradicts(V3) && V4.contradicts(V3));
        assert!(!V4.contradicts(V5) && !Any.contradicts(V3) && !V3.contradicts(Any));
        assert!(!V3.reads_bom() && V4.reads_bom() && V5.reads_bom() && Any.reads_bom());
        assert!(
            !V3.ignores_wrong_types() && !Any.ignores_wrong_types() && V5.ignores_wrong_types()
        );
    }
}
