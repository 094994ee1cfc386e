/*
 * pixpipe review admin page: the QC table (GET /v1/review/qc) and the admin
 * queue of disagreements (GET /v1/review/admin-queue), refreshed every
 * REFRESH_MS while the tab is visible, so an admin watches reviewers' figures
 * move. A reviewer account gets a "for admins" note and the server refuses it
 * the data (403), so hiding the tables is not the protection, only manners.
 */
'use strict';

(function () {
  const { $, api, toast } = window.px;
  const REFRESH_MS = 5000;

  function pct(x) {
    return x === null || x === undefined ? '-' : (100 * x).toFixed(0) + ' %';
  }

  function num(tr, text) {
    px.cell(tr, text).className = 'num';
  }

  async function loadQc() {
    const res = await api('/v1/review/qc');
    const tb = $('qc-table').tBodies[0];
    tb.textContent = '';
    for (const r of res.reviewers) {
      const tr = document.createElement('tr');
      tr.dataset.name = r.name;
      px.cell(tr, r.name);
      num(tr, r.judged);
      num(tr, r.approved);
      num(tr, pct(r.approval_rate));
      num(tr, r.median_seconds === null || r.median_seconds === undefined ? '-' : Number(r.median_seconds).toFixed(1));
      num(tr, pct(r.agreement));
      tb.appendChild(tr);
    }
    if (!res.reviewers.length) {
      const tr = document.createElement('tr');
      px.cell(tr, 'no verdicts yet').colSpan = 6;
      tb.appendChild(tr);
    }
    $('qc-updated').textContent = 'updated ' + new Date().toLocaleTimeString();
  }

  async function settle(img, verdict, item) {
    let reason = '';
    if (verdict === 'reject') {
      reason = item.querySelector('input.reason').value.trim();
      if (!reason) { toast('#' + img.id + ': a rejection needs a reason', true); return; }
    }
    try {
      await api('/v1/pool/images/' + img.id + '/verdict', { method: 'POST', body: { verdict: verdict, reason: reason } });
      item.remove();
      toast('#' + img.id + ' ' + verdict);
      refresh();
    } catch (e) {
      toast('#' + img.id + ': ' + e.message, true);
    }
  }

  function renderItem(img) {
    const item = document.createElement('div');
    item.className = 'aq-item';
    item.dataset.id = String(img.id);
    const im = document.createElement('img');
    im.src = img.thumb || img.file;
    im.alt = img.prompt;
    const a = document.createElement('a');
    a.href = img.file;
    a.target = '_blank';
    a.rel = 'noopener';
    a.append(im);
    const title = document.createElement('div');
    title.textContent = '#' + img.id + '  ' + img.theme + ' / ' + img.type;
    const ul = document.createElement('ul');
    for (const v of img.votes) {
      const li = document.createElement('li');
      li.textContent = v.reviewer + ': ' + v.verdict + (v.reason ? ' (' + v.reason + ')' : '');
      ul.appendChild(li);
    }
    const reason = document.createElement('input');
    reason.className = 'reason';
    reason.type = 'text';
    reason.maxLength = 2000;
    reason.placeholder = 'reason (to reject)';
    const rejected = img.votes.find((v) => v.reason);
    reason.value = rejected ? rejected.reason : '';
    const buttons = document.createElement('div');
    buttons.className = 'aq-buttons';
    for (const [verdict, label, cls] of [['approve', 'Approve', 'approve'], ['reject', 'Reject', 'reject']]) {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = cls;
      b.textContent = label;
      b.addEventListener('click', () => settle(img, verdict, item));
      buttons.appendChild(b);
    }
    item.append(a, title, ul, reason, buttons);
    return item;
  }

  async function loadQueue() {
    const res = await api('/v1/review/admin-queue');
    const box = $('aq');
    const have = new Set(Array.from(box.children).map((x) => x.dataset.id));
    const want = new Set(res.images.map((x) => String(x.id)));
    for (const el of Array.from(box.children)) if (!want.has(el.dataset.id)) el.remove();
    for (const img of res.images) if (!have.has(String(img.id))) box.appendChild(renderItem(img));
    $('aq-empty').hidden = res.images.length > 0;
  }

  async function refresh() {
    try {
      await Promise.all([loadQc(), loadQueue()]);
    } catch (e) {
      toast(e.message, true);
    }
  }

  async function init() {
    const acc = await px.me();
    if (!acc) return;
    px.showAccount(acc);
    if (acc.role !== 'admin') {
      $('denied').hidden = false;
      document.body.dataset.ready = '1';
      return;
    }
    $('qc-section').hidden = false;
    $('aq-section').hidden = false;
    $('refresh').addEventListener('click', refresh);
    await refresh();
    document.body.dataset.ready = '1';
    setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
