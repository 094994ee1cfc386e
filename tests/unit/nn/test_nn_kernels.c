/*
 * Unit tests of the inference engine's operator kernels (src/nn/kernels.h).
 *
 * Every kernel is compared with a naive reference written here (convolution
 * accumulates in double, straight from the ONNX definition), on odd sizes,
 * strides 1 and 2, asymmetric padding, dilation, grouped and depthwise convs,
 * so that each conv algorithm (gemm1x1, im2col, dw3x3 AVX-512, AVX2 and
 * portable) and each of their border paths is exercised. Each case also runs
 * on a 3-thread pool and must give bitwise the same output as with 1 thread.
 *
 * ISAs: every conv case runs three times, with the widest kernels the CPU
 * has, with the AVX2 ones forced (px_nn_force_avx2) and with the portable
 * ones (px_nn_force_generic), each against the double-precision reference
 * within the same tolerance (the GEMM and OpenBLAS sum in another order than
 * the reference). The AVX-512 kernels do each output's FMAs in the AVX2
 * kernels' order, so where both run their outputs must be bitwise equal,
 * and are checked so (also for the small GEMM on its own, with every row
 * and column tail).
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

#include "nn/kernels.h"
#include "nn/kernels_internal.h"
#include "nn/px_nn.h"

/* ISA modes of the conv tests: 0 the widest the CPU has, 1 AVX2 forced, 2 portable. */
enum { ISA_MODES = 3 };
static void set_isa(int mode)
{
    px_nn_force_avx2(mode == 1);
    px_nn_force_generic(mode == 2);
}

/* The algorithm-name suffix of the conv kernels now in use. */
static const char *isa_suffix(void)
{
    return !strcmp(px_nn_isa(), "avx512+fma") ? "-avx512"
           : !strcmp(px_nn_isa(), "avx2+fma") ? "-avx2"
                                               : "";
}

/* Keeps the output of mode 0 and checks that mode 1 gives the same bits when
 * both ran SIMD kernels of different widths. */
static void same_bits_as_wide(float **wide, int *wide_512, int mode, float *o, size_t n)
{
    if (mode == 0) {
        *wide_512 = !strcmp(px_nn_isa(), "avx512+fma");
        *wide = malloc(n * sizeof(float));
        assert_non_null(*wide);
        memcpy(*wide, o, n * sizeof(float));
    } else if (mode == 1 && *wide_512) {
        assert_memory_equal(*wide, o, n * sizeof(float)); /* AVX-512 == AVX2, bit for bit */
    }
}

static uint32_t g_seed = 12345u;

static float frand(void)
{
    g_seed = g_seed * 1664525u + 1013904223u;
    return (float)((g_seed >> 8) & 0xFFFF) / 32768.0f - 1.0f; /* [-1, 1) */
}

static float *rand_buf(size_t n)
{
    float *b = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(b);
    for (size_t i = 0; i < n; i++)
        b[i] = frand();
    return b;
}

static void assert_close(const float *got, const double *want, size_t n, double tol,
                         const char *what)
{
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= tol * (1.0 + fabs(want[i])))) {
            print_error("%s: element %zu got %.7g want %.7g\n", what, i, (double)got[i], want[i]);
            fail();
        }
    }
}

/* ---- convolution ---- */

typedef struct {
    int ic, ih, iw, oc, kh, kw, sh, sw, pt, pl, pb, pr, dh, dw, group, act, bias;
    const char *algo; /* expected algorithm family: "gemm1x1", "im2col", "dw3x3" */
} conv_case;

static const conv_case k_conv_cases[] = {
    /* 1x1 stride 1: plain GEMM, several column tiles, grouped too */
    {16, 50, 51, 24, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, "gemm1x1"},
    {3, 7, 5, 5, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, "gemm1x1"},
    {8, 9, 13, 12, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 4, 1, 1, "gemm1x1"},
    /* general: stride, pads, dilation, rectangular kernels, groups */
    {3, 33, 35, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, "c3s2"},
    /* 3x3 stride 2, few channels: the direct kernel's M tails, partial
     * 16-column blocks, asymmetric and no padding */
    {1, 20, 37, 7, 3, 3, 2, 2, 0, 1, 1, 0, 1, 1, 1, 0, 1, "c3s2"},
    {4, 19, 70, 6, 3, 3, 2, 2, 0, 0, 0, 0, 1, 1, 1, 1, 0, "c3s2"},
    {2, 9, 9, 5, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, "c3s2"},
    {8, 100, 90, 6, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, "im2col"},
    {5, 17, 19, 7, 3, 2, 1, 2, 2, 0, 1, 1, 2, 3, 1, 0, 1, "im2col"},
    {6, 15, 11, 4, 5, 5, 2, 1, 2, 2, 2, 2, 1, 1, 2, 1, 0, "im2col"},
    {4, 9, 9, 4, 1, 1, 2, 2, 0, 0, 0, 0, 1, 1, 1, 0, 1, "im2col"},
    {2, 6, 6, 3, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 1, "im2col"},
    {4, 4, 3, 4, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, "im2col"},
    /* K > 256: OpenBLAS even on AVX2 CPUs */
    {32, 12, 11, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, "im2col"},
    {300, 9, 7, 5, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, "gemm1x1"},
    /* depthwise through im2col: 5x5, dilated 3x3, channel multiplier */
    {6, 14, 13, 6, 5, 5, 1, 1, 2, 2, 2, 2, 1, 1, 6, 1, 1, "im2col"},
    {5, 16, 21, 5, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 5, 0, 1, "im2col"},
    {3, 10, 12, 6, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 3, 1, 1, "im2col"},
    /* depthwise 3x3: stride 1/2, symmetric and asymmetric padding, widths
     * below, at and well above one vector */
    {7, 23, 37, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 7, 1, 1, "dw3x3"},
    {4, 5, 6, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4, 0, 1, "dw3x3"},
    {3, 20, 41, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 3, 1, 1, "dw3x3"},
    {5, 19, 40, 5, 3, 3, 2, 2, 0, 0, 1, 1, 1, 1, 5, 0, 0, "dw3x3"},
    {2, 12, 33, 2, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1, 2, 1, 1, "dw3x3"},
    {3, 11, 70, 3, 3, 3, 2, 2, 0, 0, 0, 0, 1, 1, 3, 0, 1, "dw3x3"},
    {2, 3, 3, 2, 3, 3, 1, 1, 2, 2, 2, 2, 1, 1, 2, 1, 1, "dw3x3"},
    {16, 40, 40, 16, 3, 3, 2, 2, 1, 0, 0, 1, 1, 1, 16, 1, 1, "dw3x3"},
};

