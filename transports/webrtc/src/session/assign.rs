//! Which room track goes out on which sending m-line, for sessions with a fixed set of
//! m-lines (WHEP: the viewer's offer decides them and nothing renegotiates). Each m-line shows
//! the newest track of its kind — so a viewer follows a publisher that reconnects — optionally
//! only tracks of one identity; tracks an m-line cannot carry are skipped. Pure bookkeeping:
//! the session subscribes and unsubscribes to make the engine match it.

use junction_core::{MediaKind, PeerId, TrackId};

/// A track of the room as the assignment sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomTrack {
    pub(crate) id: TrackId,
    pub(crate) peer: PeerId,
    pub(crate) kind: MediaKind,
}

/// The tracks a viewer may be shown, newest last, and the choice for each m-line.
#[derive(Debug, Default)]
pub(crate) struct Assignment {
    /// Only tracks of this peer, when set.
    identity: Option<PeerId>,
    tracks: Vec<RoomTrack>,
    /// (m-line index, track) pairs that failed (no codec path): never tried again.
    refused: Vec<(usize, TrackId)>,
}

impl Assignment {
    pub(crate) fn new(identity: Option<PeerId>) -> Self {
        Self { identity, ..Self::default() }
    }

    /// A track was published (or found at start, oldest first).
    pub(crate) fn add(&mut self, track: RoomTrack) {
        if self.identity.as_ref().is_none_or(|id| *id == track.peer) && !self.tracks.iter().any(|t| t.id == track.id) {
            self.tracks.push(track);
        }
    }

    pub(crate) fn remove(&mut self, track: &TrackId) {
        self.tracks.retain(|t| t.id != *track);
        self.refused.retain(|(_, t)| t != track);
    }

    /// Remembers that m-line `line` cannot carry `track`.
    pub(crate) fn refuse(&mut self, line: usize, track: &TrackId) {
        self.refused.push((line, track.clone()));
    }

    /// The track each m-line (given by kind, in order) should carry.
    pub(crate) fn choose(&self, lines: &[MediaKind]) -> Vec<Option<TrackId>> {
        let mut taken: Vec<&TrackId> = Vec::new();
        lines
            .iter()
            .enumerate()
            .map(|(index, kind)| {
                let pick = self.tracks.iter().rev().find(|t| {
                    t.kind == *kind
                        && !taken.contains(&&t.id)
                        && !self.refused.iter().any(|(line, id)| *line == index && *id == t.id)
                })?;
                taken.push(&pick.id);
                Some(pick.id.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(id: &str, peer: &str, kind: MediaKind) -> RoomTrack {
        RoomTrack { id: TrackId::new(id).unwrap(), peer: PeerId::new(peer).unwrap(), kind }
    }

    fn ids(choice: Vec<Option<TrackId>>) -> Vec<Option<String>> {
        choice.into_iter().map(|t| t.map(|t| t.to_string())).collect()
    }

    const AV: [MediaKind; 2] = [MediaKind::Audio, MediaKind::Video];

    #[test]
    fn newest_track_of_each_kind_wins_and_older_ones_come_back() {
        let mut assignment = Assignment::new(None);
        assert_eq!(ids(assignment.choose(&AV)), [None, None], "a viewer may come first");
        assignment.add(track("a1", "obs", MediaKind::Audio));
        assignment.add(track("v1", "obs", MediaKind::Video));
        assert_eq!(ids(assignment.choose(&AV)), [Some("a1".into()), Some("v1".into())]);

        // The publisher reconnects: its new tracks take over at once.
        assignment.add(track("v2", "obs", MediaKind::Video));
        assert_eq!(ids(assignment.choose(&AV))[1], Some("v2".into()));
        assignment.remove(&TrackId::new("v2").unwrap());
        assert_eq!(ids(assignment.choose(&AV))[1], Some("v1".into()));
    }

    #[test]
    fn identity_filter_distinct_tracks_per_line_and_refusals() {
        let mut assignment = Assignment::new(Some(PeerId::new("alice").unwrap()));
        assignment.add(track("v-bob", "bob", MediaKind::Video));
        assignment.add(track("v-alice", "alice", MediaKind::Video));
        assignment.add(track("s-alice", "alice", MediaKind::Video));
        let lines = [MediaKind::Video, MediaKind::Video, MediaKind::Video];
        assert_eq!(ids(assignment.choose(&lines)), [Some("s-alice".into()), Some("v-alice".into()), None]);

        assignment.refuse(0, &TrackId::new("s-alice").unwrap());
        assert_eq!(ids(assignment.choose(&lines)), [Some("v-alice".into()), Some("s-alice".into()), None]);
    }
}
