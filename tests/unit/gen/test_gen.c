/*
 * Unit tests for px_gen: exact quotas, campaign validation, slugs, the
 * offline writer and its missing-vocabulary error, LLM answer parsing,
 * near-duplicate detection, image checks and perceptual hashes, PNG text
 * chunks. The manifest's tests are in tests/unit/manifest.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libexif/exif-data.h>
#include <webp/demux.h>

#include "gen/gen_internal.h"
#include "gen/px_gen.h"
#include "manifest/px_manifest.h"

static void test_apportion_exact(void **state)
{
    (void)state;
    double w[3] = {60, 20, 20};
    int out[3];
    assert_int_equal(px_gen_apportion(769, w, 3, out, NULL), PX_OK);
    assert_int_equal(out[0] + out[1] + out[2], 769);
    assert_int_equal(out[0], 461);
    assert_int_equal(out[1], 154); /* .8 and .8 beat .4 */
    assert_int_equal(out[2], 154);
    double z[2] = {0, 0};
    px_err e;
    assert_int_equal(px_gen_apportion(5, z, 2, out, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "zero"));
}

static void test_campaign_default_quotas(void **state)
{
    (void)state;
    px_gen_campaign c;
    px_err e;
    int st = px_gen_campaign_load(PX_SOURCE_DIR "/campaigns/default.json", &c, &e);
    if (st != PX_OK)
        fail_msg("%s", e.msg);
    assert_int_equal(c.nthemes, 13);
    int col[3] = {0, 0, 0}, all = 0;
    for (int i = 0; i < c.nthemes; i++) {
        int row = 0;
        for (int k = 0; k < 3; k++) {
            col[k] += c.themes[i].quota[k];
            row += c.themes[i].quota[k];
        }
        /* 10000 / 13 = 769.2: three themes get 770 */
        assert_true(row == 769 || row == 770);
        assert_int_equal(row, i < 3 ? 770 : 769);
        all += row;
    }
    assert_int_equal(all, 10000);
    assert_int_equal(col[0], 6000);
    assert_int_equal(col[1], 2000);
    assert_int_equal(col[2], 2000);
    assert_string_equal(c.themes[0].slug, "business-and-office");
    assert_string_equal(c.themes[2].name, "Trainings and Education");
    px_gen_campaign_free(&c);
}

