/*
 * Tests of the CLIP text encoder (src/diffusion/clip.c) against the golden
 * tiny model of shared/golden/sd (transformers 4.40 CLIPTextModel, float32):
 *  - last_hidden_state and pooler_output of the prompt's 77 ids, and the
 *    negative prompt's last_hidden_state, within 1e-4 absolute;
 *  - clip_skip 2 = final_layer_norm(hidden_states[-2]), the golden
 *    penultimate state normed here in double precision, within 1e-4;
 *  - 1 and 3 threads give bitwise identical outputs;
 *  - causality: encoding only the first n ids gives the first n rows of the
 *    full encoding (1e-5: same maths, possibly other GEMM tilings);
 *  - bad input (token count, ids, clip_skip) is refused with a message;
 *  - the same weights opened from the single-file (ldm) layout give bitwise
 *    the same output as the diffusers folder.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion/sd_internal.h"
#include "unit/diffusion/sd_golden.h"

#define GOLDEN PX_SHARED_DIR "/golden/sd"
#define TOL 1e-4
#define NTOK 77
#define DIM 32

typedef struct fixture {
    px_sd_weights *w;
    px_sd_clip *clip;
    px_nn_arena *arena;
    px_pool *pool1, *pool3;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    px_err err;
    if (px_sd_weights_open(GOLDEN, NULL, &f->w, &err) != PX_OK) {
        fprintf(stderr, "open %s: %s\n", GOLDEN, err.msg);
        return -1;
    }
    if (px_sd_clip_create(f->w, &f->clip, &err) != PX_OK) {
        fprintf(stderr, "clip: %s\n", err.msg);
        return -1;
    }
    if (px_nn_arena_create(0, &f->arena) || px_pool_create(1, &f->pool1) ||
        px_pool_create(3, &f->pool3))
        return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    px_sd_clip_destroy(f->clip);
    px_sd_weights_close(f->w);
    px_nn_arena_destroy(f->arena);
    px_pool_destroy(f->pool1);
    px_pool_destroy(f->pool3);
    free(f);
    return 0;
}

static void encode(fixture *f, const int32_t *ids, int n, int skip, float *hidden, float *pooled,
                   px_pool *pool)
{
    px_err err;
    int rc = px_sd_clip_encode(f->clip, ids, n, skip, hidden, pooled, f->arena, pool, &err);
    if (rc != PX_OK)
        fail_msg("encode: %s", err.msg);
}

static void test_golden_prompt(void **state)
{
    fixture *f = *state;
    int32_t ids[NTOK], tok_ids[NTOK];
    sd_golden_ids("te.input_ids", ids, NTOK);
    sd_golden_ids("tok.prompt_ids", tok_ids, NTOK);
    assert_memory_equal(ids, tok_ids, sizeof ids); /* the encoder's input is the tokenizer's */
    float hidden[NTOK * DIM], pooled[DIM], hidden2[NTOK * DIM], pooled2[DIM];
    encode(f, ids, NTOK, 0, hidden, pooled, f->pool1);
    float *ref = sd_golden_f32("te.last_hidden_state", NTOK * DIM);
    float *ref_pool = sd_golden_f32("te.pooler_output", DIM);
    double e_h = sd_max_abs_diff(hidden, ref, NTOK * DIM), e_p = sd_max_abs_diff(pooled, ref_pool, DIM);
    printf("clip last_hidden_state worst abs error %.3g, pooler_output %.3g\n", e_h, e_p);
    assert_true(e_h <= TOL);
    assert_true(e_p <= TOL);
    /* clip_skip 1 is the same as 0 */
    encode(f, ids, NTOK, 1, hidden2, NULL, f->pool1);
    assert_memory_equal(hidden, hidden2, sizeof hidden);
    /* 3 threads: bitwise identical */
    encode(f, ids, NTOK, 0, hidden2, pooled2, f->pool3);
    assert_memory_equal(hidden, hidden2, sizeof hidden);
    assert_memory_equal(pooled, pooled2, sizeof pooled);
    free(ref);
    free(ref_pool);
}

static void test_golden_uncond(void **state)
{
    fixture *f = *state;
    int32_t ids[NTOK];
    sd_golden_ids("tok.negative_ids", ids, NTOK);
    float hidden[NTOK * DIM];
    encode(f, ids, NTOK, 0, hidden, NULL, f->pool3);
    float *ref = sd_golden_f32("te.uncond_last_hidden_state", NTOK * DIM);
    double e = sd_max_abs_diff(hidden, ref, NTOK * DIM);
    printf("clip uncond last_hidden_state worst abs error %.3g\n", e);
    assert_true(e <= TOL);
    free(ref);
}

