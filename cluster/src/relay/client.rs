//! The relay's dialing side: one link per origin node, opened when a mirrored track here first
//! gets a subscriber, carrying `Want`/`Drop` as demand comes and goes, and the subscribers'
//! keyframe requests and bitrate hints. Frames arriving on the link's streams go into the
//! mirrored tracks' publishers. A broken link is redialled while anything is wanted from it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_core::{MediaFrame, MediaTime, RoomId, TrackId};
use junction_engine::TrackPublisher;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::server::{read_json, unix_us};
use super::tls;
use super::wire::{self, Control, FRAME_HEADER_BYTES, FrameHeader, StreamHead};
use crate::Shared;

const REDIAL: Duration = Duration::from_millis(500);

type Wants = Arc<Mutex<HashMap<(RoomId, TrackId), (u8, TrackPublisher)>>>;

enum LinkCmd {
    /// What is wanted changed: bring the origin in line.
    Changed,
    Control(Control),
}

struct LinkHandle {
    tx: mpsc::UnboundedSender<LinkCmd>,
    wants: Wants,
}

/// The links this node dialled, by origin node.
#[derive(Default)]
pub(crate) struct Links {
    links: Mutex<HashMap<String, LinkHandle>>,
    /// Set once at start: the node's shared state and its QUIC endpoint.
    context: OnceLock<(Weak<Shared>, quinn::Endpoint)>,
}

impl Links {
    pub fn start(&self, shared: &Arc<Shared>, endpoint: quinn::Endpoint) {
        let _ = self.context.set((Arc::downgrade(shared), endpoint));
    }

    fn link(&self, node: &str) -> Option<(mpsc::UnboundedSender<LinkCmd>, Wants)> {
        let mut links = self.links.lock();
        if let Some(link) = links.get(node).filter(|l| !l.tx.is_closed()) {
            return Some((link.tx.clone(), link.wants.clone()));
        }
        let (shared, endpoint) = self.context.get()?;
        let shared = shared.upgrade()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let wants: Wants = Arc::default();
        tokio::spawn(run_link(shared, endpoint.clone(), node.to_owned(), wants.clone(), rx));
        links.insert(node.to_owned(), LinkHandle { tx: tx.clone(), wants: wants.clone() });
        Some((tx, wants))
    }

    /// Forgets the link to a node that died (its task ends with nothing left to want).
    pub fn forget(&self, node: &str) {
        self.links.lock().remove(node);
    }

    /// Starts (`Some((layer, publisher))`) or stops pulling a track from `node`.
    pub fn want(&self, node: &str, room: &RoomId, track: &TrackId, want: Option<(u8, TrackPublisher)>) {
        let Some((tx, wants)) = self.link(node) else { return };
        let key = (room.clone(), track.clone());
        let changed = {
            let mut wants = wants.lock();
            match want {
                Some((layer, publisher)) => {
                    let same = wants.get(&key).is_some_and(|(l, _)| *l == layer);
                    wants.insert(key, (layer, publisher));
                    !same
                }
                None => wants.remove(&key).is_some(),
            }
        };
        if changed {
            let _ = tx.send(LinkCmd::Changed);
        }
    }

    pub fn keyframe(&self, node: &str, room: &RoomId, track: &TrackId, layer: u8) {
        self.control(node, Control::Keyframe { room: room.clone(), track: track.clone(), layer });
    }

    pub fn bitrate(&self, node: &str, room: &RoomId, track: &TrackId, bps: u64) {
        self.control(node, Control::Bitrate { room: room.clone(), track: track.clone(), bps });
    }

    fn control(&self, node: &str, message: Control) {
        if let Some(link) = self.links.lock().get(node) {
            let _ = link.tx.send(LinkCmd::Control(message));
        }
    }
}

async fn run_link(
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    node: String,
    wants: Wants,
    mut cmds: mpsc::UnboundedReceiver<LinkCmd>,
) {
    let mut logged = false;
    loop {
        if wants.lock().is_empty() {
            // Nothing wanted: wait for demand before dialling.
            match cmds.recv().await {
                Some(_) => continue,
                None => return,
            }
        }
        let connected = match dial(&shared, &endpoint, &node).await {
            Ok(connected) => connected,
            Err(why) => {
                if !logged {
                    warn!(node, "relay: cannot reach node: {why}; retrying");
                    logged = true;
                }
                tokio::time::sleep(REDIAL).await;
                while let Ok(cmd) = cmds.try_recv() {
                    drop(cmd);
                }
                continue;
            }
        };
        logged = false;
        let (connection, mut send) = connected;
        info!(node, "relay: link to node up");
        metrics::gauge!("junction_relay_links").increment(1.0);
        let mut sent: HashMap<(RoomId, TrackId), u8> = HashMap::new();
        let result = async {
            sync_wants(&wants, &mut sent, &mut send).await?;
            loop {
                tokio::select! {
                    cmd = cmds.recv() => match cmd {
                        Some(LinkCmd::Changed) => sync_wants(&wants, &mut sent, &mut send).await?,
                        Some(LinkCmd::Control(message)) => send.write_all(&wire::encode_json(&message)).await.map_err(|e| e.to_string())?,
                        None => return Ok::<(), String>(()),
                    },
                    stream = connection.accept_uni() => {
                        let stream = stream.map_err(|e| e.to_string())?;
                        tokio::spawn(receive_track(stream, wants.clone()));
                    }
                }
            }
        }
        .await;
        metrics::gauge!("junction_relay_links").decrement(1.0);
        match result {
            Ok(()) => {
                connection.close(quinn::VarInt::from_u32(wire::code::DONE), b"done");
                return;
            }
            Err(why) => info!(node, "relay: link to node lost: {why}"),
        }
        tokio::time::sleep(REDIAL).await;
    }
}

