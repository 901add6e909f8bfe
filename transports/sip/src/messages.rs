//! What the SIP stack task, the call tasks and the REST API tell each other: the stack's inbox
//! ([`Command`], with dial-outs as [`DialRequest`]s), a call task's inbox ([`ToCall`]), and why a
//! call ended ([`CallEnd`]). In a module of their own so that the stack and the calls depend on
//! these messages rather than on each other.

use junction_core::{PeerId, RoomId};
use tokio::sync::oneshot;

use crate::admission::Trunk;
use crate::calls::CallRecord;
use crate::media::ports::PortError;
use crate::message::Peer;
use crate::sdp::Negotiated;
use crate::ua::CallKey;

/// A call to place.
#[derive(Debug, Clone)]
pub struct DialRequest {
    pub room: RoomId,
    pub target: rsip::Uri,
    pub to: Peer,
    /// The user part of our From URI.
    pub from_user: String,
    /// The phone's identity in the room.
    pub identity: PeerId,
    pub trunk: Option<Trunk>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    #[error("{max} calls are already up")]
    TooManyCalls { max: usize },
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error("room {room} does not exist")]
    RoomNotFound { room: RoomId },
    #[error("{identity} is already in room {room}")]
    IdentityTaken { room: RoomId, identity: PeerId },
    #[error("the SIP stack is stopping")]
    Stopped,
}

/// Where a transfer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// Another room of this server: the call moves there (no SIP message needed).
    Room(RoomId),
    /// Someone the phone should call instead (a REFER to the phone; the call ends once the
    /// phone's new call is up).
    Uri(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("no call {id} is up")]
    NoCall { id: String },
    #[error("{why}")]
    Refused { status: u16, why: String },
}

/// What call tasks and the REST API ask of the stack.
pub enum Command {
    Dial {
        request: Box<DialRequest>,
        reply: oneshot::Sender<Result<CallRecord, DialError>>,
    },
    /// Hang up a call by id; replies whether the call existed.
    HangUp {
        id: String,
        reply: oneshot::Sender<bool>,
    },
    /// A call task ended (for `reason`).
    CallEnded {
        key: CallKey,
        reason: CallEnd,
    },
    /// A call on hold wants to know the phone is still there.
    Ping {
        key: CallKey,
    },
    /// Transfer a call (the API's): into another room, or — REFER to the phone — to a SIP URI.
    Transfer {
        id: String,
        to: TransferTarget,
        reply: oneshot::Sender<Result<CallRecord, TransferError>>,
    },
    /// Send DTMF digits to a phone (the API's, or the room's `sip.dtmf` data): replies
    /// whether the call exists and is up.
    Digits {
        id: String,
        digits: String,
        reply: oneshot::Sender<bool>,
    },
    /// A trunk's registrar name resolved (or not).
    Resolved {
        trunk: Box<Trunk>,
        addr: Option<std::net::SocketAddr>,
    },
    /// A call task wants digits sent as SIP INFO (the phone did not offer RFC 4733).
    InfoDigit {
        key: CallKey,
        digit: char,
    },
    /// Tests only: panic inside the stack, as a bug would.
    #[cfg(test)]
    Crash,
}

/// What the stack tells a call task.
#[derive(Debug)]
pub enum ToCall {
    /// The ACK of our answer came.
    Confirmed,
    /// A re-INVITE changed the media (hold, resume, a new address).
    Renegotiated(Negotiated),
    /// A DTMF digit from a SIP INFO.
    Digit(char),
    /// The phone answered an in-dialog OPTIONS.
    Alive,
    /// The call is over on the SIP side; leave.
    Stop(CallEnd),
    /// The call was transferred to another room: leave the current one for this endpoint's
    /// (already joined).
    Move(Box<MovedEndpoint>),
    /// Send these DTMF digits to the phone (RFC 4733 when negotiated, else the stack's INFO).
    Digits(String),
}

/// The endpoint a transferred call takes over (opaque in logs).
pub struct MovedEndpoint(pub junction_engine::Endpoint);

impl std::fmt::Debug for MovedEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MovedEndpoint({})", self.0.rpc.room())
    }
}

/// Why a call ended, as recorded in its call record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEnd {
    RemoteHangup,
    ApiHangup,
    /// The far end took a transfer we asked for (REFER) and the new call is up.
    Transferred,
    Cancelled,
    PinFailed,
    PinTimeout,
    RtpTimeout,
    Unreachable,
    NoAck,
    /// RFC 4028: the session timer ran out without a refresh.
    SessionExpired,
    RoomClosed(String),
    Failed(String),
    Shutdown,
    /// The call's task panicked (a bug): the call was ended rather than left hanging.
    Panicked,
    /// The SIP stack panicked twice in a row and reset its state, ending every call.
    StackReset,
}

impl CallEnd {
    pub fn describe(&self) -> String {
        match self {
            CallEnd::RemoteHangup => "remote_hangup".into(),
            CallEnd::ApiHangup => "api_hangup".into(),
            CallEnd::Transferred => "transferred".into(),
            CallEnd::Cancelled => "cancelled".into(),
            CallEnd::PinFailed => "pin_failed".into(),
            CallEnd::PinTimeout => "pin_timeout".into(),
            CallEnd::RtpTimeout => "rtp_timeout".into(),
            CallEnd::Unreachable => "unreachable".into(),
            CallEnd::NoAck => "no_ack".into(),
            CallEnd::SessionExpired => "session_expired".into(),
            CallEnd::RoomClosed(why) => format!("room_closed: {why}"),
            CallEnd::Failed(why) => format!("error: {why}"),
            CallEnd::Shutdown => "server_shutdown".into(),
            CallEnd::Panicked => "internal_error".into(),
            CallEnd::StackReset => "internal_error: the SIP stack was reset".into(),
        }
    }
}
