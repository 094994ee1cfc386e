/*
 * Who is asking: the role of a request (none, reviewer, admin) from its
 * credentials, and the login/logout/me endpoints. Other route files (the
 * review queue, the Campaigns pages) ask px_auth_role / px_auth_require and
 * never look at credentials themselves.
 *
 * Credentials, first match wins (docs/review.md, "Accounts"):
 *  - the px_session cookie of a login (POST /v1/login with the account's
 *    login token): the account; its writes need the CSRF token too;
 *  - `Authorization: Bearer T`: T the server's legacy --token
 *    (PIXPIPE_API_TOKEN) is admin without an account; T an account's login
 *    token is that account (scripts). No CSRF token needed: a browser never
 *    sends this header by itself;
 *  - nothing: a local, anonymous admin while the pool has no accounts and
 *    no --token is set (writes CSRF-checked, as before accounts); none
 *    otherwise.
 * Sessions and accounts live in the manifest (hashed), so removing an
 * account with `pixpipe serve reviewer remove` takes effect at the next
 * request. The answer is worked out once per request and kept in px_req.
 */
#include "serve_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "manifest/px_manifest.h"

#define SESSION_SECONDS (12 * 3600)
#define LOGIN_BODY_MAX 4096

enum { AUTH_NONE = 0, AUTH_ANON, AUTH_COOKIE, AUTH_BEARER };

/* Constant-time comparison, so timing does not tell how much of a guess was
 * right. */
static int same_secret(const char *want, const char *got)
{
    size_t n = strlen(want), m = strlen(got);
    unsigned diff = (unsigned)(n ^ m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)want[i] ^ (unsigned char)(i < m ? got[i] : 0);
    return diff == 0;
}

/* The bearer credential of the request, or NULL. */
static const char *bearer_of(struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncmp(h, "Bearer ", 7))
        return NULL;
    return h + 7;
}

double px_auth_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int px_auth_accounts_exist(px_server *srv)
{
    px_manifest *m = px_pool_store(srv);
    int n = 0;
    px_err err = {{0}};
    if (!m)
        return 0;
    if (px_manifest_account_count(m, &n, &err) != PX_OK) {
        px_log(PX_LOG_WARN, "serve: accounts: %s", err.msg);
        return 1; /* fail closed: no anonymous admin when we cannot tell */
    }
    return n > 0;
}

static void set_account(px_req *r, const px_manifest_account *a, int kind)
{
    r->auth_kind = kind;
    r->role = a->admin ? PX_ROLE_ADMIN : PX_ROLE_REVIEWER;
    r->account_id = a->id;
    snprintf(r->account, sizeof r->account, "%s", a->name);
}

/* Works out r->role, r->account_id, r->account and r->auth_kind. */
static void resolve(struct MHD_Connection *c, px_req *r)
{
    px_server *srv = r->srv;
    px_manifest *m = px_pool_store(srv);
    px_manifest_account a;
    px_err err = {{0}};
    r->auth_done = 1;
    r->role = PX_ROLE_NONE;
    r->account_id = 0;
    r->account[0] = '\0';
    r->auth_kind = AUTH_NONE;
    const char *sid = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, PX_SESSION_COOKIE);
    if (sid && m && px_manifest_session_get(m, sid, px_auth_now(), &a, &err) == PX_OK) {
        set_account(r, &a, AUTH_COOKIE);
        return;
    }
    const char *b = bearer_of(c);
    if (b) {
        if (srv->token && same_secret(srv->token, b)) {
            r->role = PX_ROLE_ADMIN;
            r->auth_kind = AUTH_BEARER;
        } else if (m && px_manifest_account_by_token(m, b, &a, &err) == PX_OK) {
            set_account(r, &a, AUTH_BEARER);
        }
        return; /* a wrong bearer token is no role, never the anonymous one */
    }
    if (!srv->token && !px_auth_accounts_exist(srv)) {
        r->role = PX_ROLE_ADMIN;
        r->auth_kind = AUTH_ANON;
    }
}

px_role px_auth_role(struct MHD_Connection *c, px_req *r, int64_t *account_id)
{
    if (!r->auth_done)
        resolve(c, r);
    if (account_id)
        *account_id = r->account_id;
    return r->role;
}

int px_auth_uses_csrf(struct MHD_Connection *c, px_req *r)
{
    if (!r->auth_done)
        resolve(c, r);
    return r->auth_kind == AUTH_COOKIE || r->auth_kind == AUTH_ANON;
}

enum MHD_Result px_auth_unauthorized(struct MHD_Connection *c, px_req *r, const char *msg)
{
    json_t *v = json_pack("{s:s}", "error", msg);
    char *text = v ? json_dumps(v, JSON_COMPACT) : NULL;
    json_decref(v);
    if (!text)
        return px_reply_error(c, r, 401, "%s", msg);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback(strlen(text), text, free);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return px_reply_response(c, r, 401, resp, "application/json");
}

