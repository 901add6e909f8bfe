// Connectivity from a restrictive network: a tab (run inside the test's client namespace) opens
// the demo room page without publishing and must decode the room's video. Prints the candidate
// pair its connection selected (protocol and type of each end), the mean colour of the left and
// right halves of the picture it shows, and two samples of its inbound video statistics.
// Args: {base, room, token, relay}: `relay` opens the page with ?relay=1 (the SDK's
// iceTransportPolicy 'relay': only through the server's TURN relay).
import { run, decodingSamples, roomPage, until } from './runner.mjs';

run(async (browser, { base, room, token, relay }, logs) => {
  const page = await roomPage(browser, base, room, token, logs, [], relay ? '&relay=1' : '');
  const { first: [first], second: [second] } = await decodingSamples([page]);
  const halves = await until('a picture with content', 10_000, () => page.evaluate(() => {
    const video = [...document.querySelectorAll('video')].find((v) => v.videoWidth > 0);
    if (!video) return null;
    const canvas = document.createElement('canvas');
    canvas.width = 32;
    canvas.height = 18;
    const g = canvas.getContext('2d', { willReadFrequently: true });
    g.drawImage(video, 0, 0, 32, 18);
    const mean = (x0) => {
      const px = g.getImageData(x0, 0, 16, 18).data;
      const sum = [0, 0, 0];
      for (let i = 0; i < px.length; i += 4) for (let c = 0; c < 3; c++) sum[c] += px[i + c];
      return sum.map((v) => Math.round(v / (px.length / 4)));
    };
    return { left: mean(0), right: mean(16) };
  }));
  const selected = await page.evaluate(async () => {
    const out = [];
    for (const pc of window.junction.session.peerConnections()) {
      const reports = new Map();
      (await pc.getStats()).forEach((r) => reports.set(r.id, r));
      for (const r of reports.values()) {
        if (r.type !== 'transport' || !r.selectedCandidatePairId) continue;
        const pair = reports.get(r.selectedCandidatePairId);
        const local = reports.get(pair.localCandidateId);
        const remote = reports.get(pair.remoteCandidateId);
        out.push({
          local: { protocol: local.protocol, type: local.candidateType, relayProtocol: local.relayProtocol ?? null },
          remote: { protocol: remote.protocol, type: remote.candidateType, address: remote.address, port: remote.port },
        });
      }
    }
    return out;
  });
  const error = await page.evaluate(() => window.junction.error);
  return { selected, halves, first, second, error, logs };
});
