/*
 * The "safe by default" rules of px_serve, each tried the way an attacker
 * would, against an in-process server on a free port driven by libcurl (and
 * raw sockets for slow clients):
 *  - a form posted from another origin, a cross-site fetch and an Origin of
 *    "null" cannot store a verdict (403 JSON, nothing in the manifest); a
 *    same-origin write needs the CSRF token from GET /v1/csrf;
 *  - a Host that is not allowed is 421 (DNS rebinding); --allowed-host adds
 *    names;
 *  - oversized URLs and headers, and ids of 20 or 100,000 digits, get JSON;
 *    no error body names a file-system path;
 *  - every answer carries Referrer-Policy, X-Frame-Options and nosniff;
 *  - many slow connections from one address do not lock out another client,
 *    and a client trickling header bytes is closed at the header deadline;
 *  - CSV exports put a ' before cells a spreadsheet would run as formulas.
 */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "manifest/px_manifest.h"
#include "integration/test_serve_fixture.h"
#include "serve/px_serve.h"
#include "px_test.h"

static char g_pool[256];
static int64_t g_first;
static char g_db[300];

static px_server *start(px_serve_opts *o)
{
    o->port = 0;
    o->pool_dir = g_pool;
    px_server *srv = NULL;
    px_err err = {{0}};
    int st = px_server_create(o, &srv, &err);
    if (st)
        fprintf(stderr, "server: %s\n", err.msg);
    assert_int_equal(st, PX_OK);
    return srv;
}

static void url(char *buf, size_t cap, px_server *srv, const char *path)
{
    snprintf(buf, cap, "http://127.0.0.1:%d%s", px_server_port(srv), path);
}

/* a JSON error with code; its message contains needle and no path */
static void expect_error(fx_resp *r, long code, const char *needle)
{
    if (r->code != code)
        fprintf(stderr, "got %ld: %.300s\n", r->code, (char *)r->body.data);
    assert_int_equal(r->code, code);
    assert_non_null(strstr(r->ctype, "application/json"));
    json_t *v = json_loads((const char *)r->body.data, 0, NULL);
    assert_non_null(v);
    const char *e = json_string_value(json_object_get(v, "error"));
    assert_non_null(e);
    if (!strstr(e, needle))
        fprintf(stderr, "error '%s' lacks '%s'\n", e, needle);
    assert_non_null(strstr(e, needle));
    assert_null(strstr(e, g_pool));
    assert_null(strstr(e, "manifest.sqlite"));
    json_decref(v);
}

static void expect_safe_headers(const fx_resp *r)
{
    assert_string_equal(r->referrer_policy, "no-referrer");
    assert_string_equal(r->frame_options, "DENY");
    assert_string_equal(r->nosniff, "nosniff");
}

static long long verdict_count(void)
{
    return fx_sql_int(g_db, "SELECT COUNT(*) FROM verdicts");
}

static void get_csrf(px_server *srv, char *tok, size_t cap)
{
    char u[256];
    url(u, sizeof u, srv, "/v1/csrf");
    fx_resp r;
    assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.code, 200);
    json_t *v = json_loads((const char *)r.body.data, 0, NULL);
    const char *t = json_string_value(json_object_get(v, "csrf_token"));
    assert_non_null(t);
    assert_int_equal(strlen(t), 64);
    snprintf(tok, cap, "%s", t);
    json_decref(v);
    fx_resp_free(&r);
}

