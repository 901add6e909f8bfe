//! A media file's first audio track as PCM. symphonia probes the container (WAV, MP3, Ogg, FLAC,
//! MP4, WebM/Matroska) and decodes what it can (PCM, MP3, Vorbis, FLAC, AAC); Opus (Ogg, WebM)
//! goes through libopus, which symphonia does not have. Video is `super::video`'s.
//!
//! Sans-I/O apart from reading the file: packets in order, interleaved f32 PCM out.

use std::fs::File;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use junction_audio::codec::AudioDecoder as _;
use junction_audio::codec::opus::OpusDecoder;
use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("cannot open {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("not a media file Junction can read: {0}")]
    Format(String),
    #[error("the file has no audio track")]
    NoAudio,
    #[error("no decoder for the file's audio: {0}")]
    Codec(String),
    #[error("reading the file: {0}")]
    Read(String),
}

/// Packets that fail to decode in a row before the file counts as broken.
const MAX_BAD_PACKETS: u32 = 50;

enum Decoder {
    Symphonia(Box<dyn AudioDecoder>),
    Opus(OpusDecoder),
}

/// An open file, positioned at its next audio packet.
pub struct FileAudio {
    reader: Box<dyn FormatReader>,
    decoder: Decoder,
    track: u32,
    rate: u32,
    channels: u8,
    bad_in_a_row: u32,
}

/// The reader's next packet, or `None` at the end of the file (a truncated last packet counts as
/// the end, as players treat it).
pub fn next_packet(reader: &mut dyn FormatReader) -> Result<Option<symphonia::core::packet::Packet>, DecodeError> {
    match reader.next_packet() {
        Ok(packet) => Ok(packet),
        Err(symphonia::core::errors::Error::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(DecodeError::Read(e.to_string())),
    }
}

/// Opens `path` with the symphonia demuxer its contents call for.
pub fn probe(path: &Path) -> Result<Box<dyn FormatReader>, DecodeError> {
    let file =
        File::open(path).map_err(|e| DecodeError::Open { path: path.display().to_string(), reason: e.to_string() })?;
    let stream = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(extension) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(extension);
    }
    symphonia::default::get_probe()
        .probe(&hint, stream, FormatOptions::default(), MetadataOptions::default())
        .map_err(|e| DecodeError::Format(e.to_string()))
}

impl FileAudio {
    pub fn open(path: &Path) -> Result<FileAudio, DecodeError> {
        let reader = probe(path)?;
        let track = reader.default_track(TrackType::Audio).ok_or(DecodeError::NoAudio)?;
        let Some(CodecParameters::Audio(params)) = track.codec_params.clone() else {
            return Err(DecodeError::NoAudio);
        };
        let track_id = track.id;
        let channels = params.channels.as_ref().map_or(0, |c| c.count()).clamp(0, 2) as u8;
        let (decoder, rate, channels) = if params.codec == CODEC_ID_OPUS {
            // Opus always decodes at 48 kHz; mono or stereo as the stream says.
            let channels = channels.max(1);
            let decoder = OpusDecoder::new(channels).map_err(|e| DecodeError::Codec(e.to_string()))?;
            (Decoder::Opus(decoder), 48_000, channels)
        } else {
            let decoder = symphonia::default::get_codecs()
                .make_audio_decoder(&params, &AudioDecoderOptions::default())
                .map_err(|e| DecodeError::Codec(e.to_string()))?;
            // The real rate and layout come with the first decoded buffer when these are absent.
            (Decoder::Symphonia(decoder), params.sample_rate.unwrap_or(0), channels)
        };
        Ok(FileAudio { reader, decoder, track: track_id, rate, channels, bad_in_a_row: 0 })
    }

    /// The audio's sample rate and channel count (known after the first [`Self::next`] at the
    /// latest).
    pub fn format(&self) -> (u32, u8) {
        (self.rate, self.channels)
    }

    /// Decodes the next packet into `out` (interleaved, at [`Self::format`]); `false` at the end
    /// of the file. A packet that does not decode is skipped, as players do; many in a row end
    /// the file with an error.
    pub fn next(&mut self, out: &mut Vec<f32>) -> Result<bool, DecodeError> {
        loop {
            let Some(packet) = next_packet(self.reader.as_mut())? else { return Ok(false) };
            if packet.track_id != self.track {
                continue;
            }
            let decoded = match &mut self.decoder {
                Decoder::Opus(opus) => opus.decode(&packet.data, out).map(|_| ()).map_err(|e| e.to_string()),
                Decoder::Symphonia(decoder) => {
                    let result = catch_unwind(AssertUnwindSafe(|| match decoder.decode(&packet) {
                        Ok(buffer) => {
                            let spec = buffer.spec();
                            let (rate, channels) = (spec.rate(), spec.channels().count());
                            let mut pcm = Vec::new();
                            buffer.copy_to_vec_interleaved(&mut pcm);
                            Ok((rate, channels, pcm))
                        }
                        Err(e) => Err(e.to_string()),
                    }));
                    match result {
                        Ok(Ok((rate, channels, pcm))) => {
                            self.adopt_format(rate, channels, &pcm, out);
                            Ok(())
                        }
                        Ok(Err(e)) => Err(e),
                        Err(_) => Err("the decoder panicked on this packet".to_owned()),
                    }
                }
            };
            match decoded {
                Ok(()) => {
                    self.bad_in_a_row = 0;
                    return Ok(true);
                }
                Err(reason) => {
                    self.bad_in_a_row += 1;
                    if self.bad_in_a_row >= MAX_BAD_PACKETS {
                        return Err(DecodeError::Read(format!(
                            "{MAX_BAD_PACKETS} packets in a row do not decode: {reason}"
                        )));
                    }
                }
            }
        }
    }

    /// Takes a decoded buffer: the first one fixes the format; more than two channels are cut
    /// to the first two.
    fn adopt_format(&mut self, rate: u32, channels: usize, pcm: &[f32], out: &mut Vec<f32>) {
        if self.rate == 0 {
            self.rate = rate;
        }
        let keep = channels.clamp(1, 2);
        if self.channels == 0 {
            self.channels = keep as u8;
        }
        if channels == usize::from(self.channels) {
            out.extend_from_slice(pcm);
            return;
        }
        for frame in pcm.chunks(channels.max(1)) {
            for c in 0..usize::from(self.channels) {
                out.push(frame.get(c).or(frame.first()).copied().unwrap_or(0.0));
            }
        }
    }
}
