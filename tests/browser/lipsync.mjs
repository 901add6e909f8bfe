// Lip sync in Chromium, at both ends of a call. A publishing tab gets a camera and a microphone
// that flash and beep together (`syncedSource`, installed before the page's own scripts: it
// replaces getUserMedia with a canvas and a Web Audio tone driven by one clock, white and
// sounding for the first half of every second, as support/lipsync.rs's ffmpeg source). A viewing
// tab measures what its user would see and hear (`syncOf`): each video frame's mean luma when
// Chromium presents it (requestVideoFrameCallback's expectedDisplayTime) and each beep's onset in
// the audio (an AudioWorklet, sample-accurate, mapped to the same clock through
// AudioContext.getOutputTimestamp, i.e. when it reaches the speaker); the median of beep minus
// flash is the offset. Chromium needs seconds to settle its audio/video sync on a new stream, so
// measuring starts [`SETTLE_MS`] after the media arrived.
//
// Headless Chromium on this meter is not at zero even between two of its own peer connections:
// `referenceSync` measures that (a loopback call in one tab, no server between) in the same
// browser, so that a test can tell what the server adds from what the browser does anyway.
import { open, roomPage, until, sleep } from './runner.mjs';

/** How long after its media arrived a viewer is left to settle before it is measured. */
export const SETTLE_MS = 10000;
/** How long a viewer is measured. */
export const MEASURE_MS = 8000;

/** Init script: getUserMedia returns the flashing canvas and the `hz` beep. */
export function syncedSource(hz) {
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const clock = new AudioContext({ sampleRate: 48000 });
    await clock.resume();
    // Cycles start on a whole second of the audio clock, a second from now.
    const start = Math.ceil(clock.currentTime) + 1;
    const tracks = [];
    if (constraints.audio) {
      const tone = clock.createOscillator();
      tone.frequency.value = hz;
      const gate = clock.createGain();
      gate.gain.value = 0;
      for (let s = 0; s < 900; s++) {
        gate.gain.setValueAtTime(0.5, start + s);
        gate.gain.setValueAtTime(0, start + s + 0.5);
      }
      const out = clock.createMediaStreamDestination();
      tone.connect(gate).connect(out);
      tone.start();
      tracks.push(out.stream.getAudioTracks()[0]);
    }
    if (constraints.video) {
      const canvas = document.createElement('canvas');
      canvas.width = 640;
      canvas.height = 360;
      const g = canvas.getContext('2d');
      const draw = () => {
        const t = clock.currentTime - start;
        if (t >= 0 && t % 1 < 0.5) {
          // White, with a small dark box that moves (every picture differs, the mean stays white).
          g.fillStyle = '#fff';
          g.fillRect(0, 0, 640, 360);
          g.fillStyle = '#000';
          g.fillRect(Math.abs((t * 300) % 600), 10, 30, 30);
        } else {
          // Dark, with a box that moves, so that consecutive pictures differ.
          g.fillStyle = '#223344';
          g.fillRect(0, 0, 640, 360);
          g.fillStyle = '#e08030';
          g.fillRect(Math.abs((t * 300) % 560), 140, 80, 80);
        }
      };
      draw();
      setInterval(draw, 5);
      tracks.push(canvas.captureStream(30).getVideoTracks()[0]);
    }
    return new MediaStream(tracks);
  };
}

