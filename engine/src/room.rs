//! One room: its peers, their published tracks and subscriptions, and the rules that tie them
//! together (grants, auto-subscribe, duplicate identities, limits, timeouts). Every membership
//! change takes this room's lock — and only this room's: other rooms and all frames go on.
//!
//! Methods return nothing to drive: events for peers go straight into their bounded event
//! queues, engine-wide events into the engine's stream. A peer whose event queue is full is
//! closed as `Overloaded` once the current change is done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use junction_core::codec::codec_list;
use junction_core::{
    CloseReason, Codec, CodecParams, ContractError, DataMessage, EndpointEvent, LayerPreference, MediaKind, MediaOut,
    PeerId, PeerInfo, PublishRequest, RoomId, RoomInfo, RoomOptions, SessionId, SubscribeOptions, TrackId, TrackInfo,
};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::adapt;
use crate::credential::TokenSeat;
use crate::endpoint::{Endpoint, PeerLink};
use crate::events::{RoomEndReason, RoomEvent};
use crate::join::PeerRole;
use crate::join::{DuplicatePolicy, JoinRequest};
use crate::meter::{LayerStats, LinkQuality, PeerStats, PictureSize, RoomStats, SubscriptionStats, TrackStats};
use crate::queue::{MediaSender, media_queue};
use crate::shared::Shared;
use crate::subscription::Subscription;
use crate::track::{Track, TrackPublisher};

/// What a transport gets back from a successful join.
pub struct Joined {
    pub endpoint: Endpoint,
    pub room: RoomInfo,
    /// Everyone else already in the room.
    pub peers: Vec<PeerInfo>,
    /// Every track already published by someone else.
    pub tracks: Vec<TrackInfo>,
    /// The session this join replaced (same identity), if any.
    pub replaced: Option<SessionId>,
}

impl std::fmt::Debug for Joined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joined").field("room", &self.room.name).field("peer", self.endpoint.rpc.peer()).finish()
    }
}

