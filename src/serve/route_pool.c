/*
 * The pool endpoints, backed by the generation pipeline's SQLite manifest
 * (src/manifest/px_manifest.h):
 *
 *   GET  /v1/pool/stats                    per theme and type: quota, automatic check
 *                                          results and expert verdicts
 *   GET  /v1/pool/images                   ?theme= &type= &status= &verdict= &after= &limit=
 *   GET  /v1/pool/images/{id}              the image file (?format=json: its metadata
 *                                          and every verdict)
 *   POST /v1/pool/images/{id}/verdict      {"verdict", "reviewer", "reason"}
 *
 * Files are found by id through the manifest, and the stored relative path is
 * resolved and checked to lie inside the pool folder before it is opened, so
 * neither a URL nor a tampered manifest row can reach another file.
 *
 * Concurrent reviewers: a verdict is an appended row (never an update), so
 * two experts judging the same image at once both keep theirs; the latest
 * one is the image's state, and the history is kept for the record. The
 * store handle is thread-safe and SQLite's busy timeout absorbs contention
 * with a `generate` run writing the same manifest.
 */
#include "serve_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "manifest/px_manifest.h"

#define VERDICT_BODY_MAX (64 * 1024)

struct px_pool_ctx {
    px_manifest *store;
    char dir[PATH_MAX]; /* the pool folder, resolved (no symlinks, no trailing '/') */
    /* the campaign's review settings, read again after CFG_TTL seconds so a
     * new campaign takes effect without a restart; cfg_mu guards them */
    pthread_mutex_t cfg_mu;
    px_manifest_review_cfg cfg;
    double cfg_at;
    /* WAL checkpoints on a thread of their own, with a handle of their own,
     * so no request waits for the database file's fsync; ck_mu guards stop */
    px_manifest *ck_store;
    pthread_t ck_thread;
    int ck_started, ck_stop;
    pthread_mutex_t ck_mu;
    pthread_cond_t ck_cv;
};

#define CFG_TTL 5.0
#define CHECKPOINT_MS 1000

static void *checkpointer(void *arg)
{
    px_pool_ctx *p = arg;
    pthread_mutex_lock(&p->ck_mu);
    while (!p->ck_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += CHECKPOINT_MS / 1000;
        pthread_cond_timedwait(&p->ck_cv, &p->ck_mu, &ts);
        if (p->ck_stop)
            break;
        pthread_mutex_unlock(&p->ck_mu);
        px_err err = {{0}};
        if (px_manifest_checkpoint(p->ck_store, &err) != PX_OK)
            px_log(PX_LOG_WARN, "serve: pool: %s", err.msg);
        pthread_mutex_lock(&p->ck_mu);
    }
    pthread_mutex_unlock(&p->ck_mu);
    return NULL;
}

