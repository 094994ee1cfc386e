// A local pool without accounts (and no PIXPIPE_API_TOKEN) works as before accounts: the page
// opens straight on the queue, with no login, a Reviewer box whose name signs the verdicts
// (?reviewer=NAME), and no verdict until a name is given. Starts its own server on a pool of
// its own, since run.sh's pools have accounts.
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import path from 'node:path';
import { env, poll, currentId, run } from './lib.mjs';

const pool = path.join(env.tmp, 'anon-pool');
execFileSync(env.makePool, [pool, '2', '5']);
const db = path.join(pool, 'manifest.sqlite');
const rows = () => JSON.parse(execFileSync('python3', ['-c',
  'import json,sqlite3,sys\nc=sqlite3.connect("file:"+sys.argv[1]+"?mode=ro",uri=True)\n' +
  'print(json.dumps([list(r) for r in c.execute("SELECT image_id, verdict, reviewer FROM verdicts ORDER BY id")]))',
  db]).toString());

const server = spawn(env.bin, ['serve', '--listen', '127.0.0.1:0', '--pool', pool, '--no-anonymize'],
  { stdio: ['ignore', 'pipe', 'pipe'] });
const url = await new Promise((resolve, reject) => {
  let out = '';
  const t = setTimeout(() => reject(new Error('server did not start')), 10000);
  server.stdout.on('data', (d) => {
    out += d;
    const m = /listening on (http\S+?)\/?\s/.exec(out);
    if (m) { clearTimeout(t); resolve(m[1]); }
  });
  server.on('exit', (code) => reject(new Error('server exited with ' + code)));
});
const exited = new Promise((resolve) => server.on('exit', (code) => resolve(code)));

let ok = false;
try {
  ok = await run('anonymous', async (browser) => {
    const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
    await page.goto(url + '/review/');
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
    // the name is kept: a reload signs with it too
    await page.reload();
    await page.waitForSelector('body[data-ready="1"]');
    assert.equal(await page.locator('#reviewer').inputValue(), 'local-tester');
    const b = await currentId(page);
    await page.keyboard.press('s');
    await poll(page, (x) => document.body.dataset.current !== String(x), 'skipped', b);
    assert.deepEqual(rows(), [[a, 'approve', 'local-tester'], [b, 'skip', 'local-tester']]);
    return 'no login, typed name signs verdicts';
  }, { exit: false });
} finally {
  server.kill('SIGTERM');
}
const code = await exited;
if (code !== 0) console.error('anonymous: the server exited with ' + code);
process.exit(ok && code === 0 ? 0 : 1);
