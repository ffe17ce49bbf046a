//! Management credentials as useradm has them: users that log in with HTTP Basic and get a
//! JWT, Personal Access Tokens, and the configured token tests use directly. Tokens can be
//! expired on demand (the admin fault "token expired mid-run").

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Serialize;

/// A user that can log in (`POST …/useradm/auth/login` with HTTP Basic). `Debug` masks
/// the password.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// Compared lower-cased, as useradm does.
    pub email: String,
    pub password: String,
}

impl User {
    pub fn new(email: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            email: email.into(),
            password: password.into(),
        }
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("email", &self.email)
            .field("password", &"***")
            .finish()
    }
}

/// What a management token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Principal {
    /// The token from the server's configuration.
    Configured,
    /// A login JWT or a PAT of this user.
    User(String),
}

/// Why a token was refused (the 401 body says which).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    Unknown,
    Expired,
}

impl Refusal {
    pub(crate) fn message(self) -> &'static str {
        match self {
            Refusal::Unknown => "invalid or missing management token",
            Refusal::Expired => "management token expired",
        }
    }
}

struct Issued {
    user: String,
    expires: Option<SystemTime>,
    /// PAT id and name; `None` for login tokens.
    pat: Option<(String, String)>,
    created: String,
}

/// A PAT as `GET …/settings/tokens` lists it (never the token value).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PatView {
    pub id: String,
    pub name: String,
    pub expiration_date: Option<String>,
    pub created_ts: String,
}

/// Why a PAT could not be created.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PatError {
    /// 400: `expires_in` above the maximum.
    TooLong,
    /// 409: the user already has a token with this name.
    NameTaken,
    /// 422: the user has the maximum number of tokens.
    TooMany,
}

/// Longest PAT lifetime useradm allows (`token_max_expiration_seconds`, one year).
pub(crate) const PAT_MAX_SECONDS: u64 = 31_536_000;
/// PATs per user (useradm default).
pub(crate) const PAT_LIMIT: usize = 10;

pub(crate) struct MgmtAuth {
    configured: String,
    users: Vec<User>,
    jwt_lifetime: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    issued: HashMap<String, Issued>,
    configured_expired: bool,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A JWT-shaped opaque token (header.claims.random); only this server can check it.
fn new_jwt(subject: &str, id: &str, expires: Option<SystemTime>) -> String {
    use rand::RngCore as _;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let exp = expires
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    let claims = serde_json::json!({
        "jti": id, "sub": subject, "iat": now, "exp": exp,
        "iss": "Mender Users", "mender.user": true,
    });
    let mut sig = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut sig);
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(&sig)
    )
}

