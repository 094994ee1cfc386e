/*
 * The generate run: one controller thread (the caller's) and one worker
 * thread per server slot (servers x per_server).
 *
 * The controller owns the plan. It keeps per (theme, type) slot counters of
 * good images and open jobs, asks the writer for scenes when a slot is short,
 * drops near-duplicate scenes, records each prompt and its job (with its
 * seed) in the manifest *before* anything is rendered, and feeds job ids to
 * the workers through a small bounded queue. Workers render on their server,
 * decode and check the image, write it (temporary file, then rename) and
 * record it and the job's end in one transaction, then report back. A
 * rejected or failed job makes the controller create a replacement, so the
 * quota keeps going until N images pass (bounded by max_jobs_factor).
 *
 * Crash safety: a job is "pending" or "running" until its image row commits.
 * On start, running jobs go back to pending. If a kill landed between the
 * rename and the commit, the file is already at its final path; the worker
 * finds it, checks its pixpipe chunk names the same job and seed, and adopts
 * it instead of rendering again. Temporary files left by a kill are removed.
 *
 * Servers: a failure (transport, timeout, HTTP error, unusable payload)
 * starts a backoff on that server (doubling from backoff_ms, at most 30 s)
 * during which its workers take no jobs; after server_failures failures in a
 * row it is set aside for the rest of the run. A job failing max_attempts
 * times is marked failed and replaced.
 *
 * The local backend (px_gen_local: Stable Diffusion in this process) is one
 * server named "local" whose per_server workers share the one model; jobs
 * are recorded with the settings the model will really use (resolved once
 * per run), and a stop cancels a render between sampler steps.
 */
#include "gen_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "face/px_face.h"
#include "image/px_image.h"

void px_gen_opts_default(px_gen_opts *o)
{
    memset(o, 0, sizeof *o);
    o->backend = PX_GEN_A1111;
    o->per_server = 1;
    o->max_attempts = 3;
    o->server_failures = 5;
    o->timeout_ms = 300000;
    o->backoff_ms = 500;
    o->dedup_threshold = 0.7;
    o->checks = px_gen_check_opts_default();
    o->max_jobs_factor = 4;
    o->seed = -1;
    o->quality = 92;
    o->progress_interval_ms = 1000;
}

/* ---- small file helpers ------------------------------------------------------ */

/* Writes a pool file through a temporary file in the same folder (mode from
 * the umask, like every file pixpipe writes); fsync only when asked (--fsync):
 * a kill -9 cannot leave half a file either way, only a power cut can. */
static int write_atomic(const char *path, const void *data, size_t len, int do_fsync, px_err *err)
{
    px_write_opts wo = {.mode = 0, .fsync = do_fsync};
    return px_write_file_atomic_opts(path, data, len, &wo, err);
}

/* Removes "*.tmp.*" files a killed run left in dir (not recursive). */
static void remove_temps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[1400];
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) {
            if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p)
                unlink(p);
        }
    closedir(d);
}

/* ---- run state --------------------------------------------------------------- */

typedef struct {
    const char *theme, *slug;
    int type;
    int quota;
    int good, open, made, rejected, failed; /* open: jobs pending/running */
    int dry; /* writer batches in a row that gave no new prompt */
} slot;

typedef struct {
    const char *url;
    pthread_mutex_t mu;
    int consecutive, dead, done, failures;
    double backoff_until;
    double busy_ms;
    int step, steps; /* local backend: the render in progress, for the progress line (atomics) */
    pthread_mutex_t probe_mu; /* held while probing; info is not written once probed is set */
    px_gen_server_info info;  /* what it is and can do (px_gen_probe) */
    int probed, workers;      /* workers: in-flight requests it gets (per_server, or fewer) */
} server;

/* What became of a job a worker took. */
typedef enum job_result { R_DONE = 0, R_RETRY, R_FAILED, R_FATAL, R_UNRUN, R_REFUSED } job_result;

typedef struct {
    px_manifest_job job;
    int slot;
    job_result kind;
    int refused;     /* the failure repeats on every try (size, sampler, model): R_REFUSED */
    char status[16]; /* image status when R_DONE */
    px_err err;
} job_item;

typedef struct run run;

typedef struct {
    run *r;
    int server;
    pthread_t th;
} worker;

struct run {
    const px_gen_opts *o;
    px_manifest *store;
    px_gen_style style;
    px_gen_render_defaults render; /* settings of new jobs (local: as the model renders them) */
    slot *slots;
    int nslots;
    server *servers;
    worker *workers;
    int nworkers;
    px_queue *jobs, *results;
    int stopping; /* read by workers with __atomic loads */
    atomic_int cancel; /* o->cancel seen: in-flight HTTP requests end (px_gen_client_set_cancel) */
    /* perceptual hashes of the pool's good images */
    pthread_mutex_t phash_mu;
    int64_t *ph_ids;
    uint64_t *ph;
    size_t nph, phcap;
};

/* ---- the work of one job ------------------------------------------------------ */

/* A1111's "parameters" text; hash (the local model's, else NULL) adds its "Model hash". */
static void build_parameters(const px_manifest_job *j, const char *model, const char *hash,
                             char *out, size_t cap)
{
    snprintf(out, cap,
             "%s\nNegative prompt: %s\nSteps: %d, Sampler: %s, CFG scale: %g, Seed: %lld, "
             "Size: %dx%d, %s%s%sModel: %s",
             j->prompt, j->negative, j->steps, j->sampler, j->cfg, (long long)j->seed, j->width,
             j->height, hash ? "Model hash: " : "", hash ? hash : "", hash ? ", " : "",
             model && *model ? model : "default");
}

static char *build_json(const px_manifest_job *j, const char *server_url,
                        const px_gen_check_result *cr, const char *checks_json, const char *hash)
{
    char now[32], ph[17];
    px_manifest_now_iso(now, sizeof now);
    snprintf(ph, sizeof ph, "%016llx", (unsigned long long)cr->phash);
    json_t *o = json_pack(
        "{s:I, s:s, s:s, s:s, s:s, s:s, s:I, s:i, s:i, s:i, s:f, s:s, s:s, s:s, s:s, s:s, s:s, "
        "s:s, s:s}",
        "id", (json_int_t)j->id, "theme", j->theme, "theme_slug", j->theme_slug, "type", j->type,
        "prompt", j->prompt, "negative", j->negative, "seed", (json_int_t)j->seed, "width",
        j->width, "height", j->height, "steps", j->steps, "cfg", j->cfg, "sampler", j->sampler,
        "backend", j->backend, "model", j->model, "server", server_url ? server_url : "",
        "status", cr->status, "reason", cr->reason, "created_at", now, "pixpipe", PX_VERSION);
    if (!o)
        return NULL;
    if (hash && json_object_set_new(o, "model_hash", json_string(hash))) {
        json_decref(o);
        return NULL;
    }
    json_t *c = json_loads(checks_json, 0, NULL);
    if (c)
        json_object_set_new(o, "checks", c);
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return s;
}

/* A pool file's path relative to the pool; format UNKNOWN means PNG. */
static void rel_path(const px_manifest_job *j, int rejected, px_format format, char *out,
                     size_t cap)
{
    snprintf(out, cap, "%s%s/%s/%lld%s", rejected ? "rejected/" : "", j->theme_slug, j->type,
             (long long)j->id, px_format_extension(format == PX_FMT_UNKNOWN ? PX_FMT_PNG : format));
}

/* Looks for a finished file of this job left by a killed run (see top), in
 * any pool format: the run that left it may have been asked for another. */
