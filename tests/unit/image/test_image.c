/*
 * Unit tests for px_image: round trips of every format, the eight EXIF
 * orientations (JPEG APP1, PNG eXIf, WebP EXIF, each built here with the
 * format's own library and libexif), metadata stripping, size limits checked
 * before allocation, truncated/garbage/corrupt inputs, the real test photos,
 * tensor sampling and the four concealment modes.
 *
 * Inputs are synthetic or read from PX_SHARED_DIR/testdata/faces; nothing is
 * written to disk.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
/* cmocka.h needs the three above first */
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <jpeglib.h>
#include <libexif/exif-data.h>
#include <png.h>
#include <webp/encode.h>
#include <webp/mux.h>

#include "image/px_image.h"

#define FACES_DIR PX_SHARED_DIR "/testdata/faces"

/* ---------- helpers ---------- */

static uint64_t rng_state = 0x1234567887654321ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

/* Smooth gradients plus a few sharp shapes: realistic enough for lossy codecs. */
static void make_test_image(px_image *img, int w, int h, int channels)
{
    assert_int_equal(px_image_alloc(img, w, h, channels), PX_OK);
    for (int y = 0; y < h; y++) {
        for (int x = 0; x < w; x++) {
            uint8_t *p = img->px + (size_t)y * img->stride + (size_t)x * channels;
            p[0] = (uint8_t)(x * 255 / (w - 1));
            p[1] = (uint8_t)(y * 255 / (h - 1));
            p[2] = (uint8_t)(((x / 16 + y / 16) & 1) ? 200 : 40);
            if (channels == 4)
                p[3] = (uint8_t)((x + y) * 255 / (w + h - 2));
        }
    }
}

/* Only smooth content (what photos mostly are): lossy codecs should do well. */
static void make_smooth_image(px_image *img, int w, int h)
{
    assert_int_equal(px_image_alloc(img, w, h, 3), PX_OK);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = img->px + (size_t)y * img->stride + (size_t)x * 3;
            p[0] = (uint8_t)(x * 255 / (w - 1));
            p[1] = (uint8_t)(y * 255 / (h - 1));
            p[2] = (uint8_t)(128.0 + 100.0 * sin(x / 9.0) * cos(y / 7.0));
        }
}

static void make_noise_image(px_image *img, int w, int h, int channels)
{
    assert_int_equal(px_image_alloc(img, w, h, channels), PX_OK);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w * channels; x++)
            img->px[(size_t)y * img->stride + (size_t)x] = (uint8_t)rnd();
}

static const uint8_t *pix(const px_image *img, int x, int y)
{
    return img->px + (size_t)y * img->stride + (size_t)x * img->channels;
}

static double psnr_rgb(const px_image *a, const px_image *b)
{
    assert_int_equal(a->w, b->w);
    assert_int_equal(a->h, b->h);
    double se = 0;
    for (int y = 0; y < a->h; y++)
        for (int x = 0; x < a->w; x++)
            for (int c = 0; c < 3; c++) {
                double d = (double)pix(a, x, y)[c] - pix(b, x, y)[c];
                se += d * d;
            }
    double mse = se / ((double)a->w * a->h * 3);
    return mse == 0 ? 99.0 : 10.0 * log10(255.0 * 255.0 / mse);
}

static int images_equal(const px_image *a, const px_image *b)
{
    if (a->w != b->w || a->h != b->h || a->channels != b->channels)
        return 0;
    for (int y = 0; y < a->h; y++)
        if (memcmp(pix(a, 0, y), pix(b, 0, y), (size_t)a->w * a->channels) != 0)
            return 0;
    return 1;
}

/* Like images_equal, but the colour of fully transparent pixels may differ:
 * libwebp's lossless encoder does not keep it (invisible data is not kept). */
static int images_equal_visible(const px_image *a, const px_image *b)
{
    if (a->channels != 4 || b->channels != 4)
        return images_equal(a, b);
    if (a->w != b->w || a->h != b->h)
        return 0;
    for (int y = 0; y < a->h; y++)
        for (int x = 0; x < a->w; x++) {
            const uint8_t *p = pix(a, x, y), *q = pix(b, x, y);
            if (p[3] != q[3] || (p[3] != 0 && memcmp(p, q, 3) != 0))
                return 0;
        }
    return 1;
}

static int read_file(const char *path, uint8_t **data, size_t *len)
{
    px_err e;
    return px_read_file(path, 64u << 20, data, len, &e);
}

static int contains(const uint8_t *d, size_t n, const char *s)
{
    size_t k = strlen(s);
    for (size_t i = 0; i + k <= n; i++)
        if (memcmp(d + i, s, k) == 0)
            return 1;
    return 0;
}

/* EXIF block ("Exif\0\0" + TIFF) with an Orientation tag, built with libexif.
 * With gps_thumb, also GPS position tags and a JPEG thumbnail. */
static void make_exif(int orientation, int gps_thumb, unsigned char **buf, unsigned int *len)
{
    ExifData *ed = exif_data_new();
    assert_non_null(ed);
    exif_data_set_byte_order(ed, EXIF_BYTE_ORDER_INTEL);
    ExifByteOrder bo = EXIF_BYTE_ORDER_INTEL;
    ExifEntry *e = exif_entry_new();
    exif_content_add_entry(ed->ifd[EXIF_IFD_0], e);
    exif_entry_initialize(e, EXIF_TAG_ORIENTATION);
    exif_set_short(e->data, bo, (ExifShort)orientation);
    exif_entry_unref(e);
    if (gps_thumb) {
        ExifMem *mem = exif_mem_new_default();
        ExifEntry *ref = exif_entry_new_mem(mem);
        ref->tag = (ExifTag)EXIF_TAG_GPS_LATITUDE_REF;
        ref->format = EXIF_FORMAT_ASCII;
        ref->components = 2;
        ref->size = 2;
        ref->data = exif_mem_alloc(mem, 2);
        memcpy(ref->data, "N", 2);
        exif_content_add_entry(ed->ifd[EXIF_IFD_GPS], ref);
        exif_entry_unref(ref);
        ExifEntry *lat = exif_entry_new_mem(mem);
        lat->tag = (ExifTag)EXIF_TAG_GPS_LATITUDE;
        lat->format = EXIF_FORMAT_RATIONAL;
        lat->components = 3;
        lat->size = 24;
        lat->data = exif_mem_alloc(mem, 24);
        ExifRational r[3] = {{48, 1}, {51, 1}, {2462, 100}};
        for (int i = 0; i < 3; i++)
            exif_set_rational(lat->data + 8 * i, bo, r[i]);
        exif_content_add_entry(ed->ifd[EXIF_IFD_GPS], lat);
        exif_entry_unref(lat);
        exif_mem_unref(mem);
        /* thumbnail: a small JPEG of our own */
        px_image t;
        make_test_image(&t, 32, 24, 3);
        px_buf tb = {0};
        px_err err;
        assert_int_equal(px_image_encode(&t, PX_FMT_JPEG, 70, &tb, &err), PX_OK);
        ed->data = malloc(tb.len); /* freed by exif_data_unref (default allocator) */
        memcpy(ed->data, tb.data, tb.len);
        ed->size = (unsigned int)tb.len;
        px_buf_free(&tb);
        px_image_free(&t);
    }
    exif_data_save_data(ed, buf, len);
    assert_non_null(*buf);
    exif_data_unref(ed);
}

typedef struct jmarker {
    int code;
    const uint8_t *data;
    unsigned len;
} jmarker;

/* Encodes img (RGB) with libjpeg directly, adding the given markers. */
static void jpeg_with_markers(const px_image *img, int quality, const jmarker *mk, int nmk,
                              px_buf *out)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    unsigned char *buf = NULL;
    unsigned long size = 0;
    jpeg_mem_dest(&c, &buf, &size);
    c.image_width = (JDIMENSION)img->w;
    c.image_height = (JDIMENSION)img->h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    c.comp_info[0].h_samp_factor = 1;
    c.comp_info[0].v_samp_factor = 1;
    jpeg_start_compress(&c, TRUE);
    for (int i = 0; i < nmk; i++)
        jpeg_write_marker(&c, mk[i].code, mk[i].data, mk[i].len);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = img->px + (size_t)c.next_scanline * img->stride;
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    memset(out, 0, sizeof *out);
    assert_int_equal(px_buf_append(out, buf, size), PX_OK);
    free(buf);
}

/* JPEG markers before SOS, as a bit set of "seen APP1/APP2/COM". */
static void jpeg_marker_scan(const uint8_t *d, size_t n, int *app1, int *app2, int *com)
{
    *app1 = *app2 = *com = 0;
    assert_true(n > 4 && d[0] == 0xFF && d[1] == 0xD8);
    size_t p = 2;
    while (p + 4 <= n) {
        assert_int_equal(d[p], 0xFF);
        int m = d[p + 1];
        if (m == 0xDA || m == 0xD9)
            break;
        size_t l = ((size_t)d[p + 2] << 8) | d[p + 3];
        if (m == 0xE1)
            *app1 = 1;
        if (m == 0xE2)
            *app2 = 1;
        if (m == 0xFE)
            *com = 1;
        p += 2 + l;
    }
}

