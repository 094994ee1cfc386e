/*
 * Portable C versions of the px_nn_ops vector math (px_nn_vec_ops in
 * ops_internal.h), and the choice of table: AVX-512 (ops_avx512.c), AVX2
 * (ops_avx2.c) or these, from px_nn_ops_level at each call.
 *
 * The scalar activations use forms without cancellation: exact GELU as
 * 0.5 x erfc(-x / sqrt 2) (1 + erf loses all digits for x << 0) and the
 * tanh GELU as x * sigmoid(2u) (the same value as 0.5 x (1 + tanh u)).
 */
#include "ops_internal.h"

#include <math.h>

float px_nn_act1(float x, px_nn_act act)
{
    switch (act) {
    case PX_NN_SILU:
        return x / (1.0f + expf(-x));
    case PX_NN_GELU:
        return 0.5f * x * erfcf(x * -0.70710678118654752f);
    case PX_NN_GELU_TANH:
        return x / (1.0f + expf(-1.5957691216057308f * (x + 0.044715f * x * x * x)));
    case PX_NN_QUICK_GELU:
        return x / (1.0f + expf(-1.702f * x));
    case PX_NN_RELU:
        return x > 0.0f ? x : 0.0f;
    case PX_NN_TANH:
        return tanhf(x);
    }
    return x;
}

static float g_max(const float *x, int64_t n)
{
    float m = x[0];
    for (int64_t i = 1; i < n; i++)
        m = x[i] > m ? x[i] : m;
    return m;
}

static float g_expsum(float *x, int64_t n, float mx)
{
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - mx);
        s += x[i];
    }
    return s;
}

static void g_act(float *x, int64_t n, px_nn_act act)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = px_nn_act1(x[i], act);
}

static void g_geglu(const float *val, const float *gate, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = val[i] * px_nn_act1(gate[i], PX_NN_GELU);
}

static void g_norm_apply(const float *x, float *y, int64_t n, float mhi, float mlo, float a,
                         float b, int silu)
{
    if (silu) {
        for (int64_t i = 0; i < n; i++) {
            float v = ((x[i] - mhi) - mlo) * a + b;
            y[i] = v / (1.0f + expf(-v));
        }
    } else {
        for (int64_t i = 0; i < n; i++)
            y[i] = ((x[i] - mhi) - mlo) * a + b;
    }
}

static double g_sum(const float *x, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    return s;
}

static double g_ssd(const float *x, int64_t n, double mean)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = x[i] - mean;
        s += d * d;
    }
    return s;
}

static void g_transpose8(const float *in, int64_t ldi, float *out, int64_t ldo)
{
    for (int j = 0; j < 8; j++)
        for (int i = 0; i < 8; i++)
            out[(size_t)j * (size_t)ldo + (size_t)i] = in[(size_t)i * (size_t)ldi + (size_t)j];
}

const px_nn_vec_ops px_nn_vec_generic = {
    .max = g_max,
    .expsum = g_expsum,
    .act = g_act,
    .geglu = g_geglu,
    .norm_apply = g_norm_apply,
    .sum = g_sum,
    .ssd = g_ssd,
    .transpose8 = g_transpose8,
};

const px_nn_vec_ops *px_nn_vec(void)
{
    switch (px_nn_ops_level()) {
    case PX_OPS_AVX512:
        return &px_nn_vec_avx512;
    case PX_OPS_AVX2:
        return &px_nn_vec_avx2;
    default:
        return &px_nn_vec_generic;
    }
}
