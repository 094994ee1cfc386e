/*
 * Campaigns from the browser (issue 15): the JSON API behind the Campaigns
 * page, admin only, and the worker that runs one campaign at a time on the
 * served pool.
 *
 *   GET  /v1/campaigns                  runs of this pool, the active one, and what the
 *                                       operator configured (render servers, LLMs, local)
 *   POST /v1/campaigns                  {"campaign": {...}, "prompts": NAME, "render": [NAME..],
 *                                       "start": bool} -> 201 the new run (400 with "field")
 *   POST /v1/campaigns/preview          the same body -> 20 prompts, nothing recorded
 *   GET  /v1/campaigns/{id}             state, per theme and type done / rejected / quota,
 *                                       images per minute, ETA, servers, last rejections
 *   POST /v1/campaigns/{id}/start|resume|pause|stop
 *   POST /v1/campaigns/{id}/add         {"theme", "type", "n"}: raises that quota by n
 *   POST /v1/campaigns/{id}/replace-rejected   one more image for each expert rejection
 *
 * Where images are rendered and prompts come from is chosen by NAME from the
 * lists the operator gave `pixpipe serve` (--gen-server NAME=URL, --gen-llm
 * NAME=URL, --gen-model PATH for the local engine); a request that carries a
 * URL anywhere is refused, so a browser can never point the server at
 * another machine.
 *
 * The campaign is validated by the campaign parser the CLI uses
 * (px_gen_campaign_parse, same messages), and its record is a campaign run
 * in the pool's manifest (manifest_campaign_run.c) whose quotas the pipeline
 * writes into the same quotas table, so `pixpipe generate --out POOL` carries
 * on a campaign started here and the other way round.
 *
 * Threads: one campaign worker thread per server (so one campaign at a time
 * per pool) runs px_gen_run with its own render threads (one per configured
 * server chosen, or the local engine with --gen-threads), never on the HTTP
 * I/O threads. Pause, stop and "add N more" set the run's stop flag: the
 * pipeline finishes the images in flight and returns, and the worker records
 * the new state (or starts again with the raised quotas). A preview that asks
 * an LLM runs on a thread of its own with the request's connection suspended.
 * mu guards everything in the manager below it. A serve restart starts the
 * run left "running" again.
 */
#include "serve_internal.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gen/px_gen.h"
#include "manifest/px_manifest.h"

#define MAX_TARGETS 64
#define PREVIEW_N 20
#define CAMPAIGN_BODY_MAX (256 * 1024)

typedef struct target {
    char name[64];
    char url[512];
} target;

/* What the worker does when the run it stopped returns. */
typedef enum { AFTER_NONE = 0, AFTER_PAUSE, AFTER_STOP, AFTER_RELOAD, AFTER_QUIT } after_kind;

typedef struct preview preview;

struct px_campaign_mgr {
    px_server *srv;
    px_manifest *store; /* the pool's manifest, our own handle */
    char pool[PATH_MAX];
    target servers[MAX_TARGETS], llms[MAX_TARGETS];
    int nservers, nllms;
    px_gen_backend backend;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t th;
    int started, quit;
    int64_t queued; /* run to start next, 0: none */
    int64_t active; /* run whose px_gen_run is under way, 0: none */
    int stop_flag;  /* px_gen_opts.stop of the active run (atomic) */
    after_kind after;
    double t0; /* when the active run started (ms) */
    int good0; /* images toward its quotas then */
    px_gen_server_status sv[MAX_TARGETS];
    char sv_names[MAX_TARGETS][64];
    int nsv;
    int64_t sv_run;      /* the run sv describes (kept after it ends) */
    char line[512];      /* the pipeline's progress line */
    px_gen_local *local; /* the local engine, loaded at first use */

    pthread_t pv_th;
    int pv_running, pv_joinable;
};

/* ---- configuration ----------------------------------------------------------- */

/* "NAME=URL" entries into t; names are letters, digits and ._- */
static int parse_targets(const char *const *in, const char *opt, target *t, int *n, px_err *err)
{
    for (; in && *in; in++) {
        const char *eq = strchr(*in, '=');
        size_t nl = eq ? (size_t)(eq - *in) : 0;
        if (!eq || nl == 0 || nl >= sizeof t->name || strlen(eq + 1) >= sizeof t->url ||
            (strncmp(eq + 1, "http://", 7) && strncmp(eq + 1, "https://", 8)))
            return px_err_set(err, PX_EINVAL, "%s '%s': expected NAME=http://HOST:PORT", opt, *in);
        for (size_t i = 0; i < nl; i++) {
            char ch = (*in)[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-'))
                return px_err_set(err, PX_EINVAL,
                                  "%s '%s': a name has letters, digits, '.', '_' and '-' only", opt,
                                  *in);
        }
        if (*n == MAX_TARGETS)
            return px_err_set(err, PX_EINVAL, "%s: at most %d", opt, MAX_TARGETS);
        memcpy(t[*n].name, *in, nl);
        t[*n].name[nl] = '\0';
        if (!strcmp(t[*n].name, "local") || !strcmp(t[*n].name, "offline"))
            return px_err_set(err, PX_EINVAL, "%s '%s': '%s' is reserved", opt, *in, t[*n].name);
        for (int i = 0; i < *n; i++)
            if (!strcmp(t[i].name, t[*n].name))
                return px_err_set(err, PX_EINVAL, "%s: the name '%s' is given twice", opt,
                                  t[i].name);
        snprintf(t[*n].url, sizeof t->url, "%s", eq + 1);
        (*n)++;
    }
    return PX_OK;
}

static const target *find_target(const target *t, int n, const char *name)
{
    for (int i = 0; name && i < n; i++)
        if (!strcmp(t[i].name, name))
            return &t[i];
    return NULL;
}

/* ---- the request body ---------------------------------------------------------- */

/* A campaign as a request gives it: validated, with its settings. */
typedef struct request {
    px_gen_campaign camp;
    char *campaign_text; /* the campaign JSON as stored */
    char name[128];
    char prompts[64]; /* "offline" or an LLM's name */
    char render[MAX_TARGETS][64];
    int nrender, local, start;
    char *settings_text;
} request;

static void request_free(request *q)
{
    px_gen_campaign_free(&q->camp);
    free(q->campaign_text);
    free(q->settings_text);
    memset(q, 0, sizeof *q);
}

/* The form field a campaign parser message is about: the quoted field after
 * "campaign: " ("defaults.width" -> "width", "types.items" -> "types"),
 * "themes" for a theme's message, else "campaign". */
static void field_of(const char *msg, char *out, size_t cap)
{
    static const char *known[] = {"name",   "total",   "types",       "themes",  "width",
                                  "height", "steps",   "cfg",         "sampler", "model",
                                  "format", "quality", "allow_people"};
    const char *p = strstr(msg, "campaign: ");
    p = p ? p + 10 : msg;
    snprintf(out, cap, "campaign");
    if (!strncmp(p, "unknown field", 13))
        return;
    if (!strncmp(p, "themes[", 7) || !strncmp(p, "theme ", 6)) {
        snprintf(out, cap, "themes");
        return;
    }
    const char *q = strchr(p, '"');
    const char *e = q ? strchr(q + 1, '"') : NULL;
    if (q && e) {
        char f[64];
        snprintf(f, sizeof f, "%.*s", (int)(e - q - 1), q + 1);
        char *d = f;
        if (!strncmp(d, "defaults.", 9))
            d += 9;
        d[strcspn(d, ".")] = '\0';
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            if (!strcmp(d, known[i])) {
                snprintf(out, cap, "%s", known[i]);
                return;
            }
    }
    if (strstr(p, "theme"))
        snprintf(out, cap, "themes");
}

/* A string anywhere in v that looks like a URL, or a key that asks for one. */
static int names_url(json_t *v)
{
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        return strstr(s, "://") != NULL || !strncmp(s, "//", 2);
    }
    size_t i;
    json_t *x;
    const char *k;
    int found = 0;
    if (json_is_array(v)) {
        json_array_foreach(v, i, x)
        {
            found |= names_url(x);
        }
    }
    if (json_is_object(v)) {
        json_object_foreach(v, k, x)
        {
            found |= !strcmp(k, "url") || !strcmp(k, "urls") || !strcmp(k, "server") ||
                     !strcmp(k, "servers") || !strcmp(k, "llm") || names_url(x);
        }
    }
    return found;
}

