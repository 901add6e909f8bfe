// Junction browser SDK: a dependency-free ES module served at /sdk/junction.js.
//
//   import { connect } from '/sdk/junction.js';
//   const session = await connect({ token });          // WebSocket signalling, /ws?token=
//   session.on('track', ({ track, peer }) => ...);      // remote media, whatever the room mode
//   await session.join();                              // the room the token names
//   await session.publish({ camera: true, microphone: true, simulcast: true });
//   session.send('hello', { topic: 'chat' });          // data message to the room
//   session.on('data', ({ from, payload }) => ...);
//   const call = await session.call(otherSessionId, { camera: true, microphone: true });
//   await session.switchDevice('camera', deviceId);     // another camera, no renegotiation
//   await session.leave();
//
// Events (session.on(name, handler) returns a function that removes the handler):
//   joined, peer_joined, peer_left, peer_updated, track_published, track_unpublished,
//   track_muted, subscribed, unsubscribed, data, signal, incoming_call, call_ended,
//   track ({track, stream, peer, source, receiver, trackInfo, call}), track_ended ({track, peer}),
//   reconnecting, reconnected, session_lost, closed ({reason}), error ({code, message}),
//   local_track ({source, track}: a captured or switched local source),
//   media_state ({state, peer}: the worst connectionState of this session's RTCPeerConnections,
//   'connected' when all are; `peer` names the mesh link that changed, null for the SFU one).
// Media recovers by itself: a connection that goes 'failed', or stays 'disconnected' for
// MEDIA_RESTART_MS, restarts ICE (session.restartIce() does it at once) — a new offer with new
// ICE credentials on the same connection, so no track is lost and nothing is renegotiated.
// The wire protocol is documented in docs/protocol-websocket.md.

/** How long a connection may stay 'disconnected' before its ICE restarts. */
const MEDIA_RESTART_MS = 3000;

/** The SDK's source names ('screen') as the protocol spells them ('screen_share'), and back. */
const wireSource = (source) => (source === 'screen' ? 'screen_share' : source);
const sdkSource = (source) => (source === 'screen_share' ? 'screen' : source);

const SIMULCAST_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
];

/** A request the server refused: `code` is stable, `message` says why. */
export class JunctionError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'JunctionError';
    this.code = code;
  }
}

