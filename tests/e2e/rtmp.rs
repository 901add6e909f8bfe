//! RTMP end to end. Real ffmpeg publishes `testsrc` + a 660 Hz sine as H.264 (High, B-frames) and
//! AAC with an ingress stream key; real ffmpeg plays that peer back over RTMP into a file that
//! ffprobe and ffmpeg's decoders check: codecs, picture size, timestamps, duration, decoded
//! frames, and the tone's frequency. `rml_rtmp`'s client covers what ffmpeg cannot be made to
//! do: wrong keys, garbage, malformed chunks and AMF, duplicate keys, stalls, re-publishing.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use junction_audio::codec::tone;
use junction_core::h264::AvcConfig;
use reqwest::Method;
use rml_rtmp::sessions::ClientSessionEvent;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::support::audio::decode_file_audio;
pub(crate) use crate::support::players::{ffmpeg_pull, ffmpeg_push_sources, finish, ingress};
use crate::support::rtmp_client::{RtmpClient, host_of};
use crate::support::{TestServer, eventually};

/// How long ffmpeg publishes, and how much of it the player records.
const PUSH_SECONDS: u32 = 8;
const PLAY_SECONDS: u32 = 4;
pub(crate) const TONE_HZ: f64 = 660.0;

/// The peers of a room as the REST API shows them (empty when the room does not exist).
async fn peers(server: &TestServer, room: &str) -> Vec<Value> {
    let (_, body) = server.call(Method::GET, &format!("/v1/rooms/{room}/peers"), None).await;
    body["peers"].as_array().cloned().unwrap_or_default()
}

async fn peer(server: &TestServer, room: &str, identity: &str) -> Option<Value> {
    peers(server, room).await.into_iter().find(|p| p["identity"] == identity)
}

/// ffmpeg publishing the test pattern and tone (the TESTING.md command, with 4:2:0 pixels and two
/// B-frames as OBS's x264 High profile sends them).
pub(crate) fn ffmpeg_push(url: &str, seconds: u32) -> Child {
    ffmpeg_push_as(url, seconds, "flv")
}

