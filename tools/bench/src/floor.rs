//! The physical floor of forwarding on the machine at hand: the CPU time one thread spends to
//! send a 1200-byte UDP datagram to a receiver on loopback — with `send()` one datagram per
//! system call, with `sendmmsg()` a batch per call, and with UDP GSO (one buffer cut into
//! 1200-byte datagrams by the kernel). On loopback the kernel delivers the datagram into the
//! receiver's socket inside the sender's system call, so this is the whole kernel cost of one
//! forwarded packet, the cost a media server cannot go below without batching.
//!
//! Measured with the thread's own CPU clock (`CLOCK_THREAD_CPUTIME_ID`), which counts the same
//! time `/proc/<pid>/stat` does for the server, while a second thread drains the receiver with
//! `recvmmsg()`. Each figure is the median of several rounds. Raw system calls through `libc`:
//! no maintained crate exposes `sendmmsg`/GSO in a way that lets us time exactly one call shape.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;

use super::report::{Floor, Report};

/// The payload size of one forwarded media packet (a typical RTP packet under the MTU).
pub const PACKET_BYTES: usize = 1200;
const ROUNDS: usize = 5;

#[derive(Debug, Clone, Args)]
pub struct FloorArgs {
    /// Datagrams sent per round and method.
    #[arg(long, default_value_t = 50_000)]
    pub packets: usize,
    /// Datagrams per sendmmsg() call and per GSO buffer.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
}

pub async fn run(args: FloorArgs) -> anyhow::Result<Report> {
    let started = Instant::now();
    let floor = tokio::task::spawn_blocking(move || measure(args.packets, args.batch)).await??;
    let mut report = Report::new("floor", "udp");
    report.duration_s = started.elapsed().as_secs_f64();
    report.settings = serde_json::json!({"packets": args.packets, "batch": args.batch, "bytes": PACKET_BYTES});
    report.floor = Some(floor);
    Ok(report)
}

/// Runs every method for `packets` datagrams per round; blocking, takes about a second.
pub fn measure(packets: usize, batch: usize) -> io::Result<Floor> {
    let packets = packets.max(1000);
    let batch = batch.clamp(1, 64);
    let receiver = UdpSocket::bind("127.0.0.1:0")?;
    set_buffer(&receiver, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, 8 << 20);
    receiver.set_read_timeout(Some(Duration::from_millis(20)))?;
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    sender.connect(receiver.local_addr()?)?;

    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let drain = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || drain_until(&receiver, &stop, &received))
    };
    let payload = vec![0x5au8; PACKET_BYTES];
    let mut sent = 0u64;
    let result = (|| {
        // Warm caches, routes and the receiver's wake-up path.
        sent += timed(|| send_each(&sender, &payload, 2_000))?.1;
        let send_us = median_round(|| send_each(&sender, &payload, packets), &mut sent)?;
        let sendmmsg_us = median_round(|| send_batches(&sender, &payload, packets, batch), &mut sent)?;
        let gso_us = median_round(|| send_gso(&sender, &payload, packets, batch), &mut sent).ok();
        Ok::<_, io::Error>((send_us, sendmmsg_us, gso_us))
    })();
    // Let the receiver catch up before counting.
    std::thread::sleep(Duration::from_millis(100));
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
    let (send_us, sendmmsg_us, gso_us) = result?;
    let delivered = received.load(Ordering::Relaxed) as f64 / sent.max(1) as f64;
    Ok(Floor { send_us, sendmmsg_us, gso_us, batch, delivered: delivered.min(1.0) })
}

/// Runs `round` ROUNDS times; returns the median CPU µs per datagram.
fn median_round(mut round: impl FnMut() -> io::Result<u64>, sent: &mut u64) -> io::Result<f64> {
    let mut per_packet = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let (cpu, count) = timed(&mut round)?;
        *sent += count;
        per_packet.push(cpu.as_secs_f64() * 1e6 / count.max(1) as f64);
        // Give the receiver a moment, so every round starts with an empty queue.
        std::thread::sleep(Duration::from_millis(5));
    }
    per_packet.sort_by(f64::total_cmp);
    Ok(per_packet[ROUNDS / 2])
}

fn timed(mut f: impl FnMut() -> io::Result<u64>) -> io::Result<(Duration, u64)> {
    let start = thread_cpu_time();
    let count = f()?;
    Ok((thread_cpu_time().saturating_sub(start), count))
}

pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}

