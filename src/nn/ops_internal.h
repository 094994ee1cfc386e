/*
 * Internal glue shared by the px_nn_ops sources (ops_*.c): the ISA the ops
 * dispatch to, the FLOP counter, the one-time OpenBLAS setup, and the
 * ISA-specific entry points compiled with their own -m flags (ops_avx2.c,
 * ops_avx512.c). Nothing here is part of the public contract.
 */
#ifndef PX_NN_OPS_INTERNAL_H
#define PX_NN_OPS_INTERNAL_H

#include "px_nn_ops.h"

#include <stddef.h>
#include <stdint.h>

/* Which code the ops run: decided per call from the CPU and
 * px_nn_force_generic, so tests can flip it between calls. */
enum { PX_OPS_GENERIC = 0, PX_OPS_AVX2 = 1, PX_OPS_AVX512 = 2 };
int px_nn_ops_level(void);
/* Tests: caps the level (PX_OPS_AVX512 = no cap), to run the AVX2 code on an
 * AVX-512 machine. */
void px_nn_ops_cap_level(int max_level);

/* Sets OpenBLAS to one thread, once per process (shared with kernels_conv.c):
 * we split the work ourselves over a fixed tiling so results do not depend on
 * the thread count. Call before any cblas_* use. */
void px_nn_blas_single_thread(void);

/* Runs fn(ctx, t, t + 1, worker) for every task t in [0, ntasks) on the
 * pool, handing tasks out one at a time from a shared counter instead of
 * px_pool_for's fixed halves, so a thread slowed by other processes (or a
 * task count that does not split evenly) does not hold the other up. Task
 * outputs never depend on which worker runs them, so results stay bitwise
 * the same for any thread count. */
void px_nn_ops_for(px_pool *pool, int64_t ntasks, px_pool_fn fn, void *ctx);

/* Adds GEMM flops to the px_nn_flops counter. */
void px_nn_ops_count(uint64_t flops);

/* Portable conversions (also the tails of the vector ones). */
float px_nn_f16_to_f32(uint16_t h);
void px_nn_f16_to_f32_generic(const void *src, float *dst, size_t n);
void px_nn_bf16_to_f32_generic(const void *src, float *dst, size_t n);

/* ISA-specific conversions; only called when px_nn_ops_level() allows. */
void px_nn_f16_to_f32_avx2(const void *src, float *dst, size_t n);
void px_nn_bf16_to_f32_avx2(const void *src, float *dst, size_t n);
void px_nn_f16_to_f32_avx512(const void *src, float *dst, size_t n);
void px_nn_bf16_to_f32_avx512(const void *src, float *dst, size_t n);

/* Vector math the kernels call through a table chosen per call
 * (px_nn_vec): AVX-512, AVX2 or portable C. Every function treats each
 * element (or row) the same wherever it sits in the array, so results never
 * depend on how callers split the work. */
typedef struct px_nn_vec_ops {
    /* max of x[0..n), n >= 1 */
    float (*max)(const float *x, int64_t n);
    /* x[i] = exp(x[i] - mx); returns the sum of the new x */
    float (*expsum)(float *x, int64_t n, float mx);
    /* x[i] = act(x[i]) */
    void (*act)(float *x, int64_t n, px_nn_act act);
    /* out[i] = val[i] * gelu(gate[i]) (exact GELU); out may equal val */
    void (*geglu)(const float *val, const float *gate, float *out, int64_t n);
    /* y[i] = ((x[i] - mhi) - mlo) * a + b, then SiLU if silu; y may equal x */
    void (*norm_apply)(const float *x, float *y, int64_t n, float mhi, float mlo, float a, float b,
                       int silu);
    /* sum of x, and sum of (x - mean)^2, accumulated in double */
    double (*sum)(const float *x, int64_t n);
    double (*ssd)(const float *x, int64_t n, double mean);
    /* out[j * ldo + i] = in[i * ldi + j] for an 8 x 8 block */
    void (*transpose8)(const float *in, int64_t ldi, float *out, int64_t ldo);
} px_nn_vec_ops;

const px_nn_vec_ops *px_nn_vec(void);
extern const px_nn_vec_ops px_nn_vec_generic, px_nn_vec_avx2, px_nn_vec_avx512;
/* The AVX2 8 x 8 transpose, shared by the AVX-512 table. */
void px_nn_transpose8_avx2(const float *in, int64_t ldi, float *out, int64_t ldo);

/* AVX-512 attention blocks (ops_avx512.c): p (rows, kn; stride ldp) =
 * scale * q (rows, dh) . K^T with the block's keys in panels of 32 (panel c:
 * (dh, 32) floats at kt + c * dh * 32, zero past kn), and o (rows, dh) =
 * (first ? 0 : o) + p . v (kn, dh). */
void px_nn_attn_scores_avx512(const float *q, int64_t ldq, const float *kt, int64_t rows,
                              int64_t kn, int dh, float scale, float *p, int64_t ldp);
void px_nn_attn_pv_avx512(const float *p, int64_t ldp, int64_t rows, int64_t kn, const float *v,
                          int64_t ldv, int dh, float *o, int64_t ldo, int first);

/* Scalar activation (the portable path, and the acts the vector tables do
 * not vectorise). */
float px_nn_act1(float x, px_nn_act act);

#endif
