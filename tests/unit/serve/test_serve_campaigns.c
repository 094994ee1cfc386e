/*
 * The Campaigns API of px_serve (issue 15), against an in-process server on
 * a free port and the fake image server (tests/fakes) as the one configured
 * render server "gpu1":
 *  - the form's JSON goes through the CLI's campaign parser: the same
 *    message, and the field it is about, for each kind of mistake;
 *  - no request can name a server or URL, and only configured names render;
 *  - a preview gives 20 prompts and records nothing;
 *  - a campaign runs to its quotas, pauses, resumes, takes "add N more";
 *  - a server destroyed mid-run leaves it "running" and the next server on
 *    the pool resumes it to exactly the quota;
 *  - admin only: no credentials, no API and no page.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fakes/fake_imageserver.h"
#include "fakes/fake_llm.h"
#include "gen/px_gen.h"
#include "integration/test_serve_fixture.h"
#include "manifest/px_manifest.h"
#include "px_test.h"
#include "serve/px_serve.h"

#define TOKEN "campaign-test-token"

static char g_dir[256];
static int g_n;
static fake_img *g_img;
static char g_gpu[600];
static const char *g_servers[2];
static const char *const *g_llms; /* --gen-llm of the next server, or NULL */
static const char *g_model;       /* --gen-model of the next server, or NULL */

/* A fresh pool folder with an empty manifest. */
static void new_pool(char *pool, size_t cap, char *db, size_t dbcap)
{
    snprintf(pool, cap, "%s/pool%d", g_dir, ++g_n);
    px_err err;
    assert_int_equal(px_mkdir_p(pool, &err), PX_OK);
    snprintf(db, dbcap, "%s/%s", pool, PX_MANIFEST_FILE);
    px_manifest *s = NULL;
    assert_int_equal(px_manifest_open(db, 0, &s, &err), PX_OK);
    px_manifest_close(s);
}

static px_server *start(const char *pool)
{
    px_serve_opts o = px_serve_opts_default();
    o.port = 0;
    o.pool_dir = pool;
    o.api_token = TOKEN;
    o.gen_servers = g_servers;
    o.gen_llms = g_llms;
    o.gen_model = g_model;
    o.gen_threads = 2;
    o.gen_vocab_dir = PX_SOURCE_DIR "/vocab";
    o.gen_style_path = PX_SOURCE_DIR "/styles/styles.json";
    px_server *srv = NULL;
    px_err err = {{0}};
    int st = px_server_create(&o, &srv, &err);
    if (st)
        fprintf(stderr, "server: %s\n", err.msg);
    assert_int_equal(st, PX_OK);
    return srv;
}

/* One request as admin (bearer token); the answer's JSON (NULL if none). */
static json_t *call(px_server *srv, const char *method, const char *path, const char *body,
                    long *code)
{
    char url[300];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", px_server_port(srv), path);
    const char *h[] = {"Authorization: Bearer " TOKEN, "Content-Type: application/json", NULL};
    fx_resp r;
    assert_int_equal(fx_http(method, url, body, body ? strlen(body) : 0, h, &r), 0);
    *code = r.code;
    json_t *v = r.body.len ? json_loads((const char *)r.body.data, 0, NULL) : NULL;
    fx_resp_free(&r);
    return v;
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/px-test-campaigns-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    curl_global_init(CURL_GLOBAL_DEFAULT);
    assert_int_equal(fake_img_start(96, 64, &g_img), 0);
    snprintf(g_gpu, sizeof g_gpu, "gpu1=%s", fake_img_url(g_img));
    g_servers[0] = g_gpu;
    g_servers[1] = NULL;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fake_img_stop(g_img);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", g_dir);
    curl_global_cleanup();
    return 0;
}

/* A create request for campaign JSON text camp. */
static void body_of(char *out, size_t cap, const char *camp, const char *render, int start)
{
    snprintf(out, cap,
             "{\"campaign\": %s, \"prompts\": \"offline\", \"render\": %s, \"start\": %s}", camp,
             render, start ? "true" : "false");
}

