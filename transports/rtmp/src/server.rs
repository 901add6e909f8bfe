//! The RTMP listener: binds the TCP port, admits each accepted connection through the
//! connection caps (`rtmp.max_connections`, `rtmp.max_connections_per_ip`) and gives it its own
//! task, whose panic is contained to that connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use junction_auth::Authority;
use junction_engine::Engine;
use junction_engine::gate::ConnectionGate;
use junction_transport_api::{IngressUrls, Service, Started, TransportContext};
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

/// Starts RTMP (unless `rtmp.enabled` is off): binds `rtmp.listen` and serves until the server
/// shuts down; the banner line and the ingress URL go back to the server.
pub async fn start(ctx: &TransportContext, config: &RtmpConfig) -> Result<Started, StartError> {
    if !config.enabled {
        return Ok(Started::default());
    }
    let listener = listen(ctx.engine.clone(), ctx.authority.clone(), config.clone(), ctx.shutdown.clone()).await?;
    Ok(Started {
        services: vec![Service { name: "rtmp", url: listener.url(), about: "RTMP ingest (OBS, ffmpeg) and playback" }],
        ingress_urls: IngressUrls { rtmp: Some(listener.url()), ..IngressUrls::default() },
        ..Started::default()
    })
}

/// Binds `config.listen` and serves RTMP until `shutdown` is cancelled ([`start`] without the
/// server around it).
pub async fn listen(
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
    let gate = ConnectionGate::new("rtmp", config.max_connections, config.max_connections_per_ip);
    let shared = Arc::new(Shared { engine, authority, config, shutdown });
    tokio::spawn(accept_loop(listener, gate, shared));
    Ok(RtmpListener { local_addr })
}

async fn accept_loop(listener: TcpListener, gate: ConnectionGate, shared: Arc<Shared>) {
    let mut refused = 0u64;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, remote)) => match gate.admit(remote.ip()) {
                    Ok(permit) => {
                        // Small control messages (handshake, status) should not wait for Nagle.
                        let _ = socket.set_nodelay(true);
                        tokio::spawn(connection::serve(shared.clone(), socket, remote, permit));
                    }
                    Err(refusal) => {
                        // Before the RTMP handshake there is no way to say why: the socket is
                        // closed. Logged at the first refusal and then at powers of two.
                        refused += 1;
                        if refused.is_power_of_two() {
                            warn!(%remote, refused, "RTMP connection refused: {refusal}");
                        }
                        drop(socket);
                    }
                },
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!("RTMP accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}