impl MgmtAuth {
    pub(crate) fn new(configured: String, users: Vec<User>, jwt_lifetime: Duration) -> Self {
        Self {
            configured,
            users,
            jwt_lifetime,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn configured_token(&self) -> &str {
        &self.configured
    }

    /// `/admin/…` accepts only the configured token, even while it is "expired" for the
    /// management API, so a test can always undo what it did.
    pub(crate) fn is_admin(&self, token: &str) -> bool {
        token == self.configured
    }

    pub(crate) fn check(&self, token: &str) -> Result<Principal, Refusal> {
        let inner = self.lock();
        if token == self.configured {
            return if inner.configured_expired {
                Err(Refusal::Expired)
            } else {
                Ok(Principal::Configured)
            };
        }
        let issued = inner.issued.get(token).ok_or(Refusal::Unknown)?;
        if issued.expires.is_some_and(|t| t <= SystemTime::now()) {
            return Err(Refusal::Expired);
        }
        Ok(Principal::User(issued.user.clone()))
    }

    /// Basic credentials → a login JWT. `no_expiry` gives a token without `exp`.
    pub(crate) fn login(&self, email: &str, password: &str, no_expiry: bool) -> Option<String> {
        let email = email.to_lowercase();
        let user = self
            .users
            .iter()
            .find(|u| u.email.to_lowercase() == email && u.password == password)?;
        let expires = (!no_expiry).then(|| SystemTime::now() + self.jwt_lifetime);
        let id = crate::state::new_id();
        let token = new_jwt(&user.email, &id, expires);
        self.lock().issued.insert(
            token.clone(),
            Issued {
                user: user.email.clone(),
                expires,
                pat: None,
                created: rfc3339(SystemTime::now()),
            },
        );
        Some(token)
    }

    /// Revokes a login token (logout).
    pub(crate) fn logout(&self, token: &str) {
        let mut inner = self.lock();
        if inner.issued.get(token).is_some_and(|i| i.pat.is_none()) {
            inner.issued.remove(token);
        }
    }

    fn subject(principal: &Principal) -> String {
        match principal {
            Principal::Configured => "configured-token".to_string(),
            Principal::User(u) => u.clone(),
        }
    }

    pub(crate) fn create_pat(
        &self,
        principal: &Principal,
        name: &str,
        expires_in: u64,
    ) -> Result<String, PatError> {
        if expires_in > PAT_MAX_SECONDS {
            return Err(PatError::TooLong);
        }
        let user = Self::subject(principal);
        let mut inner = self.lock();
        let mine = inner
            .issued
            .values()
            .filter(|i| i.user == user && i.pat.is_some());
        let mut count = 0;
        for i in mine {
            count += 1;
            if i.pat.as_ref().is_some_and(|(_, n)| n == name) {
                return Err(PatError::NameTaken);
            }
        }
        if count >= PAT_LIMIT {
            return Err(PatError::TooMany);
        }
        let expires = (expires_in > 0).then(|| SystemTime::now() + Duration::from_secs(expires_in));
        let id = crate::state::new_id();
        let token = new_jwt(&user, &id, expires);
        inner.issued.insert(
            token.clone(),
            Issued {
                user,
                expires,
                pat: Some((id, name.to_string())),
                created: rfc3339(SystemTime::now()),
            },
        );
        Ok(token)
    }

    pub(crate) fn list_pats(&self, principal: &Principal) -> Vec<PatView> {
        let user = Self::subject(principal);
        let mut list: Vec<PatView> = self
            .lock()
            .issued
            .values()
            .filter(|i| i.user == user)
            .filter_map(|i| {
                i.pat.as_ref().map(|(id, name)| PatView {
                    id: id.clone(),
                    name: name.clone(),
                    expiration_date: i.expires.map(rfc3339),
                    created_ts: i.created.clone(),
                })
            })
            .collect();
        list.sort_by(|a, b| a.created_ts.cmp(&b.created_ts).then(a.name.cmp(&b.name)));
        list
    }

    /// Deletes one of the principal's PATs; false when there is no such PAT.
    pub(crate) fn delete_pat(&self, principal: &Principal, id: &str) -> bool {
        let user = Self::subject(principal);
        let mut inner = self.lock();
        let before = inner.issued.len();
        inner
            .issued
            .retain(|_, i| !(i.user == user && i.pat.as_ref().is_some_and(|(p, _)| p == id)));
        inner.issued.len() != before
    }

    /// Expires every login token and PAT issued so far; with `configured`, the configured
    /// token too (until [`MgmtAuth::set_configured_expired`] brings it back).
    pub(crate) fn expire_all(&self, configured: bool) {
        let mut inner = self.lock();
        let past = SystemTime::now() - Duration::from_secs(1);
        for issued in inner.issued.values_mut() {
            issued.expires = Some(past);
        }
        if configured {
            inner.configured_expired = true;
        }
    }

    pub(crate) fn set_configured_expired(&self, expired: bool) {
        self.lock().configured_expired = expired;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_pats_and_expiry() {
        let auth = MgmtAuth::new(
            "conf".into(),
            vec![User::new("Admin@Example.com", "pw")],
            Duration::from_secs(60),
        );
        assert!(auth.login("admin@example.com", "bad", false).is_none());
        let jwt = auth.login("ADMIN@example.com", "pw", false).unwrap();
        assert_eq!(jwt.split('.').count(), 3);
        let me = auth.check(&jwt).unwrap();
        assert_eq!(me, Principal::User("Admin@Example.com".into()));
        let pat = auth.create_pat(&me, "ci", 0).unwrap();
        assert_eq!(auth.create_pat(&me, "ci", 0), Err(PatError::NameTaken));
        assert_eq!(
            auth.create_pat(&me, "x", PAT_MAX_SECONDS + 1),
            Err(PatError::TooLong)
        );
        for i in 0..9 {
            auth.create_pat(&me, &format!("p{i}"), 10).unwrap();
        }
        assert_eq!(auth.create_pat(&me, "one-more", 0), Err(PatError::TooMany));
        assert_eq!(auth.list_pats(&me).len(), 10);
        assert!(auth.check(&pat).is_ok());
        auth.expire_all(false);
        assert_eq!(auth.check(&pat), Err(Refusal::Expired));
        assert_eq!(auth.check(&jwt), Err(Refusal::Expired));
        assert_eq!(auth.check("conf"), Ok(Principal::Configured));
        auth.expire_all(true);
        assert_eq!(auth.check("conf"), Err(Refusal::Expired));
        assert!(auth.is_admin("conf"));
        auth.set_configured_expired(false);
        assert_eq!(auth.check("conf"), Ok(Principal::Configured));
        assert_eq!(auth.check("nope"), Err(Refusal::Unknown));
    }
}
