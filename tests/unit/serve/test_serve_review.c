/*
 * Review for a team (issue 14), against an in-process server on a fresh pool
 * per test, driven by libcurl:
 *  - accounts: login sets an HttpOnly, SameSite=Strict cookie; /v1/me;
 *    logout ends the session; a login from another origin is refused; once
 *    an account exists nothing is anonymous; a reviewer gets 403 on admin
 *    routes; the verdict carries the account, not a typed name;
 *  - leases: two accounts claiming at once never get the same image (label
 *    "concurrent"); someone else's lease is 409; a re-claim gives one's own
 *    leases back; a lease expires;
 *  - undo; double review (review.votes = 2): two different accounts, the
 *    disagreements in the admin queue, export --approved takes only images
 *    with enough approvals, an admin's verdict settles a dispute;
 *  - QC figures via the API and /metrics; reject reasons from the campaign;
 *    WebP thumbnails cached in the pool; similar images by pHash.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "image/px_image.h"
#include "integration/test_serve_fixture.h"
#include "manifest/px_manifest.h"
#include "px_test.h"
#include "serve/px_serve.h"

#define PER_SLOT 3 /* 2 themes x 2 types x 3 = 12 images */
#define N_IMAGES (4 * PER_SLOT)

typedef struct pool {
    char dir[256];
    char db[300];
    int64_t first;
    px_server *srv;
} pool;

/* A fresh pool; campaign_json (may be NULL) stored as its latest campaign. */
static void pool_make(pool *p, const char *campaign_json)
{
    memset(p, 0, sizeof *p);
    snprintf(p->dir, sizeof p->dir, "/tmp/px-serve-review-XXXXXX");
    assert_non_null(mkdtemp(p->dir));
    snprintf(p->db, sizeof p->db, "%s/manifest.sqlite", p->dir);
    px_err err = {{0}};
    int st = fx_make_pool(p->dir, PER_SLOT, 5, &p->first, &err);
    if (st)
        fprintf(stderr, "pool: %s\n", err.msg);
    assert_int_equal(st, PX_OK);
    if (campaign_json) {
        px_manifest *m;
        assert_int_equal(px_manifest_open(p->db, 0, &m, &err), PX_OK);
        assert_int_equal(px_manifest_add_campaign(m, "review test", campaign_json, NULL, &err),
                         PX_OK);
        px_manifest_close(m);
    }
}

static void pool_start(pool *p, int lease_s)
{
    px_serve_opts o = px_serve_opts_default();
    o.port = 0;
    o.pool_dir = p->dir;
    o.lease_seconds = lease_s;
    px_err err = {{0}};
    int st = px_server_create(&o, &p->srv, &err);
    if (st)
        fprintf(stderr, "server: %s\n", err.msg);
    assert_int_equal(st, PX_OK);
}

static void pool_free(pool *p)
{
    px_server_destroy(p->srv);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p->dir);
    assert_int_equal(system(cmd), 0);
}

/* Adds an account; its login token into token. */
static void add_account(pool *p, const char *name, int admin, char token[65])
{
    px_manifest *m;
    px_err err = {{0}};
    assert_int_equal(px_manifest_open(p->db, 0, &m, &err), PX_OK);
    int st = px_manifest_account_add(m, name, admin, token, NULL, &err);
    if (st)
        fprintf(stderr, "account: %s\n", err.msg);
    assert_int_equal(st, PX_OK);
    px_manifest_close(m);
}

/* ---- HTTP --------------------------------------------------------------------- */

typedef struct resp {
    long code;
    px_buf body;
    char cookie[512]; /* Set-Cookie */
    char etag[128];
    char ctype[64];
    json_t *json; /* parsed body, or NULL */
} resp;

static size_t on_body(char *d, size_t sz, size_t n, void *u)
{
    return px_buf_append(u, d, sz * n) == PX_OK ? sz * n : 0;
}

static void header_value(const char *line, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    if (len <= nl || strncasecmp(line, name, nl))
        return;
    const char *v = line + nl;
    size_t vl = len - nl;
    while (vl && (*v == ' '))
        v++, vl--;
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n'))
        vl--;
    snprintf(out, cap, "%.*s", (int)vl, v);
}

