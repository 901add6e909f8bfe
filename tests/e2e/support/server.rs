//! Runs the real `junction` binary for a test: every listener on port 0 of 127.0.0.1, a known
//! API key, stdout parsed for the addresses actually bound, stderr kept in a file for diagnosis.
//! The process is killed when the `TestServer` is dropped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const API_KEY: &str = "e2e-test-api-key-0123456789";

/// The configuration every test server starts from: all listeners on free ports. Transports add
/// their section here with `listen = "127.0.0.1:0"` (or the equivalent).
const BASE_CONFIG: &str = r#"
api_key = "e2e-test-api-key-0123456789"
[http]
listen = "127.0.0.1:0"
[rooms]
empty_timeout_s = 5
[rtmp]
listen = "127.0.0.1:0"
[srt]
listen = "127.0.0.1:0"
[moq]
listen = "127.0.0.1:0"
[webrtc]
udp_listen = "127.0.0.1:0"
[sip]
listen = "127.0.0.1:0"
"#;

pub struct TestServer {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Each service line of the banner: name -> URL (`http`, `rtmp`, `webrtc`, ...).
    pub services: HashMap<String, String>,
    pub api_key: String,
    stderr: PathBuf,
    dir: tempfile::TempDir,
    /// Added to `junction serve`.
    args: Vec<String>,
    /// Added to the server's environment.
    env: Vec<(String, String)>,
    http: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with("", &[]).await
    }

    /// Starts a server with `extra_toml` appended to the base configuration and `args` added to
    /// `junction serve`.
    pub async fn start_with(extra_toml: &str, args: &[&str]) -> TestServer {
        Self::launch(BASE_CONFIG, extra_toml, args, API_KEY, Vec::new()).await
    }

    /// Starts a server with `env` added to its environment (`SSL_CERT_FILE` for a test CA).
    pub async fn start_with_env(extra_toml: &str, env: &[(&str, &str)]) -> TestServer {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Self::launch(BASE_CONFIG, extra_toml, &[], API_KEY, env).await
    }

    /// Starts a server whose API keys are only those `keys_toml` configures (`[auth] keys`,
    /// `signing_key`): the base `api_key` is left out. `api_key` is the secret [`TestServer::api`]
    /// calls with.
    pub async fn start_with_keys(keys_toml: &str, api_key: &str) -> TestServer {
        let mut base: toml::Table = BASE_CONFIG.parse().expect("base config");
        base.remove("api_key");
        Self::launch(&toml::to_string(&base).expect("base config"), keys_toml, &[], api_key, Vec::new()).await
    }

    async fn launch(
        base: &str,
        extra_toml: &str,
        args: &[&str],
        api_key: &str,
        env: Vec<(String, String)>,
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("junction.toml");
        // The generated MoQ development CA and the state store go in the test's own directory.
        let own = format!(
            "data_dir = {:?}\n[moq]\ndev_ca_file = {:?}\n",
            dir.path().join("data"),
            dir.path().join("moq-ca.pem")
        );
        let base = merge_toml(base, &own);
        std::fs::write(&config, merge_toml(&base, extra_toml)).expect("write config");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Self::spawn(dir, args, api_key, env).await
    }

    /// Kills the server with SIGKILL (nothing is flushed or said goodbye) and starts it again
    /// with the same configuration and directory, so with the same state store. Its listeners
    /// get new ports.
    pub async fn kill_and_restart(mut self) -> TestServer {
        let mut child = self.child.take().expect("a running server");
        child.start_kill().expect("SIGKILL");
        let _ = child.wait().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        let (args, api_key, env) = (self.args.clone(), self.api_key.clone(), self.env.clone());
        drop(self);
        Self::spawn(dir, args, &api_key, env).await
    }

    async fn spawn(dir: tempfile::TempDir, args: Vec<String>, api_key: &str, env: Vec<(String, String)>) -> TestServer {
        let config = dir.path().join("junction.toml");
        let stderr = dir.path().join("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_junction"))
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("JUNCTION_API_KEY")
            // Only the test harness reads this one; the server would take it for a config key.
            .env_remove("JUNCTION_TEST_LOG")
            .env("RUST_LOG", std::env::var("JUNCTION_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::options().create(true).append(true).open(&stderr).expect("stderr file"))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn junction");

        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut services = HashMap::new();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.starts_with("Junction is ready") {
                    return true;
                }
                if let Some(rest) = line.strip_prefix("  ") {
                    let mut parts = rest.split_whitespace();
                    if let (Some(name), Some(url)) = (parts.next(), parts.next()) {
                        services.insert(name.to_owned(), url.to_owned());
                    }
                }
            }
            false
        })
        .await;
        if ready != Ok(true) {
            let logs = std::fs::read_to_string(&stderr).unwrap_or_default();
            panic!("junction did not become ready; stderr:\n{logs}");
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let base = services.get("http").cloned().expect("http service line");
        TestServer {
            child: Some(child),
            base,
            services,
            api_key: api_key.to_owned(),
            stderr,
            dir,
            args,
            env,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The URL a banner line gave for `name`.
    pub fn service(&self, name: &str) -> &str {
        self.services.get(name).unwrap_or_else(|| panic!("no `{name}` service in the banner: {:?}", self.services))
    }

    /// A request to the server with the API key.
    pub fn api(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(&self.api_key)
    }

    /// Calls the API and returns (status, JSON body or Null).
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.api(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Mints a client token through the API.
    pub async fn token(&self, room: &str, identity: &str, grants: Value) -> String {
        let body = serde_json::json!({"identity": identity, "grants": grants});
        let (status, value) = self.call(reqwest::Method::POST, &format!("/v1/rooms/{room}/tokens"), Some(body)).await;
        assert_eq!(status, 201, "token: {value}");
        value["token"].as_str().expect("token").to_owned()
    }

    /// `GET /healthz`: live rooms, peers, tracks.
    pub async fn health(&self) -> Value {
        self.http.get(self.url("/healthz")).send().await.expect("healthz").json().await.expect("json")
    }

    /// Waits until the server has no live peers and tracks.
    pub async fn wait_for_no_peers(&self) {
        super::eventually("live peers and tracks back to zero", Duration::from_secs(20), || async {
            let health = self.health().await;
            (health["peers"] == 0 && health["tracks"] == 0).then_some(())
        })
        .await;
    }

    /// Everything the server wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|c| c.id()).expect("running")
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit code.
    pub async fn stop(mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = child.id()?;
        let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        let status = tokio::time::timeout(Duration::from_secs(15), child.wait()).await.ok()?.ok()?;
        status.code()
    }
}

/// Appends `extra` to `base`, merging tables that appear in both (so a test can override a key
/// of a base section).
fn merge_toml(base: &str, extra: &str) -> String {
    let mut merged: toml::Table = base.parse().expect("base config");
    let extra: toml::Table = extra.parse().expect("extra config is TOML");
    for (key, value) in extra {
        match (merged.get_mut(&key), value) {
            (Some(toml::Value::Table(existing)), toml::Value::Table(more)) => existing.extend(more),
            (_, value) => {
                merged.insert(key, value);
            }
        }
    }
    toml::to_string(&merged).expect("serialise config")
}
