//! SRT media: the MPEG-TS an encoder sends, into the stream's `TsDemuxer` and `TsIngest`
//! (transports/srt/src/ts.rs, ingest.rs): resynchronisation on sync bytes, PAT/PMT and PES
//! parsing (mpeg2ts-reader), PES gathering with its caps, ADTS splitting, H.264 parameter sets
//! and access units, the 33-bit timeline.
//!
//! Input: the first byte picks the size of the pieces the rest arrives in (1 to 1316 bytes, as
//! SRT payloads may cut TS packets anywhere); the rest is the stream.

use std::time::Instant;

use junction_srt::ingest::{IngestEvent, TsIngest};
use junction_srt::ts::TsDemuxer;

pub fn run(data: &[u8]) {
    let Some((&size, stream)) = data.split_first() else { return };
    let piece = 1 + usize::from(size) * 1316 / 256;
    let arrival = Instant::now();
    let mut demuxer = TsDemuxer::default();
    let mut ingest = TsIngest::default();
    let mut events = Vec::new();
    for chunk in stream.chunks(piece) {
        demuxer.push(chunk);
        let _ = demuxer.take_skipped();
        while let Some(pes) = demuxer.next_pes() {
            if let Err(err) = ingest.on_pes(&pes, arrival, &mut events)
                && err.is_fatal()
            {
                return; // the stream ends
            }
            for event in events.drain(..) {
                if let IngestEvent::Frame(frame) = event {
                    assert!(!frame.payload.is_empty(), "an empty frame left the ingest");
                }
            }
        }
    }
}