/// A room with its peers and their tracks, for the REST API.
#[derive(Debug, Clone, Serialize)]
pub struct RoomSnapshot {
    #[serde(flatten)]
    pub info: RoomInfo,
    pub peers: Vec<PeerSnapshot>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerSnapshot {
    #[serde(flatten)]
    pub info: PeerInfo,
    pub tracks: Vec<TrackInfo>,
    pub subscriptions: Vec<TrackId>,
}

/// The result of a subscription: the track, and the codec its frames will arrive in.
#[derive(Debug, Clone)]
pub struct SubscribedTrack {
    pub track: TrackInfo,
    pub codec: Codec,
    pub params: CodecParams,
}

struct SubLink {
    sub: Arc<Subscription>,
    /// The original track.
    origin: Arc<Track>,
    /// The track the subscription is attached to: the origin or one of its variants.
    attached: Arc<Track>,
}

impl SubLink {
    fn detach(&self, shared: &Shared) {
        self.attached.remove_subscriber(&self.sub);
        if !Arc::ptr_eq(&self.origin, &self.attached) {
            adapt::release_if_unused(&self.origin, self.attached.info().codec, shared);
        }
        shared.counters.subscriptions.add(-1);
    }
}

struct PeerSlot {
    info: PeerInfo,
    role: PeerRole,
    link: Arc<PeerLink>,
    events: mpsc::Sender<Box<EndpointEvent>>,
    media: MediaSender,
    feedback: mpsc::Sender<Box<MediaOut>>,
    auto_subscribe: bool,
    /// Counted against the room's `max_peers` (false for engine services: the mixer).
    takes_seat: bool,
    accept: Vec<Codec>,
    /// Takes no B-frames (see [`JoinRequest::presentation_order_only`]).
    presentation_order_only: bool,
    published: Vec<TrackId>,
    subscriptions: HashMap<TrackId, SubLink>,
    /// The session's place among its token's live sessions, given back when the slot goes.
    seat: Option<TokenSeat>,
    /// When the session's credential expires (unix ms).
    expires_at_ms: Option<u64>,
}

pub(crate) struct Room {
    pub(crate) id: RoomId,
    closed: AtomicBool,
    state: Mutex<RoomState>,
    shared: Arc<Shared>,
    /// A copy of a room another node of the cluster reported first: its start and end are
    /// that node's events, not this one's.
    quiet: bool,
}

struct RoomState {
    /// The room itself, for what runs outside its lock and reports back (a failed transcoder).
    me: Weak<Room>,
    options: RoomOptions,
    created_at: Instant,
    created_at_ms: u64,
    empty_since: Option<Instant>,
    peers: HashMap<PeerId, PeerSlot>,
    tracks: HashMap<TrackId, Arc<Track>>,
    /// Peers to close as `Overloaded` once the current change is done.
    overloaded: Vec<(PeerId, SessionId)>,
}

impl Room {
    pub(crate) fn new(id: RoomId, options: RoomOptions, shared: Arc<Shared>, quiet: bool) -> Arc<Room> {
        let now = shared.clock.now();
        let room = Arc::new_cyclic(|me| Room {
            id,
            closed: AtomicBool::new(false),
            state: Mutex::new(RoomState {
                me: me.clone(),
                options,
                created_at: now,
                created_at_ms: shared.clock.unix_ms(),
                empty_since: Some(now),
                peers: HashMap::new(),
                tracks: HashMap::new(),
                overloaded: Vec::new(),
            }),
            shared,
            quiet,
        });
        room.shared.counters.rooms.add(1);
        info!(room = %room.id, quiet, "room started");
        if !quiet {
            room.shared.emit(RoomEvent::RoomStarted { room: room.info() });
        }
        room
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn info(&self) -> RoomInfo {
        let st = self.state.lock();
        st.info(&self.id)
    }

    /// The video codec WebRTC publishers joining now should be asked for: the room's fixed
    /// choice, or in `auto` H.264 while a peer takes only H.264 video (an RTMP player, a MoQ
    /// session that asked for it). `None`: the publisher's own preference.
    pub(crate) fn publisher_video_codec(&self) -> Option<Codec> {
        let st = self.state.lock();
        st.options.video_codec.fixed().or_else(|| {
            let h264_only = |accept: &[Codec]| {
                accept.contains(&Codec::H264)
                    && !accept.iter().any(|c| c.kind() == MediaKind::Video && *c != Codec::H264)
            };
            st.peers.values().any(|slot| h264_only(&slot.accept)).then_some(Codec::H264)
        })
    }

    pub(crate) fn snapshot(&self) -> RoomSnapshot {
        let st = self.state.lock();
        let mut peers: Vec<PeerSnapshot> = st
            .members()
            .map(|slot| PeerSnapshot {
                info: slot.info.clone(),
                tracks: slot.published.iter().filter_map(|t| st.tracks.get(t)).map(|t| t.shown_info()).collect(),
                subscriptions: slot.subscriptions.keys().cloned().collect(),
            })
            .collect();
        peers.sort_by(|a, b| join_order(&a.info, &b.info));
        RoomSnapshot { info: st.info(&self.id), peers }
    }

    /// The room's live measures (see [`crate::meter`]). Gathered under the room's lock; the
    /// keyframes' picture sizes are read after it is released.
    pub(crate) fn stats(&self, picture_size: PictureSize) -> RoomStats {
        /// A subscription: the track id its peer knows, and the track it is attached to.
        type Received = (TrackId, Arc<Subscription>, Arc<Track>);
        type Member = (PeerInfo, Vec<Arc<Track>>, Vec<Received>);
        let (peers, at_ms): (Vec<Member>, u64) = {
            let st = self.state.lock();
            let mut peers: Vec<_> = st
                .members()
                .map(|slot| {
                    let tracks = slot.published.iter().filter_map(|t| st.tracks.get(t).cloned()).collect();
                    let subs = slot
                        .subscriptions
                        .iter()
                        .map(|(id, l)| (id.clone(), l.sub.clone(), l.attached.clone()))
                        .collect();
                    (slot.info.clone(), tracks, subs)
                })
                .collect();
            peers.sort_by(|a, b| join_order(&a.0, &b.0));
            (peers, self.shared.clock.unix_ms())
        };
        let peers = peers
            .into_iter()
            .map(|(info, tracks, subs)| {
                let mut subscriptions: Vec<SubscriptionStats> = subs
                    .into_iter()
                    .map(|(track, sub, attached)| {
                        let rate = sub.rate.read(attached.now_ns());
                        SubscriptionStats {
                            track,
                            codec: attached.info().codec,
                            layer: sub.current_layer(),
                            bitrate_bps: rate.bitrate_bps,
                            fps: rate.fps,
                            link: *sub.link.lock(),
                        }
                    })
                    .collect();
                subscriptions.sort_by(|a, b| a.track.cmp(&b.track));
                PeerStats {
                    identity: info.identity,
                    name: info.name,
                    transport: info.transport,
                    client: info.client,
                    joined_at_ms: info.joined_at_ms,
                    tracks: tracks.iter().map(|t| track_stats(t, picture_size)).collect(),
                    subscriptions,
                }
            })
            .collect();
        RoomStats { room: self.id.clone(), at_ms, peers }
    }

    /// An operator mutes (or unmutes) a track: its frames go to no subscriber meanwhile, and
    /// everyone in the room, its publisher too, is told it is muted. The publisher's own mute
    /// (`TrackInfo::muted`) is its own: an operator's unmute does not undo it.
    pub(crate) fn hold_track(&self, track: &TrackId, held: bool) -> Result<TrackInfo, ContractError> {
        let mut st = self.state.lock();
        let found = st
            .tracks
            .get(track)
            .cloned()
            .ok_or_else(|| ContractError::TrackNotFound { room: self.id.clone(), track: track.clone() })?;
        found.hold(held);
        let info = found.shown_info();
        st.broadcast(EndpointEvent::TrackMuted { track: track.clone(), muted: info.muted }, None);
        st.reap_overloaded(&self.id, &self.shared);
        Ok(info)
    }

    /// Returns why the room should end now, if it should.
    pub(crate) fn expiry(&self, now: Instant) -> Option<RoomEndReason> {
        let st = self.state.lock();
        if let Some(max) = st.options.max_duration
            && now.saturating_duration_since(st.created_at) >= max
        {
            return Some(RoomEndReason::Expired);
        }
        match st.empty_since {
            Some(since) if !st.has_members() && now.saturating_duration_since(since) >= st.options.empty_timeout => {
                Some(RoomEndReason::Empty)
            }
            _ => None,
        }
    }

    /// Disconnects everyone and marks the room finished. Idempotent.
    pub(crate) fn close(&self, reason: RoomEndReason) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let peer_reason = match reason {
            RoomEndReason::Deleted => CloseReason::RoomDeleted,
            RoomEndReason::Expired => CloseReason::RoomExpired,
            RoomEndReason::ServerShutdown => CloseReason::ServerShutdown,
            RoomEndReason::Empty => CloseReason::RoomExpired,
        };
        let mut st = self.state.lock();
        let everyone: Vec<(PeerId, SessionId)> =
            st.peers.values().map(|s| (s.info.identity.clone(), s.info.session)).collect();
        for (peer, session) in everyone {
            st.remove_peer(&self.id, &self.shared, &peer, session, peer_reason.clone(), false);
        }
        st.overloaded.clear();
        drop(st);
        self.shared.counters.rooms.add(-1);
        info!(room = %self.id, ?reason, "room finished");
        if !self.quiet {
            self.shared.emit(RoomEvent::RoomFinished { room: self.id.clone(), reason });
        }
    }

