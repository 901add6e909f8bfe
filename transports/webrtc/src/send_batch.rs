//! Batched sending on the shared UDP socket: sessions hand their datagrams to one sender task,
//! which takes everything queued at once and sends runs of datagrams for the same peer with
//! UDP GSO (`UDP_SEGMENT`: one system call, the kernel cuts the segments), so a video frame
//! split into several RTP packets costs one `sendmsg` instead of one `sendto` per packet.
//!
//! Datagrams queue in two lanes ([`Lane`]): video RTP in the bulk lane, everything else (audio,
//! RTCP, STUN, DTLS) in the urgent one, which the sender empties first. When the core writes a
//! keyframe to hundreds of subscribers the queue holds thousands of video datagrams; audio
//! queued behind them would wait as long as the video does, and audio is what a viewer notices.
//!
//! The system calls come from `quinn-udp` (what quinn sends QUIC with); this module only plans
//! the runs ([`plan_runs`], pure, tested datagram by datagram) and drives the socket with tokio.
//! Where GSO is unavailable `quinn-udp` reports one segment and every datagram goes alone.
//! Nothing is dropped for a full socket buffer: the task waits for writability and retries;
//! only real send errors lose datagrams, as UDP would, and they are counted. The queue and the
//! socket live outside the task, so a panic in it ([`supervise::restart`] runs it again) loses at
//! most the batch in hand.

use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use junction_engine::supervise;
use quinn_udp::{Transmit, UdpSockRef, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace};

/// Datagrams queued for the sender before sessions wait (backpressure, not loss).
const QUEUE_CAPACITY: usize = 8192;
/// The most datagrams taken from the queue in one go.
const MAX_BATCH: usize = 512;
/// A GSO send is one UDP datagram for the kernel: its payload stays under the IPv4 limit.
const MAX_GSO_BYTES: usize = 65_000;

/// One datagram for one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outgoing {
    pub(crate) destination: SocketAddr,
    pub(crate) payload: Vec<u8>,
}

/// Which queue a datagram waits in; the sender empties the urgent one first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Audio, RTCP, STUN and DTLS: small, few, and late is as bad as lost.
    Urgent,
    /// Video RTP (and its retransmissions): most of the bytes, sent in the order queued.
    Bulk,
}

impl Lane {
    /// The lane of a datagram a session sends: RTP (SRTP leaves its header in clear) with a
    /// payload type `audio_pt` does not claim is bulk; everything else is urgent. RTP and RTCP
    /// share the version bits and are told apart by the second byte (RFC 5761: RTCP packet
    /// types 192-223 read as marker + payload type 64-95).
    pub(crate) fn of(datagram: &[u8], audio_pt: impl Fn(u8) -> bool) -> Lane {
        const RTP_HEADER: usize = 12;
        match datagram {
            [first, second, ..] if datagram.len() >= RTP_HEADER && first >> 6 == 2 => {
                let pt = second & 0x7f;
                if (64..=95).contains(&pt) || audio_pt(pt) { Lane::Urgent } else { Lane::Bulk }
            }
            _ => Lane::Urgent,
        }
    }
}

/// Where sessions put the datagrams they send.
#[derive(Clone)]
pub(crate) struct SendQueue {
    urgent: mpsc::Sender<Outgoing>,
    bulk: mpsc::Sender<Outgoing>,
}

impl SendQueue {
    /// Queues one datagram in its lane; waits only while that lane is full.
    pub(crate) async fn send(&self, destination: SocketAddr, payload: Vec<u8>, lane: Lane) {
        let queue = match lane {
            Lane::Urgent => &self.urgent,
            Lane::Bulk => &self.bulk,
        };
        // Closed only when the sender stopped at shutdown: the datagram has nowhere to go.
        let _ = queue.send(Outgoing { destination, payload }).await;
    }
}

/// The two lanes' receiving ends.
struct Pending {
    urgent: mpsc::Receiver<Outgoing>,
    bulk: mpsc::Receiver<Outgoing>,
}

/// What the sender task works with, shared with its next run after a panic.
struct Sender {
    socket: Arc<UdpSocket>,
    state: UdpSocketState,
    pending: tokio::sync::Mutex<Pending>,
}

