/*
 * bot_metrics implementation: atomic counters bumped by the poller, the
 * webhook and the workers, rendered in the Prometheus text format for
 * bot_http.c's GET /metrics. The bot's own logic never waits on them.
 */
#include "bot_metrics.h"

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

size_t bot_metrics_render(const bot_metrics *m, char *out, size_t cap)
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
        {"pixpipe_bot_webhook_requests_total{result=\"ok\"}", NULL},
        {"pixpipe_bot_webhook_requests_total{result=\"denied\"}", NULL},
        {"pixpipe_bot_webhook_requests_total{result=\"bad\"}", NULL},
        {"pixpipe_bot_webhook_requests_total{result=\"retry\"}", NULL},
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
        else if (i == BM_HOOK_OK)
            OUT("# HELP pixpipe_bot_webhook_requests_total webhook POSTs by answer: ok (2xx), "
                "denied (no or wrong secret), bad (path, method, size, body), retry (500/503)\n"
                "# TYPE pixpipe_bot_webhook_requests_total counter\n");
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
