/*
 * The LLM prompt writer against fakes that behave like the real servers
 * (tests/fakes/fake_llm.h kinds): the dialect is probed and the schema sent
 * the way that server honours it (an old llama-server drops a nested
 * response_format json_schema), max_tokens sized for the batch, a prompt
 * that does not fit the server's context refused before it is sent, Ollama
 * and vLLM spoken their way, --llm-timeout honoured, what the server used
 * recorded in the manifest; and `pixpipe generate --dry-run`.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h> /* after the three it needs */
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fakes/fake_imageserver.h"
#include "fakes/fake_llm.h"
#include "gen/gen_internal.h"
#include "gen/px_gen.h"
#include "manifest/px_manifest.h"
#include "px_test.h"

static char g_tmp[64];

static px_gen_writer *make_writer(fake_llm *l, const char *model, const char *dialect,
                                  long timeout_ms, int batch)
{
    px_gen_llm_opts lo = px_gen_llm_opts_default();
    lo.url = fake_llm_url(l);
    lo.model = model;
    lo.dialect = dialect;
    lo.seed = 7;
    lo.retries = 0;
    lo.batch = batch;
    lo.timeout_ms = timeout_ms;
    px_gen_writer *w = NULL;
    px_err e;
    if (px_gen_writer_llm_create(&lo, &w, &e) != PX_OK)
        fail_msg("%s", e.msg);
    return w;
}

/* Writes n scenes; returns the status, err filled. */
static int write_n(px_gen_writer *w, int n, size_t *got, px_err *e)
{
    char **v = NULL;
    size_t k = 0;
    int st = px_gen_writer_write(w, "Cosmic cats", "cosmic-cats", PX_GEN_INTERIORS, n, &v, &k, NULL,
                                 0, e);
    px_manifest_strings_free(v, k);
    *got = k;
    return st;
}

static json_t *last_request(fake_llm *l)
{
    char *s = fake_llm_last_request(l);
    assert_non_null(s);
    json_t *j = json_loads(s, 0, NULL);
    free(s);
    assert_non_null(j);
    return j;
}

static json_t *describe(px_gen_writer *w)
{
    char buf[1536];
    assert_int_equal(px_gen_llm_describe(w, buf, sizeof buf), 1);
    json_t *j = json_loads(buf, 0, NULL);
    assert_non_null(j);
    return j;
}

