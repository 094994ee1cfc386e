/*
 * AVX-512 (F, BW, VL, DQ) code of the px_nn_ops kernels, built with
 * -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mf16c and called only
 * when the CPU has them (px_nn_ops_level).
 */
#include "ops_internal.h"

#include <immintrin.h>
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
