// The page keeps its leases: on a server with --lease-seconds 40 the page claims again before
// they run out (its 20 s tick renews leases due within 3 minutes), so 50 s after the claim every
// image in the queue is still leased to ana (expiry moved on in the manifest) and her verdict is
// accepted, not refused as someone else's. Then a lease lost to another reviewer (see
// lostLease). Own servers (run.sh's have 10-minute leases).
import assert from 'node:assert/strict';
import { poll, login, currentId, queueIds, run, ownServer, manifestOf } from './lib.mjs';

const srv = await ownServer('lease-pool', 2, ['ana'], ['--lease-seconds', '40']);
const leases = () => manifestOf(srv.manifest, 'SELECT image_id, expires FROM leases ORDER BY image_id');
let ok = false;
let short = null;

// A lease that ran out while ana looked (2 s leases) and that ben (a script with his bearer
// token) claimed meanwhile: her verdict on it is refused (409), the page says so and drops the
// image from her queue, and the next image is hers to judge.
async function lostLease(browser) {
  short = await ownServer('short-pool', 2, ['ana', 'ben'], ['--lease-seconds', '2']);
  const { page } = await login(browser, 'ana', undefined, short);
  const x = await currentId(page);
  await new Promise((r) => setTimeout(r, 3000));
  const res = await fetch(short.url + '/v1/review/claim', {
    method: 'POST',
    headers: { Authorization: 'Bearer ' + short.tokens.ben, 'Content-Type': 'application/json' },
    body: JSON.stringify({ n: 100 }),
  });
  assert.equal(res.status, 200);
  const bens = (await res.json()).images.map((i) => i.id);
  assert.ok(bens.includes(x), `ben got #${x} after ana's lease ran out: ${bens}`);
  await page.keyboard.press('a');
  await page.waitForSelector('#toast.bad');
  assert.match(await page.locator('#toast').textContent(), /another reviewer/);
  await poll(page, (id) => !(document.body.dataset.queue || '').split(',').includes(String(id)) &&
    document.body.dataset.current !== String(id), `#${x} left ana's queue`, x);
  assert.deepEqual(manifestOf(short.manifest, 'SELECT COUNT(*) FROM verdicts'), [[0]], 'nothing stored');
}

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
    await lostLease(browser);
    return `${held.length} leases renewed before they ran out; a lost lease leaves the queue`;
  }, { exit: false });
} finally {
  for (const s of [srv, short]) {
    const code = s ? await s.stop() : 0;
    if (code !== 0) { console.error('leases: a server exited with ' + code); ok = false; }
  }
}
process.exit(ok ? 0 : 1);