static size_t on_header(char *d, size_t sz, size_t n, void *u)
{
    resp *r = u;
    header_value(d, sz * n, "Set-Cookie:", r->cookie, sizeof r->cookie);
    header_value(d, sz * n, "ETag:", r->etag, sizeof r->etag);
    header_value(d, sz * n, "Content-Type:", r->ctype, sizeof r->ctype);
    return sz * n;
}

/* One request; extra headers as a NULL-terminated list. */
static void http(pool *p, const char *method, const char *path, const char *body,
                 const char *const *headers, resp *out)
{
    memset(out, 0, sizeof *out);
    char u[512];
    snprintf(u, sizeof u, "http://127.0.0.1:%d%s", px_server_port(p->srv), path);
    CURL *h = curl_easy_init();
    assert_non_null(h);
    struct curl_slist *hl = NULL;
    for (int i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    if (body)
        hl = curl_slist_append(hl, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, u);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (!strcmp(method, "POST")) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, 0L);
    }
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &out->body);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, out);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)px_test_ms(20000));
    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK)
        fprintf(stderr, "curl %s %s: %s\n", method, path, curl_easy_strerror(cc));
    assert_int_equal(cc, CURLE_OK);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &out->code);
    curl_slist_free_all(hl);
    curl_easy_cleanup(h);
    px_buf_append(&out->body, "", 1);
    out->body.len--;
    out->json = json_loads((const char *)out->body.data, 0, NULL);
}

static void resp_free(resp *r)
{
    px_buf_free(&r->body);
    json_decref(r->json);
}

static void expect(resp *r, long code)
{
    if (r->code != code)
        fprintf(stderr, "expected %ld, got %ld: %.300s\n", code, r->code,
                r->body.data ? (char *)r->body.data : "");
    assert_int_equal(r->code, code);
}

/* "Authorization: Bearer TOKEN" into buf. */
static const char *bearer(char *buf, size_t cap, const char *token)
{
    snprintf(buf, cap, "Authorization: Bearer %s", token);
    return buf;
}

/* Claims n images as the bearer of token; ids into out (room for n); returns how many. */
static int claim(pool *p, const char *token, int n, int64_t *out)
{
    char auth[128], body[64];
    const char *h[] = {bearer(auth, sizeof auth, token), NULL};
    snprintf(body, sizeof body, "{\"n\":%d}", n);
    resp r;
    http(p, "POST", "/v1/review/claim", body, h, &r);
    expect(&r, 200);
    json_t *imgs = json_object_get(r.json, "images");
    assert_true(json_is_array(imgs));
    int k = (int)json_array_size(imgs);
    assert_true(k <= n);
    for (int i = 0; i < k; i++) {
        json_t *o = json_array_get(imgs, (size_t)i);
        out[i] = json_integer_value(json_object_get(o, "id"));
        assert_non_null(json_string_value(json_object_get(o, "lease_expires")));
        assert_non_null(strstr(json_string_value(json_object_get(o, "thumb")), "/thumb"));
    }
    resp_free(&r);
    return k;
}

/* Posts a verdict as the bearer of token; returns the HTTP status. */
static long vote(pool *p, const char *token, int64_t id, const char *verdict)
{
    char auth[128], path[96], body[160];
    const char *h[] = {bearer(auth, sizeof auth, token), NULL};
    snprintf(path, sizeof path, "/v1/pool/images/%lld/verdict", (long long)id);
    snprintf(body, sizeof body, "{\"verdict\":\"%s\",\"reason\":\"%s\",\"reviewer\":\"typed\"}",
             verdict, strcmp(verdict, "reject") ? "" : "off theme");
    resp r;
    http(p, "POST", path, body, h, &r);
    long code = r.code;
    resp_free(&r);
    return code;
}

/* ---- accounts ----------------------------------------------------------------- */

