/*
 * `pixpipe generate --backend local` end to end on the golden tiny
 * SD-1.5-shaped model (../shared/golden/sd: diffusers folder, its own tiny
 * tokenizer/), rendering in-process at 64x64 with a few steps so each image
 * takes a fraction of a second: a two-theme campaign (two workers sharing
 * the model) meets its quotas; the manifest rows say backend, model
 * "name [hash]" (hash = first 10 hex digits of the UNet file's SHA-256, as
 * A1111 writes it), seed, steps, cfg, sampler and size; every PNG carries
 * the A1111 parameters text and our JSON with the same values; --rerender
 * with the recorded job gives the same pixels (the seed recorded is the
 * seed used); a run killed with SIGKILL resumes to exactly the quota with
 * no job, seed or image twice. In-process: the campaign's render settings
 * as the model resolves them (3:2 native size when none is given,
 * rounding, sampler names), a render's report of what it used, its
 * determinism and cancelling, and option errors.
 *
 * The automatic checks stay on except faces (no face model needed); random
 * tiny-model images may now and then be rejected (e.g. as phash
 * near-duplicates), so counts of jobs allow for rejected images, which get
 * their own rows and replacement jobs. Waits are for events with generous
 * deadlines (px_test.h); nothing asserts on time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "app/commands.h"
#include "gen/gen_internal.h"
#include "gen/px_gen.h"
#include "image/px_image.h"
#include "px_test.h"

#define GOLDEN PX_SHARED_DIR "/golden/sd"

static char g_tmp[64];
static char g_hash[11]; /* the tiny model's A1111 hash, computed here from the file */

/* ---- helpers ----------------------------------------------------------------- */

/* One integer from SQL on the pool's manifest (-1 when the query fails). */
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

static void write_text(const char *path, const char *text)
{
    px_err e;
    if (px_write_file_atomic(path, text, strlen(text), &e) != PX_OK)
        fail_msg("%s", e.msg);
}

/* Counts *.png below dir (recursive); *tmp counts *.tmp.* files. */
static int count_png(const char *dir, int *tmp)
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
        size_t l = strlen(e->d_name);
        if (S_ISDIR(st.st_mode))
            n += count_png(p, tmp);
        else if (l > 4 && !strcmp(e->d_name + l - 4, ".png"))
            n++;
        if (strstr(e->d_name, ".tmp."))
            (*tmp)++;
    }
    closedir(d);
    return n;
}

/* Runs pixpipe with args (shell words), stdout and stderr into log; returns its exit status. */
static int run_pixpipe(const char *args, const char *log)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s > '%s' 2>&1", PX_PIXPIPE_BIN, args, log);
    int ws = system(cmd);
    return WIFEXITED(ws) ? WEXITSTATUS(ws) : 128 + WTERMSIG(ws);
}

#define LOCAL_ARGS "--backend local --model '" GOLDEN "' --tokenizer '" GOLDEN "/tokenizer'"

/* ---- quotas, manifest, metadata, rerender --------------------------------------- */

/* Checks one pool file against its job row: PNG, 64x64, both metadata texts. */
static void check_image_file(const char *pool, long long id, const char *rel, long long seed)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", pool, rel);
    uint8_t *d;
    size_t n;
    px_err e;
    if (px_read_file(path, 16 << 20, &d, &n, &e) != PX_OK)
        fail_msg("%s", e.msg);
    px_image img;
    assert_int_equal(px_gen_decode(d, n, 0, &img, &e), PX_OK);
    assert_int_equal(img.w, 64);
    assert_int_equal(img.h, 64);
    px_image_free(&img);
    char *params = NULL, *js = NULL;
    assert_int_equal(px_image_meta_read(d, n, PX_META_PARAMETERS, &params, &e), PX_OK);
    assert_int_equal(px_image_meta_read(d, n, PX_META_JSON, &js, &e), PX_OK);
    char want[300];
    snprintf(want, sizeof want,
             "\nSteps: 3, Sampler: Euler a, CFG scale: 5, Seed: %lld, Size: 64x64, "
             "Model hash: %s, Model: sd",
             seed, g_hash);
    if (!strstr(params, want))
        fail_msg("image %lld: expected \"%s\" in the parameters:\n%s", id, want, params);
    json_t *j = json_loads(js, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "id")), id);
    assert_int_equal(json_integer_value(json_object_get(j, "seed")), seed);
    assert_int_equal(json_integer_value(json_object_get(j, "steps")), 3);
    assert_int_equal(json_integer_value(json_object_get(j, "width")), 64);
    assert_string_equal(json_string_value(json_object_get(j, "backend")), "local");
    assert_string_equal(json_string_value(json_object_get(j, "sampler")), "Euler a");
    assert_string_equal(json_string_value(json_object_get(j, "model_hash")), g_hash);
    json_decref(j);
    free(params);
    free(js);
    free(d);
}

