//! The REST API over real HTTP: every route's happy path and every documented error, tokens
//! accepted and refused, config errors at start-up, graceful shutdown.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::TestServer;

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[tokio::test]
async fn health_metrics_and_home_page_answer_without_credentials() {
    let server = TestServer::start().await;
    let health = server.health().await;
    assert_eq!(health["status"], "ok");
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    for name in ["junction_rooms", "junction_peers", "junction_tracks", "process_resident_memory_bytes"] {
        assert!(metrics.contains(name), "{name} missing from /metrics:\n{metrics}");
    }
    let home = reqwest::get(server.url("/")).await.unwrap().text().await.unwrap();
    assert!(home.contains("<h1>Junction</h1>") && home.contains("/v1/openapi.json"));
    // The icon pages link to, also where browsers look on their own.
    for path in ["/favicon.svg", "/favicon.ico"] {
        let icon = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(icon.headers()["content-type"], "image/svg+xml", "{path}");
        assert!(icon.text().await.unwrap().starts_with("<svg"), "{path}");
    }
    // The request counter saw the calls above, by status.
    let metrics = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("junction_transport_api_requests_total{status=\"200\"}"), "{metrics}");
}

#[tokio::test]
async fn v1_needs_the_api_key() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    for auth in [None, Some("Bearer wrong-key"), Some("Basic abc")] {
        let mut request = client.get(server.url("/v1/rooms"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{auth:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert_eq!(code(&body), "unauthorized");
    }
    let (status, body) = server.call(Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    for path in [
        "/v1/rooms",
        "/v1/rooms/{room}",
        "/v1/rooms/{room}/tokens",
        "/v1/rooms/{room}/peers/{identity}",
        "/v1/ingress",
        "/v1/events",
        "/v1/rooms/{room}/components",
    ] {
        assert!(body["paths"][path].is_object(), "openapi lacks {path}");
    }
    let kinds = &body["components"]["schemas"]["Component"]["properties"]["type"]["enum"];
    assert_eq!(kinds, &serde_json::json!(["file", "rtsp", "recording", "hls"]), "every component type is documented");
    assert_eq!(body["servers"][0]["url"], server.base);
}

#[tokio::test]
async fn rooms_are_created_listed_inspected_and_deleted() {
    let server = TestServer::start().await;
    let spec = json!({"name": "standup", "max_peers": 8, "empty_timeout_s": 60, "max_duration_s": 3600, "metadata": {"team": "core"}});
    let (status, body) = server.call(Method::POST, "/v1/rooms", Some(spec.clone())).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["room"]["name"], "standup");
    assert_eq!(body["room"]["max_peers"], 8);
    assert_eq!(body["room"]["empty_timeout_s"], 60);
    assert_eq!(body["room"]["max_duration_s"], 3600);
    assert_eq!(body["room"]["metadata"]["team"], "core");
    assert_eq!(body["room"]["mode"], "sfu");
    assert_eq!(body["room"]["video_codec"], "auto");

    let (status, body) = server.call(Method::POST, "/v1/rooms", Some(spec)).await;
    assert_eq!((status, code(&body)), (409, "room_exists"));

    let bad_codec = json!({"name": "mpeg", "video_codec": "mpeg2"});
    let (status, body) = server.call(Method::POST, "/v1/rooms", Some(bad_codec)).await;
    assert_eq!((status, code(&body)), (400, "invalid_field"), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("video_codec: unknown variant"), "{body}");

    let (status, body) =
        server.call(Method::POST, "/v1/rooms", Some(json!({"mode": "mesh", "video_codec": "vp9"}))).await;
    assert_eq!(status, 201);
    assert_eq!(body["room"]["video_codec"], "vp9");
    let generated = body["room"]["name"].as_str().unwrap().to_owned();
    assert!(generated.starts_with("room-"), "{generated}");
    assert_eq!(body["room"]["mode"], "mesh");
    // No body at all means all defaults.
    let response = server.api(Method::POST, "/v1/rooms").send().await.unwrap();
    assert_eq!(response.status(), 201);

    let (status, body) = server.call(Method::GET, "/v1/rooms", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["rooms"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"standup") && names.contains(&generated.as_str()) && names.len() == 3, "{names:?}");

    let (status, body) = server.call(Method::GET, "/v1/rooms/standup", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["room"]["peers"], json!([]));
    let (status, body) = server.call(Method::GET, "/v1/rooms/standup/peers", None).await;
    assert_eq!((status, body["peers"].clone()), (200, json!([])));

    let (status, _) = server.call(Method::DELETE, "/v1/rooms/standup", None).await;
    assert_eq!(status, 204);
    for (method, path) in [
        (Method::GET, "/v1/rooms/standup"),
        (Method::DELETE, "/v1/rooms/standup"),
        (Method::GET, "/v1/rooms/standup/peers"),
        (Method::DELETE, "/v1/rooms/standup/peers/alice"),
    ] {
        let (status, body) = server.call(method.clone(), path, None).await;
        assert_eq!((status, code(&body)), (404, "room_not_found"), "{method} {path}");
    }
    let (status, body) = server.call(Method::POST, "/v1/rooms", Some(json!({"name": "present"}))).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.call(Method::DELETE, "/v1/rooms/present/peers/nobody", None).await;
    assert_eq!((status, code(&body)), (404, "peer_not_found"));
}

#[tokio::test]
async fn bad_requests_get_json_errors_naming_the_problem() {
    let server = TestServer::start().await;
    let cases: Vec<(&str, &str, u16, &str, &str)> = vec![
        ("/v1/rooms", r#"{"name": "#, 400, "invalid_json", "malformed JSON"),
        ("/v1/rooms", r#"{"name": "a/b"}"#, 400, "invalid_field", "name: room \"a/b\" contains '/'"),
        ("/v1/rooms", r#"{"max_peers": "lots"}"#, 400, "invalid_field", "max_peers: invalid type"),
        ("/v1/rooms", r#"{"colour": "red"}"#, 400, "invalid_field", "unknown field `colour`"),
        ("/v1/rooms", r#"{"mode": "p2p"}"#, 400, "invalid_field", "mode: unknown variant `p2p`"),
        ("/v1/rooms", r#"{"empty_timeout_s": 0}"#, 422, "out_of_range", "empty_timeout_s is 0"),
        ("/v1/rooms/lobby/tokens", r#"{}"#, 400, "invalid_field", "missing field `identity`"),
        ("/v1/rooms/lobby/tokens", r#"{"identity": "x", "ttl_s": 0}"#, 422, "out_of_range", "ttl_s is 0"),
        (
            "/v1/rooms/lobby/tokens",
            r#"{"identity": "x", "grants": {"publish": "yes"}}"#,
            400,
            "invalid_field",
            "grants.publish",
        ),
        (
            "/v1/ingress",
            r#"{"kind": "hls", "room": "a", "identity": "b"}"#,
            400,
            "invalid_field",
            "kind: unknown variant",
        ),
    ];
    for (path, body, status, expected_code, message) in cases {
        let response =
            server.api(Method::POST, path).header("content-type", "application/json").body(body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path} {body}");
        let json: Value = response.json().await.unwrap();
        assert_eq!(code(&json), expected_code, "{path} {body}: {json}");
        let got = json["error"]["message"].as_str().unwrap();
        assert!(got.contains(message), "{path} {body}: {got:?} lacks {message:?}");
    }

    let response =
        server.api(Method::POST, "/v1/rooms/bad%20name/tokens").json(&json!({"identity": "a"})).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let json: Value = response.json().await.unwrap();
    assert!(json["error"]["message"].as_str().unwrap().starts_with("room: room \"bad name\""), "{json}");

    let response =
        server.api(Method::POST, "/v1/rooms").header("content-type", "text/plain").body("name=x").send().await.unwrap();
    assert_eq!(response.status(), 415);
    let response = server
        .api(Method::POST, "/v1/rooms")
        .header("content-type", "application/json")
        .body(format!(r#"{{"metadata": "{}"}}"#, "x".repeat(70_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(code(&response.json::<Value>().await.unwrap()), "payload_too_large");

    let (status, body) = server.call(Method::GET, "/v1/nothing-here", None).await;
    assert_eq!((status, code(&body)), (404, "not_found"));
    let (status, body) = server.call(Method::PATCH, "/v1/rooms", Some(json!({}))).await;
    assert_eq!((status, code(&body)), (405, "method_not_allowed"));
}

#[tokio::test]
async fn tokens_are_minted_verified_and_refused_when_expired_forged_or_misused() {
    let server = TestServer::start().await;
    let (status, body) = server
        .call(
            Method::POST,
            "/v1/rooms/town-hall/tokens",
            Some(json!({"identity": "mayor", "name": "The Mayor", "grants": {"admin": true}, "ttl_s": 600})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    assert_eq!(body["expires_in_s"], 600);
    assert_eq!(body["ws_url"], format!("{}/ws", server.base.replacen("http", "ws", 1)));
    assert_eq!(body["whip_url"], format!("{}/whip/town-hall", server.base));
    assert_eq!(body["whep_url"], format!("{}/whep/town-hall", server.base));

    // The claims are what was asked for (decoded without trusting them: the server verifies).
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&base64_url_decode(payload)).unwrap();
    assert_eq!((claims["sub"].as_str(), claims["room"].as_str()), (Some("mayor"), Some("town-hall")));
    assert_eq!(claims["grants"], json!({"publish": true, "subscribe": true, "admin": true, "sip_call": false}));
    assert!(claims["jti"].as_str().is_some_and(|j| j.starts_with("TK_")), "a token id: {claims}");
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 600);

    // An admin token opens its own room's routes, and only those.
    let client = reqwest::Client::new();
    let get = |path: String, token: String| {
        let client = client.clone();
        async move { client.get(path).bearer_auth(token).send().await.unwrap() }
    };
    server.call(Method::POST, "/v1/rooms", Some(json!({"name": "town-hall"}))).await;
    assert_eq!(get(server.url("/v1/rooms/town-hall/peers"), token.clone()).await.status(), 200);
    assert_eq!(get(server.url("/v1/rooms/other/peers"), token.clone()).await.status(), 403);
    assert_eq!(get(server.url("/v1/rooms"), token.clone()).await.status(), 403);

    let plain = server.token("town-hall", "citizen", json!({})).await;
    let response = get(server.url("/v1/rooms/town-hall"), plain).await;
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("admin grant"));

    // A token signed with another key, a tampered one, and an expired one are all refused.
    let forged = forge_token("some-other-servers-key-123", "town-hall", "mallory", 3600);
    assert_eq!(get(server.url("/v1/rooms/town-hall"), forged).await.status(), 401);
    let mut tampered = token.clone();
    tampered.replace_range(tampered.len() - 4.., "AAAA");
    assert_eq!(get(server.url("/v1/rooms/town-hall"), tampered).await.status(), 401);
    let expired = forge_token(crate::support::server::API_KEY, "town-hall", "late", -10);
    assert_eq!(get(server.url("/v1/rooms/town-hall"), expired).await.status(), 401);
    let fresh = forge_token(crate::support::server::API_KEY, "town-hall", "ontime", 60);
    assert_eq!(get(server.url("/v1/rooms/town-hall"), fresh).await.status(), 200);
}

#[tokio::test]
async fn ingress_needs_an_enabled_ingest_and_is_listed_and_deleted() {
    let server = TestServer::start().await;
    let (status, body) = server.call(Method::GET, "/v1/ingress", None).await;
    assert_eq!((status, body["ingress"].clone()), (200, json!([])));
    let (status, body) = server.call(Method::GET, "/v1/ingress/IN_missing", None).await;
    assert_eq!((status, code(&body)), (404, "ingress_not_found"));
    let (status, body) = server.call(Method::DELETE, "/v1/ingress/IN_missing", None).await;
    assert_eq!((status, code(&body)), (404, "ingress_not_found"));
}

#[tokio::test]
async fn bad_configuration_stops_start_up_naming_the_key() {
    for (args, expected) in [
        (vec!["--set", "http.listn=1"], "config key `http.listn`: unknown field `listn`"),
        (vec!["--set", "rooms.max_peers=-1"], "config key `rooms.max_peers`"),
        (vec!["--http-listen", "not-an-address"], "config key `http.listen`"),
        (vec!["--api-key", "short"], "config key `api_key`: must be at least 16 characters"),
        (vec!["--set", "video.max_width=8"], "config key `video.max_width`: must be 16 to 4096"),
        (vec!["--set", "rooms.video_codec=mpeg2"], "config key `rooms.video_codec`"),
    ] {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_junction"))
            .arg("serve")
            .args(&args)
            .env_remove("JUNCTION_API_KEY")
            .output()
            .await
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_junction"))
        .arg("serve")
        .env("JUNCTION_HTTP_LISTN", "127.0.0.1:0")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown field `listn`"));
}

#[tokio::test]
async fn zero_config_start_prints_a_development_key_that_works() {
    // The real zero-config path, but on a free port so tests can run side by side.
    let server = TestServer::start_with("", &[]).await;
    drop(server);
    // Run where the default data_dir (./junction-data) lands in a directory of the test's own.
    let cwd = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_junction"))
        .args(["serve", "--http-listen", "127.0.0.1:0"])
        .current_dir(cwd.path())
        .env_remove("JUNCTION_API_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut key, mut http) = (None, None);
    while let Ok(Some(line)) = lines.next_line().await {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts.as_slice() {
            ["api_key", k] => key = Some(k.to_string()),
            ["http", url] => http = Some(url.to_string()),
            _ if line.starts_with("Junction is ready") => break,
            _ => {}
        }
    }
    let (key, http) = (key.expect("dev key printed"), http.expect("http printed"));
    assert!(key.starts_with("dev_") && key.len() >= 20);
    let response = reqwest::Client::new().get(format!("{http}/v1/rooms")).bearer_auth(&key).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(cwd.path().join("junction-data/junction.db").exists(), "zero config keeps state in ./junction-data");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully() {
    let server = TestServer::start().await;
    server.call(Method::POST, "/v1/rooms", Some(json!({"name": "closing"}))).await;
    let logs_dir = server.dir().to_path_buf();
    let code = server.stop().await;
    assert_eq!(code, Some(0));
    let _ = logs_dir;
}

fn base64_url_decode(input: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in input.bytes().filter(|c| *c != b'=') {
        let value = ALPHABET.iter().position(|a| *a == c).expect("base64url") as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A client token made outside the server, with `exp` `ttl_s` seconds from now (negative: past).
fn forge_token(secret: &str, room: &str, identity: &str, ttl_s: i64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let claims = json!({"iss": "junction", "sub": identity, "room": room, "iat": now - 60, "nbf": now - 60, "exp": now + ttl_s, "grants": {"admin": true}});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}