static uint32_t be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* PNG's CRC-32 (bitwise; the test only needs it for one chunk). */
static uint32_t crc32_png(const uint8_t *d, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= d[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return c ^ 0xFFFFFFFFu;
}

/* Returns 1 if the PNG has a chunk of that type (asserts the chunk list is well formed). */
static int png_has_chunk(const uint8_t *d, size_t n, const char *type)
{
    size_t p = 8;
    while (p + 12 <= n) {
        uint32_t l = be32(d + p);
        if (memcmp(d + p + 4, type, 4) == 0)
            return 1;
        p += 12 + l;
    }
    assert_int_equal(p, n);
    return 0;
}

static int webp_has_chunk(const uint8_t *d, size_t n, const char *type)
{
    assert_true(n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0);
    size_t p = 12;
    while (p + 8 <= n) {
        uint32_t l = d[p + 4] | (d[p + 5] << 8) | (d[p + 6] << 16) | ((uint32_t)d[p + 7] << 24);
        if (memcmp(d + p, type, 4) == 0)
            return 1;
        p += 8 + l + (l & 1);
    }
    assert_int_equal(p, n);
    return 0;
}

/* ---------- formats and round trips ---------- */

static void test_sniff_and_names(void **state)
{
    (void)state;
    const uint8_t jpg[] = {0xFF, 0xD8, 0xFF, 0xE0};
    const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const uint8_t webp[] = "RIFF\x10\0\0\0WEBPVP8 ";
    assert_int_equal(px_image_sniff(jpg, sizeof jpg), PX_FMT_JPEG);
    assert_int_equal(px_image_sniff(png, sizeof png), PX_FMT_PNG);
    assert_int_equal(px_image_sniff(webp, 16), PX_FMT_WEBP);
    assert_int_equal(px_image_sniff(png, 7), PX_FMT_UNKNOWN);
    assert_int_equal(px_format_from_path("a/b.JPEG"), PX_FMT_JPEG);
    assert_int_equal(px_format_from_path("x.Png"), PX_FMT_PNG);
    assert_int_equal(px_format_from_path("x.webp"), PX_FMT_WEBP);
    assert_int_equal(px_format_from_path("dir.jpg/file"), PX_FMT_UNKNOWN);
    assert_string_equal(px_format_name(PX_FMT_WEBP), "webp");
    assert_string_equal(px_format_extension(PX_FMT_JPEG), ".jpg");
}

static void roundtrip(const px_image *src, px_format f, int q, px_image *back, px_buf *enc)
{
    px_err err;
    memset(enc, 0, sizeof *enc);
    assert_int_equal(px_image_encode(src, f, q, enc, &err), PX_OK);
    assert_int_equal(px_image_sniff(enc->data, enc->len), f);
    px_decode_info info;
    assert_int_equal(px_image_decode(enc->data, enc->len, NULL, back, &info, &err), PX_OK);
    assert_int_equal(info.format, f);
    assert_int_equal(info.orientation, 1);
    assert_int_equal(info.had_metadata, 0);
    assert_int_equal(back->w, src->w);
    assert_int_equal(back->h, src->h);
}

static void test_roundtrip_lossless(void **state)
{
    (void)state;
    for (int ch = 3; ch <= 4; ch++) {
        px_image src, back;
        px_buf enc;
        make_test_image(&src, 67, 41, ch);
        roundtrip(&src, PX_FMT_PNG, 90, &back, &enc);
        assert_true(images_equal(&src, &back));
        px_image_free(&back);
        px_buf_free(&enc);
        roundtrip(&src, PX_FMT_WEBP, 100, &back, &enc); /* quality 100: lossless */
        assert_true(images_equal_visible(&src, &back));
        px_image_free(&back);
        px_buf_free(&enc);
        px_image_free(&src);
    }
}

static void test_roundtrip_lossy(void **state)
{
    (void)state;
    px_image src, back;
    px_buf enc, enc2;
    make_smooth_image(&src, 160, 120);
    roundtrip(&src, PX_FMT_JPEG, 95, &back, &enc);
    assert_int_equal(back.channels, 3);
    double p95 = psnr_rgb(&src, &back);
    assert_true(p95 > 38.0);
    px_image_free(&back);
    roundtrip(&src, PX_FMT_JPEG, 50, &back, &enc2);
    double p50 = psnr_rgb(&src, &back);
    print_message("JPEG PSNR q95 %.1f dB (%zu bytes), q50 %.1f dB (%zu bytes)\n", p95, enc.len, p50,
                  enc2.len);
    assert_true(p50 > 35.0);
    assert_true(p50 < p95);
    assert_true(enc2.len < enc.len);
    px_image_free(&back);
    px_buf_free(&enc);
    px_buf_free(&enc2);
    roundtrip(&src, PX_FMT_WEBP, 85, &back, &enc);
    double pw = psnr_rgb(&src, &back);
    print_message("WebP q85 PSNR %.1f dB (%zu bytes)\n", pw, enc.len);
    assert_true(pw > 36.0);
    px_image_free(&back);
    px_buf_free(&enc);
    px_image_free(&src);
}

static void test_rgba_to_jpeg_on_white(void **state)
{
    (void)state;
    px_image src, back;
    px_buf enc;
    assert_int_equal(px_image_alloc(&src, 32, 16, 4), PX_OK);
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 32; x++) {
            uint8_t *p = src.px + (size_t)y * src.stride + (size_t)x * 4;
            p[0] = 0, p[1] = 0, p[2] = 0;
            p[3] = x < 16 ? 0 : 255; /* left half transparent black */
        }
    roundtrip(&src, PX_FMT_JPEG, 95, &back, &enc);
    assert_true(pix(&back, 4, 8)[0] > 245 && pix(&back, 4, 8)[2] > 245); /* white */
    assert_true(pix(&back, 28, 8)[0] < 10);                              /* black */
    px_image_free(&back);
    px_buf_free(&enc);
    px_image_free(&src);
}

/* ---------- EXIF orientation ---------- */

/* EXIF's own definition: which visual side the stored row 0 / column 0 become. */
enum { TOP, BOTTOM, LEFT, RIGHT };
static const int row0_side[9] = {0, TOP, TOP, BOTTOM, BOTTOM, LEFT, RIGHT, RIGHT, LEFT};
static const int col0_side[9] = {0, LEFT, RIGHT, RIGHT, LEFT, TOP, TOP, BOTTOM, BOTTOM};

/* Builds the stored image that, shown with orientation o, looks like `up`. */
static void stored_for(const px_image *up, int o, px_image *st)
{
    int transpose = row0_side[o] == LEFT || row0_side[o] == RIGHT;
    int sw = transpose ? up->h : up->w, sh = transpose ? up->w : up->h;
    assert_int_equal(px_image_alloc(st, sw, sh, up->channels), PX_OK);
    for (int y = 0; y < sh; y++)
        for (int x = 0; x < sw; x++) {
            int X, Y;
            if (!transpose) {
                X = col0_side[o] == LEFT ? x : sw - 1 - x;
                Y = row0_side[o] == TOP ? y : sh - 1 - y;
            } else {
                X = row0_side[o] == LEFT ? y : sh - 1 - y;
                Y = col0_side[o] == TOP ? x : sw - 1 - x;
            }
            memcpy(st->px + (size_t)y * st->stride + (size_t)x * st->channels, pix(up, X, Y),
                   (size_t)up->channels);
        }
}

/* 3x2 blocks of 16 px in distinct colours: every orientation looks different. */
static void make_blocks(px_image *img)
{
    static const uint8_t col[6][3] = {{230, 20, 20},  {20, 230, 20},  {20, 20, 230},
                                      {230, 230, 20}, {20, 230, 230}, {230, 20, 230}};
    assert_int_equal(px_image_alloc(img, 48, 32, 3), PX_OK);
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 48; x++)
            memcpy(img->px + (size_t)y * img->stride + (size_t)x * 3, col[(y / 16) * 3 + x / 16],
                   3);
}

static void assert_blocks_match(const px_image *got, const px_image *want, int tol)
{
    assert_int_equal(got->w, want->w);
    assert_int_equal(got->h, want->h);
    for (int by = 0; by < 2; by++)
        for (int bx = 0; bx < 3; bx++)
            for (int c = 0; c < 3; c++) {
                int g = pix(got, bx * 16 + 8, by * 16 + 8)[c];
                int w = pix(want, bx * 16 + 8, by * 16 + 8)[c];
                assert_true(abs(g - w) <= tol);
            }
}

