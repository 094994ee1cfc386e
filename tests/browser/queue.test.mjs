// The review queue in headless chromium, keyboard only: the login page refuses a malformed and a
// wrong token with a message, then logs in with the right one (name and role shown); approve
// (A), reject with a reason from GET /v1/review/reasons (R, 2, Enter), skip (S), move with the
// arrows, undo (Z: the verdict is deleted and the image comes back), judged images leave the
// queue, the queue claims more ahead with no page end, the quota table's totals row follows,
// zoom (F) shows the file at 1:1, compare (C) its pHash neighbours, thumbnails are WebP, and
// logout ends the session. Checks the manifest for every verdict.
import assert from 'node:assert/strict';
import { env, manifest, poll, login, queueIds, currentId, run, shot, watchErrors } from './lib.mjs';

const verdicts = () => manifest('SELECT image_id, verdict, reviewer, reason FROM verdicts ORDER BY id');
const totals = (page) => page.evaluate(() =>
  Array.from(document.querySelectorAll('#quota-totals td')).slice(0, 3).map((td) => td.textContent).join('/'));

// waits until the image `id` has left the queue and the stage shows another one
async function left(page, id) {
  await poll(page, (x) => !(document.body.dataset.queue || '').split(',').includes(String(x)) &&
    document.body.dataset.current !== String(x), '#' + id + ' leaves the queue', id);
}

// the login page says what is wrong with a token, and stays
async function badLogins(browser) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(env.url + '/review/login.html');
  await page.waitForSelector('body[data-ready="1"]');
  assert.ok(await page.locator('#login-token').getAttribute('type') === 'password', 'the token is not shown');
  for (const [token, says] of [['two words', /one word/], ['0123456789abcdef'.repeat(4), /not valid/]]) {
    await page.fill('#login-token', token);
    await page.click('#login-submit');
    await poll(page, (re) => new RegExp(re).test(document.getElementById('login-error').textContent),
      'the login page says ' + says, says.source);
    assert.match(page.url(), /login\.html$/);
  }
  assert.equal(await page.evaluate(async () => (await fetch('/v1/me')).status), 401, 'not logged in');
  await context.close();
}

