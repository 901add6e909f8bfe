//! Transfers. A REFER from a phone names where its call should go: the Refer-To's user part is
//! routed by the dispatch rules of the trunk the call came over, as a new call to that number
//! would be, and the call moves into that room (left and joined in one step, the call itself
//! unchanged); the phone hears how it went in the REFER's NOTIFYs (100, then 200 or the
//! refusal's code). The API moves a call the same way (`{"room": …}`), or asks the phone to
//! call someone else (`{"to": …}`: a REFER to the phone; when the phone's NOTIFY says the new
//! call is up, Junction hangs up, and the record says `transferred`).

use std::time::Instant;

use junction_core::{ContractError, RoomId, TransportKind};
use junction_engine::{DuplicatePolicy, JoinRequest};
use tracing::info;

use super::{Stack, TransferError, TransferTarget};
use crate::admission::DispatchError;
use crate::call::{CallEnd, ToCall};
use crate::calls::{CallRecord, CallState};
use crate::messages::MovedEndpoint;
use crate::ua::{CallKey, addr_spec};

/// A refused transfer: the SIP status for the NOTIFY (or the API's error) and why.
struct Refusal {
    status: u16,
    why: String,
}

fn refuse(status: u16, why: impl Into<String>) -> Refusal {
    Refusal { status, why: why.into() }
}

impl Stack {
    /// A REFER from the far end, already accepted (202).
    pub(super) fn referred(&mut self, call: CallKey, refer_to: &str) {
        let now = Instant::now();
        self.ua.notify_transfer(now, call, 100);
        let status = match self.route_refer(call, refer_to) {
            Ok(room) => match self.move_call(call, room) {
                Ok(()) => 200,
                Err(refusal) => self.refused_transfer(call, refer_to, refusal),
            },
            Err(refusal) => self.refused_transfer(call, refer_to, refusal),
        };
        self.ua.notify_transfer(now, call, status);
    }

    fn refused_transfer(&self, call: CallKey, to: &str, refusal: Refusal) -> u16 {
        if let Some(live) = self.live.get(&call) {
            info!(room = %live.room, peer = %live.identity, call = %live.id, to, status = refusal.status, why = %refusal.why, "transfer refused");
            self.book.transfer(&live.id, to, refusal.status);
        }
        refusal.status
    }

    /// The room a REFER's target leads to by the call's trunk's dispatch rules.
    fn route_refer(&self, call: CallKey, refer_to: &str) -> Result<RoomId, Refusal> {
        let live = self.live.get(&call).ok_or_else(|| refuse(481, "no such call"))?;
        if refer_to.to_ascii_lowercase().contains("replaces") {
            return Err(refuse(501, "attended transfer (Replaces) is not supported"));
        }
        let Some((trunk, caller)) = &live.admitted else {
            return Err(refuse(403, "only calls that came in over a trunk can be transferred by REFER"));
        };
        let uri = addr_spec(refer_to)
            .or_else(|| rsip::Uri::try_from(refer_to).ok())
            .ok_or_else(|| refuse(400, "the Refer-To is not a SIP URI"))?;
        let called = uri.user().filter(|u| !u.is_empty()).ok_or_else(|| refuse(404, "the Refer-To names no one"))?;
        let destination = self.directory.dispatch(trunk, called, caller).map_err(|err| match err {
            DispatchError::NoRule { .. } | DispatchError::BadRoomName { .. } => refuse(404, err.to_string()),
        })?;
        if destination.pin.is_some() {
            return Err(refuse(403, format!("room {} is behind a PIN", destination.room)));
        }
        Ok(destination.room)
    }

    /// Moves a call that is in its room into `room`: joins there first (refusals as for a new
    /// call), then hands the call's task the new endpoint, which leaves the old room.
    fn move_call(&mut self, call: CallKey, room: RoomId) -> Result<(), Refusal> {
        let live = self.live.get(&call).ok_or_else(|| refuse(481, "no such call"))?;
        if live.room == room {
            return Ok(());
        }
        let Some(task) = live.task.clone() else { return Err(refuse(491, "the call is not set up yet")) };
        if self.book.get(&live.id).is_some_and(|r| r.state == CallState::Pin) {
            return Err(refuse(491, "the caller is still entering the PIN"));
        }
        if !self.engine.room_exists(&room) && !self.engine.config().auto_create_rooms {
            return Err(refuse(404, format!("room {room} does not exist")));
        }
        let mut join = JoinRequest::new(room.clone(), live.identity.clone(), TransportKind::Sip);
        join.metadata = serde_json::json!({"sip": {"call": live.id, "transferred_from": live.room.as_str()}});
        join.auto_subscribe = false;
        join.on_duplicate = DuplicatePolicy::Reject;
        let joined = self.engine.join(join).map_err(|err| match &err {
            ContractError::RoomNotFound { .. } => refuse(404, err.to_string()),
            ContractError::IdentityTaken { .. } => refuse(486, err.to_string()),
            ContractError::RoomFull { .. } => refuse(600, err.to_string()),
            ContractError::RoomClosing { .. } => refuse(480, err.to_string()),
            _ => refuse(500, err.to_string()),
        })?;
        if task.try_send(ToCall::Move(Box::new(MovedEndpoint(joined.endpoint)))).is_err() {
            return Err(refuse(500, "the call's task is not taking messages"));
        }
        info!(from = %live.room, to = %room, peer = %live.identity, call = %live.id, "call transferred to another room");
        self.book.moved(&live.id, &room);
        if let Some(live) = self.live.get_mut(&call) {
            live.room = room;
        }
        Ok(())
    }

    /// The API's transfer of call `id`.
    pub(super) fn transfer(&mut self, id: &str, to: TransferTarget) -> Result<CallRecord, TransferError> {
        let no_call = || TransferError::NoCall { id: id.to_owned() };
        let call = self.by_id.get(id).copied().ok_or_else(no_call)?;
        let refused = |r: Refusal| TransferError::Refused { status: r.status, why: r.why };
        match to {
            TransferTarget::Room(room) => self.move_call(call, room).map_err(refused)?,
            TransferTarget::Uri(target) => {
                let live = self.live.get_mut(&call).ok_or_else(no_call)?;
                if live.transferring.is_some() {
                    return Err(refused(refuse(491, "a transfer of this call is already under way")));
                }
                if !self.ua.refer(Instant::now(), call, &target) {
                    return Err(refused(refuse(491, "the call is not set up")));
                }
                info!(room = %live.room, peer = %live.identity, call = %live.id, to = %target, "asking the phone to transfer (REFER)");
                self.book.transfer(&live.id, &target, 100);
                live.transferring = Some(target);
            }
        }
        self.book.get(id).ok_or_else(no_call)
    }

    /// The progress of a REFER we sent: once the phone's new call is up, ours ends.
    pub(super) fn transfer_progress(&mut self, call: CallKey, code: u16) {
        let Some(live) = self.live.get_mut(&call) else { return };
        let Some(target) = live.transferring.clone() else { return };
        self.book.transfer(&live.id, &target, code);
        if code < 200 {
            return;
        }
        live.transferring = None;
        if code < 300 {
            info!(room = %live.room, peer = %live.identity, call = %live.id, to = %target, "transfer done; hanging up");
            self.ua.hangup(Instant::now(), call);
            self.finish(call, CallEnd::Transferred);
        } else {
            info!(room = %live.room, peer = %live.identity, call = %live.id, to = %target, code, "transfer failed; the call goes on");
        }
    }
}
