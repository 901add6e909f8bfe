//! A call's media plumbing that needs no codec: the checks every RTP/RTCP datagram passes
//! first, RTP packets, DTMF digits and PIN entry, and the UDP port pairs calls take their
//! RTP/RTCP sockets from.

pub mod dtmf;
pub mod pin;
pub mod ports;
pub mod rtp;
pub mod srtp;
pub mod validate;
