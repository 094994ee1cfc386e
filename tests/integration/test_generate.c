/*
 * Integration tests of the generate pipeline against the fake image and LLM
 * servers (tests/fakes) on 127.0.0.1: exact quotas over a 13-theme campaign,
 * the three backends, several servers, failing and slow servers, rejected
 * images replaced, faces, malformed and repetitive LLM output, rerender,
 * export, and resume after `kill -9` of a real `pixpipe generate` process.
 * Each test uses its own pool in a temporary folder; images are 96x64 so
 * the whole file runs in seconds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "face/px_face.h"
#include "fakes/fake_imageserver.h"
#include "fakes/fake_llm.h"
#include "gen/gen_internal.h"
#include "gen/px_gen.h"
#include "manifest/px_manifest.h"
#include "px_test.h"

static char g_tmp[64];

static void make_pool(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", g_tmp, name);
}

/* Counts regular files ending in ext below dir (recursive); tmp counts *.tmp.* files. */
static int count_files(const char *dir, const char *ext, int *tmp)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(p, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            n += count_files(p, ext, tmp);
        } else {
            size_t l = strlen(e->d_name), el = strlen(ext);
            if (l > el && !strcmp(e->d_name + l - el, ext))
                n++;
            if (tmp && strstr(e->d_name, ".tmp."))
                (*tmp)++;
        }
    }
    closedir(d);
    return n;
}

