// The admin page and the tables that follow verdicts: an admin watching the QC table (GET
// /v1/review/qc) sees a reviewer's judged count, approval rate and median time appear and grow
// while the reviewer judges in another browser, and the reviewer's own quota table's totals row
// follows. A reviewer account opening the admin page gets a note, and the server refuses it the
// QC figures and the admin queue (403).
import assert from 'node:assert/strict';
import { env, poll, login, currentId, run, watchErrors } from './lib.mjs';

const qcRow = (n) => {
  const tr = document.querySelector(`#qc-table tbody tr[data-name="${n}"]`);
  return tr ? Array.from(tr.children).map((td) => td.textContent) : null;
};

await run('admin', async (browser) => {
  const root = await login(browser, 'root');
  assert.equal(await root.page.locator('#who-role').textContent(), 'admin');
  assert.ok(await root.page.locator('#admin-link').isVisible(), 'admins see the admin link');
  await root.page.click('#admin-link');
  await root.page.waitForURL(/admin\.html/);
  await root.page.waitForSelector('body[data-ready="1"]');
  const errors = watchErrors(root.page);
  assert.ok(await root.page.locator('#qc-table').isVisible());
  assert.equal(await root.page.evaluate(qcRow, 'ana'), null, 'no figures for ana yet');

  const ana = await login(browser, 'ana');
  const judge = async (key) => {
    const id = await currentId(ana.page);
    await ana.page.keyboard.press(key);
    if (key === 'r') {
      await ana.page.waitForSelector('#reject-dialog[open]');
      await ana.page.keyboard.press('1');
      await ana.page.keyboard.press('Enter');
    }
    await poll(ana.page, (x) => document.body.dataset.current !== String(x), 'verdict on #' + id, id);
  };
  await judge('a');
  await judge('a');
  await judge('r');
  // the admin's QC table follows by itself: 3 judged, 2 approved, 67 %
  const row = await poll(root.page, () => {
    const tr = document.querySelector('#qc-table tbody tr[data-name="ana"]');
    const cells = tr ? Array.from(tr.children).map((td) => td.textContent) : null;
    return cells && cells[1] === '3' ? cells : null;
  }, 'the QC table shows 3 judged for ana', undefined, 20000);
  assert.equal(row[2], '2', 'approved');
  assert.equal(row[3], '67 %', 'approval rate');
  assert.match(row[4], /^\d+(\.\d)?$/, 'median seconds per image');
  // ana's quota table: the totals row counts them
  await poll(ana.page, () => {
    const td = document.querySelectorAll('#quota-totals td');
    return td[0].textContent === '2' && td[1].textContent === '1';
  }, 'the totals row shows 2 approved, 1 rejected');
  await judge('a');
  await poll(root.page, () => {
    const tr = document.querySelector('#qc-table tbody tr[data-name="ana"]');
    return tr && tr.children[1].textContent === '4' && tr.children[3].textContent === '75 %';
  }, 'the QC table follows to 4 judged, 75 %', undefined, 20000);
  assert.ok(await root.page.locator('#aq-empty').isVisible(), 'single review: no disagreements');
  assert.deepEqual(errors, [], 'no errors on the admin page');

  // a reviewer cannot open the admin page's data
  await ana.page.goto(env.url + '/review/admin.html');
  await ana.page.waitForSelector('body[data-ready="1"]');
  assert.ok(await ana.page.locator('#denied').isVisible(), 'the page says it is for admins');
  assert.ok(await ana.page.locator('#qc-section').isHidden());
  const codes = await ana.page.evaluate(async () => [
    (await fetch('/v1/review/qc')).status, (await fetch('/v1/review/admin-queue')).status]);
  assert.deepEqual(codes, [403, 403], 'the server refuses a reviewer the QC figures and the admin queue');
  await Promise.all([root.context.close(), ana.context.close()]);
  return 'QC row 3 -> 4 judged, totals row, reviewer refused';
});
