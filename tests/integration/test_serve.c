/*
 * Integration tests of `pixpipe serve`: the real binary, started on a free
 * port with the real face model, driven with libcurl. Covers anonymize
 * (image out, JSON report, format change), bad bodies (oversized, not an
 * image, truncated), the pool routes behind a bearer token from the
 * environment, a full job queue (503 + Retry-After), the processing timeout
 * (504), metrics, and a graceful SIGTERM that lets a request in progress
 * finish.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "image/px_image.h"
#include "integration/test_serve_fixture.h"
#include "px_test.h"

#define PHOTO PX_SHARED_DIR "/testdata/faces/deface_city.jpg"

typedef struct {
    pid_t pid;
    int port;
    char base[64];
} server;

/* servers still running, killed at exit when a failed assertion skipped stop() */
static pid_t g_live[16];

static void live_set(pid_t pid, int on)
{
    for (int i = 0; i < 16; i++)
        if (on ? g_live[i] == 0 : g_live[i] == pid) {
            g_live[i] = on ? pid : 0;
            return;
        }
}

/* Starts pixpipe serve with extra arguments (NULL-terminated); reads the
 * port from its first line of output. */
static void start(server *s, const char *token, ...)
{
    const char *argv[32] = {PX_PIXPIPE_BIN, "serve", "--listen", "127.0.0.1:0"};
    int n = 4;
    va_list ap;
    va_start(ap, token);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 31)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        if (token)
            setenv("PIXPIPE_API_TOKEN", token, 1);
        else
            unsetenv("PIXPIPE_API_TOKEN");
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    live_set(s->pid, 1);
    close(fds[1]);
    FILE *f = fdopen(fds[0], "r");
    char line[256] = "";
    assert_non_null(fgets(line, sizeof line, f));
    fclose(f);
    const char *p = strstr(line, "127.0.0.1:");
    assert_non_null(p);
    s->port = atoi(p + 10);
    assert_true(s->port > 0);
    snprintf(s->base, sizeof s->base, "http://127.0.0.1:%d", s->port);
}