/* One integer from SQL on the pool's manifest. */
static long long q1(const char *pool, const char *sql)
{
    char db[512];
    snprintf(db, sizeof db, "%s/manifest.sqlite", pool);
    sqlite3 *h;
    long long v = -1;
    if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_busy_timeout(h, px_test_ms(3000));
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

typedef struct {
    px_gen_opts o;
    px_gen_campaign c;
    px_gen_writer *w;
    const char *servers[8];
    char pool[256];
} setup;

static void setup_init(setup *s, const char *name, const char *theme, int type, int count)
{
    memset(s, 0, sizeof *s);
    make_pool(s->pool, sizeof s->pool, name);
    px_err e;
    if (px_gen_campaign_single(theme, type, count, &s->c, &e) != PX_OK)
        fail_msg("%s", e.msg);
    s->c.render.width = 96;
    s->c.render.height = 64;
    if (px_gen_writer_offline_create(PX_SOURCE_DIR "/vocab", 11, &s->w, &e) != PX_OK)
        fail_msg("%s", e.msg);
    px_gen_opts_default(&s->o);
    s->o.pool = s->pool;
    s->o.campaign = &s->c;
    s->o.writer = s->w;
    s->o.style_path = PX_SOURCE_DIR "/styles/styles.json";
    s->o.servers = s->servers;
    s->o.timeout_ms = px_test_ms(5000);
    s->o.backoff_ms = 20;
}

static void setup_free(setup *s)
{
    px_gen_writer_destroy(s->w);
    px_gen_campaign_free(&s->c);
}

static void test_exact_quotas_campaign(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(96, 64, &f), 0);
    setup s;
    setup_init(&s, "campaign", "x", 0, 1);
    px_gen_campaign_free(&s.c);
    px_err e;
    /* the shipped 13 themes with a small total: 130 images at 60/20/20 */
    uint8_t *data;
    size_t len;
    assert_int_equal(px_read_file(PX_SOURCE_DIR "/campaigns/default.json", 1 << 20, &data, &len, &e), PX_OK);
    char *txt = malloc(len + 1);
    memcpy(txt, data, len);
    txt[len] = '\0';
    free(data);
    char *p = strstr(txt, "10000");
    assert_non_null(p);
    memcpy(p, "  131", 5);
    assert_int_equal(px_gen_campaign_parse(txt, strlen(txt), "default.json", &s.c, &e), PX_OK);
    free(txt);
    s.c.render.width = 96;
    s.c.render.height = 64;
    s.servers[0] = fake_img_url(f);
    s.o.nservers = 1;
    s.o.per_server = 2;
    px_gen_summary sum;
    int st = px_gen_run(&s.o, &sum, &e);
    if (st != PX_OK)
        fail_msg("%s", e.msg);
    assert_true(sum.complete);
    /* exact per slot, and in total: 131 = 79/26/26 over the types */
    for (int i = 0; i < s.c.nthemes; i++)
        for (int k = 0; k < 3; k++) {
            char sql[512];
            snprintf(sql, sizeof sql,
                     "SELECT COUNT(*) FROM images WHERE theme_slug='%s' AND type='%s' AND status "
                     "IN ('accepted','flagged')",
                     s.c.themes[i].slug, px_gen_type_name(k));
            assert_int_equal(q1(s.pool, sql), s.c.themes[i].quota[k]);
        }
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM images WHERE type='interiors' AND status!='rejected'"), 79);
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM images WHERE type='items' AND status!='rejected'"), 26);
    assert_int_equal(q1(s.pool, "SELECT SUM(quota) FROM quotas"), 131);
    int tmp = 0;
    char dir[512];
    snprintf(dir, sizeof dir, "%s/business-and-office/interiors", s.pool);
    assert_int_equal(count_files(dir, ".png", &tmp),
                     q1(s.pool, "SELECT COUNT(*) FROM images WHERE theme_slug='business-and-office' AND type='interiors' AND status!='rejected'"));
    assert_int_equal(tmp, 0);
    /* a file carries the A1111 parameters and our JSON, matching the manifest */
    px_manifest *db;
    char dbp[512];
    snprintf(dbp, sizeof dbp, "%s/manifest.sqlite", s.pool);
    assert_int_equal(px_manifest_open(dbp, 1, &db, &e), PX_OK);
    px_manifest_image img;
    long long first = q1(s.pool, "SELECT MIN(id) FROM images WHERE status='accepted'");
    assert_int_equal(px_manifest_get_image(db, first, &img, &e), PX_OK);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", s.pool, img.path);
    assert_int_equal(px_read_file(path, 1 << 24, &data, &len, &e), PX_OK);
    char *params, *json;
    assert_int_equal(px_image_meta_read(data, len, PX_META_PARAMETERS, &params, &e), PX_OK);
    assert_int_equal(px_image_meta_read(data, len, PX_META_JSON, &json, &e), PX_OK);
    char seedtxt[64];
    snprintf(seedtxt, sizeof seedtxt, "Seed: %lld,", (long long)img.seed);
    assert_non_null(strstr(params, seedtxt));
    assert_non_null(strstr(params, "Negative prompt: "));
    assert_memory_equal(params, img.prompt, strlen(img.prompt));
    assert_non_null(strstr(img.prompt, "photorealistic stock photo")); /* style suffix */
    assert_non_null(strstr(img.negative, "watermark"));
    assert_non_null(strstr(img.negative, "people"));
    assert_non_null(strstr(json, "\"theme_slug\":\""));
    char sha[65];
    /* the recorded sha256 is the file's */
    px_gen_sha256_hex(data, len, sha);
    assert_string_equal(sha, img.sha256);
    free(params);
    free(json);
    free(data);
    px_manifest_image_clear(&img);
    /* export: one CSV row per image and a JSONL line per image */
    char out[512];
    snprintf(out, sizeof out, "%s/export.jsonl", g_tmp);
    FILE *fp = fopen(out, "w");
    assert_int_equal(px_manifest_export(db, fp, 1, &e), PX_OK);
    fclose(fp);
    px_manifest_close(db);
    assert_int_equal(px_read_file(out, 1 << 24, &data, &len, &e), PX_OK);
    int lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += data[i] == '\n';
    free(data);
    assert_int_equal(lines, q1(s.pool, "SELECT COUNT(*) FROM images"));
    /* `pixpipe export --approved`: experts approve three images, one of them
     * later rejected again; only the two whose latest verdict is approve are
     * copied, into THEME/TYPE/, with one metadata.csv row each */
    assert_int_equal(px_manifest_open(dbp, 0, &db, &e), PX_OK);
    long long ids[3] = {first, first + 1, first + 2};
    for (int i = 0; i < 3; i++)
        assert_int_equal(px_manifest_add_verdict(db, ids[i], "expert", "approve", NULL, NULL, &e), PX_OK);
    assert_int_equal(px_manifest_add_verdict(db, ids[2], "expert", "reject", "blurry", NULL, &e), PX_OK);
    px_manifest_close(db);
    char cmd[1400], stock[512];
    snprintf(stock, sizeof stock, "%s/stock", g_tmp);
    snprintf(cmd, sizeof cmd, "'%s' export --out '%s' --approved '%s' 2>/dev/null", PX_PIXPIPE_BIN, s.pool, stock);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(count_files(stock, ".png", NULL), 2);
    snprintf(path, sizeof path, "%s/metadata.csv", stock);
    assert_int_equal(px_read_file(path, 1 << 20, &data, &len, &e), PX_OK);
    lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += data[i] == '\n';
    free(data);
    assert_int_equal(lines, 3); /* header + 2 */
    /* a missing pool is a setup error (exit 3), and nothing is written */
    snprintf(cmd, sizeof cmd, "'%s' export --out '%s/nopool' --approved '%s/stock2' 2>/dev/null", PX_PIXPIPE_BIN,
             g_tmp, g_tmp);
    int rc = system(cmd);
    assert_true(WIFEXITED(rc));
    assert_int_equal(WEXITSTATUS(rc), 3);
    snprintf(path, sizeof path, "%s/stock2/metadata.csv", g_tmp);
    assert_int_equal(access(path, F_OK), -1);
    /* running again does nothing: the quota is met */
    int before = fake_img_renders(f);
    assert_int_equal(px_gen_run(&s.o, &sum, &e), PX_OK);
    assert_int_equal(fake_img_renders(f), before);
    assert_int_equal(sum.rendered, 0);
    setup_free(&s);
    fake_img_stop(f);
}

