//! What a panic inside the SIP stack costs. The stack is one task holding every call's
//! signalling state, so losing it would end SIP for everyone; instead each input (a datagram,
//! a TCP message, a command, a timer) is handled under a panic guard:
//!
//! - a first panic costs the input that hit it: logged, counted as
//!   `junction_service_restarts_total{service="sip_stack"}`, and the loop goes on with every
//!   other call untouched — a bug reachable from the network takes down no more than that
//!   message (issue 12's rule);
//! - a second panic within [`REPEAT_WINDOW`] means the state itself may be broken (a timer that
//!   panics fires again at once): the stack resets its signalling state — every live call is
//!   hung up (BYE where the old user agent can still write one), recorded as ended
//!   (`internal_error: the SIP stack was reset`), its task stopped (ports and room seat freed) —
//!   and starts over with a fresh user agent on the same sockets, so new calls and the API
//!   keep working.
//!
//! Neither can catch a stack overflow; nothing in the stack recurses on input.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use junction_engine::supervise;
use tracing::{error, warn};

use super::Stack;
use crate::call::CallEnd;
use crate::ua::{CallKey, UserAgent};

/// Two panics closer than this reset the stack's state.
pub(crate) const REPEAT_WINDOW: Duration = Duration::from_secs(1);

/// Decides whether a panic is contained to its input or resets the state.
#[derive(Debug, Default)]
pub(crate) struct PanicPolicy {
    last: Option<Instant>,
}

impl PanicPolicy {
    /// Records a panic at `now`; true when the state must be reset.
    pub(crate) fn on_panic(&mut self, now: Instant) -> bool {
        let repeated = self.last.is_some_and(|at| now.saturating_duration_since(at) < REPEAT_WINDOW);
        self.last = if repeated { None } else { Some(now) };
        repeated
    }
}

impl Stack {
    /// After a panic while handling one input.
    pub(super) fn recover(&mut self, payload: &(dyn Any + Send)) {
        let message = supervise::panic_message(payload);
        metrics::counter!("junction_service_restarts_total", "service" => "sip_stack").increment(1);
        if !self.panics.on_panic(Instant::now()) {
            error!(panic = %message, "the SIP stack panicked handling one input; that input is dropped");
            return;
        }
        error!(panic = %message, calls = self.live.len(), "the SIP stack panicked twice within {REPEAT_WINDOW:?}: resetting its state, every call is ended");
        self.reset();
    }

