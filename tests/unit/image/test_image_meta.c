/*
 * Unit tests of px_image_encode_meta and px_image_meta_read: the two texts of
 * a generated image survive a round trip in PNG (RGB and RGBA), JPEG and WebP
 * (non-ASCII, a character outside the BMP, XML specials), the pixels survive
 * (exactly for PNG, within a stated mean error for the lossy formats), other
 * readers find the texts where AUTOMATIC1111 and XMP tools look (libexif for
 * UserComment, libwebp's demuxer for the chunks), and truncated or foreign
 * input is an error, never a crash (ASan watches).
 */
/* cmocka.h needs these three first */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libexif/exif-data.h>
#include <webp/demux.h>

#include "image/px_image.h"

static const char *k_params = "caf\xc3\xa9 on a rainy day \xf0\x9f\x98\x80\nNegative prompt: text, "
                              "<logo> & watermark\nSteps: 30, Sampler: Euler a, Seed: 42, "
                              "Size: 64x48";
static const char *k_json = "{\"id\":7,\"prompt\":\"a <b> & c\",\"note\":\"\\u00e9\"}";

/* A textured test image (smooth structure plus a checker), channels 3 or 4. */
static px_image make_img(int w, int h, int channels)
{
    px_image im;
    assert_int_equal(px_image_alloc(&im, w, h, channels), PX_OK);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = im.px + (size_t)y * im.stride + (size_t)x * channels;
            p[0] = (uint8_t)(60 + x * 2);
            p[1] = (uint8_t)(40 + y * 3);
            p[2] = (uint8_t)((((x / 4) ^ (y / 4)) & 1) * 80 + 60);
            if (channels == 4)
                p[3] = (uint8_t)(128 + x);
        }
    return im;
}

static char *read_key(const px_buf *b, px_image_meta_key key)
{
    char *v = NULL;
    px_err e;
    int st = px_image_meta_read(b->data, b->len, key, &v, &e);
    if (st != PX_OK)
        fail_msg("meta_read: %s", e.msg);
    return v;
}

static void assert_texts(const px_buf *b)
{
    char *v = read_key(b, PX_META_PARAMETERS);
    assert_string_equal(v, k_params);
    free(v);
    v = read_key(b, PX_META_JSON);
    assert_string_equal(v, k_json);
    free(v);
}

/* Every truncation is an error or a value, never a crash. */
static void truncations(const px_buf *b)
{
    for (size_t cut = 0; cut < b->len; cut += 1 + cut / 8) {
        char *v;
        if (px_image_meta_read(b->data, cut, PX_META_PARAMETERS, &v, NULL) == PX_OK)
            free(v);
        if (px_image_meta_read(b->data, cut, PX_META_JSON, &v, NULL) == PX_OK)
            free(v);
    }
}

static void test_png_roundtrip(void **state)
{
    (void)state;
    for (int ch = 3; ch <= 4; ch++) {
        px_image im = make_img(40, 30, ch), back;
        px_buf b = {0};
        px_err e;
        px_image_meta meta = {.parameters = k_params, .json = k_json};
        assert_int_equal(px_image_encode_meta(&im, PX_FMT_PNG, 0, &meta, &b, &e), PX_OK);
        assert_texts(&b);
        assert_int_equal(px_image_decode(b.data, b.len, NULL, &back, NULL, &e), PX_OK);
        assert_int_equal(back.w, 40);
        assert_int_equal(back.channels, ch);
        for (int y = 0; y < 30; y++)
            assert_memory_equal(back.px + (size_t)y * back.stride, im.px + (size_t)y * im.stride,
                                (size_t)40 * ch);
        truncations(&b);
        px_image_free(&back);
        px_buf_free(&b);
        px_image_free(&im);
    }
}

/* What follows sig in the APP1 segment that starts with it, from a JPEG stream. */
static const uint8_t *jpeg_app1(const px_buf *b, const char *sig, size_t siglen, size_t *n)
{
    for (size_t pos = 2; pos + 4 <= b->len && b->data[pos] == 0xFF;) {
        size_t sl = (size_t)b->data[pos + 2] << 8 | b->data[pos + 3];
        if (b->data[pos + 1] == 0xDA)
            break;
        if (b->data[pos + 1] == 0xE1 && sl - 2 >= siglen &&
            !memcmp(b->data + pos + 4, sig, siglen)) {
            *n = sl - 2 - siglen;
            return b->data + pos + 4 + siglen;
        }
        pos += 2 + sl;
    }
    return NULL;
}

/* libexif finds UserComment with the UNICODE prefix and UTF-16BE "caf\u00e9". */
static void check_exif_with_libexif(const uint8_t *exif, size_t n)
{
    uint8_t *pre = malloc(n + 6); /* libexif wants the "Exif\0\0" prefix */
    assert_non_null(pre);
    memcpy(pre, "Exif\0\0", 6);
    memcpy(pre + 6, exif, n);
    ExifData *ed = exif_data_new_from_data(pre, (unsigned)n + 6);
    free(pre);
    assert_non_null(ed);
    ExifEntry *uc = exif_content_get_entry(ed->ifd[EXIF_IFD_EXIF], EXIF_TAG_USER_COMMENT);
    assert_non_null(uc);
    assert_true(uc->size >= 16);
    assert_memory_equal(uc->data, "UNICODE\0\0c\0a\0f\0\xe9", 16);
    exif_data_unref(ed);
}

