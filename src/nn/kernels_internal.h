/*
 * Private glue between kernels_conv.c (portable code, algorithm choice),
 * kernels_conv_avx2.c (compiled with -mavx2 -mfma -mf16c) and
 * kernels_conv_avx512.c (with -mavx512f as well).
 * Nothing here is used outside the kernel files (and their tests).
 *
 * The AVX2 functions must only be called after px_nn_conv_prepare found that the
 * CPU supports AVX2 and FMA; they are otherwise the exact counterparts of the
 * portable versions in kernels_conv.c (same arguments, same results up to
 * floating-point rounding of fused multiply-adds).
 */
#ifndef PX_NN_KERNELS_INTERNAL_H
#define PX_NN_KERNELS_INTERNAL_H

#include <stddef.h>

/* One channel of a depthwise 3x3 convolution with dilation 1.
 * in (ih, iw) -> out (oh, ow); w9 is the 3x3 filter row-major; stride s (1 or
 * 2) in both directions; pt/pl are the top/left paddings (bottom/right padding
 * is implied by oh/ow). Bias is added and ReLU applied when relu != 0.
 * pad is per-thread scratch of px_nn_dw3x3_avx2_scratch(oh, ow, s) floats (the
 * portable version takes NULL). */
typedef void (*px_dw3x3_fn)(const float *in, int ih, int iw, float *out, int oh, int ow,
                            const float *w9, float bias, int relu, int s, int pt, int pl,
                            float *pad);

void px_nn_dw3x3_generic(const float *in, int ih, int iw, float *out, int oh, int ow, const float *w9,
                      float bias, int relu, int s, int pt, int pl, float *pad);
void px_nn_dw3x3_avx2(const float *in, int ih, int iw, float *out, int oh, int ow, const float *w9,
                   float bias, int relu, int s, int pt, int pl, float *pad);
/* Floats of scratch px_nn_dw3x3_avx2 needs: the zero-padded input plane. */
size_t px_nn_dw3x3_avx2_scratch(int oh, int ow, int s);
/* The compute half of px_nn_dw3x3_avx2, on an already zero-padded plane whose
 * row 0 / column 0 are output (0,0)'s window corner, rows cols floats apart:
 * reads rows [0, (oh-1)*s+3) and columns [0, px_nn_dw3x3_avx2_cols(ow, s)). */
void px_nn_dw3x3_avx2_plane(const float *plane, int cols, float *out, int oh, int ow, const float *w9,
                         float bias, int relu, int s);
int px_nn_dw3x3_avx2_cols(int ow, int s);

/* out[0..n) = max(out + bias, 0) or out + bias: the GEMM epilogue. */
void px_nn_bias_act_avx2(float *out, size_t n, float bias, int relu);

/* C (m, n) = A (m, k) x B (k, n) + bias (m,), then ReLU when relu != 0.
 * A is row-major with lda = k; C rows are ldc floats apart. B is read in
 * blocks of 16 columns: block jb starts at b + jb*bblock and its rows are ldb
 * floats apart (row-major B: bblock 16, ldb its row stride; packed by
 * px_nn_pack_b16: bblock 16*k, ldb 16). Reads no B column at or past n.
 * AVX2+FMA only. */
void px_nn_sgemm_small_avx2(int m, int n, int k, const float *a, const float *b, size_t ldb,
                         size_t bblock, float *c, size_t ldc, const float *bias, int relu);
/* Copies B (k, n), rows ldb apart, into 16-column blocks [n/16][k][16], the
 * last block zero-filled: 16*k*ceil(n/16) floats. AVX2 only. */
void px_nn_pack_b16(int k, int n, const float *b, size_t ldb, float *packed);

/* MaxPool 2x2 stride 2 without padding on one channel (2*oh <= ih,
 * 2*ow <= iw). AVX2 only. */
void px_nn_maxpool2x2_avx2(const float *in, int ih, int iw, float *out, int oh, int ow);

/* dst[i] = src[2*i] for i < count; reads no further than src[2*count-2].
 * AVX2 only. */
void px_nn_gather_s2_avx2(float *dst, const float *src, int count);

/* Direct 3x3 stride-2 conv, group 1, dilation 1, for few input channels:
 * output rows [r0, r1) of out (oc, oh, ow) from in (ic, ih, iw) with top/left
 * padding pt/pl, weights w (oc, ic, 3, 3), bias (oc,), fused ReLU. pad is
 * scratch of px_nn_conv3x3s2_avx2_scratch(ic, r1 - r0, ow) floats. AVX2 only. */
size_t px_nn_conv3x3s2_avx2_scratch(int ic, int rows, int ow);
void px_nn_conv3x3s2_avx2(const float *in, int ic, int ih, int iw, float *out, int oc, int oh, int ow,
                       int r0, int r1, int pt, int pl, const float *w, const float *bias, int relu,
                       float *pad);

/* Whether the AVX2+FMA kernels are in use (CPU has them and
 * px_nn_force_generic is off). */
int px_nn_use_avx2(void);

/* Copies plane in (ih, iw) into pad (rows, cols) with its row 0 / column 0 at
 * padded (pt, pl), zeros everywhere else (pt may be negative: rows above the
 * band are skipped). The planes of the dw3x3 and conv3x3s2 kernels. */
void px_nn_fill_plane(const float *in, int ih, int iw, int pt, int pl, float *pad, int rows,
                      int cols);

/* ---- AVX-512F twins (kernels_conv_avx512.c) ----
 * Same arguments, scratch and results, bit for bit, as the AVX2 function of
 * the same name: every output gets the same FMAs in the same order. Only
 * called when px_nn_use_avx512() says so. */
void px_nn_sgemm_small_avx512(int m, int n, int k, const float *a, const float *b, size_t ldb,
                              size_t bblock, float *c, size_t ldc, const float *bias, int relu);
void px_nn_dw3x3_avx512(const float *in, int ih, int iw, float *out, int oh, int ow,
                        const float *w9, float bias, int relu, int s, int pt, int pl, float *pad);
void px_nn_dw3x3_avx512_plane(const float *plane, int cols, float *out, int oh, int ow,
                              const float *w9, float bias, int relu, int s);
/* px_nn_conv3x3s2_avx2's contract, reading the input in place (masked
 * loads): pad is scratch of iw floats (a zero row), bitwise the same output. */
void px_nn_conv3x3s2_avx512(const float *in, int ic, int ih, int iw, float *out, int oc, int oh,
                            int ow, int r0, int r1, int pt, int pl, const float *w,
                            const float *bias, int relu, float *pad);

/* The small GEMM's signature, for the choice made at prepare. */
typedef void (*px_sgemm_small_fn)(int m, int n, int k, const float *a, const float *b, size_t ldb,
                                  size_t bblock, float *c, size_t ldc, const float *bias, int relu);
typedef void (*px_dw3x3_plane_fn)(const float *plane, int cols, float *out, int oh, int ow,
                                  const float *w9, float bias, int relu, int s);

/* Whether the AVX-512 conv kernels are in use: the AVX2 ones would be, the
 * CPU has AVX-512F, and neither px_nn_force_avx2(1) nor PX_NN_NOAVX512=1 in
 * the environment (read at each prepare) says no. */
int px_nn_use_avx512(void);

#endif
