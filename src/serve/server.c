/*
 * The HTTP server: libmicrohttpd daemon setup, routing, limits, auth, reply
 * helpers, and the anonymize job machinery (bounded queue, worker threads,
 * deadline watchdog, graceful stop).
 *
 * Request flow (MHD calls the access handler several times per request):
 *  1. headers in: sizes, Host, route and method are checked, writes check
 *     Origin/Sec-Fetch-Site, the bearer token and the CSRF token (guard.c), a Content-Length over the limit is answered 413 before
 *     any body is read, and a request over the concurrency limit gets 503 +
 *     Retry-After. These early answers make MHD drop the rest of the body.
 *  2. body chunks: appended up to max_body_bytes; past it the rest is
 *     discarded and the final call answers 413 (chunked uploads have no
 *     Content-Length to check up front).
 *  3. body complete: cheap routes answer here; anonymize becomes a job and
 *     the connection is suspended until a worker or the watchdog resumes it.
 *
 * Locking: px_server.mu guards job states and the pending list. It is held
 * while a connection is suspended (so no worker can resume it first) but
 * never while resuming, and the MHD completion callback never takes it, so
 * MHD's internal locks and ours are always taken in the same order.
 */
#include "serve_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

px_serve_opts px_serve_opts_default(void)
{
    px_serve_opts o;
    memset(&o, 0, sizeof o);
    o.listen_addr = "127.0.0.1";
    o.port = 8080;
    o.io_threads = 2;
    o.workers = 2;
    o.queue_capacity = 0; /* 2 * workers */
    o.max_connections = 128;
    o.max_inflight = 64;
    o.max_body_bytes = 25u << 20;
    o.read_timeout_s = 15;
    o.process_timeout_ms = 30000;
    o.retry_after_s = 1;
    o.per_ip_connections = 32;
    o.header_timeout_s = 15;
    o.anon = px_anon_opts_default();
    return o;
}

int px_serve_parse_listen(const char *s, char *addr, size_t addr_cap, int *port, px_err *err)
{
    if (!s || !*s)
        return px_err_set(err, PX_EINVAL, "--listen: empty; expected ADDR:PORT");
    const char *colon;
    const char *a = s;
    size_t alen;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            return px_err_set(err, PX_EINVAL, "--listen '%s': expected [IPV6]:PORT", s);
        a = s + 1;
        alen = (size_t)(close - a);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon && strchr(s, ':') != colon)
            return px_err_set(err, PX_EINVAL, "--listen '%s': put an IPv6 address in brackets", s);
        alen = colon ? (size_t)(colon - s) : 0;
    }
    const char *ps = colon ? colon + 1 : s;
    char *end;
    errno = 0;
    long p = strtol(ps, &end, 10);
    if (!*ps || *end || errno || p < 0 || p > 65535)
        return px_err_set(err, PX_EINVAL, "--listen '%s': port must be 0..65535", s);
    if (alen > 0) {
        if (alen >= addr_cap)
            return px_err_set(err, PX_EINVAL, "--listen '%s': address too long", s);
        memcpy(addr, a, alen);
        addr[alen] = '\0';
    }
    *port = (int)p;
    return PX_OK;
}

/* ---- replies ------------------------------------------------------------ */

int px_http_status_for(int st)
{
    switch (st) {
    case PX_OK: return 200;
    case PX_EINVAL: return 400;
    case PX_EUNSUPPORTED: return 415;
    case PX_ELIMIT: return 413;
    case PX_ECORRUPT: return 422;
    case PX_ETIMEOUT: return 504;
    case PX_EBUSY: return 503;
    case PX_ECLOSED: return 503;
    case PX_ENOTFOUND: return 404;
    default: return 500;
    }
}

enum MHD_Result px_reply_response(struct MHD_Connection *c, px_req *r, int code,
                                  struct MHD_Response *resp, const char *ctype)
{
    if (!resp)
        return MHD_NO;
    if (ctype)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    /* image URLs and ids stay here; nothing of ours is to be framed */
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    if (code == 503 && r) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", r->srv->o.retry_after_s);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)code, resp);
    MHD_destroy_response(resp);
    if (r)
        r->code = code;
    return ret;
}