static void conv_out_size(const conv_case *t, int *oh, int *ow)
{
    *oh = (t->ih + t->pt + t->pb - (t->dh * (t->kh - 1) + 1)) / t->sh + 1;
    *ow = (t->iw + t->pl + t->pr - (t->dw * (t->kw - 1) + 1)) / t->sw + 1;
}

static double *conv_ref(const conv_case *t, const float *in, const float *w, const float *b)
{
    int oh, ow;
    conv_out_size(t, &oh, &ow);
    int icg = t->ic / t->group, ocg = t->oc / t->group;
    double *out = malloc((size_t)t->oc * oh * ow * sizeof(double));
    assert_non_null(out);
    for (int oc = 0; oc < t->oc; oc++) {
        int g = oc / ocg;
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                double acc = b ? b[oc] : 0.0;
                for (int c = 0; c < icg; c++)
                    for (int ky = 0; ky < t->kh; ky++)
                        for (int kx = 0; kx < t->kw; kx++) {
                            int iy = oy * t->sh - t->pt + ky * t->dh;
                            int ix = ox * t->sw - t->pl + kx * t->dw;
                            if (iy < 0 || iy >= t->ih || ix < 0 || ix >= t->iw)
                                continue;
                            acc += (double)w[((oc * icg + c) * t->kh + ky) * t->kw + kx] *
                                   in[((size_t)(g * icg + c) * t->ih + iy) * t->iw + ix];
                        }
                if (t->act == PX_NN_ACT_RELU && acc < 0)
                    acc = 0;
                out[((size_t)oc * oh + oy) * ow + ox] = acc;
            }
    }
    return out;
}

static float *run_conv(const px_nn_conv_packed *c, const float *in, size_t n_out, px_pool *pool)
{
    size_t ss = px_nn_conv_scratch_size(c, px_pool_threads(pool));
    void *scratch = ss ? px_aligned_alloc(ss) : NULL;
    if (ss)
        assert_non_null(scratch);
    float *out = malloc(n_out * sizeof(float));
    assert_non_null(out);
    for (size_t i = 0; i < n_out; i++)
        out[i] = NAN; /* every output must be written */
    px_nn_conv_run(c, in, out, scratch, pool);
    px_aligned_free(scratch);
    return out;
}

static void check_conv_case(const conv_case *t, px_pool *pool3)
{
    int oh, ow;
    conv_out_size(t, &oh, &ow);
    px_nn_conv_params p = {t->ic, t->ih, t->iw, t->oc, oh,    ow,    t->kh,    t->kw,  t->sh, t->sw,
                        t->pt, t->pl, t->pb, t->pr, t->dh, t->dw, t->group, t->act, 0};
    size_t n_in = (size_t)t->ic * t->ih * t->iw, n_out = (size_t)t->oc * oh * ow;
    size_t n_w = (size_t)t->oc * (t->ic / t->group) * t->kh * t->kw;
    float *in = rand_buf(n_in), *w = rand_buf(n_w), *b = t->bias ? rand_buf((size_t)t->oc) : NULL;
    double *ref = conv_ref(t, in, w, b);
    char what[160];
    snprintf(what, sizeof what, "conv ic=%d %dx%d oc=%d k=%dx%d s=%d,%d g=%d", t->ic, t->ih, t->iw,
             t->oc, t->kh, t->kw, t->sh, t->sw, t->group);

    float *wide = NULL;
    int wide_512 = 0;
    for (int mode = 0; mode < ISA_MODES; mode++) {
        set_isa(mode);
        px_nn_conv_packed *c = NULL;
        px_err err = {{0}};
        assert_int_equal(px_nn_conv_prepare(&p, w, b, &c, &err), PX_OK);
        const char *algo = px_nn_conv_algo(c);
        char want[64];
        snprintf(want, sizeof want, "%s", t->algo);
        if (strcmp(t->algo, "c3s2") == 0) /* a direct kernel with SIMD, im2col otherwise */
            snprintf(want, sizeof want, "%s", *isa_suffix() ? "conv3x3s2" : "im2col");
        if (strcmp(t->algo, "c3s2") == 0 || strcmp(t->algo, "dw3x3") == 0)
            snprintf(want + strlen(want), sizeof want - strlen(want), "%s",
                     strcmp(want, "im2col") ? isa_suffix() : "");
        if (strncmp(algo, want, strlen(want)) != 0 ||
            (strcmp(t->algo, "dw3x3") == 0 && strcmp(algo, want) != 0)) {
            print_error("%s: algorithm %s, expected %s\n", what, algo, want);
            fail();
        }
        float *o1 = run_conv(c, in, n_out, NULL);
        float *o3 = run_conv(c, in, n_out, pool3);
        assert_close(o1, ref, n_out, 2e-5, what);
        assert_memory_equal(o1, o3, n_out * sizeof(float));
        same_bits_as_wide(&wide, &wide_512, mode, o1, n_out);
        free(o1);
        free(o3);
        px_nn_conv_packed_destroy(c);
    }
    set_isa(0);
    free(wide);
    free(in);
    free(w);
    free(b);
    free(ref);
}

