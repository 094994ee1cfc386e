/*
 * `pixpipe generate` against the real servers' behaviours (issue 11), each a
 * flavour of the fake image server (tests/fakes/fake_imageserver.h): every
 * setting is either used by the server or refused before the first render,
 * and the manifest and the image metadata say what the server did.
 *  - AUTOMATIC1111 >= 1.9 (sampler + scheduler), before 1.9 (combined name),
 *    `info` recorded, a model switch honoured or ignored;
 *  - sd-server: its native async API behind --backend a1111, its OpenAI
 *    route with <sd_cpp_extra_args>, sizes rounded up to 64 (refuse,
 *    rescale, keep), one render at a time, names it does not know;
 *  - timeouts and Ctrl-C stopping the server's work (A1111 interrupt,
 *    sd-server cancel), the job cap said, errors cleared by a success.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h> /* after the three it needs (its own block, so include sorting keeps it here) */

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fakes/fake_imageserver.h"
#include "gen/gen_internal.h"
#include "gen/px_gen.h"
#include "image/px_image.h"
#include "manifest/px_manifest.h"
#include "px_test.h"

static char g_tmp[64];

static long long q1(const char *pool, const char *sql)
{
    char db[512];
    snprintf(db, sizeof db, "%s/manifest.sqlite", pool);
    sqlite3 *h;
    long long v = -1;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW)
                v = sqlite3_column_int64(st, 0);
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(h);
    return v;
}

/* One text from SQL (static buffer). */
static const char *qs(const char *pool, const char *sql)
{
    static char out[4096];
    char db[512];
    snprintf(db, sizeof db, "%s/manifest.sqlite", pool);
    out[0] = '\0';
    sqlite3 *h;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) == SQLITE_OK) {
            if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
                snprintf(out, sizeof out, "%s", (const char *)sqlite3_column_text(st, 0));
            sqlite3_finalize(st);
        }
    }
    sqlite3_close(h);
    return out;
}

typedef struct {
    px_gen_opts o;
    px_gen_campaign c;
    px_gen_writer *w;
    const char *servers[4];
    char pool[256];
} setup;

static void setup_init(setup *s, const char *name, const char *url, int count, int w, int h)
{
    memset(s, 0, sizeof *s);
    snprintf(s->pool, sizeof s->pool, "%s/%s", g_tmp, name);
    px_err e;
    if (px_gen_campaign_single("Technology and IT", PX_GEN_ITEMS, count, &s->c, &e) != PX_OK)
        fail_msg("%s", e.msg);
    s->c.render.width = w;
    s->c.render.height = h;
    s->c.render.steps = 4;
    s->c.render.cfg = 6;
    if (px_gen_writer_offline_create(PX_SOURCE_DIR "/vocab", 5, &s->w, &e) != PX_OK)
        fail_msg("%s", e.msg);
    px_gen_opts_default(&s->o);
    s->o.pool = s->pool;
    s->o.campaign = &s->c;
    s->o.writer = s->w;
    s->o.style_path = PX_SOURCE_DIR "/styles/styles.json";
    s->servers[0] = url;
    s->o.servers = s->servers;
    s->o.nservers = 1;
    s->o.timeout_ms = px_test_ms(5000);
    s->o.backoff_ms = 10;
}

static void setup_free(setup *s)
{
    px_gen_writer_destroy(s->w);
    px_gen_campaign_free(&s->c);
}

/* The JSON and parameters text of the pool file of job id. */
static void file_meta(const char *pool, long long id, char **json, char **params)
{
    char rel[600], path[900];
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT path FROM images WHERE id=%lld", id);
    snprintf(rel, sizeof rel, "%s", qs(pool, sql));
    snprintf(path, sizeof path, "%s/%s", pool, rel);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    static uint8_t buf[4 << 20];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    assert_int_equal(px_image_meta_read(buf, n, PX_META_JSON, json, NULL), PX_OK);
    assert_int_equal(px_image_meta_read(buf, n, PX_META_PARAMETERS, params, NULL), PX_OK);
}

static int run(setup *s, px_gen_summary *sum, px_err *e)
{
    return px_gen_run(&s->o, sum, e);
}

/* A1111 >= 1.9: "DPM++ 2M Karras" goes as sampler + scheduler; what its
 * `info` says is what the manifest and the file say. */
