//! Admitting a call: capacity (503), trunk (403, or a 401 digest challenge), dispatch rule
//! (404), SDP (488), the room itself (404, 480, 486 when the caller's identity is already in
//! it, 600 when the room is full) — each refusal with its own status and a Warning saying why —
//! and then answering it and starting its task. Also re-INVITEs (hold/resume) of live calls.

use std::fmt::Display;
use std::time::Instant;

use junction_core::{ContractError, PeerId, TransportKind};
use junction_engine::{DuplicatePolicy, JoinRequest};
use rsip::headers::UntypedHeader;
use rsip::{Header, Request, headers};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::info;

use super::{Live, Pending, Stack};
use crate::admission::{Caller, DispatchError, TrunkDecision, trunks};
use crate::call::{self, CallSetup, Entry, ToCall};
use crate::calls::{CallRecord, CallState, Direction};
use crate::message::{Head, Peer, build, header_value};
use crate::sdp::{self, Negotiated, SdpOrigin};
use crate::ua::CallKey;

/// A refusal: the status and the headers that explain it.
struct Refusal {
    code: u16,
    headers: Vec<Header>,
    why: String,
}

fn refuse(code: u16, why: impl Display) -> Refusal {
    let why = why.to_string();
    Refusal { code, headers: vec![crate::ua::warning(&why)], why }
}

/// Keeps what may go in a peer identity; everything else becomes `-`.
pub(crate) fn identity_for(user: &str) -> PeerId {
    let cleaned: String = user
        .chars()
        .take(100)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | '+' | '@') { c } else { '-' })
        .collect();
    let name = if cleaned.is_empty() { "anonymous".to_owned() } else { cleaned };
    PeerId::new(format!("sip:{name}")).unwrap_or_else(|_| PeerId::new("sip:anonymous").expect("a valid identity"))
}

impl Stack {
    pub(super) fn incoming(&mut self, call: CallKey, request: &Request, head: &Head, from: Peer) {
        if let Err(refusal) = self.admit(call, request, head, from) {
            info!(from = %from, caller = ?head.from.user(), called = ?request.uri.user(), code = refusal.code, why = %refusal.why, "call refused");
            metrics::counter!("junction_sip_refused_total", "status" => refusal.code.to_string()).increment(1);
            self.ua.reject(Instant::now(), call, refusal.code, refusal.headers);
        }
    }

    fn admit(&mut self, call: CallKey, request: &Request, head: &Head, from: Peer) -> Result<(), Refusal> {
        if self.live.len() >= self.config.max_calls {
            let mut refusal = refuse(503, format!("{} calls are already up", self.config.max_calls));
            refusal.headers.push(build::other("Retry-After", "30"));
            return Err(refusal);
        }
        let max_per_source = self.config.max_calls_per_source;
        let from_source = self.live.values().filter(|l| l.inbound && l.signalling.addr.ip() == from.addr.ip()).count();
        if from_source >= max_per_source {
            let mut refusal = refuse(503, format!("{max_per_source} calls from {} are already up", from.addr.ip()));
            refusal.headers.push(build::other("Retry-After", "30"));
            return Err(refusal);
        }
        let called = request.uri.user().filter(|u| !u.is_empty()).or(head.to.user()).unwrap_or_default().to_owned();
        let caller = head.from.user().map(str::to_owned).unwrap_or_else(|| head.from.uri.host().to_string());

        let authorization = header_value(request, "Authorization");
        let request_uri = request.uri.to_string();
        let caller_facts = Caller {
            source: from.addr.ip(),
            called: &called,
            request_uri: &request_uri,
            authorization: authorization.as_deref(),
        };
        let now = Instant::now();
        let trunk =
            match trunks::select(&self.directory.trunks(), caller_facts, &mut self.nonces, &self.config.realm, now) {
                TrunkDecision::Accepted { trunk } => trunk,
                TrunkDecision::Forbidden(why) => return Err(refuse(403, why)),
                TrunkDecision::Challenge { stale } => {
                    let challenge = self.nonces.challenge(&self.config.realm, now, stale);
                    let header = Header::WwwAuthenticate(headers::WwwAuthenticate::new(challenge));
                    return Err(Refusal { code: 401, headers: vec![header], why: "digest credentials needed".into() });
                }
            };

        let destination = self.directory.dispatch(&trunk, &called, &caller).map_err(|err| match err {
            DispatchError::NoRule { .. } | DispatchError::BadRoomName { .. } => refuse(404, err),
        })?;
        let room = destination.room.clone();
        let encryption = self.directory.trunk(&trunk).map(|t| t.media_encryption).unwrap_or_default();
        if !self.engine.room_exists(&room) && !self.engine.config().auto_create_rooms {
            return Err(refuse(404, format!("room {room} does not exist")));
        }

        // Without a body the INVITE is a late offer: our 2xx offers, the ACK answers, and the
        // codec is known only then.
        let media = if request.body.is_empty() {
            None
        } else {
            let remote = sdp::parse(&request.body).map_err(|err| refuse(488, err))?;
            Some(sdp::negotiate(&remote, encryption).map_err(|err| refuse(488, err))?)
        };
        let sockets = self.ports.allocate().map_err(|err| {
            let mut refusal = refuse(503, err);
            refusal.headers.push(build::other("Retry-After", "30"));
            refusal
        })?;

        let identity = identity_for(&caller);
        let name = head.from.display.clone().map(|d| d.trim_matches('"').to_owned()).filter(|d| !d.is_empty());
        let metadata = json!({"sip": {"call_id": head.call_id, "from": head.from.uri.to_string(), "to": request.uri.to_string(), "trunk": trunk}});
        let entry = match &destination.pin {
            Some(pin) => Entry::Pin(pin.clone()),
            None => {
                let mut join = JoinRequest::new(room.clone(), identity.clone(), TransportKind::Sip);
                join.name = name.clone();
                join.metadata = metadata.clone();
                join.auto_subscribe = false;
                join.on_duplicate = DuplicatePolicy::Reject;
                join.client = header_value(request, "User-Agent").and_then(|ua| junction_core::client_label(&ua));
                let joined = self.engine.join(join).map_err(|err| match &err {
                    ContractError::RoomNotFound { .. } => refuse(404, &err),
                    ContractError::IdentityTaken { .. } => refuse(486, &err),
                    ContractError::RoomFull { .. } => refuse(600, &err),
                    ContractError::RoomClosing { .. } => refuse(480, &err),
                    _ => refuse(500, &err),
                })?;
                Entry::Joined(joined.endpoint)
            }
        };

        let state = if destination.pin.is_some() { CallState::Pin } else { CallState::Answered };
        let mut record = CallRecord::new(
            Direction::Inbound,
            room.clone(),
            identity.clone(),
            head.from.uri.to_string(),
            request.uri.to_string(),
            state,
        );
        record.trunk = Some(trunk.clone());
        record.rule = Some(destination.rule.clone());
        record.transport = from.transport;
        if let Some(media) = &media {
            record.describe_media(media);
        }
        let id = record.id.clone();

        let origin = SdpOrigin::new();
        let local_rtp = sockets.local_addr();
        let (body, task, pending) = match &media {
            Some(media) => {
                let (task, inbox) = mpsc::channel(32);
                call::spawn(CallSetup {
                    id: id.clone(),
                    key: call,
                    room: room.clone(),
                    identity: identity.clone(),
                    name,
                    metadata,
                    sockets,
                    media: media.clone(),
                    entry,
                    services: self.call_services(),
                    inbox,
                })
                .map_err(|why| refuse(500, why))?;
                (sdp::answer(local_rtp, origin, media), Some(task), None)
            }
            None => {
                let offered = encryption.offer();
                let offer = sdp::offer(local_rtp, origin, offered.as_ref());
                (offer, None, Some(Pending { sockets, entry: Some(entry), name, metadata, offered }))
            }
        };

        let codec = media.as_ref().map_or("late offer", |m| m.codec.as_str());
        info!(room = %room, peer = %identity, call = %id, from = %from, codec, pin = destination.pin.is_some(), "call answered");
        metrics::counter!("junction_sip_calls_total", "direction" => "inbound").increment(1);
        self.book.insert(record);
        self.by_id.insert(id.clone(), call);
        self.live.insert(
            call,
            Live {
                id,
                room,
                identity,
                signalling: from,
                inbound: true,
                task,
                pending,
                local_rtp,
                origin,
                media,
                encryption,
                admitted: Some((trunk.clone(), caller.clone())),
                transferring: None,
            },
        );
        self.ua.answer(Instant::now(), call, body);
        Ok(())
    }