/* SIGTERM and the exit status (expects a clean exit within 20 s). */
static int stop(server *s)
{
    kill(s->pid, SIGTERM);
    live_set(s->pid, 0);
    int st = 0;
    const double end = px_test_now_ms() + px_test_ms(20000);
    while (px_test_now_ms() < end) {
        pid_t r = waitpid(s->pid, &st, WNOHANG);
        if (r == s->pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        usleep(10000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    return -1;
}

static void read_photo(uint8_t **d, size_t *n)
{
    assert_int_equal(px_read_file(PHOTO, 50u << 20, d, n, NULL), PX_OK);
}

static void post(server *s, const char *path, const void *body, size_t len,
                 const char *const *hdr, fx_resp *r)
{
    char u[256];
    snprintf(u, sizeof u, "%s%s", s->base, path);
    assert_int_equal(fx_http("POST", u, body, len, hdr, r), 0);
}

static long error_is(fx_resp *r, const char *needle)
{
    json_t *v = json_loads((const char *)r->body.data, 0, NULL);
    const char *e = v ? json_string_value(json_object_get(v, "error")) : NULL;
    long ok = e && strstr(e, needle);
    if (!ok)
        fprintf(stderr, "error body '%s' lacks '%s'\n", (char *)r->body.data, needle);
    json_decref(v);
    return ok;
}

static void test_anonymize(void **state)
{
    (void)state;
    server s;
    start(&s, NULL, "--workers", "2", "--max-body", "1", NULL);
    uint8_t *photo;
    size_t len;
    read_photo(&photo, &len);
    px_image in;
    assert_int_equal(px_image_decode(photo, len, NULL, &in, NULL, NULL), PX_OK);

    fx_resp r;
    post(&s, "/v1/anonymize?mode=blur&seed=7", photo, len, NULL, &r);
    assert_int_equal(r.code, 200);
    assert_string_equal(r.ctype, "image/jpeg");
    int faces = atoi(r.faces);
    assert_true(faces >= 5); /* a street scene with many people */
    px_image out;
    assert_int_equal(px_image_decode(r.body.data, r.body.len, NULL, &out, NULL, NULL), PX_OK);
    assert_int_equal(out.w, in.w);
    assert_int_equal(out.h, in.h);
    px_image_free(&out);
    fx_resp_free(&r);

    post(&s, "/v1/anonymize?format=json", photo, len, NULL, &r);
    assert_int_equal(r.code, 200);
    json_t *rep = json_loads((const char *)r.body.data, 0, NULL);
    assert_non_null(rep);
    assert_int_equal(json_integer_value(json_object_get(rep, "count")), faces);
    json_t *arr = json_object_get(rep, "faces");
    assert_int_equal((int)json_array_size(arr), faces);
    for (size_t i = 0; i < json_array_size(arr); i++) {
        json_t *f = json_array_get(arr, i);
        double x1 = json_number_value(json_object_get(f, "x1"));
        double x2 = json_number_value(json_object_get(f, "x2"));
        double sc = json_number_value(json_object_get(f, "score"));
        assert_true(x1 >= -5.0 && x2 > x1 && x2 <= in.w + 5.0);
        assert_true(sc > 0.5 && sc <= 1.0);
    }
    assert_string_equal(json_string_value(json_object_get(rep, "input_format")), "jpeg");
    json_decref(rep);
    fx_resp_free(&r);

    post(&s, "/v1/anonymize?format=png&boxes=1&mode=solid", photo, len, NULL, &r);
    assert_int_equal(r.code, 200);
    assert_string_equal(r.ctype, "image/png");
    assert_memory_equal(r.body.data, "\x89PNG", 4);
    fx_resp_free(&r);

    /* not an image, truncated image, over the 1 MiB body limit */
    post(&s, "/v1/anonymize", "XYZ89a not really", 17, NULL, &r); /* GIF89a is read now */
    assert_int_equal(r.code, 415);
    assert_true(error_is(&r, "not a JPEG"));
    fx_resp_free(&r);
    post(&s, "/v1/anonymize", photo, 600, NULL, &r);
    assert_true(r.code == 422 || r.code == 400);
    assert_true(error_is(&r, "image"));
    fx_resp_free(&r);
    uint8_t *big = calloc(1, (3u << 20) / 2);
    memcpy(big, photo, 1024);
    /* the server answers 413 from the headers and closes; without waiting for
     * 100-continue the client may still be sending and see a reset instead */
    static const char *const expect[] = {"Expect: 100-continue", NULL};
    post(&s, "/v1/anonymize", big, (3u << 20) / 2, expect, &r);
    assert_int_equal(r.code, 413);
    assert_true(error_is(&r, "limit"));
    fx_resp_free(&r);
    free(big);

    char u[256];
    snprintf(u, sizeof u, "%s/metrics", s.base);
    assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
    char want[96];
    snprintf(want, sizeof want, "pixpipe_faces_found_total %d\n", 2 * faces + faces);
    if (!strstr((char *)r.body.data, want))
        fprintf(stderr, "metrics lack '%s'\n", want);
    assert_non_null(strstr((char *)r.body.data, want));
    assert_non_null(strstr((char *)r.body.data, "pixpipe_anonymize_images_total 3\n"));
    fx_resp_free(&r);
    px_image_free(&in);
    free(photo);
    assert_int_equal(stop(&s), 0);
}

typedef struct {
    server *s;
    const uint8_t *body;
    size_t len;
    long code;
    char retry[32];
} shot;

static void *fire(void *arg)
{
    shot *p = arg;
    fx_resp r;
    char u[256];
    snprintf(u, sizeof u, "%s/v1/anonymize", p->s->base);
    p->code = fx_http("POST", u, p->body, p->len, NULL, &r) == 0 ? r.code : -1;
    memcpy(p->retry, r.retry_after, sizeof p->retry);
    fx_resp_free(&r);
    return NULL;
}

/* One worker, a queue of one: a burst of 8 gets some 200 and some 503. */
static void test_queue_full_and_timeout(void **state)
{
    (void)state;
    uint8_t *photo;
    size_t len;
    read_photo(&photo, &len);
    server s;
    start(&s, NULL, "--workers", "1", "--queue", "1", "--threads", "1", NULL);
    pthread_t th[8];
    shot sh[8];
    for (int i = 0; i < 8; i++) {
        sh[i] = (shot){&s, photo, len, 0, ""};
        pthread_create(&th[i], NULL, fire, &sh[i]);
    }
    int ok = 0, busy = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        if (sh[i].code == 200)
            ok++;
        if (sh[i].code == 503) {
            busy++;
            assert_string_equal(sh[i].retry, "1");
        }
    }
    fprintf(stderr, "burst of 8 on 1 worker / queue 1: %d ok, %d busy\n", ok, busy);
    assert_int_equal(ok + busy, 8);
    assert_true(ok >= 1);
    assert_true(busy >= 1);
    assert_int_equal(stop(&s), 0);

    /* a processing timeout shorter than any detection: 504, and the server stays healthy */
    start(&s, NULL, "--workers", "1", "--timeout-ms", "1", NULL);
    fx_resp r;
    post(&s, "/v1/anonymize", photo, len, NULL, &r);
    assert_int_equal(r.code, 504);
    assert_true(error_is(&r, "timeout"));
    fx_resp_free(&r);
    char u[256];
    snprintf(u, sizeof u, "%s/healthz", s.base);
    assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.code, 200);
    fx_resp_free(&r);
    assert_int_equal(stop(&s), 0);
    free(photo);
}

/* SIGTERM while a request is in progress: it still gets its answer. */
static void test_graceful_stop(void **state)
{
    (void)state;
    uint8_t *photo;
    size_t len;
    read_photo(&photo, &len);
    server s;
    start(&s, NULL, "--workers", "1", "--threads", "1", NULL);
    shot sh[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        sh[i] = (shot){&s, photo, len, 0, ""};
        pthread_create(&th[i], NULL, fire, &sh[i]);
    }
    /* wait until two jobs are accepted (one running, one queued): those must
     * be finished, not dropped, by a graceful stop */
    char u[256];
    snprintf(u, sizeof u, "%s/healthz", s.base);
    long long in = 0;
    const double end = px_test_now_ms() + px_test_ms(10000);
    while (in < 2 && px_test_now_ms() < end) {
        fx_resp r;
        assert_int_equal(fx_http("GET", u, NULL, 0, NULL, &r), 0);
        json_t *h = json_loads((const char *)r.body.data, 0, NULL);
        in = h ? json_integer_value(json_object_get(h, "queue")) +
                     json_integer_value(json_object_get(h, "running"))
               : 0;
        json_decref(h);
        fx_resp_free(&r);
        if (in < 2)
            usleep(2000);
    }
    assert_true(in >= 2);
    assert_int_equal(stop(&s), 0);
    int ok = 0;
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        /* in progress at SIGTERM: finished within the grace period. One that
         * found the queue full, or came during the stop, got 503; one that had
         * not connected yet was refused (no answer). None is cut off. */
        if (sh[i].code != 200)
            fprintf(stderr, "graceful stop: request %d got %ld\n", i, sh[i].code);
        assert_true(sh[i].code == 200 || sh[i].code == 503 || sh[i].code <= 0);
        ok += sh[i].code == 200;
    }
    assert_true(ok >= in);
    free(photo);
}

