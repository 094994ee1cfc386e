/*
 * Elementwise and layout kernels of px_nn_ops: activations, GEGLU, add,
 * axpby, per-channel add, transpose, 2x nearest upsampling and channel
 * concatenation.
 *
 * Flat loops split into fixed blocks of EW_BLOCK elements (not per-thread
 * ranges), so which elements a vector body or a scalar tail handles never
 * depends on the thread count: outputs are bitwise identical for 1 and N
 * threads.
 */
#include "ops_internal.h"

#include <string.h>

#define EW_BLOCK 16384

static size_t ew_blocks(size_t n)
{
    return (n + EW_BLOCK - 1) / EW_BLOCK;
}

typedef struct act_ctx {
    float *x;
    size_t n;
    px_nn_act act;
} act_ctx;

static void act_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const act_ctx *c = ctx;
    size_t i0 = (size_t)begin * EW_BLOCK, i1 = (size_t)end * EW_BLOCK;
    if (i1 > c->n)
        i1 = c->n;
    if (i1 > i0)
        px_nn_vec()->act(c->x + i0, (int64_t)(i1 - i0), c->act);
}

void px_nn_activate(float *x, size_t n, px_nn_act act, px_pool *pool)
{
    act_ctx c = {.x = x, .n = n, .act = act};
    px_pool_for(pool, (int64_t)ew_blocks(n), act_task, &c);
}

typedef struct geglu_ctx {
    const float *in;
    float *out;
    int64_t ldi, ldo, d;
} geglu_ctx;

static void geglu_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const geglu_ctx *c = ctx;
    const px_nn_vec_ops *v = px_nn_vec();
    for (int64_t r = begin; r < end; r++) {
        const float *in = c->in + (size_t)r * (size_t)c->ldi;
        v->geglu(in, in + c->d, c->out + (size_t)r * (size_t)c->ldo, c->d);
    }
}

void px_nn_geglu(const float *in, int64_t ldi, float *out, int64_t ldo, int64_t n, int64_t d,
                 px_pool *pool)
{
    geglu_ctx c = {.in = in, .out = out, .ldi = ldi, .ldo = ldo, .d = d};
    px_pool_for(pool, n, geglu_task, &c);
}

typedef struct axpby_ctx {
    float alpha, beta;
    const float *a, *b;
    float *y;
    size_t n;
    int plain_add;
} axpby_ctx;

static void axpby_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const axpby_ctx *c = ctx;
    size_t i0 = (size_t)begin * EW_BLOCK, i1 = (size_t)end * EW_BLOCK;
    if (i1 > c->n)
        i1 = c->n;
    if (c->plain_add) {
        for (size_t i = i0; i < i1; i++)
            c->y[i] = c->a[i] + c->b[i];
    } else {
        for (size_t i = i0; i < i1; i++)
            c->y[i] = c->alpha * c->a[i] + c->beta * c->b[i];
    }
}

void px_nn_add(const float *a, const float *b, float *y, size_t n, px_pool *pool)
{
    axpby_ctx c = {.a = a, .b = b, .y = y, .n = n, .plain_add = 1};
    px_pool_for(pool, (int64_t)ew_blocks(n), axpby_task, &c);
}

void px_nn_axpby(float alpha, const float *a, float beta, const float *b, float *y, size_t n,
                 px_pool *pool)
{
    axpby_ctx c = {.alpha = alpha, .beta = beta, .a = a, .b = b, .y = y, .n = n};
    px_pool_for(pool, (int64_t)ew_blocks(n), axpby_task, &c);
}

typedef struct chan_ctx {
    float *x;
    const float *v;
    int64_t hw;
} chan_ctx;

static void add_channel_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const chan_ctx *c = ctx;
    for (int64_t p = begin; p < end; p++) {
        float *x = c->x + (size_t)p * (size_t)c->hw;
        float v = c->v[p]; /* v (batch, c) flattens to the plane index */
        for (int64_t i = 0; i < c->hw; i++)
            x[i] += v;
    }
}

void px_nn_add_channel(float *x, const float *v, int batch, int c, int64_t hw, px_pool *pool)
{
    chan_ctx cc = {.x = x, .v = v, .hw = hw};
    px_pool_for(pool, (int64_t)batch * c, add_channel_task, &cc);
}

