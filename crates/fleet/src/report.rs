//! The final report (text and JSON): counts per state, every device that is not on new and
//! why, devices on new whose stage 2 is unfinished, and the API call figures. With
//! `--refresh` the servers' view is added and "rejected on old and not accepted on new"
//! is counted from the servers themselves.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::api::{canonical_identity, Api};
use crate::journal::{DevState, DeviceView, Fleet};

/// One device in a list of the report.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceLine {
    pub id: String,
    pub identity: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_id: Option<String>,
    pub reason: String,
}

/// Call figures of one server's client.
#[derive(Clone, Debug, Serialize)]
pub struct CallStats {
    pub requests: u64,
    pub retries: u64,
    pub throttled: u64,
    pub p99_ms: Option<f64>,
}

/// What the servers say about the journal's devices (`--refresh`).
#[derive(Clone, Debug, Serialize)]
pub struct Refresh {
    /// Devices rejected (or missing) on old and not accepted on new: must be empty.
    pub stranded: Vec<String>,
    /// Devices whose server state disagrees with the journal.
    pub mismatches: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub run: String,
    pub old_server: String,
    pub new_server: String,
    pub total: usize,
    pub migrated: usize,
    pub counts: BTreeMap<String, usize>,
    /// Every device not on new, with the reason.
    pub not_on_new: Vec<DeviceLine>,
    /// On new but stage 2 not (yet) successful.
    pub on_new_unfinished: Vec<DeviceLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub calls: BTreeMap<String, CallStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<Refresh>,
}

fn line(d: &DeviceView) -> DeviceLine {
    let reason = d.reason.clone().unwrap_or_else(|| match d.state {
        DevState::Selected => "not started yet".into(),
        DevState::Stage1Deployed => "stage 1 in progress on old".into(),
        DevState::Stage1Ok => "stage 1 done, not yet preauthorized on new".into(),
        DevState::Preauthorized => "preauthorized on new, not yet rejected on old".into(),
        DevState::RejectedOnOld => "rejected on old, waiting for it to authenticate on new".into(),
        DevState::OnNew => "on new, stage 2 not deployed yet".into(),
        DevState::Stage2Deployed => "on new, stage 2 in progress".into(),
        other => other.as_str().into(),
    });
    DeviceLine {
        id: d.snapshot.id.clone(),
        identity: canonical_identity(&d.snapshot.identity),
        state: d.state.as_str().into(),
        new_id: d.new_id.clone(),
        reason,
    }
}

fn stats(api: &Api) -> CallStats {
    let s = &api.client.stats;
    CallStats {
        requests: s.requests.load(std::sync::atomic::Ordering::Relaxed),
        retries: s.retries.load(std::sync::atomic::Ordering::Relaxed),
        throttled: s.throttled.load(std::sync::atomic::Ordering::Relaxed),
        p99_ms: s.latency_percentile(99.0).map(|d| d.as_secs_f64() * 1000.0),
    }
}

impl Report {
    pub fn build(fleet: &Fleet, apis: Option<(&Api, &Api)>) -> Report {
        let mut counts = BTreeMap::new();
        let mut not_on_new = Vec::new();
        let mut on_new_unfinished = Vec::new();
        let mut migrated = 0;
        for d in fleet.devices.values() {
            *counts.entry(d.state.as_str().to_string()).or_insert(0) += 1;
            if d.state == DevState::Done {
                migrated += 1;
            } else if d.state.is_on_new() {
                on_new_unfinished.push(line(d));
            } else {
                not_on_new.push(line(d));
            }
        }
        let mut calls = BTreeMap::new();
        if let Some((old, new)) = apis {
            calls.insert("old".to_string(), stats(old));
            calls.insert("new".to_string(), stats(new));
        }
        Report {
            run: fleet.run.clone(),
            old_server: fleet.old.clone(),
            new_server: fleet.new.clone(),
            total: fleet.devices.len(),
            migrated,
            counts,
            not_on_new,
            on_new_unfinished,
            paused: fleet
                .paused
                .as_ref()
                .map(|(b, g, r)| format!("batch {b}, {g} gate: {r}")),
            calls,
            refresh: None,
        }
    }

