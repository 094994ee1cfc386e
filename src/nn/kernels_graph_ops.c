/*
 * The non-conv operator kernels of the inference engine: max pooling, nearest
 * resize, broadcasting binary ops, unary activations, softmax, transpose,
 * concat and standalone batch normalisation.
 *
 * These are memory-bound loops, written plainly so the compiler vectorises
 * the inner (contiguous) dimension; the one exception is MaxPool 2x2 stride 2
 * (YuNet's), whose even/odd column pairs the compiler does not vectorise, so
 * it has an AVX2 path in kernels_conv_avx2.c and a branch-free C twin.
 * Each kernel that takes a pool splits its work over an index space fixed by
 * the shapes (channels, rows, or fixed-size element blocks) and every index
 * writes its own outputs, so results do not depend on the thread count. Shapes are validated by the graph planner, not
 * here: these are internal functions with a documented contract (kernels.h).
 */
#include "kernels.h"
#include "kernels_internal.h"

#include <math.h>
#include <string.h>

/* ---- MaxPool ---- */

typedef struct {
    const px_nn_pool2d_params *p;
    const float *in;
    float *out;
    int plain2x2; /* 2x2 stride 2, no padding, window always inside: YuNet's pools */
    int fast2x2;  /* ... and AVX2 */
} pool_job;

static void maxpool_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const pool_job *j = ctx;
    const px_nn_pool2d_params *p = j->p;
    for (int64_t ch = begin; ch < end; ch++) {
        const float *in = j->in + (size_t)ch * p->ih * p->iw;
        float *out = j->out + (size_t)ch * p->oh * p->ow;
        if (j->fast2x2) {
            px_nn_maxpool2x2_avx2(in, p->ih, p->iw, out, p->oh, p->ow);
            continue;
        }
        if (j->plain2x2) { /* the portable twin, no clipping needed */
            for (int oy = 0; oy < p->oh; oy++) {
                const float *r0 = in + (size_t)(2 * oy) * p->iw, *r1 = r0 + p->iw;
                float *o = out + (size_t)oy * p->ow;
                for (int ox = 0; ox < p->ow; ox++) {
                    float a = r0[2 * ox] > r0[2 * ox + 1] ? r0[2 * ox] : r0[2 * ox + 1];
                    float b = r1[2 * ox] > r1[2 * ox + 1] ? r1[2 * ox] : r1[2 * ox + 1];
                    o[ox] = a > b ? a : b;
                }
            }
            continue;
        }
        for (int oy = 0; oy < p->oh; oy++) {
            int y0 = oy * p->sh - p->pt, y1 = y0 + p->kh;
            if (y0 < 0)
                y0 = 0;
            if (y1 > p->ih)
                y1 = p->ih;
            for (int ox = 0; ox < p->ow; ox++) {
                int x0 = ox * p->sw - p->pl, x1 = x0 + p->kw;
                if (x0 < 0)
                    x0 = 0;
                if (x1 > p->iw)
                    x1 = p->iw;
                float m = -INFINITY;
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++) {
                        float v = in[(size_t)y * p->iw + x];
                        /* NaN propagates, as in a comparison-free max. */
                        if (v > m || v != v)
                            m = v;
                    }
                out[(size_t)oy * p->ow + ox] = m;
            }
        }
    }
}

void px_nn_maxpool2d(const px_nn_pool2d_params *p, const float *in, float *out, px_pool *pool)
{
    int plain = p->kh == 2 && p->kw == 2 && p->sh == 2 && p->sw == 2 && !p->pt && !p->pl &&
                2 * p->oh <= p->ih && 2 * p->ow <= p->iw;
    pool_job j = {p, in, out, plain, plain && px_nn_use_avx2()};
    px_pool_for(pool, p->c, maxpool_task, &j);
}

/* ---- Resize nearest ---- */

typedef struct {
    int ih, iw, oh, ow;
    const int32_t *ys, *xs;
    const float *in;
    float *out;
    int x2; /* xs[ox] == ox / 2 for every column: each input value written twice */
} resize_job;

static void resize_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const resize_job *j = ctx;
    for (int64_t r = begin; r < end; r++) { /* r = channel * oh + oy */
        int64_t ch = r / j->oh;
        int oy = (int)(r % j->oh);
        const float *restrict src = j->in + ((size_t)ch * j->ih + (size_t)j->ys[oy]) * j->iw;
        float *restrict dst = j->out + (size_t)r * j->ow;
        if (j->x2) { /* the FPN's 2x upsampling: no index table, a loop the compiler vectorises */
            for (int ix = 0; ix < j->iw; ix++)
                dst[2 * ix] = dst[2 * ix + 1] = src[ix];
            continue;
        }
        for (int ox = 0; ox < j->ow; ox++)
            dst[ox] = src[j->xs[ox]];
    }
}

