// Two room tabs in one browser publish into one room, each a camera of its own: a canvas of one
// colour (`colors[i]`) with a white box sweeping across it, and a microphone of its own: a
// Web Audio tone of `voices[i].hz` at amplitude `voices[i].gain`. The second tab joins once the
// first sends video. They publish for `hold_ms` while the test watches the room's outputs.
// Args: {base, room, tokens, colors, voices, hold_ms}.
import { run, open, until, sleep } from './runner.mjs';

/** Init script: getUserMedia's camera is a `color` canvas with a moving white box, its
 * microphone a `hz` tone at `gain`. */
function coloredSource({ color, hz, gain }) {
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const tracks = [];
    if (constraints.audio) {
      const context = new AudioContext({ sampleRate: 48000 });
      await context.resume();
      const tone = context.createOscillator();
      tone.frequency.value = hz;
      const level = context.createGain();
      level.gain.value = gain;
      const out = context.createMediaStreamDestination();
      tone.connect(level).connect(out);
      tone.start();
      tracks.push(out.stream.getAudioTracks()[0]);
    }
    if (constraints.video) {
      const canvas = document.createElement('canvas');
      canvas.width = 640;
      canvas.height = 360;
      const g = canvas.getContext('2d');
      const start = performance.now();
      const draw = () => {
        const t = (performance.now() - start) / 1000;
        g.fillStyle = color;
        g.fillRect(0, 0, 640, 360);
        g.fillStyle = '#fff';
        g.fillRect((t * 200) % 600, 120, 40, 120);
      };
      draw();
      setInterval(draw, 15);
      tracks.push(canvas.captureStream(30).getVideoTracks()[0]);
    }
    return new MediaStream(tracks);
  };
}

const framesSent = (page) => page.evaluate(async () => {
  const session = window.junction?.session;
  if (!session) return 0;
  const stats = await session.stats();
  return stats.filter((s) => s.type === 'outbound-rtp' && s.kind === 'video').reduce((n, s) => n + (s.framesEncoded ?? 0), 0);
});

run(async (browser, { base, room, tokens, colors, voices, hold_ms }, logs) => {
  const tabs = [];
  for (const [i, token] of tokens.entries()) {
    const source = { color: colors[i], ...voices[i] };
    const page = await open(browser, `${base}/room/${room}?token=${token}&autopublish=1`, logs, `tab${i}`, [[coloredSource, source]]);
    await page.waitForFunction(() => window.junction?.session?.room, null, { timeout: 20_000 });
    await until(`tab ${i} sending video`, 30_000, async () => (await framesSent(page)) > 0);
    tabs.push(page);
  }
  await sleep(hold_ms);
  const sent = await Promise.all(tabs.map(framesSent));
  const visible = await Promise.all(tabs.map((page) => page.evaluate(() => document.visibilityState)));
  const errors = await Promise.all(tabs.map((page) => page.evaluate(() => window.junction.error ?? null)));
  return { sent, visible, errors, logs };
});
