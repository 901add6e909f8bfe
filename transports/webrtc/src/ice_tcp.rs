//! ICE-TCP (RFC 6544): the passive TCP candidate of the media plane, for clients that cannot send
//! UDP to the server. They connect here and send what they would have sent as datagrams, each
//! packet framed with a 2-byte length (RFC 4571; tokio-util's `LengthDelimitedCodec` reads and
//! writes it).
//!
//! A connection belongs to the session whose ufrag its first frame, a STUN check, names and whose
//! ICE password verifies that check's MESSAGE-INTEGRITY, as on UDP ([`Demux::authenticate`]);
//! from then on every frame goes to that session's inbox as a datagram from the connection's
//! remote address, and what the session sends to that address is written back, framed, on the
//! connection ([`TcpLink`]). Nothing is bound in the UDP routing table: the connection is the
//! route, and it ends with the session (its inbox closes) or with the peer.
//!
//! Bounded like the UDP path: `webrtc.max_tcp_connections` open at once (more are closed as
//! they arrive), the first frame within [`FIRST_CHECK_TIMEOUT`], frames no larger than a UDP
//! datagram, and a bounded queue per connection: a peer that reads too slowly loses packets, as a
//! congested UDP path would, rather than growing the server's memory.
//!
//! [`Demux::authenticate`]: crate::udp_mux::Demux::authenticate

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use junction_engine::supervise;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace};

use crate::config::WebrtcConfig;
use crate::driver::{Datagram, Driver, MAX_DATAGRAM, Via};
use crate::validate::{self, Kind};

/// How long a new connection has to send its first STUN check.
pub(crate) const FIRST_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Packets queued for one connection's writer; past it, packets for that peer are dropped.
const LINK_QUEUE: usize = 512;
/// A pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The way back to the peer of one ICE-TCP connection. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct TcpLink {
    queue: mpsc::Sender<Bytes>,
}

impl TcpLink {
    /// Queues one packet to be framed and written; a full queue drops it (counted). Returns
    /// false once the connection is gone.
    pub(crate) fn send(&self, payload: Vec<u8>) -> bool {
        match self.queue.try_send(Bytes::from(payload)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("junction_webrtc_tcp_dropped_total", "reason" => "queue_full").increment(1);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.queue.is_closed()
    }
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().length_field_length(2).max_frame_length(MAX_DATAGRAM).new_codec()
}

/// Starts accepting ICE-TCP connections on `listener` until `shutdown` (the accept loop is
/// restarted after a panic; a panic in one connection ends that connection).
pub(crate) fn spawn(listener: TcpListener, driver: Arc<Driver>, config: &WebrtcConfig, shutdown: CancellationToken) {
    let listener = Arc::new(listener);
    let open = Arc::new(Semaphore::new(config.max_tcp_connections));
    tokio::spawn(supervise::restart("webrtc_tcp_listener", move || {
        accept(listener.clone(), driver.clone(), open.clone(), shutdown.clone())
    }));
}

async fn accept(listener: Arc<TcpListener>, driver: Arc<Driver>, open: Arc<Semaphore>, shutdown: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                debug!("ICE-TCP accept failed: {err}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics::counter!("junction_webrtc_tcp_refused_total", "reason" => "max_tcp_connections").increment(1);
            debug!(%peer, "ICE-TCP connection refused: webrtc.max_tcp_connections reached");
            continue;
        };
        let (driver, shutdown) = (driver.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let outcome = supervise::contain("webrtc_tcp", serve(stream, peer, driver, shutdown)).await;
            if let Ok(Err(refused)) = outcome {
                metrics::counter!("junction_webrtc_tcp_refused_total", "reason" => refused).increment(1);
                debug!(%peer, reason = refused, "ICE-TCP connection closed");
            }
        });
    }
}