fn set_buffer(socket: &UdpSocket, forced: libc::c_int, normal: libc::c_int, bytes: libc::c_int) {
    let fd = socket.as_raw_fd();
    let size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    for option in [forced, normal] {
        // SAFETY: setsockopt reads `size` bytes from a c_int we own.
        let done = unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, option, (&raw const bytes).cast(), size) };
        if done == 0 {
            return;
        }
    }
}

/// Sending fails with ENOBUFS/EAGAIN when the socket's queue is full: retry those.
fn transient(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOBUFS) | Some(libc::EAGAIN))
}

/// A send call's return value: how many datagrams (sendmmsg) or bytes (sendmsg) went out, or
/// `None` after a transient failure, for the caller to retry.
fn sent_or_retry(done: isize) -> io::Result<Option<usize>> {
    if done >= 0 {
        return Ok(Some(done as usize));
    }
    let err = io::Error::last_os_error();
    if transient(&err) {
        std::thread::yield_now();
        return Ok(None);
    }
    Err(err)
}

/// One message header per iovec, each carrying that one buffer.
fn message_headers(iov: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iov.iter_mut()
        .map(|iov| {
            // SAFETY: an all-zero mmsghdr is valid (null name, no control data).
            let mut message: libc::mmsghdr = unsafe { std::mem::zeroed() };
            message.msg_hdr.msg_iov = iov;
            message.msg_hdr.msg_iovlen = 1;
            message
        })
        .collect()
}

fn send_each(socket: &UdpSocket, payload: &[u8], count: usize) -> io::Result<u64> {
    let mut sent = 0;
    while sent < count {
        match socket.send(payload) {
            Ok(_) => sent += 1,
            Err(err) if transient(&err) => std::thread::yield_now(),
            Err(err) => return Err(err),
        }
    }
    Ok(sent as u64)
}

fn send_batches(socket: &UdpSocket, payload: &[u8], count: usize, batch: usize) -> io::Result<u64> {
    let mut iov: Vec<libc::iovec> =
        (0..batch).map(|_| libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: payload.len() }).collect();
    let mut messages = message_headers(&mut iov);
    let mut sent = 0usize;
    while sent < count {
        let n = batch.min(count - sent);
        // SAFETY: `messages` holds `n` initialised headers pointing at live iovecs and payload.
        let done = unsafe { libc::sendmmsg(socket.as_raw_fd(), messages.as_mut_ptr(), n as u32, 0) };
        sent += sent_or_retry(done as isize)?.unwrap_or(0);
    }
    Ok(sent as u64)
}

fn send_gso(socket: &UdpSocket, payload: &[u8], count: usize, batch: usize) -> io::Result<u64> {
    let buffer: Vec<u8> = payload.iter().copied().cycle().take(payload.len() * batch).collect();
    let segment = payload.len() as u16;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut sent = 0usize;
    while sent < count {
        let n = batch.min(count - sent);
        let mut iov = libc::iovec { iov_base: buffer.as_ptr() as *mut _, iov_len: payload.len() * n };
        // SAFETY: an all-zero msghdr is valid; we point it at our iovec and control buffer.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer has room for one cmsg carrying a u16 (CMSG_SPACE above).
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = libc::UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment);
        }
        // SAFETY: msg points at live buffers for the duration of the call.
        let done = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
        if sent_or_retry(done)?.is_some() {
            sent += n;
        }
    }
    Ok(sent as u64)
}

fn drain_until(socket: &UdpSocket, stop: &AtomicBool, received: &AtomicU64) {
    const BATCH: usize = 64;
    let mut buffers = vec![[0u8; 2048]; BATCH];
    let mut iov: Vec<libc::iovec> =
        buffers.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() }).collect();
    let mut messages = message_headers(&mut iov);
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: every header points at a live 2048-byte buffer; the socket has a read timeout.
        let n =
            unsafe { libc::recvmmsg(socket.as_raw_fd(), messages.as_mut_ptr(), BATCH as u32, 0, std::ptr::null_mut()) };
        if n > 0 {
            received.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_measured_for_every_method() {
        let floor = measure(2_000, 16).expect("loopback UDP");
        assert!(floor.send_us > 0.0 && floor.send_us < 1_000.0, "{floor:?}");
        assert!(floor.sendmmsg_us > 0.0, "{floor:?}");
        assert!(floor.delivered > 0.5, "the receiver got most datagrams: {floor:?}");
    }
}