void px_nn_resize_nearest(int c, int ih, int iw, int oh, int ow, const int32_t *ys, const int32_t *xs,
                       const float *in, float *out, px_pool *pool)
{
    int x2 = ow == 2 * iw;
    for (int ox = 0; ox < ow && x2; ox++)
        x2 = xs[ox] == ox / 2;
    resize_job j = {ih, iw, oh, ow, ys, xs, in, out, x2};
    px_pool_for(pool, (int64_t)c * oh, resize_task, &j);
}

/* ---- Binary with broadcasting ---- */

typedef struct {
    px_nn_binop op;
    int rank;
    int64_t dims[6];      /* output dims */
    int64_t as[6], bs[6]; /* element strides of a and b per output dim, 0 where broadcast */
    int64_t inner;        /* output dims[rank-1] */
    const float *a, *b;
    float *out;
} bin_job;

static void bin_row(px_nn_binop op, const float *a, int64_t sa, const float *b, int64_t sb, float *o,
                    int64_t n)
{
    /* Separate loops per stride pattern so the common cases vectorise. */
#define PX_BIN_LOOP(EXPR)                                                                          \
    do {                                                                                           \
        if (sa == 1 && sb == 1) {                                                                  \
            for (int64_t i = 0; i < n; i++) {                                                      \
                float x = a[i], y = b[i];                                                          \
                o[i] = (EXPR);                                                                     \
            }                                                                                      \
        } else if (sa == 1) {                                                                      \
            const float y = b[0];                                                                  \
            for (int64_t i = 0; i < n; i++) {                                                      \
                float x = a[i];                                                                    \
                o[i] = (EXPR);                                                                     \
            }                                                                                      \
        } else if (sb == 1) {                                                                      \
            const float x = a[0];                                                                  \
            for (int64_t i = 0; i < n; i++) {                                                      \
                float y = b[i];                                                                    \
                o[i] = (EXPR);                                                                     \
            }                                                                                      \
        } else {                                                                                   \
            const float x = a[0], y = b[0];                                                        \
            for (int64_t i = 0; i < n; i++)                                                        \
                o[i] = (EXPR);                                                                     \
        }                                                                                          \
    } while (0)
    switch (op) {
    case PX_NN_BIN_ADD:
        PX_BIN_LOOP(x + y);
        break;
    case PX_NN_BIN_SUB:
        PX_BIN_LOOP(x - y);
        break;
    case PX_NN_BIN_MUL:
        PX_BIN_LOOP(x * y);
        break;
    case PX_NN_BIN_DIV:
        PX_BIN_LOOP(x / y);
        break;
    }
#undef PX_BIN_LOOP
}

static void binary_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const bin_job *j = ctx;
    for (int64_t row = begin; row < end; row++) {
        /* Decompose the row index over the outer output dims. */
        int64_t rem = row, ao = 0, bo = 0;
        for (int d = j->rank - 2; d >= 0; d--) {
            int64_t idx = rem % j->dims[d];
            rem /= j->dims[d];
            ao += idx * j->as[d];
            bo += idx * j->bs[d];
        }
        bin_row(j->op, j->a + ao, j->as[j->rank - 1], j->b + bo, j->bs[j->rank - 1],
                j->out + row * j->inner, j->inner);
    }
}

void px_nn_binary(px_nn_binop op, int rank, const int64_t *out_dims, const float *a,
               const int64_t *a_dims, const float *b, const int64_t *b_dims, float *out,
               px_pool *pool)
{
    bin_job j;
    memset(&j, 0, sizeof j);
    j.op = op;
    j.a = a;
    j.b = b;
    j.out = out;
    if (rank <= 0) { /* scalars */
        j.rank = 1;
        j.dims[0] = 1;
    } else {
        j.rank = rank;
        int64_t sa = 1, sb = 1;
        for (int d = rank - 1; d >= 0; d--) {
            j.dims[d] = out_dims[d];
            j.as[d] = a_dims[d] == 1 ? 0 : sa;
            j.bs[d] = b_dims[d] == 1 ? 0 : sb;
            sa *= a_dims[d];
            sb *= b_dims[d];
        }
    }
    j.inner = j.dims[j.rank - 1];
    int64_t rows = 1;
    for (int d = 0; d < j.rank - 1; d++)
        rows *= j.dims[d];
    if (j.inner <= 0 || rows <= 0)
        return;
    /* A single long row (e.g. tensor + scalar) is split into fixed blocks. */
    if (rows == 1 && j.inner > 8192 && j.as[0] <= 1 && j.bs[0] <= 1) {
        j.rank = 2;
        j.dims[1] = 4096;
        j.as[1] = j.as[0];
        j.bs[1] = j.bs[0];
        j.as[0] *= 4096;
        j.bs[0] *= 4096;
        /* the last block may be short: handle it separately */
        int64_t full = j.inner / 4096, tail = j.inner % 4096;
        j.dims[0] = full;
        j.inner = 4096;
        px_pool_for(pool, full, binary_task, &j);
        if (tail)
            bin_row(op, a + full * j.as[0], j.as[1], b + full * j.bs[0], j.bs[1], out + full * 4096,
                    tail);
        return;
    }
    px_pool_for(pool, rows, binary_task, &j);
}

