// The room page as a meeting client. Three tabs (ann, ben, cat) open one room with
// ?autopublish=1, Chromium faking three cameras (`chromium_args`) and its microphones. Reports,
// from ann's tab (1280×720), the tile grid (every tile's box, the columns, whether the page
// scrolls), the grid the page computes for 1 to 16 tiles in a 1280×720 box, and who held the
// active-speaker highlight over 6 s; ben's tab at a phone's 390×780; ann's device pickers and
// what switching to her third camera did (the track on her sender, whether the SDP changed, ben
// still decoding her); the stage when ann shares her screen (its box beside the camera tiles, at
// each tab); cat's banner while it is offline with its socket cut, and its decoding after it
// came back, and after an ICE restart of its connection; a screenshot of ann's tab while she
// shares. Args: {base, room, tokens: [ann, ben, cat], screenshot, chromium_args}.
import { run, open, until, sleep } from './runner.mjs';

/** Frames decoded so far from `peer`'s camera (or `source`) in `page`. */
const decodedFrom = (page, peer, source = 'camera') => page.evaluate(async ({ peer, source }) => {
  const tile = [...window.junction.tiles.values()].find((t) => t.peer === peer && t.track.kind === 'video' && t.source === source);
  if (!tile) return 0;
  let frames = 0;
  (await tile.receiver.getStats()).forEach((s) => { if (s.type === 'inbound-rtp') frames = s.framesDecoded ?? 0; });
  return frames;
}, { peer, source });

/**
 * Waits until `page` has decoded more than `since` frames of `peer`'s video, then counts them
 * twice, 1.5 s apart (to see decoding go on).
 */
async function decodingGoesOn(page, peer, what, source = 'camera', since = 0) {
  await until(what, 20_000, async () => (await decodedFrom(page, peer, source)) > since);
  const before = await decodedFrom(page, peer, source);
  await sleep(1500);
  return { before, after: await decodedFrom(page, peer, source) };
}

/** The boxes of the tiles (grid and stage) and what the page knows of its layout. */
const geometry = (page) => page.evaluate(() => {
  const box = (e) => { const r = e.getBoundingClientRect(); return { peer: e.dataset.peer, x: Math.round(r.x), y: Math.round(r.y), w: Math.round(r.width), h: Math.round(r.height) }; };
  const aside = document.querySelector('aside').getBoundingClientRect();
  return {
    viewport: { w: innerWidth, h: innerHeight },
    scrolls: document.documentElement.scrollHeight > innerHeight || document.documentElement.scrollWidth > innerWidth,
    grid: window.junction.grid,
    tiles: [...document.querySelectorAll('#tiles .tile')].map(box),
    stage: [...document.querySelectorAll('#stage .tile')].map(box),
    stageVideoWidth: document.querySelector('#stage video')?.videoWidth ?? 0,
    aside: { shown: aside.height > 0, y: Math.round(aside.y) },
  };
});

