/*
 * Unit tests for px_anon without a model: option defaults, mode names,
 * concealment of given faces on synthetic images (the box is fully changed,
 * far pixels untouched, each mode does what it says), model lookup, and the
 * argument checks of px_anon_process. The full job with the real detector
 * is in tests/integration.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "anon/anon_internal.h"
#include "anon/px_anon.h"

static px_face box(float x1, float y1, float x2, float y2)
{
    px_face f;
    memset(&f, 0, sizeof f);
    f.x1 = x1;
    f.y1 = y1;
    f.x2 = x2;
    f.y2 = y2;
    f.score = 0.9f;
    return f;
}

/* A 2-pixel checkerboard with a colour ramp: lots of detail to destroy. */
static void make_image(px_image *img, int w, int h)
{
    assert_int_equal(px_image_alloc(img, w, h, 3), PX_OK);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = img->px + (size_t)y * img->stride + (size_t)x * 3;
            const int on = ((x / 2) + (y / 2)) & 1;
            p[0] = (uint8_t)(on ? 230 : 20);
            p[1] = (uint8_t)(x % 256);
            p[2] = (uint8_t)(on ? 40 : 200);
        }
}

static const uint8_t *px_at(const px_image *img, int x, int y)
{
    return img->px + (size_t)y * img->stride + (size_t)x * 3;
}

static void test_defaults_and_modes(void **state)
{
    (void)state;
    px_anon_opts o = px_anon_opts_default();
    assert_int_equal(o.mode, PX_CONCEAL_NOISE);
    assert_int_equal(o.mask.shape, PX_MASK_ELLIPSE);
    assert_true(o.mask.scale >= 1.3f);
    assert_int_equal(o.jpeg_quality, 90);
    assert_int_equal(o.out_format, PX_FMT_UNKNOWN);
    assert_int_equal(o.detect.min_face, 20);

    const char *names[] = {"blur", "pixelate", "noise", "solid"};
    for (int i = 0; i < 4; i++) {
        px_conceal_mode m;
        assert_int_equal(px_anon_mode_parse(names[i], &m), PX_OK);
        assert_string_equal(px_anon_mode_name(m), names[i]);
    }
    px_conceal_mode m;
    assert_int_equal(px_anon_mode_parse("NOISE", &m), PX_OK);
    assert_int_equal(m, PX_CONCEAL_NOISE);
    assert_int_equal(px_anon_mode_parse("smudge", &m), PX_EINVAL);
    assert_int_equal(px_anon_mode_parse(NULL, &m), PX_EINVAL);
    assert_string_equal(px_anon_mode_name((px_conceal_mode)9), "unknown");
}

/* Counts pixels of the box that differ from the original. */
static int changed_in(const px_image *a, const px_image *b, int x1, int y1, int x2, int y2)
{
    int n = 0;
    for (int y = y1; y < y2; y++)
        for (int x = x1; x < x2; x++)
            n += memcmp(px_at(a, x, y), px_at(b, x, y), 3) != 0;
    return n;
}

static void run_mode(px_conceal_mode mode, px_image *out, px_image *orig)
{
    make_image(orig, 240, 200);
    assert_int_equal(px_image_copy(orig, out), PX_OK);
    px_anon_opts o = px_anon_opts_default();
    o.mode = mode;
    o.seed = 1234;
    const px_face f[2] = {box(60, 60, 120, 140), box(180, 20, 200, 44)};
    px_err e;
    assert_int_equal(px_anon_conceal_faces(out, f, 2, &o, &e), PX_OK);
    /* far from both faces nothing changed */
    assert_int_equal(changed_in(orig, out, 0, 170, 240, 200), 0);
    assert_int_equal(changed_in(orig, out, 0, 0, 20, 200), 0);
}

