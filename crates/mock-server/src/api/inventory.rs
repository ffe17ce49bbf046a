//! inventory management routes: device lists, the v2 filter search (e.g. on
//! `server_migration_stage` and identity `status`), static groups.

use std::cmp::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::paging::{PagedQuery, Paging, QueryPairs, PER_PAGE_MAX};
use super::{parse_json, JsonBody};
use crate::error::{ApiError, ApiResult};
use crate::routes;
use crate::shared::Shared;
use crate::state::{now_rfc3339, Device};

/// `(scope, name, value)` of every attribute a device has: identity data and `status`
/// (scope `identity`), reported inventory (`inventory`), `group`, `created_ts`, `updated_ts`
/// (`system`).
fn attributes(d: &Device) -> Vec<(&'static str, String, Value)> {
    let mut list: Vec<(&'static str, String, Value)> = d
        .identity_data
        .iter()
        .map(|(k, v)| ("identity", k.clone(), v.clone()))
        .collect();
    list.push(("identity", "status".into(), json!(d.status)));
    list.extend(
        d.inventory
            .iter()
            .map(|(k, v)| ("inventory", k.clone(), v.clone())),
    );
    if let Some(group) = &d.group {
        list.push(("system", "group".into(), json!(group)));
    }
    list.push(("system", "created_ts".into(), json!(d.created_ts)));
    list.push((
        "system",
        "updated_ts".into(),
        json!(d.inventory_updated_ts.as_deref().unwrap_or(&d.updated_ts)),
    ));
    list
}

fn inventory_view(d: &Device, only: Option<&[AttributeRef]>) -> Value {
    let attributes: Vec<Value> = attributes(d)
        .into_iter()
        .filter(|(scope, name, _)| {
            only.is_none_or(|o| o.iter().any(|a| a.scope == *scope && a.attribute == *name))
        })
        .map(|(scope, name, value)| json!({"name": name, "value": value, "scope": scope}))
        .collect();
    json!({
        "id": d.id,
        "updated_ts": d.inventory_updated_ts.as_deref().unwrap_or(&d.updated_ts),
        "attributes": attributes,
    })
}

/// `GET /api/management/v1/inventory/devices?page=&per_page=&group=&has_group=` (default
/// `per_page` 10), `X-Total-Count` and `Link`.
pub(super) async fn inventory_list(
    State(shared): State<Arc<Shared>>,
    paged: PagedQuery<10>,
) -> ApiResult {
    let group = paged.query.get("group").map(str::to_string);
    let has_group = match paged.query.get("has_group") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid has_group {other:?}"
            )))
        }
    };
    let all: Vec<Value> = shared.read(|s| {
        s.devices
            .values()
            .filter(|d| group.as_ref().is_none_or(|g| d.group.as_ref() == Some(g)))
            .filter(|d| has_group.is_none_or(|h| d.group.is_some() == h))
            .map(|d| inventory_view(d, None))
            .collect()
    });
    Ok(paged.respond(routes::INVENTORY_DEVICES, all, true))
}

/// `GET …/inventory/devices/{id}` → every attribute.
pub(super) fn inventory_get(s: &crate::state::State, id: &str) -> Option<Value> {
    s.devices.get(id).map(|d| inventory_view(d, None))
}

#[derive(Deserialize, Clone, Debug)]
pub(super) struct AttributeRef {
    scope: String,
    attribute: String,
}

#[derive(Deserialize, Debug)]
struct Filter {
    scope: String,
    attribute: String,
    #[serde(rename = "type")]
    op: String,
    #[serde(default)]
    value: Value,
}

