//! The decoder configurations of VP8, VP9 and AV1 tracks (`vp08`/`vp09` sample entries with a
//! `vpcC` box, `av01` with `av1C`), read from the stream itself: a VP8 keyframe's header, a
//! VP9 keyframe's uncompressed header, an AV1 sequence header OBU. Written by hand: each is a
//! few dozen bits at the start of a keyframe, and the crates that parse these codecs decode far
//! more than packaging needs. Every read is bounds-checked; a short or odd header gives `None`.

use bytes::Bytes;

/// What a `vpcC` box says about a VP8 or VP9 stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VpxConfig {
    pub profile: u8,
    /// The VP9 level (10 = 1.0, ..., 62 = 6.2), estimated from the picture size.
    pub level: u8,
    pub bit_depth: u8,
    /// 0: 4:2:0 vertical, 1: 4:2:0 co-located, 2: 4:2:2, 3: 4:4:4.
    pub chroma_subsampling: u8,
    pub full_range: bool,
}

/// What an `av1C` box says about an AV1 stream, and the sequence header OBU it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Av1Config {
    pub profile: u8,
    pub level: u8,
    pub high_tier: bool,
    pub high_bitdepth: bool,
    pub twelve_bit: bool,
    pub monochrome: bool,
    pub subsampling_x: bool,
    pub subsampling_y: bool,
    pub chroma_sample_position: u8,
    /// The whole sequence header OBU (header, size and payload).
    pub sequence_header: Bytes,
}

impl VpxConfig {
    /// `vp08.PP.LL.DD` / `vp09.PP.LL.DD` (the VP codec ISO media file format binding).
    pub fn codec_string(&self, fourcc: &str) -> String {
        format!("{fourcc}.{:02}.{:02}.{:02}", self.profile, self.level, self.bit_depth)
    }
}

impl Av1Config {
    /// `av01.P.LLT.DD` (the AV1 ISO media file format binding).
    pub fn codec_string(&self) -> String {
        let depth = match (self.high_bitdepth, self.twelve_bit) {
            (false, _) => 8,
            (true, false) => 10,
            (true, true) => 12,
        };
        let tier = if self.high_tier { 'H' } else { 'M' };
        format!("av01.{}.{:02}{tier}.{depth:02}", self.profile, self.level)
    }

    pub fn bit_depth(&self) -> u8 {
        match (self.high_bitdepth, self.twelve_bit) {
            (false, _) => 8,
            (true, false) => 10,
            (true, true) => 12,
        }
    }
}

/// Big-endian bit reader over a byte slice; every read past the end fails.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Option<bool> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(bit == 1)
    }

    fn bits(&mut self, count: u32) -> Option<u32> {
        debug_assert!(count <= 32);
        (0..count).try_fold(0u32, |value, _| Some((value << 1) | u32::from(self.bit()?)))
    }

    /// AV1's uvlc(): leading zeros, then that many bits.
    fn uvlc(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while !self.bit()? {
            zeros += 1;
            if zeros >= 32 {
                return None;
            }
        }
        Some(self.bits(zeros)?.wrapping_add((1u32 << zeros).wrapping_sub(1)))
    }
}

/// The picture size of a VP8 keyframe (`None` for an interframe or a malformed header).
pub fn vp8_keyframe_size(frame: &[u8]) -> Option<(u16, u16)> {
    // Frame tag: bit 0 is 0 for a keyframe; then the start code 9d 01 2a and two 14-bit sizes
    // (the top 2 bits of each are a scaling mode).
    let tag = *frame.first()?;
    if tag & 1 != 0 || frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let width = u16::from_le_bytes([frame[6], *frame.get(7)?]) & 0x3fff;
    let height = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
    (width > 0 && height > 0).then_some((width, height))
}

/// The `vpcC` of a VP8 stream (there is one profile family; 8 bits, 4:2:0).
pub fn vp8_config(width: u16, height: u16) -> VpxConfig {
    VpxConfig { profile: 0, level: level_for(width, height), bit_depth: 8, chroma_subsampling: 1, full_range: false }
}

/// The `vpcC` and picture size of a VP9 keyframe (the first frame of a superframe).
pub fn vp9_keyframe_config(frame: &[u8]) -> Option<(VpxConfig, u16, u16)> {
    let mut bits = Bits::new(frame);
    if bits.bits(2)? != 2 {
        return None;
    }
    let low = bits.bits(1)?;
    let high = bits.bits(1)?;
    let profile = (high << 1 | low) as u8;
    if profile == 3 && bits.bit()? {
        return None;
    }
    // show_existing_frame, then frame_type (0 = key), show_frame, error_resilient_mode.
    if bits.bit()? || bits.bit()? {
        return None;
    }
    bits.bits(2)?;
    if bits.bits(24)? != 0x49_83_42 {
        return None;
    }
    let bit_depth = if profile >= 2 { if bits.bit()? { 12 } else { 10 } } else { 8 };
    let color_space = bits.bits(3)?;
    let (full_range, subsampling) = if color_space != 7 {
        let full_range = bits.bit()?;
        let subsampling = if profile == 1 || profile == 3 {
            let (x, y) = (bits.bit()?, bits.bit()?);
            bits.bit()?;
            (x, y)
        } else {
            (true, true)
        };
        (full_range, subsampling)
    } else {
        if profile == 1 || profile == 3 {
            bits.bit()?;
        }
        (true, (false, false))
    };
    let width = bits.bits(16)? + 1;
    let height = bits.bits(16)? + 1;
    let (width, height) = (u16::try_from(width).ok()?, u16::try_from(height).ok()?);
    let chroma_subsampling = match subsampling {
        (true, true) => 1,
        (true, false) => 2,
        _ => 3,
    };
    let config = VpxConfig { profile, level: level_for(width, height), bit_depth, chroma_subsampling, full_range };
    Some((config, width, height))
}

