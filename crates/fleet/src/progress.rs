//! Progress people can follow: a live per-phase view on a terminal (counts per state, batch,
//! gate, ETA), plain log lines when not a terminal, or JSON events (one object per line).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::duration::format_duration;
use crate::journal::DevState;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Redrawn block on a terminal (stderr).
    Live,
    /// One log line per event (stderr).
    Plain,
    /// One JSON object per line (stdout), for CI.
    Json,
    /// Nothing (library callers and tests that inspect the report).
    Quiet,
}

impl Mode {
    /// Live on a terminal, plain otherwise; JSON when asked.
    pub fn detect(json: bool) -> Mode {
        use std::io::IsTerminal;
        if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() {
            Mode::Live
        } else {
            Mode::Plain
        }
    }
}

struct LiveState {
    phase: String,
    batch: String,
    gate: String,
    counts: BTreeMap<DevState, usize>,
    total: usize,
    last_draw: Option<Instant>,
    lines_drawn: usize,
    log: Vec<String>,
}

/// The progress sink shared by the orchestrator's threads.
pub struct Progress {
    mode: Mode,
    started: Instant,
    live: Mutex<LiveState>,
    /// Every event is also kept here when `record` is on (tests).
    recorded: Option<Mutex<Vec<Value>>>,
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        Progress {
            mode,
            started: Instant::now(),
            live: Mutex::new(LiveState {
                phase: "starting".into(),
                batch: String::new(),
                gate: String::new(),
                counts: BTreeMap::new(),
                total: 0,
                last_draw: None,
                lines_drawn: 0,
                log: Vec::new(),
            }),
            recorded: None,
        }
    }

    /// A quiet sink that keeps every event (for tests).
    pub fn recording() -> Progress {
        let mut p = Progress::new(Mode::Quiet);
        p.recorded = Some(Mutex::new(Vec::new()));
        p
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn events(&self) -> Vec<Value> {
        self.recorded
            .as_ref()
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .unwrap_or_default()
    }

    /// Emits one event: `kind` plus fields; `text` is the human line.
    pub fn emit(&self, kind: &str, fields: Value, text: &str) {
        let mut event = json!({ "event": kind, "elapsed_s": self.started.elapsed().as_secs_f64() });
        if let (Some(obj), Value::Object(extra)) = (event.as_object_mut(), fields) {
            obj.extend(extra);
        }
        if let Some(r) = &self.recorded {
            r.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(event.clone());
        }
        match self.mode {
            Mode::Quiet => {}
            Mode::Json => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{event}");
                let _ = out.flush();
            }
            Mode::Plain => {
                if !text.is_empty() {
                    eprintln!("[{:>8}] {text}", format_duration(self.started.elapsed()));
                }
            }
            Mode::Live => {
                let mut st = self.live.lock().unwrap_or_else(|e| e.into_inner());
                if !text.is_empty() && kind != "counts" {
                    st.log.push(text.to_string());
                    if st.log.len() > 5 {
                        st.log.remove(0);
                    }
                }
                self.draw(&mut st, kind == "report");
            }
        }
    }

    /// Updates the phase line (live view) and logs it.
    pub fn phase(&self, batch: u32, batches_hint: usize, phase: &str, detail: &str) {
        {
            let mut st = self.live.lock().unwrap_or_else(|e| e.into_inner());
            st.phase = phase.to_string();
            st.batch = format!("batch {batch} (of about {batches_hint})");
            if !detail.is_empty() {
                st.gate = detail.to_string();
            }
        }
        self.emit(
            "phase",
            json!({ "batch": batch, "phase": phase, "detail": detail }),
            &format!(
                "batch {batch}: {phase}{}",
                if detail.is_empty() {
                    String::new()
                } else {
                    format!(" — {detail}")
                }
            ),
        );
    }

    /// New per-state counts (live view and a JSON `counts` event; no plain line).
    pub fn counts(&self, counts: &BTreeMap<DevState, usize>) {
        let total: usize = counts.values().sum();
        {
            let mut st = self.live.lock().unwrap_or_else(|e| e.into_inner());
            st.counts = counts.clone();
            st.total = total;
        }
        let map: serde_json::Map<String, Value> = counts
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), json!(v)))
            .collect();
        self.emit("counts", json!({ "counts": map, "total": total }), "");
    }

    pub fn log(&self, text: &str) {
        self.emit("log", json!({ "message": text }), text);
    }

    fn draw(&self, st: &mut LiveState, force: bool) {
        let now = Instant::now();
        if !force
            && st
                .last_draw
                .is_some_and(|t| now - t < Duration::from_millis(200))
        {
            return;
        }
        st.last_draw = Some(now);
        let done = st.counts.get(&DevState::Done).copied().unwrap_or(0);
        let finished: usize = st
            .counts
            .iter()
            .filter(|(k, _)| k.is_final())
            .map(|(_, v)| *v)
            .sum();
        let elapsed = self.started.elapsed();
        let eta = if finished > 0 && st.total > finished {
            let per = elapsed.as_secs_f64() / finished as f64;
            format!(
                "ETA {}",
                format_duration(Duration::from_secs_f64(per * (st.total - finished) as f64))
            )
        } else {
            "ETA —".into()
        };
        let mut lines = vec![
            format!(
                "fleet migration  {}  {}  elapsed {}  {eta}",
                st.batch,
                st.phase,
                format_duration(elapsed)
            ),
            format!("  gate: {}", st.gate),
            format!(
                "  migrated {done}/{}  |  {}",
                st.total,
                st.counts
                    .iter()
                    .filter(|(_, v)| **v > 0)
                    .map(|(k, v)| format!("{} {v}", k.as_str()))
                    .collect::<Vec<_>>()
                    .join("  ")
            ),
        ];
        lines.extend(st.log.iter().map(|l| format!("  · {l}")));
        let mut err = std::io::stderr().lock();
        if st.lines_drawn > 0 {
            let _ = write!(err, "\x1b[{}A", st.lines_drawn);
        }
        for l in &lines {
            let _ = writeln!(err, "\x1b[2K{l}");
        }
        st.lines_drawn = lines.len();
        let _ = err.flush();
    }
}
