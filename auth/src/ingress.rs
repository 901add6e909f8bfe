//! Ingresses: stream keys that bind an RTMP, WHIP or SRT publisher (OBS, ffmpeg) to a room and an
//! identity, so encoders need no JWT. Held in memory for lookups; the server keeps them in its
//! state store and puts them back here at start ([`IngressStore::restore`]).
//! Keys are looked up by their SHA-256 digest and then compared in constant time, so how long a
//! lookup takes says nothing about how much of a guessed key was right.

use std::collections::HashMap;
use std::sync::Arc;

use junction_core::ids::random_id;
use junction_core::{PeerId, RoomId};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{secrets_equal, unix_now};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngressKind {
    Rtmp,
    Whip,
    Srt,
}

impl IngressKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IngressKind::Rtmp => "rtmp",
            IngressKind::Whip => "whip",
            IngressKind::Srt => "srt",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ingress {
    pub id: String,
    pub kind: IngressKind,
    pub room: RoomId,
    pub identity: PeerId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub stream_key: String,
    /// Unix seconds.
    pub created_at: u64,
}

#[derive(Clone, Default)]
pub struct IngressStore {
    inner: Arc<RwLock<Inner>>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Ingress>,
    /// SHA-256 of the stream key -> ingress id.
    id_by_key: HashMap<[u8; 32], String>,
}

impl Inner {
    /// Adds `ingress`, replacing one with the same id (and forgetting that one's key).
    fn insert(&mut self, ingress: Ingress) {
        self.remove(&ingress.id);
        self.id_by_key.insert(key_digest(&ingress.stream_key), ingress.id.clone());
        self.by_id.insert(ingress.id.clone(), ingress);
    }

    fn remove(&mut self, id: &str) -> Option<Ingress> {
        let ingress = self.by_id.remove(id)?;
        self.id_by_key.remove(&key_digest(&ingress.stream_key));
        Some(ingress)
    }
}

fn key_digest(stream_key: &str) -> [u8; 32] {
    Sha256::digest(stream_key.as_bytes()).into()
}

impl IngressStore {
    pub fn create(&self, kind: IngressKind, room: RoomId, identity: PeerId, name: Option<String>) -> Ingress {
        let ingress = Ingress {
            id: random_id("IN_", 12),
            kind,
            room,
            identity,
            name,
            stream_key: random_id("sk_", 32),
            created_at: unix_now(),
        };
        self.inner.write().insert(ingress.clone());
        ingress
    }

    /// Puts back an ingress created earlier (loaded from the state store, or written by another
    /// node), replacing one with the same id.
    pub fn restore(&self, ingress: Ingress) {
        self.inner.write().insert(ingress);
    }

    /// Makes the set of ingresses exactly `all` (after a cluster's store was away and writes
    /// may have been missed).
    pub fn replace_all(&self, all: Vec<Ingress>) {
        let mut inner = self.inner.write();
        inner.by_id.clear();
        inner.id_by_key.clear();
        for ingress in all {
            inner.insert(ingress);
        }
    }

    pub fn get(&self, id: &str) -> Option<Ingress> {
        self.inner.read().by_id.get(id).cloned()
    }

    pub fn find_by_key(&self, stream_key: &str) -> Option<Ingress> {
        let inner = self.inner.read();
        let ingress = inner.id_by_key.get(&key_digest(stream_key)).and_then(|id| inner.by_id.get(id))?;
        secrets_equal(stream_key.as_bytes(), ingress.stream_key.as_bytes()).then(|| ingress.clone())
    }

    /// Every ingress, oldest first.
    pub fn list(&self) -> Vec<Ingress> {
        let mut all: Vec<Ingress> = self.inner.read().by_id.values().cloned().collect();
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        all
    }

    pub fn delete(&self, id: &str) -> Option<Ingress> {
        self.inner.write().remove(id)
    }

    pub fn len(&self) -> usize {
        self.inner.read().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AuthError, Authority};

    #[test]
    fn stream_keys_resolve_to_their_room_and_identity_until_deleted() {
        let authority = Authority::new("key");
        let room = RoomId::new("stage").unwrap();
        let ingress = authority.ingress().create(IngressKind::Rtmp, room.clone(), PeerId::new("obs").unwrap(), None);
        let credential = authority.resolve(&ingress.stream_key, IngressKind::Rtmp).unwrap();
        assert_eq!(credential.identity.as_str(), "obs");
        assert!(credential.grants.publish && !credential.grants.subscribe);
        assert_eq!(credential.session.token_id, Some(format!("ingress:{}", ingress.id)));
        assert_eq!(credential.session.expires_at_ms, None);
        assert!(credential.clone().for_room(&room).is_ok());
        assert!(matches!(credential.for_room(&RoomId::new("other").unwrap()), Err(AuthError::WrongRoom { .. })));
        assert!(matches!(
            authority.resolve(&ingress.stream_key, IngressKind::Whip),
            Err(AuthError::WrongIngressKind { expected: "rtmp", used: "whip" })
        ));
        authority.ingress().delete(&ingress.id).unwrap();
        assert_eq!(authority.resolve(&ingress.stream_key, IngressKind::Rtmp), Err(AuthError::UnknownStreamKey));
        assert_eq!(authority.resolve("  ", IngressKind::Rtmp), Err(AuthError::Missing));
    }

    #[test]
    fn api_key_comparison_needs_the_exact_key() {
        let authority = Authority::new("s3cret");
        assert!(authority.is_api_key("s3cret"));
        assert!(!authority.is_api_key("s3cre"));
        assert!(!authority.is_api_key("s3creT"));
    }
}
