//! The JSON catalogs Junction publishes, in the format `moq-pub` writes and `moq-sub` reads
//! (moq-catalog's `Root`, version 1, CMAF packaging): one per peer namespace, listing the tracks
//! of its init segment in order, and one per room, listing every peer's tracks with the peer's
//! namespace. The room catalog also carries a `peers` member (an extension moq-catalog readers
//! ignore): who is in the room and at which namespace, tracks or not.

use bytes::Bytes;
use junction_core::MediaKind;
use moq_catalog::{CommonTrackFields, Root, SelectionParam, Track, TrackPackaging};

use crate::naming::INIT_TRACK;

/// One track as a catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// `room/identity`.
    pub namespace: String,
    /// `<n>.m4s`.
    pub name: String,
    pub kind: MediaKind,
    /// RFC 6381 codec string.
    pub codec: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub sample_rate: Option<u32>,
    pub channels: Option<u8>,
}

/// A peer of the room, as the room catalog's `peers` extension lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CatalogPeer {
    pub identity: String,
    pub namespace: String,
    pub transport: &'static str,
}

/// The catalog document for `entries`, in order; with `peers`, the room catalog's extension.
pub fn catalog_json(entries: &[CatalogEntry], peers: Option<&[CatalogPeer]>) -> Bytes {
    let mut tracks: Vec<Track> = entries
        .iter()
        .map(|entry| Track {
            namespace: Some(entry.namespace.clone()),
            name: entry.name.clone(),
            init_track: Some(INIT_TRACK.to_owned()),
            packaging: Some(TrackPackaging::Cmaf),
            render_group: Some(1),
            selection_params: SelectionParam {
                codec: Some(entry.codec.clone()),
                width: entry.width.filter(|w| *w > 0),
                height: entry.height.filter(|h| *h > 0),
                samplerate: entry.sample_rate.filter(|_| entry.kind == MediaKind::Audio),
                channel_config: entry.channels.filter(|_| entry.kind == MediaKind::Audio).map(|c| c.to_string()),
                ..Default::default()
            },
            ..Default::default()
        })
        .collect();
    let root = Root {
        version: 1,
        streaming_format: 1,
        streaming_format_version: "0.2".to_owned(),
        streaming_delta_updates: true,
        common_track_fields: CommonTrackFields::from_tracks(&mut tracks),
        tracks,
    };
    // Serialising plain structs of strings and numbers cannot fail.
    let mut document = serde_json::to_value(&root).unwrap_or_default();
    if let (Some(peers), Some(object)) = (peers, document.as_object_mut()) {
        object.insert("peers".into(), serde_json::to_value(peers).unwrap_or_default());
    }
    Bytes::from(serde_json::to_vec_pretty(&document).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogs_parse_as_moq_sub_expects() {
        let entries = vec![
            CatalogEntry {
                namespace: "lobby/alice".into(),
                name: "1.m4s".into(),
                kind: MediaKind::Video,
                codec: "avc1.42c01e".into(),
                width: Some(320),
                height: Some(240),
                sample_rate: None,
                channels: None,
            },
            CatalogEntry {
                namespace: "lobby/bob".into(),
                name: "1.m4s".into(),
                kind: MediaKind::Audio,
                codec: "opus".into(),
                width: None,
                height: None,
                sample_rate: Some(48_000),
                channels: Some(2),
            },
        ];
        let peers = [CatalogPeer { identity: "alice".into(), namespace: "lobby/alice".into(), transport: "whip" }];
        let json = catalog_json(&entries, Some(&peers));
        let raw: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(raw["peers"][0]["namespace"], "lobby/alice");
        let root: Root = serde_json::from_slice(&json).unwrap();
        assert_eq!(root.version, 1);
        assert_eq!(root.tracks.len(), 2);
        assert_eq!(root.tracks[0].init_track.as_deref(), Some("0.mp4"));
        assert_eq!(root.tracks[0].namespace.as_deref(), Some("lobby/alice"));
        assert_eq!(root.tracks[1].selection_params.samplerate, Some(48_000));
        assert_eq!(root.tracks[1].selection_params.channel_config.as_deref(), Some("2"));
        let empty: Root = serde_json::from_slice(&catalog_json(&[], None)).unwrap();
        assert!(empty.tracks.is_empty());
        let raw: serde_json::Value = serde_json::from_slice(&catalog_json(&[], None)).unwrap();
        assert!(raw.get("peers").is_none());
    }
}
