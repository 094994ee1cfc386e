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
    assert_int_equal(c.format, PX_FMT_WEBP);
    assert_int_equal(c.quality, 80);
    px_gen_campaign_free(&c);
    /* the review server's settings pass through into the stored JSON */
    const char *rv = "{\"total\":4,\"themes\":[\"A\"],\"review\":{\"votes\":2,"
                     "\"reject_reasons\":[\"blurry\",\"text\"]}}";
    assert_int_equal(px_gen_campaign_parse(rv, strlen(rv), "t.json", &c, &e), PX_OK);
    px_manifest_review_cfg rc;
    assert_int_equal(px_manifest_review_cfg_parse(c.json, &rc, &e), PX_OK);
    assert_int_equal(rc.votes, 2);
    assert_int_equal(rc.n_reasons, 2);
    assert_string_equal(rc.reasons[1], "text");
    px_manifest_review_cfg_free(&rc);
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
        {"{\"total\":10,\"themes\":[\"A\"],\"review\":{\"votes\":9}}", "review.votes"},
        {"{\"total\":10,\"themes\":[\"A\"],\"review\":{\"reject_reasons\":[]}}",
         "reject_reasons"},
        {"{\"total\":10,\"themes\":[\"A\"],\"review\":3}", "review"},
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

static px_image make_img(int w, int h, int kind, uint64_t seed)
{
    px_image im;
    assert_int_equal(px_image_alloc(&im, w, h, 3), PX_OK);
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
        px_image im = make_img(128, 96, k, 5);
        assert_int_equal(px_gen_check_image(&im, &o, &r, NULL), PX_OK);
        if (k == 0) {
            assert_string_equal(r.status, "accepted");
        } else {
            assert_string_equal(r.status, "rejected");
            if (!strstr(r.reason, expect[k]))
                fail_msg("kind %d: reason '%s'", k, r.reason);
        }
        px_image_free(&im);
    }
    /* phash: stable under noise, far for a different picture */
    px_image a = make_img(128, 96, 0, 1), b = make_img(128, 96, 0, 2), c = make_img(128, 96, 3, 1);
    int d_same = px_gen_hamming(px_gen_phash(&a), px_gen_phash(&b));
    int d_diff = px_gen_hamming(px_gen_phash(&a), px_gen_phash(&c));
    printf("phash distances: same %d diff %d\n", d_same, d_diff);
    assert_true(d_same <= 8);
    assert_true(d_diff >= 16);
    px_image_free(&a);
    px_image_free(&b);
    px_image_free(&c);
}

/* Payload decoding (the encoder and metadata are px_image's, tested in
 * tests/unit/image/test_image_meta.c): a pool file decodes to the same RGB,
 * truncated and non-image payloads are errors, not crashes. */
static void test_payload_roundtrip(void **state)
{
    (void)state;
    px_image im = make_img(40, 30, 0, 9);
    px_buf png = {0};
    px_err e;
    px_image_meta meta = {.parameters = "a room\nSteps: 30, Seed: 42", .json = "{\"id\":7}"};
    assert_int_equal(px_gen_encode(&im, PX_FMT_UNKNOWN, 0, &meta, &png, &e), PX_OK);
    assert_int_equal(px_image_sniff(png.data, png.len), PX_FMT_PNG);
    char *v;
    assert_int_equal(px_image_meta_read(png.data, png.len, PX_META_JSON, &v, &e), PX_OK);
    assert_string_equal(v, "{\"id\":7}");
    free(v);
    px_image back;
    assert_int_equal(px_gen_decode(png.data, png.len, 0, &back, &e), PX_OK);
    assert_int_equal(back.w, 40);
    assert_int_equal(back.channels, 3);
    assert_memory_equal(back.px, im.px, 40 * 30 * 3);
    px_image_free(&back);
    assert_int_equal(px_gen_decode(png.data, png.len / 2, 0, &back, &e), PX_ECORRUPT);
    assert_int_equal(px_gen_decode((const uint8_t *)"hello there", 11, 0, &back, &e),
                     PX_EUNSUPPORTED);
    px_buf_free(&png);
    /* JPEG pool files: quality out of range falls back to 92, WebP stays lossy */
    assert_int_equal(px_gen_encode(&im, PX_FMT_JPEG, 500, &meta, &png, &e), PX_OK);
    assert_int_equal(px_gen_decode(png.data, png.len, 0, &back, &e), PX_OK);
    assert_int_equal(back.h, 30);
    px_image_free(&back);
    px_buf_free(&png);
    assert_int_equal(px_gen_encode(&im, PX_FMT_WEBP, 100, &meta, &png, &e), PX_OK);
    assert_int_equal(px_image_sniff(png.data, png.len), PX_FMT_WEBP);
    for (size_t i = 0; i + 4 <= png.len; i++) /* no lossless ("VP8L") bitstream chunk */
        assert_false(memcmp(png.data + i, "VP8L", 4) == 0);
    px_buf_free(&png);
    px_image_free(&im);
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
        cmocka_unit_test(test_payload_roundtrip),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_styles),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