static void test_a1111_split_and_info(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(96, 64, &f), 0);
    setup s;
    setup_init(&s, "a1111-new", fake_img_url(f), 3, 96, 64);
    px_gen_summary sum;
    px_err e;
    if (run(&s, &sum, &e) != PX_OK)
        fail_msg("%s", e.msg);
    assert_true(sum.complete);
    fake_img_used u;
    assert_int_equal(fake_img_last(f, &u), 0);
    assert_string_equal(u.sampler, "DPM++ 2M");
    assert_string_equal(u.scheduler, "Karras");
    assert_int_equal(u.steps, 4);
    assert_string_equal(qs(s.pool, "SELECT DISTINCT sampler FROM jobs"), "DPM++ 2M Karras");
    assert_string_equal(qs(s.pool, "SELECT DISTINCT model FROM jobs"), "base [6ce0161689]");
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM jobs WHERE render_info LIKE '%Schedule type: "
                                "Karras%'"),
                     3);
    long long id = q1(s.pool, "SELECT MIN(id) FROM images");
    char *json, *params;
    file_meta(s.pool, id, &json, &params);
    assert_non_null(strstr(params, "Sampler: DPM++ 2M Karras"));
    assert_non_null(strstr(params, "Steps: 4,"));
    assert_non_null(strstr(json, "\"model\":\"base [6ce0161689]\""));
    free(json);
    free(params);
    setup_free(&s);

    /* a sampler it does not know is refused before anything renders */
    int r0 = fake_img_renders(f);
    setup_init(&s, "a1111-badsampler", fake_img_url(f), 2, 96, 64);
    snprintf(s.c.render.sampler, sizeof s.c.render.sampler, "DPM++ 3M SDE Karras");
    assert_int_equal(run(&s, &sum, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "DPM++ 3M SDE"));
    assert_non_null(strstr(e.msg, "does not know"));
    assert_int_equal(fake_img_renders(f), r0);
    setup_free(&s);
    fake_img_stop(f);
}

/* Before 1.9: no /schedulers, the combined name. */
static void test_a1111_old_combined(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(96, 64, &f), 0);
    fake_img_set_flavor(f, FAKE_IMG_A1111_OLD);
    setup s;
    setup_init(&s, "a1111-old", fake_img_url(f), 2, 96, 64);
    px_gen_summary sum;
    px_err e;
    if (run(&s, &sum, &e) != PX_OK)
        fail_msg("%s", e.msg);
    fake_img_used u;
    assert_int_equal(fake_img_last(f, &u), 0);
    assert_string_equal(u.sampler, "DPM++ 2M Karras");
    assert_string_equal(u.scheduler, "");
    assert_string_equal(qs(s.pool, "SELECT DISTINCT sampler FROM jobs"), "DPM++ 2M Karras");
    setup_free(&s);
    /* the old server has no "DPM++ 2M Exponential" */
    setup_init(&s, "a1111-old-bad", fake_img_url(f), 2, 96, 64);
    snprintf(s.c.render.sampler, sizeof s.c.render.sampler, "DPM++ 2M Exponential");
    assert_int_equal(run(&s, &sum, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "DPM++ 2M Exponential"));
    setup_free(&s);
    fake_img_stop(f);
}

/* A model asked for: A1111 switches and says so; a server that ignores
 * override_settings is an error naming both models, not a silent record. */
static void test_model_checked(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(96, 64, &f), 0);
    setup s;
    setup_init(&s, "model-switch", fake_img_url(f), 2, 96, 64);
    snprintf(s.c.render.model, sizeof s.c.render.model, "other.safetensors");
    px_gen_summary sum;
    px_err e;
    if (run(&s, &sum, &e) != PX_OK)
        fail_msg("%s", e.msg);
    assert_string_equal(qs(s.pool, "SELECT DISTINCT model FROM jobs"), "other [6ce0161689]");
    setup_free(&s);

    fake_img_set_model(f, "base.safetensors", 0);
    setup_init(&s, "model-ignored", fake_img_url(f), 2, 96, 64);
    snprintf(s.c.render.model, sizeof s.c.render.model, "other.safetensors");
    assert_int_equal(run(&s, &sum, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "asked for model 'other.safetensors'"));
    assert_non_null(strstr(e.msg, "'base'"));
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM images"), 0);
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM jobs WHERE status='failed' AND error LIKE "
                                "'%asked for model%'"),
                     1);
    setup_free(&s);

    /* sd-server cannot switch: refused before the first render */
    fake_img_set_flavor(f, FAKE_IMG_SDCPP);
    int r0 = fake_img_renders(f);
    setup_init(&s, "model-sdcpp", fake_img_url(f), 2, 128, 64);
    snprintf(s.c.render.model, sizeof s.c.render.model, "other.safetensors");
    assert_int_equal(run(&s, &sum, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "cannot switch"));
    assert_int_equal(fake_img_renders(f), r0);
    setup_free(&s);
    fake_img_stop(f);
}

