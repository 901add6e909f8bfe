//! SDP in SIP: a phone's offer (INVITE, re-INVITE) or answer (200 to our INVITE) through
//! transports/sip/src/sdp.rs — the `sdp` crate's parser behind our normalisation, the pick of
//! the first audio stream, connection address, formats, direction — then codec negotiation and
//! our answer. Checked: the answer we write parses back and negotiates to the same codec,
//! payload type and DTMF event type.

use std::net::SocketAddr;

use junction_sip::sdp::{self, SdpOrigin};

pub fn run(data: &[u8]) {
    let Ok(remote) = sdp::parse(data) else { return };
    let Ok(chosen) = sdp::negotiate(&remote) else { return };
    let local = SocketAddr::from(([192, 0, 2, 1], 20000));
    let answer = sdp::answer(local, SdpOrigin { id: 1, version: 1 }, &chosen);
    let again =
        sdp::parse(answer.as_bytes()).unwrap_or_else(|err| panic!("our answer does not parse ({err}):\n{answer}"));
    let again = sdp::negotiate(&again).unwrap_or_else(|err| panic!("our answer does not negotiate ({err}):\n{answer}"));
    assert_eq!(
        (again.codec, again.pt, again.dtmf_pt),
        (chosen.codec, chosen.pt, chosen.dtmf_pt),
        "our answer says something else than we chose:\n{answer}"
    );
}
