//! One namespace a MoQ publisher announced, while it lasts: the namespace is registered in the
//! room's [`Hub`](crate::hub::Hub), each track a subscriber (or the ingest) asks for becomes one
//! upstream SUBSCRIBE to the publisher, and the media in it is ingested into the engine.

use std::sync::Arc;

use junction_core::RoomId;
use moq_transport::coding::TrackNamespace;
use moq_transport::serve::{Tracks, TracksRequest};
use moq_transport::session::{PublishedNamespace, Subscriber};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::MoqConfig;
use crate::hub::{Hub, Registration};
use crate::ingest::{self, IngestRequest};

/// Registers `announce`d namespace in `hub`; `Err` with the overlapping namespace when another
/// publisher already holds it.
pub fn register(
    hub: &Hub,
    room: &RoomId,
    namespace: &TrackNamespace,
) -> Result<(Registration, TracksRequest, moq_transport::serve::TracksReader), TrackNamespace> {
    let (_writer, requests, reader) = Tracks::new(namespace.clone()).produce();
    let registration = hub.register(room, namespace, reader.clone())?;
    Ok((registration, requests, reader))
}

/// Serves the namespace until the publisher withdraws it or the session ends. At most
/// `limits.max_tracks_per_namespace` tracks are subscribed upstream at once; a request for
/// another is closed with EXCESSIVE_LOAD.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut announce: PublishedNamespace,
    registration: Registration,
    mut requests: TracksRequest,
    tracks: moq_transport::serve::TracksReader,
    subscriber: Subscriber,
    label: String,
    ingest_requests: mpsc::Sender<IngestRequest>,
    limits: Arc<MoqConfig>,
) {
    let namespace = announce.namespace.clone();
    let mut upstream = JoinSet::new();
    let violations = ingest_requests.clone();
    let ingest = ingest::run(namespace.clone(), label, tracks, ingest_requests, limits.clone());
    tokio::pin!(ingest);
    let mut ingesting = true;
    loop {
        tokio::select! {
            closed = announce.closed() => {
                debug!(namespace = %namespace, "namespace withdrawn: {closed:?}");
                break;
            }
            Some(track) = requests.next() => {
                if upstream.len() >= limits.max_tracks_per_namespace {
                    warn!(namespace = %namespace, track = %track.name, "upstream track limit reached; request refused");
                    let code = moq_transport::message::RequestErrorCode::ExcessiveLoad as u64;
                    let _ = track.close(moq_transport::serve::ServeError::Closed(code));
                    continue;
                }
                let mut subscriber = subscriber.clone();
                upstream.spawn(async move {
                    let name = track.name.clone();
                    if let Err(err) = subscriber.subscribe(track).await {
                        debug!(track = %name, "upstream subscription ended: {err}");
                    }
                });
            }
            Some(_) = upstream.join_next(), if !upstream.is_empty() => {}
            result = &mut ingest, if ingesting => {
                ingesting = false;
                match result {
                    Ok(()) => debug!(namespace = %namespace, "ingest finished"),
                    // The publisher's session is ended with PROTOCOL_VIOLATION and the reason.
                    Err(err) if err.is_violation() => {
                        let _ = violations.send(IngestRequest::Violation(format!("namespace {namespace}: {err}"))).await;
                    }
                    Err(err) => info!(namespace = %namespace, "not ingested as media (relayed only): {err}"),
                }
            }
        }
    }
    drop(registration);
    let _ = &mut announce;
}
