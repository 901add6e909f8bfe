//! WHIP (RFC 9725) and WHEP signalling as a client: `POST` the SDP offer with a bearer token,
//! get `201 Created` with the answer and the session's `Location`; `DELETE` that to leave. Works
//! against any server that speaks the RFCs, not only Junction.

use anyhow::{Context, bail};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};

/// The HTTP client WHIP and WHEP requests go out on. It names itself, as browsers do: some
/// servers refuse a request without a `User-Agent` (atm0s-media-server answers 400).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent(concat!("junction-bench/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

pub struct Session {
    /// The session resource (absolute URL).
    pub location: Option<String>,
    pub answer: String,
}

/// Posts `offer` to a WHIP or WHEP endpoint.
pub async fn post_offer(http: &reqwest::Client, endpoint: &str, token: &str, offer: String) -> anyhow::Result<Session> {
    let response = http
        .post(endpoint)
        .header(CONTENT_TYPE, "application/sdp")
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(offer)
        .send()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| reqwest::Url::parse(endpoint).ok()?.join(l).ok())
        .map(String::from);
    let body = response.text().await.unwrap_or_default();
    if status != reqwest::StatusCode::CREATED {
        bail!("POST {endpoint}: {} {}", status.as_u16(), body.chars().take(300).collect::<String>());
    }
    Ok(Session { location, answer: body })
}

/// Ends a session; errors are not interesting at the end of a run.
pub async fn delete(http: &reqwest::Client, location: &str, token: &str) {
    let _ = http.delete(location).header(AUTHORIZATION, format!("Bearer {token}")).send().await;
}