static void test_rejected_replaced_and_faces(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(96, 64, &f), 0);
    fake_img_blank_every(f, 4);
    fake_img_dark_every(f, 7);
    setup s;
    setup_init(&s, "rejects", "Medicine and health", PX_GEN_ITEMS, 20);
    s.servers[0] = fake_img_url(f);
    s.o.nservers = 1;
    px_gen_summary sum;
    px_err e;
    assert_int_equal(px_gen_run(&s.o, &sum, &e), PX_OK);
    assert_true(sum.complete);
    assert_true(sum.rejected >= 5);
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM images WHERE status='accepted'"), 20);
    assert_true(q1(s.pool, "SELECT COUNT(*) FROM images WHERE status='rejected' AND reason LIKE 'near-uniform%'") >= 4);
    assert_true(q1(s.pool, "SELECT COUNT(*) FROM images WHERE status='rejected' AND reason LIKE 'too dark%'") >= 1);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/rejected/medicine-and-health/items", s.pool);
    assert_int_equal(count_files(dir, ".png", NULL), sum.rejected);
    assert_int_equal(count_files(dir, ".txt", NULL), sum.rejected);
    setup_free(&s);

    /* faces: a real photo with faces every 3rd render, rejected by the detector */
    px_face_detector *det = NULL;
    px_face_detector_opts fo = {.kind = PX_FACE_MODEL_AUTO, .threads = 1, .max_sessions = 1};
    if (px_face_detector_create(PX_MODEL_DIR "/face_detection_yunet_2023mar.onnx", &fo, &det, &e) != PX_OK) {
        printf("skipping the face part: %s\n", e.msg);
        fake_img_stop(f);
        return;
    }
    fake_img_blank_every(f, 0);
    fake_img_dark_every(f, 0);
    assert_int_equal(fake_img_photo_every(f, PX_SHARED_DIR "/testdata/faces/libfd_keliamoniz1.jpg", 3), 0);
    setup_init(&s, "faces", "Medicine and health", PX_GEN_ITEMS, 6);
    s.servers[0] = fake_img_url(f);
    s.o.nservers = 1;
    s.o.checks.faces = PX_GEN_FACES_REJECT;
    s.o.checks.face_detector = det;
    s.o.checks.min_blur = 0;
    s.o.size_mismatch = PX_GEN_SIZE_KEEP; /* the photo is not 96x64 */
    assert_int_equal(px_gen_run(&s.o, &sum, &e), PX_OK);
    assert_true(sum.complete);
    assert_true(q1(s.pool, "SELECT COUNT(*) FROM images WHERE reason LIKE '%face%found'") >= 2);
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM images WHERE status='accepted'"), 6);
    setup_free(&s);
    /* flag mode keeps them, counted toward the quota */
    setup_init(&s, "faces-flag", "Medicine and health", PX_GEN_ITEMS, 6);
    s.servers[0] = fake_img_url(f);
    s.o.nservers = 1;
    s.o.checks.faces = PX_GEN_FACES_FLAG;
    s.o.checks.face_detector = det;
    s.o.checks.min_blur = 0;
    s.o.size_mismatch = PX_GEN_SIZE_KEEP;
    assert_int_equal(px_gen_run(&s.o, &sum, &e), PX_OK);
    assert_true(sum.flagged >= 1);
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM images WHERE status IN ('accepted','flagged')"), 6);
    setup_free(&s);
    px_face_detector_destroy(det);
    fake_img_stop(f);
}

static void test_server_failures(void **state)
{
    (void)state;
    fake_img *bad, *good, *slow;
    assert_int_equal(fake_img_start(96, 64, &bad), 0);
    assert_int_equal(fake_img_start(96, 64, &good), 0);
    assert_int_equal(fake_img_start(96, 64, &slow), 0);
    fake_img_fail_always(bad, 500);
    fake_img_set_delay(slow, 1500);
    /* never three failures in a row (6, 10, 15 cannot divide three consecutive numbers) */
    fake_img_corrupt_every(good, 6);
    fake_img_notimage_every(good, 10);
    fake_img_garbage_every(good, 15);
    setup s;
    setup_init(&s, "failures", "Business and office", PX_GEN_INTERIORS, 24);
    s.servers[0] = fake_img_url(bad);
    s.servers[1] = fake_img_url(good);
    s.servers[2] = fake_img_url(slow);
    s.servers[3] = "http://127.0.0.1:1"; /* nothing listens there */
    s.o.nservers = 4;
    s.o.timeout_ms = 300;
    s.o.server_failures = 3;
    s.o.max_attempts = 2;
    px_gen_summary sum;
    px_err e;
    int st = px_gen_run(&s.o, &sum, &e);
    if (st != PX_OK)
        fail_msg("%s", e.msg);
    assert_true(sum.complete);
    /* bad and unreachable surely; the slow one once it has timed out 3 times */
    assert_true(sum.servers_set_aside >= 2);
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM images WHERE status='accepted'"), 24);
    /* the good server did every accepted image; errors were recorded on jobs */
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM jobs j JOIN images i ON i.job_id=j.id WHERE i.status='accepted'"
             " AND j.server != '%s'", fake_img_url(good));
    assert_int_equal(q1(s.pool, sql), 0);
    /* a job that succeeded on a retry does not keep its old error; failed ones say why */
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM jobs WHERE status='done' AND error IS NOT NULL"), 0);
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM jobs WHERE status='failed' AND"
                                " (error IS NULL OR error = '')"), 0);
    /* corrupt / non-image / garbage payloads: retried, some jobs may fail for good */
    assert_true(q1(s.pool, "SELECT COUNT(*) FROM jobs WHERE attempts > 1") >= 1);
    setup_free(&s);

    /* every server dead: a clear error, the jobs stay pending for a resume */
    setup_init(&s, "alldead", "Business and office", PX_GEN_INTERIORS, 5);
    s.servers[0] = fake_img_url(bad);
    s.o.nservers = 1;
    s.o.server_failures = 2;
    st = px_gen_run(&s.o, &sum, &e);
    assert_int_equal(st, PX_ENET);
    assert_non_null(strstr(e.msg, "set aside"));
    assert_false(sum.complete);
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM jobs WHERE status='pending'"), 5);
    /* once it recovers, the same run resumes with the same jobs */
    fake_img_fail_always(bad, 0);
    assert_int_equal(px_gen_run(&s.o, &sum, &e), PX_OK);
    assert_true(sum.complete);
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM jobs"), 5);
    setup_free(&s);
    fake_img_stop(bad);
    fake_img_stop(good);
    fake_img_stop(slow);
}

