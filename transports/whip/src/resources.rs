//! The WHIP and WHEP resources that exist: one per running session, addressed by an
//! unguessable id in `/{whip|whep}/{room}/{id}`, with the ETag of its current ICE session.
//! A resource disappears when its session ends, however it ends (a panic of the session's task
//! included: the session ends, and the watcher's guard forgets the resource even if the watcher
//! itself were cancelled).

use std::collections::HashMap;
use std::sync::Arc;

use junction_core::RoomId;
use junction_core::ids::random_id;
use junction_webrtc::SessionHandle;
use parking_lot::Mutex;

use crate::limits::SourceSlot;

/// Which surface a resource belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Whip,
    Whep,
}

impl Kind {
    pub fn path(self) -> &'static str {
        match self {
            Kind::Whip => "whip",
            Kind::Whep => "whep",
        }
    }
}

pub(crate) struct Resource {
    pub(crate) id: String,
    pub(crate) kind: Kind,
    pub(crate) room: RoomId,
    pub(crate) handle: SessionHandle,
    /// The SDP answer, for the candidates an ICE restart answer repeats.
    pub(crate) answer: String,
    pub(crate) ice: Mutex<IceState>,
    /// Its place in its source address's count.
    _source: Option<SourceSlot>,
}

pub(crate) struct IceState {
    /// Quoted, as it goes in the `ETag` header.
    pub(crate) etag: String,
    /// The client's current ICE ufrag: a PATCH with another one is an ICE restart.
    pub(crate) remote_ufrag: Option<String>,
}

impl Resource {
    pub(crate) fn location(&self) -> String {
        format!("/{}/{}/{}", self.kind.path(), self.room, self.id)
    }
}

pub(crate) fn new_etag() -> String {
    format!("\"{}\"", random_id("", 16))
}

/// Removes a resource from the map when dropped.
struct Forget {
    map: Arc<Mutex<HashMap<String, Arc<Resource>>>>,
    id: String,
}

impl Drop for Forget {
    fn drop(&mut self) {
        self.map.lock().remove(&self.id);
    }
}

#[derive(Clone, Default)]
pub(crate) struct Resources {
    map: Arc<Mutex<HashMap<String, Arc<Resource>>>>,
}

impl Resources {
    /// Registers a running session; it is forgotten when the session ends.
    pub(crate) fn insert(
        &self,
        kind: Kind,
        room: RoomId,
        handle: SessionHandle,
        answer: String,
        remote_ufrag: Option<String>,
        source: Option<SourceSlot>,
    ) -> Arc<Resource> {
        let resource = Arc::new(Resource {
            id: random_id("", 24),
            kind,
            room,
            handle: handle.clone(),
            answer,
            ice: Mutex::new(IceState { etag: new_etag(), remote_ufrag }),
            _source: source,
        });
        self.map.lock().insert(resource.id.clone(), resource.clone());
        let forget = Forget { map: self.map.clone(), id: resource.id.clone() };
        tokio::spawn(async move {
            let _forget = forget;
            handle.closed().await;
        });
        resource
    }

    /// The resource at `/{kind}/{room}/{id}`, if that is where it lives.
    pub(crate) fn get(&self, kind: Kind, room: &str, id: &str) -> Option<Arc<Resource>> {
        let found = self.map.lock().get(id).cloned()?;
        (found.kind == kind && found.room.as_str() == room && !found.handle.is_closed()).then_some(found)
    }

    pub(crate) fn count(&self, kind: Kind) -> usize {
        self.map.lock().values().filter(|r| r.kind == kind).count()
    }
}
