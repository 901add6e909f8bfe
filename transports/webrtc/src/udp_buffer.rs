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
    if granted < bytes {
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
        assert_ne!(granted, default, "the buffer changed from the default {default}");
    }
}