static void test_campaign_counts_and_errors(void **state)
{
    (void)state;
    px_gen_campaign c;
    px_err e;
    const char *ok = "{\"themes\":[{\"name\":\"A\",\"count\":7},{\"name\":\"B b\",\"count\":3}],"
                     "\"types\":{\"interiors\":1,\"items\":1}}";
    assert_int_equal(px_gen_campaign_parse(ok, strlen(ok), "t.json", &c, &e), PX_OK);
    assert_int_equal(c.themes[0].quota[0] + c.themes[0].quota[2], 7);
    assert_int_equal(c.themes[0].quota[1], 0);
    assert_int_equal(c.themes[1].quota[0] + c.themes[1].quota[2], 3);
    assert_int_equal(c.themes[0].quota[0] + c.themes[1].quota[0], 5);
    assert_string_equal(c.themes[1].slug, "b-b");
    px_gen_campaign_free(&c);
    const char *fmt = "{\"total\":4,\"themes\":[\"A\"],\"defaults\":{\"format\":\"webp\","
                      "\"quality\":80}}";
    assert_int_equal(px_gen_campaign_parse(fmt, strlen(fmt), "t.json", &c, &e), PX_OK);
    assert_int_equal(c.format, PX_GEN_WEBP);
    assert_int_equal(c.quality, 80);
    px_gen_campaign_free(&c);

    struct {
        const char *json, *needle;
    } bad[] = {
        {"{\"themes\":[\"A\"]}", "total"},
        {"{\"total\":10,\"themes\":[\"A\"],\"types\":{\"kitchens\":1}}", "kitchens"},
        {"{\"total\":10,\"themes\":[\"A\",\"a\"]}", "repeats"},
        {"{\"total\":10,\"themes\":[]}", "themes"},
        {"{\"total\":-4,\"themes\":[\"A\"]}", "total"},
        {"{\"total\":10,\"themes\":[{\"name\":\"A\",\"count\":-1}]}", "count"},
        {"{\"total\":10,\"themes\":[\"A\"],\"colour\":1}", "colour"},
        {"{\"total\":10,\"themes\":[\"A\"],\"defaults\":{\"width\":9}}", "width"},
        {"{\"total\":10,\"themes\":[\"A\"],\"defaults\":{\"format\":\"tiff\"}}", "defaults.format"},
        {"{\"total\":10,\"themes\":[\"A\"],\"defaults\":{\"quality\":101}}", "quality"},
        {"{\"total\":10,", "line"},
        {"[1,2]", "object"},
        {"{\"total\":10,\"themes\":[\"!!!\"]}", "letter"},
        {"{\"total\":10,\"themes\":[{\"name\":\"A\",\"count\":4}]}", "match"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        px_err_clear(&e);
        int st = px_gen_campaign_parse(bad[i].json, strlen(bad[i].json), "bad.json", &c, &e);
        if (st == PX_OK)
            fail_msg("accepted %s", bad[i].json);
        if (!strstr(e.msg, bad[i].needle) || !strstr(e.msg, "bad.json"))
            fail_msg("message for %s: %s", bad[i].json, e.msg);
        assert_null(c.themes);
    }
}

/* Random campaigns: rows always sum to the theme totals and columns to the
 * campaign-wide largest-remainder split. */
static void test_quota_margins_random(void **state)
{
    (void)state;
    uint64_t rng = 99;
    for (int trial = 0; trial < 300; trial++) {
        px_gen_campaign c;
        memset(&c, 0, sizeof c);
        snprintf(c.name, sizeof c.name, "random");
        c.nthemes = 1 + (int)(px_gen_rand(&rng) % 20);
        c.themes = calloc((size_t)c.nthemes, sizeof *c.themes);
        c.total = (int)(px_gen_rand(&rng) % 5000);
        for (int k = 0; k < 3; k++)
            c.split[k] = (double)(px_gen_rand(&rng) % 100);
        if (c.split[0] + c.split[1] + c.split[2] == 0)
            c.split[0] = 1;
        int fixed = 0;
        for (int i = 0; i < c.nthemes; i++) {
            c.themes[i].weight = 0.1 + (double)(px_gen_rand(&rng) % 50);
            c.themes[i].count = -1;
            if (px_gen_rand(&rng) % 4 == 0 && fixed + 100 <= c.total) {
                c.themes[i].count = (int)(px_gen_rand(&rng) % 100);
                fixed += c.themes[i].count;
            }
        }
        int shares = 0;
        for (int i = 0; i < c.nthemes; i++)
            shares += c.themes[i].count < 0;
        if (!shares)
            c.total = fixed; /* every theme counted: the total must agree */
        px_err e;
        if (px_gen_campaign_quotas(&c, &e) != PX_OK)
            fail_msg("trial %d: %s", trial, e.msg);
        int col[3] = {0, 0, 0}, want[3], all = 0;
        for (int i = 0; i < c.nthemes; i++) {
            int row = 0;
            for (int k = 0; k < 3; k++) {
                assert_true(c.themes[i].quota[k] >= 0);
                row += c.themes[i].quota[k];
                col[k] += c.themes[i].quota[k];
                if (c.split[k] == 0)
                    assert_int_equal(c.themes[i].quota[k], 0);
            }
            if (c.themes[i].count >= 0)
                assert_int_equal(row, c.themes[i].count);
            all += row;
        }
        assert_int_equal(all, c.total);
        assert_int_equal(px_gen_apportion(all, c.split, 3, want, NULL), PX_OK);
        for (int k = 0; k < 3; k++)
            assert_int_equal(col[k], want[k]);
        px_gen_campaign_free(&c);
    }
}

static void test_slug_and_types(void **state)
{
    (void)state;
    char s[96];
    assert_int_equal(px_gen_slug("  Medicine & health!! 2 ", s, sizeof s, NULL), PX_OK);
    assert_string_equal(s, "medicine-health-2");
    int t;
    px_err e;
    assert_int_equal(px_gen_type_parse("Exterior", &t, NULL), PX_OK);
    assert_int_equal(t, PX_GEN_EXTERIORS);
    assert_int_equal(px_gen_type_parse("kitchens", &t, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "kitchens"));
}

static void test_offline_writer(void **state)
{
    (void)state;
    px_gen_writer *w;
    px_err e;
    assert_int_equal(px_gen_writer_offline_create(PX_SOURCE_DIR "/vocab", 7, &w, &e), PX_OK);
    char **v;
    size_t n;
    assert_int_equal(px_gen_writer_write(w, "Medicine and health", "medicine-and-health",
                                         PX_GEN_INTERIORS, 20, &v, &n, NULL, 0, &e),
                     PX_OK);
    assert_int_equal(n, 20);
    int distinct = 0;
    for (size_t i = 0; i < n; i++) {
        assert_null(strchr(v[i], '{')); /* every slot expanded */
        assert_true(strlen(v[i]) > 30);
        int seen = 0;
        for (size_t j = 0; j < i; j++)
            seen |= !strcmp(v[i], v[j]);
        distinct += !seen;
    }
    assert_true(distinct >= 18);
    px_manifest_strings_free(v, n);
    /* every shipped theme and type expands */
    px_gen_campaign c;
    assert_int_equal(px_gen_campaign_load(PX_SOURCE_DIR "/campaigns/default.json", &c, &e), PX_OK);
    for (int i = 0; i < c.nthemes; i++)
        for (int k = 0; k < 3; k++) {
            int st = px_gen_writer_write(w, c.themes[i].name, c.themes[i].slug, k, 3, &v, &n, NULL,
                                         0, &e);
            if (st != PX_OK)
                fail_msg("%s/%d: %s", c.themes[i].slug, k, e.msg);
            px_manifest_strings_free(v, n);
        }
    px_gen_campaign_free(&c);
    assert_int_equal(px_gen_writer_write(w, "Underwater basket weaving", "underwater-basket-weaving",
                                         0, 2, &v, &n, NULL, 0, &e),
                     PX_ENOTFOUND);
    assert_non_null(strstr(e.msg, "Underwater basket weaving"));
    assert_non_null(strstr(e.msg, "LLM"));
    px_gen_writer_destroy(w);
}

static const char *chat(const char *content, char *buf, size_t cap)
{
    /* wraps content (already JSON-escaped) in a chat-completion answer */
    snprintf(buf, cap, "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"%s\"}}]}",
             content);
    return buf;
}

static void test_llm_parse(void **state)
{
    (void)state;
    char b[2048];
    char **v;
    size_t n;
    px_err e;
    const char *ok = chat("{\\\"prompts\\\":[\\\"A bright meeting room with oak table\\\","
                          "\\\"short\\\",\\\"A bright meeting room with oak table\\\",42,"
                          "\\\"  A quiet library with tall shelves  \\\"]}",
                          b, sizeof b);
    assert_int_equal(px_gen_llm_parse(ok, strlen(ok), &v, &n, &e), PX_OK);
    assert_int_equal(n, 2); /* "short", the repeat and the number are dropped */
    assert_string_equal(v[1], "A quiet library with tall shelves");
    px_manifest_strings_free(v, n);
    const char *fenced = chat("Here:\\n```json\\n[\\\"A sunny lobby with plants\\\"]\\n```", b, sizeof b);
    assert_int_equal(px_gen_llm_parse(fenced, strlen(fenced), &v, &n, &e), PX_OK);
    assert_int_equal(n, 1);
    px_manifest_strings_free(v, n);
    const char *bad[] = {"not json", "{\"choices\":[]}", "{\"choices\":[{\"message\":{\"content\":5}}]}"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(px_gen_llm_parse(bad[i], strlen(bad[i]), &v, &n, &e), PX_ECORRUPT);
        assert_null(v);
    }
    const char *prose = chat("I cannot help with that.", b, sizeof b);
    assert_int_equal(px_gen_llm_parse(prose, strlen(prose), &v, &n, &e), PX_ECORRUPT);
    assert_non_null(strstr(e.msg, "JSON"));
    const char *wrong = chat("{\\\"scenes\\\": 3}", b, sizeof b);
    assert_int_equal(px_gen_llm_parse(wrong, strlen(wrong), &v, &n, &e), PX_ECORRUPT);
    assert_non_null(strstr(e.msg, "prompts"));
}

static void test_dedup(void **state)
{
    (void)state;
    const char *a = "A bright open-plan office with rows of desks and potted plants, oak accents, "
                    "soft morning daylight, wide-angle view";
    const char *a2 = "a bright open plan office, with rows of desks and potted plants; oak accents "
                     "- soft morning daylight, wide angle view";
    const char *b = "A quiet library reading room with tall bookshelves and green lamps, walnut "
                    "surfaces, evening lamp light, corner view";
    assert_true(px_gen_jaccard(a, a2) > 0.95);
    assert_true(px_gen_jaccard(a, b) < 0.1);
    px_gen_dedup *d;
    assert_int_equal(px_gen_dedup_create(0.7, &d, NULL), PX_OK);
    assert_int_equal(px_gen_dedup_add(d, a), 0);
    assert_int_equal(px_gen_dedup_add(d, b), 0);
    assert_int_equal(px_gen_dedup_add(d, a2), 1);
    assert_int_equal(px_gen_dedup_count(d), 2);
    /* many offline prompts: few duplicates, and each flagged one really is close */
    px_gen_writer *w;
    assert_int_equal(px_gen_writer_offline_create(PX_SOURCE_DIR "/vocab", 3, &w, NULL), PX_OK);
    int dups = 0, total = 0;
    for (int r = 0; r < 25; r++) {
        char **v;
        size_t n;
        assert_int_equal(px_gen_writer_write(w, "Business and office", "business-and-office", 0, 40,
                                             &v, &n, NULL, 0, NULL),
                         PX_OK);
        for (size_t i = 0; i < n; i++, total++)
            dups += px_gen_dedup_add(d, v[i]) == 1;
        px_manifest_strings_free(v, n);
    }
    assert_int_equal(total, 1000);
    assert_true(dups < 100);
    px_gen_writer_destroy(w);
    px_gen_dedup_destroy(d);
}

static px_gen_rgb make_img(int w, int h, int kind, uint64_t seed)
{
    px_gen_rgb im = {w, h, malloc((size_t)w * h * 3)};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = im.px + ((size_t)y * w + x) * 3;
            int v;
            if (kind == 0) /* textured */
                /* fixed low-frequency structure (a photo's layout), noise from seed */
                v = 70 + (int)(50 * sin(x * 0.09) * cos(y * 0.13)) + (x > y ? 40 : 0) +
                    (int)((((x / 4) ^ (y / 4)) & 1) * 20) + (int)(px_gen_rand(&seed) % 30);
            else if (kind == 1) /* flat */
                v = 128;
            else if (kind == 2) /* dark */
                v = 2 + (int)(px_gen_rand(&seed) % 12) + ((x / 8) & 1) * 30;
            else /* smooth gradient: blurry */
                v = 40 + x * 150 / w;
            p[0] = p[1] = p[2] = (uint8_t)v;
        }
    return im;
}

