/*
 * Unit tests of the dense kernels in src/nn/px_nn_ops.h (the Stable Diffusion
 * engine's building blocks).
 *
 * Every op is compared with a naive reference written here in double
 * precision, on small odd shapes that cross the kernels' tile boundaries
 * (row blocks, token blocks, im2col tiles, query tiles), with row strides,
 * accumulate, bias, causal masks and f16/bf16 weights. Tolerance for GEMM-like
 * outputs: |got - ref| <= 2e-6 * sum|terms| + 1e-7, about 16 float ulps of
 * the largest partial sums (measured: ~1.2e-7 at worst); norms 2e-6 of
 * |y| + |beta| + 1, activations 4e-6 of |y| + |x|/1000 (run with
 * PX_NN_OPS_VERBOSE=1 to print the margins used). Each case runs with 1, 2 and 3 threads and the
 * outputs must be bitwise identical. The whole suite runs on each code path
 * the CPU has: AVX-512, AVX2 (capped with px_nn_ops_cap_level) and the
 * portable C (px_nn_force_generic).
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

#include "nn/ops_internal.h"
#include "nn/px_nn.h"
#include "nn/px_nn_ops.h"

static uint32_t g_seed = 987654321u;
static px_pool *g_pools[3]; /* 1, 2 and 3 threads */
static px_nn_arena *g_arena;
static int g_generic; /* the second run forces the portable paths */

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

static float *copy_buf(const float *src, size_t n)
{
    float *b = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(b);
    memcpy(b, src, n * sizeof(float));
    return b;
}

/* Reference f16 decode from the IEEE definition. */
static double f16_ref(uint16_t h)
{
    int sign = h >> 15, exp = (h >> 10) & 31, man = h & 1023;
    double v;
    if (exp == 0)
        v = ldexp(man, -24);
    else if (exp == 31)
        v = man ? NAN : INFINITY;
    else
        v = ldexp(1024 + man, exp - 25);
    return sign ? -v : v;
}

/* f32 -> f16 by truncation (enough for test data in [-1, 1]). */
static uint16_t to_f16(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    uint16_t sign = (uint16_t)((b >> 16) & 0x8000u);
    int exp = (int)((b >> 23) & 0xFF) - 127 + 15;
    if (exp <= 0)
        return sign;
    return (uint16_t)(sign | (exp << 10) | ((b >> 13) & 0x3FF));
}

/* A weight matrix in the given dtype made from w (rows, cols); *wf gets the
 * values it really holds, as doubles-to-be (f32). Caller frees both. */
static px_nn_mat make_mat(const float *w, int64_t rows, int64_t cols, px_nn_dtype t, void **store,
                          float **wf)
{
    size_t n = (size_t)(rows * cols);
    *wf = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(*wf);
    if (t == PX_NN_F32) {
        *store = copy_buf(w, n);
        memcpy(*wf, w, n * sizeof(float));
    } else {
        uint16_t *h = malloc((n ? n : 1) * 2);
        assert_non_null(h);
        for (size_t i = 0; i < n; i++) {
            uint32_t b;
            memcpy(&b, &w[i], 4);
            h[i] = t == PX_NN_F16 ? to_f16(w[i]) : (uint16_t)(b >> 16);
            if (t == PX_NN_F16) {
                (*wf)[i] = (float)f16_ref(h[i]);
            } else {
                uint32_t bb = (uint32_t)h[i] << 16;
                memcpy(&(*wf)[i], &bb, 4);
            }
        }
        *store = h;
    }
    return (px_nn_mat){.dtype = t, .data = *store, .rows = rows, .cols = cols};
}

/* |got - ref| <= rel * mag + abs_tol for every element. With
 * PX_NN_OPS_VERBOSE set, prints the worst error relative to mag (the margin
 * actually used) for each op. */
static void check_tol(const float *got, const double *ref, const double *mag, size_t n, double rel,
                      double abs_tol, const char *what)
{
    double worst = 0.0, worst_rel = 0.0;
    for (size_t i = 0; i < n; i++) {
        double tol = rel * mag[i] + abs_tol;
        double e = fabs((double)got[i] - ref[i]);
        if (!(e <= tol)) {
            fprintf(stderr, "%s: element %zu got %.9g want %.9g (tol %.3g)\n", what, i,
                    (double)got[i], ref[i], tol);
            fail();
        }
        if (e / tol > worst)
            worst = e / tol;
        if (mag[i] > 0 && e / mag[i] > worst_rel)
            worst_rel = e / mag[i];
    }
    if (getenv("PX_NN_OPS_VERBOSE"))
        fprintf(stderr, "%s: worst |err| / mag %.2e (limit %.0e), %.0f%% of the tolerance\n", what,
                worst_rel, rel, 100.0 * worst);
}

