//! An RTMP client on `rml_rtmp`'s sans-I/O `ClientSession` (the handshake and chunk protocol of
//! an implementation independent of the server's): connect, publish or play, send FLV tags, and
//! hand back what the server sends. The load tool drives it fail-fast ([`RtmpConnection::connect`],
//! [`RtmpConnection::publish`], [`RtmpConnection::play`]); the end-to-end tests open it without
//! waiting ([`RtmpConnection::open`]) and watch every event, refusals included.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the server gets to answer a handshake, connect, publish or play.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RtmpError {
    #[error("{0:?} is not an rtmp:// URL")]
    NotRtmpUrl(String),
    #[error("cannot connect to {host}: {source}")]
    Connect { host: String, source: std::io::Error },
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("RTMP handshake: {0}")]
    Handshake(String),
    #[error("RTMP session: {0}")]
    Session(String),
    #[error("the server closed the connection")]
    Closed,
    #[error("no answer to {0}")]
    NoAnswer(&'static str),
    #[error("{what} refused: {reason}")]
    Refused { what: &'static str, reason: String },
}

fn session_error(err: impl std::fmt::Debug) -> RtmpError {
    RtmpError::Session(format!("{err:?}"))
}

/// `rtmp://127.0.0.1:1935/live` -> `127.0.0.1:1935` (port 1935 when the URL has none).
pub fn host_of(rtmp_url: &str) -> Result<String, RtmpError> {
    let rest = rtmp_url.strip_prefix("rtmp://").ok_or_else(|| RtmpError::NotRtmpUrl(rtmp_url.to_owned()))?;
    let host = rest.split('/').next().unwrap_or_default();
    Ok(if host.contains(':') { host.to_owned() } else { format!("{host}:1935") })
}

/// One RTMP connection. One task drives it.
pub struct RtmpConnection {
    stream: TcpStream,
    session: ClientSession,
    buffer: Vec<u8>,
    /// Events read but not yet handed out.
    pending: VecDeque<ClientSessionEvent>,
}

impl RtmpConnection {
    /// Opens a TCP connection, completes the handshake and sends `connect` to `app`, without
    /// waiting for the answer (it arrives as an event).
    pub async fn open(host: &str, app: &str) -> Result<RtmpConnection, RtmpError> {
        let mut stream =
            TcpStream::connect(host).await.map_err(|source| RtmpError::Connect { host: host.to_owned(), source })?;
        stream.set_nodelay(true)?;
        let mut handshake = Handshake::new(PeerType::Client);
        let p0p1 = handshake.generate_outbound_p0_and_p1().map_err(|e| RtmpError::Handshake(format!("{e:?}")))?;
        stream.write_all(&p0p1).await?;
        let mut buffer = vec![0u8; 64 * 1024];
        let leftover = loop {
            let n = tokio::time::timeout(ANSWER_TIMEOUT, stream.read(&mut buffer))
                .await
                .map_err(|_| RtmpError::NoAnswer("the handshake"))??;
            if n == 0 {
                return Err(RtmpError::Closed);
            }
            match handshake.process_bytes(&buffer[..n]).map_err(|e| RtmpError::Handshake(format!("{e:?}")))? {
                HandshakeProcessResult::InProgress { response_bytes } => stream.write_all(&response_bytes).await?,
                HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                    stream.write_all(&response_bytes).await?;
                    break remaining_bytes;
                }
            }
        };
        let (session, results) = ClientSession::new(ClientSessionConfig::new()).map_err(session_error)?;
        let mut connection = RtmpConnection { stream, session, buffer, pending: VecDeque::new() };
        connection.apply(results).await?;
        if !leftover.is_empty() {
            let results = connection.session.handle_input(&leftover).map_err(session_error)?;
            connection.apply(results).await?;
        }
        let request = connection.session.request_connection(app.to_owned()).map_err(session_error)?;
        connection.apply(vec![request]).await?;
        Ok(connection)
    }

    /// [`Self::open`], then waits until the server accepts the `connect`.
    pub async fn connect(host: &str, app: &str) -> Result<RtmpConnection, RtmpError> {
        let mut connection = Self::open(host, app).await?;
        connection.answer("connect", |e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted)).await?;
        Ok(connection)
    }

    /// Asks to publish on `key` (the answer arrives as an event).
    pub async fn request_publish(&mut self, key: &str) -> Result<(), RtmpError> {
        let request =
            self.session.request_publishing(key.to_owned(), PublishRequestType::Live).map_err(session_error)?;
        self.apply(vec![request]).await
    }

    /// Asks to play `stream`, the part after the application name (the answer arrives as an event).
    pub async fn request_play(&mut self, stream: &str) -> Result<(), RtmpError> {
        let request = self.session.request_playback(stream.to_owned()).map_err(session_error)?;
        self.apply(vec![request]).await
    }

    /// Asks to publish on `key` and waits until the server accepts.
    pub async fn publish(&mut self, key: &str) -> Result<(), RtmpError> {
        self.request_publish(key).await?;
        self.answer("publish", |e| matches!(e, ClientSessionEvent::PublishRequestAccepted)).await
    }

    /// Asks to play `stream` and waits until the server accepts.
    pub async fn play(&mut self, stream: &str) -> Result<(), RtmpError> {
        self.request_play(stream).await?;
        self.answer("play", |e| matches!(e, ClientSessionEvent::PlaybackRequestAccepted)).await
    }

    async fn answer(
        &mut self,
        what: &'static str,
        accepted: impl Fn(&ClientSessionEvent) -> bool,
    ) -> Result<(), RtmpError> {
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
                        return Err(RtmpError::Refused { what, reason: code });
                    }
                    ClientSessionEvent::ConnectionRequestRejected { description } => {
                        return Err(RtmpError::Refused { what, reason: description });
                    }
                    _ => {}
                }
            }
            let n =
                tokio::time::timeout_at(deadline, self.read_some()).await.map_err(|_| RtmpError::NoAnswer(what))??;
            self.process(n).await?;
        }
    }

    async fn apply(&mut self, results: Vec<ClientSessionResult>) -> Result<(), RtmpError> {
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => self.stream.write_all(&packet.bytes).await?,
                ClientSessionResult::RaisedEvent(event) => self.pending.push_back(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    /// The next event from the server (cancel-safe: the read it waits on is).
    pub async fn next_event(&mut self) -> Result<ClientSessionEvent, RtmpError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            let n = self.read_some().await?;
            self.process(n).await?;
        }
    }

    /// Waits for bytes from the server; cancel-safe, so a caller can wait on it beside its own
    /// timers. Hand the count to [`Self::process`] (keeping the events) or [`Self::absorb`].
    pub async fn read_some(&mut self) -> Result<usize, RtmpError> {
        let n = self.stream.read(&mut self.buffer).await?;
        if n == 0 {
            return Err(RtmpError::Closed);
        }
        Ok(n)
    }

    /// Processes `n` bytes [`Self::read_some`] read: answers what the session answers, queues
    /// the events (for [`Self::take_events`] and [`Self::next_event`]).
    pub async fn process(&mut self, n: usize) -> Result<(), RtmpError> {
        let results = self.session.handle_input(&self.buffer[..n]).map_err(session_error)?;
        self.apply(results).await
    }

    /// Processes `n` bytes [`Self::read_some`] read (acknowledgements, pings), dropping events.
    pub async fn absorb(&mut self, n: usize) -> Result<(), RtmpError> {
        self.process(n).await?;
        self.pending.clear();
        Ok(())
    }

    /// Every event queued so far.
    pub fn take_events(&mut self) -> Vec<ClientSessionEvent> {
        self.pending.drain(..).collect()
    }

    /// `onMetaData` with a video size, H.264 and AAC, and the frame rate when given.
    pub async fn send_metadata(&mut self, width: u32, height: u32, fps: Option<f32>) -> Result<(), RtmpError> {
        let mut metadata = StreamMetadata::new();
        metadata.video_width = Some(width);
        metadata.video_height = Some(height);
        metadata.video_frame_rate = fps;
        metadata.video_codec_id = Some(7);
        metadata.audio_codec_id = Some(10);
        let packet = self.session.publish_metadata(&metadata).map_err(session_error)?;
        self.apply(vec![packet]).await
    }

    pub async fn send_video(&mut self, timestamp_ms: u32, tag: Bytes) -> Result<(), RtmpError> {
        let packet =
            self.session.publish_video_data(tag, RtmpTimestamp::new(timestamp_ms), false).map_err(session_error)?;
        self.apply(vec![packet]).await
    }

    pub async fn send_audio(&mut self, timestamp_ms: u32, tag: Bytes) -> Result<(), RtmpError> {
        let packet =
            self.session.publish_audio_data(tag, RtmpTimestamp::new(timestamp_ms), false).map_err(session_error)?;
        self.apply(vec![packet]).await
    }

    /// Sends raw bytes past the session (malformed input on purpose).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), RtmpError> {
        Ok(self.stream.write_all(bytes).await?)
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
