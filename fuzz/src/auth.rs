//! Credentials (auth/): the bearer a client presents — `?token=` on `/ws`, `Authorization:
//! Bearer` on WHIP/WHEP, the RTMP stream key or `?token=` — through `Authority::resolve` and
//! `resolve_token`: JWT header and claims parsing, HS256 signature, issuer, expiry, ids, grants,
//! or else an ingress stream key looked up by kind.
//!
//! Input: one mode byte, then parts separated by [`crate::SEPARATOR`].
//! - mode 0: the bearer as sent (`$key` stands for a real RTMP stream key).
//! - mode 1: a JWT header and claims (JSON), signed by the harness with the server's key so the
//!   checks after the signature are reached. `$now`/`$exp` stand for now and an hour later.
//! - mode 2: the same, signed with another key: it must be refused.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use junction_auth::{Authority, IngressKind};
use junction_core::{PeerId, RoomId};
use sha2::Sha256;

const KEY: &str = "fuzzing-api-key-0123456789abcdef";

fn sign(key: &str, header: &[u8], claims: &[u8]) -> String {
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.as_bytes()) else { unreachable!("HMAC takes any key") };
    mac.update(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let authority = Authority::new(KEY);
    let (Ok(room), Ok(identity)) = (RoomId::new("lobby"), PeerId::new("obs")) else { return };
    let ingress = authority.ingress().create(IngressKind::Rtmp, room, identity, None);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let fill = |part: &[u8]| {
        let part = crate::substitute(part, b"$key", ingress.stream_key.as_bytes());
        let part = crate::substitute(&part, b"$now", now.to_string().as_bytes());
        crate::substitute(&part, b"$exp", (now + 3600).to_string().as_bytes())
    };
    let mut parts = crate::records(rest);
    let first = fill(parts.next().unwrap_or_default());
    let bearer = match mode % 3 {
        0 => String::from_utf8_lossy(&first).into_owned(),
        signed => {
            let claims = fill(parts.next().unwrap_or_default());
            let key = if signed == 1 { KEY } else { "another-key-entirely-0123456789" };
            sign(key, &first, &claims)
        }
    };
    let results = [
        authority.resolve(&bearer, IngressKind::Rtmp),
        authority.resolve(&bearer, IngressKind::Whip),
        authority.resolve_token(&bearer),
    ];
    for result in results {
        let Ok(credential) = result else { continue };
        assert!(mode % 3 != 2, "a token signed with another key was accepted: {bearer}");
        let _ = credential.clone().for_room(&ingress.room);
        let _ = credential.clone().require_publish();
        let _ = credential.require_subscribe();
    }
}