static void test_login_cookie(void **state)
{
    (void)state;
    pool p;
    pool_make(&p, NULL);
    pool_start(&p, 600);
    char ana[65], bob[65];
    add_account(&p, "ana", 0, ana);
    add_account(&p, "bob admin", 1, bob);
    resp r;

    /* anonymous is over once an account exists: reads and writes */
    http(&p, "GET", "/v1/pool/images", NULL, NULL, &r);
    expect(&r, 401);
    resp_free(&r);
    http(&p, "GET", "/v1/me", NULL, NULL, &r);
    expect(&r, 401);
    resp_free(&r);

    http(&p, "POST", "/v1/login", "{\"token\":\"0123\"}", NULL, &r);
    expect(&r, 401);
    assert_string_equal(r.cookie, "");
    resp_free(&r);
    const char *junk[] = {"", "[1]", "{\"token\":5}", "{\"token\":", "not json"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        http(&p, "POST", "/v1/login", junk[i], NULL, &r);
        expect(&r, 400);
        assert_string_equal(r.cookie, "");
        resp_free(&r);
    }

    /* a login posted from another origin is refused before the token is looked at */
    const char *evil[] = {"Origin: http://evil.example", NULL};
    char body[128];
    snprintf(body, sizeof body, "{\"token\":\"%s\"}", ana);
    http(&p, "POST", "/v1/login", body, evil, &r);
    expect(&r, 403);
    assert_string_equal(r.cookie, "");
    resp_free(&r);
    const char *cross[] = {"Sec-Fetch-Site: cross-site", NULL};
    http(&p, "POST", "/v1/login", body, cross, &r);
    expect(&r, 403);
    resp_free(&r);

    const char *same[] = {"Sec-Fetch-Site: same-origin", NULL};
    http(&p, "POST", "/v1/login", body, same, &r);
    expect(&r, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "name")), "ana");
    assert_string_equal(json_string_value(json_object_get(r.json, "role")), "reviewer");
    assert_non_null(strstr(r.cookie, "px_session="));
    assert_non_null(strstr(r.cookie, "HttpOnly"));
    assert_non_null(strstr(r.cookie, "SameSite=Strict"));
    assert_non_null(strstr(r.cookie, "Path=/"));
    assert_null(strstr(r.cookie, "Secure"));
    char cookie[200];
    snprintf(cookie, sizeof cookie, "Cookie: %.*s", (int)strcspn(r.cookie, ";"), r.cookie);
    resp_free(&r);
    /* the session id is not in the manifest, only its hash */
    char sid[200];
    snprintf(sid, sizeof sid, "%s", cookie + strlen("Cookie: px_session="));
    char sql[300];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM sessions WHERE sid_sha256 = '%s'", sid);
    assert_int_equal(fx_sql_int(p.db, sql), 0);
    assert_int_equal(fx_sql_int(p.db, "SELECT COUNT(*) FROM sessions"), 1);
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM accounts WHERE token_sha256 = '%s'", ana);
    assert_int_equal(fx_sql_int(p.db, sql), 0);

    const char *with[] = {cookie, NULL};
    http(&p, "GET", "/v1/me", NULL, with, &r);
    expect(&r, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "name")), "ana");
    resp_free(&r);

    /* a cookie write needs the CSRF token as well */
    char path[96];
    snprintf(path, sizeof path, "/v1/pool/images/%lld/verdict", (long long)p.first);
    http(&p, "POST", path, "{\"verdict\":\"approve\"}", with, &r);
    expect(&r, 403);
    resp_free(&r);
    http(&p, "GET", "/v1/csrf", NULL, with, &r);
    char csrf[120];
    snprintf(csrf, sizeof csrf, "X-CSRF-Token: %s",
             json_string_value(json_object_get(r.json, "csrf_token")));
    resp_free(&r);
    const char *write[] = {cookie, csrf, NULL};
    http(&p, "POST", path, "{\"verdict\":\"approve\",\"reviewer\":\"mallory\"}", write, &r);
    expect(&r, 201);
    /* the account is the reviewer; the typed name is ignored */
    assert_string_equal(json_string_value(json_object_get(r.json, "reviewer")), "ana");
    resp_free(&r);

    /* roles: a reviewer is kept out of the admin routes */
    http(&p, "GET", "/v1/review/qc", NULL, with, &r);
    expect(&r, 403);
    resp_free(&r);
    http(&p, "GET", "/v1/review/admin-queue", NULL, with, &r);
    expect(&r, 403);
    resp_free(&r);
    char auth[128];
    const char *admin[] = {bearer(auth, sizeof auth, bob), NULL};
    http(&p, "GET", "/v1/review/qc", NULL, admin, &r);
    expect(&r, 200);
    resp_free(&r);
    http(&p, "GET", "/v1/me", NULL, admin, &r);
    expect(&r, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "role")), "admin");
    resp_free(&r);

    http(&p, "POST", "/v1/logout", NULL, write, &r);
    expect(&r, 204);
    assert_non_null(strstr(r.cookie, "Max-Age=0"));
    resp_free(&r);
    http(&p, "GET", "/v1/me", NULL, with, &r);
    expect(&r, 401);
    resp_free(&r);
    assert_int_equal(fx_sql_int(p.db, "SELECT COUNT(*) FROM sessions"), 0);
    pool_free(&p);
}