/** Init script: `window.measureSync(videoTrack, audioTrack, ms)` (see the header). */
export function syncMeter() {
  window.measureSync = async (videoTrack, audioTrack, ms) => {
    // What reaches Web Audio depends on whether the page plays the track to a (headless, fake)
    // speaker, whose latency Chromium adds: muted, every page and the reference measure alike.
    for (const element of document.querySelectorAll('audio, video')) element.muted = true;
    const flashes = [];
    const element = document.createElement('video');
    element.muted = true;
    element.playsInline = true;
    element.width = 160;
    element.height = 90;
    element.srcObject = new MediaStream([videoTrack]);
    document.body.appendChild(element);
    await element.play();
    const canvas = document.createElement('canvas');
    canvas.width = 16;
    canvas.height = 9;
    const g = canvas.getContext('2d', { willReadFrequently: true });
    let light = false;
    let done = false;
    let frames = 0;
    const onFrame = (_now, meta) => {
      if (done) return;
      frames += 1;
      g.drawImage(element, 0, 0, 16, 9);
      const px = g.getImageData(0, 0, 16, 9).data;
      let sum = 0;
      for (let i = 0; i < px.length; i += 4) sum += 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
      const isLight = sum / (px.length / 4) > 200;
      if (isLight && !light) flashes.push(meta.expectedDisplayTime);
      light = isLight;
      element.requestVideoFrameCallback(onFrame);
    };
    element.requestVideoFrameCallback(onFrame);

    const context = new AudioContext({ sampleRate: 48000 });
    await context.resume();
    // An onset: a sample above 0.05 after at least 200 ms below it.
    const processor = `registerProcessor('onsets', class extends AudioWorkletProcessor {
      constructor() { super(); this.quiet = 0; }
      process(inputs) {
        const samples = inputs[0][0];
        if (samples) for (let i = 0; i < samples.length; i++) {
          if (Math.abs(samples[i]) > 0.05) {
            if (this.quiet > 0.2 * sampleRate) this.port.postMessage(currentTime + i / sampleRate);
            this.quiet = 0;
          } else this.quiet += 1;
        }
        return true;
      }
    });`;
    await context.audioWorklet.addModule(URL.createObjectURL(new Blob([processor], { type: 'text/javascript' })));
    const onsets = new AudioWorkletNode(context, 'onsets');
    const beepsAt = [];
    onsets.port.onmessage = (event) => beepsAt.push(event.data);
    context.createMediaStreamSource(new MediaStream([audioTrack])).connect(onsets);
    onsets.connect(context.destination);

    await new Promise((resolve) => setTimeout(resolve, ms));
    done = true;
    const stamp = context.getOutputTimestamp();
    const beeps = beepsAt.map((t) => stamp.performanceTime + (t - stamp.contextTime) * 1000);
    await context.close();
    element.remove();
    // In time order; each flash with the beep nearest to it.
    const offsets = flashes
      .map((flash) => beeps.map((beep) => beep - flash).filter((d) => Math.abs(d) < 500).sort((a, b) => Math.abs(a) - Math.abs(b))[0])
      .filter((d) => d !== undefined)
      .map((d) => Math.round(d));
    const sorted = [...offsets].sort((a, b) => a - b);
    const median = sorted.length ? sorted[Math.floor(sorted.length / 2)] : null;
    return { offset_ms: median, pairs: offsets.length, offsets, frames, flashes: flashes.length, beeps: beeps.length };
  };
}

/** Lip sync of `peer` as a room tab (the page of `roomPage`) presents it, over `ms`. */
export function roomTabSync(page, peer, ms = MEASURE_MS) {
  return page.evaluate(async ({ peer, ms }) => {
    const tiles = [...window.junction.tiles.values()].filter((t) => t.peer === peer);
    const video = tiles.find((t) => t.track.kind === 'video')?.track;
    const audio = tiles.find((t) => t.track.kind === 'audio')?.track;
    if (!video || !audio) throw new Error(`${peer} has no video and audio tiles`);
    return window.measureSync(video, audio, ms);
  }, { peer, ms });
}

/** Lip sync of what `/whep.html` in `page` plays, over `ms`. */
export function whepSync(page, ms = MEASURE_MS) {
  return page.evaluate(async (ms) => {
    const tracks = window.whep.pc.getReceivers().map((r) => r.track);
    return window.measureSync(tracks.find((t) => t.kind === 'video'), tracks.find((t) => t.kind === 'audio'), ms);
  }, ms);
}

