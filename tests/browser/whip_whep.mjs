// WHIP and WHEP from a real browser: tab 1 publishes its fake camera and microphone through
// /whip.html, tab 2 plays the room through /whep.html. Returns tab 2's inbound RTP statistics
// twice, 2 s apart, and tab 1's outbound ones. Args: {base, room, publishToken, viewToken,
// simulcast, viewCodec}; with `viewCodec` the player offers to receive only that video codec. Without `publishToken` there is no publishing tab: the player watches whoever
// publishes into the room by other means (RTMP, SIP, MoQ).
import { run, open, until, decodingSamples, rtpStats } from './runner.mjs';

/** Waits for `window[name].state` to be `wanted`; fails at once when the page failed. */
function state(page, name, wanted, ms) {
  return until(`${name} ${wanted}`, ms, async () => {
    const { state, error } = await page.evaluate((name) => window[name], name);
    if (state === 'failed') throw new Error(`${name} page failed: ${error}`);
    return state === wanted;
  });
}

run(async (browser, { base, room, publishToken, viewToken, simulcast, viewCodec }, logs) => {
  const q = (v) => encodeURIComponent(v);
  let publisher = null;
  if (publishToken) {
    publisher = await open(
      browser,
      `${base}/whip.html?room=${q(room)}&token=${q(publishToken)}&autostart=1${simulcast ? '&simulcast=1' : ''}`,
      logs,
      'whip',
    );
    await state(publisher, 'whip', 'connected', 30_000);
  }
  const codec = viewCodec ? `&codec=${q(viewCodec)}` : '';
  const viewer = await open(browser, `${base}/whep.html?room=${q(room)}&token=${q(viewToken)}&autostart=1${codec}`, logs, 'whep');
  await state(viewer, 'whep', 'connected', 30_000);
  const samples = await decodingSamples([viewer], (page) => rtpStats(page, 'whep', 'inbound-rtp'));
  const [first, second] = [samples.first[0], samples.second[0]];
  const sent = publisher ? await rtpStats(publisher, 'whip', 'outbound-rtp') : [];
  const whipResource = publisher ? await publisher.evaluate(() => window.whip.resource) : null;
  const whepResource = await viewer.evaluate(() => window.whep.resource);
  // Leave the way the pages' Stop buttons do: DELETE, then close.
  await viewer.click('#stop');
  await state(viewer, 'whep', 'stopped', 10_000);
  if (publisher) {
    await publisher.click('#stop');
    await state(publisher, 'whip', 'stopped', 10_000);
  }
  return { first, second, sent, whipResource, whepResource, logs };
});
