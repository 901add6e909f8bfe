//! A MoQ track Junction writes for its subscribers, on moq-transport's serve layer: groups are
//! opened and finished explicitly, and each object may be written from several buffers (a CMAF
//! header and the frame it wraps) without joining them.
//!
//! A fresh serve track would replay its last groups to its first subscriber; Junction's tracks
//! are live, so that history is claimed at creation and every subscriber starts at the group
//! being written — for media, the one that began at the latest keyframe.

use bytes::Bytes;
use futures::FutureExt;
use moq_transport::serve::{
    ServeError, Subgroup, SubgroupWriter, SubgroupsWriter, TrackReaderMode, TracksReader, TracksWriter,
};

pub struct OutTrack {
    writer: SubgroupsWriter,
    group: Option<SubgroupWriter>,
    /// Group id of the last group opened.
    last_group: Option<u64>,
    /// MoQ publisher priority of the track's subgroups (lower is more important).
    priority: u8,
}

impl OutTrack {
    /// Creates `name` in the broadcast `tracks`/`reader`; `None` once the broadcast is closed.
    pub fn create(tracks: &mut TracksWriter, reader: &mut TracksReader, name: &str, priority: u8) -> Option<OutTrack> {
        let writer = tracks.create(name)?.subgroups().ok()?;
        let namespace = reader.namespace.clone();
        if let Some(track) = reader.get_track_reader(&namespace, name)
            && let Some(Ok(TrackReaderMode::Subgroups(mut template))) = track.mode().now_or_never()
        {
            // Polling once registers this reader as the template's claimant; dropping it then
            // leaves no history for later subscribers.
            let _ = template.next().now_or_never();
        }
        Some(OutTrack { writer, group: None, last_group: None, priority })
    }

    pub fn has_open_group(&self) -> bool {
        self.group.is_some()
    }

    /// Finishes the current group and opens `group_id` (which must be above the last one).
    pub fn start_group(&mut self, group_id: u64) -> Result<(), ServeError> {
        if self.last_group.is_some_and(|last| group_id <= last) {
            return Err(ServeError::Duplicate);
        }
        self.group = None;
        let group = self.writer.create(Subgroup { group_id, subgroup_id: 0, priority: self.priority })?;
        self.group = Some(group);
        self.last_group = Some(group_id);
        Ok(())
    }

    /// Appends one object, made of `parts` in order, to the current group.
    pub fn write_object(&mut self, parts: &[&Bytes]) -> Result<(), ServeError> {
        let group = self.group.as_mut().ok_or(ServeError::Done)?;
        let size = parts.iter().map(|p| p.len()).sum();
        let mut object = group.create(size, None)?;
        for part in parts {
            object.write((*part).clone())?;
        }
        Ok(())
    }

    /// Replaces the track's content with a new group holding one object (catalogs, init
    /// segments); the group stays open so late subscribers receive it.
    pub fn publish_single(&mut self, payload: Bytes) -> Result<(), ServeError> {
        let next = self.last_group.map_or(0, |g| g + 1);
        self.start_group(next)?;
        self.write_object(&[&payload])
    }
}

#[cfg(test)]
mod tests {
    use moq_transport::coding::TrackNamespace;
    use moq_transport::serve::Tracks;

    use super::*;

    async fn read_objects(reader: &mut TracksReader, name: &str) -> Vec<(u64, Bytes)> {
        let ns = reader.namespace.clone();
        let track = reader.get_track_reader(&ns, name).unwrap();
        let TrackReaderMode::Subgroups(mut groups) = track.mode().await.unwrap() else { panic!("mode") };
        let mut out = Vec::new();
        while let Ok(Ok(Some(mut group))) =
            tokio::time::timeout(std::time::Duration::from_millis(50), groups.next()).await
        {
            while let Ok(Ok(Some(object))) =
                tokio::time::timeout(std::time::Duration::from_millis(50), group.read_next()).await
            {
                out.push((group.group_id, object));
            }
        }
        out
    }

    #[tokio::test]
    async fn late_subscribers_start_at_the_live_group() {
        let (mut writer, _request, mut reader) = Tracks::new(TrackNamespace::from_utf8_path("room/peer")).produce();
        let mut track = OutTrack::create(&mut writer, &mut reader, "1.m4s", 128).unwrap();
        track.start_group(1).unwrap();
        track.write_object(&[&Bytes::from_static(b"key-1"), &Bytes::from_static(b"+")]).unwrap();
        track.write_object(&[&Bytes::from_static(b"delta-1")]).unwrap();
        track.start_group(2).unwrap();
        track.write_object(&[&Bytes::from_static(b"key-2")]).unwrap();

        let objects = read_objects(&mut reader, "1.m4s").await;
        assert_eq!(objects, vec![(2, Bytes::from_static(b"key-2"))]);
        assert_eq!(track.start_group(2), Err(ServeError::Duplicate));

        let mut catalog = OutTrack::create(&mut writer, &mut reader, ".catalog", 0).unwrap();
        catalog.publish_single(Bytes::from_static(b"v1")).unwrap();
        catalog.publish_single(Bytes::from_static(b"v2")).unwrap();
        assert_eq!(read_objects(&mut reader, ".catalog").await, vec![(1, Bytes::from_static(b"v2"))]);
    }
}
