//! From an incoming QUIC connection to an admitted session: the TLS handshake (ALPN `h3` for
//! WebTransport, `moqt-18` for raw QUIC; anything else fails the handshake with TLS
//! `no_application_protocol`), the WebTransport CONNECT, the MoQT SETUP exchange, then admission
//! (room from the path, token from the URL or SETUP) and the join, all within one deadline
//! (`moq.handshake_timeout_s`). A failure at any step closes this connection with the draft's
//! code and a reason; nothing else is affected. The admitted session runs under
//! [`supervise::contain`]: a panic in it ends that session with INTERNAL_ERROR.

use std::sync::Arc;
use std::time::Duration;

use junction_auth::Authority;
use junction_core::TransportKind;
use junction_engine::gate::ConnectionPermit;
use junction_engine::{Engine, JoinRequest, supervise};
use moq_transport::coding::Value;
use moq_transport::session::transport::quinn as wtq;
use moq_transport::session::{Session, Transport};
use moq_transport::setup::{DraftVersion, ParameterType};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span};
use url::Url;

use crate::admission;
use crate::codecs;
use crate::config::MoqConfig;
use crate::congestion::ScheduledSession;
use crate::error::{AdmissionError, Termination};
use crate::hub::Hub;
use crate::session::{self, SessionParts, close};

/// HTTP/3 H3_NO_ERROR, for closing a connection whose WebTransport handshake did not complete.
const H3_NO_ERROR: wtq::quinn::VarInt = wtq::quinn::VarInt::from_u32(0x100);

/// What every connection task shares.
pub struct Context {
    pub engine: Engine,
    pub authority: Authority,
    pub hub: Hub,
    pub shutdown: CancellationToken,
    /// QUIC handshake + WebTransport CONNECT + SETUP, together.
    pub handshake_timeout: Duration,
    pub limits: Arc<MoqConfig>,
}

/// Serves one incoming connection until its session ends; `permit` is its place under the
/// connection caps.
pub async fn serve(incoming: wtq::quinn::Incoming, context: Arc<Context>, permit: ConnectionPermit) {
    let remote = incoming.remote_address();
    let span = info_span!("moq", %remote, room = tracing::field::Empty, peer = tracing::field::Empty);
    serve_inner(incoming, context).instrument(span).await;
    drop(permit);
}

async fn serve_inner(incoming: wtq::quinn::Incoming, context: Arc<Context>) {
    let deadline = Instant::now() + context.handshake_timeout;
    let connection = match tokio::time::timeout_at(deadline, incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(err)) => {
            debug!("QUIC handshake failed: {err}");
            return;
        }
        Err(_) => {
            // Dropping the half-open connection abandons it; quinn closes it.
            info!("QUIC handshake not done within {:?}", context.handshake_timeout);
            return;
        }
    };
    let alpn = connection
        .handshake_data()
        .and_then(|data| data.downcast::<wtq::quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|data| data.protocol);
    let (transport_session, transport, url) = match alpn.as_deref() {
        Some(alpn) if alpn == wtq::ALPN.as_bytes() => match accept_webtransport(connection, deadline).await {
            Some(accepted) => accepted,
            None => return,
        },
        Some(alpn) if alpn == DraftVersion::Draft18.alpn_bytes() => {
            // Raw QUIC carries the path (and query) in SETUP's PATH option instead of a URL.
            let Ok(url) = Url::parse("moqt://junction/") else { return };
            let session = wtq::Session::raw(connection, url.clone(), wtq::proto::ConnectResponse::OK);
            (session, Transport::RawQuic, url)
        }
        // rustls only completes handshakes whose ALPN is one of ours.
        _ => return,
    };

    let moq =
        moq_transport::session::transport::Session::new(ScheduledSession::new(transport_session.clone()), url.clone());
    let accepted = tokio::time::timeout_at(deadline, Session::accept(moq, None, transport)).await;
    let (session, publisher, subscriber) = match accepted {
        Ok(Ok((session, Some(publisher), Some(subscriber)))) => (session, publisher, subscriber),
        Ok(Ok(_)) => {
            close(&transport_session, Termination::InternalError, "session roles unavailable");
            return;
        }
        Ok(Err(err)) => {
            let code = Termination::from_session_error(&err);
            info!(code = code.name(), "MoQT SETUP failed: {err}");
            close(&transport_session, code, &format!("SETUP failed: {err}"));
            linger(&transport_session).await;
            return;
        }
        Err(_) => {
            info!("no MoQT SETUP within {:?} of connecting", context.handshake_timeout);
            close(&transport_session, Termination::ControlMessageTimeout, "no SETUP received in time");
            linger(&transport_session).await;
            return;
        }
    };

    let path = match transport {
        Transport::WebTransport => Some(match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        }),
        Transport::RawQuic => raw_path(session.setup_params()),
    };
    let admitted = admission::parse_connect_path(path.as_deref()).and_then(|target| {
        let tokens = admission::setup_tokens(session.setup_params())?;
        let credential = admission::admit(&context.authority, &target, &tokens)?;
        Ok((target, credential))
    });
    let (target, credential) = match admitted {
        Ok(admitted) => admitted,
        Err(err) => return refuse(&transport_session, err).await,
    };
    tracing::Span::current().record("room", target.room.as_str()).record("peer", credential.identity.as_str());

    let mut request = JoinRequest::new(target.room.clone(), credential.identity.clone(), TransportKind::Moq);
    request.name = credential.name.clone();
    request.metadata = credential.metadata.clone();
    request.grants = credential.grants;
    request.auto_subscribe = false;
    let accept = codecs::accepted(target.video, target.audio);
    request.accept_codecs = accept.clone();
    request.credential = credential.session.clone();
    let joined = match context.engine.join(request) {
        Ok(joined) => joined,
        Err(err) => return refuse(&transport_session, AdmissionError::from_join(err)).await,
    };
    info!(transport = ?transport, grants = ?credential.grants, "MoQ session admitted");
    let parts = SessionParts {
        room: target.room,
        identity: credential.identity,
        grants: credential.grants,
        joined,
        hub: context.hub.clone(),
        shutdown: context.shutdown.clone(),
        limits: context.limits.clone(),
        accept,
    };
    // A panic is logged (with room and peer) and counted by `contain`; the endpoint was owned by
    // the session future, so the peer has left the room. The peer is told with a session error.
    let running = session::run(session, publisher, subscriber, transport_session.clone(), parts);
    if supervise::contain("moq", running).await.is_err() {
        close(&transport_session, Termination::InternalError, "internal error");
        linger(&transport_session).await;
    }
}

