//! Placing calls (`POST /v1/rooms/{room}/sip/calls`): the INVITE with our SDP offer and the
//! trunk's credentials; the answer settles the call in `settle.rs`.

use std::time::Instant;

use tracing::info;

use super::{DialError, DialRequest, Live, Pending, Stack};
use crate::calls::{CallRecord, CallState, Direction};
use crate::message::Transport;
use crate::sdp::{self, MediaEncryption, SdpOrigin};
use crate::ua::Invitation;
use crate::ua::uri_addr;

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
        // A trunk says whether its calls are encrypted; a direct call to a sips: URI is.
        let encryption = match &request.trunk {
            Some(trunk) => trunk.media_encryption,
            None if request.target.scheme == Some(rsip::Scheme::Sips) => MediaEncryption::Required,
            None => MediaEncryption::Optional,
        };
        let offered = encryption.offer();
        if request.to.transport == Transport::Tls && uri_addr(&request.target).is_none() {
            // The certificate must carry the name dialled, not the address it resolved to.
            self.tcp.name(request.to.addr, &request.target.host().to_string());
        }
        let offer = sdp::offer(local_rtp, origin, offered.as_ref());
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
        record.transport = request.to.transport;
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
                pending: Some(Pending { sockets, entry: None, name: None, metadata: serde_json::Value::Null, offered }),
                local_rtp,
                origin,
                media: None,
                encryption,
                admitted: None,
                transferring: None,
            },
        );
        Ok(record)
    }
}
