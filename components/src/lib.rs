//! junction-components: things the server runs inside a room that are not a person's client —
//! the `file` source ([`file`]), the `rtsp` camera ([`rtsp`]), the `recording` output
//! ([`recording`]) and the `hls` output ([`hls`], served at `/hls/…`) — behind the components
//! REST API
//! (`/v1/rooms/{room}/components`, [`api`]). Each component is a task with a state (`starting →
//! running → stopped | failed`, with a `reason`), announced on the engine's event stream
//! (`component_started`, `_finished`, `_failed`, which webhooks deliver) and kept in the state
//! store while it runs, so a restarted server starts it again.

mod api;
pub mod file;
mod grid;
pub mod hls;
mod mix_audio;
pub mod recording;
mod registry;
pub mod rtsp;
mod timeline;
mod wall_clock;

use junction_transport_api::{Service, Started, TransportContext};

pub use recording::{RecordingConfig, Recordings, S3Config};
pub use registry::{ComponentError, Components};

/// How a source ended by itself (a failure is an `Err` with the reason).
pub enum Ended {
    /// The end of its media (a file without `loop`).
    Finished,
    /// Deleted, or the room ended the peer's session (room closed, peer kicked): the reason.
    Closed(String),
}

/// Starts the components service: restarts the components the state store kept, and returns
/// the `/v1` routes. Recordings go where `recordings` says (`[recording]`, resolved); at most
/// `max_grids` grid compositions run at once (`video.max_grids`).
pub async fn start(ctx: &TransportContext, recordings: Recordings, max_grids: usize) -> Started {
    let components = Components::new(
        ctx.engine.clone(),
        grid::Grids::new(ctx.mixer.clone(), max_grids),
        ctx.store.clone(),
        ctx.shutdown.clone(),
        recordings,
        ctx.public_url.clone(),
    );
    components.restore().await;
    Started {
        services: vec![Service {
            name: "components",
            url: format!("{}/v1/rooms/{{room}}/components", ctx.public_url),
            about: "room components: files played into rooms, RTSP cameras pulled into them, recordings, HLS",
        }],
        public: hls::routes(components.hls(), ctx.authority.clone()),
        api: api::routes(components),
        ..Started::default()
    }
}
