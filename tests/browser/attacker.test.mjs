// An attacker page on another origin (a second port on 127.0.0.1, so the same site: the
// SameSite=Strict session cookie IS sent along) tries to store a verdict while a reviewer is
// logged in, in the same browser: a form post (text/plain JSON), a no-cors fetch, and a login
// form carrying the attacker's own token (login CSRF). All are refused (403) and the manifest
// holds only the verdict the reviewer gave on the review page itself.
import assert from 'node:assert/strict';
import http from 'node:http';
import { env, manifest, login, currentId, queueIds, poll, run } from './lib.mjs';

await run('attacker', async (browser) => {
  const { context, page } = await login(browser, 'ana');
  // the review page itself stores verdicts
  const id = await currentId(page);
  await page.keyboard.press('a');
  await poll(page, (x) => document.body.dataset.current !== String(x), 'the verdict is stored', id);
  assert.deepEqual(manifest('SELECT image_id, verdict, reviewer FROM verdicts'), [[id, 'approve', 'ana']]);
  const victim = (await queueIds(page))[0]; // an image ana holds: the attack's best chance

  const target = `${env.url}/v1/pool/images/${victim}/verdict`;
  const evil = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html' });
    if (req.url === '/login') {
      res.end(`<!doctype html><form id=f method=post enctype=text/plain action="${env.url}/v1/login">
        <input name='{"token":"${env.tokens.ben}","x":"' value='"}'></form>
        <script>document.getElementById('f').submit()</script>`);
      return;
    }
    res.end(`<!doctype html><form id=f method=post enctype=text/plain action="${target}">
      <input name='{"verdict":"approve","reason":"","x":"' value='"}'></form>
      <script>
      fetch(${JSON.stringify(target)}, { method: 'POST', mode: 'no-cors', credentials: 'include',
        body: '{"verdict":"approve","reason":""}' })
        .finally(() => document.getElementById('f').submit());
      </script>`);
  });
  await new Promise((r) => evil.listen(0, '127.0.0.1', r));
  try {
    const attacker = await context.newPage(); // same browser context: ana's cookie is there
    const seen = [];
    attacker.on('request', (r) => { if (r.url() === target) seen.push(r.allHeaders()); });
    const refused = attacker.waitForResponse((r) => r.url() === target &&
      r.request().resourceType() === 'document', { timeout: 10000 });
    await attacker.goto(`http://127.0.0.1:${evil.address().port}/`);
    assert.equal((await refused).status(), 403, 'the cross-origin form post is refused');
    // closing a page in the middle of a navigation can hang chromium: let the 403 page load
    await attacker.waitForURL(target, { waitUntil: 'load' });
    assert.equal(manifest('SELECT COUNT(*) FROM verdicts')[0][0], 1, 'no forged verdict stored');
    const cookies = (await Promise.all(seen)).map((h) => h.cookie || '');
    assert.ok(cookies.some((c) => /px_session=/.test(c)),
      'the form post carried the session cookie (same site), so the refusal is the server\'s checks: ' + cookies);

    // login CSRF: logging the victim's browser in as someone else is refused too
    await attacker.close();
    const attacker2 = await context.newPage();
    const loginRefused = attacker2.waitForResponse((r) => r.url() === env.url + '/v1/login', { timeout: 10000 });
    await attacker2.goto(`http://127.0.0.1:${evil.address().port}/login`, { waitUntil: 'commit' });
    assert.equal((await loginRefused).status(), 403, 'the cross-origin login is refused');
    await attacker2.waitForURL(env.url + '/v1/login', { waitUntil: 'load' });
    await attacker2.close();
    const me = await context.request.get(env.url + '/v1/me');
    assert.equal((await me.json()).name, 'ana', 'still logged in as ana');
  } finally {
    evil.close();
  }

  await context.close();
  return 'the page\'s own verdict stored; form, no-cors fetch and login CSRF refused';
});
