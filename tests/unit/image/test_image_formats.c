/*
 * Unit tests of the read-only formats of px_image: TIFF (libtiff), GIF
 * (giflib) and HEIF/AVIF (libheif). Every input is made here with the
 * format's own library (no binary lives in the repository):
 *  - TIFF: RGB with each Orientation 1..8 (upright result checked pixel by
 *    pixel against px_image_apply_orientation of the stored pixels), RGBA,
 *    16-bit grey, a second page that must be ignored, truncated files;
 *  - GIF: two frames (only the first is read), a transparent index (RGBA
 *    out), an interlaced frame smaller than the screen, truncated files;
 *  - HEIC and AVIF, encoded by libheif where Debian's libheif has the
 *    encoder (x265, aom): size and colours within a lossy tolerance,
 *    truncated and damaged files refused cleanly;
 *  - sniffing, names, which formats are writable, and that anonymize's
 *    choice of output format (px_anon) never picks a read-only one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <gif_lib.h>
#include <libheif/heif.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tiffio.h>
#include <unistd.h>

#include "image/px_image.h"

/* x265 (libheif's HEVC encoder, used here to make HEIC inputs) keeps one
 * 1168-byte block for the life of the process: not ours, so LeakSanitizer is
 * told to ignore it (this hook is read only by sanitizer builds). */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libx265.so\n";
}

/* A w x h RGB pattern where every pixel differs from its neighbours. */
static uint8_t pattern(int x, int y, int c)
{
    return (uint8_t)(x * 7 + y * 13 + c * 85 + ((x ^ y) & 3) * 20);
}

static char *read_all(const char *path, size_t *n)
{
    uint8_t *d = NULL;
    px_err e;
    if (px_read_file(path, 1u << 26, &d, n, &e) != PX_OK)
        fail_msg("%s", e.msg);
    return (char *)d;
}

/* ---- TIFF ---- */

/* Writes a TIFF (to a temporary file, read back into memory): one page of
 * w x h, spp samples (3 RGB, 4 RGBA, 1 grey) of `bits`, the Orientation tag,
 * LZW; a second page of a different size if two_pages. */
static uint8_t *make_tiff(int w, int h, int spp, int bits, int orient, int two_pages, size_t *n)
{
    char path[] = "/tmp/px_tiff_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    TIFF *t = TIFFOpen(path, "w");
    assert_non_null(t);
    for (int page = 0; page < (two_pages ? 2 : 1); page++) {
        const int pw = page ? w / 2 : w, ph = page ? h / 2 : h;
        TIFFSetField(t, TIFFTAG_IMAGEWIDTH, pw);
        TIFFSetField(t, TIFFTAG_IMAGELENGTH, ph);
        TIFFSetField(t, TIFFTAG_SAMPLESPERPIXEL, spp);
        TIFFSetField(t, TIFFTAG_BITSPERSAMPLE, bits);
        TIFFSetField(t, TIFFTAG_PHOTOMETRIC, spp >= 3 ? PHOTOMETRIC_RGB : PHOTOMETRIC_MINISBLACK);
        TIFFSetField(t, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG);
        TIFFSetField(t, TIFFTAG_COMPRESSION, COMPRESSION_LZW);
        TIFFSetField(t, TIFFTAG_ORIENTATION, orient);
        TIFFSetField(t, TIFFTAG_ROWSPERSTRIP, 8);
        if (spp == 4) {
            const uint16_t extra[1] = {EXTRASAMPLE_UNASSALPHA};
            TIFFSetField(t, TIFFTAG_EXTRASAMPLES, 1, extra);
        }
        if (two_pages)
            TIFFSetField(t, TIFFTAG_SUBFILETYPE, page ? FILETYPE_PAGE : 0);
        const size_t rowb = (size_t)pw * (size_t)spp * (size_t)(bits / 8);
        uint8_t *row = malloc(rowb);
        assert_non_null(row);
        for (int y = 0; y < ph; y++) {
            for (int x = 0; x < pw; x++)
                for (int c = 0; c < spp; c++) {
                    const uint8_t v = c == 3 ? (uint8_t)(x < pw / 2 ? 0 : 255)
                                             : page ? 0 : pattern(x, y, c);
                    if (bits == 16) { /* native order: libtiff swaps if it must */
                        const uint16_t v16 = (uint16_t)(v * 257);
                        memcpy(row + ((size_t)x * spp + c) * 2, &v16, 2);
                    } else {
                        row[(size_t)x * spp + c] = v;
                    }
                }
            assert_int_equal(TIFFWriteScanline(t, row, (uint32_t)y, 0), 1);
        }
        free(row);
        if (two_pages)
            assert_int_equal(TIFFWriteDirectory(t), 1);
    }
    TIFFClose(t);
    char *d = read_all(path, n);
    unlink(path);
    return (uint8_t *)d;
}

