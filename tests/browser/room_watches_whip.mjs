// Across protocols: tab 1 publishes its fake camera and microphone through /whip.html; tab 2
// opens the demo room page without publishing and must show the WHIP peer like any other —
// in its peer list, with tiles, decoding its video. Prints tab 2's inbound video statistics
// twice, 2 s apart, its tiles and peer list. Args: {base, room, publishToken, roomToken}.
import { run, open, until, decodingSamples } from './runner.mjs';

run(async (browser, { base, room, publishToken, roomToken }, logs) => {
  const q = (v) => encodeURIComponent(v);
  const publisher = await open(browser, `${base}/whip.html?room=${q(room)}&token=${q(publishToken)}&autostart=1`, logs, 'whip');
  await until('the WHIP tab connected', 30_000, async () => {
    const { state, error } = await publisher.evaluate(() => window.whip);
    if (state === 'failed') throw new Error(`whip page failed: ${error}`);
    return state === 'connected';
  });
  const page = await open(browser, `${base}/room/${q(room)}?token=${q(roomToken)}`, logs, 'room');
  await page.waitForFunction(() => window.junction?.session?.room, null, { timeout: 20_000 });
  const { first: [first], second: [second] } = await decodingSamples([page]);
  const tiles = await page.evaluate(() => [...window.junction.tiles.values()].map((t) => ({ peer: t.peer, kind: t.track.kind, source: t.source })));
  const peers = await page.evaluate(() => [...window.junction.session.peers.values()].map((p) => ({ identity: p.identity, transport: p.transport })));
  const error = await page.evaluate(() => window.junction.error);
  await publisher.click('#stop');
  return { first, second, tiles, peers, error, logs };
});