/* sd-server behind --backend a1111 (its native async API) and --backend
 * openai (extra args in the prompt): every setting honoured, and recorded as
 * the server reports it. */
static void test_sdcpp_settings_honoured(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(0, 0, &f), 0);
    fake_img_set_flavor(f, FAKE_IMG_SDCPP);
    for (int b = 0; b < 2; b++) {
        setup s;
        setup_init(&s, b ? "sdcpp-openai" : "sdcpp-native", fake_img_url(f), 3, 128, 64);
        s.o.backend = b ? PX_GEN_OPENAI : PX_GEN_A1111;
        s.o.seed = 1000;
        px_gen_summary sum;
        px_err e;
        if (run(&s, &sum, &e) != PX_OK)
            fail_msg("%s", e.msg);
        assert_true(sum.complete);
        fake_img_used u;
        assert_int_equal(fake_img_last(f, &u), 0);
        assert_string_equal(u.sampler, "dpm++2m");
        assert_string_equal(u.scheduler, "karras");
        assert_int_equal(u.steps, 4);
        assert_true(u.cfg > 5.99 && u.cfg < 6.01);
        assert_true(u.seed != 42 && u.seed > 1000);
        assert_true(strlen(u.negative) > 10); /* our negative prompt reached it */
        /* the seeds the server used are the job's */
        char sql[200];
        snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM jobs WHERE seed=%lld", (long long)u.seed);
        assert_int_equal(q1(s.pool, sql), 1);
        assert_string_equal(qs(s.pool, "SELECT DISTINCT sampler FROM jobs"), "dpm++2m karras");
        assert_string_equal(qs(s.pool, "SELECT DISTINCT model FROM jobs"), "base.safetensors");
        assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM jobs WHERE render_info LIKE "
                                    "'%sd-server%'"),
                         3);
        setup_free(&s);
    }
    /* the prompt reached sd-server without the extra args block */
    setup s;
    setup_init(&s, "sdcpp-badsampler", fake_img_url(f), 1, 128, 64);
    snprintf(s.c.render.sampler, sizeof s.c.render.sampler, "UniPC");
    px_gen_summary sum;
    px_err e;
    int r0 = fake_img_renders(f);
    assert_int_equal(run(&s, &sum, &e), PX_EINVAL); /* sd-server would fall back to euler_a */
    assert_non_null(strstr(e.msg, "UniPC"));
    assert_int_equal(fake_img_renders(f), r0);
    setup_free(&s);
    fake_img_stop(f);
}

/* The OpenAI images API elsewhere carries none of our settings: refused. */
static void test_plain_openai_refused(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(96, 64, &f), 0);
    setup s;
    setup_init(&s, "openai-plain", fake_img_url(f), 2, 96, 64);
    s.o.backend = PX_GEN_OPENAI;
    px_gen_summary sum;
    px_err e;
    assert_int_equal(run(&s, &sum, &e), PX_EUNSUPPORTED);
    assert_non_null(strstr(e.msg, "carries no seed"));
    assert_int_equal(fake_img_renders(f), 0);
    setup_free(&s);
    fake_img_stop(f);
}

/* sd-server rounds 100x72 up to 128x128: refused by default, else rescaled
 * to the size asked or kept and recorded as it came. */
