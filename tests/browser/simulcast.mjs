// Tab 0 publishes its camera in three simulcast layers (q, h, f) in an SFU room; tab 1 forces
// each layer in turn with `setLayer` and must then decode frames of that layer's size (the
// size tab 0 sends that rid at). Prints, per layer, the sizes and decoded-frame counts seen.
// Args: {base, room, tokens: [publisher, viewer], receive?}; with `receive` (`h264`) the viewer
// decodes only that video codec (`?receive=`), and the codec it decodes is reported.
import { run, open, until, inboundVideo, sleep } from './runner.mjs';

const RIDS = ['q', 'h', 'f'];

const outboundLayers = (page) => page.evaluate(async () =>
  (await window.junction.session.stats()).filter((s) => s.type === 'outbound-rtp' && s.kind === 'video'));

const videoCodec = async (page) => page.evaluate(async () => {
  for (const pc of window.junction.session.peerConnections()) {
    const report = [...(await pc.getStats()).values()];
    const inbound = report.find((s) => s.type === 'inbound-rtp' && s.kind === 'video' && s.framesDecoded > 0);
    const codec = report.find((s) => s.id === inbound?.codecId)?.mimeType;
    if (codec) return codec;
  }
  return null;
});

run(async (browser, { base, room, tokens, receive }, logs) => {
  const publisher = await open(browser, `${base}/room/${room}?token=${tokens[0]}&autopublish=1&simulcast=1`, logs, 'publisher');
  await publisher.waitForFunction(() => window.junction?.session?.room, null, { timeout: 20_000 });
  const viewer = await open(browser, `${base}/room/${room}?token=${tokens[1]}&autopublish=1${receive ? `&receive=${receive}` : ''}`, logs, 'viewer');
  await viewer.waitForFunction(() => window.junction?.session?.room, null, { timeout: 20_000 });
  await until('the viewer decoding video', 30_000, async () => (await inboundVideo(viewer)).some((s) => s.framesDecoded > 0));
  const track = await until('the three-layer track in the viewer', 10_000, () => viewer.evaluate(() =>
    [...window.junction.session.tracks.values()].find((t) => t.kind === 'video' && t.layers?.length === 3)?.id));
  const layers = [];
  for (const [layer, rid] of RIDS.entries()) {
    await viewer.evaluate(({ track, layer }) => window.junction.session.setLayer(track, layer), { track, layer });
    const width = await until(`layer ${rid} decoded at its size`, 30_000, async () => {
      const sent = (await outboundLayers(publisher)).find((s) => s.rid === rid)?.frameWidth;
      const seen = (await inboundVideo(viewer)).find((s) => s.frameWidth)?.frameWidth;
      return sent && seen === sent ? sent : null;
    });
    const before = Math.max(0, ...(await inboundVideo(viewer)).map((s) => s.framesDecoded ?? 0));
    await sleep(1500);
    const after = Math.max(0, ...(await inboundVideo(viewer)).map((s) => s.framesDecoded ?? 0));
    const stillWidth = (await inboundVideo(viewer)).find((s) => s.frameWidth)?.frameWidth;
    layers.push({ layer, rid, width, stillWidth, before, after, codec: await videoCodec(viewer) });
  }
  const errors = await Promise.all([publisher, viewer].map((p) => p.evaluate(() => window.junction.error ?? null)));
  return { track, layers, errors, logs };
});
