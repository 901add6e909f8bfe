//! Server configuration: defaults, then a TOML file (`--config`), then `JUNCTION_<SECTION>_<KEY>`
//! environment variables, then command-line flags — later sources win. Everything is merged as
//! TOML values and deserialised once, strictly: an unknown key or a bad value stops start-up with
//! a message naming the key.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use junction_audio::mixer::MixConfig;
use junction_core::VideoCodecChoice;
use serde::{Deserialize, Serialize};

/// Environment variables the client subcommands read; not server configuration.
const CLIENT_ENV: &[&str] = &["JUNCTION_URL"];

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The REST API's bearer key, id `default`; client JWTs are signed with it unless
    /// `auth.signing_key` names another. Generated (development mode) when neither it nor
    /// `auth.keys` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Where the server keeps what operators create (rooms, ingress keys, SIP trunks and rules,
    /// pending webhooks) when it runs without `cluster.redis_url`: an SQLite database,
    /// `<data_dir>/junction.db`. Default `./junction-data`; `""` keeps state in memory only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub rooms: RoomsConfig,
    pub log: LogConfig,
    pub webhook: WebhookConfig,
    pub mixer: MixerConfig,
    pub audio: junction_audio::codec::AudioConfig,
    pub recording: junction_components::RecordingConfig,
    pub video: junction_video::VideoConfig,
    pub moq: junction_moq::MoqConfig,
    pub sip: junction_sip::SipConfig,
    pub rtmp: junction_rtmp::RtmpConfig,
    pub srt: junction_srt::SrtConfig,
    pub webrtc: junction_webrtc::WebrtcConfig,
    pub turn: junction_turn::TurnConfig,
    pub whip: junction_whip::WhipConfig,
    pub browser: junction_browser::BrowserConfig,
    pub cluster: junction_cluster::ClusterConfig,
}

/// The `[mixer]` section: the room audio mixer, through which phones hear rooms.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixerConfig {
    /// How many of the loudest speakers a listener hears at once [3]. `sip.mix_speakers` is
    /// still read as an alias when this is not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speakers: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The URL clients reach the HTTP port at, used in URLs handed out (token responses, WHIP
    /// Location headers). Defaults to `http://<listen>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Origins allowed to call the HTTP endpoints from a browser (`*` for any).
    pub cors_origins: Vec<String>,
    /// Open connections at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes; larger gets 431.
    pub max_header_bytes: usize,
    /// Seconds a client has to send a complete request head (slowloris), also the idle time
    /// allowed between requests on a kept-alive connection.
    pub header_read_timeout_s: u64,
    /// Seconds a request may take, body read included, before it is answered 408.
    pub request_timeout_s: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 7880).into(),
            public_url: None,
            cors_origins: vec!["*".into()],
            max_connections: 4096,
            max_header_bytes: 32 * 1024,
            header_read_timeout_s: 10,
            request_timeout_s: 30,
        }
    }
}

