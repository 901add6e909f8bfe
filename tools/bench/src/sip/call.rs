//! One bench call from start to end over UDP: INVITE (retransmitted on timer A until a response,
//! given up after timer B), ACK, then 20 ms PCMU packets out and the room's mix in until told to
//! stop, then BYE (retransmitted on timer E until its 200). A BYE from the server ends the call
//! early and is reported as such.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::rtp::{self, MixLog};
use super::uac::{self, Dialog, Reply, branch};
use crate::stats::Traffic;

/// RFC 3261 T1: the first retransmission interval on UDP.
const T1: Duration = Duration::from_millis(500);
/// Timer B / F: how long a transaction waits for a final response.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(32);

/// How one call went.
#[derive(Debug, Default)]
pub struct CallOutcome {
    /// INVITE sent to 200 OK received, in µs; `None` if the call never connected.
    pub setup_us: Option<u64>,
    /// RTP packets this call sent.
    pub sent: u64,
    pub mix: MixLog,
    /// Why the call failed or ended early.
    pub error: Option<String>,
}

pub struct Call {
    pub server: SocketAddr,
    pub room: String,
    pub caller: String,
    pub tone_hz: u32,
    pub traffic: Arc<Traffic>,
}

impl Call {
    /// Runs the call until `stop`, then hangs up; never fails, the outcome says what happened.
    pub async fn run(self, stop: CancellationToken) -> CallOutcome {
        let mut outcome = CallOutcome::default();
        if let Err(err) = self.drive(&stop, &mut outcome).await {
            outcome.error = Some(format!("{err:#}"));
            if outcome.setup_us.is_none() {
                self.traffic.mark_failed();
            }
        }
        outcome
    }

    async fn drive(&self, stop: &CancellationToken, outcome: &mut CallOutcome) -> anyhow::Result<()> {
        let bind: SocketAddr = if self.server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
        let sip = UdpSocket::bind(bind).await.context("binding a SIP socket")?;
        sip.connect(self.server).await.with_context(|| format!("cannot reach SIP at {}", self.server))?;
        let rtp_socket = UdpSocket::bind(SocketAddr::new(sip.local_addr()?.ip(), 0)).await.context("binding RTP")?;
        let mut dialog =
            Dialog::new(self.server, sip.local_addr()?, rtp_socket.local_addr()?.port(), &self.room, &self.caller);

        let started = Instant::now();
        let answer = invite(&sip, &dialog).await?;
        outcome.setup_us = Some(started.elapsed().as_micros() as u64);
        dialog.answered(&answer);
        sip.send(dialog.ack(&answer).as_bytes()).await.context("sending the ACK")?;
        self.traffic.mark_joined();
        let media = match uac::check_answer(&answer) {
            Ok(media) => media,
            Err(err) => {
                let _ = hang_up(&sip, &dialog).await;
                return Err(err);
            }
        };
        rtp_socket.connect(media).await.with_context(|| format!("cannot reach the server's RTP at {media}"))?;

        let ended_by_server = self.media(&sip, &rtp_socket, &dialog, &answer, stop, outcome).await?;
        if ended_by_server {
            bail!("the server hung up (BYE) before the end of the run");
        }
        hang_up(&sip, &dialog).await
    }

