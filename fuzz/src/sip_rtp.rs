//! A phone call's media uplink (transports/sip/src/media, call/audio.rs): datagrams arriving at
//! a call's RTP port parsed by `media::rtp::parse` (RTCP told apart, then the `rtp` crate), the
//! call's audio payload type through the uplink into frames of the room track (G.711 or Opus as
//! they came), each decoded as the room's mixer decodes it (`mixer::SourceDecoder`: G.711 or
//! libopus, resampled to 48 kHz), RFC 4733 telephone-events turned into digits and typed into a
//! PIN prompt, as the call task does for every datagram.
//!
//! Input: the first byte picks the negotiated media (PCMU, PCMA or Opus, each with
//! telephone-event on 101); then datagrams separated by [`crate::SEPARATOR`].

use std::time::Instant;

use junction_audio::mixer::SourceDecoder;
use junction_sip::call::audio::Uplink;
use junction_sip::media::dtmf::EventReceiver;
use junction_sip::media::pin::{PinEntry, PinProgress};
use junction_sip::media::rtp;
use junction_sip::sdp;

fn offer(media: u8) -> &'static str {
    match media % 3 {
        0 => {
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        }
        1 => {
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        }
        _ => {
            "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 111 101\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/48000\r\n"
        }
    }
}

pub fn run(data: &[u8]) {
    let Some((&media, datagrams)) = data.split_first() else { return };
    let Ok(remote) = sdp::parse(offer(media).as_bytes()) else { return };
    let Ok(negotiated) = sdp::negotiate(&remote, sdp::MediaEncryption::Optional) else { return };
    let mut uplink = Uplink::new(&negotiated);
    let Ok(mut mixer_decoder) = SourceDecoder::new(uplink.codec()) else { return };
    let mut events = EventReceiver::default();
    let mut pin = PinEntry::new("1234", 3);
    let arrival = Instant::now();
    for datagram in crate::records(datagrams) {
        let Some(packet) = rtp::parse(datagram) else { continue };
        if packet.payload_type == negotiated.pt {
            if let Some(frame) = uplink.push(&packet, arrival) {
                let _ = mixer_decoder.decode(&frame.payload);
            }
        } else if Some(packet.payload_type) == negotiated.dtmf_pt
            && let Some(digit) = events.receive(packet.timestamp, &packet.payload)
            && pin.press(digit) == PinProgress::Failed
        {
            pin = PinEntry::new("1234", 3);
        }
    }
}
