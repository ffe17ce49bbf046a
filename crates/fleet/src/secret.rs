//! Management credentials: read from a file or an environment variable, never from argv,
//! never printed (`Debug`/`Display` mask them). A file source is re-read after a 401 so an
//! operator can drop a fresh token in place while the run waits.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A token value. Formatting shows only a masked form.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: &str) -> Secret {
        Secret(Arc::from(value.trim()))
    }

    /// The raw value, for the `Authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `****` plus the last 4 characters (nothing of short tokens).
    pub fn masked(&self) -> String {
        let n = self.0.chars().count();
        if n <= 12 {
            "********".into()
        } else {
            let tail: String = self.0.chars().skip(n - 4).collect();
            format!("********{tail}")
        }
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", self.masked())
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Where a token comes from.
#[derive(Clone, Debug)]
pub enum Origin {
    File(PathBuf),
    Env(String),
    Value,
}

/// The current token of one server and where to re-read it from.
#[derive(Clone, Debug)]
pub struct TokenSource {
    origin: Origin,
    current: Arc<Mutex<Secret>>,
}

impl TokenSource {
    /// Reads the token from `file`, else from the environment variable `env`.
    /// Errors say which flag or variable to set.
    pub fn load(
        file: Option<&std::path::Path>,
        env: &str,
        flag: &str,
    ) -> Result<TokenSource, String> {
        if let Some(path) = file {
            let secret = read_token_file(path)?;
            return Ok(TokenSource {
                origin: Origin::File(path.to_path_buf()),
                current: Arc::new(Mutex::new(secret)),
            });
        }
        match std::env::var(env) {
            Ok(v) if !v.trim().is_empty() => Ok(TokenSource {
                origin: Origin::Env(env.to_string()),
                current: Arc::new(Mutex::new(Secret::new(&v))),
            }),
            _ => Err(format!(
                "no management token: pass {flag} FILE or set {env} (a Personal Access Token; never on the command line)"
            )),
        }
    }

    /// A fixed token (library callers and tests).
    pub fn fixed(value: &str) -> TokenSource {
        TokenSource {
            origin: Origin::Value,
            current: Arc::new(Mutex::new(Secret::new(value))),
        }
    }

    pub fn get(&self) -> Secret {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads a file source; true if the token changed.
    pub fn reload(&self) -> bool {
        let Origin::File(path) = &self.origin else {
            return false;
        };
        match read_token_file(path) {
            Ok(fresh) => {
                let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
                if *cur != fresh {
                    *cur = fresh;
                    true
                } else {
                    false
                }
            }
            Err(_) => false,
        }
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }
}

fn read_token_file(path: &std::path::Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read the token file: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{}: the token file is empty", path.display()));
    }
    if token.contains(char::is_whitespace) {
        return Err(format!(
            "{}: the token file must hold one token (found whitespace inside)",
            path.display()
        ));
    }
    Ok(Secret::new(token))
}

/// Claims of a JWT payload (not verified; for warnings only: expiry, PAT or login token).
pub fn jwt_claims(token: &Secret) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let payload = token.expose().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        let s = Secret::new("eyJhbGciOiJIUzI1NiJ9.abcdefgh.1234WXYZ");
        assert_eq!(s.masked(), "********WXYZ");
        assert!(!format!("{s:?}").contains("abcdefgh"));
        assert_eq!(Secret::new("short").masked(), "********");
    }

    #[test]
    fn file_source_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tok");
        std::fs::write(&path, "first-token-value\n").unwrap();
        let src = TokenSource::load(Some(&path), "UNUSED_ENV_FOR_TEST", "--x").unwrap();
        assert_eq!(src.get().expose(), "first-token-value");
        assert!(!src.reload());
        std::fs::write(&path, "second-token-value").unwrap();
        assert!(src.reload());
        assert_eq!(src.get().expose(), "second-token-value");
        std::fs::write(&path, "").unwrap();
        assert!(TokenSource::load(Some(&path), "UNUSED_ENV_FOR_TEST", "--x").is_err());
    }

    #[test]
    fn claims() {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":5}"#);
        let tok = Secret::new(&format!("h.{payload}.s"));
        assert_eq!(jwt_claims(&tok).unwrap()["exp"], 5);
    }
}
