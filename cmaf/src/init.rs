//! CMAF init segments (ftyp + moov): built from Junction tracks for subscribers, parsed from
//! publishers' `0.mp4` objects. Supported codecs: H.264 (`avc1`/`avc3`, avcC), VP8 and VP9
//! (`vp08`/`vp09`, vpcC), AV1 (`av01`, av1C), AAC (`mp4a`, esds) and Opus (`Opus`, dOps);
//! anything else is reported as unsupported by name.

use bytes::Bytes;
use junction_core::Codec;
use junction_core::aac::AacConfig;
use junction_core::h264::AvcConfig;
use mp4_atom::{
    Any, Audio, Av01, Av1c, Avc1, Avcc, Codec as SampleEntry, Decode, Dinf, Dops, Dref, Encode, Ftyp, Hdlr, Mdhd, Mdia,
    Minf, Moov, Mp4a, Mvex, Mvhd, Opus, Smhd, Stbl, Stco, Stsd, Tkhd, Trak, Trex, Url, Visual, Vmhd, Vp08, Vp09, VpcC,
    esds,
};

use crate::CmafError;
use crate::vpx_av1::{Av1Config, VpxConfig};

/// A track's decoder configuration, as its sample entry carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackCodec {
    H264 {
        avc: AvcConfig,
        width: u16,
        height: u16,
    },
    Vp8 {
        config: VpxConfig,
        width: u16,
        height: u16,
    },
    Vp9 {
        config: VpxConfig,
        width: u16,
        height: u16,
    },
    Av1 {
        config: Av1Config,
        width: u16,
        height: u16,
    },
    /// `config` is the AudioSpecificConfig.
    Aac {
        config: Bytes,
        sample_rate: u32,
        channels: u16,
    },
    Opus {
        channels: u16,
        pre_skip: u16,
        input_sample_rate: u32,
    },
}

impl TrackCodec {
    pub fn codec(&self) -> Codec {
        match self {
            TrackCodec::H264 { .. } => Codec::H264,
            TrackCodec::Vp8 { .. } => Codec::Vp8,
            TrackCodec::Vp9 { .. } => Codec::Vp9,
            TrackCodec::Av1 { .. } => Codec::Av1,
            TrackCodec::Aac { .. } => Codec::Aac,
            TrackCodec::Opus { .. } => Codec::Opus,
        }
    }

    /// The picture size of a video track.
    pub fn dimensions(&self) -> Option<(u16, u16)> {
        match self {
            TrackCodec::H264 { width, height, .. }
            | TrackCodec::Vp8 { width, height, .. }
            | TrackCodec::Vp9 { width, height, .. }
            | TrackCodec::Av1 { width, height, .. } => Some((*width, *height)),
            TrackCodec::Aac { .. } | TrackCodec::Opus { .. } => None,
        }
    }

    /// The RFC 6381 codec string catalogs carry (`avc1.64001f`, `vp09.00.31.08`,
    /// `av01.0.04M.08`, `mp4a.40.2`, `opus`).
    pub fn codec_string(&self) -> String {
        match self {
            TrackCodec::H264 { avc, .. } => avc.codec_string(),
            TrackCodec::Vp8 { config, .. } => config.codec_string("vp08"),
            TrackCodec::Vp9 { config, .. } => config.codec_string("vp09"),
            TrackCodec::Av1 { config, .. } => config.codec_string(),
            TrackCodec::Aac { config, .. } => {
                let object_type = config.first().map_or(2, |b| b >> 3);
                format!("mp4a.40.{object_type}")
            }
            TrackCodec::Opus { .. } => "opus".to_owned(),
        }
    }
}

/// Per-sample defaults from the init segment's `trex` box, used when a fragment leaves a field
/// out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SampleDefaults {
    pub duration: u32,
    pub size: u32,
    pub flags: u32,
}

/// One track of an init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitTrack {
    /// The `trak`'s track id; media objects of this track are named `<id>.m4s`.
    pub id: u32,
    /// Ticks per second of the track's timestamps.
    pub timescale: u32,
    pub codec: TrackCodec,
    pub defaults: SampleDefaults,
}

/// A track found in a publisher's init segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedTrack {
    Supported(InitTrack),
    Unsupported { id: u32, sample_entry: String },
}

impl ParsedTrack {
    pub fn id(&self) -> u32 {
        match self {
            ParsedTrack::Supported(track) => track.id,
            ParsedTrack::Unsupported { id, .. } => *id,
        }
    }
}