enum MHD_Result px_reply(struct MHD_Connection *c, px_req *r, int code, const char *ctype,
                         void *body, size_t len, int take)
{
    struct MHD_Response *resp;
    if (take)
        resp = MHD_create_response_from_buffer_with_free_callback(len, body, free);
    else
        resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_PERSISTENT);
    if (!resp && take)
        free(body);
    return px_reply_response(c, r, code, resp, ctype);
}

/* A response whose body is the JSON text of v (consumed) plus a newline;
 * NULL when out of memory. */
static struct MHD_Response *json_response(json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(7)) : NULL;
    json_decref(v);
    if (!s)
        return NULL;
    size_t n = strlen(s);
    /* one trailing newline makes curl output readable */
    char *t = px_realloc(s, n + 2);
    if (!t) {
        free(s);
        return NULL;
    }
    t[n] = '\n';
    t[n + 1] = '\0';
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(n + 1, t, free);
    if (!resp) {
        free(t);
        return NULL;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    return resp;
}

/* {"error": msg}, with msg escaped by jansson (it may quote a URL). */
static struct MHD_Response *error_response(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static struct MHD_Response *error_response(const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return json_response(json_pack("{s:s}", "error", msg));
}

enum MHD_Result px_reply_json(struct MHD_Connection *c, px_req *r, int code, json_t *v)
{
    static const char oom[] = "{\"error\":\"out of memory\"}\n";
    struct MHD_Response *resp = json_response(v);
    if (!resp)
        return px_reply(c, r, 500, "application/json", (void *)oom, sizeof oom - 1, 0);
    return px_reply_response(c, r, code, resp, "application/json");
}

enum MHD_Result px_reply_error(struct MHD_Connection *c, px_req *r, int code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return px_reply_json(c, r, code, json_pack("{s:s}", "error", msg));
}

/* ---- routing ------------------------------------------------------------ */

/* Pool images are addressed by their numeric id only, never by a path, so
 * nothing in a URL can name a file outside the pool. 1..18 digits keep the
 * value inside int64 without overflow checks. */
static int parse_id(const char *s, size_t n, int64_t *id)
{
    if (n == 0 || n > 18)
        return 0;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    *id = v;
    return v > 0;
}

/* Sets r->route (and r->id); returns 0 when the path is known, 404 when not,
 * 400 for a malformed id. *want is the method the route takes. */
static int route_of(px_req *r, const char *url, const char **want)
{
    static const char images[] = "/v1/pool/images/";
    *want = "GET";
    if (!strcmp(url, "/healthz")) {
        r->route = PX_R_HEALTHZ;
    } else if (!strcmp(url, "/metrics")) {
        r->route = PX_R_METRICS;
    } else if (!strcmp(url, "/v1/anonymize")) {
        r->route = PX_R_ANONYMIZE;
        *want = "POST";
    } else if (!strcmp(url, "/v1/csrf")) {
        r->route = PX_R_CSRF;
    } else if (!strcmp(url, "/v1/pool/stats")) {
        r->route = PX_R_POOL_STATS;
    } else if (!strcmp(url, "/v1/pool/images")) {
        r->route = PX_R_POOL_IMAGES;
    } else if (!strncmp(url, images, sizeof images - 1)) {
        const char *id = url + sizeof images - 1;
        const char *slash = strchr(id, '/');
        size_t n = slash ? (size_t)(slash - id) : strlen(id);
        if (slash && strcmp(slash, "/verdict") && strcmp(slash, "/thumb") &&
            strcmp(slash, "/similar"))
            return 404;
        r->route = !slash ? PX_R_POOL_IMAGE
                   : !strcmp(slash, "/verdict") ? PX_R_POOL_VERDICT
                   : !strcmp(slash, "/thumb") ? PX_R_POOL_THUMB : PX_R_POOL_SIMILAR;
        if (r->route == PX_R_POOL_VERDICT)
            *want = "POST";
        if (!parse_id(id, n, &r->id))
            return 400;
    } else if (!strcmp(url, "/v1/login") || !strcmp(url, "/v1/logout")) {
        r->route = url[4] == 'l' && url[7] == 'i' ? PX_R_LOGIN : PX_R_LOGOUT;
        *want = "POST";
    } else if (!strcmp(url, "/v1/me")) {
        r->route = PX_R_ME;
    } else if (!strncmp(url, "/v1/review/", 11)) {
        return px_review_route(r, url, want);
    } else if (!strncmp(url, "/v1/campaigns", 13) && (!url[13] || url[13] == '/')) {
        r->route = PX_R_CAMPAIGNS;
        *want = NULL; /* GET and POST: route_campaign.c checks */
    } else if (!strcmp(url, "/") || !strncmp(url, "/review", 7)) {
        r->route = PX_R_REVIEW;
    } else {
        r->route = PX_R_OTHER;
        return 404;
    }
    return 0;
}

static int is_write(px_route r)
{
    return r == PX_R_POOL_VERDICT || r == PX_R_CLAIM || r == PX_R_UNDO || r == PX_R_LOGOUT;
}

static enum MHD_Result serve_healthz(struct MHD_Connection *c, px_req *r)
{
    px_server *srv = r->srv;
    json_t *v = json_pack("{s:s,s:s,s:b,s:b,s:i,s:i,s:i}", "status",
                          atomic_load(&srv->stopping) ? "stopping" : "ok",
                          "version", PX_VERSION, "anonymize", srv->o.detector != NULL, "pool",
                          px_pool_available(srv), "queue",
                          (int)px_queue_length(srv->jobs), "running",
                          atomic_load(&srv->running), "inflight", atomic_load(&srv->inflight));
    return px_reply_json(c, r, 200, v);
}

static enum MHD_Result serve_metrics(struct MHD_Connection *c, px_req *r)
{
    px_buf b = {0};
    if (px_server_metrics_text(r->srv, &b) != PX_OK) {
        px_buf_free(&b);
        return px_reply_error(c, r, 500, "metrics: out of memory");
    }
    return px_reply(c, r, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, 1);
}

static enum MHD_Result serve_asset(struct MHD_Connection *c, px_req *r, const char *url)
{
    if (!strcmp(url, "/") || !strcmp(url, "/review")) {
        struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"",
                                                                   MHD_RESPMEM_PERSISTENT);
        if (!resp)
            return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, "/review/");
        return px_reply_response(c, r, 302, resp, NULL);
    }
    if (!strncmp(url, "/review/campaigns", 17) && px_auth_role(c, r, NULL) != PX_ROLE_ADMIN)
        return px_reply_error(c, r, 403, "the Campaigns page is for admin accounts");
    const px_serve_asset *a = px_serve_asset_find(!strcmp(url, "/review/") ? "/review/index.html"
                                                                          : url);
    if (!a)
        return px_reply_error(c, r, 404, "no such page: %s", url);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    /* everything the page needs is served from here: no inline script, no CDN */
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' blob: data:; "
                            "style-src 'self'; script-src 'self'; frame-ancestors 'none'");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return px_reply_response(c, r, 200, resp, a->content_type);
}