static void test_pool_with_token(void **state)
{
    (void)state;
    char pool[256];
    snprintf(pool, sizeof pool, "%s/serve-it-XXXXXX", PX_BINARY_DIR);
    assert_non_null(mkdtemp(pool));
    int64_t first = 0;
    px_err err = {{0}};
    assert_int_equal(fx_make_pool(pool, 2, 3, &first, &err), PX_OK);
    server s;
    start(&s, "tok-123", "--pool", pool, "--no-anonymize", NULL);
    char path[128];
    snprintf(path, sizeof path, "/v1/pool/images/%lld/verdict", (long long)first);
    const char body[] = "{\"verdict\":\"reject\",\"reviewer\":\"bo\",\"reason\":\"off theme\"}";
    fx_resp r;
    post(&s, path, body, sizeof body - 1, NULL, &r);
    assert_int_equal(r.code, 401);
    fx_resp_free(&r);
    const char *auth[] = {"Authorization: Bearer tok-123", NULL};
    post(&s, path, body, sizeof body - 1, auth, &r);
    assert_int_equal(r.code, 201);
    fx_resp_free(&r);
    /* anonymize is off in this server */
    post(&s, "/v1/anonymize", "\x89PNG\r\n\x1a\n", 8, NULL, &r);
    assert_int_equal(r.code, 503);
    fx_resp_free(&r);
    assert_int_equal(stop(&s), 0);
    char db[400], sql[200];
    snprintf(db, sizeof db, "%s/manifest.sqlite", pool);
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM verdicts WHERE image_id=%lld AND verdict='reject' AND "
             "reason='off theme' AND reviewer='bo'",
             (long long)first);
    assert_int_equal(fx_sql_int(db, sql), 1);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", pool);
    assert_int_equal(system(cmd), 0);
}

