/*
 * Server metrics in the Prometheus text exposition format (version 0.0.4):
 * request counters by route and status code, a latency histogram per route,
 * images and faces processed, time per anonymize stage, and gauges for the
 * job queue and requests in progress.
 *
 * Every counter is a relaxed atomic bumped on the request's own thread, so
 * recording costs a few atomic adds and no lock; /metrics reads them one by
 * one (a scrape may see a request counted in one series and not yet in
 * another, which Prometheus tolerates). Histogram buckets are stored
 * per-bucket and made cumulative when written out.
 */
#include "serve_internal.h"

#include "manifest/px_manifest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int codes[PX_METRIC_CODES] = {0,   200, 201, 204, 302, 304, 400, 401, 403, 404,
                                           405, 409, 413, 415, 422, 429, 500, 502, 503, 504};
/* latency bucket upper bounds, seconds */
static const double buckets[PX_METRIC_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                  0.25,  0.5,    1.0,   2.5,  5.0,   10.0, 30.0};

const char *px_route_name(px_route r)
{
    /* by name, so routes added in any order keep their labels */
    static const char *names[PX_R_COUNT] = {
        [PX_R_HEALTHZ] = "healthz",         [PX_R_METRICS] = "metrics",
        [PX_R_ANONYMIZE] = "anonymize",     [PX_R_POOL_STATS] = "pool_stats",
        [PX_R_POOL_IMAGES] = "pool_images", [PX_R_POOL_IMAGE] = "pool_image",
        [PX_R_POOL_VERDICT] = "pool_verdict", [PX_R_REVIEW] = "review",
        [PX_R_CSRF] = "csrf",               [PX_R_LOGIN] = "login",
        [PX_R_LOGOUT] = "logout",           [PX_R_ME] = "me",
        [PX_R_CLAIM] = "review_claim",      [PX_R_UNDO] = "review_undo",
        [PX_R_REASONS] = "review_reasons",  [PX_R_ADMIN_QUEUE] = "review_admin_queue",
        [PX_R_QC] = "review_qc",            [PX_R_POOL_THUMB] = "pool_thumb",
        [PX_R_POOL_SIMILAR] = "pool_similar", [PX_R_CAMPAIGNS] = "campaigns",
        [PX_R_OTHER] = "other",
    };
    if ((unsigned)r < PX_R_COUNT && !names[r])
        return "other";
    return (unsigned)r < PX_R_COUNT ? names[r] : "other";
}

void px_metrics_observe(px_metrics *m, px_route r, int code, double ms)
{
    if ((unsigned)r >= PX_R_COUNT)
        r = PX_R_OTHER;
    int ci = PX_METRIC_CODES; /* "other" */
    for (int i = 0; i < PX_METRIC_CODES; i++)
        if (codes[i] == code) {
            ci = i;
            break;
        }
    atomic_fetch_add_explicit(&m->requests[r][ci], 1, memory_order_relaxed);
    double s = ms / 1000.0;
    int bi = PX_METRIC_BUCKETS;
    for (int i = 0; i < PX_METRIC_BUCKETS; i++)
        if (s <= buckets[i]) {
            bi = i;
            break;
        }
    atomic_fetch_add_explicit(&m->latency[r][bi], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->latency_us_sum[r], (uint_fast64_t)(ms * 1000.0 + 0.5),
                              memory_order_relaxed);
}

static uint64_t ld(atomic_uint_fast64_t *a)
{
    return (uint64_t)atomic_load_explicit(a, memory_order_relaxed);
}

/* printf into a px_buf; returns PX_OK or PX_ENOMEM */
static int bprintf(px_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bprintf(px_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return PX_ENOMEM;
    /* room for the text and vsnprintf's NUL, which is then not counted */
    while (b->cap - b->len < (size_t)n + 1) {
        size_t cap = b->cap ? 2 * b->cap : 4096;
        uint8_t *d = px_realloc(b->data, cap);
        if (!d)
            return PX_ENOMEM;
        b->data = d;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return PX_OK;
}

/* Review quality control per reviewer (the figures of GET /v1/review/qc),
 * as gauges labelled by reviewer name. Names of accounts are letters,
 * digits, space and . _ -; a legacy typed name is escaped as the text
 * format asks (backslash, quote, newline). */
static int label_escape(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            out[o++] = '\\';
            out[o++] = *s;
        } else if (*s == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *s;
        }
    }
    out[o] = '\0';
    return PX_OK;
}

