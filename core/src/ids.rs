//! Validated identifiers: rooms, peers (a peer's identity), tracks and sessions.
//!
//! Ids are cheap to clone (`Arc<str>` inside) because they ride along with every forwarded frame.
//! Room and peer ids appear in URLs (`/whip/{room}`, `rtmp://host/live/{room}/{identity}`), SIP
//! URIs (`sip:<caller>`) and MoQ track names (`{identity}/{kind}`), so the allowed alphabet is the
//! URL-unreserved set plus `:`, `@` and `+`, and never `/`.

use std::fmt;
use std::sync::Arc;

use rand::Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} bytes long, the limit is {max}")]
    TooLong { kind: &'static str, len: usize, max: usize },
    #[error("{kind} {value:?} contains {bad:?}, allowed: A-Z a-z 0-9 - _ . ~ : @ +")]
    BadChar { kind: &'static str, value: String, bad: char },
    #[error("session id {value:?} is not of the form PS_<hex>")]
    BadSession { value: String },
}

/// Longest room or peer id accepted.
pub const MAX_ID_LEN: usize = 128;

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~' | ':' | '@' | '+')
}

fn validate(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { kind, len: value.len(), max: MAX_ID_LEN });
    }
    if let Some(bad) = value.chars().find(|c| !is_allowed(*c)) {
        return Err(IdError::BadChar { kind, value: value.chars().take(64).collect(), bad });
    }
    Ok(())
}

/// A random id of `len` base62 characters after `prefix`, e.g. `TR_4fQ9xZk2LmPa`.
pub fn random_id(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let mut out = String::with_capacity(prefix.len() + len);
    out.push_str(prefix);
    for _ in 0..len {
        out.push(ALPHABET[rng.random_range(0..ALPHABET.len())] as char);
    }
    out
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `value` and wraps it.
            pub fn new(value: impl AsRef<str>) -> Result<Self, IdError> {
                let value = value.as_ref();
                validate($kind, value)?;
                Ok(Self(Arc::from(value)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&*raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

define_id!(
    /// A room's name, unique on the server.
    RoomId,
    "room"
);
define_id!(
    /// A peer's identity, unique within its room (a newer session with the same identity
    /// replaces the older one).
    PeerId,
    "identity"
);
define_id!(
    /// A published track, unique on the server (`TR_` + random); see [`TrackId::generate`].
    TrackId,
    "track"
);

impl RoomId {
    /// A fresh random room name, for rooms created without one.
    pub fn generate() -> Self {
        Self(Arc::from(random_id("room-", 10)))
    }
}

impl TrackId {
    pub fn generate() -> Self {
        Self(Arc::from(random_id("TR_", 12)))
    }
}

/// One connection of a peer. Identities repeat across reconnects; session ids never do, so the
/// engine can tell a stale session from the live one.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub u64);

impl SessionId {
    pub fn random() -> Self {
        Self(rand::rng().random_range(1..u64::MAX >> 11))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PS_{:x}", self.0)
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for SessionId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        s.strip_prefix("PS_")
            .and_then(|hex| u64::from_str_radix(hex, 16).ok())
            .map(SessionId)
            .ok_or_else(|| IdError::BadSession { value: s.chars().take(64).collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_urls_sip_and_email_like_ids() {
        for ok in ["standup", "sip:+15551234", "alice@example.com", "a.b_c-d~e", "x"] {
            assert!(PeerId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_empty_long_and_slashes_with_reasons() {
        assert_eq!(RoomId::new(""), Err(IdError::Empty { kind: "room" }));
        let long = "a".repeat(MAX_ID_LEN + 1);
        assert!(matches!(RoomId::new(&long), Err(IdError::TooLong { len: 129, .. })));
        let err = PeerId::new("a/b").unwrap_err();
        assert_eq!(err.to_string(), "identity \"a/b\" contains '/', allowed: A-Z a-z 0-9 - _ . ~ : @ +");
        assert!(RoomId::new("spa ce").is_err());
        assert!(RoomId::new("é").is_err());
    }

    #[test]
    fn session_ids_round_trip_through_text() {
        let id = SessionId::random();
        assert_eq!(id.to_string().parse::<SessionId>().unwrap(), id);
        assert!("PS_zz".parse::<SessionId>().is_err());
    }

    #[test]
    fn ids_deserialize_with_validation() {
        let ok: RoomId = serde_json::from_str("\"lobby\"").unwrap();
        assert_eq!(ok.as_str(), "lobby");
        let err = serde_json::from_str::<RoomId>("\"bad/room\"").unwrap_err();
        assert!(err.to_string().contains("contains '/'"));
    }
}