static void test_jpeg_orientation_all8(void **state)
{
    (void)state;
    px_image up;
    make_blocks(&up);
    for (int o = 1; o <= 8; o++) {
        px_image st, got;
        stored_for(&up, o, &st);
        unsigned char *exif;
        unsigned int exif_len;
        make_exif(o, 0, &exif, &exif_len);
        jmarker mk = {JPEG_APP0 + 1, exif, exif_len};
        px_buf jpg;
        jpeg_with_markers(&st, 95, &mk, 1, &jpg);
        free(exif);
        assert_int_equal(px_image_exif_orientation(jpg.data, jpg.len), o);
        px_decode_info info;
        px_err err;
        assert_int_equal(px_image_decode(jpg.data, jpg.len, NULL, &got, &info, &err), PX_OK);
        assert_int_equal(info.orientation, o);
        assert_int_equal(info.stored_w, st.w);
        assert_int_equal(info.stored_h, st.h);
        assert_int_equal(info.had_metadata, 1);
        assert_blocks_match(&got, &up, 8);
        px_image_free(&got);
        /* opting out keeps the stored layout */
        px_decode_opts opts = px_decode_opts_default();
        opts.apply_orientation = 0;
        assert_int_equal(px_image_decode(jpg.data, jpg.len, &opts, &got, &info, &err), PX_OK);
        assert_int_equal(got.w, st.w);
        px_image_free(&got);
        px_buf_free(&jpg);
        px_image_free(&st);
    }
    px_image_free(&up);
}

static void test_apply_orientation_exact(void **state)
{
    (void)state;
    px_image up;
    make_test_image(&up, 13, 7, 4);
    for (int o = 1; o <= 8; o++) {
        px_image st;
        stored_for(&up, o, &st);
        assert_int_equal(px_image_apply_orientation(&st, o), PX_OK);
        assert_true(images_equal(&st, &up));
        px_image_free(&st);
    }
    assert_int_equal(px_image_apply_orientation(&up, 9), PX_EINVAL);
    assert_int_equal(px_image_apply_orientation(&up, 0), PX_EINVAL);
    px_image_free(&up);
}

/* A PNG written by libpng from raw rows (any colour type / depth), with an
 * optional palette, tRNS and eXIf chunk. */
typedef struct png_spec {
    int w, h, color, depth, interlace;
    const uint8_t *rows; /* h rows of rowbytes, packed */
    size_t rowbytes;
    const png_color *pal;
    int npal;
    const uint8_t *trns;
    int ntrns;
    const uint8_t *exif;
    unsigned exif_len;
} png_spec;

static void png_write_spec(const png_spec *sp, px_buf *out)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_int_equal(setjmp(png_jmpbuf(png)), 0);
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)sp->w, (png_uint_32)sp->h, sp->depth, sp->color,
                 sp->interlace, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (sp->pal)
        png_set_PLTE(png, info, sp->pal, sp->npal);
    if (sp->trns)
        png_set_tRNS(png, info, sp->trns, sp->ntrns, NULL);
    if (sp->exif)
        png_set_eXIf_1(png, info, sp->exif_len, (png_bytep)(uintptr_t)sp->exif);
    png_write_info(png, info);
    if (sp->depth == 16)
        png_set_swap(png); /* our test rows are little-endian uint16 */
    int passes = png_set_interlace_handling(png);
    for (int pass = 0; pass < passes; pass++)
        for (int y = 0; y < sp->h; y++)
            png_write_row(png, sp->rows + (size_t)y * sp->rowbytes);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    long n = ftell(f);
    rewind(f);
    memset(out, 0, sizeof *out);
    uint8_t *d = malloc((size_t)n);
    assert_int_equal(fread(d, 1, (size_t)n, f), (size_t)n);
    px_buf_append(out, d, (size_t)n);
    free(d);
    fclose(f);
}

static void png_with_exif(const px_image *img, const uint8_t *tiff, unsigned tiff_len, px_buf *out)
{
    png_spec sp = {img->w,
                   img->h,
                   PNG_COLOR_TYPE_RGB,
                   8,
                   PNG_INTERLACE_NONE,
                   img->px,
                   img->stride,
                   NULL,
                   0,
                   NULL,
                   0,
                   tiff,
                   tiff_len};
    png_write_spec(&sp, out);
}

static void test_png_variants_expand_to_8bit(void **state)
{
    (void)state;
    enum { W = 9, H = 5 };
    px_err err;
    px_image out;
    px_buf b;
    /* 16-bit grey, Adam7 interlaced -> RGB, scaled to 8 bits with rounding */
    uint16_t g16[H][W];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            g16[y][x] = (uint16_t)((y * W + x) * 1400 + 77);
    png_spec sp = {W,
                   H,
                   PNG_COLOR_TYPE_GRAY,
                   16,
                   PNG_INTERLACE_ADAM7,
                   (const uint8_t *)g16,
                   sizeof g16[0],
                   NULL,
                   0,
                   NULL,
                   0,
                   NULL,
                   0};
    png_write_spec(&sp, &b);
    assert_int_equal(px_image_decode(b.data, b.len, NULL, &out, NULL, &err), PX_OK);
    assert_int_equal(out.channels, 3);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int want = (g16[y][x] * 255 + 32767) / 65535;
            const uint8_t *p = pix(&out, x, y);
            assert_true(abs(p[0] - want) <= 1);
            assert_int_equal(p[0], p[1]);
            assert_int_equal(p[1], p[2]);
        }
    px_image_free(&out);
    px_buf_free(&b);

    /* 2-bit palette with tRNS -> RGBA */
    const png_color pal[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {10, 20, 30}};
    const uint8_t trns[4] = {255, 128, 0, 255};
    uint8_t rows[H][3]; /* 9 px * 2 bits = 3 bytes */
    for (int y = 0; y < H; y++)
        for (int i = 0; i < 3; i++)
            rows[y][i] = 0x1B; /* indices 0,1,2,3 */
    png_spec sp2 = {
        W,    H, PNG_COLOR_TYPE_PALETTE, 2, PNG_INTERLACE_NONE, &rows[0][0], 3, pal, 4, trns, 4,
        NULL, 0};
    png_write_spec(&sp2, &b);
    assert_int_equal(px_image_decode(b.data, b.len, NULL, &out, NULL, &err), PX_OK);
    assert_int_equal(out.channels, 4);
    for (int x = 0; x < W; x++) {
        int idx = x % 4;
        const uint8_t *p = pix(&out, x, 2);
        assert_int_equal(p[0], pal[idx].red);
        assert_int_equal(p[1], pal[idx].green);
        assert_int_equal(p[2], pal[idx].blue);
        assert_int_equal(p[3], trns[idx]);
    }
    px_image_free(&out);
    px_buf_free(&b);
}

static void test_jpeg_gray_and_cmyk(void **state)
{
    (void)state;
    enum { W = 16, H = 16 };
    for (int cmyk = 0; cmyk <= 1; cmyk++) {
        struct jpeg_compress_struct c;
        struct jpeg_error_mgr jerr;
        c.err = jpeg_std_error(&jerr);
        jpeg_create_compress(&c);
        unsigned char *buf = NULL;
        unsigned long size = 0;
        jpeg_mem_dest(&c, &buf, &size);
        c.image_width = W;
        c.image_height = H;
        c.input_components = cmyk ? 4 : 1;
        c.in_color_space = cmyk ? JCS_CMYK : JCS_GRAYSCALE;
        jpeg_set_defaults(&c);
        jpeg_set_quality(&c, 98, TRUE);
        jpeg_start_compress(&c, TRUE);
        /* CMYK in the Adobe convention (255 = no ink; libjpeg writes the
         * Adobe marker): pure red is C,M,Y,K = 255,0,0,255 */
        uint8_t row[W * 4];
        for (int x = 0; x < W; x++) {
            if (cmyk) {
                const uint8_t red[4] = {255, 0, 0, 255};
                memcpy(row + 4 * x, red, 4);
            } else {
                row[x] = 90;
            }
        }
        while (c.next_scanline < c.image_height) {
            JSAMPROW r = row;
            jpeg_write_scanlines(&c, &r, 1);
        }
        jpeg_finish_compress(&c);
        jpeg_destroy_compress(&c);
        px_image out;
        px_err err;
        assert_int_equal(px_image_decode(buf, size, NULL, &out, NULL, &err), PX_OK);
        assert_int_equal(out.channels, 3);
        const uint8_t *p = pix(&out, 8, 8);
        if (cmyk) {
            assert_true(p[0] > 245 && p[1] < 10 && p[2] < 10);
        } else {
            assert_true(abs(p[0] - 90) <= 2);
            assert_int_equal(p[0], p[1]);
            assert_int_equal(p[1], p[2]);
        }
        px_image_free(&out);
        free(buf);
    }
}

