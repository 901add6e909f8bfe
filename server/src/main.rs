//! The `junction` binary: `serve` runs the media gateway; the other subcommands operate a running
//! one through its REST API.

mod api;
mod bench;
mod cli;
mod config;
mod events;
mod listener;
mod metrics;
mod pages;
mod redirect;
mod server;
mod state;
mod webhook;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "junction",
    version,
    about = "Junction: one media server where WebRTC browsers, RTMP/WHIP encoders, WHEP viewers, SIP phones and MoQ clients meet in the same rooms.",
    long_about = None,
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server. With no configuration at all it serves on 127.0.0.1 with a generated
    /// development API key, every protocol on.
    Serve(ServeArgs),
    /// Manage rooms on a running server.
    #[command(subcommand_required = true)]
    Room {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::RoomCommand,
    },
    /// Mint client tokens on a running server.
    #[command(subcommand_required = true)]
    Token {
        #[command(flatten)]
        client: cli::ClientArgs,
        #[command(subcommand)]
        command: cli::TokenCommand,
    },
    /// Load-test a running server over its public protocols and report what it carries (runs
    /// the junction-bench tool installed beside this binary; `junction bench --help` for its modes).
    #[command(disable_help_flag = true)]
    Bench {
        /// What the load tool is given: its flags and mode.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<OsString>,
    },
}

#[derive(Debug, Args)]
#[command(after_long_help = CONFIG_HELP)]
struct ServeArgs {
    /// A TOML configuration file. Values from JUNCTION_<SECTION>_<KEY> environment variables
    /// override it, and flags override both.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The REST API key, also the secret client tokens are signed with (min. 16 characters).
    /// Same as `api_key`.
    #[arg(long, value_name = "KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Address for HTTP (REST API, WHIP/WHEP, WebSocket, pages). Same as `http.listen`.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<String>,
    /// URL clients reach the HTTP port at, used in URLs handed out. Same as `http.public_url`.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Sets any configuration key, e.g. `--set rooms.max_peers=50`. Repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
}

