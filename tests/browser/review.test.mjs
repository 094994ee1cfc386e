// Browser test of the review page in real headless chromium (Debian's, through playwright-core):
// opens the page on a 12-image pool, approves, rejects (reason picked with a digit key), skips and
// batch-approves with the keyboard only, then reads the manifest (SQLite, via python3) to check
// that every verdict is stored with the reviewer's name and reason. Then a page on another origin
// tries to post verdicts (a form and a no-cors fetch): nothing is stored. Saves a screenshot.
//   node review.test.mjs BASE_URL MANIFEST FIRST_ID SCREENSHOT
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import assert from 'node:assert/strict';

const [base, db, firstArg, shot] = process.argv.slice(2);
const first = Number(firstArg);
const reviewer = 'browser-test';

function manifest(sql) {
  const py = 'import json,sqlite3,sys\n' +
    'c=sqlite3.connect("file:"+sys.argv[1]+"?mode=ro",uri=True)\n' +
    'print(json.dumps([list(r) for r in c.execute(sys.argv[2])]))';
  return JSON.parse(execFileSync('python3', ['-c', py, db, sql]).toString());
}

// page.waitForFunction re-evaluates its predicate with eval() on every animation frame after the
// first, which the review page's CSP (script-src 'self') forbids: it only passed when the first
// check already succeeded. page.evaluate goes through the DevTools protocol, which CSP allows, so
// poll from here instead.
async function pollPage(page, fn, what, timeoutMs = 5000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await page.evaluate(fn)) return;
    if (Date.now() > end) throw new Error('timed out waiting until ' + what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run'],
});
let failed = false;
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  await page.goto(base + '/review/?reviewer=' + reviewer);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 10000 });
  assert.equal(await page.locator('#grid .cell').count(), 12, 'twelve images to review');
  assert.equal(await page.locator('#quota-table tbody tr').count(), 4, 'four theme/type rows');
  await page.waitForSelector(`#cell-${first}.current`);
  assert.match(await page.locator('#prompt').textContent(), /interiors photo for Business and office/);

  const cell = (id, v) => page.waitForSelector(`#cell-${id}.v-${v}`, { timeout: 5000 });
  await page.keyboard.press('a');                 // approve #first
  await cell(first, 'approve');
  await page.waitForSelector(`#cell-${first + 1}.current`);
  await page.keyboard.press('r');                 // reject #first+1 with reason 2
  await page.waitForSelector('#reject-dialog[open]');
  await page.keyboard.press('2');
  await page.keyboard.press('Enter');
  await cell(first + 1, 'reject');
  await page.keyboard.press('s');                 // skip #first+2
  await cell(first + 2, 'skip');
  await page.keyboard.press('x');                 // select #first+3 and #first+4
  await page.keyboard.press('j');
  await page.keyboard.press('x');
  assert.equal(await page.locator('#batch-count').textContent(), '2 selected');
  await page.keyboard.press('Shift+A');           // batch approve
  await cell(first + 3, 'approve');
  await cell(first + 4, 'approve');
  await page.waitForSelector('#batch[hidden]', { state: 'attached' });
  // the quota table follows: business/interiors (ids first..first+2) has 1 approved,
  // business/items (first+3..first+5) has 2
  await pollPage(page, () => {
    const c = document.querySelectorAll('#quota-table tbody tr td:nth-child(3)');
    return c.length === 4 && c[0].textContent === '1' && c[1].textContent === '2';
  }, 'quota table shows 1 and 2 approved');
  await page.screenshot({ path: shot, fullPage: false });

  const rows = manifest('SELECT image_id, verdict, reviewer, reason FROM verdicts ORDER BY id');
  assert.deepEqual(rows, [
    [first, 'approve', reviewer, ''],
    [first + 1, 'reject', reviewer, 'text, logo or watermark'],
    [first + 2, 'skip', reviewer, ''],
    [first + 3, 'approve', reviewer, ''],
    [first + 4, 'approve', reviewer, ''],
  ]);
  const times = manifest('SELECT COUNT(*) FROM verdicts WHERE created_at LIKE \'____-__-__T__:__:__Z\'');
  assert.equal(times[0][0], 5, 'every verdict has a UTC time');
  assert.deepEqual(errors, [], 'no errors in the page');

  // an attacker page on another origin (another port) posts a verdict with a form and with a
  // no-cors fetch: both must be refused, and the manifest keeps only our five verdicts
  const target = `${base}/v1/pool/images/${first + 6}/verdict`;
  const evil = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' });
    res.end(`<!doctype html><form id=f method=post enctype=text/plain action="${target}">
      <input name='{"verdict":"approve","reviewer":"mallory","x":"' value='"}'></form>
      <script>
      fetch(${JSON.stringify(target)}, { method: 'POST', mode: 'no-cors',
        body: '{"verdict":"approve","reviewer":"mallory"}' })
        .finally(() => document.getElementById('f').submit());
      </script>`);
  });
  await new Promise((r) => evil.listen(0, '127.0.0.1', r));
  const attacker = await browser.newPage();
  const refused = attacker.waitForResponse((r) => r.url() === target &&
    r.request().resourceType() === 'document', { timeout: 10000 });
  await attacker.goto(`http://127.0.0.1:${evil.address().port}/`);
  const answer = await refused;
  assert.equal(answer.status(), 403, 'the cross-origin form post is refused');
  evil.close();
  const forged = manifest('SELECT COUNT(*) FROM verdicts WHERE reviewer = \'mallory\'');
  assert.equal(forged[0][0], 0, 'no forged verdict stored');
  console.log('browser test: 5 verdicts by keyboard stored, cross-origin posts refused; screenshot ' + shot);
} catch (e) {
  failed = true;
  console.error('browser test failed:', e);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
