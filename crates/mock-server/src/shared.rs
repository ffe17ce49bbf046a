//! State shared by every request handler and layer: the server model behind one mutex, its
//! persistence, fault rules, request log, management credentials and the up/down switch.
//! Handlers, layers and the accept loop all depend on this module; it depends on none of them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use axum::http::StatusCode;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::faults::Faults;
use crate::mgmt_auth::MgmtAuth;
use crate::reqlog::RequestLog;
use crate::settings::Settings;
use crate::state::{now_rfc3339, Persistence, State};

/// Everything the request handlers share.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) auth: MgmtAuth,
    pub(crate) settings: Mutex<Settings>,
    pub(crate) limiter: crate::ratelimit::Limiter,
    /// Multi-tenant mode: the tenant token devices must send (`None` = open source,
    /// tokens ignored).
    pub(crate) tenant_token: Option<String>,
    /// Devices with a missing or unknown token go to this tenant (deviceauth's
    /// `default_tenant_token`); admitted only when it is this server's tenant.
    pub(crate) default_tenant_token: Option<String>,
    /// When set, login needs this `token2fa` in its JSON body (hosted/Enterprise 2FA).
    pub(crate) login_2fa_code: Option<String>,
    /// Base of artifact `source.uri` links, without a trailing slash.
    pub(crate) public_url: String,
    pub(crate) artifacts_dir: PathBuf,
    pub(crate) faults: Faults,
    pub(crate) reqlog: RequestLog,
    state: Mutex<State>,
    generation: AtomicU64,
    persistence: Persistence,
    pub(crate) up: watch::Sender<bool>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)] // one call site, every part named
    pub(crate) fn new(
        name: String,
        auth: MgmtAuth,
        settings: Settings,
        public_url: String,
        artifacts_dir: PathBuf,
        reqlog: RequestLog,
        persistence: Persistence,
        state: State,
    ) -> Self {
        Self {
            name,
            auth,
            settings: Mutex::new(settings),
            limiter: crate::ratelimit::Limiter::default(),
            tenant_token: None,
            default_tenant_token: None,
            login_2fa_code: None,
            public_url,
            artifacts_dir,
            faults: Faults::default(),
            reqlog,
            state: Mutex::new(state),
            generation: AtomicU64::new(0),
            persistence,
            up: watch::Sender::new(true),
        }
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Mutates the state and, with a state dir, persists the result before returning.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T, ApiError> {
        self.write_if_changed(|s| (f(s), true))
    }

    /// Like [`Shared::write`], but persists only when `f` reports a change (polls that
    /// change nothing must not rewrite the state file).
    pub(crate) fn write_if_changed<T>(
        &self,
        f: impl FnOnce(&mut State) -> (T, bool),
    ) -> Result<T, ApiError> {
        let (result, snapshot) = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let (result, changed) = f(&mut state);
            let snapshot = if changed && self.persistence.enabled() {
                let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
                Some((generation, serde_json::to_vec_pretty(&*state)))
            } else {
                None
            };
            (result, snapshot)
        };
        if let Some((generation, json)) = snapshot {
            let json = json.map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("state: {e}"))
            })?;
            self.persistence.write(generation, &json).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("persisting state failed: {e}"),
                )
            })?;
        }
        Ok(result)
    }

    /// Resolves a device token and records the check-in time (not persisted).
    pub(crate) fn check_in(&self, token: &str) -> Option<String> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let device_id = state.token_device(token, false)?.to_string();
        if let Some(device) = state.device_mut(&device_id) {
            device.check_in_time = Some(now_rfc3339());
        }
        Some(device_id)
    }

    pub(crate) fn device_for_token(&self, token: &str) -> Option<String> {
        self.read(|s| s.token_device(token, true).map(str::to_string))
    }

    /// A copy of the current settings.
    pub(crate) fn settings(&self) -> Settings {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_settings(&self, settings: Settings) {
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = settings;
        self.limiter.reset();
    }

    /// The rate limit, if on (without copying the other settings: this runs per request).
    pub(crate) fn rate_limit(&self) -> Option<crate::settings::RateLimit> {
        self.settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rate_limit
            .clone()
    }

    /// Whether a device auth request's tenant token admits it to this server.
    pub(crate) fn tenant_admits(&self, sent: Option<&str>) -> bool {
        let Some(expected) = self.tenant_token.as_deref() else {
            return true;
        };
        match sent.filter(|t| !t.is_empty()) {
            Some(t) if t == expected => true,
            _ => self.default_tenant_token.as_deref() == Some(expected),
        }
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    pub(crate) fn is_up(&self) -> bool {
        *self.up.borrow()
    }
}
