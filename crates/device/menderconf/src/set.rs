//! Both config files as the client merges them, and the client-exact validation rules.

use crate::client::BOM;
use crate::keys;
use crate::{ClientGeneration, ConfigError, ConfigFile, ServerUrl, Warning};
use crate::{FALLBACK_CONFIG_PATH, MAIN_CONFIG_PATH};
use serde_json::Value;
use std::path::Path;

/// The main (`/etc/mender/mender.conf`) and fallback (`/var/lib/mender/mender.conf`) files;
/// `None` = the file is absent. The client decodes the fallback first, then the main file into
/// the same struct, so main's keys override the fallback's.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigSet {
    pub main: Option<ConfigFile>,
    pub fallback: Option<ConfigFile>,
}

impl ConfigSet {
    /// Reads both files with the rules every client shares ([`ClientGeneration::Any`]); a
    /// missing file is `None`, any other read or parse error is an error.
    pub fn load(main: &Path, fallback: Option<&Path>) -> Result<ConfigSet, ConfigError> {
        Self::load_for(main, fallback, ClientGeneration::Any).map(|(set, _)| set)
    }

    /// Reads both files as `client` reads them ([`ConfigFile::parse_for`]), with a warning for
    /// each file whose byte order mark only some of the clients read.
    pub fn load_for(
        main: &Path,
        fallback: Option<&Path>,
        client: ClientGeneration,
    ) -> Result<(ConfigSet, Vec<Warning>), ConfigError> {
        let mut warnings = Vec::new();
        let mut read = |path: Option<&Path>| -> Result<Option<ConfigFile>, ConfigError> {
            let Some(path) = path else { return Ok(None) };
            let origin = path.display().to_string();
            let bytes = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(error) => return Err(ConfigError::Io { origin, error }),
            };
            if client == ClientGeneration::Any && bytes.starts_with(BOM) {
                warnings.push(Warning(format!(
                    "{origin}: starts with a UTF-8 byte order mark: 4.x/5.x clients read it, a 3.x client exits 1 on this file; the files a stage rewrites are written without it"
                )));
            }
            ConfigFile::parse_for(origin, &bytes, client).map(Some)
        };
        let set = ConfigSet {
            main: read(Some(main))?,
            fallback: read(fallback)?,
        };
        Ok((set, warnings))
    }

    /// Files in the order the client decodes them (fallback first).
    fn decode_order(&self) -> impl Iterator<Item = &ConfigFile> {
        self.fallback.iter().chain(self.main.iter())
    }

    /// `ServerURL` after the merge, with the file it came from.
    fn effective_server_url(&self) -> Option<(&str, &str)> {
        let mut found = None;
        for file in self.decode_order() {
            if let Some(Value::String(url)) = file.get("ServerURL") {
                found = Some((url.as_str(), file.origin.as_str()));
            }
        }
        found
    }

    /// `Servers` after the merge (`None` = nil), with the file it came from. Go decodes an array
    /// into the existing slice element by element, so an entry without `ServerURL` keeps the
    /// value the fallback had at the same index.
    fn effective_servers(&self) -> Option<(Vec<String>, &str)> {
        let mut found: Option<(Vec<String>, &str)> = None;
        for file in self.decode_order() {
            match file.get("Servers") {
                Some(Value::Null) => found = None,
                Some(Value::Array(items)) => {
                    let previous = found.take().map(|(v, _)| v).unwrap_or_default();
                    let merged = items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| {
                            match item.as_object().and_then(|o| keys::lookup(o, "ServerURL")) {
                                Some(Value::String(url)) => url.clone(),
                                _ => previous.get(i).cloned().unwrap_or_default(),
                            }
                        })
                        .collect();
                    found = Some((merged, file.origin.as_str()));
                }
                _ => {}
            }
        }
        found
    }

    /// The servers the client will try, in order (`Servers`, else `ServerURL`). Entries that are
    /// not valid server URLs are left out: call [`ConfigSet::validate`] to see them as errors.
    pub fn servers(&self) -> Vec<ServerUrl> {
        match self.effective_servers() {
            Some((list, _)) => list
                .iter()
                .filter_map(|u| ServerUrl::parse(u).ok())
                .collect(),
            None => match self.effective_server_url() {
                Some((url, _)) if !url.is_empty() => {
                    ServerUrl::parse(url).ok().into_iter().collect()
                }
                _ => Vec::new(),
            },
        }
    }

    /// Refuses what the real clients die on or silently drop, returns what they merely warn about.
    ///
    /// Fatal: type errors (already at parse), `Servers` with a non-empty `ServerURL` across both
    /// files (3.4 exits 1), `Servers` with any string `ServerURL` even `""` (4.x/5.x drop the whole
    /// file), `"Servers": []` (3.4 panics), server URLs with a path prefix or a foreign scheme.
    /// These are the rules every client generation shares ([`ClientGeneration::Any`]).
    pub fn validate(&self) -> Result<Vec<Warning>, ConfigError> {
        self.validate_for(ClientGeneration::Any)
    }

    /// [`validate`](Self::validate) with `client`'s rules: for 4.x/5.x a wrongly typed setting
    /// (not a server key) is a warning, as those clients ignore it.
    pub fn validate_for(&self, client: ClientGeneration) -> Result<Vec<Warning>, ConfigError> {
        self.validate_rules(true, client)
    }

    /// Like [`validate_for`](Self::validate_for), but `Servers` with `"ServerURL": ""` is only a
    /// warning: used for captured input, whose server keys are rewritten anyway.
    pub(crate) fn validate_rules(
        &self,
        blank_server_url_is_fatal: bool,
        client: ClientGeneration,
    ) -> Result<Vec<Warning>, ConfigError> {
        let mut warnings = Vec::new();
        for file in self.decode_order() {
            warnings.extend(file.type_warnings(client)?);
            warnings.extend(file.unknown_key_warnings());
            warnings.extend(duplicate_key_warnings(file));
        }
        let servers = self.effective_servers();
        let server_url = self.effective_server_url();
        if let Some((_, servers_in)) = &servers {
            if let Some((url, url_in)) = server_url {
                if !url.is_empty() {
                    return Err(ConfigError::ServersAndServerUrl {
                        servers_in: servers_in.to_string(),
                        server_url_in: url_in.to_string(),
                        server_url: url.to_string(),
                    });
                }
            }
        }
        // 4.x/5.x: a `Servers` array in either file next to any *string* `ServerURL` (even "")
        // in either file drops the whole file; `null` is not a string.
        let servers_array_in = self
            .decode_order()
            .filter(|f| {
                f.object
                    .iter()
                    .any(|(k, v)| keys::matches(k, "Servers") && v.is_array())
            })
            .map(|f| f.origin.clone())
            .last();
        if let Some(servers_in) = servers_array_in {
            for file in self.decode_order() {
                for (key, value) in &file.object {
                    if keys::matches(key, "ServerURL") && value.is_string() {
                        if blank_server_url_is_fatal
                            || !value.as_str().unwrap_or_default().is_empty()
                        {
                            return Err(ConfigError::ServersAndServerUrl {
                                servers_in,
                                server_url_in: file.origin.clone(),
                                server_url: value.as_str().unwrap_or_default().to_string(),
                            });
                        }
                        warnings.push(Warning(format!(
                            "{}: `{key}` is blank next to `Servers`: the 4.x/5.x client ignores the whole file; the migration removes the key",
                            file.origin
                        )));
                    }
                }
            }
        }
        match (&servers, server_url) {
            (Some((list, origin)), _) => {
                if list.is_empty() {
                    return Err(ConfigError::EmptyServers { origin: origin.to_string() });
                }
                for (i, url) in list.iter().enumerate() {
                    if url.is_empty() {
                        warnings.push(Warning(format!(
                            "{origin}: Servers[{i}] has an empty ServerURL; the client skips it"
                        )));
                    } else {
                        ServerUrl::parse_in(url, origin)?;
                    }
                }
            }
            (None, Some((url, origin))) if !url.is_empty() => {
                ServerUrl::parse_in(url, origin)?;
            }
            (None, _) => warnings.push(Warning(
                "no server configured (neither `ServerURL` nor `Servers`): the client runs without a server".into(),
            )),
        }
        Ok(warnings)
    }

    /// Every setting the client ends up with except `skip` fields: folded key → (key as
    /// written, value), fallback first and main overriding, like the client's decode.
    pub(crate) fn effective_settings(
        &self,
        skip: &[&str],
    ) -> std::collections::BTreeMap<String, (String, Value)> {
        let mut out = std::collections::BTreeMap::new();
        for file in self.decode_order() {
            for (key, value) in &file.object {
                if !skip.iter().any(|f| keys::matches(key, f)) {
                    out.insert(keys::fold(key), (key.clone(), value.clone()));
                }
            }
        }
        out
    }

    /// The `TenantToken` the client sends (main overrides fallback; `None` if unset or null).
    pub fn tenant_token(&self) -> Option<&str> {
        let mut found = None;
        for file in self.decode_order() {
            if let Some(Value::String(t)) = file.get("TenantToken") {
                found = Some(t.as_str());
            }
        }
        found
    }

    /// Sets the token the client sends: every file that has a `TenantToken` (any case) gets the
    /// new one in its place; if none has one, the server file gets it.
    pub(crate) fn set_tenant_token(&mut self, token: &str) {
        let mut found = false;
        for file in [self.main.as_mut(), self.fallback.as_mut()]
            .into_iter()
            .flatten()
        {
            found |= file.replace_field("TenantToken", Value::String(token.to_string()));
        }
        if !found {
            self.ensure_home()
                .object
                .insert("TenantToken".into(), Value::String(token.to_string()));
        }
    }

    /// The file holding the server setting, as `(is_main)`; where a stage writes its servers.
    pub(crate) fn server_home_is_main(&self) -> bool {
        match (&self.main, &self.fallback) {
            (Some(main), _) if main.has_server_key() => true,
            (_, Some(fallback)) if fallback.has_server_key() => false,
            (Some(_), _) => true,
            (None, Some(_)) => false,
            (None, None) => true,
        }
    }

    /// A set with an empty main file (device paths as origins), for devices without config.
    pub(crate) fn ensure_home(&mut self) -> &mut ConfigFile {
        if self.server_home_is_main() {
            self.main
                .get_or_insert_with(|| ConfigFile::new(MAIN_CONFIG_PATH, Default::default()))
        } else {
            self.fallback
                .get_or_insert_with(|| ConfigFile::new(FALLBACK_CONFIG_PATH, Default::default()))
        }
    }
}

fn duplicate_key_warnings(file: &ConfigFile) -> Vec<Warning> {
    let mut seen: Vec<(String, &str)> = Vec::new();
    let mut warnings = Vec::new();
    for key in file.object.keys() {
        let folded = keys::fold(key);
        if let Some((_, first)) = seen.iter().find(|(f, _)| *f == folded) {
            warnings.push(Warning(format!(
                "{}: `{key}` and `{first}` are the same key for the client (case-insensitive); the last one wins",
                file.origin
            )));
        } else {
            seen.push((folded, key));
        }
    }
    warnings
}
