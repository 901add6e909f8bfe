//! Junction's video toolkit: decoding, scaling and encoding through libavcodec (`codec`), and
//! the video transcoders the engine's codec adaptation runs when a viewer cannot take a
//! publisher's codec (`transcode`). Room outputs that compose pictures build on the same codecs.

pub mod codec;
pub mod transcode;

pub use codec::VideoError;
pub use transcode::{VideoConfig, register_adapters};
