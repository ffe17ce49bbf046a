//! The request log: one JSON line per request (time, server, method, path, status, device id),
//! kept in memory (bounded) and optionally appended to a file.

use std::collections::VecDeque;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// How many entries the in-memory log keeps; older ones are dropped (the file keeps all).
pub(crate) const MEMORY_LIMIT: usize = 200_000;

/// One handled request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestLogEntry {
    /// RFC 3339 UTC time the request arrived.
    pub time: String,
    /// The server's name (`--name`).
    pub server: String,
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// HTTP status answered; `None` when the connection was dropped on purpose.
    pub status: Option<u16>,
    /// Device the request belongs to (from its token, or the auth request's identity).
    pub device_id: Option<String>,
    /// Set when a fault rule or the down state decided the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
}

/// What the log keeps per request: no formatted time and no per-entry copy of the server
/// name (both are added when the log is read), so a request costs few allocations even at
/// tens of thousands per second.
pub(crate) struct Record {
    pub(crate) time: std::time::SystemTime,
    pub(crate) method: axum::http::Method,
    pub(crate) path: String,
    pub(crate) status: Option<u16>,
    pub(crate) device_id: Option<String>,
    pub(crate) fault: Option<String>,
}

impl Record {
    pub(crate) fn new(method: &axum::http::Method, path: &str) -> Record {
        Record {
            time: std::time::SystemTime::now(),
            method: method.clone(),
            path: path.to_string(),
            status: None,
            device_id: None,
            fault: None,
        }
    }

    fn entry(&self, server: &str) -> RequestLogEntry {
        RequestLogEntry {
            time: humantime::format_rfc3339_millis(self.time).to_string(),
            server: server.to_string(),
            method: self.method.as_str().to_string(),
            path: self.path.clone(),
            status: self.status,
            device_id: self.device_id.clone(),
            fault: self.fault.clone(),
        }
    }
}

pub(crate) struct RequestLog {
    server: String,
    inner: Mutex<Inner>,
}

struct Inner {
    entries: VecDeque<Record>,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl RequestLog {
    /// Opens (appends to) the log file if one is given.
    pub(crate) fn open(server: &str, path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => Some(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?,
            )),
            None => None,
        };
        Ok(Self {
            server: server.to_string(),
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                file,
            }),
        })
    }

    pub(crate) fn push(&self, record: Record) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = inner.file.as_mut() {
            // A failing log file must not take the server down; the memory log still has it.
            if let Ok(line) = serde_json::to_string(&record.entry(&self.server)) {
                let _ = writeln!(file, "{line}").and_then(|_| file.flush());
            }
        }
        if inner.entries.len() >= MEMORY_LIMIT {
            inner.entries.pop_front();
        }
        inner.entries.push_back(record);
    }

    pub(crate) fn snapshot(&self) -> Vec<RequestLogEntry> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .entries
            .iter()
            .map(|r| r.entry(&self.server))
            .collect()
    }
}
