//! Lip sync in a recording a player made (an RTMP player's FLV, `moq-sub`'s fragmented MP4):
//! the source is a picture that turns white while a tone sounds, every second ([`SOURCE_VIDEO`],
//! [`source_audio`]); in the recording, each flash (a frame whose mean luma jumps, from ffmpeg's
//! `signalstats`) is paired with the beep that starts nearest to it (10 ms blocks' RMS level from
//! `astats`), both on the recording's own timeline, and the median of beep minus flash is the
//! offset a viewer of that recording sees.
//!
//! Browser viewers (a room tab, `/whep.html`) measure the same in Chromium, as presented
//! (`tests/browser/lipsync.mjs`), beside Chromium's own offset between two of its peer
//! connections with nothing between them: [`assert_browser_sync`] checks the server against what
//! the browser does by itself. What WebRTC viewers are sent is measured on the wire
//! (`super::wire_sync`). Browser publishers flash and beep the same way.

use std::path::Path;

use serde_json::Value;

/// The most a viewer's audio may be off its video (docs/interop.md).
pub const BAR_MS: f64 = 80.0;

/// The tone a synced browser source (`synced_hz` of the publishing scenarios) beeps at.
pub const BROWSER_HZ: u32 = 1000;

/// How far beyond Chromium's own peer-to-peer offset a browser viewer may be before the test
/// fails. Not the 80 ms bar, which the server is held to on the wire (`super::wire_sync`): run
/// to run, Chromium's settling moves these figures over about ±120 ms while the wire stays
/// within ±40 (docs/interop.md lists them), so this guards against gross breakage only, such as
/// the 450 ms a room tab once played audio off its video.
pub const BROWSER_GUARD_MS: f64 = 200.0;

/// Checks the lip sync a browser scenario measured at `viewer` (`tab` or `whep`): at least four
/// flashes paired with beeps, and beep minus flash within [`BROWSER_GUARD_MS`] of the browser's
/// own peer-to-peer reference. Returns (offset, reference) in ms.
pub fn assert_browser_sync(result: &Value, viewer: &str, who: &str) -> (f64, f64) {
    let sync = &result["sync"];
    let measured = &sync[viewer];
    let offset = measured["offset_ms"].as_f64().unwrap_or_else(|| panic!("{who}: no lip sync measured: {sync}"));
    let reference =
        sync["reference"]["offset_ms"].as_f64().unwrap_or_else(|| panic!("{who}: no reference measured: {sync}"));
    assert!(measured["pairs"].as_u64().unwrap_or(0) >= 4, "{who}: too few flashes and beeps paired: {measured}");
    assert!(
        (offset - reference).abs() <= BROWSER_GUARD_MS,
        "{who}: beep {offset:+.0} ms from its flash, Chromium peer-to-peer {reference:+.0} ms: {sync}"
    );
    (offset, reference)
}

/// ffmpeg's test pattern, all white for the first half of every second.
pub const SOURCE_VIDEO: &str =
    "testsrc=size=640x360:rate=25,drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:enable='lt(mod(t,1),0.5)'";

/// A `hz` tone sounding during the first half of every second (with the flash).
pub fn source_audio(hz: u32) -> String {
    format!("sine=frequency={hz}:sample_rate=48000,volume=volume=0:enable='gte(mod(t,1),0.5)'")
}

/// (time, value) of each frame of `filter` applied to the file's `kind` stream (`movie` or
/// `amovie`), reading the frame tag `tag`.
async fn frame_tags(file: &Path, source: &str, filter: &str, tag: &str) -> Vec<(f64, f64)> {
    let graph = format!("{source}='{}',{filter}", file.display());
    let output = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-f", "lavfi", "-i", &graph, "-show_entries"])
        .arg(format!("frame=pts_time:frame_tags={tag}"))
        .args(["-of", "csv=p=0"])
        .output()
        .await
        .expect("ffprobe runs");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (time, value) = line.split_once(',')?;
            Some((time.trim().parse().ok()?, value.trim().parse().ok()?))
        })
        .collect()
}

/// When the picture turns white (seconds on the file's timeline): frames whose mean luma
/// crosses 200.
pub async fn flashes(file: &Path) -> Vec<f64> {
    let lumas = frame_tags(file, "movie", "signalstats", "lavfi.signalstats.YAVG").await;
    lumas.windows(2).filter(|w| w[1].1 > 200.0 && w[0].1 <= 200.0).map(|w| w[1].0).collect()
}

/// When a beep starts (seconds on the file's timeline): a 10 ms block above -40 dBFS after one
/// below.
pub async fn beeps(file: &Path) -> Vec<f64> {
    // 10 ms blocks at 48 kHz; RMS level in dBFS (-inf for silence parses as a non-number).
    let levels = frame_tags(
        file,
        "amovie",
        "aresample=48000,asetnsamples=480,astats=metadata=1:reset=1",
        "lavfi.astats.Overall.RMS_level",
    )
    .await;
    let loud = |db: f64| db.is_finite() && db > -40.0;
    levels.windows(2).filter(|w| loud(w[1].1) && !loud(w[0].1)).map(|w| w[1].0).collect()
}

/// Beep minus flash in ms (median over the recording's flashes), with how many pairs were found.
pub async fn offset_ms(file: &Path) -> (f64, usize) {
    let (flashes, beeps) = (flashes(file).await, beeps(file).await);
    let offsets = paired_offsets(&flashes, &beeps);
    assert!(offsets.len() >= 2, "{}: flashes {flashes:?} and beeps {beeps:?} do not pair up", file.display());
    (offsets[offsets.len() / 2], offsets.len())
}

/// Beep minus flash in ms, sorted, for each flash (seconds) with a beep within 500 ms of it.
pub fn paired_offsets(flashes: &[f64], beeps: &[f64]) -> Vec<f64> {
    let mut offsets: Vec<f64> = flashes
        .iter()
        .filter_map(|flash| beeps.iter().map(|beep| (beep - flash) * 1000.0).find(|ms| ms.abs() < 500.0))
        .collect();
    offsets.sort_by(f64::total_cmp);
    offsets
}

/// Checks a recording's lip sync (its beep within [`BAR_MS`] of its flash); returns the offset.
pub async fn assert_recording_sync(file: &Path, who: &str) -> f64 {
    let (offset, pairs) = offset_ms(file).await;
    assert!(offset.abs() <= BAR_MS, "{who}: beep {offset:+.0} ms from its flash ({pairs} pairs)");
    offset
}
