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

/* ---- attention microkernels ----
 * Scores S = scale * Q K^T against keys stored transposed (kt: dh x keys,
 * row stride ldkt), so a row of S is built 32 keys at a time from two
 * vector loads per d and one broadcast of q per row; and O (+)= P V with V
 * rows loaded as up to 4 vectors (64 of dh) and one broadcast of p per row.
 * They replace two OpenBLAS calls per block whose operand packing (P is
 * rows x 512 floats) cost ~15% of SD's attention time. Rows come in groups
 * of SC_ROWS / PV_ROWS, the last group smaller; every output element sums
 * over d (or keys) in the same order whatever the group, so results do not
 * depend on the tiling of rows. */
#define SC_ROWS 8
#define PV_ROWS 6

static inline __attribute__((always_inline)) void scores_rows(const float *q, int64_t ldq,
                                                              const float *kt, int dh, float scale,
                                                              float *p, int64_t ldp, int64_t j,
                                                              __mmask16 k0, __mmask16 k1, int nr)
{
    __m512 acc[SC_ROWS][2];
    _Pragma("GCC unroll 8") for (int r = 0; r < SC_ROWS; r++) acc[r][0] = acc[r][1] =
        _mm512_setzero_ps();
    for (int d = 0; d < dh; d++) {
        __m512 a = _mm512_loadu_ps(kt + 32 * d), b = _mm512_loadu_ps(kt + 32 * d + 16);
        _Pragma("GCC unroll 8") for (int r = 0; r < SC_ROWS; r++)
        {
            if (r < nr) {
                __m512 qv = _mm512_set1_ps(q[(size_t)r * (size_t)ldq + (size_t)d]);
                acc[r][0] = _mm512_fmadd_ps(qv, a, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(qv, b, acc[r][1]);
            }
        }
    }
    __m512 sv = _mm512_set1_ps(scale);
    _Pragma("GCC unroll 8") for (int r = 0; r < SC_ROWS; r++)
    {
        if (r < nr) {
            float *pr = p + (size_t)r * (size_t)ldp + j;
            _mm512_mask_storeu_ps(pr, k0, _mm512_mul_ps(acc[r][0], sv));
            _mm512_mask_storeu_ps(pr + 16, k1, _mm512_mul_ps(acc[r][1], sv));
        }
    }
}

/* kt holds the block's keys in panels of 32: panel c is (dh, 32) at
 * kt + c * dh * 32, zero-padded past kn. Row groups outside, panels inside,
 * so a group's q rows stay in L1 while the panels stream from L2. */
void px_nn_attn_scores_avx512(const float *q, int64_t ldq, const float *kt, int64_t rows,
                              int64_t kn, int dh, float scale, float *p, int64_t ldp)
{
    int64_t i = 0;
    for (; i < rows; i += SC_ROWS) {
        int nr = rows - i < SC_ROWS ? (int)(rows - i) : SC_ROWS;
        const float *qi = q + (size_t)i * (size_t)ldq;
        float *pi = p + (size_t)i * (size_t)ldp;
        for (int64_t j = 0; j < kn; j += 32) {
            __mmask16 k0 = tail_mask(kn - j), k1 = tail_mask(kn - j - 16 > 0 ? kn - j - 16 : 0);
            const float *panel = kt + (size_t)(j / 32) * (size_t)dh * 32;
            if (nr == SC_ROWS)
                scores_rows(qi, ldq, panel, dh, scale, pi, ldp, j, k0, k1, SC_ROWS);
            else
                for (int r = 0; r < nr; r++)
                    scores_rows(qi + (size_t)r * (size_t)ldq, ldq, panel, dh, scale,
                                pi + (size_t)r * (size_t)ldp, ldp, j, k0, k1, 1);
        }
    }
}

static inline __attribute__((always_inline)) void pv_rows(const float *p, int64_t ldp, int64_t kn,
                                                          const float *v, int64_t ldv, float *o,
                                                          int64_t ldo, int first,
                                                          const __mmask16 *km, int nv, int nr)
{
    __m512 acc[PV_ROWS][4];
    _Pragma("GCC unroll 8") for (int r = 0; r < PV_ROWS; r++)
        _Pragma("GCC unroll 8") for (int c = 0; c < 4; c++) acc[r][c] =
            (r < nr && c < nv && !first)
                ? _mm512_maskz_loadu_ps(km[c], o + (size_t)r * (size_t)ldo + 16 * c)
                : _mm512_setzero_ps();
    for (int64_t j = 0; j < kn; j++) {
        const float *vr = v + (size_t)j * (size_t)ldv;
        __m512 vv[4];
        _Pragma("GCC unroll 8") for (int c = 0; c < 4; c++) vv[c] =
            c < nv ? _mm512_maskz_loadu_ps(km[c], vr + 16 * c) : _mm512_setzero_ps();
        _Pragma("GCC unroll 8") for (int r = 0; r < PV_ROWS; r++)
        {
            if (r < nr) {
                __m512 pv = _mm512_set1_ps(p[(size_t)r * (size_t)ldp + (size_t)j]);
                _Pragma("GCC unroll 8") for (int c = 0; c < 4; c++) if (c < nv) acc[r][c] =
                    _mm512_fmadd_ps(pv, vv[c], acc[r][c]);
            }
        }
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < PV_ROWS; r++)
        _Pragma("GCC unroll 8") for (int c = 0; c < 4; c++) if (r < nr && c < nv)
            _mm512_mask_storeu_ps(o + (size_t)r * (size_t)ldo + 16 * c, km[c], acc[r][c]);
}

/* nv (vectors per row) as a constant, so pv_rows keeps acc in registers. */
static void pv_group(const float *p, int64_t ldp, int64_t kn, const float *v, int64_t ldv, float *o,
                     int64_t ldo, int first, const __mmask16 *km, int nv, int nr)
{
    switch (nv * 8 + (nr == PV_ROWS)) {
    case 8 + 1:
        pv_rows(p, ldp, kn, v, ldv, o, ldo, first, km, 1, PV_ROWS);
        break;
    case 16 + 1:
        pv_rows(p, ldp, kn, v, ldv, o, ldo, first, km, 2, PV_ROWS);
        break;
    case 24 + 1:
        pv_rows(p, ldp, kn, v, ldv, o, ldo, first, km, 3, PV_ROWS);
        break;
    case 32 + 1:
        pv_rows(p, ldp, kn, v, ldv, o, ldo, first, km, 4, PV_ROWS);
        break;
    default: /* fewer rows: one at a time */
        for (int r = 0; r < nr; r++)
            pv_rows(p + (size_t)r * (size_t)ldp, ldp, kn, v, ldv, o + (size_t)r * (size_t)ldo, ldo,
                    first, km, nv, 1);
    }
}

/* pv_rows for a chunk of 16 * nvf + t floats, 0 < t <= 8 (dh 40 is 16+16+8):
 * the tail is a 256-bit vector, because a 512-bit FMA with half its lanes
 * masked off still costs Zen 4 both halves. */
static inline __attribute__((always_inline)) void pv_rows_h(const float *p, int64_t ldp, int64_t kn,
                                                            const float *v, int64_t ldv, float *o,
                                                            int64_t ldo, int first, __mmask8 kt,
                                                            int nvf, int nr)
{
    __m512 acc[8][3];
    __m256 acct[8];
    _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++)
    {
        _Pragma("GCC unroll 8") for (int c = 0; c < 3; c++) acc[r][c] =
            (r < nr && c < nvf && !first) ? _mm512_loadu_ps(o + (size_t)r * (size_t)ldo + 16 * c)
                                          : _mm512_setzero_ps();
        acct[r] = (r < nr && !first)
                      ? _mm256_maskz_loadu_ps(kt, o + (size_t)r * (size_t)ldo + 16 * nvf)
                      : _mm256_setzero_ps();
    }
    for (int64_t j = 0; j < kn; j++) {
        const float *vr = v + (size_t)j * (size_t)ldv;
        __m512 vv[3];
        _Pragma("GCC unroll 8") for (int c = 0; c < 3; c++) vv[c] =
            c < nvf ? _mm512_loadu_ps(vr + 16 * c) : _mm512_setzero_ps();
        __m256 vt = _mm256_maskz_loadu_ps(kt, vr + 16 * nvf);
        _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++)
        {
            if (r < nr) {
                float pj = p[(size_t)r * (size_t)ldp + (size_t)j];
                __m512 pv = _mm512_set1_ps(pj);
                _Pragma("GCC unroll 8") for (int c = 0; c < 3; c++) if (c < nvf) acc[r][c] =
                    _mm512_fmadd_ps(pv, vv[c], acc[r][c]);
                acct[r] = _mm256_fmadd_ps(_mm256_set1_ps(pj), vt, acct[r]);
            }
        }
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++)
    {
        if (r < nr) {
            _Pragma("GCC unroll 8") for (int c = 0; c < 3; c++) if (c < nvf)
                _mm512_storeu_ps(o + (size_t)r * (size_t)ldo + 16 * c, acc[r][c]);
            _mm256_mask_storeu_ps(o + (size_t)r * (size_t)ldo + 16 * nvf, kt, acct[r]);
        }
    }
}

