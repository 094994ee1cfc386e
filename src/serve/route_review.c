/*
 * The review queue (docs/review.md, docs/api.md):
 *
 *   POST /v1/review/claim          {"n", "theme"?, "type"?} -> images leased to the caller
 *   POST /v1/review/undo           the caller's latest verdict (<= 10 min old) taken back
 *   GET  /v1/review/reasons        the campaign's reject reasons
 *   GET  /v1/review/admin-queue    (admin) images whose reviewers disagree (votes >= 2)
 *   GET  /v1/review/qc             (admin) per reviewer: judged, approval rate, median
 *                                  seconds per image, agreement
 *
 * and who may call what (px_review_gate, on the headers of every pool and
 * review request). The work itself (leases, tallies) is in the manifest
 * (manifest_review.c), in transactions, so two reviewers never get the same
 * image however their requests interleave.
 */
#include "serve_internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "manifest/px_manifest.h"

#define CLAIM_BODY_MAX 4096
#define UNDO_WINDOW_S 600
#define ADMIN_QUEUE_MAX 200

int px_review_route(px_req *r, const char *url, const char **want)
{
    static const struct {
        const char *path;
        px_route route;
        const char *method;
    } k[] = {
        {"/v1/review/claim", PX_R_CLAIM, "POST"},
        {"/v1/review/undo", PX_R_UNDO, "POST"},
        {"/v1/review/reasons", PX_R_REASONS, "GET"},
        {"/v1/review/admin-queue", PX_R_ADMIN_QUEUE, "GET"},
        {"/v1/review/qc", PX_R_QC, "GET"},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++)
        if (!strcmp(url, k[i].path)) {
            r->route = k[i].route;
            *want = k[i].method;
            return 0;
        }
    r->route = PX_R_OTHER;
    return 404;
}

int px_review_gate(struct MHD_Connection *c, px_req *r, int write, enum MHD_Result *ret)
{
    switch (r->route) {
    case PX_R_POOL_STATS:
    case PX_R_POOL_IMAGES:
    case PX_R_POOL_IMAGE:
    case PX_R_POOL_THUMB:
    case PX_R_POOL_SIMILAR:
    case PX_R_REASONS:
        /* reads: open as before accounts (also with a legacy --token) until
         * the pool has an account, then for accounts only */
        if (px_auth_role(c, r, NULL) == PX_ROLE_NONE && !px_auth_accounts_exist(r->srv))
            return 0;
        return px_auth_require(c, r, PX_ROLE_REVIEWER, NULL, ret);
    case PX_R_POOL_VERDICT:
    case PX_R_CLAIM:
    case PX_R_UNDO:
        if (px_auth_require(c, r, PX_ROLE_REVIEWER, NULL, ret))
            return 1;
        break;
    case PX_R_ADMIN_QUEUE:
    case PX_R_QC:
        return px_auth_require(c, r, PX_ROLE_ADMIN, NULL, ret);
    case PX_R_LOGOUT:
        break;
    default:
        return 0;
    }
    /* a browser's write (cookie, or the anonymous local page) proves it
     * comes from our page; a bearer token is proof enough */
    if (write && px_auth_uses_csrf(c, r) && px_guard_csrf(c, r, ret))
        return 1;
    return 0;
}

/* ---- helpers ---------------------------------------------------------------- */

static enum MHD_Result store_fail(struct MHD_Connection *c, px_req *r, const char *what,
                                  const px_err *err)
{
    px_log(PX_LOG_WARN, "serve: %s: %s", what, err->msg);
    return px_reply_error(c, r, 500, "%s: the manifest could not be read or written (see the "
                                     "server log)", what);
}

static void iso_time(double t, char *buf, size_t cap)
{
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    if (!strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) && cap)
        buf[0] = '\0';
}

static void set_thumb_url(json_t *o, int64_t id)
{
    char url[64];
    snprintf(url, sizeof url, "/v1/pool/images/%lld/thumb", (long long)id);
    json_object_set_new(o, "thumb", json_string(url));
}

/* An optional short string field of the claim body: NULL when absent or "";
 * 1 when present but not a plausible string. */