static void test_cross_origin_writes(void **state)
{
    (void)state;
    px_serve_opts o = px_serve_opts_default();
    px_server *srv = start(&o);
    int port = px_server_port(srv);
    char u[256], path[128], origin[128], csrf[128], csrf_hdr[200];
    snprintf(path, sizeof path, "/v1/pool/images/%lld/verdict", (long long)g_first);
    url(u, sizeof u, srv, path);
    snprintf(origin, sizeof origin, "Origin: http://127.0.0.1:%d", port);
    get_csrf(srv, csrf, sizeof csrf);
    snprintf(csrf_hdr, sizeof csrf_hdr, "X-CSRF-Token: %s", csrf);
    const long long before = verdict_count();
    fx_resp r;

    /* what an attacker page's <form method=post> sends */
    const char form[] = "verdict=approve&reviewer=mallory";
    const char *attack[] = {"Origin: http://evil.example",
                            "Content-Type: application/x-www-form-urlencoded",
                            "Sec-Fetch-Site: cross-site", "Sec-Fetch-Mode: navigate", NULL};
    assert_int_equal(fx_http("POST", u, form, sizeof form - 1, attack, &r), 0);
    expect_error(&r, 403, "cross-origin");
    expect_safe_headers(&r);
    fx_resp_free(&r);

    /* even with the right token and JSON: the origin decides first */
    const char ok[] = "{\"verdict\":\"approve\",\"reviewer\":\"ana\"}";
    const char *evil_json[] = {"Origin: http://evil.example", csrf_hdr, NULL};
    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, evil_json, &r), 0);
    expect_error(&r, 403, "Origin 'http://evil.example'");
    fx_resp_free(&r);
    const char *null_origin[] = {"Origin: null", csrf_hdr, NULL};
    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, null_origin, &r), 0);
    expect_error(&r, 403, "Origin 'null'");
    fx_resp_free(&r);
    /* an old browser without Origin, but with Fetch Metadata */
    const char *site[] = {"Sec-Fetch-Site: same-site", csrf_hdr, NULL};
    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, site, &r), 0);
    expect_error(&r, 403, "Sec-Fetch-Site");
    fx_resp_free(&r);
    /* a browser that sends neither: the form cannot carry the CSRF header */
    const char *bare[] = {"Content-Type: application/x-www-form-urlencoded", NULL};
    assert_int_equal(fx_http("POST", u, form, sizeof form - 1, bare, &r), 0);
    expect_error(&r, 403, "X-CSRF-Token");
    fx_resp_free(&r);
    const char *wrong[] = {origin, "X-CSRF-Token: 0123456789abcdef", NULL};
    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, wrong, &r), 0);
    expect_error(&r, 403, "X-CSRF-Token");
    fx_resp_free(&r);
    /* an origin on another port of the same machine is another origin */
    const char *other_port[] = {"Origin: http://127.0.0.1:1", csrf_hdr, NULL};
    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, other_port, &r), 0);
    expect_error(&r, 403, "Origin");
    fx_resp_free(&r);
    /* anonymize is refused cross-origin too (nothing stored, but not ours to compute) */
    url(u, sizeof u, srv, "/v1/anonymize");
    assert_int_equal(fx_http("POST", u, form, sizeof form - 1, attack, &r), 0);
    expect_error(&r, 403, "cross-origin");
    fx_resp_free(&r);
    assert_int_equal(verdict_count(), before);

    /* the review page's own request: same origin, token in the header */
    url(u, sizeof u, srv, path);
    const char *page[] = {origin, "Sec-Fetch-Site: same-origin", csrf_hdr,
                          "Content-Type: application/json", NULL};
    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, page, &r), 0);
    assert_int_equal(r.code, 201);
    expect_safe_headers(&r);
    fx_resp_free(&r);
    /* a script (curl) with the token; localhost is the same server */
    char lo[128];
    snprintf(lo, sizeof lo, "Origin: http://localhost:%d", port);
    const char *script[] = {csrf_hdr, lo, NULL};
    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, script, &r), 0);
    assert_int_equal(r.code, 201);
    fx_resp_free(&r);
    assert_int_equal(verdict_count(), before + 2);
    px_server_destroy(srv);

    /* a new server has a new token */
    srv = start(&o);
    char csrf2[128];
    get_csrf(srv, csrf2, sizeof csrf2);
    assert_string_not_equal(csrf, csrf2);
    url(u, sizeof u, srv, path);
    const char *stale[] = {csrf_hdr, NULL};
    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, stale, &r), 0);
    expect_error(&r, 403, "X-CSRF-Token");
    fx_resp_free(&r);
    px_server_destroy(srv);

    /* with a bearer token the token is the proof; the origin is still checked */
    o.api_token = "s3cret";
    srv = start(&o);
    url(u, sizeof u, srv, path);
    const char *bearer[] = {"Authorization: Bearer s3cret", NULL};
    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, bearer, &r), 0);
    assert_int_equal(r.code, 201);
    fx_resp_free(&r);
    const char *bearer_evil[] = {"Authorization: Bearer s3cret", "Origin: https://evil.example",
                                 NULL};
    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, bearer_evil, &r), 0);
    expect_error(&r, 403, "cross-origin");
    fx_resp_free(&r);
    assert_int_equal(verdict_count(), before + 3);
    px_server_destroy(srv);
}