    /// Ends every session whose credential expired by `now_ms` (unix ms).
    pub(crate) fn end_expired_sessions(&self, now_ms: u64) {
        let mut st = self.state.lock();
        let expired: Vec<(PeerId, SessionId)> = st
            .peers
            .values()
            .filter(|s| s.expires_at_ms.is_some_and(|at| at <= now_ms))
            .map(|s| (s.info.identity.clone(), s.info.session))
            .collect();
        for (peer, session) in expired {
            info!(room = %self.id, peer = %peer, session = %session, "the session's credential expired, ending it");
            st.remove_peer(&self.id, &self.shared, &peer, session, CloseReason::CredentialExpired, true);
        }
        st.reap_overloaded(&self.id, &self.shared);
    }

    pub(crate) fn join(self: &Arc<Self>, req: JoinRequest) -> Result<Joined, ContractError> {
        let mut st = self.state.lock();
        if self.is_closed() {
            return Err(ContractError::RoomClosing { room: self.id.clone() });
        }
        let role = req.role;
        let seat = if role == PeerRole::Client { st.seat_for(&self.shared, &req)? } else { None };
        let mut replaced = None;
        if let Some(existing) = st.peers.get(&req.identity) {
            let old = existing.info.session;
            let policy = match role {
                _ if role == PeerRole::Service || existing.role == PeerRole::Service => DuplicatePolicy::Reject,
                // The same identity joined on two nodes at once: the later join wins on both.
                PeerRole::Mirror { joined_at_ms, .. } if joined_at_ms < existing.info.joined_at_ms => {
                    DuplicatePolicy::Reject
                }
                PeerRole::Mirror { .. } => DuplicatePolicy::Replace,
                _ => req.on_duplicate,
            };
            match policy {
                DuplicatePolicy::Reject => {
                    return Err(ContractError::IdentityTaken { room: self.id.clone(), peer: req.identity });
                }
                DuplicatePolicy::Replace => {
                    info!(room = %self.id, peer = %req.identity, old = %old, "newer session replaces older");
                    st.remove_peer(&self.id, &self.shared, &req.identity, old, CloseReason::Replaced, true);
                    replaced = Some(old);
                }
            }
        }
        let max = st.options.max_peers;
        // Engine services (the room audio mixer) neither take nor need a seat; nor do the
        // cluster's services and mirrors (admitted by their own node).
        let seated = st.members().filter(|p| p.takes_seat).count();
        let needs_seat = role == PeerRole::Client && req.takes_seat;
        if max > 0 && needs_seat && seated >= max as usize {
            return Err(ContractError::RoomFull { room: self.id.clone(), max_peers: max });
        }

        let config = &self.shared.config;
        let (session, joined_at_ms) = match role {
            PeerRole::Mirror { session, joined_at_ms } => (session, joined_at_ms),
            _ => (SessionId::random(), self.shared.clock.unix_ms()),
        };
        let (events_tx, events_rx) = mpsc::channel(config.event_queue);
        let (media_tx, media_rx) = media_queue(&self.shared);
        let (feedback_tx, feedback_rx) = mpsc::channel(config.feedback_queue);
        let link = Arc::new(PeerLink {
            room: self.id.clone(),
            peer: req.identity.clone(),
            session,
            closed: CancellationToken::new(),
        });
        let info = PeerInfo {
            identity: req.identity.clone(),
            session,
            name: req.name,
            metadata: req.metadata,
            grants: req.grants,
            transport: req.transport,
            client: req.client,
            joined_at_ms,
        };
        let peers: Vec<PeerInfo> = st.members().map(|s| s.info.clone()).collect();
        let tracks: Vec<TrackInfo> = st.tracks.values().map(|t| t.shown_info()).collect();
        st.peers.insert(
            req.identity.clone(),
            PeerSlot {
                info: info.clone(),
                role,
                link: link.clone(),
                events: events_tx,
                media: media_tx,
                feedback: feedback_tx,
                auto_subscribe: req.auto_subscribe,
                takes_seat: req.takes_seat,
                accept: req.accept_codecs,
                presentation_order_only: req.presentation_order_only,
                published: Vec::new(),
                subscriptions: HashMap::new(),
                seat,
                expires_at_ms: req.credential.expires_at_ms,
            },
        );
        match role {
            PeerRole::Client => self.shared.counters.peers.add(1),
            PeerRole::Mirror { .. } => self.shared.counters.remote_peers.add(1),
            PeerRole::Service => {}
        }
        if role != PeerRole::Service {
            st.empty_since = None;
            info!(room = %self.id, peer = %info.identity, session = %session, transport = info.transport.as_str(), mirror = role != PeerRole::Client, "peer joined");
            st.broadcast(EndpointEvent::PeerJoined(info.clone()), Some(&req.identity));
        }
        if role == PeerRole::Client {
            self.shared.emit(RoomEvent::PeerJoined { room: self.id.clone(), peer: info.clone() });
        }

        if req.auto_subscribe && info.grants.subscribe {
            for track in &tracks {
                st.auto_subscribe(&self.shared, &req.identity, &track.id);
            }
        }
        let room = st.info(&self.id);
        st.reap_overloaded(&self.id, &self.shared);
        drop(st);
        Ok(Joined {
            endpoint: Endpoint::new(self.clone(), link, events_rx, media_rx, feedback_rx),
            room,
            peers,
            tracks,
            replaced,
        })
    }

