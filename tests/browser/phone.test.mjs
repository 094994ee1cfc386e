// The review queue on a phone-sized screen (390x844, touch): after logging in, a screenshot is
// taken into the test's folder and the action buttons' bounding boxes must lie inside the
// viewport, big enough to tap (>= 40 px high), not covering one another; tapping them approves,
// rejects through the reason picker (which fits the screen too) and undoes, as stored in the
// manifest. The same at a tablet size (820x1180).
import assert from 'node:assert/strict';
import { manifest, poll, login, currentId, run, shot } from './lib.mjs';

const BUTTONS = ['#btn-approve', '#btn-reject', '#btn-skip', '#btn-undo'];

async function boxesInside(page, vw, vh, what) {
  const boxes = [];
  for (const sel of BUTTONS) {
    const el = page.locator(sel);
    assert.ok(await el.isVisible(), `${what}: ${sel} visible`);
    const b = await el.boundingBox();
    assert.ok(b.x >= 0 && b.y >= 0 && b.x + b.width <= vw && b.y + b.height <= vh,
      `${what}: ${sel} inside the ${vw}x${vh} viewport: ${JSON.stringify(b)}`);
    assert.ok(b.height >= 40 && b.width >= 60, `${what}: ${sel} big enough to tap: ${JSON.stringify(b)}`);
    boxes.push(b);
  }
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const p = boxes[i], q = boxes[j];
      const overlap = p.x < q.x + q.width && q.x < p.x + p.width && p.y < q.y + q.height && q.y < p.y + p.height;
      assert.ok(!overlap, `${what}: ${BUTTONS[i]} and ${BUTTONS[j]} do not overlap`);
    }
  }
  // nothing sideways to scroll
  const sw = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(sw <= vw, `${what}: page ${sw} px wide fits ${vw}`);
}

await run('phone', async (browser) => {
  const phone = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };
  const { context, page } = await login(browser, 'ana', phone);
  await page.screenshot({ path: shot('phone.png') });
  await boxesInside(page, 390, 844, 'phone');
  // also after scrolling down to the details
  await page.mouse.wheel(0, 2000);
  await boxesInside(page, 390, 844, 'phone, scrolled');

  const a = await currentId(page);
  await page.tap('#btn-approve');
  await poll(page, (x) => document.body.dataset.current !== String(x), 'approved by a tap', a);
  const b = await currentId(page);
  await page.tap('#btn-reject');
  await page.waitForSelector('#reject-dialog[open]');
  const d = await page.locator('#reject-dialog').boundingBox();
  assert.ok(d.x >= 0 && d.x + d.width <= 390, 'the reason picker fits the screen: ' + JSON.stringify(d));
  await page.tap('#reasons li:nth-child(3) label');
  await page.screenshot({ path: shot('phone-reject.png') });
  await page.tap('#reject-ok');
  await poll(page, (x) => document.body.dataset.current !== String(x), 'rejected by taps', b);
  await page.tap('#btn-undo');
  await poll(page, (x) => document.body.dataset.current === String(x), 'undone: the image is back', b);
  assert.deepEqual(manifest('SELECT image_id, verdict, reviewer FROM verdicts ORDER BY id'), [[a, 'approve', 'ana']]);
  await context.close();

  const tablet = await login(browser, 'ben', { viewport: { width: 820, height: 1180 }, isMobile: true, hasTouch: true });
  await tablet.page.screenshot({ path: shot('tablet.png') });
  await boxesInside(tablet.page, 820, 1180, 'tablet');
  await tablet.context.close();
  return 'buttons inside 390x844 and 820x1180, taps stored';
});
