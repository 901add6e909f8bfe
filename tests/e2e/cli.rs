//! The operator CLI against a running server.

use crate::support::TestServer;

async fn junction(server: &TestServer, args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_junction"))
        .args(args)
        .env("JUNCTION_URL", &server.base)
        .env("JUNCTION_API_KEY", &server.api_key)
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

#[tokio::test]
async fn rooms_and_tokens_from_the_command_line() {
    let server = TestServer::start().await;
    let (ok, out, err) = junction(&server, &["room", "create", "--name", "cli-room", "--max-peers", "4"]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("NAME") && out.contains("cli-room"), "{out}");

    let (ok, out, _) = junction(&server, &["room", "list"]).await;
    assert!(ok);
    let row = out.lines().find(|l| l.starts_with("cli-room")).expect("row");
    assert_eq!(row.split_whitespace().collect::<Vec<_>>(), ["cli-room", "0", "0", "sfu", "4"]);

    let (ok, out, _) = junction(&server, &["room", "list", "--json"]).await;
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["rooms"][0]["name"], "cli-room");

    let (ok, out, _) = junction(
        &server,
        &["token", "create", "--room", "cli-room", "--identity", "bob", "--subscribe", "--ttl", "60", "--json"],
    )
    .await;
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        json["grants"],
        serde_json::json!({"publish": false, "subscribe": true, "admin": false, "sip_call": false})
    );
    assert_eq!(json["expires_in_s"], 60);

    let (ok, _, err) = junction(&server, &["room", "create", "--name", "cli-room"]).await;
    assert!(!ok);
    assert!(err.contains("409 room_exists"), "{err}");

    let (ok, out, _) = junction(&server, &["room", "delete", "cli-room"]).await;
    assert!(ok && out.contains("deleted room cli-room"));
    let (ok, _, err) = junction(&server, &["room", "delete", "cli-room"]).await;
    assert!(!ok && err.contains("404 room_not_found"), "{err}");

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_junction"))
        .args(["room", "list", "--url", &server.base])
        .env_remove("JUNCTION_API_KEY")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("the API key is required"));
}