static void check_close(const float *got, const double *ref, const double *mag, size_t n,
                        const char *what)
{
    check_tol(got, ref, mag, n, 2e-6, 1e-7, what);
}

/* ---- arena ---- */

static void test_arena(void **state)
{
    (void)state;
    px_nn_arena *a = NULL;
    assert_int_equal(px_nn_arena_create(4096, &a), PX_OK);
    size_t m0 = px_nn_arena_mark(a);
    char *p0 = px_nn_arena_alloc(a, 0);
    char *p1 = px_nn_arena_alloc(a, 0);
    assert_non_null(p0);
    assert_non_null(p1);
    assert_ptr_not_equal(p0, p1);
    assert_int_equal((uintptr_t)p0 % 64, 0);
    size_t m1 = px_nn_arena_mark(a);
    float *f = px_nn_arena_floats(a, 3000); /* bigger than a chunk */
    assert_non_null(f);
    assert_int_equal((uintptr_t)f % 64, 0);
    for (int i = 0; i < 3000; i++)
        f[i] = (float)i;
    char *p2 = px_nn_arena_alloc(a, 100);
    assert_non_null(p2);
    memset(p2, 7, 100);
    assert_true(f[2999] == 2999.0f); /* blocks do not overlap */
    size_t peak = px_nn_arena_peak(a), res = px_nn_arena_reserved(a);
    assert_true(peak >= 3000 * 4 + 100);
    assert_true(res >= peak);
    px_nn_arena_release(a, m1);
    assert_int_equal(px_nn_arena_mark(a), m1);
    /* The same sequence again allocates nothing new and gives the same blocks. */
    float *f2 = px_nn_arena_floats(a, 3000);
    char *p3 = px_nn_arena_alloc(a, 100);
    assert_ptr_equal(f2, f);
    assert_ptr_equal(p3, p2);
    assert_int_equal(px_nn_arena_reserved(a), res);
    px_nn_arena_release(a, m0);
    assert_int_equal(px_nn_arena_mark(a), m0);
    assert_null(px_nn_arena_floats(a, SIZE_MAX / 2));
    px_nn_arena_destroy(a);
    px_nn_arena_destroy(NULL);

    /* Two call patterns taking turns: after one round of each, nothing new
     * is reserved (a pattern's chunks survive the other's growth). */
    assert_int_equal(px_nn_arena_create(1000, &a), PX_OK);
    size_t steady = 0;
    for (int round = 0; round < 4; round++) {
        size_t m = px_nn_arena_mark(a);
        assert_non_null(px_nn_arena_alloc(a, 700));
        assert_non_null(px_nn_arena_alloc(a, 500));
        assert_non_null(px_nn_arena_alloc(a, 900));
        px_nn_arena_release(a, m);
        assert_non_null(px_nn_arena_alloc(a, 900));
        assert_non_null(px_nn_arena_alloc(a, 1100)); /* grows the second chunk */
        px_nn_arena_release(a, m);
        if (round == 1)
            steady = px_nn_arena_reserved(a);
        if (round > 1)
            assert_int_equal(px_nn_arena_reserved(a), steady);
    }
    px_nn_arena_destroy(a);
}

/* ---- conversion ---- */

static void test_to_f32(void **state)
{
    (void)state;
    /* All 65536 f16 values, from an odd address, against the definition. */
    unsigned char *raw = malloc(2 * 65536 + 1);
    float *out = malloc(65536 * sizeof(float));
    assert_non_null(raw);
    assert_non_null(out);
    for (uint32_t i = 0; i < 65536; i++) {
        uint16_t h = (uint16_t)i;
        memcpy(raw + 1 + 2 * i, &h, 2);
    }
    px_nn_to_f32(PX_NN_F16, raw + 1, out, 65536);
    for (uint32_t i = 0; i < 65536; i++) {
        double r = f16_ref((uint16_t)i);
        if (isnan(r)) {
            assert_true(isnan(out[i]));
            uint32_t b;
            memcpy(&b, &out[i], 4);
            /* Payload kept; vcvtph2ps may set the quiet bit (0x200). */
            assert_int_equal((b >> 13) & 0x1FF, i & 0x1FF);
            assert_int_equal(b >> 31, i >> 15);
        } else {
            assert_true((double)out[i] == r);
            assert_int_equal(signbit(out[i]) != 0, (i >> 15) != 0);
        }
    }
    assert_true(out[0x0001] == (float)ldexp(1, -24));
    assert_true(out[0x7C00] == INFINITY && out[0xFC00] == -INFINITY);
    assert_true(out[0x7BFF] == 65504.0f);
    /* bf16: the top half of an f32; odd lengths exercise the tails. */
    px_nn_to_f32(PX_NN_BF16, raw + 1, out, 65531);
    for (uint32_t i = 0; i < 65531; i++) {
        uint32_t b;
        memcpy(&b, &out[i], 4);
        assert_int_equal(b, i << 16);
    }
    float src[5] = {1.5f, -2.0f, 0.0f, 3.25f, 1e-30f}, dst[5];
    px_nn_to_f32(PX_NN_F32, src, dst, 5);
    assert_memory_equal(src, dst, sizeof src);
    assert_int_equal(px_nn_dtype_size(PX_NN_F32), 4);
    assert_int_equal(px_nn_dtype_size(PX_NN_BF16), 2);
    assert_string_equal(px_nn_dtype_name(PX_NN_F16), "f16");
    assert_string_equal(px_nn_dtype_name(PX_NN_BF16), "bf16");
    free(raw);
    free(out);
}

