/*
 * Normalisation kernels of px_nn_ops: GroupNorm (NCHW, optional fused SiLU)
 * and LayerNorm (rows of a tokens-major matrix).
 *
 * Statistics are two-pass in double (mean, then the mean squared deviation):
 * SD's activations reach the thousands in places, and a float
 * E[x^2]-E[x]^2 loses the variance there. Each task owns whole groups or
 * whole rows, so results do not depend on the thread count. The apply pass
 * stays in float but subtracts the mean as hi + lo parts: x - hi is exact
 * for x near the mean (Sterbenz), so a large mean (say 1000 with std 2)
 * costs no precision, where folding it into one multiply-add
 * (x * a + (beta - mean * a)) would lose about 10 bits.
 */
#include "ops_internal.h"

#include <math.h>

typedef struct gn_ctx {
    const float *x;
    float *y;
    int c, groups, silu;
    int64_t hw;
    const float *gamma, *beta;
    float eps;
} gn_ctx;

static void gn_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const gn_ctx *g = ctx;
    const px_nn_vec_ops *v = px_nn_vec();
    int cpg = g->c / g->groups;
    size_t len = (size_t)cpg * (size_t)g->hw;
    for (int64_t t = begin; t < end; t++) {
        int grp = (int)(t % g->groups);
        size_t off = (size_t)t * len; /* groups are contiguous in NCHW */
        const float *x = g->x + off;
        double mean = v->sum(x, (int64_t)len) / (double)len;
        double ss = v->ssd(x, (int64_t)len, mean);
        double rstd = 1.0 / sqrt(ss / (double)len + (double)g->eps);
        float mhi = (float)mean, mlo = (float)(mean - (double)mhi);
        float *y = g->y + off;
        for (int cc = 0; cc < cpg; cc++) {
            int ch = grp * cpg + cc;
            float a = (float)(rstd * g->gamma[ch]), b = g->beta[ch];
            v->norm_apply(x + (size_t)cc * (size_t)g->hw, y + (size_t)cc * (size_t)g->hw, g->hw,
                          mhi, mlo, a, b, g->silu);
        }
    }
}

void px_nn_group_norm(const float *x, float *y, int batch, int c, int64_t hw, int groups,
                      const float *gamma, const float *beta, float eps, int silu, px_pool *pool)
{
    if (batch <= 0 || c <= 0 || hw <= 0 || groups <= 0)
        return;
    gn_ctx g = {.x = x,
                .y = y,
                .c = c,
                .groups = groups,
                .silu = silu,
                .hw = hw,
                .gamma = gamma,
                .beta = beta,
                .eps = eps};
    px_pool_for(pool, (int64_t)batch * groups, gn_task, &g);
}

typedef struct ln_ctx {
    const float *x;
    float *y;
    int64_t ldx, ldy, d;
    const float *gamma, *beta;
    float eps;
} ln_ctx;

static void ln_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const ln_ctx *l = ctx;
    const px_nn_vec_ops *v = px_nn_vec();
    for (int64_t r = begin; r < end; r++) {
        const float *x = l->x + (size_t)r * (size_t)l->ldx;
        float *y = l->y + (size_t)r * (size_t)l->ldy;
        double mean = v->sum(x, l->d) / (double)l->d;
        double ss = v->ssd(x, l->d, mean);
        float rstd = (float)(1.0 / sqrt(ss / (double)l->d + (double)l->eps));
        float mhi = (float)mean, mlo = (float)(mean - (double)mhi);
        for (int64_t i = 0; i < l->d; i++)
            y[i] = ((x[i] - mhi) - mlo) * rstd * l->gamma[i] + l->beta[i];
    }
}

void px_nn_layer_norm(const float *x, int64_t ldx, float *y, int64_t ldy, int64_t n, int64_t d,
                      const float *gamma, const float *beta, float eps, px_pool *pool)
{
    if (n <= 0 || d <= 0)
        return;
    ln_ctx l = {
        .x = x, .y = y, .ldx = ldx, .ldy = ldy, .d = d, .gamma = gamma, .beta = beta, .eps = eps};
    px_pool_for(pool, n, ln_task, &l);
}
