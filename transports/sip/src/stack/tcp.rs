//! SIP over TCP: accepting connections, framing each stream into messages, writing responses
//! and requests back on the connection they belong to, and opening connections for calls we
//! place over TCP. Each connection runs in its own task; the stack sees only [`TcpEvent`]s.

use std::collections::HashMap;
use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::message::wire::StreamFramer;

/// Open connections at once; more are refused.
const MAX_CONNECTIONS: usize = 1024;
/// Messages queued for writing on one connection.
const WRITE_QUEUE: usize = 256;

#[derive(Debug)]
pub(crate) enum TcpEvent {
    Opened { addr: SocketAddr, writer: mpsc::Sender<Bytes> },
    Message { addr: SocketAddr, bytes: Vec<u8> },
    Closed { addr: SocketAddr },
}

/// Accepts connections until shutdown.
pub(crate) async fn accept(listener: TcpListener, events: mpsc::Sender<TcpEvent>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let (writer, queue) = mpsc::channel(WRITE_QUEUE);
                    if events.send(TcpEvent::Opened { addr, writer }).await.is_err() {
                        return;
                    }
                    tokio::spawn(connection(stream, addr, queue, events.clone(), shutdown.clone()));
                }
                Err(err) => {
                    warn!("SIP TCP accept failed: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn connection(
    stream: TcpStream,
    addr: SocketAddr,
    mut queue: mpsc::Receiver<Bytes>,
    events: mpsc::Sender<TcpEvent>,
    shutdown: CancellationToken,
) {
    debug!(%addr, "SIP TCP connection open");
    let (mut reader, mut writer) = stream.into_split();
    let mut framer = StreamFramer::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            outgoing = queue.recv() => match outgoing {
                Some(bytes) => {
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
            read = reader.read(&mut buf) => {
                let len = match read {
                    Ok(0) | Err(_) => break,
                    Ok(len) => len,
                };
                framer.push(buf.get(..len).unwrap_or_default());
                loop {
                    match framer.next_message() {
                        Ok(Some(bytes)) => {
                            if events.send(TcpEvent::Message { addr, bytes }).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(err) => {
                            debug!(%addr, "closing SIP TCP connection: {err}");
                            let _ = events.send(TcpEvent::Closed { addr }).await;
                            return;
                        }
                    }
                }
            }
        }
    }
    debug!(%addr, "SIP TCP connection closed");
    let _ = events.send(TcpEvent::Closed { addr }).await;
}

/// The stack's view of the open connections, by remote address.
pub(crate) struct Connections {
    writers: HashMap<SocketAddr, mpsc::Sender<Bytes>>,
    events: mpsc::Sender<TcpEvent>,
    shutdown: CancellationToken,
}

impl Connections {
    pub(crate) fn new(events: mpsc::Sender<TcpEvent>, shutdown: CancellationToken) -> Self {
        Self { writers: HashMap::new(), events, shutdown }
    }

    /// Applies a connection event; returns a message to hand to the user agent.
    pub(crate) fn on_event(&mut self, event: TcpEvent) -> Option<(SocketAddr, Vec<u8>)> {
        match event {
            TcpEvent::Opened { addr, writer } => {
                if self.writers.len() < MAX_CONNECTIONS {
                    self.writers.insert(addr, writer);
                }
                None
            }
            TcpEvent::Closed { addr } => {
                self.writers.remove(&addr);
                None
            }
            TcpEvent::Message { addr, bytes } => Some((addr, bytes)),
        }
    }

    /// Writes on the connection to `addr`, opening one if there is none.
    pub(crate) fn send(&mut self, addr: SocketAddr, bytes: Bytes) {
        if let Some(writer) = self.writers.get(&addr) {
            if writer.try_send(bytes).is_err() {
                debug!(%addr, "SIP TCP write queue full or closed; message dropped");
            }
            return;
        }
        let (writer, queue) = mpsc::channel(WRITE_QUEUE);
        let _ = writer.try_send(bytes);
        self.writers.insert(addr, writer);
        let events = self.events.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            match TcpStream::connect(addr).await {
                Ok(stream) => connection(stream, addr, queue, events, shutdown).await,
                Err(err) => {
                    warn!(%addr, "cannot open a SIP TCP connection: {err}");
                    let _ = events.send(TcpEvent::Closed { addr }).await;
                }
            }
        });
    }
}
