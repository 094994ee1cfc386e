/*
 * Unit tests of px_serve with an in-process server on a free port, driven by
 * libcurl: routing and JSON errors, body limits (with and without a
 * Content-Length), the concurrency limit, the bearer token, metrics, the
 * embedded review page, and the pool endpoints on a small pool made through
 * the real store (listing, filters, paging, files by id, bad ids, verdicts,
 * and many reviewers posting at once with no verdict lost).
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "manifest/px_manifest.h"
#include "integration/test_serve_fixture.h"
#include "serve/px_serve.h"
#include "px_test.h"

static char g_pool[256];
static int64_t g_first;

static px_server *start(px_serve_opts *o)
{
    o->port = 0;
    px_server *srv = NULL;
    px_err err = {{0}};
    int st = px_server_create(o, &srv, &err);
    if (st)
        fprintf(stderr, "server: %s\n", err.msg);
    assert_int_equal(st, PX_OK);
    assert_true(px_server_port(srv) > 0);
    return srv;
}

static void url(char *buf, size_t cap, px_server *srv, const char *path)
{
    snprintf(buf, cap, "http://127.0.0.1:%d%s", px_server_port(srv), path);
}

static json_t *get_json(px_server *srv, const char *path, long want_code)
{
    char u[512];
    url(u, sizeof u, srv, path);
    fx_resp r;
    assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
    if (r.code != want_code)
        fprintf(stderr, "GET %s: %ld %s\n", path, r.code, (char *)r.body.data);
    assert_int_equal(r.code, want_code);
    assert_non_null(strstr(r.ctype, "application/json"));
    json_t *v = json_loads((const char *)r.body.data, 0, NULL);
    assert_non_null(v);
    fx_resp_free(&r);
    return v;
}

/* the error text of a JSON error body */
static void expect_error(fx_resp *r, long code, const char *needle)
{
    if (r->code != code)
        fprintf(stderr, "got %ld: %s\n", r->code, (char *)r->body.data);
    assert_int_equal(r->code, code);
    json_t *v = json_loads((const char *)r->body.data, 0, NULL);
    assert_non_null(v);
    const char *e = json_string_value(json_object_get(v, "error"));
    assert_non_null(e);
    if (!strstr(e, needle))
        fprintf(stderr, "error '%s' lacks '%s'\n", e, needle);
    assert_non_null(strstr(e, needle));
    json_decref(v);
}

/* GET /metrics until every needle is in it (up to 2 s): a request is counted
 * when libmicrohttpd reports it complete, which may be just after the client
 * has read its answer. Returns the last body (caller frees). */
static fx_resp metrics_with(px_server *srv, const char *const *needles)
{
    char u[128];
    url(u, sizeof u, srv, "/metrics");
    fx_resp r;
    const double end = px_test_now_ms() + px_test_ms(5000); /* metrics land after the reply */
    for (;;) {
        assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
        assert_int_equal(r.code, 200);
        int all = 1;
        for (int k = 0; needles[k]; k++)
            all = all && strstr((char *)r.body.data, needles[k]) != NULL;
        if (all)
            return r;
        if (px_test_now_ms() > end) {
            for (int k = 0; needles[k]; k++)
                if (!strstr((char *)r.body.data, needles[k]))
                    fprintf(stderr, "metrics lack: %s", needles[k]);
            fail();
        }
        fx_resp_free(&r);
        usleep(20000);
    }
    return r;
}