static void test_account_rules(void **state)
{
    (void)state;
    pool p;
    pool_make(&p, NULL);
    px_manifest *m;
    px_err err = {{0}};
    char tok[65];
    assert_int_equal(px_manifest_open(p.db, 0, &m, &err), PX_OK);
    const char *bad[] = {"", " ana", "ana\n", "a/b", "<script>",
                         "0123456789012345678901234567890123456789012345678901234567890123456789"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(px_manifest_account_add(m, bad[i], 0, tok, NULL, &err), PX_EINVAL);
    assert_int_equal(px_manifest_account_add(m, "Ana-Maria_2.x", 0, tok, NULL, &err), PX_OK);
    assert_int_equal(strlen(tok), 64);
    assert_int_equal(px_manifest_account_add(m, "Ana-Maria_2.x", 1, tok, NULL, &err), PX_EINVAL);
    assert_non_null(strstr(err.msg, "exists"));
    px_manifest_account a;
    assert_int_equal(px_manifest_account_by_token(m, tok, &a, &err), PX_OK);
    assert_string_equal(a.name, "Ana-Maria_2.x");
    int rst = px_manifest_account_remove(m, "Ana-Maria_2.x", &err);
    if (rst)
        fprintf(stderr, "remove: %s\n", err.msg);
    assert_int_equal(rst, PX_OK);
    assert_int_equal(px_manifest_account_by_token(m, tok, &a, &err), PX_ENOTFOUND);
    assert_int_equal(px_manifest_account_remove(m, "nobody", &err), PX_ENOTFOUND);
    px_manifest_close(m);
    pool_free(&p);
}

/* ---- leases ------------------------------------------------------------------- */

typedef struct claimer {
    pool *p;
    const char *token;
    int64_t got[N_IMAGES * 2];
    int n_got;
    int failed;
} claimer;

static void *claim_loop(void *arg)
{
    claimer *c = arg;
    /* claim two at a time and judge them until nothing is left */
    for (int round = 0; round < N_IMAGES; round++) {
        int64_t ids[2];
        int k = claim(c->p, c->token, 2, ids);
        if (k == 0)
            break;
        for (int i = 0; i < k; i++) {
            c->got[c->n_got++] = ids[i];
            if (vote(c->p, c->token, ids[i], "approve") != 201)
                c->failed++;
        }
    }
    return NULL;
}

static void test_concurrent_claims(void **state)
{
    (void)state;
    pool p;
    pool_make(&p, NULL);
    pool_start(&p, 600);
    char tok[4][65];
    claimer cl[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        char name[16];
        snprintf(name, sizeof name, "rev%d", i);
        add_account(&p, name, 0, tok[i]);
        memset(&cl[i], 0, sizeof cl[i]);
        cl[i].p = &p;
        cl[i].token = tok[i];
    }
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, claim_loop, &cl[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    /* every image handed out exactly once, and judged */
    int total = 0;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(cl[i].failed, 0);
        total += cl[i].n_got;
        for (int j = 0; j < cl[i].n_got; j++)
            for (int k = i; k < 4; k++)
                for (int l = k == i ? j + 1 : 0; l < cl[k].n_got; l++)
                    assert_true(cl[i].got[j] != cl[k].got[l]);
    }
    /* 3 of the 12 images are flagged, all 12 are reviewable */
    assert_int_equal(total, N_IMAGES);
    assert_int_equal(fx_sql_int(p.db, "SELECT COUNT(DISTINCT image_id) FROM verdicts"), N_IMAGES);
    assert_int_equal(fx_sql_int(p.db, "SELECT COUNT(*) FROM verdicts"), N_IMAGES);
    assert_int_equal(fx_sql_int(p.db, "SELECT COUNT(*) FROM leases"), 0);
    pool_free(&p);
}

static void test_lease_rules(void **state)
{
    (void)state;
    pool p;
    pool_make(&p, NULL);
    pool_start(&p, 600);
    char a[65], b[65];
    add_account(&p, "ana", 0, a);
    add_account(&p, "bob", 0, b);
    int64_t mine[N_IMAGES], again[N_IMAGES], theirs[N_IMAGES];
    int k = claim(&p, a, 3, mine);
    assert_int_equal(k, 3);
    /* a reload gives ana the same images back */
    assert_int_equal(claim(&p, a, 3, again), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(again[i], mine[i]);
    /* bob gets the others, and cannot judge ana's */
    int kb = claim(&p, b, N_IMAGES, theirs);
    assert_int_equal(kb, N_IMAGES - 3);
    for (int i = 0; i < kb; i++)
        for (int j = 0; j < 3; j++)
            assert_true(theirs[i] != mine[j]);
    assert_int_equal(vote(&p, b, mine[0], "approve"), 409);
    assert_int_equal(fx_sql_int(p.db, "SELECT COUNT(*) FROM verdicts"), 0);
    assert_int_equal(vote(&p, a, mine[0], "approve"), 201);

    /* the same pool under one-second leases: ana's re-claim renews hers to a
     * second, they run out, and bob then gets her two unjudged images */
    px_server_destroy(p.srv);
    pool_start(&p, 1);
    assert_int_equal(claim(&p, a, 3, again), 2);
    double until = px_test_now_ms() + px_test_ms(15000);
    int got = 0;
    int64_t later[N_IMAGES];
    while (px_test_now_ms() < until) {
        got = claim(&p, b, N_IMAGES, later);
        if (got == N_IMAGES - 1)
            break;
        px_test_sleep_ms(200);
    }
    assert_int_equal(got, N_IMAGES - 1); /* all but the one judged */
    int seen = 0;
    for (int i = 0; i < got; i++)
        seen += later[i] == mine[1] || later[i] == mine[2];
    assert_int_equal(seen, 2);
    pool_free(&p);
}

static void test_undo(void **state)
{
    (void)state;
    pool p;
    pool_make(&p, NULL);
    pool_start(&p, 600);
    char a[65], b[65], auth[128];
    add_account(&p, "ana", 0, a);
    add_account(&p, "bob", 0, b);
    const char *h[] = {bearer(auth, sizeof auth, a), NULL};
    resp r;
    http(&p, "POST", "/v1/review/undo", NULL, h, &r);
    expect(&r, 404);
    resp_free(&r);
    int64_t ids[2];
    assert_int_equal(claim(&p, a, 2, ids), 2);
    assert_int_equal(vote(&p, a, ids[0], "approve"), 201);
    assert_int_equal(vote(&p, a, ids[1], "reject"), 201);
    http(&p, "POST", "/v1/review/undo", NULL, h, &r);
    expect(&r, 200);
    assert_int_equal(json_integer_value(json_object_get(r.json, "image_id")), ids[1]);
    assert_true(json_integer_value(json_object_get(r.json, "undone_verdict_id")) > 0);
    resp_free(&r);
    assert_int_equal(fx_sql_int(p.db, "SELECT COUNT(*) FROM verdicts"), 1);
    /* the image is back in ana's hands, not bob's */
    int64_t back[1];
    assert_int_equal(claim(&p, a, 1, back), 1);
    assert_int_equal(back[0], ids[1]);
    assert_int_equal(vote(&p, b, ids[1], "approve"), 409);
    /* bob's undo never takes ana's verdict */
    const char *hb[] = {bearer(auth, sizeof auth, b), NULL};
    http(&p, "POST", "/v1/review/undo", NULL, hb, &r);
    expect(&r, 404);
    resp_free(&r);
    pool_free(&p);
}

/* ---- double review, export, QC -------------------------------------------------- */

static void test_double_review(void **state)
{
    (void)state;
    pool p;
    pool_make(&p, "{\"name\":\"t\",\"review\":{\"votes\":2,"
                  "\"reject_reasons\":[\"wrong season\",\"cropped\"]}}");
    pool_start(&p, 600);
    char a[65], b[65], boss[65], auth[128];
    add_account(&p, "ana", 0, a);
    add_account(&p, "bob", 0, b);
    add_account(&p, "boss", 1, boss);
    int64_t ia[N_IMAGES], ib[N_IMAGES], again[N_IMAGES];
    /* ana judges 2: X approved, Y approved; Z she rejects */
    assert_int_equal(claim(&p, a, 3, ia), 3);
    assert_int_equal(vote(&p, a, ia[0], "approve"), 201);
    assert_int_equal(vote(&p, a, ia[1], "approve"), 201);
    assert_int_equal(vote(&p, a, ia[2], "reject"), 201);
    /* ana is never handed her own images again */
    int ka = claim(&p, a, N_IMAGES, again);
    assert_int_equal(ka, N_IMAGES - 3);
    for (int i = 0; i < ka; i++)
        assert_true(again[i] != ia[0] && again[i] != ia[1] && again[i] != ia[2]);
    /* bob gets the three ana judged (nobody holds them) and nothing ana holds */
    int kb = claim(&p, b, N_IMAGES, ib);
    assert_int_equal(kb, 3);
    assert_int_equal(vote(&p, b, ia[0], "approve"), 201);
    assert_int_equal(vote(&p, b, ia[1], "reject"), 201);
    assert_int_equal(vote(&p, b, ia[2], "reject"), 201);

    resp r;
    const char *hb[] = {bearer(auth, sizeof auth, boss), NULL};
    http(&p, "GET", "/v1/review/reasons", NULL, hb, &r);
    expect(&r, 200);
    json_t *rs = json_object_get(r.json, "reasons");
    assert_int_equal(json_array_size(rs), 2);
    assert_string_equal(json_string_value(json_array_get(rs, 0)), "wrong season");
    resp_free(&r);

    http(&p, "GET", "/v1/review/admin-queue", NULL, hb, &r);
    expect(&r, 200);
    json_t *q = json_object_get(r.json, "images");
    assert_int_equal(json_array_size(q), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(q, 0), "id")), ia[1]);
    assert_int_equal(json_array_size(json_object_get(json_array_get(q, 0), "votes")), 2);
    resp_free(&r);

    char out[300];
    size_t n = 0;
    px_err err = {{0}};
    snprintf(out, sizeof out, "%s/export1", p.dir);
    assert_int_equal(px_manifest_export_approved(p.dir, out, &n, &err), PX_OK);
    assert_int_equal(n, 1); /* X only: Y disputed, Z rejected, the rest one vote short */

    /* the admin settles Y */
    assert_int_equal(vote(&p, boss, ia[1], "approve"), 201);
    http(&p, "GET", "/v1/review/admin-queue", NULL, hb, &r);
    expect(&r, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "images")), 0);
    resp_free(&r);
    snprintf(out, sizeof out, "%s/export2", p.dir);
    assert_int_equal(px_manifest_export_approved(p.dir, out, &n, &err), PX_OK);
    assert_int_equal(n, 2);

    /* QC: ana and bob agree on X and Z, disagree on Y */
    http(&p, "GET", "/v1/review/qc", NULL, hb, &r);
    expect(&r, 200);
    json_t *revs = json_object_get(r.json, "reviewers");
    int found = 0;
    for (size_t i = 0; i < json_array_size(revs); i++) {
        json_t *o = json_array_get(revs, i);
        const char *name = json_string_value(json_object_get(o, "name"));
        if (!strcmp(name, "ana")) {
            found++;
            assert_int_equal(json_integer_value(json_object_get(o, "judged")), 3);
            assert_int_equal(json_integer_value(json_object_get(o, "approved")), 2);
            /* Y: bob rejects and boss approves; X agree, Z agree: 3 of 4 */
            assert_true(json_real_value(json_object_get(o, "agreement")) > 0.74 &&
                        json_real_value(json_object_get(o, "agreement")) < 0.76);
            assert_true(json_is_real(json_object_get(o, "median_seconds")));
        }
    }
    assert_int_equal(found, 1);
    resp_free(&r);
    http(&p, "GET", "/metrics", NULL, NULL, &r);
    expect(&r, 200);
    assert_non_null(strstr((char *)r.body.data, "pixpipe_reviewer_judged{reviewer=\"ana\"} 3"));
    assert_non_null(strstr((char *)r.body.data, "pixpipe_reviewer_agreement{reviewer=\"bob\"}"));
    resp_free(&r);
    pool_free(&p);
}

