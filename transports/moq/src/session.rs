//! One admitted MoQ session, driven by one task that owns the peer's engine endpoint: MoQ
//! requests in (SUBSCRIBE, PUBLISH_NAMESPACE, ...), room events and frames from the engine, and
//! ingest requests from the session's announced namespaces, all handled in one loop that reads
//! top to bottom. Every way the session can end — the peer closes, the engine closes the peer
//! (kicked, replaced, room deleted), the server shuts down, the publisher sends a codec
//! configuration the server refuses — ends here, and dropping the endpoint releases everything
//! the peer held. What one session may hold is capped (the `[moq]` limits): namespaces it
//! announces and subscriptions it makes beyond the caps are refused with EXCESSIVE_LOAD.

use std::sync::Arc;
use std::time::{Duration, Instant};

use junction_core::{CloseReason, Codec, EndpointEvent, Grants, MediaOut, PeerId, RoomId};
use junction_engine::{EndpointRpc, Joined};
use moq_transport::serve::ServeError;
use moq_transport::session::transport::quinn as wtq;
use moq_transport::session::{
    PublishReceived, PublishedNamespace, Publisher, Session, Subscribed, SubscribedNamespace, SubscribedTracks,
    Subscriber, TrackStatusRequested,
};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::MoqConfig;
use crate::egress::Egress;
use crate::error::{RequestRefusal, Termination, reason_phrase};
use crate::hub::Hub;
use crate::ingest::IngestRequest;
use crate::naming::{self, Target};
use crate::relay;

/// How often broadcasts are checked for late init segments and idleness.
const TICK: Duration = Duration::from_millis(500);

/// Everything a session needs besides its connection.
pub struct SessionParts {
    pub room: RoomId,
    pub identity: PeerId,
    pub grants: Grants,
    pub joined: Joined,
    pub hub: Hub,
    pub shutdown: CancellationToken,
    pub limits: Arc<MoqConfig>,
    /// The codecs this session takes (every carried one, or those its connect URL named).
    pub accept: Vec<Codec>,
}

/// Runs an admitted session until it ends; returns how it was closed.
pub async fn run(
    session: Session,
    mut publisher: Publisher,
    mut subscriber: Subscriber,
    transport: wtq::Session,
    parts: SessionParts,
) {
    let SessionParts { room, identity, grants, joined, hub, shutdown, limits, accept } = parts;
    let (mut rpc, mut media) = joined.endpoint.split();
    let Some(egress) = Egress::new(room.clone(), identity.clone(), accept, &joined.peers, &joined.tracks) else {
        close(&transport, Termination::InternalError, "cannot set up the room's tracks");
        return;
    };
    let (ingest_tx, mut ingest_rx) = mpsc::channel(16);
    let mut driver = Driver {
        room,
        identity,
        grants,
        egress,
        hub,
        subscriber: subscriber.clone(),
        ingest_tx,
        limits,
        subscriptions: JoinSet::new(),
        namespaces: JoinSet::new(),
    };

    // Each request queue gets its own handle (clones share the session's queues), so the loop
    // below can wait on all of them at once.
    let mut namespace_requests = publisher.clone();
    let mut track_requests = publisher.clone();
    let mut status_requests = publisher.clone();
    let mut publishes = subscriber.clone();
    let run = session.run();
    tokio::pin!(run);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let ending = loop {
        tokio::select! {
            result = &mut run => break match result {
                Ok(()) => Ending::Peer("session finished".into()),
                Err(err) if err.is_graceful_close() => Ending::Peer("closed by the peer".into()),
                Err(err) => Ending::Peer(err.to_string()),
            },
            Some(subscribed) = publisher.subscribed() => driver.on_subscribe(subscribed, &rpc),
            Some(announce) = subscriber.published_namespace() => driver.on_announce(announce),
            Some(request) = namespace_requests.subscribed_namespace() => refuse_subscribe_namespace(request),
            Some(request) = track_requests.subscribed_tracks() => refuse_subscribe_tracks(request),
            Some(request) = status_requests.track_status_requested() => refuse_track_status(request),
            Some(publish) = publishes.publish_received() => refuse_publish(publish),
            event = rpc.next_event() => match event {
                Some(EndpointEvent::Closed { reason }) => break Ending::Engine(reason),
                None => break Ending::Engine(CloseReason::Left),
                Some(event) => driver.on_event(event, &rpc),
            },
            item = media.recv() => match item {
                Some(MediaOut::Frame { track, frame }) => driver.egress.on_frame(&track, frame, Instant::now()),
                Some(MediaOut::KeyframeRequest { track, .. }) => {
                    debug!(track = %track, "keyframe request for an ingested track: MoQ publishers cannot be asked");
                }
                Some(MediaOut::BitrateHint { .. }) => {}
                None => break Ending::Engine(CloseReason::Left),
            },
            Some(request) = ingest_rx.recv() => {
                if let Some(violation) = driver.on_ingest(request, &rpc) {
                    break Ending::Violation(violation);
                }
            }
            _ = tick.tick() => {
                for track in driver.egress.tick(Instant::now()) {
                    let _ = rpc.unsubscribe(&track);
                }
            }
            Some(_) = driver.subscriptions.join_next(), if !driver.subscriptions.is_empty() => {}
            Some(_) = driver.namespaces.join_next(), if !driver.namespaces.is_empty() => {}
            _ = shutdown.cancelled() => break Ending::Engine(CloseReason::ServerShutdown),
        }
    };
    let _ = &mut media;
    drop(driver);
    match ending {
        Ending::Peer(why) => {
            info!(room = %rpc.room(), peer = %rpc.peer(), "MoQ session ended: {why}");
            close(&transport, Termination::NoError, "");
            rpc.leave(CloseReason::Left);
        }
        Ending::Violation(why) => {
            warn!(room = %rpc.room(), peer = %rpc.peer(), "closing MoQ session: {why}");
            close(&transport, Termination::ProtocolViolation, &why);
            rpc.leave(CloseReason::Error { message: why });
            let _ = tokio::time::timeout(Duration::from_secs(2), transport.closed()).await;
        }
        Ending::Engine(reason) => {
            let (code, text) = match &reason {
                CloseReason::Error { message } => (Termination::InternalError, message.clone()),
                other => (Termination::NoError, other.as_str().to_owned()),
            };
            info!(room = %rpc.room(), peer = %rpc.peer(), reason = reason.as_str(), "closing MoQ session");
            close(&transport, code, &text);
            rpc.leave(reason);
            let _ = tokio::time::timeout(Duration::from_secs(2), transport.closed()).await;
        }
    }
}