static void test_parse_listen(void **state)
{
    (void)state;
    char a[64] = "127.0.0.1";
    int port = 0;
    assert_int_equal(px_serve_parse_listen("0.0.0.0:9000", a, sizeof a, &port, NULL), PX_OK);
    assert_string_equal(a, "0.0.0.0");
    assert_int_equal(port, 9000);
    assert_int_equal(px_serve_parse_listen("[::1]:81", a, sizeof a, &port, NULL), PX_OK);
    assert_string_equal(a, "::1");
    assert_int_equal(port, 81);
    assert_int_equal(px_serve_parse_listen(":82", a, sizeof a, &port, NULL), PX_OK);
    assert_string_equal(a, "::1"); /* address unchanged */
    assert_int_equal(port, 82);
    px_err err = {{0}};
    assert_int_equal(px_serve_parse_listen("1.2.3.4:99999", a, sizeof a, &port, &err), PX_EINVAL);
    assert_non_null(strstr(err.msg, "port"));
    assert_int_equal(px_serve_parse_listen("::1:80", a, sizeof a, &port, &err), PX_EINVAL);
    assert_int_equal(px_serve_parse_listen("host:x", a, sizeof a, &port, &err), PX_EINVAL);
    assert_int_equal(px_serve_parse_listen("", a, sizeof a, &port, &err), PX_EINVAL);
}

static void test_bad_options(void **state)
{
    (void)state;
    px_serve_opts o = px_serve_opts_default();
    o.listen_addr = "localhost"; /* names are refused: the address must be explicit */
    px_server *srv = (px_server *)1;
    px_err err = {{0}};
    assert_int_equal(px_server_create(&o, &srv, &err), PX_EINVAL);
    assert_null(srv);
    assert_non_null(strstr(err.msg, "localhost"));
    o = px_serve_opts_default();
    o.port = 0;
    o.pool_dir = "/nonexistent/pool";
    assert_int_equal(px_server_create(&o, &srv, &err), PX_ENOTFOUND);
    assert_non_null(strstr(err.msg, "/nonexistent/pool"));
    px_server_destroy(NULL);
}

static void test_assets(void **state)
{
    (void)state;
    const px_serve_asset *a = px_serve_asset_find("/review/index.html");
    assert_non_null(a);
    assert_non_null(strstr(a->content_type, "text/html"));
    assert_true(a->len > 500);
    assert_int_equal(a->data[a->len], 0);
    assert_non_null(strstr((const char *)a->data, "<title>pixpipe review</title>"));
    assert_non_null(px_serve_asset_find("/review/review.js"));
    assert_non_null(px_serve_asset_find("/review/review.css"));
    assert_null(px_serve_asset_find("/review/../px_serve.h"));
    assert_null(px_serve_asset_find("/review/nope.js"));
}