/// Builds ftyp + moov for `tracks` (an empty list gives a moov without tracks).
pub fn build_init(tracks: &[InitTrack]) -> Result<Bytes, CmafError> {
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 512,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()],
    };
    let next_track_id = tracks.iter().map(|t| t.id).max().unwrap_or(0).saturating_add(1);
    let moov = Moov {
        mvhd: Mvhd { timescale: 1000, rate: 1.into(), volume: 1.into(), next_track_id, ..Default::default() },
        mvex: Some(Mvex {
            mehd: None,
            trex: tracks
                .iter()
                .map(|t| Trex { track_id: t.id, default_sample_description_index: 1, ..Default::default() })
                .collect(),
        }),
        trak: tracks.iter().map(trak).collect(),
        ..Default::default()
    };
    let mut out = Vec::new();
    ftyp.encode(&mut out)?;
    moov.encode(&mut out)?;
    Ok(Bytes::from(out))
}

fn trak(track: &InitTrack) -> Trak {
    let dimensions = track.codec.dimensions();
    let video = dimensions.is_some();
    let (width, height) = dimensions.unwrap_or((0, 0));
    let visual = Visual { width, height, ..Default::default() };
    let entry: SampleEntry = match &track.codec {
        TrackCodec::Vp8 { config, .. } => Vp08 { visual, vpcc: to_vpcc(config), ..Default::default() }.into(),
        TrackCodec::Vp9 { config, .. } => Vp09 { visual, vpcc: to_vpcc(config), ..Default::default() }.into(),
        TrackCodec::Av1 { config, .. } => Av01 { visual, av1c: to_av1c(config), ..Default::default() }.into(),
        TrackCodec::H264 { avc, width, height } => Avc1 {
            visual: Visual { width: *width, height: *height, ..Default::default() },
            avcc: to_avcc(avc),
            ..Default::default()
        }
        .into(),
        TrackCodec::Aac { config, sample_rate, channels } => Mp4a {
            audio: audio_entry(*channels, *sample_rate),
            esds: mp4_atom::Esds {
                es_desc: esds::EsDescriptor {
                    es_id: track.id.min(u16::MAX as u32) as u16,
                    dec_config: esds::DecoderConfig {
                        object_type_indication: 0x40,
                        stream_type: 5,
                        dec_specific: Some(esds::DecoderSpecific { raw: config.to_vec(), ..Default::default() }),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            },
            btrt: None,
            taic: None,
        }
        .into(),
        TrackCodec::Opus { channels, pre_skip, input_sample_rate } => Opus {
            audio: audio_entry(*channels, 48_000),
            dops: Dops {
                output_channel_count: (*channels).min(2) as u8,
                pre_skip: *pre_skip,
                input_sample_rate: *input_sample_rate,
                output_gain: 0,
                channel_mapping: None,
            },
            btrt: None,
        }
        .into(),
    };
    Trak {
        tkhd: Tkhd {
            track_id: track.id,
            enabled: true,
            in_movie: true,
            volume: if video { 0.into() } else { 1.into() },
            width: width.into(),
            height: height.into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd { timescale: track.timescale, language: "und".into(), ..Default::default() },
            hdlr: Hdlr {
                handler: if video { b"vide".into() } else { b"soun".into() },
                name: if video { "Junction video".into() } else { "Junction audio".into() },
            },
            minf: Minf {
                vmhd: video.then(Vmhd::default),
                smhd: (!video).then(Smhd::default),
                dinf: Dinf { dref: Dref { entries: vec![Url::default().into()] } },
                stbl: Stbl { stsd: Stsd { codecs: vec![entry] }, stco: Some(Stco::default()), ..Default::default() },
                ..Default::default()
            },
        },
        ..Default::default()
    }
}

fn audio_entry(channels: u16, sample_rate: u32) -> Audio {
    Audio {
        data_reference_index: 1,
        channel_count: channels.max(1),
        sample_size: 16,
        // The sample entry's rate is 16.16 fixed point: rates above 65535 Hz do not fit.
        sample_rate: (sample_rate.min(u16::MAX as u32) as u16).into(),
    }
}

fn to_avcc(avc: &AvcConfig) -> Avcc {
    Avcc {
        configuration_version: 1,
        avc_profile_indication: avc.profile,
        profile_compatibility: avc.compatibility,
        avc_level_indication: avc.level,
        length_size: avc.length_size as u8,
        sequence_parameter_sets: avc.sps.iter().map(|s| s.to_vec()).collect(),
        picture_parameter_sets: avc.pps.iter().map(|p| p.to_vec()).collect(),
        ext: None,
    }
}

fn to_vpcc(config: &VpxConfig) -> VpcC {
    VpcC {
        profile: config.profile,
        level: config.level,
        bit_depth: config.bit_depth,
        chroma_subsampling: config.chroma_subsampling,
        video_full_range_flag: config.full_range,
        // BT.709 primaries, transfer and matrix: what browsers' encoders write.
        color_primaries: 1,
        transfer_characteristics: 1,
        matrix_coefficients: 1,
        codec_initialization_data: Vec::new(),
    }
}

fn from_vpcc(vpcc: &VpcC) -> VpxConfig {
    VpxConfig {
        profile: vpcc.profile,
        level: vpcc.level,
        bit_depth: vpcc.bit_depth,
        chroma_subsampling: vpcc.chroma_subsampling,
        full_range: vpcc.video_full_range_flag,
    }
}

fn to_av1c(config: &Av1Config) -> Av1c {
    Av1c {
        seq_profile: config.profile,
        seq_level_idx_0: config.level,
        seq_tier_0: config.high_tier,
        high_bitdepth: config.high_bitdepth,
        twelve_bit: config.twelve_bit,
        monochrome: config.monochrome,
        chroma_subsampling_x: config.subsampling_x,
        chroma_subsampling_y: config.subsampling_y,
        chroma_sample_position: config.chroma_sample_position,
        initial_presentation_delay: None,
        config_obus: config.sequence_header.to_vec(),
    }
}

fn from_av1c(av1c: &Av1c) -> Av1Config {
    Av1Config {
        profile: av1c.seq_profile,
        level: av1c.seq_level_idx_0,
        high_tier: av1c.seq_tier_0,
        high_bitdepth: av1c.high_bitdepth,
        twelve_bit: av1c.twelve_bit,
        monochrome: av1c.monochrome,
        subsampling_x: av1c.chroma_subsampling_x,
        subsampling_y: av1c.chroma_subsampling_y,
        chroma_sample_position: av1c.chroma_sample_position,
        sequence_header: Bytes::copy_from_slice(&av1c.config_obus),
    }
}

fn from_avcc(avcc: &Avcc) -> AvcConfig {
    AvcConfig {
        profile: avcc.avc_profile_indication,
        compatibility: avcc.profile_compatibility,
        level: avcc.avc_level_indication,
        length_size: avcc.length_size as usize,
        sps: avcc.sequence_parameter_sets.iter().map(|s| Bytes::copy_from_slice(s)).collect(),
        pps: avcc.picture_parameter_sets.iter().map(|p| Bytes::copy_from_slice(p)).collect(),
    }
}

/// Parses an init segment (any boxes, one of them a moov) into its tracks.
pub fn parse_init(bytes: &[u8]) -> Result<Vec<ParsedTrack>, CmafError> {
    crate::guard::check_boxes(bytes)?;
    let mut cursor = std::io::Cursor::new(bytes);
    let mut moov = None;
    while (cursor.position() as usize) < bytes.len() {
        if let Any::Moov(found) = Any::decode(&mut cursor)? {
            moov = Some(found);
            break;
        }
    }
    let moov = moov.ok_or(CmafError::Missing("moov"))?;
    let defaults = |id: u32| {
        moov.mvex
            .as_ref()
            .and_then(|mvex| mvex.trex.iter().find(|trex| trex.track_id == id))
            .map(|trex| SampleDefaults {
                duration: trex.default_sample_duration,
                size: trex.default_sample_size,
                flags: trex.default_sample_flags,
            })
            .unwrap_or_default()
    };
    Ok(moov
        .trak
        .iter()
        .map(|trak| {
            let id = trak.tkhd.track_id;
            let Some(entry) = trak.mdia.minf.stbl.stsd.codecs.first() else {
                return ParsedTrack::Unsupported { id, sample_entry: "none".into() };
            };
            let codec = match entry {
                SampleEntry::Avc1(avc1) => Some(TrackCodec::H264 {
                    avc: from_avcc(&avc1.avcc),
                    width: avc1.visual.width,
                    height: avc1.visual.height,
                }),
                SampleEntry::Avc3(avc3) => Some(TrackCodec::H264 {
                    avc: from_avcc(&avc3.avcc),
                    width: avc3.visual.width,
                    height: avc3.visual.height,
                }),
                SampleEntry::Vp08(vp08) => Some(TrackCodec::Vp8 {
                    config: from_vpcc(&vp08.vpcc),
                    width: vp08.visual.width,
                    height: vp08.visual.height,
                }),
                SampleEntry::Vp09(vp09) => Some(TrackCodec::Vp9 {
                    config: from_vpcc(&vp09.vpcc),
                    width: vp09.visual.width,
                    height: vp09.visual.height,
                }),
                SampleEntry::Av01(av01) => Some(TrackCodec::Av1 {
                    config: from_av1c(&av01.av1c),
                    width: av01.visual.width,
                    height: av01.visual.height,
                }),
                SampleEntry::Mp4a(mp4a) => mp4a.esds.es_desc.dec_config.dec_specific.as_ref().map(|specific| {
                    let config = if specific.raw.is_empty() {
                        // Re-derive the two-byte AudioSpecificConfig from the parsed fields.
                        let mut raw = Vec::new();
                        let _ = specific.encode(&mut raw);
                        Bytes::from(raw)
                    } else {
                        Bytes::copy_from_slice(&specific.raw)
                    };
                    // The AudioSpecificConfig is what decoders go by, and it can state rates the
                    // sample entry's 16.16 field cannot (88.2 and 96 kHz).
                    let asc = AacConfig::parse(&config).ok();
                    TrackCodec::Aac {
                        sample_rate: asc.map_or(u32::from(mp4a.audio.sample_rate.integer()), |asc| asc.sample_rate),
                        channels: asc.and_then(|asc| asc.channels()).map_or(mp4a.audio.channel_count, u16::from),
                        config,
                    }
                }),
                SampleEntry::Opus(opus) => Some(TrackCodec::Opus {
                    channels: u16::from(opus.dops.output_channel_count),
                    pre_skip: opus.dops.pre_skip,
                    input_sample_rate: opus.dops.input_sample_rate,
                }),
                _ => None,
            };
            match codec {
                Some(codec) => ParsedTrack::Supported(InitTrack {
                    id,
                    timescale: trak.mdia.mdhd.timescale.max(1),
                    codec,
                    defaults: defaults(id),
                }),
                None => ParsedTrack::Unsupported { id, sample_entry: sample_entry_name(entry) },
            }
        })
        .collect())
}

fn sample_entry_name(entry: &SampleEntry) -> String {
    let debug = format!("{entry:?}");
    debug.split('(').next().unwrap_or("unknown").to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84, 0x00];
    const PPS: &[u8] = &[0x68, 0xce, 0x0f, 0xc8];

    pub(crate) fn tracks() -> Vec<InitTrack> {
        vec![
            InitTrack {
                id: 1,
                timescale: 90_000,
                codec: TrackCodec::H264 {
                    avc: AvcConfig::from_parameter_sets(SPS, PPS).unwrap(),
                    width: 320,
                    height: 240,
                },
                defaults: SampleDefaults::default(),
            },
            InitTrack {
                id: 2,
                timescale: 48_000,
                codec: TrackCodec::Opus { channels: 2, pre_skip: 312, input_sample_rate: 48_000 },
                defaults: SampleDefaults::default(),
            },
            InitTrack {
                id: 3,
                timescale: 44_100,
                codec: TrackCodec::Aac { config: Bytes::from_static(&[0x12, 0x10]), sample_rate: 44_100, channels: 2 },
                defaults: SampleDefaults::default(),
            },
        ]
    }

    fn video_tracks() -> Vec<InitTrack> {
        let vp8 = crate::vpx_av1::vp8_config(640, 360);
        let (vp9, w9, h9) = crate::vpx_av1::vp9_keyframe_config(include_bytes!("../tests/data/vp9_key.bin")).unwrap();
        let (av1, w1, h1) = crate::vpx_av1::av1_sequence_config(include_bytes!("../tests/data/av1_key.bin")).unwrap();
        [
            TrackCodec::Vp8 { config: vp8, width: 640, height: 360 },
            TrackCodec::Vp9 { config: vp9, width: w9, height: h9 },
            TrackCodec::Av1 { config: av1, width: w1, height: h1 },
        ]
        .into_iter()
        .enumerate()
        .map(|(i, codec)| InitTrack { id: i as u32 + 1, timescale: 90_000, codec, defaults: SampleDefaults::default() })
        .collect()
    }

    #[test]
    fn vp8_vp9_and_av1_init_segments_round_trip_and_ffprobe_reads_them() {
        let tracks = video_tracks();
        let init = build_init(&tracks).unwrap();
        let parsed = parse_init(&init).unwrap();
        let expected: Vec<ParsedTrack> = tracks.iter().cloned().map(ParsedTrack::Supported).collect();
        assert_eq!(parsed, expected);
        let strings: Vec<String> = tracks.iter().map(|t| t.codec.codec_string()).collect();
        assert_eq!(strings[..2], ["vp08.00.21.08", "vp09.00.20.08"]);
        assert!(strings[2].starts_with("av01.0.") && strings[2].ends_with("M.08"), "{}", strings[2]);

        // ffprobe (libavformat's MP4 demuxer) decodes a keyframe of each in its own file.
        let keyframes: [&[u8]; 2] =
            [include_bytes!("../tests/data/vp9_key.bin"), include_bytes!("../tests/data/av1_key.bin")];
        for (track, keyframe) in tracks[1..].iter().zip(keyframes) {
            let mut track = track.clone();
            track.id = 1;
            let payload = match track.codec {
                TrackCodec::Av1 { .. } => crate::av1_sample(&Bytes::from_static(keyframe)),
                _ => Bytes::from_static(keyframe),
            };
            let sample =
                crate::FragmentSample { decode_time: 0, duration: 3000, composition_offset: 0, keyframe: true };
            let mut file = build_init(std::slice::from_ref(&track)).unwrap().to_vec();
            file.extend_from_slice(&crate::fragment_header(1, 1, sample, payload.len()).unwrap());
            file.extend_from_slice(&payload);
            let path =
                std::env::temp_dir().join(format!("junction-cmaf-{}-{}.mp4", track.codec.codec(), std::process::id()));
            std::fs::write(&path, &file).unwrap();
            let probe = std::process::Command::new("ffprobe")
                .args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries"])
                .args(["stream=codec_name,width,height,nb_read_frames", "-of", "csv=p=0"])
                .arg(&path)
                .output()
                .expect("ffprobe runs (Debian's ffmpeg package)");
            let _ = std::fs::remove_file(&path);
            let text = String::from_utf8_lossy(&probe.stdout).trim().to_owned();
            let (width, height) = track.codec.dimensions().unwrap();
            let name = if matches!(track.codec, TrackCodec::Av1 { .. }) { "av1" } else { "vp9" };
            assert_eq!(text, format!("{name},{width},{height},1"), "{}", String::from_utf8_lossy(&probe.stderr));
        }
    }

    #[test]
    fn init_segments_round_trip() {
        let tracks = tracks();
        let init = build_init(&tracks).unwrap();
        let parsed = parse_init(&init).unwrap();
        let expected: Vec<ParsedTrack> = tracks.iter().cloned().map(ParsedTrack::Supported).collect();
        assert_eq!(parsed, expected);
        assert_eq!(tracks[0].codec.codec_string(), "avc1.42c01e");
        assert_eq!(tracks[2].codec.codec_string(), "mp4a.40.2");
    }

    /// moq-sub reads init segments with the `mp4` crate: ours must satisfy it, and it must find
    /// the H.264 and AAC tracks it plays.
    #[test]
    fn init_segments_parse_with_the_mp4_crate_moq_sub_uses() {
        use mp4::ReadBox;
        let init = build_init(&tracks()).unwrap();
        let mut reader = std::io::Cursor::new(init.as_ref());
        let ftyp_header = mp4::BoxHeader::read(&mut reader).unwrap();
        assert_eq!(ftyp_header.name, mp4::BoxType::FtypBox);
        reader.set_position(ftyp_header.size);
        let moov_header = mp4::BoxHeader::read(&mut reader).unwrap();
        assert_eq!(moov_header.name, mp4::BoxType::MoovBox);
        let moov = mp4::MoovBox::read_box(&mut reader, moov_header.size).unwrap();
        assert_eq!(moov.traks.len(), 3);
        let avc1 = moov.traks[0].mdia.minf.stbl.stsd.avc1.as_ref().unwrap();
        assert_eq!((avc1.width, avc1.height), (320, 240));
        assert!(moov.traks[2].mdia.minf.stbl.stsd.mp4a.is_some());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_init(&[0, 0, 0, 8, b'f', b'r', b'e', b'e']).is_err());
        assert!(parse_init(&[0, 0, 0, 200, b'm', b'o', b'o', b'v', 1, 2]).is_err());
        assert!(parse_init(&[]).is_err());
    }
}