static void test_conv_cases(void **state)
{
    (void)state;
    px_pool *pool3 = NULL;
    assert_int_equal(px_pool_create(3, &pool3), PX_OK);
    for (size_t i = 0; i < sizeof k_conv_cases / sizeof k_conv_cases[0]; i++)
        check_conv_case(&k_conv_cases[i], pool3);
    px_pool_destroy(pool3);
}

/* YuNet's layer shapes: many tiles, and outputs big enough for streamed stores. */
static void test_conv_yunet_shapes(void **state)
{
    (void)state;
    px_pool *pool3 = NULL;
    assert_int_equal(px_pool_create(3, &pool3), PX_OK);
    const conv_case big[] = {
        {3, 160, 160, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, "c3s2"},
        {64, 40, 40, 64, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0, "gemm1x1"},
        {64, 40, 40, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 64, 1, 1, "dw3x3"},
        /* YuNet 640x640: the stem and the first block at full size */
        {3, 640, 640, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, "c3s2"},
        {16, 320, 320, 16, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 1, "gemm1x1"},
        {16, 320, 320, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 16, 1, 1, "dw3x3"},
    };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        check_conv_case(&big[i], pool3);
    px_pool_destroy(pool3);
}

static void test_conv_invalid(void **state)
{
    (void)state;
    float w[64] = {0};
    px_nn_conv_packed *c = (px_nn_conv_packed *)&c; /* must be reset to NULL on failure */
    px_err err = {{0}};
    /* group does not divide channels */
    px_nn_conv_params p = {3, 8, 8, 4, 8, 8, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 2, 0, 0};
    assert_int_equal(px_nn_conv_prepare(&p, w, NULL, &c, &err), PX_EINVAL);
    assert_null(c);
    assert_non_null(strstr(err.msg, "group"));
    /* output size inconsistent with the formula */
    px_nn_conv_params q = {1, 8, 8, 1, 7, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
    err.msg[0] = 0;
    assert_int_equal(px_nn_conv_prepare(&q, w, NULL, &c, &err), PX_EINVAL);
    assert_non_null(strstr(err.msg, "output"));
    /* kernel larger than the padded input */
    px_nn_conv_params r = {1, 2, 2, 1, 1, 1, 5, 5, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0};
    assert_int_equal(px_nn_conv_prepare(&r, w, NULL, &c, &err), PX_EINVAL);
    /* negative padding, zero stride, unknown activation, missing weights */
    px_nn_conv_params s = {1, 8, 8, 1, 8, 8, 1, 1, 1, 1, -1, 0, 1, 0, 1, 1, 1, 0, 0};
    assert_int_equal(px_nn_conv_prepare(&s, w, NULL, &c, &err), PX_EINVAL);
    px_nn_conv_params u = {1, 8, 8, 1, 8, 8, 1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0};
    assert_int_equal(px_nn_conv_prepare(&u, w, NULL, &c, &err), PX_EINVAL);
    px_nn_conv_params v = {1, 8, 8, 1, 8, 8, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 7, 0};
    assert_int_equal(px_nn_conv_prepare(&v, w, NULL, &c, &err), PX_EINVAL);
    px_nn_conv_params ok = {1, 8, 8, 1, 8, 8, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0};
    assert_int_equal(px_nn_conv_prepare(&ok, NULL, NULL, &c, &err), PX_EINVAL);
    assert_non_null(strstr(err.msg, "weights"));
    px_nn_conv_packed_destroy(NULL);
    assert_string_equal(px_nn_conv_algo(NULL), "none");
}

/* ---- depthwise 3x3 with a fused 2x2/2 max pool ---- */

/* 2x2 stride-2 max pool (floor) of c planes (h, w) in double. */
static double *pool_ref(const double *x, int c, int h, int w)
{
    int ph = h / 2, pw = w / 2;
    double *o = malloc((size_t)c * (ph ? ph : 1) * (pw ? pw : 1) * sizeof(double));
    assert_non_null(o);
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < ph; y++)
            for (int x0 = 0; x0 < pw; x0++) {
                const double *a = x + ((size_t)ch * h + 2 * y) * w + 2 * x0;
                o[((size_t)ch * ph + y) * pw + x0] = fmax(fmax(a[0], a[1]), fmax(a[w], a[w + 1]));
            }
    return o;
}

