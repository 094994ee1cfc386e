/*
 * The AVX-512 kernels of the detector's convolutions: the small-K GEMM (every
 * 1x1 conv, and the 1x1 half of the fused 1x1 + depthwise step), the
 * depthwise 3x3 and the direct 3x3 stride-2 stem. The only conv file built
 * with -mavx512f; kernels_conv.c calls it only when the CPU has AVX-512F and
 * the AVX2 path would otherwise run (px_nn_use_avx512).
 *
 * Each kernel is the AVX2 one (kernels_conv_avx2.c) with 16 lanes instead of
 * 8, on the same data layouts and scratch geometry, and each output element
 * gets the same operations in the same order: the GEMM sums over k in order
 * with one FMA per step from zero, then adds the bias, then ReLU; the
 * depthwise and stem kernels add the taps row by row, left to right, channel
 * by channel. So the results are bitwise those of the AVX2 path (the unit
 * test checks it), and the AVX2 path's tolerances against the portable code
 * carry over unchanged.
 *
 * What 16 lanes change besides width: tails are masked loads and stores
 * (AVX-512 masks suppress faults), so no lane ever reads past the plane or
 * the B columns; the same masks let the standalone depthwise kernel read
 * the unpadded input in place (padding lanes masked to 0) instead of
 * copying each plane into a zero-padded one first, as the AVX2 kernel must;
 * stride 2's even/odd split is one vpermt2ps per pair of loads, in natural
 * order (the AVX2 in-lane shuffle needed a fix-up permute); and with 32
 * registers the GEMM keeps 8 rows x 32 columns of C
 * (16 accumulators) and the stem 16 output channels x 16 columns in flight.
 */
#include "kernels_internal.h"

#include <immintrin.h>
#include <string.h>

static inline __mmask16 lanes(int n)
{
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

static inline __m512 finish(__m512 acc, __m512 bv, int relu)
{
    acc = _mm512_add_ps(acc, bv);
    return relu ? _mm512_max_ps(acc, _mm512_setzero_ps()) : acc;
}

/* ---- small GEMM ----
 * C (m, n) = A (m, k) x B (k, n) + bias, ReLU: the contract of
 * px_nn_sgemm_small_avx2 (B in 16-column blocks bblock apart, rows ldb apart;
 * no B column at or past n is read). Two blocks (32 columns) per pass when
 * at least 17 columns are left, else one. */
static inline __attribute__((always_inline)) void ukernel2(const int mr, int k, const float *a,
                                                           const float *b0p, const float *b1p,
                                                           size_t ldb, float *c, size_t ldc,
                                                           const float *bias, int relu, int nleft)
{
    __m512 acc[8][2];
    for (int i = 0; i < mr; i++)
        acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    const __mmask16 m1 = lanes(nleft - 16);
    for (int p = 0; p < k; p++) {
        const __m512 b0 = _mm512_loadu_ps(b0p + (size_t)p * ldb);
        const __m512 b1 = _mm512_maskz_loadu_ps(m1, b1p + (size_t)p * ldb);
        for (int i = 0; i < mr; i++) {
            const __m512 av = _mm512_set1_ps(a[(size_t)i * k + p]);
            acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
        }
    }
    for (int i = 0; i < mr; i++) {
        const __m512 bv = _mm512_set1_ps(bias[i]);
        float *ci = c + (size_t)i * ldc;
        _mm512_storeu_ps(ci, finish(acc[i][0], bv, relu));
        _mm512_mask_storeu_ps(ci + 16, m1, finish(acc[i][1], bv, relu));
    }
}

static inline __attribute__((always_inline)) void ukernel1(const int mr, int k, const float *a,
                                                           const float *bp, size_t ldb, float *c,
                                                           size_t ldc, const float *bias, int relu,
                                                           int nleft)
{
    __m512 acc[8];
    for (int i = 0; i < mr; i++)
        acc[i] = _mm512_setzero_ps();
    const __mmask16 m0 = lanes(nleft);
    for (int p = 0; p < k; p++) {
        const __m512 b0 = _mm512_maskz_loadu_ps(m0, bp + (size_t)p * ldb);
        for (int i = 0; i < mr; i++)
            acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(a[(size_t)i * k + p]), b0, acc[i]);
    }
    for (int i = 0; i < mr; i++)
        _mm512_mask_storeu_ps(c + (size_t)i * ldc, m0,
                              finish(acc[i], _mm512_set1_ps(bias[i]), relu));
}