static void test_routes_and_limits(void **state)
{
    (void)state;
    px_serve_opts o = px_serve_opts_default();
    o.max_body_bytes = 4000;
    px_server *srv = start(&o);
    char u[256];
    fx_resp r;

    json_t *h = get_json(srv, "/healthz", 200);
    assert_string_equal(json_string_value(json_object_get(h, "status")), "ok");
    assert_true(json_is_false(json_object_get(h, "anonymize")));
    assert_true(json_is_false(json_object_get(h, "pool")));
    json_decref(h);

    url(u, sizeof u, srv, "/nope");
    assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
    expect_error(&r, 404, "/nope");
    fx_resp_free(&r);

    url(u, sizeof u, srv, "/v1/anonymize");
    assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
    expect_error(&r, 405, "POST");
    fx_resp_free(&r);

    assert_int_equal(fx_http("POST", u, "", 0, NULL, &r), 0);
    expect_error(&r, 400, "empty body");
    fx_resp_free(&r);

    const char text[] = "this is not an image at all, just some text";
    assert_int_equal(fx_http("POST", u, text, sizeof text - 1, NULL, &r), 0);
    expect_error(&r, 415, "not a JPEG, PNG, WebP, TIFF, GIF, HEIC or AVIF");
    fx_resp_free(&r);

    /* a real PNG header, but this server has no detector */
    px_image img;
    assert_int_equal(px_image_alloc(&img, 8, 8, 3), PX_OK);
    px_buf png = {0};
    assert_int_equal(px_image_encode(&img, PX_FMT_PNG, 90, &png, NULL), PX_OK);
    px_image_free(&img);
    assert_int_equal(fx_http("POST", u, png.data, png.len, NULL, &r), 0);
    expect_error(&r, 503, "no face model");
    assert_string_equal(r.retry_after, "1");
    fx_resp_free(&r);

    /* bad query parameters are 400 and name the parameter */
    char q[256];
    url(q, sizeof q, srv, "/v1/anonymize?mode=sparkle");
    assert_int_equal(fx_http("POST", q, png.data, png.len, NULL, &r), 0);
    expect_error(&r, 400, "mode='sparkle'");
    fx_resp_free(&r);
    url(q, sizeof q, srv, "/v1/anonymize?quality=0");
    assert_int_equal(fx_http("POST", q, png.data, png.len, NULL, &r), 0);
    expect_error(&r, 400, "quality");
    fx_resp_free(&r);
    px_buf_free(&png);

    /* over the body limit: refused from the Content-Length, and when chunked */
    char *big = calloc(1, 10000);
    assert_int_equal(fx_http("POST", u, big, 10000, NULL, &r), 0);
    expect_error(&r, 413, "limit");
    fx_resp_free(&r);
    const char *chunked[] = {"Transfer-Encoding: chunked", NULL};
    assert_int_equal(fx_http("POST", u, big, 10000, chunked, &r), 0);
    expect_error(&r, 413, "limit");
    fx_resp_free(&r);
    free(big);

    /* review page */
    url(u, sizeof u, srv, "/");
    assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.code, 302);
    fx_resp_free(&r);
    url(u, sizeof u, srv, "/review/");
    assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.code, 200);
    assert_non_null(strstr(r.ctype, "text/html"));
    assert_non_null(strstr((char *)r.body.data, "review.js"));
    fx_resp_free(&r);
    url(u, sizeof u, srv, "/review/../../etc/passwd");
    assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.code, 404);
    fx_resp_free(&r);

    /* pool routes without a pool */
    url(u, sizeof u, srv, "/v1/pool/stats");
    assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
    expect_error(&r, 404, "--pool");
    fx_resp_free(&r);

    /* metrics count what happened above */
    static const char *const want[] = {
        "pixpipe_http_requests_total{route=\"healthz\",code=\"200\"} 1\n",
        "pixpipe_http_requests_total{route=\"anonymize\",code=\"413\"} 2\n",
        "pixpipe_http_requests_total{route=\"anonymize\",code=\"415\"} 1\n",
        /* /nope and /etc/passwd (curl squashes the dots of /review/../../) */
        "pixpipe_http_requests_total{route=\"other\",code=\"404\"} 2\n",
        "pixpipe_http_request_duration_seconds_bucket{route=\"healthz\",le=\"+Inf\"} 1\n",
        "# TYPE pixpipe_http_request_duration_seconds histogram\n",
        "pixpipe_queue_depth 0\n",
        "pixpipe_faces_found_total 0\n",
        NULL};
    r = metrics_with(srv, want);
    assert_non_null(strstr(r.ctype, "text/plain"));
    fx_resp_free(&r);
    px_server_destroy(srv);
}

/* healthz's in-flight count (health checks are never counted) once it is
 * `want`, or the last one seen when a generous deadline passes. */
static long long wait_inflight(px_server *srv, long long want)
{
    long long n = -1;
    const double end = px_test_now_ms() + px_test_ms(5000);
    for (;;) {
        json_t *h = get_json(srv, "/healthz", 200);
        n = json_integer_value(json_object_get(h, "inflight"));
        json_decref(h);
        if (n == want || px_test_now_ms() >= end)
            return n;
        usleep(20000);
    }
}