/* Sets *bad to {"error": msg, "field": field} and returns PX_EINVAL. */
static int bad_field(json_t **bad, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad_field(json_t **bad, const char *field, const char *fmt, ...)
{
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    *bad = json_pack("{s:s,s:s}", "error", msg, "field", field);
    return PX_EINVAL;
}

/* The prompt source and the render targets of a request body. */
static int parse_targets_of(px_campaign_mgr *m, json_t *body, request *q, json_t **bad)
{
    json_t *pr = json_object_get(body, "prompts");
    const char *p = pr ? json_string_value(pr) : "offline";
    if (!p || (strcmp(p, "offline") && !find_target(m->llms, m->nllms, p)))
        return bad_field(bad, "prompts",
                         "prompts: '%s' is not a configured prompt source "
                         "(\"offline\"%s)",
                         p ? p : "?", m->nllms ? " or an LLM of the list" : "");
    if (!strcmp(p, "offline") && !m->srv->o.gen_vocab_dir)
        return bad_field(bad, "prompts",
                         "prompts: this server has no vocabulary folder for the "
                         "offline writer");
    snprintf(q->prompts, sizeof q->prompts, "%s", p);
    json_t *rd = json_object_get(body, "render");
    if (!json_is_array(rd) || json_array_size(rd) == 0 || json_array_size(rd) > MAX_TARGETS)
        return bad_field(bad, "render",
                         "render: expected a list of configured render server "
                         "names (or [\"local\"])");
    size_t i;
    json_t *x;
    json_array_foreach(rd, i, x)
    {
        const char *n = json_string_value(x);
        int is_local = n && !strcmp(n, "local");
        if (!n || (!is_local && !find_target(m->servers, m->nservers, n)))
            return bad_field(bad, "render", "render: '%s' is not a configured render server",
                             n ? n : "?");
        if (is_local && !m->srv->o.gen_model)
            return bad_field(bad, "render",
                             "render: this server has no local engine "
                             "(pixpipe serve --gen-model PATH)");
        for (int k = 0; k < q->nrender; k++)
            if (!strcmp(q->render[k], n))
                return bad_field(bad, "render", "render: '%s' is listed twice", n);
        q->local |= is_local;
        snprintf(q->render[q->nrender++], sizeof q->render[0], "%s", n);
    }
    if (q->local && q->nrender > 1)
        return bad_field(bad, "render",
                         "render: the local engine renders alone; choose it or "
                         "servers");
    return PX_OK;
}

/* The offline writer must know every theme before anything is recorded. */
static int check_vocab(px_campaign_mgr *m, request *q, json_t **bad)
{
    if (strcmp(q->prompts, "offline"))
        return PX_OK;
    for (int i = 0; i < q->camp.nthemes; i++) {
        px_gen_writer *w = NULL;
        char **v = NULL;
        size_t n = 0;
        px_err err;
        px_err_clear(&err);
        int st = px_gen_writer_offline_create(m->srv->o.gen_vocab_dir, 1, &w, &err);
        if (st == PX_OK)
            st = px_gen_writer_write(w, q->camp.themes[i].name, q->camp.themes[i].slug, 0, 1, &v,
                                     &n, NULL, 0, &err);
        px_manifest_strings_free(v, n);
        px_gen_writer_destroy(w);
        if (st != PX_OK) {
            const char *msg = err.msg;
            const char *cut = strstr(msg, " (looked for");
            return bad_field(bad, "themes", "%.*s; choose an LLM under Prompts for this one",
                             cut ? (int)(cut - msg) : (int)strlen(msg), msg);
        }
    }
    return PX_OK;
}

/* Parses and validates a create/preview body: PX_OK, or PX_EINVAL with *bad
 * the answer ({"error", "field"}). */
static int parse_request(px_campaign_mgr *m, const px_buf *body, request *q, json_t **bad)
{
    memset(q, 0, sizeof *q);
    *bad = NULL;
    json_error_t je;
    json_t *root = body->len ? json_loadb((const char *)body->data, body->len, 0, &je) : NULL;
    int st = PX_OK;
    if (!json_is_object(root)) {
        st = bad_field(bad, "campaign",
                       "body: expected a JSON object {\"campaign\": {...}, "
                       "\"prompts\": NAME, \"render\": [NAME]}");
    } else if (names_url(root)) {
        st = bad_field(bad, "render",
                       "a request never names a server or URL: render servers "
                       "and LLMs are chosen by name from the list the operator configured "
                       "(pixpipe serve --gen-server NAME=URL, --gen-llm NAME=URL)");
    }
    px_err err;
    px_err_clear(&err);
    json_t *cj = json_object_get(root, "campaign");
    if (st != PX_OK) {
    } else if (json_is_string(cj) && !strcmp(json_string_value(cj), "pool")) {
        /* the campaign the pool ran last (e.g. from the command line), taken over here */
        char *name = NULL, *at = NULL;
        if (px_manifest_last_campaign(m->store, &name, &q->campaign_text, &at, &err) != PX_OK)
            st = bad_field(bad, "campaign",
                           "campaign \"pool\": no campaign has run on this "
                           "pool yet");
        free(name);
        free(at);
    } else if (!json_is_object(cj)) {
        st = bad_field(bad, "campaign",
                       "campaign: expected an object (see docs/campaigns.md) "
                       "or \"pool\"");
    } else if (!(q->campaign_text = json_dumps(cj, JSON_COMPACT))) {
        st = bad_field(bad, "campaign", "out of memory");
    }
    if (st == PX_OK && px_gen_campaign_parse(q->campaign_text, strlen(q->campaign_text), "campaign",
                                             &q->camp, &err) != PX_OK) {
        char field[32];
        field_of(err.msg, field, sizeof field);
        st = bad_field(bad, field, "%s", err.msg);
    }
    if (st == PX_OK && (st = parse_targets_of(m, root, q, bad)) == PX_OK)
        st = check_vocab(m, q, bad);
    if (st == PX_OK) {
        json_t *s = json_pack("{s:s,s:[]}", "prompts", q->prompts, "render");
        for (int i = 0; s && i < q->nrender; i++)
            json_array_append_new(json_object_get(s, "render"), json_string(q->render[i]));
        q->settings_text = s ? json_dumps(s, JSON_COMPACT) : NULL;
        json_decref(s);
        snprintf(q->name, sizeof q->name, "%s", q->camp.name);
        q->start = json_is_true(json_object_get(root, "start"));
        if (!q->settings_text)
            st = bad_field(bad, "campaign", "out of memory");
    }
    json_decref(root);
    if (st != PX_OK)
        request_free(q);
    return st;
}

/* ---- the worker ------------------------------------------------------------------ */

/* The prompt writer of a run: the offline one or the named LLM. */
static int make_writer(px_campaign_mgr *m, const char *prompts, px_gen_writer **w, px_err *err)
{
    if (!strcmp(prompts, "offline"))
        return px_gen_writer_offline_create(m->srv->o.gen_vocab_dir,
                                            (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid(),
                                            w, err);
    const target *t = find_target(m->llms, m->nllms, prompts);
    if (!t)
        return px_err_set(err, PX_ENOTFOUND,
                          "prompt source '%s' is not configured in this "
                          "server (--gen-llm NAME=URL)",
                          prompts);
    px_gen_llm_opts lo = px_gen_llm_opts_default();
    lo.url = t->url;
    lo.model = m->srv->o.gen_llm_model ? m->srv->o.gen_llm_model : "";
    lo.api_key = m->srv->o.gen_llm_api_key;
    lo.vocab_dir = m->srv->o.gen_vocab_dir;
    return px_gen_writer_llm_create(&lo, w, err);
}

static void on_progress(void *ctx, const char *line, int final)
{
    (void) final;
    px_campaign_mgr *m = ctx;
    pthread_mutex_lock(&m->mu);
    snprintf(m->line, sizeof m->line, "%s", line);
    pthread_mutex_unlock(&m->mu);
}

static void on_servers(void *ctx, const px_gen_server_status *s, int n)
{
    px_campaign_mgr *m = ctx;
    pthread_mutex_lock(&m->mu);
    m->nsv = n < MAX_TARGETS ? n : MAX_TARGETS;
    for (int i = 0; i < m->nsv; i++) {
        m->sv[i] = s[i];
        m->sv[i].url = NULL; /* the page sees names only (sv_names, set by execute) */
    }
    pthread_mutex_unlock(&m->mu);
}

/* Images toward the quotas of camp now (each slot capped at its quota). */
static int good_toward(px_campaign_mgr *m, const px_gen_campaign *camp, int *total_quota)
{
    px_manifest_stat *s = NULL;
    size_t n = 0;
    int good = 0, quota = 0;
    if (px_manifest_stats(m->store, &s, &n, NULL) != PX_OK)
        n = 0;
    for (int t = 0; t < camp->nthemes; t++)
        for (int k = 0; k < PX_GEN_NTYPES; k++) {
            int q = camp->themes[t].quota[k];
            quota += q;
            for (size_t i = 0; i < n && q > 0; i++)
                if (!strcmp(s[i].theme_slug, camp->themes[t].slug) &&
                    !strcmp(s[i].type, px_gen_type_name(k))) {
                    int g = s[i].accepted + s[i].flagged;
                    good += g < q ? g : q;
                }
        }
    free(s);
    if (total_quota)
        *total_quota = quota;
    return good;
}

/* The local engine, loaded once for the server's life. */
static int get_local(px_campaign_mgr *m, px_err *err)
{
    if (m->local)
        return PX_OK;
    int threads = m->srv->o.gen_threads;
    if (threads <= 0)
        threads = px_cpu_count() / 2 > 0 ? px_cpu_count() / 2 : 1;
    px_gen_local_opts lo = {
        .model = m->srv->o.gen_model, .vocab = m->srv->o.gen_clip_vocab, .threads = threads};
    return px_gen_local_create(&lo, &m->local, err);
}

/* Runs campaign run id until it ends or is stopped; returns what the run's
 * state becomes and its message. */
static void execute(px_campaign_mgr *m, int64_t id)
{
    px_manifest_campaign_run run;
    px_gen_campaign camp;
    memset(&camp, 0, sizeof camp);
    px_gen_writer *writer = NULL;
    json_t *settings = NULL;
    px_err err;
    px_err_clear(&err);
    const char *urls[MAX_TARGETS];
    char names[MAX_TARGETS][64]; /* the servers' names, in the order of urls */
    int nurls = 0, local = 0;
    int st = px_manifest_campaign_run_get(m->store, id, &run, &err);
    if (st != PX_OK) {
        px_log(PX_LOG_WARN, "serve: campaign %lld: %s", (long long)id, err.msg);
        return;
    }
    if ((st = px_gen_campaign_from_run(&run, &camp, &err)) == PX_OK) {
        settings = json_loads(run.settings, 0, NULL);
        json_t *rd = json_object_get(settings, "render");
        const char *prompts = json_string_value(json_object_get(settings, "prompts"));
        size_t i;
        json_t *x;
        json_array_foreach(rd, i, x)
        {
            const char *n = json_string_value(x);
            const target *t = find_target(m->servers, m->nservers, n);
            if (n && !strcmp(n, "local"))
                local = 1;
            else if (t && nurls < MAX_TARGETS) {
                snprintf(names[nurls], sizeof names[0], "%s", t->name);
                urls[nurls++] = t->url;
            } else if (st == PX_OK)
                st = px_err_set(&err, PX_ENOTFOUND,
                                "render server '%s' is not configured in "
                                "this server (pixpipe serve --gen-server NAME=URL)",
                                n ? n : "?");
        }
        if (st == PX_OK && !nurls && !local)
            st = px_err_set(&err, PX_EINVAL, "no render server in the campaign's settings");
        if (st == PX_OK && local && !m->srv->o.gen_model)
            st = px_err_set(&err, PX_ENOTFOUND, "this server has no local engine (--gen-model)");
        if (st == PX_OK && local)
            st = get_local(m, &err);
        if (st == PX_OK)
            st = make_writer(m, prompts ? prompts : "offline", &writer, &err);
    }
    px_gen_summary sum;
    memset(&sum, 0, sizeof sum);
    if (st == PX_OK) {
        pthread_mutex_lock(&m->mu);
        m->t0 = px_now_ms();
        m->nsv = 0;
        m->sv_run = id;
        snprintf(m->sv_names[0], sizeof m->sv_names[0], "local");
        for (int i = 0; i < nurls; i++)
            memcpy(m->sv_names[i], names[i], sizeof names[i]);
        m->line[0] = '\0';
        pthread_mutex_unlock(&m->mu);
        int good0 = good_toward(m, &camp, NULL);
        pthread_mutex_lock(&m->mu);
        m->good0 = good0;
        pthread_mutex_unlock(&m->mu);
        px_gen_opts o;
        px_gen_opts_default(&o);
        o.pool = m->pool;
        o.campaign = &camp;
        o.writer = writer;
        o.style_path = m->srv->o.gen_style_path;
        o.backend = local ? PX_GEN_LOCAL : m->backend;
        o.servers = local ? NULL : urls;
        o.nservers = local ? 0 : nurls;
        o.local = local ? m->local : NULL;
        o.format = camp.format;
        if (camp.quality)
            o.quality = camp.quality;
        o.checks.faces = m->srv->o.detector ? PX_GEN_FACES_REJECT : PX_GEN_FACES_OFF;
        o.checks.face_detector = m->srv->o.detector;
        o.progress = on_progress;
        o.servers_status = on_servers;
        o.progress_ctx = m;
        o.progress_interval_ms = 500;
        o.stop = &m->stop_flag;
        st = px_gen_run(&o, &sum, &err);
    }
    /* the end is decided and recorded under mu, so a quota raised meanwhile is either seen
     * here (after == AFTER_RELOAD) or finds the run not active and its state final */
    pthread_mutex_lock(&m->mu);
    after_kind after = m->after;
    if (after == AFTER_RELOAD && !m->quit)
        m->queued = id; /* quotas raised while it ran: start again with them */
    const char *state = "running", *msg = "";
    char buf[700];
    if (after == AFTER_PAUSE) {
        state = "paused";
    } else if (after == AFTER_STOP) {
        state = "stopped";
        msg = "stopped from the Campaigns page";
    } else if (after == AFTER_RELOAD || after == AFTER_QUIT) {
        state = "running"; /* goes on (reload) or resumes when the server starts again */
    } else if (st != PX_OK) {
        state = "failed";
        snprintf(buf, sizeof buf, "%s", err.msg);
        msg = buf;
    } else if (sum.complete) {
        state = "done";
    } else {
        state = "paused";
        snprintf(buf, sizeof buf,
                 "ended short of the quotas (%d jobs failed, %d servers set "
                 "aside); resume to try again",
                 sum.jobs_failed, sum.servers_set_aside);
        msg = buf;
    }
    if (px_manifest_campaign_run_set_state(m->store, id, state, msg, &err) != PX_OK)
        px_log(PX_LOG_WARN, "serve: campaign %lld: %s", (long long)id, err.msg);
    m->active = 0;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    px_log(PX_LOG_INFO, "serve: campaign %lld '%s': %s%s%s", (long long)id, run.name, state,
           *msg ? ": " : "", msg);
    json_decref(settings);
    px_gen_writer_destroy(writer);
    px_gen_campaign_free(&camp);
    px_manifest_campaign_run_clear(&run);
}

static void *mgr_main(void *arg)
{
    px_campaign_mgr *m = arg;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        while (!m->quit && !m->queued)
            pthread_cond_wait(&m->cv, &m->mu);
        if (m->quit)
            break;
        int64_t id = m->queued;
        m->queued = 0;
        m->active = id;
        m->after = AFTER_NONE;
        __atomic_store_n(&m->stop_flag, 0, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&m->mu);
        execute(m, id);
        pthread_mutex_lock(&m->mu);
        m->active = 0;
        pthread_cond_broadcast(&m->cv);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* Asks the active run to stop for `after` (with mu held). */
static void stop_active_locked(px_campaign_mgr *m, after_kind after)
{
    if (!m->active)
        return;
    if (m->after != AFTER_STOP && m->after != AFTER_QUIT)
        m->after = after;
    __atomic_store_n(&m->stop_flag, 1, __ATOMIC_RELAXED);
}

/* ---- lifetime ---------------------------------------------------------------------- */

int px_campaign_init(px_server *srv, px_err *err)
{
    if (!srv->o.pool_dir && (srv->o.gen_servers || srv->o.gen_llms || srv->o.gen_model))
        return px_err_set(err, PX_EINVAL,
                          "--gen-server, --gen-llm and --gen-model are for the "
                          "Campaigns page, which needs --pool DIR");
    if (!srv->o.pool_dir)
        return PX_OK;
    px_campaign_mgr *m = px_calloc(1, sizeof *m);
    if (!m)
        return px_err_set(err, PX_ENOMEM, "campaigns: out of memory");
    m->srv = srv;
    m->backend = PX_GEN_A1111;
    int st = PX_OK;
    if (srv->o.gen_backend &&
        (st = px_gen_backend_parse(srv->o.gen_backend, &m->backend, err)) == PX_OK &&
        (m->backend == PX_GEN_COMFYUI || m->backend == PX_GEN_LOCAL))
        st = px_err_set(err, PX_EINVAL,
                        "--gen-backend '%s': a1111 or openai (the local engine "
                        "is --gen-model)",
                        srv->o.gen_backend);
    if (st == PX_OK)
        st = parse_targets(srv->o.gen_servers, "--gen-server", m->servers, &m->nservers, err);
    if (st == PX_OK)
        st = parse_targets(srv->o.gen_llms, "--gen-llm", m->llms, &m->nllms, err);
    if (st == PX_OK && !realpath(srv->o.pool_dir, m->pool))
        st = px_err_set(err, PX_ENOTFOUND, "pool '%s': %s", srv->o.pool_dir, strerror(errno));
    char db[PATH_MAX + 32];
    snprintf(db, sizeof db, "%s/%s", m->pool, PX_MANIFEST_FILE);
    if (st == PX_OK)
        st = px_manifest_open(db, 0, &m->store, err);
    if (st != PX_OK) {
        free(m);
        return st;
    }
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    /* a run left "running" by the last server goes on (the latest; any older one pauses) */
    px_manifest_campaign_run *runs = NULL;
    size_t n = 0;
    if (px_manifest_campaign_run_list(m->store, &runs, &n, err) == PX_OK)
        for (size_t i = 0; i < n; i++) {
            if (strcmp(runs[i].state, "running"))
                continue;
            if (!m->queued)
                m->queued = runs[i].id;
            else
                px_manifest_campaign_run_set_state(m->store, runs[i].id, "paused",
                                                   "another campaign was running", NULL);
        }
    px_manifest_campaign_runs_free(runs, n);
    if (m->queued)
        px_log(PX_LOG_INFO, "serve: campaign %lld resumes", (long long)m->queued);
    if (pthread_create(&m->th, NULL, mgr_main, m) != 0) {
        px_manifest_close(m->store);
        pthread_mutex_destroy(&m->mu);
        pthread_cond_destroy(&m->cv);
        free(m);
        return px_err_set(err, PX_EIO, "campaigns: cannot start the worker thread");
    }
    m->started = 1;
    srv->campaigns = m;
    return PX_OK;
}

void px_campaign_shutdown(px_server *srv)
{
    px_campaign_mgr *m = srv->campaigns;
    if (!m || !m->started)
        return;
    pthread_mutex_lock(&m->mu);
    m->quit = 1;
    stop_active_locked(m, AFTER_QUIT); /* stays "running": a restart resumes it */
    pthread_cond_broadcast(&m->cv);
    int pv = m->pv_running || m->pv_joinable;
    pthread_mutex_unlock(&m->mu);
    pthread_join(m->th, NULL);
    if (pv)
        pthread_join(m->pv_th, NULL);
    m->started = 0;
}

void px_campaign_free(px_server *srv)
{
    px_campaign_mgr *m = srv->campaigns;
    if (!m)
        return;
    px_campaign_shutdown(srv);
    px_gen_local_destroy(m->local);
    px_manifest_close(m->store);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
    srv->campaigns = NULL;
}

/* ---- answers ------------------------------------------------------------------------ */

static json_t *names_json(const target *t, int n)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(t[i].name));
    return a;
}

static json_t *config_json(px_campaign_mgr *m)
{
    return json_pack("{s:o,s:o,s:b,s:b,s:s,s:b}", "servers", names_json(m->servers, m->nservers),
                     "llms", names_json(m->llms, m->nllms), "local", m->srv->o.gen_model != NULL,
                     "offline", m->srv->o.gen_vocab_dir != NULL, "backend",
                     px_gen_backend_name(m->backend), "face_check", m->srv->o.detector != NULL);
}

static json_t *run_json(const px_manifest_campaign_run *run)
{
    json_t *camp = json_loads(run->campaign, 0, NULL), *set = json_loads(run->settings, 0, NULL),
           *extra = json_loads(run->extra, 0, NULL);
    return json_pack("{s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:o}", "id", (json_int_t)run->id, "name",
                     run->name, "state", run->state, "message", run->message, "created_by",
                     run->created_by, "created_at", run->created_at, "updated_at", run->updated_at,
                     "campaign", camp ? camp : json_object(), "settings", set ? set : json_object(),
                     "extra", extra ? extra : json_object());
}

/* A store error: the message without the manifest's path. */
static enum MHD_Result store_error(struct MHD_Connection *c, px_req *r, int st, const px_err *err)
{
    int code = st == PX_ENOTFOUND ? 404 : st == PX_EINVAL ? 400 : 500;
    px_log(code == 500 ? PX_LOG_WARN : PX_LOG_DEBUG, "serve: campaigns: %s", err->msg);
    if (code == 500)
        return px_reply_error(c, r, 500,
                              "campaigns: the manifest could not be read or written "
                              "(see the server log)");
    const char *cut = err->msg[0] == '/' ? strstr(err->msg, ": ") : NULL;
    return px_reply_error(c, r, code, "%s", cut ? cut + 2 : err->msg);
}

static enum MHD_Result list_runs(struct MHD_Connection *c, px_req *r, px_campaign_mgr *m)
{
    px_manifest_campaign_run *runs = NULL;
    size_t n = 0;
    px_err err;
    px_err_clear(&err);
    int st = px_manifest_campaign_run_list(m->store, &runs, &n, &err);
    if (st != PX_OK)
        return store_error(c, r, st, &err);
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        json_t *o = run_json(&runs[i]);
        json_object_del(o, "campaign");
        json_array_append_new(a, o);
    }
    px_manifest_campaign_runs_free(runs, n);
    pthread_mutex_lock(&m->mu);
    json_int_t active = m->active ? m->active : m->queued;
    pthread_mutex_unlock(&m->mu);
    /* the pool's last campaign (a command-line one can be taken over: "campaign": "pool") */
    char *name = NULL, *json = NULL, *at = NULL;
    json_t *last = json_null();
    if (px_manifest_last_campaign(m->store, &name, &json, &at, &err) == PX_OK)
        last = json_pack("{s:s,s:s}", "name", name, "created_at", at);
    free(name);
    free(json);
    free(at);
    return px_reply_json(c, r, 200,
                         json_pack("{s:o,s:o,s:o,s:o}", "runs", a ? a : json_array(), "active",
                                   active ? json_integer(active) : json_null(), "config",
                                   config_json(m), "pool_campaign", last ? last : json_null()));
}

