// Two tabs open the demo room page with ?autopublish=1; each must decode the other's camera —
// through Junction in an SFU room, peer to peer in a mesh room. Prints, per tab, two samples of
// its inbound video statistics taken two seconds apart, its tiles, what it logged, the session
// events it saw and its connections' transceivers.
// Args: {base, room, tokens: [a, b]}.
import { run, open, sleep, decodingSamples } from './runner.mjs';

run(async (browser, { base, room, tokens }, logs) => {
  const pages = [];
  for (const [i, token] of tokens.entries()) {
    const page = await open(browser, `${base}/room/${room}?token=${token}&autopublish=1`, logs, `tab${i}`);
    await page.waitForFunction(() => window.junction?.session?.room, null, { timeout: 20_000 });
    // What the session reported, for a failing assertion to show.
    await page.evaluate(() => {
      window.trace = [];
      const names = ['track', 'track_ended', 'peer_joined', 'peer_left', 'reconnecting', 'reconnected', 'session_lost', 'closed'];
      for (const name of names) {
        window.junction.session.on(name, (e) => window.trace.push([name, e?.peer?.identity ?? e?.peer ?? e?.identity, e?.track?.kind, e?.track?.id, e?.mid].filter((v) => v !== undefined).join(' ')));
      }
    });
    pages.push(page);
  }
  const { first, second } = await decodingSamples(pages);
  // Each tab shows the other's audio and video; a renegotiation may replace a tile for a moment,
  // so the tiles are read once both are there (or after 10 s, for the test to report).
  const readTiles = () => Promise.all(pages.map((p) => p.evaluate(() => [...window.junction.tiles.values()].map((t) => ({ peer: t.peer, kind: t.track.kind, source: t.source, kbps: t.kbps })))));
  let tiles = await readTiles();
  for (const deadline = Date.now() + 10_000; Date.now() < deadline && !tiles.every((t) => t.some((x) => x.kind === 'video') && t.some((x) => x.kind === 'audio')); await sleep(250)) {
    tiles = await readTiles();
  }
  const errors = await Promise.all(pages.map((p) => p.evaluate(() => window.junction.error)));
  const trace = await Promise.all(pages.map((p) => p.evaluate(() => window.trace)));
  // Each connection's transceivers as the tab ends: for a missing tile to show whether the
  // media was negotiated (directions) and whether the track lives.
  const transceivers = await Promise.all(pages.map((p) => p.evaluate(() => window.junction.session.peerConnections().map((pc) => ({
    signaling: pc.signalingState,
    transceivers: pc.getTransceivers().map((t) => [t.mid, t.direction, t.currentDirection, t.receiver.track.kind, t.receiver.track.readyState, t.receiver.track.muted].join(' ')),
  })))));
  return { first, second, tiles, errors, trace, transceivers, logs };
});
