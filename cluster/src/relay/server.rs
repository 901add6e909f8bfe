//! The relay's listening side: other nodes dial in, prove the cluster secret, and pull this
//! node's tracks. Each wanted track gets a unidirectional stream fed from the room's origin
//! task; a link is capped in tracks, and the number of links is capped too.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use junction_core::{MediaFrame, RoomId, TrackId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::wire::{self, Control, FrameHeader, StreamHead, code};
use crate::Shared;
use crate::rooms::origin::{LinkId, OriginCmd, OriginHandle};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Accepts relay connections until `shutdown`.
pub(crate) async fn serve(endpoint: quinn::Endpoint, shared: Arc<Shared>, shutdown: CancellationToken) {
    let links = Arc::new(AtomicUsize::new(0));
    let next_id = Arc::new(AtomicU64::new(1));
    loop {
        let incoming = tokio::select! {
            _ = shutdown.cancelled() => break,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        if links.load(Ordering::Relaxed) >= shared.config.max_relay_links {
            warn!(remote = %incoming.remote_address(), "relay: connection refused, cluster.max_relay_links reached");
            incoming.refuse();
            continue;
        }
        links.fetch_add(1, Ordering::Relaxed);
        let (shared, links, id) = (shared.clone(), links.clone(), next_id.fetch_add(1, Ordering::Relaxed));
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            if junction_engine::supervise::contain("relay", serve_link(incoming, shared, id)).await.is_err() {
                warn!(%remote, "relay: link task failed; link closed");
            }
            links.fetch_sub(1, Ordering::Relaxed);
        });
    }
    endpoint.close(quinn::VarInt::from_u32(code::DONE), b"shutting down");
}

/// Reads one length-prefixed JSON message (a control message, a stream head).
pub(crate) async fn read_json<T: for<'de> serde::Deserialize<'de>>(recv: &mut quinn::RecvStream) -> Result<T, String> {
    let mut prefix = [0u8; 4];
    recv.read_exact(&mut prefix).await.map_err(|e| e.to_string())?;
    let len = wire::checked_len(prefix, wire::MAX_CONTROL_BYTES).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    wire::decode_json(&body).map_err(|e| e.to_string())
}

async fn read_control(recv: &mut quinn::RecvStream) -> Result<Control, String> {
    read_json(recv).await
}

async fn handshake(
    incoming: quinn::Incoming,
    shared: &Shared,
) -> Result<(quinn::Connection, quinn::SendStream, quinn::RecvStream, String), (u32, String)> {
    let connection = incoming.await.map_err(|e| (code::PROTOCOL, e.to_string()))?;
    let (mut send, mut recv) = connection.accept_bi().await.map_err(|e| (code::PROTOCOL, e.to_string()))?;
    let Control::Hello { node, unix_ms, mac } = read_control(&mut recv).await.map_err(|e| (code::PROTOCOL, e))? else {
        connection.close(quinn::VarInt::from_u32(code::PROTOCOL), b"expected hello");
        return Err((code::PROTOCOL, "first message is not a hello".into()));
    };
    let now_ms = unix_us() / 1000;
    if !wire::verify_hello(&shared.secret, &node, unix_ms, &mac, now_ms) {
        connection.close(quinn::VarInt::from_u32(code::UNAUTHORIZED), b"bad cluster secret or clock");
        return Err((code::UNAUTHORIZED, format!("hello from {node:?} refused (cluster secret or clock skew)")));
    }
    let welcome = wire::encode_json(&Control::Welcome { node: shared.id.clone() });
    send.write_all(&welcome).await.map_err(|e| (code::PROTOCOL, e.to_string()))?;
    Ok((connection, send, recv, node))
}