class Emitter {
  #handlers = new Map();
  on(name, handler) {
    if (!this.#handlers.has(name)) this.#handlers.set(name, new Set());
    this.#handlers.get(name).add(handler);
    return () => this.#handlers.get(name)?.delete(handler);
  }
  once(name) {
    return new Promise((resolve) => {
      const off = this.on(name, (value) => { off(); resolve(value); });
    });
  }
  emit(name, value) {
    for (const handler of [...(this.#handlers.get(name) ?? [])]) {
      try { handler(value); } catch (err) { console.error(`junction: ${name} handler failed`, err); }
    }
  }
}

function defaultUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}

/**
 * Opens a signalling session. Options: `token` (a client token; omit only if the server allows
 * anonymous sessions), `url` (default: /ws on this page's host), `iceServers` (more STUN/TURN
 * servers; the server's own, with credentials for this client, come in its welcome and are
 * always used), `relay` (default false: true connects only through TURN relays,
 * `iceTransportPolicy: 'relay'`), `reconnect` (default true: resume the session after a dropped
 * socket).
 */
export async function connect(options = {}) {
  const session = new Session(options);
  await session.open();
  return session;
}

/** One signalling session: a room (optional), direct calls, and the local media it publishes. */
export class Session extends Emitter {
  constructor(options) {
    super();
    this.options = { url: defaultUrl(), reconnect: true, iceServers: [], relay: false, ...options };
    this.id = null;            // the session id (PS_...), callable by others
    this.identity = null;
    this.room = null;          // {name, mode, ...} once joined
    this.peers = new Map();    // identity -> peer
    this.tracks = new Map();   // track id -> track info (SFU rooms)
    this.local = new Map();    // source ('camera', 'microphone', 'screen') -> MediaStreamTrack
    this.links = new Map();    // identity -> PeerLink (mesh rooms)
    this.calls = new Map();    // call id -> Call
    this.media = null;         // SfuMedia (SFU rooms)
    this.simulcast = false;
    this.devices = {};         // source -> deviceId picked with switchDevice
    this.#nextId = 1;
  }

  #ws = null;
  #nextId;
  #pending = new Map();
  #resumeKey = null;
  // Messages received on this session (welcomes aside): a resume asks for what came after them.
  #received = 0;
  #closed = false;
  #reconnecting = false;

  /** Opens the socket and waits for the server's welcome. */
  open(resume = false) {
    const params = new URLSearchParams();
    if (this.options.token) params.set('token', this.options.token);
    if (resume && this.id) {
      params.set('resume', this.id);
      params.set('key', this.#resumeKey);
      params.set('received', String(this.#received));
    }
    const ws = new WebSocket(`${this.options.url}?${params}`);
    this.#ws = ws;
    return new Promise((resolve, reject) => {
      let welcomed = false;
      ws.onmessage = (event) => {
        let message;
        // Counted as the server counts what it writes: everything after this socket's welcome.
        try { message = JSON.parse(event.data); } catch { if (welcomed) this.#received += 1; return; }
        if (welcomed && message.type !== 'welcome') this.#received += 1;
        if (message.type === 'welcome') {
          welcomed = true;
          this.#onWelcome(message, resume);
          resolve(message);
        } else if (message.type === 'error' && !welcomed) {
          reject(new JunctionError(message.code, message.message));
        } else {
          this.#onMessage(message);
        }
      };
      ws.onclose = (event) => {
        if (!welcomed) reject(new JunctionError('connect_failed', `socket closed (${event.code} ${event.reason})`));
        if (this.#ws === ws) this.#onSocketClosed(event);
      };
    });
  }

  /**
   * The configuration of this session's peer connections: the given ICE servers and the
   * server's (its TURN relay with a credential minted for this client), relay-only if asked.
   */
  rtcConfiguration(extra = {}) {
    const fromServer = (this.welcome?.ice_servers ?? []).map(({ urls, username, credential }) => ({ urls, username, credential }));
    return {
      iceServers: [...this.options.iceServers, ...fromServer],
      iceTransportPolicy: this.options.relay ? 'relay' : 'all',
      ...extra,
    };
  }

  #onWelcome(message, resuming) {
    const lost = resuming && !message.resumed;
    if (!message.resumed) this.#received = 0;
    this.id = message.session;
    this.identity = message.identity;
    this.#resumeKey = message.resume_key;
    this.welcome = message;
    if (resuming) this.emit(lost ? 'session_lost' : 'reconnected', message);
  }

  async #onSocketClosed(event) {
    for (const { reject } of this.#pending.values()) reject(new JunctionError('disconnected', 'the socket closed'));
    this.#pending.clear();
    // Codes 4001 (credentials) and 4008+ (kicked, replaced, room closed...) are final.
    if (this.#reconnecting) return;
    if (this.#closed || !this.options.reconnect || event.code === 4001 || event.code >= 4008) {
      this.#closed = true;
      return;
    }
    this.#reconnecting = true;
    this.emit('reconnecting', { code: event.code });
    const deadline = Date.now() + 1000 * (this.welcome?.reconnect_grace_s ?? 20);
    for (let delay = 250; Date.now() < deadline && !this.#closed; delay = Math.min(delay * 2, 4000)) {
      await new Promise((r) => setTimeout(r, delay));
      try {
        await this.open(true);
        this.#reconnecting = false;
        this.media?.resendOffer();
        return;
      } catch { /* try again */ }
    }
    this.#reconnecting = false;
    this.#closed = true;
    this.emit('closed', { reason: 'disconnected' });
  }

  /** Drops the socket without leaving, as a network failure would (the session resumes). */
  dropSocket() {
    this.#ws?.close(4000, 'dropped by the client');
  }

  /** Sends a message without waiting for a reply. */
  post(message) {
    if (this.#ws?.readyState === WebSocket.OPEN) this.#ws.send(JSON.stringify(message));
  }

  /** Sends a request and resolves with its reply (ok, joined, pong, call_started, ...). */
  request(message) {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      this.post({ ...message, id });
    });
  }

  #onMessage(message) {
    if (message.id !== undefined && this.#pending.has(message.id)) {
      const { resolve, reject } = this.#pending.get(message.id);
      this.#pending.delete(message.id);
      if (message.type === 'error') reject(new JunctionError(message.code, message.message));
      else resolve(message);
      if (message.type !== 'joined') return;
    }
    switch (message.type) {
      case 'joined':
        this.room = message.room;
        for (const peer of message.peers) this.peers.set(peer.identity, peer);
        for (const track of message.tracks) this.tracks.set(track.id, track);
        break;
      case 'peer_joined':
        this.peers.set(message.peer.identity, message.peer);
        if (this.room?.mode === 'mesh') this.#link(message.peer.identity, false);
        break;
      case 'peer_updated':
        this.peers.set(message.peer.identity, message.peer);
        break;
      case 'peer_left':
        this.peers.delete(message.identity);
        if (this.links.has(message.identity)) {
          this.links.get(message.identity).close();
          this.links.delete(message.identity);
          this.emit('media_state', { state: this.mediaState(), peer: message.identity });
        }
        break;
      case 'track_published':
        this.tracks.set(message.track.id, message.track);
        break;
      case 'track_unpublished':
        this.tracks.delete(message.track);
        break;
      case 'track_muted': {
        const track = this.tracks.get(message.track);
        if (track) track.muted = message.muted;
        break;
      }
      case 'signal':
        if (this.room?.mode === 'mesh') this.#link(message.from, true).signal(message.payload);
        break;
      case 'incoming_call': {
        const call = new Call(this, message.call, message.from, message);
        this.calls.set(call.id, call);
        this.emit('incoming_call', call);
        return;
      }
      case 'call_signal':
        this.calls.get(message.call)?.onSignal(message.payload);
        break;
      case 'call_ended': {
        const call = this.calls.get(message.call);
        this.calls.delete(message.call);
        call?.end(message.reason);
        break;
      }
      case 'data':
        message.via = 'websocket';
        break;
      case 'closed':
        this.#closed = true;
        this.#teardown();
        break;
      default:
        if (this.media?.handles(message)) this.media.onMessage(message);
    }
    this.emit(message.type, message);
  }

  /**
   * Joins the room the token names (anonymous sessions name it). Resolves with `joined`.
   * `receive`: the video codecs this client decodes (`['h264']`); the server transcodes the
   * others for it. All that a browser decodes when absent.
   */
  async join({ room, name, metadata, receive } = {}) {
    const joined = await this.request({ type: 'join', room, name, metadata, receive });
    if (joined.room.mode === 'sfu') {
      this.media?.close();
      this.media = new SfuMedia(this);
      // Sources captured before (a session that was lost and joins again) go out again.
      for (const [source, track] of this.local) await this.media.publish(track, source, this.simulcast && source === 'camera');
    }
    return joined;
  }

  /**
   * Captures and publishes local media: `camera`, `microphone`, `screen` (true or constraints),
   * `simulcast` (three layers for camera video). Resolves with the local tracks by source.
   */
  async publish({ camera = false, microphone = false, screen = false, simulcast = false } = {}) {
    this.simulcast ||= simulcast;
    const captured = await this.capture({ camera, microphone, screen });
    if (this.media) {
      for (const [source, track] of Object.entries(captured)) {
        await this.media.publish(track, source, simulcast && source === 'camera');
      }
    }
    return captured;
  }

  /**
   * Captures local sources without publishing them to an SFU room: they are sent on mesh links
   * and direct calls. Sources already captured are reused.
   */
  async capture({ camera = false, microphone = false, screen = false } = {}) {
    const wanted = { camera: camera && !this.local.has('camera'), microphone: microphone && !this.local.has('microphone'), screen: screen && !this.local.has('screen') };
    for (const [source, track] of await captureMedia(wanted, this.devices)) {
      this.local.set(source, track);
      this.emit('local_track', { source, track });
      for (const link of this.links.values()) link.addTrack(track, source);
      for (const call of this.calls.values()) call.link?.addTrack(track, source);
    }
    const out = {};
    for (const source of ['camera', 'microphone', 'screen']) {
      if ({ camera, microphone, screen }[source] && this.local.has(source)) out[source] = this.local.get(source);
    }
    return out;
  }

  /** Mutes or unmutes a local source ('camera', 'microphone', 'screen'). */
  async mute(source, muted = true) {
    const track = this.local.get(source);
    if (!track) throw new JunctionError('not_published', `nothing published from ${source}`);
    track.enabled = !muted;
    if (this.media) await this.media.mute(source, muted);
  }

  /**
   * Switches a local source ('camera' or 'microphone') to another device (a `deviceId` from
   * `navigator.mediaDevices.enumerateDevices()`): the new track replaces the old one on every
   * sender (the SFU connection, mesh links, calls) with RTCRtpSender.replaceTrack — no
   * renegotiation — and the old track stops. A source not captured yet is only remembered for
   * the next capture. Resolves with the new MediaStreamTrack (or null); emits `local_track`.
   */
  async switchDevice(source, deviceId) {
    if (source !== 'camera' && source !== 'microphone') throw new JunctionError('bad_source', `cannot switch ${source}`);
    this.devices[source] = deviceId;
    const old = this.local.get(source);
    if (!old) return null;
    const [[, track]] = await captureMedia({ [source]: true }, this.devices);
    track.enabled = old.enabled;
    const senders = this.peerConnections().flatMap((pc) => pc.getSenders()).filter((s) => s.track === old);
    await Promise.all(senders.map((sender) => sender.replaceTrack(track)));
    this.local.set(source, track);
    old.stop();
    this.emit('local_track', { source, track });
    return track;
  }

  /** Restarts ICE on every connection of this session (done by itself when one fails). */
  restartIce() {
    for (const pc of this.peerConnections()) if (pc.connectionState !== 'closed') pc.restartIce();
  }

  /** The worst connectionState of this session's connections ('connected' when all are, or none). */
  mediaState() {
    const states = this.peerConnections().map((pc) => pc.connectionState);
    return ['failed', 'disconnected', 'connecting', 'new'].find((s) => states.includes(s)) ?? 'connected';
  }

  /**
   * Watches `pc`: reports its state as `media_state`, and restarts its ICE when it fails or stays
   * disconnected (a dropped network; the other side answers with new credentials).
   */
  watchMedia(pc, peer = null) {
    let timer = null;
    pc.addEventListener('connectionstatechange', () => {
      clearTimeout(timer);
      const state = pc.connectionState;
      if (state === 'failed') pc.restartIce();
      if (state === 'disconnected') timer = setTimeout(() => { if (pc.connectionState === 'disconnected') pc.restartIce(); }, MEDIA_RESTART_MS);
      this.emit('media_state', { state: this.mediaState(), peer });
    });
  }

  /** Sends a data message: text (or bytes, sent base64) to the room or to `to` identities. */
  send(payload, { topic, to, reliable = true } = {}) {
    const message = { type: 'data', topic, to, reliable };
    if (typeof payload === 'string') message.payload = payload;
    else message.payload_base64 = btoa(String.fromCharCode(...new Uint8Array(payload)));
    if (this.media?.sendData(message)) return Promise.resolve();
    return this.request(message);
  }

  /** Relays a signalling payload to another peer of the room. */
  signal(to, payload) {
    this.post({ type: 'signal', to, payload });
  }

  /** Calls another session directly (no room needed). Resolves with the Call once placed. */
  async call(sessionId, { camera = true, microphone = true } = {}) {
    await this.capture({ camera, microphone });
    const call = new Call(this, null, sessionId);
    return call.place();
  }

  /** Changes this peer's display name and/or metadata. */
  update({ name, metadata } = {}) {
    return this.request({ type: 'update', name, metadata });
  }

  subscribe(track, layer) {
    return this.request({ type: 'subscribe', track, layer });
  }

  unsubscribe(track) {
    return this.request({ type: 'unsubscribe', track });
  }

  /** Chooses the simulcast layer of a received track: 0 (lowest), 1, 2 or 'highest'. */
  setLayer(track, layer) {
    return this.request({ type: 'set_layer', track, layer });
  }

  ping() {
    return this.request({ type: 'ping', data: { sent: Date.now() } });
  }

  /** Leaves the room, hangs up every call and closes the session. */
  async leave() {
    this.#closed = true;
    this.post({ type: 'leave' });
    this.#teardown();
    setTimeout(() => this.#ws?.close(1000), 200);
  }

  #teardown() {
    for (const link of this.links.values()) link.close();
    this.links.clear();
    for (const call of this.calls.values()) call.end('closed');
    this.calls.clear();
    this.media?.close();
  }

  /** The mesh link to `identity`, created on first use (`polite`: it was the other's offer). */
  #link(identity, polite) {
    let link = this.links.get(identity);
    if (!link) {
      link = new PeerLink(this, (payload) => this.signal(identity, payload), polite, { peer: identity });
      this.links.set(identity, link);
      for (const [source, track] of this.local) link.addTrack(track, source);
      if (!polite) link.ensureOffer();
    }
    return link;
  }

  /** Every RTCPeerConnection of this session (mesh links, calls, the SFU connection). */
  peerConnections() {
    const pcs = [...this.links.values()].map((l) => l.pc);
    for (const call of this.calls.values()) if (call.link) pcs.push(call.link.pc);
    if (this.media) pcs.push(this.media.pc);
    return pcs;
  }

  /** Inbound and outbound RTP statistics of every connection (getStats, flattened). */
  async stats() {
    const out = [];
    for (const pc of this.peerConnections()) {
      const report = await pc.getStats();
      report.forEach((s) => {
        if (s.type === 'inbound-rtp' || s.type === 'outbound-rtp') {
          out.push({
            type: s.type, kind: s.kind, mid: s.mid, rid: s.rid, ssrc: s.ssrc,
            bytes: s.type === 'inbound-rtp' ? s.bytesReceived : s.bytesSent,
            packets: s.type === 'inbound-rtp' ? s.packetsReceived : s.packetsSent,
            framesDecoded: s.framesDecoded, framesEncoded: s.framesEncoded,
            frameWidth: s.frameWidth, frameHeight: s.frameHeight, trackIdentifier: s.trackIdentifier,
          });
        }
      });
    }
    return out;
  }
}

/**
 * Captures the requested local sources (from the devices picked in `devices`, {camera,
 * microphone} -> deviceId); resolves with [source, MediaStreamTrack] pairs.
 */
async function captureMedia({ camera, microphone, screen }, devices = {}) {
  const out = [];
  const pick = (constraints, deviceId) => (deviceId ? { ...constraints, deviceId: { exact: deviceId } } : constraints);
  if (camera || microphone) {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: camera ? pick(camera === true ? { width: 1280, height: 720 } : camera, devices.camera) : false,
      audio: microphone ? pick(microphone === true ? {} : microphone, devices.microphone) : false,
    });
    for (const track of stream.getTracks()) out.push([track.kind === 'video' ? 'camera' : 'microphone', track]);
  }
  if (screen) {
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: screen === true ? {} : screen });
    for (const track of stream.getVideoTracks()) out.push(['screen', track]);
  }
  return out;
}

