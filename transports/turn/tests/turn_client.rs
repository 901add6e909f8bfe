//! The TURN server against an independent TURN client (webrtc-rs `turn`, the pion port), over
//! UDP on loopback. A UDP echo socket plays Junction's media plane: the only peer allowed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use junction_turn::{TurnConfig, TurnSecret};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use turn::client::{Client, ClientConfig};
use webrtc_util::Conn;

const SECRET: &[u8] = b"turn-test-secret";

/// A UDP socket that sends back what it receives (the "media plane").
async fn echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..len], from).await;
        }
    });
    addr
}

async fn turn_server(media: SocketAddr, shutdown: &CancellationToken) -> SocketAddr {
    let config = TurnConfig { enabled: true, udp_listen: "127.0.0.1:0".parse().unwrap(), ..TurnConfig::default() };
    junction_turn::serve(&config, vec![media], TurnSecret::new(SECRET), shutdown.clone()).await.unwrap().udp
}

async fn client(server: SocketAddr, username: &str, password: &str) -> Client {
    let conn = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let client = Client::new(ClientConfig {
        stun_serv_addr: server.to_string(),
        turn_serv_addr: server.to_string(),
        username: username.into(),
        password: password.into(),
        realm: "junction".into(),
        software: String::new(),
        rto_in_ms: 0,
        conn,
        vnet: None,
    })
    .await
    .unwrap();
    client.listen().await.unwrap();
    client
}

#[tokio::test]
async fn a_client_with_a_minted_credential_relays_to_the_media_plane_and_nowhere_else() {
    let shutdown = CancellationToken::new();
    let media = echo().await;
    let server = turn_server(media, &shutdown).await;
    let credential = TurnSecret::new(SECRET).mint("alice", Duration::from_secs(600), SystemTime::now());
    let client = client(server, &credential.username, &credential.password).await;

    let relayed = client.allocate().await.expect("an allocation with a minted credential");
    let relay_addr = relayed.local_addr().unwrap();
    assert_eq!(relay_addr.ip(), server.ip());
    assert!(relay_addr.port() >= 49152, "a port of the relay range: {relay_addr}");

    relayed.send_to(b"through the relay", media).await.expect("the media plane is a permitted peer");
    let mut buf = [0u8; 64];
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), relayed.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!((&buf[..len], from), (&b"through the relay"[..], media), "the media plane's answer comes back");

    // Any other peer is refused by the server: 403 to the CreatePermission the client sends.
    let elsewhere = echo().await;
    let refused = relayed.send_to(b"to another host", "198.51.100.7:9".parse().unwrap()).await.unwrap_err();
    assert!(refused.to_string().contains("403"), "another host: {refused}");
    // The same host's other ports are not peers either: the permission (per IP) exists, but
    // what is sent there goes nowhere, so the other socket hears nothing.
    let _ = relayed.send_to(b"to another port", elsewhere).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    relayed.send_to(b"still fine", media).await.unwrap();
    let (len, from) = tokio::time::timeout(Duration::from_secs(5), relayed.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!((&buf[..len], from), (&b"still fine"[..], media), "only the media plane answered");
    client.close().await.unwrap();
    shutdown.cancel();
}

#[tokio::test]
async fn forged_and_expired_credentials_cannot_allocate() {
    let shutdown = CancellationToken::new();
    let server = turn_server(echo().await, &shutdown).await;
    let genuine = TurnSecret::new(SECRET).mint("bob", Duration::from_secs(600), SystemTime::now());

    let forged = client(server, &genuine.username, "not-the-password").await;
    let err = forged.allocate().await.err().expect("a forged password is refused");
    assert!(err.to_string().contains("401") || err.to_string().to_lowercase().contains("unauthorized"), "{err}");

    let other_secret = TurnSecret::new(b"another deployment").mint("bob", Duration::from_secs(600), SystemTime::now());
    let foreign = client(server, &other_secret.username, &other_secret.password).await;
    assert!(foreign.allocate().await.is_err(), "a credential of another secret is refused");

    let expired =
        TurnSecret::new(SECRET).mint("bob", Duration::from_secs(1), SystemTime::now() - Duration::from_secs(60));
    let late = client(server, &expired.username, &expired.password).await;
    let err = late.allocate().await.err().expect("an expired credential is refused");
    assert!(err.to_string().contains("401") || err.to_string().to_lowercase().contains("unauthorized"), "{err}");
    shutdown.cancel();
}