/* ---- Unary ---- */

typedef struct {
    px_nn_unop op;
    const float *in;
    float *out;
    size_t n;
} un_job;

enum { UN_BLOCK = 4096 };

static void unary_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const un_job *j = ctx;
    size_t i0 = (size_t)begin * UN_BLOCK, i1 = (size_t)end * UN_BLOCK;
    if (i1 > j->n)
        i1 = j->n;
    const float *in = j->in;
    float *out = j->out;
    switch (j->op) {
    case PX_NN_UN_RELU:
        for (size_t i = i0; i < i1; i++)
            out[i] = in[i] < 0.0f ? 0.0f : in[i];
        break;
    case PX_NN_UN_SIGMOID:
        for (size_t i = i0; i < i1; i++)
            out[i] = 1.0f / (1.0f + expf(-in[i]));
        break;
    case PX_NN_UN_EXP:
        for (size_t i = i0; i < i1; i++)
            out[i] = expf(in[i]);
        break;
    }
}

void px_nn_unary(px_nn_unop op, const float *in, float *out, size_t n, px_pool *pool)
{
    un_job j = {op, in, out, n};
    px_pool_for(pool, (int64_t)((n + UN_BLOCK - 1) / UN_BLOCK), unary_task, &j);
}

/* ---- Softmax ---- */

void px_nn_softmax(const float *in, float *out, size_t outer, size_t axis_len, size_t inner)
{
    for (size_t o = 0; o < outer; o++) {
        for (size_t i = 0; i < inner; i++) {
            const float *x = in + o * axis_len * inner + i;
            float *y = out + o * axis_len * inner + i;
            /* Subtracting the max keeps expf in range; the sum is in double
             * so long axes lose nothing. */
            float m = -INFINITY;
            for (size_t k = 0; k < axis_len; k++)
                if (x[k * inner] > m)
                    m = x[k * inner];
            double sum = 0.0;
            for (size_t k = 0; k < axis_len; k++) {
                float e = expf(x[k * inner] - m);
                y[k * inner] = e;
                sum += e;
            }
            float inv = (float)(1.0 / sum);
            for (size_t k = 0; k < axis_len; k++)
                y[k * inner] *= inv;
        }
    }
}

/* ---- Transpose ---- */

void px_nn_permute(const float *in, int rank, const int64_t *in_dims, const int *perm, float *out)
{
    if (rank <= 0) {
        out[0] = in[0];
        return;
    }
    int64_t in_strides[6], od[6], os[6]; /* output dims and the input stride of each */
    int64_t s = 1;
    for (int d = rank - 1; d >= 0; d--) {
        in_strides[d] = s;
        s *= in_dims[d];
    }
    int64_t total = s;
    if (total <= 0)
        return;
    for (int d = 0; d < rank; d++) {
        od[d] = in_dims[perm[d]];
        os[d] = in_strides[perm[d]];
    }
    /* Walk the output in order with an odometer over its dims; the innermost
     * output dim is a strided gather from the input. */
    int64_t idx[6] = {0};
    int64_t inner = od[rank - 1], istep = os[rank - 1];
    int64_t src = 0;
    for (int64_t o = 0; o < total; o += inner) {
        for (int64_t k = 0; k < inner; k++)
            out[o + k] = in[src + k * istep];
        for (int d = rank - 2; d >= 0; d--) {
            src += os[d];
            if (++idx[d] < od[d])
                break;
            src -= os[d] * od[d];
            idx[d] = 0;
        }
    }
}

/* ---- Concat ---- */

void px_nn_concat(const float *const *ins, const size_t *lens, int n_inputs, size_t outer,
               size_t inner, float *out)
{
    size_t total = 0;
    for (int i = 0; i < n_inputs; i++)
        total += lens[i];
    for (size_t o = 0; o < outer; o++) {
        float *dst = out + o * total * inner;
        for (int i = 0; i < n_inputs; i++) {
            size_t n = lens[i] * inner;
            if (n)
                memcpy(dst, ins[i] + o * n, n * sizeof(float));
            dst += n;
        }
    }
}

/* ---- BatchNormalization ---- */

void px_nn_batchnorm(const float *in, float *out, int c, size_t hw, const float *scale,
                  const float *bias, const float *mean, const float *var, float eps)
{
    for (int ch = 0; ch < c; ch++) {
        /* Folded into one multiply-add per element, computed in double once
         * per channel. */
        double k = (double)scale[ch] / sqrt((double)var[ch] + (double)eps);
        float mul = (float)k, add = (float)((double)bias[ch] - (double)mean[ch] * k);
        const float *x = in + (size_t)ch * hw;
        float *y = out + (size_t)ch * hw;
        for (size_t i = 0; i < hw; i++)
            y[i] = x[i] * mul + add;
    }
}