static void test_png_and_webp_orientation(void **state)
{
    (void)state;
    px_image up;
    make_test_image(&up, 21, 10, 3);
    const int os[] = {3, 6, 7};
    for (size_t i = 0; i < sizeof os / sizeof os[0]; i++) {
        int o = os[i];
        px_image st, got;
        stored_for(&up, o, &st);
        unsigned char *exif;
        unsigned int exif_len;
        make_exif(o, 0, &exif, &exif_len);
        px_err err;
        px_decode_info info;

        /* PNG eXIf carries bare TIFF (no "Exif\0\0") */
        px_buf pngb;
        png_with_exif(&st, exif + 6, exif_len - 6, &pngb);
        assert_int_equal(px_image_exif_orientation(pngb.data, pngb.len), o);
        assert_int_equal(px_image_decode(pngb.data, pngb.len, NULL, &got, &info, &err), PX_OK);
        assert_int_equal(info.orientation, o);
        assert_int_equal(info.had_metadata, 1);
        assert_true(images_equal(&got, &up));
        px_image_free(&got);
        px_buf_free(&pngb);

        /* WebP: lossless bitstream + EXIF chunk via the mux API */
        uint8_t *bits = NULL;
        size_t nbits = WebPEncodeLosslessRGB(st.px, st.w, st.h, (int)st.stride, &bits);
        assert_true(nbits > 0);
        WebPMux *mux = WebPMuxNew();
        WebPData img_data = {bits, nbits}, exif_data = {exif + 6, exif_len - 6}, outd;
        assert_int_equal(WebPMuxSetImage(mux, &img_data, 1), WEBP_MUX_OK);
        assert_int_equal(WebPMuxSetChunk(mux, "EXIF", &exif_data, 1), WEBP_MUX_OK);
        assert_int_equal(WebPMuxAssemble(mux, &outd), WEBP_MUX_OK);
        WebPMuxDelete(mux);
        WebPFree(bits);
        assert_int_equal(px_image_exif_orientation(outd.bytes, outd.size), o);
        assert_int_equal(px_image_decode(outd.bytes, outd.size, NULL, &got, &info, &err), PX_OK);
        assert_int_equal(info.orientation, o);
        assert_int_equal(info.had_metadata, 1);
        assert_true(images_equal(&got, &up));
        px_image_free(&got);
        WebPDataClear(&outd);
        free(exif);
        px_image_free(&st);
    }
    px_image_free(&up);
}

static void test_corrupt_exif_is_upright(void **state)
{
    (void)state;
    px_image img, got;
    make_test_image(&img, 24, 16, 3);
    uint8_t bad[200];
    memcpy(bad, "Exif\0\0II*\0", 10);
    for (size_t i = 10; i < sizeof bad; i++)
        bad[i] = (uint8_t)rnd(); /* IFD offset and entries are garbage */
    uint8_t bad2[40];
    memcpy(bad2, "Exif\0\0MM\0*\xff\xff\xff\xf0", 14); /* IFD offset far out of range */
    memset(bad2 + 14, 0x55, sizeof bad2 - 14);
    const uint8_t *payloads[] = {bad, bad2};
    const unsigned lens[] = {sizeof bad, sizeof bad2};
    for (int i = 0; i < 2; i++) {
        jmarker mk = {JPEG_APP0 + 1, payloads[i], lens[i]};
        px_buf jpg;
        jpeg_with_markers(&img, 90, &mk, 1, &jpg);
        px_decode_info info;
        px_err err;
        assert_int_equal(px_image_decode(jpg.data, jpg.len, NULL, &got, &info, &err), PX_OK);
        assert_int_equal(info.orientation, 1);
        assert_int_equal(got.w, 24);
        assert_int_equal(got.h, 16);
        px_image_free(&got);
        px_buf_free(&jpg);
    }
    /* Orientation 9 (out of range) also reads as 1 */
    unsigned char *exif;
    unsigned int exif_len;
    make_exif(9, 0, &exif, &exif_len);
    jmarker mk = {JPEG_APP0 + 1, exif, exif_len};
    px_buf jpg;
    jpeg_with_markers(&img, 90, &mk, 1, &jpg);
    free(exif);
    assert_int_equal(px_image_exif_orientation(jpg.data, jpg.len), 1);
    px_buf_free(&jpg);
    px_image_free(&img);
}

/* ---------- metadata never reaches the output ---------- */

static void test_metadata_stripped(void **state)
{
    (void)state;
    px_image img, dec;
    make_test_image(&img, 64, 48, 3);
    unsigned char *exif;
    unsigned int exif_len;
    make_exif(1, 1, &exif, &exif_len);
    assert_true(exif_len > 300); /* GPS IFD + thumbnail made it in */
    uint8_t icc[140];
    memcpy(icc, "ICC_PROFILE\0\1\1", 14);
    memset(icc + 14, 'P', sizeof icc - 14);
    const char *com = "secret comment: shot at home";
    jmarker mk[3] = {{JPEG_APP0 + 1, exif, exif_len},
                     {JPEG_APP0 + 2, icc, sizeof icc},
                     {JPEG_COM, (const uint8_t *)com, (unsigned)strlen(com)}};
    px_buf in;
    jpeg_with_markers(&img, 90, mk, 3, &in);
    free(exif);
    int a1, a2, cm;
    jpeg_marker_scan(in.data, in.len, &a1, &a2, &cm);
    assert_true(a1 && a2 && cm); /* the input really carries them */

    px_decode_info info;
    px_err err;
    assert_int_equal(px_image_decode(in.data, in.len, NULL, &dec, &info, &err), PX_OK);
    assert_int_equal(info.had_metadata, 1);

    px_buf out = {0};
    assert_int_equal(px_image_encode(&dec, PX_FMT_JPEG, 85, &out, &err), PX_OK);
    jpeg_marker_scan(out.data, out.len, &a1, &a2, &cm);
    assert_false(a1);
    assert_false(a2);
    assert_false(cm);
    assert_false(contains(out.data, out.len, "Exif"));
    assert_false(contains(out.data, out.len, "ICC_PROFILE"));
    assert_false(contains(out.data, out.len, "secret"));
    px_buf_free(&out);

    assert_int_equal(px_image_encode(&dec, PX_FMT_PNG, 85, &out, &err), PX_OK);
    assert_true(png_has_chunk(out.data, out.len, "IDAT"));
    const char *bad_png[] = {"tEXt", "zTXt", "iTXt", "eXIf", "iCCP", "tIME"};
    for (int i = 0; i < 6; i++)
        assert_false(png_has_chunk(out.data, out.len, bad_png[i]));
    px_buf_free(&out);

    for (int q = 80; q <= 100; q += 20) {
        assert_int_equal(px_image_encode(&dec, PX_FMT_WEBP, q, &out, &err), PX_OK);
        assert_true(webp_has_chunk(out.data, out.len, q == 100 ? "VP8L" : "VP8 "));
        assert_false(webp_has_chunk(out.data, out.len, "EXIF"));
        assert_false(webp_has_chunk(out.data, out.len, "XMP "));
        assert_false(webp_has_chunk(out.data, out.len, "ICCP"));
        px_buf_free(&out);
    }
    px_image_free(&dec);
    px_buf_free(&in);
    px_image_free(&img);
}

/* ---------- limits and hostile input ---------- */

static void test_huge_headers_rejected_fast(void **state)
{
    (void)state;
    px_image img, out;
    make_test_image(&img, 16, 16, 3);
    px_err err;
    px_buf png = {0}, jpg = {0};
    assert_int_equal(px_image_encode(&img, PX_FMT_PNG, 90, &png, &err), PX_OK);
    assert_int_equal(px_image_encode(&img, PX_FMT_JPEG, 90, &jpg, &err), PX_OK);

    /* PNG: IHDR says 100000 x 100000 (with a valid CRC) */
    assert_int_equal(crc32_png(png.data + 12, 17), be32(png.data + 29)); /* helper is right */
    uint8_t *p = png.data + 16;
    const uint8_t dims[8] = {0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0};
    memcpy(p, dims, 8);
    uint32_t crc = crc32_png(png.data + 12, 17); /* over type + data */
    const uint8_t crcb[4] = {(uint8_t)(crc >> 24), (uint8_t)(crc >> 16), (uint8_t)(crc >> 8),
                             (uint8_t)crc};
    memcpy(png.data + 29, crcb, 4);
    double t0 = px_now_ms();
    assert_int_equal(px_image_decode(png.data, png.len, NULL, &out, NULL, &err), PX_ELIMIT);
    assert_non_null(strstr(err.msg, "100000x100000"));
    assert_null(out.px);

    /* JPEG: SOF0 says 65000 x 65000 (the most 16-bit fields allow, 4.2 gigapixels) */
    size_t i;
    for (i = 2; i + 9 < jpg.len; i++)
        if (jpg.data[i] == 0xFF && jpg.data[i + 1] == 0xC0)
            break;
    assert_true(i + 9 < jpg.len);
    const uint8_t hw[4] = {0xFD, 0xE8, 0xFD, 0xE8};
    memcpy(jpg.data + i + 5, hw, 4);
    assert_int_equal(px_image_decode(jpg.data, jpg.len, NULL, &out, NULL, &err), PX_ELIMIT);
    assert_null(out.px);
    /* refused from the header, before any pixel buffer: the time is printed, not asserted
     * (ASan would report a 40 GB allocation attempt long before this) */
    print_message("oversized headers refused in %.1f ms\n", px_now_ms() - t0);

    /* an explicit small cap applies to ordinary images too */
    px_image_free(&img);
    make_test_image(&img, 100, 100, 3);
    px_buf_free(&png);
    assert_int_equal(px_image_encode(&img, PX_FMT_PNG, 90, &png, &err), PX_OK);
    px_decode_opts o = px_decode_opts_default();
    o.max_pixels = 9999;
    assert_int_equal(px_image_decode(png.data, png.len, &o, &out, NULL, &err), PX_ELIMIT);
    o.max_pixels = 10000;
    assert_int_equal(px_image_decode(png.data, png.len, &o, &out, NULL, &err), PX_OK);
    px_image_free(&out);
    px_buf_free(&png);
    px_buf_free(&jpg);
    px_image_free(&img);
}

