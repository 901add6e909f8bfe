// The room page's tiles as a participant sees them: tab 0 publishes camera and microphone, tab 1
// its microphone only (`?camera=0`), tab 2 watches. Reports what tab 2 shows per peer — its
// videos, whether its name plate shows, its audio elements and their controls — whether each
// tile lit up as speaking (Chromium's fake microphone beeps), and a screenshot of tab 2 at
// `screenshot`. Args: {base, room, tokens: [camera, microphone, viewer], screenshot}.
import { run, open, until, sleep } from './runner.mjs';

run(async (browser, { base, room, tokens, screenshot }, logs) => {
  const url = (token, extra) => `${base}/room/${room}?token=${token}${extra}`;
  const pages = [
    await open(browser, url(tokens[0], '&autopublish=1'), logs, 'camera'),
    await open(browser, url(tokens[1], '&autopublish=1&camera=0'), logs, 'microphone'),
  ];
  const viewer = await open(browser, url(tokens[2], ''), logs, 'viewer');
  await viewer.setViewportSize({ width: 1100, height: 620 });
  await until('both peers on tab 2 with their media', 30_000, () => viewer.evaluate(() => {
    const kinds = (peer) => [...window.junction.tiles.values()].filter((t) => t.peer === peer).map((t) => t.track.kind).sort().join();
    return kinds('ann') === 'audio,video' && kinds('bob') === 'audio';
  }));
  // Each peer's tile lights up at least once while its microphone beeps.
  const lit = await viewer.evaluate(() => new Promise((resolve) => {
    const seen = new Set();
    const check = () => {
      for (const tile of document.querySelectorAll('#tiles .tile.speaking')) seen.add(tile.dataset.peer);
      if (seen.size >= 2) resolve([...seen].sort());
    };
    const timer = setInterval(check, 50);
    setTimeout(() => { clearInterval(timer); resolve([...seen].sort()); }, 15_000);
  }));
  await sleep(1500);
  const shown = await viewer.evaluate(() => [...document.querySelectorAll('#tiles .tile')].map((tile) => ({
    peer: tile.dataset.peer,
    label: tile.querySelector('.label')?.textContent,
    videos: [...tile.querySelectorAll('video')].map((v) => ({ width: v.videoWidth, visible: v.offsetHeight > 0 })),
    nameplate: tile.querySelector('.nameplate').offsetHeight > 0,
    height: tile.offsetHeight,
    avatar: tile.querySelector('.avatar')?.textContent,
    audios: [...tile.querySelectorAll('audio')].map((a) => ({ controls: a.controls, visible: a.offsetHeight > 0, playing: !a.paused })),
  })));
  await viewer.screenshot({ path: screenshot });
  const errors = await Promise.all([...pages, viewer].map((p) => p.evaluate(() => window.junction.error ?? null)));
  return { shown, lit, errors, logs };
});
