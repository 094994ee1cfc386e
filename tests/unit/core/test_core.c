/* Unit tests for px_core: errors, thread pool determinism, bounded queue, atomic writes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/px_core.h"

static void test_err_prefix(void **state)
{
    (void)state;
    px_err e;
    px_err_clear(&e);
    assert_int_equal(px_err_set(&e, PX_ECORRUPT, "bad %s", "header"), PX_ECORRUPT);
    assert_int_equal(px_err_prefix(&e, PX_ECORRUPT, "%s", "a.jpg"), PX_ECORRUPT);
    assert_string_equal(e.msg, "a.jpg: bad header");
    assert_int_equal(px_err_set(NULL, PX_EIO, "ignored"), PX_EIO);
}

typedef struct {
    int64_t *hits;
} fill_ctx;

static void fill(void *ctx, int64_t b, int64_t e, int worker)
{
    fill_ctx *c = ctx;
    (void)worker;
    for (int64_t i = b; i < e; i++)
        c->hits[i] += i * 3 + 1;
}

static void test_pool_covers_every_index_once(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 5; threads++) {
        px_pool *p;
        assert_int_equal(px_pool_create(threads, &p), PX_OK);
        assert_int_equal(px_pool_threads(p), threads);
        for (int64_t n = 0; n < 40; n += 7) {
            int64_t *hits = calloc((size_t)n + 1, sizeof *hits);
            fill_ctx c = {hits};
            for (int rep = 0; rep < 3; rep++)
                px_pool_for(p, n, fill, &c);
            for (int64_t i = 0; i < n; i++)
                assert_int_equal(hits[i], 3 * (i * 3 + 1));
            free(hits);
        }
        px_pool_destroy(p);
    }
    px_pool_destroy(NULL);
}

static void test_queue_bounded(void **state)
{
    (void)state;
    px_queue *q;
    int a = 1, b = 2, c = 3;
    void *out;
    assert_int_equal(px_queue_create(2, &q), PX_OK);
    assert_int_equal(px_queue_try_push(q, &a), PX_OK);
    assert_int_equal(px_queue_try_push(q, &b), PX_OK);
    assert_int_equal(px_queue_try_push(q, &c), PX_EBUSY);
    assert_int_equal(px_queue_length(q), 2);
    assert_int_equal(px_queue_pop(q, &out, 0), PX_OK);
    assert_ptr_equal(out, &a);
    assert_int_equal(px_queue_pop(q, &out, 0), PX_OK);
    assert_ptr_equal(out, &b);
    assert_int_equal(px_queue_pop(q, &out, 20), PX_ETIMEOUT);
    assert_int_equal(px_queue_try_push(q, &c), PX_OK);
    px_queue_close(q);
    assert_int_equal(px_queue_try_push(q, &a), PX_ECLOSED);
    assert_int_equal(px_queue_pop(q, &out, -1), PX_OK); /* drains after close */
    assert_ptr_equal(out, &c);
    assert_int_equal(px_queue_pop(q, &out, -1), PX_ECLOSED);
    px_queue_destroy(q);
}

#define NPROD 4
#define NITEMS 500
static px_queue *g_q;
static void *producer(void *arg)
{
    intptr_t base = (intptr_t)arg;
    for (intptr_t i = 0; i < NITEMS; i++)
        px_queue_push(g_q, (void *)(base * NITEMS + i + 1));
    return NULL;
}

static void test_queue_many_producers(void **state)
{
    (void)state;
    assert_int_equal(px_queue_create(8, &g_q), PX_OK);
    pthread_t t[NPROD];
    for (intptr_t i = 0; i < NPROD; i++)
        pthread_create(&t[i], NULL, producer, (void *)i);
    char *seen = calloc(NPROD * NITEMS + 1, 1);
    for (int i = 0; i < NPROD * NITEMS; i++) {
        void *v;
        assert_int_equal(px_queue_pop(g_q, &v, 5000), PX_OK);
        intptr_t k = (intptr_t)v;
        assert_true(k >= 1 && k <= NPROD * NITEMS);
        assert_int_equal(seen[k], 0);
        seen[k] = 1;
    }
    for (int i = 0; i < NPROD; i++)
        pthread_join(t[i], NULL);
    free(seen);
    px_queue_destroy(g_q);
}

static void test_atomic_write_and_read(void **state)
{
    (void)state;
    char dir[] = "/tmp/px_core_testXXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/out.bin", dir);
    px_err e;
    assert_int_equal(px_write_file_atomic(path, "hello", 5, &e), PX_OK);
    uint8_t *d;
    size_t n;
    assert_int_equal(px_read_file(path, 100, &d, &n, &e), PX_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(d, "hello", 5);
    free(d);
    assert_int_equal(px_read_file(path, 4, &d, &n, &e), PX_ELIMIT);
    assert_non_null(strstr(e.msg, "out.bin"));
    /* a write into a missing directory fails and leaves nothing behind */
    snprintf(path, sizeof path, "%s/missing/out.bin", dir);
    assert_int_equal(px_write_file_atomic(path, "x", 1, &e), PX_EIO);
    snprintf(path, sizeof path, "%s/out.bin", dir);
    unlink(path);
    assert_int_equal(rmdir(dir), 0); /* empty: no temporary left over */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_prefix),
        cmocka_unit_test(test_pool_covers_every_index_once),
        cmocka_unit_test(test_queue_bounded),
        cmocka_unit_test(test_queue_many_producers),
        cmocka_unit_test(test_atomic_write_and_read),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
