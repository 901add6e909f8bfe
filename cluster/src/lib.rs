//! Cluster mode: many Junction nodes sharing one Redis. Each node registers itself with a
//! heartbeat and its load ([`registry`]), publishes what happens in its rooms on the control bus
//! and mirrors what the others publish ([`bus`], [`rooms`]), and relays media between nodes
//! over QUIC, once per track per node ([`relay`]). Redis is the only shared component: no
//! consensus or gossip of our own. See docs/cluster.md.

mod bus;
pub mod config;
mod node;
mod registry;
pub mod relay;
mod rooms;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use junction_core::{CloseReason, PeerId, RoomId};
use junction_engine::{Engine, RoomEvent};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use config::ClusterConfig;
pub use node::{NodeInfo, NodeLoad};
pub use registry::RedisError;

use bus::{BusMessage, Envelope, Inbound};
use registry::Registry;
use relay::client::Links;
use rooms::Rooms;

/// Messages waiting to be published on the bus; past this (Redis down a long time) they are
/// dropped, and the resynchronisation after reconnecting makes up for them.
const BUS_QUEUE: usize = 8192;
/// How long the claim to report a room's start or end is held: longer than the copies of one
/// room on different nodes take to start (a race) or to end (they end together).
const ROOM_REPORT_HOLD: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.redis_url {url:?}: {source}")]
    RedisUrl { url: String, source: redis::RedisError },
    #[error("cannot reach Redis at cluster.redis_url at start-up: {0}")]
    Redis(#[from] RedisError),
    #[error("{0}")]
    NodeId(String),
    #[error("cluster mode needs a shared secret: set cluster.secret (or api_key) to the same value on every node")]
    NoSecret,
    #[error(transparent)]
    Tls(#[from] relay::tls::TlsError),
    #[error("cannot listen for the relay on {addr} (cluster.relay_listen): {source}")]
    Relay { addr: SocketAddr, source: std::io::Error },
}

/// What the server tells the cluster about itself.
pub struct NodeContext {
    /// `http.public_url`: where clients and other nodes reach this node's HTTP.
    pub public_url: String,
    /// `cluster.secret`, else the API key.
    pub secret: Option<String>,
    /// Process CPU seconds so far (for the load figure).
    pub cpu_seconds: fn() -> Option<f64>,
}

pub(crate) struct Shared {
    pub id: String,
    /// This process's start (unix ms): tells its messages from those of an earlier run.
    pub epoch: u64,
    pub engine: Engine,
    pub config: ClusterConfig,
    pub secret: Vec<u8>,
    pub registry: Registry,
    pub rooms: Rooms,
    pub links: Links,
    me: Mutex<NodeInfo>,
    /// Live nodes as last read from the registry, this one included.
    nodes: RwLock<HashMap<String, NodeInfo>>,
    bus: mpsc::Sender<BusMessage>,
    /// Nodes that died for good whose loss this node claimed (it takes over their jobs).
    lost: broadcast::Sender<String>,
}

impl Shared {
    /// Puts a message on the bus (queued; never waits).
    pub fn publish(&self, msg: BusMessage) {
        if self.bus.try_send(msg).is_err() {
            metrics::counter!("junction_cluster_bus_dropped_total").increment(1);
        }
    }

    pub fn node(&self, id: &str) -> Option<NodeInfo> {
        self.nodes.read().get(id).cloned()
    }
}

/// A running cluster member.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Cluster {
    /// Joins the cluster: connects to Redis (which must answer now), starts the relay listener,
    /// the heartbeat, the bus and the room watchers.
    pub async fn start(
        engine: Engine,
        config: ClusterConfig,
        context: NodeContext,
        shutdown: CancellationToken,
    ) -> Result<Cluster, ClusterError> {
        let url = config.redis_url.clone().unwrap_or_default();
        let client = redis::Client::open(url.as_str()).map_err(|source| ClusterError::RedisUrl { url, source })?;
        let id = node::node_id(config.node_id.as_deref(), &context.public_url).map_err(ClusterError::NodeId)?;
        let secret = context.secret.clone().filter(|s| !s.is_empty()).ok_or(ClusterError::NoSecret)?;
        let registry = Registry::connect(&client).await?;

        let identity = relay::tls::identity()?;
        let endpoint = quinn::Endpoint::server(identity.server, config.relay_listen)
            .map_err(|source| ClusterError::Relay { addr: config.relay_listen, source })?;
        let bound =
            endpoint.local_addr().map_err(|source| ClusterError::Relay { addr: config.relay_listen, source })?;
        let relay_addr = config.relay_public.unwrap_or(bound);

        let epoch = unix_ms();
        let me = NodeInfo {
            id: id.clone(),
            url: context.public_url.clone(),
            relay: relay_addr.to_string(),
            relay_cert_sha256: identity.fingerprint,
            started_at_ms: epoch,
            draining: false,
            load: NodeLoad::default(),
        };
        let (bus_tx, bus_rx) = mpsc::channel(BUS_QUEUE);
        let shared = Arc::new(Shared {
            id: id.clone(),
            epoch,
            engine: engine.clone(),
            config: config.clone(),
            secret: secret.into_bytes(),
            registry,
            rooms: Rooms::default(),
            links: Links::default(),
            me: Mutex::new(me.clone()),
            nodes: RwLock::new(HashMap::from([(id.clone(), me)])),
            bus: bus_tx,
            lost: broadcast::channel(64).0,
        });
        shared.links.start(&shared, endpoint.clone());
        // Registered before anything else runs, so other nodes can dial back at once.
        let me = shared.me.lock().clone();
        shared.registry.heartbeat(&me, ttl(&config)).await?;

        tokio::spawn(relay::server::serve(endpoint, shared.clone(), shutdown.clone()));
        tokio::spawn(publish_loop(shared.clone(), bus_rx));
        let (inbound_tx, inbound_rx) = mpsc::channel(4096);
        tokio::spawn(bus::subscribe(client, inbound_tx, shutdown.clone()));
        tokio::spawn(apply_loop(shared.clone(), inbound_rx));
        tokio::spawn(watch_rooms(shared.clone(), engine.subscribe_events(), shutdown.clone()));
        tokio::spawn(heartbeat_loop(shared.clone(), context.cpu_seconds, shutdown));
        for room in engine.rooms() {
            shared.rooms.watch(&shared, &room.name);
        }
        info!(node = %id, relay = %relay_addr, "cluster: joined");
        Ok(Cluster { shared })
    }

    pub fn node_id(&self) -> &str {
        &self.shared.id
    }

    /// The relay's address as registered.
    pub fn relay_addr(&self) -> String {
        self.shared.me.lock().relay.clone()
    }

    /// The live nodes, this one included, by id.
    pub fn nodes(&self) -> Vec<NodeInfo> {
        let mut nodes: Vec<NodeInfo> = self.shared.nodes.read().values().cloned().collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    }

    /// Removes a peer connected to another node through that node; false when the peer is not
    /// a remote one (kick it locally).
    pub fn kick_remote(&self, room: &RoomId, peer: &PeerId) -> bool {
        if self.shared.rooms.mirror_node(room, peer).is_none() {
            return false;
        }
        self.shared.publish(BusMessage::Kick { room: room.clone(), peer: peer.clone() });
        true
    }

    /// Where a room's new peers should go: the least loaded node that is neither full nor
    /// draining, preferring nodes that already serve the room.
    pub fn placement(&self, room: &RoomId) -> Option<NodeInfo> {
        let serving = self.shared.rooms.nodes_in_room(room);
        let has_local = self.shared.engine.room(room).is_some_and(|r| {
            r.peers
                .iter()
                .any(|p| !rooms::is_internal(&p.info.identity) && !self.shared.rooms.is_mirror_session(p.info.session))
        });
        let nodes = self.nodes();
        let open = nodes.iter().filter(|n| !n.draining && !n.load.full);
        let in_room = |n: &&NodeInfo| serving.contains(&n.id) || (n.id == self.shared.id && has_local);
        let least = |a: &&NodeInfo, b: &&NodeInfo| a.load.score().total_cmp(&b.load.score()).then(a.id.cmp(&b.id));
        open.clone().filter(in_room).min_by(least).or_else(|| open.min_by(least)).cloned()
    }

    /// Whether this node takes no more clients: it is draining, or at `cluster.max_peers`
    /// (counted now, not at the last heartbeat).
    pub fn is_full(&self) -> bool {
        let max = self.shared.config.max_peers as u64;
        self.shared.me.lock().draining || (max > 0 && self.shared.engine.stats().peers >= max)
    }

    /// Where a new client of `room` should go instead of this node, when this node is full and
    /// another is open.
    pub fn redirect_for(&self, room: &RoomId) -> Option<NodeInfo> {
        if !self.is_full() {
            return None;
        }
        self.placement(room).filter(|node| node.id != self.shared.id)
    }

    /// Nodes that died (not restarted) and whose loss this node claimed: it reported their
    /// peers' departures and takes over what they left pending (their webhook deliveries).
    pub fn lost_nodes(&self) -> broadcast::Receiver<String> {
        self.shared.lost.subscribe()
    }

    /// Whether this node is the one to report a room's start or end to webhooks. The copies of a
    /// room that two nodes opened at the same moment (two clients joining at once) both start
    /// and end; the first node to claim the event in Redis reports it, the other stays quiet.
    /// Other events happen on one node only and are always reported; so is everything while
    /// Redis does not answer (a duplicate rather than a loss).
    pub async fn should_report(&self, event: &RoomEvent) -> bool {
        let (room, started) = match event {
            RoomEvent::RoomStarted { room } => (&room.name, true),
            RoomEvent::RoomFinished { room, .. } => (room, false),
            _ => return true,
        };
        let started_key = format!("junction:room-started:{room}");
        let finished_key = format!("junction:room-finished:{room}");
        let (claim, release) = if started { (started_key, finished_key) } else { (finished_key, started_key) };
        match self.shared.registry.claim(&claim, ROOM_REPORT_HOLD).await {
            Ok(true) => {
                // The next start (or end) of a room of that name is a new one.
                let _ = self.shared.registry.release(&[release]).await;
                true
            }
            Ok(false) => {
                info!(%room, event = event.name(), "cluster: another node reports this room event");
                false
            }
            Err(err) => {
                warn!(%room, "cluster: cannot claim the report of a room event ({err}); reporting it");
                true
            }
        }
    }

    /// This node's own record.
    pub fn me(&self) -> NodeInfo {
        self.shared.me.lock().clone()
    }

    /// SIGTERM: stop taking peers (marked draining in the registry), tell the other nodes this
    /// node's peers are leaving, then leave the registry.
    pub async fn drain(&self) {
        self.shared.me.lock().draining = true;
        let me = self.me();
        let _ = self.shared.registry.heartbeat(&me, ttl(&self.shared.config)).await;
        self.shared.publish(BusMessage::Draining);
        for room in self.shared.rooms.local_state(&self.shared) {
            for peer in room.peers {
                self.shared.publish(BusMessage::PeerLeft {
                    room: room.info.name.clone(),
                    peer: peer.info.identity,
                    session: peer.info.session,
                    reason: CloseReason::ServerShutdown,
                });
            }
        }
        // Let the publisher flush before the registry entry goes.
        for _ in 0..20 {
            if self.shared.bus.capacity() == BUS_QUEUE {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = self.shared.registry.deregister(&self.shared.id).await;
        info!(node = %self.shared.id, "cluster: drained and deregistered");
    }
}

fn ttl(config: &ClusterConfig) -> Duration {
    Duration::from_millis(config.node_ttl_ms.max(config.heartbeat_ms * 2))
}

async fn publish_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<BusMessage>) {
    let mut failing = false;
    while let Some(msg) = rx.recv().await {
        let envelope = Envelope { from: shared.id.clone(), epoch: shared.epoch, msg };
        let Ok(text) = serde_json::to_string(&envelope) else { continue };
        match shared.registry.publish(bus::CHANNEL, text).await {
            Ok(()) => failing = false,
            Err(err) => {
                metrics::counter!("junction_cluster_bus_dropped_total").increment(1);
                if !failing {
                    warn!("cluster bus: cannot publish ({err}); the next resynchronisation makes up for it");
                    failing = true;
                }
            }
        }
    }
}

async fn apply_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Inbound>) {
    while let Some(inbound) = rx.recv().await {
        match inbound {
            Inbound::Connected => {
                // Whatever was missed while disconnected: everyone says all they have.
                shared.publish(BusMessage::SyncRequest);
                shared.publish(BusMessage::State { rooms: shared.rooms.local_state(&shared) });
            }
            Inbound::Message(envelope) if envelope.from == shared.id => {}
            Inbound::Message(envelope) => shared.rooms.apply(&shared, *envelope),
        }
    }
}

