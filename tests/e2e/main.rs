//! End-to-end tests: each test starts the real `junction` binary on free loopback ports (see
//! `support::TestServer`) and drives it over its public protocols only — HTTP here, and real
//! third-party clients (ffmpeg, Chromium, sipp, the `webrtc` crate, stock MoQ tools) in the
//! transport modules.

mod support;

mod bench;
mod browser;
mod browser_rust;
mod cli;
mod cluster;
mod components;
mod connectivity;
mod events;
mod grid;
mod hardening_auth;
mod hardening_media;
mod hardening_sip;
mod hardening_webrtc;
mod hls;
mod moq;
mod pair_matrix;
mod recording;
mod rest;
mod rtmp;
mod rtmp_webrtc;
mod sip;
mod sip_carrier;
mod srt;
mod store;
mod video_bridge;
mod webhooks;
mod whep_rtmp;
mod whip;
mod whip_browser;
mod whip_http;
mod whip_room;