static void test_conv_pool(void **state)
{
    (void)state;
    px_pool *pool3 = NULL;
    assert_int_equal(px_pool_create(3, &pool3), PX_OK);
    static const conv_case cases[] = {
        {16, 40, 40, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 16, 1, 1, "dw3x3"},
        {5, 37, 29, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 5, 1, 1,
         "dw3x3"}, /* odd: last row/col dropped */
        {3, 41, 50, 3, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 3, 0, 1, "dw3x3"},
        {4, 70, 21, 4, 3, 3, 1, 1, 0, 0, 0, 0, 1, 1, 4, 1, 0, "dw3x3"}, /* several chunks */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const conv_case *t = &cases[i];
        int oh, ow;
        conv_out_size(t, &oh, &ow);
        float *in = rand_buf((size_t)t->ic * t->ih * t->iw), *w = rand_buf((size_t)t->oc * 9);
        float *b = rand_buf((size_t)t->oc);
        double *conv = conv_ref(t, in, w, b), *ref = pool_ref(conv, t->oc, oh, ow);
        size_t n_out = (size_t)t->oc * (oh / 2) * (ow / 2);
        px_nn_conv_params p = {t->ic, t->ih, t->iw, t->oc, oh, ow, 3,        3,      t->sh, t->sw,
                            t->pt, t->pl, t->pb, t->pr, 1,  1,  t->group, t->act, 0};
        assert_true(px_nn_conv_pool_fusable(&p));
        p.pool = 1;
        assert_false(px_nn_conv_pool_fusable(&p)); /* already has one */
        float *wide = NULL;
        int wide_512 = 0;
        for (int mode = 0; mode < ISA_MODES; mode++) {
            set_isa(mode);
            px_nn_conv_packed *c = NULL;
            px_err err = {{0}};
            assert_int_equal(px_nn_conv_prepare(&p, w, b, &c, &err), PX_OK);
            float *o1 = run_conv(c, in, n_out, NULL), *o3 = run_conv(c, in, n_out, pool3);
            assert_close(o1, ref, n_out, 2e-5, "dw3x3 + max pool");
            assert_memory_equal(o1, o3, n_out * sizeof(float));
            same_bits_as_wide(&wide, &wide_512, mode, o1, n_out);
            free(o1);
            free(o3);
            px_nn_conv_packed_destroy(c);
        }
        set_isa(0);
        free(wide);
        free(in);
        free(w);
        free(b);
        free(conv);
        free(ref);
    }
    px_pool_destroy(pool3);

    /* only a depthwise 3x3 takes a fused pool; the flag is 0 or 1 */
    float w[64] = {0};
    px_nn_conv_packed *c = NULL;
    px_err err = {{0}};
    px_nn_conv_params g = {4, 8, 8, 4, 8, 8, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 1};
    assert_false(px_nn_conv_pool_fusable(&g));
    assert_int_equal(px_nn_conv_prepare(&g, w, NULL, &c, &err), PX_EUNSUPPORTED);
    assert_null(c);
    assert_non_null(strstr(err.msg, "pool"));
    px_nn_conv_params d = {4, 8, 8, 4, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 4, 0, 2};
    assert_int_equal(px_nn_conv_prepare(&d, w, NULL, &c, &err), PX_EINVAL);
}

/* ---- the small GEMM, AVX-512 against AVX2 ---- */

static void test_sgemm_small_avx512_bits(void **state)
{
    (void)state;
    if (strcmp(px_nn_isa(), "avx512+fma") != 0) {
        print_message("no AVX-512 on this CPU: the AVX-512 GEMM is not run\n");
        return;
    }
    /* every row tail (m mod 8) and column tail (n mod 32 and mod 16), K from 1 */
    static const int ms[] = {1, 3, 6, 7, 8, 9, 16, 23, 64}, ns[] = {1, 5, 16, 17, 31, 32, 33, 70};
    static const int ks[] = {1, 3, 16, 27, 64};
    for (size_t im = 0; im < sizeof ms / sizeof ms[0]; im++)
        for (size_t in = 0; in < sizeof ns / sizeof ns[0]; in++)
            for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ik++) {
                const int m = ms[im], n = ns[in], k = ks[ik], ldc = n + 3;
                const size_t ldb = (size_t)n + 5; /* row-major B with a row gap */
                float *a = rand_buf((size_t)m * k), *b = rand_buf((size_t)k * ldb);
                float *bias = rand_buf((size_t)m);
                float *pk = malloc((size_t)k * 16 * ((n + 15) / 16) * sizeof(float));
                float *c2 = malloc((size_t)m * ldc * sizeof(float));
                float *c5 = malloc((size_t)m * ldc * sizeof(float));
                assert_true(pk && c2 && c5);
                for (int relu = 0; relu < 2; relu++) {
                    for (size_t i = 0; i < (size_t)m * ldc; i++)
                        c2[i] = c5[i] = 7.0f; /* the gap columns must stay */
                    px_nn_sgemm_small_avx2(m, n, k, a, b, ldb, 16, c2, ldc, bias, relu);
                    px_nn_sgemm_small_avx512(m, n, k, a, b, ldb, 16, c5, ldc, bias, relu);
                    assert_memory_equal(c2, c5, (size_t)m * ldc * sizeof(float));
                    px_nn_pack_b16(k, n, b, ldb, pk); /* the packed layout */
                    px_nn_sgemm_small_avx512(m, n, k, a, pk, 16, 16 * (size_t)k, c5, ldc, bias,
                                             relu);
                    assert_memory_equal(c2, c5, (size_t)m * ldc * sizeof(float));
                    for (int i = 0; i < m; i++) /* and right, against a plain loop */
                        for (int j = 0; j < n; j++) {
                            double want = bias[i];
                            for (int p = 0; p < k; p++)
                                want += (double)a[i * k + p] * b[p * ldb + j];
                            want = relu && want < 0 ? 0 : want;
                            assert_true(fabs(c5[i * ldc + j] - want) <= 1e-5 * (1 + fabs(want)));
                        }
                }
                free(a);
                free(b);
                free(bias);
                free(pk);
                free(c2);
                free(c5);
            }
}

/* ---- fused 1x1 -> depthwise 3x3 ---- */

typedef struct {
    int ic, mid, h, w, pw_act, s, pt, pl, pb, pr, dw_act, pool;
} dp_case;