/* The form's mistakes: 400 with the CLI parser's own message and the field. */
static void test_form_errors(void **state)
{
    (void)state;
    char pool[300], db[400];
    new_pool(pool, sizeof pool, db, sizeof db);
    px_server *srv = start(pool);
    static const struct {
        const char *camp, *field;
    } cases[] = {
        {"{\"name\":\"x\",\"total\":10,\"types\":{\"kitchens\":1},\"themes\":[\"Business and "
         "office\"]}",
         "types"},
        {"{\"name\":\"x\",\"total\":10,\"themes\":[\"Business and "
         "office\"],\"defaults\":{\"width\":10}}",
         "width"},
        {"{\"name\":\"x\",\"total\":10,\"themes\":[]}", "themes"},
        {"{\"name\":\"x\",\"themes\":[\"Business and office\"]}", "total"},
        {"{\"name\":\"x\",\"total\":-3,\"themes\":[\"Business and office\"]}", "total"},
        {"{\"name\":\"x\",\"total\":10,\"colour\":\"red\",\"themes\":[\"Business and office\"]}",
         "campaign"},
        {"{\"name\":\"x\",\"total\":10,\"themes\":[\"Business and office\"],"
         "\"defaults\":{\"format\":\"gif\"}}",
         "format"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[2000];
        body_of(body, sizeof body, cases[i].camp, "[\"gpu1\"]", 0);
        long code = 0;
        json_t *v = call(srv, "POST", "/v1/campaigns", body, &code);
        /* the message the command line gives for the same campaign text */
        px_gen_campaign c;
        px_err err;
        px_err_clear(&err);
        assert_int_not_equal(
            px_gen_campaign_parse(cases[i].camp, strlen(cases[i].camp), "campaign", &c, &err),
            PX_OK);
        const char *got = json_string_value(json_object_get(v, "error"));
        const char *field = json_string_value(json_object_get(v, "field"));
        if (code != 400 || !got || strcmp(got, err.msg) || !field || strcmp(field, cases[i].field))
            fprintf(stderr, "case %zu: %ld %s / field %s (want %s)\n", i, code, got ? got : "-",
                    field ? field : "-", cases[i].field);
        assert_int_equal(code, 400);
        assert_string_equal(got, err.msg);
        assert_string_equal(field, cases[i].field);
        json_decref(v);
    }
    /* a theme the offline writer has no vocabulary for: named, with the way out */
    char body[2000];
    body_of(body, sizeof body,
            "{\"name\":\"x\",\"total\":4,\"themes\":[\"Underwater basket weaving\"]}", "[\"gpu1\"]",
            0);
    long code = 0;
    json_t *v = call(srv, "POST", "/v1/campaigns", body, &code);
    assert_int_equal(code, 400);
    assert_string_equal(json_string_value(json_object_get(v, "field")), "themes");
    assert_non_null(
        strstr(json_string_value(json_object_get(v, "error")), "Underwater basket weaving"));
    json_decref(v);
    assert_int_equal(fx_sql_int(db, "SELECT count(*) FROM campaign_runs"), 0);
    px_server_destroy(srv);
}

/* Servers are chosen by name from the operator's list; a URL is never taken. */
static void test_no_url_from_request(void **state)
{
    (void)state;
    char pool[300], db[400];
    new_pool(pool, sizeof pool, db, sizeof db);
    px_server *srv = start(pool);
    const char *camp = "{\"name\":\"x\",\"total\":4,\"themes\":[\"Business and office\"]}";
    static const char *const renders[] = {
        "[\"http://127.0.0.1:9/\"]", "[\"gpu9\"]", "[]", "\"gpu1\"",
        "[\"gpu1\",\"gpu1\"]",       "[\"local\"]"};
    for (size_t i = 0; i < sizeof renders / sizeof renders[0]; i++) {
        char body[1000];
        body_of(body, sizeof body, camp, renders[i], 1);
        long code = 0;
        json_t *v = call(srv, "POST", "/v1/campaigns", body, &code);
        assert_int_equal(code, 400);
        assert_string_equal(json_string_value(json_object_get(v, "field")), "render");
        json_decref(v);
    }
    /* a URL anywhere (a theme name, a prompt source, an extra "server" key) */
    static const char *const bodies[] = {
        "{\"campaign\":{\"name\":\"x\",\"total\":4,\"themes\":[\"see https://evil.example/\"]},"
        "\"prompts\":\"offline\",\"render\":[\"gpu1\"]}",
        "{\"campaign\":{\"name\":\"x\",\"total\":4,\"themes\":[\"Business and office\"]},"
        "\"prompts\":\"http://127.0.0.1:9\",\"render\":[\"gpu1\"]}",
        "{\"campaign\":{\"name\":\"x\",\"total\":4,\"themes\":[\"Business and office\"]},"
        "\"prompts\":\"offline\",\"render\":[\"gpu1\"],\"server\":\"gpu1\"}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        long code = 0;
        json_t *v = call(srv, "POST", "/v1/campaigns", bodies[i], &code);
        assert_int_equal(code, 400);
        assert_non_null(strstr(json_string_value(json_object_get(v, "error")), "never names"));
        json_decref(v);
    }
    assert_int_equal(fx_sql_int(db, "SELECT count(*) FROM campaign_runs"), 0);
    assert_int_equal(fake_img_renders(g_img) >= 0, 1);
    px_server_destroy(srv);
}

/* Polls run id until its state is want (or the deadline); returns the last answer. */
static json_t *wait_state(px_server *srv, int64_t id, const char *want, int ms)
{
    char path[64];
    snprintf(path, sizeof path, "/v1/campaigns/%lld", (long long)id);
    double until = px_test_now_ms() + px_test_ms(ms);
    for (;;) {
        long code = 0;
        json_t *v = call(srv, "GET", path, NULL, &code);
        assert_int_equal(code, 200);
        const char *st = json_string_value(json_object_get(v, "state"));
        if (!strcmp(st, want) || px_test_now_ms() > until) {
            if (strcmp(st, want))
                fprintf(stderr, "run %lld: state %s, wanted %s: %s\n", (long long)id, st, want,
                        json_string_value(json_object_get(v, "message")));
            assert_string_equal(st, want);
            return v;
        }
        json_decref(v);
        px_test_sleep_ms(20);
    }
}

static int totals(json_t *v, const char *k)
{
    return (int)json_integer_value(json_object_get(json_object_get(v, "totals"), k));
}

static const char k_two_themes[] =
    "{\"name\":\"two\",\"total\":8,\"types\":{\"interiors\":50,\"exteriors\":50},"
    "\"themes\":[\"Business and office\",\"Medicine and health\"],"
    "\"defaults\":{\"width\":96,\"height\":64,\"steps\":4}}";

static const char k_other[] =
    "{\"name\":\"other\",\"total\":6,\"themes\":[\"Food and hospitality\"],"
    "\"defaults\":{\"width\":96,\"height\":64,\"steps\":4}}";

/* A preview is 20 prompts over the themes and types, and nothing is recorded. */
static void test_preview(void **state)
{
    (void)state;
    char pool[300], db[400];
    new_pool(pool, sizeof pool, db, sizeof db);
    px_server *srv = start(pool);
    char body[2000];
    body_of(body, sizeof body, k_two_themes, "[\"gpu1\"]", 0);
    long code = 0;
    json_t *v = call(srv, "POST", "/v1/campaigns/preview", body, &code);
    assert_int_equal(code, 200);
    json_t *p = json_object_get(v, "prompts");
    assert_int_equal(json_array_size(p), 20);
    int business = 0, exteriors = 0;
    for (size_t i = 0; i < json_array_size(p); i++) {
        json_t *x = json_array_get(p, i);
        const char *prompt = json_string_value(json_object_get(x, "prompt"));
        const char *scene = json_string_value(json_object_get(x, "scene"));
        assert_true(strlen(scene) > 10);
        assert_true(!strncmp(prompt, scene, strlen(scene))); /* scene, then the style suffix */
        business += !strcmp(json_string_value(json_object_get(x, "theme")), "Business and office");
        exteriors += !strcmp(json_string_value(json_object_get(x, "type")), "exteriors");
    }
    assert_int_equal(business, 10);
    assert_int_equal(exteriors, 10);
    assert_int_equal(json_integer_value(json_object_get(v, "total")), 8);
    json_decref(v);
    assert_int_equal(fx_sql_int(db, "SELECT count(*) FROM jobs"), 0);
    assert_int_equal(fx_sql_int(db, "SELECT count(*) FROM campaign_runs"), 0);
    px_server_destroy(srv);
}

static int64_t create(px_server *srv, const char *camp, int start_it)
{
    char body[2000];
    body_of(body, sizeof body, camp, "[\"gpu1\"]", start_it);
    long code = 0;
    json_t *v = call(srv, "POST", "/v1/campaigns", body, &code);
    if (code != 201)
        fprintf(stderr, "create: %ld %s\n", code, json_string_value(json_object_get(v, "error")));
    assert_int_equal(code, 201);
    int64_t id = json_integer_value(json_object_get(v, "id"));
    json_decref(v);
    assert_true(id > 0);
    return id;
}

/* POST an action; want 202 (a stop under way) also takes 200 (stopped before it began). */
static void action(px_server *srv, int64_t id, const char *what, const char *body, long want)
{
    char path[100];
    snprintf(path, sizeof path, "/v1/campaigns/%lld/%s", (long long)id, what);
    long code = 0;
    json_t *v = call(srv, "POST", path, body ? body : "{}", &code);
    if (want == 202 && code == 200) /* it had not started yet: stopped at once */
        code = 202;
    if (code != want)
        fprintf(stderr, "%s: %ld %s\n", what, code, json_string_value(json_object_get(v, "error")));
    assert_int_equal(code, want);
    json_decref(v);
}

/* A new pool, its server, and the two-theme campaign started on a slow
 * fake server, once it has made two images. */
static px_server *started_run(char *pool, size_t cap, char *db, size_t dbcap, int64_t *id)
{
    new_pool(pool, cap, db, dbcap);
    px_server *srv = start(pool);
    fake_img_set_delay(g_img, 150);
    *id = create(srv, k_two_themes, 1);
    double until = px_test_now_ms() + px_test_ms(20000);
    while (fx_sql_int(db, "SELECT count(*) FROM images") < 2 && px_test_now_ms() < until)
        px_test_sleep_ms(20);
    return srv;
}

/* Runs to the quota; pause, resume, add N more; one campaign at a time. */
static void test_run_pause_resume_add(void **state)
{
    (void)state;
    char pool[300], db[400];
    int64_t id;
    px_server *srv = started_run(pool, sizeof pool, db, sizeof db, &id);
    /* a second one cannot start while it runs */
    int64_t other = create(srv, k_other, 0);
    action(srv, other, "start", NULL, 409);
    action(srv, id, "pause", NULL, 202);
    json_t *v = wait_state(srv, id, "paused", 30000);
    assert_true(totals(v, "done") < 8);
    json_decref(v);
    long done_paused = fx_sql_int(db, "SELECT count(*) FROM images");
    px_test_sleep_ms(400);
    assert_int_equal(fx_sql_int(db, "SELECT count(*) FROM images"), done_paused);
    fake_img_set_delay(g_img, 0);
    action(srv, id, "resume", NULL, 200);
    v = wait_state(srv, id, "done", 30000);
    assert_int_equal(totals(v, "quota"), 8);
    assert_int_equal(totals(v, "done"), 8);
    json_t *slots = json_object_get(v, "slots");
    assert_int_equal(json_array_size(slots), 4);
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(slots, i), "done")), 2);
    json_decref(v);
    action(srv, id, "resume", NULL, 409); /* done: nothing to resume */
    /* add 3 more business interiors: it runs again to the new quota */
    action(srv, id, "add", "{\"theme\":\"Business and office\",\"type\":\"interiors\",\"n\":3}",
           200);
    action(srv, id, "add", "{\"theme\":\"Nowhere\",\"type\":\"interiors\",\"n\":3}", 400);
    action(srv, id, "add", "{\"theme\":\"Business and office\",\"type\":\"kitchens\",\"n\":3}",
           400);
    v = wait_state(srv, id, "done", 30000);
    assert_int_equal(totals(v, "quota"), 11);
    assert_int_equal(totals(v, "done"), 11);
    json_decref(v);
    assert_int_equal(fx_sql_int(db, "SELECT quota FROM quotas WHERE theme_slug = "
                                    "'business-and-office' AND type = 'interiors'"),
                     5);
    /* an expert rejects one of them: "replace rejected" asks for one more, once */
    px_manifest *store = NULL;
    px_err err;
    px_err_clear(&err);
    assert_int_equal(px_manifest_open(db, 0, &store, &err), PX_OK);
    int64_t img = fx_sql_int(db, "SELECT min(id) FROM images WHERE theme_slug = "
                                 "'medicine-and-health' AND type = 'exteriors'");
    assert_int_equal(px_manifest_add_verdict(store, img, "ana", "reject", "logo", NULL, &err),
                     PX_OK);
    px_manifest_close(store);
    action(srv, id, "replace-rejected", NULL, 200);
    v = wait_state(srv, id, "done", 30000);
    assert_int_equal(totals(v, "quota"), 12);
    assert_int_equal(totals(v, "done"), 12);
    json_decref(v);
    action(srv, id, "replace-rejected", NULL, 200); /* already replaced: nothing more */
    v = wait_state(srv, id, "done", 30000);
    assert_int_equal(totals(v, "quota"), 12);
    json_decref(v);
    /* the other one may start now, and stop */
    fake_img_set_delay(g_img, 150);
    action(srv, other, "start", NULL, 200);
    action(srv, other, "stop", NULL, 202);
    v = wait_state(srv, other, "stopped", 30000);
    json_decref(v);
    fake_img_set_delay(g_img, 0);
    px_server_destroy(srv);
}