/* ---- linear ---- */

static void linear_case(int64_t n, int64_t cols, int64_t rows, int64_t ldx, int64_t ldy,
                        int use_bias, int accumulate, px_nn_dtype t)
{
    float *x = rand_buf((size_t)(n * ldx));
    float *w0 = rand_buf((size_t)(rows * cols));
    float *bias = use_bias ? rand_buf((size_t)rows) : NULL;
    float *y0 = rand_buf((size_t)(n * ldy));
    void *store;
    float *wf;
    px_nn_mat w = make_mat(w0, rows, cols, t, &store, &wf);
    size_t ny = (size_t)(n * ldy);
    double *ref = malloc(ny * sizeof(double)), *mag = malloc(ny * sizeof(double));
    assert_non_null(ref);
    assert_non_null(mag);
    for (size_t i = 0; i < ny; i++) {
        ref[i] = y0[i];
        mag[i] = 0.0;
    }
    for (int64_t i = 0; i < n; i++) {
        for (int64_t j = 0; j < rows; j++) {
            double s = bias ? bias[j] : 0.0, m = fabs(s);
            for (int64_t k = 0; k < cols; k++) {
                double p = (double)x[i * ldx + k] * wf[j * cols + k];
                s += p;
                m += fabs(p);
            }
            if (accumulate) {
                s += y0[i * ldy + j];
                m += fabs(y0[i * ldy + j]);
            }
            ref[i * ldy + j] = s;
            mag[i * ldy + j] = m;
        }
    }
    float *first = NULL;
    for (int p = 0; p < 3; p++) {
        float *y = copy_buf(y0, ny);
        px_nn_flops_reset();
        assert_int_equal(px_nn_linear(x, n, ldx, &w, bias, y, ldy, accumulate, g_arena, g_pools[p]),
                         PX_OK);
        assert_true(px_nn_flops() == (uint64_t)(2 * n * rows * cols));
        check_close(y, ref, mag, ny, "linear");
        if (first) {
            assert_memory_equal(first, y, ny * sizeof(float));
            free(y);
        } else {
            first = y;
        }
    }
    free(first);
    free(x);
    free(w0);
    free(bias);
    free(y0);
    free(store);
    free(wf);
    free(ref);
    free(mag);
}

static void test_linear(void **state)
{
    (void)state;
    linear_case(7, 37, 70, 37, 70, 1, 0, PX_NN_F32);
    linear_case(2, 5, 3, 9, 4, 0, 1, PX_NN_F32);
    linear_case(1100, 33, 131, 40, 135, 1, 1, PX_NN_F32); /* several token and row blocks */
    linear_case(13, 48, 67, 50, 67, 1, 0, PX_NN_F16);
    linear_case(1030, 24, 129, 24, 130, 0, 1, PX_NN_F16);
    linear_case(9, 31, 65, 31, 70, 1, 1, PX_NN_BF16);
}

/* ---- conv2d ---- */

