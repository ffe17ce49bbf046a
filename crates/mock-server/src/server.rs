//! The server process side: shared state, the accept loop (plain or TLS), going down and
//! coming back, and the per-request wrapper that applies faults, management auth and logging.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::api::{self, ApiError, DeviceIdExt, REQUEST_ID};
use crate::faults::{Endpoint, FaultAction, Faults};
use crate::reqlog::{RequestLog, RequestLogEntry};
use crate::state::{new_id, now_rfc3339, Persistence, State};

/// Everything the request handlers share.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) management_token: String,
    /// Base of artifact `source.uri` links, without a trailing slash.
    pub(crate) public_url: String,
    pub(crate) artifacts_dir: PathBuf,
    pub(crate) faults: Faults,
    pub(crate) reqlog: RequestLog,
    state: Mutex<State>,
    generation: AtomicU64,
    persistence: Persistence,
    up: watch::Sender<bool>,
}

impl Shared {
    pub(crate) fn new(
        name: String,
        management_token: String,
        public_url: String,
        artifacts_dir: PathBuf,
        reqlog: RequestLog,
        persistence: Persistence,
        state: State,
    ) -> Self {
        Self {
            name,
            management_token,
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
        let device_id = state.tokens.get(token)?.clone();
        if let Some(device) = state.devices.get_mut(&device_id) {
            device.check_in_time = Some(now_rfc3339());
        }
        Some(device_id)
    }

    fn device_for_token(&self, token: &str) -> Option<String> {
        self.read(|s| {
            s.tokens
                .get(token)
                .or_else(|| s.revoked_tokens.get(token))
                .cloned()
        })
    }

    pub(crate) fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    pub(crate) fn is_up(&self) -> bool {
        *self.up.borrow()
    }
}

/// Returned to hyper to close a connection without answering.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for DropConnection {}

/// Accepts connections until shutdown. While the server is "down" the listener is closed
/// (connection refused) and open connections are cut; coming back rebinds `addr`.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let router = api::router(shared.clone());
    let mut up_rx = shared.up.subscribe();
    let mut listener = Some(listener);
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !*up_rx.borrow_and_update() {
            listener = None;
            tokio::select! {
                _ = up_rx.changed() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        if listener.is_none() {
            match bind(addr).and_then(TcpListener::from_std) {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    // The port may still be held by a closing socket; try again shortly.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let current = listener.as_ref().expect("bound above");
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = up_rx.changed() => continue,
            accepted = current.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let router = router.clone();
                    let tls = tls.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        match tls {
                            None => serve_connection(stream, shared, router, shutdown).await,
                            Some(acceptor) => {
                                if let Ok(stream) = acceptor.accept(stream).await {
                                    serve_connection(stream, shared, router, shutdown).await;
                                }
                            }
                        }
                    });
                }
                // Out of file descriptors or similar: back off instead of spinning.
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            },
        }
    }
}

async fn serve_connection<I>(
    io: I,
    shared: Arc<Shared>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut up_rx = shared.up.subscribe();
    let service_shared = shared.clone();
    let service =
        hyper::service::service_fn(move |req| handle(service_shared.clone(), router.clone(), req));
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    let going_down = async {
        loop {
            if !*up_rx.borrow_and_update() || *shutdown.borrow() {
                return;
            }
            tokio::select! {
                r = up_rx.changed() => if r.is_err() { return },
                r = shutdown.changed() => if r.is_err() { return },
            }
        }
    };
    tokio::select! {
        _ = conn => {}
        _ = going_down => {}
    }
}

/// Largest request body read into memory (everything but artifact uploads).
const BODY_LIMIT: usize = 16 * 1024 * 1024;

fn is_management_path(path: &str) -> bool {
    path.starts_with("/api/management/") || path.starts_with("/admin/")
}

