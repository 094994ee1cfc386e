/*
 * The AVX2+FMA kernels of the inference engine: depthwise 3x3 convolution, a
 * small-K GEMM, the GEMM epilogue, a stride-2 gather for im2col and a 2x2
 * max pool. The only file built with -mavx2 -mfma -mf16c; kernels_conv.c
 * and kernels_graph_ops.c call it only after checking the CPU at run time.
 *
 * Depthwise 3x3, why by hand: 9 multiply-adds per output on one channel. As
 * a GEMM (im2col with K=9, M=1) it is all copying, and OpenBLAS has no
 * depthwise routine. Each channel is first copied into a zero-padded plane
 * (per-thread scratch) so every output column, borders included, goes
 * through the same vector code with no bounds checks; the last partial
 * vector of a row is a masked store. Stride 1 takes 9 unaligned loads and 9
 * FMAs per 8 outputs and does two output rows per pass so they share their
 * two common input rows; stride 2 splits pairs of loads into even/odd lanes.
 * (Scalar borders cost more than the vector interior on YuNet's 20..160-wide
 * maps.) For stride 2 the even/odd split is one in-lane shuffle per load
 * pair; the result sits in a fixed lane order (outputs 0 1 4 5 | 2 3 6 7)
 * that is the same for every tap, so it is undone once per 8 outputs.
 *
 * Small GEMM, why by hand: see px_nn_sgemm_small_avx2 below (OpenBLAS's operand
 * packing dominates at YuNet's K = 16..64).
 */
#include "kernels_internal.h"

#include <immintrin.h>
#include <string.h>

/* Geometry of the zero-padded plane: padded column px = ix + pl, row
 * py = iy + pt. Output columns are computed 8 at a time up to owv (ow rounded
 * up to 8); stride 1 reads columns up to owv+1, stride 2 up to 2*owv+1 (the
 * even/odd loads of the last vector). */
static void plane_dims(int oh, int ow, int s, int *rows, int *cols)
{
    int owv = (ow + 7) / 8 * 8;
    *rows = (oh - 1) * s + 3;
    *cols = s == 1 ? owv + 2 : 2 * owv + 2;
}

size_t px_nn_dw3x3_avx2_scratch(int oh, int ow, int s)
{
    int rows, cols;
    plane_dims(oh, ow, s, &rows, &cols);
    return (size_t)rows * (size_t)cols;
}

/* Copies the input into the padded plane, zeros around it. */
void px_nn_fill_plane(const float *in, int ih, int iw, int pt, int pl, float *pad, int rows,
                      int cols)
{
    int c0 = pl < cols ? pl : cols;           /* first copied column */
    int c1 = pl + iw < cols ? pl + iw : cols; /* one past the last */
    for (int py = 0; py < rows; py++) {
        float *d = pad + (size_t)py * cols;
        int iy = py - pt;
        if (iy < 0 || iy >= ih) {
            memset(d, 0, (size_t)cols * sizeof(float));
            continue;
        }
        if (c0 > 0)
            memset(d, 0, (size_t)c0 * sizeof(float));
        if (c1 > c0)
            memcpy(d + c0, in + (size_t)iy * iw, (size_t)(c1 - c0) * sizeof(float));
        if (cols > c1)
            memset(d + c1, 0, (size_t)(cols - c1) * sizeof(float));
    }
}

static inline __m256 finish(__m256 acc, __m256 bv, int relu)
{
    acc = _mm256_add_ps(acc, bv);
    return relu ? _mm256_max_ps(acc, _mm256_setzero_ps()) : acc;
}

/* Stores the first n (1..8) lanes. */
static inline void store_n(float *o, __m256 v, int n)
{
    if (n >= 8) {
        _mm256_storeu_ps(o, v);
        return;
    }
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), lanes);
    _mm256_maskstore_ps(o, mask, v);
}

/* Even elements of x[0..16) in the lane order 0 1 4 5 | 2 3 6 7, and odd. */
static inline void split2(const float *x, __m256 *even, __m256 *odd)
{
    __m256 a = _mm256_loadu_ps(x), b = _mm256_loadu_ps(x + 8);
    *even = _mm256_shuffle_ps(a, b, 0x88);
    *odd = _mm256_shuffle_ps(a, b, 0xDD);
}

