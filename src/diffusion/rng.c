/*
 * torch's CPU random generator, so that a seed gives the same initial noise
 * (and the same ancestral noise) as diffusers running on the CPU.
 *
 * torch.Generator().manual_seed(s) is a plain mt19937 seeded with the low 32
 * bits of s (Matsumoto-Nishimura initialisation). torch.randn then takes one
 * of two paths:
 *  - n >= 16 floats (contiguous): n uniforms u = (r & 0xFFFFFF) / 2^24 are
 *    drawn first, then every chunk of 16 is turned into normals by Box-Muller,
 *    pairing u[j] (radius, from log(1 - u)) with u[j + 8] (angle); when n is
 *    not a multiple of 16 the last 16 outputs are recomputed from 16 fresh
 *    uniforms. On x86 torch runs this with AVX2 and the Cephes-style
 *    log256_ps / sincos256_ps of avx_mathfun.h, and GCC fuses their
 *    multiply-adds into FMAs. To get the same bits we redo that float
 *    arithmetic here one lane at a time, with fmaf() exactly where the fused
 *    instructions are (checked bit for bit against torch 1.13's output on
 *    1280 values: the golden init noise and four noise draws after it).
 *  - n < 16: one double normal per element from 53-bit uniforms (two 32-bit
 *    draws each), Box-Muller in double with the second value cached in the
 *    generator for the next scalar draw.
 * Written by hand because no library reproduces torch's sampling; the
 * project is C11 without contraction, so each plain * and + below rounds on
 * its own, as the unfused vector instructions do.
 */
#include <math.h>
#include <string.h>

#include "sd_internal.h"

#define MT_N 624
#define MT_M 397

void px_sd_rng_seed(px_sd_rng *r, uint64_t seed)
{
    /* torch keeps the 64-bit seed but its mt19937 is initialised from the low word */
    r->mt[0] = (uint32_t)(seed & 0xFFFFFFFFu);
    for (int j = 1; j < MT_N; j++) {
        uint32_t p = r->mt[j - 1];
        r->mt[j] = 1812433253u * (p ^ (p >> 30)) + (uint32_t)j;
    }
    r->idx = MT_N; /* the first draw regenerates the whole state */
    r->has_next_double_normal = 0;
    r->next_double_normal = 0.0;
}

static void mt_twist(px_sd_rng *r)
{
    for (int i = 0; i < MT_N; i++) {
        uint32_t y = (r->mt[i] & 0x80000000u) | (r->mt[(i + 1) % MT_N] & 0x7FFFFFFFu);
        uint32_t v = r->mt[(i + MT_M) % MT_N] ^ (y >> 1);
        if (y & 1u)
            v ^= 0x9908B0DFu;
        r->mt[i] = v;
    }
    r->idx = 0;
}