/* Issue 12: a 0.9 MB PNG whose tEXt chunk declares 2 GB (0x7FFFFFF0 bytes,
 * the file ends 0.9 MB later) made libpng allocate 2 GB. Decoded in a child
 * process whose peak memory may grow by at most 32 MiB: the decode must be
 * refused as truncated. A well-formed 9 MiB text chunk is refused as over the
 * chunk limit, and a real 4 MiB text chunk is still decoded. */
static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
    p[3] = (uint8_t)v;
}

/* png with a tEXt chunk of `body` bytes (declared length `declared`) after IHDR. */
static uint8_t *png_with_text(const px_buf *png, uint32_t declared, size_t body, size_t *n)
{
    *n = png->len + 12 + body;
    uint8_t *d = calloc(1, *n);
    assert_non_null(d);
    memcpy(d, png->data, 33); /* signature + IHDR */
    put_be32(d + 33, declared);
    memcpy(d + 37, "tEXt", 4);
    memcpy(d + 41, "Comment", 8); /* keyword, NUL, then text */
    memset(d + 49, 'x', body - 8);
    put_be32(d + 41 + body, crc32_png(d + 37, 4 + body));
    memcpy(d + 45 + body, png->data + 33, png->len - 33);
    return d;
}

static void test_png_chunk_limits(void **state)
{
    (void)state;
    px_image img, out;
    make_test_image(&img, 16, 16, 3);
    px_err err;
    px_buf png = {0};
    assert_int_equal(px_image_encode(&img, PX_FMT_PNG, 90, &png, &err), PX_OK);
    size_t n = 0;
    uint8_t *bomb = png_with_text(&png, 0x7FFFFFF0u, 900000, &n);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        const long before = ru.ru_maxrss;
        px_image o;
        int bad = px_image_decode(bomb, n, NULL, &o, NULL, &err) != PX_ECORRUPT;
        bad |= (strstr(err.msg, "tEXt") == NULL) << 1;
        getrusage(RUSAGE_SELF, &ru);
        bad |= (ru.ru_maxrss - before > 32 * 1024) << 2; /* KiB */
        _exit(bad);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("2 GB tEXt child: status %d (bits: 1 status, 2 message, 4 memory)", st);
    free(bomb);

    bomb = png_with_text(&png, 9u << 20, 9u << 20, &n);
    assert_int_equal(px_image_decode(bomb, n, NULL, &out, NULL, &err), PX_ELIMIT);
    assert_non_null(strstr(err.msg, "tEXt"));
    free(bomb);
    bomb = png_with_text(&png, 4u << 20, 4u << 20, &n);
    assert_int_equal(px_image_decode(bomb, n, NULL, &out, NULL, &err), PX_OK);
    assert_int_equal(out.w, 16);
    px_image_free(&out);
    free(bomb);
    px_buf_free(&png);
    px_image_free(&img);
}

static const char *photos[] = {"centerface_t3.jpeg",    "deface_city.jpg",
                               "inspireface_view.jpg",  "libfd_ios_test.jpg",
                               "libfd_keliamoniz1.jpg", "ultraface_imgs_2.jpg",
                               "ultraface_imgs_27.jpg", "ultraface_imgs_3.jpg"};
#define NPHOTOS (sizeof photos / sizeof photos[0])

static void test_truncated_photos_are_corrupt(void **state)
{
    (void)state;
    for (size_t i = 0; i < NPHOTOS; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", FACES_DIR, photos[i]);
        uint8_t *d;
        size_t n;
        assert_int_equal(read_file(path, &d, &n), PX_OK);
        /* inside the headers, mid-scan, near the end, and only the EOI missing */
        const size_t cuts[] = {n / 50, n / 3, n / 2, n - n / 20, n - 2};
        for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
            px_image out;
            px_err err;
            int st = px_image_decode(d, cuts[k], NULL, &out, NULL, &err);
            if (st != PX_ECORRUPT)
                print_error("%s cut at %zu/%zu: status %d (%s)\n", photos[i], cuts[k], n, st,
                            err.msg);
            assert_int_equal(st, PX_ECORRUPT);
            assert_null(out.px);
            assert_true(strlen(err.msg) > 0);
        }
        free(d);
    }
}

/* The same for PNG and WebP (lossy and lossless) made from a real photo. */
static void test_truncated_png_webp_are_corrupt(void **state)
{
    (void)state;
    uint8_t *d;
    size_t n;
    assert_int_equal(read_file(FACES_DIR "/libfd_ios_test.jpg", &d, &n), PX_OK);
    px_image img;
    px_err err;
    assert_int_equal(px_image_decode(d, n, NULL, &img, NULL, &err), PX_OK);
    free(d);
    const px_format fmts[3] = {PX_FMT_PNG, PX_FMT_WEBP, PX_FMT_WEBP};
    const int qs[3] = {90, 80, 100};
    for (int f = 0; f < 3; f++) {
        px_buf b = {0};
        assert_int_equal(px_image_encode(&img, fmts[f], qs[f], &b, &err), PX_OK);
        const size_t cuts[] = {40, b.len / 3, b.len - b.len / 20, b.len - 5};
        for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
            px_image out;
            int st = px_image_decode(b.data, cuts[k], NULL, &out, NULL, &err);
            if (st != PX_ECORRUPT)
                print_error("%s q%d cut at %zu/%zu: status %d (%s)\n", px_format_name(fmts[f]),
                            qs[f], cuts[k], b.len, st, err.msg);
            assert_int_equal(st, PX_ECORRUPT);
            assert_null(out.px);
        }
        px_buf_free(&b);
    }
    px_image_free(&img);
}

static void test_garbage_and_empty(void **state)
{
    (void)state;
    uint8_t junk[4096];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (uint8_t)rnd();
    junk[0] = 0x12; /* make sure it does not start with a real magic */
    px_image out;
    px_err err;
    assert_int_equal(px_image_decode(junk, sizeof junk, NULL, &out, NULL, &err), PX_EUNSUPPORTED);
    assert_string_equal(err.msg, "not a JPEG, PNG, WebP, TIFF, GIF, HEIF or AVIF image");
    assert_int_equal(px_image_decode(junk, 0, NULL, &out, NULL, &err), PX_EINVAL);
    assert_non_null(strstr(err.msg, "empty"));
    assert_int_equal(px_image_exif_orientation(junk, sizeof junk), 1);
    /* right magic, garbage after it */
    junk[0] = 0xFF, junk[1] = 0xD8, junk[2] = 0xFF;
    assert_int_equal(px_image_decode(junk, sizeof junk, NULL, &out, NULL, &err), PX_ECORRUPT);
    const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(junk, png_sig, 8);
    assert_int_equal(px_image_decode(junk, sizeof junk, NULL, &out, NULL, &err), PX_ECORRUPT);
    memcpy(junk, "RIFF\0\1\0\0WEBPVP8 ", 16);
    int st = px_image_decode(junk, sizeof junk, NULL, &out, NULL, &err);
    assert_true(st == PX_ECORRUPT || st == PX_EUNSUPPORTED);
    assert_null(out.px);
}

static void test_real_photos_decode_to_reference_size(void **state)
{
    (void)state;
    json_error_t jerr;
    json_t *root = json_load_file(FACES_DIR "/reference_boxes.json", 0, &jerr);
    assert_non_null(root);
    json_t *images = json_object_get(root, "images");
    assert_true(json_is_object(images));
    const char *name;
    json_t *entry;
    int count = 0;
    json_object_foreach(images, name, entry)
    {
        json_t *wh = json_object_get(entry, "size_wh");
        assert_int_equal(json_array_size(wh), 2);
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", FACES_DIR, name);
        uint8_t *d;
        size_t n;
        assert_int_equal(read_file(path, &d, &n), PX_OK);
        px_image img;
        px_err err;
        px_decode_info info;
        assert_int_equal(px_image_decode(d, n, NULL, &img, &info, &err), PX_OK);
        assert_int_equal(img.w, json_integer_value(json_array_get(wh, 0)));
        assert_int_equal(img.h, json_integer_value(json_array_get(wh, 1)));
        assert_int_equal(img.channels, 3);
        px_image_free(&img);
        free(d);
        count++;
    }
    assert_true(count >= (int)NPHOTOS);
    json_decref(root);
}