/* A client that sent its headers and is still "uploading" holds a slot. */
static void test_concurrency_limit(void **state)
{
    (void)state;
    px_serve_opts o = px_serve_opts_default();
    o.max_inflight = 1;
    o.retry_after_s = 3;
    px_server *srv = start(&o);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)px_server_port(srv));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    char req[160];
    int rl = snprintf(req, sizeof req,
                      "POST /v1/anonymize HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                      "Content-Length: 100\r\n\r\nabc",
                      px_server_port(srv));
    assert_int_equal(write(fd, req, (size_t)rl), (ssize_t)rl);
    /* wait until the server has counted the stalled upload (health checks are
     * never counted): a GET sent before that could take the one slot itself,
     * and the upload, counted while it ran, would be the one refused */
    assert_int_equal(wait_inflight(srv, 1), 1);
    char u[256];
    url(u, sizeof u, srv, "/v1/pool/stats");
    fx_resp r;
    int got503 = 0;
    /* retry until a deadline all the same: one GET may still be on its way out */
    const double end = px_test_now_ms() + px_test_ms(5000);
    while (!got503 && px_test_now_ms() < end) {
        assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
        got503 = r.code == 503;
        if (got503) {
            expect_error(&r, 503, "too many requests");
            assert_string_equal(r.retry_after, "3");
        }
        fx_resp_free(&r);
        if (!got503)
            usleep(20000);
    }
    assert_true(got503);
    /* health checks are never refused; once the server has seen the earlier GETs end, only
     * the stalled upload holds a slot (wait for that: a busy machine sees the closes late) */
    assert_int_equal(wait_inflight(srv, 1), 1);
    close(fd);
    /* the slot comes back once the server sees the close */
    const double end2 = px_test_now_ms() + px_test_ms(5000);
    for (;;) {
        assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
        long code = r.code;
        fx_resp_free(&r);
        if (code == 404)
            break;
        assert_true(px_test_now_ms() < end2);
        usleep(20000);
    }
    px_server_destroy(srv);
}

static void test_pool_read(void **state)
{
    (void)state;
    px_serve_opts o = px_serve_opts_default();
    o.pool_dir = g_pool;
    px_server *srv = start(&o);

    json_t *s = get_json(srv, "/v1/pool/stats", 200);
    json_t *slots = json_object_get(s, "slots");
    assert_int_equal(json_array_size(slots), 4);
    json_t *s0 = json_array_get(slots, 0);
    assert_string_equal(json_string_value(json_object_get(s0, "theme_slug")), "business-and-office");
    assert_string_equal(json_string_value(json_object_get(s0, "type")), "interiors");
    assert_int_equal(json_integer_value(json_object_get(s0, "quota")), 5);
    assert_int_equal(json_integer_value(json_object_get(s0, "unreviewed")), 3);
    assert_int_equal(json_integer_value(json_object_get(s0, "need")), 5);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(s, "totals"), "images")),
                     12);
    json_decref(s);

    json_t *l = get_json(srv, "/v1/pool/images?verdict=any", 200);
    assert_int_equal(json_integer_value(json_object_get(l, "count")), 12);
    assert_true(json_is_null(json_object_get(l, "next_after")));
    json_t *i0 = json_array_get(json_object_get(l, "images"), 0);
    assert_int_equal(json_integer_value(json_object_get(i0, "id")), g_first);
    assert_non_null(strstr(json_string_value(json_object_get(i0, "prompt")), "interiors photo"));
    assert_true(json_real_value(json_object_get(json_object_get(i0, "checks"), "mean")) > 120.0);
    char file[64];
    snprintf(file, sizeof file, "/v1/pool/images/%lld", (long long)g_first);
    assert_string_equal(json_string_value(json_object_get(i0, "file")), file);
    json_decref(l);

    l = get_json(srv, "/v1/pool/images?type=items&theme=food-and-drink", 200);
    assert_int_equal(json_integer_value(json_object_get(l, "count")), 3);
    json_t *it = json_array_get(json_object_get(l, "images"), 2);
    assert_string_equal(json_string_value(json_object_get(it, "type")), "items");
    assert_string_equal(json_string_value(json_object_get(it, "theme_slug")), "food-and-drink");
    json_decref(l);
    l = get_json(srv, "/v1/pool/images?status=flagged", 200);
    assert_int_equal(json_integer_value(json_object_get(l, "count")), 3);
    json_decref(l);

    /* paging: 5 + 5 + 2 with after= */
    l = get_json(srv, "/v1/pool/images?limit=5", 200);
    json_int_t next = json_integer_value(json_object_get(l, "next_after"));
    assert_int_equal(next, g_first + 4);
    json_decref(l);
    char path[128];
    snprintf(path, sizeof path, "/v1/pool/images?limit=5&after=%lld", (long long)next);
    l = get_json(srv, path, 200);
    assert_int_equal(json_integer_value(json_object_get(
                         json_array_get(json_object_get(l, "images"), 0), "id")),
                     g_first + 5);
    json_decref(l);

    json_decref(get_json(srv, "/v1/pool/images?type=spaceships", 400));
    json_decref(get_json(srv, "/v1/pool/images?limit=0", 400));
    json_decref(get_json(srv, "/v1/pool/images?verdict=maybe", 400));
    json_decref(get_json(srv, "/v1/pool/images/abc", 400));
    json_decref(get_json(srv, "/v1/pool/images/..%2F..%2Fetc%2Fpasswd", 404));
    json_decref(get_json(srv, "/v1/pool/images/1x", 400));
    json_decref(get_json(srv, "/v1/pool/images/0", 400));
    json_decref(get_json(srv, "/v1/pool/images/99999999", 404));
    json_decref(get_json(srv, "/v1/pool/images/1/verdicts", 404));

    /* the file by id: the same bytes as on disk */
    char u[256];
    url(u, sizeof u, srv, file);
    fx_resp r;
    assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.code, 200);
    assert_string_equal(r.ctype, "image/png");
    char disk[512];
    snprintf(disk, sizeof disk, "%s/business-and-office/interiors/%lld.png", g_pool,
             (long long)g_first);
    uint8_t *d = NULL;
    size_t dl = 0;
    assert_int_equal(px_read_file(disk, 1 << 20, &d, &dl, NULL), PX_OK);
    assert_int_equal(r.body.len, dl);
    assert_memory_equal(r.body.data, d, dl);
    free(d);
    fx_resp_free(&r);

    snprintf(path, sizeof path, "%s?format=json", file);
    json_t *one = get_json(srv, path, 200);
    assert_int_equal(json_integer_value(json_object_get(one, "width")), 96);
    assert_true(json_is_array(json_object_get(one, "verdicts")));
    json_decref(one);
    px_server_destroy(srv);
}