void px_nn_sgemm_small_avx512(int m, int n, int k, const float *a, const float *b, size_t ldb,
                              size_t bblock, float *c, size_t ldc, const float *bias, int relu)
{
    /* Blocks of 8 rows with the row count a constant (accumulators stay in
     * registers); the last m % 8 rows with it a variable: slower, but YuNet's
     * M are multiples of 8 and the arithmetic is the same. */
    for (int j = 0; j < n; j += 32, b += 2 * bblock) {
        const int nleft = n - j, m8 = m / 8 * 8;
        for (int i = 0; i < m; i += 8) {
            const float *ai = a + (size_t)i * k;
            float *ci = c + (size_t)i * ldc + j;
            if (nleft > 16 && i < m8)
                ukernel2(8, k, ai, b, b + bblock, ldb, ci, ldc, bias + i, relu, nleft);
            else if (nleft > 16)
                ukernel2(m - i, k, ai, b, b + bblock, ldb, ci, ldc, bias + i, relu, nleft);
            else if (i < m8)
                ukernel1(8, k, ai, b, ldb, ci, ldc, bias + i, relu, nleft);
            else
                ukernel1(m - i, k, ai, b, ldb, ci, ldc, bias + i, relu, nleft);
        }
    }
}

/* ---- depthwise 3x3 ----
 * On the AVX2 kernel's zero-padded plane (same rows and columns), 16
 * outputs per vector; lanes past the row's end are neither loaded nor
 * stored. */
static inline __m512 row3_s1(const float *x, const __m512 *w, __m512 acc, __mmask16 m)
{
    acc = _mm512_fmadd_ps(w[0], _mm512_maskz_loadu_ps(m, x), acc);
    acc = _mm512_fmadd_ps(w[1], _mm512_maskz_loadu_ps(m, x + 1), acc);
    return _mm512_fmadd_ps(w[2], _mm512_maskz_loadu_ps(m, x + 2), acc);
}

/* Stride 2: output lane i takes x[2i], x[2i+1], x[2i+2] from the loads
 * l0|l1 (x[0..32)) and s0|s1 (x[2..34)): one vpermt2ps per tap. */
static inline __m512 taps_s2(__m512 l0, __m512 l1, __m512 s0, __m512 s1, const __m512 *w,
                             __m512 acc)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                           30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29,
                                          31);
    acc = _mm512_fmadd_ps(w[0], _mm512_permutex2var_ps(l0, even, l1), acc);
    acc = _mm512_fmadd_ps(w[1], _mm512_permutex2var_ps(l0, odd, l1), acc);
    return _mm512_fmadd_ps(w[2], _mm512_permutex2var_ps(s0, even, s1), acc);
}

/* The loads cover what the first nv lanes need (2nv+1 floats) and no more. */
static inline __m512 row3_s2(const float *x, const __m512 *w, __m512 acc, int nv)
{
    const int n = 2 * nv + 1;
    return taps_s2(_mm512_maskz_loadu_ps(lanes(n), x), _mm512_maskz_loadu_ps(lanes(n - 16), x + 16),
                   _mm512_maskz_loadu_ps(lanes(n - 2), x + 2),
                   _mm512_maskz_loadu_ps(lanes(n - 18), x + 18), w, acc);
}

/* The padded plane's kernel (the fused 1x1 + depthwise step writes its
 * window so) keeps plain masked loads: the in-place kernel below computes
 * an edge mask per load, which cost the fused steps 15%. */