static void test_backends_and_servers(void **state)
{
    (void)state;
    fake_img *f[4];
    for (int i = 0; i < 4; i++) {
        assert_int_equal(fake_img_start(96, 64, &f[i]), 0);
        /* long enough that every server gets work on a busy machine */
        fake_img_set_delay(f[i], 300);
    }
    const char *workflow =
        "{\"3\":{\"class_type\":\"KSampler\",\"inputs\":{\"seed\":\"%seed%\",\"steps\":\"%steps%\","
        "\"cfg\":\"%cfg%\",\"model\":[\"4\",0]}},"
        "\"6\":{\"class_type\":\"CLIPTextEncode\",\"inputs\":{\"text\":\"%prompt%\"}},"
        "\"7\":{\"class_type\":\"CLIPTextEncode\",\"inputs\":{\"text\":\"%negative%\"}},"
        "\"5\":{\"class_type\":\"EmptyLatentImage\",\"inputs\":{\"width\":\"%width%\",\"height\":\"%height%\"}}}";
    const int backends[3] = {PX_GEN_A1111, PX_GEN_OPENAI, PX_GEN_COMFYUI};
    for (int b = 0; b < 3; b++) {
        setup s;
        char name[32];
        snprintf(name, sizeof name, "backend-%d", b);
        setup_init(&s, name, "Technology and IT", PX_GEN_EXTERIORS, 16);
        for (int i = 0; i < 4; i++)
            s.servers[i] = fake_img_url(f[i]);
        s.o.nservers = 4;
        s.o.backend = backends[b];
        s.o.workflow = workflow;
        for (int i = 0; i < 4; i++) /* the OpenAI route carries our settings only on sd-server */
            fake_img_set_flavor(f[i], backends[b] == PX_GEN_OPENAI ? FAKE_IMG_SDCPP : FAKE_IMG_A1111);
        if (backends[b] == PX_GEN_OPENAI) /* sd-server renders sizes in multiples of 64 */
            s.c.render.width = 128;
        int r0[4];
        for (int i = 0; i < 4; i++)
            r0[i] = fake_img_renders(f[i]);
        px_gen_summary sum;
        px_err e;
        int st = px_gen_run(&s.o, &sum, &e);
        if (st != PX_OK) {
            char db[600], cmd[800];
            snprintf(db, sizeof db, "%s/manifest.sqlite", s.pool);
            snprintf(cmd, sizeof cmd, "sqlite3 %s 'select id, error from jobs limit 5'", db);
            if (system(cmd) != 0)
                printf("(sqlite3 not available)\n");
            fail_msg("%s: %s", px_gen_backend_name(backends[b]), e.msg);
        }
        assert_true(sum.complete);
        assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM images WHERE status='accepted'"), 16);
        for (int i = 0; i < 4; i++) /* work spread over every server */
            assert_true(fake_img_renders(f[i]) - r0[i] >= 2);
        /* seeds are recorded and unique */
        assert_int_equal(q1(s.pool, "SELECT COUNT(DISTINCT seed) FROM jobs"), q1(s.pool, "SELECT COUNT(*) FROM jobs"));
        if (b == 2) {
            /* rerender reproduces a stored image exactly */
            long long id = q1(s.pool, "SELECT MIN(id) FROM images WHERE status='accepted'");
            char out[512];
            snprintf(out, sizeof out, "%s/rerender.png", s.pool);
            int same = 0;
            assert_int_equal(px_gen_rerender(&s.o, id, out, &same, &e), PX_OK);
            assert_true(same);
            assert_int_equal(px_gen_rerender(&s.o, 99999, out, &same, &e), PX_ENOTFOUND);
        }
        setup_free(&s);
    }
    for (int i = 0; i < 4; i++)
        fake_img_stop(f[i]);
}