    /// Runs `f` on the room state after checking that `link` is still the live session.
    fn with_session<T>(
        &self,
        link: &PeerLink,
        f: impl FnOnce(&mut RoomState, &Arc<Shared>) -> Result<T, ContractError>,
    ) -> Result<T, ContractError> {
        let mut st = self.state.lock();
        match st.peers.get(&link.peer) {
            Some(slot) if slot.info.session == link.session => {}
            _ => return Err(ContractError::SessionClosed { room: self.id.clone(), peer: link.peer.clone() }),
        }
        let result = f(&mut st, &self.shared);
        st.reap_overloaded(&self.id, &self.shared);
        result
    }

    pub(crate) fn leave(&self, link: &PeerLink, reason: CloseReason) {
        let mut st = self.state.lock();
        st.remove_peer(&self.id, &self.shared, &link.peer, link.session, reason, true);
        st.reap_overloaded(&self.id, &self.shared);
    }

    /// Removes a peer by identity, whatever its session (kick).
    pub(crate) fn kick(&self, peer: &PeerId, reason: CloseReason) -> Result<(), ContractError> {
        let mut st = self.state.lock();
        let session = st
            .peers
            .get(peer)
            .filter(|s| s.role != PeerRole::Service)
            .map(|s| s.info.session)
            .ok_or_else(|| ContractError::PeerNotFound { room: self.id.clone(), peer: peer.clone() })?;
        st.remove_peer(&self.id, &self.shared, peer, session, reason, true);
        st.reap_overloaded(&self.id, &self.shared);
        Ok(())
    }

    /// `variant`, the transcoded copy of `origin` some subscribers are attached to, failed for
    /// good: those subscriptions end, and their peers are told why.
    pub(crate) fn variant_failed(&self, origin: &TrackId, variant: &Arc<Track>, reason: &str) {
        let mut st = self.state.lock();
        let shared = &self.shared;
        let attached: Vec<PeerId> = st
            .peers
            .iter_mut()
            .filter_map(|(peer, slot)| {
                let on_variant = slot.subscriptions.get(origin).is_some_and(|l| Arc::ptr_eq(&l.attached, variant));
                let link = if on_variant { slot.subscriptions.remove(origin) } else { None }?;
                link.detach(shared);
                Some(peer.clone())
            })
            .collect();
        for peer in &attached {
            st.deliver(peer, EndpointEvent::Unsubscribed { track: origin.clone() });
            let event = EndpointEvent::SubscriptionFailed { track: origin.clone(), reason: reason.to_owned() };
            st.deliver(peer, event);
        }
        st.reap_overloaded(&self.id, shared);
    }

