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

pub(crate) struct RequestLog {
    inner: Mutex<Inner>,
}

struct Inner {
    entries: VecDeque<RequestLogEntry>,
    file: Option<std::io::BufWriter<std::fs::File>>,
}

impl RequestLog {
    /// Opens (appends to) the log file if one is given.
    pub(crate) fn open(path: Option<&Path>) -> std::io::Result<Self> {
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
            inner: Mutex::new(Inner {
                entries: VecDeque::new(),
                file,
            }),
        })
    }

    pub(crate) fn push(&self, entry: RequestLogEntry) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = inner.file.as_mut() {
            // A failing log file must not take the server down; the memory log still has it.
            if let Ok(line) = serde_json::to_string(&entry) {
                let _ = writeln!(file, "{line}").and_then(|_| file.flush());
            }
        }
        if inner.entries.len() >= MEMORY_LIMIT {
            inner.entries.pop_front();
        }
        inner.entries.push_back(entry);
    }

    pub(crate) fn snapshot(&self) -> Vec<RequestLogEntry> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.entries.iter().cloned().collect()
    }
}
