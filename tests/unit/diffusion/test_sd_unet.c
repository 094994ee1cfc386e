/*
 * Tests of the UNet (unet.c, unet_blocks.c) against diffusers' outputs on the
 * golden tiny model (block_out 32/64, one layer per block, 8 heads, 8x8
 * latents, 77 context tokens of 32): one forward at batch 1 (t = 999) and
 * one at batch 2 (t = 500, the guidance layout: uncond context, then cond),
 * each within 1e-4 max abs. Also: 1 and 2 threads give bitwise the same
 * output, a second forward allocates nothing new from the arena, the FLOP
 * count matches a count by hand (and what the kernels report), bad sizes
 * are refused, the single-file (original layout) checkpoint gives the same
 * output as the folder, and an LCM-style UNet (time_cond_proj_dim, made
 * here from the golden one plus an identity cond_proj) adds cond_proj(tcond)
 * to the timestep embedding as diffusers does.
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
#include <jansson.h>
#include <unistd.h>

#include "sd_internal.h"
#include "unit/diffusion/sd_golden.h"

#define GOLDEN PX_SHARED_DIR "/golden/sd"
#define TOL 1e-4

typedef struct fixture {
    px_sd_weights *w;
    px_sd_unet *u;
    px_nn_arena *arena;
    float *sample, *ctx, *uncond; /* (1,4,8,8), (1,77,32), (1,77,32) */
} fixture;

static int setup(void **state)
{
    fixture *fx = calloc(1, sizeof *fx);
    px_err err = {{0}};
    if (!fx || px_sd_weights_open(GOLDEN, NULL, &fx->w, &err) != PX_OK) {
        fprintf(stderr, "weights: %s\n", err.msg);
        return -1;
    }
    if (px_sd_unet_create(fx->w, &fx->u, &err) != PX_OK) {
        fprintf(stderr, "unet: %s\n", err.msg);
        return -1;
    }
    char first[256] = "";
    if (px_sd_weights_unused(fx->w, PX_SD_UNET, first, sizeof first) != 0) {
        fprintf(stderr, "unet: tensor %s was never read\n", first);
        return -1;
    }
    if (px_nn_arena_create(1 << 20, &fx->arena) != PX_OK)
        return -1;
    fx->sample = sd_golden_f32("unet.in.sample", 256);
    fx->ctx = sd_golden_f32("unet.in.encoder_hidden_states", 77 * 32);
    fx->uncond = sd_golden_f32("te.uncond_last_hidden_state", 77 * 32);
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
    float t, out[256], *want = sd_golden_f32("unet.out", 256), *tv = sd_golden_f32("unet.in.timestep", 1);
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
    float out[512], *want = sd_golden_f32("unet.batch2.out", 512);
    px_pool *pool;
    assert_int_equal(px_pool_create(2, &pool), PX_OK);
    forward_batch2(fx, pool, out);
    expect_close(out, want, 512, "unet batch 2 [uncond, cond], t=500");
    px_pool_destroy(pool);
    free(want);
}

/* Items of a batch are independent, each with its own timestep and context:
 * [t=999 cond, t=500 uncond] gives unet.out and the first item of
 * unet.batch2.out (the same timestep in both items would hide a mix-up). */
