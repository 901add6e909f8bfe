//! A light RTMP client on `rml_rtmp`'s sans-I/O `ClientSession` (the handshake and chunk
//! protocol of an implementation independent of the server's): connect, publish or play, send
//! FLV tags, and hand back what the server sends. One tokio task drives one connection.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the server gets to answer a handshake, connect, publish or play.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// `rtmp://127.0.0.1:1935/live` -> `127.0.0.1:1935`.
pub fn host_of(rtmp_url: &str) -> anyhow::Result<String> {
    let rest = rtmp_url.strip_prefix("rtmp://").with_context(|| format!("{rtmp_url:?} is not an rtmp:// URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    Ok(if host.contains(':') { host.to_owned() } else { format!("{host}:1935") })
}

pub struct RtmpConnection {
    stream: TcpStream,
    session: ClientSession,
    buffer: Vec<u8>,
    /// Events read but not yet handed out.
    pending: std::collections::VecDeque<ClientSessionEvent>,
}

impl RtmpConnection {
    /// Opens a TCP connection, completes the handshake and `connect`s to `app`.
    pub async fn connect(host: &str, app: &str) -> anyhow::Result<RtmpConnection> {
        let mut stream = TcpStream::connect(host).await.with_context(|| format!("cannot connect to {host}"))?;
        stream.set_nodelay(true)?;
        let mut handshake = Handshake::new(PeerType::Client);
        stream.write_all(&handshake.generate_outbound_p0_and_p1()?).await?;
        let mut buffer = vec![0u8; 64 * 1024];
        let leftover = loop {
            let n = tokio::time::timeout(ANSWER_TIMEOUT, stream.read(&mut buffer))
                .await
                .context("no handshake answer")??;
            if n == 0 {
                bail!("the server closed the connection during the handshake");
            }
            match handshake.process_bytes(&buffer[..n])? {
                HandshakeProcessResult::InProgress { response_bytes } => stream.write_all(&response_bytes).await?,
                HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                    stream.write_all(&response_bytes).await?;
                    break remaining_bytes;
                }
            }
        };
        let (session, results) = ClientSession::new(ClientSessionConfig::new())?;
        let mut connection = RtmpConnection { stream, session, buffer, pending: Default::default() };
        connection.apply(results).await?;
        if !leftover.is_empty() {
            let results = connection.session.handle_input(&leftover)?;
            connection.apply(results).await?;
        }
        let request = connection.session.request_connection(app.to_owned())?;
        connection.apply(vec![request]).await?;
        connection
            .answer("connect", |e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))
            .await
            .map(|()| connection)
    }

    /// Asks to publish on `key` and waits until the server accepts.
    pub async fn publish(&mut self, key: &str) -> anyhow::Result<()> {
        let request = self.session.request_publishing(key.to_owned(), PublishRequestType::Live)?;
        self.apply(vec![request]).await?;
        self.answer("publish", |e| matches!(e, ClientSessionEvent::PublishRequestAccepted)).await
    }

    /// Asks to play `stream` and waits until the server accepts.
    pub async fn play(&mut self, stream: &str) -> anyhow::Result<()> {
        let request = self.session.request_playback(stream.to_owned())?;
        self.apply(vec![request]).await?;
        self.answer("play", |e| matches!(e, ClientSessionEvent::PlaybackRequestAccepted)).await
    }

    async fn answer(&mut self, what: &str, accepted: impl Fn(&ClientSessionEvent) -> bool) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            while let Some(event) = self.pending.pop_front() {
                if accepted(&event) {
                    return Ok(());
                }
                match event {
                    ClientSessionEvent::UnhandleableOnStatusCode { code }
                        if code.contains("Failed") || code.contains("Bad") || code.contains("NotFound") =>
                    {
                        bail!("{what} refused: {code}")
                    }
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        bail!("{what} refused: {description}")
                    }
                    _ => {}
                }
            }
            tokio::time::timeout_at(deadline, self.read_more())
                .await
                .with_context(|| format!("no answer to {what}"))??;
        }
    }

    async fn apply(&mut self, results: Vec<ClientSessionResult>) -> anyhow::Result<()> {
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => self.stream.write_all(&packet.bytes).await?,
                ClientSessionResult::RaisedEvent(event) => self.pending.push_back(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    /// Reads once from the server and processes what came; fails when the connection closed.
    async fn read_more(&mut self) -> anyhow::Result<()> {
        let n = self.stream.read(&mut self.buffer).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        let results = self.session.handle_input(&self.buffer[..n])?;
        self.apply(results).await
    }

    /// The next event from the server (cancel-safe: the read it waits on is).
    pub async fn next_event(&mut self) -> anyhow::Result<ClientSessionEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            self.read_more().await?;
        }
    }

    /// Waits for bytes from the server; cancel-safe, so a publisher can wait on it beside its
    /// frame timers. Hand the count to [`Self::absorb`].
    pub async fn read_some(&mut self) -> anyhow::Result<usize> {
        let n = self.stream.read(&mut self.buffer).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        Ok(n)
    }

    /// Processes `n` bytes [`Self::read_some`] read (acknowledgements, pings), dropping events.
    pub async fn absorb(&mut self, n: usize) -> anyhow::Result<()> {
        let results = self.session.handle_input(&self.buffer[..n])?;
        self.apply(results).await?;
        self.pending.clear();
        Ok(())
    }

    pub async fn send_metadata(&mut self, width: u16, height: u16, fps: u32) -> anyhow::Result<()> {
        let mut metadata = StreamMetadata::new();
        metadata.video_width = Some(u32::from(width));
        metadata.video_height = Some(u32::from(height));
        metadata.video_frame_rate = Some(fps as f32);
        metadata.video_codec_id = Some(7);
        metadata.audio_codec_id = Some(10);
        let packet = self.session.publish_metadata(&metadata)?;
        self.apply(vec![packet]).await
    }

    pub async fn send_video(&mut self, timestamp_ms: u32, tag: Bytes) -> anyhow::Result<()> {
        let packet = self.session.publish_video_data(tag, RtmpTimestamp::new(timestamp_ms), false)?;
        self.apply(vec![packet]).await
    }

    pub async fn send_audio(&mut self, timestamp_ms: u32, tag: Bytes) -> anyhow::Result<()> {
        let packet = self.session.publish_audio_data(tag, RtmpTimestamp::new(timestamp_ms), false)?;
        self.apply(vec![packet]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_from_rtmp_urls() {
        assert_eq!(host_of("rtmp://127.0.0.1:1935/live").unwrap(), "127.0.0.1:1935");
        assert_eq!(host_of("rtmp://example.com/live").unwrap(), "example.com:1935");
        assert!(host_of("http://x").is_err());
    }
}
