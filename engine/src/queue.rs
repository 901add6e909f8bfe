//! A subscribing peer's media queue, bounded in time rather than in frames: [`media_queue`]
//! gives the room's senders (one per subscription) and the peer's one receiver.
//!
//! A frame that has waited longer than the bound (`EngineConfig::subscriber_queue_delay`) is
//! stale: it is dropped when the next frame is queued or when the receiver reaches it, so a peer
//! that falls behind never gets seconds of old media. Dropping a video frame breaks the frames
//! after it, so they go too, up to the track's next queued keyframe; with none queued the track
//! is *cut*: its next delta is refused (the subscription then waits for a keyframe and asks the
//! publisher for one, as for a full queue) and its next keyframe starts it again. Audio frames
//! are independent: dropping old ones leaves the newer ones playing. A frame cap
//! (`subscriber_queue_frames`) stays as the memory bound for a publisher flooding frames.
//!
//! Written by hand: tokio's channels cannot drop from their head or look inside what they hold.
//! [`TimedFrames`] is the sans-I/O core (time passed in); the senders and receiver add locking,
//! the engine clock and wake-ups.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use junction_core::{MediaFrame, MediaKind, MediaOut, TrackId};
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::shared::Shared;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// At the frame cap, or a delta of a cut video track.
    Dropped,
    /// The receiver is gone.
    Closed,
}

/// The queue itself, with time passed in.
#[derive(Debug)]
pub(crate) struct TimedFrames {
    max_delay: Duration,
    max_frames: usize,
    items: VecDeque<Queued>,
    /// Video tracks whose queued frames were dropped with no keyframe after them.
    cut: Vec<TrackId>,
}

#[derive(Debug)]
struct Queued {
    at: Instant,
    track: TrackId,
    frame: MediaFrame,
}

fn is_video(frame: &MediaFrame) -> bool {
    frame.codec.kind() == MediaKind::Video
}

impl TimedFrames {
    pub(crate) fn new(max_delay: Duration, max_frames: usize) -> Self {
        Self { max_delay, max_frames: max_frames.max(1), items: VecDeque::new(), cut: Vec::new() }
    }

    /// Queues `frame` of `track` at `now`, after dropping what is stale. Returns the number of
    /// frames dropped as stale, and whether this one was queued.
    pub(crate) fn push(&mut self, track: TrackId, frame: MediaFrame, now: Instant) -> (usize, Result<(), Refused>) {
        let stale = self.drop_stale(now);
        if self.items.len() >= self.max_frames {
            return (stale, Err(Refused::Dropped));
        }
        if is_video(&frame)
            && let Some(at) = self.cut.iter().position(|t| *t == track)
        {
            if !frame.keyframe {
                return (stale, Err(Refused::Dropped));
            }
            self.cut.swap_remove(at);
        }
        self.items.push_back(Queued { at: now, track, frame });
        (stale, Ok(()))
    }

    /// The oldest frame still fresh at `now`, and the number dropped as stale on the way.
    pub(crate) fn pop(&mut self, now: Instant) -> (usize, Option<(TrackId, MediaFrame)>) {
        let stale = self.drop_stale(now);
        (stale, self.items.pop_front().map(|q| (q.track, q.frame)))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.items.len()
    }

    fn drop_stale(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        while let Some(oldest) = self.items.front() {
            if now.saturating_duration_since(oldest.at) <= self.max_delay {
                break;
            }
            let Some(gone) = self.items.pop_front() else { break };
            dropped += 1;
            if is_video(&gone.frame) {
                dropped += self.drop_until_keyframe(&gone.track);
            }
        }
        dropped
    }

    /// Drops `track`'s queued frames up to its next keyframe (which stays); with no keyframe
    /// queued, all of them, and the track is cut.
    fn drop_until_keyframe(&mut self, track: &TrackId) -> usize {
        let before = self.items.len();
        let mut resumed = false;
        self.items.retain(|q| {
            if resumed || q.track != *track {
                return true;
            }
            resumed = q.frame.keyframe;
            resumed
        });
        if !resumed && !self.cut.contains(track) {
            self.cut.push(track.clone());
        }
        before - self.items.len()
    }
}

struct Channel {
    frames: Mutex<Frames>,
    ready: Notify,
    shared: Arc<Shared>,
}

struct Frames {
    queue: TimedFrames,
    senders: usize,
    receiver_alive: bool,
}

