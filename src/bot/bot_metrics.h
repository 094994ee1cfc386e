/*
 * The bot's operational counters and its HTTP listener: GET /healthz (200
 * "ok" while updates come in, 503 after getUpdates kept failing or Telegram
 * reports failed webhook deliveries), GET /metrics (Prometheus text format)
 * and, in webhook mode, the POSTs Telegram makes.
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
    BM_HOOK_OK,      /* webhook requests answered 2xx (updates taken or already known) */
    BM_HOOK_DENIED,  /* webhook requests without the right secret (401/403) */
    BM_HOOK_BAD,     /* webhook requests refused otherwise (404/405/413/400) */
    BM_HOOK_RETRY,   /* webhook requests Telegram must send again (500/503) */
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
/* The Prometheus text into out (capacity cap); returns its length (may be
 * >= cap when cut). */
size_t bot_metrics_render(const bot_metrics *m, char *out, size_t cap);

/* The bot's HTTP listener (libmicrohttpd): GET /healthz and /metrics when
 * m is set, and the webhook, POST hook_path, when on_update is set. One
 * listener may serve both (--metrics and --listen the same address). */
typedef struct bot_http bot_http;
typedef struct bot_http_routes {
    bot_metrics *m;        /* /healthz, /metrics here (NULL: not here) */
    const char *hook_path; /* the webhook's path, e.g. "/tg/hook" */
    const char *secret;    /* expected X-Telegram-Bot-Api-Secret-Token; copied */
    size_t max_body;       /* largest update taken (bytes) */
    int max_conns;         /* connections at once */
    /* Called with a whole body whose secret matched; returns the HTTP status
     * to answer (200 once the update is stored). From the listener's
     * threads, concurrently. NULL: no webhook here. */
    int (*on_update)(void *ctx, const char *body, size_t len);
    void *ctx;
} bot_http_routes;
/* Listens on addr "IPV4:PORT" (PORT 0: any free one; *port gets the port
 * bound). PX_EINVAL (address), PX_EIO (cannot listen), PX_ENOMEM. */
int bot_http_start(const char *addr, const bot_http_routes *r, bot_http **out, int *port,
                   px_err *err);
/* Stops listening and waits for requests under way. NULL is a no-op. */
void bot_http_stop(bot_http *h);

#endif
