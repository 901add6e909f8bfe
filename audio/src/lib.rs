//! junction-audio: Junction's audio. The codec toolkit ([`codec`]: PCM buffers and channel
//! mixing, G.711, Opus, AAC-LC, sample-rate conversion) with the transcoders the engine's shared
//! codec adaptation runs ([`codec::default_adapters`]), and the room audio mixer ([`mixer`]), the
//! engine service through which single-stream audio clients (SIP phones) hear a room.

pub mod codec;
pub mod mixer;