static void test_checks(void **state)
{
    (void)state;
    px_gen_check_opts o = px_gen_check_opts_default();
    px_gen_check_result r;
    const char *expect[4] = {"accepted", "near-uniform", "too dark", "blurry"};
    for (int k = 0; k < 4; k++) {
        px_gen_rgb im = make_img(128, 96, k, 5);
        assert_int_equal(px_gen_check_image(&im, &o, &r, NULL), PX_OK);
        if (k == 0) {
            assert_string_equal(r.status, "accepted");
        } else {
            assert_string_equal(r.status, "rejected");
            if (!strstr(r.reason, expect[k]))
                fail_msg("kind %d: reason '%s'", k, r.reason);
        }
        px_gen_rgb_free(&im);
    }
    /* phash: stable under noise, far for a different picture */
    px_gen_rgb a = make_img(128, 96, 0, 1), b = make_img(128, 96, 0, 2), c = make_img(128, 96, 3, 1);
    int d_same = px_gen_hamming(px_gen_phash(&a), px_gen_phash(&b));
    int d_diff = px_gen_hamming(px_gen_phash(&a), px_gen_phash(&c));
    printf("phash distances: same %d diff %d\n", d_same, d_diff);
    assert_true(d_same <= 8);
    assert_true(d_diff >= 16);
    px_gen_rgb_free(&a);
    px_gen_rgb_free(&b);
    px_gen_rgb_free(&c);
}