static uint32_t mt_next(px_sd_rng *r)
{
    if (r->idx < 0 || r->idx >= MT_N)
        mt_twist(r);
    uint32_t y = r->mt[r->idx++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9D2C5680u;
    y ^= (y << 15) & 0xEFC60000u;
    y ^= y >> 18;
    return y;
}

/* at::uniform_real_distribution<float>(0, 1): 24 random bits, exact in float */
static float uniform_f32(px_sd_rng *r)
{
    return (float)(mt_next(r) & 0xFFFFFFu) * (1.0f / 16777216.0f);
}

/* at::uniform_real_distribution<double>(0, 1): random64() is the first draw
 * in the high word; its low 53 bits make the value. */
static double uniform_f64(px_sd_rng *r)
{
    uint64_t hi = mt_next(r);
    uint64_t lo = mt_next(r);
    uint64_t v = ((hi << 32) | lo) & ((UINT64_C(1) << 53) - 1);
    return (double)v * (1.0 / 9007199254740992.0);
}

/* Constants as avx_mathfun.h writes them: double literals rounded to float. */
#define F(x) ((float)(x))

/* log256_ps for one lane, x in (0, 1] (1 - u with u in [0, 1), always normal). */
static float cephes_logf(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    float e = (float)((int32_t)(bits >> 23) - 0x7f);
    bits = (bits & ~0x7F800000u) | 0x3F000000u; /* mantissa in [0.5, 1) */
    memcpy(&x, &bits, sizeof x);
    e = e + 1.0f;
    /* x < sqrt(1/2): use 2x - 1 and one less in the exponent */
    int small = x < F(0.707106781186547524);
    float tmp = small ? x : 0.0f;
    x = x - 1.0f;
    e = e - (small ? 1.0f : 0.0f);
    x = x + tmp;

    float z = x * x;
    float y = F(7.0376836292E-2);
    y = fmaf(y, x, F(-1.1514610310E-1));
    y = fmaf(y, x, F(1.1676998740E-1));
    y = fmaf(y, x, F(-1.2420140846E-1));
    y = fmaf(y, x, F(1.4249322787E-1));
    y = fmaf(y, x, F(-1.6668057665E-1));
    y = fmaf(y, x, F(2.0000714765E-1));
    y = fmaf(y, x, F(-2.4999993993E-1));
    y = fmaf(y, x, F(3.3333331174E-1));
    y = y * x;
    float eq1 = e * F(-2.12194440e-4);
    y = fmaf(y, z, eq1);
    y = fmaf(-z, 0.5f, y);
    float s = x + y;
    return fmaf(e, F(0.693359375), s);
}

/* sincos256_ps for one lane, x >= 0 (an angle 2*pi*u). */
static void cephes_sincosf(float x, float *sin_out, float *cos_out)
{
    float y = x * F(1.27323954473516); /* 4 / pi */
    int32_t j = (int32_t)y;
    j = (j + 1) & ~1;
    y = (float)j;
    int sin_neg = (j & 4) != 0;
    int cos_neg = (~(j - 2) & 4) != 0;
    int poly_cos = (j & 2) == 0; /* octant where cos uses the cosine polynomial */

    /* x - y*pi/4 in three pieces (Cody-Waite) */
    x = fmaf(y, F(-0.78515625), x);
    x = fmaf(y, F(-2.4187564849853515625e-4), x);
    x = fmaf(y, F(-3.77489497744594108e-8), x);

    float z = x * x;
    float c = F(2.443315711809948E-005);
    c = fmaf(c, z, F(-1.388731625493765E-003));
    c = fmaf(c, z, F(4.166664568298827E-002));
    c = c * z;
    float half_z = z * 0.5f;
    c = fmaf(c, z, -half_z);
    c = c + 1.0f;

    float s = F(-1.9515295891E-4);
    s = fmaf(s, z, F(8.3321608736E-3));
    s = fmaf(s, z, F(-1.6666654611E-1));
    s = s * z;
    s = fmaf(s, x, x);

    float sv = poly_cos ? s : c;
    float cv = poly_cos ? c : s;
    *sin_out = sin_neg ? -sv : sv;
    *cos_out = cos_neg ? -cv : cv;
}

/* normal_fill_16_AVX2: 16 uniforms in place -> 16 normals */
static void normal_fill_16(float *d)
{
    const float two_pi = F(2.0 * 3.14159265358979323846);
    for (int j = 0; j < 8; j++) {
        float u1 = 1.0f - d[j];
        float u2 = d[j + 8];
        float radius = sqrtf(-2.0f * cephes_logf(u1));
        float theta = two_pi * u2;
        float s, c;
        cephes_sincosf(theta, &s, &c);
        d[j] = radius * c;
        d[j + 8] = radius * s;
    }
}

/* at::normal_distribution<double>(0, 1) as torch 1.13 computes it */
static double normal_f64(px_sd_rng *r)
{
    if (r->has_next_double_normal) {
        r->has_next_double_normal = 0;
        return r->next_double_normal;
    }
    double u1 = uniform_f64(r);
    double u2 = uniform_f64(r);
    double radius = sqrt(-2.0 * log(1.0 - u2));
    double theta = 2.0 * 3.14159265358979323846 * u1;
    r->next_double_normal = radius * sin(theta);
    r->has_next_double_normal = 1;
    return radius * cos(theta);
}

void px_sd_rng_randn(px_sd_rng *r, float *out, size_t n)
{
    if (n < 16) {
        for (size_t i = 0; i < n; i++)
            out[i] = (float)normal_f64(r);
        return;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = uniform_f32(r);
    for (size_t i = 0; i + 16 <= n; i += 16)
        normal_fill_16(out + i);
    if (n % 16 != 0) {
        float *tail = out + n - 16;
        for (size_t i = 0; i < 16; i++)
            tail[i] = uniform_f32(r);
        normal_fill_16(tail);
    }
}