typedef struct {
    int port;
    int64_t id;
    int who;
    int ok;
} poster;

static void *post_many(void *arg)
{
    poster *p = arg;
    for (int k = 0; k < 10; k++) {
        char u[256], body[256];
        snprintf(u, sizeof u, "http://127.0.0.1:%d/v1/pool/images/%lld/verdict", p->port,
                 (long long)(p->id + k % 2));
        snprintf(body, sizeof body,
                 "{\"verdict\":\"%s\",\"reviewer\":\"expert-%d\",\"reason\":\"round %d\"}",
                 k % 3 ? "approve" : "reject", p->who, k);
        const char *hdr[] = {"Authorization: Bearer s3cret", "Content-Type: application/json",
                             NULL};
        fx_resp r;
        if (fx_http("POST", u, body, strlen(body), hdr, &r) == 0 && r.code == 201)
            p->ok++;
        fx_resp_free(&r);
    }
    return NULL;
}

static void test_verdicts(void **state)
{
    (void)state;
    px_serve_opts o = px_serve_opts_default();
    o.pool_dir = g_pool;
    o.api_token = "s3cret";
    px_server *srv = start(&o);
    char u[256], path[128], db[512];
    snprintf(db, sizeof db, "%s/manifest.sqlite", g_pool);
    snprintf(path, sizeof path, "/v1/pool/images/%lld/verdict", (long long)(g_first + 2));
    url(u, sizeof u, srv, path);
    const char ok[] = "{\"verdict\":\"approve\",\"reviewer\":\"ana\"}";
    fx_resp r;

    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, NULL, &r), 0);
    expect_error(&r, 401, "token");
    fx_resp_free(&r);
    const char *wrong[] = {"Authorization: Bearer s3cres", NULL};
    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, wrong, &r), 0);
    expect_error(&r, 401, "token");
    fx_resp_free(&r);

    const char *auth[] = {"Authorization: Bearer s3cret", NULL};
    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, auth, &r), 0);
    assert_int_equal(r.code, 201);
    json_t *v = json_loads((const char *)r.body.data, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(v, "reviewer")), "ana");
    json_int_t vid = json_integer_value(json_object_get(v, "verdict_id"));
    assert_true(vid > 0);
    json_decref(v);
    fx_resp_free(&r);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT image_id FROM verdicts WHERE id=%lld AND reviewer='ana' AND verdict='approve'",
             (long long)vid);
    assert_int_equal(fx_sql_int(db, sql), g_first + 2);

    const char noreason[] = "{\"verdict\":\"reject\",\"reviewer\":\"ana\"}";
    assert_int_equal(fx_http("POST", u, noreason, sizeof noreason - 1, auth, &r), 0);
    expect_error(&r, 400, "reason");
    fx_resp_free(&r);
    const char badjson[] = "{\"verdict\":";
    assert_int_equal(fx_http("POST", u, badjson, sizeof badjson - 1, auth, &r), 0);
    expect_error(&r, 400, "JSON");
    fx_resp_free(&r);
    const char badverdict[] = "{\"verdict\":\"love\",\"reviewer\":\"ana\"}";
    assert_int_equal(fx_http("POST", u, badverdict, sizeof badverdict - 1, auth, &r), 0);
    expect_error(&r, 400, "approve");
    fx_resp_free(&r);
    const char noreviewer[] = "{\"verdict\":\"skip\",\"reviewer\":\"\"}";
    assert_int_equal(fx_http("POST", u, noreviewer, sizeof noreviewer - 1, auth, &r), 0);
    expect_error(&r, 400, "reviewer");
    fx_resp_free(&r);
    url(u, sizeof u, srv, "/v1/pool/images/99999999/verdict");
    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, auth, &r), 0);
    expect_error(&r, 404, "");
    fx_resp_free(&r);

    /* the approved image shows up under verdict=approve */
    json_t *l = get_json(srv, "/v1/pool/images?verdict=approve", 200);
    assert_int_equal(json_integer_value(json_object_get(l, "count")), 1);
    json_t *img = json_array_get(json_object_get(l, "images"), 0);
    assert_string_equal(json_string_value(json_object_get(img, "verdict_by")), "ana");
    json_decref(l);

    /* eight reviewers at once, 10 verdicts each on two images: all 80 stored */
    long long before = fx_sql_int(db, "SELECT COUNT(*) FROM verdicts");
    pthread_t th[8];
    poster ps[8];
    for (int i = 0; i < 8; i++) {
        ps[i] = (poster){px_server_port(srv), g_first + 6, i, 0};
        pthread_create(&th[i], NULL, post_many, &ps[i]);
    }
    int okn = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        okn += ps[i].ok;
    }
    assert_int_equal(okn, 80);
    assert_int_equal(fx_sql_int(db, "SELECT COUNT(*) FROM verdicts"), before + 80);
    snprintf(sql, sizeof sql,
             "SELECT COUNT(DISTINCT reviewer) FROM verdicts WHERE image_id IN (%lld, %lld)",
             (long long)(g_first + 6), (long long)(g_first + 7));
    assert_int_equal(fx_sql_int(db, sql), 8);

    static const char *const want[] = {
        "pixpipe_verdicts_total 81\n",
        "pixpipe_http_requests_total{route=\"pool_verdict\",code=\"201\"} 81\n", NULL};
    r = metrics_with(srv, want);
    fx_resp_free(&r);
    px_server_destroy(srv);
}

