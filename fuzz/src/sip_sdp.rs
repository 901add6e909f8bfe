//! SDP in SIP: a phone's offer (INVITE, re-INVITE) or answer (200 to our INVITE) through
//! transports/sip/src/sdp.rs — the `sdp` crate's parser behind our normalisation, the pick of
//! the first audio stream, connection address, formats, direction — then codec negotiation and
//! our answer, SRTP keys (`a=crypto`) included. Checked: the answer we write parses back and
//! reads as an answer with the same codec, payload type, DTMF event type and our SRTP key.

use std::net::SocketAddr;

use junction_sip::sdp::{self, MediaEncryption, SdpOrigin};

pub fn run(data: &[u8]) {
    let Ok(remote) = sdp::parse(data) else { return };
    let Ok(chosen) = sdp::negotiate(&remote, MediaEncryption::Optional) else { return };
    let local = SocketAddr::from(([192, 0, 2, 1], 20000));
    let answer = sdp::answer(local, SdpOrigin { id: 1, version: 1 }, &chosen);
    let again =
        sdp::parse(answer.as_bytes()).unwrap_or_else(|err| panic!("our answer does not parse ({err}):\n{answer}"));
    let ours = chosen.srtp.as_ref().map(sdp::Srtp::ours);
    let again = sdp::negotiate_answer(&again, ours.as_ref())
        .unwrap_or_else(|err| panic!("our answer does not read as one ({err}):\n{answer}"));
    assert_eq!(
        (again.codec, again.pt, again.dtmf_pt, again.srtp.map(|s| s.keys.remote)),
        (chosen.codec, chosen.pt, chosen.dtmf_pt, chosen.srtp.map(|s| s.keys.local)),
        "our answer says something else than we chose:\n{answer}"
    );
}
