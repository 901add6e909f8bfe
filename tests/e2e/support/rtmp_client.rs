//! An RTMP client for tests, on `rml_rtmp`'s `ClientSession` (an implementation independent of
//! the server's): connect, publish or play, send FLV tags, and watch what the server answers —
//! status codes, media, and whether it closed the connection.

use std::time::Duration;

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType, StreamMetadata,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `rtmp://127.0.0.1:1935/live` -> `127.0.0.1:1935`.
pub fn host_of(rtmp_url: &str) -> String {
    let rest = rtmp_url.strip_prefix("rtmp://").expect("an rtmp:// URL");
    rest.split('/').next().expect("host").to_owned()
}

pub struct RtmpClient {
    stream: TcpStream,
    session: ClientSession,
    /// Everything the session raised, in order.
    pub events: Vec<ClientSessionEvent>,
    /// The server closed the connection.
    pub closed: bool,
}

impl RtmpClient {
    /// Opens a TCP connection and completes the RTMP handshake and `connect` to `app`.
    pub async fn connect(rtmp_url: &str, app: &str) -> RtmpClient {
        let mut stream = TcpStream::connect(host_of(rtmp_url)).await.expect("TCP connect");
        let mut handshake = Handshake::new(PeerType::Client);
        let p0p1 = handshake.generate_outbound_p0_and_p1().expect("p0+p1");
        stream.write_all(&p0p1).await.expect("write handshake");
        let mut buffer = vec![0u8; 8192];
        let leftover = loop {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
                .await
                .expect("handshake answer in time")
                .expect("read handshake");
            assert!(n > 0, "server closed during the handshake");
            match handshake.process_bytes(&buffer[..n]).expect("handshake") {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    stream.write_all(&response_bytes).await.expect("write handshake");
                }
                HandshakeProcessResult::Completed { response_bytes, remaining_bytes } => {
                    stream.write_all(&response_bytes).await.expect("write handshake");
                    break remaining_bytes;
                }
            }
        };
        let (session, results) = ClientSession::new(ClientSessionConfig::new()).expect("client session");
        let mut client = RtmpClient { stream, session, events: Vec::new(), closed: false };
        client.handle(results).await;
        if !leftover.is_empty() {
            let results = client.session.handle_input(&leftover).expect("server bytes");
            client.handle(results).await;
        }
        let request = client.session.request_connection(app.to_owned()).expect("connect request");
        client.handle(vec![request]).await;
        client
            .wait_for(Duration::from_secs(5), |e| {
                matches!(
                    e,
                    ClientSessionEvent::ConnectionRequestAccepted
                        | ClientSessionEvent::ConnectionRequestRejected { .. }
                )
            })
            .await;
        client
    }

    pub fn connected(&self) -> bool {
        self.events.contains(&ClientSessionEvent::ConnectionRequestAccepted)
    }

    async fn handle(&mut self, results: Vec<ClientSessionResult>) {
        for result in results {
            match result {
                ClientSessionResult::OutboundResponse(packet) => {
                    if self.stream.write_all(&packet.bytes).await.is_err() {
                        self.closed = true;
                    }
                }
                ClientSessionResult::RaisedEvent(event) => self.events.push(event),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
    }

    /// Reads from the server for up to `timeout`, or until the connection closes or one event
    /// matches `done`. Returns whether such an event arrived.
    pub async fn wait_for(&mut self, timeout: Duration, done: impl Fn(&ClientSessionEvent) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = self.events.len();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            if self.events.get(seen..).unwrap_or_default().iter().any(&done) {
                return true;
            }
            seen = self.events.len();
            if self.closed {
                return false;
            }
            let read = match tokio::time::timeout_at(deadline, self.stream.read(&mut buffer)).await {
                Err(_) => return false,
                Ok(read) => read,
            };
            match read {
                Ok(0) | Err(_) => self.closed = true,
                Ok(n) => match self.session.handle_input(&buffer[..n]) {
                    Ok(results) => self.handle(results).await,
                    Err(err) => panic!("the server sent something rml_rtmp cannot read: {err:?}"),
                },
            }
        }
    }

    /// Waits up to `timeout` for the server to close the connection.
    pub async fn wait_closed(&mut self, timeout: Duration) -> bool {
        self.wait_for(timeout, |_| false).await;
        self.closed
    }

    /// Asks to publish on `key`; returns `Ok` once publishing, or the status code the server
    /// refused with.
    pub async fn publish(&mut self, key: &str) -> Result<(), String> {
        let request =
            self.session.request_publishing(key.to_owned(), PublishRequestType::Live).expect("publish request");
        self.handle(vec![request]).await;
        self.answer(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted)).await
    }

    /// Asks to play `stream` (the part after the application name).
    pub async fn play(&mut self, stream: &str) -> Result<(), String> {
        let request = self.session.request_playback(stream.to_owned()).expect("play request");
        self.handle(vec![request]).await;
        self.answer(|e| matches!(e, ClientSessionEvent::PlaybackRequestAccepted)).await
    }

    async fn answer(&mut self, accepted: impl Fn(&ClientSessionEvent) -> bool) -> Result<(), String> {
        let answered =
            |e: &ClientSessionEvent| accepted(e) || matches!(e, ClientSessionEvent::UnhandleableOnStatusCode { .. });
        self.wait_for(Duration::from_secs(5), answered).await;
        if self.events.iter().any(&accepted) {
            return Ok(());
        }
        Err(self.status_codes().last().cloned().unwrap_or_else(|| "no answer".to_owned()))
    }

    /// The `onStatus` codes the session did not handle itself (errors, notifications).
    pub fn status_codes(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ClientSessionEvent::UnhandleableOnStatusCode { code } => Some(code.clone()),
                _ => None,
            })
            .collect()
    }

    pub async fn send_metadata(&mut self, width: u32, height: u32) {
        let mut metadata = StreamMetadata::new();
        metadata.video_width = Some(width);
        metadata.video_height = Some(height);
        metadata.video_codec_id = Some(7);
        metadata.audio_codec_id = Some(10);
        let packet = self.session.publish_metadata(&metadata).expect("metadata");
        self.handle(vec![packet]).await;
    }

    pub async fn send_video(&mut self, timestamp_ms: u32, tag: Bytes) {
        let packet = self.session.publish_video_data(tag, RtmpTimestamp::new(timestamp_ms), false).expect("video");
        self.handle(vec![packet]).await;
    }

    pub async fn send_audio(&mut self, timestamp_ms: u32, tag: Bytes) {
        let packet = self.session.publish_audio_data(tag, RtmpTimestamp::new(timestamp_ms), false).expect("audio");
        self.handle(vec![packet]).await;
    }

    /// Sends raw bytes past the session (malformed input on purpose).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        if self.stream.write_all(bytes).await.is_err() {
            self.closed = true;
        }
    }

    /// Video and audio tags received, as (is_video, timestamp, body).
    pub fn media(&self) -> Vec<(bool, u32, Bytes)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ClientSessionEvent::VideoDataReceived { timestamp, data } => {
                    Some((true, timestamp.value, data.clone()))
                }
                ClientSessionEvent::AudioDataReceived { timestamp, data } => {
                    Some((false, timestamp.value, data.clone()))
                }
                _ => None,
            })
            .collect()
    }
}
