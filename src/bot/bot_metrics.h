/*
 * The bot's operational counters and the small local HTTP endpoint that
 * shows them: GET /healthz (200 "ok" while polling works, 503 after
 * getUpdates kept failing) and GET /metrics (Prometheus text format).
 * Internal to src/bot.
 */
#ifndef PX_BOT_METRICS_H
#define PX_BOT_METRICS_H

#include <stdatomic.h>

#include "core/px_core.h"

enum {
    BM_UPDATES = 0,  /* updates accepted as jobs */
    BM_PHOTOS,       /* images worked on */
    BM_FACES,        /* faces hidden */
    BM_SENT,         /* jobs answered */
    BM_DROPPED,      /* jobs refused for good or given up */
    BM_DEFERRED,     /* job tries that ended in a retry */
    BM_CALL_RETRIES, /* extra requests made by Bot API calls */
    BM_BUSY,         /* refused: queue full */
    BM_RATE,         /* refused: over the rate limit */
    BM_NCOUNTERS
};
#define BM_NBUCKETS 10

typedef struct bot_metrics {
    atomic_llong c[BM_NCOUNTERS];
    atomic_llong lat[BM_NBUCKETS + 1]; /* job latency histogram, last: +Inf */
    atomic_llong lat_sum_ms;
    atomic_int healthy;     /* 1 while getUpdates answers */
    atomic_int queue_depth; /* accepted jobs not finished */
} bot_metrics;

void bot_metrics_init(bot_metrics *m);
void bot_metrics_job(bot_metrics *m, double ms);
/* Starts the endpoint on addr "IPV4:PORT" (PORT 0: any free one): *srv gets
 * the daemon (opaque), *port the port bound. PX_EINVAL (address), PX_EIO. */
int bot_metrics_serve(bot_metrics *m, const char *addr, void **srv, int *port, px_err *err);
void bot_metrics_stop(void *server); /* NULL is a no-op */

#endif