static void test_png_text_roundtrip(void **state)
{
    (void)state;
    px_gen_rgb im = make_img(40, 30, 0, 9);
    px_buf png = {0};
    px_err e;
    const char *params = "a room\nNegative prompt: text\nSteps: 30, Seed: 42";
    const char *json = "{\"id\":7,\"prompt\":\"caf\xc3\xa9\"}";
    assert_int_equal(px_gen_encode_png(&im, params, json, &png, &e), PX_OK);
    char *v;
    assert_int_equal(px_gen_png_text(png.data, png.len, "parameters", &v, &e), PX_OK);
    assert_string_equal(v, params);
    free(v);
    assert_int_equal(px_gen_png_text(png.data, png.len, "pixpipe", &v, &e), PX_OK);
    assert_string_equal(v, json);
    free(v);
    assert_int_equal(px_gen_png_text(png.data, png.len, "nothere", &v, &e), PX_ENOTFOUND);
    px_gen_rgb back;
    assert_int_equal(px_gen_decode(png.data, png.len, 0, &back, &e), PX_OK);
    assert_int_equal(back.w, 40);
    assert_memory_equal(back.px, im.px, 40 * 30 * 3);
    px_gen_rgb_free(&back);
    /* truncated and non-image payloads are errors, not crashes */
    assert_int_equal(px_gen_decode(png.data, png.len / 2, 0, &back, &e), PX_ECORRUPT);
    assert_int_equal(px_gen_decode((const uint8_t *)"hello there", 11, 0, &back, &e),
                     PX_EUNSUPPORTED);
    px_buf_free(&png);
    px_gen_rgb_free(&im);
}

