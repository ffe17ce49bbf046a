//! Pre-flight (reference §9.1): only GETs and read-only searches. Both credentials work,
//! capacity on new, active deployments against the cap, the full snapshot of old's accepted
//! devices (taken before any change), identity collisions on new, the TenantToken route
//! (§5.3), and artifacts for every selected device type. Ends with the batch plan.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;
use serde_json::{json, Value};

use crate::api::{canonical_identity, same_key, Api};
use crate::artifacts::{ArtifactSet, Role};
use crate::duration::format_duration;
use crate::journal::SnapshotDevice;
use crate::secret::{jwt_claims, Secret};
use crate::FleetConfig;

/// The tenant tokens involved (reference §0.1, §5.3): a device sends one `TenantToken` to
/// every server in `Servers`.
#[derive(Clone, Debug, Default)]
pub struct TenantRoute {
    /// The tenant token old's devices carry; `None` = old is single-tenant (open source).
    pub old_tenant_token: Option<Secret>,
    /// The tenant token new needs; `None` = new is single-tenant (ignores tokens).
    pub new_tenant_token: Option<Secret>,
    /// New is on-prem Enterprise with `default_tenant_token` set to the new tenant.
    pub new_default_tenant: bool,
}

impl TenantRoute {
    /// The §5.3 matrix: `Ok(detail)` when failover can work, `Err(why)` when not.
    pub fn feasibility(&self) -> Result<String, String> {
        match (&self.old_tenant_token, &self.new_tenant_token) {
            (None, None) => Ok("both servers single-tenant: the TenantToken is irrelevant".into()),
            (Some(_), None) => Ok("new is single-tenant and ignores the token the devices keep".into()),
            (None, Some(_)) => Err("old is single-tenant but new needs its tenant's token: the stage artifacts keep the device's TenantToken, so new would answer 401 and every device would be rolled back".into()),
            (Some(a), Some(b)) if a == b => Ok("same tenant token on both servers (tenant clone)".into()),
            (Some(_), Some(_)) if self.new_default_tenant => Ok("different tenants; new maps unknown tokens to its default tenant (inferred from the server code, verify with a canary)".into()),
            (Some(_), Some(_)) => Err("tenant A → tenant B between two multi-tenant servers cannot work through `Servers` failover (one TenantToken per device): use a tenant clone, or a new server with default_tenant_token (--new-default-tenant)".into()),
        }
    }
}

/// Outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    /// Not run because an earlier check failed.
    Skipped,
}

#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

/// What `fleet plan` prints and `fleet run` starts from.
#[derive(Clone, Debug, Serialize)]
pub struct PreflightReport {
    pub old_server: String,
    pub new_server: String,
    pub checks: Vec<Check>,
    pub accepted_on_old: usize,
    pub selected: usize,
    pub by_device_type: BTreeMap<String, usize>,
    pub batches: Vec<usize>,
    /// Management calls the run needs at least (both servers), without polling.
    pub call_budget: u64,
    /// Upper bound of the run time: every gate running into its timeout.
    pub worst_case: String,
    #[serde(skip)]
    pub snapshot: Vec<SnapshotDevice>,
}

impl PreflightReport {
    pub fn passed(&self) -> bool {
        self.checks
            .iter()
            .all(|c| matches!(c.status, Status::Pass | Status::Warn))
    }

    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        v["passed"] = json!(self.passed());
        v
    }

    pub fn to_text(&self) -> String {
        let mut s = format!(
            "Fleet migration plan: {} → {}\n\nPre-flight checks:\n",
            self.old_server, self.new_server
        );
        for c in &self.checks {
            let tag = match c.status {
                Status::Pass => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
                Status::Skipped => "skip",
            };
            s.push_str(&format!("  [{tag}] {}: {}\n", c.name, c.detail));
        }
        s.push_str(&format!(
            "\nFleet: {} accepted on old, {} selected\n",
            self.accepted_on_old, self.selected
        ));
        for (t, n) in &self.by_device_type {
            s.push_str(&format!("  {t}: {n}\n"));
        }
        s.push_str(&format!(
            "\nBatches ({}): {}\nCall budget: at least {} management calls (plus gate polling)\nWorst case (every gate times out): {}\n",
            self.batches.len(),
            self.batches
                .iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            self.call_budget,
            self.worst_case
        ));
        s.push_str(if self.passed() {
            "\nAll checks passed: `fleet run --journal FILE` with the same options starts the migration.\n"
        } else {
            "\nA check failed: fix it before `fleet run`.\n"
        });
        s
    }
}

