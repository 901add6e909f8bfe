//! WHIP/WHEP trickle and ICE restarts: a `PATCH` body (`application/trickle-ice-sdpfrag`,
//! RFC 8840) through `SdpFrag::parse` (transports/whip/src/sdpfrag.rs), the restart answer
//! built from it, and the ufrag read back out of an SDP. Each candidate line then goes
//! through str0m's candidate parser, as the session's `add_remote_candidate` and `restart_ice`
//! hand it over (`a=` prefix trimmed).

use junction_whip::sdpfrag::{self, SdpFrag};

const ANSWER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-lite\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:old1\r\na=ice-pwd:oldpasswordoldpassword\r\n\
a=candidate:1 1 udp 2130706431 127.0.0.1 7882 typ host ufrag old1\r\na=mid:0\r\na=end-of-candidates\r\n";

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = sdpfrag::ice_ufrag(text);
    let Ok(frag) = SdpFrag::parse(data) else { return };
    for candidate in &frag.candidates {
        let _ = str0m::Candidate::from_sdp_string(candidate.trim().trim_start_matches("a="));
    }
    let answer = sdpfrag::restart_answer("new1", "newpasswordnewpassword", ANSWER);
    assert_eq!(sdpfrag::ice_ufrag(&answer).as_deref(), Some("new1"), "{answer}");
    let _ = sdpfrag::restart_answer("new1", "newpasswordnewpassword", text);
}
