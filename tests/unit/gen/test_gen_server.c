/*
 * Unit tests of what gen knows about render servers (src/gen/server.c):
 * sampler and scheduler names per server and version, the A1111 infotext
 * as A1111 and sd-server write it, model names compared, the size policy
 * and the rescale of an image rendered at another size.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h> /* after the three it needs (its own block, so include sorting keeps it here) */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/gen_internal.h"
#include "gen/px_gen.h"

static void info_a1111(px_gen_server_info *in, int split)
{
    memset(in, 0, sizeof *in);
    snprintf(in->kind, sizeof in->kind, "a1111");
    in->split_scheduler = split;
    const char *s_new[] = {"Euler a", "Euler", "DPM++ 2M", "DPM++ 2M SDE", "k_dpmpp_2m"};
    const char *s_old[] = {"Euler a", "DPM++ 2M", "DPM++ 2M Karras"};
    const char **s = split ? s_new : s_old;
    in->nsamplers = split ? 5 : 3;
    for (int i = 0; i < in->nsamplers; i++)
        snprintf(in->samplers[i], sizeof in->samplers[i], "%s", s[i]);
    in->nschedulers = split ? 4 : -1;
    const char *h[] = {"automatic", "Automatic", "karras", "Karras"};
    for (int i = 0; split && i < 4; i++)
        snprintf(in->schedulers[i], sizeof in->schedulers[i], "%s", h[i]);
}

static void info_sdcpp(px_gen_server_info *in)
{
    memset(in, 0, sizeof *in);
    snprintf(in->kind, sizeof in->kind, "sd-server");
    in->split_scheduler = 1;
    const char *s[] = {"euler", "euler_a", "dpm++2m", "lcm"};
    in->nsamplers = 4;
    for (int i = 0; i < 4; i++)
        snprintf(in->samplers[i], sizeof in->samplers[i], "%s", s[i]);
    const char *h[] = {"discrete", "karras", "exponential"};
    in->nschedulers = 3;
    for (int i = 0; i < 3; i++)
        snprintf(in->schedulers[i], sizeof in->schedulers[i], "%s", h[i]);
}

static void test_sampler_names(void **state)
{
    (void)state;
    px_gen_server_info in;
    char s[64], h[32];
    px_err e;
    info_a1111(&in, 1); /* >= 1.9: two fields, the scheduler as the server spells it */
    assert_int_equal(px_gen_server_sampler(&in, "DPM++ 2M Karras", s, sizeof s, h, sizeof h, &e),
                     PX_OK);
    assert_string_equal(s, "DPM++ 2M");
    assert_string_equal(h, "karras"); /* the first the server lists: its name (label "Karras") */
    assert_int_equal(px_gen_server_sampler(&in, "euler a", s, sizeof s, h, sizeof h, &e), PX_OK);
    assert_string_equal(s, "Euler a");
    assert_string_equal(h, "");
    assert_int_equal(
        px_gen_server_sampler(&in, "DPM++ 2M Exponential", s, sizeof s, h, sizeof h, &e),
        PX_EINVAL);
    assert_non_null(strstr(e.msg, "no scheduler 'Exponential'"));
    assert_int_equal(px_gen_server_sampler(&in, "UniPC", s, sizeof s, h, sizeof h, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "UniPC"));
    assert_non_null(strstr(e.msg, "DPM++ 2M SDE")); /* says what it has */

    info_a1111(&in, 0); /* older: the combined name, checked as is */
    assert_int_equal(px_gen_server_sampler(&in, "DPM++ 2M Karras", s, sizeof s, h, sizeof h, &e),
                     PX_OK);
    assert_string_equal(s, "DPM++ 2M Karras");
    assert_string_equal(h, "");
    assert_int_equal(px_gen_server_sampler(&in, "Euler Karras", s, sizeof s, h, sizeof h, &e),
                     PX_EINVAL);

    info_sdcpp(&in); /* sd-server's own names */
    assert_int_equal(px_gen_server_sampler(&in, "DPM++ 2M Karras", s, sizeof s, h, sizeof h, &e),
                     PX_OK);
    assert_string_equal(s, "dpm++2m");
    assert_string_equal(h, "karras");
    assert_int_equal(px_gen_server_sampler(&in, "Euler a", s, sizeof s, h, sizeof h, &e), PX_OK);
    assert_string_equal(s, "euler_a");
    assert_int_equal(px_gen_server_sampler(&in, "dpm++2m", s, sizeof s, h, sizeof h, &e), PX_OK);
    assert_string_equal(s, "dpm++2m");
    assert_int_equal(
        px_gen_server_sampler(&in, "DPM++ 2M SGM Uniform", s, sizeof s, h, sizeof h, &e),
        PX_EINVAL);
    assert_int_equal(px_gen_server_sampler(&in, "Heun", s, sizeof s, h, sizeof h, &e), PX_EINVAL);
    /* a server that gave no list: sent as asked, not checked */
    info_a1111(&in, 0);
    in.nsamplers = -1;
    assert_int_equal(px_gen_server_sampler(&in, "Anything", s, sizeof s, h, sizeof h, &e), PX_OK);
    assert_string_equal(s, "Anything");
}