static void check_dp_case(const dp_case *t, px_pool *pool3)
{
    conv_case pw = {t->ic, t->h, t->w, t->mid, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, t->pw_act, 1, ""};
    conv_case dw = {t->mid, t->h,  t->w,  t->mid, 3, 3,      t->s,      t->s, t->pt,
                    t->pl,  t->pb, t->pr, 1,      1, t->mid, t->dw_act, 1,    ""};
    int oh, ow;
    conv_out_size(&dw, &oh, &ow);
    size_t n_in = (size_t)t->ic * t->h * t->w, n_mid = (size_t)t->mid * t->h * t->w;
    size_t n_out = (size_t)t->mid * oh * ow;
    float *in = rand_buf(n_in), *pw_w = rand_buf((size_t)t->mid * t->ic);
    float *pw_b = rand_buf((size_t)t->mid), *dw_w = rand_buf((size_t)t->mid * 9);
    float *dw_b = rand_buf((size_t)t->mid);
    /* reference: the two naive convs, the intermediate rounded to float */
    double *mid_ref = conv_ref(&pw, in, pw_w, pw_b);
    float *mid_f = malloc(n_mid * sizeof(float));
    assert_non_null(mid_f);
    for (size_t i = 0; i < n_mid; i++)
        mid_f[i] = (float)mid_ref[i];
    double *ref = conv_ref(&dw, mid_f, dw_w, dw_b);
    if (t->pool) {
        double *pooled = pool_ref(ref, t->mid, oh, ow);
        free(ref);
        ref = pooled;
    }
    if (t->pool)
        n_out = (size_t)t->mid * (oh / 2) * (ow / 2);
    px_nn_conv_params pp = {t->ic, t->h, t->w, t->mid, t->h, t->w, 1, 1,         1, 1,
                         0,     0,    0,    0,      1,    1,    1, t->pw_act, 0};
    px_nn_conv_params dp = {t->mid, t->h,  t->w,  t->mid, oh, ow, 3,      3,         t->s,   t->s,
                         t->pt,  t->pl, t->pb, t->pr,  1,  1,  t->mid, t->dw_act, t->pool};
    /* worth fusing only from 4 MiB of intermediate up, memory-bound or pooled */
    assert_int_equal(px_nn_conv_dp_fusable(&pp, &dp),
                     n_mid * sizeof(float) >= ((size_t)4 << 20) && (t->ic <= 32 || t->pool));
    float *wide = NULL;
    int wide_512 = 0;
    for (int mode = 0; mode < ISA_MODES; mode++) {
        set_isa(mode);
        px_err err = {{0}};
        px_nn_conv_packed *f = NULL, *a = NULL, *b = NULL;
        assert_int_equal(px_nn_conv_prepare_dp(&pp, pw_w, pw_b, &dp, dw_w, dw_b, &f, &err), PX_OK);
        assert_non_null(strstr(px_nn_conv_algo(f), "gemm1x1+dw3x3"));
        float *o1 = run_conv(f, in, n_out, NULL);
        float *o3 = run_conv(f, in, n_out, pool3);
        assert_close(o1, ref, n_out, 1e-4, "fused 1x1+dw3x3");
        assert_memory_equal(o1, o3, n_out * sizeof(float));
        same_bits_as_wide(&wide, &wide_512, mode, o1, n_out);
        if (*isa_suffix()) {
            /* the fused step computes exactly what the two steps compute */
            assert_int_equal(px_nn_conv_prepare(&pp, pw_w, pw_b, &a, &err), PX_OK);
            assert_int_equal(px_nn_conv_prepare(&dp, dw_w, dw_b, &b, &err), PX_OK);
            float *m = run_conv(a, in, n_mid, NULL);
            float *o = run_conv(b, m, n_out, NULL);
            assert_memory_equal(o, o1, n_out * sizeof(float));
            free(m);
            free(o);
        }
        free(o1);
        free(o3);
        px_nn_conv_packed_destroy(f);
        px_nn_conv_packed_destroy(a);
        px_nn_conv_packed_destroy(b);
    }
    set_isa(0);
    free(wide);
    free(in);
    free(pw_w);
    free(pw_b);
    free(dw_w);
    free(dw_b);
    free(mid_ref);
    free(mid_f);
    free(ref);
}