static int find_orphan(run *r, const px_manifest_job *j, px_buf *payload)
{
    /* the run's own format first, then the other two */
    px_format order[3] = {r->o->format == PX_FMT_UNKNOWN ? PX_FMT_PNG : r->o->format};
    for (int i = 0, n = 1; n < 3; i++) {
        static const px_format all[3] = {PX_FMT_PNG, PX_FMT_JPEG, PX_FMT_WEBP};
        if (all[i] != order[0])
            order[n++] = all[i];
    }
    for (int k = 0; k < 6; k++) {
        int rej = k & 1;
        px_format fmt = order[k / 2];
        char rel[600], path[1200];
        rel_path(j, rej, fmt, rel, sizeof rel);
        snprintf(path, sizeof path, "%s/%s", r->o->pool, rel);
        uint8_t *d;
        size_t n;
        if (px_read_file(path, (size_t)256 << 20, &d, &n, NULL) != PX_OK)
            continue;
        char *meta = NULL;
        int ok = 0;
        if (px_image_meta_read(d, n, PX_META_JSON, &meta, NULL) == PX_OK) {
            json_t *m = json_loads(meta, 0, NULL);
            ok = json_integer_value(json_object_get(m, "id")) == j->id &&
                 json_integer_value(json_object_get(m, "seed")) == j->seed;
            json_decref(m);
        }
        free(meta);
        if (ok) {
            payload->len = 0;
            ok = px_buf_append(payload, d, n) == PX_OK;
        }
        free(d);
        if (ok) {
            unlink(path); /* it is written again below, at the path its checks decide */
            return 1;
        }
    }
    return 0;
}

/* Decides the phash duplicate question against the pool and, if the image
 * is good, adds it to the index in the same critical section. */
static int phash_decide(run *r, int64_t id, px_gen_check_result *cr)
{
    int d = r->o->checks.phash_distance;
    pthread_mutex_lock(&r->phash_mu);
    if (d >= 0 && strcmp(cr->status, "rejected")) {
        for (size_t i = 0; i < r->nph; i++) {
            int h = px_gen_hamming(r->ph[i], cr->phash);
            if (h <= d && r->ph_ids[i] != id) {
                cr->duplicate_of = r->ph_ids[i];
                snprintf(cr->status, sizeof cr->status, "rejected");
                snprintf(cr->reason, sizeof cr->reason,
                         "near-duplicate of image %lld (phash distance %d <= %d)",
                         (long long)r->ph_ids[i], h, d);
                break;
            }
        }
    }
    int st = PX_OK;
    if (strcmp(cr->status, "rejected")) {
        if (r->nph == r->phcap) {
            size_t nc = r->phcap ? r->phcap * 2 : 1024;
            int64_t *ni = px_realloc(r->ph_ids, nc * sizeof *ni);
            if (ni)
                r->ph_ids = ni;
            uint64_t *nh = ni ? px_realloc(r->ph, nc * sizeof *nh) : NULL;
            if (nh) {
                r->ph = nh;
                r->phcap = nc;
            } else {
                st = PX_ENOMEM;
            }
        }
        if (st == PX_OK) {
            r->ph_ids[r->nph] = id;
            r->ph[r->nph++] = cr->phash;
        }
    }
    pthread_mutex_unlock(&r->phash_mu);
    return st;
}

/* The size the server rendered against the one asked (o->size_mismatch),
 * then what the server says it used into the job, its row (with the old
 * error text cleared) and so into the image's metadata. */
static int record_used(run *r, const server *sv, job_item *it, px_image *img,
                       const px_image *rendered, const px_gen_render_used *used)
{
    px_manifest_job *j = &it->job;
    int gw = rendered ? rendered->w : img->w, gh = rendered ? rendered->h : img->h;
    int st = PX_OK;
    const char *policy = NULL;
    if (!rendered && (gw != j->width || gh != j->height)) {
        static const char *const names[] = {"refuse", "rescale", "keep"};
        policy = names[r->o->size_mismatch];
        switch (r->o->size_mismatch) {
        case PX_GEN_SIZE_RESCALE: st = px_gen_rescale(img, j->width, j->height, &it->err); break;
        case PX_GEN_SIZE_KEEP:
            j->width = gw;
            j->height = gh;
            break;
        default:
            it->refused = 1;
            return px_err_set(&it->err, PX_EINVAL,
                              "job %lld: %s returned a %dx%d image for the %dx%d asked (servers "
                              "such as sd-server round sizes up to a multiple of 64); ask for a "
                              "size it renders, or --size-mismatch rescale|keep",
                              (long long)j->id, sv->url, gw, gh, j->width, j->height);
        }
    }
    char *info = NULL;
    if (st == PX_OK && used)
        st = px_gen_apply_used(j, &sv->info, used, gw, gh, policy, &info) == PX_OK
                 ? PX_OK
                 : px_err_set(&it->err, PX_ENOMEM, "job %lld: out of memory", (long long)j->id);
    if (st == PX_OK)
        st = px_manifest_job_rendered(r->store, j, info, &it->err);
    free(info);
    return st;
}

/* Checks, writes and records a payload for job j, or the image the local
 * backend rendered (rendered non-NULL: payload unused). Returns PX_OK, a
 * payload error (PX_ECORRUPT / PX_EUNSUPPORTED / PX_ELIMIT: the server's
 * fault) or a local error (PX_EIO, PX_ENOMEM: fatal for the run). */
