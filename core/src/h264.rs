//! H.264 bitstream plumbing shared by the transports: Annex B (start codes, what RTP
//! depacketisers and Junction frames use) versus AVCC (length prefixes, what FLV/RTMP and MP4
//! use), parameter sets, the avcC decoder configuration record, and keyframe detection.
//!
//! Written by hand: it is a few dozen lines of framing that every transport needs identically;
//! crates such as `h264-reader` parse far more (slice headers, SEI) than forwarding calls for.
//! The one question that needs an SPS parsed — does the stream reorder frames? — is asked of
//! `h264-reader` ([`config_reorders`]).

use bytes::{BufMut, Bytes, BytesMut};

pub const NAL_SLICE: u8 = 1;
pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H264Error {
    #[error("AVCC NAL length {len} at offset {offset} overruns the {total}-byte frame")]
    LengthOverrun { len: usize, offset: usize, total: usize },
    #[error("avcC record is {len} bytes, too short")]
    ShortConfig { len: usize },
    #[error("avcC record has version {version}, expected 1")]
    BadConfigVersion { version: u8 },
    #[error("avcC NAL length size {size} is not 1, 2 or 4")]
    BadLengthSize { size: usize },
}

/// The NAL unit type (low 5 bits of the first byte); 0 for an empty unit.
pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Iterates over the NAL units of an Annex B stream (3- or 4-byte start codes), without them.
pub fn annexb_nals(data: &[u8]) -> AnnexBNals<'_> {
    AnnexBNals { data, pos: find_start_code(data, 0).map_or(data.len(), |(_, end)| end) }
}

pub struct AnnexBNals<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for AnnexBNals<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while self.pos < self.data.len() {
            let start = self.pos;
            let (end, next) = match find_start_code(self.data, start) {
                Some((code_start, code_end)) => (code_start, code_end),
                None => (self.data.len(), self.data.len()),
            };
            self.pos = next;
            let mut nal = &self.data[start..end];
            // Trailing zero bytes belong to the next 4-byte start code, not to this unit.
            while let [rest @ .., 0] = nal {
                nal = rest;
            }
            if !nal.is_empty() {
                return Some(nal);
            }
        }
        None
    }
}

/// Finds the next `00 00 01` at or after `from`: (index of the code, index just past it).
fn find_start_code(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while i + 3 <= data.len() {
        if data[i + 2] > 1 {
            i += 3;
        } else if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            return Some((i, i + 3));
        } else {
            i += 1;
        }
    }
    None
}

/// Splits an AVCC (length-prefixed) access unit into NAL units.
pub fn avcc_nals(data: &[u8], length_size: usize) -> Result<Vec<&[u8]>, H264Error> {
    if !matches!(length_size, 1 | 2 | 4) {
        return Err(H264Error::BadLengthSize { size: length_size });
    }
    let mut nals = Vec::new();
    let mut offset = 0;
    while offset + length_size <= data.len() {
        let len = data[offset..offset + length_size].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
        let start = offset + length_size;
        if start + len > data.len() {
            return Err(H264Error::LengthOverrun { len, offset, total: data.len() });
        }
        if len > 0 {
            nals.push(&data[start..start + len]);
        }
        offset = start + len;
    }
    Ok(nals)
}

/// Writes NAL units as Annex B with 4-byte start codes.
pub fn to_annexb<'a>(nals: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
    let mut out = BytesMut::new();
    for nal in nals {
        out.put_slice(&[0, 0, 0, 1]);
        out.put_slice(nal);
    }
    out.freeze()
}

/// Writes NAL units as AVCC with 4-byte lengths.
pub fn to_avcc<'a>(nals: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
    let mut out = BytesMut::new();
    for nal in nals {
        out.put_u32(nal.len() as u32);
        out.put_slice(nal);
    }
    out.freeze()
}

/// Whether an Annex B access unit holds an IDR slice.
pub fn is_keyframe(annexb: &[u8]) -> bool {
    annexb_nals(annexb).any(|nal| nal_type(nal) == NAL_IDR)
}

/// The first SPS and PPS found in an Annex B access unit.
pub fn parameter_sets(annexb: &[u8]) -> (Option<&[u8]>, Option<&[u8]>) {
    let mut sps = None;
    let mut pps = None;
    for nal in annexb_nals(annexb) {
        match nal_type(nal) {
            NAL_SPS if sps.is_none() => sps = Some(nal),
            NAL_PPS if pps.is_none() => pps = Some(nal),
            _ => {}
        }
    }
    (sps, pps)
}