/* Queues run id to start (with mu held): 409 text in why when another runs. */
static int queue_locked(px_campaign_mgr *m, int64_t id, char *why, size_t cap)
{
    if (m->active == id || m->queued == id) {
        if (m->active == id && m->after != AFTER_NONE && m->after != AFTER_RELOAD) {
            snprintf(why, cap, "campaign %lld is still stopping; try again in a moment",
                     (long long)id);
            return -1;
        }
        return 0;
    }
    if (m->active || m->queued) {
        snprintf(why, cap,
                 "campaign %lld is running in this pool; pause or stop it first (one "
                 "campaign at a time per pool)",
                 (long long)(m->active ? m->active : m->queued));
        return -1;
    }
    m->queued = id;
    pthread_cond_broadcast(&m->cv);
    return 0;
}

static enum MHD_Result create_run(struct MHD_Connection *c, px_req *r, px_campaign_mgr *m,
                                  int64_t account)
{
    request q;
    json_t *bad = NULL;
    if (parse_request(m, &r->body, &q, &bad) != PX_OK)
        return px_reply_json(c, r, 400, bad);
    char by[80]; /* the account's name; "admin" for the legacy token or local mode */
    snprintf(by, sizeof by, "%s", r->account[0] ? r->account : "admin");
    (void)account;
    int64_t id = 0;
    px_err err;
    px_err_clear(&err);
    int st = px_manifest_campaign_run_add(m->store, q.name, q.campaign_text, q.settings_text, by,
                                          "created", &id, &err);
    int start = q.start;
    request_free(&q);
    if (st != PX_OK)
        return store_error(c, r, st, &err);
    if (start) {
        char why[300];
        pthread_mutex_lock(&m->mu);
        int busy = queue_locked(m, id, why, sizeof why);
        if (!busy)
            px_manifest_campaign_run_set_state(m->store, id, "running", "", NULL);
        pthread_mutex_unlock(&m->mu);
        if (busy)
            px_manifest_campaign_run_set_state(m->store, id, "created", why, NULL);
    }
    px_manifest_campaign_run run;
    if ((st = px_manifest_campaign_run_get(m->store, id, &run, &err)) != PX_OK)
        return store_error(c, r, st, &err);
    json_t *o = run_json(&run);
    px_manifest_campaign_run_clear(&run);
    return px_reply_json(c, r, 201, o);
}

