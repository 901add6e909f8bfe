//! CMAF fragments: one `moof` + `mdat` per MoQ object. Junction writes one sample per fragment
//! (a frame per object, so a subscriber can start at any group and drop at object boundaries);
//! it reads whatever a publisher sends, one or more samples per fragment.

use bytes::{BufMut, Bytes, BytesMut};
use mp4_atom::{Any, Atom, Decode, Encode, Mfhd, Moof, Tfdt, Tfhd, Traf, Trun, TrunEntry};

use crate::{CmafError, InitTrack};

/// Sample flags of a sync sample (depends on no other sample).
const FLAGS_SYNC: u32 = 0x0200_0000;
/// Sample flags of a non-sync sample (depends on others, `sample_is_non_sync_sample`).
const FLAGS_NON_SYNC: u32 = 0x0101_0000;

/// The one sample a fragment Junction writes describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentSample {
    /// Decode time in the track's timescale.
    pub decode_time: u64,
    pub duration: u32,
    /// Presentation time minus decode time.
    pub composition_offset: i32,
    pub keyframe: bool,
}

impl FragmentSample {
    /// A sample decoded at `decode_time` and presented at `presentation_time` (its composition
    /// offset is the difference, saturated to what `trun` holds).
    pub fn presented(decode_time: u64, presentation_time: u64, duration: u32, keyframe: bool) -> FragmentSample {
        let offset =
            i64::try_from(presentation_time).unwrap_or(i64::MAX) - i64::try_from(decode_time).unwrap_or(i64::MAX);
        FragmentSample {
            decode_time,
            duration,
            composition_offset: offset.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            keyframe,
        }
    }
}

/// The moof and the mdat header of a one-sample fragment whose payload is `payload_len` bytes;
/// the object is these bytes followed by the payload.
pub fn fragment_header(
    track_id: u32,
    sequence: u32,
    sample: FragmentSample,
    payload_len: usize,
) -> Result<Bytes, CmafError> {
    let size = u32::try_from(payload_len)
        .map_err(|_| CmafError::OutOfRange { what: "sample size", value: payload_len as u64 })?;
    let mdat_size =
        size.checked_add(8).ok_or(CmafError::OutOfRange { what: "mdat size", value: payload_len as u64 })?;
    let mut moof = Moof {
        mfhd: Mfhd { sequence_number: sequence },
        traf: vec![Traf {
            tfhd: Tfhd { track_id, default_base_is_moof: true, ..Default::default() },
            tfdt: Some(Tfdt { base_media_decode_time: sample.decode_time }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples: vec![TrunEntry {
                    duration: Some(sample.duration),
                    size: Some(size),
                    flags: Some(if sample.keyframe { FLAGS_SYNC } else { FLAGS_NON_SYNC }),
                    cts: Some(i64::from(sample.composition_offset)),
                }]
                .into(),
            }],
            ..Default::default()
        }],
    };
    let mut probe = Vec::new();
    moof.encode(&mut probe)?;
    // The sample starts right after the moof and the 8-byte mdat header.
    let data_offset = i32::try_from(probe.len() + 8)
        .map_err(|_| CmafError::OutOfRange { what: "moof size", value: probe.len() as u64 })?;
    if let Some(trun) = moof.traf.first_mut().and_then(|traf| traf.trun.first_mut()) {
        trun.data_offset = Some(data_offset);
    }
    let mut out = BytesMut::with_capacity(probe.len() + 8);
    let mut encoded = Vec::with_capacity(probe.len());
    moof.encode(&mut encoded)?;
    out.put_slice(&encoded);
    out.put_u32(mdat_size);
    out.put_slice(b"mdat");
    Ok(out.freeze())
}

/// One sample read from a publisher's fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedSample {
    pub decode_time: u64,
    pub duration: u32,
    pub composition_offset: i64,
    pub keyframe: bool,
    pub data: Bytes,
}