static void test_llm_writer(void **state)
{
    (void)state;
    fake_img *f;
    fake_llm *l;
    assert_int_equal(fake_img_start(96, 64, &f), 0);
    assert_int_equal(fake_llm_start(&l), 0);
    px_gen_llm_opts lo = px_gen_llm_opts_default();
    lo.url = fake_llm_url(l);
    lo.model = "fake-model";
    lo.api_key = "sk-test";
    lo.seed = 5;
    lo.retries = 3;
    lo.vocab_dir = PX_SOURCE_DIR "/vocab";
    px_gen_writer *w;
    px_err e;
    assert_int_equal(px_gen_writer_llm_create(&lo, &w, &e), PX_OK);
    /* a theme with no vocabulary works through the LLM; bad answers are retried */
    fake_llm_bad_next(l, 3, FAKE_LLM_PROSE);
    setup s;
    setup_init(&s, "llm", "Cosmic cats", PX_GEN_INTERIORS, 12);
    px_gen_writer_destroy(s.w);
    s.w = w;
    s.o.writer = w;
    s.servers[0] = fake_img_url(f);
    s.o.nservers = 1;
    px_gen_summary sum;
    int st = px_gen_run(&s.o, &sum, &e);
    if (st != PX_OK)
        fail_msg("%s", e.msg);
    assert_true(sum.complete);
    int req, bad;
    px_gen_writer_stats(w, &req, &bad);
    assert_int_equal(bad, 3);
    char *last = fake_llm_last_request(l);
    assert_non_null(strstr(last, "\"json_schema\""));
    assert_non_null(strstr(last, "Cosmic cats"));
    assert_non_null(strstr(last, "fake-model"));
    free(last);
    char auth[128];
    fake_llm_last_auth(l, auth, sizeof auth);
    assert_string_equal(auth, "Bearer sk-test");
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM prompts WHERE writer='llm'"), 12);
    assert_true(q1(s.pool, "SELECT COUNT(DISTINCT subtopic) FROM prompts") >= 2);
    /* fenced answers are fine too */
    fake_llm_set_mode(l, FAKE_LLM_FENCED);
    char **v;
    size_t n;
    assert_int_equal(px_gen_writer_write(w, "Cosmic cats", "cosmic-cats", 0, 5, &v, &n, NULL, 0, &e), PX_OK);
    assert_int_equal(n, 5);
    px_manifest_strings_free(v, n);
    /* always broken: a bounded number of tries, then a clear error */
    const int modes[] = {FAKE_LLM_WRONG, FAKE_LLM_BROKEN, FAKE_LLM_HTTP500};
    for (int i = 0; i < 3; i++) {
        fake_llm_set_mode(l, modes[i]);
        int r0 = fake_llm_requests(l);
        assert_true(px_gen_writer_write(w, "Cosmic cats", "cosmic-cats", 0, 5, &v, &n, NULL, 0, &e) != PX_OK);
        assert_int_equal(fake_llm_requests(l) - r0, 4);
        assert_non_null(strstr(e.msg, "4 tries"));
    }
    setup_free(&s);

    /* a repetitive LLM: duplicates dropped and counted, the run ends */
    fake_llm_set_mode(l, FAKE_LLM_REPEAT);
    assert_int_equal(px_gen_writer_llm_create(&lo, &w, &e), PX_OK);
    setup_init(&s, "llm-repeat", "Cosmic dogs", PX_GEN_INTERIORS, 10);
    px_gen_writer_destroy(s.w);
    s.w = w;
    s.o.writer = w;
    s.servers[0] = fake_img_url(f);
    s.o.nservers = 1;
    assert_int_equal(px_gen_run(&s.o, &sum, &e), PX_OK);
    assert_false(sum.complete);
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM prompts"), 2);
    assert_true(sum.prompts_dup >= 18); /* 10 dry batches of 2 repeats each, and more */
    assert_true(sum.prompts_dup < sum.prompts_written);
    setup_free(&s);
    /* an LLM that is down: the run stops with its error */
    fake_llm_set_mode(l, FAKE_LLM_HTTP500);
    assert_int_equal(px_gen_writer_llm_create(&lo, &w, &e), PX_OK);
    setup_init(&s, "llm-down", "Cosmic owls", PX_GEN_INTERIORS, 3);
    px_gen_writer_destroy(s.w);
    s.w = w;
    s.o.writer = w;
    s.servers[0] = fake_img_url(f);
    s.o.nservers = 1;
    assert_true(px_gen_run(&s.o, &sum, &e) != PX_OK);
    assert_non_null(strstr(e.msg, "HTTP 500"));
    setup_free(&s);
    fake_llm_stop(l);
    fake_img_stop(f);
}

/* The window between the rename and the commit: a finished file whose job is still
 * pending. Made by hand here (deterministically), then the run must adopt the file, not
 * render it again. */
static void test_orphan_adopted(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(96, 64, &f), 0);
    setup s;
    setup_init(&s, "orphan", "Travel and tourism", PX_GEN_EXTERIORS, 3);
    s.servers[0] = fake_img_url(f);
    s.o.nservers = 1;
    px_gen_summary sum;
    px_err e;
    assert_int_equal(px_gen_run(&s.o, &sum, &e), PX_OK);
    long long id = q1(s.pool, "SELECT MAX(id) FROM images");
    char sha_before[65] = "", db[600], sql[256];
    snprintf(db, sizeof db, "%s/manifest.sqlite", s.pool);
    sqlite3 *h;
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    sqlite3_stmt *st;
    snprintf(sql, sizeof sql, "SELECT sha256 FROM images WHERE id=%lld", id);
    assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    snprintf(sha_before, sizeof sha_before, "%s", sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    snprintf(sql, sizeof sql,
             "DELETE FROM images WHERE id=%lld; UPDATE jobs SET status='running' WHERE id=%lld",
             id, id);
    assert_int_equal(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
    int renders = fake_img_renders(f);
    sleep(1); /* a re-encoded file would carry a new created_at: the bytes must not change */
    assert_int_equal(px_gen_run(&s.o, &sum, &e), PX_OK);
    assert_true(sum.complete);
    assert_int_equal(fake_img_renders(f), renders); /* adopted, not rendered */
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM images WHERE status='accepted'"), 3);
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM images WHERE id=%lld AND sha256='%s'", id,
             sha_before);
    assert_int_equal(q1(s.pool, sql), 1); /* the same bytes */
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM jobs"),
                     3 + q1(s.pool, "SELECT COUNT(*) FROM images WHERE status='rejected'"));
    setup_free(&s);
    fake_img_stop(f);
}