/* Per theme and type of camp: quota, done, rejected, failed, expert rejections. */
static json_t *slots_json(px_campaign_mgr *m, const px_gen_campaign *camp, int *quota, int *done)
{
    px_manifest_stat *s = NULL;
    size_t n = 0;
    if (px_manifest_stats(m->store, &s, &n, NULL) != PX_OK)
        n = 0;
    json_t *a = json_array();
    *quota = *done = 0;
    for (int t = 0; a && t < camp->nthemes; t++)
        for (int k = 0; k < PX_GEN_NTYPES; k++) {
            int q = camp->themes[t].quota[k];
            if (q <= 0)
                continue;
            px_manifest_stat z;
            memset(&z, 0, sizeof z);
            const px_manifest_stat *x = &z;
            for (size_t i = 0; i < n; i++)
                if (!strcmp(s[i].theme_slug, camp->themes[t].slug) &&
                    !strcmp(s[i].type, px_gen_type_name(k)))
                    x = &s[i];
            int good = x->accepted + x->flagged;
            *quota += q;
            *done += good < q ? good : q;
            json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i}", "theme",
                                               camp->themes[t].name, "theme_slug",
                                               camp->themes[t].slug, "type", px_gen_type_name(k),
                                               "quota", q, "done", good, "rejected", x->rejected,
                                               "failed", x->jobs_failed, "pending", x->jobs_pending,
                                               "expert_rejected", x->expert_rejected));
        }
    free(s);
    return a;
}

