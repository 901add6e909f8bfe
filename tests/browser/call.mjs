// A direct call between two sessions that joined no room: tab A calls tab B's session id,
// B accepts, and each must decode the other's camera peer to peer. Then A hangs up and B
// must hear `call_ended`. Args: {base, tokens: [a, b]}.
import { run, open, until, decodingSamples } from './runner.mjs';

run(async (browser, { base, tokens }, logs) => {
  const pages = [];
  for (const [i, token] of tokens.entries()) {
    const page = await open(browser, `${base}/healthz`, logs, `tab${i}`);
    await page.evaluate(async (token) => {
      const { connect } = await import('/sdk/junction.js');
      const session = await connect({ token });
      window.junction = { session, ended: [] };
      session.on('incoming_call', (call) => {
        window.junction.incoming = { identity: call.identity, from: call.remote };
        call.on('ended', ({ reason }) => window.junction.ended.push(reason));
        call.accept({ camera: true, microphone: true });
      });
    }, token);
    pages.push(page);
  }
  const [a, b] = pages;
  const calleeId = await b.evaluate(() => window.junction.session.id);
  const callerId = await a.evaluate(() => window.junction.session.id);
  await a.evaluate(async (to) => {
    window.junction.call = await window.junction.session.call(to, { camera: true, microphone: true });
  }, calleeId);
  const { first, second } = await decodingSamples(pages);
  const incoming = await b.evaluate(() => window.junction.incoming);
  const callId = await a.evaluate(() => window.junction.call.id);
  await a.evaluate(() => window.junction.call.hangup());
  const ended = await until('the callee to hear the hangup', 10_000, () => b.evaluate(() => window.junction.ended[0]));
  return { callerId, calleeId, callId, incoming, first, second, ended, logs };
});
