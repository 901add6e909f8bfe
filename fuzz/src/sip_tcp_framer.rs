//! SIP over TCP: a connection's byte stream through the `StreamFramer`
//! (transports/sip/src/message/wire.rs), cut into reads wherever the fuzzer says, each framed
//! message then parsed as the stack parses it (normalisation, rsip, the mandatory headers).
//!
//! Input: a stream of `u16` read length (little endian, 1..=2048) then that many bytes, until
//! the input ends. Checked: the messages framed do not depend on how TCP cut the stream — the
//! same stream pushed at once frames into the same messages, up to the first framing error.

use arbitrary::Unstructured;
use junction_sip::message::wire::{MAX_MESSAGE, StreamFramer};
use junction_sip::message::{self, Head};
use rsip::SipMessage;

/// The messages framed off `reads` in order, and whether framing failed.
fn frame<'a>(reads: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Vec<u8>>, bool) {
    let mut framer = StreamFramer::default();
    let mut messages = Vec::new();
    for read in reads {
        framer.push(read);
        loop {
            match framer.next_message() {
                Ok(Some(message)) => {
                    assert!(message.len() <= MAX_MESSAGE, "a {}-byte message got through", message.len());
                    messages.push(message);
                }
                Ok(None) => break,
                Err(_) => return (messages, true),
            }
        }
    }
    (messages, false)
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mut reads = Vec::new();
    let mut stream = Vec::new();
    while !u.is_empty() {
        let Ok(len) = u.int_in_range(1..=2048u16) else { break };
        let Ok(read) = u.bytes(usize::from(len).min(u.len())) else { break };
        reads.push(read);
        stream.extend_from_slice(read);
    }
    let (split, split_failed) = frame(reads.iter().copied());
    let (whole, whole_failed) = frame([stream.as_slice()]);
    let common = split.len().min(whole.len());
    assert_eq!(split[..common], whole[..common], "framing depends on how the stream was cut");
    if !split_failed && !whole_failed {
        assert_eq!(split.len(), whole.len(), "framing depends on how the stream was cut");
    }
    for bytes in &split {
        if let Ok(parsed) = message::parse(bytes) {
            let _ = match &parsed {
                SipMessage::Request(request) => Head::of(request),
                SipMessage::Response(response) => Head::of(response),
            };
        }
    }
}
