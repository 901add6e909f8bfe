// One tab opens the demo room page with ?autopublish=1 and keeps publishing its fake camera and
// microphone for `hold_ms`, while the test watches the room with other protocols. Prints two
// samples of its outbound video statistics and the milliseconds between them. With
// `synced_hz`, its camera and microphone flash and beep together (lipsync.mjs); with `watch`
// ({peer, tab, whep}: the tab's identity and viewer tokens), a room tab and a WHEP player in the
// same browser measure its lip sync while it publishes. Args: {base, room, token, hold_ms,
// synced_hz, watch}.
import { run, open, until, sleep } from './runner.mjs';
import { syncedSource, syncAtViewers } from './lipsync.mjs';

const outboundVideo = (page) => page.evaluate(async () => {
  const session = window.junction?.session;
  if (!session) return [];
  return (await session.stats()).filter((s) => s.type === 'outbound-rtp' && s.kind === 'video');
});

run(async (browser, { base, room, token, hold_ms, synced_hz, watch }, logs) => {
  const init = synced_hz ? [[syncedSource, synced_hz]] : [];
  const page = await open(browser, `${base}/room/${room}?token=${token}&autopublish=1`, logs, 'tab', init);
  await page.waitForFunction(() => window.junction?.session?.room, null, { timeout: 20_000 });
  await until('the tab sending video', 30_000, async () => (await outboundVideo(page)).some((s) => s.framesEncoded > 0));
  const first = await outboundVideo(page);
  const firstAt = Date.now();
  const [, sync] = await Promise.all([sleep(hold_ms), watch ? syncAtViewers(browser, { base, room, ...watch }, logs) : null]);
  const second = await outboundVideo(page);
  const elapsed_ms = Date.now() - firstAt;
  const error = await page.evaluate(() => window.junction.error ?? null);
  return { first, second, elapsed_ms, error, sync, logs };
});