/* ---------- tensor sampling ---------- */

static void test_tensor_identity_and_layout(void **state)
{
    (void)state;
    px_image img;
    make_noise_image(&img, 37, 23, 4);
    const int ow = 37, oh = 23;
    float *t = malloc(sizeof(float) * 3 * ow * oh);
    px_image_to_tensor(&img, 0, 0, 37, 23, ow, oh, 1, 100.0f, 0.5f, 0.0f, t);
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            const uint8_t *p = pix(&img, x, y);
            size_t o = (size_t)y * ow + x;
            assert_float_equal(t[o], (p[2] - 100.0f) * 0.5f, 1e-4); /* B first */
            assert_float_equal(t[o + (size_t)ow * oh], (p[1] - 100.0f) * 0.5f, 1e-4);
            assert_float_equal(t[o + 2 * (size_t)ow * oh], (p[0] - 100.0f) * 0.5f, 1e-4);
        }
    /* RGB order */
    px_image_to_tensor(&img, 0, 0, 37, 23, ow, oh, 0, 0.0f, 1.0f, 0.0f, t);
    assert_float_equal(t[5], pix(&img, 5, 0)[0], 1e-4);
    free(t);
    px_image_free(&img);
}

static void test_tensor_pad_and_offset(void **state)
{
    (void)state;
    px_image img;
    make_noise_image(&img, 20, 10, 3);
    /* rectangle starting 5 px left and 3 px above the image, same scale */
    const int ow = 30, oh = 16;
    float *t = malloc(sizeof(float) * 3 * 40 * 20); /* room for the 40x20 case below */
    px_image_to_tensor(&img, -5, -3, 30, 16, ow, oh, 0, 0.0f, 1.0f, 77.0f, t);
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            int sx = x - 5, sy = y - 3;
            int inside = sx >= 0 && sx < 20 && sy >= 0 && sy < 10;
            float want = inside ? pix(&img, sx, sy)[1] : 77.0f;
            assert_float_equal(t[(size_t)ow * oh + (size_t)y * ow + x], want, 1e-3);
        }
    /* the same with the rectangle reaching past the right and bottom edges,
     * and wholly outside */
    px_image_to_tensor(&img, 15, 8, 30, 16, ow, oh, 0, 0.0f, 1.0f, 77.0f, t);
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            int sx = x + 15, sy = y + 8;
            int inside = sx < 20 && sy < 10;
            float want = inside ? pix(&img, sx, sy)[2] : 77.0f;
            assert_float_equal(t[2 * (size_t)ow * oh + (size_t)y * ow + x], want, 1e-3);
        }
    px_image_to_tensor(&img, 40, -30, 30, 16, ow, oh, 0, 0.0f, 1.0f, 77.0f, t);
    for (int i = 0; i < 3 * ow * oh; i++)
        assert_float_equal(t[i], 77.0f, 1e-6);
    /* 2x enlargement: bilinear between neighbours */
    px_image_to_tensor(&img, 0, 0, 20, 10, 40, 20, 0, 0.0f, 1.0f, 0.0f, t);
    /* output (8, 9) samples source ((8+0.5)/2-0.5, (9+0.5)/2-0.5) = (3.75, 4.25) */
    float top = 0.25f * pix(&img, 3, 4)[0] + 0.75f * pix(&img, 4, 4)[0];
    float bot = 0.25f * pix(&img, 3, 5)[0] + 0.75f * pix(&img, 4, 5)[0];
    assert_float_equal(t[9 * 40 + 8], 0.75f * top + 0.25f * bot, 1e-3);
    /* a rectangle far larger than the image is cheap (tables are bounded by
     * the image size) and each output is the area-weighted mix of pad and
     * image: 3x3 cells of 1000 px, the image (20x10) inside the centre one */
    px_image_to_tensor(&img, -1.5e6f, -1.5e6f, 3e6f, 3e6f, 1, 1, 0, 0.0f, 1.0f, 255.0f, t);
    assert_float_equal(t[0], 255.0f, 0.01);
    px_image_to_tensor(&img, -1000.0f, -1000.0f, 3000.0f, 3000.0f, 3, 3, 0, 0.0f, 1.0f, 255.0f, t);
    double mean0 = 0;
    for (int y = 0; y < 10; y++)
        for (int x = 0; x < 20; x++)
            mean0 += pix(&img, x, y)[0] / 200.0;
    assert_float_equal(t[4], 255.0 + (mean0 - 255.0) * 200.0 / 1e6, 1e-3);
    assert_true(t[4] < 254.99f);
    assert_float_equal(t[0], 255.0f, 1e-3);
    free(t);
    px_image_free(&img);
}

/* A scaled rectangle reaching past the image's right edge (a fitted tile
 * rounded up): its columns inside the image are exactly those of a narrower
 * rectangle at the same scale that stays inside, and do not depend on the
 * pad value; the columns whose sample centre lies past the edge are the pad
 * value (bilinear sampling clamps at the edge, it does not mix in pad). */
static void test_tensor_scaled_tile_past_edge(void **state)
{
    (void)state;
    px_image img;
    make_noise_image(&img, 40, 12, 3);
    const float f = 1.25f; /* source pixels per output pixel (scale 0.8), exact in floats */
    const int wa = 40, wb = 24, oh = 8;
    float *a = malloc(sizeof(float) * 3 * wa * oh), *z = malloc(sizeof(float) * 3 * wa * oh),
          *b = malloc(sizeof(float) * 3 * wb * oh);
    px_image_to_tensor(&img, 0.0f, 0.0f, f * (float)wa, f * (float)oh, wa, oh, 0, 0.0f, 1.0f,
                       300.0f, a);
    px_image_to_tensor(&img, 0.0f, 0.0f, f * (float)wa, f * (float)oh, wa, oh, 0, 0.0f, 1.0f, -7.0f,
                       z);
    px_image_to_tensor(&img, 0.0f, 0.0f, f * (float)wb, f * (float)oh, wb, oh, 0, 0.0f, 1.0f,
                       300.0f, b);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < oh; y++) {
            const size_t row = (size_t)c * oh + (size_t)y;
            const float *ra = a + row * wa, *rz = z + row * wa, *rb = b + row * wb;
            assert_memory_equal(ra, rb, sizeof(float) * (size_t)wb);
            /* centres (x + 0.5) * 1.25: inside the 40 px below x = 32 */
            assert_memory_equal(ra, rz, sizeof(float) * 32);
            for (int x = 32; x < wa; x++) {
                assert_float_equal(ra[x], 300.0f, 1e-3);
                assert_float_equal(rz[x], -7.0f, 1e-3);
            }
        }
    /* and past the left edge: 10 px before the image, its column 8 is the
     * narrower rectangle's column 0, columns 0-7 pad */
    px_image_to_tensor(&img, -10.0f, 0.0f, f * (float)wa, f * (float)oh, wa, oh, 0, 0.0f, 1.0f,
                       300.0f, a);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < oh; y++) {
            const size_t row = (size_t)c * oh + (size_t)y;
            const float *ra = a + row * wa, *rb = b + row * wb;
            assert_memory_equal(ra + 8, rb, sizeof(float) * (size_t)wb);
            for (int x = 0; x < 8; x++)
                assert_float_equal(ra[x], 300.0f, 1e-3);
        }
    free(a);
    free(z);
    free(b);
    px_image_free(&img);
}

/* The RGBA path (alpha ignored) must give exactly what the RGB path gives,
 * for bilinear and box sampling, with padding. */
/* px_image_resample is the tensor sampling rounded back to bytes, black
 * outside the image, and refuses empty rectangles and sizes. */
static void test_resample_matches_tensor(void **state)
{
    (void)state;
    px_image img, out;
    make_noise_image(&img, 53, 41, 3);
    const float rects[3][4] = {
        {-7.5f, 3.0f, 40.0f, 30.0f}, {0, 0, 53, 41}, {2.0f, 1.0f, 9.0f, 7.0f}};
    const int sizes[3][2] = {{17, 11}, {53, 41}, {31, 29}};
    for (int r = 0; r < 3; r++) {
        const int ow = sizes[r][0], oh = sizes[r][1];
        float *t = malloc(sizeof *t * 3 * (size_t)ow * (size_t)oh);
        assert_non_null(t);
        px_image_to_tensor(&img, rects[r][0], rects[r][1], rects[r][2], rects[r][3], ow, oh, 0,
                           0.0f, 1.0f, 0.0f, t);
        assert_int_equal(px_image_resample(&img, rects[r][0], rects[r][1], rects[r][2], rects[r][3],
                                           ow, oh, &out),
                         PX_OK);
        assert_int_equal(out.w, ow);
        assert_int_equal(out.h, oh);
        assert_int_equal(out.channels, 3);
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++)
                for (int c = 0; c < 3; c++) {
                    const float v = t[(size_t)c * ow * oh + (size_t)y * ow + (size_t)x];
                    const int want = v <= 0.0f ? 0 : v >= 255.0f ? 255 : (int)(v + 0.5f);
                    assert_int_equal(pix(&out, x, y)[c], want);
                }
        free(t);
        px_image_free(&out);
    }
    assert_int_equal(px_image_resample(&img, 0, 0, 0.0f, 5.0f, 4, 4, &out), PX_EINVAL);
    assert_null(out.px);
    assert_int_equal(px_image_resample(&img, 0, 0, 5.0f, 5.0f, 0, 4, &out), PX_EINVAL);
    assert_int_equal(px_image_resample(NULL, 0, 0, 5.0f, 5.0f, 4, 4, &out), PX_EINVAL);
    px_image_free(&img);
}

