/*
 * Unit tests for px_manifest: jobs, images, verdicts, stats, filters, read-only
 * opening and the errors for a missing or foreign database.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "manifest/px_manifest.h"

static void test_manifest_roundtrip(void **state)
{
    (void)state;
    char dir[] = "/tmp/px_manifest_XXXXXX", db[128];
    assert_non_null(mkdtemp(dir));
    snprintf(db, sizeof db, "%s/manifest.sqlite", dir);
    px_manifest *s;
    px_err e;
    assert_int_equal(px_manifest_open(db, 0, &s, &e), PX_OK);
    assert_int_equal(px_manifest_set_quota(s, 1, "Biz", "biz", "interiors", 3, &e), PX_OK);
    int64_t ids[4];
    for (int i = 0; i < 4; i++) {
        char p[64];
        snprintf(p, sizeof p, "prompt number %d", i);
        px_manifest_job j = {.theme = "Biz", .theme_slug = "biz", .type = "interiors", .prompt = p,
                          .negative = "text", .seed = -1, .width = 64, .height = 64, .steps = 5,
                          .cfg = 5, .sampler = "Euler", .backend = "a1111", .model = ""};
        int64_t seed;
        assert_int_equal(px_manifest_add_job(s, &j, "offline", NULL, &ids[i], &seed, &e), PX_OK);
        assert_int_equal(seed, ids[i]);
    }
    int good, open, failed, rej;
    assert_int_equal(px_manifest_count(s, "biz", "interiors", &good, &open, &failed, &rej, &e), PX_OK);
    assert_int_equal(open, 4);
    assert_int_equal(px_manifest_job_start(s, ids[0], "http://a", &e), PX_OK);
    int n;
    assert_int_equal(px_manifest_reset_running(s, &n, &e), PX_OK);
    assert_int_equal(n, 1);
    const char *status[3] = {"accepted", "rejected", "flagged"};
    for (int i = 0; i < 3; i++) {
        px_manifest_image_rec r = {.job_id = ids[i], .path = "biz/interiors/x.png", .sha256 = "ab",
                                .bytes = 10, .width = 64, .height = 64, .phash = 0xffffffffffffffffULL,
                                .status = status[i], .reason = i == 1 ? "blurry" : "",
                                .checks = "{\"blur\":1}", .server = "http://a", .render_ms = 5};
        assert_int_equal(px_manifest_add_image(s, &r, &e), PX_OK);
    }
    assert_int_equal(px_manifest_job_fail(s, ids[3], "HTTP 500", 1, &e), PX_OK);
    assert_int_equal(px_manifest_count(s, "biz", "interiors", &good, &open, &failed, &rej, &e), PX_OK);
    assert_int_equal(good, 2);
    assert_int_equal(open, 0);
    assert_int_equal(failed, 1);
    assert_int_equal(rej, 1);
    /* verdicts */
    assert_int_equal(px_manifest_add_verdict(s, ids[0], "ann", "approve", NULL, NULL, &e), PX_OK);
    assert_int_equal(px_manifest_add_verdict(s, ids[0], "bob", "reject", "odd shadows", NULL, &e), PX_OK);
    assert_int_equal(px_manifest_add_verdict(s, ids[2], "ann", "maybe", NULL, NULL, &e), PX_EINVAL);
    assert_int_equal(px_manifest_add_verdict(s, 9999, "ann", "skip", NULL, NULL, &e), PX_ENOTFOUND);
    px_manifest_image *imgs;
    size_t ni;
    px_manifest_filter f = {.verdict = PX_VERDICT_FILTER_REJECT};
    assert_int_equal(px_manifest_list_images(s, &f, &imgs, &ni, &e), PX_OK);
    assert_int_equal(ni, 1);
    assert_int_equal(imgs[0].id, ids[0]);
    assert_string_equal(imgs[0].verdict_by, "bob");
    assert_string_equal(imgs[0].prompt, "prompt number 0");
    assert_int_equal(imgs[0].phash, 0xffffffffffffffffULL);
    px_manifest_images_free(imgs, ni);
    px_manifest_filter f2 = {.status = "rejected"};
    assert_int_equal(px_manifest_list_images(s, &f2, &imgs, &ni, &e), PX_OK);
    assert_int_equal(ni, 1);
    assert_string_equal(imgs[0].reason, "blurry");
    px_manifest_images_free(imgs, ni);
    px_manifest_filter f3 = {.verdict = PX_VERDICT_FILTER_NONE, .after_id = 0, .limit = 1};
    assert_int_equal(px_manifest_list_images(s, &f3, &imgs, &ni, &e), PX_OK);
    assert_int_equal(ni, 1);
    assert_int_equal(imgs[0].id, ids[1]);
    px_manifest_images_free(imgs, ni);
    px_manifest_stat *stv;
    size_t ns;
    assert_int_equal(px_manifest_stats(s, &stv, &ns, &e), PX_OK);
    assert_int_equal(ns, 1);
    assert_int_equal(stv[0].quota, 3);
    assert_int_equal(stv[0].accepted, 1);
    assert_int_equal(stv[0].flagged, 1);
    assert_int_equal(stv[0].rejected, 1);
    assert_int_equal(stv[0].jobs_failed, 1);
    assert_int_equal(stv[0].expert_rejected, 1);
    assert_int_equal(stv[0].unreviewed, 1);
    free(stv);
    px_manifest_verdict *vv;
    size_t nv;
    assert_int_equal(px_manifest_list_verdicts(s, ids[0], &vv, &nv, &e), PX_OK);
    assert_int_equal(nv, 2);
    assert_string_equal(vv[1].reason, "odd shadows");
    px_manifest_verdicts_free(vv, nv);
    px_manifest_close(s);
    /* read-only reopen sees the same; a missing file is PX_ENOTFOUND */
    assert_int_equal(px_manifest_open(db, 1, &s, &e), PX_OK);
    px_manifest_image one;
    assert_int_equal(px_manifest_get_image(s, ids[1], &one, &e), PX_OK);
    assert_string_equal(one.status, "rejected");
    px_manifest_image_clear(&one);
    px_manifest_close(s);
    char missing[160];
    snprintf(missing, sizeof missing, "%s/none.sqlite", dir);
    assert_int_equal(px_manifest_open(missing, 1, &s, &e), PX_ENOTFOUND);
    /* a file that is not a database */
    FILE *fp = fopen(missing, "w");
    fputs("this is not sqlite, just text padded to look like a file........................"
          "...........................................................................",
          fp);
    fclose(fp);
    assert_true(px_manifest_open(missing, 0, &s, &e) != PX_OK);
    assert_non_null(strstr(e.msg, "none.sqlite"));
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_manifest_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
