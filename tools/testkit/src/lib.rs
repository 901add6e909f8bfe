//! junction-testkit: the clients the load tool (tools/bench) and the end-to-end tests
//! (tests/e2e) share, written once: an RTMP client ([`rtmp`]) and the TLS set-up of a MoQ
//! client ([`moq`]). G.711 comes from junction-audio and avcC records from junction-core; the
//! WebRTC, SIP and MoQ clients of the two differ on purpose (the bench drives str0m and its own
//! SIP UAC at load, the tests drive independent stacks: webrtc-rs, sipp, the stock MoQ tools).

pub mod moq;
pub mod rtmp;
