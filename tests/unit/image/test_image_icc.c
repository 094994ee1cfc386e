/*
 * Unit tests of the ICC conversion in px_image_decode: a wide-gamut RGB
 * profile (Rec. 2020 primaries, D65, gamma 2.2) is made here with lcms2's
 * cmsCreateRGBProfile and embedded in a PNG (iCCP) and a JPEG (APP2), written
 * here with libpng and libjpeg. Decoding must give the colours lcms2 itself
 * computes for that profile to sRGB (PNG within 1, JPEG within 8: quality 100,
 * 4:4:4, flat patches), report info.icc = 1, and re-encoding must write no
 * profile. A profile lcms2 cannot read is ignored (info.icc = -1, pixels as
 * stored), never a failure. An sRGB profile leaves the pixels exactly as
 * stored. The transforms icc.c keeps for recent profiles: more profiles than
 * it keeps, each still converted as lcms2 says, and threads decoding with one
 * profile at once all get the same pixels (run under ThreadSanitizer too).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <lcms2.h>
#include <png.h>
#include <pthread.h>

#include "image/px_image.h"

#define W 32
#define H 16
/* four flat patches, 8 px wide each */
static uint8_t patch[4][3] = {{60, 160, 60}, {180, 80, 70}, {128, 128, 128}, {70, 90, 170}};

static void fill(uint8_t *px)
{
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            memcpy(px + ((size_t)y * W + x) * 3, patch[x / 8], 3);
}

static uint8_t *serialise(cmsHPROFILE p, size_t *n)
{
    assert_non_null(p);
    cmsUInt32Number len = 0;
    assert_true(cmsSaveProfileToMem(p, NULL, &len));
    uint8_t *d = malloc(len);
    assert_non_null(d);
    assert_true(cmsSaveProfileToMem(p, d, &len));
    *n = len;
    return d;
}

/* A wide-gamut profile of the given gamma, serialised (malloc'd). */
static uint8_t *wide_profile_gamma(double gamma, size_t *n)
{
    cmsCIExyY wp;
    cmsWhitePointFromTemp(&wp, 6504);
    const cmsCIExyYTRIPLE prim = {{0.708, 0.292, 1.0}, {0.170, 0.797, 1.0}, {0.131, 0.046, 1.0}};
    cmsToneCurve *g = cmsBuildGamma(NULL, gamma);
    cmsToneCurve *curves[3] = {g, g, g};
    cmsHPROFILE p = cmsCreateRGBProfile(&wp, &prim, curves);
    uint8_t *d = serialise(p, n);
    cmsFreeToneCurve(g);
    cmsCloseProfile(p);
    return d;
}

static uint8_t *wide_profile(size_t *n)
{
    return wide_profile_gamma(2.2, n);
}

/* What lcms2 makes of the four patches: profile -> sRGB, perceptual. */
static void expected(const uint8_t *icc, size_t n, uint8_t out[4][3])
{
    cmsHPROFILE src = cmsOpenProfileFromMem(icc, (cmsUInt32Number)n);
    cmsHPROFILE srgb = cmsCreate_sRGBProfile();
    cmsHTRANSFORM t = cmsCreateTransform(src, TYPE_RGB_8, srgb, TYPE_RGB_8, INTENT_PERCEPTUAL, 0);
    assert_non_null(t);
    cmsDoTransform(t, patch, out, 4);
    cmsDeleteTransform(t);
    cmsCloseProfile(srgb);
    cmsCloseProfile(src);
}

static void png_out(png_structp png, png_bytep d, size_t n)
{
    assert_int_equal(px_buf_append(png_get_io_ptr(png), d, n), PX_OK);
}

static void png_flush_none(png_structp png)
{
    (void)png;
}

