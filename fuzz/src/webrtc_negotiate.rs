//! WebRTC offers (WHIP `POST`, WHEP `POST`, the browser's `offer` message): the SDP through
//! `WebrtcTransport::negotiate` and `negotiate_room` (transports/webrtc/src/negotiate.rs) —
//! str0m's SDP parser and offer/answer, then our reading of the m-lines (mids, directions,
//! payload types to codecs, simulcast rids and their restrictions) — and the answer. The
//! session is never started: what follows needs a peer on the network.

use std::sync::OnceLock;

use junction_webrtc::{WebrtcConfig, WebrtcTransport};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

fn transport() -> &'static (Runtime, WebrtcTransport) {
    static TRANSPORT: OnceLock<(Runtime, WebrtcTransport)> = OnceLock::new();
    TRANSPORT.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let config = WebrtcConfig { udp_listen: ([127, 0, 0, 1], 0).into(), ..WebrtcConfig::default() };
        let transport = runtime
            .block_on(junction_webrtc::listen(&config, CancellationToken::new()))
            .expect("the WebRTC media plane starts on loopback");
        (runtime, transport)
    })
}

pub fn run(data: &[u8]) {
    let Ok(offer) = std::str::from_utf8(data) else { return };
    let (runtime, transport) = transport();
    let _context = runtime.enter();
    if let Ok(negotiated) = transport.negotiate(offer, None) {
        assert!(negotiated.media_lines().any(|line| !line.codecs.is_empty()), "negotiated without a codec");
        read_back(&negotiated);
    }
    // As a room steering its publishers to H.264 negotiates.
    if let Ok(negotiated) = transport.negotiate_room(offer, Some(junction_core::Codec::H264)) {
        read_back(&negotiated);
    }
}

fn read_back(negotiated: &junction_webrtc::Negotiated) {
    let _ = (negotiated.peer_sends(), negotiated.peer_receives(), negotiated.accept_codecs());
    // An answer that accepts an m-line carries our ICE credentials. One that only rejects
    // (port 0: an m-line of a kind nobody knows, say) needs none, and str0m writes none.
    let (ufrag, _pwd) = negotiated.local_ice();
    let answer = negotiated.answer_sdp();
    let accepts = answer.lines().filter_map(|line| line.strip_prefix("m=")).any(|m| m.split(' ').nth(1) != Some("0"));
    assert!(!accepts || answer.contains(ufrag), "the answer lacks our ICE ufrag:\n{answer}");
}
