//! The WHIP/WHEP HTTP surface: every error RFC 9725 names, with its status and a reason;
//! trickle ICE and ICE restart over PATCH (with If-Match); ICE servers in Link headers;
//! publishing with an ingress stream key; and offers the server must not choke on (Opus on
//! payload type 96, ECDSA-only DTLS).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::webrtc_client::synthetic::{self, AUDIO_FRAME, VIDEO_FRAME};
use crate::support::webrtc_client::{ClientCodec, ClientOptions, MediaKind, WhepViewer, WhipPublisher};
use crate::support::{TestServer, eventually};

const FINGERPRINT: &str =
    "sha-256 7A:D7:C9:33:94:8D:8A:BA:10:EB:93:21:7C:B4:91:6D:40:F7:56:07:CA:9D:42:D3:80:32:2D:10:D9:AC:8E:15";

/// A browser-like offer with one audio and one video m-line in `direction`.
pub(crate) fn offer(direction: &str, audio: &str, video: &str) -> String {
    let transport = format!(
        "c=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:{FINGERPRINT}\r\n\
         a=setup:actpass\r\na=rtcp-mux\r\na={direction}\r\n"
    );
    format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n\
         m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n{transport}a=mid:0\r\na=rtpmap:111 {audio}\r\n\
         m=video 9 UDP/TLS/RTP/SAVPF 98\r\n{transport}a=mid:1\r\na=rtpmap:98 {video}/90000\r\n"
    )
}

struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn code(&self) -> String {
        serde_json::from_str::<Value>(&self.text)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }
}