static void conv_case(int batch, int c_in, int h, int wd, int c_out, int k, int stride, int pad,
                      int use_bias, int accumulate, px_nn_dtype t)
{
    px_nn_conv2d_shape s = {.batch = batch,
                            .c_in = c_in,
                            .h = h,
                            .w = wd,
                            .c_out = c_out,
                            .k = k,
                            .stride = stride,
                            .pad = pad};
    int oh, ow;
    px_nn_conv2d_out_size(&s, &oh, &ow);
    assert_int_equal(oh, (h + 2 * pad - k) / stride + 1);
    int64_t kd = (int64_t)c_in * k * k;
    float *x = rand_buf((size_t)batch * c_in * h * wd);
    float *w0 = rand_buf((size_t)(c_out * kd));
    float *bias = use_bias ? rand_buf((size_t)c_out) : NULL;
    size_t ny = (size_t)batch * c_out * oh * ow;
    float *y0 = rand_buf(ny);
    void *store;
    float *wf;
    px_nn_mat w = make_mat(w0, c_out, kd, t, &store, &wf);
    double *ref = malloc(ny * sizeof(double)), *mag = malloc(ny * sizeof(double));
    assert_non_null(ref);
    assert_non_null(mag);
    for (int b = 0; b < batch; b++)
        for (int o = 0; o < c_out; o++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    size_t yi = (((size_t)b * c_out + o) * oh + oy) * ow + ox;
                    double sum = bias ? bias[o] : 0.0, m = fabs(sum);
                    if (accumulate) {
                        sum += y0[yi];
                        m += fabs(y0[yi]);
                    }
                    for (int ci = 0; ci < c_in; ci++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
                                if (iy < 0 || iy >= h || ix < 0 || ix >= wd)
                                    continue;
                                double p = (double)x[(((size_t)b * c_in + ci) * h + iy) * wd + ix] *
                                           wf[(size_t)o * kd + (ci * k + ky) * k + kx];
                                sum += p;
                                m += fabs(p);
                            }
                    ref[yi] = sum;
                    mag[yi] = m;
                }
    float *first = NULL;
    for (int p = 0; p < 3; p++) {
        float *y = copy_buf(y0, ny);
        assert_int_equal(px_nn_conv2d(x, &s, &w, bias, y, accumulate, g_arena, g_pools[p]), PX_OK);
        check_close(y, ref, mag, ny, "conv2d");
        if (first) {
            assert_memory_equal(first, y, ny * sizeof(float));
            free(y);
        } else {
            first = y;
        }
    }
    free(first);
    free(x);
    free(w0);
    free(bias);
    free(y0);
    free(store);
    free(wf);
    free(ref);
    free(mag);
}

static void test_conv2d(void **state)
{
    (void)state;
    conv_case(2, 3, 9, 7, 5, 3, 1, 1, 1, 0, PX_NN_F32);
    conv_case(2, 4, 9, 8, 6, 3, 2, 1, 1, 1, PX_NN_F32);      /* downsample */
    conv_case(1, 5, 6, 5, 3, 3, 1, 0, 0, 0, PX_NN_F16);      /* no padding */
    conv_case(2, 7, 5, 9, 4, 1, 1, 0, 1, 1, PX_NN_F32);      /* 1x1: plain GEMM */
    conv_case(2, 6, 41, 40, 130, 1, 1, 0, 1, 0, PX_NN_BF16); /* 1x1, several tiles and row blocks */
    conv_case(2, 3, 7, 7, 4, 1, 2, 0, 1, 0, PX_NN_F32);      /* 1x1 stride 2 goes through im2col */
    /* Over 1024 batch x pixels: per-image tiles; below: all images in one GEMM. */
    conv_case(2, 600, 24, 24, 3, 3, 1, 1, 1, 1, PX_NN_F16); /* several im2col tiles */
    conv_case(2, 3, 50, 47, 5, 3, 2, 1, 1, 0, PX_NN_F32);   /* tiled, stride 2 */
    conv_case(2, 5, 6, 7, 40, 3, 1, 1, 1, 1, PX_NN_BF16);   /* few pixels, two row blocks */
}

/* ---- attention ---- */

