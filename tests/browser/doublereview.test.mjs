// Double review from the campaign file: with "review": {"votes": 2, "reject_reasons": [...]} in
// the pool's campaign, the reject dialog offers the campaign's reasons, an image ana rejected is
// handed to ben too, his approval makes a disagreement that appears by itself in the admin's
// Disagreements list with both votes, the admin's Approve settles it (stored as root's verdict,
// the list empties), and the QC table shows ana's agreement as 0 %.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { env, poll, login, currentId, queueIds, manifest, run, watchErrors } from './lib.mjs';

const reasons = ['wrong season', 'text, logo or watermark', 'off theme'];

// the campaign file as `pixpipe generate` stored it, now asking for two votes
function setCampaignReview(review) {
  const py = 'import json,sqlite3,sys\n' +
    'c=sqlite3.connect(sys.argv[1])\n' +
    'i,j=c.execute("SELECT id, json FROM campaigns ORDER BY id DESC LIMIT 1").fetchone()\n' +
    'o=json.loads(j); o["review"]=json.loads(sys.argv[2])\n' +
    'c.execute("UPDATE campaigns SET json=? WHERE id=?", (json.dumps(o), i)); c.commit()';
  execFileSync('python3', ['-c', py, env.manifest, JSON.stringify(review)]);
}

await run('doublereview', async (browser) => {
  setCampaignReview({ votes: 2, reject_reasons: reasons });
  const root = await login(browser, 'root');
  // the server re-reads the campaign every few seconds
  await poll(root.page, async () => (await (await fetch('/v1/review/reasons')).json()).votes === 2,
    'the server reads votes = 2', undefined, 20000);

  const ana = await login(browser, 'ana');
  const x = await currentId(ana.page);
  await ana.page.keyboard.press('r');
  await ana.page.waitForSelector('#reject-dialog[open]');
  const offered = await ana.page.locator('#reasons input[name=reason]').evaluateAll((r) => r.map((i) => i.value));
  assert.deepEqual(offered, reasons, 'the campaign\'s reasons in the dialog');
  await ana.page.keyboard.press('1');
  await ana.page.keyboard.press('Enter');
  await poll(ana.page, (id) => !(document.body.dataset.queue || '').split(',').includes(String(id)),
    'ana\'s reject leaves her queue', x);

  const ben = await login(browser, 'ben');
  assert.ok((await queueIds(ben.page)).includes(x), `#${x} needs a second vote: it is in ben's queue`);
  await ben.page.click(`#cell-${x}`);
  await poll(ben.page, (id) => document.body.dataset.current === String(id), 'ben looks at #' + x, x);
  await ben.page.keyboard.press('a');
  await poll(ben.page, (id) => document.body.dataset.current !== String(id), 'ben\'s approval stored', x);

  await root.page.goto(env.url + '/review/admin.html');
  await root.page.waitForSelector('body[data-ready="1"]');
  const errors = watchErrors(root.page);
  const item = root.page.locator(`#aq .aq-item[data-id="${x}"]`);
  await item.waitFor({ timeout: 20000 });
  const votes = await item.locator('li').allTextContents();
  assert.deepEqual(votes.sort(), ['ana: reject (wrong season)', 'ben: approve'], 'both votes shown');
  const agreement = await poll(root.page, () => {
    const tr = document.querySelector('#qc-table tbody tr[data-name="ana"]');
    return tr ? tr.children[5].textContent : null;
  }, 'ana in the QC table');
  assert.equal(agreement, '0 %', 'ana and ben disagree');

  await item.locator('button.approve').click();
  await root.page.waitForSelector('#aq-empty:not([hidden])', { timeout: 10000 });
  const last = manifest('SELECT reviewer, verdict FROM verdicts WHERE image_id = ? ORDER BY id DESC LIMIT 1', x);
  assert.deepEqual(last, [['root', 'approve']], 'the admin\'s verdict settles it');
  assert.deepEqual(await root.page.evaluate(async () => (await (await fetch('/v1/review/admin-queue')).json()).images),
    [], 'the admin queue is empty');
  assert.deepEqual(errors, [], 'no errors on the admin page');
  await Promise.all([root.context.close(), ana.context.close(), ben.context.close()]);
  return `#${x}: ana reject + ben approve -> admin queue -> settled by root`;
});
