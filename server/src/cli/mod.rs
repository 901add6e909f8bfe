//! The operator CLI: subcommands that talk to a running server's REST API (`--url`,
//! `--api-key`), printing readable tables or, with `--json`, the API's own JSON.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Base URL of the server's HTTP API.
    #[arg(long, env = "JUNCTION_URL", default_value = "http://127.0.0.1:7880", global = true)]
    pub url: String,
    /// The server's API key (printed by `junction serve` in development mode).
    #[arg(long, env = "JUNCTION_API_KEY", hide_env_values = true, global = true)]
    pub api_key: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// List open rooms.
    List,
    /// Create a room.
    Create {
        /// Room name (letters, digits, - _ . ~ : @ +); the server picks one if omitted.
        #[arg(long)]
        name: Option<String>,
        /// Most peers at once (0: no limit).
        #[arg(long)]
        max_peers: Option<u32>,
        /// Seconds the room stays open with nobody in it.
        #[arg(long)]
        empty_timeout_s: Option<u64>,
        /// Seconds after which the room is closed and everyone disconnected.
        #[arg(long)]
        max_duration_s: Option<u64>,
        /// `sfu` (media through the server) or `mesh` (signalling only).
        #[arg(long)]
        mode: Option<String>,
    },
    /// Delete a room, disconnecting everyone in it.
    Delete {
        /// The room's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a client token for a room and identity. Without --publish/--subscribe it grants both.
    Create {
        #[arg(long)]
        room: String,
        #[arg(long)]
        identity: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// Grant publishing.
        #[arg(long)]
        publish: bool,
        /// Grant subscribing.
        #[arg(long)]
        subscribe: bool,
        /// Grant room administration (kick, delete) through the API.
        #[arg(long)]
        admin: bool,
        /// Lifetime in seconds (default: 6 hours).
        #[arg(long)]
        ttl: Option<u64>,
    },
}

struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let key = args.api_key.clone().context("the API key is required: pass --api-key or set JUNCTION_API_KEY")?;
        Ok(Client { http: reqwest::Client::new(), base: args.url.trim_end_matches('/').to_owned(), key })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        let text = response.text().await?;
        let value: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if !status.is_success() {
            let code = value["error"]["code"].as_str().unwrap_or("error");
            let message = value["error"]["message"].as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
            bail!("{} {code}: {message}", status.as_u16());
        }
        Ok(value)
    }
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints rows as an aligned table under `headers`.
fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0).max(h.len()))
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn room_row(room: &Value) -> Vec<String> {
    vec![
        room["name"].as_str().unwrap_or("").to_owned(),
        room["num_peers"].to_string(),
        room["num_tracks"].to_string(),
        room["mode"].as_str().unwrap_or("").to_owned(),
        match room["max_peers"].as_u64() {
            Some(0) | None => "-".to_owned(),
            Some(n) => n.to_string(),
        },
    ]
}

const ROOM_HEADERS: [&str; 5] = ["NAME", "PEERS", "TRACKS", "MODE", "MAX PEERS"];

pub async fn room(args: &ClientArgs, command: RoomCommand) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    match command {
        RoomCommand::List => {
            let value = client.call(reqwest::Method::GET, "/v1/rooms", None).await?;
            if args.json {
                return print_json(&value);
            }
            let rows: Vec<Vec<String>> = value["rooms"].as_array().into_iter().flatten().map(room_row).collect();
            print_table(&ROOM_HEADERS, &rows);
        }
        RoomCommand::Create { name, max_peers, empty_timeout_s, max_duration_s, mode } => {
            let mut body = json!({});
            for (key, value) in [
                ("name", name.map(Value::from)),
                ("max_peers", max_peers.map(Value::from)),
                ("empty_timeout_s", empty_timeout_s.map(Value::from)),
                ("max_duration_s", max_duration_s.map(Value::from)),
                ("mode", mode.map(Value::from)),
            ] {
                if let Some(value) = value {
                    body[key] = value;
                }
            }
            let value = client.call(reqwest::Method::POST, "/v1/rooms", Some(body)).await?;
            if args.json {
                return print_json(&value);
            }
            print_table(&ROOM_HEADERS, &[room_row(&value["room"])]);
        }
        RoomCommand::Delete { name } => {
            client.call(reqwest::Method::DELETE, &format!("/v1/rooms/{name}"), None).await?;
            if args.json {
                return print_json(&json!({"deleted": name}));
            }
            println!("deleted room {name}");
        }
    }
    Ok(())
}

pub async fn token(args: &ClientArgs, command: TokenCommand) -> anyhow::Result<()> {
    let client = Client::new(args)?;
    let TokenCommand::Create { room, identity, name, publish, subscribe, admin, ttl } = command;
    let (publish, subscribe) = if publish || subscribe { (publish, subscribe) } else { (true, true) };
    let mut body = json!({
        "identity": identity,
        "grants": {"publish": publish, "subscribe": subscribe, "admin": admin},
    });
    if let Some(name) = name {
        body["name"] = json!(name);
    }
    if let Some(ttl) = ttl {
        body["ttl_s"] = json!(ttl);
    }
    let value = client.call(reqwest::Method::POST, &format!("/v1/rooms/{room}/tokens"), Some(body)).await?;
    if args.json {
        return print_json(&value);
    }
    let grants: Vec<&str> = [("publish", publish), ("subscribe", subscribe), ("admin", admin)]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(g, _)| *g)
        .collect();
    print_table(
        &["ROOM", "IDENTITY", "GRANTS", "EXPIRES IN"],
        &[vec![room, identity, grants.join(","), format!("{}s", value["expires_in_s"])]],
    );
    println!("\ntoken    {}", value["token"].as_str().unwrap_or(""));
    for key in ["ws_url", "whip_url", "whep_url"] {
        println!("{:<8} {}", key.trim_end_matches("_url"), value[key].as_str().unwrap_or(""));
    }
    Ok(())
}