static void test_local_campaign(void **state)
{
    (void)state;
    char pool[256], camp[256], log[256], args[2048], sql[512];
    snprintf(pool, sizeof pool, "%s/campaign", g_tmp);
    snprintf(camp, sizeof camp, "%s/campaign.json", g_tmp);
    snprintf(log, sizeof log, "%s/campaign.log", g_tmp);
    write_text(camp, "{\"name\": \"local\", \"total\": 4, \"types\": {\"interiors\": 100},"
                     " \"themes\": [\"Business and office\", \"Finance and banking\"],"
                     " \"defaults\": {\"width\": 64, \"height\": 64, \"steps\": 3, \"cfg\": 5,"
                     " \"sampler\": \"Euler a\"}}");
    snprintf(args, sizeof args,
             "generate " LOCAL_ARGS " --campaign '%s' --out '%s' --faces off --threads 2 "
             "--per-server 2 --progress plain",
             camp, pool);
    /* two workers share the one model (renders take turns on it) */
    int rc = run_pixpipe(args, log);
    if (rc != 0)
        fail_msg("generate exited %d:\n%s", rc, slurp(log));
    char want[64];
    snprintf(want, sizeof want, "local model sd [%s], 2 threads", g_hash);
    file_has(log, want);
    /* quotas met: two good images per theme */
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM images WHERE theme_slug='business-and-office' "
                              "AND type='interiors' AND status IN ('accepted','flagged')"), 2);
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM images WHERE theme_slug='finance-and-banking' "
                              "AND type='interiors' AND status IN ('accepted','flagged')"), 2);
    /* every job says what was rendered: the local model by name and hash, the settings */
    long long jobs = q1(pool, "SELECT COUNT(*) FROM jobs");
    assert_true(jobs >= 4);
    snprintf(sql, sizeof sql,
             "SELECT COUNT(*) FROM jobs WHERE backend='local' AND model='sd [%s]' AND width=64 "
             "AND height=64 AND steps=3 AND cfg=5 AND sampler='Euler a' AND status='done' AND "
             "server='local' AND seed=id",
             g_hash);
    assert_int_equal(q1(pool, sql), jobs);
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM images"), jobs);
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM images WHERE width=64 AND height=64"), jobs);
    /* every file carries the parameters and JSON of its job */
    char db[400];
    snprintf(db, sizeof db, "%s/manifest.sqlite", pool);
    sqlite3 *h;
    assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(h, "SELECT i.id, i.path, j.seed FROM images i JOIN jobs j "
                                           "ON j.id = i.job_id ORDER BY i.id", -1, &st, NULL),
                     SQLITE_OK);
    int files = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        check_image_file(pool, sqlite3_column_int64(st, 0),
                         (const char *)sqlite3_column_text(st, 1), sqlite3_column_int64(st, 2));
        files++;
    }
    sqlite3_finalize(st);
    sqlite3_close(h);
    assert_int_equal(files, jobs);
    /* the recorded seed and settings give the same pixels again */
    snprintf(args, sizeof args,
             "generate " LOCAL_ARGS " --rerender %lld --out '%s' -o '%s/again.png'",
             q1(pool, "SELECT MIN(id) FROM images"), pool, g_tmp);
    rc = run_pixpipe(args, log);
    if (rc != 0)
        fail_msg("rerender exited %d:\n%s", rc, slurp(log));
    file_has(log, "identical to the stored image");
}

/* ---- settings resolved by the model, in-process ------------------------------------ */

static px_gen_local *load_local(void)
{
    px_gen_local_opts lo = {.model = GOLDEN, .tokenizer = GOLDEN "/tokenizer", .threads = 2};
    px_gen_local *l = NULL;
    px_err e;
    if (px_gen_local_create(&lo, &l, &e) != PX_OK)
        fail_msg("%s", e.msg);
    return l;
}