/* ---- layout ---- */

/* Rows of the input per task. Blocks are 8 x 8 (in registers where the CPU
 * has AVX2): with 32-row tiles, input rows 16 KiB apart (a 64x64 NCHW plane)
 * all fell in one L1 set and the transpose ran at 1.5 GB/s. */
#define TR_BLOCK 32

typedef struct tr_ctx {
    const float *in;
    float *out;
    int64_t rows, cols, nrb;
} tr_ctx;

static void transpose_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const tr_ctx *c = ctx;
    const px_nn_vec_ops *v = px_nn_vec();
    size_t rows = (size_t)c->rows, cols = (size_t)c->cols;
    for (int64_t t = begin; t < end; t++) {
        size_t b = (size_t)(t / c->nrb), r0 = (size_t)(t % c->nrb) * TR_BLOCK;
        size_t r1 = r0 + TR_BLOCK < rows ? r0 + TR_BLOCK : rows;
        const float *in = c->in + b * rows * cols;
        float *out = c->out + b * rows * cols;
        for (size_t i0 = r0; i0 < r1; i0 += 8) {
            size_t i1 = i0 + 8 < r1 ? i0 + 8 : r1, j = 0;
            if (i1 - i0 == 8)
                for (; j + 8 <= cols; j += 8)
                    v->transpose8(in + i0 * cols + j, (int64_t)cols, out + j * rows + i0,
                                  (int64_t)rows);
            for (; j < cols; j++)
                for (size_t i = i0; i < i1; i++)
                    out[j * rows + i] = in[i * cols + j];
        }
    }
}

void px_nn_transpose(const float *in, float *out, int batch, int64_t rows, int64_t cols,
                     px_pool *pool)
{
    if (batch <= 0 || rows <= 0 || cols <= 0)
        return;
    tr_ctx c = {
        .in = in, .out = out, .rows = rows, .cols = cols, .nrb = (rows + TR_BLOCK - 1) / TR_BLOCK};
    px_pool_for(pool, (int64_t)batch * c.nrb, transpose_task, &c);
}

typedef struct up_ctx {
    const float *in;
    float *out;
    int h, w;
} up_ctx;

static void upsample_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const up_ctx *c = ctx;
    size_t ow = 2 * (size_t)c->w;
    for (int64_t p = begin; p < end; p++) {
        const float *in = c->in + (size_t)p * (size_t)c->h * (size_t)c->w;
        float *out = c->out + (size_t)p * 4 * (size_t)c->h * (size_t)c->w;
        for (int y = 0; y < c->h; y++) {
            const float *src = in + (size_t)y * (size_t)c->w;
            float *d0 = out + (size_t)(2 * y) * ow;
            for (int x = 0; x < c->w; x++)
                d0[2 * x] = d0[2 * x + 1] = src[x];
            memcpy(d0 + ow, d0, ow * sizeof(float));
        }
    }
}

void px_nn_upsample2x(const float *in, float *out, int64_t planes, int h, int w, px_pool *pool)
{
    if (h <= 0 || w <= 0)
        return;
    up_ctx c = {.in = in, .out = out, .h = h, .w = w};
    px_pool_for(pool, planes, upsample_task, &c);
}

typedef struct cat_ctx {
    const float *a, *b;
    float *out;
    int ca, cb;
    int64_t hw;
} cat_ctx;

static void concat_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const cat_ctx *c = ctx;
    int ct = c->ca + c->cb;
    for (int64_t p = begin; p < end; p++) {
        int64_t b = p / ct, ch = p % ct;
        const float *src =
            ch < c->ca ? c->a + ((size_t)b * (size_t)c->ca + (size_t)ch) * (size_t)c->hw
                       : c->b + ((size_t)b * (size_t)c->cb + (size_t)(ch - c->ca)) * (size_t)c->hw;
        memcpy(c->out + (size_t)p * (size_t)c->hw, src, (size_t)c->hw * sizeof(float));
    }
}

void px_nn_concat_channels(const float *a, int ca, const float *b, int cb, float *out, int batch,
                           int64_t hw, px_pool *pool)
{
    cat_ctx c = {.a = a, .b = b, .out = out, .ca = ca, .cb = cb, .hw = hw};
    px_pool_for(pool, (int64_t)batch * (ca + cb), concat_task, &c);
}
