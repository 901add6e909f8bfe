//! How rooms and peers are named in MoQ: the room is the namespace `(room)`, each peer the
//! namespace `(room, identity)`. A peer namespace holds the tracks `moq-pub` and `moq-sub` use —
//! `.catalog` (JSON catalog), `0.mp4` (CMAF init segment: ftyp + moov) and `<n>.m4s` (one per
//! media track, `n` being the track's id in the init segment) — and the room namespace holds a
//! `.catalog` listing every peer's tracks. See docs/protocol-moq.md.

use junction_core::{PeerId, RoomId};
use moq_transport::coding::{TrackName, TrackNamespace, TupleField};

pub const CATALOG_TRACK: &str = ".catalog";
pub const INIT_TRACK: &str = "0.mp4";

/// The name of the media track with id `id` in a peer's init segment.
pub fn media_track_name(id: u32) -> String {
    format!("{id}.m4s")
}

pub fn room_namespace(room: &RoomId) -> TrackNamespace {
    let mut namespace = TrackNamespace::new();
    namespace.add(TupleField::from_utf8(room.as_str()));
    namespace
}

pub fn peer_namespace(room: &RoomId, peer: &PeerId) -> TrackNamespace {
    let mut namespace = room_namespace(room);
    namespace.add(TupleField::from_utf8(peer.as_str()));
    namespace
}

/// `room/identity`, as catalogs name namespaces (and `moq-sub --name` takes them).
pub fn namespace_path(namespace: &TrackNamespace) -> String {
    let fields: Vec<String> =
        namespace.fields.iter().map(|field| String::from_utf8_lossy(&field.value).into_owned()).collect();
    fields.join("/")
}

/// One track of a peer namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerTrack {
    Catalog,
    Init,
    Media(u32),
}

impl PeerTrack {
    pub fn parse(name: &str) -> Option<PeerTrack> {
        match name {
            CATALOG_TRACK => Some(PeerTrack::Catalog),
            INIT_TRACK => Some(PeerTrack::Init),
            _ => {
                let id = name.strip_suffix(".m4s")?;
                // Canonical decimal only: "01.m4s" is not track 1.
                let parsed: u32 = id.parse().ok()?;
                (parsed > 0 && parsed.to_string() == id).then_some(PeerTrack::Media(parsed))
            }
        }
    }
}

/// What a SUBSCRIBE in a session bound to `room` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `(room)` / `.catalog`.
    RoomCatalog,
    /// `(room, identity)` / a peer track.
    Peer { identity: PeerId, track: PeerTrack },
    /// Under the room but not one of Junction's names: a namespace some MoQ publisher announced.
    Announced,
    /// Not under this session's room at all.
    OtherRoom,
}

/// Classifies a requested (namespace, track) for a session bound to `room`.
pub fn classify(room: &RoomId, namespace: &TrackNamespace, track: &TrackName) -> Target {
    let fields: Vec<Option<&str>> =
        namespace.fields.iter().map(|field| std::str::from_utf8(&field.value).ok()).collect();
    if fields.first() != Some(&Some(room.as_str())) {
        return Target::OtherRoom;
    }
    let name = std::str::from_utf8(track.as_bytes()).ok();
    match (fields.len(), name) {
        (1, Some(CATALOG_TRACK)) => Target::RoomCatalog,
        (2, Some(name)) => {
            let identity = fields.get(1).copied().flatten().and_then(|id| PeerId::new(id).ok());
            match (identity, PeerTrack::parse(name)) {
                (Some(identity), Some(track)) => Target::Peer { identity, track },
                _ => Target::Announced,
            }
        }
        _ => Target::Announced,
    }
}

/// Whether `namespace` lies under `room` (its first field is the room name).
pub fn is_under_room(room: &RoomId, namespace: &TrackNamespace) -> bool {
    namespace.fields.first().is_some_and(|field| field.value == room.as_str().as_bytes())
}

/// Whether `prefix` is a (non-strict) tuple prefix of `namespace`.
pub fn has_prefix(namespace: &TrackNamespace, prefix: &TrackNamespace) -> bool {
    prefix.fields.len() <= namespace.fields.len()
        && prefix.fields.iter().zip(&namespace.fields).all(|(a, b)| a.value == b.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> RoomId {
        RoomId::new("lobby").unwrap()
    }

    #[test]
    fn subscriptions_are_classified_by_namespace_and_name() {
        let ns = |path: &str| TrackNamespace::from_utf8_path(path);
        let name = |n: &str| TrackName::from(n);
        assert_eq!(classify(&room(), &ns("lobby"), &name(".catalog")), Target::RoomCatalog);
        assert_eq!(
            classify(&room(), &ns("lobby/alice"), &name("0.mp4")),
            Target::Peer { identity: PeerId::new("alice").unwrap(), track: PeerTrack::Init }
        );
        assert_eq!(
            classify(&room(), &ns("lobby/alice"), &name("2.m4s")),
            Target::Peer { identity: PeerId::new("alice").unwrap(), track: PeerTrack::Media(2) }
        );
        assert_eq!(classify(&room(), &ns("lobby/alice"), &name("now")), Target::Announced);
        assert_eq!(classify(&room(), &ns("lobby/clock/x"), &name("now")), Target::Announced);
        assert_eq!(classify(&room(), &ns("other/alice"), &name("0.mp4")), Target::OtherRoom);
        assert_eq!(PeerTrack::parse("01.m4s"), None);
        assert_eq!(PeerTrack::parse("0.m4s"), None);
        assert_eq!(media_track_name(3), "3.m4s");
        assert_eq!(namespace_path(&peer_namespace(&room(), &PeerId::new("bob").unwrap())), "lobby/bob");
        assert!(has_prefix(&ns("lobby/clock/x"), &ns("lobby/clock")));
        assert!(!has_prefix(&ns("lobby"), &ns("lobby/clock")));
        assert!(is_under_room(&room(), &ns("lobby/x")) && !is_under_room(&room(), &ns("lobbyx")));
    }
}
