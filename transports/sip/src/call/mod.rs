//! One call's task. It owns everything the call holds — its RTP/RTCP sockets, its endpoint in
//! the room (so the phone leaves the room however the task ends), its published audio track,
//! its place in the room's mix — and moves the audio: the phone's RTP up into the room, the
//! room's minus-one (or a PIN prompt) down to the phone every 20 ms. It also collects the PIN,
//! and notices a phone gone silent (RTP timeout) or a room that closed. The SIP side (BYE,
//! re-INVITE, INFO) stays with the stack, which talks to the task through [`ToCall`].
//! On an SRTP call every datagram passes through the call's [`SrtpSession`] on its way in
//! and out.

pub mod audio;
pub mod prompt;

use std::collections::VecDeque;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_audio::mixer::{FRAME_SAMPLES, MixListener, Mixer};
use junction_core::{DataMessage, EndpointEvent, PeerId, PublishRequest, RoomId, TrackSource, TransportKind};
use junction_engine::supervise;
use junction_engine::{DuplicatePolicy, Endpoint, EndpointMedia, EndpointRpc, Engine, JoinRequest, TrackPublisher};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use self::audio::{Downlink, Uplink};
use self::prompt::PromptQueue;
use crate::calls::{CallBook, CallState};
use crate::media::dtmf::EventReceiver;
use crate::media::pin::{PinEntry, PinProgress};
use crate::media::ports::RtpSockets;
use crate::media::rtp::{self, Received};
use crate::media::srtp::SrtpSession;
use crate::media::validate::{self, Invalid};
use crate::sdp::{Direction, Negotiated};
use crate::ua::CallKey;

use crate::messages::Command;
pub use crate::messages::{CallEnd, ToCall};

/// Longest time between two checks that a phone on hold (no RTP expected) is still there.
const MAX_HOLD_PING_INTERVAL: Duration = Duration::from_secs(10);
/// RTP comfort noise (RFC 3389): proves the phone is alive like audio does.
const COMFORT_NOISE_PT: u8 = 13;
/// Mix frames kept waiting for the 20 ms tick.
const MIX_QUEUE: usize = 4;

/// Limits a call task applies.
#[derive(Debug, Clone, Copy)]
pub struct CallSettings {
    pub rtp_timeout: Duration,
    pub pin_attempts: u32,
    pub pin_timeout: Duration,
}

/// Where the call stands with the room.
pub enum Entry {
    /// Already joined (the stack joined before answering, to refuse with the right code).
    Joined(Endpoint),
    /// Joins once the caller types this PIN.
    Pin(String),
}

/// Everything a call task starts with.
pub struct CallSetup {
    pub id: String,
    pub key: CallKey,
    pub room: RoomId,
    pub identity: PeerId,
    pub name: Option<String>,
    pub metadata: serde_json::Value,
    pub sockets: RtpSockets,
    pub media: Negotiated,
    pub entry: Entry,
    pub services: CallServices,
    pub inbox: mpsc::Receiver<ToCall>,
}

/// What every call's task gets from the stack: the engine and mixer, the call records, the
/// limits, and the way back to the stack.
#[derive(Clone)]
pub struct CallServices {
    pub engine: Engine,
    pub mixer: Mixer,
    pub book: CallBook,
    pub settings: CallSettings,
    pub to_stack: mpsc::Sender<Command>,
}

struct InRoom {
    rpc: EndpointRpc,
    /// Kept so the session's media half lives as long as the call (nothing is subscribed:
    /// the phone hears the room through the mixer).
    _media: EndpointMedia,
    track: TrackPublisher,
    uplink: Uplink,
    listener: MixListener,
    mix: VecDeque<Vec<f32>>,
}

enum Phase {
    Pin { entry: PinEntry, deadline: Instant },
    Room(Box<InRoom>),
}

struct CallTask {
    id: String,
    key: CallKey,
    room: RoomId,
    identity: PeerId,
    name: Option<String>,
    metadata: serde_json::Value,
    _sockets: RtpSockets,
    rtp: UdpSocket,
    rtcp: UdpSocket,
    media: Negotiated,
    srtp: Option<SrtpSession>,
    engine: Engine,
    mixer: Mixer,
    book: CallBook,
    settings: CallSettings,
    to_stack: mpsc::Sender<Command>,
    inbox: mpsc::Receiver<ToCall>,
    downlink: Downlink,
    prompt: PromptQueue,
    dtmf: EventReceiver,
    last_heard: Instant,
    next_ping: Instant,
    /// Whether an invalid datagram was logged already (one line per call; the rest are counted).
    invalid_logged: bool,
}