void px_nn_dw3x3_avx512_plane(const float *pad, int cols, float *out, int oh, int ow,
                              const float *w9, float bias, int relu, int s)
{
    __m512 wv[9];
    for (int i = 0; i < 9; i++)
        wv[i] = _mm512_set1_ps(w9[i]);
    const __m512 bv = _mm512_set1_ps(bias);
    if (s == 1) {
        int oy = 0;
        for (; oy + 2 <= oh; oy += 2) { /* two rows share their two middle input rows */
            const float *r0 = pad + (size_t)oy * cols, *r1 = r0 + cols, *r2 = r1 + cols,
                        *r3 = r2 + cols;
            float *o0 = out + (size_t)oy * ow, *o1 = o0 + ow;
            for (int x = 0; x < ow; x += 16) {
                const __mmask16 m = lanes(ow - x);
                __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
                a = row3_s1(r0 + x, wv, a, m);
                a = row3_s1(r1 + x, wv + 3, a, m);
                b = row3_s1(r1 + x, wv, b, m);
                a = row3_s1(r2 + x, wv + 6, a, m);
                b = row3_s1(r2 + x, wv + 3, b, m);
                b = row3_s1(r3 + x, wv + 6, b, m);
                _mm512_mask_storeu_ps(o0 + x, m, finish(a, bv, relu));
                _mm512_mask_storeu_ps(o1 + x, m, finish(b, bv, relu));
            }
        }
        for (; oy < oh; oy++) {
            const float *r0 = pad + (size_t)oy * cols, *r1 = r0 + cols, *r2 = r1 + cols;
            float *o = out + (size_t)oy * ow;
            for (int x = 0; x < ow; x += 16) {
                const __mmask16 m = lanes(ow - x);
                __m512 a = _mm512_setzero_ps();
                a = row3_s1(r0 + x, wv, a, m);
                a = row3_s1(r1 + x, wv + 3, a, m);
                a = row3_s1(r2 + x, wv + 6, a, m);
                _mm512_mask_storeu_ps(o + x, m, finish(a, bv, relu));
            }
        }
        return;
    }
    for (int oy = 0; oy < oh; oy++) {
        const float *r0 = pad + (size_t)oy * 2 * cols, *r1 = r0 + cols, *r2 = r1 + cols;
        float *o = out + (size_t)oy * ow;
        for (int x = 0; x < ow; x += 16) {
            const int nv = ow - x < 16 ? ow - x : 16;
            __m512 a = _mm512_setzero_ps();
            a = row3_s2(r0 + 2 * x, wv, a, nv);
            a = row3_s2(r1 + 2 * x, wv + 3, a, nv);
            a = row3_s2(r2 + 2 * x, wv + 6, a, nv);
            _mm512_mask_storeu_ps(o + x, lanes(nv), finish(a, bv, relu));
        }
    }
}

/* Lanes [lo, hi) of 16 (clamped). */
static inline __mmask16 span(int lo, int hi)
{
    lo = lo < 0 ? 0 : lo;
    hi = hi > 16 ? 16 : hi;
    return hi <= lo ? (__mmask16)0 : (__mmask16)(lanes(hi) & (__mmask16)~lanes(lo));
}

/* Straight from the unpadded plane: the padded plane's row q is input row
 * q - pt (outside the input: a row of zeros), its column c input column
 * c - pl. Every load is masked to the lanes whose input column lies inside
 * the row, so a lane reads the input where the padded plane holds a copy of
 * it and 0 where it holds padding: each stored output gets the same operands
 * in the same order as from the padded plane (bitwise the same), without
 * writing and reading the plane. Masked-off lanes are never touched, even
 * where their address lies outside the row. */
static inline const float *in_row(const float *in, int ih, int iw, int q, int pt,
                                  const float *zero)
{
    const int iy = q - pt;
    return iy >= 0 && iy < ih ? in + (size_t)iy * (size_t)iw : zero;
}

static inline __m512 row3_s1_in(const float *r, int x, int iw, int pl, const __m512 *w,
                                __m512 acc)
{
    const int b = x - pl; /* input column of lane 0, first tap */
    acc = _mm512_fmadd_ps(w[0], _mm512_maskz_loadu_ps(span(-b, iw - b), r + b), acc);
    acc = _mm512_fmadd_ps(w[1], _mm512_maskz_loadu_ps(span(-b - 1, iw - b - 1), r + b + 1), acc);
    return _mm512_fmadd_ps(w[2], _mm512_maskz_loadu_ps(span(-b - 2, iw - b - 2), r + b + 2), acc);
}