static json_t *rejections_json(px_campaign_mgr *m)
{
    px_manifest_rejection *v = NULL;
    size_t n = 0;
    json_t *a = json_array();
    if (px_manifest_recent_rejections(m->store, 10, &v, &n, NULL) != PX_OK)
        n = 0;
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, json_pack("{s:I,s:s,s:s,s:s,s:s}", "id", (json_int_t)v[i].id,
                                           "theme_slug", v[i].theme_slug, "type", v[i].type,
                                           "reason", v[i].reason, "at", v[i].at));
    px_manifest_rejections_free(v, n);
    return a;
}

/* The live part of a run's answer: rate, ETA, servers, the progress line. */
static void add_live(px_campaign_mgr *m, int64_t id, json_t *o, int quota, int done)
{
    static const char *k_state[] = {"ok", "backoff", "set aside"};
    json_t *sv = json_array();
    double rate = 0;
    pthread_mutex_lock(&m->mu);
    int live = m->active == id;
    for (int i = 0; sv && m->sv_run == id && i < m->nsv; i++)
        json_array_append_new(sv, json_pack("{s:s,s:i,s:i,s:s}", "name", m->sv_names[i], "done",
                                            m->sv[i].done, "failures", m->sv[i].failures, "state",
                                            live ? k_state[m->sv[i].state] : "idle"));
    if (live) {
        double min = (px_now_ms() - m->t0) / 60000.0;
        rate = min > 0.05 ? (done - m->good0) / min : 0;
        json_object_set_new(o, "progress", json_string(m->line));
        if (m->after == AFTER_PAUSE || m->after == AFTER_STOP)
            json_object_set_new(o, "state",
                                json_string(m->after == AFTER_PAUSE ? "pausing" : "stopping"));
    }
    int queued = m->queued == id;
    pthread_mutex_unlock(&m->mu);
    if (rate < 0)
        rate = 0;
    json_object_set_new(o, "live", json_boolean(live || queued));
    json_object_set_new(o, "servers", sv ? sv : json_array());
    json_object_set_new(o, "images_per_minute", json_real(rate));
    json_object_set_new(o, "eta_seconds",
                        rate > 0 && live ? json_integer((json_int_t)((quota - done) / rate * 60))
                                         : json_null());
}