async fn serve_link(incoming: quinn::Incoming, shared: Arc<Shared>, link: LinkId) {
    let remote = incoming.remote_address();
    let (connection, _send, mut recv, node) =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(incoming, &shared)).await {
            Ok(Ok(accepted)) => accepted,
            Ok(Err((code, why))) => {
                warn!(%remote, code, "relay: link refused: {why}");
                metrics::counter!("junction_relay_links_refused_total").increment(1);
                return;
            }
            Err(_) => {
                warn!(%remote, "relay: no hello within {HANDSHAKE_TIMEOUT:?}; dropped");
                return;
            }
        };
    info!(%remote, node, "relay: link up");
    let mut wants: HashMap<(RoomId, TrackId), OriginHandle> = HashMap::new();
    let reason = loop {
        let message = tokio::select! {
            message = read_control(&mut recv) => message,
            closed = connection.closed() => break closed.to_string(),
        };
        let message = match message {
            Ok(message) => message,
            Err(why) => {
                connection.close(quinn::VarInt::from_u32(code::PROTOCOL), b"bad control message");
                break why;
            }
        };
        match message {
            Control::Want { room, track, layer } => {
                let key = (room.clone(), track.clone());
                if !wants.contains_key(&key) && wants.len() >= shared.config.max_relayed_tracks {
                    connection.close(quinn::VarInt::from_u32(code::EXCESSIVE_LOAD), b"too many relayed tracks");
                    break "cluster.max_relayed_tracks reached".into();
                }
                let Some(origin) = shared.rooms.origin(&room) else {
                    debug!(room = %room, track = %track, node, "relay: wanted track of a room not here");
                    continue;
                };
                let (sink, frames) = OriginHandle::sink();
                origin.send(OriginCmd::Want { track: track.clone(), link, layer, sink });
                tokio::spawn(send_track(connection.clone(), StreamHead { room, track }, frames));
                wants.insert(key, origin);
            }
            Control::Drop { room, track } => {
                if let Some(origin) = wants.remove(&(room, track.clone())) {
                    origin.send(OriginCmd::Drop { track, link });
                }
            }
            Control::Keyframe { room, track, .. } => {
                if let Some(origin) = wants.get(&(room, track.clone())) {
                    origin.send(OriginCmd::Keyframe { track });
                }
            }
            Control::Bitrate { room, track, bps } => {
                if let Some(origin) = wants.get(&(room, track.clone())) {
                    origin.send(OriginCmd::Bitrate { track, bps });
                }
            }
            Control::Hello { .. } | Control::Welcome { .. } => {
                connection.close(quinn::VarInt::from_u32(code::PROTOCOL), b"unexpected control message");
                break "unexpected control message".into();
            }
        }
    };
    for ((_, track), origin) in wants {
        origin.send(OriginCmd::Drop { track, link });
    }
    info!(%remote, node, "relay: link down: {reason}");
}

/// Writes one track's frames to a stream of its own until the origin stops feeding it.
async fn send_track(connection: quinn::Connection, head: StreamHead, mut frames: mpsc::Receiver<MediaFrame>) {
    let Ok(mut stream) = connection.open_uni().await else { return };
    if stream.write_all(&wire::encode_json(&head)).await.is_err() {
        return;
    }
    metrics::gauge!("junction_relay_tracks_out").increment(1.0);
    let mut buf = BytesMut::new();
    while let Some(frame) = frames.recv().await {
        buf.clear();
        let header = FrameHeader {
            keyframe: frame.keyframe,
            layer: frame.layer,
            ticks: frame.time.ticks,
            rate: frame.time.rate,
            sent_unix_us: unix_us(),
            age_us: frame.arrival.elapsed().as_micros().min(u32::MAX as u128) as u32,
            len: frame.payload.len() as u32,
        };
        header.encode(&mut buf);
        let sent = stream.write_all(&buf).await.and(stream.write_all(&frame.payload).await);
        if sent.is_err() {
            break;
        }
        metrics::counter!("junction_relay_bytes_out_total").increment((buf.len() + frame.payload.len()) as u64);
    }
    let _ = stream.finish();
    metrics::gauge!("junction_relay_tracks_out").decrement(1.0);
}