/* ---- thumbnails, similar, anonymous mode ----------------------------------------- */

static void test_thumbs_similar(void **state)
{
    (void)state;
    pool p;
    pool_make(&p, NULL);
    pool_start(&p, 600); /* no accounts: anonymous reads as before */
    char path[128];
    resp r;
    snprintf(path, sizeof path, "/v1/pool/images/%lld/thumb", (long long)p.first);
    http(&p, "GET", path, NULL, NULL, &r);
    expect(&r, 200);
    assert_string_equal(r.ctype, "image/webp");
    px_image img;
    px_decode_opts dopt = px_decode_opts_default();
    px_err err = {{0}};
    assert_int_equal(px_image_decode(r.body.data, r.body.len, &dopt, &img, NULL, &err), PX_OK);
    assert_int_equal(img.w, 96); /* already smaller than 384: not enlarged */
    assert_int_equal(img.h, 64);
    px_image_free(&img);
    char etag[160], cached[400];
    snprintf(etag, sizeof etag, "If-None-Match: %s", r.etag);
    resp_free(&r);
    snprintf(cached, sizeof cached, "%s/.thumbs/%lld-384.webp", p.dir, (long long)p.first);
    struct stat sb;
    assert_int_equal(stat(cached, &sb), 0);
    const char *inm[] = {etag, NULL};
    http(&p, "GET", path, NULL, inm, &r);
    expect(&r, 304);
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/pool/images/%lld/thumb?size=500", (long long)p.first);
    http(&p, "GET", path, NULL, NULL, &r);
    expect(&r, 400);
    resp_free(&r);
    http(&p, "GET", "/v1/pool/images/99999/thumb", NULL, NULL, &r);
    expect(&r, 404);
    resp_free(&r);

    snprintf(path, sizeof path, "/v1/pool/images/%lld/similar?n=3", (long long)p.first);
    http(&p, "GET", path, NULL, NULL, &r);
    expect(&r, 200);
    json_t *imgs = json_object_get(r.json, "images");
    assert_true(json_array_size(imgs) >= 1 && json_array_size(imgs) <= 3);
    long prev = -1;
    for (size_t i = 0; i < json_array_size(imgs); i++) {
        json_t *o = json_array_get(imgs, i);
        assert_true(json_integer_value(json_object_get(o, "id")) != p.first);
        long d = (long)json_integer_value(json_object_get(o, "distance"));
        assert_true(d >= prev && d <= 64);
        prev = d;
    }
    resp_free(&r);

    /* anonymous local use: a claim and an undo work without accounts */
    http(&p, "GET", "/v1/csrf", NULL, NULL, &r);
    char csrf[120];
    snprintf(csrf, sizeof csrf, "X-CSRF-Token: %s",
             json_string_value(json_object_get(r.json, "csrf_token")));
    resp_free(&r);
    const char *h[] = {csrf, NULL};
    http(&p, "POST", "/v1/review/claim", "{\"n\":2,\"type\":\"interiors\"}", h, &r);
    expect(&r, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "images")), 2);
    assert_int_equal(json_integer_value(json_object_get(r.json, "remaining")), 2 * PER_SLOT);
    resp_free(&r);
    http(&p, "POST", "/v1/review/claim", "{\"n\":2}", NULL, &r);
    expect(&r, 403); /* no CSRF token */
    resp_free(&r);
    const char *bad[] = {"{\"n\":0}", "{\"n\":\"5\"}", "[]", "{\"n\":",
                         "{\"type\":7}", "{\"n\":1,\"n\":2}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        http(&p, "POST", "/v1/review/claim", bad[i], h, &r);
        expect(&r, 400);
        resp_free(&r);
    }
    /* an ask over 100 is served as 100: here all 12 (the 2 held before included) */
    http(&p, "POST", "/v1/review/claim", "{\"n\":5000}", h, &r);
    expect(&r, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "images")), N_IMAGES);
    resp_free(&r);
    snprintf(path, sizeof path, "/v1/pool/images/%lld/similar?n=21", (long long)p.first);
    http(&p, "GET", path, NULL, NULL, &r);
    expect(&r, 400);
    resp_free(&r);
    pool_free(&p);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_login_cookie),   cmocka_unit_test(test_account_rules),
        cmocka_unit_test(test_concurrent_claims), cmocka_unit_test(test_lease_rules),
        cmocka_unit_test(test_undo),           cmocka_unit_test(test_double_review),
        cmocka_unit_test(test_thumbs_similar),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
