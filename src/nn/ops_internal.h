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

/* Sets OpenBLAS to one thread, once per process (shared with kernels_conv.c):
 * we split the work ourselves over a fixed tiling so results do not depend on
 * the thread count. Call before any cblas_* use. */
void px_nn_blas_single_thread(void);

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

#endif