/* A serve restart resumes the running campaign to exactly its quota. */
static void test_restart_resumes(void **state)
{
    (void)state;
    char pool[300], db[400];
    int64_t id;
    px_server *srv = started_run(pool, sizeof pool, db, sizeof db, &id);
    px_server_destroy(srv); /* as at SIGTERM: the run stops after the images in flight */
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT state = 'running' FROM campaign_runs WHERE id = %lld",
             (long long)id);
    assert_int_equal(fx_sql_int(db, sql), 1);
    assert_true(fx_sql_int(db, "SELECT count(*) FROM images") < 8);
    fake_img_set_delay(g_img, 0);
    srv = start(pool);
    json_t *v = wait_state(srv, id, "done", 30000);
    assert_int_equal(totals(v, "done"), 8);
    json_decref(v);
    assert_int_equal(fx_sql_int(db, "SELECT count(*) FROM images WHERE status != 'rejected'"), 8);
    assert_int_equal(fx_sql_int(db, "SELECT count(*) FROM jobs WHERE status = 'pending'"), 0);
    px_server_destroy(srv);
}

/* What `pixpipe generate` does with a pool (cmd_generate.c): the pool's
 * campaign run when camp is NULL (resuming what the page started), else camp;
 * offline prompts, the fake server, no face check; stops once the pool holds
 * stop_at images (0: runs to the end). Returns the summary's complete. */
