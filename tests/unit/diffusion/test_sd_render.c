/*
 * Tests of the render pipeline (render.c, px_sd.h) end to end on the golden
 * tiny SD-1.5-shaped model (../shared/golden/sd, see its README): prompt "a
 * photo of the cat and a dog", negative "", seed 42, 4 steps, 64x64 pixels
 * (8x8 latents), cfg 7.5 (lcm: 1.0), timestep spacing "leading".
 *
 * Tolerances: the final latent within 1e-3 (max abs) of diffusers', and the
 * 8-bit image within 1/255 of diffusers' float image (mapped to [0, 255] as
 * the pipeline does) on at least 99.9% of the values. The folder and the
 * single-file (original layout) copy of the same weights must give the same
 * bytes, and so must 1 and 2 compute threads. Also: a latent that turns NaN
 * (weights corrupted on purpose in a temporary copy) stops the render with
 * "model produced NaN at step 1"; sizes are rounded to the UNet's multiple;
 * the memory estimate refuses a render over a set limit; long prompts run
 * as several 77-token chunks; the progress callback sees every step and can
 * cancel; two threads rendering on one model at once get the same bytes. With
 * PX_SD15_FILE set, the full-size random SD 1.5 file loads with every tensor
 * used and renders a finite 64x64 image.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/px_core.h"
#include "diffusion/px_sd.h"
#include "diffusion/sd_internal.h"
#include "unit/diffusion/sd_golden.h"

#define GOLDEN PX_SHARED_DIR "/golden/sd"
#define PROMPT "a photo of the cat and a dog"
#define NLAT (4 * 8 * 8)

static px_sd_model *load(const char *path, int threads)
{
    px_sd_load_opts o = {
        .tokenizer = GOLDEN "/tokenizer", .taesd = GOLDEN "/taesd", .threads = threads};
    px_sd_model *m = NULL;
    px_err err;
    int rc = px_sd_model_load(path, &o, &m, &err);
    if (rc != PX_OK)
        fail_msg("load %s: %s", path, err.msg);
    return m;
}

static px_sd_params golden_params(const char *sampler, float *latent)
{
    px_sd_params p;
    px_sd_params_default(&p);
    p.prompt = PROMPT;
    p.negative = "";
    p.width = p.height = 64;
    p.steps = 4;
    p.sampler = sampler;
    p.cfg = strcmp(sampler, "lcm") ? 7.5f : 1.0f;
    p.seed = 42;
    p.latent_out = latent;
    p.latent_out_len = latent ? NLAT : 0;
    return p;
}

static void render_ok(px_sd_model *m, const px_sd_params *p, px_image *img, px_sd_result *r)
{
    px_err err;
    int rc = px_sd_render(m, p, img, r, &err);
    if (rc != PX_OK)
        fail_msg("render (%s): %s", p->sampler ? p->sampler : "default", err.msg);
}

/* ---- golden sampler loops ----------------------------------------------------- */

static void check_sampler(const char *sampler, const char *golden_name)
{
    px_sd_model *m = load(GOLDEN, 2);
    float lat[NLAT];
    px_sd_params p = golden_params(sampler, lat);
    px_image img;
    px_sd_result r;
    render_ok(m, &p, &img, &r);
    assert_int_equal(img.w, 64);
    assert_int_equal(img.h, 64);
    assert_int_equal(img.channels, 3);
    assert_int_equal(r.steps, 4);
    assert_int_equal(r.seed, 42);
    assert_int_equal(r.guided, strcmp(sampler, "lcm") != 0);
    assert_int_equal(r.rounded, 0);
    assert_int_equal(r.chunks, 1);

    char name[128];
    snprintf(name, sizeof name, "sample.%s.final_latent.f32", golden_name);
    float *ref = (float *)sd_golden_read(name, sizeof(float) * NLAT);
    double maxd = 0;
    for (int i = 0; i < NLAT; i++)
        maxd = fmax(maxd, fabs((double)lat[i] - ref[i]));
    free(ref);

    snprintf(name, sizeof name, "sample.%s.image.f32", golden_name);
    float *gimg = (float *)sd_golden_read(name, sizeof(float) * 3 * 64 * 64);
    int off = 0;
    double maxp = 0;
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 64; y++)
            for (int x = 0; x < 64; x++) {
                double g = gimg[(c * 64 + y) * 64 + x] * 0.5 + 0.5;
                g = g < 0 ? 0 : g > 1 ? 1 : g;
                double d = fabs(img.px[(size_t)y * img.stride + (size_t)x * 3 + c] - g * 255.0);
                maxp = fmax(maxp, d);
                off += d > 1.0 + 1e-6;
            }
    free(gimg);
    print_message("  %-8s final latent max |diff| %.2e; image max |diff| %.3f/255, %d of %d values "
                  "beyond 1/255\n",
                  sampler, maxd, maxp, off, 3 * 64 * 64);
    assert_true(maxd <= 1e-3);
    assert_true(off <= 3 * 64 * 64 / 1000); /* >= 99.9% within 1/255 */
    px_image_free(&img);
    px_sd_model_free(m);
}