/* q (batch, nq, ldq), k/v (batch, nk, ldk/ldv); returns ref and mag for out. */
static void attention_ref(const float *q, const float *k, const float *v, const px_nn_attn_shape *s,
                          double *ref, double *mag)
{
    double *sc = malloc((size_t)s->nk * sizeof(double)),
           *sm = malloc((size_t)s->nk * sizeof(double));
    assert_non_null(sc);
    assert_non_null(sm);
    for (int b = 0; b < s->batch; b++)
        for (int h = 0; h < s->heads; h++)
            for (int i = 0; i < s->nq; i++) {
                const float *qi = q + ((size_t)b * s->nq + i) * s->ldq + (size_t)h * s->dh;
                int len = s->causal ? (i + 1 < s->nk ? i + 1 : s->nk) : s->nk;
                double mx = -INFINITY, sum = 0.0;
                for (int j = 0; j < len; j++) {
                    const float *kj = k + ((size_t)b * s->nk + j) * s->ldk + (size_t)h * s->dh;
                    double d = 0.0, m = 0.0;
                    for (int e = 0; e < s->dh; e++) {
                        d += (double)qi[e] * kj[e];
                        m += fabs((double)qi[e] * kj[e]);
                    }
                    sc[j] = d * s->scale;
                    sm[j] = m * fabs(s->scale);
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (int j = 0; j < len; j++) {
                    sc[j] = exp(sc[j] - mx);
                    sum += sc[j];
                }
                for (int e = 0; e < s->dh; e++) {
                    double o = 0.0, m = 0.0;
                    for (int j = 0; j < len; j++) {
                        double vv = v[((size_t)b * s->nk + j) * s->ldv + (size_t)h * s->dh + e];
                        o += sc[j] / sum * vv;
                        m += sc[j] / sum * fabs(vv) * (2.0 + sm[j]);
                    }
                    size_t oi = ((size_t)b * s->nq + i) * s->ldo + (size_t)h * s->dh + e;
                    ref[oi] = o;
                    mag[oi] = m;
                }
            }
    free(sc);
    free(sm);
}

static void attention_case(int batch, int nq, int nk, int heads, int dh, int causal, int fused)
{
    int hd = heads * dh;
    px_nn_attn_shape s = {.batch = batch,
                          .nq = nq,
                          .nk = nk,
                          .heads = heads,
                          .dh = dh,
                          .scale = 1.0f / sqrtf((float)dh),
                          .causal = causal};
    float *qbuf, *kvbuf;
    const float *q, *k, *v;
    if (fused) { /* self-attention: q, k, v are column slices of one buffer */
        assert_int_equal(nq, nk);
        s.ldq = s.ldk = s.ldv = 3 * hd + 2;
        qbuf = rand_buf((size_t)batch * nq * s.ldq);
        kvbuf = NULL;
        q = qbuf;
        k = qbuf + hd;
        v = qbuf + 2 * hd;
    } else {
        s.ldq = hd + 3;
        s.ldk = s.ldv = 2 * hd + 1;
        qbuf = rand_buf((size_t)batch * nq * s.ldq);
        kvbuf = rand_buf((size_t)batch * nk * s.ldk);
        q = qbuf;
        k = kvbuf;
        v = kvbuf + hd;
    }
    /* Larger q makes the softmax peaky, which tests the max subtraction. */
    for (size_t i = 0; i < (size_t)batch * nq * s.ldq; i++)
        qbuf[i] *= 4.0f;
    s.ldo = hd + 5;
    size_t no = (size_t)batch * nq * s.ldo;
    float *o0 = rand_buf(no);
    double *ref = malloc(no * sizeof(double)), *mag = malloc(no * sizeof(double));
    assert_non_null(ref);
    assert_non_null(mag);
    for (size_t i = 0; i < no; i++) {
        ref[i] = o0[i]; /* the gaps between rows stay untouched */
        mag[i] = 0.0;
    }
    attention_ref(q, k, v, &s, ref, mag);
    float *first = NULL;
    for (int p = 0; p < 3; p++) {
        float *o = copy_buf(o0, no);
        assert_int_equal(px_nn_attention(q, k, v, o, &s, g_arena, g_pools[p]), PX_OK);
        check_close(o, ref, mag, no, "attention");
        if (first) {
            assert_memory_equal(first, o, no * sizeof(float));
            free(o);
        } else {
            first = o;
        }
    }
    free(first);
    free(qbuf);
    free(kvbuf);
    free(o0);
    free(ref);
    free(mag);
}

static void test_attention(void **state)
{
    (void)state;
    attention_case(2, 70, 70, 3, 8, 0, 1);  /* self, two query tiles */
    attention_case(2, 70, 70, 2, 5, 1, 1);  /* causal (CLIP) */
    attention_case(2, 33, 77, 3, 8, 0, 0);  /* cross-attention to 77 tokens */
    attention_case(1, 130, 9, 1, 40, 0, 0); /* more queries than keys */
    attention_case(2, 150, 20, 2, 4, 1, 0); /* causal with nk < nq */
    /* Past the 512-query tiles and 512-key blocks: the online softmax. */
    attention_case(1, 600, 600, 1, 8, 1, 1);
    attention_case(2, 530, 1100, 2, 4, 0, 0);
    /* Heads wider than the AVX-512 kernel's 64-float chunks, odd row groups. */
    attention_case(2, 13, 37, 2, 80, 0, 0);
    attention_case(1, 20, 20, 1, 150, 1, 1);
    attention_case(1, 15, 9, 1, 56, 0, 0); /* 3 vectors + a half-vector tail */
}

/* ---- normalisation ---- */

static void test_group_norm(void **state)
{
    (void)state;
    const int batch = 2, c = 12, groups = 4;
    const int64_t hw = 17;
    size_t n = (size_t)batch * c * hw;
    float *x = rand_buf(n), *gamma = rand_buf(c), *beta = rand_buf(c);
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] * 3.0f + 1000.0f; /* a large mean: float E[x^2]-E[x]^2 would fail */
    double *ref = malloc(n * sizeof(double)), *mag = malloc(n * sizeof(double));
    assert_non_null(ref);
    assert_non_null(mag);
    for (int silu = 0; silu < 2; silu++) {
        int cpg = c / groups;
        for (int b = 0; b < batch; b++)
            for (int g = 0; g < groups; g++) {
                size_t off = ((size_t)b * c + (size_t)g * cpg) * hw, len = (size_t)cpg * hw;
                double mean = 0.0, var = 0.0;
                for (size_t i = 0; i < len; i++)
                    mean += x[off + i];
                mean /= (double)len;
                for (size_t i = 0; i < len; i++)
                    var += (x[off + i] - mean) * (x[off + i] - mean);
                var /= (double)len;
                for (size_t i = 0; i < len; i++) {
                    int ch = g * cpg + (int)(i / hw);
                    double y = (x[off + i] - mean) / sqrt(var + 1e-5) * gamma[ch] + beta[ch];
                    mag[off + i] = fabs(y) + fabs(beta[ch]) + 1.0;
                    ref[off + i] = silu ? y / (1.0 + exp(-y)) : y;
                }
            }
        float *first = NULL;
        for (int p = 0; p < 3; p++) {
            float *y = copy_buf(x, n);
            px_nn_group_norm(y, y, batch, c, hw, groups, gamma, beta, 1e-5f, silu, g_pools[p]);
            check_tol(y, ref, mag, n, 2e-6, 0.0, "group_norm");
            if (first) {
                assert_memory_equal(first, y, n * sizeof(float));
                free(y);
            } else {
                first = y;
            }
        }
        float *y2 = malloc(n * sizeof(float)); /* out of place gives the same */
        assert_non_null(y2);
        px_nn_group_norm(x, y2, batch, c, hw, groups, gamma, beta, 1e-5f, silu, NULL);
        assert_memory_equal(first, y2, n * sizeof(float));
        free(y2);
        free(first);
    }
    free(x);
    free(gamma);
    free(beta);
    free(ref);
    free(mag);
}