typedef struct cli_stop {
    const char *db;
    int at;
    volatile int flag;
} cli_stop;

static void cli_progress(void *ctx, const char *line, int final)
{
    (void)line;
    (void) final;
    cli_stop *c = ctx;
    if (c->at && fx_sql_int(c->db, "SELECT count(*) FROM images") >= c->at)
        c->flag = 1;
}

static int cli_run(const char *pool, const char *db, const char *camp_json, int stop_at)
{
    px_gen_campaign camp;
    memset(&camp, 0, sizeof camp);
    px_err err;
    px_err_clear(&err);
    int64_t run_id = 0;
    if (camp_json)
        assert_int_equal(px_gen_campaign_parse(camp_json, strlen(camp_json), "cli", &camp, &err),
                         PX_OK);
    else
        assert_int_equal(px_gen_campaign_from_pool(pool, &camp, &run_id, &err), PX_OK);
    px_gen_writer *w = NULL;
    assert_int_equal(px_gen_writer_offline_create(PX_SOURCE_DIR "/vocab", 7, &w, &err), PX_OK);
    const char *servers[1] = {fake_img_url(g_img)};
    cli_stop cs = {db, stop_at, 0};
    px_gen_opts o;
    px_gen_opts_default(&o);
    o.pool = pool;
    o.campaign = &camp;
    o.writer = w;
    o.servers = servers;
    o.nservers = 1;
    o.checks.faces = PX_GEN_FACES_OFF;
    o.progress = cli_progress;
    o.progress_ctx = &cs;
    o.progress_interval_ms = 20;
    o.stop = &cs.flag;
    px_gen_summary sum;
    assert_int_equal(px_gen_run(&o, &sum, &err), PX_OK);
    if (run_id && !cs.flag)
        assert_int_equal(px_gen_campaign_run_ended(pool, run_id, sum.complete, &err), PX_OK);
    px_gen_writer_destroy(w);
    px_gen_campaign_free(&camp);
    return sum.complete;
}