/* A batch of two sequences (negative, prompt) in one pass gives each one's golden states and
 * pooled outputs, as the render uses it; a bad id in the second sequence is named. */
static void test_batch(void **state)
{
    fixture *f = *state;
    int32_t ids[2 * NTOK];
    sd_golden_ids("tok.negative_ids", ids, NTOK);
    sd_golden_ids("te.input_ids", ids + NTOK, NTOK);
    static float hidden[2 * NTOK * DIM];
    float pooled[2 * DIM];
    px_err err;
    assert_int_equal(px_sd_clip_encode_batch(f->clip, ids, 2, NTOK, 0, hidden, pooled, f->arena,
                                             f->pool3, &err),
                     PX_OK);
    float *ref_u = sd_golden_f32("te.uncond_last_hidden_state", NTOK * DIM);
    float *ref_c = sd_golden_f32("te.last_hidden_state", NTOK * DIM);
    float *ref_p = sd_golden_f32("te.pooler_output", DIM);
    double eu = sd_max_abs_diff(hidden, ref_u, NTOK * DIM);
    double ec = sd_max_abs_diff(hidden + NTOK * DIM, ref_c, NTOK * DIM);
    double ep = sd_max_abs_diff(pooled + DIM, ref_p, DIM);
    printf("clip batch of 2: uncond %.3g, cond %.3g, pooled %.3g worst abs error\n", eu, ec, ep);
    assert_true(eu <= TOL && ec <= TOL && ep <= TOL);
    free(ref_u);
    free(ref_c);
    free(ref_p);
    ids[NTOK + 3] = 1 << 20;
    assert_int_equal(px_sd_clip_encode_batch(f->clip, ids, 2, NTOK, 0, hidden, NULL, f->arena,
                                             f->pool1, &err),
                     PX_EINVAL);
    assert_non_null(strstr(err.msg, "id 1048576"));
}

/* clip_skip 2: the penultimate layer's output through final_layer_norm. */
static void test_golden_clip_skip(void **state)
{
    fixture *f = *state;
    int32_t ids[NTOK];
    sd_golden_ids("te.input_ids", ids, NTOK);
    float hidden[NTOK * DIM], pooled[DIM], pooled_ref[DIM];
    encode(f, ids, NTOK, 2, hidden, pooled, f->pool1);
    float *pen = sd_golden_f32("te.hidden_states_penultimate", NTOK * DIM);
    const float *g, *b;
    px_err err;
    assert_int_equal(
        px_sd_w_f32(f->w, PX_SD_CLIP, "text_model.final_layer_norm.weight", DIM, &g, &err), PX_OK);
    assert_int_equal(
        px_sd_w_f32(f->w, PX_SD_CLIP, "text_model.final_layer_norm.bias", DIM, &b, &err), PX_OK);
    float normed[NTOK * DIM];
    for (int t = 0; t < NTOK; t++) {
        double mean = 0, var = 0;
        for (int j = 0; j < DIM; j++)
            mean += pen[t * DIM + j];
        mean /= DIM;
        for (int j = 0; j < DIM; j++)
            var += (pen[t * DIM + j] - mean) * (pen[t * DIM + j] - mean);
        var /= DIM;
        for (int j = 0; j < DIM; j++)
            normed[t * DIM + j] =
                (float)((pen[t * DIM + j] - mean) / sqrt(var + 1e-5) * g[j] + b[j]);
    }
    double e = sd_max_abs_diff(hidden, normed, NTOK * DIM);
    printf("clip clip_skip 2 worst abs error %.3g\n", e);
    assert_true(e <= TOL);
    /* the pooled output stays the last layer's, whatever clip_skip */
    float *ref_pool = sd_golden_f32("te.pooler_output", DIM);
    encode(f, ids, NTOK, 0, hidden, pooled_ref, f->pool1);
    assert_memory_equal(pooled, pooled_ref, sizeof pooled);
    assert_true(sd_max_abs_diff(pooled, ref_pool, DIM) <= TOL);
    /* clip_skip = layers + 1 is the embedding itself, normed: differs from both */
    encode(f, ids, NTOK, 4, hidden, NULL, f->pool1);
    assert_true(sd_max_abs_diff(hidden, normed, NTOK * DIM) > 1e-3);
    free(pen);
    free(ref_pool);
}

