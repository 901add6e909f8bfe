// Two room tabs in one browser publish into one room, each a camera of its own: a canvas of one
// colour (`colors[i]`) with a white box sweeping across it, and the fake microphone (the
// `fake_audio` tone). The second tab joins once the first sends video, so the grid's order is
// the tabs' order. They publish for `hold_ms` while the test watches the room's grid outputs.
// Args: {base, room, tokens, colors, hold_ms, fake_audio}.
import { run, open, until, sleep } from './runner.mjs';

/** Init script: getUserMedia's camera is a `color` canvas with a moving white box. */
function coloredCamera(color) {
  const devices = navigator.mediaDevices;
  const original = devices.getUserMedia.bind(devices);
  devices.getUserMedia = async (constraints) => {
    const tracks = constraints.audio ? (await original({ audio: constraints.audio })).getAudioTracks() : [];
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

run(async (browser, { base, room, tokens, colors, hold_ms }, logs) => {
  const tabs = [];
  for (const [i, token] of tokens.entries()) {
    const page = await open(browser, `${base}/room/${room}?token=${token}&autopublish=1`, logs, `tab${i}`, [[coloredCamera, colors[i]]]);
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