static enum MHD_Result dispatch(struct MHD_Connection *c, px_req *r, const char *url)
{
    if (r->too_large)
        return px_reply_error(c, r, 413, "request body larger than the limit of %zu bytes",
                              r->srv->o.max_body_bytes);
    switch (r->route) {
    case PX_R_HEALTHZ: return serve_healthz(c, r);
    case PX_R_METRICS: return serve_metrics(c, r);
    case PX_R_ANONYMIZE: return px_anon_submit(c, r);
    case PX_R_POOL_STATS:
    case PX_R_POOL_IMAGES:
    case PX_R_POOL_IMAGE:
    case PX_R_POOL_VERDICT: return px_pool_handle(c, r);
    case PX_R_REVIEW: return serve_asset(c, r, url);
    case PX_R_CSRF: return px_guard_csrf_reply(c, r);
    case PX_R_CAMPAIGNS: return px_campaign_handle(c, r, url);
    case PX_R_LOGIN:
    case PX_R_LOGOUT:
    case PX_R_ME: return px_auth_handle(c, r);
    case PX_R_CLAIM:
    case PX_R_UNDO:
    case PX_R_REASONS:
    case PX_R_ADMIN_QUEUE:
    case PX_R_QC:
    case PX_R_POOL_THUMB:
    case PX_R_POOL_SIMILAR: return px_review_handle(c, r);
    default: return px_reply_error(c, r, 404, "no such endpoint: %.100s", url);
    }
}

/* First call of a request: everything that can be decided from the headers.
 * Queues an answer when the request is refused; MHD then skips the body. */