    /// Publishes a track; `id` is the id a mirror's track keeps from its origin node (other
    /// peers' tracks get a fresh one).
    pub(crate) fn publish(
        &self,
        link: &PeerLink,
        req: PublishRequest,
        id: Option<TrackId>,
    ) -> Result<TrackPublisher, ContractError> {
        let room = self.id.clone();
        self.with_session(link, |st, shared| {
            let slot = &st.peers[&link.peer];
            let role = slot.role;
            if !slot.info.grants.publish || role == PeerRole::Service {
                return Err(ContractError::PublishNotAllowed { room, peer: link.peer.clone() });
            }
            let mirror = matches!(role, PeerRole::Mirror { .. });
            if id.is_some() != mirror {
                return Err(ContractError::Invalid("only a mirror's tracks keep the id they were published with".into()));
            }
            if let Some(id) = id.as_ref().filter(|id| st.tracks.contains_key(*id)) {
                return Err(ContractError::Invalid(format!("track {id} is already published in room {room}")));
            }
            let limit = shared.config.max_tracks_per_peer;
            if slot.published.len() >= limit {
                return Err(ContractError::LimitExceeded { what: "tracks per peer", limit });
            }
            let kind = req.codec.kind();
            let duplicate = slot.published.iter().filter_map(|t| st.tracks.get(t)).any(|t| {
                let info = t.info();
                info.name == req.name && info.kind == kind
            });
            if duplicate {
                return Err(ContractError::DuplicateTrack { peer: link.peer.clone(), name: req.name, what: kind.as_str() });
            }
            if req.layers.len() > crate::track::MAX_LAYERS {
                return Err(ContractError::LimitExceeded { what: "simulcast layers", limit: crate::track::MAX_LAYERS });
            }
            // Transports validate where the parameters enter; this catches any that did not.
            req.params.validate(req.codec).map_err(|err| ContractError::Invalid(err.to_string()))?;
            let mut params = req.params;
            if req.codec == Codec::H264 {
                params.reorders = params.config.as_deref().is_some_and(junction_core::h264::config_reorders);
            }
            let info = TrackInfo {
                id: id.unwrap_or_else(TrackId::generate),
                peer: link.peer.clone(),
                name: req.name,
                kind,
                source: req.source,
                codec: req.codec,
                params,
                layers: req.layers,
                muted: req.muted,
            };
            let track = Arc::new(Track::new(info.clone(), slot.feedback.clone(), shared.clone()));
            st.tracks.insert(info.id.clone(), track.clone());
            if let Some(slot) = st.peers.get_mut(&link.peer) {
                slot.published.push(info.id.clone());
            }
            if mirror {
                shared.counters.remote_tracks.add(1);
            } else {
                shared.counters.tracks.add(1);
            }
            info!(room = %room, peer = %link.peer, track = %info.id, codec = %info.codec, name = %info.name, mirror, "track published");
            st.broadcast(EndpointEvent::TrackPublished(info.clone()), Some(&link.peer));
            if !mirror {
                shared.emit(RoomEvent::TrackPublished { room: room.clone(), track: info.clone() });
            }
            let others: Vec<PeerId> = st
                .peers
                .values()
                .filter(|s| s.info.identity != link.peer && s.auto_subscribe && s.info.grants.subscribe)
                .map(|s| s.info.identity.clone())
                .collect();
            for peer in others {
                st.auto_subscribe(shared, &peer, &info.id);
            }
            Ok(TrackPublisher { track })
        })
    }

    pub(crate) fn unpublish(&self, link: &PeerLink, track: &TrackId) -> Result<(), ContractError> {
        self.with_session(link, |st, shared| {
            st.check_owner(&self.id, &link.peer, track)?;
            st.unpublish(&self.id, shared, track);
            Ok(())
        })
    }

    pub(crate) fn subscribe(
        &self,
        link: &PeerLink,
        track: &TrackId,
        options: SubscribeOptions,
    ) -> Result<SubscribedTrack, ContractError> {
        self.with_session(link, |st, shared| st.subscribe(&self.id, shared, &link.peer, track, options))
    }

    pub(crate) fn unsubscribe(&self, link: &PeerLink, track: &TrackId) -> Result<(), ContractError> {
        self.with_session(link, |st, shared| {
            let slot = st.peers.get_mut(&link.peer).expect("checked by with_session");
            let sub = slot
                .subscriptions
                .remove(track)
                .ok_or_else(|| ContractError::TrackNotFound { room: self.id.clone(), track: track.clone() })?;
            sub.detach(shared);
            st.deliver(&link.peer, EndpointEvent::Unsubscribed { track: track.clone() });
            Ok(())
        })
    }

    pub(crate) fn set_muted(&self, link: &PeerLink, track: &TrackId, muted: bool) -> Result<(), ContractError> {
        self.with_session(link, |st, _| {
            st.check_owner(&self.id, &link.peer, track)?;
            let found = &st.tracks[track];
            found.update_info(|info| info.muted = muted);
            // Peers hear "unmuted" only when an operator does not hold the track either.
            let muted = found.shown_muted();
            st.broadcast(EndpointEvent::TrackMuted { track: track.clone(), muted }, Some(&link.peer));
            Ok(())
        })
    }

    /// Runs `f` on the session's subscription to `track` (`TrackNotFound` without one).
    fn with_subscription<T>(
        &self,
        link: &PeerLink,
        track: &TrackId,
        f: impl FnOnce(&SubLink) -> Result<T, ContractError>,
    ) -> Result<T, ContractError> {
        self.with_session(link, |st, _| {
            let sub = st.peers[&link.peer]
                .subscriptions
                .get(track)
                .ok_or_else(|| ContractError::TrackNotFound { room: self.id.clone(), track: track.clone() })?;
            f(sub)
        })
    }

    pub(crate) fn set_layer(
        &self,
        link: &PeerLink,
        track: &TrackId,
        layer: LayerPreference,
    ) -> Result<(), ContractError> {
        self.with_subscription(link, track, |sub| {
            let before = sub.sub.preference();
            sub.sub.set_preference(layer);
            sub.attached.refresh_demand();
            if before != layer && sub.attached.info().is_simulcast() {
                sub.attached.ask_keyframe_now(sub.attached.target_now(layer));
            }
            Ok(())
        })
    }