/// A peer's media queue: senders for its subscriptions, one receiver for its transport.
pub(crate) fn media_queue(shared: &Arc<Shared>) -> (MediaSender, MediaReceiver) {
    let config = &shared.config;
    let channel = Arc::new(Channel {
        frames: Mutex::new(Frames {
            queue: TimedFrames::new(config.subscriber_queue_delay, config.subscriber_queue_frames),
            senders: 1,
            receiver_alive: true,
        }),
        ready: Notify::new(),
        shared: shared.clone(),
    });
    (MediaSender(channel.clone()), MediaReceiver(channel))
}

/// Queues frames for one peer; never blocks.
pub(crate) struct MediaSender(Arc<Channel>);

impl MediaSender {
    /// Queues `frame` at `now` (the engine clock's, read once per frame by the publisher for
    /// all its subscribers).
    pub(crate) fn try_send(&self, track: TrackId, frame: MediaFrame, now: Instant) -> Result<(), Refused> {
        let channel = &self.0;
        let (stale, queued) = {
            let mut frames = channel.frames.lock();
            if !frames.receiver_alive {
                return Err(Refused::Closed);
            }
            frames.queue.push(track, frame, now)
        };
        channel.shared.counters.frames_dropped.add(stale as u64);
        if queued.is_ok() {
            channel.ready.notify_one();
        }
        queued
    }
}

impl Clone for MediaSender {
    fn clone(&self) -> Self {
        self.0.frames.lock().senders += 1;
        Self(self.0.clone())
    }
}

impl Drop for MediaSender {
    fn drop(&mut self) {
        let last = {
            let mut frames = self.0.frames.lock();
            frames.senders -= 1;
            frames.senders == 0
        };
        if last {
            self.0.ready.notify_one();
        }
    }
}

/// The peer's end: frames in the order they were queued, stale ones skipped.
pub(crate) struct MediaReceiver(Arc<Channel>);

impl MediaReceiver {
    /// The next fresh frame; `None` once every sender is gone and nothing is left.
    pub(crate) async fn recv(&mut self) -> Option<MediaOut> {
        loop {
            match self.try_recv() {
                Ok(item) => return Some(item),
                Err(Empty::Closed) => return None,
                // `notify_one` keeps a permit when nobody waits: a frame queued between the
                // check and this wait still wakes it.
                Err(Empty::Waiting) => self.0.ready.notified().await,
            }
        }
    }

    pub(crate) fn try_recv(&mut self) -> Result<MediaOut, Empty> {
        let mut next = None;
        let closed = self.take(|item| {
            next = Some(item);
            false
        });
        match next {
            Some(item) => Ok(item),
            None if closed => Err(Empty::Closed),
            None => Err(Empty::Waiting),
        }
    }

    /// Moves fresh frames into `out` until it holds `limit` items.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<MediaOut>, limit: usize) {
        if out.len() < limit {
            self.take(|item| {
                out.push(item);
                out.len() < limit
            });
        }
    }

    /// Hands fresh frames to `each` while it asks for more, under one lock and one reading of
    /// the clock; returns whether every sender is gone.
    fn take(&mut self, mut each: impl FnMut(MediaOut) -> bool) -> bool {
        let channel = &self.0;
        let now = channel.shared.clock.now();
        let mut stale = 0;
        let closed = {
            let mut frames = channel.frames.lock();
            loop {
                let (dropped, next) = frames.queue.pop(now);
                stale += dropped;
                let Some((track, frame)) = next else { break };
                if !each(MediaOut::Frame { track, frame }) {
                    break;
                }
            }
            frames.senders == 0
        };
        channel.shared.counters.frames_dropped.add(stale as u64);
        closed
    }
}

impl Drop for MediaReceiver {
    fn drop(&mut self) {
        let mut frames = self.0.frames.lock();
        frames.receiver_alive = false;
        frames.queue.items.clear();
    }
}