/// Sends the Want/Drop messages that bring the origin in line with `wants`.
async fn sync_wants(
    wants: &Wants,
    sent: &mut HashMap<(RoomId, TrackId), u8>,
    send: &mut quinn::SendStream,
) -> Result<(), String> {
    let now: HashMap<(RoomId, TrackId), u8> = wants.lock().iter().map(|(k, (layer, _))| (k.clone(), *layer)).collect();
    let mut messages = Vec::new();
    for (key, layer) in &now {
        if sent.get(key) != Some(layer) {
            messages.push(Control::Want { room: key.0.clone(), track: key.1.clone(), layer: *layer });
        }
    }
    for key in sent.keys() {
        if !now.contains_key(key) {
            messages.push(Control::Drop { room: key.0.clone(), track: key.1.clone() });
        }
    }
    *sent = now;
    for message in messages {
        send.write_all(&wire::encode_json(&message)).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

async fn dial(
    shared: &Arc<Shared>,
    endpoint: &quinn::Endpoint,
    node: &str,
) -> Result<(quinn::Connection, quinn::SendStream), String> {
    let info = shared.node(node).ok_or_else(|| "not in the registry".to_owned())?;
    let addr: SocketAddr = info.relay.parse().map_err(|_| format!("bad relay address {:?}", info.relay))?;
    let config = tls::client(&info.relay_cert_sha256).map_err(|e| e.to_string())?;
    let attempt = async {
        let connection = endpoint
            .connect_with(config, addr, "junction-relay")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        let unix_ms = unix_us() / 1000;
        let hello = Control::Hello {
            node: shared.id.clone(),
            unix_ms,
            mac: wire::hello_mac(&shared.secret, &shared.id, unix_ms),
        };
        send.write_all(&wire::encode_json(&hello)).await.map_err(|e| e.to_string())?;
        match read_json::<Control>(&mut recv).await? {
            Control::Welcome { node: answered } if answered == node => Ok((connection, send)),
            other => Err(format!("unexpected answer to hello: {other:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.map_err(|_| "handshake timed out".to_owned())?
}

/// Reads one track's frames into its mirrored publisher.
async fn receive_track(mut stream: quinn::RecvStream, wants: Wants) {
    let head: StreamHead = match read_json(&mut stream).await {
        Ok(head) => head,
        Err(why) => {
            debug!("relay: bad track stream: {why}");
            let _ = stream.stop(quinn::VarInt::from_u32(wire::code::PROTOCOL));
            return;
        }
    };
    let Some(publisher) = wants.lock().get(&(head.room.clone(), head.track.clone())).map(|(_, p)| p.clone()) else {
        let _ = stream.stop(quinn::VarInt::from_u32(wire::code::DONE));
        return;
    };
    let codec = publisher.info().codec;
    metrics::gauge!("junction_relay_tracks_in").increment(1.0);
    let latency = metrics::histogram!("junction_relay_latency_seconds");
    let mut header = [0u8; FRAME_HEADER_BYTES];
    loop {
        if stream.read_exact(&mut header).await.is_err() {
            break;
        }
        let Ok(fields) = FrameHeader::decode(&header) else {
            let _ = stream.stop(quinn::VarInt::from_u32(wire::code::PROTOCOL));
            break;
        };
        let mut payload = vec![0u8; fields.len as usize];
        if stream.read_exact(&mut payload).await.is_err() {
            break;
        }
        let transit_us = unix_us().saturating_sub(fields.sent_unix_us);
        latency.record(transit_us as f64 / 1e6);
        metrics::counter!("junction_relay_bytes_in_total").increment((FRAME_HEADER_BYTES + payload.len()) as u64);
        let age = Duration::from_micros(transit_us.min(1_000_000) + fields.age_us as u64);
        let now = Instant::now();
        let arrival = now.checked_sub(age).unwrap_or(now);
        let frame = MediaFrame {
            codec,
            time: MediaTime::new(fields.ticks, fields.rate),
            keyframe: fields.keyframe,
            layer: fields.layer,
            arrival,
            // The relay carries the frame's age, not its capture time.
            captured: arrival,
            payload: Bytes::from(payload),
        };
        if publisher.send(frame).is_err() {
            let _ = stream.stop(quinn::VarInt::from_u32(wire::code::DONE));
            break;
        }
    }
    metrics::gauge!("junction_relay_tracks_in").decrement(1.0);
}
