//! One `mender.conf` file: parsed with key order and unknown keys kept, type-checked like the
//! client generation reads it.

use crate::client::BOM;
use crate::keys;
use crate::{ClientGeneration, ConfigError, Warning};
use serde_json::{Map, Value};

/// A parsed `mender.conf`. `object` keeps key order and unknown keys; `origin` names the file in
/// every message.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigFile {
    pub origin: String,
    pub object: Map<String, Value>,
}

impl ConfigFile {
    /// Parses and type-checks one file with the rules every client generation shares
    /// ([`ClientGeneration::Any`]): a byte order mark is skipped, a wrong value type is fatal.
    pub fn parse(origin: impl Into<String>, bytes: &[u8]) -> Result<ConfigFile, ConfigError> {
        Self::parse_for(origin, bytes, ClientGeneration::Any)
    }

    /// Parses and type-checks one file as `client` reads it: a byte order mark is refused for
    /// 3.x (it exits 1) and skipped otherwise; a wrongly typed setting is fatal for 3.x and
    /// `Any`, left in place for 4.x/5.x (they ignore it; [`ConfigSet::validate_for`] warns).
    /// A wrongly typed server key is fatal for every generation.
    ///
    /// [`ConfigSet::validate_for`]: crate::ConfigSet::validate_for
    pub fn parse_for(
        origin: impl Into<String>,
        bytes: &[u8],
        client: ClientGeneration,
    ) -> Result<ConfigFile, ConfigError> {
        let origin = origin.into();
        let bytes = match bytes.strip_prefix(BOM) {
            Some(_) if !client.reads_bom() => return Err(ConfigError::Bom { origin }),
            Some(rest) => rest,
            None => bytes,
        };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| ConfigError::Json {
            origin: origin.clone(),
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })?;
        let object = match value {
            Value::Object(object) => object,
            other => {
                return Err(ConfigError::NotObject {
                    origin,
                    found: match other {
                        Value::Array(_) => "an array",
                        Value::String(_) => "a string",
                        Value::Number(_) => "a number",
                        Value::Bool(_) => "a boolean",
                        _ => "null",
                    },
                })
            }
        };
        let file = ConfigFile { origin, object };
        file.type_warnings(client)?;
        Ok(file)
    }

    /// A file built in memory (rendered stages); `origin` is its device path.
    pub fn new(origin: impl Into<String>, object: Map<String, Value>) -> ConfigFile {
        ConfigFile {
            origin: origin.into(),
            object,
        }
    }

    /// Wrongly typed settings: an error for 3.x and `Any` (and for a server key always), a
    /// warning each for 4.x/5.x, which ignore them.
    pub(crate) fn type_warnings(
        &self,
        client: ClientGeneration,
    ) -> Result<Vec<Warning>, ConfigError> {
        let mut warnings = Vec::new();
        for (key, value) in &self.object {
            let Some((name, kind)) = keys::known_kind(keys::TOP_LEVEL, key) else {
                continue;
            };
            if let Err((key, expected, found)) = keys::check(name, value, kind) {
                let error = ConfigError::WrongType {
                    origin: self.origin.clone(),
                    key,
                    expected,
                    found,
                };
                let server_key = name == "ServerURL" || name == "Servers";
                if server_key || !client.ignores_wrong_types() {
                    return Err(error);
                }
                warnings.push(Warning(format!(
                    "{error}: the {client} client ignores `{name}` here; it is kept as it is"
                )));
            }
        }
        Ok(warnings)
    }

    /// Keys the client ignores: usually typos, worth a warning.
    pub(crate) fn unknown_key_warnings(&self) -> Vec<Warning> {
        self.object
            .keys()
            .filter(|k| keys::known_kind(keys::TOP_LEVEL, k).is_none())
            .map(|k| {
                Warning(format!(
                    "{}: unknown key `{k}` is ignored by the client (typo?)",
                    self.origin
                ))
            })
            .collect()
    }

    /// The value the client decodes for `field` (case-insensitive, last one wins).
    pub fn get(&self, field: &str) -> Option<&Value> {
        keys::lookup(&self.object, field)
    }

    /// Replaces every key matching `field` (any case) by `field: value` at the position of the
    /// first one; returns whether there was one.
    pub(crate) fn replace_field(&mut self, field: &str, value: Value) -> bool {
        let mut out = Map::with_capacity(self.object.len());
        let mut value = Some(value);
        let mut found = false;
        for (key, old) in std::mem::take(&mut self.object) {
            if keys::matches(&key, field) {
                found = true;
                if let Some(v) = value.take() {
                    out.insert(field.to_string(), v);
                }
            } else {
                out.insert(key, old);
            }
        }
        self.object = out;
        found
    }

    /// Whether any key of this file is (case-insensitively) `ServerURL` or `Servers`.
    pub(crate) fn has_server_key(&self) -> bool {
        self.object
            .keys()
            .any(|k| keys::matches(k, "ServerURL") || keys::matches(k, "Servers"))
    }

    /// Replaces every `ServerURL`/`Servers` key (any case) by `replacement`, at the position of
    /// the first one (or at the end if there was none); every other key stays in place.
    pub(crate) fn replace_server_keys(&mut self, replacement: Option<(&str, Value)>) {
        let mut out = Map::with_capacity(self.object.len() + 1);
        let mut replacement = replacement;
        for (key, value) in std::mem::take(&mut self.object) {
            if keys::matches(&key, "ServerURL") || keys::matches(&key, "Servers") {
                if let Some((k, v)) = replacement.take() {
                    out.insert(k.to_string(), v);
                }
            } else {
                out.insert(key, value);
            }
        }
        if let Some((k, v)) = replacement {
            out.insert(k.to_string(), v);
        }
        self.object = out;
    }

    /// Pretty JSON (2-space indent) with a trailing newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes =
            serde_json::to_vec_pretty(&self.object).expect("a JSON map always serialises");
        bytes.push(b'\n');
        bytes
    }
}