static void test_tiff_orientations(void **state)
{
    (void)state;
    const int w = 23, h = 17;
    px_image stored;
    assert_int_equal(px_image_alloc(&stored, w, h, 3), PX_OK);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                stored.px[(size_t)y * stored.stride + (size_t)x * 3 + c] = pattern(x, y, c);
    for (int o = 1; o <= 8; o++) {
        size_t n = 0;
        uint8_t *d = make_tiff(w, h, 3, 8, o, 0, &n);
        assert_int_equal(px_image_sniff(d, n), PX_FMT_TIFF);
        px_image got, want;
        px_decode_info info;
        px_err err;
        if (px_image_decode(d, n, NULL, &got, &info, &err) != PX_OK)
            fail_msg("orientation %d: %s", o, err.msg);
        assert_int_equal(info.format, PX_FMT_TIFF);
        assert_int_equal(info.orientation, o);
        assert_int_equal(info.stored_w, w);
        assert_int_equal(info.stored_h, h);
        assert_int_equal(px_image_copy(&stored, &want), PX_OK);
        assert_int_equal(px_image_apply_orientation(&want, o), PX_OK);
        assert_int_equal(got.w, want.w);
        assert_int_equal(got.h, want.h);
        assert_int_equal(got.channels, 3);
        for (int y = 0; y < got.h; y++)
            if (memcmp(got.px + (size_t)y * got.stride, want.px + (size_t)y * want.stride,
                       (size_t)got.w * 3) != 0)
                fail_msg("orientation %d: row %d differs", o, y);
        px_image_free(&got);
        px_image_free(&want);
        free(d);
    }
    px_image_free(&stored);
}