/// The raw-QUIC SETUP PATH option, path and query included.
fn raw_path(params: &moq_transport::coding::KeyValuePairs) -> Option<String> {
    let option = params.get(ParameterType::Path.into())?;
    match &option.value {
        Value::BytesValue(bytes) => String::from_utf8(bytes.clone()).ok(),
        _ => None,
    }
}

async fn refuse(transport: &wtq::Session, err: AdmissionError) {
    let code = err.termination();
    info!(code = code.name(), "MoQ session refused: {err}");
    close(transport, code, &err.to_string());
    linger(transport).await;
}

/// Gives a close a moment to reach the peer.
async fn linger(transport: &wtq::Session) {
    let _ = tokio::time::timeout(Duration::from_secs(2), transport.closed()).await;
}

/// Completes the WebTransport CONNECT, choosing moqt-18 from the offered protocols. A client that
/// offers protocols but not ours is answered 406, as moq-transport's own server does.
async fn accept_webtransport(
    connection: wtq::quinn::Connection,
    deadline: Instant,
) -> Option<(wtq::Session, Transport, Url)> {
    let request = match tokio::time::timeout_at(deadline, wtq::Request::accept(connection.clone())).await {
        Ok(Ok(request)) => request,
        Ok(Err(err)) => {
            debug!("WebTransport CONNECT failed: {err}");
            connection.close(H3_NO_ERROR, b"WebTransport CONNECT failed");
            return None;
        }
        Err(_) => {
            connection.close(H3_NO_ERROR, b"no WebTransport CONNECT in time");
            return None;
        }
    };
    let url = request.url.clone();
    let response = if request.protocols.is_empty() {
        wtq::proto::ConnectResponse::OK
    } else {
        match moq_transport::setup::negotiate_version(&request.protocols) {
            Some(version) => wtq::proto::ConnectResponse::OK.with_protocol(version.alpn_str()),
            None => {
                info!(offered = ?request.protocols, "WebTransport CONNECT without a MoQT version we speak: 406");
                let _ = request.reject(wtq::http::StatusCode::NOT_ACCEPTABLE).await;
                let _ = tokio::time::timeout(Duration::from_millis(250), connection.closed()).await;
                connection.close(H3_NO_ERROR, b"no supported MoQT version offered");
                return None;
            }
        }
    };
    match request.respond(response).await {
        Ok(session) => Some((session, Transport::WebTransport, url)),
        Err(err) => {
            debug!("cannot answer the WebTransport CONNECT: {err}");
            None
        }
    }
}