/// The same in another container: `mpegts` for SRT.
pub(crate) fn ffmpeg_push_as(url: &str, seconds: u32, format: &str) -> Child {
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency={TONE_HZ}:sample_rate=44100")])
        .args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-tune", "zerolatency", "-bf", "2"])
        .args(["-g", "30", "-c:a", "aac", "-f", format, url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn ffmpeg (apt-get install ffmpeg)")
}

async fn run(program: &str, args: &[&str]) -> std::process::Output {
    let run = Command::new(program).args(args).kill_on_drop(true).output();
    tokio::time::timeout(Duration::from_secs(60), run).await.expect("in time").expect(program)
}

pub(crate) async fn ffprobe(file: &Path, args: &[&str]) -> Value {
    let mut all = vec!["-v", "error", "-of", "json"];
    all.extend_from_slice(args);
    all.push(file.to_str().unwrap());
    let output = run("ffprobe", &all).await;
    assert!(output.status.success(), "ffprobe: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("ffprobe JSON")
}

pub(crate) fn numbers(packets: &[Value], kind: &str, field: &str) -> Vec<i64> {
    packets.iter().filter(|p| p["codec_type"] == kind).filter_map(|p| p[field].as_i64()).collect()
}

/// Checks what an ffmpeg player recorded for `play_seconds` of the test pattern and tone (640x360
/// H.264 High with B-frames, 30 fps; AAC 44.1 kHz): codecs, duration, decode and presentation
/// order, a keyframe first, every packet decoding to a picture, the tone. Returns how far (ms)
/// the first audio is after the first video.
pub(crate) async fn check_playback(out: &Path, play_seconds: u32) -> i64 {
    let probe = ffprobe(
        out,
        &[
            "-show_entries",
            "stream=index,codec_type,codec_name,profile,width,height,sample_rate,channels:format=duration",
            "-show_entries",
            "packet=codec_type,pts,dts,flags",
        ],
    )
    .await;
    let streams = probe["streams"].as_array().unwrap();
    let video = streams.iter().find(|s| s["codec_type"] == "video").expect("a video stream");
    let audio = streams.iter().find(|s| s["codec_type"] == "audio").expect("an audio stream");
    assert_eq!((video["codec_name"].as_str(), video["profile"].as_str()), (Some("h264"), Some("High")));
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(640), Some(360)));
    assert_eq!((audio["codec_name"].as_str(), audio["sample_rate"].as_str()), (Some("aac"), Some("44100")));
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((f64::from(play_seconds) - 0.5..f64::from(play_seconds) + 0.75).contains(&duration), "duration {duration}");

    let packets = probe["packets"].as_array().unwrap();
    let (video_dts, video_pts) = (numbers(packets, "video", "dts"), numbers(packets, "video", "pts"));
    assert!(video_dts.windows(2).all(|w| w[0] < w[1]), "video decode times increase: {video_dts:?}");
    assert!(video_pts.iter().zip(&video_dts).all(|(p, d)| p >= d), "presentation never before decode");
    assert!(video_pts.windows(2).any(|w| w[1] < w[0]), "B-frames arrive in decode order");
    let first = packets.iter().find(|p| p["codec_type"] == "video").unwrap();
    assert!(first["flags"].as_str().unwrap().starts_with('K'), "video starts at a keyframe: {first}");
    let audio_pts = numbers(packets, "audio", "pts");
    assert!(audio_pts.windows(2).all(|w| w[0] < w[1]), "audio times increase: {audio_pts:?}");

    // Every frame decodes: about 30 per second.
    let counted =
        ffprobe(out, &["-count_frames", "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames"]).await;
    let frames: u32 = counted["streams"][0]["nb_read_frames"].as_str().unwrap().parse().unwrap();
    assert!(frames >= (play_seconds - 1) * 30, "{frames} frames decoded");
    assert_eq!(frames as usize, video_dts.len(), "every video packet decodes to a picture");

    // The audio is the tone.
    let samples = decode_file_audio(out, 16_000).await;
    assert!(samples.len() >= 16_000 * (play_seconds as usize - 1), "{} samples", samples.len());
    let found = tone::dominant_frequency_i16(&samples, 1, 16_000).expect("audible audio");
    assert!((found - TONE_HZ).abs() <= 2.0, "dominant frequency {found} Hz");
    audio_pts[0] - video_pts[0]
}

#[tokio::test]
async fn ffmpeg_ingest_plays_back_over_rtmp_as_h264_and_aac() {
    let server = TestServer::start().await;
    let rtmp = server.service("rtmp").to_owned();
    let (key, url) = ingress(&server, "stage", "obs").await;
    assert_eq!(url, rtmp, "POST /v1/ingress hands out the RTMP listener's URL");
    let token = server.token("stage", "viewer", json!({"publish": false, "subscribe": true})).await;

    // The player comes first and waits for the publisher.
    let out = server.dir().join("playback.flv");
    let player = ffmpeg_pull(&format!("{rtmp}/stage/obs?token={token}"), PLAY_SECONDS, &out);
    eventually("the player in the room", Duration::from_secs(10), || async {
        peer(&server, "stage", "viewer").await.map(|_| ())
    })
    .await;
    let publisher = ffmpeg_push(&format!("{url}/{key}"), PUSH_SECONDS);

    let obs = eventually("the publisher's two tracks", Duration::from_secs(20), || async {
        peer(&server, "stage", "obs").await.filter(|p| p["tracks"].as_array().is_some_and(|t| t.len() == 2))
    })
    .await;
    assert_eq!(obs["transport"], "rtmp");
    let tracks = obs["tracks"].as_array().unwrap();
    let video = tracks.iter().find(|t| t["kind"] == "video").expect("video track");
    let audio = tracks.iter().find(|t| t["kind"] == "audio").expect("audio track");
    assert_eq!(video["codec"], "h264");
    let fmtp = video["params"]["fmtp"].as_str().unwrap();
    assert!(fmtp.starts_with("profile-level-id=64") && fmtp.ends_with(";packetization-mode=1"), "High profile: {fmtp}");
    assert_eq!((video["params"]["width"].as_u64(), video["params"]["height"].as_u64()), (Some(640), Some(360)));
    assert_eq!(video["params"]["clock_rate"], 90_000);
    assert_eq!((audio["codec"].as_str(), audio["params"]["clock_rate"].as_u64()), (Some("aac"), Some(44_100)));
    assert_eq!(audio["params"]["channels"], 1, "lavfi's sine is mono");

    let (played, stderr) = finish(player, Duration::from_secs(40)).await;
    assert!(played, "ffmpeg could not play: {stderr}");
    let (pushed, stderr) = finish(publisher, Duration::from_secs(40)).await;
    assert!(pushed, "ffmpeg could not publish: {stderr}");

    let av_offset_ms = check_playback(&out, PLAY_SECONDS).await;
    println!("RTMP playback: first audio {av_offset_ms} ms after first video");

    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    let ingest = metrics
        .lines()
        .find(|l| l.starts_with("junction_rtmp_ingest_frames_total") && l.contains("kind=\"video\""))
        .unwrap_or_else(|| panic!("no ingest metrics:\n{metrics}"));
    let counted: f64 = ingest.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted >= f64::from(PUSH_SECONDS - 1) * 30.0, "{ingest}");
    server.wait_for_no_peers().await;
}