static void test_layer_norm(void **state)
{
    (void)state;
    const int64_t n = 5, d = 33, ldx = 40, ldy = 35;
    float *x = rand_buf((size_t)(n * ldx)), *gamma = rand_buf(d), *beta = rand_buf(d);
    float *y0 = rand_buf((size_t)(n * ldy));
    for (int64_t i = 0; i < n * ldx; i++)
        x[i] = x[i] * 0.5f - 200.0f;
    double *ref = malloc((size_t)(n * ldy) * sizeof(double));
    double *mag = malloc((size_t)(n * ldy) * sizeof(double));
    assert_non_null(ref);
    assert_non_null(mag);
    for (int64_t i = 0; i < n * ldy; i++) {
        ref[i] = y0[i];
        mag[i] = 0.0;
    }
    for (int64_t r = 0; r < n; r++) {
        double mean = 0.0, var = 0.0;
        for (int64_t i = 0; i < d; i++)
            mean += x[r * ldx + i];
        mean /= (double)d;
        for (int64_t i = 0; i < d; i++)
            var += (x[r * ldx + i] - mean) * (x[r * ldx + i] - mean);
        var /= (double)d;
        for (int64_t i = 0; i < d; i++) {
            double v = (x[r * ldx + i] - mean) / sqrt(var + 1e-5);
            ref[r * ldy + i] = v * gamma[i] + beta[i];
            mag[r * ldy + i] = fabs(v * gamma[i]) + fabs(beta[i]) + 1.0;
        }
    }
    float *first = NULL;
    for (int p = 0; p < 3; p++) {
        float *y = copy_buf(y0, (size_t)(n * ldy));
        px_nn_layer_norm(x, ldx, y, ldy, n, d, gamma, beta, 1e-5f, g_pools[p]);
        check_tol(y, ref, mag, (size_t)(n * ldy), 2e-6, 0.0, "layer_norm");
        if (first) {
            assert_memory_equal(first, y, (size_t)(n * ldy) * sizeof(float));
            free(y);
        } else {
            first = y;
        }
    }
    /* In place (x == y, same stride). */
    float *xi = copy_buf(x, (size_t)(n * ldx));
    px_nn_layer_norm(xi, ldx, xi, ldx, n, d, gamma, beta, 1e-5f, g_pools[1]);
    for (int64_t r = 0; r < n; r++)
        assert_memory_equal(xi + r * ldx, first + r * ldy, (size_t)d * sizeof(float));
    free(xi);
    free(first);
    free(x);
    free(gamma);
    free(beta);
    free(y0);
    free(ref);
    free(mag);
}

/* ---- elementwise ---- */

static double act_ref(double x, px_nn_act act)
{
    switch (act) {
    case PX_NN_SILU:
        return x / (1.0 + exp(-x));
    case PX_NN_GELU:
        return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case PX_NN_GELU_TANH:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case PX_NN_QUICK_GELU:
        return x / (1.0 + exp(-1.702 * x));
    case PX_NN_RELU:
        return x > 0 ? x : 0;
    case PX_NN_TANH:
        return tanh(x);
    }
    return NAN;
}

