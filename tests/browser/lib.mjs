// Shared by the review pages' browser tests (*.test.mjs, run by run.sh): the environment run.sh
// sets, headless Debian chromium through playwright-core, logging in through the login page,
// polling the page, and reading the manifest (SQLite, via python3) to check what was stored.
//   PX_URL       the server, e.g. http://127.0.0.1:41234
//   PX_MANIFEST  the pool's manifest.sqlite
//   PX_FIRST     the first image id (make_pool: 4 theme/type slots of PX_PER images, in id order)
//   PX_PER       images per slot
//   PX_TOKENS    {"ana": TOKEN, "ben": TOKEN, "root": TOKEN}: ana and ben reviewers, root admin
//   PX_TMP       this test's temporary folder (screenshots go there)
//   PX_BIN, PX_MAKE_POOL  pixpipe and serve_make_pool, for a test that needs a server of its own
import { chromium } from 'playwright-core';
import { execFileSync, spawn } from 'node:child_process';
import path from 'node:path';

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(name + ' is not set: run the tests through tests/browser/run.sh');
  return v;
}

export const env = {
  url: need('PX_URL'),
  manifest: need('PX_MANIFEST'),
  first: Number(need('PX_FIRST')),
  per: Number(need('PX_PER')),
  tokens: JSON.parse(need('PX_TOKENS')),
  tmp: need('PX_TMP'),
  bin: need('PX_BIN'),
  makePool: need('PX_MAKE_POOL'),
};

export function shot(name) {
  return path.join(env.tmp, name);
}

// Rows of a query on run.sh's manifest (read-only); manifestOf(file, ...) on another one.
export function manifestOf(file, sql, ...args) {
  const py = 'import json,sqlite3,sys\n' +
    'c=sqlite3.connect("file:"+sys.argv[1]+"?mode=ro",uri=True)\n' +
    'print(json.dumps([list(r) for r in c.execute(sys.argv[2], sys.argv[3:])]))';
  return JSON.parse(execFileSync('python3', ['-c', py, file, sql, ...args.map(String)]).toString());
}

export function manifest(sql, ...args) {
  return manifestOf(env.manifest, sql, ...args);
}

// page.waitForFunction re-evaluates its predicate with eval(), which the pages' CSP (script-src
// 'self') forbids; page.evaluate goes through the DevTools protocol, which CSP allows, so poll.
export async function poll(page, fn, what, arg, timeoutMs = 10000) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await page.evaluate(fn, arg);
    if (last) return last;
    if (Date.now() > end) throw new Error('timed out waiting until ' + what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function launch() {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
}

// Page errors and console errors, to assert there were none. 401/403/404 answers the test
// provokes on purpose show up as "Failed to load resource"; `allow` filters those.
export function watchErrors(page, allow) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => {
    if (m.type() === 'error' && !(allow && allow.test(m.text()))) errors.push(m.text());
  });
  return errors;
}

// A new browser context (its own cookies) logged in as `who` through the login page: the token
// is pasted into the form, and the queue page is ready. Returns {context, page}. `server`
// ({url, tokens}) is another server than run.sh's.
export async function login(browser, who, contextOptions, server) {
  const srv = server || env;
  const context = await browser.newContext(contextOptions || { viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  await page.goto(srv.url + '/review/');
  await page.waitForURL(/\/review\/login\.html/, { timeout: 10000 });
  await page.fill('#login-token', srv.tokens[who]);
  await page.click('#login-submit');
  await page.waitForURL(/\/review\/$/, { timeout: 10000 });
  await page.waitForSelector('body[data-ready="1"]', { timeout: 10000 });
  return { context, page };
}

// The ids in the page's queue, in order (review.js keeps them in body[data-queue]).
export async function queueIds(page) {
  const s = await page.evaluate(() => document.body.dataset.queue || '');
  return s ? s.split(',').map(Number) : [];
}

export async function currentId(page) {
  return Number(await page.evaluate(() => document.body.dataset.current || '0'));
}

// Runs one test body with a browser, prints the failure, and exits (0 or 1), or with
// {exit: false} returns whether it passed, for a test with its own clean-up.
export async function run(name, body, opts) {
  const browser = await launch();
  let failed = false;
  try {
    const msg = await body(browser);
    console.log(name + ': ok' + (msg ? ' (' + msg + ')' : ''));
  } catch (e) {
    failed = true;
    console.error(name + ': FAILED:', e);
  } finally {
    await browser.close();
  }
  if (opts && opts.exit === false) return !failed;
  process.exit(failed ? 1 : 0);
}

// A server of the test's own (a pool made here, other options than run.sh's): makes the pool in
// PX_TMP/NAME with PER images per slot, adds the accounts (['ana', 'root:--admin']) and starts
// `pixpipe serve` with extra args. Returns {url, tokens, manifest, first, stop()}; stop() sends
// SIGTERM and resolves to the exit code.
export async function ownServer(name, per, accounts, args) {
  const pool = path.join(env.tmp, name);
  const first = Number(execFileSync(env.makePool, [pool, String(per), '5']).toString().trim());
  const tokens = {};
  for (const a of accounts) {
    const [who, flag] = a.split(':');
    tokens[who] = execFileSync(env.bin, ['serve', 'reviewer', 'add', who, ...(flag ? [flag] : []),
      '--pool', pool], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  }
  const server = spawn(env.bin, ['serve', '--listen', '127.0.0.1:0', '--pool', pool, '--no-anonymize',
    ...(args || [])], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => server.on('exit', (code) => resolve(code)));
  const url = await new Promise((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(name + ': server did not start')), 10000);
    server.stdout.on('data', (d) => {
      out += d;
      const m = /listening on (http\S+?)\/?\s/.exec(out);
      if (m) { clearTimeout(t); resolve(m[1]); }
    });
    exited.then((code) => reject(new Error(name + ': server exited with ' + code)));
  });
  return {
    url, tokens, first, manifest: path.join(pool, 'manifest.sqlite'),
    stop: () => { server.kill('SIGTERM'); return exited; },
  };
}
