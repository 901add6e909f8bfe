// Tabs open the demo room page at once with ?autopublish=1, as people joining a meeting on the
// minute do: every tab's SDK (/sdk/junction.js) is held back until all of them have asked for
// it, so that they join within a moment of each other however long Chromium takes to open six
// pages. Each must come to decode every other tab's camera, keep decoding, and see no error.
// Prints, per tab, how many video streams it decodes and their frames in two samples two seconds
// apart, its error, and the console errors and warnings of all. Args: {base, room, tokens}.
import { run, open, until, sleep, inboundVideo } from './runner.mjs';

const decodedPerStream = async (page) =>
  (await inboundVideo(page)).filter((s) => s.framesDecoded > 0).map((s) => s.framesDecoded);

run(async (browser, { base, room, tokens }, logs) => {
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
    open(browser, `${base}/room/${room}?token=${token}&autopublish=1`, logs, `tab${i}`, [], holdSdk)));
  const others = tokens.length - 1;
  for (const [i, page] of pages.entries()) {
    await until(`tab${i} decoding ${others} cameras`, 45_000, async () => (await decodedPerStream(page)).length >= others);
  }
  const first = await Promise.all(pages.map(decodedPerStream));
  await sleep(2000);
  const second = await Promise.all(pages.map(decodedPerStream));
  const errors = await Promise.all(pages.map((p) => p.evaluate(() => window.junction.error ?? null)));
  return { first, second, errors, logs };
});
