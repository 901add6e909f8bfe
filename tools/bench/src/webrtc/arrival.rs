//! When each datagram reached the tool's socket, by the kernel's clock (`SO_TIMESTAMPNS`), not
//! when the tool got round to reading it. The tool shares one core among hundreds of receivers:
//! after a keyframe goes out to all of them, the last receiver reads its datagrams tens of
//! milliseconds after they arrived, and a latency taken at that read charges the tool's own
//! backlog to the server (it made audio look as late as the video it queued behind in the tool).
//! The tool's own wait is reported on its own (`tool_receive_delay_ms`), which is its headroom.
//!
//! Written by hand on `libc` (`recvmsg` and its control messages; socket2 reads the sender's
//! address): tokio's `UdpSocket` has no receive with ancillary data, and the bench already makes
//! raw calls for the floor (`floor.rs`).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socket2::SockAddr;

/// Stamps older than this are taken as a clock step, not a wait: the read time is used.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// Asks the kernel to stamp every datagram `socket` receives with its arrival.
pub fn stamp_arrivals(socket: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads the int we own for the length we give.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// One datagram read into `buffer`: its length, its sender, and how long it waited in the
/// socket before this read (zero when the kernel gave no stamp).
pub fn receive(fd: RawFd, buffer: &mut [u8]) -> io::Result<(usize, SocketAddr, Duration)> {
    let mut iov = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: buffer.len() };
    // Room for one `struct timespec` control message, aligned as cmsghdr needs.
    let mut control = [0u64; 8];
    // SAFETY: recvmsg fills the zeroed storage socket2 hands us with an address of the family
    // it writes, and sets the length it wrote; every other pointer in the message points at a
    // live buffer of the length it claims.
    let ((len, stamp), source) = unsafe {
        SockAddr::try_init(|storage, storage_len| {
            let mut message: libc::msghdr = zeroed();
            message.msg_name = storage.cast();
            message.msg_namelen = *storage_len;
            message.msg_iov = &mut iov;
            message.msg_iovlen = 1;
            message.msg_control = control.as_mut_ptr().cast();
            message.msg_controllen = size_of_val(&control);
            let len = libc::recvmsg(fd, &mut message, 0);
            let Ok(len) = usize::try_from(len) else { return Err(io::Error::last_os_error()) };
            *storage_len = message.msg_namelen;
            Ok((len, kernel_stamp(&message)))
        })
    }?;
    let source = source.as_socket().ok_or_else(|| io::Error::other("a datagram from a non-IP address"))?;
    let waited = stamp.and_then(|stamp| waited(stamp, SystemTime::now())).unwrap_or_default();
    Ok((len.min(buffer.len()), source, waited))
}

/// The `SCM_TIMESTAMPNS` control message's wall-clock time, if the kernel sent one.
fn kernel_stamp(message: &libc::msghdr) -> Option<Duration> {
    // SAFETY: the CMSG_* walk stays inside `msg_control`/`msg_controllen`, which recvmsg set.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(message);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_TIMESTAMPNS {
                let stamp = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<libc::timespec>());
                return Some(Duration::new(u64::try_from(stamp.tv_sec).ok()?, u32::try_from(stamp.tv_nsec).ok()?));
            }
            header = libc::CMSG_NXTHDR(message, header);
        }
    }
    None
}

/// How long before `now` a datagram stamped `stamp` (since the epoch) arrived; `None` for a
/// stamp from the future or from more than [`MAX_WAIT`] ago.
fn waited(stamp: Duration, now: SystemTime) -> Option<Duration> {
    let wait = now.duration_since(UNIX_EPOCH).ok()?.checked_sub(stamp)?;
    (wait <= MAX_WAIT).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_read_late_says_how_long_it_waited() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        stamp_arrivals(&receiver).unwrap();
        // The kernel turns receive stamping on from a work queue when the first socket asks.
        std::thread::sleep(Duration::from_millis(100));
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sent = std::time::Instant::now();
        sender.send_to(b"late", receiver.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let mut buffer = [0u8; 64];
        let (len, source, waited) = receive(receiver.as_raw_fd(), &mut buffer).unwrap();
        let read_after = sent.elapsed();
        assert_eq!((&buffer[..len], source), (&b"late"[..], sender.local_addr().unwrap()));
        // It arrived just after it was sent, not when it was read 60 ms later.
        assert!(waited >= Duration::from_millis(55), "{waited:?}");
        assert!(read_after - waited < Duration::from_millis(20), "arrived {:?} after it was sent", read_after - waited);
    }

    #[test]
    fn a_stamp_from_the_future_or_the_distant_past_is_not_a_wait() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(waited(Duration::from_secs(999_999), now), Some(Duration::from_secs(1)));
        assert_eq!(waited(Duration::from_secs(1_000_001), now), None);
        assert_eq!(waited(Duration::from_secs(999_980), now), None);
    }
}