static int body_word(json_t *body, const char *key, const char **out)
{
    json_t *v = json_object_get(body, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    const char *s = json_string_value(v);
    if (!s || strlen(s) > 96)
        return 1;
    *out = *s ? s : NULL;
    return 0;
}

/* ---- claim -------------------------------------------------------------------- */

static enum MHD_Result claim(struct MHD_Connection *c, px_req *r)
{
    px_manifest *m = px_pool_store(r->srv);
    px_manifest_claim_req q;
    memset(&q, 0, sizeof q);
    q.n = 10;
    json_t *body = NULL;
    if (r->body.len > CLAIM_BODY_MAX)
        return px_reply_error(c, r, 413, "claim: body over %d bytes", CLAIM_BODY_MAX);
    if (r->body.len) {
        json_error_t je;
        body = json_loadb((const char *)r->body.data, r->body.len, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(body)) {
            json_decref(body);
            return px_reply_error(c, r, 400, "claim: body is not a JSON object");
        }
        json_t *n = json_object_get(body, "n");
        if (n && (!json_is_integer(n) || json_integer_value(n) < 1)) {
            json_decref(body);
            return px_reply_error(c, r, 400, "claim: \"n\" must be a positive integer");
        }
        /* more than 100 at once is served as 100 (a page asks for what it holds plus more) */
        if (n)
            q.n = json_integer_value(n) > 100 ? 100 : (int)json_integer_value(n);
        if (body_word(body, "theme", &q.theme_slug) || body_word(body, "type", &q.type)) {
            json_decref(body);
            return px_reply_error(c, r, 400, "claim: \"theme\" and \"type\" must be short "
                                             "strings");
        }
    }
    px_err err = {{0}};
    int votes = 1;
    if (px_pool_review_cfg(r->srv, &votes, NULL, &err) != PX_OK) {
        json_decref(body);
        return store_fail(c, r, "claim: the campaign's review settings", &err);
    }
    q.account_id = r->account_id;
    q.votes = votes;
    q.lease_s = r->srv->o.lease_seconds;
    q.now = px_auth_now();
    px_manifest_lease leases[100];
    size_t n = 0;
    int64_t remaining = 0;
    int st = px_manifest_claim(m, &q, leases, &n, &remaining, &err);
    json_decref(body); /* theme/type pointed into it */
    if (st != PX_OK)
        return store_fail(c, r, "claim", &err);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        px_manifest_image img;
        if (px_manifest_get_image(m, leases[i].image_id, &img, &err) != PX_OK)
            continue; /* deleted meanwhile: its lease just expires */
        json_t *o = px_pool_image_json(&img);
        px_manifest_image_clear(&img);
        if (!o)
            continue;
        char at[32];
        iso_time(leases[i].expires, at, sizeof at);
        set_thumb_url(o, leases[i].image_id);
        json_object_set_new(o, "lease_expires", json_string(at));
        json_array_append_new(arr, o);
    }
    return px_reply_json(c, r, 200,
                         json_pack("{s:o,s:I,s:i}", "images", arr, "remaining",
                                   (json_int_t)remaining, "votes", votes));
}

/* ---- undo, reasons ------------------------------------------------------------- */

static enum MHD_Result undo(struct MHD_Connection *c, px_req *r)
{
    int64_t image = 0, vid = 0;
    px_err err = {{0}};
    int st = px_manifest_undo(px_pool_store(r->srv), r->account_id, px_auth_now(), UNDO_WINDOW_S,
                              r->srv->o.lease_seconds, &image, &vid, &err);
    if (st == PX_ENOTFOUND)
        return px_reply_error(c, r, 404, "nothing to undo: no verdict of yours in the last %d "
                                         "minutes", UNDO_WINDOW_S / 60);
    if (st != PX_OK)
        return store_fail(c, r, "undo", &err);
    return px_reply_json(c, r, 200,
                         json_pack("{s:I,s:I}", "image_id", (json_int_t)image,
                                   "undone_verdict_id", (json_int_t)vid));
}

static enum MHD_Result reasons(struct MHD_Connection *c, px_req *r)
{
    json_t *arr = NULL;
    int votes = 1;
    px_err err = {{0}};
    if (px_pool_review_cfg(r->srv, &votes, &arr, &err) != PX_OK)
        return store_fail(c, r, "reasons", &err);
    return px_reply_json(c, r, 200, json_pack("{s:o,s:i}", "reasons", arr, "votes", votes));
}

