// A tab opens the room page as a listener (nothing published) and measures what it hears from
// one peer: the peer's audio track goes through Web Audio's analyser (a 32768-point FFT, 1.5 Hz
// bins at 48 kHz) and the loudest bin is reported, with the inbound-rtp statistics' decoded
// energy; with `video`, also how many of the peer's video frames the tab decoded over 2 s; with
// `sync`, the lip sync the tab presents (lipsync.mjs: the peer flashes and beeps together), and
// with `whep` (a token), that of a `/whep.html` player of the peer in the same browser, and
// the browser's own peer-to-peer offset for reference.
// Args: {base, room, token, peer, video, sync, whep}.
import { run, roomPage, until, sleep, toneMeter } from './runner.mjs';
import { syncMeter, syncAtViewers } from './lipsync.mjs';

const framesDecoded = (page, peer) => page.evaluate(async (peer) => {
  const tile = [...window.junction.tiles.values()].find((t) => t.peer === peer && t.track.kind === 'video');
  if (!tile) return 0;
  let frames = 0;
  for (const s of (await tile.receiver.getStats()).values()) {
    if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded ?? 0;
  }
  return frames;
}, peer);

run(async (browser, { base, room, token, peer, video, sync, whep }, logs) => {
  const page = await roomPage(browser, base, room, token, logs, sync ? [[toneMeter], [syncMeter]] : [[toneMeter]]);
  await until(`an audio tile of ${peer}`, 20_000, () =>
    page.evaluate((peer) => [...window.junction.tiles.values()].some((t) => t.peer === peer && t.track.kind === 'audio'), peer));
  // Let the jitter buffer settle, then take the spectrum of what plays.
  await sleep(1500);
  const heard = await page.evaluate(async (peer) => {
    const tile = [...window.junction.tiles.values()].find((t) => t.peer === peer && t.track.kind === 'audio');
    const { hz, peakDb } = await window.hearTone((context) => context.createMediaStreamSource(new MediaStream([tile.track])));
    let energy = 0;
    for (const s of (await tile.receiver.getStats()).values()) {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') energy = s.totalAudioEnergy;
    }
    return { hz, peakDb, energy, codec: tile.receiver.track?.kind };
  }, peer);
  let decoded = null;
  if (video) {
    await until(`${peer}'s video decoding`, 20_000, async () => (await framesDecoded(page, peer)) > 0);
    const before = await framesDecoded(page, peer);
    await sleep(2000);
    decoded = (await framesDecoded(page, peer)) - before;
  }
  const synced = sync ? await syncAtViewers(browser, { base, room, peer, whep, tabPage: page }, logs) : null;
  const error = await page.evaluate(() => window.junction.error);
  return { heard, decoded, sync: synced, error, logs };
});