/// The AVCDecoderConfigurationRecord (ISO 14496-15 `avcC`), as FLV sequence headers and MP4
/// sample entries carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    pub profile: u8,
    pub compatibility: u8,
    pub level: u8,
    /// Bytes in each NAL length prefix of the samples this record describes.
    pub length_size: usize,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
}

impl AvcConfig {
    /// Builds a record from one SPS and one PPS (the profile and level come from the SPS).
    pub fn from_parameter_sets(sps: &[u8], pps: &[u8]) -> Option<AvcConfig> {
        if sps.len() < 4 || pps.is_empty() {
            return None;
        }
        Some(AvcConfig {
            profile: sps[1],
            compatibility: sps[2],
            level: sps[3],
            length_size: 4,
            sps: vec![Bytes::copy_from_slice(sps)],
            pps: vec![Bytes::copy_from_slice(pps)],
        })
    }

    pub fn parse(record: &[u8]) -> Result<AvcConfig, H264Error> {
        if record.len() < 7 {
            return Err(H264Error::ShortConfig { len: record.len() });
        }
        if record[0] != 1 {
            return Err(H264Error::BadConfigVersion { version: record[0] });
        }
        let length_size = (record[4] & 0x03) as usize + 1;
        if length_size == 3 {
            return Err(H264Error::BadLengthSize { size: 3 });
        }
        let mut pos = 5;
        let read_sets = |count: usize, pos: &mut usize| -> Result<Vec<Bytes>, H264Error> {
            let mut sets = Vec::with_capacity(count);
            for _ in 0..count {
                if *pos + 2 > record.len() {
                    return Err(H264Error::ShortConfig { len: record.len() });
                }
                let len = u16::from_be_bytes([record[*pos], record[*pos + 1]]) as usize;
                *pos += 2;
                if *pos + len > record.len() {
                    return Err(H264Error::LengthOverrun { len, offset: *pos, total: record.len() });
                }
                sets.push(Bytes::copy_from_slice(&record[*pos..*pos + len]));
                *pos += len;
            }
            Ok(sets)
        };
        let num_sps = (record[pos] & 0x1f) as usize;
        pos += 1;
        let sps = read_sets(num_sps, &mut pos)?;
        let num_pps = *record.get(pos).ok_or(H264Error::ShortConfig { len: record.len() })? as usize;
        pos += 1;
        let pps = read_sets(num_pps, &mut pos)?;
        Ok(AvcConfig { profile: record[1], compatibility: record[2], level: record[3], length_size, sps, pps })
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        out.put_u8(1);
        out.put_u8(self.profile);
        out.put_u8(self.compatibility);
        out.put_u8(self.level);
        out.put_u8(0xfc | (self.length_size.saturating_sub(1) as u8 & 0x03));
        out.put_u8(0xe0 | (self.sps.len() as u8 & 0x1f));
        for sps in &self.sps {
            out.put_u16(sps.len() as u16);
            out.put_slice(sps);
        }
        out.put_u8(self.pps.len() as u8);
        for pps in &self.pps {
            out.put_u16(pps.len() as u16);
            out.put_slice(pps);
        }
        out.freeze()
    }

    /// The RFC 6381 codec string (`avc1.64001f`).
    pub fn codec_string(&self) -> String {
        format!("avc1.{:02x}{:02x}{:02x}", self.profile, self.compatibility, self.level)
    }

    /// SDP `profile-level-id` (`64001f`).
    pub fn profile_level_id(&self) -> String {
        format!("{:02x}{:02x}{:02x}", self.profile, self.compatibility, self.level)
    }

    /// The parameter sets as Annex B, ready to put in front of an IDR.
    pub fn parameter_sets_annexb(&self) -> Bytes {
        to_annexb(self.sps.iter().chain(self.pps.iter()).map(|b| b.as_ref()))
    }
}

/// Converts one AVCC access unit to Annex B; when it holds an IDR without parameter sets, puts
/// `config`'s SPS/PPS in front so the frame decodes on its own.
pub fn avcc_to_annexb_frame(data: &[u8], config: &AvcConfig) -> Result<Bytes, H264Error> {
    let nals = avcc_nals(data, config.length_size)?;
    let has_idr = nals.iter().any(|n| nal_type(n) == NAL_IDR);
    let has_sps = nals.iter().any(|n| nal_type(n) == NAL_SPS);
    let prefix: Vec<&[u8]> = if has_idr && !has_sps {
        config.sps.iter().chain(config.pps.iter()).map(|b| b.as_ref()).collect()
    } else {
        Vec::new()
    };
    Ok(to_annexb(prefix.into_iter().chain(nals.into_iter().filter(|n| nal_type(n) != NAL_AUD))))
}