/** Opens `/whep.html` playing `identity` of `room` and waits until it decodes video. */
export async function whepPlayer(browser, { base, room, token, identity }, logs) {
  const q = (v) => encodeURIComponent(v);
  const url = `${base}/whep.html?room=${q(room)}&token=${q(token)}&identity=${q(identity)}&autostart=1`;
  const page = await open(browser, url, logs, 'whep', [[syncMeter]]);
  await until('the WHEP tab decoding video', 30_000, () => page.evaluate(async () => {
    if (window.whep.state === 'failed') throw new Error(`whep page failed: ${window.whep.error}`);
    if (!window.whep.pc) return false;
    let decoded = 0;
    (await window.whep.pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') decoded = r.framesDecoded ?? 0;
    });
    return decoded > 0;
  }));
  return page;
}

/**
 * The offsets measured for `peer` of `room` by a room tab (`tabPage`, a room page opened with
 * [`syncMeter`], or a new one when `tab`, its token, is given) and by a `/whep.html` player (when
 * `whep` is), side by side in `browser`, with the browser's own reference. With `after_ms` the
 * pages open that much later (other viewers start meanwhile without Chromium's start-up load).
 */
export async function syncAtViewers(browser, { base, room, peer, tab, whep, tabPage: given, after_ms }, logs) {
  if (after_ms) await sleep(after_ms);
  const reference = referenceSync(browser, base, logs);
  const tabPage = given ?? (tab ? await roomPage(browser, base, room, tab, logs, [[syncMeter]]) : null);
  const whepPage = whep ? await whepPlayer(browser, { base, room, token: whep, identity: peer }, logs) : null;
  if (tabPage) {
    await until(`${peer}'s video and audio in the room tab`, 20_000, () => tabPage.evaluate((peer) => {
      const kinds = [...window.junction.tiles.values()].filter((t) => t.peer === peer).map((t) => t.track.kind);
      return kinds.includes('video') && kinds.includes('audio');
    }, peer));
  }
  await sleep(SETTLE_MS);
  const [tabSync, whepSyncResult] = await Promise.all([
    tabPage ? roomTabSync(tabPage, peer) : null,
    whepPage ? whepSync(whepPage) : null,
  ]);
  return { tab: tabSync, whep: whepSyncResult, reference: await reference };
}

/**
 * The offset this browser shows between two of its own peer connections (a synced source
 * published from one to the other in one tab of `base`, settled and measured as a viewer is).
 */
export async function referenceSync(browser, base, logs) {
  const page = await open(browser, `${base}/whep.html`, logs, 'reference', [[syncedSource, 500], [syncMeter]]);
  return page.evaluate(async ({ settle, ms }) => {
    const source = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    const [from, to] = [new RTCPeerConnection(), new RTCPeerConnection()];
    from.onicecandidate = (e) => e.candidate && to.addIceCandidate(e.candidate);
    to.onicecandidate = (e) => e.candidate && from.addIceCandidate(e.candidate);
    for (const track of source.getTracks()) from.addTrack(track, source);
    const received = [];
    const both = new Promise((resolve) => {
      to.ontrack = (event) => {
        received.push(event.track);
        if (received.length === 2) resolve();
      };
    });
    await from.setLocalDescription();
    await to.setRemoteDescription(from.localDescription);
    await to.setLocalDescription();
    await from.setRemoteDescription(to.localDescription);
    await both;
    // Chromium hands a remote audio track to Web Audio only while a media element plays it.
    const player = new Audio();
    player.muted = true;
    player.srcObject = new MediaStream(received);
    await player.play();
    await new Promise((resolve) => setTimeout(resolve, settle));
    const track = (kind) => received.find((t) => t.kind === kind);
    const result = await window.measureSync(track('video'), track('audio'), ms);
    from.close();
    to.close();
    return result;
  }, { settle: SETTLE_MS, ms: MEASURE_MS });
}