static void test_golden_euler(void **state)
{
    (void)state;
    check_sampler("euler", "euler");
}

static void test_golden_euler_a(void **state)
{
    (void)state;
    check_sampler("euler_a", "euler_a");
}

static void test_golden_dpmpp_2m(void **state)
{
    (void)state;
    check_sampler("dpmpp_2m", "dpmpp2m");
}

static void test_golden_lcm(void **state)
{
    (void)state;
    check_sampler("lcm", "lcm");
}

/* ---- same bytes: layouts and threads ------------------------------------------ */

static void render_bytes(px_sd_model *m, const char *sampler, px_image *img, float *lat)
{
    px_sd_params p = golden_params(sampler, lat);
    px_sd_result r;
    render_ok(m, &p, img, &r);
}

static void assert_same(const px_image *a, const px_image *b, const float *la, const float *lb)
{
    assert_int_equal(a->w, b->w);
    assert_int_equal(a->h, b->h);
    assert_int_equal(a->stride, b->stride);
    assert_memory_equal(la, lb, NLAT * sizeof(float));
    assert_memory_equal(a->px, b->px, a->stride * (size_t)a->h);
}

static void test_folder_equals_single_file(void **state)
{
    (void)state;
    px_sd_model *a = load(GOLDEN, 2), *b = load(GOLDEN "/ldm/tiny-sd15.safetensors", 2);
    px_sd_model_info ia, ib;
    px_sd_model_describe(a, &ia);
    px_sd_model_describe(b, &ib);
    assert_int_equal(ia.single_file, 0);
    assert_int_equal(ib.single_file, 1);
    px_image x, y;
    float lx[NLAT], ly[NLAT];
    render_bytes(a, "euler_a", &x, lx);
    render_bytes(b, "euler_a", &y, ly);
    assert_same(&x, &y, lx, ly);
    px_image_free(&x);
    px_image_free(&y);
    px_sd_model_free(a);
    px_sd_model_free(b);
}

static void test_threads_identical(void **state)
{
    (void)state;
    px_sd_model *a = load(GOLDEN, 1), *b = load(GOLDEN, 2);
    px_image x, y;
    float lx[NLAT], ly[NLAT];
    render_bytes(a, "dpmpp_2m", &x, lx);
    render_bytes(b, "dpmpp_2m", &y, ly);
    assert_same(&x, &y, lx, ly);
    px_image_free(&x);
    px_image_free(&y);
    /* and a second render on the same model (arena reused) gives the same again */
    render_bytes(b, "dpmpp_2m", &y, ly);
    assert_memory_equal(lx, ly, sizeof lx);
    px_image_free(&y);
    px_sd_model_free(a);
    px_sd_model_free(b);
}

/* ---- NaN ---------------------------------------------------------------------- */

/* A copy of the single file whose UNet conv_out bias is NaN, in a temp dir. */
static void write_nan_copy(const char *dir, char *path, size_t cap)
{
    uint8_t *d = NULL;
    size_t len = 0;
    px_err err;
    assert_int_equal(
        px_read_file(GOLDEN "/ldm/tiny-sd15.safetensors", (size_t)256 << 20, &d, &len, &err),
        PX_OK);
    px_st_file *f = NULL;
    assert_int_equal(px_st_parse(d, len, &f, &err), PX_OK);
    const px_st_tensor *t = px_st_find(f, "model.diffusion_model.out.2.bias");
    assert_non_null(t);
    assert_int_equal(t->dtype, PX_ST_F32);
    uint8_t *p = d + ((const uint8_t *)t->data - d);
    float nan = NAN;
    for (size_t i = 0; i < t->nbytes / 4; i++)
        memcpy(p + 4 * i, &nan, 4);
    px_st_close(f);
    snprintf(path, cap, "%s/nan.safetensors", dir);
    assert_int_equal(px_write_file_atomic(path, d, len, &err), PX_OK);
    free(d);
}

