//! The call book: every call's public record — direction, room, identity, state and the
//! history of its state changes (dialing, ringing, pin, answered, failed with the SIP status,
//! ended with the reason) — shared by the SIP stack, the call tasks and the REST API. Finished
//! calls stay readable for a while so clients can see how they ended.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use junction_core::{PeerId, RoomId};
use parking_lot::Mutex;
use serde::Serialize;

use crate::message::Transport;
use crate::sdp::Negotiated;

/// How long a finished call stays in the book.
const KEEP_FINISHED: Duration = Duration::from_secs(600);
/// Most finished calls kept.
const MAX_FINISHED: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallState {
    /// Our INVITE is out (dial-out).
    Dialing,
    /// The far end is ringing (dial-out).
    Ringing,
    /// Answered; the caller is typing the room's PIN (dial-in).
    Pin,
    /// In the room.
    Answered,
    /// Never connected: the SIP status says why.
    Failed,
    /// Was connected, now over.
    Ended,
}

impl CallState {
    pub fn is_final(self) -> bool {
        matches!(self, CallState::Failed | CallState::Ended)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallEvent {
    pub state: CallState,
    pub at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    pub id: String,
    pub direction: Direction,
    pub room: RoomId,
    /// The phone's identity in the room (`sip:<user>`).
    pub identity: PeerId,
    pub from: String,
    pub to: String,
    pub state: CallState,
    /// How the call's signalling travels: `udp`, `tcp` or `tls`.
    pub transport: Transport,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub codec: Option<String>,
    /// `srtp` when the call's media is encrypted, `none` when not; absent until negotiated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_encryption: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trunk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The SIP status of a failed call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub created_at_ms: u64,
    pub events: Vec<CallEvent>,
    /// Transfers of this call (REFER either way, or the API's), oldest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transfers: Vec<TransferEvent>,
}

/// Transfers a call record lists, at most (the oldest go first).
const MAX_TRANSFERS: usize = 16;

/// One transfer: where to, and how it went (the new leg's SIP status: 100 while it runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferEvent {
    pub at_ms: u64,
    pub to: String,
    pub status: u16,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl CallRecord {
    pub fn describe_media(&mut self, media: &Negotiated) {
        self.codec = Some(media.codec.as_str().to_owned());
        self.media_encryption = Some(if media.srtp.is_some() { "srtp" } else { "none" });
    }

    pub fn new(
        direction: Direction,
        room: RoomId,
        identity: PeerId,
        from: String,
        to: String,
        state: CallState,
    ) -> Self {
        let at_ms = now_ms();
        Self {
            id: junction_core::ids::random_id("SC_", 12),
            direction,
            room,
            identity,
            from,
            to,
            state,
            transport: Transport::Udp,
            codec: None,
            media_encryption: None,
            trunk: None,
            rule: None,
            status: None,
            reason: None,
            created_at_ms: at_ms,
            events: vec![CallEvent { state, at_ms, status: None, reason: None }],
            transfers: Vec::new(),
        }
    }
}

#[derive(Default)]
struct Book {
    calls: HashMap<String, CallRecord>,
    /// Finished calls in the order they finished, for pruning.
    finished: Vec<(String, u64)>,
}

/// Cheap to clone; every clone is the same book.
#[derive(Clone, Default)]
pub struct CallBook {
    inner: Arc<Mutex<Book>>,
}

impl CallBook {
    pub fn insert(&self, record: CallRecord) {
        let mut book = self.inner.lock();
        book.calls.insert(record.id.clone(), record);
    }

    /// Moves a call to `state` (once a call is failed or ended it stays so).
    pub fn transition(&self, id: &str, state: CallState, status: Option<u16>, reason: Option<String>) {
        let mut book = self.inner.lock();
        let Some(record) = book.calls.get_mut(id) else { return };
        if record.state.is_final() || record.state == state {
            return;
        }
        record.state = state;
        if status.is_some() {
            record.status = status;
        }
        if reason.is_some() {
            record.reason = reason.clone();
        }
        let at_ms = now_ms();
        record.events.push(CallEvent { state, at_ms, status, reason });
        if state.is_final() {
            book.finished.push((id.to_owned(), at_ms));
            prune(&mut book, at_ms);
        }
    }

    /// Records a transfer's progress: a new one when `to` differs from the last one's target
    /// or that one has finished, else the last one's status.
    pub fn transfer(&self, id: &str, to: &str, status: u16) {
        let mut book = self.inner.lock();
        let Some(record) = book.calls.get_mut(id) else { return };
        match record.transfers.last_mut() {
            Some(last) if last.to == to && last.status < 200 => last.status = status,
            _ => {
                // A phone may REFER again and again: the record keeps the latest ones.
                if record.transfers.len() >= MAX_TRANSFERS {
                    record.transfers.remove(0);
                }
                record.transfers.push(TransferEvent { at_ms: now_ms(), to: to.to_owned(), status });
            }
        }
    }

    /// A call moved to another room: its record follows it.
    pub fn moved(&self, id: &str, room: &RoomId) {
        if let Some(record) = self.inner.lock().calls.get_mut(id) {
            record.room = room.clone();
        }
        self.transfer(id, room.as_str(), 200);
    }

    /// Records what the negotiation settled: the codec and whether media is encrypted.
    pub fn set_media(&self, id: &str, media: &Negotiated) {
        if let Some(record) = self.inner.lock().calls.get_mut(id) {
            record.describe_media(media);
        }
    }

    pub fn get(&self, id: &str) -> Option<CallRecord> {
        self.inner.lock().calls.get(id).cloned()
    }

    /// The calls of a room, oldest first.
    pub fn in_room(&self, room: &RoomId) -> Vec<CallRecord> {
        let mut calls: Vec<CallRecord> =
            self.inner.lock().calls.values().filter(|c| c.room == *room).cloned().collect();
        calls.sort_by(|a, b| a.created_at_ms.cmp(&b.created_at_ms).then(a.id.cmp(&b.id)));
        calls
    }

    /// Calls not finished yet.
    #[cfg(test)]
    fn live(&self) -> usize {
        self.inner.lock().calls.values().filter(|c| !c.state.is_final()).count()
    }
}

fn prune(book: &mut Book, now_ms: u64) {
    let keep_ms = KEEP_FINISHED.as_millis() as u64;
    let excess = book.finished.len().saturating_sub(MAX_FINISHED);
    let expired = book.finished.iter().take_while(|(_, at)| now_ms.saturating_sub(*at) > keep_ms).count();
    let drop = excess.max(expired);
    let removed: Vec<(String, u64)> = book.finished.drain(..drop).collect();
    for (id, _) in removed {
        book.calls.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_are_recorded_once_and_final_states_stick() {
        let book = CallBook::default();
        let room = RoomId::new("r").unwrap();
        let record = CallRecord::new(
            Direction::Outbound,
            room.clone(),
            PeerId::new("sip:bob").unwrap(),
            "sip:r@junction".into(),
            "sip:bob@127.0.0.1".into(),
            CallState::Dialing,
        );
        let id = record.id.clone();
        book.insert(record);
        book.transition(&id, CallState::Ringing, None, None);
        book.transition(&id, CallState::Ringing, None, None);
        book.transition(&id, CallState::Failed, Some(486), Some("Busy Here".into()));
        book.transition(&id, CallState::Ended, None, None);
        let call = book.get(&id).unwrap();
        let states: Vec<CallState> = call.events.iter().map(|e| e.state).collect();
        assert_eq!(states, [CallState::Dialing, CallState::Ringing, CallState::Failed]);
        assert_eq!(call.status, Some(486));
        assert_eq!(book.live(), 0);
        assert_eq!(book.in_room(&room).len(), 1);
        let json = serde_json::to_value(&call).unwrap();
        assert_eq!(json["state"], "failed");
        assert_eq!(json["events"][2]["status"], 486);
    }

    #[test]
    fn a_call_keeps_its_latest_transfers_only() {
        let book = CallBook::default();
        let room = RoomId::new("r").unwrap();
        let record = CallRecord::new(
            Direction::Inbound,
            room,
            PeerId::new("sip:bob").unwrap(),
            "sip:bob@127.0.0.1".into(),
            "sip:r@junction".into(),
            CallState::Answered,
        );
        let id = record.id.clone();
        book.insert(record);
        for n in 0..100 {
            book.transfer(&id, &format!("room{n}"), 404);
        }
        let transfers = book.get(&id).unwrap().transfers;
        assert_eq!(transfers.len(), MAX_TRANSFERS);
        assert_eq!(transfers.last().unwrap().to, "room99");
    }
}
