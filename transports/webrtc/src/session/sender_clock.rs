//! When a WebRTC publisher captured each frame, on the server's clock (`MediaFrame::captured`):
//! the peer's RTCP sender reports map each stream's RTP time to the peer's own NTP clock, one
//! clock for all its streams, so audio and video frames captured together get the same instant
//! here, whatever each queued on the way (a video frame paced out over tens of ms, audio in
//! 20 ms packets). The NTP clock is placed on ours by the frame that arrived soonest after its
//! capture (network delay is never negative), relaxing 1 ms per second so a peer clock slower
//! than ours is followed; the result is never later than the frame's arrival. Before the first
//! report of a stream, its frames count as captured when they arrived. Viewers' sender reports
//! are built on these instants (`egress.rs`), which is how a browser's lip sync survives the
//! server.

use std::time::{Duration, Instant, SystemTime};

use str0m::media::MediaData;

/// How fast the mapping relaxes towards later arrivals: 1 ms per second.
const RELAX_PER_SECOND: f64 = 0.001;

/// One peer's NTP clock placed on ours.
#[derive(Debug)]
pub(crate) struct SenderClock {
    epoch: Instant,
    /// Our time (seconds since `epoch`) minus the peer's NTP time (seconds since 1970) at the
    /// least-delayed frame so far, and our time when it was last updated.
    offset: Option<(f64, f64)>,
}

impl Default for SenderClock {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl SenderClock {
    pub(crate) fn new(epoch: Instant) -> Self {
        Self { epoch, offset: None }
    }

    /// When the frame of `data` was captured, on our clock (at most its arrival).
    pub(crate) fn captured(&mut self, data: &MediaData) -> Instant {
        let report = data.last_sender_info.as_ref().map(|r| (r.ntp_time, r.rtp_time.numer() as u32));
        self.place(data.network_time, data.time.numer() as u32, data.time.denom(), report)
    }

    /// A frame with RTP timestamp `rtp` (at `rate` Hz) that arrived at `arrival`, its stream's
    /// latest sender report saying NTP time `report.0` was RTP time `report.1`.
    fn place(&mut self, arrival: Instant, rtp: u32, rate: u32, report: Option<(SystemTime, u32)>) -> Instant {
        let Some((report_ntp, report_rtp)) = report else { return arrival };
        let Ok(report_ntp) = report_ntp.duration_since(SystemTime::UNIX_EPOCH) else { return arrival };
        if rate == 0 {
            return arrival;
        }
        // RTP timestamps are 32-bit and wrap: the frame's distance from the report's, signed.
        let ticks = rtp.wrapping_sub(report_rtp) as i32;
        let captured_ntp = report_ntp.as_secs_f64() + f64::from(ticks) / f64::from(rate);
        let now = arrival.saturating_duration_since(self.epoch).as_secs_f64();
        let candidate = now - captured_ntp;
        let offset = match self.offset {
            Some((offset, at)) => (offset + (now - at).max(0.0) * RELAX_PER_SECOND).min(candidate),
            None => candidate,
        };
        self.offset = Some((offset, now));
        let ours = captured_ntp + offset;
        if !ours.is_finite() || ours < 0.0 {
            return arrival;
        }
        (self.epoch + Duration::from_secs_f64(ours)).min(arrival)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_after(epoch: Instant, at: Instant) -> f64 {
        at.duration_since(epoch).as_secs_f64() * 1000.0
    }

    #[test]
    fn audio_and_video_captured_together_land_on_one_instant_whatever_each_queued() {
        let epoch = Instant::now();
        let at = |ms: u64| epoch + Duration::from_millis(ms);
        let ntp = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut clock = SenderClock::new(epoch);
        // Audio (48 kHz, RTP 1000 = NTP t0) captured at t0 + 100 ms arrives 30 ms later.
        let audio = clock.place(at(1_130), 1_000 + 4_800, 48_000, Some((ntp, 1_000)));
        assert!((ms_after(epoch, audio) - 1_130.0).abs() < 0.01);
        // Video (90 kHz, RTP 5 = the same NTP t0) captured at the same moment queued 70 ms: it
        // lands where the audio did.
        let video = clock.place(at(1_170), 5 + 9_000, 90_000, Some((ntp, 5)));
        assert!((ms_after(epoch, video) - 1_130.0).abs() < 0.05, "{}", ms_after(epoch, video));
        // A frame that queued less than any before moves the mapping earlier, and never later
        // than its own arrival.
        let sooner = clock.place(at(1_215), 1_000 + 9_600, 48_000, Some((ntp, 1_000)));
        assert!((ms_after(epoch, sooner) - 1_215.0).abs() < 0.01);
        let video = clock.place(at(1_300), 5 + 18_000, 90_000, Some((ntp, 5)));
        assert!((ms_after(epoch, video) - 1_215.0).abs() < 0.2, "{}", ms_after(epoch, video));
        // RTP timestamps wrap (this frame is 100 ms after its report's time).
        let wrapped = clock.place(at(1_400), 100, 48_000, Some((ntp, u32::MAX - 4_699)));
        assert!((ms_after(epoch, wrapped) - 1_115.0).abs() < 0.5, "{}", ms_after(epoch, wrapped));
        // No report yet: the arrival.
        assert_eq!(clock.place(at(1_500), 7, 90_000, None), at(1_500));
    }
}