/// A minimal but well-formed H.264 stream for `rml_rtmp` publishers: SPS, PPS, IDR and slices.
const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x47, 0xfe, 0xc8];
const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];

fn avc_sequence_header() -> Bytes {
    let mut tag = BytesMut::new();
    tag.put_slice(&[0x17, 0, 0, 0, 0]);
    tag.put_slice(&AvcConfig::from_parameter_sets(SPS, PPS).expect("an SPS and a PPS").to_bytes());
    tag.freeze()
}

/// A one-NAL access unit; `marker` tells frames apart (its top bit set: a NAL unit never ends in 0).
fn avc_frame(keyframe: bool, marker: u8) -> Bytes {
    let marker = marker | 0x80;
    let nal: &[u8] = if keyframe { &[0x65, 0x88, 0x80, marker] } else { &[0x41, 0x9a, 0x80, marker] };
    let mut tag = BytesMut::new();
    tag.put_slice(&[if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0]);
    tag.put_u32(nal.len() as u32);
    tag.put_slice(nal);
    tag.freeze()
}

fn aac_tag(header: bool, body: &[u8]) -> Bytes {
    let mut tag = BytesMut::new();
    tag.put_slice(&[0xaf, if header { 0 } else { 1 }]);
    tag.put_slice(body);
    tag.freeze()
}

/// Publishes headers and `frames` frames (a keyframe every 10), 40 ms apart from `start_ms`.
async fn publish_frames(client: &mut RtmpClient, start_ms: u32, frames: u32) {
    publish_headers(client, start_ms).await;
    publish_media(client, start_ms, frames).await;
}

/// Metadata and the AVC and AAC sequence headers: the tracks appear in the room.
async fn publish_headers(client: &mut RtmpClient, start_ms: u32) {
    client.send_metadata(320, 240).await;
    client.send_video(start_ms, avc_sequence_header()).await;
    client.send_audio(start_ms, aac_tag(true, &[0x12, 0x10])).await;
}

async fn publish_media(client: &mut RtmpClient, start_ms: u32, frames: u32) {
    for i in 0..frames {
        let ts = start_ms + i * 40;
        client.send_video(ts, avc_frame(i % 10 == 0, i as u8)).await;
        client.send_audio(ts, aac_tag(false, &[0x21, 0x10, i as u8])).await;
    }
}