int px_auth_require(struct MHD_Connection *c, px_req *r, px_role need, int64_t *account_id,
                    enum MHD_Result *ret)
{
    px_role have = px_auth_role(c, r, account_id);
    if (have == PX_ROLE_NONE) {
        *ret = px_auth_unauthorized(c, r, bearer_of(c) ? "wrong bearer token"
                                                       : "log in first (POST /v1/login) or send "
                                                         "a bearer token");
        return 1;
    }
    if (have < need) {
        *ret = px_reply_error(c, r, 403, "this needs the admin role");
        return 1;
    }
    return 0;
}

/* ---- /v1/login, /v1/logout, /v1/me ------------------------------------------ */

static const char *role_name(px_role role)
{
    return role == PX_ROLE_ADMIN ? "admin" : role == PX_ROLE_REVIEWER ? "reviewer" : "none";
}

/* The session cookie: set (sid) or cleared (NULL). */
static void add_cookie(struct MHD_Response *resp, const px_server *srv, const char *sid)
{
    char v[256];
    snprintf(v, sizeof v, "%s=%s; HttpOnly; SameSite=Strict; Path=/; Max-Age=%d%s",
             PX_SESSION_COOKIE, sid ? sid : "", sid ? SESSION_SECONDS : 0,
             srv->o.secure_cookie ? "; Secure" : "");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_SET_COOKIE, v);
}

/* A JSON answer with the session cookie set or cleared. */
static enum MHD_Result reply_with_cookie(struct MHD_Connection *c, px_req *r, int code, json_t *v,
                                         const char *sid)
{
    char *text = NULL;
    size_t len = 0;
    if (v) {
        text = json_dumps(v, JSON_COMPACT);
        json_decref(v);
        if (!text)
            return px_reply_error(c, r, 500, "out of memory");
        len = strlen(text);
    }
    struct MHD_Response *resp =
        text ? MHD_create_response_from_buffer_with_free_callback(len, text, free)
             : MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(text);
        return MHD_NO;
    }
    add_cookie(resp, r->srv, sid);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return px_reply_response(c, r, code, resp, text ? "application/json" : NULL);
}

static enum MHD_Result login(struct MHD_Connection *c, px_req *r)
{
    px_manifest *m = px_pool_store(r->srv);
    if (!m)
        return px_reply_error(c, r, 404, "no pool: accounts live in the pool (--pool DIR)");
    if (r->body.len == 0 || r->body.len > LOGIN_BODY_MAX)
        return px_reply_error(c, r, 400, "login: expected a JSON body {\"token\": \"...\"}");
    json_t *v = json_loadb((const char *)r->body.data, r->body.len, 0, NULL);
    const char *token = json_string_value(json_object_get(v, "token"));
    if (!token) {
        json_decref(v);
        return px_reply_error(c, r, 400, "login: expected a JSON body {\"token\": \"...\"}");
    }
    px_manifest_account a;
    px_err err = {{0}};
    int st = px_manifest_account_by_token(m, token, &a, &err);
    json_decref(v);
    if (st == PX_ENOTFOUND)
        return px_auth_unauthorized(c, r, "login: unknown token");
    if (st != PX_OK) {
        px_log(PX_LOG_WARN, "serve: login: %s", err.msg);
        return px_reply_error(c, r, 500, "login: the manifest could not be read (see the log)");
    }
    char sid[65];
    if (px_manifest_random_hex(sid, 32, &err) != PX_OK ||
        px_manifest_session_add(m, sid, a.id, px_auth_now() + SESSION_SECONDS, &err) != PX_OK) {
        px_log(PX_LOG_WARN, "serve: login: %s", err.msg);
        return px_reply_error(c, r, 500, "login: no session could be made (see the log)");
    }
    px_log(PX_LOG_INFO, "serve: %s logged in", a.name);
    return reply_with_cookie(
        c, r, 200, json_pack("{s:s,s:s}", "name", a.name, "role", a.admin ? "admin" : "reviewer"),
        sid);
}

static enum MHD_Result logout(struct MHD_Connection *c, px_req *r)
{
    px_manifest *m = px_pool_store(r->srv);
    const char *sid = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, PX_SESSION_COOKIE);
    px_err err = {{0}};
    if (m && sid && px_manifest_session_remove(m, sid, &err) != PX_OK)
        px_log(PX_LOG_WARN, "serve: logout: %s", err.msg);
    return reply_with_cookie(c, r, 204, NULL, NULL);
}

static enum MHD_Result me(struct MHD_Connection *c, px_req *r)
{
    px_role role = px_auth_role(c, r, NULL);
    if (role == PX_ROLE_NONE)
        return px_auth_unauthorized(c, r, "not logged in");
    const char *name = r->account[0] ? r->account : r->auth_kind == AUTH_ANON ? "local" : "token";
    return px_reply_json(c, r, 200,
                         json_pack("{s:s,s:s,s:b}", "name", name, "role", role_name(role),
                                   "anonymous", r->auth_kind == AUTH_ANON));
}

enum MHD_Result px_auth_handle(struct MHD_Connection *c, px_req *r)
{
    switch (r->route) {
    case PX_R_LOGIN: return login(c, r);
    case PX_R_LOGOUT: return logout(c, r);
    default: return me(c, r);
    }
}