static void test_tiff_alpha_grey16_pages_truncated(void **state)
{
    (void)state;
    size_t n = 0;
    px_image img;
    px_err err;
    /* RGBA: left half clear, right half opaque */
    uint8_t *d = make_tiff(20, 10, 4, 8, 1, 0, &n);
    assert_int_equal(px_image_decode(d, n, NULL, &img, NULL, &err), PX_OK);
    assert_int_equal(img.channels, 4);
    assert_int_equal(img.px[3], 0);
    assert_int_equal(img.px[(size_t)19 * 4 + 3], 255);
    assert_int_equal(img.px[(size_t)19 * 4 + 0], pattern(19, 0, 0));
    px_image_free(&img);
    free(d);
    /* 16-bit grey: scaled to 8 bits, grey becomes R = G = B */
    d = make_tiff(12, 9, 1, 16, 1, 0, &n);
    assert_int_equal(px_image_decode(d, n, NULL, &img, NULL, &err), PX_OK);
    assert_int_equal(img.channels, 3);
    const uint8_t *p = img.px + (size_t)5 * img.stride + (size_t)7 * 3;
    assert_int_equal(p[0], pattern(7, 5, 0));
    assert_int_equal(p[1], p[0]);
    px_image_free(&img);
    free(d);
    /* two pages: the first is read (the second is half the size and black) */
    d = make_tiff(16, 12, 3, 8, 1, 1, &n);
    assert_int_equal(px_image_decode(d, n, NULL, &img, NULL, &err), PX_OK);
    assert_int_equal(img.w, 16);
    assert_int_equal(img.px[(size_t)3 * img.stride + 3 * 3 + 1], pattern(3, 3, 1));
    px_image_free(&img);
    free(d);
    /* cut short anywhere (libtiff writes the directory last): an error with a
     * message, never a crash */
    d = make_tiff(16, 12, 3, 8, 1, 0, &n);
    const size_t cuts[] = {4, 8, 40, n / 3, n / 2, n - 8};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        int st = px_image_decode(d, cuts[k], NULL, &img, NULL, &err);
        if (st == PX_OK)
            fail_msg("TIFF cut at %zu/%zu decoded", cuts[k], n);
        assert_true(st == PX_ECORRUPT || st == PX_EUNSUPPORTED);
        assert_null(img.px);
        assert_true(strlen(err.msg) > 0);
    }
    free(d);
    /* the pixel cap applies from the tags */
    d = make_tiff(100, 100, 3, 8, 1, 0, &n);
    px_decode_opts o = px_decode_opts_default();
    o.max_pixels = 9999;
    assert_int_equal(px_image_decode(d, n, &o, &img, NULL, &err), PX_ELIMIT);
    free(d);
}

/* ---- GIF ---- */

static int gif_out(GifFileType *g, const GifByteType *b, int n)
{
    px_buf *buf = g->UserData;
    return px_buf_append(buf, b, (size_t)n) == PX_OK ? n : 0;
}

/* A GIF with a 4-colour palette on a sw x sh screen: frame 1 at (fx, fy),
 * fw x fh, index (x + y) % 4, index 3 transparent if transparent; frame 2
 * covers the screen with index 1 (must not show). */
static void make_gif(px_buf *out, int sw, int sh, int fx, int fy, int fw, int fh, int interlace,
                     int transparent)
{
    int e = 0;
    GifFileType *g = EGifOpen(out, gif_out, &e);
    assert_non_null(g);
    const GifColorType cols[4] = {{200, 10, 10}, {10, 200, 10}, {10, 10, 200}, {90, 90, 90}};
    ColorMapObject *map = GifMakeMapObject(4, cols);
    assert_non_null(map);
    EGifSetGifVersion(g, true);
    assert_int_equal(EGifPutScreenDesc(g, sw, sh, 2, 2, map), GIF_OK);
    for (int f = 0; f < 2; f++) {
        GraphicsControlBlock gcb = {DISPOSAL_UNSPECIFIED, false, 10,
                                    transparent && f == 0 ? 3 : NO_TRANSPARENT_COLOR};
        GifByteType ext[4];
        EGifGCBToExtension(&gcb, ext);
        assert_int_equal(EGifPutExtension(g, GRAPHICS_EXT_FUNC_CODE, 4, ext), GIF_OK);
        const int x0 = f ? 0 : fx, y0 = f ? 0 : fy, w = f ? sw : fw, h = f ? sh : fh;
        const int il = f ? 0 : interlace;
        assert_int_equal(EGifPutImageDesc(g, x0, y0, w, h, il, NULL), GIF_OK);
        GifPixelType *line = malloc((size_t)w);
        static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
        for (int p = 0; p < (il ? 4 : 1); p++)
            for (int y = il ? start[p] : 0; y < h; y += il ? step[p] : 1) {
                for (int x = 0; x < w; x++)
                    line[x] = (GifPixelType)(f ? 1 : (x + y) % 4);
                assert_int_equal(EGifPutLine(g, line, w), GIF_OK);
            }
        free(line);
    }
    assert_int_equal(EGifCloseFile(g, &e), GIF_OK);
    GifFreeMapObject(map);
}

