/*
 * pixpipe review page: one continuous queue (see index.html).
 *
 * The queue is the images this reviewer holds a lease on: POST
 * /v1/review/claim hands out images nobody else holds, so two reviewers never
 * get the same one. The page asks for more while fewer than AHEAD are left
 * ahead of the current one (asking for what it holds plus BATCH, since a
 * claim returns the caller's own leases first), so there is no page end. A
 * verdict (POST /v1/pool/images/{id}/verdict) takes the image out of the
 * queue; Z (POST /v1/review/undo) deletes the last one and the image comes
 * back at the current place. Thumbnails are the server's WebP ones, the
 * stage shows the 768 px one and the file itself when zoomed to 1:1.
 *
 * On a server without accounts (anonymous, local) the page signs verdicts
 * with a typed name as before, and falls back to listing unjudged images
 * when the server has no claim endpoint.
 */
'use strict';

(function () {
  const { $, api, toast } = window.px;
  const AHEAD = 5;   // claim more when fewer than this are left after the current image
  const BATCH = 10;  // new images per claim
  const CLAIM_MAX = 100;
  const DEFAULT_REASONS = ['distorted anatomy or objects', 'text, logo or watermark', 'off theme',
    'low quality or blurry', 'recognisable person or brand', 'near duplicate'];
  const state = {
    account: null,    // {name, role} or {anonymous: true}
    queue: [],        // claimed, not judged images, in the order shown
    cur: -1,          // index into queue
    selected: new Set(),
    done: [],         // [{img, verdict}] judged here, newest last: undo puts them back
    remaining: null,  // unjudged images left for this reviewer (from the claim)
    loading: null,    // the claim in flight
    exhausted: false, // the last claim brought nothing new
    listAfter: null,  // fallback paging when the server has no claim endpoint
    noClaim: false,
    busy: false,
    zoom: false,
    compare: false,
    generation: 0,    // bumped when the filters change; stale claims are dropped
  };

  // ---- quota table --------------------------------------------------------
  // cells: approved, rejected, to review, quota, need; the bar is the last cell
  function fillRow(tr, cells, s) {
    const tds = Array.from(tr.children).slice(-6);
    cells.forEach((c, i) => { tds[i].textContent = String(c); });
    const bar = tds[tds.length - 1];
    bar.textContent = '';
    const outer = document.createElement('div');
    outer.className = 'bar';
    const q = Math.max(s.quota, s.approved + s.unreviewed, 1);
    const a = document.createElement('span');
    a.className = 'bar-approved';
    a.style.width = (100 * s.approved / q) + '%';
    const p = document.createElement('span');
    p.className = 'bar-pending';
    p.style.width = (100 * s.unreviewed / q) + '%';
    outer.append(a, p);
    outer.title = s.approved + ' approved, ' + s.unreviewed + ' to review, quota ' + s.quota;
    bar.appendChild(outer);
  }

  async function loadStats() {
    const st = await api('/v1/pool/stats');
    const tb = $('quota-table').tBodies[0];
    tb.textContent = '';
    const themeSel = $('f-theme');
    const known = new Set(Array.from(themeSel.options).map((o) => o.value));
    for (const s of st.slots) {
      const tr = document.createElement('tr');
      px.cell(tr, s.theme);
      px.cell(tr, s.type);
      for (let i = 0; i < 6; i++) px.cell(tr, '');
      tr.lastChild.className = 'bar-col';
      fillRow(tr, [s.approved, s.expert_rejected, s.unreviewed, s.quota || '-', s.need], s);
      tr.dataset.slot = s.theme_slug + '/' + s.type;
      if (s.quota > 0 && s.need > 0) tr.classList.add('short');
      tb.appendChild(tr);
      if (!known.has(s.theme_slug)) {
        known.add(s.theme_slug);
        const o = document.createElement('option');
        o.value = s.theme_slug;
        o.textContent = s.theme;
        themeSel.appendChild(o);
      }
    }
    const t = st.totals;
    if (t) {
      const need = st.slots.reduce((n, s) => n + s.need, 0);
      fillRow($('quota-totals'), [t.approved, t.expert_rejected, t.unreviewed, t.quota || '-', need], t);
      $('quota-totals').classList.toggle('short', t.quota > 0 && need > 0);
    }
  }

  // ---- the queue ----------------------------------------------------------
  function thumb(img, size) {
    if (!img.thumb) return img.file; // a server without thumbnails
    return size ? img.thumb + '?size=' + size : img.thumb;
  }

  function filters() {
    const f = {};
    if ($('f-theme').value) f.theme = $('f-theme').value;
    if ($('f-type').value) f.type = $('f-type').value;
    return f;
  }

  // Images of a server without POST /v1/review/claim: unjudged ones by id, no leases.
  async function listMore() {
    const p = new URLSearchParams(filters());
    p.set('verdict', 'none');
    p.set('limit', String(BATCH));
    if (state.listAfter) p.set('after', String(state.listAfter));
    const res = await api('/v1/pool/images?' + p.toString());
    state.listAfter = res.next_after;
    if (res.next_after === null) state.exhausted = true;
    return { images: res.images, remaining: null };
  }

  async function claimMore() {
    if (state.noClaim) return listMore();
    // the server hands out at most CLAIM_MAX at once; a reviewer holding that many gets no more
    const body = Object.assign({ n: Math.min(CLAIM_MAX, state.queue.length + BATCH) }, filters());
    try {
      return await api('/v1/review/claim', { method: 'POST', body: body });
    } catch (e) {
      if (e.status !== 404 || !state.account.anonymous) throw e;
      state.noClaim = true;
      return listMore();
    }
  }

  // Keeps AHEAD images ready after the current one (force: claim anyway, to renew the leases
  // or look again after the queue ran dry); one claim at a time.
  function refill(force) {
    if (state.loading) return state.loading;
    if (!force && (state.exhausted || state.queue.length - state.cur - 1 >= AHEAD)) return Promise.resolve();
    const gen = state.generation;
    state.loading = claimMore().then((res) => {
      if (gen !== state.generation) return;
      const have = new Map(state.queue.map((x) => [x.id, x]));
      const judged = new Set(state.done.map((d) => d.img.id));
      let added = 0;
      for (const img of res.images) {
        const held = have.get(img.id);
        if (held) held.lease_expires = img.lease_expires; // renewed
        if (held || judged.has(img.id)) continue;
        state.queue.push(img);
        have.set(img.id, img);
        renderCell(img);
        added++;
      }
      if (res.remaining !== undefined && res.remaining !== null) state.remaining = res.remaining;
      state.exhausted = added === 0;
      if (state.cur < 0 && state.queue.length) show(0);
      updateCounts();
    }).catch((e) => {
      toast('claim: ' + e.message, true);
    }).finally(() => {
      state.loading = null;
    });
    return state.loading;
  }

  // Leases run out (10 min): a claim renews the caller's own, so claim again before the first
  // expires. An exhausted queue is tried again too: other reviewers' expired leases come back.
  function keepLeases() {
    if (state.loading) return;
    const soon = Date.now() + 3 * 60 * 1000;
    const expiring = state.queue.some((x) => x.lease_expires && Date.parse(x.lease_expires) < soon);
    if (expiring || (state.exhausted && state.queue.length - state.cur - 1 < AHEAD)) refill(true);
  }

  function resetQueue() {
    state.generation++;
    state.queue = [];
    state.cur = -1;
    state.selected.clear();
    state.exhausted = false;
    state.listAfter = null;
    state.remaining = null;
    state.loading = null;
    $('queue').textContent = '';
    clearStage();
    return refill();
  }

  function renderCell(img) {
    let cell = document.getElementById('cell-' + img.id);
    if (!cell) {
      cell = document.createElement('div');
      cell.id = 'cell-' + img.id;
      cell.setAttribute('role', 'option');
      cell.dataset.id = String(img.id);
      const im = document.createElement('img');
      im.loading = 'lazy';
      im.alt = img.theme + ' / ' + img.type + ' #' + img.id;
      im.src = thumb(img);
      const b = document.createElement('span');
      b.className = 'badge';
      b.textContent = img.status;
      cell.append(im, b);
      cell.addEventListener('click', (ev) => {
        const idx = state.queue.findIndex((x) => x.id === img.id);
        if (ev.ctrlKey || ev.metaKey || ev.shiftKey) toggleSelect(idx);
        else show(idx);
      });
      $('queue').appendChild(cell);
    }
    const i = state.queue.indexOf(img);
    cell.className = 'cell s-' + img.status + (i === state.cur ? ' current' : '') +
      (state.selected.has(img.id) ? ' selected' : '');
    cell.setAttribute('aria-selected', i === state.cur ? 'true' : 'false');
    cell.title = '#' + img.id + ' ' + img.status + (img.reason ? ' (' + img.reason + ')' : '') +
      '\n' + img.prompt;
    return cell;
  }

  // The strip follows the queue's order (an undone image is put back in the middle).
  function reorderStrip() {
    const q = $('queue');
    for (const img of state.queue) q.appendChild(renderCell(img));
  }

  function updateCounts() {
    $('queue-count').textContent = String(state.queue.length);
    $('queue-remaining').textContent = state.remaining === null ? '?' : String(state.remaining);
    $('empty').hidden = state.queue.length > 0 || !!state.loading;
    $('stage-img').hidden = state.queue.length === 0;
    $('btn-undo').disabled = state.done.length === 0;
    $('batch').hidden = state.selected.size === 0;
    $('batch-count').textContent = state.selected.size + ' selected';
    for (const id of ['btn-approve', 'btn-reject', 'btn-skip']) $(id).disabled = state.cur < 0;
    document.body.dataset.queue = state.queue.map((x) => x.id).join(',');
  }

  // ---- the stage ----------------------------------------------------------
  function clearStage() {
    $('stage-img').removeAttribute('src');
    for (const id of ['meta', 'checks', 'history', 'compare-grid']) $(id).textContent = '';
    $('prompt').textContent = '';
    $('negative').textContent = '';
    document.body.dataset.current = '';
    updateCounts();
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

  function stageSrc(img) {
    return state.zoom ? img.file : thumb(img, 768);
  }

  async function show(i) {
    if (!state.queue.length) { state.cur = -1; clearStage(); return; }
    i = Math.max(0, Math.min(i, state.queue.length - 1));
    const prev = state.queue[state.cur];
    state.cur = i;
    if (prev && prev !== state.queue[i]) renderCell(prev);
    const img = state.queue[i];
    const cell = renderCell(img);
    cell.scrollIntoView({ block: 'nearest', inline: 'nearest' });
    document.body.dataset.current = String(img.id);
    $('stage-img').src = stageSrc(img);
    $('stage-img').alt = img.prompt;
    $('prompt').textContent = img.prompt;
    $('negative').textContent = img.negative || '-';
    dl($('meta'), [
      ['Image', '#' + img.id + '  ' + img.width + 'x' + img.height],
      ['Theme', img.theme + ' / ' + img.type],
      ['Checks', img.status + (img.reason ? ' (' + img.reason + ')' : '')],
      ['Render', img.backend + (img.model ? ' ' + img.model : '') + ', seed ' + img.seed],
      ['Created', img.created_at],
    ]);
    dl($('checks'), Object.entries(img.checks || {}));
    updateCounts();
    refill();
    if (state.compare) loadCompare(img);
    const hist = $('history');
    hist.textContent = '';
    try {
      const full = await api('/v1/pool/images/' + img.id + '?format=json');
      if (state.queue[state.cur] !== img) return; // moved on meanwhile
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

  function setZoom(on) {
    state.zoom = on;
    $('stage-img-wrap').classList.toggle('zoom', on);
    $('btn-zoom').setAttribute('aria-pressed', on ? 'true' : 'false');
    const img = state.queue[state.cur];
    if (img) $('stage-img').src = stageSrc(img);
  }

  async function loadCompare(img) {
    const grid = $('compare-grid');
    grid.textContent = '';
    grid.dataset.for = '';
    try {
      const res = await api('/v1/pool/images/' + img.id + '/similar?n=4');
      if (state.queue[state.cur] !== img || !state.compare) return;
      const tile = (id, src, label) => {
        const fig = document.createElement('figure');
        fig.className = 'neighbour';
        fig.dataset.id = String(id);
        const im = document.createElement('img');
        im.src = src;
        im.alt = label;
        const cap = document.createElement('figcaption');
        cap.textContent = label;
        fig.append(im, cap);
        grid.appendChild(fig);
      };
      tile(img.id, thumb(img), '#' + img.id + ' (this one)');
      for (const n of res.images) tile(n.id, n.thumb, '#' + n.id + ', distance ' + n.distance);
      if (!res.images.length) {
        const p = document.createElement('p');
        p.textContent = 'no other images in the pool';
        grid.appendChild(p);
      }
      grid.dataset.for = String(img.id);
    } catch (e) {
      grid.textContent = 'could not load neighbours: ' + e.message;
    }
  }

  function setCompare(on) {
    state.compare = on;
    $('compare').hidden = !on;
    $('btn-compare').setAttribute('aria-pressed', on ? 'true' : 'false');
    const img = state.queue[state.cur];
    if (on && img) loadCompare(img);
  }

  // ---- verdicts -----------------------------------------------------------
  async function post(img, verdict, reason) {
    const body = { verdict: verdict, reason: reason || '' };
    if (state.account.anonymous) body.reviewer = $('reviewer').value.trim();
    return api('/v1/pool/images/' + img.id + '/verdict', { method: 'POST', body: body });
  }

  function needReviewer() {
    if (!state.account.anonymous || $('reviewer').value.trim()) return false;
    toast('Type your name in "Reviewer" first: verdicts are signed.', true);
    $('reviewer').focus();
    return true;
  }

  // Takes a judged (or lost) image out of the queue; the stage moves to the one after it.
  function drop(img) {
    const i = state.queue.indexOf(img);
    if (i < 0) return;
    state.queue.splice(i, 1);
    state.selected.delete(img.id);
    const cell = document.getElementById('cell-' + img.id);
    if (cell) cell.remove();
    if (i < state.cur) state.cur--;
    else if (i === state.cur) state.cur = Math.min(i, state.queue.length - 1);
  }

  async function judgeOne(img, verdict, reason) {
    try {
      const res = await post(img, verdict, reason);
      state.done.push({ img: img, verdict: verdict, id: res && res.verdict_id });
      if (state.remaining) state.remaining--;
      drop(img);
      return null;
    } catch (e) {
      if (e.status === 409) { // the lease expired and someone else holds the image now
        drop(img);
        return '#' + img.id + ' is with another reviewer now';
      }
      return '#' + img.id + ': ' + e.message;
    }
  }

  async function judge(verdict, reason) {
    if (state.busy || state.cur < 0 || needReviewer()) return;
    const img = state.queue[state.cur];
    state.busy = true;
    try {
      const failed = await judgeOne(img, verdict, reason);
      if (failed) toast(failed, true);
      else toast('#' + img.id + ' ' + verdict + (reason ? ' (' + reason + ')' : '') + '  (Z: undo)');
      show(state.cur);
      loadStats().catch(() => {});
    } finally {
      state.busy = false;
      updateCounts();
    }
  }

  async function judgeSelection(verdict, reason) {
    if (state.busy || !state.selected.size || needReviewer()) return;
    state.busy = true;
    let ok = 0;
    const failed = [];
    try {
      for (const img of state.queue.filter((x) => state.selected.has(x.id))) {
        const f = await judgeOne(img, verdict, reason);
        if (f) failed.push(f);
        else ok++;
      }
    } finally {
      state.busy = false;
    }
    state.selected.clear();
    show(state.cur);
    toast(ok + ' ' + verdict + (failed.length ? '; ' + failed.join(', ') : ''), failed.length > 0);
    loadStats().catch(() => {});
  }

  async function undo() {
    if (state.busy) return;
    state.busy = true;
    try {
      const res = await api('/v1/review/undo', { method: 'POST', body: {} });
      let k = state.done.findIndex((d) => d.img.id === res.image_id);
      let img;
      if (k >= 0) {
        img = state.done[k].img;
        state.done.splice(k, 1);
      } else { // judged before this page was opened
        img = await api('/v1/pool/images/' + res.image_id + '?format=json');
        delete img.verdicts;
        img.thumb = '/v1/pool/images/' + img.id + '/thumb';
      }
      if (state.remaining !== null) state.remaining++;
      const at = Math.max(state.cur, 0);
      state.queue.splice(at, 0, img);
      state.cur = at;
      reorderStrip();
      show(at);
      toast('undone: #' + img.id + ' is back in the queue');
      loadStats().catch(() => {});
    } catch (e) {
      toast(e.status === 404 ? 'nothing to undo' : 'undo: ' + e.message, true);
    } finally {
      state.busy = false;
      updateCounts();
    }
  }

  function toggleSelect(i) {
    if (i < 0 || i >= state.queue.length) return;
    const img = state.queue[i];
    if (state.selected.has(img.id)) state.selected.delete(img.id);
    else state.selected.add(img.id);
    renderCell(img);
    updateCounts();
  }

  function clearSelection() {
    const had = state.queue.filter((x) => state.selected.has(x.id));
    state.selected.clear();
    had.forEach(renderCell);
    updateCounts();
  }

  // ---- reject reasons -----------------------------------------------------
  async function loadReasons() {
    let reasons = DEFAULT_REASONS;
    try {
      const res = await api('/v1/review/reasons');
      if (res && Array.isArray(res.reasons) && res.reasons.length) reasons = res.reasons;
    } catch (e) {
      if (e.status !== 404) toast('reasons: ' + e.message, true);
    }
    const ol = $('reasons');
    ol.textContent = '';
    reasons.forEach((r, i) => {
      const li = document.createElement('li');
      const label = document.createElement('label');
      const input = document.createElement('input');
      input.type = 'radio';
      input.name = 'reason';
      input.value = r;
      label.append(input, ' ' + r + ' ');
      if (i < 9) {
        const k = document.createElement('kbd');
        k.textContent = String(i + 1);
        label.appendChild(k);
      }
      li.appendChild(label);
      ol.appendChild(li);
    });
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
      // no keyboard popping up on a phone: focus the text box only with a real keyboard
      if (!matchMedia('(pointer: coarse)').matches) $('reason-text').focus();
    });
  }

  async function reject(batch) {
    const n = batch ? state.selected.size : 1;
    if ((batch && !n) || (!batch && state.cur < 0) || needReviewer()) return;
    const reason = await askReason(batch ? 'Reject ' + n + ' selected' : 'Reject #' + state.queue[state.cur].id);
    if (!reason) { toast('not rejected: pick or type a reason', true); return; }
    if (batch) await judgeSelection('reject', reason);
    else await judge('reject', reason);
  }

  // ---- wiring -------------------------------------------------------------
  function onDialogKey(ev, d) {
    // 1-9 pick a listed reason unless the free-text box is being typed in
    if (document.activeElement === $('reason-text') && $('reason-text').value) return;
    const n = parseInt(ev.key, 10);
    const radios = d.querySelectorAll('input[name=reason]');
    if (n >= 1 && n <= Math.min(radios.length, 9)) {
      ev.preventDefault();
      radios[n - 1].checked = true;
      $('reason-text').value = '';
    } else if (ev.key === 'Enter') {
      ev.preventDefault();
      d.returnValue = 'ok';
      d.close();
    }
  }

  function onKey(ev) {
    const d = $('reject-dialog');
    if (d.open) return onDialogKey(ev, d);
    if ($('help').open) return;
    const t = ev.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA')) {
      if (ev.key === 'Escape' || ev.key === 'Enter') t.blur();
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const k = ev.key;
    const keys = {
      a: () => judge('approve'), A: () => judgeSelection('approve'),
      r: () => reject(false), R: () => reject(true),
      s: () => judge('skip'), z: undo, Z: undo,
      j: () => show(state.cur + 1), ArrowRight: () => show(state.cur + 1), ArrowDown: () => show(state.cur + 1),
      k: () => show(state.cur - 1), ArrowLeft: () => show(state.cur - 1), ArrowUp: () => show(state.cur - 1),
      f: () => setZoom(!state.zoom), c: () => setCompare(!state.compare),
      x: () => toggleSelect(state.cur), '?': () => $('help').showModal(),
      Escape: () => {
        if (state.zoom) setZoom(false);
        else if (state.compare) setCompare(false);
        else clearSelection();
      },
    };
    if (Object.prototype.hasOwnProperty.call(keys, k)) {
      ev.preventDefault();
      keys[k]();
    }
  }

  function wire() {
    // a filter change starts a new queue (the leases held stay until they expire or are judged)
    $('filters').addEventListener('submit', (ev) => ev.preventDefault());
    $('f-theme').addEventListener('change', () => resetQueue());
    $('f-type').addEventListener('change', () => resetQueue());
    $('btn-approve').addEventListener('click', () => judge('approve'));
    $('btn-reject').addEventListener('click', () => reject(false));
    $('btn-skip').addEventListener('click', () => judge('skip'));
    $('btn-undo').addEventListener('click', undo);
    $('btn-zoom').addEventListener('click', () => setZoom(!state.zoom));
    $('btn-compare').addEventListener('click', () => setCompare(!state.compare));
    $('stage-img').addEventListener('click', () => setZoom(!state.zoom));
    $('batch-approve').addEventListener('click', () => judgeSelection('approve'));
    $('batch-reject').addEventListener('click', () => reject(true));
    $('batch-clear').addEventListener('click', clearSelection);
    $('help-btn').addEventListener('click', () => $('help').showModal());
    $('compare-grid').addEventListener('click', (ev) => {
      const fig = ev.target.closest('figure');
      if (fig) window.open('/v1/pool/images/' + fig.dataset.id, '_blank', 'noopener');
    });
    document.addEventListener('keydown', onKey);
  }

  async function init() {
    const params = new URLSearchParams(location.search);
    state.account = await px.me();
    if (!state.account) return; // on the way to the login page
    px.showAccount(state.account);
    if (state.account.anonymous) {
      $('anon').hidden = false;
      $('reviewer').value = params.get('reviewer') || localStorage.getItem('pixpipe-reviewer') || '';
      $('reviewer').addEventListener('change', () => {
        localStorage.setItem('pixpipe-reviewer', $('reviewer').value.trim());
      });
    }
    if (params.get('type')) $('f-type').value = params.get('type');
    wire();
    try {
      await Promise.all([loadStats(), loadReasons()]);
      if (params.get('theme')) $('f-theme').value = params.get('theme');
    } catch (e) {
      toast('stats: ' + e.message, true);
    }
    await resetQueue();
    updateCounts();
    document.body.dataset.ready = '1';
    // other reviewers work at the same time: keep the quota table current, and the queue too
    setInterval(() => {
      if (document.hidden) return;
      loadStats().catch(() => {});
      keepLeases();
    }, 20000);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