static void test_local_settings(void **state)
{
    (void)state;
    px_gen_local *l = load_local();
    assert_string_equal(px_gen_local_name(l), "sd");
    assert_string_equal(px_gen_local_hash(l), g_hash);
    px_gen_campaign c;
    px_err e;
    assert_int_equal(px_gen_campaign_single("Business and office", 0, 1, &c, &e), PX_OK);
    /* no size given: the native 512 in 3:2 landscape; the campaign's sampler by its A1111 name */
    px_gen_render_defaults r = c.render;
    char note[600];
    assert_int_equal(px_gen_local_resolve(l, &r, note, sizeof note, &e), PX_OK);
    assert_int_equal(r.width, 768);
    assert_int_equal(r.height, 512);
    assert_string_equal(r.sampler, "DPM++ 2M Karras");
    char title[64];
    snprintf(title, sizeof title, "sd [%s]", g_hash);
    assert_string_equal(r.model, title);
    assert_string_equal(note, "");
    /* one side given: the other in the same shape (200 -> 133); sides round to the model's
     * multiple and say so (16 here: the tiny UNet halves its latent once; 64 for SD 1.5) */
    r = c.render;
    r.width = 200;
    r.size_set = 1;
    snprintf(r.sampler, sizeof r.sampler, "euler_ancestral");
    assert_int_equal(px_gen_local_resolve(l, &r, note, sizeof note, &e), PX_OK);
    assert_int_equal(r.width, 208);
    assert_int_equal(r.height, 128);
    assert_string_equal(r.sampler, "Euler a");
    assert_non_null(strstr(note, "200x133 is not a multiple of 16 a side: rendering 208x128"));
    r = c.render;
    r.height = 96;
    r.size_set = 2;
    assert_int_equal(px_gen_local_resolve(l, &r, note, sizeof note, &e), PX_OK);
    assert_int_equal(r.width, 144);
    assert_int_equal(r.height, 96);
    assert_string_equal(note, "");
    /* an unknown sampler is refused with the names that work */
    r = c.render;
    snprintf(r.sampler, sizeof r.sampler, "DDIM");
    assert_int_equal(px_gen_local_resolve(l, &r, note, sizeof note, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "sampler 'DDIM'"));
    assert_non_null(strstr(e.msg, "\"Euler a\""));
    px_gen_campaign_free(&c);

    /* A1111, ComfyUI and our names */
    static const struct {
        const char *name, *ours;
        int karras;
    } k_map[] = {{"Euler", "euler", 0},          {"Euler a", "euler_a", 0},
                 {"DPM++ 2M", "dpmpp_2m", 0},    {"DPM++ 2M Karras", "dpmpp_2m", 1},
                 {"dpmpp_2m_karras", "dpmpp_2m", 1}, {"Euler Karras", "euler", 1},
                 {"LCM", "lcm", 0},              {"euler_ancestral", "euler_a", 0}};
    for (size_t i = 0; i < sizeof k_map / sizeof k_map[0]; i++) {
        const char *ours = NULL;
        int karras = -1;
        assert_int_equal(px_gen_local_sampler(k_map[i].name, &ours, &karras, &e), PX_OK);
        assert_string_equal(ours, k_map[i].ours);
        assert_int_equal(karras, k_map[i].karras);
    }
    const char *ours;
    int karras;
    assert_int_equal(px_gen_local_sampler("LCM Karras", &ours, &karras, &e), PX_EINVAL);
    assert_int_equal(px_gen_local_sampler("Heun", &ours, &karras, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "sampler 'Heun'"));
    px_gen_local_destroy(l);
}

/* Cancels after the first step. */
static int cancel_now(void *arg, int step, int steps)
{
    assert_int_equal(step, 1);
    assert_int_equal(steps, 2);
    (*(int *)arg)++;
    return 1;
}

/* A render reports what it used; the same request gives the same bytes; a
 * cancel stops it between steps. */
