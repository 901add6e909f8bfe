//! What Junction's fuzz targets share, and the targets' bodies (one module each; the files in
//! `fuzz_targets/` only hand libFuzzer's input to them). Run them with `scripts/fuzz`; what each
//! covers is in its module and in docs/security.md#fuzzing.
//!
//! - The panic policy: a panic is a crash ([`init`]), except for the two targets whose code
//!   calls a library through `catch_unwind` on purpose — rml_rtmp in the RTMP session,
//!   symphonia in the AAC decoder, srt-protocol in the SRT listener — where a panic that Junction
//!   catches ends one session or costs one frame by design ([`init_containing`]); one that escapes is still a crash
//!   ([`run`]). `JUNCTION_FUZZ_STRICT=1` makes every panic a crash there too, with its backtrace.
//! - Inputs made of several messages ([`records`]): parts separated by [`SEPARATOR`], each
//!   starting with a few control bytes read through `arbitrary::Unstructured`.
//! - [`on_worker_stack`]: runs a target on a thread with a tokio worker's 2 MiB stack, so a
//!   recursion that would overflow a server task overflows here too.

pub mod aac;
pub mod auth;
pub mod browser_session;
pub mod h264;
pub mod moq_cmaf;
pub mod rtmp_ingest;
pub mod rtmp_session;
pub mod sip_digest;
pub mod sip_rtp;
pub mod sip_sdp;
pub mod sip_tcp_framer;
pub mod sip_ua;
pub mod srt_handshake;
pub mod srt_ts;
pub mod turn_relay;
pub mod webrtc_negotiate;
pub mod whip_sdpfrag;

use std::panic;
use std::sync::Mutex;

/// The stack of a tokio worker thread (tokio's default), which is where parsers run in the server.
pub const WORKER_STACK: usize = 2 << 20;

/// Separates the messages of one input (a datagram, a WebSocket frame, a CMAF object...).
pub const SEPARATOR: &[u8] = b"\n#\n";

/// The last panic's message, for when it escapes (the hook of [`init_containing`] keeps quiet).
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());

/// The default policy: every panic is a crash (libfuzzer-sys's hook prints it and aborts).
pub fn init() {}

/// For targets whose code catches panics on purpose: a panic is recorded quietly, and is a
/// crash only if it escapes the target ([`run`], [`on_worker_stack`]).
pub fn init_containing() {
    if std::env::var_os("JUNCTION_FUZZ_STRICT").is_some() {
        return;
    }
    panic::set_hook(Box::new(|info| {
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = info.to_string();
        }
    }));
}

/// Runs a target's body; a panic that escapes it is a crash.
pub fn run(f: impl FnOnce()) {
    if panic::catch_unwind(panic::AssertUnwindSafe(f)).is_err() {
        escaped();
    }
}

fn escaped() -> ! {
    let last = LAST_PANIC.lock().map(|l| l.clone()).unwrap_or_default();
    eprintln!("a panic escaped the code under test: {last}");
    std::process::abort();
}

/// The messages of a multi-message input.
pub fn records(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
            Some(at) => {
                rest = current.get(at + SEPARATOR.len()..);
                current.get(..at)
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// Joins messages into one input (the inverse of [`records`]), for seeds and tests.
pub fn join_records<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(SEPARATOR);
        }
        out.extend_from_slice(part);
    }
    out
}

/// Runs `f` on a thread with a server worker's stack; a panic there is a crash.
pub fn on_worker_stack<F: FnOnce() + Send>(f: F) {
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new().stack_size(WORKER_STACK).spawn_scoped(scope, f);
        match worker {
            Ok(handle) => {
                if handle.join().is_err() {
                    escaped();
                }
            }
            Err(err) => panic!("cannot start a fuzzing thread: {err}"),
        }
    });
}

/// Replaces every `from` in `data` with `to` (placeholders for values the fuzzer cannot guess:
/// random branches, tags, session ids, nonces).
pub fn substitute(data: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    if from.is_empty() || data.len() < from.len() {
        return data.to_vec();
    }
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data.get(i..i + from.len()) == Some(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let parts: [&[u8]; 3] = [b"INVITE", b"", b"BYE"];
        let joined = join_records(parts);
        assert_eq!(records(&joined).collect::<Vec<_>>(), parts);
        assert_eq!(records(b"").collect::<Vec<_>>(), [b""]);
    }

    #[test]
    fn substitutes_placeholders() {
        assert_eq!(substitute(b"a $b c $b", b"$b", b"xyz"), b"a xyz c xyz");
        assert_eq!(substitute(b"$", b"$b", b"x"), b"$");
    }
}
