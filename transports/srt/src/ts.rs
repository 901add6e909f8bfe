//! MPEG-TS (ISO/IEC 13818-1) as encoders send it over SRT, taken apart into the PES packets of
//! the streams Junction publishes: H.264 (stream type 0x1B) and AAC in ADTS (0x0F). Other
//! streams are reported once ([`TsDemuxer::take_skipped`]) and ignored. The TS and PSI parsing is
//! mpeg2ts-reader's; this module only resynchronises on packet boundaries (SRT messages are not
//! guaranteed to be whole 188-byte packets) and gathers each PES payload, up to a cap per stream
//! so a PES that never ends cannot grow without bound.
//!
//! A PES ends, for mpeg2ts-reader, when the next one starts. Encoders pack up to 0.7 s of AAC
//! into one audio PES (ffmpeg's default), so waiting for its end would delay audio by as much:
//! audio leaves as soon as whole ADTS frames are in (their 13-bit lengths are read here), the
//! first part with the PES's timestamp, later parts without one.

use std::collections::VecDeque;

use bytes::Bytes;
use mpeg2ts_reader::demultiplex::{self, DemuxContext, FilterChangeset, FilterRequest};
use mpeg2ts_reader::pes::{self, ElementaryStreamConsumer, PesContents, PesHeader, PtsDts};
use mpeg2ts_reader::{StreamType, packet_filter_switch, psi};

/// The size of a transport stream packet.
const PACKET: usize = 188;
/// The sync byte every TS packet starts with.
const SYNC: u8 = 0x47;
/// The largest video access unit gathered (a 4K intra frame fits several times over).
pub const MAX_VIDEO_PES: usize = 8 << 20;
/// The largest audio PES gathered (encoders pack a few AAC frames, a few KiB, into one).
pub const MAX_AUDIO_PES: usize = 256 << 10;

/// The elementary streams Junction takes from a transport stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elementary {
    /// Annex B access units.
    H264,
    /// ADTS frames.
    Aac,
}

/// One PES packet of a stream Junction takes (for AAC, possibly a part of one: see the module
/// header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pes {
    pub stream: Elementary,
    pub pid: u16,
    /// 33-bit presentation timestamp, 90 kHz.
    pub pts: Option<u64>,
    /// 33-bit decode timestamp, 90 kHz (only when it differs from the PTS).
    pub dts: Option<u64>,
    pub data: Bytes,
}

/// A stream the demuxer does not take, reported once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub pid: u16,
    pub stream_type: String,
}

packet_filter_switch! {
    Filter<Context> {
        Pes: pes::PesPacketFilter<Context, Gatherer>,
        Pat: demultiplex::PatPacketFilter<Context>,
        Pmt: demultiplex::PmtPacketFilter<Context>,
        Null: demultiplex::NullPacketFilter<Context>,
    }
}

/// What the demultiplexer's filters write into.
pub struct Context {
    changeset: FilterChangeset<Filter>,
    ready: VecDeque<Pes>,
    skipped: Vec<Skipped>,
}

impl DemuxContext for Context {
    type F = Filter;

    fn filter_changeset(&mut self) -> &mut FilterChangeset<Filter> {
        &mut self.changeset
    }

    fn construct(&mut self, request: FilterRequest<'_, '_>) -> Filter {
        match request {
            FilterRequest::ByPid(psi::pat::PAT_PID) => Filter::Pat(demultiplex::PatPacketFilter::default()),
            FilterRequest::ByPid(_) | FilterRequest::Nit { .. } => {
                Filter::Null(demultiplex::NullPacketFilter::default())
            }
            FilterRequest::Pmt { pid, program_number } => {
                Filter::Pmt(demultiplex::PmtPacketFilter::new(pid, program_number))
            }
            FilterRequest::ByStream { stream_type, stream_info, .. } => {
                let pid = u16::from(stream_info.elementary_pid());
                let stream = match stream_type {
                    StreamType::H264 => Some(Elementary::H264),
                    StreamType::ADTS => Some(Elementary::Aac),
                    _ => None,
                };
                match stream {
                    Some(stream) => Filter::Pes(pes::PesPacketFilter::new(Gatherer::new(stream, pid))),
                    None => {
                        if self.skipped.len() < 16 {
                            self.skipped.push(Skipped { pid, stream_type: format!("{stream_type:?}") });
                        }
                        Filter::Null(demultiplex::NullPacketFilter::default())
                    }
                }
            }
        }
    }
}

/// Gathers one stream's PES payloads.
pub struct Gatherer {
    stream: Elementary,
    pid: u16,
    cap: usize,
    data: Vec<u8>,
    pts: Option<u64>,
    dts: Option<u64>,
    /// The current PES lost a TS packet or outgrew the cap: it is dropped when it ends.
    damaged: bool,
    started: bool,
}

impl Gatherer {
    fn new(stream: Elementary, pid: u16) -> Self {
        let cap = match stream {
            Elementary::H264 => MAX_VIDEO_PES,
            Elementary::Aac => MAX_AUDIO_PES,
        };
        Self { stream, pid, cap, data: Vec::new(), pts: None, dts: None, damaged: false, started: false }
    }

    fn append(&mut self, ctx: &mut Context, data: &[u8]) {
        if self.damaged {
            return;
        }
        if self.data.len() + data.len() > self.cap {
            self.damaged = true;
            self.data = Vec::new();
            return;
        }
        self.data.extend_from_slice(data);
        if self.stream == Elementary::Aac {
            let whole = whole_adts_frames(&self.data);
            if whole > 0 {
                let rest = self.data.split_off(whole);
                let frames = std::mem::replace(&mut self.data, rest);
                self.emit(ctx, frames);
            }
        }
    }

