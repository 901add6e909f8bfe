//! LL-HLS players for `junction bench rtmp --output hls --hls-players N`: each pulls its room's
//! public HLS output the way hls.js does in its low-latency mode — the hinted part (which the
//! server holds until it is made), then a blocking playlist reload for the part it just got,
//! whose answer hints the next — and counts what it received while the window is measured.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// What every player received during the measured window.
#[derive(Default)]
pub struct HlsStats {
    measuring: AtomicBool,
    parts: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    /// How long each hinted part request was held, in µs.
    waits_us: Mutex<Vec<u64>>,
}

impl HlsStats {
    pub fn set_measuring(&self, on: bool) {
        self.measuring.store(on, Ordering::Release);
    }

    /// The figures of `players` players over `seconds`.
    pub fn report(&self, players: usize, seconds: f64) -> serde_json::Value {
        let mut waits = self.waits_us.lock().clone();
        waits.sort_unstable();
        let at = |q: f64| waits.get(((waits.len() as f64 * q) as usize).min(waits.len().saturating_sub(1))).copied();
        let per = |total: u64| total as f64 / players.max(1) as f64 / seconds.max(0.001);
        serde_json::json!({
            "players": players,
            "parts_per_player_per_s": per(self.parts.load(Ordering::Acquire)),
            "kbps_per_player": per(self.bytes.load(Ordering::Acquire)) * 8.0 / 1000.0,
            "errors": self.errors.load(Ordering::Acquire),
            "part_held_ms_p50": at(0.5).map(|us| us as f64 / 1000.0),
            "part_held_ms_p99": at(0.99).map(|us| us as f64 / 1000.0),
        })
    }
}

/// The part the playlist hints (`part-{msn}-{part}.m4s`), its URI and numbers.
fn hinted(playlist: &str) -> Option<(String, u64, u64)> {
    let line = playlist.lines().rev().find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:"))?;
    let uri = line.split("URI=\"").nth(1)?.split('"').next()?.to_owned();
    let numbers = uri.strip_prefix("part-")?.split('.').next()?;
    let (msn, part) = numbers.split_once('-')?;
    Some((uri.clone(), msn.parse().ok()?, part.parse().ok()?))
}

/// Plays `playlist` (a public output's URL) until `stop`.
pub async fn play(http: reqwest::Client, playlist: String, stats: Arc<HlsStats>, stop: CancellationToken) {
    let directory = playlist.rsplit_once('/').map_or(String::new(), |(dir, _)| format!("{dir}/"));
    let mut got: Option<(u64, u64)> = None;
    while !stop.is_cancelled() {
        let url = match got {
            Some((msn, part)) => format!("{playlist}?_HLS_msn={msn}&_HLS_part={part}"),
            None => playlist.clone(),
        };
        let text = tokio::select! {
            _ = stop.cancelled() => return,
            response = fetch(&http, &url) => response.map(|body| String::from_utf8_lossy(&body).into_owned()),
        };
        let Some((uri, msn, part)) = text.as_deref().and_then(hinted) else {
            if text.is_none() {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            }
            got = None;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let asked = Instant::now();
        let part_url = format!("{directory}{uri}");
        let body = tokio::select! {
            _ = stop.cancelled() => return,
            body = fetch(&http, &part_url) => body,
        };
        match body {
            Some(body) => {
                if stats.measuring.load(Ordering::Acquire) {
                    stats.parts.fetch_add(1, Ordering::Relaxed);
                    stats.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                    stats.waits_us.lock().push(asked.elapsed().as_micros() as u64);
                }
                got = Some((msn, part));
            }
            None => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                got = None;
            }
        }
    }
}

/// A GET's body when it answered 200.
async fn fetch(http: &reqwest::Client, url: &str) -> Option<bytes::Bytes> {
    let response = http.get(url).timeout(Duration::from_secs(10)).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.bytes().await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hinted_part_is_read_from_the_playlist() {
        let playlist = "#EXTM3U\n#EXT-X-PART:DURATION=0.5,URI=\"part-4-3.m4s\"\n#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"part-5-0.m4s\"\n";
        assert_eq!(hinted(playlist), Some(("part-5-0.m4s".into(), 5, 0)));
        assert_eq!(hinted("#EXTM3U\n"), None);
    }
}