    /// A re-INVITE: hold (sendonly/inactive), resume, or a new address. The codec stays.
    pub(super) fn reoffer(&mut self, call: CallKey, body: &[u8]) {
        let now = Instant::now();
        let Some(live) = self.live.get_mut(&call) else {
            self.ua.reject_offer(now, call, 481, "no such call");
            return;
        };
        let Some(current) = live.media.clone() else {
            self.ua.reject_offer(now, call, 491, "the call is not set up yet");
            return;
        };
        if body.is_empty() {
            // An offerless re-INVITE: our 2xx offers the call's codec, sending and receiving;
            // the ACK's answer says what the far end wants (see `settle.rs`).
            live.origin.version += 1;
            let offer = Negotiated { direction: sdp::Direction::SendRecv, ..current };
            let offer = sdp::answer(live.local_rtp, live.origin, &offer);
            info!(call = %live.id, "offerless re-INVITE: offering in the 2xx");
            self.ua.answer_offer(now, call, offer);
            return;
        }
        let updated = {
            let offered = sdp::parse(body).and_then(|remote| sdp::negotiate(&remote, live.encryption));
            match offered {
                Ok(mut media) if media.codec == current.codec => {
                    media.keep_local_key(&current);
                    media
                }
                Ok(media) => {
                    let why = format!("the call uses {}; switching to {} is not supported", current.codec, media.codec);
                    self.ua.reject_offer(now, call, 488, &why);
                    return;
                }
                Err(err) => {
                    self.ua.reject_offer(now, call, 488, &err.to_string());
                    return;
                }
            }
        };
        live.origin.version += 1;
        let answer = sdp::answer(live.local_rtp, live.origin, &updated);
        live.media = Some(updated.clone());
        info!(call = %live.id, direction = updated.direction.as_str(), "re-INVITE answered");
        if let Some(task) = &live.task {
            let _ = task.try_send(ToCall::Renegotiated(updated));
        }
        self.ua.answer_offer(now, call, answer);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn identities_are_valid_peer_ids() {
        assert_eq!(super::identity_for("alice").as_str(), "sip:alice");
        assert_eq!(super::identity_for("+1 (555) 123").as_str(), "sip:+1--555--123");
        assert_eq!(super::identity_for("").as_str(), "sip:anonymous");
        assert!(super::identity_for(&"x".repeat(500)).as_str().len() <= 128);
    }
}
