//! Junction's video toolkit: decoding, scaling and encoding through libavcodec (`codec`), the
//! video transcoders the engine's codec adaptation runs when a viewer cannot take a publisher's
//! codec (`transcode`), the grid composition of the room outputs (`grid`), and the bound on how
//! many of either run at once (`limit`).

pub mod codec;
pub mod grid;
pub mod limit;
pub mod transcode;

pub use codec::VideoError;
pub use transcode::{VideoConfig, register_adapters};