/* export --approved: only images whose latest verdict is approve, in the
 * stock layout, with the same bytes, and a CSV row each */
static void test_export_approved(void **state)
{
    (void)state;
    char pool[300], out[300], db[400];
    snprintf(pool, sizeof pool, "%s/pool2", g_pool);
    snprintf(out, sizeof out, "%s/export", g_pool);
    snprintf(db, sizeof db, "%s/manifest.sqlite", pool);
    int64_t first = 0;
    px_err err = {{0}};
    assert_int_equal(fx_make_pool(pool, 2, 4, &first, &err), PX_OK);
    px_manifest *s = NULL;
    assert_int_equal(px_manifest_open(db, 0, &s, &err), PX_OK);
    /* first: approved; first+1: approved then rejected; first+4: rejected then approved */
    assert_int_equal(px_manifest_add_verdict(s, first, "ana", "approve", NULL, NULL, &err), PX_OK);
    assert_int_equal(px_manifest_add_verdict(s, first + 1, "ana", "approve", NULL, NULL, &err), PX_OK);
    assert_int_equal(px_manifest_add_verdict(s, first + 1, "bo", "reject", "blurry", NULL, &err), PX_OK);
    assert_int_equal(px_manifest_add_verdict(s, first + 4, "bo", "reject", "odd", NULL, &err), PX_OK);
    assert_int_equal(px_manifest_add_verdict(s, first + 4, "cy", "approve", "", NULL, &err), PX_OK);
    px_manifest_close(s);

    size_t n = 0;
    assert_int_equal(px_manifest_export_approved(pool, out, &n, &err), PX_OK);
    assert_int_equal(n, 2);
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/business-and-office/interiors/%lld.png", out, (long long)first);
    snprintf(b, sizeof b, "%s/business-and-office/interiors/%lld.png", pool, (long long)first);
    uint8_t *da = NULL, *db_ = NULL;
    size_t la = 0, lb = 0;
    assert_int_equal(px_read_file(a, 1 << 20, &da, &la, NULL), PX_OK);
    assert_int_equal(px_read_file(b, 1 << 20, &db_, &lb, NULL), PX_OK);
    assert_int_equal(la, lb);
    assert_memory_equal(da, db_, la);
    free(da);
    free(db_);
    snprintf(a, sizeof a, "%s/business-and-office/interiors/%lld.png", out, (long long)first + 1);
    assert_int_not_equal(access(a, F_OK), 0); /* rejected last: not exported */

    snprintf(a, sizeof a, "%s/metadata.csv", out);
    uint8_t *csv = NULL;
    size_t lc = 0;
    assert_int_equal(px_read_file(a, 1 << 20, &csv, &lc, NULL), PX_OK);
    csv = realloc(csv, lc + 1);
    csv[lc] = 0;
    const char *c = (const char *)csv;
    assert_true(!strncmp(c, "file,id,theme,theme_slug,type,width,height,title,prompt,", 56));
    char row[400];
    snprintf(row, sizeof row,
             "\r\nbusiness-and-office/interiors/%lld.png,%lld,Business and office,"
             "business-and-office,interiors,96,64,a interiors photo for Business and office,"
             "\"a interiors photo for Business and office, picture 0\",",
             (long long)first, (long long)first);
    if (!strstr(c, row))
        fprintf(stderr, "csv:\n%s\nlacks\n%s\n", c, row);
    assert_non_null(strstr(c, row));
    snprintf(row, sizeof row, "food-and-drink/interiors/%lld.png,", (long long)first + 4);
    const char *r4 = strstr(c, row);
    assert_non_null(r4);
    assert_non_null(strstr(r4, ",cy,20")); /* reviewer and the approval's time */
    int lines = 0;
    for (const char *p = c; (p = strstr(p, "\r\n")); p += 2)
        lines++;
    assert_int_equal(lines, 3);
    free(csv);

    assert_int_equal(px_manifest_export_approved("/nonexistent", out, &n, &err), PX_ENOTFOUND);
    assert_non_null(strstr(err.msg, "/nonexistent"));
}