static void test_host_allow_list(void **state)
{
    (void)state;
    const char *extra[] = {"review.example", "Proxy.Example:8443", "[::1]", NULL};
    px_serve_opts o = px_serve_opts_default();
    o.allowed_hosts = extra;
    px_server *srv = start(&o);
    int port = px_server_port(srv);
    char u[256], h[160];
    url(u, sizeof u, srv, "/healthz");
    fx_resp r;
    struct {
        const char *fmt;
        long code;
    } cases[] = {
        {"Host: evil.example:%d", 421},    /* DNS rebinding */
        {"Host: evil.example", 421},
        {"Host: 127.0.0.1.evil.example:%d", 421},
        {"Host: localhost:%d", 200},
        {"Host: LOCALHOST:%d", 200},       /* names are case-insensitive */
        {"Host: localhost:1", 421},        /* the defaults carry the port */
        {"Host: review.example", 200},     /* no port in the entry: any */
        {"Host: review.example:%d", 200},
        {"Host: proxy.example:8443", 200},
        {"Host: proxy.example:%d", 421},
        {"Host: [::1]:%d", 200},
        {"Host: review.example:x", 421},
        {"Host: review.example/x", 421},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(h, sizeof h, cases[i].fmt, port);
        const char *hdr[] = {h, NULL};
        assert_int_equal(fx_http("GET", u, NULL, 0, hdr, &r), 0);
        if (r.code != cases[i].code)
            fprintf(stderr, "%s: got %ld\n", h, r.code);
        if (cases[i].code == 421) {
            expect_error(&r, 421, "Host");
            expect_safe_headers(&r);
        } else {
            assert_int_equal(r.code, 200);
        }
        fx_resp_free(&r);
    }
    /* a rebinding page's write is refused before anything else */
    char path[128];
    snprintf(path, sizeof path, "/v1/pool/images/%lld/verdict", (long long)g_first);
    url(u, sizeof u, srv, path);
    snprintf(h, sizeof h, "Host: evil.example:%d", port);
    const char *hdr[] = {h, NULL};
    const char ok[] = "{\"verdict\":\"approve\",\"reviewer\":\"ana\"}";
    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, hdr, &r), 0);
    expect_error(&r, 421, "evil.example");
    fx_resp_free(&r);
    px_server_destroy(srv);

    const char *bad[] = {"ok.example", "bad host", NULL};
    o.allowed_hosts = bad;
    o.port = 0;
    srv = (px_server *)1;
    px_err err = {{0}};
    assert_int_equal(px_server_create(&o, &srv, &err), PX_EINVAL);
    assert_null(srv);
    assert_non_null(strstr(err.msg, "bad host"));
}