#[tokio::test]
async fn bad_keys_and_tokens_are_refused_with_netstream_status() {
    let server = TestServer::start().await;
    let rtmp = server.service("rtmp").to_owned();

    let mut client = RtmpClient::connect(&rtmp, "live").await;
    assert!(client.connected());
    assert_eq!(client.publish("sk_no_such_key").await, Err("NetStream.Publish.BadName".to_owned()));
    assert!(client.wait_closed(Duration::from_secs(5)).await, "the server closes after refusing");

    // A client token without the publish grant is no stream key either.
    let viewer = server.token("stage", "viewer", json!({"publish": false, "subscribe": true})).await;
    let mut client = RtmpClient::connect(&rtmp, "live").await;
    assert_eq!(client.publish(&viewer).await, Err("NetStream.Publish.BadName".to_owned()));
    assert!(client.wait_closed(Duration::from_secs(5)).await);

    // A deleted ingress's key stops working.
    let (key, _) = ingress(&server, "stage", "obs").await;
    let (_, list) = server.call(Method::GET, "/v1/ingress", None).await;
    let id = list["ingress"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(server.call(Method::DELETE, &format!("/v1/ingress/{id}"), None).await.0, 204);
    let mut client = RtmpClient::connect(&rtmp, "live").await;
    assert_eq!(client.publish(&key).await, Err("NetStream.Publish.BadName".to_owned()));

    // Players need a token with the subscribe grant, for that room, naming someone else.
    let mut client = RtmpClient::connect(&rtmp, "live").await;
    assert_eq!(client.play("stage/obs").await, Err("NetStream.Play.Failed".to_owned()));
    let other_room = server.token("elsewhere", "viewer", json!({"subscribe": true})).await;
    let mut client = RtmpClient::connect(&rtmp, "live").await;
    assert_eq!(client.play(&format!("stage/obs?token={other_room}")).await, Err("NetStream.Play.Failed".to_owned()));
    let mut client = RtmpClient::connect(&rtmp, "live").await;
    assert_eq!(client.play(&format!("stage?token={viewer}")).await, Err("NetStream.Play.StreamNotFound".to_owned()));
    assert!(client.wait_closed(Duration::from_secs(5)).await);

    // Another application name is refused at connect.
    let client = RtmpClient::connect(&rtmp, "vod").await;
    assert!(client.events.iter().any(|e| matches!(e, ClientSessionEvent::ConnectionRequestRejected { .. })));

    // ffmpeg reports the server's reason and gives up.
    let (ok, stderr) = finish(ffmpeg_push(&format!("{rtmp}/sk_wrong"), 2), Duration::from_secs(30)).await;
    assert!(!ok && stderr.contains("unknown stream key"), "ffmpeg said: {stderr}");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn garbage_and_malformed_streams_close_only_their_own_connection() {
    let server = TestServer::start().await;
    let rtmp = server.service("rtmp").to_owned();
    let (key, _) = ingress(&server, "stage", "obs").await;

    // A healthy publisher streams through all of it.
    let mut healthy = RtmpClient::connect(&rtmp, "live").await;
    healthy.publish(&key).await.expect("publishing");
    publish_frames(&mut healthy, 0, 5).await;

    // Not RTMP at all.
    let mut http = tokio::net::TcpStream::connect(host_of(&rtmp)).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: junction\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), http.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the server closes a connection that does not speak RTMP");

    // A continuation chunk on a chunk stream nothing was sent on.
    let mut broken = RtmpClient::connect(&rtmp, "live").await;
    broken.send_raw(&[0xc5, 1, 2, 3, 4, 5]).await;
    assert!(broken.wait_closed(Duration::from_secs(5)).await, "malformed chunk closes the connection");

    // AMF data that makes the RTMP library itself panic (`@setDataFrame` with nothing after it).
    let mut amf = RtmpClient::connect(&rtmp, "live").await;
    let (key2, _) = ingress(&server, "stage", "obs2").await;
    amf.publish(&key2).await.expect("publishing");
    let mut message = BytesMut::new();
    message.put_slice(&[0x02, 0x00, 0x0d]);
    message.put_slice(b"@setDataFrame");
    let mut chunk = BytesMut::new();
    chunk.put_slice(&[0x03, 0, 0, 0]); // type 0 header on chunk stream 3, timestamp 0
    chunk.put_slice(&(message.len() as u32).to_be_bytes()[1..]);
    chunk.put_u8(18); // AMF0 data
    chunk.put_u32_le(1); // message stream 1
    chunk.put_slice(&message);
    amf.send_raw(&chunk).await;
    assert!(amf.wait_closed(Duration::from_secs(5)).await, "malformed AMF closes the connection");

    // The healthy publisher is still there and still streaming; the server still accepts.
    publish_frames(&mut healthy, 1000, 5).await;
    assert!(!healthy.wait_closed(Duration::from_millis(300)).await);
    assert!(peer(&server, "stage", "obs").await.is_some());
    let another = RtmpClient::connect(&rtmp, "live").await;
    assert!(another.connected());
    drop(another);
    drop(healthy);

    let logs = server.logs();
    assert!(logs.contains("RTMP handshake failed"), "{logs}");
    assert!(logs.contains("malformed RTMP stream"), "{logs}");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn a_second_publisher_with_the_same_key_replaces_the_first() {
    let server = TestServer::start().await;
    let rtmp = server.service("rtmp").to_owned();
    let (key, _) = ingress(&server, "stage", "obs").await;
    let mut first = RtmpClient::connect(&rtmp, "live").await;
    first.publish(&key).await.expect("first publisher");
    publish_frames(&mut first, 0, 3).await;
    let session = eventually("the first publisher", Duration::from_secs(5), || async {
        peer(&server, "stage", "obs").await.map(|p| p["session"].clone())
    })
    .await;

    // The encoder reconnects before the server noticed the old connection died.
    let mut second = RtmpClient::connect(&rtmp, "live").await;
    second.publish(&key).await.expect("the reconnecting publisher takes over");
    assert!(first.wait_closed(Duration::from_secs(5)).await, "the replaced connection is closed");
    publish_frames(&mut second, 0, 3).await;
    let now = peer(&server, "stage", "obs").await.expect("still publishing");
    assert_ne!(now["session"], session);
    assert_eq!(peers(&server, "stage").await.len(), 1);
    assert!(server.logs().contains("\"replaced\""), "{}", server.logs());

    // Deleting the ingress disconnects whoever streams with its key.
    let (_, list) = server.call(Method::GET, "/v1/ingress", None).await;
    let id = list["ingress"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(server.call(Method::DELETE, &format!("/v1/ingress/{id}"), None).await.0, 204);
    assert!(second.wait_closed(Duration::from_secs(5)).await, "a deleted ingress's publisher is disconnected");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn enhanced_rtmp_hevc_is_refused_by_name() {
    let server = TestServer::start().await;
    let rtmp = server.service("rtmp").to_owned();
    let (key, _) = ingress(&server, "stage", "obs").await;
    let mut client = RtmpClient::connect(&rtmp, "live").await;
    client.publish(&key).await.expect("publishing");
    // Enhanced RTMP: IsExHeader | keyframe, PacketTypeSequenceStart, FourCC "hvc1", then a record.
    client.send_video(0, Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1', 1, 2, 3, 4])).await;
    assert!(client.wait_closed(Duration::from_secs(5)).await);
    assert_eq!(client.status_codes(), vec!["NetStream.Failed".to_owned()]);
    let logs = server.logs();
    assert!(logs.contains("video codec HEVC (Enhanced RTMP FourCC \"hvc1\") is not supported"), "{logs}");
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn with_on_duplicate_reject_a_live_key_refuses_the_second_publisher() {
    let server = TestServer::start_with("[rtmp]\non_duplicate = \"reject\"\n", &[]).await;
    let rtmp = server.service("rtmp").to_owned();
    let (key, _) = ingress(&server, "stage", "obs").await;
    let mut first = RtmpClient::connect(&rtmp, "live").await;
    first.publish(&key).await.expect("first publisher");
    let mut second = RtmpClient::connect(&rtmp, "live").await;
    assert_eq!(second.publish(&key).await, Err("NetStream.Publish.BadName".to_owned()));
    assert!(second.wait_closed(Duration::from_secs(5)).await);
    assert!(!first.wait_closed(Duration::from_millis(300)).await, "the live publisher is untouched");
    drop(first);
    server.wait_for_no_peers().await;
}

#[tokio::test]
async fn a_stalled_publisher_is_reaped() {
    let server = TestServer::start_with("[rtmp]\nidle_timeout_s = 1\n", &[]).await;
    let rtmp = server.service("rtmp").to_owned();
    let (key, _) = ingress(&server, "stage", "obs").await;
    let mut client = RtmpClient::connect(&rtmp, "live").await;
    client.publish(&key).await.expect("publishing");
    publish_frames(&mut client, 0, 3).await;
    assert!(peer(&server, "stage", "obs").await.is_some());
    // The encoder hangs with its connection open.
    assert!(client.wait_closed(Duration::from_secs(10)).await, "the server closes a silent publisher");
    server.wait_for_no_peers().await;
    assert!(server.logs().contains("closing stalled connection"), "{}", server.logs());
}

#[tokio::test]
async fn a_player_waits_for_the_publisher_and_follows_it_when_it_publishes_again() {
    let server = TestServer::start().await;
    let rtmp = server.service("rtmp").to_owned();
    let (key, _) = ingress(&server, "stage", "obs").await;
    let token = server.token("stage", "viewer", json!({"publish": false, "subscribe": true})).await;
    let mut player = RtmpClient::connect(&rtmp, "live").await;
    player.play(&format!("stage/obs?token={token}")).await.expect("playing before anyone publishes");

    for round in 0..2u32 {
        let mut publisher = RtmpClient::connect(&rtmp, "live").await;
        publisher.publish(&key).await.expect("publishing");
        publish_headers(&mut publisher, 0).await;
        eventually("the player subscribed to both tracks", Duration::from_secs(5), || async {
            let viewer = peer(&server, "stage", "viewer").await?;
            (viewer["subscriptions"].as_array()?.len() == 2).then_some(())
        })
        .await;
        publish_media(&mut publisher, 0, 12).await;
        // Read what the player gets for a while.
        player.wait_for(Duration::from_millis(1500), |_| false).await;
        assert!(!player.closed, "the player stays while the publisher comes and goes (round {round})");
        drop(publisher);
        eventually("the publisher gone", Duration::from_secs(5), || async {
            peer(&server, "stage", "obs").await.is_none().then_some(())
        })
        .await;
    }

    let media = player.media();
    let headers: Vec<u32> =
        media.iter().filter(|(video, _, tag)| *video && tag.get(..2) == Some(&[0x17, 0][..])).map(|m| m.1).collect();
    assert_eq!(headers.len(), 2, "a sequence header for each publication");
    let first_video = media.iter().find(|(video, _, tag)| *video && tag.get(1) == Some(&1)).expect("video frames");
    assert_eq!(first_video.2.first(), Some(&0x17), "video starts at a keyframe");
    let video_ts: Vec<u32> =
        media.iter().filter(|(video, _, tag)| *video && tag.get(1) == Some(&1)).map(|m| m.1).collect();
    assert_eq!(video_ts.len(), 24, "both publications' 12 frames: {video_ts:?}");
    assert!(video_ts.windows(2).all(|w| w[0] < w[1]), "one timeline across publications: {video_ts:?}");
    let audio_ts: Vec<u32> = media.iter().filter(|(video, _, _)| !*video).map(|m| m.1).collect();
    assert!(audio_ts.windows(2).all(|w| w[0] <= w[1]), "{audio_ts:?}");
    // The payload is the publisher's, byte for byte, behind the FLV header.
    let keyframe = media.iter().find(|(video, _, tag)| *video && tag.get(..2) == Some(&[0x17, 1][..])).unwrap();
    assert!(keyframe.2.ends_with(&[0, 0, 0, 4, 0x65, 0x88, 0x80, 0x80]), "{:?}", keyframe.2);
    drop(player);
    server.wait_for_no_peers().await;
}
