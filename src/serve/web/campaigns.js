// The Campaigns page (admin): a form that becomes a campaign JSON for the
// server's campaign parser (errors come back per field), a preview of 20
// prompts, and a run's progress polled once a second (GET /v1/campaigns/ID).
// Render servers and prompt sources are names from the operator's list
// (GET /v1/campaigns "config"): the page never sends a URL.
'use strict';

const $ = (id) => document.getElementById(id);
let csrf = null;
let current = null; // the run shown in the detail section
let timer = null;

async function csrfToken() {
  if (!csrf) {
    const r = await fetch('/v1/csrf', { credentials: 'same-origin' });
    csrf = (await r.json()).csrf_token;
  }
  return csrf;
}

// JSON request; resolves to {status, body}.
async function api(method, path, body) {
  const headers = { 'Accept': 'application/json' };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    headers['X-CSRF-Token'] = await csrfToken();
  }
  const r = await fetch(path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  return { status: r.status, body: data || {} };
}

function text(el, s) { el.textContent = s == null ? '' : String(s); }

function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    if (c instanceof Node) td.appendChild(c); else text(td, c);
    tr.appendChild(td);
  }
  return tr;
}

function denied(msg) {
  $('denied').hidden = false;
  text($('denied'), msg);
  for (const id of ['runs', 'new', 'detail']) $(id).hidden = true;
}

// ---- the form -------------------------------------------------------------

function numberOf(id) {
  const v = $(id).value.trim();
  return v === '' ? undefined : Number(v);
}

function campaignOfForm() {
  const themes = $('f-themes').value.split('\n').map((l) => l.trim()).filter((l) => l)
    .map((l) => {
      const m = l.match(/^(.*?)\s*=\s*(\d+)$/);
      return m ? { name: m[1], count: Number(m[2]) } : l;
    });
  const c = {
    name: $('f-name').value.trim(),
    types: { interiors: numberOf('f-interiors') || 0, exteriors: numberOf('f-exteriors') || 0,
             items: numberOf('f-items') || 0 },
    themes,
    defaults: { format: $('f-format').value },
  };
  const total = numberOf('f-total');
  if (total !== undefined) c.total = total;
  for (const k of ['width', 'height', 'steps']) {
    const v = numberOf('f-' + k);
    if (v !== undefined) c.defaults[k] = v;
  }
  return c;
}

function requestOfForm(start) {
  const render = [...document.querySelectorAll('#f-render input:checked')].map((i) => i.value);
  return { campaign: campaignOfForm(), prompts: $('f-prompts').value, render, start };
}

function clearErrors() {
  for (const e of document.querySelectorAll('#form .err')) text(e, '');
}

function showError(body) {
  const field = body.field || 'campaign';
  const el = document.querySelector(`#form .err[data-field="${field}"]`) ||
             document.querySelector('#form .err[data-field="campaign"]');
  text(el, body.error || 'the server refused the campaign');
}

async function preview() {
  clearErrors();
  $('preview').disabled = true;
  try {
    const r = await api('POST', '/v1/campaigns/preview', requestOfForm(false));
    if (r.status !== 200) { showError(r.body); return; }
    const list = $('preview-list');
    list.replaceChildren();
    for (const p of r.body.prompts) {
      const li = document.createElement('li');
      text(li, `${p.theme} · ${p.type}: ${p.scene}`);
      li.title = p.prompt;
      list.appendChild(li);
    }
    text($('preview-quotas'), `${r.body.total} images: ` +
      r.body.quotas.map((q) => `${q.theme} ${q.type} ${q.quota}`).join(', ') +
      ` (prompts by the ${r.body.writer} writer)`);
    $('preview-out').hidden = false;
  } finally {
    $('preview').disabled = false;
  }
}

async function create(ev) {
  ev.preventDefault();
  clearErrors();
  const r = await api('POST', '/v1/campaigns', requestOfForm(true));
  if (r.status !== 201) { showError(r.body); return; }
  await refreshList();
  show(r.body.id);
}

// ---- runs -------------------------------------------------------------------

async function refreshList() {
  const r = await api('GET', '/v1/campaigns');
  if (r.status === 401 || r.status === 403) {
    denied(r.body.error || 'The Campaigns page is for admin accounts.');
    return null;
  }
  const tb = document.querySelector('#run-list tbody');
  tb.replaceChildren();
  for (const run of r.body.runs) {
    const b = document.createElement('button');
    b.type = 'button';
    text(b, 'Show');
    b.addEventListener('click', () => show(run.id));
    const tr = row([run.id, run.name, run.state, run.updated_at, b]);
    tr.dataset.id = run.id;
    tb.appendChild(tr);
  }
  return r.body;
}