/// Credentials beyond the single `api_key`: more keys for rotation, which key signs new tokens,
/// and how sessions are bound to the token they were opened with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// API keys, each an id (named in the JWT header of the tokens it signs) and a secret.
    pub keys: Vec<KeyConfig>,
    /// The id of the key new client tokens are signed with: `default` when `api_key` is set,
    /// else the first of `keys`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
    /// Live sessions one client token (or stream key) may hold at once; 0: no limit.
    pub max_sessions_per_token: usize,
    /// Whether live sessions end when the token they were opened with expires.
    pub end_sessions_at_expiry: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self { keys: Vec::new(), signing_key: None, max_sessions_per_token: 4, end_sessions_at_expiry: true }
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig").field("id", &self.id).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoomsConfig {
    /// Whether joining a room that does not exist creates it.
    pub auto_create: bool,
    /// Seconds an empty room lives before it is closed.
    pub empty_timeout_s: u64,
    /// Peers per room (0: no limit) for rooms created by a join.
    pub max_peers: u32,
    /// Milliseconds a frame may wait in a subscriber's queue; older ones are dropped (video to
    /// the track's next keyframe, audio frame by frame).
    pub subscriber_queue_ms: u64,
    /// The video codec rooms created by a join ask WebRTC publishers for: `auto` (H.264 while
    /// a viewer needs it, else the publisher's choice), `h264`, `vp8`, `vp9` or `av1`.
    pub video_codec: VideoCodecChoice,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            auto_create: true,
            empty_timeout_s: 300,
            max_peers: 0,
            subscriber_queue_ms: 250,
            video_codec: VideoCodecChoice::Auto,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter (`info`, `junction=debug,str0m=warn`); `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Where room events are POSTed.
    pub urls: Vec<String>,
    /// The HMAC key of the `X-Junction-Signature` header, separate from the API keys. Required
    /// when `urls` is set, except in development mode, where one is generated and printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Delivery attempts per event and URL before it is given up.
    pub max_attempts: u32,
    pub timeout_ms: u64,
    /// Seconds the deliveries in flight and queued get to finish after a shutdown signal.
    pub shutdown_grace_s: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self { urls: Vec::new(), secret: None, max_attempts: 6, timeout_ms: 5_000, shutdown_grace_s: 10 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{var} is not a configuration variable (sections: {sections})")]
    UnknownEnv { var: String, sections: String },
    #[error("--set {raw:?} is not of the form section.key=value")]
    BadOverride { raw: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// Where a value came from, for the start-up log.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    pub env: Vec<String>,
    pub flags: Vec<String>,
}

/// Builds the configuration from its three sources. `overrides` are `section.key=value` pairs
/// from the command line.
pub fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &[String],
) -> Result<(Config, Sources), ConfigError> {
    let mut sources = Sources { file: file.map(Path::to_path_buf), ..Sources::default() };
    let mut table = match file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
            text.parse::<toml::Table>()
                .map_err(|err| ConfigError::Syntax { path: path.into(), message: err.to_string() })?
        }
        None => toml::Table::new(),
    };

    let sections = known_sections();
    // Which variable or flag set each key, to name it when the key turns out to be bad.
    let mut origin: Vec<(String, String)> = Vec::new();
    let mut env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with("JUNCTION_")).collect();
    env.sort();
    for (var, raw) in env {
        if CLIENT_ENV.contains(&var.as_str()) {
            continue;
        }
        let path = env_path(&var, &sections).ok_or_else(|| ConfigError::UnknownEnv {
            var: var.clone(),
            sections: sections.iter().cloned().collect::<Vec<_>>().join(", "),
        })?;
        set_path(&mut table, &path, parse_scalar(&raw));
        origin.push((path.join("."), var.clone()));
        sources.env.push(var);
    }

    for raw in overrides {
        let (key, value) = raw.split_once('=').ok_or_else(|| ConfigError::BadOverride { raw: raw.clone() })?;
        let path: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) || path.len() > 2 {
            return Err(ConfigError::BadOverride { raw: raw.clone() });
        }
        set_path(&mut table, &path, parse_scalar(value.trim()));
        origin.push((path.join("."), format!("--set {}", key.trim())));
        sources.flags.push(key.trim().to_owned());
    }

    let config: Config = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|err| {
        let key = err.path().to_string();
        let mut message = first_line(&err.into_inner().to_string());
        if let Some((_, from)) = origin.iter().rev().find(|(path, _)| *path == key) {
            message.push_str(&format!(" (set by {from})"));
        }
        ConfigError::Invalid { key: if key == "." { "(top level)".into() } else { key }, message }
    })?;
    config.validate()?;
    Ok((config, sources))
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_owned()
}

/// Sections of the configuration, from the shape of the defaults.
fn known_sections() -> BTreeSet<String> {
    match toml::Value::try_from(Config::default()) {
        Ok(toml::Value::Table(table)) => table.into_iter().filter(|(_, v)| v.is_table()).map(|(k, _)| k).collect(),
        _ => BTreeSet::new(),
    }
}

/// `JUNCTION_HTTP_PUBLIC_URL` -> `["http", "public_url"]`; `JUNCTION_API_KEY` -> `["api_key"]`.
fn env_path(var: &str, sections: &BTreeSet<String>) -> Option<Vec<String>> {
    let rest = var.strip_prefix("JUNCTION_")?.to_ascii_lowercase();
    let mut by_length: Vec<&String> = sections.iter().collect();
    by_length.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for section in by_length {
        if let Some(key) = rest.strip_prefix(&format!("{section}_"))
            && !key.is_empty()
        {
            return Some(vec![section.clone(), key.to_owned()]);
        }
    }
    (!rest.is_empty() && !sections.contains(&rest)).then(|| vec![rest])
}

/// A value from the environment or a flag: TOML if it parses as a TOML value (numbers, booleans,
/// arrays), a plain string otherwise.
fn parse_scalar(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut table) => table.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) {
    match path {
        [key] => {
            table.insert(key.clone(), value);
        }
        [section, rest @ ..] => {
            let entry = table.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = entry {
                set_path(inner, rest, value);
            }
        }
        [] => {}
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

fn check_http_url(key: &str, value: &str) -> Result<url::Url, ConfigError> {
    let parsed = url::Url::parse(value).map_err(|err| invalid(key, format!("{value:?} is not a URL: {err}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(invalid(key, format!("{value:?} must be an http:// or https:// URL")));
    }
    Ok(parsed)
}

impl Config {
    /// The SQLite store's directory; `None` when `data_dir = ""` asks for memory only.
    pub fn data_dir(&self) -> Option<PathBuf> {
        match &self.data_dir {
            None => Some(crate::state::default_data_dir()),
            Some(dir) if dir.as_os_str().is_empty() => None,
            Some(dir) => Some(dir.clone()),
        }
    }

    /// Where recording components write (`recording.dir`, else `<data_dir>/recordings`, the
    /// default data directory's when state is kept in memory or in Redis) and copy to.
    pub fn recordings(&self) -> Result<junction_components::Recordings, String> {
        let default_dir = self.data_dir().unwrap_or_else(crate::state::default_data_dir).join("recordings");
        self.recording.resolve(default_dir)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(key) = &self.api_key
            && !junction_auth::is_strong_secret(key)
        {
            return Err(invalid("api_key", "must be at least 16 characters, without spaces"));
        }
        if let Some(s3) = &self.recording.s3 {
            s3.store().map_err(|err| invalid("recording.s3", err))?;
        }
        if !self.dev_mode() {
            junction_auth::Authority::with_keys(self.api_keys(), &self.signing_key())
                .map_err(|err| invalid("auth.keys", err.to_string()))?;
        } else if self.auth.signing_key.as_deref().is_some_and(|id| id != junction_auth::DEFAULT_KEY_ID) {
            return Err(invalid("auth.signing_key", "names a key, but no API key is configured"));
        }
        if let Some(secret) = &self.webhook.secret {
            if !junction_auth::is_strong_secret(secret) {
                return Err(invalid("webhook.secret", "must be at least 16 characters, without spaces"));
            }
            if self.api_keys().iter().any(|k| junction_auth::secrets_equal(secret.as_bytes(), k.secret.as_bytes())) {
                return Err(invalid("webhook.secret", "must not be one of the API keys"));
            }
        } else if !self.webhook.urls.is_empty() && !self.dev_mode() {
            return Err(invalid(
                "webhook.secret",
                "is required when webhook.urls is set: receivers verify signatures with it",
            ));
        }
        if self.http.max_connections == 0 {
            return Err(invalid("http.max_connections", "must be at least 1"));
        }
        if self.http.max_header_bytes < 8 * 1024 {
            return Err(invalid("http.max_header_bytes", "must be at least 8192"));
        }
        if self.http.header_read_timeout_s == 0 || self.http.request_timeout_s == 0 {
            let key = if self.http.header_read_timeout_s == 0 {
                "http.header_read_timeout_s"
            } else {
                "http.request_timeout_s"
            };
            return Err(invalid(key, "must be at least 1 second"));
        }
        if let Some(url) = &self.http.public_url {
            let parsed = check_http_url("http.public_url", url)?;
            if parsed.query().is_some() || parsed.fragment().is_some() {
                return Err(invalid("http.public_url", "must not have a query or fragment"));
            }
        }
        for (i, url) in self.webhook.urls.iter().enumerate() {
            check_http_url(&format!("webhook.urls[{i}]"), url)?;
        }
        if self.webhook.max_attempts == 0 {
            return Err(invalid("webhook.max_attempts", "must be at least 1"));
        }
        if self.rooms.empty_timeout_s == 0 {
            return Err(invalid("rooms.empty_timeout_s", "must be at least 1 second"));
        }
        self.browser.validate().map_err(|(key, message)| invalid(key, message))?;
        if !(20..=10_000).contains(&self.rooms.subscriber_queue_ms) {
            return Err(invalid("rooms.subscriber_queue_ms", "must be 20 to 10000 milliseconds"));
        }
        if self.mixer.speakers == Some(0) {
            return Err(invalid("mixer.speakers", "must be at least 1"));
        }
        self.moq.validate().map_err(|(key, message)| invalid(key, message))?;
        self.sip.validate().map_err(|(key, message)| invalid(&key, message))?;
        self.rtmp.validate().map_err(|(key, message)| invalid(key, message))?;
        self.srt.validate().map_err(|(key, message)| invalid(key, message))?;
        self.audio.validate().map_err(|(key, message)| invalid(key, message))?;
        self.video.validate().map_err(|(key, message)| invalid(key, message))?;
        self.webrtc.validate().map_err(|err| invalid(&format!("webrtc.{}", err.key), err.message))?;
        if self.turn.enabled {
            self.turn.validate().map_err(|err| invalid("turn", err.to_string()))?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|err| invalid("log.level", format!("{:?} is not a log filter: {err}", self.log.level)))?;
        Ok(())
    }

    /// The room mixer's settings: `[mixer] speakers`, else the deprecated `sip.mix_speakers`,
    /// else the mixer's default.
    pub fn mix_config(&self) -> MixConfig {
        let defaults = MixConfig::default();
        let speakers = self.mixer.speakers.or(self.sip.mix_speakers).unwrap_or(defaults.speakers);
        MixConfig { speakers, ..defaults }
    }

    /// Keys set under an old name, with the name to use instead (warned about at start-up).
    pub fn deprecated_keys(&self) -> Vec<(&'static str, &'static str)> {
        let mut keys = Vec::new();
        if self.sip.mix_speakers.is_some() {
            keys.push(("sip.mix_speakers", "mixer.speakers"));
        }
        keys
    }

    /// Development mode: no API key configured at all (one is generated at start-up).
    pub fn dev_mode(&self) -> bool {
        self.api_key.is_none() && self.auth.keys.is_empty()
    }

    /// Every configured API key: `api_key` as `default`, then `auth.keys`.
    pub fn api_keys(&self) -> Vec<junction_auth::ApiKey> {
        let single =
            self.api_key.iter().map(|secret| junction_auth::ApiKey::new(junction_auth::DEFAULT_KEY_ID, secret));
        single.chain(self.auth.keys.iter().map(|k| junction_auth::ApiKey::new(&k.id, &k.secret))).collect()
    }

    /// The id of the key new tokens are signed with.
    pub fn signing_key(&self) -> String {
        match (&self.auth.signing_key, &self.api_key, self.auth.keys.first()) {
            (Some(id), _, _) => id.clone(),
            (None, Some(_), _) | (None, None, None) => junction_auth::DEFAULT_KEY_ID.to_owned(),
            (None, None, Some(first)) => first.id.clone(),
        }
    }

    /// The public base URL, without a trailing slash.
    pub fn public_url(&self, bound_http: SocketAddr) -> String {
        match &self.http.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("http://{bound_http}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_mixer_section_and_its_old_sip_alias() {
        let (config, _) = load(None, Vec::new(), &[]).unwrap();
        assert_eq!((config.mix_config().speakers, config.deprecated_keys()), (3, vec![]));
        let (config, _) = load(None, env(&[("JUNCTION_SIP_MIX_SPEAKERS", "5")]), &[]).unwrap();
        assert_eq!(config.mix_config().speakers, 5, "sip.mix_speakers is still read");
        assert_eq!(config.deprecated_keys(), vec![("sip.mix_speakers", "mixer.speakers")]);
        let (config, _) = load(None, Vec::new(), &["sip.mix_speakers=5".into(), "mixer.speakers=2".into()]).unwrap();
        assert_eq!(config.mix_config().speakers, 2, "[mixer] wins over the alias");
        assert!(load(None, Vec::new(), &["mixer.speakers=0".into()]).is_err());
        assert!(load(None, Vec::new(), &["sip.mix_speakers=0".into()]).is_err());
    }

    #[test]
    fn defaults_need_nothing() {
        let (config, _) = load(None, Vec::new(), &[]).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:7880");
    }

    #[test]
    fn flags_beat_env_which_beats_the_file() {
        let dir = std::env::temp_dir().join(format!("junction-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("junction.toml");
        std::fs::write(
            &file,
            "api_key = \"from-the-file-0123456\"\n[http]\nlisten = \"127.0.0.1:1000\"\n[rooms]\nmax_peers = 3\n",
        )
        .unwrap();
        let vars = env(&[
            ("JUNCTION_HTTP_LISTEN", "127.0.0.1:2000"),
            ("JUNCTION_ROOMS_MAX_PEERS", "7"),
            ("JUNCTION_WEBHOOK_URLS", "[\"http://hooks.local/a\"]"),
            ("JUNCTION_WEBHOOK_SECRET", "whsec-0123456789abcdef"),
            ("JUNCTION_URL", "http://ignored-client-variable"),
            ("PATH", "/bin"),
        ]);
        let (config, sources) = load(Some(&file), vars, &["http.listen=127.0.0.1:3000".into()]).unwrap();
        assert_eq!(config.api_key.as_deref(), Some("from-the-file-0123456"));
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(config.rooms.max_peers, 7);
        assert_eq!(config.webhook.urls, ["http://hooks.local/a"]);
        assert_eq!(sources.env.len(), 4);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = load(None, env(&[("JUNCTION_HTTP_LISTN", "x")]), &[]).unwrap_err();
        assert!(err.to_string().starts_with("config key `http.listn`: unknown field `listn`"), "{err}");
        let err = load(None, env(&[("JUNCTION_HTTP_LISTEN", "nowhere")]), &[]).unwrap_err();
        assert!(err.to_string().starts_with("config key `http.listen`:"), "{err}");
        let err = load(None, env(&[("JUNCTION_NOPE_X", "1")]), &[]).unwrap_err();
        assert!(err.to_string().starts_with("config key `nope_x`: unknown field `nope_x`"), "{err}");
        assert!(err.to_string().ends_with("(set by JUNCTION_NOPE_X)"), "{err}");
        let err = load(None, Vec::new(), &["rooms.empty_timeout_s=0".into()]).unwrap_err();
        assert_eq!(err.to_string(), "config key `rooms.empty_timeout_s`: must be at least 1 second");
        let err = load(None, Vec::new(), &["api_key=short".into()]).unwrap_err();
        assert!(err.to_string().starts_with("config key `api_key`"), "{err}");
        let err = load(None, Vec::new(), &["audio.opus_complexity=11".into()]).unwrap_err();
        assert_eq!(err.to_string(), "config key `audio.opus_complexity`: must be 0 to 10");
        let (config, _) = load(None, Vec::new(), &["audio.opus_complexity=10".into()]).unwrap();
        assert_eq!(config.audio.opus_complexity, 10);
        let err = load(None, Vec::new(), &["http.public_url=ftp://x".into()]).unwrap_err();
        assert!(err.to_string().contains("http:// or https://"), "{err}");
        let err = load(None, Vec::new(), &["webhook.urls=[\"nope\"]".into()]).unwrap_err();
        assert!(err.to_string().starts_with("config key `webhook.urls[0]`"), "{err}");
        assert!(matches!(load(None, Vec::new(), &["novalue".into()]), Err(ConfigError::BadOverride { .. })));
    }

    #[test]
    fn api_keys_rotate_and_the_webhook_secret_is_separate() {
        let set = |pairs: &[&str]| load(None, Vec::new(), &pairs.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let (config, _) = set(&["api_key=\"old-secret-0123456789\""]).unwrap();
        assert!(!config.dev_mode());
        assert_eq!(config.signing_key(), "default");
        let keys = "auth.keys=[{id = \"2025\", secret = \"new-secret-0123456789\"}]";
        let (config, _) = set(&["api_key=\"old-secret-0123456789\"", keys]).unwrap();
        assert_eq!(config.api_keys().iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["default", "2025"]);
        assert_eq!(config.signing_key(), "default");
        let (config, _) = set(&[keys]).unwrap();
        assert_eq!(config.signing_key(), "2025", "the first key signs when there is no api_key");
        let err = set(&[keys, "auth.signing_key=\"2026\""]).unwrap_err();
        assert!(err.to_string().contains("signing key \"2026\""), "{err}");
        let err = set(&[
            "api_key=\"old-secret-0123456789\"",
            "auth.keys=[{id = \"default\", secret = \"x-secret-0123456789\"}]",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("configured twice"), "{err}");
        assert!(set(&["auth.signing_key=\"k\""]).is_err(), "dev mode has only the default key");

        let hooks = "webhook.urls=[\"http://hooks.local/a\"]";
        let err = set(&[keys, hooks]).unwrap_err();
        assert!(err.to_string().starts_with("config key `webhook.secret`: is required"), "{err}");
        let err = set(&[keys, hooks, "webhook.secret=\"new-secret-0123456789\""]).unwrap_err();
        assert!(err.to_string().contains("must not be one of the API keys"), "{err}");
        assert!(set(&[keys, hooks, "webhook.secret=\"whsec-0123456789abcdef\""]).is_ok());
        assert!(set(&[hooks]).is_ok(), "development mode generates one");
    }

    #[test]
    fn env_names_map_to_sections_and_top_level_keys() {
        let sections: BTreeSet<String> = ["http", "webhook", "web"].iter().map(|s| s.to_string()).collect();
        assert_eq!(env_path("JUNCTION_API_KEY", &sections), Some(vec!["api_key".into()]));
        assert_eq!(env_path("JUNCTION_HTTP_PUBLIC_URL", &sections), Some(vec!["http".into(), "public_url".into()]));
        assert_eq!(env_path("JUNCTION_WEBHOOK_URLS", &sections), Some(vec!["webhook".into(), "urls".into()]));
        assert_eq!(parse_scalar("5"), toml::Value::Integer(5));
        assert_eq!(parse_scalar("127.0.0.1:80"), toml::Value::String("127.0.0.1:80".into()));
    }
}