/* One pool, one record: the command line carries on a campaign the page
 * made, and the page takes over one the command line began. */
static void test_cli_and_browser_share(void **state)
{
    (void)state;
    char pool[300], db[400];
    new_pool(pool, sizeof pool, db, sizeof db);
    px_server *srv = start(pool);
    /* made on the page, not started: the command line runs it to its quotas */
    int64_t id = create(srv, k_two_themes, 0);
    action(srv, id, "add", "{\"theme\":\"Medicine and health\",\"type\":\"items\",\"n\":2}", 200);
    assert_int_equal(cli_run(pool, db, NULL, 0), 1);
    json_t *v = wait_state(srv, id, "done", 1000);
    assert_int_equal(totals(v, "quota"), 10);
    assert_int_equal(totals(v, "done"), 10);
    json_decref(v);
    /* while the page runs one, the command line refuses it */
    fake_img_set_delay(g_img, 150);
    int64_t id2 = create(srv, k_other, 1);
    px_gen_campaign camp;
    int64_t run_id;
    px_err err;
    px_err_clear(&err);
    assert_int_equal(px_gen_campaign_from_pool(pool, &camp, &run_id, &err), PX_EBUSY);
    assert_non_null(strstr(err.msg, "pause it on the Campaigns page"));
    action(srv, id2, "stop", NULL, 202);
    json_decref(wait_state(srv, id2, "stopped", 30000));
    fake_img_set_delay(g_img, 0);
    px_server_destroy(srv);

    /* a folder without a pool: nothing to resume, and it stays without one */
    char empty[300], probe[400];
    snprintf(empty, sizeof empty, "%s/empty", g_dir);
    assert_int_equal(px_mkdir_p(empty, &err), PX_OK);
    assert_int_equal(px_gen_campaign_from_pool(empty, &camp, &run_id, &err), PX_ENOTFOUND);
    assert_non_null(strstr(err.msg, "no campaign started from the Campaigns page"));
    snprintf(probe, sizeof probe, "%s/%s", empty, PX_MANIFEST_FILE);
    assert_int_not_equal(access(probe, F_OK), 0);

    /* begun on the command line and stopped half-way: the page takes it over */
    new_pool(pool, sizeof pool, db, sizeof db);
    const char *cli =
        "{\"name\":\"cli-begun\",\"total\":6,\"types\":{\"exteriors\":1},"
        "\"themes\":[\"Travel and tourism\"],\"defaults\":{\"width\":96,\"height\":64}}";
    fake_img_set_delay(g_img, 100);
    assert_int_equal(cli_run(pool, db, cli, 2), 0);
    fake_img_set_delay(g_img, 0);
    assert_true(fx_sql_int(db, "SELECT count(*) FROM images") < 6);
    srv = start(pool);
    long code = 0;
    v = call(srv, "GET", "/v1/campaigns", NULL, &code);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(v, "pool_campaign"), "name")),
        "cli-begun");
    json_decref(v);
    v = call(srv, "POST", "/v1/campaigns",
             "{\"campaign\":\"pool\",\"prompts\":\"offline\",\"render\":[\"gpu1\"],\"start\":true}",
             &code);
    assert_int_equal(code, 201);
    int64_t id3 = json_integer_value(json_object_get(v, "id"));
    json_decref(v);
    v = wait_state(srv, id3, "done", 30000);
    assert_int_equal(totals(v, "quota"), 6);
    assert_int_equal(totals(v, "done"), 6);
    json_decref(v);
    assert_int_equal(fx_sql_int(db, "SELECT count(*) FROM images WHERE status != 'rejected' AND "
                                    "theme_slug = 'travel-and-tourism'"),
                     6);
    px_server_destroy(srv);
}