/* URLs and headers too long, ids too long or unknown: JSON, no paths */
static void test_json_errors(void **state)
{
    (void)state;
    px_serve_opts o = px_serve_opts_default();
    px_server *srv = start(&o);
    fx_resp r;
    const size_t big = 100000;
    char *p = malloc(big + 200);
    assert_non_null(p);
    int n = snprintf(p, 200, "http://127.0.0.1:%d/v1/pool/images/", px_server_port(srv));
    memset(p + n, '7', big);
    p[n + big] = '\0';
    assert_int_equal(fx_http("GET", p, NULL, 0, NULL, &r), 0);
    expect_error(&r, 414, "URL longer");
    expect_safe_headers(&r);
    fx_resp_free(&r);
    /* a long query counts too */
    n = snprintf(p, 200, "http://127.0.0.1:%d/v1/pool/images?theme=", px_server_port(srv));
    memset(p + n, 'a', 20000);
    p[n + 20000] = '\0';
    assert_int_equal(fx_http("GET", p, NULL, 0, NULL, &r), 0);
    expect_error(&r, 414, "URL longer");
    fx_resp_free(&r);
    /* 20 digits: over int64, a 400 that does not echo the whole URL */
    n = snprintf(p, 200, "http://127.0.0.1:%d/v1/pool/images/", px_server_port(srv));
    memset(p + n, '9', 20);
    p[n + 20] = '\0';
    assert_int_equal(fx_http("GET", p, NULL, 0, NULL, &r), 0);
    expect_error(&r, 400, "at most 18 digits");
    fx_resp_free(&r);
    /* one 20 KB header */
    char *hv = malloc(20100);
    assert_non_null(hv);
    memcpy(hv, "X-Junk: ", 8);
    memset(hv + 8, 'j', 20000);
    hv[20008] = '\0';
    const char *hdr[] = {hv, NULL};
    char u[256];
    url(u, sizeof u, srv, "/healthz");
    assert_int_equal(fx_http("GET", u, NULL, 0, hdr, &r), 0);
    expect_error(&r, 431, "headers larger");
    fx_resp_free(&r);
    free(hv);
    free(p);

    /* unknown ids: 404 naming the id, not the manifest */
    url(u, sizeof u, srv, "/v1/pool/images/99999999");
    assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
    expect_error(&r, 404, "no image with id 99999999");
    fx_resp_free(&r);
    url(u, sizeof u, srv, "/v1/pool/images/99999999?format=json");
    assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
    expect_error(&r, 404, "no image with id 99999999");
    fx_resp_free(&r);
    char csrf[128], ch[200];
    get_csrf(srv, csrf, sizeof csrf);
    snprintf(ch, sizeof ch, "X-CSRF-Token: %s", csrf);
    const char *w[] = {ch, NULL};
    const char ok[] = "{\"verdict\":\"approve\",\"reviewer\":\"ana\"}";
    url(u, sizeof u, srv, "/v1/pool/images/99999999/verdict");
    assert_int_equal(fx_http("POST", u, ok, sizeof ok - 1, w, &r), 0);
    expect_error(&r, 404, "no image with id 99999999");
    fx_resp_free(&r);
    /* a file gone from the pool: 404 without its path */
    char file[512], moved[520], path[64];
    snprintf(file, sizeof file, "%s/business-and-office/interiors/%lld.png", g_pool,
             (long long)g_first);
    snprintf(moved, sizeof moved, "%s.away", file);
    assert_int_equal(rename(file, moved), 0);
    snprintf(path, sizeof path, "/v1/pool/images/%lld", (long long)g_first);
    url(u, sizeof u, srv, path);
    assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
    expect_error(&r, 404, "missing");
    assert_null(strstr((char *)r.body.data, ".png"));
    assert_null(strstr((char *)r.body.data, "interiors/"));
    fx_resp_free(&r);
    assert_int_equal(rename(moved, file), 0);
    /* the review page itself carries the headers too */
    url(u, sizeof u, srv, "/review/");
    assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.code, 200);
    expect_safe_headers(&r);
    fx_resp_free(&r);
    px_server_destroy(srv);
}

/* A TCP connection to the server from the local address src (127.0.0.x);
 * -1 when src cannot be bound here. */
static int connect_from(const char *src, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    inet_pton(AF_INET, src, &sa.sin_addr);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* GET /healthz from src on a fresh connection: the status code, 0 when the
 * server closed without an answer, -1 when src cannot be used. */
static int healthz_from(const char *src, int port)
{
    int fd = connect_from(src, port);
    if (fd < 0)
        return -1;
    char req[200], buf[4096];
    int n = snprintf(req, sizeof req,
                     "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n\r\n",
                     port);
    assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
    size_t got = 0;
    const double end = px_test_now_ms() + px_test_ms(30000);
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 200) > 0) {
            ssize_t k = recv(fd, buf + got, sizeof buf - 1 - got, 0);
            if (k <= 0)
                break;
            got += (size_t)k;
            if (got == sizeof buf - 1)
                break;
        } else if (px_test_now_ms() > end) {
            break;
        }
    }
    close(fd);
    buf[got] = '\0';
    int code = 0;
    if (sscanf(buf, "HTTP/1.1 %d", &code) != 1)
        return 0;
    return code;
}

/* Counts the sockets of fds (n) the server has closed; closed ones get -1. */
static int reap_closed(int *fds, int n)
{
    int closed = 0;
    for (int i = 0; i < n; i++) {
        if (fds[i] < 0) {
            closed++;
            continue;
        }
        struct pollfd p = {fds[i], POLLIN, 0};
        char b[256];
        if (poll(&p, 1, 0) > 0 && recv(fds[i], b, sizeof b, MSG_DONTWAIT) <= 0) {
            close(fds[i]);
            fds[i] = -1;
            closed++;
        }
    }
    return closed;
}