/* The second handle and its thread; without them commits checkpoint as usual. */
static void checkpointer_start(px_pool_ctx *p, const char *db)
{
    px_err err = {{0}};
    pthread_condattr_t ca;
    pthread_mutex_init(&p->ck_mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->ck_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (px_manifest_open(db, 0, &p->ck_store, &err) != PX_OK) {
        px_log(PX_LOG_WARN, "serve: pool: no checkpoint handle: %s", err.msg);
        return;
    }
    if (pthread_create(&p->ck_thread, NULL, checkpointer, p) != 0) {
        px_manifest_close(p->ck_store);
        p->ck_store = NULL;
        return;
    }
    p->ck_started = 1;
    if (px_manifest_wal_autocheckpoint(p->store, 0, &err) != PX_OK)
        px_log(PX_LOG_WARN, "serve: pool: %s", err.msg);
}

int px_pool_open(px_server *srv, const char *pool_dir, px_err *err)
{
    px_pool_ctx *p = px_calloc(1, sizeof *p);
    if (!p)
        return px_err_set(err, PX_ENOMEM, "pool: out of memory");
    if (!realpath(pool_dir, p->dir)) {
        free(p);
        return px_err_set(err, PX_ENOTFOUND, "pool '%s': %s", pool_dir, strerror(errno));
    }
    char db[PATH_MAX + 32];
    snprintf(db, sizeof db, "%s/%s", p->dir, PX_MANIFEST_FILE);
    struct stat stt;
    if (stat(db, &stt) != 0) {
        free(p);
        return px_err_set(err, PX_ENOTFOUND,
                          "pool '%s': no %s in it (make one with pixpipe "
                          "generate)",
                          pool_dir, PX_MANIFEST_FILE);
    }
    int st = px_manifest_open(db, 0, &p->store, err);
    if (st != PX_OK) {
        free(p);
        return st;
    }
    pthread_mutex_init(&p->cfg_mu, NULL);
    checkpointer_start(p, db);
    srv->pool = p;
    return PX_OK;
}

px_manifest *px_pool_store(px_server *srv)
{
    return srv->pool ? srv->pool->store : NULL;
}

const char *px_pool_dir(px_server *srv)
{
    return srv->pool ? srv->pool->dir : NULL;
}

int px_pool_review_cfg(px_server *srv, int *votes, json_t **reasons, px_err *err)
{
    px_pool_ctx *p = srv->pool;
    double now = px_auth_now();
    pthread_mutex_lock(&p->cfg_mu);
    int st = PX_OK;
    if (!p->cfg_at || now - p->cfg_at > CFG_TTL) {
        px_manifest_review_cfg c;
        if ((st = px_manifest_review_cfg_get(p->store, &c, err)) == PX_OK) {
            px_manifest_review_cfg_free(&p->cfg);
            p->cfg = c;
            p->cfg_at = now;
        }
    }
    if (!st && votes)
        *votes = p->cfg.votes;
    if (!st && reasons) {
        *reasons = json_array();
        for (size_t i = 0; i < p->cfg.n_reasons; i++)
            json_array_append_new(*reasons, json_string(p->cfg.reasons[i]));
    }
    pthread_mutex_unlock(&p->cfg_mu);
    return st;
}

void px_pool_close(px_server *srv)
{
    if (!srv->pool)
        return;
    px_pool_ctx *p = srv->pool;
    if (p->ck_started) {
        pthread_mutex_lock(&p->ck_mu);
        p->ck_stop = 1;
        pthread_cond_signal(&p->ck_cv);
        pthread_mutex_unlock(&p->ck_mu);
        pthread_join(p->ck_thread, NULL);
    }
    px_manifest_close(p->ck_store);
    pthread_cond_destroy(&p->ck_cv);
    pthread_mutex_destroy(&p->ck_mu);
    px_manifest_close(srv->pool->store);
    px_manifest_review_cfg_free(&srv->pool->cfg);
    pthread_mutex_destroy(&srv->pool->cfg_mu);
    free(srv->pool);
    srv->pool = NULL;
}

int px_pool_available(const px_server *srv)
{
    return srv->pool != NULL;
}

static int store_http_status(int st)
{
    return st == PX_EINVAL ? 400 : st == PX_ENOTFOUND ? 404 : st == PX_ELIMIT ? 413 : 500;
}

/* A store error as an answer. The store's messages name the manifest's path,
 * which is nobody's business outside this machine: the full text goes to the
 * log, the client gets the status and a message without paths (the store's
 * own text only for bad input, minus a leading "PATH: "). */
static enum MHD_Result store_error(struct MHD_Connection *c, px_req *r, int st, const px_err *err)
{
    int code = store_http_status(st);
    px_log(code == 500 ? PX_LOG_WARN : PX_LOG_DEBUG, "serve: pool: %s", err->msg);
    if (code == 404)
        return px_reply_error(c, r, 404, "no image with id %lld in the pool", (long long)r->id);
    if (code == 500)
        return px_reply_error(c, r, 500, "pool: the manifest could not be read or written "
                                         "(see the server log)");
    const char *m = err->msg;
    const char *cut = m[0] == '/' ? strstr(m, ": ") : NULL;
    return px_reply_error(c, r, code, "%s", cut ? cut + 2 : m);
}

static json_t *image_json(const px_manifest_image *m)
{
    json_t *checks = m->checks && *m->checks ? json_loads(m->checks, 0, NULL) : NULL;
    if (!checks)
        checks = json_object();
    char phash[20];
    snprintf(phash, sizeof phash, "%016llx", (unsigned long long)m->phash);
    return json_pack("{s:I,s:s,s:s,s:s,s:s,s:I,s:i,s:i,s:s,s:s,s:s,s:o,s:s,s:s,s:I,s:s,s:s,s:s,"
                     "s:s,s:s,s:s}",
                     "id", (json_int_t)m->id, "theme", m->theme, "theme_slug", m->theme_slug,
                     "type", m->type, "sha256", m->sha256, "bytes", (json_int_t)m->bytes, "width",
                     m->width, "height", m->height, "phash", phash, "status", m->status, "reason",
                     m->reason, "checks", checks, "prompt", m->prompt, "negative", m->negative,
                     "seed", (json_int_t)m->seed, "backend", m->backend, "model", m->model,
                     "created_at", m->created_at, "verdict", m->verdict, "verdict_by",
                     m->verdict_by, "file", ""); /* "file" is filled in by the caller */
}

static void set_file_url(json_t *o, int64_t id)
{
    char url[64];
    snprintf(url, sizeof url, "/v1/pool/images/%lld", (long long)id);
    json_object_set_new(o, "file", json_string(url));
}

json_t *px_pool_image_json(const px_manifest_image *m)
{
    json_t *o = image_json(m);
    if (o)
        set_file_url(o, m->id);
    return o;
}

static enum MHD_Result pool_stats(struct MHD_Connection *c, px_req *r)
{
    px_manifest_stat *s = NULL;
    size_t n = 0;
    px_err err = {{0}};
    int st = px_manifest_stats(r->srv->pool->store, &s, &n, &err);
    if (st != PX_OK)
        return store_error(c, r, st, &err);
    json_t *slots = json_array();
    long long tq = 0, ta = 0, tr = 0, tp = 0, tu = 0, tg = 0;
    for (size_t i = 0; i < n; i++) {
        int need = s[i].quota - s[i].approved;
        json_array_append_new(
            slots, json_pack("{s:s,s:s,s:s,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i,s:i}", "theme",
                             s[i].theme, "theme_slug", s[i].theme_slug, "type", s[i].type, "quota",
                             s[i].quota, "accepted", s[i].accepted, "flagged", s[i].flagged,
                             "rejected", s[i].rejected, "jobs_pending", s[i].jobs_pending,
                             "jobs_failed", s[i].jobs_failed, "approved", s[i].approved,
                             "expert_rejected", s[i].expert_rejected, "skipped", s[i].skipped,
                             "unreviewed", s[i].unreviewed, "need", need > 0 ? need : 0));
        tq += s[i].quota;
        ta += s[i].approved;
        tr += s[i].expert_rejected;
        tp += s[i].unreviewed;
        tu += s[i].skipped;
        tg += s[i].accepted + s[i].flagged;
    }
    free(s);
    return px_reply_json(c, r, 200,
                         json_pack("{s:o,s:{s:I,s:I,s:I,s:I,s:I,s:I}}", "slots", slots, "totals",
                                   "quota", (json_int_t)tq, "images", (json_int_t)tg, "approved",
                                   (json_int_t)ta, "expert_rejected", (json_int_t)tr, "unreviewed",
                                   (json_int_t)tp, "skipped", (json_int_t)tu));
}

/* A short filter string from the query: NULL when absent or empty, or an
 * error when it is implausibly long or not in `allowed` (NULL: anything). */
static int query_word(struct MHD_Connection *c, const char *key, const char *const *allowed,
                      const char **out, px_err *err)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);
    *out = NULL;
    if (!v || !*v)
        return PX_OK;
    if (strlen(v) > 96)
        return px_err_set(err, PX_EINVAL, "query %s: longer than 96 characters", key);
    if (allowed) {
        for (int i = 0; allowed[i]; i++)
            if (!strcmp(v, allowed[i])) {
                *out = v;
                return PX_OK;
            }
        return px_err_set(err, PX_EINVAL, "query %s='%.40s': not one of the known values", key, v);
    }
    *out = v;
    return PX_OK;
}

