//! Per-subscriber congestion handling, as a layer between moq-transport and the QUIC session.
//!
//! moq-transport sends every subgroup on its own unidirectional stream and keeps writing older
//! groups while newer ones start. On a subscriber that cannot keep up that means buffering: old
//! groups hold the connection's send window and new ones queue behind them. This layer wraps the
//! session (moq-transport accepts any `web_transport_trait::Session`) and, for each subgroup
//! stream it opens, reads the subgroup header the library writes first, then:
//! - sets the QUIC stream priority from the group id, so the newest group is always sent first
//!   (control and request streams rank above all media);
//! - abandons older groups: when a group starts, every still-undelivered stream of the same
//!   subscription older than the previous group is reset with TOO_FAR_BEHIND (draft-18 data
//!   stream reset code 0x5). A subscriber that falls behind thus skips to the newest group —
//!   which starts at a keyframe — instead of buffering without bound.
//!
//! Written here because moq-transport has no such policy and no other hook into its streams;
//! the policy itself ([`GroupScheduler`]) is plain data and unit-tested.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use moq_transport::coding::Decode;
use moq_transport::data::{DataStreamResetCode, StreamHeaderType, SubgroupHeader};
use moq_transport::reexports::web_transport_trait;
use moq_transport::session::transport::quinn as wtq;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// The reset code of an abandoned group's stream.
const TOO_FAR_BEHIND: u32 = DataStreamResetCode::TooFarBehind as u32;

/// QUIC priority of streams that are not subgroups (control, requests, fetches).
const CONTROL_PRIORITY: i32 = i32::MAX;

/// One subgroup stream as the scheduler tracks it.
#[derive(Debug)]
pub struct GroupSlot {
    pub group: u64,
    /// Cancelled when the scheduler gives up on this stream.
    abandon: CancellationToken,
    /// Set once the stream no longer needs scheduling: delivered, reset, or dropped.
    done: std::sync::atomic::AtomicBool,
}

impl GroupSlot {
    pub fn is_abandoned(&self) -> bool {
        self.abandon.is_cancelled()
    }

    pub fn is_done(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::Acquire)
    }

    fn mark_done(&self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Which subgroup streams of a session are still in flight, per subscription (track alias).
#[derive(Debug, Default)]
pub struct GroupScheduler {
    streams: Mutex<HashMap<u64, Vec<Arc<GroupSlot>>>>,
}

impl GroupScheduler {
    /// Registers the stream of `group` on subscription `alias`, abandoning the subscription's
    /// streams that are older than the previous group and still not delivered.
    pub fn register(&self, alias: u64, group: u64) -> Arc<GroupSlot> {
        let slot = Arc::new(GroupSlot {
            group,
            abandon: CancellationToken::new(),
            done: std::sync::atomic::AtomicBool::new(false),
        });
        let mut streams = self.streams.lock();
        let slots = streams.entry(alias).or_default();
        slots.retain(|old| !old.is_done() && !old.is_abandoned());
        for old in slots.iter() {
            if old.group.saturating_add(1) < group {
                tracing::debug!(alias, behind = old.group, newest = group, "subscriber behind: abandoning group");
                old.abandon.cancel();
            }
        }
        slots.push(slot.clone());
        // Forget subscriptions whose streams are all finished.
        streams.retain(|_, slots| slots.iter().any(|s| !s.is_done() && !s.is_abandoned()));
        slot
    }

    /// Streams still tracked.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.streams.lock().values().flatten().filter(|s| !s.is_done() && !s.is_abandoned()).count()
    }
}

/// QUIC priority of a subgroup stream: newer groups first; within a group, lower MoQ publisher
/// priority (more important) first.
pub fn stream_priority(group: u64, publisher_priority: u8) -> i32 {
    let group = group.min((i32::MAX >> 8) as u64 - 1) as i32;
    (group << 8) | i32::from(255 - publisher_priority)
}

