/*
 * pixpipe review login page: POST /v1/login {"token"} and, on success, go to
 * the queue (or the admin page when ?next=admin). The token stays in the
 * password field only; the server answers with an HttpOnly session cookie.
 * Login needs no CSRF token (there is no session yet) but the server still
 * checks Origin/Sec-Fetch-Site, so another site cannot log a browser in.
 */
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);

  // only our own pages as the target after login, never a URL from the query
  function target() {
    const next = new URLSearchParams(location.search).get('next');
    return next === 'admin' ? '/review/admin.html' : '/review/';
  }

  async function login(ev) {
    ev.preventDefault();
    const token = $('login-token').value.trim();
    $('login-error').textContent = '';
    if (!token || /\s/.test(token)) {
      $('login-error').textContent = 'Paste the whole login token (one word, no spaces).';
      return;
    }
    $('login-submit').disabled = true;
    try {
      const res = await fetch('/v1/login', {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ token: token }),
      });
      let body = null;
      try { body = await res.json(); } catch (e) { body = null; }
      if (!res.ok) {
        $('login-error').textContent = res.status === 401
          ? 'This token is not valid (mistyped, or the account was removed).'
          : 'Login failed: ' + ((body && body.error) || 'HTTP ' + res.status);
        return;
      }
      $('login-token').value = '';
      location.assign(target());
    } catch (e) {
      $('login-error').textContent = 'Login failed: ' + e.message;
    } finally {
      $('login-submit').disabled = false;
    }
  }

  async function init() {
    $('login-form').addEventListener('submit', login);
    try {
      const res = await fetch('/v1/me', { credentials: 'same-origin' });
      if (res.ok) {
        const me = await res.json();
        $('login-name').textContent = me.name + ' (' + me.role + ')';
        $('login-already').hidden = false;
      }
    } catch (e) { /* not logged in */ }
    document.body.dataset.ready = '1';
    $('login-token').focus();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