static void check_gif_frame(const px_image *img, int fx, int fy, int fw, int fh, int transparent)
{
    const uint8_t cols[4][3] = {{200, 10, 10}, {10, 200, 10}, {10, 10, 200}, {90, 90, 90}};
    for (int y = 0; y < img->h; y++)
        for (int x = 0; x < img->w; x++) {
            const uint8_t *p = img->px + (size_t)y * img->stride + (size_t)x * img->channels;
            const int in = x >= fx && x < fx + fw && y >= fy && y < fy + fh;
            const int i = in ? (x - fx + y - fy) % 4 : 2; /* background index 2 */
            if (transparent && (!in || i == 3)) {
                assert_int_equal(p[3], 0);
                continue;
            }
            if (memcmp(p, cols[i], 3) != 0)
                fail_msg("GIF pixel (%d,%d): %d,%d,%d, want index %d", x, y, p[0], p[1], p[2], i);
            if (img->channels == 4)
                assert_int_equal(p[3], 255);
        }
}

static void test_gif_first_frame(void **state)
{
    (void)state;
    px_image img;
    px_decode_info info;
    px_err err;
    /* full-screen first frame, no transparency: RGB */
    px_buf b = {0};
    make_gif(&b, 21, 13, 0, 0, 21, 13, 0, 0);
    assert_int_equal(px_image_sniff(b.data, b.len), PX_FMT_GIF);
    assert_int_equal(px_image_decode(b.data, b.len, NULL, &img, &info, &err), PX_OK);
    assert_int_equal(info.format, PX_FMT_GIF);
    assert_int_equal(info.orientation, 1);
    assert_int_equal(img.channels, 3);
    check_gif_frame(&img, 0, 0, 21, 13, 0);
    px_image_free(&img);
    px_buf_free(&b);
    /* interlaced, smaller than the screen, transparent index: RGBA */
    make_gif(&b, 30, 25, 4, 3, 19, 17, 1, 1);
    assert_int_equal(px_image_decode(b.data, b.len, NULL, &img, &info, &err), PX_OK);
    assert_int_equal(img.w, 30);
    assert_int_equal(img.h, 25);
    assert_int_equal(img.channels, 4);
    check_gif_frame(&img, 4, 3, 19, 17, 1);
    px_image_free(&img);
    /* truncated: refused with a message (the second frame is 20% of the file,
     * so only cuts inside the first count) */
    const size_t cuts[] = {3, 10, 20, 40, b.len / 3};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        int st = px_image_decode(b.data, cuts[k], NULL, &img, NULL, &err);
        if (st != PX_ECORRUPT && st != PX_EUNSUPPORTED)
            fail_msg("GIF cut at %zu/%zu: status %d", cuts[k], b.len, st);
        assert_null(img.px);
    }
    /* the screen size is checked against the cap before decoding */
    px_decode_opts o = px_decode_opts_default();
    o.max_pixels = 30 * 25 - 1;
    assert_int_equal(px_image_decode(b.data, b.len, &o, &img, NULL, &err), PX_ELIMIT);
    px_buf_free(&b);
}

/* ---- HEIF / AVIF ---- */

static struct heif_error heif_out(struct heif_context *ctx, const void *data, size_t size,
                                  void *user)
{
    (void)ctx;
    struct heif_error ok = {heif_error_Ok, heif_suberror_Unspecified, "ok"};
    struct heif_error bad = {heif_error_Encoding_error, heif_suberror_Unspecified, "oom"};
    return px_buf_append(user, data, size) == PX_OK ? ok : bad;
}

/* Encodes a w x h image of four flat quadrants (red, green, blue, grey). 0
 * when this libheif has no encoder for the format. */
