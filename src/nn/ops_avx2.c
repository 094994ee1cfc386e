/*
 * AVX2 + FMA + F16C code of the px_nn_ops kernels, built with
 * -mavx2 -mfma -mf16c and called only when the CPU has them
 * (px_nn_ops_level). Vector loads are unaligned so that weights can point
 * anywhere into a mapped file.
 */
#include "ops_internal.h"

#include <immintrin.h>
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