static void test_size_mismatch(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(0, 0, &f), 0);
    fake_img_set_flavor(f, FAKE_IMG_SDCPP);
    const px_gen_size_policy pol[3] = {PX_GEN_SIZE_REFUSE, PX_GEN_SIZE_RESCALE, PX_GEN_SIZE_KEEP};
    for (int k = 0; k < 3; k++) {
        setup s;
        char name[32];
        snprintf(name, sizeof name, "size-%d", k);
        setup_init(&s, name, fake_img_url(f), 2, 100, 72);
        s.o.size_mismatch = pol[k];
        s.o.checks.min_blur = 0;
        px_gen_summary sum;
        px_err e;
        int st = run(&s, &sum, &e);
        if (k == 0) {
            assert_int_equal(st, PX_EINVAL);
            assert_non_null(strstr(e.msg, "128x128 image for the 100x72 asked"));
            assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM images"), 0);
            assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM jobs WHERE status='failed' AND "
                                        "error LIKE '%--size-mismatch%'"),
                             1);
        } else {
            if (st != PX_OK)
                fail_msg("%s", e.msg);
            int w = k == 1 ? 100 : 128, h = k == 1 ? 72 : 128;
            char sql[200];
            snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM images WHERE width=%d AND height=%d", w,
                     h);
            assert_int_equal(q1(s.pool, sql), 2);
            snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM jobs WHERE width=%d AND height=%d", w,
                     h);
            assert_int_equal(q1(s.pool, sql), 2);
            char *json, *params;
            file_meta(s.pool, q1(s.pool, "SELECT MIN(id) FROM images"), &json, &params);
            char want[32];
            snprintf(want, sizeof want, "Size: %dx%d", w, h);
            assert_non_null(strstr(params, want));
            free(json);
            free(params);
        }
        setup_free(&s);
    }
    fake_img_stop(f);
}

/* A fake sd-server whose renders take delay_ms. */
static fake_img *start_sdcpp(int delay_ms)
{
    fake_img *f;
    assert_int_equal(fake_img_start(0, 0, &f), 0);
    fake_img_set_flavor(f, FAKE_IMG_SDCPP);
    fake_img_set_delay(f, delay_ms);
    return f;
}

/* One job, two attempts, each timing out while f's render is generating
 * (sd-server refuses the cancel, 409): the worker waits for the render it
 * could not cancel, so the retry is not queued behind it. */
static void check_abandoned_not_queued(fake_img *f, const char *name, long timeout_ms)
{
    setup s;
    setup_init(&s, name, fake_img_url(f), 1, 128, 64);
    s.o.timeout_ms = timeout_ms;
    s.o.max_attempts = 2;
    s.o.server_failures = 2;
    px_gen_summary sum;
    px_err e;
    assert_int_equal(run(&s, &sum, &e), PX_ENET);
    assert_true(fake_img_cancels_refused(f) >= 2); /* each attempt generating when it timed out */
    assert_int_equal(fake_img_max_inflight(f), 1); /* the retry was not queued behind the first */
    setup_free(&s);
}

/* sd-server renders one at a time: --per-server 3 gets one request in flight. */
static void test_sdcpp_one_at_a_time(void **state)
{
    (void)state;
    fake_img *f = start_sdcpp(30);
    setup s;
    setup_init(&s, "sdcpp-inflight", fake_img_url(f), 6, 128, 64);
    s.o.per_server = 3;
    px_gen_summary sum;
    px_err e;
    if (run(&s, &sum, &e) != PX_OK)
        fail_msg("%s", e.msg);
    assert_true(sum.complete);
    assert_int_equal(fake_img_max_inflight(f), 1);
    setup_free(&s);

    /* an A1111 server says nothing about it: --per-server is taken as given */
    fake_img *a;
    assert_int_equal(fake_img_start(96, 64, &a), 0);
    fake_img_set_delay(a, 300); /* long enough for a second worker to start on a busy machine */
    setup_init(&s, "a1111-inflight", fake_img_url(a), 6, 96, 64);
    s.o.per_server = 3;
    if (run(&s, &sum, &e) != PX_OK)
        fail_msg("%s", e.msg);
    assert_true(fake_img_max_inflight(a) >= 2);
    setup_free(&s);
    fake_img_stop(a);
    fake_img_stop(f);
}

