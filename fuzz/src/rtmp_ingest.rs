//! RTMP media: FLV video and audio message bodies into the publisher's `Ingest`
//! (transports/rtmp/src/ingest.rs, flv.rs), as the session hands them over once `rml_rtmp` has
//! reassembled the chunks: AVC sequence headers (AVCDecoderConfigurationRecord), AVC NALUs in
//! AVCC framing, enhanced-RTMP FourCC video, AAC sequence headers (AudioSpecificConfig) and raw
//! AAC, other codec ids.
//!
//! Input: messages separated by [`crate::SEPARATOR`], each `kind: u8` (even: video, odd:
//! audio; 0xff: an `onMetaData` size), `timestamp: u32` (little endian), then the body.

use std::time::Instant;

use arbitrary::Unstructured;
use bytes::Bytes;
use junction_rtmp::ingest::{Ingest, IngestEvent};

pub fn run(data: &[u8]) {
    let arrival = Instant::now();
    let mut ingest = Ingest::default();
    let mut events = Vec::new();
    for record in crate::records(data) {
        let mut u = Unstructured::new(record);
        let (Ok(kind), Ok(timestamp)) = (u.arbitrary::<u8>(), u.arbitrary::<u32>()) else { continue };
        let body = Bytes::copy_from_slice(u.take_rest());
        let result = match kind {
            0xff => {
                let mut size = Unstructured::new(&body);
                ingest.set_dimensions(size.arbitrary().unwrap_or(None), size.arbitrary().unwrap_or(None));
                Ok(())
            }
            kind if kind % 2 == 0 => ingest.on_video(timestamp, &body, arrival, &mut events),
            _ => ingest.on_audio(timestamp, &body, arrival, &mut events),
        };
        if let Err(err) = result {
            // The session ends on fatal errors; anything else costs one frame.
            if err.is_fatal() {
                break;
            }
        }
        for event in events.drain(..) {
            if let IngestEvent::Frame(frame) = event {
                assert!(!frame.payload.is_empty(), "an empty frame left the ingest");
            }
        }
    }
}