async fn handle(
    shared: Arc<Shared>,
    router: Router,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let path = req.uri().path().to_string();
    let method = req.method().as_str().to_string();
    let mut entry = RequestLogEntry {
        time: now_rfc3339(),
        server: shared.name.clone(),
        method,
        path,
        status: None,
        device_id: None,
        fault: None,
    };
    if !shared.is_up() {
        entry.fault = Some("down".into());
        shared.reqlog.push(entry);
        return Err(DropConnection);
    }
    // Read small bodies completely before answering anything: answering (404, 401, an
    // injected fault) while a chunked body is still arriving makes hyper close the
    // connection, which the client would see as a transport error instead of the status.
    let is_upload = entry.path == "/api/management/v1/deployments/artifacts";
    let req = if is_upload {
        req.map(Body::new)
    } else {
        let (parts, body) = req.into_parts();
        match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, BODY_LIMIT)).await
        {
            Ok(collected) => Request::from_parts(parts, Body::from(collected.to_bytes())),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                let response = REQUEST_ID
                    .scope(new_id(), async {
                        api::error_response(StatusCode::PAYLOAD_TOO_LARGE, "request body too large")
                    })
                    .await;
                entry.status = Some(response.status().as_u16());
                shared.reqlog.push(entry);
                return Ok(response);
            }
            Err(_) => {
                entry.fault = Some("client disconnected".into());
                shared.reqlog.push(entry);
                return Err(DropConnection);
            }
        }
    };
    let endpoint = Endpoint::classify(&entry.path);
    let bearer = api::bearer_token(req.headers()).map(str::to_string);
    if entry.path.starts_with("/api/devices/") && endpoint != Some(Endpoint::Auth) {
        entry.device_id = bearer.as_deref().and_then(|t| shared.device_for_token(t));
    } else if endpoint == Some(Endpoint::Download) {
        entry.device_id = req.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("device="))
                .filter(|d| !d.is_empty())
                .map(str::to_string)
        });
    }
    let request_id = new_id();
    let fault = endpoint.and_then(|e| shared.faults.check(e, &entry.method));
    let response = match fault {
        Some(FaultAction::Drop) => {
            entry.fault = Some("drop".into());
            shared.reqlog.push(entry);
            return Err(DropConnection);
        }
        Some(FaultAction::Status(code)) => {
            entry.fault = Some(format!("status {code}"));
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            REQUEST_ID
                .scope(request_id.clone(), async {
                    api::error_response(status, "fault injected by mock-mender-server")
                })
                .await
        }
        None if is_management_path(&entry.path)
            && bearer.as_deref() != Some(shared.management_token.as_str()) =>
        {
            REQUEST_ID
                .scope(request_id.clone(), async {
                    api::error_response(
                        StatusCode::UNAUTHORIZED,
                        "invalid or missing management token",
                    )
                })
                .await
        }
        None => {
            let result: Result<Response<Body>, Infallible> = REQUEST_ID
                .scope(request_id.clone(), router.oneshot(req))
                .await;
            match result {
                Ok(r) => r,
                Err(never) => match never {},
            }
        }
    };
    let mut response = response;
    if let Some(DeviceIdExt(id)) = response.extensions().get::<DeviceIdExt>() {
        entry.device_id = Some(id.clone());
    }
    if let Ok(value) = request_id.parse() {
        response.headers_mut().insert("x-men-requestid", value);
    }
    entry.status = Some(response.status().as_u16());
    shared.reqlog.push(entry);
    Ok(response)
}

/// Binds a non-blocking listener with SO_REUSEADDR and a backlog deep enough for thousands
/// of devices connecting at once (std's default backlog is 128).
pub(crate) fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(4096)?;
    listener.into_std()
}

/// Address and scheme the server is reachable at.
pub(crate) fn local_url(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    let ip = if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => "127.0.0.1".to_string(),
            SocketAddr::V6(_) => "[::1]".to_string(),
        }
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("{scheme}://{ip}:{}", addr.port())
}