static enum MHD_Result on_headers(struct MHD_Connection *c, px_req *r, const char *url,
                                  const char *method)
{
    px_server *srv = r->srv;
    const char *want;
    enum MHD_Result ret;
    if (!atomic_load(&srv->ready))
        return px_reply_error(c, r, 503, "server is starting");
    if (px_guard_request(c, r, url, &ret))
        return ret;
    int bad = route_of(r, url, &want);
    if (bad == 404)
        return px_reply_error(c, r, 404, "no such endpoint: %.100s", url);
    if (bad == 400)
        return px_reply_error(c, r, 400, "bad image id in '%.100s': expected a positive decimal "
                                         "number of at most 18 digits", url);
    int head = !strcmp(method, "HEAD") && (!want || !strcmp(want, "GET"));
    if (want && strcmp(method, want) && !head) {
        struct MHD_Response *resp =
            error_response("method %.16s not allowed on %.100s; use %s", method, url, want);
        if (!resp)
            return MHD_NO;
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, want);
        return px_reply_response(c, r, 405, resp, "application/json");
    }
    if (!head && strcmp(method, "GET") && px_guard_origin(c, r, &ret))
        return ret;
    if (px_review_gate(c, r, is_write(r->route), &ret))
        return ret;
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(cl, &end, 10);
        if (errno || *end || n > srv->o.max_body_bytes)
            return px_reply_error(c, r, 413, "request body of %s bytes is over the limit of %zu",
                                  cl, srv->o.max_body_bytes);
        /* one allocation for the whole body when its size is known; capped so
         * that idle clients announcing big bodies cannot reserve much memory */
        size_t pre = n < (8u << 20) ? (size_t)n : (8u << 20);
        if (pre > 0 && !strcmp(method, "POST") && !r->body.data) {
            r->body.data = px_malloc(pre);
            r->body.cap = r->body.data ? pre : 0;
        }
    }
    if (r->route != PX_R_HEALTHZ && r->route != PX_R_METRICS) {
        int now = atomic_fetch_add(&srv->inflight, 1) + 1;
        r->counted = 1;
        if (atomic_load(&srv->stopping))
            return px_reply_error(c, r, 503, "server is shutting down");
        if (now > srv->o.max_inflight) {
            atomic_fetch_add(&srv->metrics.rejected_busy, 1);
            return px_reply_error(c, r, 503, "too many requests in progress (limit %d); retry later",
                                  srv->o.max_inflight);
        }
    }
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    px_server *srv = cls;
    px_req *r = *con_cls;
    if (!r) {
        r = px_calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->srv = srv;
        r->t0 = px_now_ms();
        r->route = PX_R_OTHER;
        snprintf(r->method, sizeof r->method, "%s", method);
        *con_cls = r;
        px_guard_conn_busy(srv, c, 1);
        return on_headers(c, r, url, method);
    }
    if (r->job) /* resumed by a worker or the watchdog */
        return px_anon_job_reply(c, r, r->job);
    if (r->campaign) /* a campaign preview, resumed by its thread */
        return px_campaign_resumed(c, r);
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (r->too_large || r->body.len + n > srv->o.max_body_bytes) {
            r->too_large = 1; /* keep reading, answer when the body is over */
            return MHD_YES;
        }
        if (px_buf_append(&r->body, upload, n) != PX_OK)
            return MHD_NO;
        return MHD_YES;
    }
    return dispatch(c, r, url);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    px_server *srv = cls;
    px_req *r = *con_cls;
    if (!r)
        return;
    double ms = px_now_ms() - r->t0;
    int code = toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? r->code : 0;
    px_metrics_observe(&srv->metrics, r->route, code, ms);
    px_log(srv->o.log_requests ? PX_LOG_INFO : PX_LOG_DEBUG, "serve: %s %d %.1f ms",
           px_route_name(r->route), code, ms);
    if (r->counted)
        atomic_fetch_sub(&srv->inflight, 1);
    px_guard_conn_busy(srv, c, 0); /* the wait for the next request's headers starts */
    if (r->job)
        px_job_release(r->job);
    px_campaign_req_free(r);
    px_buf_free(&r->body);
    free(r);
    *con_cls = NULL;
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[400];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    px_log(PX_LOG_DEBUG, "serve: libmicrohttpd: %s", line);
}

/* ---- jobs ------------------------------------------------------------------ */

void px_job_release(anon_job *job)
{
    if (atomic_fetch_sub(&job->refs, 1) == 1) {
        px_anon_result_free(&job->res);
        free(job->body);
        free(job);
    }
}