/// The VP9 level whose largest picture holds `width`x`height` (levels 1 to 6.2 by luma samples).
fn level_for(width: u16, height: u16) -> u8 {
    const LEVELS: [(u64, u8); 10] = [
        (36_864, 10),
        (73_728, 11),
        (122_880, 20),
        (245_760, 21),
        (552_960, 30),
        (983_040, 31),
        (2_228_224, 40),
        (8_912_896, 50),
        (35_651_584, 60),
        (u64::MAX, 62),
    ];
    let samples = u64::from(width) * u64::from(height);
    LEVELS.iter().find(|(max, _)| samples <= *max).map_or(62, |(_, level)| *level)
}

const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;
const OBU_PADDING: u8 = 15;

/// The OBUs of a low-overhead temporal unit: (type, the whole OBU). An OBU without a size field
/// runs to the end; a size that overruns ends the walk.
fn obus(unit: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = unit;
    std::iter::from_fn(move || {
        let header = *rest.first()?;
        let obu_type = (header >> 3) & 0x0f;
        let header_len = 1 + usize::from(header & 0x04 != 0);
        let (size, size_len) = if header & 0x02 != 0 {
            leb128(rest.get(header_len..)?)?
        } else {
            ((rest.len().checked_sub(header_len)?) as u64, 0)
        };
        let total = header_len.checked_add(size_len)?.checked_add(usize::try_from(size).ok()?)?;
        let obu = rest.get(..total)?;
        rest = &rest[total..];
        Some((obu_type, obu))
    })
}

