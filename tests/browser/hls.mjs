// A tab plays an HLS output with hls.js (npm, its low-latency mode) in a <video>: the page is
// the server's home page (same origin as the playlist), hls.js is added from node_modules. It
// reports how many frames Chromium presented over `seconds` (`frames`) and how many reached its
// decoder (`decoded`: presented or dropped as late, which a starved tab does), the tone the
// element plays (Web Audio analyser on the element, 32768-point FFT), and the latency: now
// minus the wall-clock time of the picture being shown (EXT-X-PROGRAM-DATE-TIME, the capture
// time on the server's clock), i.e. glass-to-glass from the server's ingest; and hls.js's own
// distance to the live edge.
// Args: {base, url, seconds}.
import { fileURLToPath } from 'node:url';
import { run, open, until, sleep, toneMeter } from './runner.mjs';

const HLS_JS = fileURLToPath(new URL('./node_modules/hls.js/dist/hls.min.js', import.meta.url));

run(async (browser, { base, url, seconds }, logs) => {
  const page = await open(browser, `${base}/`, logs, 'hls', [[toneMeter]]);
  await page.addScriptTag({ path: HLS_JS });
  await page.evaluate((url) => {
    const video = document.createElement('video');
    video.muted = false;
    video.autoplay = true;
    document.body.append(video);
    const hls = new window.Hls({ lowLatencyMode: true });
    window.player = { video, hls, errors: [] };
    hls.on(window.Hls.Events.ERROR, (_, data) => {
      if (data.fatal) window.player.errors.push(`${data.type}/${data.details}`);
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  }, url);
  await until('hls.js playing', 30_000, async () => {
    const { time, errors } = await page.evaluate(() => ({ time: window.player.video.currentTime, errors: window.player.errors }));
    if (errors.length) throw new Error(`hls.js: ${errors.join(', ')}`);
    return time > 0.5;
  });
  const quality = () => page.evaluate(() => {
    const q = window.player.video.getVideoPlaybackQuality();
    return { frames: q.totalVideoFrames - q.droppedVideoFrames, decoded: q.totalVideoFrames, time: window.player.video.currentTime };
  });
  const before = await quality();
  const latencies = [];
  for (let i = 0; i < seconds * 2; i++) {
    await sleep(500);
    latencies.push(await page.evaluate(() => {
      const { hls } = window.player;
      const shown = hls.playingDate?.getTime();
      return { glass_ms: shown ? Date.now() - shown : null, edge_s: hls.latency };
    }));
  }
  const after = await quality();
  const heard = await page.evaluate(() => window.hearTone((context) => context.createMediaElementSource(window.player.video)));
  const glass = latencies.map((l) => l.glass_ms).filter((v) => v !== null).sort((x, y) => x - y);
  return {
    frames: after.frames - before.frames,
    decoded: after.decoded - before.decoded,
    played_s: after.time - before.time,
    heard,
    glass_ms: glass.length ? glass[Math.floor(glass.length / 2)] : null,
    edge_s: latencies.at(-1)?.edge_s ?? null,
    errors: await page.evaluate(() => window.player.errors),
  };
});