/* What follows sig in the APP1 segment that starts with it, from a JPEG stream. */
static const uint8_t *jpeg_app1(const px_buf *b, const char *sig, size_t siglen, size_t *n)
{
    for (size_t pos = 2; pos + 4 <= b->len && b->data[pos] == 0xFF;) {
        size_t sl = (size_t)b->data[pos + 2] << 8 | b->data[pos + 3];
        if (b->data[pos + 1] == 0xDA)
            break;
        if (b->data[pos + 1] == 0xE1 && sl - 2 >= siglen && !memcmp(b->data + pos + 4, sig, siglen)) {
            *n = sl - 2 - siglen;
            return b->data + pos + 4 + siglen;
        }
        pos += 2 + sl;
    }
    return NULL;
}

/* JPEG and WebP pool files: pixels survive (lossy, so close), both metadata
 * items read back exactly (non-ASCII, a character outside the BMP, XML
 * specials), and other readers find them where A1111 and XMP tools look:
 * libexif for UserComment, libwebp's demuxer for the EXIF and XMP chunks. */
static void test_jpeg_webp_metadata(void **state)
{
    (void)state;
    px_gen_rgb im = make_img(64, 48, 0, 9);
    const char *params = "caf\xc3\xa9 on a rainy day \xf0\x9f\x98\x80\nNegative prompt: text, "
                         "<logo> & watermark\nSteps: 30, Sampler: Euler a, Seed: 42, Size: 64x48";
    const char *json = "{\"id\":7,\"prompt\":\"a <b> & c\",\"note\":\"\\u00e9\"}";
    for (int fmt = PX_GEN_JPEG; fmt <= PX_GEN_WEBP; fmt++) {
        px_buf b = {0};
        px_err e;
        assert_int_equal(px_gen_encode(&im, fmt, 90, params, json, &b, &e), PX_OK);
        char *v;
        assert_int_equal(px_gen_meta_text(b.data, b.len, "parameters", &v, &e), PX_OK);
        assert_string_equal(v, params);
        free(v);
        assert_int_equal(px_gen_meta_text(b.data, b.len, "pixpipe", &v, &e), PX_OK);
        assert_string_equal(v, json);
        free(v);
        px_gen_rgb back;
        assert_int_equal(px_gen_decode(b.data, b.len, 0, &back, &e), PX_OK);
        assert_int_equal(back.w, 64);
        assert_int_equal(back.h, 48);
        double diff = 0;
        for (size_t i = 0; i < 64 * 48 * 3; i++)
            diff += abs((int)back.px[i] - (int)im.px[i]);
        printf("%s: %zu bytes, mean abs pixel error %.2f\n", px_gen_format_ext(fmt), b.len,
               diff / (64 * 48 * 3));
        assert_true(diff / (64 * 48 * 3) < 12);
        px_gen_rgb_free(&back);

        const uint8_t *exif = NULL, *xmp = NULL;
        size_t exif_n = 0, xmp_n = 0;
        WebPDemuxer *dmx = NULL;
        WebPChunkIterator ce, cx;
        if (fmt == PX_GEN_JPEG) {
            assert_int_equal(b.data[0], 0xFF);
            assert_int_equal(b.data[1], 0xD8);
            exif = jpeg_app1(&b, "Exif\0\0", 6, &exif_n);
            xmp = jpeg_app1(&b, "http://ns.adobe.com/xap/1.0/", 29, &xmp_n);
        } else {
            WebPData wd = {b.data, b.len};
            dmx = WebPDemux(&wd);
            assert_non_null(dmx);
            assert_true(WebPDemuxGetI(dmx, WEBP_FF_FORMAT_FLAGS) & EXIF_FLAG);
            assert_true(WebPDemuxGetI(dmx, WEBP_FF_FORMAT_FLAGS) & XMP_FLAG);
            assert_true(WebPDemuxGetChunk(dmx, "EXIF", 1, &ce));
            assert_true(WebPDemuxGetChunk(dmx, "XMP ", 1, &cx));
            exif = ce.chunk.bytes;
            exif_n = ce.chunk.size;
            xmp = cx.chunk.bytes;
            xmp_n = cx.chunk.size;
        }
        assert_non_null(exif);
        assert_non_null(xmp);
        char *x = strndup((const char *)xmp, xmp_n);
        assert_non_null(strstr(x, "xmlns:pixpipe=\"urn:pixpipe:meta:1\""));
        assert_non_null(strstr(x, "a &lt;b&gt; &amp; c"));
        free(x);
        /* libexif: the UserComment entry, UNICODE prefix, UTF-16BE "caf\u00e9" */
        ExifData *ed = fmt == PX_GEN_JPEG ? exif_data_new_from_data(exif - 6, (unsigned)exif_n + 6)
                                          : NULL;
        if (!ed) { /* WebP's chunk has no "Exif\0\0" prefix; libexif wants one */
            uint8_t *pre = malloc(exif_n + 6);
            memcpy(pre, "Exif\0\0", 6);
            memcpy(pre + 6, exif, exif_n);
            ed = exif_data_new_from_data(pre, (unsigned)exif_n + 6);
            free(pre);
        }
        assert_non_null(ed);
        ExifEntry *uc = exif_content_get_entry(ed->ifd[EXIF_IFD_EXIF], EXIF_TAG_USER_COMMENT);
        assert_non_null(uc);
        assert_true(uc->size >= 16);
        assert_memory_equal(uc->data, "UNICODE\0\0c\0a\0f\0\xe9", 16);
        exif_data_unref(ed);
        if (dmx) {
            WebPDemuxReleaseChunkIterator(&ce);
            WebPDemuxReleaseChunkIterator(&cx);
            WebPDemuxDelete(dmx);
        }
        /* every truncation is an error or a shorter value, never a crash (ASan watches) */
        for (size_t cut = 0; cut < b.len; cut += 1 + cut / 8) {
            if (px_gen_meta_text(b.data, cut, "parameters", &v, NULL) == PX_OK)
                free(v);
            if (px_gen_meta_text(b.data, cut, "pixpipe", &v, NULL) == PX_OK)
                free(v);
        }
        assert_int_equal(px_gen_meta_text(b.data, b.len, "other", &v, &e), PX_EINVAL);
        px_buf_free(&b);
    }
    /* without metadata: ENOTFOUND; not an image: EUNSUPPORTED */
    px_buf b = {0};
    px_err e;
    char *v;
    assert_int_equal(px_gen_encode(&im, PX_GEN_JPEG, 80, NULL, NULL, &b, &e), PX_OK);
    assert_int_equal(px_gen_meta_text(b.data, b.len, "parameters", &v, &e), PX_ENOTFOUND);
    assert_int_equal(px_gen_meta_text((const uint8_t *)"hello there", 11, "pixpipe", &v, &e),
                     PX_EUNSUPPORTED);
    px_buf_free(&b);
    assert_int_equal(px_gen_format_parse("jpeg"), PX_GEN_JPEG);
    assert_int_equal(px_gen_format_parse("webp"), PX_GEN_WEBP);
    assert_int_equal(px_gen_format_parse("gif"), -1);
    assert_string_equal(px_gen_format_ext(PX_GEN_JPEG), "jpg");
    px_gen_rgb_free(&im);
}