/// Reads the subgroup header at the start of a uni stream's first write, if it is one.
fn subgroup_header(first_write: &[u8]) -> Option<SubgroupHeader> {
    let buf = Bytes::copy_from_slice(&first_write[..first_write.len().min(64)]);
    // Draft-18 SUBGROUP_HEADER types are 0x10..=0x7F with the 0x10 bit set; checking first keeps
    // other streams (SETUP on the control stream, FETCH_HEADER) away from the library's decoder,
    // which logs unknown types as errors.
    let stream_type = u64::decode(&mut buf.clone()).ok()?;
    if !(0x10..=0x7f).contains(&stream_type) || stream_type & 0x10 == 0 {
        return None;
    }
    let mut buf = buf;
    let header_type = StreamHeaderType::decode(&mut buf).ok()?;
    if !header_type.is_subgroup() {
        return None;
    }
    SubgroupHeader::decode(header_type, &mut buf).ok()
}

/// A WebTransport (or raw QUIC) session whose outgoing subgroup streams are scheduled.
#[derive(Clone)]
pub struct ScheduledSession {
    inner: wtq::Session,
    scheduler: Arc<GroupScheduler>,
}

impl ScheduledSession {
    pub fn new(inner: wtq::Session) -> Self {
        Self { inner, scheduler: Arc::default() }
    }
}

impl web_transport_trait::Session for ScheduledSession {
    type SendStream = ScheduledSendStream;
    type RecvStream = wtq::RecvStream;
    type Error = wtq::SessionError;

    async fn accept_uni(&self) -> Result<Self::RecvStream, Self::Error> {
        self.inner.accept_uni().await
    }

    async fn accept_bi(&self) -> Result<(Self::SendStream, Self::RecvStream), Self::Error> {
        let (send, recv) = self.inner.accept_bi().await?;
        Ok((ScheduledSendStream::control(send), recv))
    }

    async fn open_bi(&self) -> Result<(Self::SendStream, Self::RecvStream), Self::Error> {
        let (send, recv) = self.inner.open_bi().await?;
        Ok((ScheduledSendStream::control(send), recv))
    }

    async fn open_uni(&self) -> Result<Self::SendStream, Self::Error> {
        let send = self.inner.open_uni().await?;
        Ok(ScheduledSendStream { inner: send, scheduler: Some(self.scheduler.clone()), slot: None, sniffed: false })
    }

    fn send_datagram(&self, payload: Bytes) -> Result<(), Self::Error> {
        self.inner.send_datagram(payload)
    }

    async fn recv_datagram(&self) -> Result<Bytes, Self::Error> {
        self.inner.read_datagram().await
    }

    fn max_datagram_size(&self) -> usize {
        web_transport_trait::Session::max_datagram_size(&self.inner)
    }

    fn protocol(&self) -> Option<&str> {
        web_transport_trait::Session::protocol(&self.inner)
    }

    fn close(&self, code: u32, reason: &str) {
        self.inner.close(code, reason.as_bytes());
    }

    async fn closed(&self) -> Self::Error {
        self.inner.closed().await
    }
}

/// A send stream that obeys the scheduler once it knows which group it carries.
pub struct ScheduledSendStream {
    inner: wtq::SendStream,
    scheduler: Option<Arc<GroupScheduler>>,
    slot: Option<Arc<GroupSlot>>,
    sniffed: bool,
}

impl ScheduledSendStream {
    fn control(inner: wtq::SendStream) -> Self {
        let _ = inner.set_priority(CONTROL_PRIORITY);
        Self { inner, scheduler: None, slot: None, sniffed: true }
    }

    fn classify(&mut self, first_write: &[u8]) {
        self.sniffed = true;
        let Some(scheduler) = &self.scheduler else { return };
        match subgroup_header(first_write) {
            Some(header) => {
                let _ = self.inner.set_priority(stream_priority(header.group_id, header.publisher_priority));
                self.slot = Some(scheduler.register(header.track_alias, header.group_id));
            }
            None => {
                let _ = self.inner.set_priority(CONTROL_PRIORITY);
            }
        }
    }

    fn give_up(&mut self) -> wtq::WriteError {
        let _ = self.inner.reset(TOO_FAR_BEHIND);
        if let Some(slot) = &self.slot {
            slot.mark_done();
        }
        wtq::WriteError::Stopped(TOO_FAR_BEHIND)
    }