static inline __m256 row3_s1(const float *x, const __m256 *w, __m256 acc)
{
    acc = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(x), acc);
    acc = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(x + 1), acc);
    return _mm256_fmadd_ps(w[2], _mm256_loadu_ps(x + 2), acc);
}

static inline __m256 row3_s2(const float *x, const __m256 *w, __m256 acc)
{
    __m256 e0, o0, e2, o2;
    split2(x, &e0, &o0);
    split2(x + 2, &e2, &o2);
    (void)o2;
    acc = _mm256_fmadd_ps(w[0], e0, acc);
    acc = _mm256_fmadd_ps(w[1], o0, acc);
    return _mm256_fmadd_ps(w[2], e2, acc);
}

void px_nn_dw3x3_avx2(const float *in, int ih, int iw, float *out, int oh, int ow, const float *w9,
                   float bias, int relu, int s, int pt, int pl, float *pad)
{
    int rows, cols;
    plane_dims(oh, ow, s, &rows, &cols);
    px_nn_fill_plane(in, ih, iw, pt, pl, pad, rows, cols);
    px_nn_dw3x3_avx2_plane(pad, cols, out, oh, ow, w9, bias, relu, s);
}

int px_nn_dw3x3_avx2_cols(int ow, int s)
{
    int rows, cols;
    plane_dims(1, ow, s, &rows, &cols);
    return cols;
}

void px_nn_dw3x3_avx2_plane(const float *pad, int cols, float *out, int oh, int ow, const float *w9,
                         float bias, int relu, int s)
{
    __m256 wv[9];
    for (int i = 0; i < 9; i++)
        wv[i] = _mm256_set1_ps(w9[i]);
    const __m256 bv = _mm256_set1_ps(bias);

    if (s == 1) {
        /* Two output rows per pass share the middle two input rows: 12 loads
         * and 18 FMAs per 16 outputs. */
        int oy = 0;
        for (; oy + 2 <= oh; oy += 2) {
            const float *r0 = pad + (size_t)oy * cols, *r1 = r0 + cols, *r2 = r1 + cols,
                        *r3 = r2 + cols;
            float *o0 = out + (size_t)oy * ow, *o1 = o0 + ow;
            for (int x = 0; x < ow; x += 8) {
                __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
                a = row3_s1(r0 + x, wv, a);
                a = row3_s1(r1 + x, wv + 3, a);
                b = row3_s1(r1 + x, wv, b);
                a = row3_s1(r2 + x, wv + 6, a);
                b = row3_s1(r2 + x, wv + 3, b);
                b = row3_s1(r3 + x, wv + 6, b);
                store_n(o0 + x, finish(a, bv, relu), ow - x);
                store_n(o1 + x, finish(b, bv, relu), ow - x);
            }
        }
        for (; oy < oh; oy++) {
            const float *r0 = pad + (size_t)oy * cols, *r1 = r0 + cols, *r2 = r1 + cols;
            float *o = out + (size_t)oy * ow;
            for (int x = 0; x < ow; x += 8) {
                __m256 a = _mm256_setzero_ps();
                a = row3_s1(r0 + x, wv, a);
                a = row3_s1(r1 + x, wv + 3, a);
                a = row3_s1(r2 + x, wv + 6, a);
                store_n(o + x, finish(a, bv, relu), ow - x);
            }
        }
        return;
    }
    for (int oy = 0; oy < oh; oy++) {
        const float *r0 = pad + (size_t)oy * 2 * cols, *r1 = r0 + cols, *r2 = r1 + cols;
        float *o = out + (size_t)oy * ow;
        for (int x = 0; x < ow; x += 8) {
            __m256 a = _mm256_setzero_ps();
            a = row3_s2(r0 + 2 * x, wv, a);
            a = row3_s2(r1 + 2 * x, wv + 3, a);
            a = row3_s2(r2 + 2 * x, wv + 6, a);
            /* undo the lane order of split2 */
            a = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(a), 0xD8));
            store_n(o + x, finish(a, bv, relu), ow - x);
        }
    }
}

