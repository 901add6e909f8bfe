//! Junction's SRT transport: encoders (OBS, vMix, hardware encoders, ffmpeg) push MPEG-TS over
//! SRT into rooms under an ingress's identity. The SRT protocol (handshake, ARQ, AES) is
//! srt-protocol's sans-I/O state machines; this crate drives them on one UDP socket
//! ([`server`]), screens handshakes ([`handshake`]), reads stream ids ([`stream_id`]), takes the
//! transport stream apart ([`ts`], on mpeg2ts-reader) and turns it into tracks ([`ingest`]).

pub mod config;
mod connection;
pub mod handshake;
pub mod ingest;
pub mod server;
pub mod stream_id;
pub mod ts;

pub use config::SrtConfig;
pub use server::{SrtListener, StartError, listen, start};