/// Splits a fragment object (moof + mdat, possibly with other boxes around them) into at most
/// `max_samples` samples (a fragment with more is an error: a `trun` may claim four billion
/// samples of zero bytes). Sample data is sliced out of `object` without copying.
pub fn parse_fragment(object: &Bytes, track: &InitTrack, max_samples: usize) -> Result<Vec<ParsedSample>, CmafError> {
    crate::guard::check_boxes(object)?;
    let mut cursor = std::io::Cursor::new(object.as_ref());
    let mut moof_at = None;
    let mut mdat_payload_at = None;
    while (cursor.position() as usize) < object.len() {
        let start = cursor.position();
        let header = mp4_atom::Header::decode(&mut cursor)?;
        let header_len = cursor.position() - start;
        let size = match header.size {
            Some(size) => size as u64,
            None => object.len() as u64 - start - header_len,
        };
        let end = cursor
            .position()
            .checked_add(size)
            .filter(|end| *end <= object.len() as u64)
            .ok_or(CmafError::Atom(format!("box {} of {size} bytes overruns the object", header.kind)))?;
        if header.kind == Moof::KIND && moof_at.is_none() {
            cursor.set_position(start);
            let Any::Moof(moof) = Any::decode(&mut cursor)? else {
                return Err(CmafError::Missing("moof"));
            };
            moof_at = Some((start, moof));
        } else if header.kind == b"mdat".into() && mdat_payload_at.is_none() {
            mdat_payload_at = Some(cursor.position());
        }
        cursor.set_position(end);
    }
    let (moof_start, moof) = moof_at.ok_or(CmafError::Missing("moof"))?;
    let traf = moof.traf.first().ok_or(CmafError::Missing("traf"))?;
    if traf.tfhd.track_id != track.id {
        return Err(CmafError::WrongTrack { expected: track.id, found: traf.tfhd.track_id });
    }
    let sample_count = traf.trun.iter().fold(0usize, |sum, trun| sum.saturating_add(trun.samples.len()));
    if sample_count > max_samples {
        return Err(CmafError::OutOfRange { what: "samples in one fragment", value: sample_count as u64 });
    }
    let mut decode_time = traf.tfdt.as_ref().map_or(0, |tfdt| tfdt.base_media_decode_time);
    let mut samples = Vec::new();
    // Without an explicit data offset, sample data starts at the mdat payload.
    let mut next_offset = mdat_payload_at;
    for trun in &traf.trun {
        let mut offset = match trun.data_offset {
            Some(relative) => moof_start.checked_add_signed(i64::from(relative)),
            None => next_offset,
        }
        .ok_or(CmafError::Missing("mdat"))?;
        for (index, entry) in trun.samples.iter().enumerate() {
            let size = entry.size.or(traf.tfhd.default_sample_size).unwrap_or(track.defaults.size) as u64;
            let duration = entry.duration.or(traf.tfhd.default_sample_duration).unwrap_or(track.defaults.duration);
            let flags = entry.flags.or(traf.tfhd.default_sample_flags).unwrap_or(track.defaults.flags);
            let end = offset
                .checked_add(size)
                .filter(|end| *end <= object.len() as u64)
                .ok_or(CmafError::SampleOverrun { index: samples.len() + index, offset, size, total: object.len() })?;
            samples.push(ParsedSample {
                decode_time,
                duration,
                composition_offset: entry.cts.unwrap_or(0),
                keyframe: flags & 0x0001_0000 == 0,
                data: object.slice(offset as usize..end as usize),
            });
            decode_time = decode_time.wrapping_add(u64::from(duration));
            offset = end;
        }
        next_offset = Some(offset);
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SampleDefaults, TrackCodec};

    const MAX: usize = 1024;

    fn opus_track() -> InitTrack {
        InitTrack {
            id: 2,
            timescale: 48_000,
            codec: TrackCodec::Opus { channels: 2, pre_skip: 312, input_sample_rate: 48_000 },
            defaults: SampleDefaults::default(),
        }
    }

    #[test]
    fn written_fragments_parse_back() {
        let payload = Bytes::from_static(b"opus packet bytes");
        let sample = FragmentSample { decode_time: 96_000, duration: 960, composition_offset: 0, keyframe: true };
        let header = fragment_header(2, 7, sample, payload.len()).unwrap();
        let object = Bytes::from([header.as_ref(), payload.as_ref()].concat());
        let parsed = parse_fragment(&object, &opus_track(), MAX).unwrap();
        assert_eq!(
            parsed,
            vec![ParsedSample {
                decode_time: 96_000,
                duration: 960,
                composition_offset: 0,
                keyframe: true,
                data: payload
            }]
        );

        let delta = FragmentSample { decode_time: 3_000, duration: 3_000, composition_offset: -1_500, keyframe: false };
        let header = fragment_header(2, 8, delta, 3).unwrap();
        let object = Bytes::from([header.as_ref(), b"abc"].concat());
        let parsed = parse_fragment(&object, &opus_track(), MAX).unwrap();
        assert_eq!(parsed[0].composition_offset, -1_500);
        assert!(!parsed[0].keyframe);
    }

    #[test]
    fn truncated_or_foreign_fragments_are_errors() {
        let sample = FragmentSample { decode_time: 0, duration: 960, composition_offset: 0, keyframe: true };
        let header = fragment_header(2, 1, sample, 100).unwrap();
        let short = Bytes::from([header.as_ref(), &[0u8; 10][..]].concat());
        assert!(parse_fragment(&short, &opus_track(), MAX).is_err());
        let other = InitTrack { id: 9, ..opus_track() };
        let full = Bytes::from([header.as_ref(), &[0u8; 100][..]].concat());
        assert_eq!(parse_fragment(&full, &other, MAX), Err(CmafError::WrongTrack { expected: 9, found: 2 }));
        for garbage in [&b""[..], b"\x00\x00\x00\x01moof", b"\xff\xff\xff\xffmoofxxxx", b"\x00\x00\x00\x10moofxxxxxxxx"]
        {
            assert!(parse_fragment(&Bytes::copy_from_slice(garbage), &opus_track(), MAX).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn a_trun_claiming_billions_of_samples_is_refused_before_any_is_made() {
        let sample = FragmentSample { decode_time: 0, duration: 960, composition_offset: 0, keyframe: true };
        let header = fragment_header(2, 1, sample, 0).unwrap();
        let mut moof = match Any::decode(&mut std::io::Cursor::new(header.as_ref())).unwrap() {
            Any::Moof(moof) => moof,
            other => panic!("{other:?}"),
        };
        // Samples with no per-sample fields inherit a size of 0 from the track: each one fits.
        moof.traf[0].trun[0].samples = mp4_atom::TrunSamples::Inherited { count: u32::MAX, first_flags: None };
        let mut object = Vec::new();
        moof.encode(&mut object).unwrap();
        object.extend_from_slice(&[0, 0, 0, 8, b'm', b'd', b'a', b't']);
        let err = parse_fragment(&Bytes::from(object), &opus_track(), MAX).unwrap_err();
        assert_eq!(err, CmafError::OutOfRange { what: "samples in one fragment", value: u64::from(u32::MAX) });
    }
}