run(async (browser, { base, room, tokens, screenshot }, logs) => {
  const url = (token) => `${base}/room/${room}?token=${token}&autopublish=1`;
  const pages = [];
  for (const [i, name] of ['ann', 'ben', 'cat'].entries()) {
    const page = await open(browser, url(tokens[i]), logs, name);
    await page.setViewportSize({ width: 1280, height: 720 });
    pages.push(page);
  }
  const [annTab, benTab, catTab] = pages;
  const names = ['ann', 'ben', 'cat'];
  for (const [i, page] of pages.entries()) {
    await until(`${names[i]} shows three tiles with pictures`, 30_000, () => page.evaluate(() =>
      document.querySelectorAll('#tiles .tile').length === 3
      && [...document.querySelectorAll('#tiles .tile video')].filter((v) => v.videoWidth > 0).length === 3));
  }

  // How many console lines each step had logged by its end (which step a line came from).
  const steps = {};
  const step = (name) => { steps[name] = logs.length; };
  step('joined');

  // The grid: three tiles at 1280×720 make 2×2, all in view, no scrolling.
  await sleep(300);
  const grid = await geometry(annTab);
  const fits = await annTab.evaluate(() => Array.from({ length: 16 }, (_, i) => window.junction.fitGrid(i + 1, 1280, 720, 10).cols));

  // The active speaker, sampled every 50 ms for 6 s: never more than one at once, and each one
  // between two others kept it for its hold time.
  const active = await annTab.evaluate(() => new Promise((resolve) => {
    const samples = [];
    const timer = setInterval(() => {
      samples.push({ t: performance.now(), peers: [...document.querySelectorAll('#tiles .tile.active-speaker')].map((t) => t.dataset.peer) });
    }, 50);
    setTimeout(() => { clearInterval(timer); resolve(samples); }, 6000);
  }));
  const runs = [];
  for (const { t, peers } of active) {
    const holder = peers.join('+');
    if (runs.at(-1)?.holder === holder) runs.at(-1).end = t;
    else runs.push({ holder, start: t, end: t });
  }
  const held = runs.slice(1, -1).filter((r) => r.holder).map((r) => Math.round(r.end - r.start + 50));
  const speakers = {
    most: Math.max(...active.map((s) => s.peers.length)),
    seen: [...new Set(active.flatMap((s) => s.peers))].sort(),
    held,
    holders: runs.map((r) => r.holder),
  };

  step('speakers');
  // A phone: ben's tab at 390×780.
  await benTab.setViewportSize({ width: 390, height: 780 });
  await sleep(500);
  const phone = await geometry(benTab);
  await benTab.setViewportSize({ width: 1280, height: 720 });

  // Devices: ann's pickers list the fake devices; the second camera replaces the first on her
  // sender, and ben goes on decoding her.
  const pickers = await annTab.evaluate(() => ({
    cameras: [...document.querySelectorAll('#camera-select option')].map((o) => ({ id: o.value, label: o.textContent })),
    microphones: [...document.querySelectorAll('#mic-select option')].map((o) => ({ id: o.value, label: o.textContent })),
    using: document.querySelector('#camera-select').value,
  }));
  const other = pickers.cameras.at(-1);
  const sdpBefore = await annTab.evaluate(() => window.junction.session.media.pc.localDescription.sdp);
  if (other) await annTab.selectOption('#camera-select', other.id);
  const switched = await until('ann on her second camera', 10_000, () => annTab.evaluate(() => {
    const { session } = window.junction;
    const track = session.local.get('camera');
    const sending = session.media.pc.getSenders().some((s) => s.track === track);
    const device = track.getSettings().deviceId;
    return device === document.querySelector('#camera-select').value && track.readyState === 'live' && sending && { device, label: track.label, sending };
  })).catch((err) => ({ error: String(err) }));
  const afterSwitch = await decodingGoesOn(benTab, 'ann', 'ben decoding ann after the switch');
  afterSwitch.encoded = await annTab.evaluate(async () => { const o = []; (await window.junction.session.media.pc.getStats()).forEach((s) => { if (s.type === 'outbound-rtp' && s.kind === 'video') o.push([s.framesEncoded, s.frameWidth, s.frameHeight, s.encoderImplementation, s.qualityLimitationReason]); }); return o; });
  switched.renegotiated = sdpBefore !== await annTab.evaluate(() => window.junction.session.media.pc.localDescription.sdp);
  switched.ben = afterSwitch;

  step('switched');
  // Screen share: ann's screen becomes the stage at ben and cat.
  await annTab.click('#screen');
  const stage = {};
  for (const [name, page] of [['ben', benTab], ['cat', catTab]]) {
    await until(`${name} shows ann's screen on the stage`, 20_000, () => page.evaluate(() =>
      (document.querySelector('#stage video')?.videoWidth ?? 0) > 0));
    await sleep(300);
    stage[name] = { ...await geometry(page), decoding: await decodingGoesOn(page, 'ann', `${name} decoding ann's screen`, 'screen') };
  }
  await until('ann shows her own screen on the stage', 10_000, () => annTab.evaluate(() =>
    (document.querySelector('#stage video')?.videoWidth ?? 0) > 0));
  await sleep(500);
  stage.ann = await geometry(annTab);
  await annTab.screenshot({ path: screenshot });

  step('screen');
  // The socket drops: cat's banner says so, goes by itself, and cat decodes ann again.
  const banner = () => catTab.evaluate(() => ({ shown: !document.querySelector('#banner').hidden, text: document.querySelector('#banner').textContent }));
  await catTab.evaluate(() => { window.bannerSeen = []; new MutationObserver(() => window.bannerSeen.push(document.querySelector('#banner').textContent)).observe(document.querySelector('#banner'), { childList: true, attributes: true }); });
  // Offline, the socket closed under it (Chromium keeps an open socket to loopback up).
  await catTab.context().setOffline(true);
  await catTab.evaluate(() => window.junction.session.dropSocket());
  await sleep(1000);
  const during = await banner();
  await catTab.context().setOffline(false);
  await until('cat\'s banner gone', 20_000, async () => !(await banner()).shown);
  const reconnect = {
    during,
    after: await banner(),
    seen: await catTab.evaluate(() => window.bannerSeen),
    resumedSession: await catTab.evaluate(() => window.junction.session.id === document.querySelector('#session').textContent),
    decoding: await decodingGoesOn(catTab, 'ann', 'cat decoding ann after the reconnect'),
  };

  step('reconnected');
  // An ICE restart of cat's connection (what the SDK does by itself when it fails).
  const ufrag = () => catTab.evaluate(() => /a=ice-ufrag:(\S+)/.exec(window.junction.session.media.pc.localDescription.sdp)?.[1]);
  const remoteUfrag = () => catTab.evaluate(() => /a=ice-ufrag:(\S+)/.exec(window.junction.session.media.pc.remoteDescription.sdp)?.[1]);
  const before = { local: await ufrag(), remote: await remoteUfrag() };
  await catTab.evaluate(() => window.junction.session.restartIce());
  await until('cat\'s ICE restarted', 10_000, async () => (await remoteUfrag()) !== before.remote && await catTab.evaluate(() => window.junction.session.media.pc.signalingState === 'stable'));
  // Frames may pause while the new credentials are checked: decoding must pick up after it.
  const decodedAtRestart = await decodedFrom(catTab, 'ann');
  const restart = {
    before,
    after: { local: await ufrag(), remote: await remoteUfrag() },
    decoding: await decodingGoesOn(catTab, 'ann', 'cat decoding ann after the ICE restart', 'camera', decodedAtRestart),
    state: await catTab.evaluate(() => window.junction.session.mediaState()),
  };

  step('restarted');
  const errors = await Promise.all(pages.map((p) => p.evaluate(() => window.junction.error ?? null)));
  // Chromium's own report of each reconnect attempt made while cat was offline is expected.
  const offline = logs.filter((l) => l.startsWith('cat: ') && l.includes('net::ERR_INTERNET_DISCONNECTED'));
  const others = logs.filter((l) => !offline.includes(l));
  return { grid, fits, speakers, phone, pickers, switched, stage, reconnect, restart, errors, offline: offline.length, steps, logs: others };
});
