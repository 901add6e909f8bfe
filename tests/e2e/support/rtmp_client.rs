//! The RTMP client of the tests: junction-testkit's (on `rml_rtmp`'s `ClientSession`, an
//! implementation independent of the server's), kept open whatever the server answers, with
//! every event it raised recorded — status codes, media, and whether the server closed the
//! connection.

use std::time::Duration;

use bytes::Bytes;
use junction_testkit::rtmp::{RtmpConnection, RtmpError};
use rml_rtmp::sessions::ClientSessionEvent;

/// `rtmp://127.0.0.1:1935/live` -> `127.0.0.1:1935`.
pub fn host_of(rtmp_url: &str) -> String {
    junction_testkit::rtmp::host_of(rtmp_url).expect("an rtmp:// URL")
}

pub struct RtmpClient {
    connection: RtmpConnection,
    /// Everything the session raised, in order.
    pub events: Vec<ClientSessionEvent>,
    /// The server closed the connection.
    pub closed: bool,
}

impl RtmpClient {
    /// Opens a TCP connection and completes the RTMP handshake and `connect` to `app` (accepted
    /// or not: see [`RtmpClient::connected`]).
    pub async fn connect(rtmp_url: &str, app: &str) -> RtmpClient {
        let connection = RtmpConnection::open(&host_of(rtmp_url), app).await.expect("RTMP connection");
        let mut client = RtmpClient { connection, events: Vec::new(), closed: false };
        client.events.extend(client.connection.take_events());
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

    /// Reads from the server for up to `timeout`, or until the connection closes or one event
    /// matches `done`. Returns whether such an event arrived.
    pub async fn wait_for(&mut self, timeout: Duration, done: impl Fn(&ClientSessionEvent) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = self.events.len();
        loop {
            if self.events.get(seen..).unwrap_or_default().iter().any(&done) {
                return true;
            }
            seen = self.events.len();
            if self.closed {
                return false;
            }
            let read = match tokio::time::timeout_at(deadline, self.connection.read_some()).await {
                Err(_) => return false,
                Ok(read) => read,
            };
            match read {
                Err(_) => self.closed = true,
                Ok(n) => match self.connection.process(n).await {
                    Ok(()) => self.events.extend(self.connection.take_events()),
                    Err(RtmpError::Io(_)) => self.closed = true,
                    Err(err) => panic!("the server sent something rml_rtmp cannot read: {err}"),
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
        let sent = self.connection.request_publish(key).await;
        self.sent(sent);
        self.answer(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted)).await
    }

    /// Asks to play `stream` (the part after the application name).
    pub async fn play(&mut self, stream: &str) -> Result<(), String> {
        let sent = self.connection.request_play(stream).await;
        self.sent(sent);
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
        let sent = self.connection.send_metadata(width, height, None).await;
        self.sent(sent);
    }

    pub async fn send_video(&mut self, timestamp_ms: u32, tag: Bytes) {
        let sent = self.connection.send_video(timestamp_ms, tag).await;
        self.sent(sent);
    }

    pub async fn send_audio(&mut self, timestamp_ms: u32, tag: Bytes) {
        let sent = self.connection.send_audio(timestamp_ms, tag).await;
        self.sent(sent);
    }

    /// Sends raw bytes past the session (malformed input on purpose).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let sent = self.connection.send_raw(bytes).await;
        self.sent(sent);
    }

    /// A write the server may have cut short marks the connection closed; anything else the
    /// client could not do is a bug of the test.
    fn sent(&mut self, result: Result<(), RtmpError>) {
        match result {
            Ok(()) => {}
            // What the server sent before closing may still be waiting to be read: `closed` is
            // for the read side to find out.
            Err(RtmpError::Io(_) | RtmpError::Closed) => {}
            Err(err) => panic!("the RTMP client could not send: {err}"),
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