static void check_xmp(const uint8_t *xmp, size_t n)
{
    char *x = strndup((const char *)xmp, n);
    assert_non_null(x);
    assert_non_null(strstr(x, "xmlns:pixpipe=\"urn:pixpipe:meta:1\""));
    assert_non_null(strstr(x, "a &lt;b&gt; &amp; c"));
    free(x);
}

static void check_where_others_look(const px_buf *b, px_format f)
{
    const uint8_t *exif = NULL, *xmp = NULL;
    size_t exif_n = 0, xmp_n = 0;
    if (f == PX_FMT_JPEG) {
        assert_int_equal(b->data[0], 0xFF);
        assert_int_equal(b->data[1], 0xD8);
        exif = jpeg_app1(b, "Exif\0\0", 6, &exif_n);
        xmp = jpeg_app1(b, "http://ns.adobe.com/xap/1.0/", 29, &xmp_n);
        assert_non_null(exif);
        assert_non_null(xmp);
        check_exif_with_libexif(exif, exif_n);
        check_xmp(xmp, xmp_n);
        return;
    }
    WebPData wd = {b->data, b->len};
    WebPDemuxer *dmx = WebPDemux(&wd);
    assert_non_null(dmx);
    assert_true(WebPDemuxGetI(dmx, WEBP_FF_FORMAT_FLAGS) & EXIF_FLAG);
    assert_true(WebPDemuxGetI(dmx, WEBP_FF_FORMAT_FLAGS) & XMP_FLAG);
    WebPChunkIterator ce, cx;
    assert_true(WebPDemuxGetChunk(dmx, "EXIF", 1, &ce));
    assert_true(WebPDemuxGetChunk(dmx, "XMP ", 1, &cx));
    check_exif_with_libexif(ce.chunk.bytes, ce.chunk.size);
    check_xmp(cx.chunk.bytes, cx.chunk.size);
    WebPDemuxReleaseChunkIterator(&ce);
    WebPDemuxReleaseChunkIterator(&cx);
    WebPDemuxDelete(dmx);
}

static void test_jpeg_webp_roundtrip(void **state)
{
    (void)state;
    px_image im = make_img(64, 48, 3);
    const px_format fmts[] = {PX_FMT_JPEG, PX_FMT_WEBP};
    for (size_t k = 0; k < 2; k++) {
        px_buf b = {0};
        px_err e;
        px_image_meta meta = {.parameters = k_params, .json = k_json};
        assert_int_equal(px_image_encode_meta(&im, fmts[k], 90, &meta, &b, &e), PX_OK);
        assert_texts(&b);
        px_image back;
        assert_int_equal(px_image_decode(b.data, b.len, NULL, &back, NULL, &e), PX_OK);
        assert_int_equal(back.w, 64);
        assert_int_equal(back.h, 48);
        double diff = 0;
        for (int y = 0; y < 48; y++)
            for (int x = 0; x < 64 * 3; x++)
                diff += abs((int)back.px[(size_t)y * back.stride + (size_t)x] -
                            (int)im.px[(size_t)y * im.stride + (size_t)x]);
        /* quality 90 on a smooth image with a hard checker: measured ~2-4 */
        printf("%s: %zu bytes, mean abs pixel error %.2f\n", px_format_name(fmts[k]), b.len,
               diff / (64 * 48 * 3));
        assert_true(diff / (64 * 48 * 3) < 12);
        px_image_free(&back);
        check_where_others_look(&b, fmts[k]);
        truncations(&b);
        px_buf_free(&b);
    }
    px_image_free(&im);
}

static void test_errors(void **state)
{
    (void)state;
    px_image im = make_img(16, 16, 3);
    px_buf b = {0};
    px_err e;
    char *v = (char *)1;
    /* no metadata: plain pixels, and reading finds nothing */
    assert_int_equal(px_image_encode_meta(&im, PX_FMT_JPEG, 80, NULL, &b, &e), PX_OK);
    assert_int_equal(px_image_meta_read(b.data, b.len, PX_META_PARAMETERS, &v, &e), PX_ENOTFOUND);
    assert_null(v);
    assert_non_null(strstr(e.msg, "EXIF"));
    assert_int_equal(px_image_meta_read(b.data, b.len, (px_image_meta_key)9, &v, &e), PX_EINVAL);
    px_buf_free(&b);
    assert_int_equal(px_image_meta_read((const uint8_t *)"hello there", 11, PX_META_JSON, &v, &e),
                     PX_EUNSUPPORTED);
    /* a bad quality or an unknown format is refused with out untouched */
    px_image_meta meta = {.parameters = "p", .json = "{}"};
    assert_int_equal(px_image_encode_meta(&im, PX_FMT_JPEG, 0, &meta, &b, &e), PX_EINVAL);
    assert_int_equal(px_image_encode_meta(&im, PX_FMT_UNKNOWN, 80, &meta, &b, &e), PX_EUNSUPPORTED);
    assert_int_equal(b.len, 0);
    /* a JPEG text larger than one APP1 segment */
    size_t big = 70000;
    char *huge = malloc(big + 1);
    assert_non_null(huge);
    memset(huge, 'x', big);
    huge[big] = '\0';
    meta.json = huge;
    assert_int_equal(px_image_encode_meta(&im, PX_FMT_JPEG, 80, &meta, &b, &e), PX_ELIMIT);
    assert_int_equal(b.len, 0);
    free(huge);
    px_buf_free(&b);
    px_image_free(&im);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_roundtrip),
        cmocka_unit_test(test_jpeg_webp_roundtrip),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
