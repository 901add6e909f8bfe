//! When each datagram reached the tool's socket, by the kernel's clock (`SO_TIMESTAMPNS`), not
//! when the tool got round to reading it. The tool shares one core among hundreds of receivers:
//! after a keyframe goes out to all of them, the last receiver reads its datagrams tens of
//! milliseconds after they arrived, and a latency taken at that read charges the tool's own
//! backlog to the server (it made audio look as late as the video it queued behind in the tool).
//! The tool's own wait is reported on its own (`tool_receive_delay_ms`), which is its headroom.
//!
//! Written by hand on `libc` (`recvmsg` and its control messages): tokio's `UdpSocket` has no
//! receive with ancillary data, and the bench already makes raw calls for the floor (`floor.rs`).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// One datagram read into `buffer`: its length, its sender, and when it arrived (the read time
/// when the kernel gave no stamp).
pub fn receive(fd: RawFd, buffer: &mut [u8]) -> io::Result<(usize, SocketAddr, Instant)> {
    let mut iov = libc::iovec { iov_base: buffer.as_mut_ptr().cast(), iov_len: buffer.len() };
    // SAFETY: all-zero is a valid sockaddr_storage and msghdr.
    let mut address: libc::sockaddr_storage = unsafe { zeroed() };
    // Room for one `struct timespec` control message, aligned as cmsghdr needs.
    let mut control = [0u64; 8];
    let mut message: libc::msghdr = unsafe { zeroed() };
    message.msg_name = (&mut address as *mut libc::sockaddr_storage).cast();
    message.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    message.msg_iov = &mut iov;
    message.msg_iovlen = 1;
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = size_of_val(&control);
    // SAFETY: every pointer in `message` points at a live buffer of the length it claims.
    let len = unsafe { libc::recvmsg(fd, &mut message, 0) };
    let Ok(len) = usize::try_from(len) else { return Err(io::Error::last_os_error()) };
    let read_at = Instant::now();
    let source = socket_addr(&address)?;
    let arrived = kernel_stamp(&message).and_then(|stamp| waited(stamp, SystemTime::now()));
    Ok((len.min(buffer.len()), source, arrived.and_then(|wait| read_at.checked_sub(wait)).unwrap_or(read_at)))
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

fn socket_addr(address: &libc::sockaddr_storage) -> io::Result<SocketAddr> {
    match libc::c_int::from(address.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let v4 = unsafe { &*(address as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Ok(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(v4.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let v6 = unsafe { &*(address as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            let port = u16::from_be(v6.sin6_port);
            Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, v6.sin6_flowinfo, v6.sin6_scope_id)))
        }
        family => Err(io::Error::other(format!("a datagram from address family {family}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_read_late_carries_the_time_it_arrived() {
        let receiver = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        stamp_arrivals(&receiver).unwrap();
        // The kernel turns receive stamping on from a work queue when the first socket asks.
        std::thread::sleep(Duration::from_millis(100));
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sent = Instant::now();
        sender.send_to(b"late", receiver.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let mut buffer = [0u8; 64];
        let (len, source, arrived) = receive(receiver.as_raw_fd(), &mut buffer).unwrap();
        let read_at = Instant::now();
        assert_eq!((&buffer[..len], source), (&b"late"[..], sender.local_addr().unwrap()));
        // Arrived just after it was sent, not when it was read 60 ms later.
        assert!(arrived.duration_since(sent) < Duration::from_millis(20), "{:?}", arrived.duration_since(sent));
        assert!(read_at.duration_since(arrived) >= Duration::from_millis(55));
    }

    #[test]
    fn a_stamp_from_the_future_or_the_distant_past_is_not_a_wait() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(waited(Duration::from_secs(999_999), now), Some(Duration::from_secs(1)));
        assert_eq!(waited(Duration::from_secs(1_000_001), now), None);
        assert_eq!(waited(Duration::from_secs(999_980), now), None);
    }
}