static void test_conv_dp(void **state)
{
    (void)state;
    px_pool *pool3 = NULL;
    assert_int_equal(px_pool_create(3, &pool3), PX_OK);
    static const dp_case cases[] = {
        {16, 16, 37, 29, 0, 1, 1, 1, 1, 1, 1, 0},   /* odd sizes, several bands */
        {8, 12, 41, 40, 1, 2, 1, 1, 1, 1, 1, 0},    /* stride 2, ReLU on both */
        {5, 7, 40, 40, 0, 2, 0, 0, 1, 1, 0, 0},     /* stride 2, asymmetric pad */
        {6, 4, 20, 23, 0, 1, 0, 0, 0, 0, 1, 0},     /* no padding */
        {3, 5, 5, 6, 0, 1, 2, 2, 2, 2, 1, 0},       /* padding larger than the kernel reach */
        {32, 64, 80, 80, 0, 1, 1, 1, 1, 1, 1, 0},   /* a YuNet block */
        {16, 16, 320, 320, 0, 1, 1, 1, 1, 1, 1, 1}, /* YuNet's first block: worth fusing */
        {16, 16, 7, 9, 1, 2, 1, 1, 1, 1, 0, 0},
        /* with the following 2x2 max pool fused too */
        {16, 16, 64, 64, 0, 1, 1, 1, 1, 1, 1, 1},
        {8, 12, 37, 29, 1, 1, 1, 1, 1, 1, 1, 1},
        {6, 8, 41, 50, 0, 2, 1, 1, 1, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_dp_case(&cases[i], pool3);
    px_pool_destroy(pool3);

    /* pairs that do not fit are refused, nothing allocated */
    px_nn_conv_params pw = {4, 256, 256, 16, 256, 256, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 0, 0};
    px_nn_conv_params dw = {16, 256, 256, 16, 256, 256, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 16, 1, 0};
    float w[64] = {0};
    px_nn_conv_packed *f = NULL;
    px_err err = {{0}};
    assert_true(px_nn_conv_dp_fusable(&pw, &dw)); /* 4 MiB between them */
    pw.ic = 64;
    assert_false(px_nn_conv_dp_fusable(&pw, &dw)); /* compute-bound 1x1 */
    dw.pool = 1;
    assert_true(px_nn_conv_dp_fusable(&pw, &dw)); /* ... unless a pool comes along */
    pw.ic = 4;
    dw.pool = 0;
    pw.ih = pw.iw = pw.oh = pw.ow = dw.ih = dw.iw = dw.oh = dw.ow = 255;
    assert_false(px_nn_conv_dp_fusable(&pw, &dw)); /* supported but not worth it */
    pw.ih = pw.iw = pw.oh = pw.ow = dw.ih = dw.iw = dw.oh = dw.ow = 256;
    dw.ic = dw.oc = dw.group = 8; /* channels do not match pw's output */
    assert_false(px_nn_conv_dp_fusable(&pw, &dw));
    assert_int_equal(px_nn_conv_prepare_dp(&pw, w, NULL, &dw, w, NULL, &f, &err), PX_EUNSUPPORTED);
    assert_null(f);
    assert_true(err.msg[0] != '\0');
    dw.ic = dw.oc = dw.group = 16;
    pw.kh = pw.kw = 3; /* not a 1x1 */
    pw.pt = pw.pl = pw.pb = pw.pr = 1;
    assert_false(px_nn_conv_dp_fusable(&pw, &dw));
}

/* ---- max pooling ---- */

static void check_maxpool(int c, int ih, int iw, int k, int s, int pad_lo, int pad_hi,
                          px_pool *pool3)
{
    int oh = (ih + pad_lo + pad_hi - k) / s + 1, ow = (iw + pad_lo + pad_hi - k) / s + 1;
    px_nn_pool2d_params p = {c, ih, iw, oh, ow, k, k, s, s, pad_lo, pad_lo, pad_hi, pad_hi};
    float *in = rand_buf((size_t)c * ih * iw);
    size_t n = (size_t)c * oh * ow;
    float *o1 = malloc(n * sizeof(float)), *o3 = malloc(n * sizeof(float));
    double *ref = malloc(n * sizeof(double));
    assert_true(o1 && o3 && ref);
    for (int ch = 0; ch < c; ch++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                double m = -INFINITY;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++) {
                        int iy = oy * s - pad_lo + ky, ix = ox * s - pad_lo + kx;
                        if (iy >= 0 && iy < ih && ix >= 0 && ix < iw &&
                            in[((size_t)ch * ih + iy) * iw + ix] > m)
                            m = in[((size_t)ch * ih + iy) * iw + ix];
                    }
                ref[((size_t)ch * oh + oy) * ow + ox] = m;
            }
    px_nn_maxpool2d(&p, in, o1, NULL);
    px_nn_maxpool2d(&p, in, o3, pool3);
    assert_close(o1, ref, n, 0.0, "maxpool");
    assert_memory_equal(o1, o3, n * sizeof(float));
    free(in);
    free(o1);
    free(o3);
    free(ref);
}

static void test_maxpool(void **state)
{
    (void)state;
    px_pool *pool3 = NULL;
    assert_int_equal(px_pool_create(3, &pool3), PX_OK);
    for (int generic = 0; generic < 2; generic++) {
        px_nn_force_generic(generic); /* 2x2/2 has an AVX2 path */
        check_maxpool(5, 17, 23, 2, 2, 0, 0, pool3);
        check_maxpool(3, 40, 41, 2, 2, 0, 0, pool3);
        check_maxpool(3, 9, 10, 3, 1, 1, 1, pool3);
        check_maxpool(4, 13, 7, 3, 2, 1, 0, pool3);
        check_maxpool(2, 9, 9, 2, 2, 0, 1, pool3);
    }
    px_nn_force_generic(0);
    px_pool_destroy(pool3);
}

/* ---- resize nearest ---- */

static void test_resize_nearest(void **state)
{
    (void)state;
    px_pool *pool3 = NULL;
    assert_int_equal(px_pool_create(3, &pool3), PX_OK);
    const int c = 3, ih = 5, iw = 7, oh = 10, ow = 13;
    int32_t ys[10], xs[13];
    for (int i = 0; i < oh; i++)
        ys[i] = i / 2;
    for (int i = 0; i < ow; i++)
        xs[i] = (i * iw) / ow;
    float *in = rand_buf((size_t)c * ih * iw);
    float o1[3 * 10 * 13], o3[3 * 10 * 13];
    px_nn_resize_nearest(c, ih, iw, oh, ow, ys, xs, in, o1, NULL);
    px_nn_resize_nearest(c, ih, iw, oh, ow, ys, xs, in, o3, pool3);
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++)
                assert_true(o1[(ch * oh + y) * ow + x] == in[(ch * ih + ys[y]) * iw + xs[x]]);
    assert_memory_equal(o1, o3, sizeof o1);
    free(in);
    px_pool_destroy(pool3);
}

