//! Admission of a MoQ session: the connect path names the room (`/<room>`), the client JWT
//! comes from `?jwt=` in the connect URL or from an AUTHORIZATION TOKEN option in SETUP, and
//! `Authority::resolve_token` turns it into a credential for that room. Pure functions over the
//! path and SETUP options; the connection task calls them after SETUP.

use junction_auth::{AuthError, Authority, Credential};
use junction_core::{Codec, RoomId};
use moq_transport::coding::KeyValuePairs;

use crate::codecs;
use crate::error::AdmissionError;

/// What the connect URL says: the room, the token if it carried one, and the codecs the
/// subscriber wants its video and audio in, if it named them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectTarget {
    pub room: RoomId,
    pub url_token: Option<String>,
    pub video: Option<Codec>,
    pub audio: Option<Codec>,
}

/// Parses `/<room>[?jwt=<token>][&video=h264|vp8|vp9|av1][&audio=aac|opus]` — the WebTransport
/// CONNECT path, or the raw-QUIC SETUP PATH option.
pub fn parse_connect_path(path_and_query: Option<&str>) -> Result<ConnectTarget, AdmissionError> {
    let raw = path_and_query.unwrap_or("");
    let (path, query) = match raw.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (raw, None),
    };
    let trimmed = path.trim_end_matches('/');
    let Some(room) = trimmed.strip_prefix('/') else {
        return if trimmed.is_empty() {
            Err(AdmissionError::NoRoom)
        } else {
            Err(AdmissionError::BadPath { path: shorten(path) })
        };
    };
    if room.is_empty() {
        return Err(AdmissionError::NoRoom);
    }
    if room.contains('/') || room.contains('%') {
        return Err(AdmissionError::BadPath { path: shorten(path) });
    }
    let room = RoomId::new(room).map_err(AdmissionError::BadRoom)?;
    let param = |name: &str| {
        query.and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.into_owned())
        })
    };
    let codec = |key: &'static str, carried: &[Codec], allowed: &'static str| {
        param(key)
            .map(|value| {
                Codec::from_name(&value).filter(|codec| carried.contains(codec)).ok_or(AdmissionError::BadCodec {
                    key,
                    value: shorten(&value),
                    allowed,
                })
            })
            .transpose()
    };
    let video = codec("video", &codecs::CARRIED_VIDEO, "h264, vp8, vp9, av1")?;
    let audio = codec("audio", &codecs::CARRIED_AUDIO, "opus, aac")?;
    Ok(ConnectTarget { room, url_token: param("jwt"), video, audio })
}

fn shorten(path: &str) -> String {
    path.chars().take(64).collect()
}

/// The AUTHORIZATION TOKEN values a client put in SETUP, as text (a Junction token is a JWT;
/// the token type is not interpreted).
pub fn setup_tokens(params: &KeyValuePairs) -> Result<Vec<String>, AdmissionError> {
    let tokens =
        moq_transport::setup::decode_setup_tokens(params).map_err(|err| AdmissionError::SetupToken(err.to_string()))?;
    tokens
        .iter()
        .map(|token| {
            String::from_utf8(token.value.to_vec())
                .map_err(|_| AdmissionError::SetupToken("the token value is not UTF-8 text".into()))
        })
        .collect()
}

/// Resolves the session's credential: the URL token wins over SETUP tokens; among SETUP tokens
/// the first that verifies is used. The credential must be for the room the path names.
pub fn admit(
    authority: &Authority,
    target: &ConnectTarget,
    setup_tokens: &[String],
) -> Result<Credential, AdmissionError> {
    let candidates: Vec<&str> = match &target.url_token {
        Some(token) => vec![token.as_str()],
        None => setup_tokens.iter().map(String::as_str).collect(),
    };
    let mut first_error = None;
    for token in candidates {
        match authority.resolve_token(token).and_then(|credential| credential.for_room(&target.room)) {
            Ok(credential) => return Ok(credential),
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    Err(match first_error {
        Some(AuthError::Missing) | None => AdmissionError::MissingToken,
        Some(err) => AdmissionError::Auth(err),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use junction_auth::TokenRequest;
    use junction_core::{Grants, PeerId};

    use super::*;

    fn token(authority: &Authority, room: &str) -> String {
        authority
            .mint(&TokenRequest {
                room: RoomId::new(room).unwrap(),
                identity: PeerId::new("alice").unwrap(),
                name: None,
                metadata: serde_json::Value::Null,
                grants: Grants::SUBSCRIBE_ONLY,
                ttl: Duration::from_secs(60),
            })
            .unwrap()
    }

    #[test]
    fn paths_name_one_room_and_may_carry_the_token() {
        let target = parse_connect_path(Some("/lobby?jwt=abc.def.ghi&x=1")).unwrap();
        assert_eq!(target.room.as_str(), "lobby");
        assert_eq!(target.url_token.as_deref(), Some("abc.def.ghi"));
        assert_eq!(parse_connect_path(Some("/lobby/")).unwrap().url_token, None);
        assert_eq!(parse_connect_path(None), Err(AdmissionError::NoRoom));
        assert_eq!(parse_connect_path(Some("/")), Err(AdmissionError::NoRoom));
        assert!(matches!(parse_connect_path(Some("/a/b")), Err(AdmissionError::BadPath { .. })));
        assert!(matches!(parse_connect_path(Some("/a%2Fb")), Err(AdmissionError::BadPath { .. })));
        assert!(matches!(parse_connect_path(Some("/bad room")), Err(AdmissionError::BadRoom(_))));
        let picky = parse_connect_path(Some("/lobby?jwt=t&video=H264&audio=aac")).unwrap();
        assert_eq!((picky.video, picky.audio), (Some(Codec::H264), Some(Codec::Aac)));
        assert!(matches!(
            parse_connect_path(Some("/lobby?video=pcmu")),
            Err(AdmissionError::BadCodec { key: "video", .. })
        ));
        assert!(matches!(
            parse_connect_path(Some("/lobby?audio=h264")),
            Err(AdmissionError::BadCodec { key: "audio", .. })
        ));
    }

    #[test]
    fn tokens_come_from_the_url_or_setup_and_must_match_the_room() {
        let authority = Authority::new("moq-admission-test-key-0123456789");
        let good = token(&authority, "lobby");
        let target = ConnectTarget { room: RoomId::new("lobby").unwrap(), url_token: None, video: None, audio: None };

        let credential = admit(&authority, &target, &["garbage".into(), good.clone()]).unwrap();
        assert_eq!(credential.identity.as_str(), "alice");
        assert!(!credential.grants.publish);

        assert_eq!(admit(&authority, &target, &[]), Err(AdmissionError::MissingToken));
        let wrong_room = token(&authority, "other");
        let err = admit(&authority, &target, &[wrong_room]).unwrap_err();
        assert!(matches!(err, AdmissionError::Auth(AuthError::WrongRoom { .. })), "{err:?}");

        let forged = token(&Authority::new("some-other-key-0123456789abcdef"), "lobby");
        let with_url = ConnectTarget { url_token: Some(forged), ..target.clone() };
        // The URL token wins even when SETUP carries a good one.
        assert_eq!(admit(&authority, &with_url, &[good]), Err(AdmissionError::Auth(AuthError::BadSignature)));
    }
}