/* Pool files as JPEG: metadata in EXIF/XMP, sha256 of the file recorded, an
 * orphan adopted even when the resumed run asks for another format, and the
 * CLI's --rerender writing the stored format and matching it exactly. */
static void test_pool_formats(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(96, 64, &f), 0);
    setup s;
    setup_init(&s, "formats", "Food and hospitality", PX_GEN_ITEMS, 4);
    s.servers[0] = fake_img_url(f);
    s.o.nservers = 1;
    s.o.format = PX_FMT_JPEG;
    s.o.quality = 85;
    px_gen_summary sum;
    px_err e;
    assert_int_equal(px_gen_run(&s.o, &sum, &e), PX_OK);
    assert_true(sum.complete);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/food-and-hospitality/items", s.pool);
    int tmp = 0;
    assert_int_equal(count_files(dir, ".jpg", &tmp), 4);
    assert_int_equal(count_files(dir, ".png", NULL), 0);
    assert_int_equal(tmp, 0);
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM images WHERE path LIKE '%.jpg' AND "
                                "status!='rejected'"), 4);
    assert_int_equal(q1(s.pool, "SELECT COUNT(*) FROM images WHERE path NOT LIKE '%.jpg'"), 0);
    px_manifest *db;
    char dbp[600];
    snprintf(dbp, sizeof dbp, "%s/manifest.sqlite", s.pool);
    assert_int_equal(px_manifest_open(dbp, 1, &db, &e), PX_OK);
    long long id = q1(s.pool, "SELECT MAX(id) FROM images");
    px_manifest_image img;
    assert_int_equal(px_manifest_get_image(db, id, &img, &e), PX_OK);
    px_manifest_close(db);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", s.pool, img.path);
    uint8_t *data;
    size_t len;
    assert_int_equal(px_read_file(path, 1 << 24, &data, &len, &e), PX_OK);
    assert_int_equal(data[0], 0xFF);
    char sha[65], *params, *json, seedtxt[64];
    px_gen_sha256_hex(data, len, sha);
    assert_string_equal(sha, img.sha256);
    assert_int_equal(px_image_meta_read(data, len, PX_META_PARAMETERS, &params, &e), PX_OK);
    assert_int_equal(px_image_meta_read(data, len, PX_META_JSON, &json, &e), PX_OK);
    snprintf(seedtxt, sizeof seedtxt, "Seed: %lld,", (long long)img.seed);
    assert_non_null(strstr(params, seedtxt));
    assert_memory_equal(params, img.prompt, strlen(img.prompt));
    json_t *m = json_loads(json, 0, NULL);
    assert_non_null(m);
    assert_int_equal(json_integer_value(json_object_get(m, "id")), id);
    json_decref(m);
    free(params);
    free(json);
    free(data);
    px_manifest_image_clear(&img);

    /* killed between rename and commit; the resumed run asks for WebP */
    char sql[256];
    snprintf(sql, sizeof sql,
             "DELETE FROM images WHERE id=%lld; UPDATE jobs SET status='running' WHERE id=%lld", id,
             id);
    sqlite3 *h;
    assert_int_equal(sqlite3_open(dbp, &h), SQLITE_OK);
    assert_int_equal(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);
    int renders = fake_img_renders(f);
    s.o.format = PX_FMT_WEBP;
    assert_int_equal(px_gen_run(&s.o, &sum, &e), PX_OK);
    assert_int_equal(fake_img_renders(f), renders);
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM images WHERE id=%lld AND sha256='%s' AND path "
             "LIKE '%%.jpg'", id, sha);
    assert_int_equal(q1(s.pool, sql), 1);
    assert_int_equal(count_files(dir, ".webp", NULL), 0);

    /* the CLI: --rerender into the stored format (and the same quality) is identical */
    char cmd[1600], out[700];
    snprintf(out, sizeof out, "%s/rerender.txt", g_tmp);
    snprintf(cmd, sizeof cmd, "'%s' generate --rerender %lld --out '%s' --server '%s' --quality 85 "
             "> '%s' 2>&1", PX_PIXPIPE_BIN, id, s.pool, fake_img_url(f), out);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(px_read_file(out, 1 << 16, &data, &len, &e), PX_OK);
    char *txt = strndup((const char *)data, len);
    free(data);
    snprintf(path, sizeof path, "rerender-%lld.jpg: identical", id);
    if (!strstr(txt, path))
        fail_msg("rerender said: %s", txt);
    free(txt);
    /* a format the pool cannot write is a usage error naming the option */
    snprintf(cmd, sizeof cmd, "'%s' generate --theme x --type items --count 1 --out '%s/never' "
             "--format gif > '%s' 2>&1", PX_PIXPIPE_BIN, g_tmp, out);
    int rc = system(cmd);
    assert_true(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    assert_int_equal(px_read_file(out, 1 << 16, &data, &len, &e), PX_OK);
    txt = strndup((const char *)data, len);
    free(data);
    assert_non_null(strstr(txt, "--format 'gif'"));
    free(txt);
    setup_free(&s);
    fake_img_stop(f);
}

/* An installed pixpipe (cmake --install into a fresh prefix) run from another
 * folder finds its vocabularies, styles, shipped campaigns and face model under
 * PREFIX/share/pixpipe, not in the source tree it was built from. */