void px_nn_bias_act_avx2(float *out, size_t n, float bias, int relu)
{
    const __m256 bv = _mm256_set1_ps(bias), zero = _mm256_setzero_ps();
    size_t i = 0;
    if (relu) {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i,
                             _mm256_max_ps(_mm256_add_ps(_mm256_loadu_ps(out + i), bv), zero));
        for (; i < n; i++) {
            float v = out[i] + bias;
            out[i] = v < 0.0f ? 0.0f : v;
        }
    } else {
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(out + i), bv));
        for (; i < n; i++)
            out[i] += bias;
    }
}

/* ---- small GEMM ----
 * C (m, n) = A (m, k) x B (k, n) + bias per row, optional ReLU, with A
 * row-major (lda = k) and B/C rows ldb/ldc apart. Register blocking 6 rows x
 * 16 columns: 12 accumulators, 2 B vectors and one broadcast of A, so each k
 * step is 8 loads for 12 FMAs and the loop runs at FMA throughput. No packing:
 * for the K <= 64 of YuNet's 1x1 convs, OpenBLAS's copy of B into its panel
 * format costs about as much as the multiply itself. Each C element is
 * summed over k in order with FMAs, whatever the blocking, so the result does
 * not depend on how the caller tiles n. */
static inline __attribute__((always_inline)) void ukernel(const int mr, int k, const float *a,
                                                          const float *b, size_t ldb, float *c,
                                                          size_t ldc, const float *bias, int relu,
                                                          int nleft)
{
    __m256 acc[6][2];
    for (int i = 0; i < mr; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    if (nleft >= 16) {
        for (int p = 0; p < k; p++) {
            __m256 b0 = _mm256_loadu_ps(b + (size_t)p * ldb);
            __m256 b1 = _mm256_loadu_ps(b + (size_t)p * ldb + 8);
            for (int i = 0; i < mr; i++) {
                __m256 av = _mm256_broadcast_ss(a + (size_t)i * k + p);
                acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
            }
        }
    } else {
        /* Column tail: masked loads never touch memory past column n. */
        const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nleft), lanes);
        __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nleft - 8), lanes);
        for (int p = 0; p < k; p++) {
            __m256 b0 = _mm256_maskload_ps(b + (size_t)p * ldb, m0);
            __m256 b1 = _mm256_maskload_ps(b + (size_t)p * ldb + 8, m1);
            for (int i = 0; i < mr; i++) {
                __m256 av = _mm256_broadcast_ss(a + (size_t)i * k + p);
                acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
            }
        }
    }
    const __m256 zero = _mm256_setzero_ps();
    for (int i = 0; i < mr; i++) {
        __m256 bv = _mm256_broadcast_ss(bias + i);
        __m256 v0 = _mm256_add_ps(acc[i][0], bv), v1 = _mm256_add_ps(acc[i][1], bv);
        if (relu) {
            v0 = _mm256_max_ps(v0, zero);
            v1 = _mm256_max_ps(v1, zero);
        }
        float *ci = c + (size_t)i * ldc;
        if (nleft >= 16) {
            _mm256_storeu_ps(ci, v0);
            _mm256_storeu_ps(ci + 8, v1);
        } else {
            store_n(ci, v0, nleft);
            if (nleft > 8)
                store_n(ci + 8, v1, nleft - 8);
        }
    }
}

void px_nn_sgemm_small_avx2(int m, int n, int k, const float *a, const float *b, size_t ldb,
                         size_t bblock, float *c, size_t ldc, const float *bias, int relu)
{
    for (int j = 0; j < n; j += 16, b += bblock) {
        int nleft = n - j;
        int i = 0;
        for (; i + 6 <= m; i += 6)
            ukernel(6, k, a + (size_t)i * k, b, ldb, c + (size_t)i * ldc + j, ldc, bias + i, relu,
                    nleft);
        switch (m - i) {
        case 5:
            ukernel(5, k, a + (size_t)i * k, b, ldb, c + (size_t)i * ldc + j, ldc, bias + i, relu,
                    nleft);
            break;
        case 4:
            ukernel(4, k, a + (size_t)i * k, b, ldb, c + (size_t)i * ldc + j, ldc, bias + i, relu,
                    nleft);
            break;
        case 3:
            ukernel(3, k, a + (size_t)i * k, b, ldb, c + (size_t)i * ldc + j, ldc, bias + i, relu,
                    nleft);
            break;
        case 2:
            ukernel(2, k, a + (size_t)i * k, b, ldb, c + (size_t)i * ldc + j, ldc, bias + i, relu,
                    nleft);
            break;
        case 1:
            ukernel(1, k, a + (size_t)i * k, b, ldb, c + (size_t)i * ldc + j, ldc, bias + i, relu,
                    nleft);
            break;
        default:
            break;
        }
    }
}

