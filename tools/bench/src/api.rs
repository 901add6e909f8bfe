//! The few REST calls the load tool makes on the server under test: rooms, client tokens,
//! ingress stream keys, SIP trunks and dial-in rules, and `/healthz` for live counts.

use anyhow::{Context, bail};
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

/// Live counts from `/healthz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    pub rooms: u64,
    pub peers: u64,
    pub tracks: u64,
}

impl Api {
    pub fn new(base: &str, key: Option<String>) -> Api {
        Api { http: reqwest::Client::new(), base: base.trim_end_matches('/').to_owned(), key }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let key = self.key.as_deref().context("the API key is required: pass --api-key or set JUNCTION_API_KEY")?;
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            let message = value["error"]["message"].as_str().map_or(text.clone(), str::to_owned);
            bail!("{method} {path}: {} {message}", status.as_u16());
        }
        Ok(value)
    }

    /// Creates a room for the run that closes `empty_timeout_s` after its last peer left.
    pub async fn create_room(&self, name: &str, empty_timeout_s: u64) -> anyhow::Result<()> {
        let body = json!({"name": name, "empty_timeout_s": empty_timeout_s});
        self.call(reqwest::Method::POST, "/v1/rooms", Some(body)).await?;
        Ok(())
    }

    pub async fn delete_room(&self, name: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::DELETE, &format!("/v1/rooms/{name}"), None).await?;
        Ok(())
    }

    /// A client token for `identity` in `room`.
    pub async fn token(&self, room: &str, identity: &str, publish: bool, subscribe: bool) -> anyhow::Result<String> {
        let body = json!({"identity": identity, "grants": {"publish": publish, "subscribe": subscribe}});
        let value = self.call(reqwest::Method::POST, &format!("/v1/rooms/{room}/tokens"), Some(body)).await?;
        value["token"].as_str().map(str::to_owned).context("the token response has no token")
    }

    /// The server's TURN server over UDP with a credential for `identity`, from the tokens
    /// endpoint's `ice_servers` (the server needs `[turn] enabled`).
    pub async fn turn_server(&self, room: &str, identity: &str) -> anyhow::Result<crate::webrtc::turn::TurnServer> {
        let body = json!({"identity": identity, "grants": {"publish": false, "subscribe": true}});
        let value = self.call(reqwest::Method::POST, &format!("/v1/rooms/{room}/tokens"), Some(body)).await?;
        for server in value["ice_servers"].as_array().into_iter().flatten() {
            let Some(url) = server["urls"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str())
                .find(|u| u.starts_with("turn:") && u.ends_with("?transport=udp"))
            else {
                continue;
            };
            let host_port = url.trim_start_matches("turn:").trim_end_matches("?transport=udp");
            let addr = tokio::net::lookup_host(host_port).await?.next().context("the TURN host does not resolve")?;
            let field =
                |name: &str| server[name].as_str().map(str::to_owned).context("a TURN server without a credential");
            return Ok(crate::webrtc::turn::TurnServer {
                addr,
                username: field("username")?,
                password: field("credential")?,
            });
        }
        anyhow::bail!("the server hands out no TURN server over UDP: start it with [turn] enabled = true")
    }

    /// An RTMP ingress: (id, stream key, RTMP application URL).
    pub async fn rtmp_ingress(&self, room: &str, identity: &str) -> anyhow::Result<(String, String, String)> {
        let body = json!({"kind": "rtmp", "room": room, "identity": identity});
        let value = self.call(reqwest::Method::POST, "/v1/ingress", Some(body)).await?;
        let field =
            |name: &str| value[name].as_str().map(str::to_owned).with_context(|| format!("ingress without {name}"));
        Ok((field("id")?, field("stream_key")?, field("url")?))
    }

    /// A room component (`{"type": …, …options}`); returns its id.
    pub async fn create_component(&self, room: &str, body: Value) -> anyhow::Result<String> {
        let value = self.call(reqwest::Method::POST, &format!("/v1/rooms/{room}/components"), Some(body)).await?;
        value["id"].as_str().map(str::to_owned).context("the component response has no id")
    }

    pub async fn delete_ingress(&self, id: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::DELETE, &format!("/v1/ingress/{id}"), None).await?;
        Ok(())
    }

    /// A SIP trunk admitting calls from `network` (CIDR); returns its id.
    pub async fn create_sip_trunk(&self, name: &str, network: &str) -> anyhow::Result<String> {
        let body = json!({"name": name, "allowed_addresses": [network]});
        let value = self.call(reqwest::Method::POST, "/v1/sip/trunks", Some(body)).await?;
        value["id"].as_str().map(str::to_owned).context("the trunk response has no id")
    }

    pub async fn delete_sip_trunk(&self, id: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::DELETE, &format!("/v1/sip/trunks/{id}"), None).await?;
        Ok(())
    }

    /// A dial-in rule sending calls to the dialled `rooms` (a `callee` rule limited to those
    /// numbers, so it wins over any catch-all the server has); returns its id.
    pub async fn create_sip_rule(&self, rooms: &[String]) -> anyhow::Result<String> {
        let body = json!({"kind": "callee", "prefix": "", "numbers": rooms});
        let value = self.call(reqwest::Method::POST, "/v1/sip/dispatch-rules", Some(body)).await?;
        value["id"].as_str().map(str::to_owned).context("the dispatch rule response has no id")
    }

    pub async fn delete_sip_rule(&self, id: &str) -> anyhow::Result<()> {
        self.call(reqwest::Method::DELETE, &format!("/v1/sip/dispatch-rules/{id}"), None).await?;
        Ok(())
    }

    pub async fn health(&self) -> anyhow::Result<Health> {
        let value: Value = self
            .http
            .get(format!("{}/healthz", self.base))
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?
            .json()
            .await
            .context("/healthz is not JSON")?;
        let count = |name: &str| value[name].as_u64().unwrap_or(0);
        Ok(Health { rooms: count("rooms"), peers: count("peers"), tracks: count("tracks") })
    }
}