static void test_nan_stops(void **state)
{
    (void)state;
    char dir[] = "/tmp/px_sd_render_XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    write_nan_copy(dir, path, sizeof path);
    px_sd_model *m = load(path, 2);
    px_sd_params p = golden_params("euler", NULL);
    px_image img;
    px_err err;
    int rc = px_sd_render(m, &p, &img, NULL, &err);
    print_message("  %s\n", err.msg);
    assert_int_equal(rc, PX_ECORRUPT);
    assert_non_null(strstr(err.msg, "model produced NaN at step 1"));
    assert_null(img.px);
    px_sd_model_free(m);
    unlink(path);
    rmdir(dir);
}

/* ---- sizes, memory, prompts, progress ---------------------------------------------- */

static void test_size_rounding(void **state)
{
    (void)state;
    px_sd_model *m = load(GOLDEN, 2);
    px_sd_model_info info;
    px_sd_model_describe(m, &info);
    assert_int_equal(info.size_multiple, 16); /* 8 * 2^(levels - 1), two levels */
    px_sd_params p = golden_params("euler", NULL);
    p.width = 70;  /* -> 64 */
    p.height = 41; /* -> 48 */
    px_image img;
    px_sd_result r;
    render_ok(m, &p, &img, &r);
    assert_int_equal(r.rounded, 1);
    assert_int_equal(r.req_width, 70);
    assert_int_equal(r.req_height, 41);
    assert_int_equal(r.width, 64);
    assert_int_equal(r.height, 48);
    assert_int_equal(img.w, 64);
    assert_int_equal(img.h, 48);
    px_image_free(&img);
    p.width = 3;  /* at least one multiple */
    p.height = 0; /* default: the native 512 */
    assert_int_equal(px_sd_plan(m, &p, &r, NULL), PX_OK);
    assert_int_equal(r.width, 16);
    assert_int_equal(r.height, 512);
    p.width = 5000;
    assert_int_equal(px_sd_plan(m, &p, &r, NULL), PX_EINVAL);
    px_sd_model_free(m);
}