static void make_png(const uint8_t *icc, size_t n, px_buf *out)
{
    uint8_t px[W * H * 3];
    fill(px);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    png_set_write_fn(png, out, png_out, png_flush_none);
    png_set_IHDR(png, info, W, H, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_iCCP(png, info, "wide", PNG_COMPRESSION_TYPE_BASE, icc, (png_uint_32)n);
    png_write_info(png, info);
    for (int y = 0; y < H; y++)
        png_write_row(png, px + (size_t)y * W * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
}

static void make_jpeg(const uint8_t *icc, size_t n, px_buf *out)
{
    uint8_t px[W * H * 3];
    fill(px);
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *mem = NULL;
    unsigned long len = 0;
    jpeg_mem_dest(&c, &mem, &len);
    c.image_width = W;
    c.image_height = H;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 100, TRUE);
    for (int i = 0; i < 3; i++)
        c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
    jpeg_start_compress(&c, TRUE);
    jpeg_write_icc_profile(&c, icc, (unsigned int)n);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = px + (size_t)c.next_scanline * W * 3;
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    assert_int_equal(px_buf_append(out, mem, len), PX_OK);
    free(mem);
}

/* The worst channel difference between the decoded patch centres and want. */
static int worst_diff(const px_image *img, uint8_t want[4][3])
{
    int worst = 0;
    for (int k = 0; k < 4; k++) {
        const uint8_t *p = img->px + (size_t)(H / 2) * img->stride + (size_t)(k * 8 + 4) * 3;
        for (int c = 0; c < 3; c++) {
            const int d = abs((int)p[c] - (int)want[k][c]);
            worst = d > worst ? d : worst;
        }
    }
    return worst;
}

static int has_bytes(const px_buf *b, const char *s)
{
    const size_t n = strlen(s);
    for (size_t i = 0; i + n <= b->len; i++)
        if (!memcmp(b->data + i, s, n))
            return 1;
    return 0;
}

static void check(const char *what, const px_buf *file, uint8_t want[4][3], int tol)
{
    px_image img;
    px_decode_info info;
    px_err err;
    if (px_image_decode(file->data, file->len, NULL, &img, &info, &err) != PX_OK)
        fail_msg("%s: %s", what, err.msg);
    assert_int_equal(info.icc, 1);
    assert_int_equal(info.had_metadata, 1);
    const int worst = worst_diff(&img, want);
    print_message("%s: worst channel difference from lcms2's sRGB %d (tolerance %d)\n", what, worst,
                  tol);
    assert_true(worst <= tol);
    /* the output carries no profile (and the pixels are already sRGB) */
    px_buf png = {0}, jpg = {0};
    assert_int_equal(px_image_encode(&img, PX_FMT_PNG, 90, &png, &err), PX_OK);
    assert_int_equal(px_image_encode(&img, PX_FMT_JPEG, 90, &jpg, &err), PX_OK);
    assert_false(has_bytes(&png, "iCCP"));
    assert_false(has_bytes(&jpg, "ICC_PROFILE"));
    px_decode_info info2;
    px_image again;
    assert_int_equal(px_image_decode(png.data, png.len, NULL, &again, &info2, &err), PX_OK);
    assert_int_equal(info2.icc, 0);
    px_image_free(&again);
    px_buf_free(&png);
    px_buf_free(&jpg);
    px_image_free(&img);
}

static void test_wide_gamut_png_and_jpeg(void **state)
{
    (void)state;
    size_t n = 0;
    uint8_t *icc = wide_profile(&n);
    uint8_t want[4][3];
    expected(icc, n, want);
    /* the profile really is wide: a green and a red within sRGB's gamut once
     * converted move a lot (more saturated), grey stays */
    int moved = 0;
    for (int k = 0; k < 2; k++) {
        print_message("(%d,%d,%d) in the wide profile is (%d,%d,%d) in sRGB\n", patch[k][0],
                      patch[k][1], patch[k][2], want[k][0], want[k][1], want[k][2]);
        for (int c = 0; c < 3; c++)
            moved += abs((int)want[k][c] - (int)patch[k][c]);
    }
    assert_true(moved >= 60);
    assert_true(abs((int)want[2][0] - 128) <= 3 && abs((int)want[2][1] - want[2][0]) <= 1);

    px_buf png = {0}, jpg = {0};
    make_png(icc, n, &png);
    assert_true(has_bytes(&png, "iCCP"));
    check("PNG iCCP", &png, want, 1);
    make_jpeg(icc, n, &jpg);
    assert_true(has_bytes(&jpg, "ICC_PROFILE"));
    /* JPEG: its round trip (about 2 levels at quality 100) times the gain of the
     * conversion, which makes colours more saturated */
    check("JPEG APP2", &jpg, want, 8);
    px_buf_free(&png);
    px_buf_free(&jpg);
    free(icc);
}

static void test_unreadable_profile_ignored(void **state)
{
    (void)state;
    uint8_t junk[300];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)(i * 131 + 7);
    /* in a JPEG (libpng would drop a malformed iCCP itself) */
    px_buf jpg = {0};
    make_jpeg(junk, sizeof junk, &jpg);
    px_image img;
    px_decode_info info;
    px_err err;
    assert_int_equal(px_image_decode(jpg.data, jpg.len, NULL, &img, &info, &err), PX_OK);
    assert_int_equal(info.icc, -1);
    assert_true(worst_diff(&img, patch) <= 4); /* pixels as stored (quality 100) */
    px_image_free(&img);
    px_buf_free(&jpg);
}