/// Announces rooms started here and watches every room this node has.
async fn watch_rooms(
    shared: Arc<Shared>,
    mut events: broadcast::Receiver<junction_engine::EngineEvent>,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(event) => {
                if let RoomEvent::RoomStarted { room } = event.event {
                    shared.rooms.watch(&shared, &room.name);
                    shared.publish(BusMessage::RoomCreated { room });
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                for room in shared.engine.rooms() {
                    shared.rooms.watch(&shared, &room.name);
                }
                shared.publish(BusMessage::State { rooms: shared.rooms.local_state(&shared) });
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn heartbeat_loop(shared: Arc<Shared>, cpu_seconds: fn() -> Option<f64>, shutdown: CancellationToken) {
    let period = Duration::from_millis(shared.config.heartbeat_ms.max(100));
    let ttl = ttl(&shared.config);
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut meter = node::LoadMeter::new();
    // Since when Redis has answered every heartbeat: only then is a missing node dead (after an
    // outage the others need a heartbeat to register again).
    let mut healthy_since: Option<Instant> = Some(Instant::now());
    let mut logged_down = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        let stats = shared.engine.stats();
        let (cpu, egress_bps) = meter.sample(Instant::now(), cpu_seconds().unwrap_or(0.0), stats.bytes_forwarded);
        let me = {
            let mut me = shared.me.lock();
            let max = shared.config.max_peers as u64;
            me.load = NodeLoad {
                cpu,
                peers: stats.peers,
                tracks: stats.tracks,
                egress_bps,
                full: max > 0 && stats.peers >= max,
            };
            me.clone()
        };
        metrics::gauge!("junction_cluster_nodes").set(shared.nodes.read().len() as f64);
        let listed = match shared.registry.heartbeat(&me, ttl).await {
            Ok(()) => shared.registry.list().await,
            Err(err) => Err(err),
        };
        let (live, gone) = match listed {
            Ok(listed) => {
                if logged_down {
                    info!("cluster: Redis reachable again");
                    logged_down = false;
                }
                healthy_since.get_or_insert_with(Instant::now);
                listed
            }
            Err(err) => {
                if !logged_down {
                    warn!("cluster: Redis unreachable ({err}); sessions and relays go on, node changes wait");
                    logged_down = true;
                }
                healthy_since = None;
                continue;
            }
        };
        let settled = healthy_since.is_some_and(|since| since.elapsed() >= ttl + period);
        let previous = std::mem::replace(&mut *shared.nodes.write(), live.clone());
        if !settled {
            continue;
        }
        for (id, old) in &previous {
            if *id == shared.id {
                continue;
            }
            let restarted = live.get(id).is_some_and(|new| new.started_at_ms != old.started_at_ms);
            if live.contains_key(id) && !restarted {
                continue;
            }
            let departed = shared.rooms.node_gone(id);
            shared.links.forget(id);
            warn!(node = %id, peers = departed.len(), "cluster: node lost; its peers have left");
            // One surviving node reports the departures to webhooks.
            let claim = format!("junction:down:{id}:{}", old.started_at_ms);
            if matches!(shared.registry.claim(&claim, Duration::from_secs(600)).await, Ok(true)) {
                Rooms::report_departed(&shared.engine, &departed);
                if !restarted {
                    // A restarted node finishes its own jobs; a dead one's are taken over here.
                    let _ = shared.lost.send(id.clone());
                }
            }
            if gone.contains(id) {
                let _ = shared.registry.forget(id).await;
            }
        }
    }
}
