//! The HTTP/1.1 accept loop, with the limits a public port needs: a cap on open connections (one
//! more is closed as soon as it is accepted; an upgraded WebSocket keeps its place until it
//! closes), the size of a request head (431 past it), a deadline for reading one (slowloris; it
//! also bounds how long a kept-alive connection may sit idle), and a graceful drain on shutdown.
//! `axum::serve` offers none of these knobs, so the loop is written out here on hyper's own
//! connection builder.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// The limits of the HTTP port (`[http]` in the configuration).
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves, then gives open connections up to
/// `drain` to finish their requests.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes);
    // Connections still in their HTTP phase (an upgraded one has left it), and their stop signal.
    let connections = TaskTracker::new();
    let stop = CancellationToken::new();
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let mut last_refusal_logged: Option<Instant> = None;
    let mut refused = 0u64;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    warn!("HTTP accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refused += 1;
            if last_refusal_logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                warn!(%peer, refused, max = limits.max_connections, "HTTP connection limit reached (http.max_connections); closing new connections");
                last_refusal_logged = Some(Instant::now());
                refused = 0;
            }
            metrics::counter!("junction_transport_api_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let io = TokioIo::new(Counted { stream, _permit: permit });
        // The peer address reaches handlers that limit per source (WHIP/WHEP sessions per address).
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            // A Router is always ready, so calling it without `poll_ready` is allowed.
            tower::Service::call(&mut app.clone(), request)
        });
        let connection = builder.serve_connection(io, service).with_upgrades();
        let stop = stop.clone();
        connections.spawn(async move {
            // Errors here are the client's (reset, bad request line, head timeout): nothing to do.
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stop.cancelled() => {}
            }
            // Shutting down: finish the request in progress, take no other.
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        });
    }
    drop(listener);
    stop.cancel();
    connections.close();
    match tokio::time::timeout(drain, connections.wait()).await {
        Ok(()) => info!("HTTP connections drained"),
        Err(_) => warn!("HTTP connections still open after {drain:?}; exiting anyway"),
    }
}

/// A TCP stream that holds one of the connection slots for as long as it lives (through an
/// upgrade too).
struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
