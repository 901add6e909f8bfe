//! junction-rtmp: RTMP ingest and playback on `rml_rtmp`, driven by tokio.
//!
//! - **Ingest**: OBS, ffmpeg or GStreamer publish to `rtmp://host/live/<stream key>` (an ingress
//!   stream key, or a client JWT with the publish grant). The publisher joins the ingress's room
//!   under the ingress's identity and its H.264 and AAC become tracks; the engine transcodes for
//!   subscribers that need other codecs.
//! - **Playback**: `rtmp://host/live/<room>/<identity>?token=<JWT with subscribe>` plays that
//!   peer's H.264 video and AAC audio as FLV (Opus publishers' audio through the engine's
//!   Opus->AAC variant).
//!
//! A frame's path: socket -> [`connection`] (the task) -> [`session::Session`] (the protocol
//! state machine: handshake, chunks, commands; each message checked by the [`guard`] before
//! `rml_rtmp` decodes it) -> [`ingest`] (FLV tags to frames) -> the engine; and back out:
//! engine -> [`playback`] (frames to FLV tags) -> session -> socket.

mod config;
mod connection;
pub mod flv;
pub mod guard;
pub mod ingest;
mod metrics;
pub mod path;
pub mod playback;
mod server;
pub mod session;

pub use config::{OnDuplicate, RtmpConfig};
pub use server::{RtmpListener, StartError, listen, start};
