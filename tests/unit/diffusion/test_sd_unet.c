/*
 * Tests of the UNet (unet.c, unet_blocks.c) against diffusers' outputs on the
 * golden tiny model (block_out 32/64, one layer per block, 8 heads, 8x8
 * latents, 77 context tokens of 32): one forward at batch 1 (t = 999) and
 * one at batch 2 (t = 500, the guidance layout: uncond context, then cond),
 * each within 1e-4 max abs. Also: 1 and 2 threads give bitwise the same
 * output, a second forward allocates nothing new from the arena, the FLOP
 * count matches a count by hand (and what the kernels report), and bad
 * sizes are refused.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sd_internal.h"

#define GOLDEN PX_SHARED_DIR "/golden/sd"
#define TOL 1e-4

typedef struct fixture {
    px_sd_weights *w;
    px_sd_unet *u;
    px_nn_arena *arena;
    float *sample, *ctx, *uncond; /* (1,4,8,8), (1,77,32), (1,77,32) */
} fixture;

/* The golden array `name` (float32, n values), malloc'd. */
static float *golden(const char *name, size_t n)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.f32", GOLDEN, name);
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    float *v = malloc(n * sizeof *v + 1);
    assert_non_null(v);
    size_t got = fread(v, sizeof *v, n + 1, f);
    fclose(f);
    if (got != n)
        fail_msg("%s holds %zu floats, expected %zu", path, got, n);
    return v;
}

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    px_err err = {{0}};
    if (!fx || px_sd_weights_open(GOLDEN, GOLDEN "/taesd", &fx->w, &err) != PX_OK) {
        fprintf(stderr, "weights: %s\n", err.msg);
        return -1;
    }
    if (px_sd_unet_create(fx->w, &fx->u, &err) != PX_OK) {
        fprintf(stderr, "unet: %s\n", err.msg);
        return -1;
    }
    if (px_nn_arena_create(1 << 20, &fx->arena) != PX_OK)
        return -1;
    fx->sample = golden("unet.in.sample", 256);
    fx->ctx = golden("unet.in.encoder_hidden_states", 77 * 32);
    fx->uncond = golden("te.uncond_last_hidden_state", 77 * 32);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    px_sd_unet_destroy(fx->u);
    px_sd_weights_close(fx->w);
    px_nn_arena_destroy(fx->arena);
    free(fx->sample);
    free(fx->ctx);
    free(fx->uncond);
    free(fx);
    return 0;
}

static void expect_close(const float *got, const float *want, size_t n, const char *what)
{
    double maxabs = 0, maxref = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            fail_msg("%s: value %zu is %f", what, i, got[i]);
        double d = fabs((double)got[i] - want[i]);
        maxabs = d > maxabs ? d : maxabs;
        maxref = fabs(want[i]) > maxref ? fabs(want[i]) : maxref;
    }
    print_message("%s: max abs error %.3g, relative to max |ref| %.3g: %.3g\n", what, maxabs,
                  maxref, maxabs / maxref);
    if (!(maxabs <= TOL))
        fail_msg("%s: max abs error %g > %g", what, maxabs, TOL);
}

/* Batch 2 at t = 500: the same sample twice, uncond then cond context. */
static void forward_batch2(fixture *fx, px_pool *pool, float *out)
{
    float x[512], t[2] = {500.0f, 500.0f}, *ctx = malloc(2 * 77 * 32 * sizeof *ctx);
    assert_non_null(ctx);
    memcpy(x, fx->sample, 256 * sizeof *x);
    memcpy(x + 256, fx->sample, 256 * sizeof *x);
    memcpy(ctx, fx->uncond, 77 * 32 * sizeof *ctx);
    memcpy(ctx + 77 * 32, fx->ctx, 77 * 32 * sizeof *ctx);
    px_err err = {{0}};
    int rc = px_sd_unet_forward(fx->u, x, 2, 8, 8, t, ctx, 77, NULL, out, fx->arena, pool, &err);
    free(ctx);
    if (rc != PX_OK)
        fail_msg("forward: %s", err.msg);
}

static void test_unet_batch1(void **state)
{
    fixture *fx = *state;
    float t, out[256], *want = golden("unet.out", 256), *tv = golden("unet.in.timestep", 1);
    t = tv[0];
    px_err err = {{0}};
    int rc = px_sd_unet_forward(fx->u, fx->sample, 1, 8, 8, &t, fx->ctx, 77, NULL, out, fx->arena,
                                NULL, &err);
    if (rc != PX_OK)
        fail_msg("forward: %s", err.msg);
    expect_close(out, want, 256, "unet batch 1, t=999");
    free(want);
    free(tv);
}

