//! Entry points for the fuzz targets in `fuzz/` (cargo feature `fuzzing`; not part of the API):
//! WebSocket frames from a few browsers into their sans-I/O [`Session`]s, exactly as the
//! socket driver feeds them (`on_text`, `on_binary`, then room events, media signals and relayed
//! messages until nothing more is pending), against a real engine.
//!
//! Four sessions: `alice` and `bob` (admin) with tokens for the SFU room `lobby`, `carol` for
//! the mesh room `mesh`, and an anonymous one. A camera of another transport publishes a
//! simulcast track in `lobby`, so subscriptions and layers have something to act on.
#![cfg(feature = "fuzzing")]
#![doc(hidden)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};

use junction_auth::Authority;
use junction_core::{
    Codec, Grants, LayerInfo, PeerId, PublishRequest, RoomId, RoomMode, RoomOptions, SessionCredential, TrackSource,
    TransportKind,
};
use junction_engine::{Engine, EngineConfig, JoinRequest, Joined, TrackPublisher};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::BrowserConfig;
use crate::principal::Principal;
use crate::registry::{Inbound, Registry};
use crate::session::{Context, RoomInput, Session};

/// The browsers and the room they are in.
pub struct Browsers {
    ctx: Arc<Context>,
    sessions: Vec<Option<(Session, mpsc::Receiver<Inbound>)>>,
    camera: Option<(Joined, TrackPublisher)>,
}

fn principal(identity: &str, room: Option<&str>, grants: Grants) -> Principal {
    Principal {
        identity: PeerId::new(identity).unwrap_or_else(|_| unreachable!("a valid identity")),
        room: room.and_then(|r| RoomId::new(r).ok()),
        name: Some(identity.to_uppercase()),
        metadata: Value::Null,
        grants,
        anonymous: room.is_none(),
        session: SessionCredential::default(),
    }
}

impl Browsers {
    /// Must run inside a tokio runtime. `webrtc`: the media plane SFU offers go to, if any.
    pub fn new(webrtc: Option<junction_webrtc::WebrtcTransport>) -> Browsers {
        let config = BrowserConfig { allow_anonymous: true, ..BrowserConfig::default() };
        let ctx = Arc::new(Context {
            engine: Engine::new(EngineConfig::default()),
            authority: Authority::new("fuzzing-key-0123456789abcdef"),
            registry: Registry::default(),
            config,
            webrtc,
        });
        let mesh = RoomOptions { mode: RoomMode::Mesh, ..RoomOptions::default() };
        let _ = ctx.engine.create_room(RoomId::new("mesh").ok(), mesh);
        let admin = Grants { admin: true, ..Grants::default() };
        let principals = [
            principal("alice", Some("lobby"), Grants::default()),
            principal("bob", Some("lobby"), admin),
            principal("carol", Some("mesh"), Grants::default()),
            principal("anon-fuzz", None, Grants::default()),
        ];
        let sessions = principals.into_iter().map(|p| Some(Session::new(ctx.clone(), p))).collect();
        let camera = Self::camera(&ctx.engine);
        Browsers { ctx, sessions, camera }
    }

    fn camera(engine: &Engine) -> Option<(Joined, TrackPublisher)> {
        let mut request =
            JoinRequest::new(RoomId::new("lobby").ok()?, PeerId::new("cam").ok()?, TransportKind::Internal);
        request.auto_subscribe = false;
        let joined = engine.join(request).ok()?;
        let layers = ["q", "h", "f"]
            .iter()
            .map(|rid| LayerInfo { rid: rid.to_string(), width: None, height: None, max_bitrate: None })
            .collect();
        let track = PublishRequest::new("camera", Codec::Vp8).with_source(TrackSource::Camera).with_layers(layers);
        let publisher = joined.endpoint.rpc.publish(track).ok()?;
        Some((joined, publisher))
    }

    /// How many browsers there are.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The session id of browser `index` (for `call` requests), if it is still open.
    pub fn session_id(&self, index: usize) -> Option<String> {
        self.sessions.get(index)?.as_ref().map(|(s, _)| s.id.to_string())
    }

    /// The camera track's id (for `subscribe` and friends).
    pub fn track_id(&self) -> Option<String> {
        self.camera.as_ref().map(|(_, p)| p.info().id.to_string())
    }

    /// A text frame from browser `index`.
    pub async fn text(&mut self, index: usize, text: &str) {
        if let Some(Some((session, _))) = self.sessions.get_mut(index) {
            session.on_text(text).await;
        }
    }

    /// A binary frame from browser `index`.
    pub fn binary(&mut self, index: usize) {
        if let Some(Some((session, _))) = self.sessions.get_mut(index) {
            session.on_binary();
        }
    }

    /// Browser `index`'s socket drops and a new one resumes its session, saying it received
    /// `received` messages (any number: more than were written, or fewer than are kept).
    pub fn resume(&mut self, index: usize, received: u64) {
        if let Some(Some((session, _))) = self.sessions.get_mut(index) {
            let _ = session.resume(Some(received));
        }
    }

    /// The camera mutes, unmutes or unpublishes its track (room events for the browsers).
    pub fn camera_event(&mut self, what: u8) {
        let Some((joined, publisher)) = &self.camera else { return };
        let id = publisher.info().id.clone();
        match what % 3 {
            0 => drop(joined.endpoint.rpc.set_muted(&id, true)),
            1 => drop(joined.endpoint.rpc.set_muted(&id, false)),
            _ => {
                drop(joined.endpoint.rpc.unpublish(&id));
                self.camera = None;
            }
        }
    }

    /// Feeds every session what is pending for it — room events, media signals, relayed
    /// messages — as the driver does, ends the sessions that ended, and returns what went out
    /// to each browser as JSON text.
    pub async fn drain(&mut self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (index, slot) in self.sessions.iter_mut().enumerate() {
            let Some((session, inbox)) = slot else { continue };
            // A bound on the rounds: each one handles one pending room input.
            for _ in 0..256 {
                let input = match poll_once(session.next_room_input()) {
                    Some(input) => input,
                    None => break,
                };
                match input {
                    RoomInput::Event(Some(event)) => session.on_room_event(event).await,
                    RoomInput::Event(None) => session.room_events_ended(),
                    RoomInput::Media(media) => drop(media),
                    RoomInput::Signal(signal) => session.on_media_signal(signal).await,
                }
            }
            while let Ok(inbound) = inbox.try_recv() {
                if let Inbound::Deliver(message) = inbound {
                    session.push(message);
                }
            }
            while let Some(message) = session.next_outgoing() {
                out.push((index, message));
            }
            if let Some(ending) = session.ending().cloned()
                && let Some((session, _)) = slot.take()
            {
                session.finish(ending.leave);
            }
        }
        out
    }

    /// The shared registry's view (sessions, calls) — it must forget sessions that ended.
    pub fn registered(&self) -> (usize, usize) {
        (self.ctx.registry.len(), self.ctx.registry.calls())
    }
}

/// Polls `future` once: its output if it is ready now.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut TaskContext::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}