static void test_tensor_rgba_matches_rgb(void **state)
{
    (void)state;
    px_image rgba, rgb;
    make_noise_image(&rgba, 50, 40, 4);
    assert_int_equal(px_image_alloc(&rgb, 50, 40, 3), PX_OK);
    for (int y = 0; y < 40; y++)
        for (int x = 0; x < 50; x++)
            memcpy(rgb.px + (size_t)y * rgb.stride + (size_t)x * 3, pix(&rgba, x, y), 3);
    const float rects[3][4] = {{-3.3f, 2.7f, 41.0f, 30.5f}, {0, 0, 50, 40}, {-10, -5, 70, 60}};
    const int sizes[3] = {57, 13, 7}; /* up-scale, 3x down, 10x down */
    float *a = malloc(sizeof(float) * 3 * 57 * 57), *b = malloc(sizeof(float) * 3 * 57 * 57);
    for (int i = 0; i < 3; i++) {
        int n = sizes[i];
        px_image_to_tensor(&rgba, rects[i][0], rects[i][1], rects[i][2], rects[i][3], n, n, 1,
                           10.0f, 0.25f, 33.0f, a);
        px_image_to_tensor(&rgb, rects[i][0], rects[i][1], rects[i][2], rects[i][3], n, n, 1, 10.0f,
                           0.25f, 33.0f, b);
        for (int k = 0; k < 3 * n * n; k++)
            assert_float_equal(a[k], b[k], 1e-4);
    }
    free(a);
    free(b);
    px_image_free(&rgba);
    px_image_free(&rgb);
}

static void test_tensor_area_average_keeps_small_detail(void **state)
{
    (void)state;
    /* 1-px checkerboard: an 8x shrink must give the mean (127.5), not 0 or 255 */
    px_image img;
    assert_int_equal(px_image_alloc(&img, 256, 256, 3), PX_OK);
    for (int y = 0; y < 256; y++)
        for (int x = 0; x < 256; x++)
            memset(img.px + (size_t)y * img.stride + (size_t)x * 3, ((x + y) & 1) ? 255 : 0, 3);
    float *t = malloc(sizeof(float) * 3 * 32 * 32);
    px_image_to_tensor(&img, 0, 0, 256, 256, 32, 32, 0, 0.0f, 1.0f, 0.0f, t);
    for (int i = 0; i < 3 * 32 * 32; i++)
        assert_float_equal(t[i], 127.5f, 0.01);
    /* a 4x4 white square on black, 8x shrink: still a quarter-bright spot */
    memset(img.px, 0, img.stride * 256);
    for (int y = 100; y < 104; y++)
        for (int x = 132; x < 136; x++)
            memset(img.px + (size_t)y * img.stride + (size_t)x * 3, 255, 3);
    px_image_to_tensor(&img, 0, 0, 256, 256, 32, 32, 0, 0.0f, 1.0f, 0.0f, t);
    float sum = 0, mx = 0;
    for (int i = 0; i < 32 * 32; i++) {
        sum += t[i];
        mx = t[i] > mx ? t[i] : mx;
    }
    assert_float_equal(sum, 255.0f * 16 / 64, 0.01); /* energy is preserved */
    assert_float_equal(t[12 * 32 + 16], 255.0f * 16 / 64, 0.01);
    assert_float_equal(mx, 255.0f * 16 / 64, 0.01);
    free(t);
    px_image_free(&img);
}

static void test_tensor_speed(void **state)
{
    (void)state;
    px_image img;
    make_noise_image(&img, 1920, 1080, 3);
    float *t = malloc(sizeof(float) * 3 * 640 * 640);
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = px_now_ms();
        px_image_to_tensor(&img, 300.5f, 200.25f, 600, 600, 640, 640, 1, 0, 1, 0, t);
        double dt = px_now_ms() - t0;
        best = dt < best ? dt : best;
    }
    print_message("to_tensor 640x640 from a 600x600 rectangle: %.2f ms (best of 5)\n", best);
    /* the figure is printed, never asserted: a busy machine must not fail a test (the
     * speed is bench_image's business) */
    free(t);
    px_image_free(&img);
}

/* ---------- concealment ---------- */

static px_mask box_mask(int x0, int y0, int w, int h, uint8_t a)
{
    px_mask m = {x0, y0, w, h, malloc((size_t)w * h)};
    memset(m.alpha, a, (size_t)w * h);
    return m;
}

static int in_rect(int x, int y, const px_mask *m)
{
    return x >= m->x0 && x < m->x0 + m->w && y >= m->y0 && y < m->y0 + m->h;
}

static void check_outside_same_inside_changed(const px_image *before, const px_image *after,
                                              const px_mask *m)
{
    long changed = 0, inside = 0;
    for (int y = 0; y < before->h; y++)
        for (int x = 0; x < before->w; x++) {
            int same = memcmp(pix(before, x, y), pix(after, x, y), (size_t)before->channels) == 0;
            if (in_rect(x, y, m)) {
                inside++;
                changed += !same;
                if (before->channels == 4)
                    assert_int_equal(pix(before, x, y)[3], pix(after, x, y)[3]);
            } else {
                assert_true(same);
            }
        }
    assert_true(changed > inside * 9 / 10);
}

static void test_conceal_modes_stay_in_mask(void **state)
{
    (void)state;
    const px_conceal_mode modes[] = {PX_CONCEAL_BLUR, PX_CONCEAL_PIXELATE, PX_CONCEAL_NOISE,
                                     PX_CONCEAL_SOLID};
    for (int ch = 3; ch <= 4; ch++)
        for (int i = 0; i < 4; i++) {
            px_image img, orig;
            make_noise_image(&img, 120, 90, ch);
            assert_int_equal(px_image_copy(&img, &orig), PX_OK);
            /* mask hangs over the right edge: the clipped part must be ignored */
            px_mask m = box_mask(70, 20, 80, 50, 255);
            px_conceal how = {modes[i], 6.0f, 42, {10, 20, 30}};
            px_err err;
            assert_int_equal(px_image_conceal(&img, &m, &how, &err), PX_OK);
            check_outside_same_inside_changed(&orig, &img, &m);
            free(m.alpha);
            px_image_free(&img);
            px_image_free(&orig);
        }
}

static void test_conceal_alpha_blend_and_args(void **state)
{
    (void)state;
    px_image img;
    make_noise_image(&img, 40, 40, 3);
    px_image orig;
    px_image_copy(&img, &orig);
    px_mask m = box_mask(0, 0, 40, 40, 0);
    for (int x = 0; x < 40; x++)
        m.alpha[20 * 40 + x] = 128; /* one half-strength row */
    px_conceal how = {PX_CONCEAL_SOLID, 0, 0, {200, 0, 100}};
    px_err err;
    assert_int_equal(px_image_conceal(&img, &m, &how, &err), PX_OK);
    for (int x = 0; x < 40; x++) {
        const uint8_t *o = pix(&orig, x, 20), *p = pix(&img, x, 20);
        assert_true(abs(p[0] - (o[0] * 127 + 200 * 128) / 255) <= 1);
        assert_true(abs(p[1] - (o[1] * 127) / 255) <= 1);
        assert_int_equal(memcmp(pix(&orig, x, 19), pix(&img, x, 19), 3), 0);
    }
    px_conceal bad = {PX_CONCEAL_BLUR, 0.0f, 0, {0, 0, 0}};
    assert_int_equal(px_image_conceal(&img, &m, &bad, &err), PX_EINVAL);
    assert_non_null(strstr(err.msg, "strength"));
    px_mask empty = {0, 0, 0, 0, NULL};
    assert_int_equal(px_image_conceal(&img, &empty, &how, &err), PX_EINVAL);
    px_conceal huge = {PX_CONCEAL_BLUR, 10000.0f, 0, {0, 0, 0}};
    assert_int_equal(px_image_conceal(&img, &m, &huge, &err), PX_OK);
    huge.mode = PX_CONCEAL_PIXELATE;
    assert_int_equal(px_image_conceal(&img, &m, &huge, &err), PX_OK);
    px_mask away = box_mask(500, 500, 10, 10, 255); /* fully outside: nothing happens */
    assert_int_equal(px_image_conceal(&img, &away, &how, &err), PX_OK);
    free(away.alpha);
    free(m.alpha);
    px_image_free(&img);
    px_image_free(&orig);
}