static enum MHD_Result pool_images(struct MHD_Connection *c, px_req *r)
{
    static const char *const types[] = {"interiors", "exteriors", "items", NULL};
    static const char *const statuses[] = {"accepted", "flagged", "rejected", NULL};
    static const char *const verdicts[] = {"any", "none", "approve", "reject", "skip", NULL};
    px_manifest_filter f;
    memset(&f, 0, sizeof f);
    const char *verdict;
    px_err err = {{0}};
    if (query_word(c, "theme", NULL, &f.theme_slug, &err) ||
        query_word(c, "type", types, &f.type, &err) ||
        query_word(c, "status", statuses, &f.status, &err) ||
        query_word(c, "verdict", verdicts, &verdict, &err))
        return px_reply_error(c, r, 400, "%s", err.msg);
    f.verdict = PX_VERDICT_FILTER_ANY;
    if (verdict) {
        for (int i = 0; verdicts[i]; i++)
            if (!strcmp(verdict, verdicts[i]))
                f.verdict = (px_verdict_filter)i; /* same order as the enum */
    }
    const char *v;
    f.limit = 100;
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit"))) {
        char *end;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno || x < 1 || x > 1000)
            return px_reply_error(c, r, 400, "query limit='%.40s': expected 1..1000", v);
        f.limit = (int)x;
    }
    if ((v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after"))) {
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, 10);
        if (!*v || *end || errno || x < 0)
            return px_reply_error(c, r, 400, "query after='%.40s': expected an image id >= 0", v);
        f.after_id = x;
    }
    px_manifest_image *imgs = NULL;
    size_t n = 0;
    int st = px_manifest_list_images(r->srv->pool->store, &f, &imgs, &n, &err);
    if (st != PX_OK)
        return store_error(c, r, st, &err);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = image_json(&imgs[i]);
        if (o)
            set_file_url(o, imgs[i].id);
        json_array_append_new(arr, o);
    }
    /* a full page may have a next one: the client asks again with after=next_after */
    json_t *next =
        n == (size_t)f.limit && n > 0 ? json_integer((json_int_t)imgs[n - 1].id) : json_null();
    px_manifest_images_free(imgs, n);
    return px_reply_json(
        c, r, 200,
        json_pack("{s:o,s:I,s:o}", "images", arr, "count", (json_int_t)n, "next_after", next));
}

