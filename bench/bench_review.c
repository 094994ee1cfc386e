/*
 * bench_review: 50 reviewers' API traffic against a 10,000-image pool
 * (issue 14). Makes the pool at start (small synthetic PNGs through the same
 * store calls `pixpipe generate` makes, tests/integration/test_serve_fixture.c),
 * adds one account per reviewer, runs `pixpipe serve`'s server in-process
 * and drives it with one libcurl client per reviewer (keep-alive, bearer
 * token): claim 10 images, then for each one fetch its WebP thumbnail
 * (made on first request, as a first reviewer sees it), think, post a
 * verdict; claim again. Reviewers start spread over one claim's worth of
 * thinking and think 0.5-1.5x the mean, as people do not work in step. Prints p50/p90/p99/max per request kind and overall.
 *
 *   bench_review [--reviewers 50] [--images 10000] [--seconds 30] [--think-ms 1000]
 *                [--io-threads 2] [--pool DIR (kept; made when empty)]
 *
 * --think-ms is the time a reviewer looks at an image before the verdict
 * (1 s is a fast expert; 0 makes a closed loop that measures saturation).
 * Figures only; nothing passes or fails on time (docs/benchmarks.md).
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "integration/test_serve_fixture.h"
#include "manifest/px_manifest.h"
#include "serve/px_serve.h"

enum { OP_CLAIM = 0, OP_THUMB, OP_VERDICT, OP_N };
static const char *k_op[OP_N] = {"claim", "thumb", "verdict"};

typedef struct reviewer {
    int port;
    char auth[128];
    double deadline;
    int think_ms;
    double *lat[OP_N]; /* ms */
    size_t n[OP_N], cap[OP_N];
    long errors, judged;
    unsigned seed;
} reviewer;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static size_t sink(char *d, size_t sz, size_t n, void *u)
{
    px_buf *b = u;
    if (b)
        px_buf_append(b, d, sz * n);
    return sz * n;
}

static void record(reviewer *r, int op, double ms)
{
    if (r->n[op] == r->cap[op]) {
        size_t nc = r->cap[op] ? r->cap[op] * 2 : 1024;
        double *g = realloc(r->lat[op], nc * sizeof *g);
        if (!g)
            return;
        r->lat[op] = g;
        r->cap[op] = nc;
    }
    r->lat[op][r->n[op]++] = ms;
}

/* One request on the reviewer's handle; body may be NULL (GET). Returns
 * the HTTP status (0 on a transport error). */
static long request(CURL *h, reviewer *r, int op, const char *url, const char *body, px_buf *out)
{
    struct curl_slist *hl = curl_slist_append(NULL, r->auth);
    if (body)
        hl = curl_slist_append(hl, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else {
        curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    double t0 = now_ms();
    CURLcode cc = curl_easy_perform(h);
    double ms = now_ms() - t0;
    long code = 0;
    if (cc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    curl_slist_free_all(hl);
    record(r, op, ms);
    if (code < 200 || code > 299)
        r->errors++;
    return code;
}

/* The ids in a claim answer ("id":N after each "{"), without a JSON parser
 * in the timed loop's way: the answer's image objects start with "id". */
static int claimed_ids(const char *json, int64_t *ids, int cap)
{
    int k = 0;
    for (const char *p = json; k < cap && (p = strstr(p, "{\"id\":")); p += 6)
        ids[k++] = strtoll(p + 6, NULL, 10);
    return k;
}

static void sleep_ms(double ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - (time_t)(ms / 1000) * 1000) * 1e6)};
    nanosleep(&ts, NULL);
}

/* xorshift: each reviewer's own think times, the same every run */
static double jitter(unsigned *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return (*s % 1000) / 1000.0;
}

