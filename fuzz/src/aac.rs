//! AAC (audio/src/codec/aac, core/src/aac.rs): the AudioSpecificConfig as the
//! engine and the RTMP ingest read it, ADTS framing, and raw AAC frames through the decoder
//! the transcoder uses (symphonia, behind Junction's `catch_unwind`).
//!
//! Input: an AudioSpecificConfig, then frames, separated by [`crate::SEPARATOR`]. Each frame is
//! decoded raw with the config's decoder, and read as ADTS (each ADTS frame decoded with a
//! decoder for its header's config). Checked: configs write back into configs that read the
//! same, and our ADTS headers read back as the config and payload they were written for.

use std::collections::HashMap;

use junction_audio::codec::AudioDecoder;
use junction_audio::codec::aac::{AacConfig, AacDecoder, parse_adts};

/// Raw AAC frames and ADTS streams are a few kilobytes at most.
const MAX_FRAME: usize = 0x1FFF - 9;

pub fn run(data: &[u8]) {
    let mut records = crate::records(data);
    let asc = records.next().unwrap_or_default();
    let _ = junction_core::aac::AacConfig::parse(asc);
    if let Ok(config) = AacConfig::parse(asc) {
        if config.object_type <= 30 {
            assert_eq!(
                AacConfig::parse(&config.to_asc()),
                Ok(config),
                "an AudioSpecificConfig does not survive writing"
            );
        }
        check_adts_writer(config);
    }
    let mut decoder = AacDecoder::new(asc).ok();
    let mut by_config: HashMap<Vec<u8>, Option<AacDecoder>> = HashMap::new();
    let mut pcm = Vec::new();
    for frame in records {
        if let Some(decoder) = decoder.as_mut() {
            pcm.clear();
            let _ = decoder.decode(frame, &mut pcm);
        }
        let Ok(frames) = parse_adts(frame) else { continue };
        for (config, payload) in frames {
            let asc = config.to_asc().to_vec();
            if let Some(decoder) = by_config.entry(asc).or_insert_with_key(|asc| AacDecoder::new(asc).ok()) {
                pcm.clear();
                let _ = decoder.decode(payload, &mut pcm);
            }
        }
    }
}

fn check_adts_writer(config: AacConfig) {
    let representable = (1..=4).contains(&config.object_type)
        && config.channels < 8
        && AacConfig::lc(config.sample_rate, 1).to_asc().len() == 2;
    if !representable {
        return;
    }
    let payload = [0x21u8, 0x10, 0x04, 0x60, 0x8c, 0x1c];
    let mut frame = config.adts_header(payload.len()).to_vec();
    frame.extend_from_slice(&payload);
    assert!(frame.len() <= MAX_FRAME);
    let read = parse_adts(&frame).unwrap_or_else(|err| panic!("our ADTS header does not read back: {err}"));
    assert_eq!(read, [(config, &payload[..])], "our ADTS header reads back as something else");
}