static void test_activate(void **state)
{
    (void)state;
    const size_t n = 40007; /* more than two blocks, odd tail */
    float *x = rand_buf(n);
    for (size_t i = 0; i < n; i++)
        x[i] *= 8.0f;
    const float special[] = {0.0f,   -0.0f, 1e-30f, -1e-30f, 30.0f,
                             -30.0f, 90.0f, -90.0f, 1e4f,    -1e4f};
    memcpy(x, special, sizeof special);
    double *ref = malloc(n * sizeof(double)), *mag = malloc(n * sizeof(double));
    assert_non_null(ref);
    assert_non_null(mag);
    for (int a = PX_NN_SILU; a <= PX_NN_TANH; a++) {
        for (size_t i = 0; i < n; i++) {
            ref[i] = act_ref(x[i], (px_nn_act)a);
            mag[i] = fabs(ref[i]) + 1e-3 * fabs(x[i]);
        }
        float *first = NULL;
        for (int p = 0; p < 3; p++) {
            float *y = copy_buf(x, n);
            px_nn_activate(y, n, (px_nn_act)a, g_pools[p]);
            check_tol(y, ref, mag, n, 4e-6, 1e-30, "activate");
            if (first) {
                assert_memory_equal(first, y, n * sizeof(float));
                free(y);
            } else {
                first = y;
            }
        }
        free(first);
    }
    free(x);
    free(ref);
    free(mag);
}

static void test_geglu(void **state)
{
    (void)state;
    const int64_t n = 7, d = 45, ldi = 2 * d + 3, ldo = d + 1;
    float *in = rand_buf((size_t)(n * ldi));
    for (int64_t i = 0; i < n * ldi; i++)
        in[i] *= 5.0f;
    size_t no = (size_t)(n * ldo);
    float *o0 = rand_buf(no);
    double *ref = malloc(no * sizeof(double)), *mag = malloc(no * sizeof(double));
    assert_non_null(ref);
    assert_non_null(mag);
    for (size_t i = 0; i < no; i++) {
        ref[i] = o0[i];
        mag[i] = 0.0;
    }
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < d; j++) {
            double g = act_ref(in[r * ldi + d + j], PX_NN_GELU);
            ref[r * ldo + j] = in[r * ldi + j] * g;
            mag[r * ldo + j] = fabs(ref[r * ldo + j]) + 1e-3 * fabs(in[r * ldi + j]);
        }
    float *first = NULL;
    for (int p = 0; p < 3; p++) {
        float *o = copy_buf(o0, no);
        px_nn_geglu(in, ldi, o, ldo, n, d, g_pools[p]);
        check_tol(o, ref, mag, no, 4e-6, 1e-30, "geglu");
        if (first) {
            assert_memory_equal(first, o, no * sizeof(float));
            free(o);
        } else {
            first = o;
        }
    }
    /* In place: the output overwrites the value half of each row. */
    float *io = copy_buf(in, (size_t)(n * ldi));
    px_nn_geglu(io, ldi, io, ldi, n, d, g_pools[1]);
    for (int64_t r = 0; r < n; r++)
        assert_memory_equal(io + r * ldi, first + r * ldo, (size_t)d * sizeof(float));
    free(io);
    free(first);
    free(in);
    free(o0);
    free(ref);
    free(mag);
}

static void test_add_axpby(void **state)
{
    (void)state;
    const size_t n = 33333;
    float *a = rand_buf(n), *b = rand_buf(n), *y = malloc(n * sizeof(float));
    assert_non_null(y);
    px_nn_add(a, b, y, n, g_pools[1]);
    for (size_t i = 0; i < n; i++)
        assert_true(y[i] == a[i] + b[i]);
    px_nn_axpby(0.25f, a, -3.0f, b, y, n, g_pools[2]);
    for (size_t i = 0; i < n; i++)
        assert_true(fabs(y[i] - (0.25 * a[i] - 3.0 * b[i])) <=
                    1e-6 * (fabs(a[i]) + 3 * fabs(b[i])));
    float *a2 = copy_buf(a, n);
    px_nn_axpby(0.25f, a2, -3.0f, b, a2, n, g_pools[0]); /* y aliases a */
    assert_memory_equal(a2, y, n * sizeof(float));
    float *b0 = copy_buf(b, n);
    px_nn_add(a, b, b, n, NULL); /* y aliases b */
    for (size_t i = 0; i < n; i++)
        assert_true(b[i] == a[i] + b0[i]);
    free(b0);
    free(a);
    free(a2);
    free(b);
    free(y);
    /* Per-channel add. */
    const int batch = 2, c = 3;
    const int64_t hw = 11;
    float *x = rand_buf((size_t)batch * c * hw), *v = rand_buf((size_t)batch * c);
    float *x0 = copy_buf(x, (size_t)batch * c * hw);
    px_nn_add_channel(x, v, batch, c, hw, g_pools[2]);
    for (int bb = 0; bb < batch; bb++)
        for (int ch = 0; ch < c; ch++)
            for (int64_t i = 0; i < hw; i++) {
                size_t k = ((size_t)bb * c + ch) * hw + i;
                assert_true(x[k] == x0[k] + v[bb * c + ch]);
            }
    free(x);
    free(x0);
    free(v);
}

