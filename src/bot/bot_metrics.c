/*
 * bot_metrics implementation: atomic counters bumped by the poller and the
 * workers, and a libmicrohttpd daemon (one internal thread; two small read
 * only pages) that renders them. The bot's own logic never waits on it.
 * Written here rather than through src/serve: that server is the review
 * application with its own routing, hosts and limits; this needs two GETs.
 */
#include "bot_metrics.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double k_bounds_s[BM_NBUCKETS] = {0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300};

void bot_metrics_init(bot_metrics *m)
{
    for (int i = 0; i < BM_NCOUNTERS; i++)
        atomic_init(&m->c[i], 0);
    for (int i = 0; i <= BM_NBUCKETS; i++)
        atomic_init(&m->lat[i], 0);
    atomic_init(&m->lat_sum_ms, 0);
    atomic_init(&m->healthy, 1);
    atomic_init(&m->queue_depth, 0);
}

void bot_metrics_job(bot_metrics *m, double ms)
{
    int i = 0;
    while (i < BM_NBUCKETS && ms / 1000.0 > k_bounds_s[i])
        i++;
    atomic_fetch_add(&m->lat[i], 1);
    atomic_fetch_add(&m->lat_sum_ms, (long long)ms);
}

static size_t render(const bot_metrics *m, char *out, size_t cap)
{
    static const char *const names[BM_NCOUNTERS][2] = {
        {"pixpipe_bot_updates_total", "updates accepted as jobs"},
        {"pixpipe_bot_photos_total", "images worked on"},
        {"pixpipe_bot_faces_total", "faces hidden"},
        {"pixpipe_bot_jobs_sent_total", "jobs answered"},
        {"pixpipe_bot_jobs_dropped_total", "jobs refused for good by Telegram or given up"},
        {"pixpipe_bot_jobs_deferred_total", "job tries that ended in a retry later"},
        {"pixpipe_bot_call_retries_total", "extra Bot API requests made by retries"},
        {"pixpipe_bot_refused_total{reason=\"busy\"}", NULL},
        {"pixpipe_bot_refused_total{reason=\"rate_limit\"}", NULL},
    };
    size_t n = 0;
#define OUT(...)                                                                                   \
    do {                                                                                           \
        int w_ = snprintf(out + n, n < cap ? cap - n : 0, __VA_ARGS__);                            \
        if (w_ > 0)                                                                                \
            n += (size_t)w_;                                                                       \
    } while (0)
    for (int i = 0; i < BM_NCOUNTERS; i++) {
        if (names[i][1])
            OUT("# HELP %s %s\n# TYPE %s counter\n", names[i][0], names[i][1], names[i][0]);
        else if (i == BM_BUSY)
            OUT("# HELP pixpipe_bot_refused_total messages answered with a refusal\n"
                "# TYPE pixpipe_bot_refused_total counter\n");
        OUT("%s %lld\n", names[i][0], (long long)atomic_load(&m->c[i]));
    }
    OUT("# HELP pixpipe_bot_queue_depth accepted jobs not finished\n"
        "# TYPE pixpipe_bot_queue_depth gauge\npixpipe_bot_queue_depth %d\n",
        atomic_load(&m->queue_depth));
    OUT("# HELP pixpipe_bot_job_seconds time from taking a job to its end\n"
        "# TYPE pixpipe_bot_job_seconds histogram\n");
    long long cum = 0;
    for (int i = 0; i <= BM_NBUCKETS; i++) {
        cum += atomic_load(&m->lat[i]);
        if (i < BM_NBUCKETS)
            OUT("pixpipe_bot_job_seconds_bucket{le=\"%g\"} %lld\n", k_bounds_s[i], cum);
        else
            OUT("pixpipe_bot_job_seconds_bucket{le=\"+Inf\"} %lld\n", cum);
    }
    OUT("pixpipe_bot_job_seconds_sum %.3f\npixpipe_bot_job_seconds_count %lld\n",
        atomic_load(&m->lat_sum_ms) / 1000.0, cum);
#undef OUT
    return n;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version, (void)upload, (void)upload_size, (void)con_cls;
    const bot_metrics *m = cls;
    char buf[8192];
    const char *type = "text/plain; charset=utf-8";
    unsigned code = 200;
    size_t len;
    if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
        code = 405;
        len = (size_t)snprintf(buf, sizeof buf, "GET only\n");
    } else if (!strcmp(url, "/healthz")) {
        int ok = atomic_load(&m->healthy);
        code = ok ? 200 : 503;
        len = (size_t)snprintf(buf, sizeof buf, ok ? "ok\n" : "getUpdates failing\n");
    } else if (!strcmp(url, "/metrics")) {
        len = render(m, buf, sizeof buf);
        if (len >= sizeof buf)
            len = sizeof buf - 1;
        type = "text/plain; version=0.0.4; charset=utf-8";
    } else {
        code = 404;
        len = (size_t)snprintf(buf, sizeof buf, "not found: /healthz or /metrics\n");
    }
    struct MHD_Response *r = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(conn, code, r);
    MHD_destroy_response(r);
    return ret;
}

int bot_metrics_serve(bot_metrics *m, const char *addr, void **srv, int *port, px_err *err)
{
    *srv = NULL;
    char host[64];
    const char *colon = addr ? strrchr(addr, ':') : NULL;
    if (!colon || (size_t)(colon - addr) >= sizeof host)
        return px_err_set(err, PX_EINVAL, "bot: metrics address '%s': expected IPV4:PORT",
                          addr ? addr : "");
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)p);
    if (*end || p < 0 || p > 65535 || inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return px_err_set(err, PX_EINVAL, "bot: metrics address '%s': expected IPV4:PORT", addr);
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, on_request, m, MHD_OPTION_SOCK_ADDR, &sa,
        MHD_OPTION_CONNECTION_LIMIT, 16u, MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    if (!d)
        return px_err_set(err, PX_EIO, "bot: cannot listen on %s for metrics", addr);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *port = di ? (int)di->port : (int)p;
    *srv = d;
    return PX_OK;
}

void bot_metrics_stop(void *server)
{
    if (server)
        MHD_stop_daemon(server);
}
