//! The steps every request passes before the router, outermost first: request id, request
//! log (and the "down" switch), body collection, fault injection, rate limiting, management
//! auth. Handlers only see requests that passed all of them. They run as one middleware
//! ([`pipeline`]): one `from_fn` layer per step cost a cloned service and a boxed future
//! each, per request.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use std::future::Future;

use crate::error::{error_response, REQUEST_ID};
use crate::faults::{Endpoint, FaultAction};
use crate::reqlog::Record;
use crate::routes;
use crate::shared::Shared;
use crate::state::new_id;

/// Marks a response with the device it concerned, for the request log.
#[derive(Clone)]
pub(crate) struct DeviceIdExt(pub(crate) String);

/// Marks a response whose connection must be closed without an answer.
#[derive(Clone, Copy)]
pub(crate) struct DropConnection;

/// Marks a response decided by a fault rule, the rate limiter or the down state.
#[derive(Clone)]
pub(crate) struct FaultNote(pub(crate) String);

/// The principal a management request was authorized as (for PAT endpoints).
#[derive(Clone)]
pub(crate) struct Caller(pub(crate) crate::mgmt_auth::Principal, pub(crate) String);

/// The rest of the pipeline after a step: what the step calls with the request to let it pass.
trait Rest: FnOnce(Request) -> Self::Answer {
    /// The rest's answer, once it has run.
    type Answer: Future<Output = Response>;
}

impl<F: FnOnce(Request) -> A, A: Future<Output = Response>> Rest for F {
    type Answer = A;
}

fn dropped(note: &str) -> Response {
    let mut response = Response::new(Body::empty());
    response.extensions_mut().insert(DropConnection);
    response
        .extensions_mut()
        .insert(FaultNote(note.to_string()));
    response
}

/// Largest request body read into memory (everything but artifact uploads).
const BODY_LIMIT: usize = 16 * 1024 * 1024;

pub(crate) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Every step, in order, then the router: gives the request an id (task-local for error
/// bodies, echoed as `X-MEN-RequestID`) and runs the other steps inside it.
pub(crate) async fn pipeline(
    State(shared): State<Arc<Shared>>,
    req: Request,
    next: Next,
) -> Response {
    let id = new_id();
    let shared = &shared;
    let steps = log_requests(shared, req, |req| {
        collect_body(req, |req| {
            inject_faults(shared, req, |req| {
                rate_limit(shared, req, |req| management_auth(shared, req, next))
            })
        })
    });
    let mut response = REQUEST_ID.scope(id.clone(), steps).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-men-requestid", value);
    }
    response
}

/// Writes one request-log entry per request; while the server is down, drops the connection.
async fn log_requests(shared: &Shared, req: Request, next: impl Rest) -> Response {
    let mut entry = Record::new(req.method(), req.uri().path());
    if !shared.is_up() {
        entry.fault = Some("down".into());
        shared.reqlog.push(entry);
        return dropped("down");
    }
    if entry.path.starts_with(routes::DEVICES_PREFIX) && entry.path != routes::AUTH_REQUESTS {
        entry.device_id = bearer_token(req.headers()).and_then(|t| shared.device_for_token(t));
    } else if entry.path.starts_with(routes::DOWNLOAD_PREFIX) {
        entry.device_id = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("device="))
                .filter(|d| !d.is_empty())
                .map(str::to_string)
        });
    }
    let response = next(req).await;
    if let Some(DeviceIdExt(id)) = response.extensions().get::<DeviceIdExt>() {
        entry.device_id = Some(id.clone());
    }
    if let Some(FaultNote(note)) = response.extensions().get::<FaultNote>() {
        entry.fault = Some(note.clone());
    }
    if response.extensions().get::<DropConnection>().is_none() {
        entry.status = Some(response.status().as_u16());
    }
    shared.reqlog.push(entry);
    response
}