static int reviewer_gauges(px_server *srv, px_buf *out)
{
    struct px_manifest *m = px_pool_store(srv);
    if (!m)
        return PX_OK;
    px_manifest_qc *q = NULL;
    size_t n = 0;
    px_err err = {{0}};
    if (px_manifest_review_qc(m, &q, &n, &err) != PX_OK) {
        px_log(PX_LOG_WARN, "serve: metrics: %s", err.msg);
        return PX_OK; /* the other metrics still go out */
    }
    int st = bprintf(out, "# HELP pixpipe_reviewer_judged Images with a verdict of the reviewer.\n"
                          "# TYPE pixpipe_reviewer_judged gauge\n"
                          "# HELP pixpipe_reviewer_approval_rate Share of the reviewer's images "
                          "approved.\n"
                          "# TYPE pixpipe_reviewer_approval_rate gauge\n"
                          "# HELP pixpipe_reviewer_median_seconds Median seconds per verdict.\n"
                          "# TYPE pixpipe_reviewer_median_seconds gauge\n"
                          "# HELP pixpipe_reviewer_agreement Share of other reviewers' votes on "
                          "the same images that match.\n"
                          "# TYPE pixpipe_reviewer_agreement gauge\n");
    for (size_t i = 0; i < n; i++) {
        char name[300];
        label_escape(name, sizeof name, q[i].name);
        st |= bprintf(out, "pixpipe_reviewer_judged{reviewer=\"%s\"} %d\n"
                           "pixpipe_reviewer_approval_rate{reviewer=\"%s\"} %.4f\n",
                      name, q[i].judged, name, q[i].approval_rate);
        if (q[i].median_seconds >= 0)
            st |= bprintf(out, "pixpipe_reviewer_median_seconds{reviewer=\"%s\"} %.3f\n", name,
                          q[i].median_seconds);
        if (q[i].agreement >= 0)
            st |= bprintf(out, "pixpipe_reviewer_agreement{reviewer=\"%s\"} %.4f\n", name,
                          q[i].agreement);
    }
    free(q);
    return st;
}