/// A copy of a config object safe to print: `TenantToken` shows only its last 4 characters.
pub fn masked(object: &Map<String, Value>) -> Map<String, Value> {
    object
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(token) if keys::matches(k, "TenantToken") => {
                    Value::String(mask(token))
                }
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

/// `********` plus the last 4 characters (all stars for a short secret).
pub(crate) fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= 4 {
        return "*".repeat(chars.len());
    }
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{}{tail}", "*".repeat(8))
}

/// serde_json appends " at line L column C"; we report those as fields.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_unknown_keys() {
        let src =
            br#"{"Zeta": 1, "ServerURL": "https://a", "alpha": {"x": [1,2]}, "TenantToken": "t"}"#;
        let f = ConfigFile::parse("m.conf", src).unwrap();
        let keys: Vec<_> = f.object.keys().cloned().collect();
        assert_eq!(keys, ["Zeta", "ServerURL", "alpha", "TenantToken"]);
        let back = ConfigFile::parse("again", &f.to_bytes()).unwrap();
        assert_eq!(back.object, f.object);
    }

    #[test]
    fn json_errors_have_line_and_column() {
        let err = ConfigFile::parse("/etc/mender/mender.conf", b"{\n  \"ServerURL\": \"x\",\n}")
            .unwrap_err();
        match &err {
            ConfigError::Json {
                line,
                column,
                origin,
                ..
            } => {
                assert_eq!(*line, 3);
                assert_eq!(*column, 1);
                assert_eq!(origin, "/etc/mender/mender.conf");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("line 3, column 1"), "{err}");
    }

    #[test]
    fn wrong_types_are_refused_like_go() {
        for (src, key) in [
            (
                r#"{"UpdatePollIntervalSeconds": "5"}"#,
                "UpdatePollIntervalSeconds",
            ),
            (
                r#"{"updatepollintervalseconds": 5.5}"#,
                "UpdatePollIntervalSeconds",
            ),
            (
                r#"{"InventoryPollIntervalSeconds": 5.0}"#,
                "InventoryPollIntervalSeconds",
            ),
            (r#"{"RetryPollCount": 1e3}"#, "RetryPollCount"),
            (
                r#"{"ModuleTimeoutSeconds": 9223372036854775808}"#,
                "ModuleTimeoutSeconds",
            ),
            (r#"{"SkipVerify": "true"}"#, "SkipVerify"),
            (r#"{"ServerURL": 5}"#, "ServerURL"),
            (r#"{"Servers": {"ServerURL": "https://a"}}"#, "Servers"),
            (r#"{"Servers": ["https://a"]}"#, "Servers[0]"),
            (r#"{"Servers": [{"ServerURL": 1}]}"#, "Servers[0].ServerURL"),
            (r#"{"HttpsClient": "x"}"#, "HttpsClient"),
            (
                r#"{"Connectivity": {"DisableKeepAlive": 1}}"#,
                "Connectivity.DisableKeepAlive",
            ),
            (r#"{"DBus": {"enabled": "yes"}}"#, "DBus.Enabled"),
            (
                r#"{"Security": {"AuthPrivateKey": []}}"#,
                "Security.AuthPrivateKey",
            ),
            (r#"{"TenantToken": true}"#, "TenantToken"),
        ] {
            match ConfigFile::parse("f", src.as_bytes()) {
                Err(ConfigError::WrongType { key: k, .. }) => assert_eq!(k, key, "{src}"),
                other => panic!("{src}: {other:?}"),
            }
        }
    }

    #[test]
    fn accepted_types() {
        for src in [
            r#"{"UpdatePollIntervalSeconds": -5, "SkipVerify": null, "Servers": null}"#,
            r#"{"Servers": [null, {"ServerURL": "https://a", "Extra": 1}]}"#,
            r#"{"Connectivity": {"IdleConnTimeoutSeconds": 30, "Unknown": "x"}, "Whatever": [1]}"#,
        ] {
            ConfigFile::parse("f", src.as_bytes()).unwrap_or_else(|e| panic!("{src}: {e}"));
        }
    }

    #[test]
    fn not_an_object() {
        assert!(matches!(
            ConfigFile::parse("f", b"[]"),
            Err(ConfigError::NotObject { .. })
        ));
    }

    #[test]
    fn masks_tenant_token_any_case() {
        let f = ConfigFile::parse(
            "f",
            br#"{"tenanttoken": "abcdefghijklm1234567890", "X": "abcdefgh"}"#,
        )
        .unwrap();
        let m = masked(&f.object);
        assert_eq!(m["tenanttoken"], "********7890");
        assert_eq!(m["X"], "abcdefgh");
    }
}
