// Two tabs open the demo room page with ?autopublish=1; each must decode the other's camera —
// through Junction in an SFU room, peer to peer in a mesh room. Prints, per tab, two samples of
// its inbound video statistics taken two seconds apart, its tiles, and what it logged.
// Args: {base, room, tokens: [a, b]}.
import { run, open, until, inboundVideo, sleep } from './runner.mjs';

run(async (browser, { base, room, tokens }, logs) => {
  const pages = [];
  for (const [i, token] of tokens.entries()) {
    const page = await open(browser, `${base}/room/${room}?token=${token}&autopublish=1`, logs, `tab${i}`);
    await page.waitForFunction(() => window.junction?.session?.room, null, { timeout: 20_000 });
    pages.push(page);
  }
  for (const [i, page] of pages.entries()) {
    await until(`tab${i} decoding video`, 30_000, async () => {
      const stats = await inboundVideo(page);
      return stats.some((s) => s.framesDecoded > 0);
    });
  }
  const first = await Promise.all(pages.map((p) => inboundVideo(p)));
  await sleep(2000);
  const second = await Promise.all(pages.map((p) => inboundVideo(p)));
  const tiles = await Promise.all(pages.map((p) => p.evaluate(() => [...window.junction.tiles.values()].map((t) => ({ peer: t.peer, kind: t.track.kind, source: t.source, kbps: t.kbps })))));
  const errors = await Promise.all(pages.map((p) => p.evaluate(() => window.junction.error)));
  return { first, second, tiles, errors, logs };
});