/* A text file's contents (malloc'd); fails the test when unreadable. */
static char *slurp(const char *path)
{
    uint8_t *data;
    size_t len;
    px_err e;
    if (px_read_file(path, 1 << 20, &data, &len, &e) != PX_OK)
        fail_msg("%s", e.msg);
    char *t = strndup((const char *)data, len);
    free(data);
    return t;
}

/* Fails the test unless the file at path contains want. */
static void file_has(const char *path, const char *want)
{
    char *t = slurp(path);
    if (!strstr(t, want))
        fail_msg("expected \"%s\" in:\n%s", want, t);
    free(t);
}

static void test_installed_layout(void **state)
{
    (void)state;
    char prefix[600], cmd[3000], log[700], pool[700];
    snprintf(prefix, sizeof prefix, "%s/inst", g_tmp);
    snprintf(log, sizeof log, "%s/inst.log", g_tmp);
    snprintf(cmd, sizeof cmd, "'%s' --install '%s' --prefix '%s' > '%s' 2>&1", PX_CMAKE,
             PX_BINARY_DIR, prefix, log);
    assert_int_equal(system(cmd), 0);
    char share[700], real[PATH_MAX];
    snprintf(share, sizeof share, "%s/share/pixpipe", prefix);
    assert_non_null(realpath(share, real));
    /* --help names the installed data folder */
    snprintf(cmd, sizeof cmd, "cd / && env -u PIXPIPE_DATA_DIR -u PIXPIPE_MODEL_DIR '%s/bin/pixpipe' "
             "generate --help > '%s' 2>&1", prefix, log);
    assert_int_equal(system(cmd), 0);
    char want[PATH_MAX + 32];
    snprintf(want, sizeof want, "(default %s/vocab)", real);
    file_has(log, want);
    /* a real batch with the face check on, from / */
    fake_img *f;
    assert_int_equal(fake_img_start(96, 64, &f), 0);
    snprintf(pool, sizeof pool, "%s/instpool", g_tmp);
    snprintf(cmd, sizeof cmd, "cd / && env -u PIXPIPE_DATA_DIR -u PIXPIPE_MODEL_DIR '%s/bin/pixpipe' "
             "generate --theme 'Retail and marketing' --type items --count 3 --out '%s' --server "
             "'%s' --width 96 --height 64 --progress none --format webp > '%s' 2>&1", prefix, pool,
             fake_img_url(f), log);
    int rc = system(cmd);
    if (rc != 0)
        fail_msg("installed generate failed:\n%s", slurp(log));
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM images WHERE status='accepted' AND path LIKE "
                              "'retail-and-marketing/items/%.webp'"), 3);
    /* the face model comes from PREFIX/share/pixpipe/models too */
    snprintf(cmd, sizeof cmd, "cd / && env -u PIXPIPE_MODEL_DIR '%s/bin/pixpipe' anonymize -v "
             "-o '%s/anon.png' '%s/retail-and-marketing/items/%lld.webp' > '%s' 2>&1", prefix,
             g_tmp, pool, q1(pool, "SELECT MIN(id) FROM images"), log);
    assert_int_equal(system(cmd), 0);
    snprintf(want, sizeof want, "model %s/bin/../share/pixpipe/models/", prefix);
    file_has(log, want);
    /* a shipped campaign by name resolves into the installed campaigns/ */
    snprintf(cmd, sizeof cmd, "cd / && '%s/bin/pixpipe' generate --campaign nosuch --out '%s/x' "
             "> '%s' 2>&1", prefix, g_tmp, log);
    assert_int_not_equal(system(cmd), 0);
    snprintf(want, sizeof want, "%s/campaigns/nosuch.json", real);
    file_has(log, want);
    fake_img_stop(f);
}