void px_nn_pack_b16(int k, int n, const float *b, size_t ldb, float *packed)
{
    int nb = (n + 15) / 16;
    for (int p = 0; p < k; p++) {
        const float *src = b + (size_t)p * ldb;
        for (int jb = 0; jb < nb; jb++) {
            float *d = packed + ((size_t)jb * k + p) * 16;
            int cnt = n - jb * 16;
            if (cnt >= 16) {
                _mm256_storeu_ps(d, _mm256_loadu_ps(src + jb * 16));
                _mm256_storeu_ps(d + 8, _mm256_loadu_ps(src + jb * 16 + 8));
            } else {
                for (int t = 0; t < 16; t++)
                    d[t] = t < cnt ? src[jb * 16 + t] : 0.0f;
            }
        }
    }
}

void px_nn_maxpool2x2_avx2(const float *in, int ih, int iw, float *out, int oh, int ow)
{
    (void)ih;
    for (int oy = 0; oy < oh; oy++) {
        const float *r0 = in + (size_t)(2 * oy) * iw, *r1 = r0 + iw;
        float *o = out + (size_t)oy * ow;
        int ox = 0;
        /* 8 outputs read 16 inputs per row: max of the rows, then of the
         * even/odd lanes (in split2's lane order, undone at the end). */
        for (; ox + 8 <= ow && 2 * ox + 16 <= iw; ox += 8) {
            __m256 a = _mm256_max_ps(_mm256_loadu_ps(r0 + 2 * ox), _mm256_loadu_ps(r1 + 2 * ox));
            __m256 b =
                _mm256_max_ps(_mm256_loadu_ps(r0 + 2 * ox + 8), _mm256_loadu_ps(r1 + 2 * ox + 8));
            __m256 m = _mm256_max_ps(_mm256_shuffle_ps(a, b, 0x88), _mm256_shuffle_ps(a, b, 0xDD));
            m = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(m), 0xD8));
            _mm256_storeu_ps(o + ox, m);
        }
        for (; ox < ow; ox++) {
            float a = r0[2 * ox] > r0[2 * ox + 1] ? r0[2 * ox] : r0[2 * ox + 1];
            float b = r1[2 * ox] > r1[2 * ox + 1] ? r1[2 * ox] : r1[2 * ox + 1];
            o[ox] = a > b ? a : b;
        }
    }
}

void px_nn_gather_s2_avx2(float *dst, const float *src, int count)
{
    int i = 0;
    /* A vector of 8 reads src[2i .. 2i+15]; stop while 2i+15 is still a
     * needed element's neighbour inside the range (i+8 < count). */
    for (; i + 8 < count; i += 8) {
        __m256 a = _mm256_loadu_ps(src + 2 * i), b = _mm256_loadu_ps(src + 2 * i + 8);
        __m256 e = _mm256_shuffle_ps(a, b, 0x88);
        _mm256_storeu_ps(dst + i,
                         _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)));
    }
    for (; i < count; i++)
        dst[i] = src[2 * i];
}

/* ---- direct 3x3 stride-2 conv for few input channels (network stems) ----
 * The im2col route for YuNet's first layer (3 -> 16 channels, 640x640 in)
 * spent a third of its time gathering every other pixel into the column
 * buffer. Here the rows of a band are copied once into zero-padded planes and
 * each 16-output block takes its even/odd columns straight from them with
 * in-lane shuffles, feeding a 4-row x 16-column register block of FMAs. The
 * shuffled lanes come out in the order 0 1 4 5 | 2 3 6 7 for every tap, so
 * the accumulators are put back in order once, before bias, ReLU and store. */