static int process_payload(run *r, job_item *it, const px_buf *payload, const px_image *rendered,
                           const server *sv, const px_gen_render_used *used, double render_ms,
                           int adopted)
{
    const char *server_url = sv->url;
    px_manifest_job *j = &it->job;
    px_image img = {0};
    int st = rendered ? PX_OK : px_gen_decode(payload->data, payload->len, 0, &img, &it->err);
    if (st != PX_OK)
        return px_err_prefix(&it->err, st == PX_ENOMEM ? st : PX_ECORRUPT,
                             "job %lld: image from %s", (long long)j->id, server_url);
    if (!adopted && (st = record_used(r, sv, it, &img, rendered, used)) != PX_OK) {
        px_image_free(&img);
        return st;
    }
    const px_image *im = rendered ? rendered : &img;
    const px_gen_local *local = r->o->backend == PX_GEN_LOCAL ? r->o->local : NULL;
    px_gen_check_result cr;
    st = px_gen_check_image(im, &r->o->checks, &cr, &it->err);
    if (st == PX_OK)
        st = phash_decide(r, j->id, &cr) == PX_OK
                 ? PX_OK
                 : px_err_set(&it->err, PX_ENOMEM, "phash index: out of memory");
    char checks[512], params[6000], rel[600], path[1200], dir[1200];
    char *meta = NULL;
    px_buf png = {0};
    if (st == PX_OK) {
        snprintf(checks, sizeof checks,
                 "{\"mean\":%.2f,\"stddev\":%.2f,\"blur\":%.2f,\"phash\":\"%016llx\","
                 "\"faces\":%d,\"duplicate_of\":%lld}",
                 cr.mean, cr.stddev, cr.blur, (unsigned long long)cr.phash, cr.faces,
                 (long long)cr.duplicate_of);
        build_parameters(j, local ? px_gen_local_name(local) : j->model,
                         local ? px_gen_local_hash(local) : NULL, params, sizeof params);
        meta = build_json(j, server_url, &cr, checks, local ? px_gen_local_hash(local) : NULL);
        if (!meta)
            st = px_err_set(&it->err, PX_ENOMEM, "job %lld: out of memory", (long long)j->id);
    }
    if (st == PX_OK && adopted) /* our own file already: keep its bytes (and its sha256) */
        st = px_buf_append(&png, payload->data, payload->len) == PX_OK
                 ? PX_OK
                 : px_err_set(&it->err, PX_ENOMEM, "out of memory");
    else if (st == PX_OK)
        st = px_gen_encode(im, r->o->format, r->o->quality,
                           &(px_image_meta){.parameters = params, .json = meta}, &png, &it->err);
    int rejected = !strcmp(cr.status, "rejected");
    if (st == PX_OK) {
        /* an adopted file keeps its bytes, so its format too (it was found as PNG/JPEG/WebP) */
        rel_path(j, rejected, adopted ? px_image_sniff(png.data, png.len) : r->o->format,
                 rel, sizeof rel);
        snprintf(path, sizeof path, "%s/%s", r->o->pool, rel);
        snprintf(dir, sizeof dir, "%s", path);
        *strrchr(dir, '/') = '\0';
        struct stat sb;
        if (stat(dir, &sb) != 0) /* mkdir -p only the first time a slot folder is needed */
            st = px_mkdir_p(dir, &it->err);
    }
    if (st == PX_OK && rejected) {
        /* the reason beside the file, for people browsing rejected/ */
        char txt[1300], line[400];
        snprintf(txt, sizeof txt, "%s/%lld.txt", dir, (long long)j->id);
        int n = snprintf(line, sizeof line, "%s\n", cr.reason);
        st = write_atomic(txt, line, (size_t)n, r->o->fsync, &it->err);
    }
    if (st == PX_OK)
        st = write_atomic(path, png.data, png.len, r->o->fsync, &it->err);
    if (st == PX_OK) {
        char sha[65];
        px_gen_sha256_hex(png.data, png.len, sha);
        px_manifest_image_rec rec = {.job_id = j->id,
                                  .path = rel,
                                  .sha256 = sha,
                                  .bytes = (int64_t)png.len,
                                  .width = im->w,
                                  .height = im->h,
                                  .phash = cr.phash,
                                  .status = cr.status,
                                  .reason = cr.reason,
                                  .checks = checks,
                                  .server = server_url,
                                  .render_ms = render_ms};
        st = px_manifest_add_image(r->store, &rec, &it->err);
        if (st != PX_OK) {
            /* not recorded, so not kept: the job stays pending and renders again later */
            unlink(path);
            if (rejected) {
                char txt[1300];
                snprintf(txt, sizeof txt, "%s/%lld.txt", dir, (long long)j->id);
                unlink(txt);
            }
        }
        snprintf(it->status, sizeof it->status, "%s", cr.status);
    }
    free(meta);
    px_buf_free(&png);
    px_image_free(&img);
    return st;
}

static void sleep_ms(double ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - (time_t)(ms / 1000) * 1000) * 1e6)};
    nanosleep(&ts, NULL);
}

typedef struct {
    run *r;
    server *sv;
} local_ctx;

/* After each step of a local render: the step for the progress line, and a
 * stop between steps when the run stops (Ctrl-C). */
static int local_step(void *arg, int step, int steps)
{
    local_ctx *c = arg;
    __atomic_store_n(&c->sv->step, step, __ATOMIC_RELAXED);
    __atomic_store_n(&c->sv->steps, steps, __ATOMIC_RELAXED);
    return __atomic_load_n(&c->r->stopping, __ATOMIC_ACQUIRE) ||
           (c->r->o->stop && __atomic_load_n(c->r->o->stop, __ATOMIC_RELAXED));
}

/* Replaces a job string by v when they differ (PX_ENOMEM). */
static int set_str(char **dst, const char *v)
{
    if (*dst && !strcmp(*dst, v))
        return PX_OK;
    char *n = px_strdup(v);
    if (!n)
        return PX_ENOMEM;
    free(*dst);
    *dst = n;
    return PX_OK;
}

/* The local backend renders job it in-process into *img. The job's settings
 * become what was used: the same as recorded for jobs this model's runs made,
 * but a job left pending by a run with other settings or another model is
 * told as it was rendered. */
static int render_local(run *r, server *sv, job_item *it, const px_gen_render_req *req,
                        px_image *img)
{
    px_gen_local_used u;
    local_ctx lc = {r, sv};
    int st = px_gen_local_render(r->o->local, req, local_step, &lc, img, &u, &it->err);
    __atomic_store_n(&sv->steps, 0, __ATOMIC_RELAXED);
    if (st != PX_OK)
        return st;
    px_manifest_job *j = &it->job;
    j->width = u.width;
    j->height = u.height;
    j->steps = u.steps;
    char title[300];
    snprintf(title, sizeof title, "%.100s [%s]", px_gen_local_name(r->o->local),
             px_gen_local_hash(r->o->local));
    if (set_str(&j->sampler, u.sampler) || set_str(&j->model, title) ||
        set_str(&j->backend, "local")) {
        px_image_free(img);
        return px_err_set(&it->err, PX_ENOMEM, "job %lld: out of memory", (long long)j->id);
    }
    return PX_OK;
}

/* Renders job it on the worker's server (the file into *payload) or, for the
 * local backend, in-process (the image into *img); *ms: how long it took. */
static int render_job(run *r, server *sv, px_gen_client *http, job_item *it,
                      px_buf *payload, px_image *img, px_gen_render_used *used, double *ms)
{
    const px_gen_opts *o = r->o;
    px_gen_render_req req = {.prompt = it->job.prompt,
                             .negative = it->job.negative,
                             .seed = it->job.seed,
                             .width = it->job.width,
                             .height = it->job.height,
                             .steps = it->job.steps,
                             .cfg = it->job.cfg,
                             .sampler = it->job.sampler,
                             .model = it->job.model};
    double t0 = px_now_ms();
    int st = o->backend == PX_GEN_LOCAL
                 ? render_local(r, sv, it, &req, img)
                 : px_gen_render(http, o->backend, sv->url, &sv->info, o->workflow, &req,
                                 o->timeout_ms, payload, used, &it->err);
    *ms = px_now_ms() - t0;
    return st;
}

/* Probes sv unless that is done (a server unreachable at the start is
 * probed by its first job); then checks it can render the run's settings. */
