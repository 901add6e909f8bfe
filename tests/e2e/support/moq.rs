//! MoQ helpers for the end-to-end tests: the stock tools (moq-clock-ietf, moq-pub, moq-sub from
//! crates.io, installed by scripts/test), client tokens, and a small in-test client on quinn and
//! moq-transport for what the tools cannot show: a wrong ALPN, malformed control messages, and
//! the exact close code a refused session gets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use moq_transport::session::transport::quinn as wtq;
use moq_transport::session::transport::quinn::quinn;
use moq_transport::session::{Publisher, Session, Subscriber, Transport};
use moq_transport::setup::AuthorizationToken;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::Value;

use super::TestServer;

/// A stock MoQ tool, from cargo's bin directory.
pub fn tool(name: &str) -> PathBuf {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let path = cargo_home.join("bin").join(name);
    assert!(path.exists(), "{} is missing: scripts/test installs it (cargo install --locked {name})", path.display());
    path
}

/// Where a test server's MoQ listener is and which CA it was issued by.
#[derive(Debug, Clone)]
pub struct MoqTarget {
    pub addr: SocketAddr,
    pub ca: PathBuf,
}

impl MoqTarget {
    pub fn of(server: &TestServer) -> MoqTarget {
        let url = server.service("moq");
        let addr = url.strip_prefix("https://").expect("moq service is https://").parse().expect("moq address");
        MoqTarget { addr, ca: PathBuf::from(server.service("moq-ca")) }
    }