static void test_base64(void **state)
{
    (void)state;
    px_buf b = {0};
    const uint8_t in[] = {0, 1, 2, 250, 251, 252, 253};
    for (size_t n = 0; n <= sizeof in; n++) {
        b.len = 0;
        assert_int_equal(px_gen_b64_encode(in, n, &b), PX_OK);
        uint8_t *out;
        size_t ol;
        assert_int_equal(px_gen_b64_decode((const char *)b.data, b.len, &out, &ol), PX_OK);
        assert_int_equal(ol, n);
        if (n)
            assert_memory_equal(out, in, n);
        free(out);
    }
    uint8_t *out;
    size_t ol;
    assert_int_equal(px_gen_b64_decode("ab$d", 4, &out, &ol), PX_ECORRUPT);
    px_buf_free(&b);
}

static void test_styles(void **state)
{
    (void)state;
    px_gen_style st;
    px_err e;
    assert_int_equal(px_gen_style_load(PX_SOURCE_DIR "/styles/styles.json", &st, &e), PX_OK);
    assert_non_null(strstr(st.suffix[PX_GEN_ITEMS], "product"));
    assert_non_null(strstr(st.negative[PX_GEN_INTERIORS], "watermark"));
    assert_non_null(strstr(st.no_people, "face"));
    assert_int_equal(px_gen_style_load("/nonexistent/styles.json", &st, &e), PX_ENOTFOUND);
    assert_non_null(strstr(e.msg, "/nonexistent/styles.json"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_apportion_exact),
        cmocka_unit_test(test_campaign_default_quotas),
        cmocka_unit_test(test_campaign_counts_and_errors),
        cmocka_unit_test(test_quota_margins_random),
        cmocka_unit_test(test_slug_and_types),
        cmocka_unit_test(test_offline_writer),
        cmocka_unit_test(test_llm_parse),
        cmocka_unit_test(test_dedup),
        cmocka_unit_test(test_checks),
        cmocka_unit_test(test_png_text_roundtrip),
        cmocka_unit_test(test_jpeg_webp_metadata),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_styles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