/* Reads run id into *run: 0, or 1 when it answered the error (*ret). */
static int get_run(struct MHD_Connection *c, px_req *r, px_campaign_mgr *m, int64_t id,
                   px_manifest_campaign_run *run, enum MHD_Result *ret)
{
    px_err err;
    px_err_clear(&err);
    int st = px_manifest_campaign_run_get(m->store, id, run, &err);
    if (st == PX_OK)
        return 0;
    *ret = store_error(c, r, st, &err);
    return 1;
}

/* The run's state and progress, answered with code (200, or 202 for a stop under way). */
static enum MHD_Result run_detail(struct MHD_Connection *c, px_req *r, px_campaign_mgr *m,
                                  int64_t id, int code)
{
    px_manifest_campaign_run run;
    enum MHD_Result ret;
    if (get_run(c, r, m, id, &run, &ret))
        return ret;
    px_err err;
    px_err_clear(&err);
    json_t *o = run_json(&run);
    px_gen_campaign camp;
    memset(&camp, 0, sizeof camp);
    int quota = 0, done = 0;
    if (px_gen_campaign_from_run(&run, &camp, &err) == PX_OK) {
        json_object_set_new(o, "slots", slots_json(m, &camp, &quota, &done));
    } else {
        json_object_set_new(o, "slots", json_array());
        json_object_set_new(o, "campaign_error", json_string(err.msg));
    }
    px_gen_campaign_free(&camp);
    json_object_set_new(o, "totals", json_pack("{s:i,s:i}", "quota", quota, "done", done));
    json_object_set_new(o, "rejections", rejections_json(m));
    add_live(m, id, o, quota, done);
    px_manifest_campaign_run_clear(&run);
    return px_reply_json(c, r, code, o);
}

/* start / resume / pause / stop */
static enum MHD_Result run_action(struct MHD_Connection *c, px_req *r, px_campaign_mgr *m,
                                  int64_t id, const char *action)
{
    px_manifest_campaign_run run;
    enum MHD_Result ret;
    if (get_run(c, r, m, id, &run, &ret))
        return ret;
    px_err err;
    px_err_clear(&err);
    int st = PX_OK;
    char why[300] = "";
    int code = 200;
    int go = !strcmp(action, "start") || !strcmp(action, "resume");
    int stop = !strcmp(action, "stop");
    pthread_mutex_lock(&m->mu);
    int mine = m->active == id, queued = m->queued == id;
    if (go && !strcmp(run.state, "done")) {
        code = 409;
        snprintf(why, sizeof why,
                 "campaign %lld is done: every quota is met; add more images "
                 "to a theme to carry on",
                 (long long)id);
    } else if (go) {
        if (queue_locked(m, id, why, sizeof why))
            code = 409;
        else
            st = px_manifest_campaign_run_set_state(m->store, id, "running", "", &err);
    } else if (mine) {
        stop_active_locked(m, stop ? AFTER_STOP : AFTER_PAUSE); /* the worker records it */
        code = 202;
    } else if (queued || !strcmp(run.state, "running") || stop) {
        if (queued)
            m->queued = 0;
        if (!stop || strcmp(run.state, "done"))
            st = px_manifest_campaign_run_set_state(m->store, id, stop ? "stopped" : "paused",
                                                    stop ? "stopped from the Campaigns page" : "",
                                                    &err);
    } else {
        code = 409;
        snprintf(why, sizeof why, "campaign %lld is not running (%s)", (long long)id, run.state);
    }
    pthread_mutex_unlock(&m->mu);
    px_manifest_campaign_run_clear(&run);
    if (st != PX_OK)
        return store_error(c, r, st, &err);
    if (code == 409)
        return px_reply_error(c, r, 409, "%s", why);
    return run_detail(c, r, m, id, code);
}

/* Raises quotas of run id: extra.GROUP[KEY] += n (set to n with set != 0)
 * for each (key, n); the run picks them up (restarted when it runs, queued
 * again when it was done). *delta gets the total raise. */