static inline __m512 row3_s2_in(const float *r, int x, int iw, int pl, const __m512 *w,
                                __m512 acc, int nv)
{
    const int n = 2 * nv + 1, b = 2 * x - pl;
    return taps_s2(
        _mm512_maskz_loadu_ps(lanes(n) & span(-b, iw - b), r + b),
        _mm512_maskz_loadu_ps(lanes(n - 16) & span(-b - 16, iw - b - 16), r + b + 16),
        _mm512_maskz_loadu_ps(lanes(n - 2) & span(-b - 2, iw - b - 2), r + b + 2),
        _mm512_maskz_loadu_ps(lanes(n - 18) & span(-b - 18, iw - b - 18), r + b + 18), w, acc);
}

void px_nn_dw3x3_avx512(const float *in, int ih, int iw, float *out, int oh, int ow,
                        const float *w9, float bias, int relu, int s, int pt, int pl, float *pad)
{
    /* pad's first iw floats: the zero row (the scratch holds a padded plane,
     * at least three rows of at least iw) */
    memset(pad, 0, (size_t)iw * sizeof(float));
    const float *zero = pad;
    __m512 wv[9];
    for (int i = 0; i < 9; i++)
        wv[i] = _mm512_set1_ps(w9[i]);
    const __m512 bv = _mm512_set1_ps(bias);
    if (s == 1) {
        int oy = 0;
        for (; oy + 2 <= oh; oy += 2) { /* two rows share their two middle input rows */
            const float *r0 = in_row(in, ih, iw, oy, pt, zero);
            const float *r1 = in_row(in, ih, iw, oy + 1, pt, zero);
            const float *r2 = in_row(in, ih, iw, oy + 2, pt, zero);
            const float *r3 = in_row(in, ih, iw, oy + 3, pt, zero);
            float *o0 = out + (size_t)oy * ow, *o1 = o0 + ow;
            for (int x = 0; x < ow; x += 16) {
                const __mmask16 m = lanes(ow - x);
                __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
                a = row3_s1_in(r0, x, iw, pl, wv, a);
                a = row3_s1_in(r1, x, iw, pl, wv + 3, a);
                b = row3_s1_in(r1, x, iw, pl, wv, b);
                a = row3_s1_in(r2, x, iw, pl, wv + 6, a);
                b = row3_s1_in(r2, x, iw, pl, wv + 3, b);
                b = row3_s1_in(r3, x, iw, pl, wv + 6, b);
                _mm512_mask_storeu_ps(o0 + x, m, finish(a, bv, relu));
                _mm512_mask_storeu_ps(o1 + x, m, finish(b, bv, relu));
            }
        }
        for (; oy < oh; oy++) {
            const float *r0 = in_row(in, ih, iw, oy, pt, zero);
            const float *r1 = in_row(in, ih, iw, oy + 1, pt, zero);
            const float *r2 = in_row(in, ih, iw, oy + 2, pt, zero);
            float *o = out + (size_t)oy * ow;
            for (int x = 0; x < ow; x += 16) {
                __m512 a = _mm512_setzero_ps();
                a = row3_s1_in(r0, x, iw, pl, wv, a);
                a = row3_s1_in(r1, x, iw, pl, wv + 3, a);
                a = row3_s1_in(r2, x, iw, pl, wv + 6, a);
                _mm512_mask_storeu_ps(o + x, lanes(ow - x), finish(a, bv, relu));
            }
        }
        return;
    }
    for (int oy = 0; oy < oh; oy++) {
        const float *r0 = in_row(in, ih, iw, 2 * oy, pt, zero);
        const float *r1 = in_row(in, ih, iw, 2 * oy + 1, pt, zero);
        const float *r2 = in_row(in, ih, iw, 2 * oy + 2, pt, zero);
        float *o = out + (size_t)oy * ow;
        for (int x = 0; x < ow; x += 16) {
            const int nv = ow - x < 16 ? ow - x : 16;
            __m512 a = _mm512_setzero_ps();
            a = row3_s2_in(r0, x, iw, pl, wv, a, nv);
            a = row3_s2_in(r1, x, iw, pl, wv + 3, a, nv);
            a = row3_s2_in(r2, x, iw, pl, wv + 6, a, nv);
            _mm512_mask_storeu_ps(o + x, lanes(nv), finish(a, bv, relu));
        }
    }
}