enum Ending {
    /// The peer or the connection ended the session.
    Peer(String),
    /// Junction ends it (the engine closed the peer, or the server stops).
    Engine(CloseReason),
    /// The peer sent what the server refuses to carry (a bad codec configuration).
    Violation(String),
}

/// Closes a session with a draft-18 termination code and a reason phrase.
pub fn close(transport: &wtq::Session, code: Termination, reason: &str) {
    transport.close(code.code(), reason_phrase(reason).as_bytes());
}

struct Driver {
    room: RoomId,
    identity: PeerId,
    grants: Grants,
    egress: Egress,
    hub: Hub,
    subscriber: Subscriber,
    ingest_tx: mpsc::Sender<IngestRequest>,
    limits: Arc<MoqConfig>,
    /// One task per SUBSCRIBE being served.
    subscriptions: JoinSet<()>,
    /// One task per namespace the peer announced.
    namespaces: JoinSet<()>,
}

impl Driver {
    fn on_subscribe(&mut self, subscribed: Subscribed, rpc: &EndpointRpc) {
        let namespace = subscribed.info.track_namespace.clone();
        let name = subscribed.info.track_name.clone();
        let limit = self.limits.max_subscriptions_per_session;
        let refusal = if !self.grants.subscribe {
            Err(RequestRefusal::Unauthorized("the token does not grant subscribe".into()))
        } else if self.subscriptions.len() >= limit {
            Err(RequestRefusal::TooMany(format!("this session holds its limit of {limit} subscriptions")))
        } else {
            self.resolve(&namespace, &name, rpc)
        };
        match refusal {
            Ok((track, user)) => {
                debug!(room = %self.room, peer = %self.identity, namespace = %namespace, track = %name, "serving SUBSCRIBE");
                self.subscriptions.spawn(async move {
                    let _user = user;
                    if let Err(err) = subscribed.serve(track).await {
                        debug!(namespace = %namespace, track = %name, "subscription ended: {err}");
                    }
                });
            }
            Err(refusal) => {
                info!(room = %self.room, peer = %self.identity, namespace = %namespace, track = %name, "SUBSCRIBE refused: {refusal}");
                let _ = subscribed.close(serve_error(refusal));
            }
        }
    }

    fn resolve(
        &mut self,
        namespace: &moq_transport::coding::TrackNamespace,
        name: &moq_transport::coding::TrackName,
        rpc: &EndpointRpc,
    ) -> Result<(moq_transport::serve::TrackReader, Option<crate::egress::BroadcastUser>), RequestRefusal> {
        let announced = |hub: &Hub| -> Result<_, RequestRefusal> {
            let mut tracks = hub.find(&self.room, namespace).ok_or_else(|| {
                RequestRefusal::DoesNotExist(format!(
                    "nothing is published at {}/{name}",
                    naming::namespace_path(namespace)
                ))
            })?;
            let track = tracks
                .subscribe(namespace.clone(), name.clone())
                .ok_or_else(|| RequestRefusal::DoesNotExist("the publisher is gone".into()))?;
            Ok((track, None))
        };
        match naming::classify(&self.room, namespace, name) {
            Target::RoomCatalog => self
                .egress
                .room_catalog()
                .map(|track| (track, None))
                .ok_or_else(|| RequestRefusal::DoesNotExist("the room catalog is closed".into())),
            Target::Peer { identity, track } if self.egress.has_peer(&identity) => {
                self.egress.peer_track(&identity, &track, rpc, Instant::now()).map(|(track, user)| (track, Some(user)))
            }
            Target::Peer { .. } | Target::Announced => announced(&self.hub),
            Target::OtherRoom => Err(RequestRefusal::Unauthorized(format!(
                "this session is in room {}: namespaces start with it",
                self.room
            ))),
        }
    }

