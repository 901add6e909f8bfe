//! The demo pages: `/whip.html` publishes the browser's camera and microphone over WHIP,
//! `/whep.html?room=` plays a room over WHEP, both with `/webrtc-pages.js` (what they share).
//! Plain HTML and JavaScript, no build step.

use axum::Router;
use axum::http::header;
use axum::response::Html;
use axum::routing::get;

use crate::WhipState;

pub(crate) fn routes() -> Router<WhipState> {
    Router::new()
        .route("/whip.html", get(|| async { Html(include_str!("pages/whip.html")) }))
        .route("/whep.html", get(|| async { Html(include_str!("pages/whep.html")) }))
        .route(
            "/webrtc-pages.js",
            get(|| async {
                ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], include_str!("pages/common.js"))
            }),
        )
}
