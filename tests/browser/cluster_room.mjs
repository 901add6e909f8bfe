// Across cluster nodes: tab 1 publishes its fake camera and microphone through /whip.html of
// one node; tab 2 opens the room page of another node and must decode the publisher's video and
// receive its sound through the relay. Once sampled, it touches `marker` (the test then kills
// the publisher's node) and waits for the publisher to leave tab 2's peer list and tiles.
// Args: {publishBase, roomBase, room, publishToken, roomToken, marker}.
import { writeFileSync } from 'node:fs';
import { run, until, decodingSamples, whipPublisher, roomPage } from './runner.mjs';

run(async (browser, { publishBase, roomBase, room, publishToken, roomToken, marker }, logs) => {
  await whipPublisher(browser, publishBase, room, publishToken, logs);
  const page = await roomPage(browser, roomBase, room, roomToken, logs);
  // The raw getStats of the inbound audio: decoded energy says the sound was heard, not just
  // its packets received.
  const inboundAudio = () => page.evaluate(async () => {
    const out = [];
    for (const pc of window.junction.session.peerConnections()) {
      (await pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          out.push({ packetsReceived: s.packetsReceived, totalAudioEnergy: s.totalAudioEnergy, totalSamplesReceived: s.totalSamplesReceived, audioLevel: s.audioLevel });
        }
      });
    }
    return out;
  });
  const { first: [first], second: [second] } = await decodingSamples([page]);
  const audio = await inboundAudio();
  const peers = () => page.evaluate(() => [...window.junction.session.peers.values()].map((p) => ({ identity: p.identity, transport: p.transport })));
  const tiles = () => page.evaluate(() => [...window.junction.tiles.values()].map((t) => ({ peer: t.peer, kind: t.track.kind })));
  const before = { peers: await peers(), tiles: await tiles() };
  writeFileSync(marker, 'sampled');
  // The publisher's node is killed now: the peer must leave this tab on another node.
  const killed = Date.now();
  await until('the killed node\'s publisher gone from the room tab', 20_000, async () => {
    const [p, t] = [await peers(), await tiles()];
    return !p.some((x) => x.identity === 'camera') && !t.some((x) => x.peer === 'camera');
  });
  const goneAfterMs = Date.now() - killed;
  const error = await page.evaluate(() => window.junction.error);
  return { first, second, audio, before, after: { peers: await peers(), tiles: await tiles() }, goneAfterMs, error, logs };
});