async fn send(
    server: &TestServer,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    content_type: &str,
    body: &str,
) -> Reply {
    let mut request = reqwest::Client::new()
        .request(method, server.url(path))
        .header("content-type", content_type)
        .body(body.to_owned());
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.expect("request");
    Reply {
        status: response.status(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap_or_default(),
    }
}

fn assert_error(reply: &Reply, status: u16, code: &str, what: &str) {
    assert_eq!(reply.status.as_u16(), status, "{what}: {}", reply.text);
    assert_eq!(reply.code(), code, "{what}: {}", reply.text);
    let message =
        serde_json::from_str::<Value>(&reply.text).unwrap()["error"]["message"].as_str().unwrap_or("").to_owned();
    assert!(!message.is_empty(), "{what}: a reason is given");
}

#[tokio::test]
async fn every_whip_and_whep_error_has_its_status_and_a_reason() {
    let server = TestServer::start().await;
    let publisher = server.token("stage", "obs", json!({"publish": true, "subscribe": false})).await;
    let viewer = server.token("stage", "viewer", json!({"publish": false, "subscribe": true})).await;
    let elsewhere = server.token("other", "obs", json!({"publish": true, "subscribe": true})).await;
    let good_whip = offer("sendonly", "opus/48000/2", "H264");
    let good_whep = offer("recvonly", "opus/48000/2", "VP8");
    const SDP: &str = "application/sdp";

    let reply = send(&server, Method::POST, "/whip/stage", Some(&publisher), "text/plain", &good_whip).await;
    assert_error(&reply, 415, "unsupported_media_type", "WHIP offer as text/plain");
    let reply = send(&server, Method::POST, "/whep/stage", Some(&viewer), "application/json", &good_whep).await;
    assert_error(&reply, 415, "unsupported_media_type", "WHEP offer as JSON");

    let reply = send(&server, Method::POST, "/whip/stage", None, SDP, &good_whip).await;
    assert_error(&reply, 401, "unauthorized", "no bearer");
    assert_eq!(reply.headers["www-authenticate"], "Bearer");
    let reply = send(&server, Method::POST, "/whip/stage", Some("sk_not_a_key"), SDP, &good_whip).await;
    assert_error(&reply, 401, "unauthorized", "unknown stream key");
    let reply = send(&server, Method::POST, "/whep/stage", Some("a.b.c"), SDP, &good_whep).await;
    assert_error(&reply, 401, "unauthorized", "malformed token");

    let reply = send(&server, Method::POST, "/whip/stage", Some(&elsewhere), SDP, &good_whip).await;
    assert_error(&reply, 403, "forbidden", "token for another room");
    let reply = send(&server, Method::POST, "/whip/stage", Some(&viewer), SDP, &good_whip).await;
    assert_error(&reply, 403, "forbidden", "WHIP without the publish grant");
    let reply = send(&server, Method::POST, "/whep/stage", Some(&publisher), SDP, &good_whep).await;
    assert_error(&reply, 403, "forbidden", "WHEP without the subscribe grant");

    let reply = send(&server, Method::POST, "/whip/stage", Some(&publisher), SDP, "hello").await;
    assert_error(&reply, 400, "bad_sdp", "not SDP");
    let reply = send(&server, Method::POST, "/whip/stage", Some(&publisher), SDP, "").await;
    assert_error(&reply, 400, "bad_sdp", "no body");
    let reply = send(&server, Method::POST, "/whip/stage", Some(&publisher), SDP, &good_whep).await;
    assert_error(&reply, 400, "bad_sdp", "a recvonly offer to WHIP");
    let reply = send(&server, Method::POST, "/whep/stage", Some(&viewer), SDP, &good_whip).await;
    assert_error(&reply, 400, "bad_sdp", "a sendonly offer to WHEP");
    let reply = send(&server, Method::POST, "/whip/bad%20room", Some(&publisher), SDP, &good_whip).await;
    assert_error(&reply, 400, "invalid_field", "a room name with a space");
    let reply = send(&server, Method::POST, "/whep/stage?identity=a/b", Some(&viewer), SDP, &good_whep).await;
    assert_error(&reply, 400, "invalid_field", "a bad identity to watch");

    let reply =
        send(&server, Method::POST, "/whip/stage", Some(&publisher), SDP, &offer("sendonly", "G729/8000", "H265"))
            .await;
    assert_error(&reply, 422, "no_codec", "H.265 and G.729 only");
    assert!(
        reply.text.contains("H265") && reply.text.contains("G729"),
        "the reason names what was offered: {}",
        reply.text
    );

    // A real publisher holds identity `obs`; another WHIP session for it conflicts.
    let first =
        WhipPublisher::connect(&server.base, "stage", &publisher, ClientOptions::h264_opus()).await.expect("publish");
    let reply = send(&server, Method::POST, "/whip/stage", Some(&publisher), SDP, &good_whip).await;
    assert_error(&reply, 409, "identity_publishing", "second WHIP session of one identity");

    // Resources: unknown ids, wrong credentials, wrong content type, stale ETag.
    let resource = first.resource().trim_start_matches(&server.base).to_owned();
    let etag = first.etag().expect("an ETag").to_owned();
    const FRAG: &str = "application/trickle-ice-sdpfrag";
    let candidate = "a=candidate:1 1 udp 2122260223 127.0.0.1 61764 typ host\r\n";
    let reply = send(&server, Method::PATCH, "/whip/stage/nosuchsession", Some(&publisher), FRAG, candidate).await;
    assert_error(&reply, 404, "session_not_found", "PATCH of an unknown session");
    let reply = send(&server, Method::DELETE, "/whip/stage/nosuchsession", Some(&publisher), FRAG, "").await;
    assert_error(&reply, 404, "session_not_found", "DELETE of an unknown session");
    let wrong_room = resource.replace("/whip/stage/", "/whip/other/");
    let reply = send(&server, Method::DELETE, &wrong_room, Some(&elsewhere), FRAG, "").await;
    assert_error(&reply, 404, "session_not_found", "the resource under another room");
    let reply = send(&server, Method::PATCH, &resource, None, FRAG, candidate).await;
    assert_error(&reply, 401, "unauthorized", "PATCH without a bearer");
    let reply = send(&server, Method::DELETE, &resource, Some(&elsewhere), FRAG, "").await;
    assert_error(&reply, 403, "forbidden", "DELETE with another room's token");
    let reply = send(&server, Method::PATCH, &resource, Some(&publisher), "application/sdp", candidate).await;
    assert_error(&reply, 415, "unsupported_media_type", "PATCH with the wrong content type");
    let stale = reqwest::Client::new()
        .patch(server.url(&resource))
        .bearer_auth(&publisher)
        .header("content-type", FRAG)
        .header("if-match", "\"stale\"")
        .body(candidate)
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412, "PATCH with a stale ETag");
    let reply = send(&server, Method::PATCH, &resource, Some(&publisher), FRAG, "a=candidate:garbage\r\n").await;
    assert_error(&reply, 400, "bad_candidate", "a candidate that does not parse");
    let reply = send(&server, Method::PATCH, &resource, Some(&publisher), FRAG, "a=ice-ufrag:only\r\n").await;
    assert_error(&reply, 400, "bad_sdpfrag", "ufrag without pwd");

    // Trickle: the current ETag (or none) and a candidate -> 204.
    let trickle = reqwest::Client::new()
        .patch(server.url(&resource))
        .bearer_auth(&publisher)
        .header("content-type", FRAG)
        .header("if-match", &etag)
        .body(candidate)
        .send()
        .await
        .unwrap();
    assert_eq!(trickle.status(), 204, "trickle");

    assert_eq!(first.delete().await.unwrap(), 200);
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn ice_servers_are_announced_and_ice_restarts_keep_media_flowing() {
    let config = r#"
[webrtc]
ice_servers = [
  { urls = ["stun:stun.example.net:3478"] },
  { urls = ["turn:turn.example.net:3478?transport=udp"], username = "user", credential = "secret" },
]
"#;
    let server = TestServer::start_with(config, &[]).await;
    // A CORS preflight, as a browser sends it before POSTing an offer.
    let options = reqwest::Client::new()
        .request(Method::OPTIONS, server.url("/whip/stage"))
        .header("origin", "https://player.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(options.status().is_success(), "{}", options.status());
    assert_eq!(options.headers()["access-control-allow-origin"], "*");
    let links: Vec<&str> = options.headers().get_all("link").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(links.len(), 2, "{links:?}");
    assert_eq!(links[0], "<stun:stun.example.net:3478>; rel=\"ice-server\"");
    assert!(
        links[1].starts_with(
            "<turn:turn.example.net:3478?transport=udp>; rel=\"ice-server\"; username=\"user\"; credential=\"secret\""
        ),
        "{}",
        links[1]
    );
    assert_eq!(options.headers()["accept-post"], "application/sdp");

    let publisher_token = server.token("stage", "obs", json!({"publish": true})).await;
    let viewer_token = server.token("stage", "viewer", json!({"subscribe": true})).await;
    let mut publisher = WhipPublisher::connect(&server.base, "stage", &publisher_token, ClientOptions::h264_opus())
        .await
        .expect("publish");
    let mut viewer =
        WhepViewer::connect(&server.base, "stage", &viewer_token, "", ClientOptions::h264_opus()).await.expect("view");
    let before = publisher.etag().unwrap().to_owned();

    publisher.restart_ice().await.expect("ICE restart");
    let after = publisher.etag().expect("a new ETag").to_owned();
    assert_ne!(before, after, "an ICE restart starts a new ICE session, with a new ETag");
    let stale = reqwest::Client::new()
        .patch(publisher.resource())
        .bearer_auth(&publisher_token)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .header("if-match", &before)
        .body("a=candidate:1 1 udp 2122260223 127.0.0.1 61764 typ host\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412, "the old ETag no longer matches");

    // Media published after the restart reaches the viewer.
    for index in 0..60u32 {
        let frame =
            if index.is_multiple_of(15) { synthetic::h264_keyframe(index) } else { synthetic::h264_delta(index) };
        publisher.send_video(frame, VIDEO_FRAME).await.expect("send");
        publisher.send_audio(synthetic::opus_packet(index), AUDIO_FRAME).await.expect("send");
        tokio::time::sleep(VIDEO_FRAME).await;
    }
    let frame =
        viewer.next_frame_of(MediaKind::Video, Duration::from_secs(5)).await.expect("video after the ICE restart");
    assert!(synthetic::h264_index(&frame.payload).is_some());
    assert_eq!(publisher.delete().await.unwrap(), 200);
    assert_eq!(viewer.delete().await.unwrap(), 200);
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn an_ingress_stream_key_publishes_as_its_identity_and_deleting_it_disconnects() {
    let server = TestServer::start().await;
    let (status, ingress) = server
        .call(
            Method::POST,
            "/v1/ingress",
            Some(json!({"kind": "whip", "room": "show", "identity": "obs-studio", "name": "Studio"})),
        )
        .await;
    assert_eq!(status, 201, "{ingress}");
    assert_eq!(ingress["url"], format!("{}/whip/show", server.base));
    let key = ingress["stream_key"].as_str().unwrap();

    let publisher = WhipPublisher::connect(&server.base, "show", key, ClientOptions::h264_opus())
        .await
        .expect("publish with the key");
    publisher.send_video(synthetic::h264_keyframe(0), VIDEO_FRAME).await.unwrap();
    let (_, room) = server.call(Method::GET, "/v1/rooms/show", None).await;
    let peer = &room["room"]["peers"][0];
    assert_eq!(
        (peer["identity"].as_str(), peer["name"].as_str(), peer["transport"].as_str()),
        (Some("obs-studio"), Some("Studio"), Some("whip")),
        "{room}"
    );

    let wrong_room = send(
        &server,
        Method::POST,
        "/whip/elsewhere",
        Some(key),
        "application/sdp",
        &offer("sendonly", "opus/48000/2", "H264"),
    )
    .await;
    assert_error(&wrong_room, 403, "forbidden", "a stream key for another room");

    let id = ingress["id"].as_str().unwrap();
    let (status, _) = server.call(Method::DELETE, &format!("/v1/ingress/{id}"), None).await;
    assert_eq!(status, 204);
    server.wait_for_no_peers().await;
    eventually("the WHIP resource to go with its session", Duration::from_secs(5), || async {
        (publisher.delete().await.ok() == Some(404)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn opus_on_payload_type_96_and_ecdsa_only_dtls_work() {
    let server = TestServer::start().await;
    let publisher_token = server.token("odd", "encoder", json!({"publish": true})).await;
    let viewer_token = server.token("odd", "viewer", json!({"subscribe": true})).await;
    let options = ClientOptions::new(&[ClientCodec::Opus]).with_payload_type(ClientCodec::Opus, 96).ecdsa_only();
    let publisher =
        WhipPublisher::connect(&server.base, "odd", &publisher_token, options.clone()).await.expect("publish");
    let mut viewer = WhepViewer::connect(&server.base, "odd", &viewer_token, "", options).await.expect("view");
    for index in 0..25u32 {
        publisher.send_audio(synthetic::opus_packet(index), AUDIO_FRAME).await.expect("send");
        tokio::time::sleep(AUDIO_FRAME).await;
    }
    let mut received = 0;
    while let Some(packet) = viewer.next_frame_of(MediaKind::Audio, Duration::from_secs(2)).await {
        let index = synthetic::opus_index(&packet.payload).expect("index");
        assert_eq!(packet.payload, synthetic::opus_packet(index));
        received += 1;
    }
    assert!(received >= 20, "{received} of 25 Opus packets on payload type 96 arrived");
    assert_eq!(publisher.delete().await.unwrap(), 200);
    assert_eq!(viewer.delete().await.unwrap(), 200);
    server.wait_for_no_peers().await;
}