static void test_unet_batch_items(void **state)
{
    fixture *fx = *state;
    float x[512], t[2] = {999.0f, 500.0f}, out[512], *ctx = malloc(2 * 77 * 32 * sizeof *ctx);
    float *want1 = sd_golden_f32("unet.out", 256), *want2 = sd_golden_f32("unet.batch2.out", 512);
    assert_non_null(ctx);
    memcpy(x, fx->sample, 256 * sizeof *x);
    memcpy(x + 256, fx->sample, 256 * sizeof *x);
    memcpy(ctx, fx->ctx, 77 * 32 * sizeof *ctx);
    memcpy(ctx + 77 * 32, fx->uncond, 77 * 32 * sizeof *ctx);
    px_err err = {{0}};
    int rc = px_sd_unet_forward(fx->u, x, 2, 8, 8, t, ctx, 77, NULL, out, fx->arena, NULL, &err);
    if (rc != PX_OK)
        fail_msg("forward: %s", err.msg);
    expect_close(out, want1, 256, "batch item 0 (t=999, cond)");
    expect_close(out + 256, want2, 256, "batch item 1 (t=500, uncond)");
    free(ctx);
    free(want1);
    free(want2);
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

/* Batch 1 of the golden sample and context at timestep t, tcond as given. */
static void forward1(px_sd_unet *u, fixture *fx, float t, const float *tcond, float *out)
{
    px_err err = {{0}};
    int rc = px_sd_unet_forward(u, fx->sample, 1, 8, 8, &t, fx->ctx, 77, tcond, out, fx->arena,
                                NULL, &err);
    if (rc != PX_OK)
        fail_msg("forward: %s", err.msg);
}

static void test_unet_single_file(void **state)
{
    fixture *fx = *state;
    px_sd_weights *w;
    px_sd_unet *u;
    px_err err = {{0}};
    if (px_sd_weights_open(GOLDEN "/ldm/tiny-sd15.safetensors", NULL, &w, &err) != PX_OK)
        fail_msg("open: %s", err.msg);
    if (px_sd_unet_create(w, &u, &err) != PX_OK)
        fail_msg("create: %s", err.msg);
    float a[256], b[256];
    forward1(fx->u, fx, 999, NULL, a);
    forward1(u, fx, 999, NULL, b);
    assert_memory_equal(a, b, sizeof a);
    px_sd_unet_destroy(u);
    px_sd_weights_close(w);
}

/* Writes dir/unet/: the golden UNet with time_cond_proj_dim 32 and an
 * identity time_embedding.cond_proj.weight (32, 32) appended to its
 * safetensors; vae/ and text_encoder/ link to the golden ones. */
static void make_lcm_folder(const char *dir)
{
    char path[512], cmd[1024];
    snprintf(cmd, sizeof cmd,
             "mkdir -p '%s/unet' && ln -s '%s/vae' '%s/text_encoder' '%s/' && "
             "sed 's/\"time_cond_proj_dim\": null/\"time_cond_proj_dim\": 32/' "
             "'%s/unet/config.json' > '%s/unet/config.json'",
             dir, GOLDEN, GOLDEN, dir, GOLDEN, dir);
    assert_int_equal(system(cmd), 0);
    FILE *f = fopen(GOLDEN "/unet/diffusion_pytorch_model.safetensors", "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    size_t len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = malloc(len);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, len, f), len);
    fclose(f);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | buf[i];
    json_error_t jerr;
    json_t *h = json_loadb((const char *)buf + 8, hlen, 0, &jerr);
    assert_non_null(h);
    size_t data = len - 8 - hlen;
    json_object_set_new(h, "time_embedding.cond_proj.weight",
                        json_pack("{s:s, s:[i,i], s:[I,I]}", "dtype", "F32", "shape", 32, 32,
                                  "data_offsets", (json_int_t)data, (json_int_t)data + 4096));
    char *hdr = json_dumps(h, JSON_COMPACT);
    assert_non_null(hdr);
    float eye[32 * 32] = {0};
    for (int i = 0; i < 32; i++)
        eye[i * 32 + i] = 1.0f;
    snprintf(path, sizeof path, "%s/unet/diffusion_pytorch_model.safetensors", dir);
    f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t n = strlen(hdr);
    for (int i = 0; i < 8; i++)
        fputc((int)(n >> (8 * i) & 0xff), f);
    fwrite(hdr, 1, n, f);
    fwrite(buf + 8 + hlen, 1, data, f);
    fwrite(eye, sizeof eye, 1, f);
    assert_int_equal(fclose(f), 0);
    free(hdr);
    json_decref(h);
    free(buf);
}

/* diffusers' get_timestep_embedding(t, 32, flip_sin_to_cos=True, shift 0), by hand. */
static void sinusoid(double t, float *e)
{
    for (int i = 0; i < 16; i++) {
        double arg = t * exp(-log(10000.0) * i / 16.0);
        e[i] = (float)cos(arg);
        e[16 + i] = (float)sin(arg);
    }
}

static void test_unet_lcm_cond_proj(void **state)
{
    fixture *fx = *state;
    char dir[] = "/tmp/px_sd_unet_XXXXXX", cmd[600];
    assert_non_null(mkdtemp(dir));
    make_lcm_folder(dir);
    px_sd_weights *w;
    px_sd_unet *u;
    px_err err = {{0}};
    if (px_sd_weights_open(dir, NULL, &w, &err) != PX_OK)
        fail_msg("open: %s", err.msg);
    assert_int_equal(px_sd_weights_config(w)->unet.time_cond_proj_dim, 32);
    if (px_sd_unet_create(w, &u, &err) != PX_OK)
        fail_msg("create: %s", err.msg);
    assert_int_equal(px_sd_weights_unused(w, PX_SD_UNET, NULL, 0), 0);

    /* with the identity cond_proj, t = 3 plus tcond = emb(7) - emb(3) is t = 7
     * (small timesteps, so float rounding of t * freq stays ~1e-7) */
    float e3[32], e7[32], tcond[32], want[256], got[256], plain[256];
    sinusoid(3, e3);
    sinusoid(7, e7);
    for (int i = 0; i < 32; i++)
        tcond[i] = e7[i] - e3[i];
    forward1(fx->u, fx, 7, NULL, want);
    forward1(u, fx, 3, tcond, got);
    expect_close(got, want, 256, "lcm: t=3 + cond_proj(emb(7) - emb(3)) vs t=7");
    /* no tcond: cond_proj is skipped, as diffusers does for condition None */
    forward1(fx->u, fx, 3, NULL, want);
    forward1(u, fx, 3, NULL, plain);
    assert_memory_equal(plain, want, sizeof want);
    px_sd_unet_destroy(u);
    px_sd_weights_close(w);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unet_batch1),      cmocka_unit_test(test_unet_batch2),
        cmocka_unit_test(test_unet_batch_items), cmocka_unit_test(test_unet_threads_bitwise),
        cmocka_unit_test(test_unet_flops),       cmocka_unit_test(test_unet_bad_sizes),
        cmocka_unit_test(test_unet_single_file), cmocka_unit_test(test_unet_lcm_cond_proj),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