static const char *jstr(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

static void test_llamacpp_old(void **state)
{
    (void)state;
    fake_llm *l;
    assert_int_equal(fake_llm_start(&l), 0);
    fake_llm_set_kind(l, FAKE_LLM_KIND_LLAMACPP_OLD);
    px_gen_writer *w = make_writer(l, "", NULL, px_test_ms(10000), 8);
    px_err e;
    size_t got;
    assert_int_equal(px_gen_llm_describe(w, (char[8]){0}, 8), 0); /* nothing known yet */
    assert_int_equal(write_n(w, 5, &got, &e), PX_OK);
    assert_int_equal(got, 5);
    assert_int_equal(fake_llm_unconstrained(l), 0);
    json_t *r = last_request(l);
    /* the forms this build honours, and an answer budget for 5 scenes */
    assert_true(json_is_object(json_object_get(r, "json_schema")));
    assert_string_equal(jstr(json_object_get(r, "response_format"), "type"), "json_object");
    assert_int_equal(json_integer_value(json_object_get(r, "max_tokens")), 5 * 96 + 64);
    json_decref(r);
    json_t *d = describe(w);
    assert_string_equal(jstr(d, "dialect"), "llamacpp-old");
    assert_string_equal(jstr(d, "how"), "probed");
    assert_string_equal(jstr(d, "version"), "b4747-c392e509");
    /* the server echoes the request's model name; what it loaded is what it used */
    assert_string_equal(jstr(d, "model"), "fake-7b-instruct-q4_k_m.gguf");
    assert_int_equal(json_integer_value(json_object_get(d, "n_ctx")), 4096);
    json_decref(d);
    px_gen_writer_destroy(w);

    /* the OpenAI form on this build: accepted, ignored, prose back, every try fails */
    w = make_writer(l, "", "openai", px_test_ms(10000), 8);
    assert_int_not_equal(write_n(w, 4, &got, &e), PX_OK);
    assert_non_null(strstr(e.msg, "JSON"));
    assert_int_equal(fake_llm_unconstrained(l), 1);
    px_gen_writer_destroy(w);
    fake_llm_stop(l);
}

static void test_llamacpp_new_and_no_max_tokens(void **state)
{
    (void)state;
    fake_llm *l;
    assert_int_equal(fake_llm_start(&l), 0);
    fake_llm_set_kind(l, FAKE_LLM_KIND_LLAMACPP);
    /* a base URL as OpenAI clients take it (".../v1/") reaches the same routes */
    px_gen_llm_opts lo = px_gen_llm_opts_default();
    char v1[128];
    snprintf(v1, sizeof v1, "%s/v1/", fake_llm_url(l));
    lo.url = v1;
    lo.retries = 0;
    px_gen_writer *w;
    px_err e;
    size_t got;
    assert_int_equal(px_gen_writer_llm_create(&lo, &w, &e), PX_OK);
    assert_int_equal(write_n(w, 3, &got, &e), PX_OK);
    assert_int_equal(got, 3);
    json_t *r = last_request(l);
    assert_string_equal(jstr(json_object_get(r, "response_format"), "type"), "json_schema");
    assert_null(json_object_get(r, "json_schema"));
    json_decref(r);
    json_t *d = describe(w);
    assert_string_equal(jstr(d, "dialect"), "llamacpp");
    json_decref(d);
    px_gen_writer_destroy(w);

    /* what a client without max_tokens gets from this server: one token, cut */
    px_gen_client *c;
    assert_int_equal(px_gen_client_create(&c, &e), PX_OK);
    char url[256];
    snprintf(url, sizeof url, "%s/v1/chat/completions", fake_llm_url(l));
    px_buf resp = {0};
    long status = 0;
    assert_int_equal(px_gen_http(c, url,
                                 "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                                 "\"json_schema\":{\"type\":\"object\"}}",
                                 NULL, px_test_ms(10000), 1 << 20, &status, &resp, &e),
                     PX_OK);
    assert_int_equal(status, 200);
    json_t *a = json_loadb((const char *)resp.data, resp.len, 0, NULL);
    json_t *ch = json_array_get(json_object_get(a, "choices"), 0);
    assert_string_equal(jstr(ch, "finish_reason"), "length");
    assert_true(strlen(jstr(json_object_get(ch, "message"), "content")) <= 4);
    json_decref(a);
    px_buf_free(&resp);
    px_gen_client_destroy(c);
    fake_llm_stop(l);
}

static void test_context_refused(void **state)
{
    (void)state;
    fake_llm *l;
    assert_int_equal(fake_llm_start(&l), 0);
    fake_llm_set_kind(l, FAKE_LLM_KIND_LLAMACPP_OLD);
    fake_llm_set_ctx(l, 600);
    px_gen_writer *w = make_writer(l, "", NULL, px_test_ms(10000), 8);
    px_err e;
    size_t got;
    assert_int_equal(write_n(w, 8, &got, &e), PX_ELIMIT);
    assert_non_null(strstr(e.msg, "does not fit llama-server's context per slot"));
    assert_non_null(strstr(e.msg, "the context is 600 tokens"));
    assert_non_null(strstr(e.msg, "max_tokens: 8 scenes x 96 + 64"));
    const char *hint = strstr(e.msg, "(--llm-batch ");
    assert_non_null(hint);
    int fits = atoi(hint + strlen("(--llm-batch "));
    assert_true(fits >= 1 && fits < 8);
    assert_int_equal(fake_llm_requests(l), 0); /* refused before anything was generated */
    px_gen_writer_destroy(w);
    /* the batch it suggested fits: counted exactly through /apply-template and /tokenize */
    w = make_writer(l, "", NULL, px_test_ms(10000), fits);
    assert_int_equal(write_n(w, 8, &got, &e), PX_OK);
    assert_int_equal(got, fits);
    json_t *d = describe(w);
    int pt = (int)json_integer_value(json_object_get(d, "prompt_tokens"));
    assert_true(pt > 100 && pt + fits * 96 + 64 <= 600);
    assert_true(json_is_true(json_object_get(d, "prompt_tokens_counted")));
    json_decref(d);
    px_gen_writer_destroy(w);
    fake_llm_stop(l);
}

static void test_ollama(void **state)
{
    (void)state;
    fake_llm *l;
    assert_int_equal(fake_llm_start(&l), 0);
    fake_llm_set_kind(l, FAKE_LLM_KIND_OLLAMA);
    fake_llm_set_ctx(l, 8192);
    px_gen_writer *w = make_writer(l, "", NULL, px_test_ms(10000), 8);
    px_err e;
    size_t got;
    assert_int_equal(write_n(w, 4, &got, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "Ollama, which needs --llm-model NAME"));
    assert_non_null(strstr(e.msg, "llama3.2:latest, qwen2.5:7b"));
    assert_int_equal(fake_llm_requests(l), 0);
    px_gen_writer_destroy(w);

    w = make_writer(l, "qwen2.5:7b", NULL, px_test_ms(10000), 8);
    assert_int_equal(write_n(w, 4, &got, &e), PX_OK);
    assert_int_equal(got, 4);
    assert_int_equal(fake_llm_unconstrained(l), 0);
    json_t *r = last_request(l);
    assert_true(json_is_object(json_object_get(r, "format")));
    json_t *opt = json_object_get(r, "options");
    assert_int_equal(json_integer_value(json_object_get(opt, "num_predict")), 4 * 96 + 64);
    int num_ctx = (int)json_integer_value(json_object_get(opt, "num_ctx"));
    assert_true(num_ctx >= 2048 && num_ctx <= 8192);
    assert_true(json_is_false(json_object_get(r, "stream")));
    json_decref(r);
    json_t *d = describe(w);
    assert_string_equal(jstr(d, "dialect"), "ollama");
    assert_string_equal(jstr(d, "version"), "0.5.7");
    assert_string_equal(jstr(d, "model"), "qwen2.5:7b");
    json_decref(d);
    px_gen_writer_destroy(w);
    fake_llm_stop(l);
}

static void test_vllm(void **state)
{
    (void)state;
    fake_llm *l;
    assert_int_equal(fake_llm_start(&l), 0);
    fake_llm_set_kind(l, FAKE_LLM_KIND_VLLM);
    px_gen_writer *w = make_writer(l, "", NULL, px_test_ms(10000), 8);
    px_err e;
    size_t got;
    assert_int_equal(write_n(w, 6, &got, &e), PX_OK);
    assert_int_equal(got, 6);
    json_t *r = last_request(l);
    /* no model given: the one the server serves (vLLM refuses any other name) */
    assert_string_equal(jstr(r, "model"), "Qwen/Qwen2.5-7B-Instruct");
    assert_string_equal(jstr(json_object_get(r, "response_format"), "type"), "json_schema");
    json_decref(r);
    json_t *d = describe(w);
    assert_string_equal(jstr(d, "dialect"), "vllm");
    assert_string_equal(jstr(d, "model"), "Qwen/Qwen2.5-7B-Instruct");
    assert_int_equal(json_integer_value(json_object_get(d, "n_ctx")), 4096);
    json_decref(d);
    px_gen_writer_destroy(w);
    /* a small max_model_len: refused with vLLM's own count (POST /tokenize) */
    fake_llm_set_ctx(l, 700);
    int before = fake_llm_requests(l);
    w = make_writer(l, "", NULL, px_test_ms(10000), 8);
    assert_int_equal(write_n(w, 8, &got, &e), PX_ELIMIT);
    assert_non_null(strstr(e.msg, "max_model_len"));
    assert_int_equal(fake_llm_requests(l), before);
    px_gen_writer_destroy(w);
    fake_llm_stop(l);
}

/* OpenAI's reasoning models refuse max_tokens and say which field they take. */
static void test_openai_completion_tokens(void **state)
{
    (void)state;
    fake_llm *l;
    assert_int_equal(fake_llm_start(&l), 0);
    fake_llm_set_kind(l, FAKE_LLM_KIND_OPENAI_REASONING);
    px_gen_writer *w = make_writer(l, "o-fake", NULL, px_test_ms(10000), 8);
    px_err e;
    size_t got;
    assert_int_equal(write_n(w, 3, &got, &e), PX_OK); /* retries 0: the re-ask is not a retry */
    assert_int_equal(got, 3);
    assert_int_equal(fake_llm_requests(l), 2);
    json_t *r = last_request(l);
    assert_null(json_object_get(r, "max_tokens"));
    assert_int_equal(json_integer_value(json_object_get(r, "max_completion_tokens")), 3 * 96 + 64);
    json_decref(r);
    assert_int_equal(write_n(w, 2, &got, &e), PX_OK); /* learnt: one request now */
    assert_int_equal(fake_llm_requests(l), 3);
    json_t *d = describe(w);
    assert_string_equal(jstr(d, "dialect"), "openai");
    assert_string_equal(jstr(d, "model"), "gpt-fake"); /* the answer's "model" */
    assert_string_equal(jstr(d, "loaded_model"), "");  /* /v1/models lists, it does not load */
    json_decref(d);
    px_gen_writer_destroy(w);
    fake_llm_stop(l);
}

static void test_timeout_and_bad_dialect(void **state)
{
    (void)state;
    fake_llm *l;
    assert_int_equal(fake_llm_start(&l), 0);
    fake_llm_set_delay_ms(l, 2500);
    px_gen_writer *w = make_writer(l, "", NULL, 1000, 8);
    px_err e;
    size_t got;
    assert_int_equal(write_n(w, 2, &got, &e), PX_ETIMEOUT);
    assert_non_null(strstr(e.msg, "no answer in 1 s (--llm-timeout)"));
    px_gen_writer_destroy(w);
    fake_llm_stop(l);

    px_gen_llm_opts lo = px_gen_llm_opts_default();
    lo.dialect = "kobold";
    assert_int_equal(px_gen_writer_llm_create(&lo, &w, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "--llm-dialect 'kobold'"));
}

/* Options of a run of count interiors of theme into pool on servers[0]; *c made here. */
static void pool_opts(px_gen_opts *o, px_gen_campaign *c, const char *theme, int count,
                      px_gen_writer *w, const char **servers, const char *pool)
{
    px_err e;
    assert_int_equal(px_gen_campaign_single(theme, PX_GEN_INTERIORS, count, c, &e), PX_OK);
    c->render.width = 96;
    c->render.height = 64;
    px_gen_opts_default(o);
    o->pool = pool;
    o->campaign = c;
    o->writer = w;
    o->style_path = PX_SOURCE_DIR "/styles/styles.json";
    o->servers = servers;
    o->nservers = 1;
    o->timeout_ms = px_test_ms(10000);
    o->checks.min_blur = 0;
    o->checks.min_stddev = 0;
}

/* A run records what the server used in the manifest's meta table. */
static void test_manifest_records_server(void **state)
{
    (void)state;
    fake_llm *l;
    fake_img *img;
    assert_int_equal(fake_llm_start(&l), 0);
    assert_int_equal(fake_img_start(96, 64, &img), 0);
    fake_llm_set_kind(l, FAKE_LLM_KIND_LLAMACPP_OLD);
    px_gen_writer *w = make_writer(l, "", NULL, px_test_ms(10000), 8);
    px_gen_campaign c;
    px_gen_opts o;
    px_err e;
    char pool[128];
    snprintf(pool, sizeof pool, "%s/meta", g_tmp);
    const char *servers[1] = {fake_img_url(img)};
    pool_opts(&o, &c, "Cosmic cats", 2, w, servers, pool);
    px_gen_summary sum;
    assert_int_equal(px_gen_run(&o, &sum, &e), PX_OK);
    char db[256], val[1536];
    snprintf(db, sizeof db, "%s/manifest.sqlite", pool);
    px_manifest *s;
    assert_int_equal(px_manifest_open(db, 1, &s, &e), PX_OK);
    assert_int_equal(px_manifest_meta_get(s, "llm", val, sizeof val, &e), PX_OK);
    px_manifest_close(s);
    json_t *d = json_loads(val, 0, NULL);
    assert_string_equal(jstr(d, "dialect"), "llamacpp-old");
    assert_string_equal(jstr(d, "model"), "fake-7b-instruct-q4_k_m.gguf");
    json_decref(d);
    /* and each prompt keeps what its server reported when it was written */
    sqlite3 *h;
    assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(h,
                                        "SELECT COUNT(*) FROM prompts WHERE writer = 'llm' AND"
                                        " json_extract(source, '$.dialect') = 'llamacpp-old' AND"
                                        " json_extract(source, '$.model') ="
                                        " 'fake-7b-instruct-q4_k_m.gguf'",
                                        -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 2);
    sqlite3_finalize(q);
    sqlite3_close(h);
    px_gen_writer_destroy(w);
    px_gen_campaign_free(&c);
    fake_img_stop(img);
    fake_llm_stop(l);
}

typedef struct {
    int n, offline;
    char first[4096];
} seen;

static void on_prompt(void *ctx, const px_gen_prompt_rec *p)
{
    seen *sn = ctx;
    if (!sn->n++)
        snprintf(sn->first, sizeof sn->first, "%s", p->scene);
    sn->offline += !strcmp(p->writer, "offline");
    assert_non_null(strstr(p->prompt, p->scene));
}

/* A dry run over an existing pool asks only for what the pool still needs
 * and leaves the pool as it was. */
static void test_dry_run_existing_pool(void **state)
{
    (void)state;
    fake_img *img;
    assert_int_equal(fake_img_start(96, 64, &img), 0);
    px_gen_writer *w;
    px_err e;
    assert_int_equal(px_gen_writer_offline_create(PX_SOURCE_DIR "/vocab", 5, &w, &e), PX_OK);
    px_gen_campaign c;
    px_gen_opts o;
    char pool[128];
    snprintf(pool, sizeof pool, "%s/dry-existing", g_tmp);
    const char *servers[1] = {fake_img_url(img)};
    pool_opts(&o, &c, "Business and office", 3, w, servers, pool);
    px_gen_summary sum;
    assert_int_equal(px_gen_run(&o, &sum, &e), PX_OK);
    assert_int_equal(sum.accepted + sum.flagged, 3);
    px_gen_campaign_free(&c);
    /* the same pool asked for 7: 4 more prompts, capped at 2 when asked */
    assert_int_equal(px_gen_campaign_single("Business and office", PX_GEN_INTERIORS, 7, &c, &e),
                     PX_OK);
    o.campaign = &c;
    seen sn = {0};
    assert_int_equal(px_gen_dry_run(&o, 0, on_prompt, &sn, &sum, &e), PX_OK);
    assert_int_equal(sn.n, 4);
    assert_int_equal(sn.offline, 4);
    assert_true(sum.complete);
    memset(&sn, 0, sizeof sn);
    assert_int_equal(px_gen_dry_run(&o, 2, on_prompt, &sn, &sum, &e), PX_OK);
    assert_int_equal(sn.n, 2);
    /* nothing was stored: still 3 jobs */
    char db[256];
    snprintf(db, sizeof db, "%s/manifest.sqlite", pool);
    px_manifest *m;
    assert_int_equal(px_manifest_open(db, 1, &m, &e), PX_OK);
    int64_t max_id = 0;
    assert_int_equal(px_manifest_max_job_id(m, &max_id, &e), PX_OK);
    px_manifest_close(m);
    assert_int_equal(max_id, 3);
    px_gen_campaign_free(&c);
    px_gen_writer_destroy(w);
    fake_img_stop(img);
}

static void test_unreachable(void **state)
{
    (void)state;
    px_gen_llm_opts lo = px_gen_llm_opts_default();
    lo.url = "http://127.0.0.1:1";
    lo.retries = 1;
    lo.timeout_ms = px_test_ms(5000);
    px_gen_writer *w;
    px_err e;
    assert_int_equal(px_gen_writer_llm_create(&lo, &w, &e), PX_OK);
    size_t got;
    int st = write_n(w, 2, &got, &e);
    assert_true(st == PX_ENET || st == PX_ETIMEOUT);
    assert_non_null(strstr(e.msg, "LLM gave no usable answer in 2 tries"));
    assert_non_null(strstr(e.msg, "http://127.0.0.1:1/props"));
    assert_int_equal(px_gen_llm_describe(w, (char[8]){0}, 8), 0);
    px_gen_writer_destroy(w);
}

/* Runs cmd, returns its exit status; stdout into out (cap). */
static int run_cmd(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int rc = pclose(p);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int count_lines_with(const char *s, const char *needle)
{
    int n = 0;
    for (const char *l = s; l && *l;) {
        const char *e = strchr(l, '\n');
        size_t len = e ? (size_t)(e - l) : strlen(l);
        char line[8192];
        snprintf(line, sizeof line, "%.*s", (int)(len < sizeof line ? len : sizeof line - 1), l);
        json_t *j = json_loads(line, 0, NULL);
        if (j && strstr(jstr(j, "prompt"), needle))
            n++;
        json_decref(j);
        l = e ? e + 1 : NULL;
    }
    return n;
}

static void test_dry_run_cli(void **state)
{
    (void)state;
    static char out[1 << 16];
    char cmd[2048], pool[128];
    snprintf(pool, sizeof pool, "%s/dry-pool", g_tmp);
    /* offline writer: a two-theme campaign capped at 5, JSON Lines, nothing stored */
    char camp[128];
    snprintf(camp, sizeof camp, "%s/camp.json", g_tmp);
    FILE *f = fopen(camp, "w");
    assert_non_null(f);
    fputs("{\"name\":\"dry\",\"themes\":[{\"name\":\"Business and office\",\"count\":4},"
          "{\"name\":\"Food and hospitality\",\"count\":4}]}",
          f);
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "'%s' generate --campaign '%s' --out '%s' --dry-run=5 --seed 3 "
             "2>/dev/null",
             PX_PIXPIPE_BIN, camp, pool);
    assert_int_equal(run_cmd(cmd, out, sizeof out), 0);
    assert_int_equal(count_lines_with(out, ""), 5);
    assert_non_null(strstr(out, "\"theme\":\"Business and office\""));
    assert_non_null(strstr(out, "\"theme\":\"Food and hospitality\""));
    assert_non_null(strstr(out, "\"negative\":"));
    struct stat st;
    assert_int_not_equal(stat(pool, &st), 0); /* no pool made */
    /* the LLM writer, no --out and no image server: every image of the batch gets a prompt */
    fake_llm *l;
    assert_int_equal(fake_llm_start(&l), 0);
    fake_llm_set_kind(l, FAKE_LLM_KIND_LLAMACPP_OLD);
    snprintf(cmd, sizeof cmd,
             "'%s' generate --theme 'Cosmic cats' --type items --count 11 "
             "--dry-run --llm %s --llm-timeout 30 2>&1 >/dev/null",
             PX_PIXPIPE_BIN, fake_llm_url(l));
    assert_int_equal(run_cmd(cmd, out, sizeof out), 0);
    assert_non_null(strstr(out, "dry run: 11 prompts written"));
    assert_non_null(strstr(out, "\"dialect\":\"llamacpp-old\""));
    assert_int_equal(fake_llm_requests(l), 2); /* 8 + 3 */
    /* --llm-batch above 8 is honoured: one request of 11 */
    snprintf(cmd, sizeof cmd,
             "'%s' generate --theme 'Cosmic cats' --type items --count 11 "
             "--dry-run --llm %s --llm-batch 20 2>/dev/null",
             PX_PIXPIPE_BIN, fake_llm_url(l));
    assert_int_equal(run_cmd(cmd, out, sizeof out), 0);
    assert_int_equal(count_lines_with(out, ""), 11);
    assert_int_equal(fake_llm_requests(l), 3);
    char *req = fake_llm_last_request(l);
    assert_non_null(strstr(req, "\"max_tokens\":1120")); /* 11 x 96 + 64 */
    free(req);
    /* a bad --dry-run count is a usage error */
    snprintf(cmd, sizeof cmd,
             "'%s' generate --theme T --type items --count 1 --dry-run=0 "
             "2>&1",
             PX_PIXPIPE_BIN);
    assert_int_equal(run_cmd(cmd, out, sizeof out), 2);
    assert_non_null(strstr(out, "--dry-run"));
    fake_llm_stop(l);
}

int main(void)
{
    snprintf(g_tmp, sizeof g_tmp, "/tmp/px_genllm_XXXXXX");
    if (!mkdtemp(g_tmp))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llamacpp_old),
        cmocka_unit_test(test_llamacpp_new_and_no_max_tokens),
        cmocka_unit_test(test_context_refused),
        cmocka_unit_test(test_ollama),
        cmocka_unit_test(test_vllm),
        cmocka_unit_test(test_openai_completion_tokens),
        cmocka_unit_test(test_timeout_and_bad_dialect),
        cmocka_unit_test(test_manifest_records_server),
        cmocka_unit_test(test_dry_run_cli),
        cmocka_unit_test(test_dry_run_existing_pool),
        cmocka_unit_test(test_unreachable),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0)
        rc = rc ? rc : 1;
    return rc;
}