/// Why [`MediaReceiver::try_recv`] returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Empty {
    Waiting,
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use junction_core::{Codec, MediaTime};

    const BOUND: Duration = Duration::from_millis(250);

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    fn video(start: Instant, ms: u64, keyframe: bool) -> MediaFrame {
        MediaFrame::video(
            Codec::Vp8,
            MediaTime::new(ms * 90, 90_000),
            keyframe,
            at(start, ms),
            Bytes::from_static(b"v"),
        )
    }

    fn audio(start: Instant, ms: u64) -> MediaFrame {
        MediaFrame::audio(Codec::Opus, MediaTime::new(ms * 48, 48_000), at(start, ms), Bytes::from_static(b"a"))
    }

    fn cam() -> TrackId {
        TrackId::new("TR_cam").unwrap()
    }

    fn mic() -> TrackId {
        TrackId::new("TR_mic").unwrap()
    }

    /// Media times (ms) of what the receiver gets at `now`, in order.
    fn drain(q: &mut TimedFrames, now: Instant) -> Vec<(TrackId, u64)> {
        let mut out = Vec::new();
        while let (_, Some((track, frame))) = q.pop(now) {
            out.push((track, frame.time.ticks * 1000 / frame.time.rate as u64));
        }
        out
    }

    #[test]
    fn a_receiver_that_keeps_up_gets_everything_in_order() {
        let start = Instant::now();
        let mut q = TimedFrames::new(BOUND, 1024);
        for ms in (0..1000).step_by(20) {
            assert_eq!(q.push(mic(), audio(start, ms), at(start, ms)), (0, Ok(())));
            assert_eq!(q.pop(at(start, ms + 5)).1.map(|(_, f)| f.time.ticks), Some(ms * 48));
        }
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn old_audio_is_dropped_and_newer_audio_keeps_playing() {
        let start = Instant::now();
        let mut q = TimedFrames::new(BOUND, 1024);
        let mut stale = 0;
        // A receiver that reads nothing for one second.
        for ms in (0..=1000).step_by(20) {
            let (dropped, queued) = q.push(mic(), audio(start, ms), at(start, ms));
            assert_eq!(queued, Ok(()));
            stale += dropped;
        }
        let got = drain(&mut q, at(start, 1000));
        let times: Vec<u64> = got.iter().map(|(_, ms)| *ms).collect();
        assert_eq!(times.first(), Some(&760), "nothing older than the bound is left: {times:?}");
        assert_eq!(times.last(), Some(&1000));
        assert_eq!(stale + times.len(), 51, "every frame is either delivered or counted as dropped");
    }

    #[test]
    fn a_stale_video_frame_takes_the_deltas_after_it_up_to_the_next_keyframe() {
        let start = Instant::now();
        let mut q = TimedFrames::new(BOUND, 1024);
        // Keyframes at 0 and 200 ms, deltas between, 40 ms apart; queued as they come.
        for ms in (0..=240).step_by(20) {
            if ms % 40 == 0 {
                assert_eq!(q.push(cam(), video(start, ms, ms % 200 == 0), at(start, ms)), (0, Ok(())));
            }
            if ms == 100 {
                assert_eq!(q.push(mic(), audio(start, ms), at(start, ms)), (0, Ok(())));
            }
        }
        // At 300 ms the frame queued at 0 is stale: the deltas to 160 go with it (the one at
        // 120 was still fresh), the audio queued at 100 stays.
        let (stale, first) = q.pop(at(start, 300));
        assert_eq!(stale, 5);
        assert_eq!(first.map(|(track, _)| track), Some(mic()));
        assert_eq!(drain(&mut q, at(start, 300)), [(cam(), 200), (cam(), 240)]);
        assert!(q.cut.is_empty(), "a keyframe was queued: the track is not cut");
    }

    #[test]
    fn a_cut_video_track_refuses_deltas_until_its_next_keyframe() {
        let start = Instant::now();
        let mut q = TimedFrames::new(BOUND, 1024);
        assert_eq!(q.push(cam(), video(start, 0, true), at(start, 0)), (0, Ok(())));
        assert_eq!(q.push(cam(), video(start, 40, false), at(start, 40)), (0, Ok(())));
        assert_eq!(q.push(mic(), audio(start, 40), at(start, 40)), (0, Ok(())));
        // The receiver stalls; at 400 ms everything queued is stale.
        let (stale, queued) = q.push(cam(), video(start, 400, false), at(start, 400));
        assert_eq!((stale, queued), (3, Err(Refused::Dropped)), "the delta after a cut is refused");
        assert_eq!(q.push(mic(), audio(start, 400), at(start, 400)), (0, Ok(())), "audio is never cut");
        assert_eq!(q.push(cam(), video(start, 440, false), at(start, 440)).1, Err(Refused::Dropped));
        assert_eq!(q.push(cam(), video(start, 480, true), at(start, 480)).1, Ok(()), "a keyframe restarts it");
        assert_eq!(q.push(cam(), video(start, 520, false), at(start, 520)).1, Ok(()));
        assert_eq!(drain(&mut q, at(start, 520)), [(mic(), 400), (cam(), 480), (cam(), 520)]);
    }

    #[test]
    fn the_frame_cap_still_bounds_a_flood() {
        let start = Instant::now();
        let mut q = TimedFrames::new(BOUND, 8);
        for i in 0..8 {
            assert_eq!(q.push(mic(), audio(start, i), start).1, Ok(()));
        }
        assert_eq!(q.push(mic(), audio(start, 8), start).1, Err(Refused::Dropped));
        assert_eq!(q.len(), 8);
    }
}
