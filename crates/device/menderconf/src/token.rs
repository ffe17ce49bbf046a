//! A tenant token as a secret: read from a file, never shown whole (Debug and Display mask it).

use crate::ConfigError;
use std::fmt;

/// A `TenantToken` value. Printing it in any way shows only its last 4 characters.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TenantToken(String);

impl TenantToken {
    /// Takes a token as read from a file: surrounding whitespace (the trailing newline) is
    /// dropped; an empty token or one with inner whitespace, control characters or quotes is
    /// refused (the message never contains the token).
    pub fn parse(text: &str) -> Result<TenantToken, ConfigError> {
        let token = text.trim();
        if token.is_empty() {
            return Err(ConfigError::BadTenantToken("is empty".into()));
        }
        if token
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '\\')
        {
            return Err(ConfigError::BadTenantToken(
                "contains whitespace, control characters, quotes or backslashes; give the token alone (one line)"
                    .into(),
            ));
        }
        Ok(TenantToken(token.to_string()))
    }

    /// The secret itself, for writing it into a config file.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `********` plus the last 4 characters.
    pub fn masked(&self) -> String {
        crate::file::mask(&self.0)
    }
}

impl fmt::Debug for TenantToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantToken({})", self.masked())
    }
}

impl fmt::Display for TenantToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_refuses_and_masks() {
        let t = TenantToken::parse("  abcdefgh12345678wxyz\n").unwrap();
        assert_eq!(t.expose(), "abcdefgh12345678wxyz");
        assert_eq!(
            format!("{t} {t:?}"),
            "********wxyz TenantToken(********wxyz)"
        );
        for bad in ["", " \n", "zq b", "zq\"b", "zq\u{7}x"] {
            let e = TenantToken::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("zq"), "{e}");
        }
    }
}