/* Runs `pixpipe serve reviewer ARGS` (a shell word list); its stdout into
 * out (may be NULL); returns the exit status. */
static int reviewer(const char *args, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "'%s' serve reviewer %s 2>/dev/null", PX_PIXPIPE_BIN, args);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    size_t n = fread(out ? out : cmd, 1, out ? cap - 1 : sizeof cmd - 1, f);
    if (out)
        out[n] = '\0';
    int st = pclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Accounts from the command line: the token printed once works as a bearer
 * token and for the login; names are checked; remove takes effect at once. */
static void test_reviewer_cli(void **state)
{
    (void)state;
    char pool[256], args[600], out[1024];
    snprintf(pool, sizeof pool, "%s/serve-rev-XXXXXX", PX_BINARY_DIR);
    assert_non_null(mkdtemp(pool));
    int64_t first = 0;
    px_err err = {{0}};
    assert_int_equal(fx_make_pool(pool, 2, 3, &first, &err), PX_OK);
    snprintf(args, sizeof args, "add ana --pool '%s'", pool);
    assert_int_equal(reviewer(args, out, sizeof out), 0);
    char token[80];
    assert_int_equal(sscanf(out, "%79s", token), 1);
    assert_int_equal(strlen(token), 64);
    assert_int_equal(reviewer(args, NULL, 0), 2); /* exists already */
    snprintf(args, sizeof args, "add 'a/b' --pool '%s'", pool);
    assert_int_equal(reviewer(args, NULL, 0), 2);
    assert_int_equal(reviewer("add bob", NULL, 0), 2); /* no --pool */
    snprintf(args, sizeof args, "add 'Boss One' --admin --pool '%s'", pool);
    assert_int_equal(reviewer(args, NULL, 0), 0);
    snprintf(args, sizeof args, "list --pool '%s'", pool);
    assert_int_equal(reviewer(args, out, sizeof out), 0);
    assert_non_null(strstr(out, "ana\treviewer\t"));
    assert_non_null(strstr(out, "Boss One\tadmin\t"));
    assert_null(strstr(out, token));

    server s;
    start(&s, NULL, "--pool", pool, "--no-anonymize", NULL);
    char auth[128];
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
    const char *hdr[] = {auth, "Content-Type: application/json", NULL};
    fx_resp r;
    post(&s, "/v1/review/claim", "{\"n\":2}", 7, hdr, &r);
    assert_int_equal(r.code, 200);
    fx_resp_free(&r);
    char login[128];
    snprintf(login, sizeof login, "{\"token\":\"%s\"}", token);
    const char *json[] = {"Content-Type: application/json", NULL};
    post(&s, "/v1/login", login, strlen(login), json, &r);
    assert_int_equal(r.code, 200);
    fx_resp_free(&r);
    post(&s, "/v1/review/claim", "{\"n\":2}", 7, NULL, &r);
    assert_int_equal(r.code, 401); /* nothing anonymous once accounts exist */
    fx_resp_free(&r);
    snprintf(args, sizeof args, "remove ana --pool '%s'", pool);
    assert_int_equal(reviewer(args, NULL, 0), 0);
    post(&s, "/v1/review/claim", "{\"n\":2}", 7, hdr, &r);
    assert_int_equal(r.code, 401);
    fx_resp_free(&r);
    assert_int_equal(reviewer(args, NULL, 0), 2); /* gone already */
    assert_int_equal(stop(&s), 0);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", pool);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_anonymize),
        cmocka_unit_test(test_queue_full_and_timeout),
        cmocka_unit_test(test_graceful_stop),
        cmocka_unit_test(test_pool_with_token),
        cmocka_unit_test(test_reviewer_cli),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    for (int i = 0; i < 16; i++)
        if (g_live[i]) {
            kill(g_live[i], SIGKILL);
            waitpid(g_live[i], NULL, 0);
        }
    curl_global_cleanup();
    return rc;
}
