// Tabs open the demo room page at once with ?autopublish=1, as people joining a meeting on the
// minute do: every tab's SDK (/sdk/junction.js) is held back until all of them have asked for
// it, so that they join within a moment of each other however long Chromium takes to open six
// pages. Each must come to decode every other tab's camera, keep decoding, and see no error.
// Prints, per tab, how many video streams it decodes and their frames in two samples two seconds
// apart, its error, and the console errors and warnings of all.
//
// Then the operator's view: /dashboard opened with `api_key` must list the six peers with
// non-zero bitrates (each peer's row carries what it sends and receives), a screenshot of it
// goes to `screenshot`, and its Kick button on the last tab's peer must remove that peer, whose
// tab must say why. Args: {base, room, tokens, identities, api_key, screenshot}.
//
// The tabs' cameras are captured at 320x180, 15 fps instead of the page's 1280x720: six tabs
// each encoding one camera and decoding five share the test machine's two cores with the
// server (and, in CI, with other tests); at 720p Chromium falls seconds behind there.
import { run, open, until, sleep, inboundVideo } from './runner.mjs';

/** Runs in each tab before its scripts: the camera the room page asks for, made small. */
function smallCamera() {
  const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (constraints) => getUserMedia(constraints?.video
    ? { ...constraints, video: { ...constraints.video, width: 320, height: 180, frameRate: 15 } }
    : constraints);
}

const decodedPerStream = async (page) =>
  (await inboundVideo(page)).filter((s) => s.framesDecoded > 0).map((s) => s.framesDecoded);

run(async (browser, { base, room, tokens, identities, api_key, screenshot }, logs) => {
  const started = Date.now();
  const phases = {}; // seconds from the start at which each phase ended, for the test's output
  const done = (phase) => { phases[phase] = (Date.now() - started) / 1000; };
  let asked = 0;
  let releaseSdk;
  const sdkReleased = new Promise((resolve) => { releaseSdk = resolve; });
  const holdSdk = (page) => page.route('**/sdk/junction.js', async (route) => {
    asked += 1;
    if (asked === tokens.length) releaseSdk();
    await sdkReleased;
    await route.continue();
  });
  const pages = await Promise.all(tokens.map((token, i) =>
    open(browser, `${base}/room/${room}?token=${token}&autopublish=1`, logs, `tab${i}`, [[smallCamera]], holdSdk)));
  done('opened');
  const others = tokens.length - 1;
  for (const [i, page] of pages.entries()) {
    await until(`tab${i} decoding ${others} cameras`, 45_000, async () => (await decodedPerStream(page)).length >= others);
  }
  done('decoding');
  const first = await Promise.all(pages.map(decodedPerStream));
  await sleep(2000);
  const second = await Promise.all(pages.map(decodedPerStream));
  const errors = await Promise.all(pages.map((p) => p.evaluate(() => window.junction.error ?? null)));
  const dashboard = await operate(browser, { base, api_key, screenshot, kicked: identities.at(-1), tab: pages.at(-1) }, logs, done);
  return { first, second, errors, dashboard, logs, phases };
});

/** What the dashboard shows of each peer: `{identity: {sent, received, tracks: [bitrates]}}`. */
const dashboardPeers = (page) => page.evaluate(() => Object.fromEntries([...document.querySelectorAll('tr.peer')].map((row) => [
  row.dataset.identity,
  {
    sent: Number(row.dataset.sent),
    received: Number(row.dataset.received),
    tracks: [...document.querySelectorAll(`tr.track[data-peer="${row.dataset.identity}"]`)].map((t) => Number(t.dataset.bitrate)),
  },
])));

async function operate(browser, { base, api_key, screenshot, kicked, tab }, logs, done) {
  const page = await browser.newPage({ viewport: { width: 1500, height: 950 } });
  // A room can end between the dashboard's list of rooms and its stats request: that 404 is the
  // API's answer, and Chromium logs every 404 a page fetches. Anything else the page logs counts.
  const roomGone = (m) => m.text() === 'Failed to load resource: the server responded with a status of 404 (Not Found)';
  page.on('console', (m) => { if ((m.type() === 'error' || m.type() === 'warning') && !roomGone(m)) logs.push(`dashboard: ${m.text()}`); });
  page.on('pageerror', (err) => logs.push(`dashboard: ${err.message}`));
  page.on('dialog', (dialog) => dialog.accept());
  await page.goto(`${base}/dashboard`);
  await page.fill('#key', api_key);
  await page.click('#login-form button');
  // Six peers, each sending and receiving, each of its tracks with a bitrate.
  // The most each peer and each of its tracks showed: on a loaded machine Chromium starves a
  // camera for a second now and then, so six peers all busy in one same second is not asked.
  const seen = {};
  await until('the dashboard showing six busy peers', 60_000, async () => {
    for (const [identity, now] of Object.entries(await dashboardPeers(page))) {
      const best = seen[identity] ?? { sent: 0, received: 0, tracks: [] };
      seen[identity] = {
        sent: Math.max(best.sent, now.sent),
        received: Math.max(best.received, now.received),
        tracks: now.tracks.map((b, i) => Math.max(b, best.tracks[i] ?? 0)),
      };
    }
    const peers = Object.values(seen);
    return peers.length === 6 && peers.every((p) => p.sent > 0 && p.received > 0 && p.tracks.length >= 2 && p.tracks.every((b) => b > 0));
  });
  done('dashboard busy');
  // Two seconds more so the charts have some history to draw.
  await sleep(2000);
  if (screenshot) await page.screenshot({ path: screenshot, fullPage: true, timeout: 60_000 });
  await page.click(`tr.peer[data-identity="${kicked}"] button.kick`);
  await until('the kicked peer gone from the dashboard', 30_000, async () => !(kicked in (await dashboardPeers(page))));
  await until('the kicked tab saying why', 30_000, async () => (await tab.evaluate(() => document.body.innerText)).includes('kicked'));
  done('kicked');
  const after = Object.keys(await dashboardPeers(page));
  const events = await page.evaluate(() => [...document.querySelectorAll('#events li')].map((li) => li.dataset.event));

  // An ingress key made with the form shows what to paste into OBS.
  await page.selectOption('#new-ingress select[name=kind]', 'rtmp');
  await page.fill('#new-ingress input[name=room]', 'crowd');
  await page.fill('#new-ingress input[name=identity]', 'obs');
  await page.click('#new-ingress button');
  let ingress;
  await until('the new ingress key listed', 30_000, async () => {
    ingress = await page.evaluate(() => [...document.querySelectorAll('details.ingress')].map((d) => d.textContent));
    return ingress.length === 1;
  });
  // A room made with the form gets a card; its End button ends it. (It stays up while empty
  // for a minute: the test server ends an empty room after 5 s otherwise, which on a slow
  // machine can come before the click.)
  await page.fill('#new-room input[name=name]', 'standby');
  await page.fill('#new-room input[name=empty_timeout_s]', '60');
  await page.click('#new-room button');
  await page.waitForSelector('article.room[data-room="standby"]', { timeout: 30_000 });
  await page.click('article.room[data-room="standby"] button.end');
  await page.waitForSelector('article.room[data-room="standby"]', { state: 'detached', timeout: 30_000 });
  done('room ended');
  return { seen, after, events, ingress };
}