/* lcms2's own sRGB profile: the pixels stay exactly as stored. */
static void test_srgb_profile_keeps_pixels(void **state)
{
    (void)state;
    cmsHPROFILE p = cmsCreate_sRGBProfile();
    size_t n = 0;
    uint8_t *icc = serialise(p, &n);
    cmsCloseProfile(p);
    px_buf png = {0};
    make_png(icc, n, &png);
    for (int round = 0; round < 2; round++) { /* the second finds the kept transform */
        px_image img;
        px_decode_info info;
        px_err err;
        assert_int_equal(px_image_decode(png.data, png.len, NULL, &img, &info, &err), PX_OK);
        assert_int_equal(info.icc, 1);
        assert_int_equal(worst_diff(&img, patch), 0);
        px_image_free(&img);
    }
    px_buf_free(&png);
    free(icc);
}

/* More profiles than icc.c keeps, twice over: each decode gives what lcms2
 * computes for its own profile, whichever transforms were kept or replaced. */
static void test_many_profiles(void **state)
{
    (void)state;
    for (int round = 0; round < 2; round++)
        for (int k = 0; k < 7; k++) {
            size_t n = 0;
            uint8_t *icc = wide_profile_gamma(1.8 + 0.1 * k, &n);
            uint8_t want[4][3];
            expected(icc, n, want);
            px_buf png = {0};
            make_png(icc, n, &png);
            px_image img;
            px_decode_info info;
            px_err err;
            assert_int_equal(px_image_decode(png.data, png.len, NULL, &img, &info, &err), PX_OK);
            assert_int_equal(info.icc, 1);
            assert_true(worst_diff(&img, want) <= 1);
            px_image_free(&img);
            px_buf_free(&png);
            free(icc);
        }
}

typedef struct shared_decode {
    const px_buf *file;
    px_image img;
    int st;
} shared_decode;

static void *decode_thread(void *arg)
{
    shared_decode *d = arg;
    px_decode_info info;
    px_err err;
    for (int i = 0; i < 20 && d->st == PX_OK; i++) {
        if (i)
            px_image_free(&d->img);
        d->st = px_image_decode(d->file->data, d->file->len, NULL, &d->img, &info, &err);
    }
    return NULL;
}

/* Four threads decode photos with one profile at once, so they share its
 * kept transform: every result is the same and right. */
static void test_threads_share_a_profile(void **state)
{
    (void)state;
    size_t n = 0;
    uint8_t *icc = wide_profile_gamma(2.4, &n);
    uint8_t want[4][3];
    expected(icc, n, want);
    px_buf png = {0};
    make_png(icc, n, &png);
    shared_decode d[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        memset(&d[i], 0, sizeof d[i]);
        d[i].file = &png;
        assert_int_equal(pthread_create(&t[i], NULL, decode_thread, &d[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(d[i].st, PX_OK);
        assert_true(worst_diff(&d[i].img, want) <= 1);
        assert_memory_equal(d[i].img.px, d[0].img.px, (size_t)d[0].img.stride * H);
    }
    for (int i = 0; i < 4; i++)
        px_image_free(&d[i].img);
    px_buf_free(&png);
    free(icc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wide_gamut_png_and_jpeg),
        cmocka_unit_test(test_unreadable_profile_ignored),
        cmocka_unit_test(test_srgb_profile_keeps_pixels),
        cmocka_unit_test(test_many_profiles),
        cmocka_unit_test(test_threads_share_a_profile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
