// Browser test of the Campaigns page (issue 15) in headless chromium, run by run.sh with
// `pixpipe serve --gen-server gpu1=... --gen-server gpu2=...` both on the fake image server
// (600 ms per image; the test renders on gpu1 only, so a run can be watched and paused):
//  - a reviewer account gets no Campaigns page (403) and no campaigns API;
//  - the admin fills the form with two themes, sees a field error from the campaign parser,
//    previews 20 prompts (nothing recorded), creates and starts the campaign, pauses it (no
//    image is added while paused), resumes it, and sees progress reach the quota: every theme
//    and type row done = quota, state done; the manifest agrees.
import assert from 'node:assert/strict';
import { env, login, manifest, poll, run, shot, watchErrors } from './lib.mjs';

const themes = ['Technology and IT', 'Ecology and energy'];
const total = 8;

function count(sql) {
  return manifest(sql)[0][0];
}

async function reviewerIsRefused(browser) {
  const { context, page } = await login(browser, 'ana');
  const resp = await page.goto(env.url + '/review/campaigns.html');
  assert.equal(resp.status(), 403, 'a reviewer must not get the Campaigns page');
  assert.equal(await page.locator('#form').count(), 0);
  const api = await page.evaluate(async () => (await fetch('/v1/campaigns')).status);
  assert.equal(api, 403, 'nor the campaigns API');
  await context.close();
}

async function state(page) {
  return page.evaluate(() => ({
    state: document.getElementById('d-state').textContent,
    done: Number(document.getElementById('d-done').textContent),
    quota: Number(document.getElementById('d-quota').textContent),
    rows: [...document.querySelectorAll('#d-slots tbody tr')].map((tr) =>
      [...tr.children].map((td) => td.textContent)),
    servers: document.getElementById('d-servers').textContent,
  }));
}

await run('campaigns', async (browser) => {
  await reviewerIsRefused(browser);

  const { context, page } = await login(browser, 'root');
  const errors = watchErrors(page, /status of 400/);
  await page.goto(env.url + '/review/campaigns.html');
  await page.waitForSelector('#f-render input[value="gpu1"]');
  // the configured servers are offered by name; the page has no place for a URL
  assert.equal(await page.locator('#f-render input').count(), 2);
  assert.equal(await page.locator('#form input[type="url"]').count(), 0);

  // a field error comes back from the campaign parser, next to its field
  await page.fill('#f-themes', themes.join('\n'));
  await page.fill('#f-name', 'browser-two-themes');
  await page.fill('#f-total', String(total));
  await page.fill('#f-items', '0');
  await page.fill('#f-width', '10');
  await page.click('#preview');
  await poll(page, () => document.querySelector('.err[data-field="width"]').textContent,
    'the width error is shown');
  const werr = await page.textContent('.err[data-field="width"]');
  assert.match(werr, /"width": expected an integer in 64\.\.4096/);
  await page.fill('#f-width', '96');
  await page.fill('#f-height', '64');
  await page.fill('#f-steps', '4');
  await page.uncheck('#f-render input[value="gpu2"]'); // one server: slow enough to pause

  // preview: 20 prompts over both themes, nothing recorded
  await page.click('#preview');
  await poll(page, () => document.querySelectorAll('#preview-list li').length === 20,
    '20 prompts are previewed');
  assert.equal(await page.textContent('.err[data-field="width"]'), '');
  const previewed = await page.$$eval('#preview-list li', (li) => li.map((x) => x.textContent));
  for (const t of themes) assert.ok(previewed.some((p) => p.startsWith(t)), t + ' is previewed');
  assert.equal(count('SELECT count(*) FROM campaign_runs'), 0);
  const jobs0 = count('SELECT count(*) FROM jobs');

  // create and start; pause once an image is in, then resume
  await page.click('#create');
  await poll(page, () => !document.getElementById('detail').hidden &&
    Number(document.getElementById('d-done').textContent) >= 1, 'the first image is in', null,
  30000);
  await page.click('#d-pause');
  await poll(page, () => document.getElementById('d-state').textContent === 'paused',
    'the campaign is paused', null, 30000);
  const paused = await state(page);
  assert.ok(paused.done < total, 'paused before the end');
  const images = count('SELECT count(*) FROM images');
  await new Promise((r) => setTimeout(r, 1200));
  assert.equal(count('SELECT count(*) FROM images'), images, 'no image while paused');
  await page.screenshot({ path: shot('paused.png'), fullPage: true });

  await page.click('#d-resume');
  await poll(page, () => document.getElementById('d-state').textContent === 'done',
    'the campaign reaches its quota', null, 60000);
  const done = await state(page);
  assert.equal(done.quota, total);
  assert.equal(done.done, total);
  assert.equal(done.rows.length, 4); // two themes x interiors, exteriors
  for (const r of done.rows) assert.equal(r[2], r[3], `${r[0]} ${r[1]} done = quota`);
  assert.match(done.servers, /gpu1/);
  await page.screenshot({ path: shot('done.png'), fullPage: true });

  const good = count("SELECT count(*) FROM images i JOIN jobs j ON j.id = i.id WHERE " +
    "i.status != 'rejected' AND j.theme IN ('Technology and IT', 'Ecology and energy')");
  assert.equal(good, total);
  assert.ok(count('SELECT count(*) FROM jobs') > jobs0);
  assert.equal(count("SELECT state FROM campaign_runs WHERE name = 'browser-two-themes'"), 'done');
  assert.deepEqual(errors, []);
  await context.close();
  return `${total} images, paused at ${paused.done}`;
});