/* Waits until the fake has no render under way (deadline generous). */
static int wait_idle(fake_img *f, int ms)
{
    for (int t = 0; t < px_test_ms(ms); t += 10) {
        if (fake_img_busy(f) == 0)
            return 1;
        struct timespec ts = {0, 10000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

/* A client timeout stops the server's work: A1111 gets an interrupt (its
 * render ends at once), sd-server a cancel of the job still queued. */
static void test_timeout_stops_server_work(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(96, 64, &f), 0);
    fake_img_set_delay(f, 600000); /* ten minutes a render */
    setup s;
    setup_init(&s, "timeout-a1111", fake_img_url(f), 1, 96, 64);
    s.o.timeout_ms = 300;
    s.o.max_attempts = 1;
    s.o.server_failures = 1;
    px_gen_summary sum;
    px_err e;
    assert_int_equal(run(&s, &sum, &e), PX_ENET); /* set aside */
    assert_true(fake_img_interrupts(f) >= 1);
    assert_true(wait_idle(f, 10000)); /* the render stopped, not left running for minutes */
    setup_free(&s);
    fake_img_stop(f);

    /* sd-server: a job generating cannot be cancelled (409, said in the log): the worker waits
     * for it to end, so the retry is not queued behind it */
    f = start_sdcpp(1500); /* well past the timeout on a busy machine too */
    check_abandoned_not_queued(f, "timeout-sdcpp", 150);

    /* a job still queued when the time is up is cancelled (the server busy with another
     * client's 2 s render) */
    fake_img_set_delay(f, 2000);
    px_gen_render_used used;
    px_gen_client *http;
    assert_int_equal(px_gen_client_create(&http, &e), PX_OK);
    px_gen_server_info info;
    assert_int_equal(px_gen_probe(http, PX_GEN_A1111, fake_img_url(f), 2000, &info, &e), PX_OK);
    px_gen_render_req req = {.prompt = "a",
                             .negative = "",
                             .seed = 1,
                             .width = 64,
                             .height = 64,
                             .steps = 2,
                             .cfg = 5,
                             .sampler = "Euler a",
                             .model = ""};
    px_buf img = {0};
    int c0 = fake_img_cancels(f);
    /* the other client's job, then ours behind it */
    char body[] = "{\"prompt\":\"other\",\"width\":64,\"height\":64}";
    char url[256];
    snprintf(url, sizeof url, "%s/sdcpp/v1/img_gen", fake_img_url(f));
    long status;
    px_buf resp = {0};
    assert_int_equal(px_gen_http(http, url, body, NULL, 2000, 1 << 20, &status, &resp, &e), PX_OK);
    assert_int_equal(status, 202);
    px_buf_free(&resp);
    assert_int_equal(
        px_gen_render(http, PX_GEN_A1111, fake_img_url(f), &info, NULL, &req, 300, &img, &used, &e),
        PX_ETIMEOUT);
    assert_int_equal(fake_img_cancels(f), c0 + 1);
    px_buf_free(&img);
    px_gen_client_destroy(http);
    fake_img_stop(f);
}

/* The time runs out inside a slow status request (a busy sd-server answers
 * late): the job is still given up as at any timeout, the worker waits for
 * the render it could not cancel, and the retry is not queued behind it. */
static void test_sdcpp_slow_status(void **state)
{
    (void)state;
    fake_img *f = start_sdcpp(1500);
    fake_img_set_poll_delay(f, 300); /* the second status request outlasts the time left */
    check_abandoned_not_queued(f, "slow-status", 400);
    fake_img_stop(f);
}

typedef struct {
    volatile int *flag;
    int after_ms;
} canceller;

static void *cancel_later(void *arg)
{
    canceller *c = arg;
    struct timespec ts = {c->after_ms / 1000, (c->after_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    __atomic_store_n(c->flag, 1, __ATOMIC_RELAXED);
    return NULL;
}

/* Ctrl-C (o->stop and o->cancel) abandons the render in flight, interrupts
 * it on the server, and leaves the job pending for the next run. */
static void test_cancel_interrupts(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(96, 64, &f), 0);
    fake_img_set_delay(f, 600000);
    setup s;
    setup_init(&s, "cancel", fake_img_url(f), 1, 96, 64);
    s.o.timeout_ms = 600000;
    volatile int stop = 0;
    s.o.stop = &stop;
    s.o.cancel = &stop;
    canceller c = {&stop, 300};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cancel_later, &c), 0);
    px_gen_summary sum;
    px_err e;
    assert_int_equal(run(&s, &sum, &e), PX_OK);
    pthread_join(th, NULL);
    assert_false(sum.complete);
    assert_true(fake_img_interrupts(f) >= 1);
    assert_true(wait_idle(f, 10000));
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM jobs WHERE status='pending'"), 1);
    setup_free(&s);
    fake_img_stop(f);
}

/* An API-format workflow: KSampler with these steps, sampler_name and
 * scheduler values (JSON text), and the other markers in place. */
static void comfy_workflow(char *out, size_t cap, const char *steps, const char *sampler,
                           const char *scheduler)
{
    snprintf(out, cap,
             "{\"3\":{\"class_type\":\"KSampler\",\"inputs\":{\"seed\":\"%%seed%%\",\"steps\":%s,"
             "\"cfg\":\"%%cfg%%\",\"sampler_name\":%s,\"scheduler\":%s}},"
             "\"6\":{\"class_type\":\"CLIPTextEncode\",\"inputs\":{\"text\":\"%%prompt%%\"}},"
             "\"7\":{\"class_type\":\"CLIPTextEncode\",\"inputs\":{\"text\":\"%%negative%%\"}},"
             "\"5\":{\"class_type\":\"EmptyLatentImage\",\"inputs\":{\"width\":\"%%width%%\","
             "\"height\":\"%%height%%\"}}}",
             steps, sampler, scheduler);
}

/* ComfyUI: a workflow without a marker for a recorded setting is refused
 * naming it; the sampler is ours through %sampler%/%scheduler%, else the
 * workflow's own, and the record says which. */
static void test_comfy_workflow(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(96, 64, &f), 0);
    char no_steps[1024], literal[1024], marked[1024];
    comfy_workflow(no_steps, sizeof no_steps, "20", "\"euler\"", "\"normal\"");
    comfy_workflow(literal, sizeof literal, "\"%steps%\"", "\"euler\"", "\"normal\"");
    comfy_workflow(marked, sizeof marked, "\"%steps%\"", "\"%sampler%\"", "\"%scheduler%\"");
    setup s;
    setup_init(&s, "comfy-nosteps", fake_img_url(f), 2, 96, 64);
    s.o.backend = PX_GEN_COMFYUI;
    s.o.workflow = no_steps;
    px_gen_summary sum;
    px_err e;
    assert_int_equal(run(&s, &sum, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "no %steps% marker"));
    assert_int_equal(fake_img_renders(f), 0);
    setup_free(&s);
    /* with the markers: the workflow's literal sampler is what the record says */
    setup_init(&s, "comfy-literal", fake_img_url(f), 2, 96, 64);
    s.o.backend = PX_GEN_COMFYUI;
    s.o.workflow = literal;
    if (run(&s, &sum, &e) != PX_OK)
        fail_msg("%s", e.msg);
    assert_string_equal(qs(s.pool, "SELECT DISTINCT sampler FROM jobs"), "euler normal");
    setup_free(&s);
    /* and ours where it has %sampler% and %scheduler% ("DPM++ 2M Karras" in ComfyUI's names) */
    setup_init(&s, "comfy-marked", fake_img_url(f), 2, 96, 64);
    s.o.backend = PX_GEN_COMFYUI;
    s.o.workflow = marked;
    if (run(&s, &sum, &e) != PX_OK)
        fail_msg("%s", e.msg);
    assert_string_equal(qs(s.pool, "SELECT DISTINCT sampler FROM jobs"), "dpmpp_2m karras");
    setup_free(&s);
    fake_img_stop(f);
}

