/*
 * Thread pool with a deterministic parallel-for, and a bounded blocking queue.
 *
 * The pool keeps its workers parked on a condition variable between loops; a
 * loop publishes (fn, ctx, n), bumps a generation counter and wakes them. Chunk
 * i of T covers [n*i/T, n*(i+1)/T): boundaries depend only on n and T, so a
 * kernel that writes disjoint outputs per index gives the same bytes for any
 * schedule.
 */
#include "px_core.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct px_pool {
    int threads;
    pthread_t *tids;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    uint64_t generation;
    int pending; /* workers still running the current loop */
    int stop;
    px_pool_fn fn;
    void *ctx;
    int64_t n;
};

typedef struct {
    px_pool *pool;
    int index; /* 1..threads-1; the caller is worker 0 */
} worker_arg;

static void run_chunk(px_pool *p, int i)
{
    int64_t b = p->n * i / p->threads, e = p->n * (i + 1) / p->threads;
    if (e > b)
        p->fn(p->ctx, b, e, i);
}

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    px_pool *p = wa->pool;
    int index = wa->index;
    free(wa);
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop)
            break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        run_chunk(p, index);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int px_pool_create(int threads, px_pool **out)
{
    *out = NULL;
    if (threads <= 0)
        threads = px_cpu_count();
    px_pool *p = px_calloc(1, sizeof *p);
    if (!p)
        return PX_ENOMEM;
    p->threads = threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    if (threads > 1) {
        p->tids = px_calloc((size_t)threads, sizeof *p->tids);
        if (!p->tids) {
            px_pool_destroy(p);
            return PX_ENOMEM;
        }
        for (int i = 1; i < threads; i++) {
            worker_arg *wa = px_malloc(sizeof *wa);
            if (wa) {
                wa->pool = p;
                wa->index = i;
            }
            if (!wa || pthread_create(&p->tids[i], NULL, worker_main, wa) != 0) {
                free(wa);
                p->threads = i; /* only join what started */
                px_pool_destroy(p);
                return PX_EIO;
            }
        }
    }
    *out = p;
    return PX_OK;
}

void px_pool_destroy(px_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->threads && p->tids; i++)
        pthread_join(p->tids[i], NULL);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p->tids);
    free(p);
}

int px_pool_threads(const px_pool *p)
{
    return p ? p->threads : 1;
}

void px_pool_for(px_pool *p, int64_t n, px_pool_fn fn, void *ctx)
{
    if (n <= 0)
        return;
    if (!p || p->threads == 1 || n == 1) {
        fn(ctx, 0, n, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->pending = p->threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_chunk(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

/* ---- bounded queue ---- */

struct px_queue {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    void **items;
    size_t cap, head, len;
    int closed;
};

int px_queue_create(size_t capacity, px_queue **out)
{
    *out = NULL;
    if (capacity == 0)
        return PX_EINVAL;
    px_queue *q = px_calloc(1, sizeof *q);
    if (!q)
        return PX_ENOMEM;
    q->items = px_calloc(capacity, sizeof *q->items);
    if (!q->items) {
        free(q);
        return PX_ENOMEM;
    }
    q->cap = capacity;
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->not_empty, &ca);
    pthread_cond_init(&q->not_full, &ca);
    pthread_condattr_destroy(&ca);
    *out = q;
    return PX_OK;
}

void px_queue_destroy(px_queue *q)
{
    if (!q)
        return;
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    pthread_mutex_destroy(&q->mu);
    free(q->items);
    free(q);
}

static void enqueue_locked(px_queue *q, void *item)
{
    q->items[(q->head + q->len) % q->cap] = item;
    q->len++;
    pthread_cond_signal(&q->not_empty);
}

int px_queue_try_push(px_queue *q, void *item)
{
    pthread_mutex_lock(&q->mu);
    int st = q->closed ? PX_ECLOSED : q->len == q->cap ? PX_EBUSY : PX_OK;
    if (st == PX_OK)
        enqueue_locked(q, item);
    pthread_mutex_unlock(&q->mu);
    return st;
}

int px_queue_push(px_queue *q, void *item)
{
    pthread_mutex_lock(&q->mu);
    while (!q->closed && q->len == q->cap)
        pthread_cond_wait(&q->not_full, &q->mu);
    int st = q->closed ? PX_ECLOSED : PX_OK;
    if (st == PX_OK)
        enqueue_locked(q, item);
    pthread_mutex_unlock(&q->mu);
    return st;
}

int px_queue_pop(px_queue *q, void **item, int timeout_ms)
{
    struct timespec deadline;
    if (timeout_ms >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&q->mu);
    int st = PX_OK;
    while (q->len == 0 && !q->closed) {
        if (timeout_ms < 0) {
            pthread_cond_wait(&q->not_empty, &q->mu);
        } else if (pthread_cond_timedwait(&q->not_empty, &q->mu, &deadline) == ETIMEDOUT) {
            if (q->len == 0 && !q->closed) {
                st = PX_ETIMEOUT;
                break;
            }
        }
    }
    if (st == PX_OK) {
        if (q->len == 0) {
            st = PX_ECLOSED;
        } else {
            *item = q->items[q->head];
            q->head = (q->head + 1) % q->cap;
            q->len--;
            pthread_cond_signal(&q->not_full);
        }
    }
    pthread_mutex_unlock(&q->mu);
    return st;
}

void px_queue_close(px_queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->closed = 1;
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->mu);
}

size_t px_queue_length(px_queue *q)
{
    pthread_mutex_lock(&q->mu);
    size_t n = q->len;
    pthread_mutex_unlock(&q->mu);
    return n;
}