/* Rows of one chunk with a half-vector tail: groups of 8 rows (6 when three
 * full vectors), each shape a constant so the accumulators stay in registers. */
static void pv_chunk_h(const float *p, int64_t ldp, int64_t rows, int64_t kn, const float *v,
                       int64_t ldv, float *o, int64_t ldo, int first, int w)
{
    int nvf = w / 16, g = nvf == 3 ? 6 : 8;
    __mmask8 kt = (__mmask8)((1u << (w - 16 * nvf)) - 1u);
    for (int64_t i = 0; i < rows; i += g) {
        int nr = rows - i < g ? (int)(rows - i) : g;
        const float *pi = p + (size_t)i * (size_t)ldp;
        float *oi = o + (size_t)i * (size_t)ldo;
        switch (nvf * 16 + (nr == g)) {
        case 0 + 1:
            pv_rows_h(pi, ldp, kn, v, ldv, oi, ldo, first, kt, 0, 8);
            break;
        case 16 + 1:
            pv_rows_h(pi, ldp, kn, v, ldv, oi, ldo, first, kt, 1, 8);
            break;
        case 32 + 1:
            pv_rows_h(pi, ldp, kn, v, ldv, oi, ldo, first, kt, 2, 8);
            break;
        case 48 + 1:
            pv_rows_h(pi, ldp, kn, v, ldv, oi, ldo, first, kt, 3, 6);
            break;
        default:
            for (int r = 0; r < nr; r++)
                pv_rows_h(pi + (size_t)r * (size_t)ldp, ldp, kn, v, ldv,
                          oi + (size_t)r * (size_t)ldo, ldo, first, kt, nvf, 1);
        }
    }
}

void px_nn_attn_pv_avx512(const float *p, int64_t ldp, int64_t rows, int64_t kn, const float *v,
                          int64_t ldv, int dh, float *o, int64_t ldo, int first)
{
    for (int c0 = 0; c0 < dh; c0 += 64) {
        int w = dh - c0 < 64 ? dh - c0 : 64, nv = (w + 15) / 16;
        if (w % 16 != 0 && w % 16 <= 8) {
            pv_chunk_h(p, ldp, rows, kn, v + c0, ldv, o + c0, ldo, first, w);
            continue;
        }
        __mmask16 km[4];
        _Pragma("GCC unroll 8") for (int c = 0; c < 4; c++) km[c] =
            tail_mask(w - 16 * c > 0 ? w - 16 * c : 0);
        int64_t i = 0;
        for (; i < rows; i += PV_ROWS) {
            int nr = rows - i < PV_ROWS ? (int)(rows - i) : PV_ROWS;
            pv_group(p + (size_t)i * (size_t)ldp, ldp, kn, v + c0, ldv,
                     o + (size_t)i * (size_t)ldo + c0, ldo, first, km, nv, nr);
        }
    }
}
