//! The scheduling layer over a real QUIC connection on loopback: a subscriber whose per-stream
//! receive window is small and who stops reading falls behind; when a third group starts, the
//! first group's stream is reset with TOO_FAR_BEHIND while the previous group is kept, and the
//! newest group is delivered whole once the subscriber reads again.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use moq_transport::coding::Encode;
use moq_transport::data::{StreamHeaderType, SubgroupHeader, SubgroupIdMode};
use moq_transport::reexports::web_transport_trait::{SendStream as _, Session as _};
use moq_transport::session::transport::quinn as wtq;
use moq_transport::session::transport::quinn::quinn;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::{ScheduledSession, TOO_FAR_BEHIND};
use crate::tls::ServerIdentity;

const GROUP_BYTES: usize = 64 * 1024;

async fn connected_pair() -> (ScheduledSession, wtq::Session) {
    let identity = ServerIdentity::generate(&["localhost".into()]).unwrap();
    let ca = CertificateDer::from_pem_slice(identity.dev_ca_pem.as_ref().unwrap().as_bytes()).unwrap();
    let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(identity.config).unwrap();
    let server = quinn::Endpoint::server(
        quinn::ServerConfig::with_crypto(Arc::new(server_crypto)),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).unwrap();
    let tls = junction_testkit::moq::client_tls(roots, b"moqt-18");
    let mut client_config =
        quinn::ClientConfig::new(Arc::new(quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap()));
    // A subscriber that can hold little per stream: it is easy to make fall behind.
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(8_192u32.into());
    client_config.transport_config(Arc::new(transport));
    let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    client.set_default_client_config(client_config);

    let addr = server.local_addr().unwrap();
    let (client_conn, server_conn) =
        tokio::join!(async { client.connect(addr, "localhost").unwrap().await.unwrap() }, async {
            server.accept().await.unwrap().await.unwrap()
        });
    let url = url::Url::parse("moqt://localhost/").unwrap();
    let server_session =
        ScheduledSession::new(wtq::Session::raw(server_conn, url.clone(), wtq::proto::ConnectResponse::OK));
    let client_session = wtq::Session::raw(client_conn, url, wtq::proto::ConnectResponse::OK);
    (server_session, client_session)
}

/// Sends one group the way moq-transport does: header, payload, FIN, then waits for delivery.
fn send_group(session: &ScheduledSession, group: u64) -> tokio::task::JoinHandle<Result<(), wtq::WriteError>> {
    let session = session.clone();
    tokio::spawn(async move {
        let mut stream = session.open_uni().await.map_err(wtq::WriteError::SessionError)?;
        let header = SubgroupHeader {
            header_type: StreamHeaderType::subgroup(SubgroupIdMode::Explicit, false, false, false, true),
            track_alias: 1,
            group_id: group,
            subgroup_id: Some(0),
            publisher_priority: 128,
        };
        let mut bytes = BytesMut::new();
        header.encode(&mut bytes).unwrap();
        stream.write(&bytes).await?;
        let payload = vec![group as u8; GROUP_BYTES];
        let mut sent = 0;
        while sent < payload.len() {
            sent += stream.write(&payload[sent..]).await?;
        }
        stream.finish()?;
        stream.closed().await
    })
}

#[tokio::test]
async fn a_subscriber_that_falls_behind_skips_to_the_newest_group() {
    let (server, client) = connected_pair().await;

    let group1 = send_group(&server, 1);
    let mut stream1 = client.accept_uni().await.unwrap();
    let group2 = send_group(&server, 2);
    let mut stream2 = client.accept_uni().await.unwrap();
    // The subscriber reads nothing: both groups stall on its 8 KB window.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!group1.is_finished() && !group2.is_finished());

    let group3 = send_group(&server, 3);
    let mut stream3 = client.accept_uni().await.unwrap();

    // Group 1 — two groups behind the newest — is abandoned: the sender sees it stopped, the
    // subscriber sees RESET_STREAM(TOO_FAR_BEHIND).
    let sent1 = tokio::time::timeout(Duration::from_secs(5), group1).await.unwrap().unwrap();
    assert!(matches!(sent1, Err(wtq::WriteError::Stopped(code)) if code == TOO_FAR_BEHIND), "{sent1:?}");
    let mut buf = vec![0u8; 4096];
    let read1 = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream1.read(&mut buf)).await.unwrap() {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert!(matches!(read1, Err(wtq::ReadError::Reset(code)) if code == TOO_FAR_BEHIND), "{read1:?}");

    // The newest group arrives whole once the subscriber reads again; so does the previous one.
    for (stream, group, expected) in [(&mut stream3, group3, 3u8), (&mut stream2, group2, 2u8)] {
        let mut received = Vec::new();
        while let Some(n) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap()
        {
            received.extend_from_slice(&buf[..n]);
        }
        assert!(received.len() > GROUP_BYTES);
        assert!(received[received.len() - GROUP_BYTES..].iter().all(|b| *b == expected));
        tokio::time::timeout(Duration::from_secs(5), group).await.unwrap().unwrap().unwrap();
    }

    // A group that was delivered is never reset afterwards.
    let group4 = send_group(&server, 4);
    let mut stream4 = client.accept_uni().await.unwrap();
    while tokio::time::timeout(Duration::from_secs(5), stream4.read(&mut buf)).await.unwrap().unwrap().is_some() {}
    tokio::time::timeout(Duration::from_secs(5), group4).await.unwrap().unwrap().unwrap();
    let group6 = send_group(&server, 6);
    let mut stream6 = client.accept_uni().await.unwrap();
    while tokio::time::timeout(Duration::from_secs(5), stream6.read(&mut buf)).await.unwrap().unwrap().is_some() {}
    tokio::time::timeout(Duration::from_secs(5), group6).await.unwrap().unwrap().unwrap();
}