/* ---- binary with broadcasting ---- */

static float bin_ref(px_nn_binop op, float x, float y)
{
    switch (op) {
    case PX_NN_BIN_ADD:
        return x + y;
    case PX_NN_BIN_SUB:
        return x - y;
    case PX_NN_BIN_MUL:
        return x * y;
    default:
        return x / y;
    }
}

static void check_binary(int rank, const int64_t *od, const int64_t *ad, const int64_t *bd,
                         px_pool *pool3)
{
    size_t n = 1, na = 1, nb = 1;
    for (int d = 0; d < rank; d++) {
        n *= (size_t)od[d];
        na *= (size_t)ad[d];
        nb *= (size_t)bd[d];
    }
    float *a = rand_buf(na), *b = rand_buf(nb);
    for (size_t i = 0; i < nb; i++)
        if (b[i] == 0.0f)
            b[i] = 0.5f;
    float *o1 = malloc(n * sizeof(float)), *o3 = malloc(n * sizeof(float));
    assert_true(o1 && o3);
    for (int op = PX_NN_BIN_ADD; op <= PX_NN_BIN_DIV; op++) {
        px_nn_binary((px_nn_binop)op, rank, od, a, ad, b, bd, o1, NULL);
        px_nn_binary((px_nn_binop)op, rank, od, a, ad, b, bd, o3, pool3);
        assert_memory_equal(o1, o3, n * sizeof(float));
        int64_t idx[6] = {0};
        for (size_t i = 0; i < n; i++) {
            size_t ai = 0, bi = 0;
            for (int d = 0; d < rank; d++) {
                ai = ai * (size_t)ad[d] + (ad[d] == 1 ? 0 : (size_t)idx[d]);
                bi = bi * (size_t)bd[d] + (bd[d] == 1 ? 0 : (size_t)idx[d]);
            }
            float want = bin_ref((px_nn_binop)op, a[ai], b[bi]);
            if (memcmp(&o1[i], &want, sizeof want) != 0) {
                print_error("binary op %d rank %d element %zu: %g vs %g\n", op, rank, i,
                            (double)o1[i], (double)want);
                fail();
            }
            for (int d = rank - 1; d >= 0; d--) {
                if (++idx[d] < od[d])
                    break;
                idx[d] = 0;
            }
        }
    }
    free(a);
    free(b);
    free(o1);
    free(o3);
}

static void test_binary(void **state)
{
    (void)state;
    px_pool *pool3 = NULL;
    assert_int_equal(px_pool_create(3, &pool3), PX_OK);
    {
        int64_t o[4] = {2, 3, 4, 5}, b[4] = {1, 3, 1, 1};
        check_binary(4, o, o, b, pool3);
        check_binary(4, o, b, o, pool3);
    }
    {
        int64_t o[4] = {2, 3, 4, 5}, a[4] = {1, 3, 1, 5}, b[4] = {2, 1, 4, 1};
        check_binary(4, o, a, b, pool3);
    }
    {
        int64_t o[2] = {7, 9}, s[2] = {1, 1}, r[2] = {1, 9};
        check_binary(2, o, o, s, pool3);
        check_binary(2, o, s, o, pool3);
        check_binary(2, o, r, o, pool3);
    }
    {
        /* one long row: blocked path with a short tail */
        int64_t o[1] = {20000}, s[1] = {1};
        check_binary(1, o, o, s, pool3);
        check_binary(1, o, o, o, pool3);
        check_binary(1, o, s, o, pool3);
    }
    {
        int64_t o[6] = {2, 1, 3, 2, 2, 3}, b[6] = {1, 1, 3, 1, 2, 1};
        check_binary(6, o, o, b, pool3);
    }
    /* rank 0: two scalars */
    float x = 3.0f, y = 4.0f, z = 0.0f;
    px_nn_binary(PX_NN_BIN_MUL, 0, NULL, &x, NULL, &y, NULL, &z, NULL);
    assert_true(z == 12.0f);
    px_pool_destroy(pool3);
}

/* ---- unary, softmax ---- */

static void test_unary(void **state)
{
    (void)state;
    px_pool *pool3 = NULL;
    assert_int_equal(px_pool_create(3, &pool3), PX_OK);
    const size_t n = 10007;
    float *in = rand_buf(n);
    for (size_t i = 0; i < n; i++)
        in[i] *= 8.0f;
    float *o1 = malloc(n * sizeof(float)), *o3 = malloc(n * sizeof(float));
    double *ref = malloc(n * sizeof(double));
    assert_true(o1 && o3 && ref);
    for (int op = PX_NN_UN_RELU; op <= PX_NN_UN_EXP; op++) {
        for (size_t i = 0; i < n; i++) {
            double v = in[i];
            ref[i] = op == PX_NN_UN_RELU      ? (v < 0 ? 0 : v)
                     : op == PX_NN_UN_SIGMOID ? 1.0 / (1.0 + exp(-v))
                                           : exp(v);
        }
        px_nn_unary((px_nn_unop)op, in, o1, n, NULL);
        px_nn_unary((px_nn_unop)op, in, o3, n, pool3);
        assert_close(o1, ref, n, op == PX_NN_UN_RELU ? 0.0 : 1e-6, "unary");
        assert_memory_equal(o1, o3, n * sizeof(float));
        memcpy(o3, in, n * sizeof(float));
        px_nn_unary((px_nn_unop)op, o3, o3, n, pool3); /* in place */
        assert_memory_equal(o1, o3, n * sizeof(float));
    }
    free(in);
    free(o1);
    free(o3);
    free(ref);
    px_pool_destroy(pool3);
}

