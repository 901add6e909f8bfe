//! The tokio side of one SRT stream: its own task owns the stream's srt-protocol
//! `DuplexConnection` (ARQ, ACKs, decryption, latency buffer), takes the packets the listener
//! routes to it, sends what the connection answers, and feeds the delivered MPEG-TS through the
//! [`TsDemuxer`] and [`TsIngest`] into the room, where the ingress's identity publishes it.
//! A panic inside the task ends this stream only ([`supervise::contain`]): the endpoint goes
//! with the task, so the peer leaves its room.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use junction_auth::Credential;
use junction_core::{CloseReason, EndpointEvent, MediaKind, PublishRequest, TransportKind};
use junction_engine::gate::ConnectionPermit;
use junction_engine::{EndpointMedia, EndpointRpc, JoinRequest, TrackPublisher, supervise};
use srt_protocol::connection::{Connection, DuplexConnection};
use srt_protocol::packet::Packet;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::ingest::{IngestEvent, TsIngest};
use crate::server::Shared;
use crate::ts::TsDemuxer;

/// Packets queued for one stream's task; more are dropped (SRT retransmits them).
pub(crate) const QUEUE: usize = 1024;

/// Everything a stream's task starts with.
pub(crate) struct Accepted {
    pub(crate) connection: Connection,
    pub(crate) remote: SocketAddr,
    pub(crate) credential: Credential,
    pub(crate) permit: ConnectionPermit,
}

/// How a stream ended.
enum End {
    /// The encoder closed it, or stopped answering (srt-protocol's idle timeout).
    Closed,
    Shutdown,
    Engine(Option<CloseReason>),
    Refused(String),
}

pub(crate) async fn serve(shared: Arc<Shared>, accepted: Accepted, packets: mpsc::Receiver<Packet>) {
    let Accepted { connection, remote, credential, permit } = accepted;
    let span = info_span!("srt", %remote, room = %credential.room, peer = %credential.identity);
    let stream = Stream {
        shared,
        remote,
        duplex: DuplexConnection::new(connection),
        demuxer: TsDemuxer::default(),
        ingest: TsIngest::default(),
        video: None,
        audio: None,
        events: Vec::new(),
        wire: BytesMut::with_capacity(2048),
    };
    let _ = supervise::contain("srt", stream.run(credential, packets)).instrument(span).await;
    drop(permit);
}

struct Stream {
    shared: Arc<Shared>,
    remote: SocketAddr,
    duplex: DuplexConnection,
    demuxer: TsDemuxer,
    ingest: TsIngest,
    video: Option<TrackPublisher>,
    audio: Option<TrackPublisher>,
    events: Vec<IngestEvent>,
    wire: BytesMut,
}

impl Stream {
    async fn run(mut self, credential: Credential, mut packets: mpsc::Receiver<Packet>) {
        let request = JoinRequest {
            name: credential.name,
            metadata: credential.metadata,
            grants: credential.grants,
            auto_subscribe: false,
            on_duplicate: junction_engine::DuplicatePolicy::Replace,
            credential: credential.session,
            ..JoinRequest::new(credential.room, credential.identity, TransportKind::Srt)
        };
        let joined = match self.shared.engine.join(request) {
            Ok(joined) => joined,
            Err(err) => {
                warn!("stream refused by the room: {err}");
                self.close().await;
                return;
            }
        };
        info!(replaced = joined.replaced.is_some(), "publishing over SRT");
        let (mut rpc, mut media) = joined.endpoint.split();
        let gauge = metrics::gauge!("junction_srt_streams");
        gauge.increment(1.0);
        let end = self.pump(&mut rpc, &mut media, &mut packets).await;
        gauge.decrement(1.0);
        let reason = match &end {
            End::Closed => {
                info!("stream closed by the encoder");
                CloseReason::Left
            }
            End::Shutdown => CloseReason::ServerShutdown,
            End::Engine(reason) => {
                info!(
                    reason = reason.as_ref().map_or("session ended", CloseReason::as_str),
                    "the server ended the stream"
                );
                CloseReason::Left
            }
            End::Refused(why) => {
                warn!("closing the stream: {why}");
                CloseReason::Error { message: why.clone() }
            }
        };
        self.video = None;
        self.audio = None;
        if !rpc.is_closed() {
            rpc.leave(reason);
        }
        if !matches!(end, End::Closed) {
            self.close().await;
        }
    }

