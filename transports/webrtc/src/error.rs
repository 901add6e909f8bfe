//! What can go wrong when setting up or steering a WebRTC session, with the values involved.
//! Signalling surfaces (WHIP/WHEP, the WebSocket) map these to their own errors.

/// Errors of the session API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The offer is not SDP.
    #[error("the offer is not valid SDP: {0}")]
    BadSdp(String),
    /// Valid SDP that cannot be answered (no fingerprint, no ICE credentials, ...).
    #[error("the offer cannot be answered: {0}")]
    OfferRefused(String),
    /// No m-line of the offer has a codec Junction can carry.
    #[error(
        "no m-line of the offer has a codec this server supports (offered: {offered}; supported: opus, pcmu, pcma, vp8, vp9, h264 with packetization-mode=1, av1)"
    )]
    NoCodec { offered: String },
    /// A trickled ICE candidate line that does not parse.
    #[error("bad ICE candidate {candidate:?}: {reason}")]
    BadCandidate { candidate: String, reason: String },
    /// An answer arrived, but the session has no offer out.
    #[error("there is no offer to answer")]
    NoOfferPending,
    /// An answer to the session's offer that cannot be applied.
    #[error("the answer cannot be applied: {0}")]
    AnswerRefused(String),
    /// An SDP over `webrtc.max_sdp_bytes`.
    #[error("the SDP is {bytes} bytes; the limit is {limit} (webrtc.max_sdp_bytes)")]
    SdpTooLarge { bytes: usize, limit: usize },
    /// An SDP with more m-lines than `webrtc.max_media_lines`.
    #[error("the SDP has {count} m-lines; the limit is {limit} (webrtc.max_media_lines)")]
    TooManyMediaLines { count: usize, limit: usize },
    /// More remote candidates than `webrtc.max_remote_candidates` for one ICE session.
    #[error("{count} remote ICE candidates; the limit is {limit} per ICE session (webrtc.max_remote_candidates)")]
    TooManyCandidates { count: usize, limit: usize },
    /// The session is over.
    #[error("the session has ended")]
    Closed,
}

/// Errors starting the media plane.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind the WebRTC UDP socket on {addr} (webrtc.udp_listen): {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("cannot listen for ICE-TCP on {addr} (webrtc.tcp_listen): {source}")]
    BindTcp { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// The `a=rtpmap` encoding names of an SDP, for error messages (`opus, H265, ...`).
pub(crate) fn offered_codecs(sdp: &str) -> String {
    let mut names: Vec<&str> = sdp
        .lines()
        .filter_map(|line| line.trim().strip_prefix("a=rtpmap:"))
        .filter_map(|rest| rest.split_whitespace().nth(1))
        .filter_map(|encoding| encoding.split('/').next())
        .filter(|name| {
            !matches!(
                name.to_ascii_lowercase().as_str(),
                "rtx" | "red" | "ulpfec" | "flexfec-03" | "telephone-event" | "cn"
            )
        })
        .collect();
    names.dedup();
    if names.is_empty() { "none".to_owned() } else { names.join(", ") }
}

#[cfg(test)]
mod tests {
    #[test]
    fn offered_codecs_are_listed_without_repair_formats() {
        let sdp = "m=video 9 UDP/TLS/RTP/SAVPF 96 97 98\r\na=rtpmap:96 H265/90000\r\na=rtpmap:97 rtx/90000\r\na=rtpmap:98 H265/90000\r\n";
        assert_eq!(super::offered_codecs(sdp), "H265");
        assert_eq!(super::offered_codecs("v=0"), "none");
    }
}