    pub(crate) fn request_keyframe(&self, link: &PeerLink, track: &TrackId) -> Result<(), ContractError> {
        self.with_subscription(link, track, |sub| {
            // The subscriber lost a frame of the layer it is on; while it waits, its target.
            let layer = sub.sub.current_layer().unwrap_or_else(|| sub.attached.target_now(sub.sub.preference()));
            sub.attached.ask_keyframe_now(layer);
            Ok(())
        })
    }

    pub(crate) fn report_bitrate(&self, link: &PeerLink, track: &TrackId, bps: u64) -> Result<(), ContractError> {
        self.with_subscription(link, track, |sub| {
            sub.sub.wanted_bps.store(bps, Ordering::Relaxed);
            sub.origin.refresh_bitrate_hint();
            Ok(())
        })
    }

    pub(crate) fn report_link(
        &self,
        link: &PeerLink,
        track: &TrackId,
        quality: LinkQuality,
    ) -> Result<(), ContractError> {
        self.with_subscription(link, track, |sub| {
            *sub.sub.link.lock() = Some(quality.sanitized());
            Ok(())
        })
    }

    pub(crate) fn update_peer(
        &self,
        link: &PeerLink,
        name: Option<String>,
        metadata: Option<serde_json::Value>,
    ) -> Result<PeerInfo, ContractError> {
        self.with_session(link, |st, _| {
            let slot = st.peers.get_mut(&link.peer).expect("checked by with_session");
            if let Some(name) = name {
                slot.info.name = Some(name);
            }
            if let Some(metadata) = metadata {
                slot.info.metadata = metadata;
            }
            let info = slot.info.clone();
            st.broadcast(EndpointEvent::PeerUpdated(info.clone()), Some(&link.peer));
            Ok(info)
        })
    }

    pub(crate) fn send_data(&self, link: &PeerLink, message: DataMessage) -> Result<usize, ContractError> {
        self.with_session(link, |st, shared| {
            let limit = shared.config.max_data_message_bytes;
            if message.payload.len() > limit {
                return Err(ContractError::LimitExceeded { what: "data message bytes", limit });
            }
            let targets: Vec<PeerId> = if message.to.is_empty() {
                st.members().map(|s| &s.info.identity).filter(|p| **p != link.peer).cloned().collect()
            } else {
                message.to.iter().filter(|p| **p != link.peer && st.is_member(p)).cloned().collect()
            };
            let message = DataMessage { from: link.peer.clone(), ..message };
            for peer in &targets {
                st.deliver(peer, EndpointEvent::Data(message.clone()));
            }
            Ok(targets.len())
        })
    }

    pub(crate) fn signal(&self, link: &PeerLink, to: &PeerId, payload: serde_json::Value) -> Result<(), ContractError> {
        self.with_session(link, |st, _| {
            if !st.is_member(to) {
                return Err(ContractError::PeerNotFound { room: self.id.clone(), peer: to.clone() });
            }
            st.deliver(to, EndpointEvent::Signal { from: link.peer.clone(), from_session: link.session, payload });
            Ok(())
        })
    }
}

impl RoomState {
    /// The peers the room shows: everyone but services.
    fn members(&self) -> impl Iterator<Item = &PeerSlot> {
        self.peers.values().filter(|s| s.role != PeerRole::Service)
    }

    fn has_members(&self) -> bool {
        self.members().next().is_some()
    }

    fn is_member(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|s| s.role != PeerRole::Service)
    }

    /// A seat among the live sessions of the request's token: the seat of the session it
    /// replaces when that one was opened with the same token, else a new one (refused past the
    /// limit before anything else changes).
    fn seat_for(&mut self, shared: &Shared, req: &JoinRequest) -> Result<Option<TokenSeat>, ContractError> {
        let Some(token_id) = &req.credential.token_id else { return Ok(None) };
        if req.on_duplicate == DuplicatePolicy::Replace
            && let Some(existing) = self.peers.get_mut(&req.identity)
            && existing.seat.as_ref().is_some_and(|seat| seat.token_id() == token_id)
        {
            return Ok(existing.seat.take());
        }
        shared.token_sessions.acquire(token_id, shared.config.max_sessions_per_token).map(Some).inspect_err(|err| {
            info!(room = %req.room, peer = %req.identity, transport = req.transport.as_str(), "join refused: {err}");
        })
    }

    fn info(&self, id: &RoomId) -> RoomInfo {
        RoomInfo {
            name: id.clone(),
            max_peers: self.options.max_peers,
            empty_timeout_s: self.options.empty_timeout.as_secs(),
            max_duration_s: self.options.max_duration.map(|d| d.as_secs()),
            metadata: self.options.metadata.clone(),
            mode: self.options.mode,
            video_codec: self.options.video_codec,
            created_at_ms: self.created_at_ms,
            num_peers: self.members().count(),
            num_tracks: self.tracks.len(),
        }
    }