int px_server_metrics_text(px_server *srv, px_buf *out)
{
    px_metrics *m = &srv->metrics;
    int st = 0;
    st |= bprintf(out, "# HELP pixpipe_http_requests_total HTTP requests by route and status "
                       "code (code 0: ended without a response).\n"
                       "# TYPE pixpipe_http_requests_total counter\n");
    for (int r = 0; r < PX_R_COUNT; r++)
        for (int i = 0; i <= PX_METRIC_CODES; i++) {
            uint64_t v = ld(&m->requests[r][i]);
            if (!v)
                continue;
            if (i < PX_METRIC_CODES)
                st |= bprintf(out, "pixpipe_http_requests_total{route=\"%s\",code=\"%d\"} %llu\n",
                              px_route_name((px_route)r), codes[i], (unsigned long long)v);
            else
                st |= bprintf(out, "pixpipe_http_requests_total{route=\"%s\",code=\"other\"} %llu\n",
                              px_route_name((px_route)r), (unsigned long long)v);
        }
    st |= bprintf(out, "# HELP pixpipe_http_request_duration_seconds Time from request headers "
                       "to response completion.\n"
                       "# TYPE pixpipe_http_request_duration_seconds histogram\n");
    for (int r = 0; r < PX_R_COUNT; r++) {
        uint64_t cum = 0, per[PX_METRIC_BUCKETS + 1];
        for (int i = 0; i <= PX_METRIC_BUCKETS; i++)
            per[i] = ld(&m->latency[r][i]);
        const char *name = px_route_name((px_route)r);
        for (int i = 0; i < PX_METRIC_BUCKETS; i++) {
            cum += per[i];
            st |= bprintf(out,
                          "pixpipe_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} "
                          "%llu\n",
                          name, buckets[i], (unsigned long long)cum);
        }
        cum += per[PX_METRIC_BUCKETS];
        st |= bprintf(out,
                      "pixpipe_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n"
                      "pixpipe_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n"
                      "pixpipe_http_request_duration_seconds_count{route=\"%s\"} %llu\n",
                      name, (unsigned long long)cum, name,
                      (double)ld(&m->latency_us_sum[r]) / 1e6, name, (unsigned long long)cum);
    }
    static const char *stages[4] = {"decode", "detect", "conceal", "encode"};
    st |= bprintf(out, "# HELP pixpipe_anonymize_stage_seconds_total Time spent per anonymize "
                       "stage.\n# TYPE pixpipe_anonymize_stage_seconds_total counter\n");
    for (int i = 0; i < 4; i++)
        st |= bprintf(out, "pixpipe_anonymize_stage_seconds_total{stage=\"%s\"} %.6f\n", stages[i],
                      (double)ld(&m->stage_us[i]) / 1e6);
    st |= bprintf(
        out,
        "# HELP pixpipe_anonymize_images_total Images anonymized.\n"
        "# TYPE pixpipe_anonymize_images_total counter\n"
        "pixpipe_anonymize_images_total %llu\n"
        "# HELP pixpipe_faces_found_total Faces found and concealed.\n"
        "# TYPE pixpipe_faces_found_total counter\n"
        "pixpipe_faces_found_total %llu\n"
        "# HELP pixpipe_rejected_busy_total Requests refused with 503 (concurrency limit or full "
        "queue).\n"
        "# TYPE pixpipe_rejected_busy_total counter\n"
        "pixpipe_rejected_busy_total %llu\n"
        "# HELP pixpipe_anonymize_timeouts_total Anonymize jobs answered 504 (over the "
        "processing timeout).\n"
        "# TYPE pixpipe_anonymize_timeouts_total counter\n"
        "pixpipe_anonymize_timeouts_total %llu\n"
        "# HELP pixpipe_verdicts_total Review verdicts stored.\n"
        "# TYPE pixpipe_verdicts_total counter\n"
        "pixpipe_verdicts_total %llu\n"
        "# HELP pixpipe_header_timeouts_total Connections shut down for not sending their "
        "headers in time.\n"
        "# TYPE pixpipe_header_timeouts_total counter\n"
        "pixpipe_header_timeouts_total %llu\n",
        (unsigned long long)ld(&m->images), (unsigned long long)ld(&m->faces),
        (unsigned long long)ld(&m->rejected_busy), (unsigned long long)ld(&m->timeouts),
        (unsigned long long)ld(&m->verdicts), (unsigned long long)ld(&m->header_timeouts));
    st |= bprintf(out,
                  "# HELP pixpipe_queue_depth Anonymize jobs waiting for a worker.\n"
                  "# TYPE pixpipe_queue_depth gauge\n"
                  "pixpipe_queue_depth %zu\n"
                  "# HELP pixpipe_queue_capacity Anonymize jobs that may wait before 503.\n"
                  "# TYPE pixpipe_queue_capacity gauge\n"
                  "pixpipe_queue_capacity %d\n"
                  "# HELP pixpipe_jobs_running Anonymize jobs being processed.\n"
                  "# TYPE pixpipe_jobs_running gauge\n"
                  "pixpipe_jobs_running %d\n"
                  "# HELP pixpipe_requests_in_flight Requests being handled (excluding /healthz "
                  "and /metrics).\n"
                  "# TYPE pixpipe_requests_in_flight gauge\n"
                  "pixpipe_requests_in_flight %d\n",
                  srv->jobs ? px_queue_length(srv->jobs) : (size_t)0, srv->o.queue_capacity,
                  atomic_load(&srv->running), atomic_load(&srv->inflight));
    st |= reviewer_gauges(srv, out);
    return st ? PX_ENOMEM : PX_OK;
}
