//! A UDP relay between a test client and the server, so a test can cut the network path and
//! make the client vanish without it saying goodbye.

use std::net::SocketAddr;

use tokio::net::UdpSocket;

/// A UDP relay between a client and the server; dropping it cuts the path both ways.
pub struct UdpRelay {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl UdpRelay {
    pub async fn start(server: SocketAddr) -> UdpRelay {
        let front = UdpSocket::bind("127.0.0.1:0").await.expect("relay socket");
        let back = UdpSocket::bind("127.0.0.1:0").await.expect("relay socket");
        back.connect(server).await.expect("relay connect");
        let addr = front.local_addr().expect("relay address");
        let task = tokio::spawn(async move {
            let (mut up, mut down) = (vec![0u8; 2048], vec![0u8; 2048]);
            let mut client: Option<SocketAddr> = None;
            loop {
                tokio::select! {
                    Ok((len, from)) = front.recv_from(&mut up) => {
                        client = Some(from);
                        let _ = back.send(&up[..len]).await;
                    }
                    Ok(len) = back.recv(&mut down) => {
                        if let Some(client) = client {
                            let _ = front.send_to(&down[..len], client).await;
                        }
                    }
                }
            }
        });
        UdpRelay { addr, task }
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
