//! junction-sip: phones in rooms. SIP over UDP and TCP on rsip's parser, with our own
//! transaction and dialog layers, RTP media, G.711/Opus, DTMF and PINs.

pub mod admission;
pub mod digest;
pub mod media;
pub mod message;
pub mod sdp;
pub mod transaction;
pub mod ua;