/// Starts a call's task. Returns an error (and the call should be refused) when its sockets
/// or codecs cannot be set up.
pub fn spawn(setup: CallSetup) -> Result<(), String> {
    let rtp = setup.sockets.rtp.try_clone().and_then(UdpSocket::from_std).map_err(|e| format!("RTP socket: {e}"))?;
    let rtcp = setup.sockets.rtcp.try_clone().and_then(UdpSocket::from_std).map_err(|e| format!("RTCP socket: {e}"))?;
    let downlink = Downlink::new(&setup.media).map_err(|e| e.to_string())?;
    let srtp = setup.media.srtp.as_ref().map(|s| SrtpSession::new(&s.keys)).transpose().map_err(|e| e.to_string())?;
    let now = Instant::now();
    let task = CallTask {
        id: setup.id,
        key: setup.key,
        room: setup.room,
        identity: setup.identity,
        name: setup.name,
        metadata: setup.metadata,
        _sockets: setup.sockets,
        rtp,
        rtcp,
        media: setup.media,
        srtp,
        engine: setup.services.engine,
        mixer: setup.services.mixer,
        book: setup.services.book,
        settings: setup.services.settings,
        to_stack: setup.services.to_stack,
        inbox: setup.inbox,
        downlink,
        prompt: PromptQueue::default(),
        dtmf: EventReceiver::default(),
        last_heard: now,
        next_ping: now,
        invalid_logged: false,
    };
    let span = info_span!("sip_call", room = %task.room, peer = %task.identity, call = %task.id);
    let to_stack = task.to_stack.clone();
    tokio::spawn(supervised(setup.key, to_stack, task.run(setup.entry)).instrument(span));
    Ok(())
}

/// Runs a call's task under [`supervise::contain`]. When it panics, everything it owned — its
/// RTP sockets (their ports go back to the range), its endpoint (the phone leaves the room) —
/// has been dropped by the time this learns of it; the stack is then told, and hangs up with
/// BYE, records the call as ended (`internal_error`) and frees its slot.
async fn supervised(key: CallKey, to_stack: mpsc::Sender<Command>, task: impl Future<Output = ()>) {
    if supervise::contain("sip", task).await.is_err() {
        let _ = to_stack.send(Command::CallEnded { key, reason: CallEnd::Panicked }).await;
    }
}

/// What the room has for a call in it.
enum FromRoom {
    /// A room event; `None` once the session is over.
    Event(Option<Box<EndpointEvent>>),
    /// A mix frame; `None` once the room's mix ended.
    Mix(Option<Vec<f32>>),
}

/// The next thing from the room; never resolves during PIN entry.
async fn from_room(phase: &mut Phase) -> FromRoom {
    match phase {
        Phase::Room(room) => tokio::select! {
            event = room.rpc.next_event() => FromRoom::Event(event.map(Box::new)),
            frame = room.listener.recv() => FromRoom::Mix(frame),
        },
        Phase::Pin { .. } => std::future::pending().await,
    }
}

impl CallTask {
    async fn run(mut self, entry: Entry) {
        let started = match entry {
            Entry::Joined(endpoint) => self.enter_room(endpoint).map(|room| Phase::Room(Box::new(room))),
            Entry::Pin(pin) => {
                self.prompt.play(prompt::prompt());
                let deadline = Instant::now() + self.settings.pin_timeout;
                Ok(Phase::Pin { entry: PinEntry::new(pin, self.settings.pin_attempts), deadline })
            }
        };
        let end = match started {
            Ok(mut phase) => self.drive(&mut phase).await,
            Err(end) => end,
        };
        info!(room = %self.room, peer = %self.identity, call = %self.id, reason = %end.describe(), "call task ended");
        // The stack hangs up on the SIP side (if it has not already) and records the end.
        let _ = self.to_stack.send(Command::CallEnded { key: self.key, reason: end }).await;
    }

    fn enter_room(&mut self, endpoint: Endpoint) -> Result<InRoom, CallEnd> {
        let (rpc, media) = endpoint.split();
        let uplink = Uplink::new(&self.media);
        let request = PublishRequest::new("phone", uplink.codec())
            .with_source(TrackSource::Microphone)
            .with_params(uplink.params.clone());
        let track = rpc.publish(request).map_err(|e| CallEnd::Failed(e.to_string()))?;
        let listener = self.mixer.listen(&self.room, &self.identity).map_err(|e| CallEnd::Failed(e.to_string()))?;
        info!(room = %self.room, peer = %self.identity, call = %self.id, track = %track.id(), codec = %self.media.codec, "phone in the room");
        Ok(InRoom { rpc, _media: media, track, uplink, listener, mix: VecDeque::new() })
    }