/* Prompts from a configured LLM (a theme without a vocabulary then works),
 * and the local engine as the render choice (the golden tiny SD model). */
static void test_llm_and_local(void **state)
{
    (void)state;
    fake_llm *llm = NULL;
    assert_int_equal(fake_llm_start(&llm), 0);
    char llm_arg[600];
    snprintf(llm_arg, sizeof llm_arg, "qwen=%s", fake_llm_url(llm));
    const char *llms[2] = {llm_arg, NULL};
    g_llms = llms;
    g_model = PX_SHARED_DIR "/golden/sd";
    char pool[300], db[400];
    new_pool(pool, sizeof pool, db, sizeof db);
    px_server *srv = start(pool);
    long code = 0;
    json_t *v = call(srv, "GET", "/v1/campaigns", NULL, &code);
    json_t *cfg = json_object_get(v, "config");
    assert_string_equal(json_string_value(json_array_get(json_object_get(cfg, "llms"), 0)), "qwen");
    assert_true(json_is_true(json_object_get(cfg, "local")));
    json_decref(v);
    v = call(
        srv, "POST", "/v1/campaigns/preview",
        "{\"campaign\":{\"name\":\"x\",\"total\":4,\"themes\":[\"Underwater basket weaving\"]},"
        "\"prompts\":\"qwen\",\"render\":[\"gpu1\"]}",
        &code);
    if (code != 200)
        fprintf(stderr, "preview: %s\n", json_string_value(json_object_get(v, "error")));
    assert_int_equal(code, 200);
    assert_int_equal(json_array_size(json_object_get(v, "prompts")), 20);
    assert_string_equal(json_string_value(json_object_get(v, "writer")), "llm");
    json_decref(v);
    assert_true(fake_llm_requests(llm) > 0);
    if (access(PX_SHARED_DIR "/golden/sd", R_OK) == 0) {
        v = call(srv, "POST", "/v1/campaigns",
                 "{\"campaign\":{\"name\":\"local\",\"total\":2,\"types\":{\"items\":1},"
                 "\"themes\":[\"Business and office\"],\"defaults\":{\"width\":64,\"height\":64,"
                 "\"steps\":3,\"cfg\":5,\"sampler\":\"Euler a\"}},\"prompts\":\"offline\","
                 "\"render\":[\"local\"],\"start\":true}",
                 &code);
        assert_int_equal(code, 201);
        int64_t id = json_integer_value(json_object_get(v, "id"));
        json_decref(v);
        v = wait_state(srv, id, "done", 120000);
        assert_int_equal(totals(v, "done"), 2);
        json_t *sv = json_array_get(json_object_get(v, "servers"), 0);
        assert_string_equal(json_string_value(json_object_get(sv, "name")), "local");
        json_decref(v);
        assert_int_equal(fx_sql_int(db, "SELECT count(*) FROM jobs WHERE backend = 'local' AND "
                                        "width = 64 AND steps = 3 AND status = 'done'"),
                         2);
    } else {
        printf("skipping the local engine: no %s\n", PX_SHARED_DIR "/golden/sd");
    }
    px_server_destroy(srv);
    g_llms = NULL;
    g_model = NULL;
    fake_llm_stop(llm);
}