/* ---- direct 3x3 stride-2 conv (network stems) ----
 * px_nn_conv3x3s2_avx2's bands, read in place like px_nn_dw3x3_avx512: a
 * block is up to 16 output channels x 16 columns, and per input row it takes
 * the 34 floats from its first column b (2 x0 - pl) on, in four masked loads
 * whose lanes outside the row read 0, as the AVX2 kernel's zero-padded plane
 * holds there (bitwise the same outputs, without writing and reading that
 * plane: it was a fifth of the stem's time). The masks depend only on b. */
static inline __attribute__((always_inline)) void
c3s2_block(const int mr, int ic, const float *in, int ih, int iw, int q0, int pt, int b,
           const __mmask16 mk[4], const float *zero, const float *w, const float *bias, int relu,
           float *o, size_t ldo, int nleft)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28,
                                           30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29,
                                          31);
    __m512 acc[16];
    for (int i = 0; i < mr; i++)
        acc[i] = _mm512_setzero_ps();
    const int k = ic * 9;
    for (int c = 0; c < ic; c++) {
        const float *plane = in + (size_t)c * (size_t)ih * (size_t)iw;
        for (int ky = 0; ky < 3; ky++) {
            const float *x = in_row(plane, ih, iw, q0 + ky, pt, zero) + b;
            const __m512 l0 = _mm512_maskz_loadu_ps(mk[0], x);
            const __m512 l1 = _mm512_maskz_loadu_ps(mk[1], x + 16);
            const __m512 s0 = _mm512_maskz_loadu_ps(mk[2], x + 2);
            const __m512 s1 = _mm512_maskz_loadu_ps(mk[3], x + 18);
            const __m512 t[3] = {_mm512_permutex2var_ps(l0, even, l1),
                                 _mm512_permutex2var_ps(l0, odd, l1),
                                 _mm512_permutex2var_ps(s0, even, s1)};
            for (int kx = 0; kx < 3; kx++) {
                const int tap = c * 9 + ky * 3 + kx;
                for (int i = 0; i < mr; i++)
                    acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(w[(size_t)i * k + tap]), t[kx], acc[i]);
            }
        }
    }
    const __mmask16 m = lanes(nleft);
    for (int i = 0; i < mr; i++)
        _mm512_mask_storeu_ps(o + (size_t)i * ldo, m,
                              finish(acc[i], _mm512_set1_ps(bias[i]), relu));
}

void px_nn_conv3x3s2_avx512(const float *in, int ic, int ih, int iw, float *out, int oc, int oh,
                            int ow, int r0, int r1, int pt, int pl, const float *w,
                            const float *bias, int relu, float *pad)
{
    /* pad: iw floats, the zero row for rows above and below the input */
    memset(pad, 0, (size_t)iw * sizeof(float));
    const float *zero = pad;
    const size_t hw = (size_t)oh * ow;
    for (int oy = r0; oy < r1; oy++)
        for (int x0 = 0; x0 < ow; x0 += 16) {
            const int b = 2 * x0 - pl;
            const __mmask16 mk[4] = {span(-b, iw - b), span(-b - 16, iw - b - 16),
                                     span(-b - 2, iw - b - 2), span(-b - 18, iw - b - 18)};
            float *orow = out + (size_t)oy * ow + x0;
            int m = 0;
            for (; m + 16 <= oc; m += 16)
                c3s2_block(16, ic, in, ih, iw, 2 * oy, pt, b, mk, zero, w + (size_t)m * ic * 9,
                           bias + m, relu, orow + m * hw, hw, ow - x0);
            for (; m + 4 <= oc; m += 4)
                c3s2_block(4, ic, in, ih, iw, 2 * oy, pt, b, mk, zero, w + (size_t)m * ic * 9,
                           bias + m, relu, orow + m * hw, hw, ow - x0);
            for (; m < oc; m++)
                c3s2_block(1, ic, in, ih, iw, 2 * oy, pt, b, mk, zero, w + (size_t)m * ic * 9,
                           bias + m, relu, orow + m * hw, hw, ow - x0);
        }
}