/**
 * A peer-to-peer RTCPeerConnection negotiated with the "perfect negotiation" pattern: either side
 * may (re)offer; on a collision the polite side yields. Used for mesh rooms and direct calls,
 * where the server only relays `{sdp, sources}` and `{candidate}` payloads (`sources` maps the
 * sender's stream ids to 'camera', 'microphone' or 'screen').
 */
class PeerLink {
  constructor(session, send, polite, { peer, call }) {
    this.session = session;
    this.send = send;
    this.polite = polite;
    this.peer = peer;
    this.makingOffer = false;
    this.ignoreOffer = false;
    // Set while an answer is being applied: the connection is about to be stable, so an offer
    // arriving then is no collision (the "perfect negotiation" pattern's
    // isSettingRemoteAnswerPending; without it the impolite side dropped such an offer for good
    // and the other side stayed in have-local-offer, its tracks never shown).
    this.settingRemoteAnswer = false;
    this.sources = {};         // local stream id -> source
    this.remoteSources = {};   // remote stream id -> source
    this.pc = new RTCPeerConnection(session.rtcConfiguration());
    session.watchMedia(this.pc, peer);
    this.pc.onicecandidate = ({ candidate }) => { if (candidate) this.send({ candidate: candidate.toJSON() }); };
    this.pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await this.pc.setLocalDescription();
        this.#sendDescription();
      } catch (err) {
        session.emit('error', { code: 'negotiation_failed', message: String(err) });
      } finally {
        this.makingOffer = false;
      }
    };
    this.pc.ontrack = ({ track, streams, transceiver }) => {
      const stream = streams[0] ?? new MediaStream([track]);
      const source = this.remoteSources[stream.id] ?? (track.kind === 'video' ? 'camera' : 'microphone');
      const event = { track, stream, peer, source, receiver: transceiver.receiver, mid: transceiver.mid, call: call?.id };
      track.addEventListener('ended', () => session.emit('track_ended', { track, peer }));
      session.emit('track', event);
      call?.emit('track', event);
    };
  }

  #sendDescription() {
    this.send({ sdp: this.pc.localDescription.toJSON(), sources: this.sources });
  }

  addTrack(track, source) {
    if (this.pc.getSenders().some((s) => s.track === track)) return;
    const stream = new MediaStream([track]);
    this.sources[stream.id] = source;
    this.pc.addTrack(track, stream);
  }

  /** Makes sure an offer goes out even with nothing to send (receive-only). */
  ensureOffer() {
    if (this.pc.getTransceivers().length === 0) {
      this.pc.addTransceiver('audio', { direction: 'recvonly' });
      this.pc.addTransceiver('video', { direction: 'recvonly' });
    }
  }

  async signal({ sdp, sources, candidate } = {}) {
    try {
      if (sdp) {
        Object.assign(this.remoteSources, sources ?? {});
        const ready = !this.makingOffer && (this.pc.signalingState === 'stable' || this.settingRemoteAnswer);
        const collision = sdp.type === 'offer' && !ready;
        this.ignoreOffer = !this.polite && collision;
        if (this.ignoreOffer) return;
        this.settingRemoteAnswer = sdp.type === 'answer';
        try {
          await this.pc.setRemoteDescription(sdp);
        } finally {
          this.settingRemoteAnswer = false;
        }
        if (sdp.type === 'offer') {
          for (const [source, track] of this.session.local) this.addTrack(track, source);
          await this.pc.setLocalDescription();
          this.#sendDescription();
        }
      } else if (candidate) {
        try { await this.pc.addIceCandidate(candidate); } catch (err) { if (!this.ignoreOffer) throw err; }
      }
    } catch (err) {
      this.session.emit('error', { code: 'negotiation_failed', message: String(err) });
    }
  }

  close() {
    for (const receiver of this.pc.getReceivers()) this.session.emit('track_ended', { track: receiver.track, peer: this.peer });
    this.pc.close();
  }
}

