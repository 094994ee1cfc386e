/*
 * One face detector shared by several threads (the way the CLI, the bot and
 * the HTTP API use it): more threads than sessions, so some wait on the
 * pool's condition variable; every thread must get exactly the faces a lone
 * call gets. Small photo and one compute thread per session, so it stays
 * quick under the thread sanitizer (label "concurrent").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "anon/px_anon.h"

#define PHOTO PX_SHARED_DIR "/testdata/faces/libfd_ios_test.jpg"
#define MODEL PX_MODEL_DIR "/" PX_ANON_DEFAULT_MODEL

typedef struct worker_arg {
    px_face_detector *det;
    const uint8_t *data;
    size_t len;
    px_anon_result res;
    int rc;
} worker_arg;

/* The whole job, as the services run it: decode, detect, conceal, encode. */
static void *work(void *p)
{
    worker_arg *a = p;
    px_anon_opts o = px_anon_opts_default();
    o.seed = 5;
    a->rc = px_anon_process(a->det, a->data, a->len, &o, &a->res, NULL);
    return NULL;
}

static void test_many_threads_one_detector(void **state)
{
    (void)state;
    px_face_detector *det;
    px_err e;
    px_face_detector_opts dopts = {PX_FACE_MODEL_AUTO, 1, 2};
    if (px_face_detector_create(MODEL, &dopts, &det, &e) != PX_OK)
        fail_msg("%s", e.msg);
    uint8_t *data;
    size_t len;
    assert_int_equal(px_read_file(PHOTO, (size_t)1 << 26, &data, &len, &e), PX_OK);

    worker_arg lone = (worker_arg){.det = det, .data = data, .len = len, .rc = -1};
    work(&lone);
    assert_int_equal(lone.rc, PX_OK);
    assert_true(lone.res.n_faces >= 5);

    enum { T = 5 };
    worker_arg a[T];
    pthread_t t[T];
    for (int i = 0; i < T; i++) {
        a[i] = (worker_arg){.det = det, .data = data, .len = len, .rc = -1};
        assert_int_equal(pthread_create(&t[i], NULL, work, &a[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].rc, PX_OK);
        assert_int_equal(a[i].res.n_faces, lone.res.n_faces);
        assert_memory_equal(a[i].res.faces, lone.res.faces,
                            sizeof(px_face) * (size_t)lone.res.n_faces);
        /* same seed, same faces: byte-identical output */
        assert_int_equal(a[i].res.out.len, lone.res.out.len);
        assert_memory_equal(a[i].res.out.data, lone.res.out.data, lone.res.out.len);
        px_anon_result_free(&a[i].res);
    }
    px_anon_result_free(&lone.res);
    free(data);
    px_face_detector_destroy(det);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_threads_one_detector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
