// Runs a browser scenario for the end-to-end tests: launches the system Chromium (never a
// downloaded one) headless with a fake camera and microphone, runs `scenario(browser, args)`
// with the JSON arguments given as argv[2], and prints its result as one JSON line on stdout
// (`{"ok": true, ...}` or `{"ok": false, "error": ...}`). The Rust tests assert on that line.
import { chromium } from 'playwright-core';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--use-fake-device-for-media-stream',
  '--use-fake-ui-for-media-stream',
  '--autoplay-policy=no-user-gesture-required',
];

export async function run(scenario) {
  const args = JSON.parse(process.argv[2] ?? '{}');
  // `fake_audio`: a WAV file the fake microphone plays (looping) instead of Chromium's beeps;
  // `chromium_args`: more switches (a switch given twice takes its last value).
  const extra = args.fake_audio ? [`--use-file-for-fake-audio-capture=${args.fake_audio}`] : [];
  extra.push(...(args.chromium_args ?? []));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [...CHROMIUM_ARGS, ...extra],
  });
  const logs = [];
  browser.on('disconnected', () => logs.push('browser disconnected'));
  try {
    const result = await scenario(browser, args, logs);
    console.log(JSON.stringify({ ok: true, ...result }));
  } catch (err) {
    console.log(JSON.stringify({ ok: false, error: String(err?.stack ?? err), logs }));
    process.exitCode = 1;
  } finally {
    await browser.close().catch(() => {});
  }
}

/**
 * Opens a tab at `url`, collecting its console errors into `logs`; `init` lists `[script, arg]`
 * pairs run in the tab before its own scripts (lipsync.mjs's source and meter); `prepare(page)`
 * runs before the tab loads (crowd.mjs holds requests back with it).
 */
export async function open(browser, url, logs, label, init = [], prepare = async () => {}) {
  const page = await browser.newPage();
  for (const [script, arg] of init) await page.addInitScript(script, arg);
  await prepare(page);
  page.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    const where = m.location()?.url;
    logs.push(`${label}: ${m.text()}${where ? ` (${where})` : ''}`);
  });
  page.on('pageerror', (err) => logs.push(`${label}: ${err.message}`));
  await page.goto(url);
  return page;
}

/**
 * Opens `/whip.html` of `base` publishing the fake camera and microphone into `room`, and waits
 * (30 s at most) until it is connected; returns the tab.
 */
export async function whipPublisher(browser, base, room, token, logs) {
  const q = (v) => encodeURIComponent(v);
  const page = await open(browser, `${base}/whip.html?room=${q(room)}&token=${q(token)}&autostart=1`, logs, 'whip');
  await until('the WHIP tab connected', 30_000, async () => {
    const { state, error } = await page.evaluate(() => window.whip);
    if (state === 'failed') throw new Error(`whip page failed: ${error}`);
    return state === 'connected';
  });
  return page;
}

/** Opens the room page of `base` for `room` and waits (20 s at most) until it joined. */
export async function roomPage(browser, base, room, token, logs, init = [], query = '') {
  const q = (v) => encodeURIComponent(v);
  const page = await open(browser, `${base}/room/${q(room)}?token=${q(token)}${query}`, logs, 'room', init);
  await page.waitForFunction(() => window.junction?.session?.room, null, { timeout: 20_000 });
  return page;
}

/** Polls `check()` every 250 ms until it returns a truthy value, or throws after `ms`. */
export async function until(what, ms, check) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Inbound video RTP statistics of the SDK session in `page` (window[global].stats()). */
export function inboundVideo(page, global = 'junction.session') {
  return page.evaluate(async (path) => {
    const session = path.split('.').reduce((o, k) => o?.[k], window);
    if (!session) return [];
    return (await session.stats()).filter((s) => s.type === 'inbound-rtp' && s.kind === 'video');
  }, global);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * An init script (for `open`/`roomPage`'s `init`) that gives the tab `window.hearTone(source)`:
 * `source(context)` makes a Web Audio source node in a fresh context; 1.5 s of it go through a
 * 32768-point analyser (1.5 Hz bins at 48 kHz) and the loudest bin, refined by parabolic
 * interpolation between it and its neighbours (in dB), is returned as `{hz, peakDb}`.
 */
export function toneMeter() {
  window.hearTone = async (source) => {
    const context = new AudioContext();
    await context.resume();
    const analyser = context.createAnalyser();
    analyser.fftSize = 32768;
    analyser.smoothingTimeConstant = 0;
    source(context).connect(analyser);
    await new Promise((resolve) => setTimeout(resolve, 1500));
    const bins = new Float32Array(analyser.frequencyBinCount);
    analyser.getFloatFrequencyData(bins);
    let loudest = 0;
    for (let i = 1; i < bins.length; i++) if (bins[i] > bins[loudest]) loudest = i;
    const [a, b, c] = [bins[loudest - 1], bins[loudest], bins[loudest + 1]];
    const offset = 0.5 * (a - c) / (a - 2 * b + c || 1);
    const hz = (loudest + offset) * context.sampleRate / analyser.fftSize;
    await context.close();
    return { hz, peakDb: b };
  };
}

/**
 * Waits (30 s at most) until every page decodes video, then samples `stats(page)` of each twice,
 * two seconds apart: a test compares the two to see decoding go on.
 */
export async function decodingSamples(pages, stats = inboundVideo) {
  for (const [i, page] of pages.entries()) {
    await until(`tab${i} decoding video`, 30_000, async () => (await stats(page)).some((s) => s.framesDecoded > 0));
  }
  const first = await Promise.all(pages.map((p) => stats(p)));
  await sleep(2000);
  const second = await Promise.all(pages.map((p) => stats(p)));
  return { first, second };
}

/** RTP statistics of the page's `window[name].pc`, of `type` (inbound-rtp/outbound-rtp). */
export function rtpStats(page, name, type) {
  return page.evaluate(async ({ name, type }) => {
    const pc = window[name]?.pc;
    if (!pc) return [];
    const reports = await pc.getStats();
    const codecs = {};
    reports.forEach((r) => { if (r.type === 'codec') codecs[r.id] = r.mimeType; });
    const out = [];
    reports.forEach((r) => {
      if (r.type !== type) return;
      out.push({
        kind: r.kind,
        rid: r.rid ?? null,
        codec: codecs[r.codecId] ?? null,
        framesDecoded: r.framesDecoded ?? 0,
        framesEncoded: r.framesEncoded ?? 0,
        frameWidth: r.frameWidth ?? 0,
        frameHeight: r.frameHeight ?? 0,
        packets: r.packetsReceived ?? r.packetsSent ?? 0,
        bytes: r.bytesReceived ?? r.bytesSent ?? 0,
      });
    });
    return out;
  }, { name, type });
}