/// Whether the stream an avcC record describes sends frames out of presentation order
/// (B-frames): its first SPS says so in its VUI bitstream restriction (`max_num_reorder_frames`
/// above 0), which x264 — OBS's and ffmpeg's encoder — and hardware encoders write. A record
/// whose SPS does not say is taken as not reordering.
pub fn config_reorders(record: &[u8]) -> bool {
    use h264_reader::nal::{Nal, RefNal, sps::SeqParameterSet};
    let Ok(config) = AvcConfig::parse(record) else { return false };
    let Some(sps) = config.sps.first().filter(|sps| !sps.is_empty()) else { return false };
    let nal = RefNal::new(sps, &[], true);
    let Ok(sps) = SeqParameterSet::from_bits(nal.rbsp_bits()) else { return false };
    sps.vui_parameters
        .and_then(|vui| vui.bitstream_restrictions)
        .is_some_and(|restrictions| restrictions.max_num_reorder_frames > 0)
}

#[cfg(test)]
mod tests {

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }

    /// SPS/PPS as ffmpeg's libx264 writes them with its default B-frames and with
    /// `-tune zerolatency` (none).
    #[test]
    fn an_sps_says_whether_the_stream_reorders_frames() {
        let with_b = AvcConfig::from_parameter_sets(
            &hex("67f4000d919b28283f6022000003000200000300781e28532c"),
            &hex("68ef8f192190"),
        )
        .unwrap();
        let without = AvcConfig::from_parameter_sets(
            &hex("67f4000d91968141fb0110000003001000000303c8f142aa"),
            &hex("68ef0f192190"),
        )
        .unwrap();
        assert!(config_reorders(&with_b.to_bytes()));
        assert!(!config_reorders(&without.to_bytes()));
        assert!(!config_reorders(&[1, 2, 3]));
    }
    use super::*;

    const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33];
    const SLICE: &[u8] = &[0x41, 0x9a, 0x00, 0x00, 0x00, 0x01];

    #[test]
    fn annexb_splits_on_three_and_four_byte_start_codes() {
        let mut data = vec![0, 0, 0, 1];
        data.extend_from_slice(SPS);
        data.extend_from_slice(&[0, 0, 1]);
        data.extend_from_slice(PPS);
        data.extend_from_slice(&[0, 0, 0, 1]);
        data.extend_from_slice(IDR);
        let nals: Vec<&[u8]> = annexb_nals(&data).collect();
        assert_eq!(nals, vec![SPS, PPS, IDR]);
        assert!(is_keyframe(&data));
        assert_eq!(parameter_sets(&data), (Some(SPS), Some(PPS)));
    }

    #[test]
    fn avcc_and_annexb_round_trip() {
        let avcc = to_avcc([SPS, PPS, SLICE]);
        let nals = avcc_nals(&avcc, 4).unwrap();
        assert_eq!(nals, vec![SPS, PPS, SLICE]);
        let annexb = to_annexb(nals.iter().copied());
        // SLICE contains an emulated start code pattern inside, which Annex B splits; real
        // encoders never emit it (emulation prevention), so only check the clean prefix.
        assert_eq!(annexb_nals(&annexb).take(2).collect::<Vec<_>>(), vec![SPS, PPS]);
    }

    #[test]
    fn avcc_rejects_overruns_instead_of_panicking() {
        let err = avcc_nals(&[0, 0, 0, 9, 1, 2], 4).unwrap_err();
        assert_eq!(err, H264Error::LengthOverrun { len: 9, offset: 0, total: 6 });
        assert!(AvcConfig::parse(&[1, 2]).is_err());
        assert!(AvcConfig::parse(&[1, 0x64, 0, 0x1f, 0xff, 0xe1, 0x00, 0x50]).is_err());
    }

    #[test]
    fn avc_config_round_trips_and_fills_keyframes() {
        let config = AvcConfig::from_parameter_sets(SPS, PPS).unwrap();
        assert_eq!(config.codec_string(), "avc1.64001f");
        let parsed = AvcConfig::parse(&config.to_bytes()).unwrap();
        assert_eq!(parsed, config);

        let frame = avcc_to_annexb_frame(&to_avcc([IDR]), &config).unwrap();
        let nals: Vec<&[u8]> = annexb_nals(&frame).collect();
        assert_eq!(nals, vec![SPS, PPS, IDR]);
        let delta = avcc_to_annexb_frame(&to_avcc([&SLICE[..2]]), &config).unwrap();
        assert_eq!(annexb_nals(&delta).count(), 1);
    }
}
