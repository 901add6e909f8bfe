//! An HLS output's media as the server keeps it, sans I/O: init segments, segments made of
//! LL-HLS partial segments, a bounded window of them, and the media playlist rendered from it
//! (RFC 8216bis: `EXT-X-PART`, `EXT-X-PRELOAD-HINT`, `EXT-X-SERVER-CONTROL` with blocking
//! reload). Written by hand: no maintained crate renders LL-HLS playlists for a live origin.

use std::collections::VecDeque;
use std::fmt::Write;

use bytes::Bytes;

/// A partial segment: whole CMAF fragments.
#[derive(Debug, Clone)]
pub struct Part {
    pub data: Bytes,
    pub duration: f64,
    /// Starts with a video keyframe (or the stream has no video).
    pub independent: bool,
}

#[derive(Debug, Clone)]
pub struct Segment {
    pub msn: u64,
    pub parts: Vec<Part>,
    /// Which init segment its fragments need.
    pub init: u32,
    /// A new init segment (a new track set or decoder configuration) begins here.
    pub discontinuity: bool,
    /// Wall-clock time of its first sample, ms since the epoch.
    pub start_unix_ms: f64,
    pub complete: bool,
}

impl Segment {
    pub fn duration(&self) -> f64 {
        self.parts.iter().map(|p| p.duration).sum()
    }

    /// The segment's parts, in order (back to back they are the whole segment).
    pub fn part_data(&self) -> Vec<Bytes> {
        self.parts.iter().map(|p| p.data.clone()).collect()
    }
}

/// Durations an output is made with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Segment duration aimed at (segments end at the first keyframe past it).
    pub segment: f64,
    /// Partial segment duration aimed at.
    pub part: f64,
    /// Complete segments kept and listed.
    pub window: usize,
}

impl Timing {
    /// `EXT-X-TARGETDURATION`: no segment may be longer, so a segment is cut there even
    /// without a keyframe.
    pub fn target(&self) -> u64 {
        (self.segment * 2.0).ceil().max(1.0) as u64
    }
}

/// The media an output serves.
#[derive(Debug)]
pub struct Media {
    pub timing: Timing,
    /// Init segments by version, the ones the window still needs.
    pub inits: Vec<(u32, Bytes)>,
    /// Complete segments (at most `window`), then the one being written.
    pub segments: VecDeque<Segment>,
    /// Discontinuities that left the window (`EXT-X-DISCONTINUITY-SEQUENCE`).
    pub discontinuity_sequence: u64,
    pub next_msn: u64,
    /// Ended: no more media (`EXT-X-ENDLIST`).
    pub ended: bool,
}

impl Media {
    pub fn new(timing: Timing) -> Media {
        Media {
            timing,
            inits: Vec::new(),
            segments: VecDeque::new(),
            discontinuity_sequence: 0,
            next_msn: 0,
            ended: false,
        }
    }

    pub fn init(&self, version: u32) -> Option<Bytes> {
        self.inits.iter().find(|(v, _)| *v == version).map(|(_, data)| data.clone())
    }

    pub fn segment(&self, msn: u64) -> Option<&Segment> {
        self.segments.iter().find(|s| s.msn == msn)
    }

    /// Whether segment `msn` (part `part`, or the whole segment) is out.
    pub fn has(&self, msn: u64, part: Option<usize>) -> bool {
        match (self.segment(msn), part) {
            (Some(segment), Some(part)) => segment.parts.len() > part || segment.complete,
            (Some(segment), None) => segment.complete,
            (None, _) => self.segments.back().is_some_and(|last| last.msn > msn),
        }
    }

    /// Begins segment `next_msn` (completing the current one).
    pub fn begin_segment(&mut self, init: u32, discontinuity: bool, start_unix_ms: f64) {
        if let Some(current) = self.segments.back_mut() {
            current.complete = true;
        }
        let msn = self.next_msn;
        self.next_msn += 1;
        self.segments.push_back(Segment {
            msn,
            parts: Vec::new(),
            init,
            discontinuity,
            start_unix_ms,
            complete: false,
        });
        while self.segments.iter().filter(|s| s.complete).count() > self.timing.window {
            if let Some(dropped) = self.segments.pop_front()
                && dropped.discontinuity
            {
                self.discontinuity_sequence += 1;
            }
        }
        let needed: Vec<u32> = self.segments.iter().map(|s| s.init).collect();
        self.inits.retain(|(version, _)| needed.contains(version) || Some(*version) == needed.last().copied());
    }

    /// Adds a finished part to the segment being written.
    pub fn push_part(&mut self, part: Part) {
        if let Some(current) = self.segments.back_mut() {
            current.parts.push(part);
        }
    }

