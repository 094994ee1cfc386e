/*
 * pixpipe review page logic. It loads the pool through the server's JSON API
 * (/v1/pool/stats, /v1/pool/images, /v1/pool/images/{id}?format=json) and
 * posts verdicts to /v1/pool/images/{id}/verdict. State is a flat list of the
 * images shown, the index of the current one and a set of selected ids.
 *
 * Verdicts are posted one image at a time (a batch is a sequence of posts) so
 * that each is its own row in the manifest with this reviewer's name; a
 * failed post leaves the image as it was and says why. The reviewer name is
 * kept in localStorage, an API token (asked for on a 401) in sessionStorage.
 * Every write carries the server's CSRF token (GET /v1/csrf) in X-CSRF-Token.
 */
'use strict';

(function () {
  const PAGE = 60;
  const state = {
    images: [],     // what the grid shows, in id order
    cur: -1,        // index into images of the previewed one
    selected: new Set(),
    nextAfter: null,
    busy: false,
  };
  const $ = (id) => document.getElementById(id);

  function toast(msg, bad) {
    const t = $('toast');
    t.textContent = msg;
    t.className = bad ? 'show bad' : 'show';
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.className = ''; }, bad ? 6000 : 2000);
  }

  function reviewer() {
    return $('reviewer').value.trim();
  }

  // The server refuses writes without its CSRF token (a page on another origin cannot read it);
  // fetched once, and again when a restarted server has a new one.
  let csrf = null;
  async function csrfToken(fresh) {
    if (!csrf || fresh) {
      const res = await fetch('/v1/csrf', { credentials: 'same-origin' });
      const body = await res.json();
      csrf = body.csrf_token;
    }
    return csrf;
  }

  async function api(path, opts) {
    opts = opts || {};
    const headers = opts.headers || {};
    const write = opts.method && opts.method !== 'GET';
    if (write) headers['X-CSRF-Token'] = await csrfToken(false);
    const tok = sessionStorage.getItem('pixpipe-token');
    if (tok) headers['Authorization'] = 'Bearer ' + tok;
    opts.headers = headers;
    let res = await fetch(path, opts);
    if (write && res.status === 403) {
      headers['X-CSRF-Token'] = await csrfToken(true);
      res = await fetch(path, opts);
    }
    if (res.status === 401) {
      const t = window.prompt('This server needs an API token for verdicts:');
      if (t) {
        sessionStorage.setItem('pixpipe-token', t);
        headers['Authorization'] = 'Bearer ' + t;
        res = await fetch(path, opts);
      }
    }
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) {
      throw new Error((body && body.error) || ('HTTP ' + res.status));
    }
    return body;
  }

  // ---- quota table --------------------------------------------------------
  async function loadStats() {
    const st = await api('/v1/pool/stats');
    const tb = $('quota-table').tBodies[0];
    tb.textContent = '';
    const themeSel = $('f-theme');
    const known = new Set(Array.from(themeSel.options).map((o) => o.value));
    for (const s of st.slots) {
      const tr = document.createElement('tr');
      const pending = s.unreviewed;
      const cells = [s.theme, s.type, s.approved, s.expert_rejected, pending, s.quota || '-', s.need];
      for (const c of cells) {
        const td = document.createElement('td');
        td.textContent = String(c);
        tr.appendChild(td);
      }
      tr.dataset.slot = s.theme_slug + '/' + s.type;
      if (s.quota > 0 && s.need > 0) tr.classList.add('short');
      const bar = document.createElement('td');
      bar.className = 'bar-col';
      const outer = document.createElement('div');
      outer.className = 'bar';
      const q = Math.max(s.quota, s.approved + pending, 1);
      const a = document.createElement('span');
      a.className = 'bar-approved';
      a.style.width = (100 * s.approved / q) + '%';
      const p = document.createElement('span');
      p.className = 'bar-pending';
      p.style.width = (100 * pending / q) + '%';
      outer.append(a, p);
      outer.title = s.approved + ' approved, ' + pending + ' to review, quota ' + s.quota;
      bar.appendChild(outer);
      tr.appendChild(bar);
      tb.appendChild(tr);
      if (!known.has(s.theme_slug)) {
        known.add(s.theme_slug);
        const o = document.createElement('option');
        o.value = s.theme_slug;
        o.textContent = s.theme;
        themeSel.appendChild(o);
      }
    }
  }

  // ---- grid ---------------------------------------------------------------
  function query(after) {
    const p = new URLSearchParams();
    const add = (k, id) => { const v = $(id).value; if (v) p.set(k, v); };
    add('theme', 'f-theme');
    add('type', 'f-type');
    add('status', 'f-status');
    add('verdict', 'f-verdict');
    p.set('limit', String(PAGE));
    if (after) p.set('after', String(after));
    return '/v1/pool/images?' + p.toString();
  }

  function badge(img) {
    if (img.verdict) return img.verdict;
    return img.status;
  }

  function renderCell(i) {
    const img = state.images[i];
    let cell = document.getElementById('cell-' + img.id);
    if (!cell) {
      cell = document.createElement('div');
      cell.id = 'cell-' + img.id;
      cell.setAttribute('role', 'option');
      cell.dataset.id = String(img.id);
      const im = document.createElement('img');
      im.loading = 'lazy';
      im.alt = img.theme + ' / ' + img.type + ' #' + img.id;
      im.src = img.file;
      const b = document.createElement('span');
      b.className = 'badge';
      cell.append(im, b);
      cell.addEventListener('click', (ev) => {
        const idx = state.images.findIndex((x) => x.id === img.id);
        if (ev.ctrlKey || ev.metaKey || ev.shiftKey) toggleSelect(idx);
        else show(idx);
      });
      $('grid').appendChild(cell);
    }
    cell.className = 'cell v-' + (img.verdict || 'none') + ' s-' + img.status +
      (i === state.cur ? ' current' : '') + (state.selected.has(img.id) ? ' selected' : '');
    cell.setAttribute('aria-selected', state.selected.has(img.id) ? 'true' : 'false');
    cell.title = '#' + img.id + ' ' + img.status + (img.reason ? ' (' + img.reason + ')' : '') +
      (img.verdict ? ', ' + img.verdict + ' by ' + img.verdict_by : '') + '\n' + img.prompt;
    cell.querySelector('.badge').textContent = badge(img);
  }

  async function loadImages(append) {
    const after = append ? state.nextAfter : null;
    const res = await api(query(after));
    if (!append) {
      state.images = [];
      state.selected.clear();
      state.cur = -1;
      $('grid').textContent = '';
    }
    const start = state.images.length;
    state.images.push(...res.images);
    for (let i = start; i < state.images.length; i++) renderCell(i);
    state.nextAfter = res.next_after;
    $('more').hidden = res.next_after === null;
    $('empty').hidden = state.images.length > 0;
    if (state.cur < 0 && state.images.length) show(0);
    if (!state.images.length) clearPreview();
    updateBatch();
  }

  // ---- preview ------------------------------------------------------------
  function clearPreview() {
    $('preview-img').removeAttribute('src');
    for (const id of ['meta', 'checks', 'history']) $(id).textContent = '';
    $('prompt').textContent = '';
    $('negative').textContent = '';
  }

  function dl(el, pairs) {
    el.textContent = '';
    for (const [k, v] of pairs) {
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = typeof v === 'object' ? JSON.stringify(v) : String(v);
      el.append(dt, dd);
    }
  }

  async function show(i) {
    if (i < 0 || i >= state.images.length) return;
    const prev = state.cur;
    state.cur = i;
    if (prev >= 0 && prev < state.images.length) renderCell(prev);
    renderCell(i);
    const img = state.images[i];
    const cell = document.getElementById('cell-' + img.id);
    if (cell) cell.scrollIntoView({ block: 'nearest' });
    $('preview-img').src = img.file;
    $('preview-img').alt = img.prompt;
    $('prompt').textContent = img.prompt;
    $('negative').textContent = img.negative || '-';
    dl($('meta'), [
      ['Image', '#' + img.id + '  ' + img.width + 'x' + img.height],
      ['Theme', img.theme + ' / ' + img.type],
      ['Checks', img.status + (img.reason ? ' (' + img.reason + ')' : '')],
      ['Render', img.backend + (img.model ? ' ' + img.model : '') + ', seed ' + img.seed],
      ['Created', img.created_at],
      ['Verdict', img.verdict ? img.verdict + ' by ' + img.verdict_by : 'none yet'],
    ]);
    dl($('checks'), Object.entries(img.checks || {}));
    const hist = $('history');
    hist.textContent = '';
    try {
      const full = await api('/v1/pool/images/' + img.id + '?format=json');
      if (state.images[state.cur] !== img) return; // moved on meanwhile
      for (const v of full.verdicts) {
        const li = document.createElement('li');
        li.textContent = v.created_at + '  ' + v.reviewer + ': ' + v.verdict + (v.reason ? ' (' + v.reason + ')' : '');
        hist.appendChild(li);
      }
      if (!full.verdicts.length) hist.textContent = 'none yet';
    } catch (e) {
      hist.textContent = 'could not load: ' + e.message;
    }
  }

  // ---- verdicts -----------------------------------------------------------
  async function post(img, verdict, reason) {
    const body = { verdict: verdict, reviewer: reviewer(), reason: reason || '' };
    const res = await api('/v1/pool/images/' + img.id + '/verdict', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    img.verdict = verdict;
    img.verdict_by = body.reviewer;
    return res;
  }

  function needReviewer() {
    if (reviewer()) return false;
    toast('Type your name in "Reviewer" first: verdicts are signed.', true);
    $('reviewer').focus();
    return true;
  }

  async function judge(verdict, reason) {
    if (state.busy || state.cur < 0 || needReviewer()) return;
    const i = state.cur;
    const img = state.images[i];
    state.busy = true;
    try {
      await post(img, verdict, reason);
      renderCell(i);
      toast('#' + img.id + ' ' + verdict + (reason ? ' (' + reason + ')' : ''));
      if (i + 1 < state.images.length) show(i + 1);
      else show(i);
      loadStats().catch(() => {});
    } catch (e) {
      toast('#' + img.id + ': ' + e.message, true);
    } finally {
      state.busy = false;
    }
  }

  async function judgeSelection(verdict, reason) {
    if (state.busy || !state.selected.size || needReviewer()) return;
    state.busy = true;
    let ok = 0;
    const failed = [];
    for (let i = 0; i < state.images.length; i++) {
      const img = state.images[i];
      if (!state.selected.has(img.id)) continue;
      try {
        await post(img, verdict, reason);
        state.selected.delete(img.id);
        ok++;
      } catch (e) {
        failed.push('#' + img.id + ': ' + e.message);
      }
      renderCell(i);
    }
    state.busy = false;
    updateBatch();
    show(state.cur); // the previewed image may be one of them
    toast(ok + ' ' + verdict + (failed.length ? '; failed ' + failed.join(', ') : ''), failed.length > 0);
    loadStats().catch(() => {});
  }

  function toggleSelect(i) {
    if (i < 0 || i >= state.images.length) return;
    const id = state.images[i].id;
    if (state.selected.has(id)) state.selected.delete(id);
    else state.selected.add(id);
    renderCell(i);
    updateBatch();
  }

  function clearSelection() {
    const ids = new Set(state.selected);
    state.selected.clear();
    state.images.forEach((img, i) => { if (ids.has(img.id)) renderCell(i); });
    updateBatch();
  }

  function updateBatch() {
    $('batch').hidden = state.selected.size === 0;
    $('batch-count').textContent = state.selected.size + ' selected';
  }

  // The reject dialog resolves to a reason, or null when cancelled.
  function askReason(title) {
    return new Promise((resolve) => {
      const d = $('reject-dialog');
      $('reject-title').textContent = title;
      $('reason-text').value = '';
      for (const r of d.querySelectorAll('input[name=reason]')) r.checked = false;
      const done = (val) => {
        d.removeEventListener('close', onClose);
        $('reject-cancel').removeEventListener('click', onCancel);
        resolve(val);
      };
      const onClose = () => {
        if (d.returnValue !== 'ok') return done(null);
        const text = $('reason-text').value.trim();
        const picked = d.querySelector('input[name=reason]:checked');
        done(text || (picked ? picked.value : null));
      };
      const onCancel = () => { d.returnValue = 'cancel'; d.close(); };
      d.addEventListener('close', onClose);
      $('reject-cancel').addEventListener('click', onCancel);
      d.returnValue = '';
      d.showModal();
      $('reason-text').focus();
    });
  }

  async function reject(batch) {
    const n = batch ? state.selected.size : 1;
    if ((batch && !n) || (!batch && state.cur < 0) || needReviewer()) return;
    const reason = await askReason(batch ? 'Reject ' + n + ' selected' : 'Reject #' + state.images[state.cur].id);
    if (!reason) { toast('not rejected: pick or type a reason', true); return; }
    if (batch) await judgeSelection('reject', reason);
    else await judge('reject', reason);
  }

  // ---- wiring -------------------------------------------------------------
  function onKey(ev) {
    const d = $('reject-dialog');
    if (d.open) {
      // 1-6 pick a listed reason unless the free-text box is being typed in
      if (document.activeElement === $('reason-text') && $('reason-text').value) return;
      const n = parseInt(ev.key, 10);
      const radios = d.querySelectorAll('input[name=reason]');
      if (n >= 1 && n <= radios.length) {
        ev.preventDefault();
        radios[n - 1].checked = true;
        $('reason-text').value = '';
      } else if (ev.key === 'Enter') {
        ev.preventDefault();
        d.returnValue = 'ok';
        d.close();
      }
      return;
    }
    if ($('help').open) return;
    const t = ev.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA')) {
      if (ev.key === 'Escape' || ev.key === 'Enter') t.blur();
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const k = ev.key;
    const handled = () => ev.preventDefault();
    if (k === 'a') { handled(); judge('approve'); }
    else if (k === 'A') { handled(); judgeSelection('approve'); }
    else if (k === 'r') { handled(); reject(false); }
    else if (k === 'R') { handled(); reject(true); }
    else if (k === 's') { handled(); judge('skip'); }
    else if (k === 'j' || k === 'ArrowRight' || k === 'ArrowDown') { handled(); show(state.cur + 1); }
    else if (k === 'k' || k === 'ArrowLeft' || k === 'ArrowUp') { handled(); show(state.cur - 1); }
    else if (k === 'x') { handled(); toggleSelect(state.cur); }
    else if (k === 'Escape') { handled(); clearSelection(); }
    else if (k === '?') { handled(); $('help').showModal(); }
  }

  function init() {
    const params = new URLSearchParams(location.search);
    const name = params.get('reviewer') || localStorage.getItem('pixpipe-reviewer') || '';
    $('reviewer').value = name;
    $('reviewer').addEventListener('change', () => {
      localStorage.setItem('pixpipe-reviewer', reviewer());
    });
    for (const k of ['theme', 'type', 'status', 'verdict']) {
      const v = params.get(k);
      if (v !== null) $('f-' + k).value = v;
    }
    $('filters').addEventListener('submit', (ev) => {
      ev.preventDefault();
      loadImages(false).catch((e) => toast(e.message, true));
    });
    $('more').addEventListener('click', () => loadImages(true).catch((e) => toast(e.message, true)));
    $('btn-approve').addEventListener('click', () => judge('approve'));
    $('btn-reject').addEventListener('click', () => reject(false));
    $('btn-skip').addEventListener('click', () => judge('skip'));
    $('batch-approve').addEventListener('click', () => judgeSelection('approve'));
    $('batch-reject').addEventListener('click', () => reject(true));
    $('batch-clear').addEventListener('click', clearSelection);
    $('help-btn').addEventListener('click', () => $('help').showModal());
    document.addEventListener('keydown', onKey);
    loadStats()
      .then(() => { const v = params.get('theme'); if (v !== null) $('f-theme').value = v; })
      .catch((e) => toast('stats: ' + e.message, true))
      .then(() => loadImages(false))
      .then(() => { document.body.dataset.ready = '1'; })
      // other reviewers work at the same time: keep the quota table current
      .then(() => setInterval(() => { if (!document.hidden) loadStats().catch(() => {}); }, 20000))
      .catch((e) => toast(e.message, true));
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