await run('queue', async (browser) => {
  await badLogins(browser);
  const { context, page } = await login(browser, 'ana');
  const errors = watchErrors(page, /status of 404/);
  assert.equal(await page.locator('#who-name').textContent(), 'ana');
  assert.equal(await page.locator('#who-role').textContent(), 'reviewer');
  assert.ok(await page.locator('#admin-link').isHidden(), 'no admin link for a reviewer');
  const total = 4 * env.per;
  assert.equal(await totals(page), `0/0/${total}`, 'totals row: nothing judged yet');
  assert.equal(await page.locator('#quota-table tbody tr').count(), 4, 'four theme/type rows');

  let q = await queueIds(page);
  assert.ok(q.length >= 5, 'images claimed ahead: ' + q);
  assert.equal(await currentId(page), q[0], 'the first claimed image is on the stage');
  // thumbnails are the server's WebP ones
  const src = await page.locator(`#cell-${q[1]} img`).getAttribute('src');
  assert.equal(src, `/v1/pool/images/${q[1]}/thumb`);
  const magic = await page.evaluate(async (u) => {
    const r = await fetch(u);
    const b = new Uint8Array(await r.arrayBuffer());
    return r.headers.get('content-type') + ' ' + String.fromCharCode(...b.slice(0, 4), ...b.slice(8, 12));
  }, src);
  assert.equal(magic, 'image/webp RIFFWEBP', 'the thumbnail is WebP');

  const a = q[0];
  await page.keyboard.press('a');
  await left(page, a);
  const b = await currentId(page);
  // Esc in the reason picker cancels: nothing stored, the image stays
  await page.keyboard.press('r');
  await page.waitForSelector('#reject-dialog[open]');
  await page.keyboard.press('Escape');
  await page.waitForSelector('#reject-dialog:not([open])', { state: 'attached' });
  assert.equal(await currentId(page), b, 'cancelled: the same image');
  assert.equal(verdicts().length, 1, 'cancelled: nothing stored');
  await page.keyboard.press('r');
  await page.waitForSelector('#reject-dialog[open]');
  const reasons = await page.evaluate(async () => (await (await fetch('/v1/review/reasons')).json()).reasons);
  assert.equal(await page.locator('#reasons input[name=reason]').count(), reasons.length, 'reasons from the server');
  await page.keyboard.press('2');
  await page.keyboard.press('Enter');
  await left(page, b);
  const c = await currentId(page);
  await page.keyboard.press('s');
  await left(page, c);
  assert.deepEqual(verdicts(), [[a, 'approve', 'ana', ''], [b, 'reject', 'ana', reasons[1]], [c, 'skip', 'ana', '']]);

  // arrows move inside the queue
  const d = await currentId(page);
  await page.keyboard.press('ArrowRight');
  q = await queueIds(page);
  assert.equal(await currentId(page), q[q.indexOf(d) + 1], 'right arrow: next image');
  await page.keyboard.press('ArrowLeft');
  assert.equal(await currentId(page), d, 'left arrow: back');

  // undo: the skip is deleted and the image comes back to the stage
  await page.keyboard.press('z');
  await poll(page, (x) => document.body.dataset.current === String(x), 'the undone image is back', c);
  assert.ok((await queueIds(page)).includes(c), 'back in the queue');
  assert.deepEqual(verdicts(), [[a, 'approve', 'ana', ''], [b, 'reject', 'ana', reasons[1]]], 'the skip row is gone');
  q = await queueIds(page);
  assert.ok(!q.includes(a) && !q.includes(b), 'judged images left the queue');
  await poll(page, () => document.querySelector('#quota-totals td').textContent === '1' &&
    document.querySelectorAll('#quota-totals td')[1].textContent === '1', 'totals row: 1 approved, 1 rejected');
  assert.equal(await totals(page), `1/1/${total - 2}`);

  // zoom to 1:1: the file itself at its own size; compare: the nearest images by pHash
  const cur = await currentId(page);
  await page.keyboard.press('f');
  await poll(page, () => {
    const im = document.getElementById('stage-img');
    return im.complete && im.naturalWidth > 0 && /\/v1\/pool\/images\/\d+$/.test(im.src) &&
      im.getBoundingClientRect().width === im.naturalWidth;
  }, 'the stage shows the file at 1:1');
  await page.keyboard.press('Escape');
  await page.keyboard.press('c');
  await poll(page, (x) => document.getElementById('compare-grid').dataset.for === String(x), 'compare loaded', cur);
  const shown = await page.locator('#compare-grid figure').evaluateAll((f) => f.map((x) => Number(x.dataset.id)));
  assert.equal(shown[0], cur, 'the image itself first');
  assert.ok(shown.length >= 2 && shown.length <= 5 && !shown.slice(1).includes(cur), 'up to 4 neighbours: ' + shown);
  assert.match(await page.locator('#compare-grid figure figcaption').nth(1).textContent(), /distance \d+/);
  await page.screenshot({ path: shot('queue.png') });
  await page.keyboard.press('c');

  // a continuous queue: approve more than one claim's worth without a page end
  const seen = new Set([a, b]);
  for (let i = 0; i < 14; i++) {
    const id = await currentId(page);
    assert.ok(id && !seen.has(id), 'a new image on the stage each time: ' + id);
    seen.add(id);
    await page.keyboard.press('a');
    await left(page, id);
  }
  const rows = verdicts();
  assert.equal(rows.length, 16);
  assert.equal(new Set(rows.map((r) => r[0])).size, 16, 'every verdict on another image');
  await poll(page, (t) => document.querySelector('#quota-totals td').textContent === String(t),
    'totals row: 15 approved', 15);
  assert.deepEqual(errors, [], 'no errors in the page');

  // logout ends the session: the API answers 401 and the queue sends us to the login page
  await page.click('#logout');
  await page.waitForURL(/\/review\/login\.html/);
  assert.equal(await page.evaluate(async () => (await fetch('/v1/me')).status), 401);
  await page.goto(env.url + '/review/');
  await page.waitForURL(/\/review\/login\.html/);
  await context.close();
  return '16 verdicts by keyboard, undo, zoom, compare, logout';
});
