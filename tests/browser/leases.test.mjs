// The page keeps its leases: on a server with --lease-seconds 40 the page claims again before
// they run out (its 20 s tick renews leases due within 3 minutes), so 50 s after the claim every
// image in the queue is still leased to ana (expiry moved on in the manifest) and her verdict is
// accepted, not refused as someone else's. Own server (run.sh's have 10-minute leases).
import assert from 'node:assert/strict';
import { poll, login, currentId, queueIds, run, ownServer, manifestOf } from './lib.mjs';

const srv = await ownServer('lease-pool', 2, ['ana'], ['--lease-seconds', '40']);
const leases = () => manifestOf(srv.manifest, 'SELECT image_id, expires FROM leases ORDER BY image_id');
let ok = false;
try {
  ok = await run('leases', async (browser) => {
    const { page } = await login(browser, 'ana', undefined, srv);
    const held = await queueIds(page);
    assert.ok(held.length >= 5, 'images claimed: ' + held);
    const first = new Map(leases().map(([id, exp]) => [id, exp]));
    for (const id of held) assert.ok(first.has(id), `#${id} leased in the manifest`);
    const t0 = Date.now();
    // renewed at the page's first tick (20 s): every held lease's expiry moves on
    const end = Date.now() + 40000;
    for (;;) {
      const now = new Map(leases().map(([id, exp]) => [id, exp]));
      if (held.every((id) => now.get(id) > first.get(id) + 5)) break;
      if (Date.now() > end) throw new Error('the leases were not renewed: ' + JSON.stringify([...now]));
      await new Promise((r) => setTimeout(r, 500));
    }
    // past the first expiry: still ana's, and her verdict is taken
    while (Date.now() - t0 < 45000) await new Promise((r) => setTimeout(r, 500));
    const nowS = Date.now() / 1000;
    const after = new Map(leases().map(([id, exp]) => [id, exp]));
    const cur = await currentId(page);
    assert.ok(after.get(cur) > nowS, `#${cur} still leased after the first 40 s ran out`);
    await page.keyboard.press('a');
    await poll(page, (x) => document.body.dataset.current !== String(x), 'the verdict is accepted', cur);
    assert.deepEqual(manifestOf(srv.manifest, 'SELECT image_id, verdict, reviewer FROM verdicts'),
      [[cur, 'approve', 'ana']]);
    return `${held.length} leases renewed before they ran out`;
  }, { exit: false });
} finally {
  const code = await srv.stop();
  if (code !== 0) { console.error('leases: the server exited with ' + code); ok = false; }
}
process.exit(ok ? 0 : 1);
