//! Placing calls (`POST /v1/rooms/{room}/sip/calls`): the INVITE with our SDP offer and the
//! trunk's credentials, then — once answered — the codec from the far end's answer, the phone's
//! place in the room and its call task.

use std::time::Instant;

use junction_core::TransportKind;
use junction_engine::{DuplicatePolicy, JoinRequest};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{DialError, DialRequest, Live, Stack};
use crate::call::{self, CallEnd, CallSetup, Entry};
use crate::calls::{CallRecord, CallState, Direction};
use crate::sdp::{self, SdpOrigin};
use crate::ua::{CallKey, Invitation};

impl Stack {
    pub(super) fn dial(&mut self, request: DialRequest) -> Result<CallRecord, DialError> {
        if self.live.len() >= self.config.max_calls {
            return Err(DialError::TooManyCalls { max: self.config.max_calls });
        }
        let Some(room) = self.engine.room(&request.room) else {
            return Err(DialError::RoomNotFound { room: request.room });
        };
        if room.peers.iter().any(|p| p.info.identity == request.identity) {
            return Err(DialError::IdentityTaken { room: request.room, identity: request.identity });
        }
        let sockets = self.ports.allocate()?;
        let origin = SdpOrigin::new();
        let local_rtp = sockets.local_addr();
        let offer = sdp::offer(local_rtp, origin);
        let from = format!("sip:{}@{}", request.from_user, self.advertised);
        let outbound = request.trunk.as_ref().and_then(|t| t.outbound.as_ref());
        let credentials = outbound.and_then(|o| Some((o.username.clone()?, o.password.clone()?)));
        let signalling = request.to;
        let key = self.ua.invite(
            Instant::now(),
            Invitation { target: request.target.clone(), to: request.to, from: from.clone(), sdp: offer, credentials },
        );
        let mut record = CallRecord::new(
            Direction::Outbound,
            request.room.clone(),
            request.identity.clone(),
            from,
            request.target.to_string(),
            CallState::Dialing,
        );
        record.trunk = request.trunk.as_ref().map(|t| t.id.clone());
        info!(room = %request.room, call = %record.id, to = %request.target, via = %request.to, "dialing");
        metrics::counter!("junction_sip_calls_total", "direction" => "outbound").increment(1);
        self.book.insert(record.clone());
        self.by_id.insert(record.id.clone(), key);
        self.live.insert(
            key,
            Live {
                id: record.id.clone(),
                room: request.room,
                identity: request.identity,
                signalling,
                inbound: false,
                task: None,
                pending: Some(sockets),
                local_rtp,
                origin,
                media: None,
            },
        );
        Ok(record)
    }

    /// The far end answered: settle the codec, join the room, start the call.
    pub(super) fn answered(&mut self, call: CallKey, body: &[u8]) {
        if let Err(end) = self.connect(call, body) {
            warn!(call = ?self.live.get(&call).map(|l| l.id.clone()), reason = %end.describe(), "answered call cannot go on");
            self.ua.hangup(Instant::now(), call);
            self.finish(call, end);
        }
    }

    fn connect(&mut self, call: CallKey, body: &[u8]) -> Result<(), CallEnd> {
        let Some(live) = self.live.get_mut(&call) else { return Ok(()) };
        let sockets = live.pending.take().ok_or_else(|| CallEnd::Failed("answered twice".into()))?;
        let media = sdp::parse(body)
            .and_then(|answer| sdp::negotiate(&answer))
            .map_err(|err| CallEnd::Failed(format!("the far end's SDP answer: {err}")))?;
        let mut join = JoinRequest::new(live.room.clone(), live.identity.clone(), TransportKind::Sip);
        join.metadata = json!({"sip": {"call": live.id, "direction": "outbound"}});
        join.auto_subscribe = false;
        join.on_duplicate = DuplicatePolicy::Reject;
        let joined = self.engine.join(join).map_err(|err| CallEnd::Failed(err.to_string()))?;
        let (task, inbox) = mpsc::channel(32);
        call::spawn(CallSetup {
            id: live.id.clone(),
            key: call,
            room: live.room.clone(),
            identity: live.identity.clone(),
            name: None,
            metadata: serde_json::Value::Null,
            sockets,
            media: media.clone(),
            entry: Entry::Joined(joined.endpoint),
            engine: self.engine.clone(),
            mixer: self.mixer.clone(),
            book: self.book.clone(),
            settings: self.settings,
            to_stack: self.commands_tx.clone(),
            inbox,
        })
        .map_err(CallEnd::Failed)?;
        live.task = Some(task);
        live.media = Some(media.clone());
        info!(room = %live.room, peer = %live.identity, call = %live.id, codec = %media.codec, "call answered by the far end");
        self.book.set_codec(&live.id, media.codec.as_str());
        self.book.transition(&live.id, CallState::Answered, Some(200), None);
        Ok(())
    }
}