    /// The media playlist; `query` (`?token=…`, or empty) is added to every URI.
    pub fn playlist(&self, query: &str) -> String {
        let timing = &self.timing;
        let mut out = String::new();
        let _ = writeln!(out, "#EXTM3U");
        let _ = writeln!(out, "#EXT-X-VERSION:9");
        let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", timing.target());
        let _ = writeln!(
            out,
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}",
            (timing.part * 3.0).max(timing.part + 0.001)
        );
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={:.3}", timing.part);
        let first = self.segments.front().map_or(self.next_msn, |s| s.msn);
        let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first}");
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", self.discontinuity_sequence);
        // Parts are listed for the last segments only (about three target durations back).
        let with_parts = self.segments.len().saturating_sub(3);
        let mut map = None;
        for (index, segment) in self.segments.iter().enumerate() {
            if segment.parts.is_empty() {
                continue;
            }
            if segment.discontinuity && index > 0 {
                let _ = writeln!(out, "#EXT-X-DISCONTINUITY");
            }
            if map != Some(segment.init) {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"init-{}.mp4{query}\"", segment.init);
                map = Some(segment.init);
            }
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601(segment.start_unix_ms));
            if index >= with_parts {
                for (k, part) in segment.parts.iter().enumerate() {
                    let independent = if part.independent { ",INDEPENDENT=YES" } else { "" };
                    let _ = writeln!(
                        out,
                        "#EXT-X-PART:DURATION={:.5},URI=\"part-{}-{k}.m4s{query}\"{independent}",
                        part.duration, segment.msn
                    );
                }
            }
            if segment.complete {
                let _ = writeln!(out, "#EXTINF:{:.5},", segment.duration());
                let _ = writeln!(out, "seg-{}.m4s{query}", segment.msn);
            }
        }
        match self.segments.back() {
            _ if self.ended => {
                let _ = writeln!(out, "#EXT-X-ENDLIST");
            }
            Some(current) if !current.complete => {
                let _ = writeln!(
                    out,
                    "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-{}-{}.m4s{query}\"",
                    current.msn,
                    current.parts.len()
                );
            }
            _ => {}
        }
        out
    }
}

/// `2026-12-06T18:55:01.123Z`.
fn iso8601(unix_ms: f64) -> String {
    let ms = unix_ms.max(0.0) as i64;
    let (days, rest) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3_600_000,
        rest / 60_000 % 60,
        rest / 1000 % 60,
        rest % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(independent: bool) -> Part {
        Part { data: Bytes::from_static(b"moof"), duration: 0.5, independent }
    }

    #[test]
    fn the_playlist_lists_segments_parts_and_the_next_part() {
        let mut media = Media::new(Timing { segment: 1.0, part: 0.5, window: 2 });
        media.inits.push((0, Bytes::from_static(b"init")));
        for msn in 0..4 {
            media.begin_segment(0, false, 1_796_580_000_000.0 + msn as f64 * 1000.0);
            media.push_part(part(true));
            media.push_part(part(false));
        }
        let playlist = media.playlist("?token=t");
        assert!(playlist.contains("#EXT-X-TARGETDURATION:2\n"), "{playlist}");
        assert!(playlist.contains("#EXT-X-MEDIA-SEQUENCE:1\n"), "two complete segments kept: {playlist}");
        assert!(playlist.contains("#EXT-X-MAP:URI=\"init-0.mp4?token=t\""), "{playlist}");
        assert!(playlist.contains("#EXTINF:1.00000,\nseg-2.m4s?token=t\n"), "{playlist}");
        assert!(!playlist.contains("seg-3.m4s"), "the segment being written is parts only: {playlist}");
        assert!(playlist.contains("#EXT-X-PART:DURATION=0.50000,URI=\"part-3-0.m4s?token=t\",INDEPENDENT=YES\n"));
        assert!(playlist.ends_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-3-2.m4s?token=t\"\n"), "{playlist}");
        assert!(playlist.contains("#EXT-X-PROGRAM-DATE-TIME:2026-12-06T"), "{playlist}");
        assert!(media.has(3, Some(1)) && !media.has(3, Some(2)) && !media.has(3, None) && media.has(2, None));
        assert_eq!(media.segment(2).unwrap().part_data().concat().len(), 8);
        assert!(media.segment(0).is_none(), "out of the window");
    }

    #[test]
    fn a_new_init_is_a_discontinuity_and_old_inits_go_with_their_segments() {
        let mut media = Media::new(Timing { segment: 1.0, part: 0.5, window: 1 });
        media.inits.push((0, Bytes::from_static(b"a")));
        media.begin_segment(0, false, 0.0);
        media.push_part(part(true));
        media.inits.push((1, Bytes::from_static(b"b")));
        media.begin_segment(1, true, 1000.0);
        media.push_part(part(true));
        let playlist = media.playlist("");
        assert!(playlist.contains("#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"init-1.mp4\""), "{playlist}");
        media.begin_segment(1, false, 2000.0);
        media.push_part(part(true));
        media.begin_segment(1, false, 3000.0);
        assert_eq!(media.discontinuity_sequence, 1, "the discontinuity left the window");
        assert!(media.init(0).is_none() && media.init(1).is_some());
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123.0), "2000-02-29T00:00:00.123Z");
    }
}