static void *reviewer_main(void *arg)
{
    reviewer *r = arg;
    /* people do not start in step: spread over one claim's worth of images */
    if (r->think_ms > 0)
        sleep_ms(jitter(&r->seed) * r->think_ms * 10);
    CURL *h = curl_easy_init();
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
    char url[160], body[160];
    while (now_ms() < r->deadline) {
        px_buf b = {0};
        snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/review/claim", r->port);
        long code = request(h, r, OP_CLAIM, url, "{\"n\":10}", &b);
        px_buf_append(&b, "", 1);
        int64_t ids[10];
        int k = code == 200 ? claimed_ids((const char *)b.data, ids, 10) : 0;
        px_buf_free(&b);
        if (k == 0)
            break; /* pool done (or failing) */
        for (int i = 0; i < k && now_ms() < r->deadline; i++) {
            snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/pool/images/%lld/thumb", r->port,
                     (long long)ids[i]);
            request(h, r, OP_THUMB, url, NULL, NULL);
            if (r->think_ms > 0) /* 0.5 to 1.5 times the mean */
                sleep_ms(r->think_ms * (0.5 + jitter(&r->seed)));
            snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/pool/images/%lld/verdict", r->port,
                     (long long)ids[i]);
            snprintf(body, sizeof body, "{\"verdict\":\"%s\",\"reason\":\"%s\"}",
                     ids[i] % 7 ? "approve" : "reject", ids[i] % 7 ? "" : "off theme");
            if (request(h, r, OP_VERDICT, url, body, NULL) == 201)
                r->judged++;
        }
    }
    curl_easy_cleanup(h);
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_row(const char *name, double *v, size_t n, double secs)
{
    if (!n) {
        printf("%-8s %8s\n", name, "none");
        return;
    }
    qsort(v, n, sizeof *v, cmp_d);
#define Q(p) v[(size_t)((p) * (double)(n - 1) + 0.5)]
    printf("%-8s %8zu %8.1f %8.2f %8.2f %8.2f %8.2f\n", name, n, n / secs, Q(0.5), Q(0.9), Q(0.99),
           v[n - 1]);
#undef Q
}

static long arg_long(int argc, char **argv, const char *name, long def)
{
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name))
            return atol(argv[i + 1]);
    return def;
}

static const char *arg_str(int argc, char **argv, const char *name)
{
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], name))
            return argv[i + 1];
    return NULL;
}

/* The pool: made in dir unless it holds one already. */
static int make_pool(const char *dir, int images)
{
    char db[600];
    snprintf(db, sizeof db, "%s/%s", dir, PX_MANIFEST_FILE);
    struct stat sb;
    if (stat(db, &sb) == 0)
        return 0;
    px_err err = {{0}};
    double t0 = now_ms();
    int64_t first = 0;
    if (fx_make_pool(dir, images / 4, images / 4, &first, &err) != PX_OK) {
        fprintf(stderr, "bench_review: pool: %s\n", err.msg);
        return -1;
    }
    printf("pool: %d images (96x64 PNG) made in %.1f s\n", images / 4 * 4,
           (now_ms() - t0) / 1000.0);
    return 0;
}