static void test_local_render(void **state)
{
    (void)state;
    px_gen_local *l = load_local();
    px_gen_render_req req = {.prompt = "a quiet office with plants", .negative = "blurry",
                             .seed = 1234, .width = 70, .height = 64, .steps = 2, .cfg = 6,
                             .sampler = "DPM++ 2M Karras"};
    px_image a, b;
    px_gen_local_used u;
    px_err e;
    if (px_gen_local_render(l, &req, NULL, NULL, &a, &u, &e) != PX_OK)
        fail_msg("%s", e.msg);
    assert_int_equal(u.seed, 1234);
    assert_int_equal(u.width, 64); /* 70 rounds to 64 */
    assert_int_equal(u.steps, 2);
    assert_string_equal(u.sampler, "DPM++ 2M Karras");
    assert_int_equal(a.w, 64);
    assert_int_equal(px_gen_local_render(l, &req, NULL, NULL, &b, NULL, &e), PX_OK);
    assert_memory_equal(a.px, b.px, (size_t)64 * 64 * 3);
    px_image_free(&b);
    req.seed = 1235;
    assert_int_equal(px_gen_local_render(l, &req, NULL, NULL, &b, NULL, &e), PX_OK);
    assert_true(memcmp(a.px, b.px, (size_t)64 * 64 * 3) != 0);
    px_image_free(&a);
    px_image_free(&b);
    int calls = 0;
    assert_int_equal(px_gen_local_render(l, &req, cancel_now, &calls, &a, NULL, &e), PX_ECLOSED);
    assert_int_equal(calls, 1);
    assert_null(a.px);
    req.sampler = "DDIM";
    assert_int_equal(px_gen_local_render(l, &req, NULL, NULL, &a, NULL, &e), PX_EINVAL);
    req.sampler = "Euler";
    req.seed = -1;
    assert_int_equal(px_gen_local_render(l, &req, NULL, NULL, &a, NULL, &e), PX_EINVAL);
    px_gen_local_destroy(l);
}

/* ---- option errors ----------------------------------------------------------------- */

static void test_local_option_errors(void **state)
{
    (void)state;
    char pool[256], log[256], args[2048];
    snprintf(pool, sizeof pool, "%s/opts", g_tmp);
    snprintf(log, sizeof log, "%s/opts.log", g_tmp);
    const char *batch = "--theme 'Business and office' --type interiors --count 1 --faces off";
    snprintf(args, sizeof args, "generate --backend local %s --out '%s'", batch, pool);
    assert_int_equal(run_pixpipe(args, log), PX_EXIT_USAGE);
    file_has(log, "--backend local needs --model PATH");
    snprintf(args, sizeof args, "generate " LOCAL_ARGS " --server http://127.0.0.1:1 %s --out '%s'",
             batch, pool);
    assert_int_equal(run_pixpipe(args, log), PX_EXIT_USAGE);
    file_has(log, "--server is for a1111, openai and comfyui");
    snprintf(args, sizeof args, "generate --tokenizer '%s/tokenizer' %s --out '%s'", GOLDEN, batch,
             pool);
    assert_int_equal(run_pixpipe(args, log), PX_EXIT_USAGE);
    file_has(log, "are for --backend local");
    /* refused before anything is recorded */
    snprintf(args, sizeof args, "generate " LOCAL_ARGS " --sampler DDIM %s --out '%s'", batch,
             pool);
    assert_int_equal(run_pixpipe(args, log), PX_EXIT_SETUP);
    file_has(log, "sampler 'DDIM'");
    assert_true(q1(pool, "SELECT COUNT(*) FROM jobs") <= 0);
    snprintf(args, sizeof args, "generate --backend local --model '%s/nosuch' %s --out '%s'",
             g_tmp, batch, pool);
    assert_int_equal(run_pixpipe(args, log), PX_EXIT_SETUP);
    file_has(log, "nosuch");
}

/* ---- kill -9 and resume ------------------------------------------------------------ */

#define KILL_N 24 /* images of the kill test: 12 per theme */