    /// Sends the tone and counts the mix until `stop`; answers the server's requests. Returns
    /// whether the server ended the call.
    async fn media(
        &self,
        sip: &UdpSocket,
        rtp_socket: &UdpSocket,
        dialog: &Dialog,
        answer: &Reply,
        stop: &CancellationToken,
        outcome: &mut CallOutcome,
    ) -> anyhow::Result<bool> {
        let tone = rtp::tone(self.tone_hz);
        let ssrc = junction_core::ids::random_id("", 8)
            .bytes()
            .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(b)));
        let mut ticks = tokio::time::interval(Duration::from_millis(20));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut rtp_buffer = vec![0u8; 2048];
        let mut sip_buffer = vec![0u8; 65_536];
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(false),
                _ = ticks.tick() => {
                    // A send error (the server's port closed) shows as loss on the other side.
                    if rtp_socket.send(&rtp::packet(ssrc, outcome.sent, &tone)).await.is_ok() {
                        outcome.sent += 1;
                    }
                }
                received = rtp_socket.recv(&mut rtp_buffer) => {
                    let Ok(len) = received else { continue };
                    if outcome.mix.receive(rtp_buffer.get(..len).unwrap_or_default()).is_some() {
                        self.traffic.add(1, len as u64);
                    }
                }
                received = sip.recv(&mut sip_buffer) => {
                    let Ok(len) = received else { continue };
                    match dialog.read(sip_buffer.get(..len).unwrap_or_default()) {
                        // Our ACK was lost: the server resends its 200.
                        Some(Ok(reply)) if reply.method == "INVITE" && reply.status < 300 => {
                            sip.send(dialog.ack(answer).as_bytes()).await.context("sending the ACK again")?;
                        }
                        Some(Err(request)) => {
                            sip.send(request.answer.as_bytes()).await.context("answering the server")?;
                            if request.method == "BYE" {
                                return Ok(true);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// Sends the INVITE (again at T1, 2·T1, ... until a provisional response, RFC 3261 §17.1.1.2)
/// and waits for its final response: the 2xx, or an error naming the refusal.
async fn invite(sip: &UdpSocket, dialog: &Dialog) -> anyhow::Result<Reply> {
    let text = dialog.invite();
    let deadline = Instant::now() + TRANSACTION_TIMEOUT;
    let mut interval = T1;
    let mut next_send = Instant::now();
    let mut provisional = false;
    let mut buffer = vec![0u8; 65_536];
    loop {
        let now = Instant::now();
        if now >= deadline {
            bail!("no final answer to the INVITE within {} s (timer B)", TRANSACTION_TIMEOUT.as_secs());
        }
        if !provisional && now >= next_send {
            sip.send(text.as_bytes()).await.context("sending the INVITE")?;
            next_send = now + interval;
            interval *= 2;
        }
        let wait = if provisional { deadline - now } else { next_send.saturating_duration_since(now) };
        let Ok(received) = tokio::time::timeout(wait, sip.recv(&mut buffer)).await else { continue };
        let len = received.context("the SIP socket failed (nothing listening on the server's SIP port?)")?;
        let Some(Ok(reply)) = dialog.read(buffer.get(..len).unwrap_or_default()) else { continue };
        if reply.method != "INVITE" {
            continue;
        }
        match reply.status {
            100..=199 => provisional = true,
            200..=299 => return Ok(reply),
            _ => {
                sip.send(dialog.ack(&reply).as_bytes()).await.context("acknowledging the refusal")?;
                bail!("{}", uac::refusal(&reply));
            }
        }
    }
}

/// Sends the BYE (again on timer E: T1, 2·T1, ... capped at 4 s) and waits for its final
/// response.
async fn hang_up(sip: &UdpSocket, dialog: &Dialog) -> anyhow::Result<()> {
    let text = dialog.bye(&branch());
    let deadline = Instant::now() + TRANSACTION_TIMEOUT;
    let mut interval = T1;
    let mut buffer = vec![0u8; 65_536];
    loop {
        sip.send(text.as_bytes()).await.context("sending the BYE")?;
        let resend_at = (Instant::now() + interval).min(deadline);
        interval = (interval * 2).min(Duration::from_secs(4));
        loop {
            let now = Instant::now();
            if now >= deadline {
                bail!("no answer to the BYE within {} s (timer F)", TRANSACTION_TIMEOUT.as_secs());
            }
            if now >= resend_at {
                break;
            }
            let Ok(received) = tokio::time::timeout(resend_at - now, sip.recv(&mut buffer)).await else { break };
            let len = received.context("the SIP socket failed while hanging up")?;
            match dialog.read(buffer.get(..len).unwrap_or_default()) {
                Some(Ok(reply)) if reply.method == "BYE" && reply.status >= 200 => {
                    if reply.status >= 300 {
                        bail!("the BYE was refused: {}", reply.reason);
                    }
                    return Ok(());
                }
                Some(Err(request)) => {
                    sip.send(request.answer.as_bytes()).await.context("answering the server")?;
                }
                _ => {}
            }
        }
    }
}