    fn abandon_token(&self) -> Option<CancellationToken> {
        self.slot.as_ref().map(|slot| slot.abandon.clone())
    }
}

impl web_transport_trait::SendStream for ScheduledSendStream {
    type Error = wtq::WriteError;

    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        if !self.sniffed {
            self.classify(buf);
        }
        let Some(abandon) = self.abandon_token() else {
            return self.inner.write(buf).await;
        };
        if abandon.is_cancelled() {
            return Err(self.give_up());
        }
        tokio::select! {
            biased;
            _ = abandon.cancelled() => Err(self.give_up()),
            written = self.inner.write(buf) => written,
        }
    }

    fn set_priority(&mut self, _order: u8) {
        // Priorities come from the subgroup header (see `classify`), not moq-transport's u8.
    }

    fn finish(&mut self) -> Result<(), Self::Error> {
        self.inner.finish().map_err(|_| wtq::WriteError::ClosedStream)
    }

    fn reset(&mut self, code: u32) {
        let _ = self.inner.reset(code);
        if let Some(slot) = &self.slot {
            slot.mark_done();
        }
    }

    async fn closed(&mut self) -> Result<(), Self::Error> {
        let Some(abandon) = self.abandon_token() else {
            return web_transport_trait::SendStream::closed(&mut self.inner).await;
        };
        let result = tokio::select! {
            biased;
            _ = abandon.cancelled() => Err(self.give_up()),
            result = web_transport_trait::SendStream::closed(&mut self.inner) => result,
        };
        if let Some(slot) = &self.slot {
            slot.mark_done();
        }
        result
    }
}

impl Drop for ScheduledSendStream {
    fn drop(&mut self) {
        if let Some(slot) = &self.slot {
            slot.mark_done();
        }
    }
}

#[cfg(test)]
mod quic_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_groups_abandon_undelivered_streams_older_than_the_previous_group() {
        let scheduler = GroupScheduler::default();
        let g1 = scheduler.register(7, 1);
        let g2 = scheduler.register(7, 2);
        assert!(!g1.is_abandoned(), "the previous group is kept");
        let other = scheduler.register(9, 1);
        let g3 = scheduler.register(7, 3);
        assert!(g1.is_abandoned(), "two groups behind: skipped");
        assert!(!g2.is_abandoned() && !g3.is_abandoned());
        assert!(!other.is_abandoned(), "other subscriptions are not affected");

        // A delivered stream is never abandoned.
        g2.mark_done();
        let g5 = scheduler.register(7, 5);
        assert!(!g2.is_abandoned());
        assert!(g3.is_abandoned(), "group 3 was still in flight when group 5 started");
        assert!(!g5.is_abandoned());
        assert_eq!(scheduler.in_flight(), 2);
    }

    #[test]
    fn newest_group_has_the_highest_priority() {
        assert!(stream_priority(5, 128) > stream_priority(4, 0));
        assert!(stream_priority(5, 64) > stream_priority(5, 128));
        assert!(stream_priority(u64::MAX, 0) < CONTROL_PRIORITY);
        assert!(stream_priority(0, 255) >= 0);
    }

    #[test]
    fn only_subgroup_headers_are_recognised() {
        use moq_transport::coding::Encode;
        use moq_transport::data::SubgroupIdMode;
        let header = SubgroupHeader {
            header_type: StreamHeaderType::subgroup(SubgroupIdMode::Explicit, true, false, false, true),
            track_alias: 3,
            group_id: 42,
            subgroup_id: Some(0),
            publisher_priority: 127,
        };
        let mut encoded = bytes::BytesMut::new();
        header.encode(&mut encoded).unwrap();
        encoded.extend_from_slice(b"object bytes follow");
        let parsed = subgroup_header(&encoded).unwrap();
        assert_eq!((parsed.track_alias, parsed.group_id, parsed.publisher_priority), (3, 42, 127));
        assert!(subgroup_header(&[0xff; 3]).is_none());
        assert!(subgroup_header(&[]).is_none());
    }
}