#[derive(Deserialize, Debug)]
struct SortBy {
    scope: String,
    attribute: String,
    #[serde(default)]
    order: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
struct SearchBody {
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    per_page: Option<usize>,
    #[serde(default)]
    filters: Vec<Filter>,
    #[serde(default)]
    sort: Vec<SortBy>,
    #[serde(default)]
    attributes: Option<Vec<AttributeRef>>,
    #[serde(default)]
    device_ids: Vec<String>,
}

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Whether an attribute value (possibly an array) has an element equal to `v`.
fn has(value: &Value, v: &Value) -> bool {
    match value {
        Value::Array(items) => items.iter().any(|i| i == v),
        other => other == v,
    }
}

/// One filter predicate; `None` as the attribute value means "absent".
fn matches(filter: &Filter, value: Option<&Value>) -> ApiResult<bool> {
    let v = &filter.value;
    let ordered = |want: &[Ordering]| {
        value.is_some_and(|x| match x {
            Value::Array(items) => items
                .iter()
                .any(|i| compare(i, v).is_some_and(|o| want.contains(&o))),
            other => compare(other, v).is_some_and(|o| want.contains(&o)),
        })
    };
    Ok(match filter.op.as_str() {
        "$eq" => value.is_some_and(|x| has(x, v)),
        "$ne" => !value.is_some_and(|x| has(x, v)),
        "$in" | "$nin" => {
            let Value::Array(options) = v else {
                return Err(ApiError::bad_request(format!(
                    "{}: value must be an array",
                    filter.op
                )));
            };
            let any = value.is_some_and(|x| options.iter().any(|o| has(x, o)));
            if filter.op == "$in" {
                any
            } else {
                !any
            }
        }
        "$gt" => ordered(&[Ordering::Greater]),
        "$gte" => ordered(&[Ordering::Greater, Ordering::Equal]),
        "$lt" => ordered(&[Ordering::Less]),
        "$lte" => ordered(&[Ordering::Less, Ordering::Equal]),
        "$exists" => value.is_some() == v.as_bool().unwrap_or(true),
        "$regex" => {
            // Anchored at ^ like the real one; the mock supports literal prefixes only.
            let Some(pattern) = v.as_str() else {
                return Err(ApiError::bad_request("$regex: value must be a string"));
            };
            let literal = pattern.trim_start_matches('^');
            let literal = literal.strip_suffix(".*").unwrap_or(literal);
            if literal.contains(|c: char| "\\.*+?()[]{}|^$".contains(c)) {
                return Err(ApiError::bad_request(
                    "$regex: the mock supports literal prefixes only (e.g. \"^abc\" or \"abc.*\")",
                ));
            }
            value.is_some_and(|x| match x {
                Value::String(s) => s.starts_with(literal),
                Value::Array(items) => items
                    .iter()
                    .any(|i| i.as_str().is_some_and(|s| s.starts_with(literal))),
                _ => false,
            })
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid filter type {other:?}"
            )))
        }
    })
}

fn lookup<'a>(
    attrs: &'a [(&'static str, String, Value)],
    scope: &str,
    name: &str,
) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|(s, n, _)| *s == scope && n == name)
        .map(|(_, _, v)| v)
}

/// `POST /api/management/v2/inventory/filters/search`: predicates ANDed, `page`/`per_page`
/// in the body (≤ 500), optional `device_ids`, `sort` and `attributes`; `X-Total-Count`
/// and `Link`.
pub(super) async fn search(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let req: SearchBody = if body.iter().all(u8::is_ascii_whitespace) {
        SearchBody::default()
    } else {
        parse_json(&body)?
    };
    let page = req.page.unwrap_or(1);
    let per_page = req.per_page.unwrap_or(20);
    if page < 1 || !(1..=PER_PAGE_MAX).contains(&per_page) {
        return Err(ApiError::bad_request(format!(
            "page must be ≥ 1 and per_page 1..={PER_PAGE_MAX}"
        )));
    }
    for f in &req.filters {
        if !["inventory", "identity", "system", "tags", "monitor"].contains(&f.scope.as_str()) {
            return Err(ApiError::bad_request(format!(
                "invalid scope {:?}",
                f.scope
            )));
        }
    }
    let rows: ApiResult<Vec<(Vec<Value>, Value)>> = shared.read(|s| {
        let mut rows = Vec::new();
        for d in s.devices.values() {
            if !req.device_ids.is_empty() && !req.device_ids.contains(&d.id) {
                continue;
            }
            let attrs = attributes(d);
            let mut ok = true;
            for f in &req.filters {
                if !matches(f, lookup(&attrs, &f.scope, &f.attribute))? {
                    ok = false;
                    break;
                }
            }
            if ok {
                let keys: Vec<Value> = req
                    .sort
                    .iter()
                    .map(|k| {
                        lookup(&attrs, &k.scope, &k.attribute)
                            .cloned()
                            .unwrap_or(Value::Null)
                    })
                    .collect();
                rows.push((keys, inventory_view(d, req.attributes.as_deref())));
            }
        }
        Ok(rows)
    });
    let mut rows = rows?;
    rows.sort_by(|(a, _), (b, _)| {
        for (i, k) in req.sort.iter().enumerate() {
            let o = compare(&a[i], &b[i]).unwrap_or(Ordering::Equal);
            let o = if k.order.as_deref() == Some("desc") {
                o.reverse()
            } else {
                o
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
    let all: Vec<Value> = rows.into_iter().map(|(_, v)| v).collect();
    let paging = Paging { page, per_page };
    Ok(paging.respond(
        routes::INVENTORY_SEARCH_V2,
        &QueryPairs::default(),
        all,
        true,
    ))
}

#[derive(Deserialize)]
pub(super) struct GroupBody {
    group: String,
}

fn valid_group(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 1024
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid group name {name:?} (letters, digits, - and _ only)"
        )))
    }
}