/* ---- layout ---- */

static void test_layout(void **state)
{
    (void)state;
    const int batch = 2;
    const int64_t rows = 37, cols = 70;
    float *in = rand_buf((size_t)(batch * rows * cols));
    float *out = malloc((size_t)(batch * rows * cols) * sizeof(float));
    float *back = malloc((size_t)(batch * rows * cols) * sizeof(float));
    assert_non_null(out);
    assert_non_null(back);
    px_nn_transpose(in, out, batch, rows, cols, g_pools[1]);
    for (int b = 0; b < batch; b++)
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++)
                assert_true(out[(b * cols + j) * rows + i] == in[(b * rows + i) * cols + j]);
    px_nn_transpose(out, back, batch, cols, rows, g_pools[2]);
    assert_memory_equal(in, back, (size_t)(batch * rows * cols) * sizeof(float));
    free(in);
    free(out);
    free(back);

    const int64_t planes = 5;
    const int h = 3, w = 7;
    float *u = rand_buf((size_t)(planes * h * w));
    float *u2 = malloc((size_t)(planes * 4 * h * w) * sizeof(float));
    assert_non_null(u2);
    px_nn_upsample2x(u, u2, planes, h, w, g_pools[2]);
    for (int64_t p = 0; p < planes; p++)
        for (int y = 0; y < 2 * h; y++)
            for (int x = 0; x < 2 * w; x++)
                assert_true(u2[(p * 2 * h + y) * 2 * w + x] == u[(p * h + y / 2) * w + x / 2]);
    free(u);
    free(u2);

    const int ca = 3, cb = 2;
    const int64_t hw = 13;
    float *a = rand_buf((size_t)(batch * ca * hw)), *b = rand_buf((size_t)(batch * cb * hw));
    float *cat = malloc((size_t)(batch * (ca + cb) * hw) * sizeof(float));
    assert_non_null(cat);
    px_nn_concat_channels(a, ca, b, cb, cat, batch, hw, g_pools[1]);
    for (int bb = 0; bb < batch; bb++) {
        assert_memory_equal(cat + (size_t)bb * (ca + cb) * hw, a + (size_t)bb * ca * hw,
                            (size_t)(ca * hw) * sizeof(float));
        assert_memory_equal(cat + ((size_t)bb * (ca + cb) + ca) * hw, b + (size_t)bb * cb * hw,
                            (size_t)(cb * hw) * sizeof(float));
    }
    free(a);
    free(b);
    free(cat);
}

static void test_isa(void **state)
{
    (void)state;
    const char *isa = px_nn_ops_isa();
    assert_true(!strcmp(isa, "avx512") || !strcmp(isa, "avx2+fma+f16c") || !strcmp(isa, "generic"));
    static const char *const names[] = {"generic", "avx2+fma+f16c", "avx512"};
    assert_string_equal(isa, names[px_nn_ops_level()]);
    px_nn_force_generic(1);
    assert_string_equal(px_nn_ops_isa(), "generic");
    px_nn_force_generic(g_generic);
    assert_string_equal(px_nn_ops_isa(), isa);
}

static int setup(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++)
        if (px_pool_create(i + 1, &g_pools[i]))
            return -1;
    return px_nn_arena_create(1 << 20, &g_arena);
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++)
        px_pool_destroy(g_pools[i]);
    px_nn_arena_destroy(g_arena);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena),      cmocka_unit_test(test_to_f32),
        cmocka_unit_test(test_linear),     cmocka_unit_test(test_conv2d),
        cmocka_unit_test(test_attention),  cmocka_unit_test(test_group_norm),
        cmocka_unit_test(test_layer_norm), cmocka_unit_test(test_activate),
        cmocka_unit_test(test_geglu),      cmocka_unit_test(test_add_axpby),
        cmocka_unit_test(test_layout),     cmocka_unit_test(test_isa),
    };
    int fails = 0;
    if (px_nn_ops_level() == PX_OPS_AVX512) {
        fails += cmocka_run_group_tests_name("nn_ops (avx512)", tests, setup, teardown);
        px_nn_ops_cap_level(PX_OPS_AVX2);
    }
    if (px_nn_ops_level() == PX_OPS_AVX2)
        fails += cmocka_run_group_tests_name("nn_ops (avx2)", tests, setup, teardown);
    px_nn_ops_cap_level(PX_OPS_AVX512);
    g_generic = 1;
    px_nn_force_generic(1);
    fails += cmocka_run_group_tests_name("nn_ops (generic)", tests, setup, teardown);
    px_nn_force_generic(0);
    return fails;
}