static void test_infotext(void **state)
{
    (void)state;
    px_gen_render_used u;
    memset(&u, 0, sizeof u);
    px_gen_parse_infotext("a cat, sharp\nNegative prompt: blurry, text\nSteps: 4, Sampler: DPM++ "
                          "2M, Schedule type: Karras, CFG scale: 6.5, Seed: 17, Size: 96x64, "
                          "Model hash: 6ce0161689, Model: v1-5, pruned, Version: v1.10.1",
                          "blurry, text", &u);
    int all = PX_GEN_USED_SEED | PX_GEN_USED_SIZE | PX_GEN_USED_STEPS | PX_GEN_USED_CFG |
              PX_GEN_USED_SAMPLER | PX_GEN_USED_MODEL | PX_GEN_USED_NEGATIVE;
    assert_int_equal(u.known, all);
    assert_int_equal(u.steps, 4);
    assert_int_equal(u.seed, 17);
    assert_int_equal(u.width, 96);
    assert_int_equal(u.height, 64);
    assert_true(u.cfg > 6.49 && u.cfg < 6.51);
    assert_string_equal(u.sampler, "DPM++ 2M Karras");
    assert_string_equal(u.model, "v1-5, pruned"); /* a comma inside a value stays */
    assert_string_equal(u.model_hash, "6ce0161689");
    assert_int_equal(u.negative_same, 1);

    /* sd-server: scheduler after the sampler, a trailing ", ", another negative prompt */
    memset(&u, 0, sizeof u);
    px_gen_parse_infotext("p\nNegative prompt: other\nSteps: 20, CFG scale: 7.000000, Guidance: "
                          "3.500000, Eta: inf, Seed: 42, Size: 100x72, Model: tiny.safetensors, "
                          "RNG: cuda, Sampler: euler_a discrete, ",
                          "ours", &u);
    assert_int_equal(u.seed, 42);
    assert_int_equal(u.steps, 20);
    assert_string_equal(u.sampler, "euler_a discrete");
    assert_string_equal(u.model, "tiny.safetensors");
    assert_true(u.known & PX_GEN_USED_NEGATIVE);
    assert_int_equal(u.negative_same, 0);

    /* no negative line: same only when ours is empty; nothing to read: nothing known */
    memset(&u, 0, sizeof u);
    px_gen_parse_infotext("p\nSteps: 3, Seed: 1", "", &u);
    assert_int_equal(u.negative_same, 1);
    memset(&u, 0, sizeof u);
    px_gen_parse_infotext("no settings here", NULL, &u);
    assert_int_equal(u.known, 0);
}

static void test_model_names(void **state)
{
    (void)state;
    assert_true(px_gen_model_matches("v1-5.safetensors [6ce0161689]", "v1-5"));
    assert_true(px_gen_model_matches("models/tiny.safetensors", "tiny.safetensors"));
    assert_true(px_gen_model_matches("", "anything"));
    assert_false(px_gen_model_matches("other.safetensors", "base"));
}

static void test_size_policy_and_rescale(void **state)
{
    (void)state;
    px_gen_size_policy p;
    px_err e;
    assert_int_equal(px_gen_size_policy_parse("rescale", &p, &e), PX_OK);
    assert_int_equal(p, PX_GEN_SIZE_RESCALE);
    assert_int_equal(px_gen_size_policy_parse("keep", &p, &e), PX_OK);
    assert_int_equal(p, PX_GEN_SIZE_KEEP);
    assert_int_equal(px_gen_size_policy_parse("stretch", &p, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "--size-mismatch 'stretch'"));

    /* 128x128 with a red left half -> 100x72: the centre crop keeps the middle rows */
    px_image img;
    assert_int_equal(px_image_alloc(&img, 128, 128, 3), PX_OK);
    for (int y = 0; y < 128; y++)
        for (int x = 0; x < 128; x++)
            img.px[(size_t)y * img.stride + (size_t)x * 3] = x < 64 ? 200 : 0;
    assert_int_equal(px_gen_rescale(&img, 100, 72, &e), PX_OK);
    assert_int_equal(img.w, 100);
    assert_int_equal(img.h, 72);
    assert_true(img.px[(size_t)36 * img.stride + 10 * 3] > 190);
    assert_true(img.px[(size_t)36 * img.stride + 90 * 3] < 10);
    assert_int_equal(px_gen_rescale(&img, 0, 72, &e), PX_EINVAL);
    px_image_free(&img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sampler_names),
        cmocka_unit_test(test_infotext),
        cmocka_unit_test(test_model_names),
        cmocka_unit_test(test_size_policy_and_rescale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
