// One tab publishes its fake camera and microphone through /whip.html, in `codec` when given
// (the page offers only that video codec), and keeps publishing for `hold_ms` while the test
// watches with other protocols. Returns its outbound video statistics (codec, frames encoded)
// at the start and at the end. `synced_hz` and `watch` as in publish.mjs (`watch.peer` is the
// WHIP token's identity). Args: {base, room, token, codec, hold_ms, synced_hz, watch}.
import { run, open, until, sleep, rtpStats } from './runner.mjs';
import { syncedSource, syncAtViewers } from './lipsync.mjs';

const outboundVideo = async (page) =>
  (await rtpStats(page, 'whip', 'outbound-rtp')).filter((s) => s.kind === 'video');

run(async (browser, { base, room, token, codec, hold_ms, synced_hz, watch }, logs) => {
  const q = (v) => encodeURIComponent(v);
  const url = `${base}/whip.html?room=${q(room)}&token=${q(token)}&autostart=1${codec ? `&codec=${q(codec)}` : ''}`;
  const page = await open(browser, url, logs, 'whip', synced_hz ? [[syncedSource, synced_hz]] : []);
  await until('the WHIP tab connected', 30_000, async () => {
    const { state, error } = await page.evaluate(() => window.whip);
    if (state === 'failed') throw new Error(`whip page failed: ${error}`);
    return state === 'connected';
  });
  await until('the tab sending video', 30_000, async () => (await outboundVideo(page)).some((s) => s.framesEncoded > 0));
  const first = await outboundVideo(page);
  const [, sync] = await Promise.all([sleep(hold_ms), watch ? syncAtViewers(browser, { base, room, ...watch }, logs) : null]);
  const second = await outboundVideo(page);
  return { first, second, sync, logs };
});