/* ---- admin: disputes and QC ---------------------------------------------------- */

static json_t *votes_of(px_manifest *m, int64_t image_id)
{
    px_manifest_verdict *v = NULL;
    size_t n = 0;
    px_err err = {{0}};
    json_t *arr = json_array();
    if (px_manifest_list_verdicts(m, image_id, &v, &n, &err) != PX_OK)
        return arr;
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:I,s:s,s:s,s:s,s:s}", "id", (json_int_t)v[i].id,
                                             "reviewer", v[i].reviewer, "verdict", v[i].verdict,
                                             "reason", v[i].reason, "created_at",
                                             v[i].created_at));
    px_manifest_verdicts_free(v, n);
    return arr;
}

static enum MHD_Result admin_queue(struct MHD_Connection *c, px_req *r)
{
    px_manifest *m = px_pool_store(r->srv);
    px_err err = {{0}};
    int votes = 1;
    px_manifest_tally *t = NULL;
    size_t n = 0;
    if (px_pool_review_cfg(r->srv, &votes, NULL, &err) != PX_OK ||
        px_manifest_review_tally(m, votes, &t, &n, &err) != PX_OK)
        return store_fail(c, r, "admin queue", &err);
    json_t *arr = json_array();
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (!t[i].disputed)
            continue;
        if (total++ >= ADMIN_QUEUE_MAX)
            continue;
        px_manifest_image img;
        if (px_manifest_get_image(m, t[i].image_id, &img, &err) != PX_OK)
            continue;
        json_t *o = px_pool_image_json(&img);
        px_manifest_image_clear(&img);
        if (!o)
            continue;
        set_thumb_url(o, t[i].image_id);
        json_object_set_new(o, "approvals", json_integer(t[i].approvals));
        json_object_set_new(o, "rejects", json_integer(t[i].rejects));
        json_object_set_new(o, "votes", votes_of(m, t[i].image_id));
        json_array_append_new(arr, o);
    }
    free(t);
    return px_reply_json(c, r, 200,
                         json_pack("{s:o,s:I,s:i}", "images", arr, "count", (json_int_t)total,
                                   "votes_needed", votes));
}

json_t *px_review_qc_json(px_server *srv, px_err *err)
{
    px_manifest_qc *q = NULL;
    size_t n = 0;
    if (px_manifest_review_qc(px_pool_store(srv), &q, &n, err) != PX_OK)
        return NULL;
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_pack("{s:s,s:i,s:i,s:f}", "name", q[i].name, "judged", q[i].judged,
                              "approved", q[i].approved, "approval_rate", q[i].approval_rate);
        if (!o)
            continue;
        json_object_set_new(o, "median_seconds", q[i].median_seconds >= 0
                                                     ? json_real(q[i].median_seconds)
                                                     : json_null());
        json_object_set_new(o, "agreement",
                            q[i].agreement >= 0 ? json_real(q[i].agreement) : json_null());
        json_array_append_new(arr, o);
    }
    free(q);
    return json_pack("{s:o}", "reviewers", arr);
}

static enum MHD_Result qc(struct MHD_Connection *c, px_req *r)
{
    px_err err = {{0}};
    json_t *v = px_review_qc_json(r->srv, &err);
    if (!v)
        return store_fail(c, r, "qc", &err);
    return px_reply_json(c, r, 200, v);
}

enum MHD_Result px_review_handle(struct MHD_Connection *c, px_req *r)
{
    if (!px_pool_store(r->srv))
        return px_reply_error(c, r, 404, "no pool: start the server with --pool DIR");
    switch (r->route) {
    case PX_R_CLAIM: return claim(c, r);
    case PX_R_UNDO: return undo(c, r);
    case PX_R_REASONS: return reasons(c, r);
    case PX_R_ADMIN_QUEUE: return admin_queue(c, r);
    case PX_R_QC: return qc(c, r);
    case PX_R_POOL_THUMB: return px_review_thumb(c, r);
    case PX_R_POOL_SIMILAR: return px_review_similar(c, r);
    default: return px_reply_error(c, r, 404, "no such endpoint");
    }
}
