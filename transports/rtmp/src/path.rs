//! What an RTMP URL asks for. Clients split `rtmp://host/live/<rest>` differently between the
//! `connect` application name and the `publish`/`play` stream name (ffmpeg makes
//! `rtmp://h/live/room/alice?token=x` into app `live/room` and stream `alice?token=x`), so the
//! two are joined back into one path before reading it:
//! - publish: `live/<stream key>` — an ingress stream key or a client JWT;
//! - play: `live/<room>/<identity>?token=<client JWT with the subscribe grant>`.

use junction_core::{IdError, PeerId, RoomId};

/// The one RTMP application Junction serves.
pub const APP: &str = "live";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("unknown application {0:?}; use rtmp://<host>/live/...")]
    WrongApp(String),
    #[error("no stream key; publish to rtmp://<host>/live/<stream key>")]
    NoStreamKey,
    #[error("a stream key cannot contain '/'; publish to rtmp://<host>/live/<stream key>")]
    NestedStreamKey,
    #[error("play rtmp://<host>/live/<room>/<identity>?token=<jwt>, not {0:?}")]
    BadPlayPath(String),
    #[error(transparent)]
    BadId(#[from] IdError),
}

/// Whether `app` (from `connect`) is Junction's application, possibly with a path after it.
pub fn is_our_app(app: &str) -> bool {
    app == APP || app.strip_prefix(APP).is_some_and(|rest| rest.starts_with('/'))
}

/// The part of `app`/`stream` after `live/`, split from its query string.
fn split(app: &str, stream: &str) -> Result<(String, String), PathError> {
    let app = app.trim_matches('/');
    let rest = app.strip_prefix(APP).filter(|r| r.is_empty() || r.starts_with('/'));
    let rest = rest.ok_or_else(|| PathError::WrongApp(app.chars().take(64).collect()))?;
    let joined = format!("{}/{}", rest.trim_start_matches('/'), stream.trim_start_matches('/'));
    let joined = joined.trim_start_matches('/');
    let (path, query) = joined.split_once('?').unwrap_or((joined, ""));
    Ok((path.trim_end_matches('/').to_owned(), query.to_owned()))
}

fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == name).map(|(_, value)| value.into_owned())
}

/// The credential a publisher presents: the stream name, or a `?token=` when the name is empty.
pub fn publish_key(app: &str, stream: &str) -> Result<String, PathError> {
    let (path, query) = split(app, stream)?;
    if path.contains('/') {
        return Err(PathError::NestedStreamKey);
    }
    if !path.is_empty() {
        return Ok(path);
    }
    query_param(&query, "token").filter(|t| !t.is_empty()).ok_or(PathError::NoStreamKey)
}

/// Which peer a player wants, and the token it presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlayTarget {
    pub room: RoomId,
    pub identity: PeerId,
    pub token: Option<String>,
}

pub fn play_target(app: &str, stream: &str) -> Result<PlayTarget, PathError> {
    let (path, query) = split(app, stream)?;
    let mut parts = path.split('/');
    let (Some(room), Some(identity), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(PathError::BadPlayPath(path.chars().take(128).collect()));
    };
    Ok(PlayTarget {
        room: RoomId::new(room)?,
        identity: PeerId::new(identity)?,
        token: query_param(&query, "token").filter(|t| !t.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_keys_come_from_the_stream_name_however_the_client_split_the_url() {
        assert_eq!(publish_key("live", "sk_abc").unwrap(), "sk_abc");
        assert_eq!(publish_key("live/", "sk_abc?foo=1").unwrap(), "sk_abc");
        assert_eq!(publish_key("live/sk_abc", "").unwrap(), "sk_abc");
        assert_eq!(publish_key("live", "?token=a.b.c").unwrap(), "a.b.c");
        assert_eq!(publish_key("live", ""), Err(PathError::NoStreamKey));
        assert_eq!(publish_key("live/a", "b"), Err(PathError::NestedStreamKey));
        assert!(matches!(publish_key("app", "x"), Err(PathError::WrongApp(_))));
        assert!(matches!(publish_key("livestream", "x"), Err(PathError::WrongApp(_))));
    }

    #[test]
    fn play_paths_name_room_identity_and_token() {
        let expected = PlayTarget {
            room: RoomId::new("stage").unwrap(),
            identity: PeerId::new("obs").unwrap(),
            token: Some("h.p.s".into()),
        };
        // ffmpeg's split of rtmp://host/live/stage/obs?token=h.p.s, and a client that keeps app = live.
        assert_eq!(play_target("live/stage", "obs?token=h.p.s").unwrap(), expected);
        assert_eq!(play_target("live", "stage/obs?token=h.p.s").unwrap(), expected);
        assert_eq!(play_target("live", "stage/obs").unwrap().token, None);
        assert!(matches!(play_target("live", "stage"), Err(PathError::BadPlayPath(_))));
        assert!(matches!(play_target("live", "a/b/c"), Err(PathError::BadPlayPath(_))));
        assert!(matches!(play_target("live", "st age/obs"), Err(PathError::BadId(_))));
        assert!(is_our_app("live") && is_our_app("live/stage") && !is_our_app("lives") && !is_our_app("x"));
    }
}
