// One tab opens the demo room page with ?autopublish=1 and keeps publishing its fake camera and
// microphone for `hold_ms`, while the test watches the room with other protocols. Prints two
// samples of its outbound video statistics. Args: {base, room, token, hold_ms}.
import { run, open, until, sleep } from './runner.mjs';

const outboundVideo = (page) => page.evaluate(async () => {
  const session = window.junction?.session;
  if (!session) return [];
  return (await session.stats()).filter((s) => s.type === 'outbound-rtp' && s.kind === 'video');
});

run(async (browser, { base, room, token, hold_ms }, logs) => {
  const page = await open(browser, `${base}/room/${room}?token=${token}&autopublish=1`, logs, 'tab');
  await page.waitForFunction(() => window.junction?.session?.room, null, { timeout: 20_000 });
  await until('the tab sending video', 30_000, async () => (await outboundVideo(page)).some((s) => s.framesEncoded > 0));
  const first = await outboundVideo(page);
  await sleep(hold_ms);
  const second = await outboundVideo(page);
  const error = await page.evaluate(() => window.junction.error ?? null);
  return { first, second, error, logs };
});
