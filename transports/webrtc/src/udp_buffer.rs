//! The shared UDP socket's kernel receive buffer: asked for at bind (`webrtc.udp_recv_buffer_bytes`),
//! with a warning when the kernel grants less (it caps requests at `net.core.rmem_max`).

use tokio::net::UdpSocket;
use tracing::{info, warn};

/// Asks for a `bytes` receive buffer on `socket`; returns what the kernel reports it granted
/// (Linux reports twice the usable size: its own bookkeeping counts against the buffer too).
pub(crate) fn size_receive_buffer(socket: &UdpSocket, bytes: usize) -> std::io::Result<usize> {
    let socket = socket2::SockRef::from(socket);
    socket.set_recv_buffer_size(bytes)?;
    let granted = socket.recv_buffer_size()?;
    if capped(bytes, granted) {
        warn!(
            requested = bytes,
            granted,
            "the kernel capped the media socket's receive buffer: packets that arrive while the server \
             is busy are dropped sooner; raise net.core.rmem_max (sysctl) to at least webrtc.udp_recv_buffer_bytes"
        );
    } else {
        info!(requested = bytes, granted, "media socket receive buffer");
    }
    Ok(granted)
}

/// Whether the kernel granted less than `requested`, given the size it `reported`. Linux grants
/// min(requested, `net.core.rmem_max`) and reports it doubled (socket(7)), so a cap between half
/// the request and the request still reports at least the request.
fn capped(requested: usize, reported: usize) -> bool {
    let usable = if cfg!(target_os = "linux") { reported / 2 } else { reported };
    usable < requested
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_receive_buffer_asked_for_reaches_the_socket() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let default = socket2::SockRef::from(&socket).recv_buffer_size().unwrap();
        // Under any kernel's cap (Linux's default rmem_max is 208 KiB) and above its default
        // reported size once doubled: the request visibly lands.
        let asked = 150_000;
        let granted = size_receive_buffer(&socket, asked).unwrap();
        assert!(granted >= asked, "granted {granted} for {asked}");
        assert!(!capped(asked, granted), "granted {granted} for {asked}: not capped");
        assert_ne!(granted, default, "the buffer changed from the default {default}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_cap_below_the_request_is_seen_through_linuxs_doubled_report() {
        const MIB: usize = 1024 * 1024;
        // 4 MiB asked, granted in full: reported as 8 MiB.
        assert!(!capped(4 * MIB, 8 * MIB));
        // 6 MiB asked under a 4 MiB rmem_max: reported as 8 MiB, more than the request, yet capped.
        assert!(capped(6 * MIB, 8 * MIB));
        // Debian's default cap (212992) under a 4 MiB request.
        assert!(capped(4 * MIB, 2 * 212_992));
    }
}