/// Serves one connection until the peer, the session or the server ends it. An error names why
/// the connection was refused or cut (a metric label).
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    driver: Arc<Driver>,
    shutdown: CancellationToken,
) -> Result<(), &'static str> {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, codec());

    let first = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        first = tokio::time::timeout(FIRST_CHECK_TIMEOUT, frames.next()) => first,
    };
    let first = match first {
        Err(_) => return Err("no_check_in_time"),
        Ok(None) => return Ok(()),
        Ok(Some(Err(_))) => return Err("bad_frame"),
        Ok(Some(Ok(frame))) => frame,
    };
    if validate::check(&first) != Ok(Kind::Stun) {
        return Err("not_stun");
    }
    let inbox = driver.inbox_for_check(&first).map_err(|route| route.reason())?;

    let (queue, mut outgoing) = mpsc::channel::<Bytes>(LINK_QUEUE);
    let link = TcpLink { queue };
    let mut sink = FramedWrite::new(write, codec());
    let writer = async move {
        while let Some(packet) = outgoing.recv().await {
            sink.feed(packet).await?;
            // Written out when nothing more is waiting: a burst (a video frame) goes in one write.
            if outgoing.is_empty() {
                SinkExt::<Bytes>::flush(&mut sink).await?;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::pin!(writer);

    let mut frame = Some(first);
    loop {
        if let Some(frame) = frame.take() {
            if let Err(invalid) = validate::check(&frame) {
                trace!(%peer, len = frame.len(), "invalid ICE-TCP frame: {invalid}");
                metrics::counter!("junction_webrtc_tcp_dropped_total", "reason" => invalid.protocol()).increment(1);
            } else {
                let datagram =
                    Datagram { source: peer, at: Instant::now(), payload: frame.freeze(), via: Via::Tcp(link.clone()) };
                match inbox.try_send(datagram) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        metrics::counter!("junction_webrtc_tcp_dropped_total", "reason" => "inbox_full").increment(1);
                    }
                    // The session ended: so does its connection.
                    Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = inbox.closed() => return Ok(()),
            written = &mut writer => return written.map_err(|_| "write_failed"),
            next = frames.next() => match next {
                None => return Ok(()),
                Some(Err(_)) => return Err("bad_frame"),
                Some(Ok(next)) => frame = Some(next),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::driver::{MuxHandle, Sockets, spawn};
    use crate::udp_mux::tests::binding_request;

    const PWD: &str = "pwdT-0123456789012345";

    async fn plane(config: &WebrtcConfig) -> (MuxHandle, SocketAddr, CancellationToken) {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let advertised = udp.local_addr().unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_addr = tcp.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let sockets = Sockets { udp, advertised: vec![advertised], tcp: Some((tcp, vec![tcp_addr])) };
        (spawn(sockets, config, shutdown.clone()).unwrap(), tcp_addr, shutdown)
    }

    /// Registers a session and waits for the driver to have taken it (a real session is
    /// registered before its answer leaves, long before a check can come).
    async fn register(mux: &MuxHandle) -> mpsc::Receiver<Datagram> {
        let (_, inbox) = mux.register("ufragT", PWD);
        tokio::time::sleep(Duration::from_millis(50)).await;
        inbox
    }

    fn framed(packet: &[u8]) -> Vec<u8> {
        let mut out = (packet.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(packet);
        out
    }

    /// Whether the server closed the connection (reads end) within a few seconds.
    async fn closed_by_server(stream: &mut TcpStream) -> bool {
        let mut buf = [0u8; 64];
        matches!(tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
    }

    #[tokio::test]
    async fn a_verified_check_binds_the_connection_to_its_session_both_ways() {
        let (mux, addr, shutdown) = plane(&WebrtcConfig::default()).await;
        let mut inbox = register(&mux).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let check = binding_request("ufragT:c", PWD);
        // The check and an RTP packet in one write: the framing, not the segments, splits them.
        let rtp = [[0x80, 96, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1].as_slice(), &[0xcc; 10]].concat();
        let mut bytes = framed(&check);
        bytes.extend(framed(&rtp));
        client.write_all(&bytes).await.unwrap();

        let first = tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await.unwrap().unwrap();
        assert_eq!(first.payload, check);
        assert_eq!(first.source, client.local_addr().unwrap());
        let Via::Tcp(link) = first.via else { panic!("came over TCP") };
        let second = tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await.unwrap().unwrap();
        assert_eq!(second.payload[..], rtp[..]);

        // What the session sends comes back framed.
        assert!(link.send(b"reply one".to_vec()) && link.send(b"two".to_vec()));
        let mut back = vec![0u8; framed(b"reply one").len() + framed(b"two").len()];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, [framed(b"reply one"), framed(b"two")].concat());

        // The session ends: its connection is closed and the link says so.
        drop(inbox);
        assert!(closed_by_server(&mut client).await, "the connection ends with its session");
        tokio::time::timeout(Duration::from_secs(5), async {
            while !link.is_closed() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the link closes");
        shutdown.cancel();
    }

    #[tokio::test]
    async fn forged_oversized_and_silent_connections_are_closed_and_bounded() {
        let config = WebrtcConfig { max_tcp_connections: 3, ..WebrtcConfig::default() };
        let (mux, addr, shutdown) = plane(&config).await;
        let mut inbox = register(&mux).await;

        // A guessed password: closed, nothing delivered.
        let mut forged = TcpStream::connect(addr).await.unwrap();
        forged.write_all(&framed(&binding_request("ufragT:x", "guessed-0123456789012"))).await.unwrap();
        assert!(closed_by_server(&mut forged).await, "a forged check closes the connection");
        // Media before any check: closed.
        let mut media_first = TcpStream::connect(addr).await.unwrap();
        media_first.write_all(&framed(&[0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1])).await.unwrap();
        assert!(closed_by_server(&mut media_first).await, "the first frame must be a check");
        // A length past any datagram: closed before the body is read.
        let mut oversized = TcpStream::connect(addr).await.unwrap();
        oversized.write_all(&[0xff, 0xff, 0, 1, 2, 3]).await.unwrap();
        assert!(closed_by_server(&mut oversized).await, "a frame longer than a datagram closes the connection");
        assert!(inbox.try_recv().is_err(), "nothing reached the session");

        // Three silent connections hold every place: a fourth is closed at once.
        let mut silent = Vec::new();
        for _ in 0..3 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut fourth = TcpStream::connect(addr).await.unwrap();
        assert!(closed_by_server(&mut fourth).await, "max_tcp_connections bounds open connections");
        // One leaves; a verified peer gets its place.
        drop(silent.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut peer = TcpStream::connect(addr).await.unwrap();
        peer.write_all(&framed(&binding_request("ufragT:c", PWD))).await.unwrap();
        let delivered = tokio::time::timeout(Duration::from_secs(5), inbox.recv()).await.unwrap().unwrap();
        assert!(matches!(delivered.via, Via::Tcp(_)));
        shutdown.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_sends_no_check_is_closed_after_the_timeout() {
        let (_mux, addr, shutdown) = plane(&WebrtcConfig::default()).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(FIRST_CHECK_TIMEOUT + Duration::from_secs(1)).await;
        assert!(closed_by_server(&mut idle).await);
        shutdown.cancel();
    }
}