const CONFIG_HELP: &str = "\
Configuration keys (TOML file, JUNCTION_<SECTION>_<KEY>, or --set section.key=value):
  api_key                 REST bearer key and token-signing secret, id `default` (generated if no key at all: dev mode)
  data_dir                state store directory (SQLite), \"\" = memory only; unused with cluster.redis_url [./junction-data]
  auth.keys               more API keys: [{id, secret}], the id named in the tokens they sign [[]]
  auth.signing_key        id of the key new tokens are signed with [default, else the first of auth.keys]
  auth.max_sessions_per_token  live sessions one token may hold, 0 = any [4]
  auth.end_sessions_at_expiry  sessions end when their token expires [true]
  http.listen             HTTP address                         [127.0.0.1:7880]
  http.public_url         URL handed to clients                [http://<http.listen>]
  http.cors_origins       browser origins allowed              [[\"*\"]]
  http.max_connections    open HTTP connections, more are closed [4096]
  http.max_header_bytes   largest request head, more gets 431  [32768]
  http.header_read_timeout_s  seconds to send a request head (also keep-alive idle) [10]
  http.request_timeout_s  seconds a request may take, more gets 408 [30]
  rooms.auto_create       joining a missing room creates it    [true]
  rooms.empty_timeout_s   seconds an empty room stays open     [300]
  rooms.max_peers         peers per auto-created room, 0 = any [0]
  rooms.subscriber_queue_ms  ms a frame may wait for a subscriber, older is dropped [250]
  rooms.video_codec       codec asked of WebRTC publishers: auto | h264 | vp8 | vp9 | av1 [auto]
  log.format              text | json                          [text]
  log.level               tracing filter; RUST_LOG wins        [info]
  webhook.urls            URLs that receive room events        [[]]
  webhook.secret          HMAC key of X-Junction-Signature, required with urls (generated in dev mode)
  webhook.max_attempts    deliveries tried per event and URL   [6]
  webhook.timeout_ms      per-delivery timeout                 [5000]
  webhook.shutdown_grace_s  seconds queued deliveries get at shutdown [10]
  mixer.speakers          loudest speakers a phone hears in a room's mix [3]
  audio.opus_complexity   libopus complexity of transcoded Opus (AAC, G.711 -> Opus), 0-10 [5]
  recording.dir           where recording components write, <dir>/<room>/<id>/ [<data_dir>/recordings]
  video.max_transcodes    video transcoders at once, 0 = none  [4]
  video.max_width, video.max_height  largest picture a transcoder encodes [1280, 720]
  video.keyframe_interval_s  seconds between a transcoder's keyframes [2]
  video.max_grids         grid compositions (HLS/recording `grid` layout) at once, 0 = none [4]
  rtmp.enabled            RTMP ingest and playback             [true]
  rtmp.listen             RTMP address                         [127.0.0.1:1935]
  rtmp.on_duplicate       a live key publishing again: replace | reject [replace]
  rtmp.idle_timeout_s     silent publishers are closed after   [10]
  rtmp.handshake_timeout_s  accept to an accepted publish/play within [10]
  rtmp.max_connections, rtmp.max_connections_per_ip  closed at accept past [1000, 20]
  rtmp.amf_max_depth, rtmp.amf_max_values, rtmp.amf_max_message_bytes  AMF limits [32, 4096, 65536]
  srt.enabled             SRT ingest (MPEG-TS: H.264 + AAC)     [true]
  srt.listen              SRT address (UDP)                    [127.0.0.1:8890]
  srt.latency_ms          receive latency (the larger of ours and the encoder's) [120]
  srt.passphrase          encoders must encrypt with it (10-79 chars)  [none]
  srt.key_length          AES key bytes when the encoder names none: 16 | 24 | 32 [16]
  srt.idle_timeout_s      streams silent this long are closed  [10]
  srt.max_connections, srt.max_connections_per_ip  refused at the handshake past [1000, 20]
  moq.enabled             Media over QUIC listener             [true]
  moq.listen              UDP address (WebTransport and moqt-18) [127.0.0.1:4443]
  moq.cert, moq.key       PEM certificate chain and key        [a generated development CA + leaf]
  moq.dev_ca_file         where the generated CA is written    [the system temp directory]
  moq.handshake_timeout_s QUIC + WebTransport CONNECT + SETUP within [10]
  moq.max_connections, moq.max_connections_per_ip  refused at accept past [1000, 20]
  moq.max_namespaces_per_session, moq.max_subscriptions_per_session, moq.max_tracks_per_namespace [16, 256, 32]
  moq.max_init_bytes, moq.max_fragment_bytes, moq.max_samples_per_fragment [1 MiB, 16 MiB, 1024]
    (limits: see docs/security.md)
  webrtc.enabled          WebRTC media plane (and WHIP/WHEP)   [true]
  webrtc.udp_listen       the one UDP socket of all sessions   [127.0.0.1:7882]
  webrtc.public_addr      IP[:port] put in ICE candidates, or a list (dual stack, private + public) [the bound address]
  webrtc.ice_tcp          passive TCP candidates (ICE-TCP) for clients without UDP [true]
  webrtc.tcp_listen       the ICE-TCP port                     [udp_listen's address and port]
  webrtc.max_tcp_connections  ICE-TCP connections at once      [4096]
  webrtc.ice_timeout_s    silence before a session is reaped   [15] (1-30)
  webrtc.ice_servers      STUN/TURN for clients ([{urls, username, credential}]) [[]]
  webrtc.video_resend_packets  RTP packets kept per video stream for NACK resends [128]
  webrtc.twcc_send_records    sent packets remembered per session for congestion feedback [512]
  webrtc.pace_video       send video at 1.1 x the peer's estimate, not as it arrives [false]
  webrtc.max_send_delay_ms  ms paced video may wait in the pacer, then it is shed to a keyframe [250]
  webrtc.udp_recv_buffer_bytes  the media socket's kernel receive buffer, capped by net.core.rmem_max [4194304]
  turn.enabled            built-in TURN server, relaying only to the media plane [false]
  turn.udp_listen         TURN over UDP and TCP                [127.0.0.1:3478]
  turn.tls_listen         TURN over TLS (with turn.tls_cert, turn.tls_key PEM) [unset: no TLS]
  turn.public_host        host in the turn:/turns: URLs clients get [the listen IP]
  turn.relay_port_min/max UDP ports relays use                 [49152-65535]
  turn.secret             credentials derive from it (same on every node) [random per process]
  turn.credential_ttl_s   lifetime of a minted credential      [43200]
  turn.max_allocations, turn.max_allocations_per_credential, turn.max_kbps, turn.max_connections [1000, 16, 20000, 1024]
    (see docs/connectivity.md)
  whip.enabled            /whip and /whep endpoints            [true]
  whip.replace_existing   a WHIP publisher replaces its identity's older session (else 409) [false]
  sip.enabled             SIP dial-in and dial-out             [true]
  sip.listen              SIP address, UDP and TCP             [127.0.0.1:5060]
  sip.tls_listen          SIP over TLS address (with sip.tls_cert, sip.tls_key PEM; sip.tls_ca
                          extra roots for dial-out over TLS)   [unset: no TLS]
  sip.public_address      IP written in Via/Contact/SDP        [the listen IP]
  sip.session_expires_s   RFC 4028 interval asked/granted      [1800] (min_session_expires_s [90])
  sip.rtp_port_min/max    RTP/RTCP port range                  [20000-20999]
  sip.rtp_timeout_s       silent calls are hung up after (<=30) [20]
  sip.max_calls           calls at once, more get 503          [200]
  sip.pin_attempts        wrong PINs before hanging up         [3]
  sip.mix_speakers        old name of mixer.speakers (still read, warned about)
  sip.trunks, sip.dispatch_rules   see docs/protocol-sip.md    [[]]
  browser.enabled         /ws, /sdk/junction.js, /room/{room}  [true]
  browser.allow_anonymous sockets without a token (insecure)   [false]
  browser.allow_direct_call  1:1 calls by session id           [true]
  browser.reconnect_grace_s  seconds a dropped socket's session is kept [20]
  cluster.redis_url       Redis shared by the nodes of a cluster [unset: one node]
  cluster.node_id         this node's id                       [derived from host and public_url]
  cluster.relay_listen    UDP address of the node-to-node media relay [127.0.0.1:7890]
  cluster.secret          secret nodes prove on relay links    [api_key]
  cluster.max_peers       clients past which WHIP/WHEP get 307 elsewhere [0: no limit]
    (see docs/cluster.md)
Unknown keys and bad values stop start-up with a message naming the key.";

impl ServeArgs {
    /// The flags as `section.key=value` overrides, in order of precedence.
    fn overrides(&self) -> Vec<String> {
        let mut out = Vec::new();
        let quoted = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        if let Some(key) = &self.api_key {
            out.push(format!("api_key={}", quoted(key)));
        }
        if let Some(listen) = &self.http_listen {
            out.push(format!("http.listen={}", quoted(listen)));
        }
        if let Some(url) = &self.public_url {
            out.push(format!("http.public_url={}", quoted(url)));
        }
        out.extend(self.set.iter().cloned());
        out
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    // Two rustls crypto providers end up in the build; pick one before anything uses TLS.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Serve(args) => {
            let loaded = config::load(args.config.as_deref(), std::env::vars(), &args.overrides());
            let (config, sources) = match loaded {
                Ok(loaded) => loaded,
                Err(err) => {
                    eprintln!("error: {err}");
                    return ExitCode::from(2);
                }
            };
            init_logging(config.log.format, &config.log.level);
            // Contained panics (crafted packets reaching a library that panics on them) must
            // not flood the log.
            junction_engine::supervise::limit_panic_reports(20);
            runtime.block_on(server::serve(config, sources))
        }
        Command::Room { client, command } => runtime.block_on(cli::room(&client, command)),
        Command::Token { client, command } => runtime.block_on(cli::token(&client, command)),
        // The load tool is a binary of its own: this process becomes it.
        Command::Bench { args } => return bench::exec(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