/* Causal attention: token i sees tokens 0..i only, so a prefix encodes alike. */
static void test_prefix_is_causal(void **state)
{
    fixture *f = *state;
    int32_t ids[NTOK];
    sd_golden_ids("te.input_ids", ids, NTOK);
    float full[NTOK * DIM], part[NTOK * DIM];
    encode(f, ids, NTOK, 0, full, NULL, f->pool1);
    const int n = 5;
    encode(f, ids, n, 0, part, NULL, f->pool1);
    double e = sd_max_abs_diff(full, part, (size_t)n * DIM);
    printf("clip %d-token prefix vs full worst abs difference %.3g\n", n, e);
    assert_true(e <= 1e-5);
    /* and the later tokens do change the output of the whole sequence */
    ids[n] = ids[n] == 1 ? 2 : 1;
    encode(f, ids, NTOK, 0, part, NULL, f->pool1);
    assert_true(sd_max_abs_diff(full, part, (size_t)n * DIM) <= 1e-5);
    assert_true(sd_max_abs_diff(full + n * DIM, part + n * DIM, (size_t)(NTOK - n) * DIM) > 1e-4);
}

static void test_bad_input(void **state)
{
    fixture *f = *state;
    int32_t ids[NTOK + 1];
    sd_golden_ids("te.input_ids", ids, NTOK);
    ids[NTOK] = ids[NTOK - 1];
    float hidden[(NTOK + 1) * DIM];
    px_err err;
    assert_int_equal(px_sd_clip_encode(f->clip, ids, 0, 0, hidden, NULL, f->arena, f->pool1, &err),
                     PX_EINVAL);
    assert_non_null(strstr(err.msg, "tokens"));
    assert_int_equal(
        px_sd_clip_encode(f->clip, ids, NTOK + 1, 0, hidden, NULL, f->arena, f->pool1, &err),
        PX_EINVAL);
    assert_non_null(strstr(err.msg, "78 tokens"));
    assert_int_equal(
        px_sd_clip_encode(f->clip, ids, NTOK, 5, hidden, NULL, f->arena, f->pool1, &err),
        PX_EINVAL);
    assert_non_null(strstr(err.msg, "clip_skip"));
    ids[3] = 527; /* vocab is 527 */
    assert_int_equal(
        px_sd_clip_encode(f->clip, ids, NTOK, 0, hidden, NULL, f->arena, f->pool1, &err),
        PX_EINVAL);
    assert_non_null(strstr(err.msg, "id 527"));
    ids[3] = -1;
    assert_int_equal(
        px_sd_clip_encode(f->clip, ids, NTOK, 0, hidden, NULL, f->arena, f->pool1, &err),
        PX_EINVAL);
}

/* The single-file checkpoint holds the same values: the output must match bitwise. */
static void test_single_file(void **state)
{
    fixture *f = *state;
    px_err err;
    px_sd_weights *w = NULL;
    int rc = px_sd_weights_open(GOLDEN "/ldm/tiny-sd15.safetensors", NULL, &w, &err);
    if (rc != PX_OK) {
        printf("SKIPPED single-file CLIP: the ldm layout does not open yet (%s)\n", err.msg);
        skip();
    }
    px_sd_clip *c = NULL;
    rc = px_sd_clip_create(w, &c, &err);
    if (rc != PX_OK)
        fail_msg("clip from single file: %s", err.msg);
    int32_t ids[NTOK];
    sd_golden_ids("te.input_ids", ids, NTOK);
    float a[NTOK * DIM], b[NTOK * DIM], pa[DIM], pb[DIM];
    encode(f, ids, NTOK, 0, a, pa, f->pool1);
    assert_int_equal(px_sd_clip_encode(c, ids, NTOK, 0, b, pb, f->arena, f->pool1, &err), PX_OK);
    assert_memory_equal(a, b, sizeof a);
    assert_memory_equal(pa, pb, sizeof pa);
    char first[128];
    assert_int_equal(px_sd_weights_unused(w, PX_SD_CLIP, first, sizeof first), 0);
    px_sd_clip_destroy(c);
    px_sd_weights_close(w);
}

/* Every tensor of the text encoder is used (none silently ignored). */
static void test_all_tensors_used(void **state)
{
    fixture *f = *state;
    char first[128] = "";
    size_t n = px_sd_weights_unused(f->w, PX_SD_CLIP, first, sizeof first);
    if (n)
        fail_msg("%zu text encoder tensors unused, first %s", n, first);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_prompt),    cmocka_unit_test(test_golden_uncond), cmocka_unit_test(test_batch),
        cmocka_unit_test(test_golden_clip_skip), cmocka_unit_test(test_prefix_is_causal),
        cmocka_unit_test(test_bad_input),        cmocka_unit_test(test_single_file),
        cmocka_unit_test(test_all_tensors_used),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
