//! Namespaces MoQ publishers announced, per room, shared by every session of the transport: a
//! subscriber in the room asking for a track under an announced namespace is served from the
//! announcing session (one upstream subscription per track, fanned out by moq-transport's serve
//! layer). This is how MoQ tracks that are not media — a clock, application data — pass through
//! a room; media tracks also enter the engine (see `ingest`).

use std::collections::HashMap;
use std::sync::Arc;

use junction_core::RoomId;
use moq_transport::coding::TrackNamespace;
use moq_transport::serve::TracksReader;
use parking_lot::Mutex;

use crate::naming::has_prefix;

struct Announced {
    id: u64,
    namespace: TrackNamespace,
    tracks: TracksReader,
}

#[derive(Clone, Default)]
pub struct Hub {
    inner: Arc<Mutex<HubState>>,
}

#[derive(Default)]
struct HubState {
    next_id: u64,
    rooms: HashMap<RoomId, Vec<Announced>>,
}

/// Keeps an announced namespace registered; dropping it withdraws the namespace.
pub struct Registration {
    hub: Hub,
    room: RoomId,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut state = self.hub.inner.lock();
        if let Some(list) = state.rooms.get_mut(&self.room) {
            list.retain(|a| a.id != self.id);
            if list.is_empty() {
                state.rooms.remove(&self.room);
            }
        }
    }
}

impl Hub {
    /// Registers `namespace` in `room`, served by `tracks`. Refused when it overlaps a namespace
    /// already announced there (one is a prefix of the other).
    pub fn register(
        &self,
        room: &RoomId,
        namespace: &TrackNamespace,
        tracks: TracksReader,
    ) -> Result<Registration, TrackNamespace> {
        let mut state = self.inner.lock();
        state.next_id += 1;
        let id = state.next_id;
        let list = state.rooms.entry(room.clone()).or_default();
        if let Some(existing) =
            list.iter().find(|a| has_prefix(namespace, &a.namespace) || has_prefix(&a.namespace, namespace))
        {
            return Err(existing.namespace.clone());
        }
        list.push(Announced { id, namespace: namespace.clone(), tracks });
        Ok(Registration { hub: self.clone(), room: room.clone(), id })
    }

    /// The tracks of the announced namespace that `namespace` lies under, if any.
    pub fn find(&self, room: &RoomId, namespace: &TrackNamespace) -> Option<TracksReader> {
        let state = self.inner.lock();
        state
            .rooms
            .get(room)?
            .iter()
            .filter(|a| has_prefix(namespace, &a.namespace))
            .max_by_key(|a| a.namespace.fields.len())
            .map(|a| a.tracks.clone())
    }

    /// Announced namespaces in a room.
    #[cfg(test)]
    pub fn namespaces(&self, room: &RoomId) -> Vec<String> {
        let state = self.inner.lock();
        state
            .rooms
            .get(room)
            .map(|l| l.iter().map(|a| crate::naming::namespace_path(&a.namespace)).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use moq_transport::serve::Tracks;

    use super::*;

    #[test]
    fn namespaces_register_without_overlap_and_withdraw_on_drop() {
        let hub = Hub::default();
        let room = RoomId::new("lobby").unwrap();
        let ns = TrackNamespace::from_utf8_path;
        let (_w, _r, clock) = Tracks::new(ns("lobby/clock")).produce();
        let registration = hub.register(&room, &ns("lobby/clock"), clock.clone()).unwrap();
        assert!(hub.register(&room, &ns("lobby/clock/sub"), clock.clone()).is_err());
        assert!(hub.register(&room, &ns("lobby"), clock.clone()).is_err());
        assert!(hub.find(&room, &ns("lobby/clock/x")).is_some());
        assert!(hub.find(&room, &ns("lobby/other")).is_none());
        assert!(hub.find(&RoomId::new("elsewhere").unwrap(), &ns("lobby/clock")).is_none());
        drop(registration);
        assert!(hub.find(&room, &ns("lobby/clock")).is_none());
        assert!(hub.namespaces(&room).is_empty());
    }
}