/// `PUT …/inventory/devices/{id}/group` `{"group": name}` → 204 (one group per device).
pub(super) async fn device_group_put(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<GroupBody>,
) -> ApiResult {
    valid_group(&req.group)?;
    change_group(&shared, &id, "device not found", |d| {
        d.group = Some(req.group);
        d.inventory_updated_ts = Some(now_rfc3339());
        true
    })
}

/// `DELETE …/inventory/devices/{id}/group/{name}` → 204; 404 if not in that group.
pub(super) async fn device_group_delete(
    State(shared): State<Arc<Shared>>,
    Path((id, name)): Path<(String, String)>,
) -> ApiResult {
    change_group(&shared, &id, "device not found in that group", |d| {
        let member = d.group.as_deref() == Some(name.as_str());
        if member {
            d.group = None;
        }
        member
    })
}

/// Applies `change` to device `id`'s group: 204 when the device exists and `change` applies,
/// else 404 `not_found`.
fn change_group(
    shared: &Shared,
    id: &str,
    not_found: &str,
    change: impl FnOnce(&mut Device) -> bool,
) -> ApiResult {
    if shared.write(|s| s.devices.get_mut(id).is_some_and(change))? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(not_found))
    }
}

/// `GET …/inventory/groups` → group names.
pub(super) async fn groups_list(State(shared): State<Arc<Shared>>) -> ApiResult {
    let groups: std::collections::BTreeSet<String> =
        shared.read(|s| s.devices.values().filter_map(|d| d.group.clone()).collect());
    Ok(Json(groups).into_response())
}

/// `GET …/inventory/groups/{name}/devices?page=&per_page=` → device ids, `X-Total-Count`;
/// 404 for a group without devices.
pub(super) async fn group_devices(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    paged: PagedQuery,
) -> ApiResult {
    let all: Vec<Value> = shared.read(|s| {
        s.devices
            .values()
            .filter(|d| d.group.as_deref() == Some(name.as_str()))
            .map(|d| json!(d.id))
            .collect()
    });
    if all.is_empty() {
        return Err(ApiError::not_found("group not found"));
    }
    let path = format!("/api/management/v1/inventory/groups/{name}/devices");
    Ok(paged.respond(&path, all, true))
}

/// `PATCH …/inventory/groups/{name}/devices` `["id", …]` → `{updated_count, matched_count}`
/// (unknown ids are skipped; members keep their membership).
pub(super) async fn group_add(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult {
    valid_group(&name)?;
    let ids: Vec<String> = parse_json(&body)?;
    let (matched, updated) = shared.write(|s| {
        let (mut matched, mut updated) = (0, 0);
        for id in &ids {
            if let Some(d) = s.devices.get_mut(id) {
                matched += 1;
                if d.group.as_deref() != Some(name.as_str()) {
                    d.group = Some(name.clone());
                    updated += 1;
                }
            }
        }
        (matched, updated)
    })?;
    Ok(Json(json!({"updated_count": updated, "matched_count": matched})).into_response())
}

/// `DELETE …/inventory/groups/{name}/devices` `["id", …]` → `{updated_count}`.
pub(super) async fn group_remove(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    JsonBody(ids): JsonBody<Vec<String>>,
) -> ApiResult {
    let updated = shared.write(|s| {
        let mut updated = 0;
        for id in &ids {
            if let Some(d) = s.devices.get_mut(id) {
                if d.group.as_deref() == Some(name.as_str()) {
                    d.group = None;
                    updated += 1;
                }
            }
        }
        updated
    })?;
    Ok(Json(json!({ "updated_count": updated })).into_response())
}
