//! Shared helpers for the end-to-end tests (the `e2e` and `lip_sync` test binaries; each uses
//! part of them, hence the allowances).

#![allow(dead_code, unused_imports)]

pub mod audio;
pub mod baresip;
pub mod browser;
pub mod chromium;
pub mod lipsync;
pub mod moq;
pub mod netns;
pub mod players;
pub mod redis;
pub mod rtmp_client;
pub mod s3;
pub mod server;
pub mod sip;
pub mod webrtc_client;
pub mod wire_sync;
pub mod x264;

pub use server::TestServer;

use std::time::Duration;

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
