/*
 * Shared by the review pages (queue, admin, campaigns): a fetch wrapper for
 * the server's JSON API, the signed-in account and a toast. Exposed as
 * window.px.
 *
 * The session is an HttpOnly cookie set by POST /v1/login, so the page never
 * holds a secret; every write also carries the server's CSRF token (GET
 * /v1/csrf, which a page on another origin cannot read) in X-CSRF-Token, and
 * is retried once with a fresh token when a restarted server refuses the old
 * one. A 401 sends the browser to the login page.
 */
'use strict';

window.px = (function () {
  const $ = (id) => document.getElementById(id);

  class HttpError extends Error {
    constructor(status, msg) {
      super(msg);
      this.status = status;
    }
  }

  let csrf = null;
  async function csrfToken(fresh) {
    if (!csrf || fresh) {
      const res = await fetch('/v1/csrf', { credentials: 'same-origin' });
      const body = await res.json();
      csrf = body.csrf_token;
    }
    return csrf;
  }

  function toLogin() {
    const admin = location.pathname.endsWith('/admin.html');
    location.assign('/review/login.html' + (admin ? '?next=admin' : ''));
  }

  // api(path, {method, body (an object: sent as JSON), noLogin}) -> the parsed answer (null for
  // 204); throws HttpError with the server's message otherwise.
  async function api(path, opts) {
    opts = opts || {};
    const method = opts.method || 'GET';
    const headers = {};
    const init = { method: method, headers: headers, credentials: 'same-origin' };
    const write = method !== 'GET';
    if (opts.body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(opts.body);
    }
    if (write) headers['X-CSRF-Token'] = await csrfToken(false);
    let res = await fetch(path, init);
    if (write && res.status === 403) {
      headers['X-CSRF-Token'] = await csrfToken(true);
      res = await fetch(path, init);
    }
    if (res.status === 401 && !opts.noLogin) {
      toLogin();
      throw new HttpError(401, 'not logged in');
    }
    let body = null;
    if (res.status !== 204) {
      try { body = await res.json(); } catch (e) { body = null; }
    }
    if (!res.ok) throw new HttpError(res.status, (body && body.error) || ('HTTP ' + res.status));
    return body;
  }

  // The signed-in account {name, role}, {anonymous: true} on a server without accounts (it
  // answers the pool without a session), or null after sending the browser to the login page.
  async function me() {
    const res = await fetch('/v1/me', { credentials: 'same-origin' });
    if (res.ok) return res.json();
    if (res.status === 401 || res.status === 404) {
      const probe = await fetch('/v1/pool/stats', { credentials: 'same-origin' });
      if (probe.ok) return { anonymous: true };
    }
    toLogin();
    return null;
  }

  async function logout() {
    try {
      await api('/v1/logout', { method: 'POST', noLogin: true });
    } finally {
      location.assign('/review/login.html');
    }
  }

  // Header: name and role, the admin link for admins, the logout button.
  function showAccount(acc) {
    const admin = $('admin-link');
    if (admin) admin.hidden = !acc || acc.role !== 'admin';
    if (!acc || acc.anonymous) return; // a local server without accounts: nobody to show
    $('who-name').textContent = acc.name;
    $('who-role').textContent = acc.role;
    $('who').hidden = false;
    $('logout').hidden = false;
    $('logout').addEventListener('click', logout);
  }

  function toast(msg, bad) {
    const t = $('toast');
    t.textContent = msg;
    t.className = bad ? 'show bad' : 'show';
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.className = ''; }, bad ? 6000 : 2000);
  }

  function cell(tr, text, tag) {
    const td = document.createElement(tag || 'td');
    td.textContent = text === null || text === undefined ? '-' : String(text);
    tr.appendChild(td);
    return td;
  }

  return { $: $, api: api, me: me, logout: logout, showAccount: showAccount, toast: toast,
    cell: cell, HttpError: HttpError };
})();