    /// Joins the room after the right PIN.
    fn join(&mut self) -> Result<InRoom, CallEnd> {
        let mut request = JoinRequest::new(self.room.clone(), self.identity.clone(), TransportKind::Sip);
        request.name = self.name.clone();
        request.metadata = self.metadata.clone();
        request.auto_subscribe = false;
        request.on_duplicate = DuplicatePolicy::Reject;
        let joined = self.engine.join(request).map_err(|e| CallEnd::Failed(e.to_string()))?;
        self.enter_room(joined.endpoint)
    }

    async fn drive(&mut self, phase: &mut Phase) -> CallEnd {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        // One byte more than the largest datagram accepted, so a larger one shows as too large
        // instead of being cut to fit.
        let mut rtp_buf = vec![0u8; validate::MAX_DATAGRAM + 1];
        let mut rtcp_buf = vec![0u8; validate::MAX_DATAGRAM + 1];
        loop {
            tokio::select! {
                message = self.inbox.recv() => match message {
                    Some(ToCall::Stop(end)) => return end,
                    None => return CallEnd::Shutdown,
                    Some(ToCall::Confirmed) => debug!(call = %self.id, "call confirmed"),
                    Some(ToCall::Alive) => self.last_heard = Instant::now(),
                    Some(ToCall::Digit(digit)) => {
                        if let Some(end) = self.on_digit(phase, digit) {
                            return end;
                        }
                    }
                    Some(ToCall::Move(endpoint)) => {
                        if let Err(end) = self.move_to(phase, endpoint.0) {
                            return end;
                        }
                    }
                    Some(ToCall::Digits(digits)) => self.send_digits(&digits).await,
                    Some(ToCall::Renegotiated(media)) => {
                        info!(room = %self.room, peer = %self.identity, direction = media.direction.as_str(), "media renegotiated");
                        self.downlink.renegotiated(&media);
                        if let Err(end) = self.rekey(&media) {
                            return end;
                        }
                        self.media = media;
                        self.last_heard = Instant::now();
                    }
                },
                received = self.rtp.recv_from(&mut rtp_buf) => {
                    if let Ok((len, _)) = received
                        && let Some(end) = self.on_rtp(phase, rtp_buf.get(..len).unwrap_or_default())
                    {
                        return end;
                    }
                }
                received = self.rtcp.recv_from(&mut rtcp_buf) => {
                    // SRTCP is not read (see `unprotect`).
                    if let Ok((len, _)) = received
                        && self.srtp.is_none()
                    {
                        match validate::check_rtcp(rtcp_buf.get(..len).unwrap_or_default()) {
                            Ok(()) => self.last_heard = Instant::now(),
                            Err(invalid) => self.dropped("rtcp", invalid),
                        }
                    }
                }
                signal = from_room(phase) => match (signal, &mut *phase) {
                    (FromRoom::Event(Some(event)), _) => match *event {
                        EndpointEvent::Closed { reason } => return CallEnd::RoomClosed(reason.as_str().to_owned()),
                        // Digits for this phone: `sip.dtmf` data addressed to it by name (the
                        // phones' own digits go to everyone and are not replayed).
                        EndpointEvent::Data(message)
                            if message.topic.as_deref() == Some("sip.dtmf") && message.to.contains(&self.identity) =>
                        {
                            let digits = String::from_utf8_lossy(&message.payload).into_owned();
                            self.send_digits(&digits).await;
                        }
                        _ => {}
                    },
                    (FromRoom::Event(None), _) => return CallEnd::RoomClosed("session closed".into()),
                    (FromRoom::Mix(Some(frame)), Phase::Room(room)) => {
                        room.mix.push_back(frame);
                        while room.mix.len() > MIX_QUEUE {
                            room.mix.pop_front();
                        }
                    }
                    (FromRoom::Mix(None), _) => return CallEnd::RoomClosed("the room's mix ended".into()),
                    _ => {}
                },
                _ = tick.tick() => {
                    if let Some(end) = self.on_tick(phase).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Counts a datagram dropped by [`validate`]; the first one of the call is logged.
    fn dropped(&mut self, kind: &'static str, invalid: Invalid) {
        metrics::counter!("junction_sip_invalid_media_total", "kind" => kind, "reason" => invalid.reason())
            .increment(1);
        if !self.invalid_logged {
            self.invalid_logged = true;
            warn!(room = %self.room, peer = %self.identity, call = %self.id, kind, "invalid {kind} datagram dropped: {invalid} (further ones are only counted)");
        }
    }

    /// Leaves the room for another one the stack has already joined (a transfer).
    fn move_to(&mut self, phase: &mut Phase, endpoint: Endpoint) -> Result<(), CallEnd> {
        let Phase::Room(_) = phase else {
            // Still entering the PIN: the stack refuses transfers then; drop the seat.
            return Ok(());
        };
        let from = std::mem::replace(&mut self.room, endpoint.rpc.room().clone());
        let room = self.enter_room(endpoint)?;
        // Dropping the old endpoint, track and mix listener leaves the old room.
        *phase = Phase::Room(Box::new(room));
        info!(from = %from, room = %self.room, peer = %self.identity, call = %self.id, "moved to another room");
        Ok(())
    }

    /// Sends digits to the phone: RFC 4733 events when it offered telephone-event, else one
    /// SIP INFO per digit through the stack.
    async fn send_digits(&mut self, digits: &str) {
        if self.downlink.sends_events() {
            let queued = self.downlink.send_digits(digits);
            debug!(call = %self.id, queued, "DTMF to the phone (RFC 4733)");
            return;
        }
        for digit in digits.chars().filter(|c| crate::media::dtmf::digit_event(*c).is_some()).take(64) {
            let _ = self.to_stack.send(Command::InfoDigit { key: self.key, digit }).await;
        }
    }

    /// Follows a renegotiation that changed the SRTP keys (or turned SRTP on or off).
    fn rekey(&mut self, media: &Negotiated) -> Result<(), CallEnd> {
        let keys = media.srtp.as_ref().map(|s| &s.keys);
        if keys.is_some_and(|k| self.srtp.as_ref().is_some_and(|session| session.uses(k)))
            || (keys.is_none() && self.srtp.is_none())
        {
            return Ok(());
        }
        info!(room = %self.room, peer = %self.identity, call = %self.id, srtp = keys.is_some(), "media keys renegotiated");
        self.srtp = keys.map(SrtpSession::new).transpose().map_err(|e| CallEnd::Failed(e.to_string()))?;
        Ok(())
    }

    /// An SRTP call's datagram, authenticated and decrypted; `None` (counted) when it is not
    /// the far end's. SRTCP is not read: RTP proves the phone alive, OPTIONS does on hold.
    fn unprotect(&mut self, datagram: &[u8]) -> Option<Bytes> {
        let session = self.srtp.as_mut()?;
        if validate::is_rtcp(datagram) {
            return None;
        }
        if let Err(invalid) = validate::check_rtp_header(datagram) {
            self.dropped("rtp", invalid);
            return None;
        }
        let ssrc = datagram.get(8..12).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes)?;
        match session.unprotect(ssrc, datagram) {
            Ok(plain) => Some(plain),
            Err(err) => {
                metrics::counter!("junction_sip_invalid_media_total", "kind" => "srtp", "reason" => "auth")
                    .increment(1);
                if !self.invalid_logged {
                    self.invalid_logged = true;
                    warn!(room = %self.room, peer = %self.identity, call = %self.id, "SRTP datagram dropped: {err} (further ones are only counted)");
                }
                None
            }
        }
    }

    fn on_rtp(&mut self, phase: &mut Phase, datagram: &[u8]) -> Option<CallEnd> {
        let decrypted;
        let datagram = if self.srtp.is_some() {
            decrypted = self.unprotect(datagram)?;
            &decrypted[..]
        } else {
            datagram
        };
        let now = Instant::now();
        let packet = match rtp::read(datagram) {
            Ok(Received::Rtp(packet)) => packet,
            Ok(Received::Rtcp) => {
                self.last_heard = now;
                return None;
            }
            Err(invalid) => {
                self.dropped("rtp", invalid);
                return None;
            }
        };
        if packet.payload_type == self.media.pt {
            self.last_heard = now;
            if let Phase::Room(room) = phase
                && self.media.direction.receives()
                && let Some(frame) = room.uplink.push(&packet, now)
            {
                let _ = room.track.send(frame);
            }
        } else if Some(packet.payload_type) == self.media.dtmf_pt {
            self.last_heard = now;
            if let Some(digit) = self.dtmf.receive(packet.timestamp, &packet.payload) {
                return self.on_digit(phase, digit);
            }
        } else if packet.payload_type == COMFORT_NOISE_PT {
            self.last_heard = now;
        }
        None
    }

    fn on_digit(&mut self, phase: &mut Phase, digit: char) -> Option<CallEnd> {
        debug!(call = %self.id, %digit, "DTMF");
        match phase {
            Phase::Pin { entry, .. } => match entry.press(digit) {
                PinProgress::Typing => None,
                PinProgress::Wrong { left } => {
                    info!(call = %self.id, left, "wrong PIN");
                    self.prompt.play([prompt::wrong(), prompt::prompt()].concat());
                    None
                }
                PinProgress::Failed => Some(CallEnd::PinFailed),
                PinProgress::Accepted => match self.join() {
                    Ok(room) => {
                        self.prompt.play(prompt::accepted());
                        self.book.transition(&self.id, CallState::Answered, None, None);
                        *phase = Phase::Room(Box::new(room));
                        None
                    }
                    Err(end) => Some(end),
                },
            },
            Phase::Room(room) => {
                // In the room, digits go to the other peers as data (IVR-style apps use them).
                let message = DataMessage {
                    from: self.identity.clone(),
                    to: Vec::new(),
                    topic: Some("sip.dtmf".into()),
                    payload: Bytes::from(digit.to_string()),
                    reliable: true,
                };
                let _ = room.rpc.send_data(message);
                None
            }
        }
    }

    fn ping_interval(&self) -> Duration {
        (self.settings.rtp_timeout / 4).clamp(Duration::from_millis(500), MAX_HOLD_PING_INTERVAL)
    }

    async fn on_tick(&mut self, phase: &mut Phase) -> Option<CallEnd> {
        let now = Instant::now();
        if let Phase::Pin { deadline, .. } = phase
            && now >= *deadline
        {
            return Some(CallEnd::PinTimeout);
        }
        // A phone that sends audio proves it is alive with RTP; one on hold (nothing may flow)
        // is asked over SIP with OPTIONS often enough to be found dead within the RTP timeout.
        let expect_rtp = self.media.direction == Direction::SendRecv && self.media.remote.is_some();
        if now.saturating_duration_since(self.last_heard) > self.settings.rtp_timeout {
            return Some(if expect_rtp { CallEnd::RtpTimeout } else { CallEnd::Unreachable });
        }
        if expect_rtp {
            self.next_ping = now + self.ping_interval();
        } else if now >= self.next_ping {
            self.next_ping = now + self.ping_interval();
            let _ = self.to_stack.try_send(Command::Ping { key: self.key });
        }

        let pcm = match self.prompt.next_frame() {
            Some(frame) => frame,
            None => match phase {
                Phase::Room(room) => room.mix.pop_front().unwrap_or_else(|| vec![0.0; FRAME_SAMPLES]),
                Phase::Pin { .. } => vec![0.0; FRAME_SAMPLES],
            },
        };
        let send = self.media.direction.sends();
        let mut packets = Vec::new();
        if let Err(err) = self.downlink.push(&pcm, send && self.media.remote.is_some(), &mut packets) {
            return Some(CallEnd::Failed(err.to_string()));
        }
        if let Some(remote) = self.media.remote {
            for packet in packets {
                let packet = match &mut self.srtp {
                    Some(session) => match session.protect(&packet) {
                        Ok(sealed) => sealed,
                        Err(err) => return Some(CallEnd::Failed(err.to_string())),
                    },
                    None => packet,
                };
                let _ = self.rtp.send_to(&packet, remote).await;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ports::PortRange;

    #[tokio::test]
    async fn a_call_task_that_panics_frees_its_ports_and_tells_the_stack() {
        let ip = "127.0.0.1".parse().unwrap();
        let range = PortRange::new(ip, ip, 41_101, 41_103);
        let sockets = range.allocate().unwrap();
        let (to_stack, mut stack) = mpsc::channel(1);
        let task = async move {
            let _held = sockets;
            if std::hint::black_box(true) {
                panic!("advance out of bounds");
            }
        };
        supervised(CallKey(7), to_stack.clone(), task).await;
        assert_eq!(range.in_use(), 0, "the RTP ports are back in the range");
        match stack.try_recv() {
            Ok(Command::CallEnded { key, reason }) => assert_eq!((key, reason), (CallKey(7), CallEnd::Panicked)),
            _ => panic!("the stack was not told"),
        }
        // A task that ends normally reports its own end; nothing more is sent for it.
        supervised(CallKey(8), to_stack, async {}).await;
        assert!(stack.try_recv().is_err());
        assert_eq!(CallEnd::Panicked.describe(), "internal_error");
    }
}
