// Two reviewers logged in at once (two browser contexts, each its own session cookie) never see
// the same image: their queues are disjoint when they open the page, and stay disjoint while both
// approve and the page claims more ahead; every verdict in the manifest carries the account's
// name, and no image is judged by both.
import assert from 'node:assert/strict';
import { env, manifest, poll, login, queueIds, currentId, run } from './lib.mjs';

async function approveCurrent(page) {
  const id = await currentId(page);
  assert.ok(id > 0, 'an image on the stage');
  await page.keyboard.press('a');
  await poll(page, (x) => !(document.body.dataset.queue || '').split(',').includes(String(x)),
    '#' + id + ' approved and gone', id);
  return id;
}

await run('reviewers', async (browser) => {
  const [ana, ben] = await Promise.all([login(browser, 'ana'), login(browser, 'ben')]);
  assert.equal(await ben.page.locator('#who-name').textContent(), 'ben');
  const seenA = new Set(await queueIds(ana.page));
  const seenB = new Set(await queueIds(ben.page));
  assert.ok(seenA.size >= 5 && seenB.size >= 5, `both got images: ${seenA.size}, ${seenB.size}`);
  const both = () => [...seenA].filter((id) => seenB.has(id));
  assert.deepEqual(both(), [], 'no image in both queues');

  // judge in turns; the pages claim more as their queues shrink
  const judged = { ana: [], ben: [] };
  const total = 4 * env.per;
  for (let i = 0; i < Math.floor(total / 2) - 2; i++) {
    judged.ana.push(await approveCurrent(ana.page));
    judged.ben.push(await approveCurrent(ben.page));
    for (const id of await queueIds(ana.page)) seenA.add(id);
    for (const id of await queueIds(ben.page)) seenB.add(id);
    assert.deepEqual(both(), [], 'still no image in both queues after ' + (i + 1) + ' rounds');
  }
  const rows = manifest('SELECT image_id, reviewer FROM verdicts ORDER BY id');
  assert.equal(rows.length, judged.ana.length + judged.ben.length);
  for (const [id, who] of rows) assert.ok(judged[who].includes(id), `#${id} judged by ${who} on ${who}'s page`);
  const twice = manifest('SELECT image_id FROM verdicts GROUP BY image_id HAVING COUNT(DISTINCT reviewer) > 1');
  assert.deepEqual(twice, [], 'no image judged by both');
  await Promise.all([ana.context.close(), ben.context.close()]);
  return `${rows.length} verdicts, ${seenA.size} + ${seenB.size} images seen, none shared`;
});