int main(int argc, char **argv)
{
    int n_rev = (int)arg_long(argc, argv, "--reviewers", 50);
    int images = (int)arg_long(argc, argv, "--images", 10000);
    int secs = (int)arg_long(argc, argv, "--seconds", 30);
    int think = (int)arg_long(argc, argv, "--think-ms", 1000);
    int io = (int)arg_long(argc, argv, "--io-threads", 2);
    const char *keep = arg_str(argc, argv, "--pool");
    if (n_rev < 1 || n_rev > 1000 || images < 4 || secs < 1 || think < 0 || io < 1) {
        fprintf(stderr, "bench_review: bad arguments; see the comment at the top of the file\n");
        return 2;
    }
    char dir[512];
    if (keep) {
        snprintf(dir, sizeof dir, "%s", keep);
    } else {
        snprintf(dir, sizeof dir, "/tmp/px-bench-review-XXXXXX");
        if (!mkdtemp(dir)) {
            perror("bench_review: mkdtemp");
            return 1;
        }
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (make_pool(dir, images))
        return 1;
    char db[600];
    snprintf(db, sizeof db, "%s/%s", dir, PX_MANIFEST_FILE);
    px_manifest *m = NULL;
    px_err err = {{0}};
    if (px_manifest_open(db, 0, &m, &err) != PX_OK) {
        fprintf(stderr, "bench_review: %s\n", err.msg);
        return 1;
    }
    reviewer *rv = calloc((size_t)n_rev, sizeof *rv);
    for (int i = 0; i < n_rev; i++) {
        char name[32], tok[65];
        snprintf(name, sizeof name, "bench-%d-%ld", i, (long)time(NULL));
        if (px_manifest_account_add(m, name, 0, tok, NULL, &err) != PX_OK) {
            fprintf(stderr, "bench_review: %s\n", err.msg);
            return 1;
        }
        snprintf(rv[i].auth, sizeof rv[i].auth, "Authorization: Bearer %s", tok);
    }
    px_manifest_close(m);

    px_serve_opts o = px_serve_opts_default();
    o.port = 0;
    o.pool_dir = dir;
    o.io_threads = io;
    o.per_ip_connections = n_rev + 16; /* every reviewer comes from 127.0.0.1 here */
    o.max_connections = n_rev + 64;
    o.max_inflight = n_rev + 64;
    px_server *srv = NULL;
    if (px_server_create(&o, &srv, &err) != PX_OK) {
        fprintf(stderr, "bench_review: %s\n", err.msg);
        return 1;
    }
    printf("%d reviewers, think %d ms per image, %d s, server %d I/O threads, %ld cores online\n",
           n_rev, think, secs, io, sysconf(_SC_NPROCESSORS_ONLN));
    pthread_t *th = calloc((size_t)n_rev, sizeof *th);
    double t0 = now_ms(), deadline = t0 + secs * 1000.0;
    for (int i = 0; i < n_rev; i++) {
        rv[i].port = px_server_port(srv);
        rv[i].deadline = deadline;
        rv[i].think_ms = think;
        rv[i].seed = 2463534242u + 977u * (unsigned)i;
        pthread_create(&th[i], NULL, reviewer_main, &rv[i]);
    }
    for (int i = 0; i < n_rev; i++)
        pthread_join(th[i], NULL);
    double took = (now_ms() - t0) / 1000.0;
    px_server_destroy(srv);

    long errors = 0, judged = 0;
    size_t total = 0;
    for (int i = 0; i < n_rev; i++) {
        errors += rv[i].errors;
        judged += rv[i].judged;
        for (int op = 0; op < OP_N; op++)
            total += rv[i].n[op];
    }
    double *all = malloc((total ? total : 1) * sizeof *all);
    size_t na = 0;
    printf("%-8s %8s %8s %8s %8s %8s %8s\n", "request", "count", "per s", "p50 ms", "p90 ms",
           "p99 ms", "max ms");
    for (int op = 0; op < OP_N; op++) {
        size_t n = 0;
        for (int i = 0; i < n_rev; i++)
            n += rv[i].n[op];
        double *v = malloc((n ? n : 1) * sizeof *v);
        size_t k = 0;
        for (int i = 0; i < n_rev; i++) {
            memcpy(v + k, rv[i].lat[op], rv[i].n[op] * sizeof *v);
            k += rv[i].n[op];
        }
        memcpy(all + na, v, n * sizeof *v);
        na += n;
        print_row(k_op[op], v, n, took);
        free(v);
    }
    print_row("all", all, na, took);
    printf("judged %ld images in %.1f s (%.1f/s), %ld non-2xx answers\n", judged, took,
           judged / took, errors);
    free(all);
    for (int i = 0; i < n_rev; i++)
        for (int op = 0; op < OP_N; op++)
            free(rv[i].lat[op]);
    free(rv);
    free(th);
    if (!keep) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "bench_review: could not remove %s\n", dir);
    }
    curl_global_cleanup();
    return 0;
}
