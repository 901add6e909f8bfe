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
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
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

/** Opens a tab at `url`, collecting its console errors into `logs`. */
export async function open(browser, url, logs, label) {
  const page = await browser.newPage();
  page.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    const where = m.location()?.url;
    logs.push(`${label}: ${m.text()}${where ? ` (${where})` : ''}`);
  });
  page.on('pageerror', (err) => logs.push(`${label}: ${err.message}`));
  await page.goto(url);
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