function fillConfig(cfg) {
  const sel = $('f-prompts');
  sel.replaceChildren();
  if (cfg.offline) sel.appendChild(new Option('offline writer (shipped vocabularies)', 'offline'));
  for (const n of cfg.llms) sel.appendChild(new Option(`LLM ${n}`, n));
  const fs = $('f-render');
  for (const n of cfg.servers.concat(cfg.local ? ['local'] : [])) {
    const l = document.createElement('label');
    const i = document.createElement('input');
    i.type = 'checkbox';
    i.value = n;
    i.checked = n !== 'local' || cfg.servers.length === 0;
    l.appendChild(i);
    l.appendChild(document.createTextNode(n === 'local' ? ' this computer (local engine) ' : ` ${n} `));
    fs.appendChild(l);
  }
}

function eta(s) {
  if (s == null) return '–';
  if (s >= 3600) return `${Math.floor(s / 3600)} h ${Math.floor(s / 60) % 60} min`;
  return `${Math.floor(s / 60)} min ${s % 60} s`;
}

function render(d) {
  $('detail').hidden = false;
  text($('d-title'), `Campaign ${d.id}: ${d.name}`);
  text($('d-state'), d.state);
  text($('d-message'), d.message);
  text($('d-done'), d.totals.done);
  text($('d-quota'), d.totals.quota);
  text($('d-rate'), d.images_per_minute.toFixed(1));
  text($('d-eta'), eta(d.eta_seconds));
  const running = d.state === 'running' || d.state === 'pausing';
  $('d-pause').disabled = !running;
  $('d-stop').disabled = d.state === 'stopped' || d.state === 'done' || d.state === 'stopping';
  $('d-resume').disabled = running || d.state === 'done' || d.state === 'stopping';
  const tb = document.querySelector('#d-slots tbody');
  tb.replaceChildren();
  for (const s of d.slots) {
    const tr = row([s.theme, s.type, s.done, s.quota, s.rejected, s.failed, s.expert_rejected]);
    tr.dataset.slot = `${s.theme_slug}/${s.type}`;
    tb.appendChild(tr);
  }
  const sv = $('d-servers');
  sv.replaceChildren();
  for (const s of d.servers) {
    const li = document.createElement('li');
    text(li, `${s.name}: ${s.state}, ${s.done} images, ${s.failures} failures`);
    sv.appendChild(li);
  }
  if (!d.servers.length) {
    const li = document.createElement('li');
    text(li, d.live ? 'starting…' : 'not running');
    sv.appendChild(li);
  }
  const rj = $('d-rejections');
  rj.replaceChildren();
  for (const x of d.rejections) {
    const li = document.createElement('li');
    text(li, `${x.theme_slug}/${x.type} #${x.id}: ${x.reason}`);
    rj.appendChild(li);
  }
  if (!d.rejections.length) {
    const li = document.createElement('li');
    text(li, 'none yet');
    rj.appendChild(li);
  }
  const themes = [...new Set(d.slots.map((s) => s.theme))];
  const sel = $('add-theme');
  if (sel.options.length !== themes.length) {
    sel.replaceChildren();
    for (const t of themes) sel.appendChild(new Option(t, t));
  }
}

async function poll() {
  if (current == null) return;
  const r = await api('GET', `/v1/campaigns/${current}`);
  if (r.status === 200) render(r.body);
}

function show(id) {
  current = id;
  if (timer) clearInterval(timer);
  timer = setInterval(() => { poll(); refreshList(); }, 1000);
  poll();
}

async function act(what, body) {
  const r = await api('POST', `/v1/campaigns/${current}/${what}`, body || {});
  if (r.status >= 400) text($('add-err'), r.body.error);
  else if (r.body.id) render(r.body);
  refreshList();
}

async function init() {
  const cfg = await refreshList();
  if (!cfg) return;
  fillConfig(cfg.config);
  $('preview').addEventListener('click', preview);
  $('form').addEventListener('submit', create);
  $('d-pause').addEventListener('click', () => act('pause'));
  $('d-resume').addEventListener('click', () => act('resume'));
  $('d-stop').addEventListener('click', () => act('stop'));
  $('d-replace').addEventListener('click', () => act('replace-rejected'));
  $('add-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    text($('add-err'), '');
    act('add', { theme: $('add-theme').value, type: $('add-type').value,
                 n: Number($('add-n').value) });
  });
  if (cfg.active != null) show(cfg.active);
}

init();
