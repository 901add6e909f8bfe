//! Clients for the browser transport's tests: a WebSocket signalling client (tokio-tungstenite)
//! that speaks the JSON protocol of `docs/protocol-websocket.md`, and `/metrics` readers. The
//! Chromium scenarios in `tests/browser/` run through `support::chromium`.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::TestServer;

/// How long a test waits for one expected message.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// One signalling socket.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Messages read while looking for another one, in order.
    backlog: Vec<Value>,
    /// The `welcome` this socket got.
    pub welcome: Value,
    /// Messages read on this session after a welcome (what a resume says it `received`).
    pub received: u64,
}

impl WsClient {
    /// Opens `/ws` with `query` (e.g. `token=...`) and reads the `welcome`.
    pub async fn connect(server: &TestServer, query: &str) -> WsClient {
        let mut client = Self::connect_raw(server, query).await;
        client.welcome = client.expect("welcome").await;
        client
    }

    /// Opens `/ws` without reading anything.
    pub async fn connect_raw(server: &TestServer, query: &str) -> WsClient {
        let url = format!("{}/ws?{query}", server.base.replacen("http", "ws", 1));
        let (stream, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("websocket connect");
        WsClient { stream, backlog: Vec::new(), welcome: Value::Null, received: 0 }
    }

    /// Resumes the session of a client whose connection dropped after it had read `received`
    /// messages, as the SDK does; reads the `welcome`.
    pub async fn resume(server: &TestServer, token: &str, session: &str, key: &str, received: u64) -> WsClient {
        let mut client =
            Self::connect(server, &format!("token={token}&resume={session}&key={key}&received={received}")).await;
        if client.welcome["resumed"] == true {
            client.received = received;
        }
        client
    }

    /// One text frame from the server, parsed and counted.
    fn read(&mut self, text: &str) -> Value {
        let value: Value = serde_json::from_str(text).expect("JSON from the server");
        if value["type"] != "welcome" {
            self.received += 1;
        }
        value
    }

    /// Opens a socket with a token and joins its room; returns the client and the `joined`.
    pub async fn join(server: &TestServer, token: &str) -> (WsClient, Value) {
        let mut client = Self::connect(server, &format!("token={token}")).await;
        client.send(json!({"type": "join"})).await;
        let joined = client.expect("joined").await;
        (client, joined)
    }

    pub fn session(&self) -> &str {
        self.welcome["session"].as_str().expect("session id in welcome")
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.stream.send(Message::binary(bytes.to_vec())).await.expect("send");
    }

    /// The next JSON message (the backlog first); `None` when the socket closed.
    pub async fn next(&mut self) -> Option<Value> {
        if !self.backlog.is_empty() {
            return Some(self.backlog.remove(0));
        }
        loop {
            let frame = tokio::time::timeout(RECV_TIMEOUT, self.stream.next()).await.expect("a message in time");
            match frame {
                Some(Ok(Message::Text(text))) => return Some(self.read(&text)),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Reads until a message of `kind` arrives; the others are kept for later.
    pub async fn expect(&mut self, kind: &str) -> Value {
        if let Some(at) = self.backlog.iter().position(|m| m["type"] == kind) {
            return self.backlog.remove(at);
        }
        loop {
            let frame = tokio::time::timeout(RECV_TIMEOUT, self.stream.next())
                .await
                .unwrap_or_else(|_| panic!("no {kind} within {RECV_TIMEOUT:?}; got {:?}", self.backlog));
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let value = self.read(&text);
                    if value["type"] == kind {
                        return value;
                    }
                    self.backlog.push(value);
                }
                Some(Ok(Message::Close(frame))) => panic!("socket closed ({frame:?}) while waiting for {kind}"),
                None | Some(Err(_)) => panic!("socket gone while waiting for {kind}"),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Reads until the server closes the socket; returns the close code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            let frame = tokio::time::timeout(RECV_TIMEOUT, self.stream.next()).await.expect("close in time");
            match frame {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(Message::Text(text))) => {
                    let value = self.read(&text);
                    self.backlog.push(value);
                }
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    }

    /// Nothing of `kind` arrives within `wait` (other messages are kept).
    pub async fn assert_silent(&mut self, kind: &str, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(frame) = tokio::time::timeout_at(deadline, self.stream.next()).await {
            if let Some(Ok(Message::Text(text))) = frame {
                let value = self.read(&text);
                assert_ne!(value["type"], kind, "unexpected {value}");
                self.backlog.push(value);
            } else if !matches!(frame, Some(Ok(_))) {
                break;
            }
        }
    }

    /// Closes the TCP connection without a WebSocket close frame, as a network failure would.
    /// Returns how many messages it had read (for [`WsClient::resume`]).
    pub async fn drop_connection(self) -> u64 {
        let stream = self.stream.into_inner();
        drop(stream);
        self.received
    }

    /// Closes politely with a close frame of `code`.
    pub async fn close(mut self, code: u16) {
        let frame =
            tokio_tungstenite::tungstenite::protocol::CloseFrame { code: CloseCode::from(code), reason: "".into() };
        let _ = self.stream.close(Some(frame)).await;
    }
}

/// The value of a Prometheus sample (`name` with its labels, exactly), if present.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

/// `/metrics` of `server`.
pub async fn metrics(server: &TestServer) -> String {
    reqwest::get(server.url("/metrics")).await.expect("metrics").text().await.expect("metrics text")
}