/// Reads small bodies completely before anything answers: answering (404, 401, an injected
/// fault) while a chunked body is still arriving makes hyper close the connection, which the
/// client would see as a transport error instead of the status. Artifact uploads stream.
async fn collect_body(req: Request, next: impl Rest) -> Response {
    if req.uri().path() == routes::ARTIFACTS && req.method() == axum::http::Method::POST {
        return next(req).await;
    }
    let (parts, body) = req.into_parts();
    match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, BODY_LIMIT)).await {
        Ok(collected) => next(Request::from_parts(parts, Body::from(collected.to_bytes()))).await,
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            error_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
        }
        Err(_) => dropped("client disconnected"),
    }
}

/// Applies the first matching fault rule (never to `/admin/…`).
async fn inject_faults(shared: &Shared, req: Request, next: impl Rest) -> Response {
    let path = req.uri().path();
    let endpoint = Endpoint::classify(path);
    let fault = endpoint.and_then(|e| shared.faults.check(e, path, req.method().as_str()));
    match fault {
        None => next(req).await,
        Some(FaultAction::Drop) => dropped("drop"),
        Some(FaultAction::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = error_response(status, "fault injected by mock-mender-server");
            response
                .extensions_mut()
                .insert(FaultNote(format!("status {code}")));
            response
        }
    }
}

/// The per-server token bucket (when `settings.rate_limit` is set) over the paths in its
/// scope: 429 with `Retry-After` and `X-Retry-In`, plain-text or JSON body.
async fn rate_limit(shared: &Shared, req: Request, next: impl Rest) -> Response {
    use crate::settings::{RateLimitBody, RateLimitScope};
    let Some(config) = shared.rate_limit() else {
        return next(req).await;
    };
    let path = req.uri().path();
    let management = path.starts_with(routes::MANAGEMENT_PREFIX);
    let device =
        path.starts_with(routes::DEVICES_PREFIX) || path.starts_with(routes::DOWNLOAD_PREFIX);
    let counted = match config.scope {
        RateLimitScope::Management => management,
        RateLimitScope::Devices => device,
        RateLimitScope::All => management || device,
    };
    if !counted {
        return next(req).await;
    }
    let Err(wait) = shared.limiter.take(&config) else {
        return next(req).await;
    };
    let mut response = match config.body {
        RateLimitBody::Json => error_response(StatusCode::TOO_MANY_REQUESTS, "too many requests"),
        RateLimitBody::Plain => {
            let mut r = Response::new(Body::from("Too Many Requests"));
            *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
            r.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
    };
    let h = response.headers_mut();
    h.insert(
        axum::http::header::RETRY_AFTER,
        HeaderValue::from(crate::ratelimit::retry_after(wait)),
    );
    if let Ok(v) = HeaderValue::from_str(&crate::ratelimit::go_duration(wait)) {
        h.insert("x-retry-in", v);
    }
    response
        .extensions_mut()
        .insert(FaultNote("rate limited".into()));
    response
}

/// `Authorization: Bearer` on `/api/management/…` (except login) and `/admin/…`: 401 JSON
/// otherwise. `/admin/…` takes only the configured token.
async fn management_auth(shared: &Shared, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path.starts_with(routes::ADMIN_PREFIX) {
        let ok = bearer_token(req.headers()).is_some_and(|t| shared.auth.is_admin(t));
        if !ok {
            return error_response(StatusCode::UNAUTHORIZED, "invalid or missing admin token");
        }
    } else if path.starts_with(routes::MANAGEMENT_PREFIX) && path != routes::LOGIN {
        let token = bearer_token(req.headers()).map(str::to_string);
        let checked = match token.as_deref() {
            Some(t) => shared.auth.check(t),
            None => Err(crate::mgmt_auth::Refusal::Unknown),
        };
        match checked {
            Ok(principal) => {
                req.extensions_mut()
                    .insert(Caller(principal, token.unwrap_or_default()));
            }
            Err(refusal) => return error_response(StatusCode::UNAUTHORIZED, refusal.message()),
        }
    }
    next.run(req).await
}