static int make_heif(enum heif_compression_format fmt, int w, int h, px_buf *out)
{
    if (!heif_have_encoder_for_format(fmt))
        return 0;
    struct heif_context *ctx = heif_context_alloc();
    struct heif_image *img = NULL;
    assert_int_equal(heif_image_create(w, h, heif_colorspace_RGB, heif_chroma_interleaved_RGB,
                                       &img).code,
                     heif_error_Ok);
    assert_int_equal(heif_image_add_plane(img, heif_channel_interleaved, w, h, 8).code,
                     heif_error_Ok);
    int stride = 0;
    uint8_t *p = heif_image_get_plane(img, heif_channel_interleaved, &stride);
    static const uint8_t q[4][3] = {{220, 30, 30}, {30, 220, 30}, {30, 30, 220}, {128, 128, 128}};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            memcpy(p + (size_t)y * stride + (size_t)x * 3, q[(y >= h / 2) * 2 + (x >= w / 2)], 3);
    struct heif_encoder *enc = NULL;
    assert_int_equal(heif_context_get_encoder_for_format(ctx, fmt, &enc).code, heif_error_Ok);
    heif_encoder_set_lossy_quality(enc, 90);
    struct heif_error e = heif_context_encode_image(ctx, img, enc, NULL, NULL);
    if (e.code != heif_error_Ok)
        fail_msg("libheif encode: %s", e.message);
    struct heif_writer wr = {1, heif_out};
    assert_int_equal(heif_context_write(ctx, &wr, out).code, heif_error_Ok);
    heif_encoder_release(enc);
    heif_image_release(img);
    heif_context_free(ctx);
    return 1;
}

static void check_heif(const char *what, px_format want, enum heif_compression_format fmt)
{
    px_buf b = {0};
    const int w = 64, h = 48;
    if (!make_heif(fmt, w, h, &b)) {
        print_message("%s: this libheif has no encoder; decode not tested with a real file\n",
                      what);
        return;
    }
    assert_int_equal(px_image_sniff(b.data, b.len), want);
    px_image img;
    px_decode_info info;
    px_err err;
    if (px_image_decode(b.data, b.len, NULL, &img, &info, &err) != PX_OK)
        fail_msg("%s: %s", what, err.msg);
    assert_int_equal(info.format, want);
    assert_int_equal(img.w, w);
    assert_int_equal(img.h, h);
    assert_int_equal(img.channels, 3);
    /* lossy (and 4:2:0): the centre of each quadrant within 24 of its colour */
    static const uint8_t q[4][3] = {{220, 30, 30}, {30, 220, 30}, {30, 30, 220}, {128, 128, 128}};
    int worst = 0;
    for (int k = 0; k < 4; k++) {
        const int x = (k & 1) ? 3 * w / 4 : w / 4, y = (k & 2) ? 3 * h / 4 : h / 4;
        const uint8_t *p = img.px + (size_t)y * img.stride + (size_t)x * 3;
        for (int c = 0; c < 3; c++) {
            const int d = abs((int)p[c] - (int)q[k][c]);
            worst = d > worst ? d : worst;
        }
    }
    print_message("%s: %zu bytes, worst channel error %d at quadrant centres\n", what, b.len,
                  worst);
    assert_true(worst <= 24);
    px_image_free(&img);
    /* cut short or damaged: an error with a message, never a crash */
    const size_t cuts[] = {12, 40, b.len / 2, b.len - 10};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        const int st = px_image_decode(b.data, cuts[k], NULL, &img, NULL, &err);
        if (st == PX_OK)
            fail_msg("%s cut at %zu/%zu decoded", what, cuts[k], b.len);
        assert_null(img.px);
        assert_true(strlen(err.msg) > 0);
    }
    /* the cap applies from the container's size, before decoding */
    px_decode_opts o = px_decode_opts_default();
    o.max_pixels = (uint64_t)w * h - 1;
    assert_int_equal(px_image_decode(b.data, b.len, &o, &img, NULL, &err), PX_ELIMIT);
    px_buf_free(&b);
}

