// Across protocols: tab 1 publishes its fake camera and microphone through /whip.html; tab 2
// opens the demo room page without publishing and must show the WHIP peer like any other —
// in its peer list, with tiles, decoding its video. Prints tab 2's inbound video statistics
// twice, 2 s apart, its tiles and peer list. Args: {base, room, publishToken, roomToken}.
import { run, decodingSamples, whipPublisher, roomPage } from './runner.mjs';

run(async (browser, { base, room, publishToken, roomToken }, logs) => {
  const publisher = await whipPublisher(browser, base, room, publishToken, logs);
  const page = await roomPage(browser, base, room, roomToken, logs);
  const { first: [first], second: [second] } = await decodingSamples([page]);
  const tiles = await page.evaluate(() => [...window.junction.tiles.values()].map((t) => ({ peer: t.peer, kind: t.track.kind, source: t.source })));
  const peers = await page.evaluate(() => [...window.junction.session.peers.values()].map((p) => ({ identity: p.identity, transport: p.transport })));
  const error = await page.evaluate(() => window.junction.error);
  await publisher.click('#stop');
  return { first, second, tiles, peers, error, logs };
});