    async fn pump(
        &mut self,
        rpc: &mut EndpointRpc,
        media: &mut EndpointMedia,
        packets: &mut mpsc::Receiver<Packet>,
    ) -> End {
        let shutdown = self.shared.shutdown.clone();
        loop {
            let now = Instant::now();
            self.send_pending(now).await;
            while let Some((_, data)) = self.duplex.next_data(now) {
                self.demuxer.push(&data);
            }
            if let Err(why) = self.publish_demuxed(rpc) {
                return End::Refused(why);
            }
            if !self.duplex.is_open() {
                return End::Closed;
            }
            let deadline = self.duplex.check_timers(now);
            tokio::select! {
                _ = shutdown.cancelled() => return End::Shutdown,
                packet = packets.recv() => match packet {
                    Some(packet) => self.duplex.handle_packet_input(Instant::now(), Ok((packet, self.remote))),
                    None => return End::Shutdown,
                },
                event = rpc.next_event() => match event {
                    Some(EndpointEvent::Closed { reason }) => return End::Engine(Some(reason)),
                    Some(_) => {}
                    None => return End::Engine(None),
                },
                // A publisher is asked for keyframes and told bitrates; an SRT encoder can be
                // told neither (its GOP length decides).
                item = media.recv() => if item.is_none() { return End::Engine(None) },
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    /// Sends what the connection has for the encoder (ACKs, NAKs, keep-alives, shutdown).
    async fn send_pending(&mut self, now: Instant) {
        while let Some((packet, to)) = self.duplex.next_packet(now) {
            self.wire.clear();
            packet.serialize(&mut self.wire);
            if let Err(err) = self.shared.socket.send_to(&self.wire, to).await {
                debug!("SRT send failed: {err}");
            }
        }
    }

    /// Ends the SRT connection from our side (a shutdown packet to the encoder).
    async fn close(&mut self) {
        let now = Instant::now();
        self.duplex.handle_data_input(now, None);
        self.send_pending(now).await;
    }

    /// Publishes what the demuxer has gathered; an error that ends the stream is returned.
    fn publish_demuxed(&mut self, rpc: &EndpointRpc) -> Result<(), String> {
        for skipped in self.demuxer.take_skipped() {
            warn!(pid = skipped.pid, stream_type = %skipped.stream_type, "stream not taken (H.264 and AAC are)");
        }
        let arrival = Instant::now();
        while let Some(pes) = self.demuxer.next_pes() {
            if let Err(err) = self.ingest.on_pes(&pes, arrival, &mut self.events) {
                if err.is_fatal() {
                    return Err(err.to_string());
                }
                debug!("PES dropped: {err}");
            }
            for event in std::mem::take(&mut self.events) {
                match event {
                    IngestEvent::Track(request) => self.publish_track(rpc, request)?,
                    IngestEvent::Frame(frame) => {
                        let slot = if frame.codec.kind() == MediaKind::Video { &self.video } else { &self.audio };
                        if let Some(publisher) = slot
                            && let Err(err) = publisher.send(frame)
                        {
                            debug!("frame not forwarded: {err}");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn publish_track(&mut self, rpc: &EndpointRpc, request: PublishRequest) -> Result<(), String> {
        let slot = if request.codec.kind() == MediaKind::Video { &mut self.video } else { &mut self.audio };
        if let Some(previous) = slot.take() {
            // The encoder changed its configuration: subscribers move to the new track.
            let _ = rpc.unpublish(previous.id());
        }
        let codec = request.codec;
        match rpc.publish(request) {
            Ok(publisher) => {
                info!(track = %publisher.id(), %codec, "track published");
                *slot = Some(publisher);
                Ok(())
            }
            Err(err) => Err(err.to_string()),
        }
    }
}