    /// Queues `event` for one peer; a full queue marks the peer overloaded.
    fn deliver(&mut self, peer: &PeerId, event: EndpointEvent) {
        let Some(slot) = self.peers.get(peer) else { return };
        if slot.events.try_send(Box::new(event)).is_err() && !slot.link.closed.is_cancelled() {
            self.overloaded.push((peer.clone(), slot.info.session));
        }
    }

    fn broadcast(&mut self, event: EndpointEvent, except: Option<&PeerId>) {
        let targets: Vec<PeerId> = self.peers.keys().filter(|p| Some(*p) != except).cloned().collect();
        for peer in targets {
            self.deliver(&peer, event.clone());
        }
    }

    fn reap_overloaded(&mut self, room: &RoomId, shared: &Arc<Shared>) {
        while let Some((peer, session)) = self.overloaded.pop() {
            tracing::warn!(room = %room, peer = %peer, "peer's event queue is full, closing it");
            self.remove_peer(room, shared, &peer, session, CloseReason::Overloaded, true);
        }
    }

    fn check_owner(&self, room: &RoomId, peer: &PeerId, track: &TrackId) -> Result<(), ContractError> {
        match self.tracks.get(track) {
            None => Err(ContractError::TrackNotFound { room: room.clone(), track: track.clone() }),
            Some(t) if t.info().peer != *peer => {
                Err(ContractError::NotTrackOwner { track: track.clone(), peer: peer.clone() })
            }
            Some(_) => Ok(()),
        }
    }

    fn subscribe(
        &mut self,
        room: &RoomId,
        shared: &Arc<Shared>,
        peer: &PeerId,
        track_id: &TrackId,
        options: SubscribeOptions,
    ) -> Result<SubscribedTrack, ContractError> {
        let slot = &self.peers[peer];
        if !slot.info.grants.subscribe {
            return Err(ContractError::SubscribeNotAllowed { room: room.clone(), peer: peer.clone() });
        }
        let origin = self
            .tracks
            .get(track_id)
            .cloned()
            .ok_or_else(|| ContractError::TrackNotFound { room: room.clone(), track: track_id.clone() })?;
        let info = TrackInfo::clone(&origin.info());
        if info.peer == *peer {
            return Err(ContractError::OwnTrack { peer: peer.clone(), track: track_id.clone() });
        }
        if let Some(existing) = slot.subscriptions.get(track_id) {
            existing.sub.set_preference(options.layer);
            existing.attached.refresh_demand();
            let attached = existing.attached.info();
            return Ok(SubscribedTrack { track: info, codec: attached.codec, params: attached.params.clone() });
        }

        // A peer that takes frames in presentation order only gets H.264 with B-frames
        // re-encoded without (a variant in the same codec).
        let reordered = slot.presentation_order_only && info.params.reorders;
        let accepted = options.codecs.is_empty() || options.codecs.contains(&info.codec);
        // Without a transcoder for that (video transcoding off), the stream goes as it is.
        let reordered = reordered && shared.adapters.route(info.codec, &[info.codec]).is_some();
        let attached = if accepted && !reordered {
            origin.clone()
        } else {
            let no_path = || ContractError::NoCodecPath {
                track: track_id.clone(),
                codec: info.codec.to_string(),
                accepted: codec_list(&options.codecs),
            };
            let targets = if reordered { vec![info.codec] } else { options.codecs.clone() };
            let (codec, factory) = shared.adapters.route(info.codec, &targets).ok_or_else(no_path)?;
            let (me, origin_id) = (self.me.clone(), track_id.clone());
            let on_failure: adapt::OnVariantFailure = Box::new(move |variant, reason| {
                if let Some(room) = me.upgrade() {
                    room.variant_failed(&origin_id, variant, &reason);
                }
            });
            adapt::variant_for(&origin, codec, options.layer, &factory, &shared.clone(), on_failure).map_err(|err| {
                tracing::warn!(room = %room, peer = %peer, track = %track_id, "{err}");
                ContractError::TranscodeUnavailable { track: track_id.clone(), reason: err.to_string() }
            })?
        };
        let attached_info = attached.info();
        let sub = Arc::new(Subscription::new(track_id.clone(), slot.media.clone(), options.layer));
        attached.add_subscriber(sub.clone());
        shared.counters.subscriptions.add(1);
        if info.kind == MediaKind::Video {
            attached.ask_keyframe_now(attached.target_now(options.layer));
        }
        debug!(room = %room, peer = %peer, track = %track_id, codec = %attached_info.codec, "subscribed");
        let result =
            SubscribedTrack { track: info.clone(), codec: attached_info.codec, params: attached_info.params.clone() };
        if let Some(slot) = self.peers.get_mut(peer) {
            slot.subscriptions.insert(track_id.clone(), SubLink { sub, origin, attached });
        }
        self.deliver(
            peer,
            EndpointEvent::Subscribed { track: info, codec: result.codec, params: result.params.clone() },
        );
        Ok(result)
    }