fn leb128(data: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in data.iter().take(8).enumerate() {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// A temporal unit as an MP4 sample: without temporal delimiters and padding, which the AV1
/// binding forbids in samples.
pub fn av1_sample(unit: &Bytes) -> Bytes {
    if obus(unit).all(|(kind, _)| kind != OBU_TEMPORAL_DELIMITER && kind != OBU_PADDING) {
        return unit.clone();
    }
    let mut sample = Vec::with_capacity(unit.len());
    for (_, obu) in obus(unit).filter(|(kind, _)| *kind != OBU_TEMPORAL_DELIMITER && *kind != OBU_PADDING) {
        sample.extend_from_slice(obu);
    }
    Bytes::from(sample)
}

/// The `av1C` and largest picture size of an AV1 stream, from the sequence header OBU of a
/// temporal unit (a keyframe's carries one).
pub fn av1_sequence_config(unit: &[u8]) -> Option<(Av1Config, u16, u16)> {
    let (_, obu) = obus(unit).find(|(kind, _)| *kind == OBU_SEQUENCE_HEADER)?;
    let header = obu[0];
    let header_len = 1 + usize::from(header & 0x04 != 0);
    let payload_start = if header & 0x02 != 0 { header_len + leb128(&obu[header_len..])?.1 } else { header_len };
    let mut bits = Bits::new(obu.get(payload_start..)?);

    let profile = bits.bits(3)? as u8;
    let _still_picture = bits.bit()?;
    let reduced = bits.bit()?;
    let (level, high_tier);
    if reduced {
        level = bits.bits(5)? as u8;
        high_tier = false;
    } else {
        let mut decoder_model = false;
        let mut buffer_delay_length = 0;
        if bits.bit()? {
            // timing_info
            bits.bits(32)?;
            bits.bits(32)?;
            if bits.bit()? {
                bits.uvlc()?;
            }
            decoder_model = bits.bit()?;
            if decoder_model {
                buffer_delay_length = bits.bits(5)? + 1;
                bits.bits(32)?;
                bits.bits(10)?;
            }
        }
        let initial_display_delay = bits.bit()?;
        let operating_points = bits.bits(5)? + 1;
        let (mut first_level, mut first_tier) = (0, false);
        for index in 0..operating_points {
            bits.bits(12)?;
            let op_level = bits.bits(5)? as u8;
            let op_tier = op_level > 7 && bits.bit()?;
            if decoder_model && bits.bit()? {
                bits.bits(buffer_delay_length)?;
                bits.bits(buffer_delay_length)?;
                bits.bit()?;
            }
            if initial_display_delay && bits.bit()? {
                bits.bits(4)?;
            }
            if index == 0 {
                (first_level, first_tier) = (op_level, op_tier);
            }
        }
        (level, high_tier) = (first_level, first_tier);
    }
    let width_bits = bits.bits(4)? + 1;
    let height_bits = bits.bits(4)? + 1;
    let width = bits.bits(width_bits)? + 1;
    let height = bits.bits(height_bits)? + 1;
    if !reduced && bits.bit()? {
        bits.bits(4)?;
        bits.bits(3)?;
    }
    // use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
    bits.bits(3)?;
    if !reduced {
        // interintra compound, masked compound, warped motion, dual filter
        bits.bits(4)?;
        let order_hint = bits.bit()?;
        if order_hint {
            bits.bits(2)?;
        }
        let force_screen_content_tools = if bits.bit()? { 2 } else { bits.bits(1)? };
        if force_screen_content_tools > 0 && !bits.bit()? {
            bits.bit()?;
        }
        if order_hint {
            bits.bits(3)?;
        }
    }
    // enable_superres, enable_cdef, enable_restoration
    bits.bits(3)?;

    // color_config
    let high_bitdepth = bits.bit()?;
    let twelve_bit = profile == 2 && high_bitdepth && bits.bit()?;
    let monochrome = profile != 1 && bits.bit()?;
    let (mut primaries, mut transfer, mut matrix) = (2, 2, 2);
    if bits.bit()? {
        (primaries, transfer, matrix) = (bits.bits(8)?, bits.bits(8)?, bits.bits(8)?);
    }
    let (subsampling_x, subsampling_y, mut chroma_sample_position) = if monochrome {
        bits.bit()?;
        (true, true, 0)
    } else if primaries == 1 && transfer == 13 && matrix == 0 {
        (false, false, 0)
    } else {
        bits.bit()?;
        let (x, y) = match profile {
            0 => (true, true),
            1 => (false, false),
            _ if twelve_bit => {
                let x = bits.bit()?;
                (x, x && bits.bit()?)
            }
            _ => (true, false),
        };
        (x, y, 0)
    };
    if subsampling_x && subsampling_y && !monochrome && !(primaries == 1 && transfer == 13 && matrix == 0) {
        chroma_sample_position = bits.bits(2)? as u8;
    }
    let config = Av1Config {
        profile,
        level,
        high_tier,
        high_bitdepth,
        twelve_bit,
        monochrome,
        subsampling_x,
        subsampling_y,
        chroma_sample_position,
        sequence_header: Bytes::copy_from_slice(obu),
    };
    Some((config, u16::try_from(width).ok()?, u16::try_from(height).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First frames of streams ffmpeg wrote (libvpx VP8 and VP9 at 320x240, libaom AV1 at
    /// 64x48 with a temporal delimiter first), taken out of their IVF files.
    const VP8_KEY: &[u8] = include_bytes!("../tests/data/vp8_key.bin");
    const VP9_KEY: &[u8] = include_bytes!("../tests/data/vp9_key.bin");
    const AV1_KEY: &[u8] = include_bytes!("../tests/data/av1_key.bin");

    #[test]
    fn vp8_keyframe_headers_give_the_picture_size() {
        assert_eq!(vp8_keyframe_size(VP8_KEY), Some((320, 240)));
        let mut inter = VP8_KEY.to_vec();
        inter[0] |= 1;
        assert_eq!(vp8_keyframe_size(&inter), None);
        assert_eq!(vp8_keyframe_size(&VP8_KEY[..8]), None);
        assert_eq!(vp8_config(320, 240).codec_string("vp08"), "vp08.00.20.08");
    }

    #[test]
    fn vp9_keyframe_headers_give_profile_depth_and_size() {
        let (config, width, height) = vp9_keyframe_config(VP9_KEY).unwrap();
        assert_eq!((width, height), (320, 240));
        assert_eq!((config.profile, config.bit_depth, config.chroma_subsampling), (0, 8, 1));
        assert_eq!(config.codec_string("vp09"), "vp09.00.20.08");
        for len in 0..9 {
            assert_eq!(vp9_keyframe_config(&VP9_KEY[..len]), None, "{len} bytes");
        }
    }

    #[test]
    fn av1_sequence_headers_give_the_av1c_and_samples_lose_their_delimiters() {
        let unit = Bytes::from_static(AV1_KEY);
        let (config, width, height) = av1_sequence_config(&unit).unwrap();
        assert_eq!((width, height), (64, 48));
        assert_eq!((config.profile, config.bit_depth(), config.monochrome), (0, 8, false));
        assert!(config.subsampling_x && config.subsampling_y);
        assert!(config.codec_string().starts_with("av01.0."), "{}", config.codec_string());
        assert_eq!(config.sequence_header[0] >> 3 & 0x0f, OBU_SEQUENCE_HEADER);
        let sample = av1_sample(&unit);
        assert_eq!(obus(&unit).next().unwrap().0, OBU_TEMPORAL_DELIMITER);
        assert!(obus(&sample).all(|(kind, _)| kind != OBU_TEMPORAL_DELIMITER));
        assert_eq!(sample.len(), unit.len() - 2);
        for len in 0..unit.len().min(40) {
            let _ = av1_sequence_config(&unit[..len]);
        }
    }
}