/* The operator's list is checked when the server starts: each mistake named. */
static void test_bad_config(void **state)
{
    (void)state;
    char pool[300], db[400];
    new_pool(pool, sizeof pool, db, sizeof db);
    static const struct {
        const char *entry[3], *needle;
    } cases[] = {
        {{"gpu1", NULL}, "--gen-server 'gpu1': expected NAME=http://HOST:PORT"},
        {{"gpu1=ftp://host", NULL}, "expected NAME=http://HOST:PORT"},
        {{"=http://host:1", NULL}, "expected NAME=http://HOST:PORT"},
        {{"gpu 1=http://host:1", NULL}, "letters, digits"},
        {{"local=http://host:1", NULL}, "'local' is reserved"},
        {{"a=http://h:1", "a=http://h:2", NULL}, "the name 'a' is given twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        px_serve_opts o = px_serve_opts_default();
        o.port = 0;
        o.pool_dir = pool;
        o.gen_servers = cases[i].entry;
        px_server *srv = NULL;
        px_err err;
        px_err_clear(&err);
        assert_int_equal(px_server_create(&o, &srv, &err), PX_EINVAL);
        assert_null(srv);
        if (!strstr(err.msg, cases[i].needle))
            fprintf(stderr, "case %zu: %s\n", i, err.msg);
        assert_non_null(strstr(err.msg, cases[i].needle));
    }
    px_serve_opts o = px_serve_opts_default();
    o.port = 0;
    o.pool_dir = pool;
    o.gen_backend = "comfyui";
    px_server *srv = NULL;
    px_err err;
    px_err_clear(&err);
    assert_int_equal(px_server_create(&o, &srv, &err), PX_EINVAL);
    assert_non_null(strstr(err.msg, "--gen-backend 'comfyui'"));
    o.gen_backend = NULL;
    o.pool_dir = NULL;
    o.gen_servers = g_servers;
    assert_int_equal(px_server_create(&o, &srv, &err), PX_EINVAL);
    assert_non_null(strstr(err.msg, "needs --pool DIR"));
}

/* Bodies and paths that are not what the API takes: a JSON error each. */
static void test_bad_requests(void **state)
{
    (void)state;
    char pool[300], db[400];
    new_pool(pool, sizeof pool, db, sizeof db);
    px_server *srv = start(pool);
    static const struct {
        const char *method, *path, *body, *needle;
        long code;
    } cases[] = {
        {"POST", "/v1/campaigns", "not json", "expected a JSON object", 400},
        {"POST", "/v1/campaigns", "[1,2]", "expected a JSON object", 400},
        {"POST", "/v1/campaigns", "{\"campaign\":5,\"render\":[\"gpu1\"]}", "campaign: expected",
         400},
        {"POST", "/v1/campaigns", "{\"campaign\":\"pool\",\"render\":[\"gpu1\"]}",
         "no campaign has run on this pool", 400},
        {"POST", "/v1/campaigns/preview", "", "expected a JSON object", 400},
        {"GET", "/v1/campaigns/abc", NULL, "no such endpoint", 404},
        {"GET", "/v1/campaigns/0", NULL, "no such endpoint", 404},
        {"GET", "/v1/campaigns/1/2/3", NULL, "no such endpoint", 404},
        {"GET", "/v1/campaigns/7", NULL, "no campaign run 7", 404},
        {"POST", "/v1/campaigns/7/pause", "{}", "no campaign run 7", 404},
        {"GET", "/v1/campaigns/7/pause", NULL, "use POST", 405},
        {"GET", "/v1/campaigns/preview", NULL, "use POST", 405},
        {"POST", "/v1/campaigns/7/add", "{\"theme\":\"x\",\"type\":\"items\",\"n\":0}",
         "1..1000000", 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long code = 0;
        json_t *v = call(srv, cases[i].method, cases[i].path, cases[i].body, &code);
        const char *e = json_string_value(json_object_get(v, "error"));
        if (code != cases[i].code || !e || !strstr(e, cases[i].needle))
            fprintf(stderr, "case %zu: %ld %s\n", i, code, e ? e : "-");
        assert_int_equal(code, cases[i].code);
        assert_non_null(e);
        assert_non_null(strstr(e, cases[i].needle));
        assert_null(strstr(e, pool)); /* no file-system path in an answer */
        json_decref(v);
    }
    px_server_destroy(srv);
}

/* Admin only: the API and the page need the admin's credentials. */
static void test_admin_only(void **state)
{
    (void)state;
    char pool[300], db[400];
    new_pool(pool, sizeof pool, db, sizeof db);
    px_server *srv = start(pool);
    char url[300];
    fx_resp r;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/v1/campaigns", px_server_port(srv));
    assert_int_equal(fx_http("GET", url, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.code, 401);
    fx_resp_free(&r);
    const char *wrong[] = {"Authorization: Bearer nope", NULL};
    assert_int_equal(fx_http("POST", url, "{}", 2, wrong, &r), 0);
    assert_int_equal(r.code, 401);
    fx_resp_free(&r);
    snprintf(url, sizeof url, "http://127.0.0.1:%d/review/campaigns.html", px_server_port(srv));
    assert_int_equal(fx_http("GET", url, NULL, 0, NULL, &r), 0);
    assert_int_equal(r.code, 403);
    fx_resp_free(&r);
    const char *ok[] = {"Authorization: Bearer " TOKEN, NULL};
    assert_int_equal(fx_http("GET", url, NULL, 0, ok, &r), 0);
    assert_int_equal(r.code, 200);
    fx_resp_free(&r);
    long code = 0;
    json_t *v = call(srv, "GET", "/v1/campaigns", NULL, &code);
    assert_int_equal(code, 200);
    json_t *cfg = json_object_get(v, "config");
    assert_string_equal(json_string_value(json_array_get(json_object_get(cfg, "servers"), 0)),
                        "gpu1");
    char *text = json_dumps(cfg, 0);
    assert_null(strstr(text, "127.0.0.1")); /* names only, never URLs */
    free(text);
    json_decref(v);
    v = call(srv, "DELETE", "/v1/campaigns", NULL, &code);
    assert_int_equal(code, 405);
    json_decref(v);
    v = call(srv, "GET", "/v1/campaigns/99", NULL, &code);
    assert_int_equal(code, 404);
    json_decref(v);
    v = call(srv, "POST", "/v1/campaigns/1/explode", "{}", &code);
    assert_int_equal(code, 404);
    json_decref(v);
    px_server_destroy(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_form_errors),     cmocka_unit_test(test_no_url_from_request),
        cmocka_unit_test(test_preview),         cmocka_unit_test(test_run_pause_resume_add),
        cmocka_unit_test(test_restart_resumes), cmocka_unit_test(test_cli_and_browser_share),
        cmocka_unit_test(test_llm_and_local),   cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_bad_requests),    cmocka_unit_test(test_admin_only),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