static void pending_remove(px_server *srv, anon_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else if (srv->pending == j)
        srv->pending = j->next;
    if (j->next)
        j->next->prev = j->prev;
    j->prev = j->next = NULL;
}

/* With srv->mu held: queues the job and suspends its connection. */
int px_serve_enqueue_locked(px_server *srv, anon_job *job);
int px_serve_enqueue_locked(px_server *srv, anon_job *job)
{
    if (atomic_load(&srv->stopping))
        return PX_ECLOSED;
    int st = px_queue_try_push(srv->jobs, job);
    if (st != PX_OK)
        return st;
    job->next = srv->pending;
    if (job->next)
        job->next->prev = job;
    job->prev = NULL;
    srv->pending = job;
    MHD_suspend_connection(job->conn);
    pthread_cond_signal(&srv->cv);
    return PX_OK;
}

/* Marks the job answered with `outcome` (if nobody did yet) and resumes its
 * connection. Called without srv->mu held. */
static void job_answer(px_server *srv, anon_job *job, int outcome)
{
    pthread_mutex_lock(&srv->mu);
    int first = !job->answered;
    if (first) {
        job->answered = 1;
        job->outcome = outcome;
        pending_remove(srv, job);
    }
    pthread_mutex_unlock(&srv->mu);
    if (first)
        MHD_resume_connection(job->conn);
}

static void *worker_main(void *arg)
{
    px_server *srv = arg;
    for (;;) {
        void *item;
        if (px_queue_pop(srv->jobs, &item, -1) != PX_OK)
            break;
        anon_job *job = item;
        pthread_mutex_lock(&srv->mu);
        int skip = job->answered || srv->stop_threads;
        if (!skip)
            job->state = JOB_RUNNING;
        pthread_mutex_unlock(&srv->mu);
        if (skip) {
            job_answer(srv, job, 503);
        } else {
            atomic_fetch_add(&srv->running, 1);
            px_anon_job_run(srv, job);
            atomic_fetch_sub(&srv->running, 1);
            pthread_mutex_lock(&srv->mu);
            job->state = JOB_DONE;
            pthread_mutex_unlock(&srv->mu);
            job_answer(srv, job, 200);
        }
        px_job_release(job);
    }
    return NULL;
}