fn check(checks: &mut Vec<Check>, name: &'static str, status: Status, detail: impl Into<String>) {
    checks.push(Check {
        name,
        status,
        detail: detail.into(),
    });
}

/// Token lifetime warning from the JWT `exp` claim (login tokens expire in a week).
pub fn expiry_warning(token: &Secret, server: &str) -> Option<String> {
    let claims = jwt_claims(token)?;
    let exp = claims.get("exp").and_then(Value::as_u64)?;
    let now = crate::journal::now();
    if exp <= now {
        Some(format!("the {server} token expired already"))
    } else if exp - now < 24 * 3600 {
        Some(format!(
            "the {server} token expires in {}; use a Personal Access Token for a long run",
            format_duration(std::time::Duration::from_secs(exp - now))
        ))
    } else {
        None
    }
}

fn list_some(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(10)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > 10 {
        s.push_str(&format!(" … ({} in all)", items.len()));
    }
    s
}

/// Runs every check. `resume` skips the collision check (the journal's devices are on new
/// by design) and the snapshot (the journal holds it).
pub fn preflight(
    old: &Api,
    new: &Api,
    old_token: &Secret,
    new_token: &Secret,
    cfg: &FleetConfig,
    resume: bool,
) -> PreflightReport {
    let mut checks = Vec::new();
    let mut report = PreflightReport {
        old_server: old.client.base_url().to_string(),
        new_server: new.client.base_url().to_string(),
        checks: Vec::new(),
        accepted_on_old: 0,
        selected: 0,
        by_device_type: BTreeMap::new(),
        batches: Vec::new(),
        call_budget: 0,
        worst_case: String::new(),
        snapshot: Vec::new(),
    };

    // 1. Credentials.
    let mut creds_ok = true;
    for (api, token, label) in [(old, old_token, "old"), (new, new_token, "new")] {
        let name: &'static str = if label == "old" {
            "old credentials"
        } else {
            "new credentials"
        };
        match api.check_credentials() {
            Ok(user) => {
                let who = user.map(|u| format!(" as {u}")).unwrap_or_default();
                match expiry_warning(token, label) {
                    Some(w) => check(
                        &mut checks,
                        name,
                        Status::Warn,
                        format!("authenticated{who}; {w}"),
                    ),
                    None => check(
                        &mut checks,
                        name,
                        Status::Pass,
                        format!("authenticated{who}"),
                    ),
                }
            }
            Err(e) => {
                creds_ok = false;
                check(&mut checks, name, Status::Fail, e.to_string());
            }
        }
    }

    // TenantToken route (no server call).
    match cfg.tenant.feasibility() {
        Ok(d) => check(&mut checks, "tenant token route", Status::Pass, d),
        Err(d) => check(&mut checks, "tenant token route", Status::Fail, d),
    }

    // Artifacts (local).
    let artifacts = match ArtifactSet::load(&cfg.artifacts_dir) {
        Ok(set) => {
            if set.problems.is_empty() {
                check(
                    &mut checks,
                    "artifacts",
                    Status::Pass,
                    format!(
                        "{} artifacts in {}",
                        set.artifacts.len(),
                        cfg.artifacts_dir.display()
                    ),
                );
            } else {
                check(
                    &mut checks,
                    "artifacts",
                    Status::Fail,
                    set.problems.join("; "),
                );
            }
            Some(set)
        }
        Err(e) => {
            check(&mut checks, "artifacts", Status::Fail, e);
            None
        }
    };

    if !creds_ok {
        for name in [
            "capacity on new",
            "active deployments",
            "fleet snapshot",
            "collisions on new",
            "artifacts per device type",
        ] {
            check(
                &mut checks,
                name,
                Status::Skipped,
                "needs working credentials",
            );
        }
        report.checks = checks;
        return report;
    }

    // 2. Snapshot of old's accepted devices, in full, before anything changes.
    let mut snapshot = Vec::new();
    let mut problems = Vec::new();
    let mut accepted = 0usize;
    // Old's inventory is read at the same time (both are read-only listings of many pages;
    // their latency, not the orchestrator, sets the pace).
    let (snap, inventory) = std::thread::scope(|s| {
        let inventory = s.spawn(|| old.inventory());
        let snap = old.devices_by_status(Some("accepted"), |d| {
            accepted += 1;
            let sets = d.accepted_sets();
            match sets.as_slice() {
                [one] => snapshot.push(SnapshotDevice {
                    id: d.id.clone(),
                    identity: d.identity_data.clone(),
                    pubkey: one.pubkey.clone(),
                    aid: one.id.clone(),
                    device_type: None,
                    group: None,
                    check_in: d.check_in_time.clone(),
                }),
                [] => problems.push(format!("{}: accepted without an accepted auth set", d.id)),
                _ => problems.push(format!("{}: {} accepted auth sets", d.id, sets.len())),
            }
        });
        let inventory = inventory
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (snap, inventory)
    });
    match (snap, inventory) {
        (Err(e), _) | (_, Err(e)) => {
            check(&mut checks, "fleet snapshot", Status::Fail, e.to_string());
            report.checks = checks;
            return report;
        }
        (Ok(_), Ok(inv)) => {
            for d in &mut snapshot {
                if let Some(f) = inv.get(&d.id) {
                    d.device_type = f.device_type.clone();
                    d.group = f.group.clone();
                }
            }
        }
    }
    report.accepted_on_old = accepted;
    // Selection.
    let mut selected: Vec<SnapshotDevice> = snapshot
        .into_iter()
        .filter(|d| {
            cfg.selection.device_types.is_empty()
                || d.device_type
                    .as_ref()
                    .is_some_and(|t| cfg.selection.device_types.contains(t))
        })
        .filter(|d| {
            cfg.selection.groups.is_empty()
                || d.group
                    .as_ref()
                    .is_some_and(|g| cfg.selection.groups.contains(g))
        })
        .collect();
    if let Some(ids) = &cfg.selection.devices {
        let wanted: BTreeSet<&String> = ids.iter().collect();
        let present: BTreeSet<&String> = selected.iter().map(|d| &d.id).collect();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|id| !present.contains(*id))
            .map(|s| s.to_string())
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "--devices ids not accepted on old (or filtered out): {}",
                list_some(&missing)
            ));
        }
        selected.retain(|d| wanted.contains(&d.id));
    }
    let no_type: Vec<String> = selected
        .iter()
        .filter(|d| d.device_type.is_none())
        .map(|d| d.id.clone())
        .collect();
    if !no_type.is_empty() {
        problems.push(format!(
            "devices without an inventory device_type (cannot pick artifacts): {}",
            list_some(&no_type)
        ));
    }
    for d in &selected {
        *report
            .by_device_type
            .entry(d.device_type.clone().unwrap_or_else(|| "(unknown)".into()))
            .or_insert(0) += 1;
    }
    report.selected = selected.len();
    if !resume {
        if problems.is_empty() {
            check(
                &mut checks,
                "fleet snapshot",
                if selected.is_empty() {
                    Status::Fail
                } else {
                    Status::Pass
                },
                if selected.is_empty() {
                    format!("{accepted} accepted on old, none selected")
                } else {
                    format!(
                        "{accepted} accepted on old (all pages read), {} selected",
                        selected.len()
                    )
                },
            );
        } else {
            check(
                &mut checks,
                "fleet snapshot",
                Status::Fail,
                problems.join("; "),
            );
        }
    }

    // 3. Capacity on new.
    let capacity = (|| -> Result<(Status, String), crate::ApiError> {
        let limit = new.max_devices()?;
        let acc = new.count_devices("accepted")?;
        let pre = new.count_devices("preauthorized")?;
        Ok(match limit {
            None => (
                Status::Warn,
                format!("new has no device limit endpoint; {acc} accepted, {pre} preauthorized"),
            ),
            Some(0) => (
                Status::Pass,
                format!("unlimited; {acc} accepted, {pre} preauthorized"),
            ),
            Some(l) => {
                let free = l.saturating_sub(acc + pre);
                let need = if resume { 0 } else { selected.len() as u64 };
                if free >= need {
                    (Status::Pass, format!("limit {l}, {acc} accepted + {pre} preauthorized, {free} free for {need}"))
                } else {
                    (Status::Fail, format!("limit {l}, {acc} accepted + {pre} preauthorized: only {free} free for {need} devices; raise max_devices on new or select fewer devices"))
                }
            }
        })
    })();
    match capacity {
        Ok((s, d)) => check(&mut checks, "capacity on new", s, d),
        Err(e) => check(&mut checks, "capacity on new", Status::Fail, e.to_string()),
    }

    // 4. Active deployments against the cap.
    let active = (|| -> Result<(u64, u64), crate::ApiError> {
        Ok((old.active_deployments()?, new.active_deployments()?))
    })();
    match active {
        Ok((a_old, a_new)) => {
            let need = 3;
            let cap = cfg.plan.deployment_cap;
            let status = if a_old + need > cap || a_new + need > cap {
                Status::Fail
            } else {
                Status::Pass
            };
            let mut detail = format!(
                "old {a_old}, new {a_new} active or pending (cap {cap}; a batch adds up to {need})"
            );
            if a_old > 0 {
                detail.push_str("; deployments already pending on old run before stage 1 on the devices they target");
            }
            check(&mut checks, "active deployments", status, detail);
        }
        Err(e) => check(
            &mut checks,
            "active deployments",
            Status::Fail,
            e.to_string(),
        ),
    }

    // 5. Identity collisions on new.
    if !resume {
        let mut on_new: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let r = new.devices_by_status(None, |d| {
            let key = canonical_identity(&d.identity_data);
            let sets = d
                .auth_sets
                .iter()
                .map(|a| (a.status.clone(), a.pubkey.clone()))
                .collect();
            on_new.insert(key, sets);
        });
        match r {
            Err(e) => check(
                &mut checks,
                "collisions on new",
                Status::Fail,
                e.to_string(),
            ),
            Ok(n) => {
                let mut same = Vec::new();
                let mut other = Vec::new();
                for d in &selected {
                    if let Some(sets) = on_new.get(&canonical_identity(&d.identity)) {
                        if sets.iter().any(|(_, k)| same_key(k, &d.pubkey)) {
                            same.push(d.id.clone());
                        } else {
                            other.push(d.id.clone());
                        }
                    }
                }
                if same.is_empty() && other.is_empty() {
                    check(
                        &mut checks,
                        "collisions on new",
                        Status::Pass,
                        format!("none among {n} devices on new"),
                    );
                } else {
                    let mut detail = String::new();
                    if !other.is_empty() {
                        detail.push_str(&format!(
                            "identity on new with another key: {}; ",
                            list_some(&other)
                        ));
                    }
                    if !same.is_empty() {
                        detail.push_str(&format!(
                            "already on new with the same key: {}; ",
                            list_some(&same)
                        ));
                    }
                    detail.push_str("remove them on new or leave them out with --devices");
                    check(&mut checks, "collisions on new", Status::Fail, detail);
                }
            }
        }
    }

    // 6. Artifacts for every selected device type.
    if let Some(set) = &artifacts {
        let types: BTreeSet<String> = selected
            .iter()
            .filter_map(|d| d.device_type.clone())
            .collect();
        let mut errs = Vec::new();
        for role in [Role::ModuleInstall, Role::Stage1, Role::Stage2] {
            if let Err(e) = set.names_by_device_type(role) {
                errs.push(e);
            }
        }
        for (t, roles) in set.missing_for(&types) {
            errs.push(format!(
                "device type {t:?} has no {} artifact",
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join("/")
            ));
        }
        if errs.is_empty() {
            check(
                &mut checks,
                "artifacts per device type",
                Status::Pass,
                format!(
                    "module-install, stage 1 and stage 2 for {}",
                    types.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        } else {
            check(
                &mut checks,
                "artifacts per device type",
                Status::Fail,
                errs.join("; "),
            );
        }
    } else {
        check(
            &mut checks,
            "artifacts per device type",
            Status::Skipped,
            "no readable artifacts",
        );
    }

    let plan = &cfg.plan;
    // Devices seen most recently first: the ones that stopped checking in (likely offline)
    // end up in the last batches, so fewer batches wait for stragglers.
    selected.sort_by(|a, b| b.check_in.cmp(&a.check_in).then_with(|| a.id.cmp(&b.id)));
    report.batches = plan.batch_sizes(selected.len());
    let n = selected.len() as u64;
    let b = report.batches.len() as u64;
    // Per device: preauthorize + reject (+ lookups); per batch: 3+ deployments and gate polls.
    report.call_budget = n * 3 + b * 12 + (n / 500 + 1) * 4;
    let per_batch = plan.stage_timeout * 2 + plan.appear_timeout;
    report.worst_case = format_duration(per_batch * (b as u32));
    report.snapshot = selected;
    report.checks = checks;
    report
}