static void test_heic(void **state)
{
    (void)state;
    check_heif("HEIC", PX_FMT_HEIF, heif_compression_HEVC);
}

static void test_avif(void **state)
{
    (void)state;
    check_heif("AVIF", PX_FMT_AVIF, heif_compression_AV1);
}

/* A HEIF header with nothing valid after it: an error naming the format. */
static void test_heif_garbage(void **state)
{
    (void)state;
    uint8_t d[64] = {0, 0, 0, 24, 'f', 't', 'y', 'p', 'h', 'e', 'i', 'c'};
    for (size_t i = 12; i < sizeof d; i++)
        d[i] = (uint8_t)(i * 37);
    px_image img;
    px_err err;
    assert_int_equal(px_image_sniff(d, sizeof d), PX_FMT_HEIF);
    const int st = px_image_decode(d, sizeof d, NULL, &img, NULL, &err);
    assert_true(st == PX_ECORRUPT || st == PX_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "HEIF"));
    memcpy(d + 8, "avif", 4);
    assert_int_equal(px_image_sniff(d, sizeof d), PX_FMT_AVIF);
    assert_true(px_image_decode(d, sizeof d, NULL, &img, NULL, &err) != PX_OK);
    assert_non_null(strstr(err.msg, "AVIF"));
}

static void test_format_names(void **state)
{
    (void)state;
    const px_format ro[4] = {PX_FMT_TIFF, PX_FMT_GIF, PX_FMT_HEIF, PX_FMT_AVIF};
    const char *names[4] = {"tiff", "gif", "heif", "avif"};
    for (int i = 0; i < 4; i++) {
        assert_false(px_format_writable(ro[i]));
        assert_string_equal(px_format_name(ro[i]), names[i]);
        px_buf b = {0};
        px_image img;
        assert_int_equal(px_image_alloc(&img, 4, 4, 3), PX_OK);
        px_err err;
        assert_int_equal(px_image_encode(&img, ro[i], 90, &b, &err), PX_EUNSUPPORTED);
        px_image_free(&img);
    }
    assert_true(px_format_writable(PX_FMT_JPEG) && px_format_writable(PX_FMT_PNG) &&
                px_format_writable(PX_FMT_WEBP));
    /* outputs are named only by the formats we write; inputs by all */
    assert_int_equal(px_format_from_path("a/b.TIFF"), PX_FMT_UNKNOWN);
    assert_int_equal(px_format_from_path_any("a/b.TIFF"), PX_FMT_TIFF);
    assert_int_equal(px_format_from_path_any("x.tif"), PX_FMT_TIFF);
    assert_int_equal(px_format_from_path_any("x.gif"), PX_FMT_GIF);
    assert_int_equal(px_format_from_path_any("IMG_0001.HEIC"), PX_FMT_HEIF);
    assert_int_equal(px_format_from_path_any("x.heif"), PX_FMT_HEIF);
    assert_int_equal(px_format_from_path_any("x.avif"), PX_FMT_AVIF);
    assert_int_equal(px_format_from_path_any("x.jpg"), PX_FMT_JPEG);
    assert_int_equal(px_format_from_path_any("x.gif/y"), PX_FMT_UNKNOWN);
    assert_int_equal(px_image_sniff((const uint8_t *)"MM\0*", 4), PX_FMT_TIFF);
    assert_int_equal(px_image_sniff((const uint8_t *)"GIF87a", 6), PX_FMT_GIF);
    assert_int_equal(px_image_sniff((const uint8_t *)"GIF88a", 6), PX_FMT_UNKNOWN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiff_orientations),
        cmocka_unit_test(test_tiff_alpha_grey16_pages_truncated),
        cmocka_unit_test(test_gif_first_frame),
        cmocka_unit_test(test_heic),
        cmocka_unit_test(test_avif),
        cmocka_unit_test(test_heif_garbage),
        cmocka_unit_test(test_format_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
