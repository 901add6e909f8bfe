//! The TURN server against an independent TURN client (webrtc-rs `turn`, the pion port), over
//! UDP on loopback. A UDP echo socket plays Junction's media plane: the only peer allowed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use junction_turn::relay::MediaPeer;
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
    let media = vec![MediaPeer::same(media)];
    junction_turn::serve(&config, media, TurnSecret::new(SECRET), shutdown.clone()).await.unwrap().udp
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

/// A Binding request, as a STUN client sends it first.
fn binding_request() -> Vec<u8> {
    use bytecodec::EncodeExt;
    let msg = stun_codec::Message::<junction_turn::relay::Attribute>::new(
        stun_codec::MessageClass::Request,
        stun_codec::rfc5389::methods::BINDING,
        stun_codec::TransactionId::new([9; 12]),
    );
    stun_codec::MessageEncoder::new().encode_into_bytes(msg).unwrap()
}

/// Whether the server closed `stream` (its reads end) within a few seconds.
async fn closed(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn tcp_clients_are_framed_by_message_length_and_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let shutdown = CancellationToken::new();
    let config = TurnConfig {
        enabled: true,
        udp_listen: "127.0.0.1:0".parse().unwrap(),
        max_connections: 2,
        ..TurnConfig::default()
    };
    let media = vec![MediaPeer::same(echo().await)];
    let server = junction_turn::serve(&config, media, TurnSecret::new(SECRET), shutdown.clone()).await.unwrap().tcp;

    // Two requests in one write come back as two responses, each framed by its own length.
    let mut client = tokio::net::TcpStream::connect(server).await.unwrap();
    let request = binding_request();
    client.write_all(&[request.clone(), request].concat()).await.unwrap();
    for _ in 0..2 {
        let mut header = [0u8; 20];
        client.read_exact(&mut header).await.unwrap();
        assert_eq!(&header[..2], &[0x01, 0x01], "a Binding success response");
        let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[2], header[3]]))];
        client.read_exact(&mut body).await.unwrap();
    }
    // A frame that is neither STUN nor ChannelData ends the connection.
    let mut garbage = tokio::net::TcpStream::connect(server).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(closed(&mut garbage).await, "garbage closes the connection");
    // `client` holds one of the two places; a second connection takes the other, a third is closed at once.
    let _second = tokio::net::TcpStream::connect(server).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut third = tokio::net::TcpStream::connect(server).await.unwrap();
    assert!(closed(&mut third).await, "turn.max_connections bounds open connections");
    shutdown.cancel();
}
