// A local pool without accounts (and no PIXPIPE_API_TOKEN) works as before accounts: the page
// opens straight on the queue, with no login, a Reviewer box whose name signs the verdicts, and
// no verdict until a name is given; the name is kept across a reload. Starts its own server on a
// pool of its own, since run.sh's pools have accounts.
import assert from 'node:assert/strict';
import { poll, currentId, run, ownServer, manifestOf } from './lib.mjs';

const srv = await ownServer('anon-pool', 2, [], []);
const rows = () => manifestOf(srv.manifest, 'SELECT image_id, verdict, reviewer FROM verdicts ORDER BY id');
let ok = false;
try {
  ok = await run('anonymous', async (browser) => {
    const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
    await page.goto(srv.url + '/review/');
    await page.waitForSelector('body[data-ready="1"]', { timeout: 10000 });
    assert.match(page.url(), /\/review\/$/, 'no login page');
    assert.ok(await page.locator('#anon').isVisible(), 'the Reviewer box');
    assert.ok(await page.locator('#who').isHidden() && await page.locator('#logout').isHidden());
    const a = await currentId(page);
    assert.ok(a > 0, 'an image on the stage');
    await page.keyboard.press('a'); // no name yet: refused on the page
    await page.waitForSelector('#toast.bad');
    assert.deepEqual(rows(), [], 'nothing stored without a name');
    await page.fill('#reviewer', 'local-tester');
    await page.locator('#reviewer').press('Enter'); // leaves the box
    await page.keyboard.press('a');
    await poll(page, (x) => document.body.dataset.current !== String(x), 'approved', a);
    assert.deepEqual(rows(), [[a, 'approve', 'local-tester']]);
    await page.reload();
    await page.waitForSelector('body[data-ready="1"]');
    assert.equal(await page.locator('#reviewer').inputValue(), 'local-tester', 'the name is kept');
    const b = await currentId(page);
    await page.keyboard.press('s');
    await poll(page, (x) => document.body.dataset.current !== String(x), 'skipped', b);
    assert.deepEqual(rows(), [[a, 'approve', 'local-tester'], [b, 'skip', 'local-tester']]);
    return 'no login, typed name signs verdicts';
  }, { exit: false });
} finally {
  const code = await srv.stop();
  if (code !== 0) { console.error('anonymous: the server exited with ' + code); ok = false; }
}
process.exit(ok ? 0 : 1);
