//! Real H.264 for tests that publish it themselves: libx264 (through ffmpeg) encodes the test
//! pattern as a browser would send it — constrained baseline, no B-frames — and the stream is cut
//! into access units; and what ffmpeg decodes from a received stream.

use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Encodes `seconds` of `testsrc` at `fps` (a keyframe every second) into `dir/<name>.h264`;
/// returns the file and its access units (Annex B, each opened by x264's access unit delimiter).
pub async fn baseline_access_units(dir: &Path, name: &str, seconds: u32, fps: u32) -> (PathBuf, Vec<Bytes>) {
    baseline_access_units_of(dir, name, &format!("testsrc=size=320x240:rate={fps}"), seconds, fps).await
}

/// The same for any lavfi video `source` at `fps`.
pub async fn baseline_access_units_of(
    dir: &Path,
    name: &str,
    source: &str,
    seconds: u32,
    fps: u32,
) -> (PathBuf, Vec<Bytes>) {
    let file = dir.join(format!("{name}.h264"));
    let output = tokio::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", source])
        .args(["-t", &seconds.to_string(), "-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p"])
        .args(["-g", &fps.to_string(), "-tune", "zerolatency", "-x264-params", "aud=1", "-f", "h264", "-y"])
        .arg(&file)
        .kill_on_drop(true)
        .output()
        .await
        .expect("ffmpeg runs");
    assert!(output.status.success(), "encoding H.264: {}", String::from_utf8_lossy(&output.stderr));
    let stream = Bytes::from(std::fs::read(&file).expect("the encoded file"));
    let mut starts: Vec<usize> = (0..stream.len().saturating_sub(4))
        .filter(|&i| stream[i..i + 4] == [0, 0, 0, 1] && stream[i + 4] & 0x1f == 9)
        .collect();
    starts.push(stream.len());
    let units = starts.windows(2).map(|w| stream.slice(w[0]..w[1])).collect();
    (file, units)
}

/// The MD5 of every decoded frame of `file`, in order.
pub async fn frame_md5s(file: &Path) -> Vec<String> {
    let output = tokio::process::Command::new("ffmpeg")
        .args(["-v", "quiet", "-i"])
        .arg(file)
        .args(["-map", "0:v:0", "-f", "framemd5", "-"])
        .output()
        .await
        .expect("ffmpeg framemd5");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|md5| md5.trim().to_owned()))
        .collect()
}