static pid_t spawn_generate(const char *pool, const char *server, int count, const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        FILE *o = freopen(log, "w", stdout);
        FILE *e2 = freopen(log, "a", stderr);
        (void)o;
        (void)e2;
        char cnt[16];
        snprintf(cnt, sizeof cnt, "%d", count);
        execl(PX_PIXPIPE_BIN, "pixpipe", "generate", "--theme", "Finance and banking", "--type",
              "items", "--count", cnt, "--out", pool, "--server", server, "--server", server,
              "--faces", "off", "--width", "96", "--height", "64", "--progress", "plain",
              (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* "Disk full": the child may not write files larger than fsize bytes (RLIMIT_FSIZE makes
 * write() fail with EFBIG, as ENOSPC would). Returns the exit status. */
static int run_limited(const char *pool, const char *server, int count, long fsize, const char *log,
                       const char *extra)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (!freopen(log, "w", stderr))
            _exit(126);
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {(rlim_t)fsize, (rlim_t)fsize};
        setrlimit(RLIMIT_FSIZE, &rl);
        char cnt[16];
        snprintf(cnt, sizeof cnt, "%d", count);
        execl(PX_PIXPIPE_BIN, "pixpipe", "generate", "--theme", "Food and hospitality", "--type",
              "interiors", "--count", cnt, "--out", pool, "--server", server, "--faces", "off",
              "--width", "1024", "--height", "768", "--progress", "none", "-q", extra, (char *)NULL);
        _exit(127);
    }
    int ws;
    waitpid(pid, &ws, 0);
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

static void test_disk_full(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(1024, 768, &f), 0);
    char pool[256], log[300];
    make_pool(pool, sizeof pool, "diskfull");
    snprintf(log, sizeof log, "%s/diskfull.log", g_tmp);
    /* jobs first, recorded while nothing renders (an unreachable server is set aside) */
    assert_int_equal(run_limited(pool, "http://127.0.0.1:1", 4, 1L << 30, log,
                                 "--server-failures=1"),
                     1);
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM jobs WHERE status='pending'"), 4);
    /* 64 kB per file: the manifest's small writes fit, a 1024x768 image does not */
    int rc = run_limited(pool, fake_img_url(f), 4, 65536, log, "--max-attempts=3");
    assert_true(rc == 1 || rc == 3);
    uint8_t *msg;
    size_t len;
    px_err e;
    assert_int_equal(px_read_file(log, 1 << 20, &msg, &len, &e), PX_OK);
    msg = realloc(msg, len + 1);
    msg[len] = '\0';
    if ((!strstr((char *)msg, "File too large") && !strstr((char *)msg, "disk I/O error")) ||
        !strstr((char *)msg, pool))
        fail_msg("message does not name the file and the cause: %s", (char *)msg);
    printf("disk full reported as: %s", (char *)msg);
    free(msg);
    /* consistent: a file for every image row and none without, no temporary files, the rest
     * of the jobs still pending */
    int tmp = 0;
    assert_int_equal(count_files(pool, ".png", &tmp), q1(pool, "SELECT COUNT(*) FROM images"));
    assert_int_equal(tmp, 0);
    assert_true(q1(pool, "SELECT COUNT(*) FROM images") < 4);
    assert_true(q1(pool, "SELECT COUNT(*) FROM jobs WHERE status='pending'") >= 1);
    /* with room again, the same command completes */
    assert_int_equal(run_limited(pool, fake_img_url(f), 4, 1L << 30, log, "--max-attempts=3"), 0);
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM images WHERE status='accepted'"), 4);
    /* no job burnt by the disk error: any job beyond the 4 replaces an image the checks
     * rejected (the fake now and then draws a near-uniform one) */
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM jobs"),
                     4 + q1(pool, "SELECT COUNT(*) FROM images WHERE status='rejected'"));
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM jobs WHERE status='failed'"), 0);
    fake_img_stop(f);
}

static void test_resume_after_kill9(void **state)
{
    (void)state;
    fake_img *f;
    assert_int_equal(fake_img_start(96, 64, &f), 0);
    fake_img_set_delay(f, 40);
    char pool[256], log[300];
    make_pool(pool, sizeof pool, "kill9");
    snprintf(log, sizeof log, "%s/kill9.log", g_tmp);
    const int N = 60;
    pid_t pid = spawn_generate(pool, fake_img_url(f), N, log);
    assert_true(pid > 0);
    /* let it record some images, then kill it without warning */
    const double end = px_test_now_ms() + px_test_ms(20000);
    while (q1(pool, "SELECT COUNT(*) FROM images") < 15 && px_test_now_ms() < end)
        px_test_sleep_ms(20);
    kill(pid, SIGKILL);
    int ws;
    waitpid(pid, &ws, 0);
    assert_true(WIFSIGNALED(ws));
    long long done_before = q1(pool, "SELECT COUNT(*) FROM images");
    assert_true(done_before >= 15 && done_before < N);
    int renders_before = fake_img_renders(f);
    /* the same command again finishes the job */
    pid = spawn_generate(pool, fake_img_url(f), N, log);
    waitpid(pid, &ws, 0);
    assert_true(WIFEXITED(ws));
    if (WEXITSTATUS(ws) != 0) {
        char cmd[400];
        snprintf(cmd, sizeof cmd, "cat %s", log);
        assert_int_equal(system(cmd), 0);
        fail_msg("resume exited %d", WEXITSTATUS(ws));
    }
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM images WHERE status='accepted'"), N);
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM images WHERE status='rejected'"), 0);
    /* nothing lost, nothing twice: one image per job, every seed once, files = rows */
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM jobs"), N);
    assert_int_equal(q1(pool, "SELECT COUNT(DISTINCT seed) FROM jobs"), N);
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM prompts"), N);
    int tmp = 0;
    char dir[400];
    snprintf(dir, sizeof dir, "%s/finance-and-banking/items", pool);
    assert_int_equal(count_files(dir, ".png", &tmp), N);
    assert_int_equal(tmp, 0);
    /* only what was in flight at the kill (2 servers) was rendered again */
    int renders = fake_img_renders(f);
    assert_true(renders <= N + 2);
    assert_true(renders >= N);
    assert_true(renders_before >= done_before);
    assert_true(fake_img_distinct_seeds(f) == N);
    fake_img_stop(f);
}

static int setup_tmp(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/px_gen_it_XXXXXX");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    /* PX_TEST_FILTER: run only the tests whose name matches (cmocka's * and ? wildcards) */
    if (getenv("PX_TEST_FILTER"))
        cmocka_set_test_filter(getenv("PX_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_quotas_campaign),
        cmocka_unit_test(test_rejected_replaced_and_faces),
        cmocka_unit_test(test_server_failures),
        cmocka_unit_test(test_backends_and_servers),
        cmocka_unit_test(test_llm_writer),
        cmocka_unit_test(test_orphan_adopted),
        cmocka_unit_test(test_pool_formats),
        cmocka_unit_test(test_installed_layout),
        cmocka_unit_test(test_resume_after_kill9),
        cmocka_unit_test(test_disk_full),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
