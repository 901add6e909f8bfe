//! RTMP: one client connection into the sans-I/O `Session` (transports/rtmp/src/session), the
//! code the connection task runs for every byte from port 1935.
//!
//! The harness completes the handshake itself (C0 `03`, a zero C1, a zero C2 — rml_rtmp does
//! not check C2), so the fuzzed bytes are the chunk stream: chunk headers and sizes, AMF0
//! commands (`connect`, `createStream`, `publish`, `play`, `@setDataFrame`), FLV audio/video
//! messages with AVC/AAC sequence headers. They arrive in 128-byte reads with 10 ms between
//! them; publish and play requests are accepted as the server would for a valid key, so media
//! reaches the ingest. It runs on a worker-sized stack: AMF0 nesting recurses in rml_rtmp.

use std::time::{Duration, Instant};

use junction_rtmp::session::{Output, Session, SessionConfig, SessionEvent};

/// Bytes per `handle_input` call (RTMP's default chunk size).
const READ: usize = 128;

/// C0 and C1 of a client handshake.
pub fn handshake_c0_c1() -> Vec<u8> {
    let mut bytes = vec![0u8; 1 + 1536];
    bytes[0] = 3;
    bytes
}

pub fn run(data: &[u8]) {
    crate::on_worker_stack(|| drive(data));
}

fn drive(data: &[u8]) {
    let mut now = Instant::now();
    let mut session =
        Session::new(now, SessionConfig { idle_timeout: Duration::from_secs(5), ..SessionConfig::default() });
    session.handle_input(now, &handshake_c0_c1());
    drain(&mut session);
    session.handle_input(now, &[0u8; 1536]);
    drain(&mut session);
    for read in data.chunks(READ) {
        if session.is_closed() {
            return;
        }
        now += Duration::from_millis(10);
        session.handle_input(now, read);
        drain(&mut session);
        session.handle_timeout(now);
        drain(&mut session);
    }
}

fn drain(session: &mut Session) {
    while let Some(output) = session.poll_output() {
        match output {
            Output::Event(SessionEvent::PublishRequested { request, .. }) => session.accept_publish(request),
            Output::Event(SessionEvent::PlayRequested { request, .. }) => session.accept_play(request),
            Output::Transmit(_) | Output::Event(_) => {}
        }
    }
}