    /// Hands out gathered bytes; only the first part of a PES carries its timestamps.
    fn emit(&mut self, ctx: &mut Context, data: Vec<u8>) {
        ctx.ready.push_back(Pes {
            stream: self.stream,
            pid: self.pid,
            pts: self.pts.take(),
            dts: self.dts.take().filter(|dts| Some(*dts) != self.pts),
            data: Bytes::from(data),
        });
    }
}

/// How many leading bytes of `data` are whole ADTS frames (ISO/IEC 13818-7 §6.2: a 12-bit
/// syncword, the frame's length in bits 30..43 of its header).
fn whole_adts_frames(data: &[u8]) -> usize {
    let mut at = 0;
    while let Some(header) = data.get(at..at + 7) {
        if header[0] != 0xFF || header[1] & 0xF0 != 0xF0 {
            break;
        }
        let length =
            (usize::from(header[3] & 0x03) << 11) | (usize::from(header[4]) << 3) | usize::from(header[5] >> 5);
        if length < 7 || at + length > data.len() {
            break;
        }
        at += length;
    }
    at
}

impl ElementaryStreamConsumer<Context> for Gatherer {
    fn start_stream(&mut self, _ctx: &mut Context) {}

    fn begin_packet(&mut self, ctx: &mut Context, header: PesHeader<'_>) {
        self.started = true;
        self.damaged = false;
        self.data.clear();
        (self.pts, self.dts) = (None, None);
        match header.contents() {
            PesContents::Parsed(Some(parsed)) => {
                match parsed.pts_dts() {
                    Ok(PtsDts::PtsOnly(Ok(pts))) => self.pts = Some(pts.value()),
                    Ok(PtsDts::Both { pts: Ok(pts), dts: Ok(dts) }) => {
                        self.pts = Some(pts.value());
                        self.dts = Some(dts.value());
                    }
                    _ => {}
                }
                self.append(ctx, parsed.payload());
            }
            PesContents::Parsed(None) => self.damaged = true,
            PesContents::Payload(payload) => self.append(ctx, payload),
        }
    }

    fn continue_packet(&mut self, ctx: &mut Context, data: &[u8]) {
        self.append(ctx, data);
    }

    fn end_packet(&mut self, ctx: &mut Context) {
        if self.started && !self.damaged && !self.data.is_empty() {
            let data = std::mem::take(&mut self.data);
            self.emit(ctx, data);
        }
        self.data.clear();
        self.started = false;
    }

    fn continuity_error(&mut self, _ctx: &mut Context) {
        self.damaged = true;
    }
}

/// A transport stream taken apart, fed as it arrives.
pub struct TsDemuxer {
    context: Context,
    demux: demultiplex::Demultiplex<Context>,
    /// Bytes of a TS packet split across messages (fewer than 188).
    partial: Vec<u8>,
    /// Bytes skipped while looking for a sync byte.
    pub resynced_bytes: u64,
}

impl Default for TsDemuxer {
    fn default() -> Self {
        let mut context =
            Context { changeset: FilterChangeset::default(), ready: VecDeque::new(), skipped: Vec::new() };
        let demux = demultiplex::Demultiplex::new(&mut context);
        Self { context, demux, partial: Vec::with_capacity(PACKET), resynced_bytes: 0 }
    }
}

impl TsDemuxer {
    /// Takes the next bytes of the stream; whole PES packets come out of [`TsDemuxer::next_pes`].
    pub fn push(&mut self, mut data: &[u8]) {
        if !self.partial.is_empty() {
            let wanted = PACKET - self.partial.len();
            let (head, rest) = data.split_at(wanted.min(data.len()));
            self.partial.extend_from_slice(head);
            data = rest;
            if self.partial.len() < PACKET {
                return;
            }
            let whole = std::mem::take(&mut self.partial);
            self.push_aligned(&whole);
            self.partial = whole;
            self.partial.clear();
        }
        while !data.is_empty() {
            match data.iter().position(|b| *b == SYNC) {
                Some(0) => {}
                Some(at) => {
                    self.resynced_bytes += at as u64;
                    data = &data[at..];
                }
                None => {
                    self.resynced_bytes += data.len() as u64;
                    return;
                }
            }
            // The run of packets that keep their sync bytes.
            let mut whole = 0;
            while data.len() >= whole + PACKET && data[whole] == SYNC {
                whole += PACKET;
            }
            if whole == 0 {
                if data.len() < PACKET {
                    self.partial.extend_from_slice(data);
                    return;
                }
                // A sync byte that does not start a packet: look past it.
                self.resynced_bytes += 1;
                data = &data[1..];
                continue;
            }
            self.push_aligned(&data[..whole]);
            data = &data[whole..];
        }
    }

    fn push_aligned(&mut self, packets: &[u8]) {
        debug_assert_eq!(packets.len() % PACKET, 0);
        self.demux.push(&mut self.context, packets);
    }

    pub fn next_pes(&mut self) -> Option<Pes> {
        self.context.ready.pop_front()
    }

    /// Streams seen in a PMT that Junction does not take, once each.
    pub fn take_skipped(&mut self) -> Vec<Skipped> {
        std::mem::take(&mut self.context.skipped)
    }
}
