/*
 * AVX2 + FMA + F16C code of the px_nn_ops kernels, built with
 * -mavx2 -mfma -mf16c and called only when the CPU has them
 * (px_nn_ops_level). Vector loads are unaligned so that weights can point
 * anywhere into a mapped file.
 *
 * The math is that of ops_avx512.c (exp by n ln2 + r and a degree-7 Taylor
 * polynomial, erfc by its Chebyshev fit) with the 2^n built in the exponent
 * bits, so exp is clamped to the normal range: below -87.3 it returns 0 and
 * above 88.37 it returns inf. Tails go through an 8-float buffer so each
 * element gets the same arithmetic wherever it sits.
 */
#include "ops_internal.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

void px_nn_f16_to_f32_avx2(const void *src, float *dst, size_t n)
{
    const unsigned char *s = src;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + 2 * i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    px_nn_f16_to_f32_generic(s + 2 * i, dst + i, n - i);
}

void px_nn_bf16_to_f32_avx2(const void *src, float *dst, size_t n)
{
    const unsigned char *s = src;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + 2 * i));
        __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(w));
    }
    px_nn_bf16_to_f32_generic(s + 2 * i, dst + i, n - i);
}

#define EXP_LO -87.3365447505531f /* ln(FLT_MIN) */
#define EXP_HI 88.3762626647949f  /* largest x with round(x / ln2) <= 127 */

static inline __m256 exp8(__m256 x)
{
    __m256 lo = _mm256_set1_ps(EXP_LO), hi = _mm256_set1_ps(EXP_HI);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ), over = _mm256_cmp_ps(x, hi, _CMP_GT_OQ);
    x = _mm256_min_ps(hi, _mm256_max_ps(lo, x)); /* NaN passes through */
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860682030941723212e-6f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e =
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    y = _mm256_andnot_ps(under, y);
    return _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), over);
}

static inline __m256 xsigmoid8(__m256 x, __m256 kx)
{
    __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), kx));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static inline __m256 gelu8(__m256 x)
{
    __m256 z = _mm256_mul_ps(x, _mm256_set1_ps(-0.70710678118654752f));
    __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), z);
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f),
                             _mm256_fmadd_ps(a, _mm256_set1_ps(0.5f), _mm256_set1_ps(1.0f)));
    __m256 p = _mm256_set1_ps(0.17087277f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.82215223f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.48851587f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.13520398f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.27886807f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.18628806f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.09678418f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.37409196f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.00002368f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.26551223f));
    __m256 y = _mm256_mul_ps(t, exp8(_mm256_fnmadd_ps(a, a, p)));
    __m256 neg = _mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_LT_OQ);
    y = _mm256_blendv_ps(y, _mm256_sub_ps(_mm256_set1_ps(2.0f), y), neg);
    return _mm256_mul_ps(_mm256_mul_ps(x, _mm256_set1_ps(0.5f)), y);
}

static inline __m256 act8(__m256 x, px_nn_act act)
{
    switch (act) {
    case PX_NN_SILU:
        return xsigmoid8(x, x);
    case PX_NN_GELU:
        return gelu8(x);
    case PX_NN_GELU_TANH: {
        __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
        __m256 u = _mm256_fmadd_ps(x3, _mm256_set1_ps(0.044715f), x);
        return xsigmoid8(x, _mm256_mul_ps(u, _mm256_set1_ps(1.5957691216057308f)));
    }
    case PX_NN_QUICK_GELU:
        return xsigmoid8(x, _mm256_mul_ps(x, _mm256_set1_ps(1.702f)));
    case PX_NN_RELU:
        return _mm256_max_ps(x, _mm256_setzero_ps());
    case PX_NN_TANH:
        break;
    }
    return x;
}

/* Loads the last n < 8 floats into a buffer padded with fill. */
static inline __m256 load_tail(const float *x, int64_t n, float fill)
{
    float buf[8];
    for (int i = 0; i < 8; i++)
        buf[i] = i < n ? x[i] : fill;
    return _mm256_loadu_ps(buf);
}

static inline void store_tail(float *y, int64_t n, __m256 v)
{
    float buf[8];
    _mm256_storeu_ps(buf, v);
    memcpy(y, buf, (size_t)n * sizeof(float));
}