/* Answers 504 for every job past its deadline; sleeps until the next one. */
static void *watchdog_main(void *arg)
{
    px_server *srv = arg;
    pthread_mutex_lock(&srv->mu);
    while (!srv->stop_threads) {
        double now = px_now_ms(), next = now + 60000.0;
        anon_job *late[32];
        int n_late = 0;
        for (anon_job *j = srv->pending; j; j = j->next) {
            if (j->deadline <= now && n_late < 32)
                late[n_late++] = j;
            else if (j->deadline < next)
                next = j->deadline;
        }
        if (n_late) {
            for (int i = 0; i < n_late; i++) {
                late[i]->answered = 1;
                late[i]->outcome = 504;
                pending_remove(srv, late[i]);
                atomic_fetch_add(&late[i]->refs, 1); /* kept alive across the unlock */
            }
            pthread_mutex_unlock(&srv->mu);
            for (int i = 0; i < n_late; i++) {
                atomic_fetch_add(&srv->metrics.timeouts, 1);
                MHD_resume_connection(late[i]->conn);
                px_job_release(late[i]);
            }
            pthread_mutex_lock(&srv->mu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double wait = next - now + 1.0;
        ts.tv_sec += (time_t)(wait / 1000.0);
        ts.tv_nsec += (long)((wait - (double)(long long)(wait / 1000.0) * 1000.0) * 1e6);
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&srv->cv, &srv->mu, &ts);
    }
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

/* ---- lifetime -------------------------------------------------------------- */

/* libmicrohttpd's buffer per connection. Requests that do not fit are answered
 * by the library itself, in HTML; 256 KiB lets URLs and headers far over our
 * own JSON 414/431 limits (guard.c) reach them. Pages are only touched as
 * used (the pool is mmap'ed above 32 KiB). */
#define CONN_MEMORY (256u << 10)

static int check_opts(px_serve_opts *o, px_err *err)
{
    if (!o->listen_addr || !*o->listen_addr)
        o->listen_addr = "127.0.0.1";
    if (o->port < 0 || o->port > 65535)
        return px_err_set(err, PX_EINVAL, "port %d: expected 0..65535", o->port);
    if (o->io_threads <= 0)
        o->io_threads = 2;
    if (o->workers <= 0)
        o->workers = 2;
    if (o->io_threads > 64 || o->workers > 64)
        return px_err_set(err, PX_EINVAL, "threads: at most 64 I/O threads and 64 workers");
    if (o->queue_capacity <= 0)
        o->queue_capacity = 2 * o->workers;
    if (o->max_connections <= 0)
        o->max_connections = 128;
    if (o->max_inflight <= 0)
        o->max_inflight = 64;
    if (o->max_body_bytes == 0)
        o->max_body_bytes = 25u << 20;
    if (o->read_timeout_s <= 0)
        o->read_timeout_s = 15;
    if (o->process_timeout_ms <= 0)
        o->process_timeout_ms = 30000;
    if (o->retry_after_s <= 0)
        o->retry_after_s = 1;
    if (o->per_ip_connections <= 0)
        o->per_ip_connections = 32;
    if (o->header_timeout_s <= 0)
        o->header_timeout_s = 15;
    if (o->lease_seconds <= 0)
        o->lease_seconds = 600;
    return PX_OK;
}

int px_server_create(const px_serve_opts *opts, px_server **out, px_err *err)
{
    *out = NULL;
    px_server *srv = px_calloc(1, sizeof *srv);
    if (!srv)
        return px_err_set(err, PX_ENOMEM, "serve: out of memory");
    srv->o = opts ? *opts : px_serve_opts_default();
    srv->quiesced_fd = MHD_INVALID_SOCKET;
    int st = check_opts(&srv->o, err);
    if (st)
        goto fail_early;
    if (strlen(srv->o.listen_addr) >= sizeof srv->addr) {
        st = px_err_set(err, PX_EINVAL, "listen address '%s' too long", srv->o.listen_addr);
        goto fail_early;
    }
    strcpy(srv->addr, srv->o.listen_addr);
    srv->o.listen_addr = srv->addr;
    if (srv->o.api_token && *srv->o.api_token) {
        srv->token = px_strdup(srv->o.api_token);
        if (!srv->token) {
            st = px_err_set(err, PX_ENOMEM, "serve: out of memory");
            goto fail_early;
        }
    }
    srv->o.api_token = NULL;
    if ((st = px_guard_init(srv, err)) != PX_OK)
        goto fail_early;

    union {
        struct sockaddr sa;
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } sa;
    memset(&sa, 0, sizeof sa);
    /* poll(), not MHD_USE_AUTO's epoll: with epoll, MHD_quiesce_daemon (our
     * graceful stop) races the daemon's own thread over removing the listen
     * socket from the epoll set, and libmicrohttpd 0.9.75 aborts the process
     * ("Failed to remove listen FD from epoll set"): 1 stop in about 30 under
     * load in test_serve_integration, with this code and the code before it.
     * poll() has no such set, and our connection counts are small. */
    unsigned flags = MHD_USE_POLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (inet_pton(AF_INET, srv->addr, &sa.v4.sin_addr) == 1) {
        sa.v4.sin_family = AF_INET;
        sa.v4.sin_port = htons((uint16_t)srv->o.port);
    } else if (inet_pton(AF_INET6, srv->addr, &sa.v6.sin6_addr) == 1) {
        sa.v6.sin6_family = AF_INET6;
        sa.v6.sin6_port = htons((uint16_t)srv->o.port);
        flags |= MHD_USE_IPv6;
    } else {
        st = px_err_set(err, PX_EINVAL, "listen address '%s': expected a numeric IPv4 or IPv6 "
                                        "address", srv->addr);
        goto fail_early;
    }

    if (srv->o.pool_dir && (st = px_pool_open(srv, srv->o.pool_dir, err)) != PX_OK)
        goto fail_early;
    if ((st = px_campaign_init(srv, err)) != PX_OK)
        goto fail_early;

    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&srv->mu, NULL);
    pthread_mutex_init(&srv->conn_mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->sweep_cv, &ca);
    pthread_condattr_destroy(&ca);

    if ((st = px_queue_create((size_t)srv->o.queue_capacity, &srv->jobs)) != PX_OK) {
        px_err_set(err, st, "serve: cannot create the job queue");
        goto fail;
    }
    srv->workers = px_calloc((size_t)srv->o.workers, sizeof *srv->workers);
    if (!srv->workers) {
        st = px_err_set(err, PX_ENOMEM, "serve: out of memory");
        goto fail;
    }
    for (int i = 0; i < srv->o.workers; i++) {
        if (pthread_create(&srv->workers[i], NULL, worker_main, srv)) {
            st = px_err_set(err, PX_EIO, "serve: cannot start worker thread %d", i);
            goto fail;
        }
        srv->n_workers++;
    }
    if (pthread_create(&srv->watchdog, NULL, watchdog_main, srv)) {
        st = px_err_set(err, PX_EIO, "serve: cannot start the watchdog thread");
        goto fail;
    }
    srv->watchdog_started = 1;
    if (pthread_create(&srv->sweeper, NULL, px_guard_sweeper, srv)) {
        st = px_err_set(err, PX_EIO, "serve: cannot start the header deadline thread");
        goto fail;
    }
    srv->sweeper_started = 1;

    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)srv->o.port, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR, &sa.sa,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)srv->o.io_threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)srv->o.max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)srv->o.read_timeout_s, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)srv->o.per_ip_connections, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)CONN_MEMORY, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_NOTIFY_CONNECTION, px_guard_notify, srv,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, srv, MHD_OPTION_END);
    if (!srv->daemon) {
        st = px_err_set(err, PX_EIO, "cannot listen on %s port %d (in use, or not an address of "
                                     "this machine?)", srv->addr, srv->o.port);
        goto fail;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? (int)info->port : srv->o.port;
    if ((st = px_guard_add_defaults(srv, err)) != PX_OK)
        goto fail;
    atomic_store(&srv->ready, 1);
    *out = srv;
    return PX_OK;

fail:
    px_server_stop(srv, 0);
    px_server_destroy(srv);
    return st;
fail_early:
    px_campaign_free(srv);
    px_pool_close(srv);
    free(srv->hosts);
    free(srv->token);
    free(srv);
    return st;
}

