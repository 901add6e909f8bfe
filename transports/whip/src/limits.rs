//! What WHIP and WHEP refuse before doing any work: bodies over `webrtc.max_sdp_bytes` (read no
//! further than the cap, answered `413` JSON), and new sessions from a source address that holds
//! `whip.max_resources_per_ip` already (`429` JSON). The source address is the TCP peer's, when
//! the server was started with connection info (behind a reverse proxy it is the proxy's).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use http_body_util::LengthLimitError;
use junction_transport_api::ApiError;
use parking_lot::Mutex;

/// Reads a request body of at most `limit` bytes.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|err| {
        if std::error::Error::source(&err).is_some_and(|source| source.is::<LengthLimitError>()) {
            tracing::info!(limit, "WHIP/WHEP body refused: larger than webrtc.max_sdp_bytes");
            too_large(limit)
        } else {
            ApiError::bad_request("bad_body", format!("the request body could not be read: {err}"))
        }
    })
}

pub(crate) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "sdp_too_large",
        format!("the body is larger than {limit} bytes (webrtc.max_sdp_bytes)"),
    )
}

/// The address a request came from, when the server records it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceIp(pub(crate) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for SourceIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(SourceIp(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip())))
    }
}

/// Live WHIP and WHEP sessions per source address.
#[derive(Clone, Default)]
pub(crate) struct PerSource {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One session's place in its source address's count, given back when dropped.
pub(crate) struct SourceSlot {
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerSource {
    /// Takes a place for a session from `ip`, unless it holds `limit` already (0: no limit).
    pub(crate) fn acquire(&self, ip: Option<IpAddr>, limit: usize) -> Result<Option<SourceSlot>, ApiError> {
        let Some(ip) = ip else { return Ok(None) };
        let mut counts = self.counts.lock();
        let count = counts.entry(ip).or_default();
        if limit > 0 && *count >= limit {
            tracing::info!(%ip, limit, "WHIP/WHEP session refused: too many from one address");
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_sessions",
                format!(
                    "{ip} holds {limit} WHIP/WHEP sessions already, the most one address may (whip.max_resources_per_ip)"
                ),
            ));
        }
        *count += 1;
        Ok(Some(SourceSlot { counts: self.counts.clone(), ip }))
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_per_address_are_capped_and_given_back() {
        let per_source = PerSource::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let first = per_source.acquire(Some(ip), 2).unwrap();
        let second = per_source.acquire(Some(ip), 2).unwrap();
        let refused = per_source.acquire(Some(ip), 2).err().unwrap();
        assert_eq!((refused.status, refused.code), (StatusCode::TOO_MANY_REQUESTS, "too_many_sessions"));
        assert!(per_source.acquire(Some("192.0.2.8".parse().unwrap()), 2).unwrap().is_some(), "another address");
        drop(first);
        assert!(per_source.acquire(Some(ip), 2).is_ok(), "a place was given back");
        drop(second);
        assert!(per_source.acquire(None, 1).unwrap().is_none(), "no address known: no limit");
        assert!(per_source.acquire(Some(ip), 0).is_ok(), "0 means no limit");
    }

    #[tokio::test]
    async fn bodies_over_the_cap_are_refused_with_413() {
        let err = read_body(Body::from(vec![b'v'; 101]), 100).await.err().unwrap();
        assert_eq!((err.status, err.code), (StatusCode::PAYLOAD_TOO_LARGE, "sdp_too_large"));
        assert_eq!(read_body(Body::from("v=0"), 100).await.unwrap(), "v=0");
    }
}
