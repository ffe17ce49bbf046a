//! The server process side: the accept loop (plain or TLS), going down and coming back, and
//! the hyper service that runs the router and closes connections on request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::api;
use crate::layers;
use crate::shared::Shared;

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
    let service = hyper::service::service_fn(move |req| handle(router.clone(), req));
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

/// Runs the application (routes + layers); a response marked [`layers::DropConnection`]
/// closes the connection instead of answering.
async fn handle(router: Router, req: Request<Incoming>) -> Result<Response<Body>, DropConnection> {
    let result: Result<Response<Body>, Infallible> = router.oneshot(req.map(Body::new)).await;
    let response = match result {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if response
        .extensions()
        .get::<layers::DropConnection>()
        .is_some()
    {
        return Err(DropConnection);
    }
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
