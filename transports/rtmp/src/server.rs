//! The RTMP listener: binds the TCP port and gives every accepted connection its own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use junction_auth::Authority;
use junction_endpoint::Engine;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::RtmpConfig;
use crate::connection::{self, Shared};
use crate::path::APP;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for RTMP on {addr} (rtmp.listen): {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// The running listener.
#[derive(Debug, Clone)]
pub struct RtmpListener {
    pub local_addr: SocketAddr,
}

impl RtmpListener {
    /// What encoders are given: `rtmp://<addr>/live` (the stream key goes after it).
    pub fn url(&self) -> String {
        format!("rtmp://{}/{APP}", self.local_addr)
    }
}

/// Binds `config.listen` and serves RTMP until `shutdown` is cancelled.
pub async fn start(
    engine: Engine,
    authority: Authority,
    config: RtmpConfig,
    shutdown: CancellationToken,
) -> Result<RtmpListener, StartError> {
    let addr = config.listen;
    let listener = TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind { addr, source })?;
    crate::metrics::describe();
    info!(%local_addr, on_duplicate = ?config.on_duplicate, "RTMP listening");
    let shared = Arc::new(Shared { engine, authority, config, shutdown });
    tokio::spawn(accept_loop(listener, shared));
    Ok(RtmpListener { local_addr })
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, remote)) => {
                    // Small control messages (handshake, status) should not wait for Nagle.
                    let _ = socket.set_nodelay(true);
                    tokio::spawn(connection::serve(shared.clone(), socket, remote));
                }
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!("RTMP accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}
