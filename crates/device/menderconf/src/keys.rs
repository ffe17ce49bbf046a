//! The 3.4 client's config schema: known keys, their JSON types, and Go's key matching.

use serde_json::{Map, Value};

/// The JSON type a Go struct field of the 3.4 client accepts (`null` is always accepted: Go leaves
/// the field as it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Str,
    Int,
    Bool,
    Servers,
    Object(&'static [(&'static str, Kind)]),
}

impl Kind {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Kind::Str => "a string",
            Kind::Int => "an integer",
            Kind::Bool => "true or false",
            Kind::Servers => "an array of {\"ServerURL\": \"...\"} objects",
            Kind::Object(_) => "an object",
        }
    }
}

const HTTPS_CLIENT: &[(&str, Kind)] = &[
    ("Certificate", Kind::Str),
    ("Key", Kind::Str),
    ("SSLEngine", Kind::Str),
];
const SECURITY: &[(&str, Kind)] = &[("AuthPrivateKey", Kind::Str), ("SSLEngine", Kind::Str)];
const CONNECTIVITY: &[(&str, Kind)] = &[
    ("DisableKeepAlive", Kind::Bool),
    ("IdleConnTimeoutSeconds", Kind::Int),
];
const DBUS: &[(&str, Kind)] = &[("Enabled", Kind::Bool)];
pub(crate) const SERVER_ENTRY: &[(&str, Kind)] = &[("ServerURL", Kind::Str)];

/// Every key `MenderConfigFromFile` of client 3.4.0 decodes. Anything else is ignored by the client.
pub(crate) const TOP_LEVEL: &[(&str, Kind)] = &[
    ("ServerURL", Kind::Str),
    ("Servers", Kind::Servers),
    ("TenantToken", Kind::Str),
    ("ServerCertificate", Kind::Str),
    ("SkipVerify", Kind::Bool),
    ("UpdatePollIntervalSeconds", Kind::Int),
    ("InventoryPollIntervalSeconds", Kind::Int),
    ("RetryPollIntervalSeconds", Kind::Int),
    ("RetryPollCount", Kind::Int),
    ("UpdateControlMapExpirationTimeSeconds", Kind::Int),
    ("UpdateControlMapBootExpirationTimeSeconds", Kind::Int),
    ("StateScriptTimeoutSeconds", Kind::Int),
    ("StateScriptRetryTimeoutSeconds", Kind::Int),
    ("StateScriptRetryIntervalSeconds", Kind::Int),
    ("ModuleTimeoutSeconds", Kind::Int),
    ("RootfsPartA", Kind::Str),
    ("RootfsPartB", Kind::Str),
    ("BootUtilitiesSetActivePart", Kind::Str),
    ("BootUtilitiesGetNextActivePart", Kind::Str),
    ("DeviceTypeFile", Kind::Str),
    ("ArtifactVerifyKey", Kind::Str),
    ("UpdateLogPath", Kind::Str),
    ("HttpsClient", Kind::Object(HTTPS_CLIENT)),
    ("Security", Kind::Object(SECURITY)),
    ("Connectivity", Kind::Object(CONNECTIVITY)),
    ("DBus", Kind::Object(DBUS)),
    ("DaemonLogLevel", Kind::Str),
];

/// Go's `encoding/json` matches object keys to field names case-insensitively with Unicode simple
/// folding, where `ſ` (U+017F) folds to `s` and the Kelvin sign (U+212A) to `k`.
pub(crate) fn fold(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\u{017F}' => 's',
            '\u{212A}' => 'k',
            c => c.to_lowercase().next().unwrap_or(c),
        })
        .collect()
}

/// Whether `key` is the field `field` for the client.
pub(crate) fn matches(key: &str, field: &str) -> bool {
    fold(key) == fold(field)
}

/// The value the client ends up with for `field`: Go decodes every matching key in document
/// order, so the last one wins.
pub(crate) fn lookup<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    object
        .iter()
        .rev()
        .find(|(k, _)| matches(k, field))
        .map(|(_, v)| v)
}

pub(crate) fn known_kind(
    schema: &[(&'static str, Kind)],
    key: &str,
) -> Option<(&'static str, Kind)> {
    schema.iter().copied().find(|(name, _)| matches(key, name))
}

/// Checks `value` against `kind` like Go's decoder: `Err((path, expected, found))`.
pub(crate) fn check(
    path: &str,
    value: &Value,
    kind: Kind,
) -> Result<(), (String, &'static str, String)> {
    let fail = || Err((path.to_string(), kind.describe(), describe_value(value)));
    if value.is_null() {
        return Ok(());
    }
    match kind {
        Kind::Str if value.is_string() => Ok(()),
        Kind::Bool if value.is_boolean() => Ok(()),
        // Go's `int` takes only integral numbers in int64 range: 5.0, 1e3 and "5" are errors.
        Kind::Int if value.as_i64().is_some() => Ok(()),
        Kind::Servers => match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    check(&format!("{path}[{i}]"), item, Kind::Object(SERVER_ENTRY))?;
                }
                Ok(())
            }
            _ => fail(),
        },
        Kind::Object(fields) => match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    if let Some((name, inner_kind)) = known_kind(fields, key) {
                        check(&format!("{path}.{name}"), inner, inner_kind)?;
                    }
                }
                Ok(())
            }
            _ => fail(),
        },
        _ => fail(),
    }
}

pub(crate) fn describe_value(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}