static void test_noise_replaces_every_face_pixel(void **state)
{
    (void)state;
    px_image a, b;
    run_mode(PX_CONCEAL_NOISE, &b, &a);
    const int area = 60 * 80;
    /* a pixel left equal by chance is ~1 in 16M; allow a handful */
    assert_true(changed_in(&a, &b, 60, 60, 120, 140) >= area - 3);
    assert_true(changed_in(&a, &b, 180, 20, 200, 44) >= 20 * 24 - 3);
    /* the same seed gives the same noise */
    px_image c;
    assert_int_equal(px_image_copy(&a, &c), PX_OK);
    px_anon_opts o = px_anon_opts_default();
    o.seed = 1234;
    const px_face f[2] = {box(60, 60, 120, 140), box(180, 20, 200, 44)};
    assert_int_equal(px_anon_conceal_faces(&c, f, 2, &o, NULL), PX_OK);
    assert_int_equal(changed_in(&b, &c, 0, 0, 240, 200), 0);
    px_image_free(&a);
    px_image_free(&b);
    px_image_free(&c);
}

static void test_solid_and_pixelate_and_blur(void **state)
{
    (void)state;
    px_image a, b;
    run_mode(PX_CONCEAL_SOLID, &b, &a);
    for (int y = 60; y < 140; y++)
        for (int x = 60; x < 120; x++) {
            const uint8_t *p = px_at(&b, x, y);
            assert_true(p[0] == p[1] && p[1] == p[2]); /* one flat grey/black */
            assert_memory_equal(p, px_at(&b, 90, 100), 3);
        }
    px_image_free(&a);
    px_image_free(&b);

    /* pixelate: the face is made of a few flat cells, <= ~8 across */
    run_mode(PX_CONCEAL_PIXELATE, &b, &a);
    int runs = 1;
    for (int x = 61; x < 120; x++)
        runs += memcmp(px_at(&b, x, 100), px_at(&b, x - 1, 100), 3) != 0;
    assert_true(runs >= 2 && runs <= 9);
    px_image_free(&a);
    px_image_free(&b);

    /* blur: the 2-px checkerboard is gone (channel 0 flattens near its mean) */
    run_mode(PX_CONCEAL_BLUR, &b, &a);
    int lo = 255, hi = 0;
    for (int y = 80; y < 120; y++)
        for (int x = 75; x < 105; x++) {
            const int v = px_at(&b, x, y)[0];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
    assert_true(hi - lo < 40); /* the original swings 20..230 */
    px_image_free(&a);
    px_image_free(&b);
}

/* Pixels changed by concealing one face alone. */
static int changed_by(px_conceal_mode mode, px_face f)
{
    px_image a, b;
    make_image(&a, 240, 200);
    assert_int_equal(px_image_copy(&a, &b), PX_OK);
    px_anon_opts o = px_anon_opts_default();
    o.mode = mode;
    o.seed = 99;
    assert_int_equal(px_anon_conceal_faces(&b, &f, 1, &o, NULL), PX_OK);
    const int n = changed_in(&a, &b, 0, 0, 240, 200);
    px_image_free(&a);
    px_image_free(&b);
    return n;
}

/* A pixelated face under 24 px gets a mask 1.25x larger (its cells must take
 * in the hair's inner edge, or the head's outline stays a face to YuNet
 * 2022mar); a larger face, and blur at any size, keep the mask's own size.
 * Measured as the changed area against a face twice as big, which at one
 * mask scale changes four times as much. */
static void test_small_pixelated_faces_get_larger_masks(void **state)
{
    (void)state;
    const px_face small = box(100, 80, 120, 106), big = box(80, 60, 120, 112);
    const double pix =
        4.0 * changed_by(PX_CONCEAL_PIXELATE, small) / changed_by(PX_CONCEAL_PIXELATE, big);
    const double blur = 4.0 * changed_by(PX_CONCEAL_BLUR, small) / changed_by(PX_CONCEAL_BLUR, big);
    assert_true(pix > 1.35 && pix < 1.8); /* 1.25^2 = 1.56 */
    assert_true(blur > 0.8 && blur < 1.2);
}

/* The self-check's canvases: every crop inside its canvas and apart from the
 * others, and a row of faces of mixed sizes (deface_city.jpg's, whose one
 * 1024-wide shelf left 40% of the canvas black) packed narrower, into fewer
 * network pixels than that shelf. */
static void test_check_layout_packs_tightly(void **state)
{
    (void)state;
    const px_face f[6] = {box(60, 100, 140, 180),  box(240, 90, 380, 170),
                          box(420, 110, 480, 175), box(520, 120, 545, 150),
                          box(600, 130, 618, 152), box(680, 128, 700, 156)};
    for (int m = 0; m < 4; m++) {
        anon_check_crop c[64];
        int canvases = 0;
        const int n = anon_check_layout(f, 6, 0.8f, 1024, (px_conceal_mode)m, c, 64, &canvases);
        assert_true(n >= 1 && n <= 64 && canvases >= 1);
        long area[8] = {0}, wmax[8] = {0}, hmax[8] = {0};
        for (int i = 0; i < n; i++) {
            assert_true(c[i].canvas >= 0 && c[i].canvas < canvases && canvases <= 8);
            assert_true(c[i].x >= 4 && c[i].y >= 4 && c[i].x + c[i].w + 4 <= 1024 &&
                        c[i].y + c[i].h + 4 <= 1024);
            for (int j = 0; j < i; j++)
                assert_true(c[i].canvas != c[j].canvas || c[i].x >= c[j].x + c[j].w + 4 ||
                            c[j].x >= c[i].x + c[i].w + 4 || c[i].y >= c[j].y + c[j].h + 4 ||
                            c[j].y >= c[i].y + c[i].h + 4);
            area[c[i].canvas] += (long)c[i].w * c[i].h;
            if (c[i].x + c[i].w + 4 > wmax[c[i].canvas])
                wmax[c[i].canvas] = c[i].x + c[i].w + 4;
            if (c[i].y + c[i].h + 4 > hmax[c[i].canvas])
                hmax[c[i].canvas] = c[i].y + c[i].h + 4;
        }
        /* one canvas, the size the detector runs it at (rounded up to 64)
         * mostly crops: a 1024-wide shelf packing of blur's looks (native,
         * 2x and whole-image scale) took two rows, 1024x448 for 254 K px of
         * crops (55%) */
        assert_int_equal(canvases, 1);
        const long fw = (wmax[0] + 63) / 64 * 64, fh = (hmax[0] + 63) / 64 * 64;
        assert_true((double)area[0] / (double)(fw * fh) > 0.65);
        if (m == PX_CONCEAL_BLUR)
            assert_true(fw * fh < 1024 * 448);
    }
}

static void test_conceal_rejects_bad_faces(void **state)
{
    (void)state;
    px_image a;
    make_image(&a, 50, 50);
    px_anon_opts o = px_anon_opts_default();
    const px_face bad = box(10, 10, 5, 20);
    px_err e;
    assert_int_equal(px_anon_conceal_faces(&a, &bad, 1, &o, &e), PX_EINVAL);
    assert_int_equal(px_anon_conceal_faces(&a, NULL, 1, &o, &e), PX_EINVAL);
    assert_int_equal(px_anon_conceal_faces(&a, NULL, 0, &o, &e), PX_OK);
    /* a face wholly outside the image is simply skipped */
    const px_face outside = box(100, 100, 120, 120);
    assert_int_equal(px_anon_conceal_faces(&a, &outside, 1, &o, &e), PX_OK);
    px_image_free(&a);
}

static void test_find_model(void **state)
{
    (void)state;
    char path[4096];
    px_err e;
    assert_int_equal(px_anon_find_model("/nonexistent/m.onnx", NULL, path, sizeof path, &e),
                     PX_ENOTFOUND);
    assert_non_null(strstr(e.msg, "/nonexistent/m.onnx"));

    char dir[] = "/tmp/px_anon_test_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[256];
    snprintf(file, sizeof file, "%s/tiny.onnx", dir);
    FILE *f = fopen(file, "wb");
    assert_non_null(f);
    fputs("x", f);
    fclose(f);
    setenv("PIXPIPE_MODEL_DIR", dir, 1);
    assert_int_equal(px_anon_find_model(NULL, "tiny.onnx", path, sizeof path, &e), PX_OK);
    assert_string_equal(path, file);
    /* not anywhere: the message lists where it looked */
    assert_int_equal(px_anon_find_model(NULL, "absent.onnx", path, sizeof path, &e), PX_ENOTFOUND);
    assert_non_null(strstr(e.msg, dir));
    assert_non_null(strstr(e.msg, "fetch-models"));
    unsetenv("PIXPIPE_MODEL_DIR");
    unlink(file);
    rmdir(dir);
}

static void test_process_argument_checks(void **state)
{
    (void)state;
    px_anon_result r;
    px_err e;
    const uint8_t b[4] = {1, 2, 3, 4};
    assert_int_equal(px_anon_process(NULL, b, 4, NULL, &r, &e), PX_EINVAL);
    assert_null(r.out.data);
    assert_int_equal(r.n_faces, 0);
    px_anon_result_free(&r);
    px_anon_result_free(NULL);
}

/* The coverage and self-check defaults, and bad arguments of the coverage
 * entry points (no model needed: they fail before any network run). */
static void test_coverage_defaults_and_bad_input(void **state)
{
    (void)state;
    px_anon_opts o = px_anon_opts_default();
    assert_int_equal(o.rotations, 1);
    assert_int_equal(o.refine_crowds, 1);
    assert_int_equal(o.verify, 1);
    px_image img;
    make_image(&img, 64, 48);
    px_face *f = (px_face *)&img; /* must be reset to NULL */
    int n = 7;
    px_err e;
    assert_int_equal(px_anon_detect(NULL, &img, &o, &f, &n, NULL, NULL, &e), PX_EINVAL);
    assert_null(f);
    assert_int_equal(n, 0);
    assert_int_equal(px_anon_detect_at_scale(NULL, &img, 1.0f, 0.6f, &f, &n, &e), PX_EINVAL);
    assert_int_equal(px_anon_detect_at_scale(NULL, &img, 0.0f, 0.6f, &f, &n, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "scale"));
    assert_null(f);
    px_image_free(&img);
}

/* A model re-declared at another size must be an ONNX model: a bad file is
 * an error naming it, never a crash. */
static void test_create_sized_rejects_bad_model(void **state)
{
    (void)state;
    char path[] = "/tmp/px_anon_bad_model_XXXXXX";
    const int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "not a protobuf at all", 21), 21);
    close(fd);
    px_face_detector *d = NULL;
    px_err e;
    assert_int_not_equal(px_face_detector_create_sized(path, NULL, 640, 640, &d, &e), PX_OK);
    assert_null(d);
    assert_non_null(strstr(e.msg, path));
    assert_int_equal(px_face_detector_create_sized("/nonexistent/m.onnx", NULL, 320, 320, &d, &e),
                     PX_ENOTFOUND);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_coverage_defaults_and_bad_input),
        cmocka_unit_test(test_create_sized_rejects_bad_model),
        cmocka_unit_test(test_defaults_and_modes),
        cmocka_unit_test(test_noise_replaces_every_face_pixel),
        cmocka_unit_test(test_solid_and_pixelate_and_blur),
        cmocka_unit_test(test_small_pixelated_faces_get_larger_masks),
        cmocka_unit_test(test_check_layout_packs_tightly),
        cmocka_unit_test(test_conceal_rejects_bad_faces),
        cmocka_unit_test(test_find_model),
        cmocka_unit_test(test_process_argument_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