    /// `https://127.0.0.1:<port><path>` (WebTransport).
    pub fn https(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// `moqt://127.0.0.1:<port><path>` (raw QUIC).
    pub fn moqt(&self, path: &str) -> String {
        format!("moqt://{}{path}", self.addr)
    }
}

/// A client token for `identity` in `room` with `publish`/`subscribe` grants.
pub async fn token(server: &TestServer, room: &str, identity: &str, publish: bool, subscribe: bool) -> String {
    server.token(room, identity, serde_json::json!({"publish": publish, "subscribe": subscribe})).await
}

/// A token signed with the test server's key, with claims of our choosing (expired, for a room
/// that does not exist, ...).
pub fn forge_token(room: &str, identity: &str, exp_offset_s: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = serde_json::json!({
        "iss": "junction", "sub": identity, "room": room,
        "grants": {"publish": true, "subscribe": true},
        "iat": now - 100, "nbf": now - 100, "exp": now + exp_offset_s,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(super::server::API_KEY.as_bytes()),
    )
    .unwrap()
}

/// The value `moq-clock-ietf --auth-token` takes for a Junction token (type 0, base64url).
pub fn auth_token_arg(jwt: &str) -> String {
    use base64::Engine;
    format!("0:{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jwt))
}

/// A QUIC client endpoint trusting the server's development CA and offering `alpn`.
pub fn client(ca: &Path, alpn: &[u8]) -> quinn::Endpoint {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let pem = std::fs::read(ca).expect("read CA");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.expect("CA PEM")).expect("add CA");
    }
    let tls = junction_testkit::moq::client_tls(roots, alpn);
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// A QUIC connection with ALPN `alpn` (the handshake may fail: that is what some tests check).
pub async fn quic(target: &MoqTarget, alpn: &[u8]) -> Result<quinn::Connection, quinn::ConnectionError> {
    let endpoint = client(&target.ca, alpn);
    endpoint.connect(target.addr, "localhost").unwrap().await
}

/// A MoQ session over raw QUIC; the path (with its query) travels in SETUP.
pub async fn raw_session(
    target: &MoqTarget,
    path: &str,
    tokens: Vec<AuthorizationToken>,
) -> (quinn::Connection, Result<(Session, Publisher, Subscriber), moq_transport::session::SessionError>) {
    let connection = quic(target, b"moqt-18").await.expect("QUIC handshake");
    let url = url::Url::parse(&target.moqt(path)).unwrap();
    let session = wtq::Session::raw(connection.clone(), url, wtq::proto::ConnectResponse::OK);
    let setup = Session::connect_with_tokens(session.into(), None, Transport::RawQuic, tokens).await;
    (connection, setup)
}

/// A MoQ session over WebTransport; the path travels in the CONNECT URL.
pub async fn webtransport_session(
    target: &MoqTarget,
    path: &str,
) -> (wtq::Session, Result<(Session, Publisher, Subscriber), moq_transport::session::SessionError>) {
    let connection = quic(target, wtq::ALPN.as_bytes()).await.expect("QUIC handshake");
    let request =
        wtq::proto::ConnectRequest::new(url::Url::parse(&target.https(path)).unwrap()).with_protocol("moqt-18");
    let session = wtq::Session::connect(connection, request).await.expect("WebTransport CONNECT");
    let setup = Session::connect(session.clone().into(), None, Transport::WebTransport).await;
    (session, setup)
}

/// The (code, reason) a raw-QUIC session was closed with by the server.
pub async fn raw_close(connection: &quinn::Connection) -> (u64, String) {
    match tokio::time::timeout(Duration::from_secs(10), connection.closed()).await.expect("server closes") {
        quinn::ConnectionError::ApplicationClosed(close) => {
            (close.error_code.into_inner(), String::from_utf8_lossy(&close.reason).into_owned())
        }
        other => panic!("expected an application close, got {other:?}"),
    }
}

/// The (code, reason) a WebTransport session was closed with (CLOSE_WEBTRANSPORT_SESSION).
pub async fn webtransport_close(session: &wtq::Session) -> (u32, String) {
    match tokio::time::timeout(Duration::from_secs(10), session.closed()).await.expect("server closes") {
        wtq::SessionError::WebTransportError(wtq::WebTransportError::Closed(code, reason)) => (code, reason),
        other => panic!("expected CLOSE_WEBTRANSPORT_SESSION, got {other:?}"),
    }
}

/// A peer of `room` as the REST API shows it, once it satisfies `ready`.
pub async fn wait_for_peer(server: &TestServer, room: &str, identity: &str, ready: impl Fn(&Value) -> bool) -> Value {
    super::eventually(&format!("peer {identity} in room {room}"), Duration::from_secs(20), || async {
        let (status, body) = server.call(reqwest::Method::GET, &format!("/v1/rooms/{room}"), None).await;
        if status != 200 {
            return None;
        }
        body["room"]["peers"].as_array()?.iter().find(|p| p["identity"] == identity && ready(p)).cloned()
    })
    .await
}

/// Follows a catalog track over its own raw-QUIC session: every version published arrives on
/// the returned channel. Abort the task to end the session.
pub async fn watch_catalog(
    target: &MoqTarget,
    path: &str,
    namespace: &str,
) -> (tokio::task::JoinHandle<()>, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    use moq_transport::coding::TrackNamespace;
    use moq_transport::serve::{Track, TrackReaderMode};

    let (connection, setup) = raw_session(target, path, Vec::new()).await;
    let (session, _publisher, mut subscriber) = setup.expect("SETUP");
    let (writer, reader) = Track::new(TrackNamespace::from_utf8_path(namespace), ".catalog").produce();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let _connection = connection;
        let follow = async {
            let Ok(TrackReaderMode::Subgroups(mut groups)) = reader.mode().await else { return };
            while let Ok(Some(mut group)) = groups.next().await {
                if let Ok(Some(object)) = group.read_next().await
                    && let Ok(catalog) = serde_json::from_slice(&object)
                    && tx.send(catalog).is_err()
                {
                    return;
                }
            }
        };
        tokio::select! {
            _ = session.run() => {}
            _ = subscriber.subscribe(writer) => {}
            _ = follow => {}
        }
    });
    (task, rx)
}

/// Waits for a catalog version that satisfies `check`.
pub async fn catalog_where(
    catalogs: &mut tokio::sync::mpsc::UnboundedReceiver<Value>,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    loop {
        match tokio::time::timeout_at(deadline, catalogs.recv()).await {
            Ok(Some(catalog)) if check(&catalog) => return catalog,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the catalog subscription ended before {what}"),
            Err(_) => panic!("no catalog with {what} within 25 s"),
        }
    }
}