    /// Ends every call and starts over with a fresh user agent.
    fn reset(&mut self) {
        let now = Instant::now();
        let keys: Vec<CallKey> = self.live.keys().copied().collect();
        for key in keys {
            // A BYE if the old user agent can still write one; the call ends either way.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| self.ua.hangup(now, key)));
            self.finish(key, CallEnd::StackReset);
        }
        let fresh = UserAgent::with_limits(self.timers, self.config.ua_limits(), self.locals);
        let mut old = std::mem::replace(&mut self.ua, fresh);
        let outbox = &mut self.outbox;
        let drained = std::panic::catch_unwind(AssertUnwindSafe(|| {
            while let Some(transmit) = old.poll_transmit() {
                outbox.push(transmit);
            }
        }));
        if drained.is_err() {
            warn!("the old SIP user agent could not hand over its last messages");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use junction_audio::mixer::{MixConfig, Mixer};
    use junction_engine::{Engine, EngineConfig};
    use tokio::net::UdpSocket;
    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::admission::{Directory, RuleSpec, TrunkSpec};
    use crate::calls::{CallBook, CallState};
    use crate::config::SipConfig;
    use crate::media::ports::PortRange;
    use crate::stack::tcp::{TcpGate, TcpLimits};
    use crate::stack::{Command, Parts};
    use crate::transaction::TimerConfig;

    /// A stack on loopback with an open trunk and a `callee` rule; returns its address, its
    /// command channel and the call book.
    async fn stack() -> (std::net::SocketAddr, mpsc::Sender<Command>, CallBook, CancellationToken) {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let trunk: TrunkSpec =
            serde_json::from_value(serde_json::json!({"name": "lab", "allowed_addresses": ["127.0.0.0/8"]})).unwrap();
        let rule: RuleSpec = serde_json::from_value(serde_json::json!({"kind": "callee"})).unwrap();
        let config =
            SipConfig { listen: addr, trunks: vec![trunk], dispatch_rules: vec![rule], ..SipConfig::default() };
        let engine = Engine::new(EngineConfig::default());
        let (tcp_events, tcp_in) = mpsc::channel(8);
        let (commands_tx, commands) = mpsc::channel(8);
        let book = CallBook::default();
        let shutdown = CancellationToken::new();
        let limits = TcpLimits { total: 4, per_source: 4, idle: Duration::from_secs(60), max_message: 16_384 };
        let parts = Parts {
            timers: TimerConfig::default(),
            udp: Arc::new(udp),
            tcp_gate: TcpGate::new(limits),
            tcp_events,
            engine: engine.clone(),
            mixer: Mixer::new(engine, MixConfig::default()),
            directory: Directory::from_config(&config.trunks, &config.dispatch_rules).unwrap(),
            book: book.clone(),
            ports: PortRange::new(addr.ip(), addr.ip(), 41_200, 41_299),
            config,
            commands_tx: commands_tx.clone(),
            advertised: addr,
            locals: crate::ua::Locals::plain(addr),
            tls_connector: None,
            registrations: Default::default(),
        };
        let stack = Stack::new(parts, shutdown.clone());
        tokio::spawn(stack.run(tcp_in, commands, shutdown.clone()));
        (addr, commands_tx, book, shutdown)
    }

    fn request(
        method: &str,
        target: std::net::SocketAddr,
        phone: std::net::SocketAddr,
        branch: &str,
        extra: &str,
        body: &str,
    ) -> String {
        format!(
            "{method} sip:crashtest@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {phone};branch=z9hG4bK-{branch}\r\n\
From: <sip:tess@{phone}>;tag=t1\r\nTo: <sip:crashtest@{target}>{extra}\r\nCall-ID: {branch}\r\nCSeq: 1 {method}\r\n\
Contact: <sip:tess@{phone}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// What arrives within `window`.
    async fn answers(socket: &UdpSocket, window: Duration) -> Vec<String> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 8192];
        while let Ok(Ok((len, _))) = tokio::time::timeout(window, socket.recv_from(&mut buf)).await {
            got.push(String::from_utf8_lossy(&buf[..len]).to_string());
        }
        got
    }

    /// Whether the request with `call_id` got a 200.
    fn answered_ok(got: &[String], call_id: &str) -> bool {
        got.iter().any(|m| m.starts_with("SIP/2.0 200 OK") && m.contains(&format!("Call-ID: {call_id}\r\n")))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_stack_survives_its_own_panics() {
        let (target, commands, book, shutdown) = stack().await;
        let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = phone.local_addr().unwrap();
        let sdp =
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41398 RTP/AVP 0\r\n";
        phone.send_to(request("INVITE", target, me, "call-1", "", sdp).as_bytes(), target).await.unwrap();
        let got = answers(&phone, Duration::from_millis(300)).await;
        assert!(answered_ok(&got, "call-1"), "{got:?}");
        let call = book.in_room(&junction_core::RoomId::new("crashtest").unwrap()).remove(0);

        // One panic: that command is lost, the call and the service go on.
        commands.send(Command::Crash).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        phone.send_to(request("OPTIONS", target, me, "ping-1", "", "").as_bytes(), target).await.unwrap();
        let got = answers(&phone, Duration::from_millis(300)).await;
        assert!(answered_ok(&got, "ping-1"), "still answering: {got:?}");
        assert_eq!(book.get(&call.id).unwrap().state, CallState::Answered, "the call survived");

        // Two in a row: the state is reset, the call hung up with BYE and recorded why.
        commands.send(Command::Crash).await.unwrap();
        commands.send(Command::Crash).await.unwrap();
        let got = answers(&phone, Duration::from_millis(500)).await;
        assert!(got.iter().any(|l| l.starts_with("BYE ")), "{got:?}");
        let ended = book.get(&call.id).unwrap();
        assert_eq!(ended.state, CallState::Ended);
        assert_eq!(ended.reason.as_deref(), Some("internal_error: the SIP stack was reset"));
        phone.send_to(request("OPTIONS", target, me, "ping-2", "", "").as_bytes(), target).await.unwrap();
        let got = answers(&phone, Duration::from_millis(300)).await;
        assert!(answered_ok(&got, "ping-2"), "a fresh user agent answers: {got:?}");
        shutdown.cancel();
    }

    #[test]
    fn a_lone_panic_is_contained_and_a_repeat_resets() {
        let mut policy = PanicPolicy::default();
        let t0 = Instant::now();
        assert!(!policy.on_panic(t0), "the first costs its input");
        assert!(!policy.on_panic(t0 + Duration::from_secs(5)), "one a while later too");
        assert!(policy.on_panic(t0 + Duration::from_millis(5200)), "two within a second reset the state");
        assert!(!policy.on_panic(t0 + Duration::from_millis(5300)), "and counting starts over");
    }
}