static int probe_once(run *r, server *sv, px_gen_client *http, job_item *it)
{
    if (r->o->backend == PX_GEN_LOCAL)
        return PX_OK;
    pthread_mutex_lock(&sv->probe_mu);
    int st = PX_OK;
    if (!sv->probed) {
        long t = r->o->timeout_ms < 10000 ? r->o->timeout_ms : 10000;
        st = px_gen_probe(http, r->o->backend, sv->url, t, &sv->info, &it->err);
        if (st == PX_OK)
            st = px_gen_server_ready(&sv->info, sv->url, &r->render, &it->err);
        sv->probed = st == PX_OK;
    }
    pthread_mutex_unlock(&sv->probe_mu);
    return st;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    run *r = w->r;
    server *sv = &r->servers[w->server];
    const px_gen_opts *o = r->o;
    px_gen_client *http = NULL;
    px_err cerr;
    if (o->backend != PX_GEN_LOCAL && px_gen_client_create(&http, &cerr) != PX_OK) {
        pthread_mutex_lock(&sv->mu);
        sv->dead = 1;
        pthread_mutex_unlock(&sv->mu);
        return NULL;
    }
    if (http)
        px_gen_client_set_cancel(http, &r->cancel);
    px_buf payload = {0};
    px_gen_render_used *used = px_calloc(1, sizeof *used);
    for (;;) {
        /* a server backing off takes no work, so the others get it */
        for (;;) {
            pthread_mutex_lock(&sv->mu);
            double wait = sv->backoff_until - px_now_ms();
            int dead = sv->dead;
            pthread_mutex_unlock(&sv->mu);
            if (dead || __atomic_load_n(&r->stopping, __ATOMIC_ACQUIRE) || wait <= 0)
                break;
            sleep_ms(wait < 100 ? wait : 100);
        }
        pthread_mutex_lock(&sv->mu);
        int dead = sv->dead;
        pthread_mutex_unlock(&sv->mu);
        if (dead)
            break;
        void *p;
        int qs = px_queue_pop(r->jobs, &p, 200);
        if (qs == PX_ECLOSED)
            break;
        if (qs != PX_OK)
            continue;
        job_item *it = p;
        px_err_clear(&it->err);
        if (__atomic_load_n(&r->stopping, __ATOMIC_ACQUIRE)) {
            it->kind = R_UNRUN;
            px_queue_push(r->results, it);
            continue;
        }
        int st = PX_OK;
        double ms = 0;
        px_image img = {0}; /* the local backend's render */
        int adopted = find_orphan(r, &it->job, &payload);
        if (!adopted) {
            st = px_manifest_job_start(r->store, it->job.id, sv->url, &it->err);
            if (st != PX_OK) {
                it->kind = R_FATAL;
                px_queue_push(r->results, it);
                continue;
            }
            it->job.attempts++;
            st = !used ? px_err_set(&it->err, PX_ENOMEM, "out of memory")
                       : probe_once(r, sv, http, it);
            if (st == PX_OK)
                st = render_job(r, sv, http, it, &payload, &img, used, &ms);
            if (st == PX_EINVAL || st == PX_EUNSUPPORTED)
                it->refused = 1; /* asked for what the server will not do: no use retrying */
        }
        if (st == PX_ECLOSED) {
            if (o->backend != PX_GEN_LOCAL) /* curl's words ("aborted by a callback") say less */
                px_err_set(&it->err, PX_ECLOSED, "%s: render abandoned, the run was stopped",
                           sv->url);
            /* stopped between two steps: the job goes back to pending, no fault of anyone's */
            px_manifest_job_fail(r->store, it->job.id, it->err.msg, 0, NULL);
            it->kind = R_UNRUN;
            px_queue_push(r->results, it);
            continue;
        }
        if (st == PX_OK)
            st = process_payload(r, it, &payload, img.px ? &img : NULL, sv,
                                 adopted || o->backend == PX_GEN_LOCAL ? NULL : used, ms, adopted);
        px_image_free(&img);
        if (st == PX_OK) {
            it->kind = R_DONE;
            pthread_mutex_lock(&sv->mu);
            sv->consecutive = 0;
            sv->done++;
            sv->busy_ms += ms;
            pthread_mutex_unlock(&sv->mu);
        } else if (st == PX_EIO || st == PX_ENOMEM || st == PX_EBUSY) {
            /* our side failed (disk full, database locked...): stop the run, keep the job */
            px_manifest_job_fail(r->store, it->job.id, it->err.msg, 0, NULL);
            it->kind = R_FATAL;
        } else if (it->refused) {
            px_manifest_job_fail(r->store, it->job.id, it->err.msg, 1, NULL);
            it->kind = R_REFUSED;
            /* every job would be refused the same way: no worker takes another */
            __atomic_store_n(&r->stopping, 1, __ATOMIC_RELEASE);
        } else {
            int give_up = it->job.attempts >= o->max_attempts;
            px_manifest_job_fail(r->store, it->job.id, it->err.msg, give_up, NULL);
            it->kind = give_up ? R_FAILED : R_RETRY;
            pthread_mutex_lock(&sv->mu);
            sv->consecutive++;
            sv->failures++;
            double b = (double)o->backoff_ms;
            for (int k = 1; k < sv->consecutive && b < 30000; k++)
                b *= 2;
            sv->backoff_until = px_now_ms() + (b > 30000 ? 30000 : b);
            if (sv->consecutive >= o->server_failures)
                sv->dead = 1;
            pthread_mutex_unlock(&sv->mu);
        }
        px_queue_push(r->results, it);
    }
    px_buf_free(&payload);
    free(used);
    px_gen_client_destroy(http);
    return NULL;
}

/* ---- the controller -------------------------------------------------------------- */

typedef struct {
    job_item **v;
    size_t head, len, cap;
} fifo;

static int fifo_push(fifo *f, job_item *it)
{
    if (f->len == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 64;
        job_item **nv = px_malloc(nc * sizeof *nv);
        if (!nv)
            return PX_ENOMEM;
        for (size_t i = 0; i < f->len; i++)
            nv[i] = f->v[(f->head + i) % f->cap];
        free(f->v);
        f->v = nv;
        f->head = 0;
        f->cap = nc;
    }
    f->v[(f->head + f->len) % f->cap] = it;
    f->len++;
    return PX_OK;
}

static job_item *fifo_peek(fifo *f)
{
    return f->len ? f->v[f->head] : NULL;
}

static void fifo_drop(fifo *f)
{
    f->head = (f->head + 1) % f->cap;
    f->len--;
}

static void item_free(job_item *it)
{
    if (!it)
        return;
    px_manifest_job_clear(&it->job);
    free(it);
}

static int find_slot(run *r, const char *slug, const char *type)
{
    for (int i = 0; i < r->nslots; i++)
        if (!strcmp(r->slots[i].slug, slug) && !strcmp(px_gen_type_name(r->slots[i].type), type))
            return i;
    return -1;
}

/* Asks the writer for scenes for slot s and records up to `want` new jobs. */
static int make_jobs(run *r, int si, int want, px_gen_writer *wr, px_gen_dedup *dd,
                     int64_t *next_seed, fifo *f, px_gen_summary *sum, px_err *err)
{
    slot *s = &r->slots[si];
    const px_gen_campaign *c = r->o->campaign;
    int wb = px_gen_llm_batch(wr); /* --llm-batch; 8 for the offline writer */
    int batch = want < wb ? want : wb, made = 0;
    char **scenes = NULL;
    size_t n = 0;
    char sub[700];
    int st = px_gen_writer_write(wr, s->theme, s->slug, s->type, batch, &scenes, &n, sub,
                                 sizeof sub, err);
    if (st != PX_OK)
        return st;
    char llm[1536] = ""; /* what the LLM server reported it used (dialect, version, model) */
    if (px_gen_llm_describe(wr, llm, sizeof llm))
        px_manifest_meta_set(r->store, "llm", llm, NULL);
    for (size_t i = 0; i < n && made < want; i++) {
        int fresh = px_gen_scene_fresh(dd, scenes[i], sum, err);
        if (fresh < 0) {
            st = fresh;
            break;
        }
        if (!fresh)
            continue;
        char prompt[4096], neg[2048];
        px_gen_compose(&r->style, s->type, c->allow_people, scenes[i], prompt, sizeof prompt, neg,
                       sizeof neg);
        px_manifest_job j = {.theme = (char *)s->theme,
                          .theme_slug = (char *)s->slug,
                          .type = (char *)px_gen_type_name(s->type),
                          .prompt = prompt,
                          .negative = neg,
                          .scene = scenes[i],
                          .seed = r->o->seed >= 0 ? (*next_seed)++ : -1,
                          .width = r->render.width,
                          .height = r->render.height,
                          .steps = r->render.steps,
                          .cfg = r->render.cfg,
                          .sampler = r->render.sampler,
                          .backend = (char *)px_gen_backend_name(r->o->backend),
                          .model = r->render.model};
        int64_t id;
        st = px_manifest_add_job(r->store, &j, px_gen_writer_name(wr), sub, &id, NULL, err);
        if (st == PX_OK && llm[0])
            st = px_manifest_prompt_source(r->store, id, llm, err);
        if (st != PX_OK)
            break;
        job_item *it = px_calloc(1, sizeof *it);
        if (!it) {
            st = px_err_set(err, PX_ENOMEM, "out of memory");
            break;
        }
        it->slot = si;
        st = px_manifest_get_job(r->store, id, &it->job, err);
        if (st == PX_OK)
            st = fifo_push(f, it) == PX_OK ? PX_OK : px_err_set(err, PX_ENOMEM, "out of memory");
        if (st != PX_OK) {
            item_free(it);
            break;
        }
        s->open++;
        s->made++;
        made++;
    }
    px_manifest_strings_free(scenes, n);
    /* a writer that only repeats itself would spin here forever */
    s->dry = made ? 0 : s->dry + 1;
    return st;
}