static const char *content_type_of(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot && (!strcmp(dot, ".png") || !strcmp(dot, ".PNG")))
        return "image/png";
    if (dot && (!strcmp(dot, ".webp") || !strcmp(dot, ".WEBP")))
        return "image/webp";
    if (dot && (!strcmp(dot, ".jpg") || !strcmp(dot, ".jpeg") || !strcmp(dot, ".JPG")))
        return "image/jpeg";
    return "application/octet-stream";
}

static enum MHD_Result pool_image_json(struct MHD_Connection *c, px_req *r, px_manifest_image *m)
{
    px_manifest_verdict *v = NULL;
    size_t n = 0;
    px_err err = {{0}};
    int st = px_manifest_list_verdicts(r->srv->pool->store, m->id, &v, &n, &err);
    if (st != PX_OK)
        return store_error(c, r, st, &err);
    json_t *o = image_json(m);
    set_file_url(o, m->id);
    json_t *hist = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(hist,
                              json_pack("{s:I,s:s,s:s,s:s,s:s}", "id", (json_int_t)v[i].id,
                                        "reviewer", v[i].reviewer, "verdict", v[i].verdict,
                                        "reason", v[i].reason, "created_at", v[i].created_at));
    px_manifest_verdicts_free(v, n);
    json_object_set_new(o, "verdicts", hist);
    return px_reply_json(c, r, 200, o);
}

int px_pool_file(px_server *srv, const char *rel, char *real)
{
    char joined[2 * PATH_MAX];
    const char *dir = srv->pool->dir;
    size_t dl = strlen(dir);
    snprintf(joined, sizeof joined, "%s/%s", dir, rel);
    return rel[0] != '/' && realpath(joined, real) && !strncmp(real, dir, dl) && real[dl] == '/';
}

enum MHD_Result px_pool_send_file(struct MHD_Connection *c, px_req *r, const char *path,
                                  const char *etag, const char *ctype)
{
    const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    struct MHD_Response *resp;
    int code = 200;
    if (inm && !strcmp(inm, etag)) {
        resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        code = 304;
    } else {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
            if (fd >= 0)
                close(fd);
            px_log(PX_LOG_WARN, "serve: image %lld: cannot open its file", (long long)r->id);
            return px_reply_error(c, r, 404, "image %lld: its file cannot be opened",
                                  (long long)r->id);
        }
        resp = MHD_create_response_from_fd((uint64_t)sb.st_size, fd);
        if (!resp)
            close(fd);
    }
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, etag);
    /* an id always names the same bytes (a re-render gets a new id) */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "private, max-age=86400");
    return px_reply_response(c, r, code, resp, code == 200 ? ctype : NULL);
}