static inline float hsum8(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static float v_max(const float *x, int64_t n)
{
    __m256 m = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    if (i < n)
        m = _mm256_max_ps(m, load_tail(x + i, n - i, -INFINITY));
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static float v_expsum(float *x, int64_t n, float mx)
{
    __m256 s = _mm256_setzero_ps(), m = _mm256_set1_ps(mx);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), m));
        _mm256_storeu_ps(x + i, e);
        s = _mm256_add_ps(s, e);
    }
    if (i < n) {
        /* Padding of -inf gives exp = 0, so the sum is unchanged. */
        __m256 e = exp8(_mm256_sub_ps(load_tail(x + i, n - i, -INFINITY), m));
        store_tail(x + i, n - i, e);
        s = _mm256_add_ps(s, e);
    }
    return hsum8(s);
}

static void v_act(float *x, int64_t n, px_nn_act act)
{
    if (act == PX_NN_TANH) {
        px_nn_vec_generic.act(x, n, act);
        return;
    }
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, act8(_mm256_loadu_ps(x + i), act));
    if (i < n)
        store_tail(x + i, n - i, act8(load_tail(x + i, n - i, 0.0f), act));
}

static void v_geglu(const float *val, const float *gate, float *out, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i,
                         _mm256_mul_ps(_mm256_loadu_ps(val + i), gelu8(_mm256_loadu_ps(gate + i))));
    if (i < n)
        store_tail(out + i, n - i,
                   _mm256_mul_ps(load_tail(val + i, n - i, 0.0f),
                                 gelu8(load_tail(gate + i, n - i, 0.0f))));
}

static inline __m256 norm8(__m256 x, __m256 vh, __m256 vl, __m256 va, __m256 vb, int silu)
{
    __m256 v = _mm256_fmadd_ps(_mm256_sub_ps(_mm256_sub_ps(x, vh), vl), va, vb);
    return silu ? xsigmoid8(v, v) : v;
}

static void v_norm_apply(const float *x, float *y, int64_t n, float mhi, float mlo, float a,
                         float b, int silu)
{
    __m256 vh = _mm256_set1_ps(mhi), vl = _mm256_set1_ps(mlo), va = _mm256_set1_ps(a),
           vb = _mm256_set1_ps(b);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, norm8(_mm256_loadu_ps(x + i), vh, vl, va, vb, silu));
    if (i < n)
        store_tail(y + i, n - i, norm8(load_tail(x + i, n - i, 0.0f), vh, vl, va, vb, silu));
}

static double hsum4d(__m256d v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

static double v_sum(const float *x, int64_t n)
{
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm_loadu_ps(x + i)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)));
    }
    double s = hsum4d(_mm256_add_pd(s0, s1));
    for (; i < n; i++)
        s += x[i];
    return s;
}

static double v_ssd(const float *x, int64_t n, double mean)
{
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd(), m = _mm256_set1_pd(mean);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256d d0 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), m);
        __m256d d1 = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i + 4)), m);
        s0 = _mm256_fmadd_pd(d0, d0, s0);
        s1 = _mm256_fmadd_pd(d1, d1, s1);
    }
    double s = hsum4d(_mm256_add_pd(s0, s1));
    for (; i < n; i++) {
        double d = x[i] - mean;
        s += d * d;
    }
    return s;
}

void px_nn_transpose8_avx2(const float *in, int64_t ldi, float *out, int64_t ldo)
{
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(in + (size_t)i * (size_t)ldi);
    /* Interleave pairs, then quads, then swap 128-bit halves. */
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int i = 0; i < 4; i++) {
        t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
        t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
    }
    for (int i = 0; i < 8; i++)
        _mm256_storeu_ps(out + (size_t)i * (size_t)ldo, t[i]);
}

const px_nn_vec_ops px_nn_vec_avx2 = {
    .max = v_max,
    .expsum = v_expsum,
    .act = v_act,
    .geglu = v_geglu,
    .norm_apply = v_norm_apply,
    .sum = v_sum,
    .ssd = v_ssd,
    .transpose8 = px_nn_transpose8_avx2,
};