static void test_softmax(void **state)
{
    (void)state;
    const size_t outer = 3, len = 17, inner = 5, n = outer * len * inner;
    float *in = rand_buf(n);
    for (size_t i = 0; i < n; i++)
        in[i] *= 30.0f; /* large logits: the max must be subtracted */
    float *out = malloc(n * sizeof(float));
    double *ref = malloc(n * sizeof(double));
    assert_true(out && ref);
    for (size_t o = 0; o < outer; o++)
        for (size_t i = 0; i < inner; i++) {
            double m = -INFINITY, s = 0;
            for (size_t k = 0; k < len; k++)
                m = fmax(m, in[(o * len + k) * inner + i]);
            for (size_t k = 0; k < len; k++)
                s += exp(in[(o * len + k) * inner + i] - m);
            for (size_t k = 0; k < len; k++)
                ref[(o * len + k) * inner + i] = exp(in[(o * len + k) * inner + i] - m) / s;
        }
    px_nn_softmax(in, out, outer, len, inner);
    assert_close(out, ref, n, 1e-6, "softmax");
    px_nn_softmax(in, in, outer, len, inner); /* in place */
    assert_memory_equal(in, out, n * sizeof(float));
    free(in);
    free(out);
    free(ref);
}

/* ---- transpose, concat, batchnorm ---- */

static void check_transpose(int rank, const int64_t *dims, const int *perm)
{
    size_t n = 1;
    for (int d = 0; d < rank; d++)
        n *= (size_t)dims[d];
    float *in = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float));
    assert_true(in && out);
    for (size_t i = 0; i < n; i++)
        in[i] = (float)i;
    px_nn_permute(in, rank, dims, perm, out);
    int64_t od[6], idx[6] = {0}, st[6];
    int64_t s = 1;
    for (int d = rank - 1; d >= 0; d--) {
        st[d] = s;
        s *= dims[d];
    }
    for (int d = 0; d < rank; d++)
        od[d] = dims[perm[d]];
    for (size_t i = 0; i < n; i++) {
        int64_t src = 0;
        for (int d = 0; d < rank; d++)
            src += idx[d] * st[perm[d]];
        assert_true(out[i] == (float)src);
        for (int d = rank - 1; d >= 0; d--) {
            if (++idx[d] < od[d])
                break;
            idx[d] = 0;
        }
    }
    free(in);
    free(out);
}

static void test_transpose(void **state)
{
    (void)state;
    int64_t d4[4] = {1, 3, 5, 7};
    int p4[4] = {0, 2, 3, 1};
    check_transpose(4, d4, p4);
    int64_t d3[3] = {4, 6, 5};
    int p3[3] = {2, 0, 1};
    check_transpose(3, d3, p3);
    int64_t d6[6] = {2, 3, 1, 4, 2, 3};
    int p6[6] = {5, 3, 0, 4, 1, 2};
    check_transpose(6, d6, p6);
    int64_t d2[2] = {9, 1};
    int p2[2] = {1, 0};
    check_transpose(2, d2, p2);
}

static void test_concat(void **state)
{
    (void)state;
    const size_t outer = 2, inner = 5, lens[3] = {3, 1, 4};
    float a[2 * 3 * 5], b[2 * 1 * 5], c[2 * 4 * 5], out[2 * 8 * 5];
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++)
        a[i] = (float)i;
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
        b[i] = 1000.0f + (float)i;
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++)
        c[i] = 2000.0f + (float)i;
    const float *ins[3] = {a, b, c};
    px_nn_concat(ins, lens, 3, outer, inner, out);
    for (size_t o = 0; o < outer; o++)
        for (size_t k = 0; k < 8; k++)
            for (size_t i = 0; i < inner; i++) {
                float want = k < 3   ? a[(o * 3 + k) * inner + i]
                             : k < 4 ? b[(o * 1 + k - 3) * inner + i]
                                     : c[(o * 4 + k - 4) * inner + i];
                assert_true(out[(o * 8 + k) * inner + i] == want);
            }
}

static void test_batchnorm(void **state)
{
    (void)state;
    const int c = 4;
    const size_t hw = 37;
    float *in = rand_buf((size_t)c * hw), out[4 * 37];
    float scale[4] = {1.5f, -0.5f, 2.0f, 0.25f}, bias[4] = {0.1f, 0.2f, -0.3f, 0.0f};
    float mean[4] = {0.5f, -0.25f, 0.0f, 1.0f}, var[4] = {2.0f, 0.5f, 0.01f, 1.0f};
    double ref[4 * 37];
    for (int ch = 0; ch < c; ch++)
        for (size_t i = 0; i < hw; i++)
            ref[ch * hw + i] =
                ((double)in[ch * hw + i] - mean[ch]) / sqrt(var[ch] + 1e-5) * scale[ch] + bias[ch];
    px_nn_batchnorm(in, out, c, hw, scale, bias, mean, var, 1e-5f);
    assert_close(out, ref, (size_t)c * hw, 1e-5, "batchnorm");
    free(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_cases),     cmocka_unit_test(test_conv_yunet_shapes),
        cmocka_unit_test(test_conv_invalid),   cmocka_unit_test(test_conv_dp),
        cmocka_unit_test(test_conv_pool),      cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_resize_nearest), cmocka_unit_test(test_binary),
        cmocka_unit_test(test_unary),          cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_transpose),      cmocka_unit_test(test_concat),
        cmocka_unit_test(test_batchnorm),      cmocka_unit_test(test_sgemm_small_avx512_bits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
