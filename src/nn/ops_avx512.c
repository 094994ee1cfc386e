/*
 * AVX-512 (F, BW, VL, DQ) code of the px_nn_ops kernels, built with
 * -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c and called only
 * when the CPU has them (px_nn_ops_level).
 *
 * exp: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact
 * product), e^r by its Taylor series to r^7 (truncation < 1e-8 relative),
 * and vscalefps for the 2^n, which also gives the right 0 / denormal / inf at
 * the ends of the range. Exact GELU uses erfc(z) = t exp(-z^2 + P(t)) with
 * t = 1 / (1 + z/2), z >= 0 (the classic 10-term Chebyshev fit, relative error
 * below 1.2e-7 over the whole line, as in Numerical Recipes' erfcc), and
 * erfc(-z) = 2 - erfc(z). Tails are done with masked loads and stores, so
 * each element gets the same arithmetic wherever it sits.
 */
#include "ops_internal.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

void px_nn_f16_to_f32_avx512(const void *src, float *dst, size_t n)
{
    const unsigned char *s = src;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(s + 2 * i));
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(h));
    }
    px_nn_f16_to_f32_generic(s + 2 * i, dst + i, n - i);
}

void px_nn_bf16_to_f32_avx512(const void *src, float *dst, size_t n)
{
    const unsigned char *s = src;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm256_loadu_si256((const __m256i *)(s + 2 * i));
        __m512i w = _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16);
        _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(w));
    }
    px_nn_bf16_to_f32_generic(s + 2 * i, dst + i, n - i);
}

static inline __mmask16 tail_mask(int64_t left)
{
    return left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
}

static inline __m512 exp16(__m512 x)
{
    /* Keep NaN (max/min return their second operand when one is NaN) and
     * stay where n ln2 + r is exact; scalef saturates beyond. */
    x = _mm512_min_ps(_mm512_set1_ps(100.0f), _mm512_max_ps(_mm512_set1_ps(-110.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.42860682030941723212e-6f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* x * sigmoid(k x) = x / (1 + e^{-k x}) */
static inline __m512 xsigmoid16(__m512 x, __m512 kx)
{
    __m512 e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), kx));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* Exact GELU: 0.5 x erfc(-x / sqrt 2). */
static inline __m512 gelu16(__m512 x)
{
    __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(-0.70710678118654752f));
    __m512 a = _mm512_abs_ps(z);
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f),
                             _mm512_fmadd_ps(a, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(0.17087277f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.82215223f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.48851587f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.13520398f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.27886807f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.18628806f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.09678418f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.37409196f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.00002368f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.26551223f));
    __m512 y = _mm512_mul_ps(t, exp16(_mm512_fnmadd_ps(a, a, p)));
    __mmask16 neg = _mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_LT_OQ);
    y = _mm512_mask_sub_ps(y, neg, _mm512_set1_ps(2.0f), y);
    return _mm512_mul_ps(_mm512_mul_ps(x, _mm512_set1_ps(0.5f)), y);
}

static inline __m512 act16(__m512 x, px_nn_act act)
{
    switch (act) {
    case PX_NN_SILU:
        return xsigmoid16(x, x);
    case PX_NN_GELU:
        return gelu16(x);
    case PX_NN_GELU_TANH: {
        __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
        __m512 u = _mm512_fmadd_ps(x3, _mm512_set1_ps(0.044715f), x);
        return xsigmoid16(x, _mm512_mul_ps(u, _mm512_set1_ps(1.5957691216057308f)));
    }
    case PX_NN_QUICK_GELU:
        return xsigmoid16(x, _mm512_mul_ps(x, _mm512_set1_ps(1.702f)));
    case PX_NN_RELU:
        return _mm512_max_ps(x, _mm512_setzero_ps());
    case PX_NN_TANH:
        break;
    }
    return x;
}

static float v_max(const float *x, int64_t n)
{
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16) {
        __m512 v = _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail_mask(n - i), x + i);
        m = _mm512_max_ps(m, v);
    }
    return _mm512_reduce_max_ps(m);
}

static float v_expsum(float *x, int64_t n, float mx)
{
    __m512 s = _mm512_setzero_ps(), m = _mm512_set1_ps(mx);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), m));
        _mm512_mask_storeu_ps(x + i, k, e);
        s = _mm512_mask_add_ps(s, k, s, e);
    }
    return _mm512_reduce_add_ps(s);
}

static void v_act(float *x, int64_t n, px_nn_act act)
{
    if (act == PX_NN_TANH) {
        px_nn_vec_generic.act(x, n, act);
        return;
    }
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, k, act16(_mm512_maskz_loadu_ps(k, x + i), act));
    }
}

static void v_geglu(const float *val, const float *gate, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 g = gelu16(_mm512_maskz_loadu_ps(k, gate + i));
        _mm512_mask_storeu_ps(out + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, val + i), g));
    }
}

static void v_norm_apply(const float *x, float *y, int64_t n, float mhi, float mlo, float a,
                         float b, int silu)
{
    __m512 vh = _mm512_set1_ps(mhi), vl = _mm512_set1_ps(mlo), va = _mm512_set1_ps(a),
           vb = _mm512_set1_ps(b);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 v = _mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vh), vl);
        v = _mm512_fmadd_ps(v, va, vb);
        if (silu)
            v = xsigmoid16(v, v);
        _mm512_mask_storeu_ps(y + i, k, v);
    }
}

static double v_sum(const float *x, int64_t n)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm256_loadu_ps(x + i)));
        s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)));
    }
    double s = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    for (; i < n; i++)
        s += x[i];
    return s;
}

static double v_ssd(const float *x, int64_t n, double mean)
{
    __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd(), m = _mm512_set1_pd(mean);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512d d0 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i)), m);
        __m512d d1 = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)), m);
        s0 = _mm512_fmadd_pd(d0, d0, s0);
        s1 = _mm512_fmadd_pd(d1, d1, s1);
    }
    double s = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    for (; i < n; i++) {
        double d = x[i] - mean;
        s += d * d;
    }
    return s;
}

const px_nn_vec_ops px_nn_vec_avx512 = {
    .max = v_max,
    .expsum = v_expsum,
    .act = v_act,
    .geglu = v_geglu,
    .norm_apply = v_norm_apply,
    .sum = v_sum,
    .ssd = v_ssd,
    .transpose8 = px_nn_transpose8_avx2,
};