    fn on_announce(&mut self, mut announce: PublishedNamespace) {
        let namespace = announce.namespace.clone();
        let limit = self.limits.max_namespaces_per_session;
        let refusal = if !self.grants.publish {
            Some(RequestRefusal::Unauthorized("the token does not grant publish".into()))
        } else if !naming::is_under_room(&self.room, &namespace) || namespace.fields.len() < 2 {
            Some(RequestRefusal::Unauthorized(format!("announce namespaces under the room: {}/<name>", self.room)))
        } else if self.namespaces.len() >= limit {
            Some(RequestRefusal::TooMany(format!("this session holds its limit of {limit} announced namespaces")))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            info!(room = %self.room, peer = %self.identity, namespace = %namespace, "PUBLISH_NAMESPACE refused: {refusal}");
            let _ = announce.reject(refusal.code(), &refusal.to_string());
            return;
        }
        let (registration, requests, tracks) = match relay::register(&self.hub, &self.room, &namespace) {
            Ok(registered) => registered,
            Err(existing) => {
                let reason = format!("{} is already announced in the room", naming::namespace_path(&existing));
                let _ = announce.reject(moq_transport::message::RequestErrorCode::PrefixOverlap as u64, &reason);
                return;
            }
        };
        if announce.ok().is_err() {
            return;
        }
        info!(room = %self.room, peer = %self.identity, namespace = %namespace, "namespace announced");
        let label = namespace
            .fields
            .iter()
            .skip(1)
            .map(|field| String::from_utf8_lossy(&field.value).into_owned())
            .collect::<Vec<_>>()
            .join("/");
        self.namespaces.spawn(relay::run(
            announce,
            registration,
            requests,
            tracks,
            self.subscriber.clone(),
            label,
            self.ingest_tx.clone(),
            self.limits.clone(),
        ));
    }

    fn on_event(&mut self, event: EndpointEvent, rpc: &EndpointRpc) {
        let now = Instant::now();
        match event {
            EndpointEvent::PeerJoined(peer) => self.egress.peer_joined(peer),
            EndpointEvent::PeerLeft { peer, .. } => self.egress.peer_left(&peer),
            EndpointEvent::TrackPublished(track) => self.egress.track_published(track, rpc, now),
            EndpointEvent::TrackUnpublished { track, peer } => self.egress.track_unpublished(&track, &peer, now),
            // Its transcoder failed: the track leaves the peer's broadcast (its readers get
            // PUBLISH_DONE), and a later request for it is refused with the reason.
            EndpointEvent::SubscriptionFailed { track, reason } => self.egress.track_lost(&track, reason, now),
            _ => {}
        }
    }

    /// Carries out an ingest's request; returns why the session must end, if it must.
    fn on_ingest(&mut self, request: IngestRequest, rpc: &EndpointRpc) -> Option<String> {
        match request {
            IngestRequest::Publish { request, reply } => {
                let _ = reply.send(rpc.publish(request));
            }
            IngestRequest::Unpublish { track } => {
                if let Err(err) = rpc.unpublish(&track) {
                    debug!(track = %track, "unpublish: {err}");
                }
            }
            IngestRequest::Violation(why) => return Some(why),
        }
        None
    }
}

fn serve_error(refusal: RequestRefusal) -> ServeError {
    match refusal {
        RequestRefusal::DoesNotExist(reason) => {
            ServeError::NotFoundWithId(reason, moq_transport::reexports::uuid::Uuid::nil())
        }
        other => other.into_serve_error(),
    }
}

fn refuse_subscribe_namespace(request: SubscribedNamespace) {
    let code = moq_transport::message::RequestErrorCode::NotSupported as u64;
    let _ = request.reject(code, "SUBSCRIBE_NAMESPACE is not supported: read the room's .catalog");
}

fn refuse_subscribe_tracks(request: SubscribedTracks) {
    let code = moq_transport::message::RequestErrorCode::NotSupported as u64;
    let _ = request.reject(code, "SUBSCRIBE_TRACKS is not supported: read the room's .catalog");
}

fn refuse_track_status(mut request: TrackStatusRequested) {
    let code = moq_transport::message::RequestErrorCode::NotSupported as u64;
    let _ = request.respond_error(code, "TRACK_STATUS is not supported");
}

fn refuse_publish(publish: PublishReceived) {
    warn!(namespace = %publish.namespace(), track = %publish.name(), "PUBLISH refused: announce the namespace instead");
    publish.close(ServeError::Closed(moq_transport::message::RequestErrorCode::NotSupported as u64));
}
