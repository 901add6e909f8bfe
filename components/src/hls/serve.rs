//! `/hls/{room}/{id}/…`: an HLS output's playlist (`index.m3u8`, with LL-HLS blocking reload:
//! `_HLS_msn` and `_HLS_part` hold the request until that part exists), init segments
//! (`init-{v}.mp4`), segments (`seg-{n}.m4s`) and partial segments (`part-{n}-{k}.m4s`; the
//! preload hint's is held until it exists). A subscribe token for the room in `?token=` (carried
//! into every URI of the playlist), unless the output is `public`. Errors are JSON: 400 for a
//! bad query or a request too far ahead, 401/403 for the token, 404 for what is not (or no
//! longer) there, 503 when a held request times out.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use junction_auth::Authority;
use junction_core::RoomId;
use junction_transport_api::{ApiError, path_id};
use serde::Deserialize;

use super::{HlsOutput, HlsOutputs};

#[derive(Clone)]
struct Served {
    outputs: HlsOutputs,
    authority: Authority,
}

pub(crate) fn routes(outputs: HlsOutputs, authority: Authority) -> Router {
    Router::new().route("/hls/{room}/{id}/{file}", get(serve)).with_state(Served { outputs, authority })
}

#[derive(Debug, Deserialize)]
struct HlsQuery {
    token: Option<String>,
    #[serde(rename = "_HLS_msn")]
    msn: Option<u64>,
    #[serde(rename = "_HLS_part")]
    part: Option<usize>,
}

/// What a file name asks for.
enum Asked {
    Playlist,
    Init(u32),
    Segment(u64),
    Part(u64, usize),
}

fn parse(file: &str) -> Option<Asked> {
    if file == "index.m3u8" {
        return Some(Asked::Playlist);
    }
    if let Some(version) = file.strip_prefix("init-").and_then(|f| f.strip_suffix(".mp4")) {
        return version.parse().ok().map(Asked::Init);
    }
    if let Some(msn) = file.strip_prefix("seg-").and_then(|f| f.strip_suffix(".m4s")) {
        return msn.parse().ok().map(Asked::Segment);
    }
    let (msn, part) = file.strip_prefix("part-")?.strip_suffix(".m4s")?.split_once('-')?;
    Some(Asked::Part(msn.parse().ok()?, part.parse().ok()?))
}

/// How long a held request waits: three target durations.
fn patience(output: &HlsOutput) -> Duration {
    Duration::from_secs(output.muxer.lock().media.timing.target() * 3)
}

/// Waits until segment `msn` (part `part`, or whole) is out; false on timeout or end.
async fn wait_for(output: &HlsOutput, msn: u64, part: Option<usize>) -> bool {
    let mut changed = output.changed.subscribe();
    let deadline = tokio::time::Instant::now() + patience(output);
    loop {
        {
            let muxer = output.muxer.lock();
            if muxer.media.has(msn, part) {
                return true;
            }
            if muxer.media.ended {
                return false;
            }
        }
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => {}
            _ => return false,
        }
    }
}

fn media(body: Bytes, content_type: &'static str, cache: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

fn not_ready() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the part did not come in time")
}

fn gone(what: &str) -> ApiError {
    ApiError::not_found("not_found", format!("{what} is not in this output (any more)"))
}

async fn serve(
    State(served): State<Served>,
    Path((room, id, file)): Path<(String, String, String)>,
    query: Result<Query<HlsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let room: RoomId = path_id("room", &room)?;
    let output: Arc<HlsOutput> =
        served.outputs.get(&room, &id).ok_or_else(|| ApiError::not_found("output_not_found", "no such HLS output"))?;
    if !output.public {
        let token =
            query.token.as_deref().ok_or_else(|| ApiError::unauthorized("a subscribe token is required: ?token="))?;
        let credential = served.authority.resolve_token(token).map_err(|e| ApiError::unauthorized(e.to_string()))?;
        credential
            .for_room(&room)
            .and_then(|c| c.require_subscribe())
            .map_err(|e| ApiError::forbidden(e.to_string()))?;
    }
    let asked = parse(&file).ok_or_else(|| gone(&file))?;
    const LIVE: &str = "no-cache";
    const FIXED: &str = "public, max-age=60";
    match asked {
        Asked::Playlist => {
            if query.part.is_some() && query.msn.is_none() {
                return Err(ApiError::bad_request("invalid_query", "_HLS_part needs _HLS_msn"));
            }
            if let Some(msn) = query.msn {
                let next = output.muxer.lock().media.next_msn;
                // A request more than one segment past the one being written is refused.
                if msn > next {
                    return Err(ApiError::bad_request("too_far_ahead", format!("_HLS_msn {msn} is beyond {next}")));
                }
                if !wait_for(&output, msn, query.part).await && !output.muxer.lock().media.ended {
                    return Err(not_ready());
                }
            }
            let suffix = query.token.as_deref().map(|t| format!("?token={t}")).unwrap_or_default();
            let playlist = output.muxer.lock().media.playlist(&suffix);
            Ok(media(Bytes::from(playlist), "application/vnd.apple.mpegurl", LIVE))
        }
        Asked::Init(version) => {
            let init = output.muxer.lock().media.init(version).ok_or_else(|| gone(&file))?;
            Ok(media(init, "video/mp4", FIXED))
        }
        Asked::Segment(msn) => {
            // The parts are taken under the lock (reference counts), joined outside it: the
            // frame path waits on that lock.
            let parts = output.muxer.lock().media.segment(msn).filter(|s| s.complete).map(|s| s.part_data());
            Ok(media(parts.ok_or_else(|| gone(&file))?.concat().into(), "video/mp4", FIXED))
        }
        Asked::Part(msn, k) => {
            let hinted = {
                let muxer = output.muxer.lock();
                let current = muxer.media.segments.back();
                current.is_some_and(|s| s.msn == msn && s.parts.len() == k && !s.complete)
            };
            if hinted && !wait_for(&output, msn, Some(k)).await {
                return Err(not_ready());
            }
            let data = output.muxer.lock().media.segment(msn).and_then(|s| s.parts.get(k)).map(|p| p.data.clone());
            Ok(media(data.ok_or_else(|| gone(&file))?, "video/mp4", FIXED))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_parse() {
        assert!(matches!(parse("index.m3u8"), Some(Asked::Playlist)));
        assert!(matches!(parse("init-3.mp4"), Some(Asked::Init(3))));
        assert!(matches!(parse("seg-12.m4s"), Some(Asked::Segment(12))));
        assert!(matches!(parse("part-12-4.m4s"), Some(Asked::Part(12, 4))));
        for bad in ["seg-x.m4s", "part-1.m4s", "../etc/passwd", "init-.mp4", "index.m3u"] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