static void test_unet_batch2(void **state)
{
    fixture *fx = *state;
    float out[512], *want = golden("unet.batch2.out", 512);
    px_pool *pool;
    assert_int_equal(px_pool_create(2, &pool), PX_OK);
    forward_batch2(fx, pool, out);
    expect_close(out, want, 512, "unet batch 2 [uncond, cond], t=500");
    px_pool_destroy(pool);
    free(want);
}

static void test_unet_threads_bitwise(void **state)
{
    fixture *fx = *state;
    float a[512], b[512];
    px_pool *p1, *p2;
    assert_int_equal(px_pool_create(1, &p1), PX_OK);
    assert_int_equal(px_pool_create(2, &p2), PX_OK);
    forward_batch2(fx, p1, a);
    size_t reserved = px_nn_arena_reserved(fx->arena);
    forward_batch2(fx, p2, b);
    assert_memory_equal(a, b, sizeof a);
    /* the arena was planned by the first run: the same shapes take nothing new */
    assert_int_equal(px_nn_arena_reserved(fx->arena), reserved);
    assert_int_equal(px_nn_arena_mark(fx->arena), 0);
    px_pool_destroy(p1);
    px_pool_destroy(p2);
}

/* ResnetBlock2D at (cin -> cout) on hw pixels: two 3x3 convs, the 1x1
 * shortcut when the channels change, the time projection (128 -> cout). */
static double resnet(double B, double cin, double cout, double hw)
{
    return 2 * B * hw * (9 * cin * cout + 9 * cout * cout + (cin != cout ? cin * cout : 0)) +
           2 * B * 128 * cout;
}

/* Transformer at c channels on hw tokens, 77 context tokens of 32:
 * proj_in/out, q k v o (self), q o (cross) are c x c; k v (cross) 32 -> c;
 * attention 2 GEMMs of hw x keys x c each; GEGLU c -> 8c and 4c -> c. */
static double transformer(double B, double c, double hw)
{
    double n = B * hw;
    return 2 * n * c * c * 8 + 2 * B * 77 * 32 * c * 2 + 4 * n * hw * c + 4 * n * 77 * c +
           2 * n * c * 8 * c + 2 * n * 4 * c * c;
}

static void test_unet_flops(void **state)
{
    fixture *fx = *state;
    const double B = 2;
    double want = 2 * B * (32 * 128 + 128 * 128)                          /* time embedding */
                  + 2 * B * 64 * 4 * 32 * 9                               /* conv_in */
                  + resnet(B, 32, 32, 64) + transformer(B, 32, 64)        /* down 0 */
                  + 2 * B * 16 * 32 * 32 * 9                              /* downsampler */
                  + resnet(B, 32, 64, 16)                                 /* down 1 */
                  + 2 * resnet(B, 64, 64, 16) + transformer(B, 64, 16)    /* mid */
                  + resnet(B, 128, 64, 16) + resnet(B, 96, 64, 16)        /* up 0 */
                  + 2 * B * 64 * 64 * 64 * 9                              /* upsampler conv */
                  + resnet(B, 96, 32, 64) + resnet(B, 64, 32, 64)         /* up 1 */
                  + 2 * transformer(B, 32, 64) + 2 * B * 64 * 32 * 4 * 9; /* conv_out */
    double got = px_sd_unet_flops(fx->u, 2, 8, 8, 77);
    if (fabs(got - want) > 0.5)
        fail_msg("px_sd_unet_flops %.0f, counted by hand %.0f", got, want);

    /* the kernels' own count over one forward agrees */
    float out[512];
    px_nn_flops_reset();
    forward_batch2(fx, NULL, out);
    double ran = (double)px_nn_flops();
    if (fabs(ran - want) > 0.5)
        fail_msg("kernels counted %.0f flops, expected %.0f", ran, want);
}

static void test_unet_bad_sizes(void **state)
{
    fixture *fx = *state;
    float t = 1, out[4 * 9 * 8] = {0};
    px_err err = {{0}};
    /* 9 rows is not a multiple of 2 (two levels) */
    int rc =
        px_sd_unet_forward(fx->u, out, 1, 9, 8, &t, fx->ctx, 77, NULL, out, fx->arena, NULL, &err);
    assert_int_equal(rc, PX_EINVAL);
    assert_non_null(strstr(err.msg, "9x8"));
    rc = px_sd_unet_forward(fx->u, out, 1, 8, 8, &t, fx->ctx, 0, NULL, out, fx->arena, NULL, &err);
    assert_int_equal(rc, PX_EINVAL);
    assert_int_equal(px_nn_arena_mark(fx->arena), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unet_batch1),          cmocka_unit_test(test_unet_batch2),
        cmocka_unit_test(test_unet_threads_bitwise), cmocka_unit_test(test_unet_flops),
        cmocka_unit_test(test_unet_bad_sizes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