static int raise_quotas(px_campaign_mgr *m, const px_manifest_campaign_run *run, const char *group,
                        const char *const *keys, const int *ns, int count, int set, int *delta,
                        px_err *err)
{
    json_t *extra = json_loads(run->extra, 0, NULL);
    if (!json_is_object(extra)) {
        json_decref(extra);
        extra = json_object();
    }
    json_t *g = json_object_get(extra, group);
    if (!json_is_object(g)) {
        g = json_object();
        json_object_set_new(extra, group, g);
    }
    *delta = 0;
    for (int i = 0; i < count; i++) {
        json_int_t old = json_integer_value(json_object_get(g, keys[i]));
        json_int_t v = set ? (ns[i] > old ? ns[i] : old) : old + ns[i];
        *delta += (int)(v - old);
        json_object_set_new(g, keys[i], json_integer(v));
    }
    char *text = json_dumps(extra, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(extra);
    if (!text)
        return px_err_set(err, PX_ENOMEM, "out of memory");
    int st = *delta ? px_manifest_campaign_run_set_extra(m->store, run->id, text, err) : PX_OK;
    free(text);
    if (st != PX_OK || !*delta)
        return st;
    pthread_mutex_lock(&m->mu);
    px_manifest_campaign_run now; /* its state now, not when the request began */
    if (m->active == run->id) {
        stop_active_locked(m, AFTER_RELOAD);
    } else if (m->queued != run->id &&
               (st = px_manifest_campaign_run_get(m->store, run->id, &now, err)) == PX_OK) {
        char why[300];
        if (!strcmp(now.state, "done") && queue_locked(m, run->id, why, sizeof why) == 0)
            st = px_manifest_campaign_run_set_state(m->store, run->id, "running", "", err);
        else if (!strcmp(now.state, "done"))
            st = px_manifest_campaign_run_set_state(m->store, run->id, "paused", why, err);
        px_manifest_campaign_run_clear(&now);
    }
    pthread_mutex_unlock(&m->mu);
    return st;
}

/* POST /v1/campaigns/{id}/add {"theme", "type", "n"} */
static enum MHD_Result add_more(struct MHD_Connection *c, px_req *r, px_campaign_mgr *m, int64_t id)
{
    json_t *b = json_loadb((const char *)r->body.data, r->body.len, 0, NULL);
    const char *theme = json_string_value(json_object_get(b, "theme"));
    const char *type_s = json_string_value(json_object_get(b, "type"));
    json_t *nv = json_object_get(b, "n");
    json_int_t n = json_integer_value(nv);
    px_manifest_campaign_run run;
    memset(&run, 0, sizeof run);
    px_gen_campaign camp;
    memset(&camp, 0, sizeof camp);
    px_err err;
    px_err_clear(&err);
    int type = -1, st = PX_OK, t = -1, code = 0;
    char msg[400] = "";
    if (!theme || !type_s || !json_is_integer(nv) || n < 1 || n > 1000000) {
        code = 400;
        snprintf(msg, sizeof msg,
                 "add: expected {\"theme\": NAME, \"type\": \"interiors\" | "
                 "\"exteriors\" | \"items\", \"n\": 1..1000000}");
    } else if (px_gen_type_parse(type_s, &type, &err) != PX_OK) {
        code = 400;
        snprintf(msg, sizeof msg, "add: \"type\": %s", err.msg);
    } else if ((st = px_manifest_campaign_run_get(m->store, id, &run, &err)) == PX_OK &&
               (st = px_gen_campaign_from_run(&run, &camp, &err)) == PX_OK) {
        for (int i = 0; i < camp.nthemes && t < 0; i++)
            if (!strcmp(camp.themes[i].name, theme) || !strcmp(camp.themes[i].slug, theme))
                t = i;
        if (t < 0) {
            code = 400;
            snprintf(msg, sizeof msg, "add: \"theme\": '%.100s' is not a theme of campaign %lld",
                     theme, (long long)id);
        }
    }
    int delta = 0;
    if (st == PX_OK && !code) {
        char key[128];
        snprintf(key, sizeof key, "%s/%s", camp.themes[t].slug, px_gen_type_name(type));
        const char *keys[1] = {key};
        int ns[1] = {(int)n};
        st = raise_quotas(m, &run, "add", keys, ns, 1, 0, &delta, &err);
    }
    json_decref(b);
    px_gen_campaign_free(&camp);
    px_manifest_campaign_run_clear(&run);
    if (st != PX_OK)
        return store_error(c, r, st, &err);
    if (code)
        return px_reply_error(c, r, code, "%s", msg);
    return run_detail(c, r, m, id, 200);
}

/* POST /v1/campaigns/{id}/replace-rejected: one more image per expert
 * rejection in each theme and type (automatic rejections are replaced by
 * the run itself). Idempotent: rejections already replaced count once. */
static enum MHD_Result replace_rejected(struct MHD_Connection *c, px_req *r, px_campaign_mgr *m,
                                        int64_t id)
{
    px_manifest_campaign_run run;
    enum MHD_Result ret;
    if (get_run(c, r, m, id, &run, &ret))
        return ret;
    px_gen_campaign camp;
    memset(&camp, 0, sizeof camp);
    px_err err;
    px_err_clear(&err);
    int st = PX_OK;
    px_manifest_stat *s = NULL;
    size_t n = 0;
    char keys_buf[3 * 64][128];
    const char *keys[3 * 64];
    int ns[3 * 64], count = 0, delta = 0;
    if ((st = px_gen_campaign_from_run(&run, &camp, &err)) == PX_OK &&
        (st = px_manifest_stats(m->store, &s, &n, &err)) == PX_OK) {
        for (size_t i = 0; i < n && count < 3 * 64; i++)
            for (int t = 0; t < camp.nthemes; t++) {
                int type = -1;
                px_err e2;
                if (strcmp(s[i].theme_slug, camp.themes[t].slug) || s[i].expert_rejected <= 0 ||
                    px_gen_type_parse(s[i].type, &type, &e2) != PX_OK)
                    continue;
                snprintf(keys_buf[count], sizeof keys_buf[0], "%s/%s", s[i].theme_slug, s[i].type);
                keys[count] = keys_buf[count];
                ns[count++] = s[i].expert_rejected;
            }
        st = raise_quotas(m, &run, "replace", keys, ns, count, 1, &delta, &err);
    }
    free(s);
    px_gen_campaign_free(&camp);
    px_manifest_campaign_run_clear(&run);
    if (st != PX_OK)
        return store_error(c, r, st, &err);
    (void)delta;
    return run_detail(c, r, m, id, 200);
}

/* ---- preview ------------------------------------------------------------------------ */

struct preview {
    px_campaign_mgr *m;
    struct MHD_Connection *conn;
    request q;
    json_t *answer;
    int code;
};

/* Up to PREVIEW_N prompts spread over the campaign's themes and types, made
 * as the run makes them (the writer's scene, the type's style suffix and
 * negative prompt); nothing is recorded. */
static void preview_make(preview *p)
{
    px_campaign_mgr *m = p->m;
    const px_gen_campaign *camp = &p->q.camp;
    px_gen_writer *w = NULL;
    px_gen_style style;
    px_err err;
    px_err_clear(&err);
    int st = make_writer(m, p->q.prompts, &w, &err);
    if (st == PX_OK)
        st = px_gen_style_load(m->srv->o.gen_style_path, &style, &err);
    int slots[3 * 1000][2], nslots = 0;
    for (int t = 0; t < camp->nthemes; t++)
        for (int k = 0; k < PX_GEN_NTYPES; k++)
            if (camp->themes[t].quota[k] > 0 && nslots < 3 * 1000) {
                slots[nslots][0] = t;
                slots[nslots++][1] = k;
            }
    json_t *a = json_array(), *quotas = json_array();
    int made = 0, total = 0;
    for (int i = 0; i < nslots; i++) {
        const px_gen_theme *th = &camp->themes[slots[i][0]];
        total += th->quota[slots[i][1]];
        json_array_append_new(quotas, json_pack("{s:s,s:s,s:i}", "theme", th->name, "type",
                                                px_gen_type_name(slots[i][1]), "quota",
                                                th->quota[slots[i][1]]));
    }
    int per = nslots ? (PREVIEW_N + nslots - 1) / nslots : 0;
    for (int i = 0; st == PX_OK && i < nslots && made < PREVIEW_N; i++) {
        const px_gen_theme *th = &camp->themes[slots[i][0]];
        int type = slots[i][1];
        int want = per < PREVIEW_N - made ? per : PREVIEW_N - made;
        char **v = NULL;
        size_t n = 0;
        st = px_gen_writer_write(w, th->name, th->slug, type, want, &v, &n, NULL, 0, &err);
        for (size_t j = 0; st == PX_OK && j < n && made < PREVIEW_N; j++, made++) {
            char prompt[4096], neg[2048];
            snprintf(prompt, sizeof prompt, "%s, %s", v[j], style.suffix[type]);
            snprintf(neg, sizeof neg, "%s%s%s", style.negative[type],
                     camp->allow_people ? "" : ", ", camp->allow_people ? "" : style.no_people);
            json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:s,s:s}", "theme", th->name, "type",
                                               px_gen_type_name(type), "scene", v[j], "prompt",
                                               prompt, "negative", neg));
        }
        px_manifest_strings_free(v, n);
    }
    if (st != PX_OK) {
        p->code = 502;
        json_decref(a);
        json_decref(quotas);
        p->answer = json_pack("{s:s,s:s}", "error", err.msg, "field", "prompts");
    } else {
        p->code = 200;
        p->answer = json_pack("{s:o,s:o,s:i,s:s}", "prompts", a, "quotas", quotas, "total", total,
                              "writer", px_gen_writer_name(w));
    }
    px_gen_writer_destroy(w);
}

