//! Junction's video toolkit: decoding, scaling and encoding through libavcodec (`codec`), and
//! the video transcoders the engine's codec adaptation runs when a viewer cannot take a
//! publisher's codec (`transcode`), and the grid composition of the room outputs (`grid`).

pub mod codec;
pub mod grid;
pub mod transcode;

pub use codec::VideoError;
pub use transcode::{VideoConfig, register_adapters};