typedef struct {
    int port;
    const uint8_t *body;
    size_t len;
    long code;
    int faces;
} burst;

static void *fire(void *arg)
{
    burst *b = arg;
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/v1/anonymize?seed=3", b->port);
    fx_resp r;
    b->code = fx_http("POST", u, b->body, b->len, NULL, &r) == 0 ? r.code : -1;
    b->faces = atoi(r.faces);
    fx_resp_free(&r);
    return NULL;
}

/* The job machinery in-process (so the thread sanitizer sees workers, the
 * watchdog and suspended connections): a burst on one worker with a queue
 * of one, then a timeout shorter than any detection, then a stop while
 * jobs are in flight. */
static void test_jobs(void **state)
{
    (void)state;
    px_face_detector *det = NULL;
    px_face_detector_opts dopts = {PX_FACE_MODEL_AUTO, 1, 1, 0};
    px_err err = {{0}};
    assert_int_equal(px_face_detector_create(PX_MODEL_DIR "/face_detection_yunet_2023mar.onnx",
                                             &dopts, &det, &err),
                     PX_OK);
    uint8_t *photo = NULL;
    size_t len = 0;
    assert_int_equal(px_read_file(PX_SHARED_DIR "/testdata/faces/ultraface_imgs_2.jpg", 1 << 24,
                                  &photo, &len, NULL),
                     PX_OK);
    px_serve_opts o = px_serve_opts_default();
    o.detector = det;
    o.workers = 1;
    o.queue_capacity = 1;
    /* a queued job waits for the running one: on a slow build or machine that takes longer
     * than the default 30 s processing limit */
    o.process_timeout_ms = px_test_ms(30000);
    o.read_timeout_s = px_test_ms(15000) / 1000;
    px_server *srv = start(&o);
    burst b[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        b[i] = (burst){px_server_port(srv), photo, len, 0, 0};
        pthread_create(&th[i], NULL, fire, &b[i]);
    }
    int ok = 0, faces = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(b[i].code == 200 || b[i].code == 503);
        if (b[i].code == 200) {
            ok++;
            assert_true(b[i].faces >= 1);
            faces += b[i].faces;
        }
    }
    assert_true(ok >= 1);
    char u[128], w1[64], w2[64];
    snprintf(w1, sizeof w1, "pixpipe_faces_found_total %d\n", faces);
    snprintf(w2, sizeof w2, "pixpipe_rejected_busy_total %d\n", 4 - ok);
    const char *const want[] = {w1, w2, NULL};
    fx_resp r = metrics_with(srv, want);
    fx_resp_free(&r);
    px_server_destroy(srv);

    o.process_timeout_ms = 1;
    srv = start(&o);
    url(u, sizeof u, srv, "/v1/anonymize");
    assert_int_equal(fx_http("POST", u, photo, len, NULL, &r), 0);
    expect_error(&r, 504, "timeout");
    fx_resp_free(&r);
    /* stop with a job still running: it is let finish, nothing leaks */
    o.process_timeout_ms = px_test_ms(30000);
    px_server_destroy(srv);
    srv = start(&o);
    for (int i = 0; i < 2; i++) {
        b[i] = (burst){px_server_port(srv), photo, len, 0, 0};
        pthread_create(&th[i], NULL, fire, &b[i]);
    }
    /* stop once both are accepted (one running, one queued): those must be finished, not
     * dropped; waiting for that, not for a fixed time, keeps a busy machine from stopping
     * the server before the requests arrived */
    long long in = 0;
    const double end = px_test_now_ms() + px_test_ms(10000);
    while (in < 2 && px_test_now_ms() < end) {
        json_t *h = get_json(srv, "/healthz", 200);
        in = json_integer_value(json_object_get(h, "queue")) +
             json_integer_value(json_object_get(h, "running"));
        json_decref(h);
        if (in < 2)
            usleep(2000);
    }
    px_server_stop(srv, px_test_ms(10000));
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        assert_true(b[i].code == 200 || b[i].code == 503);
    }
    px_server_destroy(srv);
    free(photo);
    px_face_detector_destroy(det);
}

static int setup_pool(void **state)
{
    (void)state;
    snprintf(g_pool, sizeof g_pool, "%s/serve-unit-XXXXXX", PX_BINARY_DIR);
    if (!mkdtemp(g_pool))
        return -1;
    px_err err = {{0}};
    if (fx_make_pool(g_pool, 3, 5, &g_first, &err) != PX_OK) {
        fprintf(stderr, "pool: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown_pool(void **state)
{
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_pool);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_listen),      cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_assets),            cmocka_unit_test(test_routes_and_limits),
        cmocka_unit_test(test_concurrency_limit), cmocka_unit_test(test_pool_read),
        cmocka_unit_test(test_verdicts),          cmocka_unit_test(test_export_approved),
        cmocka_unit_test(test_jobs),
    };
    int rc = cmocka_run_group_tests(tests, setup_pool, teardown_pool);
    curl_global_cleanup();
    return rc;
}
