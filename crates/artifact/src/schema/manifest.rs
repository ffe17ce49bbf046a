//! The `manifest` member: `sha256sum` lines (`<64 lowercase hex>  <name>\n`), written in
//! Go's order (data files, header, version) and parsed strictly.

use crate::ArtifactError;
use std::collections::HashMap;

/// Renders manifest lines in the given order.
pub(crate) fn render<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::new();
    for (name, sha256) in entries {
        out.push_str(sha256);
        out.push_str("  ");
        out.push_str(name);
        out.push('\n');
    }
    out
}

/// A parsed manifest: name -> hash, and which entries the reader has matched.
pub(crate) struct Manifest {
    entries: HashMap<String, String>,
    order: Vec<String>,
    used: HashMap<String, bool>,
}

impl Manifest {
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, ArtifactError> {
        let text = std::str::from_utf8(bytes).map_err(|_| ArtifactError::InvalidManifest {
            line: 0,
            detail: "manifest is not UTF-8 text".into(),
        })?;
        if text.is_empty() {
            return Err(ArtifactError::InvalidManifest {
                line: 0,
                detail: "manifest is empty".into(),
            });
        }
        if !text.ends_with('\n') {
            return Err(ArtifactError::InvalidManifest {
                line: text.lines().count(),
                detail: "last line does not end with a newline".into(),
            });
        }
        let mut m = Manifest {
            entries: HashMap::new(),
            order: Vec::new(),
            used: HashMap::new(),
        };
        for (i, line) in text[..text.len() - 1].split('\n').enumerate() {
            let line_no = i + 1;
            let bad = |detail: String| ArtifactError::InvalidManifest {
                line: line_no,
                detail,
            };
            if line.contains('\r') {
                return Err(bad("carriage return (CRLF line ending) not allowed".into()));
            }
            let (hash, name) = line.split_once("  ").ok_or_else(|| {
                bad(format!(
                    "expected '<sha256>  <name>' (two spaces), got '{line}'"
                ))
            })?;
            if hash.len() != 64
                || !hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(bad(format!(
                    "'{hash}' is not a 64-character lowercase hex sha256"
                )));
            }
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(bad(format!("invalid file name '{name}'")));
            }
            if m.entries
                .insert(name.to_string(), hash.to_string())
                .is_some()
            {
                return Err(bad(format!("duplicate entry for '{name}'")));
            }
            m.order.push(name.to_string());
            m.used.insert(name.to_string(), false);
        }
        Ok(m)
    }

    /// Whether the manifest has a line for `name`.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// Fails with `NotInManifest` unless the manifest has a line for `name`.
    pub(crate) fn require(&self, name: &str) -> Result<(), ArtifactError> {
        if self.contains(name) {
            Ok(())
        } else {
            Err(ArtifactError::NotInManifest(name.to_string()))
        }
    }

    /// Compares `actual` with the manifest line for `name` and marks it used.
    pub(crate) fn check(&mut self, name: &str, actual: &str) -> Result<(), ArtifactError> {
        let expected = self
            .entries
            .get(name)
            .ok_or_else(|| ArtifactError::NotInManifest(name.to_string()))?;
        if expected != actual {
            return Err(ArtifactError::ChecksumMismatch {
                name: name.to_string(),
                expected: expected.clone(),
                actual: actual.to_string(),
            });
        }
        self.used.insert(name.to_string(), true);
        Ok(())
    }

    /// Entries never matched, in manifest order.
    pub(crate) fn unused(&self) -> Vec<String> {
        self.order
            .iter()
            .filter(|n| !self.used[*n])
            .cloned()
            .collect()
    }
}
