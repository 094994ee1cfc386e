/*
 * One face detector shared by several threads (the way the CLI, the bot and
 * the HTTP API use it): more threads than sessions, so some wait on the
 * pool's condition variable; every thread must get exactly the faces a lone
 * call gets. Small photo and one compute thread per session, so it stays
 * quick under the thread sanitizer (label "concurrent"). Also: a large
 * image's passes spread over idle sessions give the same faces as one
 * session running them all, alone and with other detections competing.
 * And: passes with the network fitted to what they look at find the same
 * faces as passes at the model's own size. And: passes a caller plans
 * (px_face_detect_passes) give px_face_detect's faces for its own plan,
 * tiles of the photo find its confident faces too, and a pass the detector
 * cannot run is refused with its number.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "anon/px_anon.h"
#include "px_test.h"

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
    px_face_detector_opts dopts = {PX_FACE_MODEL_AUTO, 1, 2, 0};
    if (px_face_detector_create(MODEL, &dopts, &det, &e) != PX_OK)
        fail_msg("%s", e.msg);
    uint8_t *data;
    size_t len;
    assert_int_equal(px_read_file(PHOTO, (size_t)1 << 26, &data, &len, &e), PX_OK);

    worker_arg lone = (worker_arg){.det = det, .data = data, .len = len, .rc = -1};
    work(&lone);
    assert_int_equal(lone.rc, PX_OK);
    assert_true(lone.res.n_faces >= 5);

    /* more threads than the 2 sessions: 5, or 3 under a sanitizer (as much waiting, less work) */
    enum { T = 5 };
    const int nt = px_test_load(T, 3);
    worker_arg a[T];
    pthread_t t[T];
    for (int i = 0; i < nt; i++) {
        a[i] = (worker_arg){.det = det, .data = data, .len = len, .rc = -1};
        assert_int_equal(pthread_create(&t[i], NULL, work, &a[i]), 0);
    }
    for (int i = 0; i < nt; i++) {
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

#define BIG PX_SHARED_DIR "/testdata/faces/ultraface_imgs_3.jpg"

typedef struct detect_arg {
    px_face_detector *det;
    const px_image *img;
    px_face *faces;
    int n, passes, rc;
} detect_arg;

static void *detect(void *p)
{
    detect_arg *a = p;
    px_face_detect_opts o = px_face_detect_opts_default();
    o.min_face = 10; /* 1024x768 at 10 px: a dozen passes */
    px_face_stats st;
    px_err e;
    a->rc = px_face_detect(a->det, a->img, &o, &a->faces, &a->n, &st, &e);
    a->passes = st.passes;
    return NULL;
}

static void load_big(px_image *img)
{
    px_err e;
    uint8_t *data;
    size_t len;
    assert_int_equal(px_read_file(BIG, (size_t)1 << 26, &data, &len, &e), PX_OK);
    assert_int_equal(px_image_decode(data, len, NULL, img, NULL, &e), PX_OK);
    free(data);
}

static void test_spread_passes(void **state)
{
    (void)state;
    px_err e;
    px_image img;
    load_big(&img);

    px_face_detector *one, *spread;
    px_face_detector_opts o1 = {PX_FACE_MODEL_AUTO, 1, 1, 0}, o3 = {PX_FACE_MODEL_AUTO, 1, 3, 1};
    if (px_face_detector_create(MODEL, &o1, &one, &e) != PX_OK ||
        px_face_detector_create(MODEL, &o3, &spread, &e) != PX_OK)
        fail_msg("%s", e.msg);
    detect_arg ref = {.det = one, .img = &img};
    detect(&ref);
    assert_int_equal(ref.rc, PX_OK);
    assert_true(ref.passes > 3);
    assert_true(ref.n >= 4);

    enum { T = 3 };
    detect_arg a[T];
    pthread_t t[T];
    for (int round = 0; round < 2; round++) {
        /* round 0: alone, the passes spread over all three sessions;
         * round 1: three detections (two under a sanitizer) compete for them */
        const int nt = round == 0 ? 1 : px_test_load(T, 2);
        for (int i = 0; i < nt; i++) {
            a[i] = (detect_arg){.det = spread, .img = &img};
            assert_int_equal(pthread_create(&t[i], NULL, detect, &a[i]), 0);
        }
        for (int i = 0; i < nt; i++) {
            pthread_join(t[i], NULL);
            assert_int_equal(a[i].rc, PX_OK);
            assert_int_equal(a[i].passes, ref.passes);
            assert_int_equal(a[i].n, ref.n);
            assert_memory_equal(a[i].faces, ref.faces, sizeof(px_face) * (size_t)ref.n);
            free(a[i].faces);
        }
    }
    free(ref.faces);
    px_face_detector_destroy(one);
    px_face_detector_destroy(spread);
    px_image_free(&img);
}

/* Fitted passes (the network at the size of what a pass looks at) find the
 * faces the fixed 640x640 passes find, with fewer network runs; the
 * 2022mar model, re-declared at other sizes, too. */
static void test_fitted_passes_find_the_same_faces(void **state)
{
    (void)state;
    px_err e;
    px_image img;
    load_big(&img);
    static const char *const models[2] = {MODEL, PX_MODEL_DIR "/face_detection_yunet_2022mar.onnx"};
    for (int m = 0; m < 2; m++) {
        px_face_detector *det;
        px_face_detector_opts o1 = {PX_FACE_MODEL_AUTO, 1, 1, 0};
        const int st = m == 0 ? px_face_detector_create(models[m], &o1, &det, &e)
                              : px_face_detector_create_sized(models[m], &o1, 640, 640, &det, &e);
        if (st != PX_OK)
            fail_msg("%s", e.msg);
        assert_int_equal(px_face_detector_max_side(det), 1024);
        px_face *f[2] = {NULL, NULL};
        int n[2];
        px_face_stats fs[2];
        for (int fit = 0; fit < 2; fit++) {
            px_face_detect_opts o = px_face_detect_opts_default();
            o.fit = fit;
            assert_int_equal(px_face_detect(det, &img, &o, &f[fit], &n[fit], &fs[fit], &e), PX_OK);
        }
        assert_true(n[0] >= 4);
        assert_true(fs[1].passes < fs[0].passes);
        /* every confident face of either plan is found by the other */
        for (int a = 0; a < 2; a++)
            for (int i = 0; i < n[a]; i++) {
                if (f[a][i].score < 0.8f)
                    continue;
                float best = 0.0f;
                for (int j = 0; j < n[1 - a]; j++) {
                    const float v = px_face_iou(&f[a][i], &f[1 - a][j]);
                    best = v > best ? v : best;
                }
                if (best < 0.5f)
                    fail_msg("model %d: face %d of the %s plan (score %.2f) not found by the other",
                             m, i, a ? "fitted" : "fixed", (double)f[a][i].score);
            }
        /* a canvas at scale 1: the same faces as the whole image run fitted */
        px_face *c = NULL;
        int nc = 0;
        assert_int_equal(px_face_detect_canvas(det, &img, 0.6f, &c, &nc, &e), PX_OK);
        assert_true(nc >= 4);
        free(c);
        free(f[0]);
        free(f[1]);
        px_face_detector_destroy(det);
    }
    px_image_free(&img);
}

/* The best IoU of f among v[0..n). */
static float best_iou(const px_face *f, const px_face *v, int n)
{
    float best = 0.0f;
    for (int j = 0; j < n; j++) {
        const float x = px_face_iou(f, &v[j]);
        best = x > best ? x : best;
    }
    return best;
}

static void test_caller_planned_passes(void **state)
{
    (void)state;
    px_err e;
    px_image img;
    load_big(&img);
    px_face_detector *det;
    px_face_detector_opts o1 = {PX_FACE_MODEL_AUTO, 1, 1, 0};
    if (px_face_detector_create(MODEL, &o1, &det, &e) != PX_OK)
        fail_msg("%s", e.msg);
    int nw, nh;
    px_face_detector_input_size(det, &nw, &nh);
    px_face_detect_opts o = px_face_detect_opts_default();
    const int max_side = px_face_detector_max_side(det);
    px_face_pass plan[16];
    const int np = px_face_plan_fit(img.w, img.h, nw, nh, px_face_detector_net_min_face(det),
                                    o.min_face, 0, max_side, plan, 16);
    assert_true(np >= 1 && np <= 16);
    px_face *f = NULL, *g = NULL, *t = NULL;
    int n = 0, ng = 0, nt = 0;
    assert_int_equal(px_face_detect(det, &img, &o, &f, &n, NULL, &e), PX_OK);
    px_face_stats st;
    assert_int_equal(px_face_detect_passes(det, &img, plan, np, o.score_threshold, &g, &ng, &st, &e),
                     PX_OK);
    assert_int_equal(st.passes, np);
    assert_int_equal(ng, n);
    for (int i = 0; i < n; i++)
        assert_true(best_iou(&f[i], g, ng) > 0.99f);
    /* 2 x 2 tiles at the whole-image pass's scale, overlapping by a quarter */
    const float s = plan[0].scale, tw = 0.625f * (float)img.w, th = 0.625f * (float)img.h;
    const int tnw = ((int)ceilf(tw * s) + 31) / 32 * 32, tnh = ((int)ceilf(th * s) + 31) / 32 * 32;
    px_face_pass tiles[4];
    for (int k = 0; k < 4; k++)
        tiles[k] = (px_face_pass){(k & 1) ? (float)img.w - tw : 0.0f,
                                  (k >> 1) ? (float)img.h - th : 0.0f,
                                  (float)tnw / s,
                                  (float)tnh / s,
                                  s,
                                  1,
                                  tnw,
                                  tnh};
    assert_int_equal(px_face_detect_passes(det, &img, tiles, 4, o.score_threshold, &t, &nt, &st, &e),
                     PX_OK);
    assert_int_equal(st.passes, 4);
    int confident = 0;
    for (int i = 0; i < n; i++) {
        if (f[i].score < 0.8f)
            continue;
        confident++;
        if (best_iou(&f[i], t, nt) < 0.5f)
            fail_msg("face %d (score %.2f) of the whole photo not found by its tiles", i,
                     (double)f[i].score);
    }
    assert_true(confident >= 3);
    /* passes it cannot run: not a multiple of 32, over the largest side, no size */
    px_face_pass bad[3] = {plan[0], plan[0], plan[0]};
    bad[0].net_w = 100;
    bad[1].net_h = max_side + 32;
    bad[2].sw = 0.0f;
    for (int k = 0; k < 3; k++) {
        px_face *z = NULL;
        int nz = 7;
        px_face_pass two[2] = {plan[0], bad[k]};
        assert_int_equal(px_face_detect_passes(det, &img, two, 2, 0.6f, &z, &nz, NULL, &e),
                         PX_EINVAL);
        assert_null(z);
        assert_int_equal(nz, 0);
        assert_non_null(strstr(e.msg, "pass 1"));
    }
    free(f);
    free(g);
    free(t);
    px_face_detector_destroy(det);
    px_image_free(&img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_threads_one_detector),
        cmocka_unit_test(test_spread_passes),
        cmocka_unit_test(test_fitted_passes_find_the_same_faces),
        cmocka_unit_test(test_caller_planned_passes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