static inline __attribute__((always_inline)) void
c3s2_block(const int mr, int ic, int cols, const float *plane, size_t plane_stride,
           const float *w, const float *bias, int relu, float *o, size_t ldo, int nleft)
{
    __m256 acc[4][2];
    for (int i = 0; i < mr; i++)
        acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    const int k = ic * 9;
    for (int c = 0; c < ic; c++) {
        for (int ky = 0; ky < 3; ky++) {
            const float *x = plane + c * plane_stride + (size_t)ky * cols;
            __m256 l0 = _mm256_loadu_ps(x), l1 = _mm256_loadu_ps(x + 8);
            __m256 l2 = _mm256_loadu_ps(x + 16), l3 = _mm256_loadu_ps(x + 24);
            __m256 m0 = _mm256_loadu_ps(x + 2), m1 = _mm256_loadu_ps(x + 10);
            __m256 m2 = _mm256_loadu_ps(x + 18), m3 = _mm256_loadu_ps(x + 26);
            __m256 b[3][2] = {
                {_mm256_shuffle_ps(l0, l1, 0x88), _mm256_shuffle_ps(l2, l3, 0x88)},
                {_mm256_shuffle_ps(l0, l1, 0xDD), _mm256_shuffle_ps(l2, l3, 0xDD)},
                {_mm256_shuffle_ps(m0, m1, 0x88), _mm256_shuffle_ps(m2, m3, 0x88)},
            };
            for (int kx = 0; kx < 3; kx++) {
                int t = c * 9 + ky * 3 + kx;
                for (int i = 0; i < mr; i++) {
                    __m256 a = _mm256_broadcast_ss(w + (size_t)i * k + t);
                    acc[i][0] = _mm256_fmadd_ps(a, b[kx][0], acc[i][0]);
                    acc[i][1] = _mm256_fmadd_ps(a, b[kx][1], acc[i][1]);
                }
            }
        }
    }
    const __m256 zero = _mm256_setzero_ps();
    for (int i = 0; i < mr; i++) {
        __m256 bv = _mm256_broadcast_ss(bias + i);
        for (int h = 0; h < 2; h++) {
            __m256 v = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(acc[i][h]), 0xD8));
            v = _mm256_add_ps(v, bv);
            if (relu)
                v = _mm256_max_ps(v, zero);
            int n = nleft - 8 * h;
            if (n > 0)
                store_n(o + (size_t)i * ldo + 8 * h, v, n);
        }
    }
}

size_t px_nn_conv3x3s2_avx2_scratch(int ic, int rows, int ow)
{
    int cols = (ow + 15) / 16 * 32 + 2;
    return (size_t)ic * (size_t)((rows - 1) * 2 + 3) * (size_t)cols;
}

void px_nn_conv3x3s2_avx2(const float *in, int ic, int ih, int iw, float *out, int oc, int oh, int ow,
                       int r0, int r1, int pt, int pl, const float *w, const float *bias, int relu,
                       float *pad)
{
    int cols = (ow + 15) / 16 * 32 + 2, rows = (r1 - r0 - 1) * 2 + 3;
    size_t plane_stride = (size_t)rows * cols;
    /* padded row py of this band is input row r0*2 - pt + py */
    for (int c = 0; c < ic; c++)
        px_nn_fill_plane(in + (size_t)c * ih * iw, ih, iw, pt - 2 * r0, pl, pad + c * plane_stride,
                         rows, cols);
    size_t hw = (size_t)oh * ow;
    for (int oy = r0; oy < r1; oy++) {
        const float *prow = pad + (size_t)(oy - r0) * 2 * cols;
        float *orow = out + (size_t)oy * ow;
        for (int x0 = 0; x0 < ow; x0 += 16) {
            const float *pl0 = prow + 2 * x0;
            int m = 0;
            for (; m + 4 <= oc; m += 4)
                c3s2_block(4, ic, cols, pl0, plane_stride, w + (size_t)m * ic * 9, bias + m, relu,
                           orow + m * hw + x0, hw, ow - x0);
            switch (oc - m) {
            case 3:
                c3s2_block(3, ic, cols, pl0, plane_stride, w + (size_t)m * ic * 9, bias + m, relu,
                           orow + m * hw + x0, hw, ow - x0);
                break;
            case 2:
                c3s2_block(2, ic, cols, pl0, plane_stride, w + (size_t)m * ic * 9, bias + m, relu,
                           orow + m * hw + x0, hw, ow - x0);
                break;
            case 1:
                c3s2_block(1, ic, cols, pl0, plane_stride, w + (size_t)m * ic * 9, bias + m, relu,
                           orow + m * hw + x0, hw, ow - x0);
                break;
            default:
                break;
            }
        }
    }
}