static void test_pixelate_cells(void **state)
{
    (void)state;
    px_image img;
    make_noise_image(&img, 200, 120, 3);
    /* add a horizontal ramp so neighbouring cell means always differ */
    for (int y = 0; y < 120; y++)
        for (int x = 0; x < 200; x++)
            img.px[(size_t)y * img.stride + (size_t)x * 3] =
                (uint8_t)(x + (img.px[(size_t)y * img.stride + (size_t)x * 3] & 15));
    px_mask m = box_mask(13, 17, 100, 60, 255);
    px_conceal how = {PX_CONCEAL_PIXELATE, 10.0f, 0, {0, 0, 0}};
    px_err err;
    assert_int_equal(px_image_conceal(&img, &m, &how, &err), PX_OK);
    for (int y = 17; y < 77; y++) {
        int runs = 1;
        for (int x = 14; x < 113; x++)
            if (memcmp(pix(&img, x, y), pix(&img, x - 1, y), 3) != 0)
                runs++;
        assert_int_equal(runs, 10);
        /* cells are aligned to the mask: columns 13..22 are one cell */
        assert_int_equal(memcmp(pix(&img, 13, y), pix(&img, 22, y), 3), 0);
        assert_int_not_equal(memcmp(pix(&img, 22, y), pix(&img, 23, y), 3), 0);
    }
    free(m.alpha);
    px_image_free(&img);
}

static void test_noise_deterministic_uncorrelated(void **state)
{
    (void)state;
    px_image img, a, b, c;
    make_test_image(&img, 128, 128, 3);
    px_image_copy(&img, &a);
    px_image_copy(&img, &b);
    px_image_copy(&img, &c);
    px_mask m = box_mask(16, 16, 96, 96, 255);
    px_conceal how = {PX_CONCEAL_NOISE, 0, 1234, {0, 0, 0}};
    px_err err;
    assert_int_equal(px_image_conceal(&a, &m, &how, &err), PX_OK);
    assert_int_equal(px_image_conceal(&b, &m, &how, &err), PX_OK);
    how.seed = 1235;
    assert_int_equal(px_image_conceal(&c, &m, &how, &err), PX_OK);
    assert_true(images_equal(&a, &b));
    assert_false(images_equal(&a, &c));
    /* Pearson correlation between original and noised values over the mask */
    double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
    long n = 0;
    for (int y = 16; y < 112; y++)
        for (int x = 16; x < 112; x++)
            for (int k = 0; k < 3; k++) {
                double u = pix(&img, x, y)[k], v = pix(&a, x, y)[k];
                sx += u, sy += v, sxx += u * u, syy += v * v, sxy += u * v;
                n++;
            }
    double cov = sxy / n - (sx / n) * (sy / n);
    double r = cov / sqrt((sxx / n - (sx / n) * (sx / n)) * (syy / n - (sy / n) * (sy / n)));
    assert_true(fabs(r) < 0.05);
    assert_true(fabs(sy / n - 127.5) < 3.0); /* uniform over 0..255 */
    free(m.alpha);
    px_image_free(&img);
    px_image_free(&a);
    px_image_free(&b);
    px_image_free(&c);
}

/* Noise with a grain (strength) is flat over cells aligned to the mask's
 * origin, like pixelate's, and the cells differ from each other. */
static void test_noise_grain_cells(void **state)
{
    (void)state;
    px_image img;
    make_test_image(&img, 64, 64, 3);
    px_mask m = box_mask(-3, 5, 50, 40, 255); /* hangs over the left edge */
    px_conceal how = {PX_CONCEAL_NOISE, 6.0f, 99, {0, 0, 0}};
    px_err err;
    assert_int_equal(px_image_conceal(&img, &m, &how, &err), PX_OK);
    int differ = 0;
    for (int y = 5; y < 45; y++)
        for (int x = 0; x < 47; x++) {
            const int cx = (x + 3) / 6, cy = (y - 5) / 6;
            const int x0 = cx * 6 - 3 < 0 ? 0 : cx * 6 - 3, y0 = cy * 6 + 5;
            /* same value as the cell's first pixel inside the image */
            assert_int_equal(memcmp(pix(&img, x, y), pix(&img, x0, y0), 3), 0);
            if (x + 1 < 47 && (x + 4) % 6 == 0)
                differ += memcmp(pix(&img, x, y), pix(&img, x + 1, y), 3) != 0;
        }
    assert_true(differ > 200); /* neighbouring cells are distinct draws */
    /* a grain that is no number, or below 1: per pixel */
    px_image per;
    make_test_image(&per, 32, 32, 3);
    px_mask all = box_mask(0, 0, 32, 32, 255);
    how.strength = NAN;
    assert_int_equal(px_image_conceal(&per, &all, &how, &err), PX_OK);
    int same = 0;
    for (int x = 0; x + 1 < 32; x++)
        same += memcmp(pix(&per, x, 7), pix(&per, x + 1, 7), 3) == 0;
    assert_true(same < 3);
    free(m.alpha);
    free(all.alpha);
    px_image_free(&img);
    px_image_free(&per);
}

static double laplacian_var(const px_image *img, int x0, int y0, int x1, int y1)
{
    double s = 0, ss = 0;
    long n = 0;
    for (int y = y0 + 1; y < y1 - 1; y++)
        for (int x = x0 + 1; x < x1 - 1; x++) {
            double l = 4.0 * pix(img, x, y)[1] - pix(img, x - 1, y)[1] - pix(img, x + 1, y)[1] -
                       pix(img, x, y - 1)[1] - pix(img, x, y + 1)[1];
            s += l, ss += l * l, n++;
        }
    return ss / n - (s / n) * (s / n);
}

static void test_blur_removes_high_frequencies(void **state)
{
    (void)state;
    const float sigmas[] = {2.0f, 6.0f, 20.0f}; /* small, block-averaged, decimated paths */
    for (int i = 0; i < 3; i++) {
        px_image img, orig;
        make_noise_image(&img, 300, 300, 3);
        px_image_copy(&img, &orig);
        px_mask m = box_mask(60, 60, 180, 180, 255);
        px_conceal how = {PX_CONCEAL_BLUR, sigmas[i], 0, {0, 0, 0}};
        px_err err;
        double t0 = px_now_ms();
        assert_int_equal(px_image_conceal(&img, &m, &how, &err), PX_OK);
        double dt = px_now_ms() - t0;
        double before = laplacian_var(&orig, 60, 60, 240, 240);
        double after = laplacian_var(&img, 60, 60, 240, 240);
        print_message("blur sigma %.0f: Laplacian variance %.0f -> %.2f, %.1f ms\n",
                      (double)sigmas[i], before, after, dt);
        assert_true(after * 50.0 < before);
        /* and the mean brightness is kept (it is a blur, not a fill) */
        double mo = 0, mb = 0;
        for (int y = 60; y < 240; y++)
            for (int x = 60; x < 240; x++)
                mo += pix(&orig, x, y)[0], mb += pix(&img, x, y)[0];
        assert_true(fabs(mo - mb) / (180.0 * 180.0) < 3.0);
        free(m.alpha);
        px_image_free(&img);
        px_image_free(&orig);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff_and_names),
        cmocka_unit_test(test_roundtrip_lossless),
        cmocka_unit_test(test_roundtrip_lossy),
        cmocka_unit_test(test_rgba_to_jpeg_on_white),
        cmocka_unit_test(test_jpeg_orientation_all8),
        cmocka_unit_test(test_apply_orientation_exact),
        cmocka_unit_test(test_png_and_webp_orientation),
        cmocka_unit_test(test_png_variants_expand_to_8bit),
        cmocka_unit_test(test_jpeg_gray_and_cmyk),
        cmocka_unit_test(test_corrupt_exif_is_upright),
        cmocka_unit_test(test_metadata_stripped),
        cmocka_unit_test(test_huge_headers_rejected_fast),
        cmocka_unit_test(test_png_chunk_limits),
        cmocka_unit_test(test_truncated_photos_are_corrupt),
        cmocka_unit_test(test_truncated_png_webp_are_corrupt),
        cmocka_unit_test(test_garbage_and_empty),
        cmocka_unit_test(test_real_photos_decode_to_reference_size),
        cmocka_unit_test(test_tensor_identity_and_layout),
        cmocka_unit_test(test_tensor_pad_and_offset),
        cmocka_unit_test(test_tensor_scaled_tile_past_edge),
        cmocka_unit_test(test_tensor_rgba_matches_rgb),
        cmocka_unit_test(test_resample_matches_tensor),
        cmocka_unit_test(test_tensor_area_average_keeps_small_detail),
        cmocka_unit_test(test_tensor_speed),
        cmocka_unit_test(test_conceal_modes_stay_in_mask),
        cmocka_unit_test(test_conceal_alpha_blend_and_args),
        cmocka_unit_test(test_pixelate_cells),
        cmocka_unit_test(test_noise_deterministic_uncorrelated),
        cmocka_unit_test(test_noise_grain_cells),
        cmocka_unit_test(test_blur_removes_high_frequencies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