    fn auto_subscribe(&mut self, shared: &Arc<Shared>, peer: &PeerId, track: &TrackId) {
        let Some(slot) = self.peers.get(peer) else { return };
        let options = SubscribeOptions { codecs: slot.accept.clone(), layer: LayerPreference::Highest };
        let room = slot.link.room.clone();
        if let Err(err) = self.subscribe(&room, shared, peer, track, options) {
            tracing::warn!(room = %room, peer = %peer, track = %track, "automatic subscription failed: {err}");
            self.deliver(peer, EndpointEvent::SubscriptionFailed { track: track.clone(), reason: err.to_string() });
        }
    }

    fn unpublish(&mut self, room: &RoomId, shared: &Arc<Shared>, track_id: &TrackId) {
        let Some(track) = self.tracks.remove(track_id) else { return };
        let info = TrackInfo::clone(&track.info());
        let subscribers: Vec<PeerId> = self
            .peers
            .iter_mut()
            .filter_map(|(peer, slot)| {
                let link = slot.subscriptions.remove(track_id)?;
                link.detach(shared);
                Some(peer.clone())
            })
            .collect();
        for peer in &subscribers {
            self.deliver(peer, EndpointEvent::Unsubscribed { track: track_id.clone() });
        }
        track.close();
        let mut mirror = false;
        if let Some(owner) = self.peers.get_mut(&info.peer) {
            owner.published.retain(|t| t != track_id);
            mirror = matches!(owner.role, PeerRole::Mirror { .. });
        }
        if mirror {
            shared.counters.remote_tracks.add(-1);
        } else {
            shared.counters.tracks.add(-1);
        }
        info!(room = %room, peer = %info.peer, track = %track_id, "track unpublished");
        self.broadcast(
            EndpointEvent::TrackUnpublished { track: track_id.clone(), peer: info.peer.clone() },
            Some(&info.peer),
        );
        if !mirror {
            shared.emit(RoomEvent::TrackUnpublished { room: room.clone(), track: info });
        }
    }

    /// Takes a peer out of the room, releasing its tracks and subscriptions, if `session` is
    /// still its live session.
    fn remove_peer(
        &mut self,
        room: &RoomId,
        shared: &Arc<Shared>,
        peer: &PeerId,
        session: SessionId,
        reason: CloseReason,
        tell_others: bool,
    ) {
        if self.peers.get(peer).is_none_or(|s| s.info.session != session) {
            return;
        }
        let published = self.peers[peer].published.clone();
        for track in &published {
            self.unpublish(room, shared, track);
        }
        let Some(slot) = self.peers.remove(peer) else { return };
        for link in slot.subscriptions.values() {
            link.detach(shared);
        }
        let _ = slot.events.try_send(Box::new(EndpointEvent::Closed { reason: reason.clone() }));
        slot.link.closed.cancel();
        match slot.role {
            PeerRole::Client => shared.counters.peers.add(-1),
            PeerRole::Mirror { .. } => shared.counters.remote_peers.add(-1),
            PeerRole::Service => return,
        }
        info!(room = %room, peer = %peer, session = %session, reason = reason.as_str(), "peer left");
        if tell_others {
            self.broadcast(EndpointEvent::PeerLeft { peer: peer.clone(), session, reason: reason.clone() }, None);
        }
        if slot.role == PeerRole::Client {
            shared.emit(RoomEvent::PeerLeft { room: room.clone(), peer: slot.info, reason });
        }
        if !self.has_members() && self.empty_since.is_none() {
            self.empty_since = Some(shared.clock.now());
        }
    }
}

/// One published track's readings: each layer's, and the best active layer's as the track's.
fn track_stats(track: &Track, picture_size: PictureSize) -> TrackStats {
    let info = track.info();
    let readings = track.layer_readings();
    let layers: Vec<LayerStats> = readings
        .into_iter()
        .enumerate()
        .map(|(layer, (rate, active, keyframe, link))| {
            let size = keyframe.and_then(|frame| picture_size(info.codec, &frame));
            LayerStats {
                layer: layer as u8,
                rid: info.layers.get(layer).map(|l| l.rid.clone()),
                active,
                bitrate_bps: rate.bitrate_bps,
                fps: rate.fps,
                width: size.map(|s| s.0),
                height: size.map(|s| s.1),
                link,
            }
        })
        .collect();
    let best = layers.iter().rev().find(|l| l.active && l.fps > 0).or(layers.first());
    let mut transcoded_to: Vec<Codec> = track.variants.lock().keys().copied().collect();
    transcoded_to.sort_by_key(|c| c.to_string());
    TrackStats {
        id: info.id.clone(),
        kind: info.kind,
        source: info.source,
        codec: info.codec,
        muted: track.shown_muted(),
        muted_by_operator: track.is_held(),
        bitrate_bps: layers.iter().map(|l| l.bitrate_bps).sum(),
        fps: best.map_or(0, |l| l.fps),
        width: best.and_then(|l| l.width),
        height: best.and_then(|l| l.height),
        link: best.and_then(|l| l.link),
        subscribers: track.subscriber_total(),
        transcoded_to,
        layers,
    }
}

/// Peers in the order they joined (identity among peers that joined in the same millisecond).
fn join_order(a: &PeerInfo, b: &PeerInfo) -> std::cmp::Ordering {
    a.joined_at_ms.cmp(&b.joined_at_ms).then(a.identity.cmp(&b.identity))
}