#define MAX_DRY 10

static void fmt_eta(double s, char *out, size_t cap)
{
    if (!(s >= 0) || s > 86400 * 30)
        snprintf(out, cap, "--");
    else if (s >= 3600)
        snprintf(out, cap, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else
        snprintf(out, cap, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

/* Every server's state to o->servers_status. */
static void servers_status(run *r)
{
    px_gen_server_status st[64];
    int n = r->o->nservers < 64 ? r->o->nservers : 64;
    double now = px_now_ms();
    for (int i = 0; i < n; i++) {
        server *sv = &r->servers[i];
        pthread_mutex_lock(&sv->mu);
        st[i] = (px_gen_server_status){sv->url, sv->done, sv->failures,
                                       sv->dead                  ? PX_GEN_SERVER_SET_ASIDE
                                       : sv->backoff_until > now ? PX_GEN_SERVER_BACKOFF
                                                                 : PX_GEN_SERVER_OK};
        pthread_mutex_unlock(&sv->mu);
    }
    r->o->servers_status(r->o->progress_ctx, st, n);
}

static void report(run *r, const px_gen_summary *sum, double t0, int done0, int final)
{
    const px_gen_opts *o = r->o;
    if (o->servers_status)
        servers_status(r);
    if (!o->progress)
        return;
    int total = 0, good = 0;
    for (int i = 0; i < r->nslots; i++) {
        total += r->slots[i].quota;
        good += r->slots[i].good < r->slots[i].quota ? r->slots[i].good : r->slots[i].quota;
    }
    double el = (px_now_ms() - t0) / 1000;
    double rate = el > 0 ? (good - done0) / el : 0;
    char eta[32], line[1024];
    fmt_eta(rate > 0 ? (total - good) / rate : -1, eta, sizeof eta);
    int width = 24, fill = total ? (int)((double)good / total * width) : width;
    char bar[32];
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    int n = snprintf(line, sizeof line, "[%s] %d/%d %.1f img/s ETA %s | rej %d fail %d |", bar,
                     good, total, rate, eta, sum->rejected, sum->jobs_failed);
    for (int i = 0; i < o->nservers && n > 0 && (size_t)n < sizeof line - 64; i++) {
        server *sv = &r->servers[i];
        pthread_mutex_lock(&sv->mu);
        n += snprintf(line + n, sizeof line - (size_t)n, " s%d:%d%s", i + 1, sv->done,
                      sv->dead ? "(set aside)" : (sv->backoff_until > px_now_ms() ? "(backoff)" : ""));
        pthread_mutex_unlock(&sv->mu);
        int steps = __atomic_load_n(&sv->steps, __ATOMIC_RELAXED);
        if (steps > 0 && n > 0 && (size_t)n < sizeof line - 64) /* a local render under way */
            n += snprintf(line + n, sizeof line - (size_t)n, " step %d/%d",
                          __atomic_load_n(&sv->step, __ATOMIC_RELAXED), steps);
    }
    o->progress(o->progress_ctx, line, final);
}

static int check_opts(const px_gen_opts *o, px_err *err)
{
    if (!o->pool || !*o->pool)
        return px_err_set(err, PX_EINVAL, "generate: no pool folder (--out)");
    if (!o->campaign || o->campaign->nthemes <= 0)
        return px_err_set(err, PX_EINVAL, "generate: no campaign");
    if (!o->writer)
        return px_err_set(err, PX_EINVAL, "generate: no prompt writer");
    if (o->backend == PX_GEN_LOCAL) {
        if (!o->local)
            return px_err_set(err, PX_EINVAL, "generate: the local backend needs a model "
                                              "(--model PATH)");
        if (o->nservers > 0)
            return px_err_set(err, PX_EINVAL, "generate: the local backend renders in this "
                                              "process; --server is for a1111, openai and comfyui");
        if (o->per_server < 1 || o->per_server > 16)
            return px_err_set(err, PX_ELIMIT, "generate: 1..16 local workers");
        return PX_OK;
    }
    if (o->nservers <= 0 || !o->servers)
        return px_err_set(err, PX_EINVAL, "generate: no render server (--server URL)");
    if (o->nservers > 64 || o->per_server < 1 || o->per_server > 16)
        return px_err_set(err, PX_ELIMIT, "generate: at most 64 servers and 1..16 per server");
    for (int i = 0; i < o->nservers; i++)
        if (strncmp(o->servers[i], "http://", 7) && strncmp(o->servers[i], "https://", 8))
            return px_err_set(err, PX_EINVAL, "server '%s': expected an http:// or https:// URL",
                              o->servers[i]);
    if (o->backend == PX_GEN_COMFYUI && !o->workflow)
        return px_err_set(err, PX_EINVAL, "generate: the comfyui backend needs --workflow FILE");
    if (o->backend == PX_GEN_COMFYUI)
        return px_gen_comfy_check(o->workflow, err);
    return PX_OK;
}

static int open_pool(const px_gen_opts *o, px_manifest **st_out, px_err *err)
{
    int st = px_mkdir_p(o->pool, err);
    if (st != PX_OK)
        return st;
    char db[1100];
    snprintf(db, sizeof db, "%s/%s", o->pool, PX_MANIFEST_FILE);
    return px_manifest_open(db, 0, st_out, err);
}

/* The controller's state for one run (px_gen_run): the local backlog of
 * jobs, the prompt filter and the counters of the loop. */
typedef struct controller {
    run *r;
    fifo f;             /* jobs made or taken back, not yet given to a worker */
    px_gen_dedup *dd;   /* near-duplicate filter over every prompt of the pool */
    int64_t next_seed;  /* next job's seed when o->seed >= 0 */
    int started;        /* worker threads running */
    int inflight;       /* jobs given to workers and not yet back */
    int done0;          /* good images at the start (for the rate) */
    int fatal;          /* a worker hit a local error: stop */
    int fatal_st;       /* its status (PX_EIO, or PX_EINVAL for a server refusing the request) */
    int writer_failed;  /* the prompt writer failed (writer_st): stop making jobs, report it */
    int writer_st;
    int rr;             /* round-robin start over the slots */
    double t0, last_report;
    px_gen_summary *sum;
    px_err *err;
} controller;

/* One slot per theme and type with a quota: quotas recorded, counts read,
 * temporary files of a killed run removed. */
static int setup_slots(run *r, int64_t cid, px_err *err)
{
    const px_gen_opts *o = r->o;
    const px_gen_campaign *c = o->campaign;
    r->slots = px_calloc((size_t)c->nthemes * PX_GEN_NTYPES, sizeof *r->slots);
    if (!r->slots)
        return px_err_set(err, PX_ENOMEM, "out of memory");
    for (int t = 0; t < c->nthemes; t++)
        for (int k = 0; k < PX_GEN_NTYPES; k++) {
            if (c->themes[t].quota[k] <= 0)
                continue;
            slot *s = &r->slots[r->nslots++];
            s->theme = c->themes[t].name;
            s->slug = c->themes[t].slug;
            s->type = k;
            s->quota = c->themes[t].quota[k];
            int st;
            if ((st = px_manifest_set_quota(r->store, cid, s->theme, s->slug, px_gen_type_name(k),
                                            s->quota, err)) ||
                (st = px_manifest_count(r->store, s->slug, px_gen_type_name(k), &s->good, NULL,
                                        NULL, &s->rejected, err)))
                return st;
            char dir[1200];
            snprintf(dir, sizeof dir, "%s/%s/%s", o->pool, s->slug, px_gen_type_name(k));
            remove_temps(dir);
            snprintf(dir, sizeof dir, "%s/rejected/%s/%s", o->pool, s->slug, px_gen_type_name(k));
            remove_temps(dir);
        }
    return PX_OK;
}

/* Resume: what was running when the last run died goes back in line, with
 * the pending jobs of this campaign's slots. */
static int queue_pending(controller *c)
{
    run *r = c->r;
    int reset = 0, st;
    if ((st = px_manifest_reset_running(r->store, &reset, c->err)))
        return st;
    px_manifest_job *pend = NULL;
    size_t npend = 0;
    if ((st = px_manifest_list_jobs(r->store, "pending", 0, &pend, &npend, c->err)))
        return st;
    for (size_t i = 0; i < npend && st == PX_OK; i++) {
        int si = find_slot(r, pend[i].theme_slug, pend[i].type);
        if (si < 0 || pend[i].rerender_of)
            continue; /* not part of this campaign: left pending for its own */
        job_item *it = px_calloc(1, sizeof *it);
        if (!it || fifo_push(&c->f, it) != PX_OK) {
            free(it);
            st = px_err_set(c->err, PX_ENOMEM, "out of memory");
            break;
        }
        it->job = pend[i];
        memset(&pend[i], 0, sizeof pend[i]);
        it->slot = si;
        r->slots[si].open++;
    }
    px_manifest_jobs_free(pend, npend);
    return st;
}

/* The pool's prompts into the near-duplicate filter, its phashes into the
 * duplicate index, and the seed sequence after the highest job id. */
static int load_pool_index(controller *c)
{
    run *r = c->r;
    char **prompts = NULL;
    size_t nprompts = 0;
    int st;
    if ((st = px_gen_dedup_create(r->o->dedup_threshold, &c->dd, c->err)) ||
        (st = px_manifest_all_prompts(r->store, &prompts, &nprompts, c->err)))
        return st;
    for (size_t i = 0; i < nprompts && st == PX_OK; i++)
        if (px_gen_dedup_add(c->dd, prompts[i]) < 0)
            st = px_err_set(c->err, PX_ENOMEM, "dedup: out of memory");
    px_manifest_strings_free(prompts, nprompts);
    if (st || (st = px_manifest_all_phashes(r->store, &r->ph_ids, &r->ph, &r->nph, c->err)))
        return st;
    r->phcap = r->nph;
    if (r->o->seed >= 0) {
        if ((st = px_manifest_max_job_id(r->store, &c->next_seed, c->err)))
            return st;
        c->next_seed += r->o->seed + 1;
    }
    return PX_OK;
}

/* Asks every server what it is before the first job (px_gen_probe): one that
 * cannot render the run's settings stops the run here, naming them; one
 * that renders one image at a time gets one worker (more would only queue
 * there, and a timed-out request would leave it busy). A server that does
 * not answer is probed again by its first job. */
static int probe_servers(run *r, px_err *err)
{
    const px_gen_opts *o = r->o;
    if (o->backend == PX_GEN_LOCAL)
        return PX_OK;
    px_gen_client *http = NULL;
    int st = px_gen_client_create(&http, err);
    long t = o->timeout_ms < 10000 ? o->timeout_ms : 10000;
    for (int i = 0; i < o->nservers && st == PX_OK; i++) {
        server *sv = &r->servers[i];
        px_err e;
        int ps = px_gen_probe(http, o->backend, sv->url, t, &sv->info, &e);
        if (ps == PX_OK)
            ps = px_gen_server_ready(&sv->info, sv->url, &r->render, &e);
        if (ps == PX_EINVAL || ps == PX_EUNSUPPORTED) {
            st = px_err_set(err, ps, "%s", e.msg);
        } else if (ps != PX_OK) {
            px_log(PX_LOG_WARN, "%s: not probed (%s); its first job tries again", sv->url, e.msg);
        } else {
            sv->probed = 1;
            int max = sv->info.max_inflight;
            if (max > 0 && sv->workers > max) {
                px_log(PX_LOG_WARN, "%s: %s renders %d image%s at a time; --per-server %d would "
                       "only queue there, so it gets %d", sv->url, sv->info.kind, max,
                       max > 1 ? "s" : "", sv->workers, max);
                sv->workers = max;
            }
        }
    }
    px_gen_client_destroy(http);
    return st;
}

/* Servers, the two queues and the worker threads (per_server per server, or
 * fewer where the server says it renders fewer at a time). */
static int start_workers(controller *c)
{
    run *r = c->r;
    const px_gen_opts *o = r->o;
    r->servers = px_calloc((size_t)o->nservers, sizeof *r->servers);
    if (!r->servers)
        return px_err_set(c->err, PX_ENOMEM, "out of memory");
    for (int i = 0; i < o->nservers; i++) {
        r->servers[i].url = o->servers[i];
        r->servers[i].workers = o->per_server;
        pthread_mutex_init(&r->servers[i].mu, NULL);
        pthread_mutex_init(&r->servers[i].probe_mu, NULL);
    }
    int st = probe_servers(r, c->err);
    if (st != PX_OK)
        return st;
    r->nworkers = 0;
    for (int i = 0; i < o->nservers; i++)
        r->nworkers += r->servers[i].workers;
    r->workers = px_calloc((size_t)r->nworkers, sizeof *r->workers);
    if (!r->workers)
        return px_err_set(c->err, PX_ENOMEM, "out of memory");
    if ((st = px_queue_create((size_t)r->nworkers, &r->jobs)) ||
        (st = px_queue_create((size_t)r->nworkers * 2 + 8, &r->results)))
        return px_err_set(c->err, st, "out of memory");
    /* round-robin over the servers, each up to its own number of workers */
    for (int round = 0, k = 0; k < r->nworkers; round++)
        for (int i = 0; i < o->nservers; i++)
            if (round < r->servers[i].workers)
                r->workers[k++].server = i;
    for (; c->started < r->nworkers; c->started++) {
        worker *w = &r->workers[c->started];
        w->r = r;
        if (pthread_create(&w->th, NULL, worker_main, w) != 0)
            return px_err_set(c->err, PX_EIO, "cannot start worker threads");
    }
    return PX_OK;
}

/* Tops up every slot that is short, within its job budget. Returns whether
 * any slot still has budget; a writer failure sets c->writer_failed and
 * c->writer_st (err holds its message). */
static int plan_jobs(controller *c, int stop)
{
    run *r = c->r;
    const px_gen_opts *o = r->o;
    int budget_left = 0;
    /* start one slot further each time, so every theme/type advances together and a run
     * stopped half-way has some of everything rather than all of the first themes */
    int first = c->rr++ % r->nslots;
    for (int k = 0; k < r->nslots && !stop && !c->writer_failed; k++) {
        int i = (first + k) % r->nslots;
        slot *s = &r->slots[i];
        int need = s->quota - s->good - s->open;
        int cap = o->max_jobs_factor * s->quota - s->made;
        if (s->dry >= MAX_DRY)
            cap = 0;
        if (need > 0 && cap > 0)
            budget_left = 1;
        /* keep the local backlog small so prompts are written as they are needed */
        if (need > 0 && cap > 0 && c->f.len < (size_t)r->nworkers * 2) {
            int want = need < cap ? need : cap;
            c->writer_st = make_jobs(r, i, want, o->writer, c->dd, &c->next_seed, &c->f, c->sum,
                                     c->err);
            if (c->writer_st != PX_OK) {
                c->writer_failed = 1;
                break;
            }
            if (s->dry == MAX_DRY)
                px_log(PX_LOG_WARN,
                       "%s/%s: the prompt writer gave only near-duplicates %d times in a "
                       "row; no more jobs for it this run",
                       s->slug, px_gen_type_name(s->type), MAX_DRY);
        }
    }
    return budget_left;
}

/* Counts one finished job into the summary (and its slot, when s is given). */
static void count_done(px_gen_summary *sum, slot *s, const job_item *it)
{
    sum->rendered++;
    if (s)
        s->open--;
    if (!strcmp(it->status, "rejected")) {
        sum->rejected++;
        if (s)
            s->rejected++;
        return;
    }
    if (s)
        s->good++;
    if (!strcmp(it->status, "flagged"))
        sum->flagged++;
    else
        sum->accepted++;
}

/* One result from a worker: counted, retried or reported. */
static void take_result(controller *c, job_item *it)
{
    slot *s = &c->r->slots[it->slot];
    c->inflight--;
    switch (it->kind) {
    case R_DONE:
        count_done(c->sum, s, it);
        item_free(it);
        break;
    case R_RETRY:
    case R_UNRUN:
        if (fifo_push(&c->f, it) != PX_OK) {
            s->open--;
            item_free(it);
        }
        break;
    case R_FAILED:
        px_log(PX_LOG_WARN, "job %lld failed after %d attempts: %s", (long long)it->job.id,
               it->job.attempts, it->err.msg);
        c->sum->jobs_failed++;
        s->open--;
        s->failed++;
        item_free(it);
        break;
    case R_REFUSED: /* every job would fail the same way: the run stops, saying why */
        c->sum->jobs_failed++;
        if (!c->fatal)
            c->fatal_st = px_err_set(c->err, PX_EINVAL, "%s", it->err.msg);
        c->fatal = 1;
        s->open--;
        s->failed++;
        item_free(it);
        break;
    default: /* R_FATAL */
        if (!c->fatal)
            px_err_set(c->err, PX_EIO, "%s", it->err.msg);
        c->fatal = 1;
        s->open--;
        item_free(it);
        break;
    }
}

static int servers_alive(run *r)
{
    int alive = 0;
    for (int i = 0; i < r->o->nservers; i++) {
        pthread_mutex_lock(&r->servers[i].mu);
        alive += !r->servers[i].dead;
        pthread_mutex_unlock(&r->servers[i].mu);
    }
    return alive;
}

/* The controller loop: make jobs, feed the workers, take results, report,
 * until the quotas are met, the budget is spent, Ctrl-C, or a fatal error. */
static int control(controller *c)
{
    run *r = c->r;
    const px_gen_opts *o = r->o;
    for (int i = 0; i < r->nslots; i++)
        c->done0 += r->slots[i].good < r->slots[i].quota ? r->slots[i].good : r->slots[i].quota;
    int st = PX_OK;
    while (st == PX_OK) {
        int stop = (o->stop && __atomic_load_n(o->stop, __ATOMIC_RELAXED)) || c->fatal;
        if (o->cancel && __atomic_load_n(o->cancel, __ATOMIC_RELAXED))
            atomic_store(&r->cancel, 1); /* in-flight requests end, interrupted on the server */
        int budget_left = plan_jobs(c, stop);
        st = c->writer_st; /* a writer failure ends the loop after this round */
        int alive = servers_alive(r);
        /* feed the workers */
        while (!stop && alive && c->f.len && px_queue_try_push(r->jobs, fifo_peek(&c->f)) == PX_OK) {
            fifo_drop(&c->f);
            c->inflight++;
        }
        if (c->inflight == 0) {
            int open = 0;
            for (int i = 0; i < r->nslots; i++)
                open += r->slots[i].open;
            if (stop || c->writer_failed || alive == 0 || (open == 0 && !budget_left))
                break;
        }
        void *p;
        if (alive == 0 && c->inflight > 0 && px_queue_length(r->jobs) == (size_t)c->inflight) {
            /* nobody will take what is queued: take it back */
            while (px_queue_pop(r->jobs, &p, 0) == PX_OK) {
                fifo_push(&c->f, p);
                c->inflight--;
            }
            continue;
        }
        if (px_queue_pop(r->results, &p, (c->f.len && !stop) ? 20 : 100) == PX_OK)
            take_result(c, p);
        if (px_now_ms() - c->last_report >= o->progress_interval_ms) {
            c->last_report = px_now_ms();
            report(r, c->sum, c->t0, c->done0, 0);
        }
    }
    return st;
}

/* Stops the workers, counts what they finished after the loop, and decides
 * whether the campaign is complete. */
static int finish(controller *c, int st)
{
    run *r = c->r;
    const px_gen_opts *o = r->o;
    px_gen_summary *sum = c->sum;
    __atomic_store_n(&r->stopping, 1, __ATOMIC_RELEASE);
    if (r->jobs)
        px_queue_close(r->jobs);
    for (int i = 0; i < c->started; i++)
        pthread_join(r->workers[i].th, NULL);
    void *p;
    while (r->results && px_queue_pop(r->results, &p, 0) == PX_OK) {
        job_item *it = p;
        if (it->kind == R_DONE)
            count_done(sum, NULL, it);
        item_free(it);
    }
    while (r->jobs && px_queue_pop(r->jobs, &p, 0) == PX_OK)
        item_free(p);
    if (!c->started)
        return st;
    report(r, sum, c->t0, c->done0, 1);
    for (int i = 0; i < o->nservers; i++)
        sum->servers_set_aside += r->servers[i].dead;
    sum->complete = 1;
    for (int i = 0; i < r->nslots; i++) {
        int good = 0;
        px_manifest_count(r->store, r->slots[i].slug, px_gen_type_name(r->slots[i].type), &good,
                          NULL, NULL, NULL, NULL);
        if (good < r->slots[i].quota)
            sum->complete = 0;
        slot *s = &r->slots[i];
        if (good < s->quota && s->made > 0 && s->made >= o->max_jobs_factor * s->quota) {
            sum->capped++;
            px_log(PX_LOG_WARN,
                   "%s/%s: stopped at its job cap: %d jobs made for a quota of %d (max_jobs_factor "
                   "%d x quota), %d good, %d rejected, %d failed; run again to go on",
                   s->slug, px_gen_type_name(s->type), s->made, s->quota, o->max_jobs_factor, good,
                   s->rejected, s->failed);
        }
    }
    if (c->fatal)
        return c->fatal_st ? c->fatal_st : PX_EIO;
    if (st == PX_OK && !sum->complete && sum->servers_set_aside == o->nservers)
        return px_err_set(c->err, PX_ENET, "every render server was set aside after repeated "
                                           "failures; the run can be resumed");
    return st;
}

/* The settings new jobs are recorded with: the campaign's, or for the local
 * backend what the model will really render (px_gen_local_resolve). */
static int render_settings(run *r, px_err *err)
{
    r->render = r->o->campaign->render;
    if (r->o->backend != PX_GEN_LOCAL)
        return PX_OK;
    char note[600];
    int st = px_gen_local_resolve(r->o->local, &r->render, note, sizeof note, err);
    if (st == PX_OK && note[0])
        px_log(PX_LOG_WARN, "%s", note);
    return st;
}

int px_gen_run(const px_gen_opts *opts, px_gen_summary *sum, px_err *err)
{
    memset(sum, 0, sizeof *sum);
    int st = check_opts(opts, err);
    if (st != PX_OK)
        return st;
    /* the local backend is one server, "local", whose workers share the model */
    static const char *const k_local[] = {"local"};
    px_gen_opts lo = *opts;
    if (lo.backend == PX_GEN_LOCAL) {
        lo.servers = (const char **)k_local;
        lo.nservers = 1;
    }
    const px_gen_opts *o = &lo;
    run r = {.o = o};
    controller c = {.r = &r, .t0 = px_now_ms(), .sum = sum, .err = err};
    pthread_mutex_init(&r.phash_mu, NULL);
    int64_t cid = 0;
    const px_gen_campaign *camp = o->campaign;
    if ((st = px_gen_style_load(o->style_path, &r.style, err)) == PX_OK &&
        (st = render_settings(&r, err)) == PX_OK && (st = open_pool(o, &r.store, err)) == PX_OK &&
        (st = px_manifest_add_campaign(r.store, camp->name, camp->json ? camp->json : "{}", &cid,
                                       err)) == PX_OK &&
        (st = setup_slots(&r, cid, err)) == PX_OK && (st = queue_pending(&c)) == PX_OK &&
        (st = load_pool_index(&c)) == PX_OK)
        st = start_workers(&c);
    if (st == PX_OK)
        st = control(&c);
    st = finish(&c, st);
    while (c.f.len) {
        item_free(fifo_peek(&c.f));
        fifo_drop(&c.f);
    }
    free(c.f.v);
    px_queue_destroy(r.jobs);
    px_queue_destroy(r.results);
    if (r.servers)
        for (int i = 0; i < o->nservers; i++) {
            pthread_mutex_destroy(&r.servers[i].mu);
            pthread_mutex_destroy(&r.servers[i].probe_mu);
        }
    free(r.servers);
    free(r.workers);
    free(r.slots);
    free(r.ph_ids);
    free(r.ph);
    px_gen_dedup_destroy(c.dd);
    px_manifest_close(r.store);
    pthread_mutex_destroy(&r.phash_mu);
    sum->seconds = (px_now_ms() - c.t0) / 1000;
    return st;
}

/* Renders req on the server `where` as a run would (probed first), and puts
 * what the server says it used into j for the file's metadata. */
static int rerender_remote(const px_gen_opts *o, const char *where, px_manifest_job *j,
                           const px_gen_render_req *req, px_buf *payload, px_image *img,
                           px_err *err)
{
    px_gen_client *http = NULL;
    px_gen_server_info *info = px_calloc(1, sizeof *info);
    px_gen_render_used *used = px_calloc(1, sizeof *used);
    char *ri = NULL;
    int st = info && used ? px_gen_client_create(&http, err)
                          : px_err_set(err, PX_ENOMEM, "out of memory");
    if (st == PX_OK)
        st = px_gen_probe(http, o->backend, where, o->timeout_ms, info, err);
    if (st == PX_OK)
        st = px_gen_render(http, o->backend, where, info, o->workflow, req, o->timeout_ms,
                           payload, used, err);
    if (st == PX_OK)
        st = px_gen_decode(payload->data, payload->len, 0, img, err);
    if (st == PX_OK && px_gen_apply_used(j, info, used, img->w, img->h, NULL, &ri) != PX_OK)
        st = px_err_set(err, PX_ENOMEM, "out of memory");
    free(ri);
    free(info);
    free(used);
    px_gen_client_destroy(http);
    return st;
}

int px_gen_rerender(const px_gen_opts *o, int64_t id, const char *out_path, int *same,
                    px_err *err)
{
    if (same)
        *same = 0;
    int local = o->backend == PX_GEN_LOCAL;
    if (!o->pool || (local ? !o->local : o->nservers <= 0))
        return px_err_set(err, PX_EINVAL, "rerender: needs --out POOL and a --server (or "
                                          "--backend local --model PATH)");
    const char *where = local ? "local" : o->servers[0];
    char db[1100];
    snprintf(db, sizeof db, "%s/%s", o->pool, PX_MANIFEST_FILE);
    px_manifest *s = NULL;
    int st = px_manifest_open(db, 0, &s, err);
    if (st != PX_OK)
        return st;
    px_manifest_job j;
    px_gen_client *http = NULL;
    px_buf payload = {0}, png = {0};
    px_image img = {0}, old = {0};
    char *meta = NULL;
    if ((st = px_manifest_get_job(s, id, &j, err)))
        goto out;
    px_gen_render_req req = {.prompt = j.prompt, .negative = j.negative, .seed = j.seed,
                             .width = j.width, .height = j.height, .steps = j.steps,
                             .cfg = j.cfg, .sampler = j.sampler, .model = j.model};
    if (local)
        st = px_gen_local_render(o->local, &req, NULL, NULL, &img, NULL, err);
    else
        st = rerender_remote(o, where, &j, &req, &payload, &img, err);
    if (st)
        goto out;
    px_gen_check_result cr;
    if ((st = px_gen_check_image(&img, &o->checks, &cr, err)))
        goto out;
    char params[6000];
    const char *hash = local ? px_gen_local_hash(o->local) : NULL;
    build_parameters(&j, local ? px_gen_local_name(o->local) : j.model, hash, params,
                     sizeof params);
    char checks[256];
    snprintf(checks, sizeof checks, "{\"rerender_of\":%lld}", (long long)id);
    meta = build_json(&j, where, &cr, checks, hash);
    if (!meta) {
        st = px_err_set(err, PX_ENOMEM, "out of memory");
        goto out;
    }
    /* the file's format: out_path's extension, else the stored image's, else the pool's */
    px_manifest_image stored;
    uint8_t *d = NULL;
    size_t n = 0;
    if (px_manifest_get_image(s, id, &stored, NULL) == PX_OK) {
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", o->pool, stored.path);
        if (px_read_file(path, (size_t)256 << 20, &d, &n, NULL) != PX_OK)
            d = NULL;
        px_manifest_image_clear(&stored);
    }
    px_format fmt = px_format_from_path(out_path);
    if (fmt == PX_FMT_UNKNOWN)
        fmt = d ? px_image_sniff(d, n) : o->format;
    if (fmt == PX_FMT_UNKNOWN) /* the stored file is not an image any more: the pool's format */
        fmt = o->format;
    if ((st = px_gen_encode(&img, fmt, o->quality,
                            &(px_image_meta){.parameters = params, .json = meta}, &png, err)) ||
        (st = write_atomic(out_path, png.data, png.len, 0, err))) {
        free(d);
        goto out;
    }
    /* same pixels after decoding both files: exact for PNG; for JPEG/WebP it
     * also needs the same format and quality as the run that made the pool */
    if (same && d) {
        px_image mine = {0};
        if (px_gen_decode(d, n, 0, &old, NULL) == PX_OK &&
            px_gen_decode(png.data, png.len, 0, &mine, NULL) == PX_OK && old.w == mine.w &&
            old.h == mine.h && !memcmp(old.px, mine.px, (size_t)mine.w * mine.h * 3))
            *same = 1;
        px_image_free(&mine);
    }
    free(d);
out:
    free(meta);
    px_image_free(&img);
    px_image_free(&old);
    px_buf_free(&payload);
    px_buf_free(&png);
    px_gen_client_destroy(http);
    px_manifest_job_clear(&j);
    px_manifest_close(s);
    return st;
}