static enum MHD_Result pool_image(struct MHD_Connection *c, px_req *r)
{
    px_manifest_image m;
    px_err err = {{0}};
    int st = px_manifest_get_image(r->srv->pool->store, r->id, &m, &err);
    if (st != PX_OK)
        return store_error(c, r, st, &err);
    const char *fmt = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format");
    if (fmt && !strcmp(fmt, "json")) {
        enum MHD_Result ret = pool_image_json(c, r, &m);
        px_manifest_image_clear(&m);
        return ret;
    }
    char real[PATH_MAX], etag[80];
    enum MHD_Result ret;
    /* the stored path must resolve to a file under the pool folder */
    if (!px_pool_file(r->srv, m.path, real)) {
        px_log(PX_LOG_WARN, "serve: image %lld: file '%s' is missing from the pool",
               (long long)r->id, m.path);
        ret = px_reply_error(c, r, 404, "image %lld: its file is missing from the pool",
                             (long long)r->id);
        px_manifest_image_clear(&m);
        return ret;
    }
    snprintf(etag, sizeof etag, "\"%.64s\"", m.sha256);
    ret = px_pool_send_file(c, r, real, etag, content_type_of(m.path));
    px_manifest_image_clear(&m);
    return ret;
}

/* Checks the verdict body's fields; NULL when they are fine, else the message. */
static const char *verdict_fault(const char *verdict, const char *reviewer, const char *reason)
{
    if (!verdict ||
        (strcmp(verdict, "approve") && strcmp(verdict, "reject") && strcmp(verdict, "skip")))
        return "verdict: field \"verdict\" must be \"approve\", \"reject\" or \"skip\"";
    if (!reviewer || !*reviewer)
        return "verdict: field \"reviewer\" must be a non-empty string";
    if (!reason)
        return "verdict: field \"reason\" must be a string";
    if (!strcmp(verdict, "reject") && !*reason)
        return "verdict: a rejection needs a \"reason\"";
    return NULL;
}

static enum MHD_Result pool_verdict(struct MHD_Connection *c, px_req *r)
{
    if (r->body.len == 0)
        return px_reply_error(c, r, 400,
                              "verdict: empty body; expected JSON {\"verdict\": "
                              "\"approve|reject|skip\", \"reviewer\": \"...\"}");
    if (r->body.len > VERDICT_BODY_MAX)
        return px_reply_error(c, r, 413, "verdict: body over %d bytes", VERDICT_BODY_MAX);
    json_error_t je;
    json_t *v = json_loadb((const char *)r->body.data, r->body.len, JSON_REJECT_DUPLICATES, &je);
    if (!v || !json_is_object(v)) {
        json_decref(v);
        return px_reply_error(c, r, 400, "verdict: body is not a JSON object (%s)",
                              v ? "other JSON value" : je.text);
    }
    const char *verdict = json_string_value(json_object_get(v, "verdict"));
    /* a logged-in account is the reviewer; a typed name only counts without one */
    const char *reviewer = r->account[0] ? r->account
                                         : json_string_value(json_object_get(v, "reviewer"));
    json_t *jr = json_object_get(v, "reason");
    const char *reason = jr ? json_string_value(jr) : "";
    const char *fault = verdict_fault(verdict, reviewer, reason);
    enum MHD_Result ret;
    if (fault) {
        ret = px_reply_error(c, r, 400, "%s", fault);
    } else {
        int64_t vid = 0;
        px_err err = {{0}};
        px_manifest_vote_req q = {r->id, r->account_id, reviewer, verdict, reason, px_auth_now()};
        int st = px_manifest_vote(r->srv->pool->store, &q, &vid, &err);
        if (st == PX_EBUSY) {
            ret = px_reply_error(c, r, 409, "image %lld is leased to another reviewer; claim "
                                            "other images", (long long)r->id);
        } else if (st != PX_OK) {
            ret = store_error(c, r, st, &err);
        } else {
            atomic_fetch_add(&r->srv->metrics.verdicts, 1);
            ret = px_reply_json(c, r, 201,
                                json_pack("{s:I,s:I,s:s,s:s,s:s}", "verdict_id", (json_int_t)vid,
                                          "image_id", (json_int_t)r->id, "verdict", verdict,
                                          "reviewer", reviewer, "reason", reason));
        }
    }
    json_decref(v);
    return ret;
}

enum MHD_Result px_pool_handle(struct MHD_Connection *c, px_req *r)
{
    if (!r->srv->pool)
        return px_reply_error(c, r, 404, "no pool: start the server with --pool DIR");
    switch (r->route) {
    case PX_R_POOL_STATS:
        return pool_stats(c, r);
    case PX_R_POOL_IMAGES:
        return pool_images(c, r);
    case PX_R_POOL_IMAGE:
        return pool_image(c, r);
    case PX_R_POOL_VERDICT:
        return pool_verdict(c, r);
    default:
        return px_reply_error(c, r, 404, "no such endpoint");
    }
}