static pid_t spawn_generate(const char *pool, const char *camp, const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        FILE *o = freopen(log, "a", stdout);
        FILE *e2 = freopen(log, "a", stderr);
        (void)o;
        (void)e2;
        execl(PX_PIXPIPE_BIN, "pixpipe", "generate", "--backend", "local", "--model", GOLDEN,
              "--tokenizer", GOLDEN "/tokenizer", "--campaign", camp, "--out", pool, "--faces",
              "off", "--progress", "plain", "--seed", "1000", (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void test_local_resume_after_kill9(void **state)
{
    (void)state;
    char pool[256], camp[256], log[256], json[600];
    snprintf(pool, sizeof pool, "%s/kill9", g_tmp);
    snprintf(camp, sizeof camp, "%s/kill9.json", g_tmp);
    snprintf(log, sizeof log, "%s/kill9.log", g_tmp);
    /* more steps than the other tests so that the run lasts long enough to be killed midway */
    snprintf(json, sizeof json,
             "{\"name\": \"kill9\", \"total\": %d, \"types\": {\"interiors\": 100},"
             " \"themes\": [\"Business and office\", \"Finance and banking\"],"
             " \"defaults\": {\"width\": 64, \"height\": 64, \"steps\": 12, \"cfg\": 5,"
             " \"sampler\": \"DPM++ 2M Karras\"}}",
             KILL_N);
    write_text(camp, json);
    pid_t pid = spawn_generate(pool, camp, log);
    assert_true(pid > 0);
    const double end = px_test_now_ms() + px_test_ms(60000);
    while (q1(pool, "SELECT COUNT(*) FROM images") < 3 && px_test_now_ms() < end)
        px_test_sleep_ms(5);
    kill(pid, SIGKILL);
    int ws;
    waitpid(pid, &ws, 0);
    assert_true(WIFSIGNALED(ws));
    long long before = q1(pool, "SELECT COUNT(*) FROM images");
    if (before < 3 || before >= KILL_N)
        fail_msg("killed with %lld images recorded (wanted 3..%d):\n%s", before, KILL_N - 1,
                 slurp(log));
    assert_true(q1(pool, "SELECT COUNT(*) FROM jobs WHERE status='running'") <= 1);
    /* the same command again finishes the campaign */
    pid = spawn_generate(pool, camp, log);
    waitpid(pid, &ws, 0);
    assert_true(WIFEXITED(ws));
    if (WEXITSTATUS(ws) != 0)
        fail_msg("resume exited %d:\n%s", WEXITSTATUS(ws), slurp(log));
    /* exactly the quota, per theme and in all */
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM images WHERE theme_slug='business-and-office' "
                              "AND status IN ('accepted','flagged')"), KILL_N / 2);
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM images WHERE theme_slug='finance-and-banking' "
                              "AND status IN ('accepted','flagged')"), KILL_N / 2);
    /* nothing twice: one image per job, each job's seed and each file once, files = rows */
    long long jobs = q1(pool, "SELECT COUNT(*) FROM jobs");
    long long rejected = q1(pool, "SELECT COUNT(*) FROM images WHERE status='rejected'");
    printf("kill -9 after %lld images; %lld jobs, %lld rejected by the checks\n", before, jobs,
           rejected);
    assert_int_equal(jobs, KILL_N + rejected);
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM images"), jobs);
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM jobs WHERE status='done'"), jobs);
    assert_int_equal(q1(pool, "SELECT COUNT(DISTINCT seed) FROM jobs"), jobs);
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM jobs WHERE seed = 1000 + id"), jobs);
    assert_int_equal(q1(pool, "SELECT COUNT(DISTINCT sha256) FROM images"), jobs);
    assert_int_equal(q1(pool, "SELECT COUNT(*) FROM prompts"), jobs);
    /* only the render in flight at the kill (one worker) ran twice */
    assert_true(q1(pool, "SELECT SUM(attempts) FROM jobs") <= jobs + 1);
    int tmp = 0;
    assert_int_equal(count_png(pool, &tmp), jobs);
    assert_int_equal(tmp, 0);
}

static int setup_tmp(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/px_genlocal_XXXXXX");
    if (!mkdtemp(g_tmp))
        return -1;
    uint8_t *d;
    size_t n;
    if (px_read_file(GOLDEN "/unet/diffusion_pytorch_model.safetensors", (size_t)1 << 30, &d, &n,
                     NULL) != PX_OK)
        return -1;
    char hex[65];
    px_gen_sha256_hex(d, n, hex);
    free(d);
    snprintf(g_hash, sizeof g_hash, "%.10s", hex);
    return 0;
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
    if (getenv("PX_TEST_FILTER"))
        cmocka_set_test_filter(getenv("PX_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_settings),
        cmocka_unit_test(test_local_render),
        cmocka_unit_test(test_local_option_errors),
        cmocka_unit_test(test_local_campaign),
        cmocka_unit_test(test_local_resume_after_kill9),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