int px_server_port(const px_server *srv)
{
    return srv ? srv->port : 0;
}

void px_server_stop(px_server *srv, int grace_ms)
{
    if (!srv || srv->stopped)
        return;
    srv->stopped = 1;
    pthread_mutex_lock(&srv->mu);
    atomic_store(&srv->stopping, 1);
    pthread_mutex_unlock(&srv->mu);
    if (srv->daemon)
        srv->quiesced_fd = MHD_quiesce_daemon(srv->daemon);
    /* let requests in progress finish: waits on a counter, in 10 ms steps */
    double until = px_now_ms() + (grace_ms > 0 ? grace_ms : 0);
    while (px_now_ms() < until &&
           (atomic_load(&srv->inflight) > 0 || (srv->jobs && px_queue_length(srv->jobs) > 0))) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&srv->mu);
    srv->stop_threads = 1;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
    if (srv->jobs)
        px_queue_close(srv->jobs); /* workers answer what is left with 503, then exit */
    for (int i = 0; i < srv->n_workers; i++)
        pthread_join(srv->workers[i], NULL);
    srv->n_workers = 0;
    if (srv->watchdog_started)
        pthread_join(srv->watchdog, NULL);
    srv->watchdog_started = 0;
    if (srv->sweeper_started) {
        pthread_mutex_lock(&srv->conn_mu);
        srv->sweep_stop = 1;
        pthread_cond_broadcast(&srv->sweep_cv);
        pthread_mutex_unlock(&srv->conn_mu);
        pthread_join(srv->sweeper, NULL);
    }
    srv->sweeper_started = 0;
    px_campaign_shutdown(srv); /* a preview resumes its connection before the daemon goes */
    if (srv->daemon)
        MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
    if (srv->quiesced_fd != MHD_INVALID_SOCKET)
        close(srv->quiesced_fd);
    srv->quiesced_fd = MHD_INVALID_SOCKET;
}

void px_server_destroy(px_server *srv)
{
    if (!srv)
        return;
    px_server_stop(srv, 5000);
    px_queue_destroy(srv->jobs);
    free(srv->workers);
    px_campaign_free(srv);
    px_pool_close(srv);
    pthread_cond_destroy(&srv->cv);
    pthread_mutex_destroy(&srv->mu);
    pthread_cond_destroy(&srv->sweep_cv);
    pthread_mutex_destroy(&srv->conn_mu);
    free(srv->hosts);
    free(srv->token);
    free(srv);
}