    /// Adds the servers' view: devauth status of every journal device on both servers.
    pub fn refresh(&mut self, fleet: &Fleet, old: &Api, new: &Api) -> Result<(), crate::ApiError> {
        let old_ids: Vec<String> = fleet.devices.keys().cloned().collect();
        let new_ids: Vec<String> = fleet
            .devices
            .values()
            .filter_map(|d| d.new_id.clone())
            .collect();
        let on_old: BTreeMap<String, String> = old
            .devices_by_ids(&old_ids)?
            .into_iter()
            .map(|d| (d.id.clone(), d.status.clone()))
            .collect();
        let on_new: BTreeMap<String, crate::api::Device> = new
            .devices_by_ids(&new_ids)?
            .into_iter()
            .map(|d| (d.id.clone(), d))
            .collect();
        let mut stranded = Vec::new();
        let mut mismatches = Vec::new();
        for d in fleet.devices.values() {
            let old_status = on_old
                .get(&d.snapshot.id)
                .map(String::as_str)
                .unwrap_or("absent");
            let new_accepted = d
                .new_id
                .as_ref()
                .and_then(|id| on_new.get(id))
                .is_some_and(|dev| dev.auth_sets.iter().any(|a| a.status == "accepted"));
            if old_status != "accepted" && !new_accepted {
                stranded.push(format!(
                    "{} (old: {old_status}, journal: {})",
                    d.snapshot.id,
                    d.state.as_str()
                ));
            }
            let expect_old_accepted =
                !d.state.is_on_new() && !matches!(d.state, DevState::RejectedOnOld);
            if expect_old_accepted != (old_status == "accepted")
                && !matches!(d.state, DevState::RejectedOnOld | DevState::Preauthorized)
            {
                mismatches.push(format!(
                    "{}: journal {}, old {old_status}, new {}",
                    d.snapshot.id,
                    d.state.as_str(),
                    if new_accepted {
                        "accepted"
                    } else {
                        "not accepted"
                    }
                ));
            }
        }
        self.refresh = Some(Refresh {
            stranded,
            mismatches,
        });
        Ok(())
    }

    pub fn summary_line(&self) -> String {
        format!(
            "{} of {} devices migrated; {} not on new; {} on new with stage 2 unfinished{}",
            self.migrated,
            self.total,
            self.not_on_new.len(),
            self.on_new_unfinished.len(),
            self.paused
                .as_ref()
                .map(|p| format!("; PAUSED ({p})"))
                .unwrap_or_default()
        )
    }

    pub fn to_text(&self) -> String {
        let mut s = format!(
            "Fleet migration {}: {} → {}\n{}\n\nDevices per state:\n",
            self.run,
            self.old_server,
            self.new_server,
            self.summary_line()
        );
        for (k, v) in &self.counts {
            s.push_str(&format!("  {k:<16} {v}\n"));
        }
        if !self.not_on_new.is_empty() {
            s.push_str("\nNot on new (accepted on old unless said otherwise):\n");
            for d in &self.not_on_new {
                s.push_str(&format!(
                    "  {}  {}  [{}] {}\n",
                    d.id, d.identity, d.state, d.reason
                ));
            }
        }
        if !self.on_new_unfinished.is_empty() {
            s.push_str("\nOn new, stage 2 unfinished:\n");
            for d in &self.on_new_unfinished {
                s.push_str(&format!(
                    "  {} (new {})  {}  [{}] {}\n",
                    d.id,
                    d.new_id.as_deref().unwrap_or("?"),
                    d.identity,
                    d.state,
                    d.reason
                ));
            }
        }
        if !self.calls.is_empty() {
            s.push_str("\nAPI calls:\n");
            for (k, c) in &self.calls {
                s.push_str(&format!(
                    "  {k}: {} requests, {} retries, {} throttled (429), p99 {}\n",
                    c.requests,
                    c.retries,
                    c.throttled,
                    c.p99_ms
                        .map(|m| format!("{m:.1} ms"))
                        .unwrap_or_else(|| "—".into())
                ));
            }
        }
        if let Some(r) = &self.refresh {
            s.push_str(&format!(
                "\nServers now: {} devices rejected on old and not accepted on new{}\n",
                r.stranded.len(),
                if r.stranded.is_empty() {
                    String::new()
                } else {
                    format!(": {}", r.stranded.join(", "))
                }
            ));
            for m in &r.mismatches {
                s.push_str(&format!("  differs from the journal: {m}\n"));
            }
        }
        s
    }
}
