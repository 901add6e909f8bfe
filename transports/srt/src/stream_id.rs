//! The SRT stream id an encoder sends in its handshake, read as a stream key: either the key
//! itself (`streamid=sk_…`, what Junction's ingress URL carries) or the SRT access-control
//! syntax (`#!::r=sk_…,m=publish`) that some encoders and gateways build, where `r` is the key
//! and `m`, if present, must ask to publish.

/// Why a stream id names no stream key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    #[error("the handshake carries no stream id (the ingress URL has ?streamid=<stream key>)")]
    Missing,
    #[error("the stream id asks for mode {0:?}; SRT here only takes publishers (m=publish)")]
    NotPublish(String),
    #[error("the stream id's access-control syntax names no resource (r=<stream key>)")]
    NoResource,
}

/// The stream key in `stream_id`.
pub fn stream_key(stream_id: Option<&str>) -> Result<&str, StreamIdError> {
    let id = stream_id.map(str::trim).filter(|id| !id.is_empty()).ok_or(StreamIdError::Missing)?;
    let Some(pairs) = id.strip_prefix("#!::") else { return Ok(id) };
    let mut resource = None;
    for pair in pairs.split(',') {
        let Some((key, value)) = pair.split_once('=') else { continue };
        match key.trim() {
            "r" => resource = Some(value.trim()),
            "m" if value.trim() != "publish" => return Err(StreamIdError::NotPublish(value.trim().to_owned())),
            _ => {}
        }
    }
    resource.filter(|r| !r.is_empty()).ok_or(StreamIdError::NoResource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_and_the_access_control_syntax() {
        assert_eq!(stream_key(Some("sk_abc")), Ok("sk_abc"));
        assert_eq!(stream_key(Some("#!::r=sk_abc,m=publish")), Ok("sk_abc"));
        assert_eq!(stream_key(Some("#!::u=obs,r=sk_abc")), Ok("sk_abc"));
        assert_eq!(stream_key(Some("#!::r=sk_abc,m=request")), Err(StreamIdError::NotPublish("request".into())));
        assert_eq!(stream_key(Some("#!::m=publish")), Err(StreamIdError::NoResource));
        assert_eq!(stream_key(Some("  ")), Err(StreamIdError::Missing));
        assert_eq!(stream_key(None), Err(StreamIdError::Missing));
    }
}