/// Starts the sender task on `socket` (shared with the reader, which only receives).
pub(crate) fn spawn(socket: Arc<UdpSocket>, shutdown: CancellationToken) -> io::Result<SendQueue> {
    let state = UdpSocketState::new(UdpSockRef::from(&*socket))?;
    // quinn-udp turns receive offload (GRO) on; the reader receives plain datagrams with
    // `recv_from`, which would see coalesced segments as one, so it goes off again.
    disable_gro(&socket);
    let (urgent, urgent_pending) = mpsc::channel(QUEUE_CAPACITY);
    let (bulk, bulk_pending) = mpsc::channel(QUEUE_CAPACITY);
    let pending = Pending { urgent: urgent_pending, bulk: bulk_pending };
    let sender = Arc::new(Sender { socket, state, pending: tokio::sync::Mutex::new(pending) });
    tokio::spawn(supervise::restart("webrtc_send_batcher", move || run(sender.clone(), shutdown.clone())));
    Ok(SendQueue { urgent, bulk })
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn disable_gro(socket: &UdpSocket) {
    const UDP_GRO: libc::c_int = 104;
    let off: libc::c_int = 0;
    // SAFETY: a valid fd and a c_int option value of the declared size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            UDP_GRO,
            (&off as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        debug!("could not turn UDP GRO off: {}", io::Error::last_os_error());
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn disable_gro(socket: &UdpSocket) {
    let _ = socket.as_raw_fd();
}

async fn run(sender: Arc<Sender>, shutdown: CancellationToken) {
    let (socket, state) = (&sender.socket, &sender.state);
    // Held for the whole run; a panic releases it for the next one.
    let mut guard = sender.pending.lock().await;
    let pending = &mut *guard;
    let errors = metrics::counter!("junction_webrtc_udp_send_errors_total");
    let sends = metrics::counter!("junction_webrtc_udp_send_calls_total");
    let (mut urgent, mut bulk) = (Vec::with_capacity(MAX_BATCH), Vec::with_capacity(MAX_BATCH));
    let mut joined = Vec::with_capacity(MAX_GSO_BYTES);
    // One cancellation future for the run, not a fresh one (a lock and a waiter) per turn.
    let shutdown = shutdown.cancelled_owned();
    tokio::pin!(shutdown);
    loop {
        // A batch is one lane's: urgent datagrams wait at most for the bulk batch in hand.
        let (received, urgent_turn) = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            received = pending.urgent.recv_many(&mut urgent, MAX_BATCH) => (received, true),
            received = pending.bulk.recv_many(&mut bulk, MAX_BATCH) => (received, false),
        };
        if received == 0 {
            return; // every handle is gone (both lanes close together)
        }
        let batch = if urgent_turn { &mut urgent } else { &mut bulk };
        #[cfg(test)]
        tests::maybe_panic(batch);
        let runs = plan_runs(batch, state.max_gso_segments());
        for run in runs {
            let datagrams = &batch[run];
            sends.increment(1);
            if let Err(err) = send_run(socket, state, datagrams, &mut joined).await {
                if datagrams.len() > 1 {
                    // GSO refused (quinn-udp now reports one segment): send them one by one.
                    debug!(destination = %datagrams[0].destination, "GSO send failed ({err}); sending singly");
                    for datagram in datagrams {
                        sends.increment(1);
                        if let Err(err) = send_run(socket, state, std::slice::from_ref(datagram), &mut joined).await {
                            trace!(destination = %datagram.destination, "UDP send failed: {err}");
                            errors.increment(1);
                        }
                    }
                } else {
                    // Unreachable peers lose the datagram, as UDP would.
                    trace!(destination = %datagrams[0].destination, "UDP send failed: {err}");
                    errors.increment(1);
                }
            }
        }
        batch.clear();
    }
}

/// Sends `datagrams` (one, or a GSO run for one peer) once the socket is writable.
async fn send_run(
    socket: &UdpSocket,
    state: &UdpSocketState,
    datagrams: &[Outgoing],
    joined: &mut Vec<u8>,
) -> io::Result<()> {
    let Some(first) = datagrams.first() else { return Ok(()) };
    let (contents, segment_size) = if datagrams.len() == 1 {
        (&first.payload[..], None)
    } else {
        joined.clear();
        for datagram in datagrams {
            joined.extend_from_slice(&datagram.payload);
        }
        (&joined[..], Some(first.payload.len()))
    };
    let transmit = Transmit { destination: first.destination, ecn: None, contents, segment_size, src_ip: None };
    // `async_io` waits for writability whenever the kernel buffer is full (WouldBlock).
    socket.async_io(Interest::WRITABLE, || state.try_send(UdpSockRef::from(socket), &transmit)).await
}

/// Orders `batch` by destination (stable: each peer's datagrams keep their order) and splits
/// it into runs that one send can carry: a single datagram, or up to `max_segments` datagrams
/// for one peer, all of the first one's size except a possibly shorter last one (GSO's rule).
pub(crate) fn plan_runs(batch: &mut [Outgoing], max_segments: usize) -> Vec<Range<usize>> {
    batch.sort_by_key(|datagram| datagram.destination);
    let mut runs = Vec::new();
    let mut start = 0;
    while start < batch.len() {
        let first = &batch[start];
        let segment = first.payload.len();
        let mut end = start + 1;
        let mut bytes = segment;
        while end < batch.len() && end - start < max_segments && segment > 0 {
            let next = &batch[end];
            let previous_full = batch[end - 1].payload.len() == segment;
            if next.destination != first.destination
                || !previous_full
                || next.payload.is_empty()
                || next.payload.len() > segment
                || bytes + next.payload.len() > MAX_GSO_BYTES
            {
                break;
            }
            bytes += next.payload.len();
            end += 1;
        }
        runs.push(start..end);
        start = end;
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload that makes the sender task panic, in tests only.
    const PANIC_PAYLOAD: &[u8] = b"panic the send batcher";

    pub(super) fn maybe_panic(batch: &[Outgoing]) {
        if batch.iter().any(|d| d.payload == PANIC_PAYLOAD) {
            panic!("injected send batcher panic");
        }
    }

    /// A running sender on a loopback socket, and a peer socket to send to.
    async fn queue_to_one_peer() -> (SendQueue, UdpSocket, SocketAddr, CancellationToken) {
        let server = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let shutdown = CancellationToken::new();
        let queue = spawn(server, shutdown.clone()).unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let destination = peer.local_addr().unwrap();
        (queue, peer, destination, shutdown)
    }

    #[tokio::test]
    async fn the_sender_is_restarted_after_a_panic_and_sends_what_comes_next() {
        let (queue, peer, destination, shutdown) = queue_to_one_peer().await;
        queue.send(destination, PANIC_PAYLOAD.to_vec(), Lane::Urgent).await;
        // The batch in hand when it panicked is lost; what is queued after is not.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        for seq in 0..5u8 {
            queue.send(destination, vec![seq; 100], Lane::Bulk).await;
        }
        let mut buf = [0u8; 200];
        for seq in 0..5u8 {
            let len = tokio::time::timeout(std::time::Duration::from_secs(5), peer.recv(&mut buf))
                .await
                .expect("the sender came back")
                .unwrap();
            assert_eq!(&buf[..len], &[seq; 100][..]);
        }
        shutdown.cancel();
    }

    /// An RTP header (version 2) with `marker_and_pt` as its second byte, then `len` bytes.
    fn rtp(marker_and_pt: u8, len: usize) -> Vec<u8> {
        let mut packet = vec![0x80, marker_and_pt];
        packet.resize(12 + len, 0xab);
        packet
    }

    #[test]
    fn video_rtp_is_bulk_and_audio_rtcp_stun_and_dtls_are_urgent() {
        let audio = |pt: u8| pt == 111 || pt == 0;
        assert_eq!(Lane::of(&rtp(96, 1100), audio), Lane::Bulk, "video");
        assert_eq!(Lane::of(&rtp(0x80 | 96, 300), audio), Lane::Bulk, "video, marker set");
        assert_eq!(Lane::of(&rtp(97, 1100), audio), Lane::Bulk, "a retransmission (RTX)");
        assert_eq!(Lane::of(&rtp(111, 80), audio), Lane::Urgent, "Opus");
        assert_eq!(Lane::of(&rtp(0x80 | 111, 80), audio), Lane::Urgent, "Opus, marker set");
        assert_eq!(Lane::of(&rtp(0, 160), audio), Lane::Urgent, "PCMU");
        // RTCP compound packets: sender report (200), receiver report (201), feedback (205, 206).
        for packet_type in [200, 201, 205, 206] {
            assert_eq!(Lane::of(&rtp(packet_type, 40), audio), Lane::Urgent, "RTCP {packet_type}");
        }
        // STUN (first byte 0-3), DTLS (20-63), and anything too short to be RTP.
        assert_eq!(Lane::of(&[0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0], audio), Lane::Urgent);
        assert_eq!(Lane::of(&[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], audio), Lane::Urgent);
        assert_eq!(Lane::of(&[0x80, 96, 0], audio), Lane::Urgent);
        assert_eq!(Lane::of(&[], audio), Lane::Urgent);
    }

    /// Audio queued behind a keyframe's worth of video leaves first.
    #[tokio::test(flavor = "current_thread")]
    async fn the_urgent_lane_goes_out_before_the_bulk_queued_earlier() {
        let (queue, peer, destination, shutdown) = queue_to_one_peer().await;
        // Queued without yielding (fewer sends than tokio's cooperative budget), so the sender
        // task has not run yet when the audio joins the queue.
        for seq in 0..60u8 {
            queue.send(destination, vec![seq; 1000], Lane::Bulk).await;
        }
        queue.send(destination, rtp(111, 80), Lane::Urgent).await;
        let mut buf = [0u8; 2000];
        let mut order = Vec::new();
        for _ in 0..61 {
            let len = tokio::time::timeout(std::time::Duration::from_secs(5), peer.recv(&mut buf))
                .await
                .expect("every datagram arrives")
                .unwrap();
            order.push(if len == 92 { None } else { Some(buf[0]) });
        }
        assert_eq!(order[0], None, "the audio went first");
        assert_eq!(order[1..], (0..60).map(Some).collect::<Vec<_>>()[..], "then the video, in order");
        shutdown.cancel();
    }

    fn out(port: u16, len: usize, tag: u8) -> Outgoing {
        Outgoing { destination: SocketAddr::from(([127, 0, 0, 1], port)), payload: vec![tag; len] }
    }

    fn shapes(batch: &[Outgoing], runs: &[Range<usize>]) -> Vec<(u16, Vec<usize>)> {
        runs.iter()
            .map(|run| {
                (batch[run.start].destination.port(), batch[run.clone()].iter().map(|d| d.payload.len()).collect())
            })
            .collect()
    }

    #[test]
    fn runs_group_one_peers_equal_datagrams_and_keep_each_peers_order() {
        let mut batch = vec![
            out(2, 1200, 1),
            out(1, 1200, 2),
            out(2, 1200, 3),
            out(1, 1200, 4),
            out(2, 700, 5), // a shorter last segment ends the run
            out(2, 1200, 6),
            out(1, 1300, 7), // larger than the segment: a new run
            out(1, 100, 8),
        ];
        let runs = plan_runs(&mut batch, 64);
        assert_eq!(
            shapes(&batch, &runs),
            vec![(1, vec![1200, 1200]), (1, vec![1300, 100]), (2, vec![1200, 1200, 700]), (2, vec![1200])]
        );
        let tags: Vec<u8> = batch.iter().map(|d| d.payload[0]).collect();
        assert_eq!(tags, vec![2, 4, 7, 8, 1, 3, 5, 6], "per-peer order is kept");
    }

    #[test]
    fn runs_respect_the_segment_limit_and_the_size_limit() {
        let mut batch: Vec<Outgoing> = (0..10).map(|i| out(1, 1000, i)).collect();
        let runs = plan_runs(&mut batch, 4);
        assert_eq!(runs, vec![0..4, 4..8, 8..10]);

        let mut batch: Vec<Outgoing> = (0..60).map(|i| out(1, 1400, i)).collect();
        let runs = plan_runs(&mut batch, 64);
        assert!(runs.iter().all(|run| run.len() * 1400 <= MAX_GSO_BYTES));
        assert_eq!(runs.iter().map(|run| run.len()).sum::<usize>(), 60);

        let mut batch: Vec<Outgoing> = (0..5).map(|i| out(1, 1000, i)).collect();
        assert_eq!(plan_runs(&mut batch, 1), vec![0..1, 1..2, 2..3, 3..4, 4..5], "no GSO: one by one");

        let mut batch = vec![out(1, 0, 0), out(1, 0, 0)];
        assert_eq!(plan_runs(&mut batch, 64), vec![0..1, 1..2], "empty datagrams never form a run");
    }

    /// Many datagrams of mixed sizes for two peers, queued from two tasks at once, all arrive
    /// intact and in order per peer over real loopback sockets (GSO where the kernel has it).
    /// Senders queue a window at a time so the receivers' default socket buffers never overflow.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_datagram_arrives_intact_and_in_order_per_peer() {
        const COUNT: u32 = 600;
        const WINDOW: u32 = 30;
        let server = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let shutdown = CancellationToken::new();
        let queue = spawn(server, shutdown.clone()).unwrap();
        let mut tasks = Vec::new();
        for peer in 0..2u8 {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let destination = socket.local_addr().unwrap();
            let (acks, mut acked) = mpsc::unbounded_channel::<u32>();
            let queue = queue.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 0..COUNT {
                    if seq % WINDOW == 0 && seq > 0 {
                        assert_eq!(acked.recv().await, Some(seq), "the window was received");
                    }
                    queue.send(destination, payload(peer, seq), Lane::Bulk).await;
                }
            }));
            tasks.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 70_000];
                for seq in 0..COUNT {
                    let len = tokio::time::timeout(std::time::Duration::from_secs(10), socket.recv(&mut buf))
                        .await
                        .expect("a datagram was lost")
                        .unwrap();
                    assert_eq!(&buf[..len], &payload(peer, seq)[..], "peer {peer}, datagram {seq}");
                    if (seq + 1) % WINDOW == 0 {
                        let _ = acks.send(seq + 1);
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        shutdown.cancel();
    }

    /// A frame-like pattern: runs of full packets closed by a short one; sequence number inside.
    fn payload(peer: u8, seq: u32) -> Vec<u8> {
        let len = if seq % 7 == 6 { 300 + (seq as usize % 50) } else { 1100 };
        let mut bytes = vec![peer; len];
        bytes[1..5].copy_from_slice(&seq.to_be_bytes());
        bytes[len - 1] = (seq % 251) as u8;
        bytes
    }
}
