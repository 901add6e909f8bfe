//! A `tracks` recording's `manifest.json`: every file it wrote, whose track it holds and the
//! wall-clock time of its first sample, so a player or an editor lines the files up. Rewritten
//! whole (a temporary file renamed over it) whenever a file begins or ends, so a crash leaves
//! the last complete version; a restarted recording reads it and adds its files after the old.

use std::path::{Path, PathBuf};

use junction_core::{MediaKind, PeerId, RoomId, TrackId};
use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "manifest.json";

/// Largest manifest read back at a restart.
const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub room: RoomId,
    pub component: String,
    pub layout: String,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The file's name in the recording's directory.
    pub file: String,
    pub peer: PeerId,
    pub track: TrackId,
    /// The publisher's label for the track.
    pub name: String,
    pub kind: MediaKind,
    /// The codec in the file (`h264`, `opus`, …) and its RFC 6381 string.
    pub codec: String,
    pub codec_string: String,
    /// The track's own codec when the file holds a transcoded variant (a phone's G.711 as Opus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_codec: Option<String>,
    /// Ticks per second of the file's timeline, which starts at zero.
    pub timescale: u32,
    /// When the file's time zero was captured, in ms since the Unix epoch (server clock).
    pub start_unix_ms: f64,
    /// When the file was closed; absent for a file cut short by a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_unix_ms: Option<f64>,
    /// Where the file was copied (`s3://bucket/key`), once it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

impl Manifest {
    pub fn new(room: RoomId, component: String) -> Manifest {
        Manifest { room, component, layout: "tracks".into(), files: Vec::new() }
    }

    /// The manifest an earlier run of this recording left in `dir`, if it can be read.
    pub async fn load(dir: &Path) -> Option<Manifest> {
        let path = dir.join(FILE_NAME);
        let size = tokio::fs::metadata(&path).await.ok()?.len();
        if size > MAX_MANIFEST_BYTES {
            return None;
        }
        serde_json::from_slice(&tokio::fs::read(&path).await.ok()?).ok()
    }

    /// Writes the manifest into `dir`, replacing the old one in one rename.
    pub async fn save(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let temporary: PathBuf = dir.join(format!(".{FILE_NAME}.tmp"));
        tokio::fs::write(&temporary, json).await?;
        tokio::fs::rename(&temporary, dir.join(FILE_NAME)).await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::wall_clock::WallClock;

    #[tokio::test]
    async fn a_saved_manifest_reads_back() {
        let dir = std::env::temp_dir().join(format!("junction-manifest-{}", std::process::id()));
        tokio::fs::create_dir_all(&dir).await.unwrap();
        let clock = WallClock::now();
        let later = std::time::Instant::now() + Duration::from_millis(250);

        let mut manifest = Manifest::new(RoomId::new("lobby").unwrap(), "CO_test".into());
        manifest.files.push(FileEntry {
            file: "cam-video-1.mp4".into(),
            peer: PeerId::new("cam").unwrap(),
            track: TrackId::generate(),
            name: "camera".into(),
            kind: MediaKind::Video,
            codec: "h264".into(),
            codec_string: "avc1.42e01f".into(),
            source_codec: None,
            timescale: 90_000,
            // Whole ms: serde_json reads a fraction back to within an ulp only.
            start_unix_ms: clock.unix_ms(later).round(),
            end_unix_ms: None,
            object: None,
        });
        manifest.save(&dir).await.unwrap();
        assert_eq!(Manifest::load(&dir).await, Some(manifest));
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(FILE_NAME)).unwrap()).unwrap();
        assert_eq!(json["files"][0]["kind"], "video");
        assert!(json["files"][0].get("end_unix_ms").is_none(), "{json}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