static void *preview_main(void *arg)
{
    preview *p = arg;
    preview_make(p);
    px_campaign_mgr *m = p->m;
    struct MHD_Connection *conn = p->conn;
    pthread_mutex_lock(&m->mu);
    m->pv_running = 0;
    m->pv_joinable = 1;
    pthread_mutex_unlock(&m->mu);
    MHD_resume_connection(conn); /* p belongs to the request again from here */
    return NULL;
}

static void preview_free(preview *p)
{
    if (!p)
        return;
    request_free(&p->q);
    json_decref(p->answer);
    free(p);
}

static enum MHD_Result start_preview(struct MHD_Connection *c, px_req *r, px_campaign_mgr *m)
{
    preview *p = px_calloc(1, sizeof *p);
    if (!p)
        return px_reply_error(c, r, 500, "out of memory");
    json_t *bad = NULL;
    if (parse_request(m, &r->body, &p->q, &bad) != PX_OK) {
        preview_free(p);
        return px_reply_json(c, r, 400, bad);
    }
    p->m = m;
    p->conn = c;
    pthread_mutex_lock(&m->mu);
    if (m->pv_running || m->quit) {
        pthread_mutex_unlock(&m->mu);
        preview_free(p);
        return px_reply_error(c, r, 503, "a preview is being made; try again in a moment");
    }
    if (m->pv_joinable) /* the last one has resumed its connection: nothing left to wait for */
        pthread_join(m->pv_th, NULL);
    m->pv_joinable = 0;
    r->campaign = p;
    MHD_suspend_connection(c);
    if (pthread_create(&m->pv_th, NULL, preview_main, p) != 0) {
        pthread_mutex_unlock(&m->mu);
        MHD_resume_connection(c);
        p->code = 503;
        p->answer = json_pack("{s:s}", "error", "cannot start a preview thread");
        return MHD_YES;
    }
    m->pv_running = 1;
    pthread_mutex_unlock(&m->mu);
    return MHD_YES;
}

enum MHD_Result px_campaign_resumed(struct MHD_Connection *c, px_req *r)
{
    preview *p = r->campaign;
    r->campaign = NULL;
    json_t *a = p->answer;
    p->answer = NULL;
    int code = p->code ? p->code : 500;
    preview_free(p);
    if (!a)
        return px_reply_error(c, r, 500, "preview: out of memory");
    return px_reply_json(c, r, code, a);
}

void px_campaign_req_free(px_req *r)
{
    preview_free(r->campaign);
    r->campaign = NULL;
}

/* ---- routing -------------------------------------------------------------------------- */

/* "/v1/campaigns/{id}[/action]": the id and the action ("" for none); 0 when malformed. */
static int split_path(const char *rest, int64_t *id, char *action, size_t cap)
{
    int64_t v = 0;
    int digits = 0;
    while (*rest >= '0' && *rest <= '9' && digits < 18) {
        v = v * 10 + (*rest++ - '0');
        digits++;
    }
    if (!digits || v <= 0 || (*rest && *rest != '/'))
        return 0;
    *id = v;
    snprintf(action, cap, "%s", *rest ? rest + 1 : "");
    return 1;
}

enum MHD_Result px_campaign_handle(struct MHD_Connection *c, px_req *r, const char *url)
{
    px_campaign_mgr *m = r->srv->campaigns;
    if (!m)
        return px_reply_error(c, r, 404, "campaigns need a pool: pixpipe serve --pool DIR");
    enum MHD_Result ret;
    int64_t account = 0;
    if (px_auth_require(c, r, PX_ROLE_ADMIN, &account, &ret))
        return ret;
    int post = !strcmp(r->method, "POST");
    int get = !strcmp(r->method, "GET") || !strcmp(r->method, "HEAD");
    if (post && px_auth_uses_csrf(c, r) && px_guard_csrf(c, r, &ret))
        return ret;
    if (post && r->body.len > CAMPAIGN_BODY_MAX)
        return px_reply_error(c, r, 413, "campaign request over %d bytes", CAMPAIGN_BODY_MAX);
    const char *rest = url + strlen("/v1/campaigns");
    const char *want = NULL;
    int64_t id = 0;
    char action[32] = "";
    if (!*rest || !strcmp(rest, "/")) {
        if (get)
            return list_runs(c, r, m);
        if (post)
            return create_run(c, r, m, account);
        want = "GET, POST";
    } else if (!strcmp(rest, "/preview")) {
        if (post)
            return start_preview(c, r, m);
        want = "POST";
    } else if (*rest == '/' && split_path(rest + 1, &id, action, sizeof action)) {
        if (!*action) {
            if (get)
                return run_detail(c, r, m, id, 200);
            want = "GET";
        } else if (!strcmp(action, "start") || !strcmp(action, "resume") ||
                   !strcmp(action, "pause") || !strcmp(action, "stop")) {
            if (post)
                return run_action(c, r, m, id, action);
            want = "POST";
        } else if (!strcmp(action, "add")) {
            if (post)
                return add_more(c, r, m, id);
            want = "POST";
        } else if (!strcmp(action, "replace-rejected")) {
            if (post)
                return replace_rejected(c, r, m, id);
            want = "POST";
        }
    }
    if (!want)
        return px_reply_error(c, r, 404, "no such endpoint: %.100s", url);
    return px_reply_error(c, r, 405, "method %.8s not allowed on %.100s; use %s", r->method, url,
                          want);
}