/**
 * A 1:1 direct call with another session, negotiated peer to peer through the server: the
 * caller's first offer rides on the `call` request, everything after on `call_signal`.
 * Events: `track`, `ended` ({reason}).
 */
export class Call extends Emitter {
  constructor(session, id, remote, incoming = null) {
    super();
    this.session = session;
    this.id = id;                       // CA_..., named by the server
    this.remote = remote;               // the other session's id
    this.identity = incoming?.identity; // the caller's identity and name, for incoming calls
    this.name = incoming?.name;
    this.incoming = Boolean(incoming);
    this.offer = incoming?.payload;
    this.link = null;
    this.ended = false;
    this.queue = [];                    // payloads produced before the server named the call
    this.early = [];                    // the caller's candidates that came before accept()
    this.placed = null;
  }

  #send(payload) {
    if (this.id) {
      this.session.post({ type: 'call_signal', call: this.id, payload });
      return;
    }
    if (this.placed || !payload.sdp) {
      this.queue.push(payload);
      return;
    }
    this.placed = this.session.request({ type: 'call', to: this.remote, payload }).then((started) => {
      this.id = started.call;
      this.session.calls.set(this.id, this);
      for (const queued of this.queue.splice(0)) this.#send(queued);
      return this;
    });
    this.placed.catch(() => this.end('failed'));
    this.#resolvePlaced?.(this.placed);
  }

  #resolvePlaced;

  #makeLink(polite) {
    const peer = this.identity ?? this.remote;
    this.link = new PeerLink(this.session, (payload) => this.#send(payload), polite, { peer, call: this });
    for (const [source, track] of this.session.local) this.link.addTrack(track, source);
  }

  /** Places an outgoing call; resolves once the server has delivered the offer. */
  place() {
    const placed = new Promise((resolve) => { this.#resolvePlaced = resolve; });
    this.#makeLink(false);
    this.link.ensureOffer();
    return placed;
  }

  /** Accepts an incoming call, sending `camera`/`microphone` (captured if not yet). */
  async accept({ camera = true, microphone = true } = {}) {
    await this.session.capture({ camera, microphone });
    this.#makeLink(true);
    await this.link.signal(this.offer);
    for (const payload of this.early.splice(0)) await this.link.signal(payload);
  }

  /** Signalling from the other party; kept until the call is accepted. */
  onSignal(payload) {
    if (this.link) this.link.signal(payload);
    else this.early.push(payload);
  }

  /** Declines or ends the call. */
  hangup() {
    if (this.id && !this.ended) this.session.post({ type: 'hangup', call: this.id });
    this.session.calls.delete(this.id);
    this.end('hangup');
  }

  end(reason) {
    if (this.ended) return;
    this.ended = true;
    if (this.link) {
      this.link.close();
      // A closed connection reports no state change: the session's may be better now.
      this.session.emit('media_state', { state: this.session.mediaState(), peer: this.link.peer });
    }
    this.emit('ended', { reason });
  }
}

/**
 * The WebRTC connection to Junction in an SFU room. One RTCPeerConnection carries what this
 * session publishes (a sendonly transceiver per source, three simulcast layers for a camera when
 * asked) and every track it receives: the server adds an m-line per subscription and sends a
 * renegotiation `offer` naming the track on each m-line. Two data channels carry room data
 * messages (`junction-reliable`, and `junction-unreliable`: unordered, no retransmissions).
 * Negotiation: the client is the impolite side — when both offer at once the server rolls its
 * offer back, answers the client's, and offers again.
 */
class SfuMedia {
  constructor(session) {
    this.session = session;
    this.pc = new RTCPeerConnection(session.rtcConfiguration({ bundlePolicy: 'max-bundle' }));
    session.watchMedia(this.pc);
    this.remote = new Map();     // mid -> {mid, track, peer, kind, source} from the server's offers
    this.received = new Map();   // server track id -> {track, receiver, peer}
    this.published = new Map();  // source -> {source, transceiver, info}
    this.channels = {
      reliable: this.pc.createDataChannel('junction-reliable'),
      unreliable: this.pc.createDataChannel('junction-unreliable', { ordered: false, maxRetransmits: 0 }),
    };
    for (const [kind, channel] of Object.entries(this.channels)) {
      channel.onmessage = ({ data }) => {
        let message;
        try { message = JSON.parse(data); } catch { return; }
        session.emit('data', { type: 'data', ...message, reliable: kind === 'reliable', via: 'datachannel' });
      };
    }
    // Offers and the server's messages are handled one at a time, in order: an answer must be
    // applied before the offer that follows it is looked at.
    this.queue = Promise.resolve();
    this.pc.onnegotiationneeded = () => this.#enqueue(() => this.#offer());
    this.pc.onicecandidate = ({ candidate }) => {
      session.post({ type: 'candidate', candidate: candidate?.candidate || null, sdp_mid: candidate?.sdpMid ?? undefined });
    };
    this.pc.ontrack = ({ track, streams, transceiver }) => {
      const info = this.remote.get(transceiver.mid);
      if (!info) return;
      this.received.set(info.track, { track, receiver: transceiver.receiver, peer: info.peer });
      const stream = streams[0] ?? new MediaStream([track]);
      session.emit('track', {
        track, stream, peer: info.peer, source: sdkSource(info.source), receiver: transceiver.receiver, mid: transceiver.mid,
        trackInfo: session.tracks.get(info.track) ?? { id: info.track, peer: info.peer, kind: info.kind, source: info.source },
      });
    };
  }

  handles(message) {
    return ['offer', 'answer', 'candidate', 'published', 'unsubscribed', 'media_ended'].includes(message.type);
  }

  async #offer() {
    // Negotiation is needed again once stable, if it still is.
    if (this.pc.signalingState !== 'stable') return;
    try {
      await this.pc.setLocalDescription();
      this.#postOffer();
    } catch (err) {
      this.session.emit('error', { code: 'negotiation_failed', message: String(err) });
    }
  }

  #postOffer() {
    const tracks = [...this.published.values()]
      .filter((p) => p.transceiver.mid !== null)
      .map((p) => ({ mid: p.transceiver.mid, source: wireSource(p.source) }));
    this.session.post({ type: 'offer', sdp: this.pc.localDescription.sdp, tracks });
  }

  /** After a dropped socket: an offer still waiting for its answer may never have left. */
  resendOffer() {
    this.#enqueue(async () => { if (this.pc.signalingState === 'have-local-offer') this.#postOffer(); });
  }

  #enqueue(task) {
    this.queue = this.queue.then(task, task);
    return this.queue;
  }

  onMessage(message) {
    return this.#enqueue(() => this.#handle(message));
  }

  async #handle(message) {
    try {
      switch (message.type) {
        case 'offer':
          // Impolite: while our own offer is out, the server yields and offers again later.
          if (this.pc.signalingState !== 'stable') return;
          for (const line of message.tracks ?? []) this.remote.set(line.mid, line);
          await this.pc.setRemoteDescription({ type: 'offer', sdp: message.sdp });
          await this.pc.setLocalDescription();
          this.session.post({ type: 'answer', sdp: this.pc.localDescription.sdp });
          break;
        case 'answer':
          if (this.pc.signalingState === 'have-local-offer') await this.pc.setRemoteDescription({ type: 'answer', sdp: message.sdp });
          break;
        case 'candidate':
          if (message.candidate) await this.pc.addIceCandidate({ candidate: message.candidate, sdpMid: message.sdp_mid ?? '0' });
          break;
        case 'published':
          for (const entry of this.published.values()) {
            if (entry.transceiver.mid === message.mid) entry.info = message.track;
          }
          break;
        case 'unsubscribed': {
          const received = this.received.get(message.track);
          this.received.delete(message.track);
          if (received) this.session.emit('track_ended', { track: received.track, peer: received.peer });
          break;
        }
        case 'media_ended':
          break;
      }
    } catch (err) {
      // The m-lines of both descriptions, for a refused offer to say what did not match.
      const mids = (sdp) => [...(sdp ?? '').matchAll(/^a=mid:(\S+)/gm)].map((m) => m[1]).join(',');
      const lines = message.type === 'offer' ? ` (offered m-lines ${mids(message.sdp)}; negotiated ${mids(this.pc.currentRemoteDescription?.sdp)})` : '';
      this.session.emit('error', { code: 'negotiation_failed', message: `${err}${lines}` });
    }
  }

  /** Sends `track` to the room; a camera with `simulcast` goes out in three layers. */
  async publish(track, source, simulcast) {
    if ([...this.published.values()].some((p) => p.transceiver.sender.track === track)) return;
    const transceiver = this.pc.addTransceiver(track, {
      direction: 'sendonly',
      streams: [new MediaStream([track])],
      sendEncodings: simulcast && track.kind === 'video' ? SIMULCAST_LAYERS.map((l) => ({ ...l })) : undefined,
    });
    this.published.set(source, { source, transceiver, info: null });
  }

  /** The server's description of what this session publishes from `source`, once known. */
  publishedTrack(source) {
    return this.published.get(source)?.info ?? null;
  }

  async mute(source, muted) {
    const info = this.publishedTrack(source);
    if (info) await this.session.request({ type: 'mute', track: info.id, muted });
  }

  /** Sends a data message over the matching data channel; false if it is not open. */
  sendData({ payload, payload_base64, topic, to, reliable }) {
    const channel = reliable ? this.channels.reliable : this.channels.unreliable;
    if (channel.readyState !== 'open') return false;
    channel.send(JSON.stringify({ payload, payload_base64, topic, to }));
    return true;
  }

  close() {
    for (const { track, peer } of this.received.values()) this.session.emit('track_ended', { track, peer });
    this.received.clear();
    this.pc.close();
  }
}