/* n connections from 127.0.0.1 that send half a header and stop (a slowloris). */
static void open_slow(int *fds, int n, int port)
{
    char part[160];
    int pn = snprintf(part, sizeof part, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Slow: ",
                      port);
    for (int i = 0; i < n; i++) {
        fds[i] = connect_from("127.0.0.1", port);
        assert_true(fds[i] >= 0);
        /* a refused one may already be closed: its send can fail */
        if (send(fds[i], part, (size_t)pn, MSG_NOSIGNAL) != pn && errno != EPIPE &&
            errno != ECONNRESET)
            fail_msg("send: %s", strerror(errno));
    }
}

/* 130 slow connections from 127.0.0.1: the per-address limit turns away all
 * but 32 of them at once (the idle timeout is far away), and another address
 * (127.0.0.2) is still answered. Then, with a short idle timeout, slow
 * connections are closed and their address is served again. Waits for
 * events with generous deadlines; nothing is asserted about durations. */
static void test_slow_clients(void **state)
{
    (void)state;
    enum { SLOW = 130, PER_IP = 32 };
    px_serve_opts o = px_serve_opts_default();
    o.per_ip_connections = PER_IP;
    o.read_timeout_s = 600;
    px_server *srv = start(&o);
    int port = px_server_port(srv);
    int fds[SLOW];
    open_slow(fds, SLOW, port);
    /* the ones over the limit are closed at once by the server */
    int closed = 0;
    const double end = px_test_now_ms() + px_test_ms(20000);
    while ((closed = reap_closed(fds, SLOW)) < SLOW - PER_IP && px_test_now_ms() < end)
        usleep(20000);
    assert_int_equal(closed, SLOW - PER_IP);
    /* another client is not locked out */
    int code = healthz_from("127.0.0.2", port);
    if (code < 0)
        fprintf(stderr, "127.0.0.2 cannot be bound here: the other-address check is skipped\n");
    else
        assert_int_equal(code, 200);
    assert_int_equal(reap_closed(fds, SLOW), SLOW - PER_IP); /* the 32 are still held */
    for (int i = 0; i < SLOW; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    px_server_destroy(srv);

    /* the idle timeout frees the slots of a slow address */
    o.read_timeout_s = 1;
    srv = start(&o);
    port = px_server_port(srv);
    open_slow(fds, PER_IP, port);
    const double end2 = px_test_now_ms() + px_test_ms(60000);
    while (reap_closed(fds, PER_IP) < PER_IP && px_test_now_ms() < end2)
        usleep(50000);
    assert_int_equal(reap_closed(fds, PER_IP), PER_IP);
    assert_int_equal(healthz_from("127.0.0.1", port), 200);
    px_server_destroy(srv);

    /* a client trickling header bytes restarts the idle timeout with each one; the
     * header deadline closes it anyway, while a quick client on a kept-alive
     * connection is not hurried */
    o.read_timeout_s = 600;
    o.header_timeout_s = 1;
    srv = start(&o);
    port = px_server_port(srv);
    int fd = connect_from("127.0.0.1", port);
    assert_true(fd >= 0);
    char part[160];
    int pn = snprintf(part, sizeof part, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n", port);
    assert_int_equal(send(fd, part, (size_t)pn, MSG_NOSIGNAL), pn);
    int gone = 0;
    const double end3 = px_test_now_ms() + px_test_ms(60000);
    while (!gone && px_test_now_ms() < end3) {
        if (send(fd, "X", 1, MSG_NOSIGNAL) != 1) {
            gone = 1;
            break;
        }
        usleep(100000);
        gone = reap_closed(&fd, 1) == 1;
    }
    assert_true(gone);
    if (fd >= 0)
        close(fd);
    assert_int_equal(healthz_from("127.0.0.1", port), 200);
    char u[128];
    snprintf(u, sizeof u, "http://127.0.0.1:%d/metrics", port);
    fx_resp r;
    const double end4 = px_test_now_ms() + px_test_ms(10000);
    for (;;) { /* counted by the sweeper right after the shutdown */
        assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
        int seen = strstr((char *)r.body.data, "pixpipe_header_timeouts_total 1\n") != NULL;
        fx_resp_free(&r);
        if (seen)
            break;
        assert_true(px_test_now_ms() < end4);
        usleep(20000);
    }
    px_server_destroy(srv);
}

/* Neither export writes a text cell a spreadsheet would run as a formula. */
static void expect_no_formula_cell(const char *csv)
{
    for (const char *p = csv; *p; p++) {
        if (p != csv && p[-1] != ',' && p[-1] != '\n')
            continue;
        const char *cell = *p == '"' ? p + 1 : p;
        if (strchr("=+@\t", *cell) && *cell) /* '-' starts the negative seed, a number */
            fail_msg("a cell starts with '%c': %.60s", *cell, p);
    }
}

static void test_csv_formulas(void **state)
{
    (void)state;
    char pool[300], out[300], db[400], sql[400];
    snprintf(pool, sizeof pool, "%s/csvpool", g_pool);
    snprintf(out, sizeof out, "%s/csvout", g_pool);
    snprintf(db, sizeof db, "%s/manifest.sqlite", pool);
    int64_t first = 0;
    px_err err = {{0}};
    assert_int_equal(fx_make_pool(pool, 1, 2, &first, &err), PX_OK);
    sqlite3 *h = NULL;
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    snprintf(sql, sizeof sql,
             "UPDATE jobs SET prompt='=HYPERLINK(\"http://evil.example\",\"x\")', "
             "negative='+cmd|'' /C calc''!A0', seed=-5 "
             "WHERE id=(SELECT job_id FROM images WHERE id=%lld)",
             (long long)first);
    assert_int_equal(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_changes(h), 1);
    sqlite3_close(h);
    px_manifest *s = NULL;
    assert_int_equal(px_manifest_open(db, 0, &s, &err), PX_OK);
    assert_int_equal(px_manifest_add_verdict(s, first, "@evil", "approve", NULL, NULL, &err), PX_OK);
    assert_int_equal(px_manifest_add_verdict(s, first + 1, "\tbo", "approve", NULL, NULL, &err),
                     PX_OK);

    /* pixpipe export (all images) */
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(px_manifest_export(s, f, 0, &err), PX_OK);
    px_manifest_close(s);
    long len = ftell(f);
    rewind(f);
    char *csv = calloc(1, (size_t)len + 1);
    assert_int_equal(fread(csv, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    assert_non_null(strstr(csv, ",\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\","));
    assert_non_null(strstr(csv, ",\"'+cmd|' /C calc'!A0\",-5,"));
    assert_non_null(strstr(csv, ",\"'@evil\","));
    assert_non_null(strstr(csv, ",\"'\tbo\","));
    expect_no_formula_cell(csv);
    free(csv);

    /* export --approved: metadata.csv */
    size_t n = 0;
    assert_int_equal(px_manifest_export_approved(pool, out, &n, &err), PX_OK);
    assert_int_equal(n, 2);
    char path[400];
    snprintf(path, sizeof path, "%s/metadata.csv", out);
    uint8_t *d = NULL;
    size_t dl = 0;
    assert_int_equal(px_read_file(path, 1 << 20, &d, &dl, NULL), PX_OK);
    csv = calloc(1, dl + 1);
    memcpy(csv, d, dl);
    free(d);
    assert_non_null(strstr(csv, ",\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\","));
    assert_non_null(strstr(csv, ",\"'@evil\","));
    assert_non_null(strstr(csv, ",-5\r\n")); /* the seed stays a number */
    expect_no_formula_cell(csv);
    free(csv);
}

static int setup_pool(void **state)
{
    (void)state;
    snprintf(g_pool, sizeof g_pool, "/tmp/px-serve-safety-XXXXXX");
    if (!mkdtemp(g_pool))
        return -1;
    snprintf(g_db, sizeof g_db, "%s/manifest.sqlite", g_pool);
    px_err err = {{0}};
    int st = fx_make_pool(g_pool, 3, 5, &g_first, &err);
    if (st)
        fprintf(stderr, "pool: %s\n", err.msg);
    return st == PX_OK ? 0 : -1;
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
        cmocka_unit_test(test_cross_origin_writes),
        cmocka_unit_test(test_host_allow_list),
        cmocka_unit_test(test_json_errors),
        cmocka_unit_test(test_slow_clients),
        cmocka_unit_test(test_csv_formulas),
    };
    int rc = cmocka_run_group_tests(tests, setup_pool, teardown_pool);
    curl_global_cleanup();
    return rc;
}