static void test_memory_refusal(void **state)
{
    (void)state;
    px_sd_model *m = load(GOLDEN, 2);
    px_sd_params p = golden_params("euler", NULL);
    px_sd_result r;
    assert_int_equal(px_sd_plan(m, &p, &r, NULL), PX_OK);
    assert_true(r.memory.weights > 0);
    assert_true(r.memory.activations > 0);
    assert_true(r.memory.available > 0);
    px_image img;
    render_ok(m, &p, &img, &r);
    px_image_free(&img);
    print_message("  estimate: activations %llu bytes, arena peak %llu bytes\n",
                  (unsigned long long)r.memory.activations, (unsigned long long)r.arena_peak);
    assert_true(r.memory.activations >= r.arena_peak); /* the estimate covers the real scratch */
    p.mem_limit = r.memory.weights;                    /* not enough for weights plus anything */
    px_err err;
    assert_int_equal(px_sd_render(m, &p, &img, &r, &err), PX_ELIMIT);
    print_message("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "MiB"));
    assert_non_null(strstr(err.msg, "64x64"));
    assert_null(img.px);
    px_sd_model_free(m);
}

static void test_long_prompt_chunks(void **state)
{
    (void)state;
    px_sd_model *m = load(GOLDEN, 2);
    char text[2048] = "";
    for (int i = 0; i < 12; i++)
        strcat(text, PROMPT ", ");
    px_sd_params p = golden_params("euler", NULL);
    p.prompt = text;
    px_image img;
    px_sd_result r;
    render_ok(m, &p, &img, &r);
    print_message("  %d tokens -> %d chunks\n", r.prompt_tokens, r.chunks);
    assert_true(r.prompt_tokens > 75 && r.prompt_tokens <= 150);
    assert_int_equal(r.chunks, 2);
    assert_int_equal(r.negative_tokens, 0);
    px_image_free(&img);
    /* far too long: refused before any work */
    char *huge = malloc(20000);
    assert_non_null(huge);
    huge[0] = '\0';
    for (int i = 0; i < 100; i++)
        strcat(huge, PROMPT ", ");
    p.prompt = huge;
    px_err err;
    assert_int_equal(px_sd_render(m, &p, &img, &r, &err), PX_ELIMIT);
    assert_non_null(strstr(err.msg, "tokens"));
    free(huge);
    px_sd_model_free(m);
}

typedef struct prog {
    int calls, sample_calls, decode_calls, last_step, cancel_at;
} prog;

static int on_progress(void *ctx, const px_sd_progress *pr)
{
    prog *g = ctx;
    g->calls++;
    if (pr->stage == PX_SD_STAGE_SAMPLE) {
        g->sample_calls++;
        assert_int_equal(pr->step, g->last_step + 1);
        assert_int_equal(pr->steps, 4);
        g->last_step = pr->step;
        return pr->step == g->cancel_at;
    }
    g->decode_calls += pr->stage == PX_SD_STAGE_DECODE;
    return 0;
}

static void test_progress_and_cancel(void **state)
{
    (void)state;
    px_sd_model *m = load(GOLDEN, 2);
    prog g = {0};
    px_sd_params p = golden_params("euler", NULL);
    p.progress = on_progress;
    p.progress_ctx = &g;
    px_image img;
    px_sd_result r;
    render_ok(m, &p, &img, &r);
    assert_int_equal(g.sample_calls, 4);
    assert_int_equal(g.decode_calls, 1);
    px_image_free(&img);
    g = (prog){.cancel_at = 2};
    px_err err;
    assert_int_equal(px_sd_render(m, &p, &img, &r, &err), PX_ECLOSED);
    assert_int_equal(g.sample_calls, 2);
    assert_int_equal(g.decode_calls, 0);
    assert_non_null(strstr(err.msg, "step 2"));
    px_sd_model_free(m);
}

static void test_params_and_metadata(void **state)
{
    (void)state;
    px_sd_model *m = load(GOLDEN, 2);
    px_sd_params p;
    px_sd_params_default(&p);
    p.prompt = PROMPT;
    px_sd_result r;
    px_err err;
    /* defaults: DPM++ 2M Karras, 20 steps, cfg 7, native size */
    assert_int_equal(px_sd_plan(m, &p, &r, &err), PX_OK);
    assert_string_equal(r.sampler, "dpmpp_2m");
    assert_string_equal(r.sampler_a1111, "DPM++ 2M Karras");
    assert_int_equal(r.steps, 20);
    assert_true(r.cfg == 7.0f);
    assert_int_equal(r.width, 512);
    p.cfg = 0.0f; /* a real value: no guidance, one batch-1 forward per step */
    assert_int_equal(px_sd_plan(m, &p, &r, &err), PX_OK);
    assert_true(r.cfg == 0.0f);
    assert_int_equal(r.guided, 0);
    p.cfg = 51.0f;
    assert_int_equal(px_sd_plan(m, &p, &r, &err), PX_EINVAL);
    p.cfg = -1.0f;
    p.sampler = "dpmpp_2m"; /* named: no Karras unless asked */
    assert_int_equal(px_sd_plan(m, &p, &r, &err), PX_OK);
    assert_string_equal(r.sampler_a1111, "DPM++ 2M");
    p.sampler = "heun";
    assert_int_equal(px_sd_plan(m, &p, &r, &err), PX_EINVAL);
    assert_non_null(strstr(err.msg, "heun"));
    p.sampler = "lcm";
    p.karras = 1;
    assert_int_equal(px_sd_plan(m, &p, &r, &err), PX_EINVAL);
    p.karras = -1;
    assert_int_equal(px_sd_plan(m, &p, &r, &err), PX_OK);
    assert_int_equal(r.steps, 4);
    assert_int_equal(r.guided, 0);
    p.sampler = NULL;
    p.clip_skip = 9; /* three layers */
    assert_int_equal(px_sd_plan(m, &p, &r, &err), PX_EINVAL);
    p.clip_skip = 2;
    p.steps = 501;
    assert_int_equal(px_sd_plan(m, &p, &r, &err), PX_EINVAL);

    /* the A1111 text, from a real render (TAESD decode, clip skip 2) */
    float lat[NLAT];
    p = golden_params("euler_a", lat);
    p.negative = "blurry";
    p.clip_skip = 2;
    p.use_taesd = 1;
    px_image img;
    render_ok(m, &p, &img, &r);
    assert_int_equal(r.taesd, 1);
    assert_int_equal(strlen(r.model_hash), 10);
    char *s = px_sd_a1111_parameters(&p, &r, "tiny-sd15");
    assert_non_null(s);
    char want[512];
    snprintf(want, sizeof want,
             PROMPT "\nNegative prompt: blurry\nSteps: 4, Sampler: Euler a, CFG scale: 7.5, "
                    "Seed: 42, Size: 64x64, Model hash: %s, Model: tiny-sd15, Clip skip: 2",
             r.model_hash);
    assert_string_equal(s, want);
    free(s);
    px_image_free(&img);
    px_sd_model_free(m);
}

/* ---- concurrency and the full-size file ------------------------------------------ */

typedef struct conc {
    px_sd_model *m;
    px_image img;
    float lat[NLAT];
    int rc;
} conc;

static void *render_thread(void *arg)
{
    conc *c = arg;
    px_sd_params p = golden_params("euler_a", c->lat);
    c->rc = px_sd_render(c->m, &p, &c->img, NULL, NULL);
    return NULL;
}

/* Two threads render on one model at once: the renders queue on the model's
 * lock and both give the single-threaded answer. */
static void test_concurrent_renders(void **state)
{
    (void)state;
    px_sd_model *m = load(GOLDEN, 2);
    conc a = {.m = m}, b = {.m = m};
    pthread_t ta, tb;
    assert_int_equal(pthread_create(&ta, NULL, render_thread, &a), 0);
    assert_int_equal(pthread_create(&tb, NULL, render_thread, &b), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(a.rc, PX_OK);
    assert_int_equal(b.rc, PX_OK);
    assert_same(&a.img, &b.img, a.lat, b.lat);
    px_image_free(&a.img);
    px_image_free(&b.img);
    px_sd_model_free(m);
}

/* The full-size random SD 1.5 file (shared/tools/sd/make_random_sd15.py) named
 * by PX_SD15_FILE, with the CLIP vocabulary from models/: every tensor used,
 * and a 64x64 one-step render gives a finite image. Skipped when unset (CI). */
static void test_full_size_renders(void **state)
{
    (void)state;
    const char *path = getenv("PX_SD15_FILE");
    if (!path || !*path) {
        skip();
        return;
    }
    px_sd_load_opts o = {.vocab = PX_MODEL_DIR "/bpe_simple_vocab_16e6.txt.gz", .threads = 2};
    px_sd_model *m = NULL;
    px_err err;
    if (px_sd_model_load(path, &o, &m, &err) != PX_OK)
        fail_msg("%s", err.msg);
    px_sd_model_info info;
    px_sd_model_describe(m, &info);
    assert_int_equal(info.size_multiple, 64);
    assert_int_equal(info.clip_layers, 12);
    if (info.unused_tensors)
        fail_msg("%zu tensors unused, first %s", info.unused_tensors, info.first_unused);
    px_sd_params p = golden_params("euler", NULL);
    p.steps = 1;
    px_image img;
    px_sd_result r;
    render_ok(m, &p, &img, &r); /* a NaN would fail here */
    assert_int_equal(img.w, 64);
    print_message("  64x64, 1 step: text %.2f s, step %.2f s, decode %.2f s\n", r.ms_text / 1e3,
                  r.ms_sample / 1e3, r.ms_decode / 1e3);
    px_image_free(&img);
    px_sd_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_euler),
        cmocka_unit_test(test_golden_euler_a),
        cmocka_unit_test(test_golden_dpmpp_2m),
        cmocka_unit_test(test_golden_lcm),
        cmocka_unit_test(test_folder_equals_single_file),
        cmocka_unit_test(test_threads_identical),
        cmocka_unit_test(test_nan_stops),
        cmocka_unit_test(test_size_rounding),
        cmocka_unit_test(test_memory_refusal),
        cmocka_unit_test(test_long_prompt_chunks),
        cmocka_unit_test(test_progress_and_cancel),
        cmocka_unit_test(test_params_and_metadata),
        cmocka_unit_test(test_concurrent_renders),
        cmocka_unit_test(test_full_size_renders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