/* Every image rejected: the run stops at its job cap and says so. */
static void test_job_cap_said(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(96, 64, &f), 0);
    fake_img_blank_every(f, 1);
    setup s;
    setup_init(&s, "cap", fake_img_url(f), 2, 96, 64);
    s.o.max_jobs_factor = 2;
    px_gen_summary sum;
    px_err e;
    assert_int_equal(run(&s, &sum, &e), PX_OK);
    assert_false(sum.complete);
    assert_int_equal(sum.capped, 1);
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM jobs"), 4);
    setup_free(&s);
    fake_img_stop(f);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/px_gen_srv_XXXXXX");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    px_log_set_level(PX_LOG_INFO);
    if (getenv("PX_TEST_FILTER"))
        cmocka_set_test_filter(getenv("PX_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a1111_split_and_info),
        cmocka_unit_test(test_a1111_old_combined),
        cmocka_unit_test(test_model_checked),
        cmocka_unit_test(test_sdcpp_settings_honoured),
        cmocka_unit_test(test_plain_openai_refused),
        cmocka_unit_test(test_size_mismatch),
        cmocka_unit_test(test_sdcpp_one_at_a_time),
        cmocka_unit_test(test_timeout_stops_server_work),
        cmocka_unit_test(test_sdcpp_slow_status),
        cmocka_unit_test(test_cancel_interrupts),
        cmocka_unit_test(test_job_cap_said),
        cmocka_unit_test(test_comfy_workflow),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
