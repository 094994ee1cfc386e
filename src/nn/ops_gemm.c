/*
 * The GEMM-backed px_nn_ops layers: linear, conv2d and attention.
 *
 * They call OpenBLAS's cblas_sgemm single-threaded and parallelise over a
 * fixed tiling of the output (tasks handed out by px_nn_ops_for), so every
 * output element is produced by the same call whatever the thread count or
 * the order tasks run in (bitwise determinism). Scratch comes from the
 * caller's arena, taken before the parallel loop (one slice per worker) and
 * released before returning.
 *
 * Weights stored as f16/bf16 are converted to f32 a row block at a time into
 * the worker's slice (linear, few-pixel convs), or a layer at a time (other
 * convs), never the whole model. OpenBLAS packs both operands again at every
 * call, so every tiling here aims at wide GEMMs (hundreds of rows and
 * columns): that, not the microkernel, decides how close to the sgemm peak a
 * layer runs.
 *  - linear: tasks are (block of output features, block of tokens), numbered
 *    feature-block-major so that a worker mostly reuses the weight block it
 *    converted last.
 *  - conv2d: 1x1 stride-1 unpadded convs are GEMMs on the input as it is,
 *    tiled like a linear; maps of at most 1024 batch x pixels are unrolled
 *    whole and split by output channels; the rest unroll tiles of a few
 *    hundred output pixels (im2col, 8 MiB at most) and multiply each by the
 *    whole weight matrix.
 *  - attention: tasks are (batch, head, tile of queries); each walks the keys
 *    in blocks: S = Q K^T for the block, an online softmax (running max and
 *    sum per row, earlier output rescaled when the max grows) and O += P V,
 *    then O /= sum. Only a block of the score matrix ever exists. The two
 *    products are AVX-512 kernels where the CPU has them (ops_avx512.c), two
 *    sgemm calls elsewhere.
 */
#include "ops_internal.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* ---- shared helpers ---- */

/* Converts rows [r0, r1) of w to f32 into dst (r1 - r0, cols). */
static void mat_rows_f32(const px_nn_mat *w, int64_t r0, int64_t r1, float *dst)
{
    size_t esz = px_nn_dtype_size(w->dtype);
    const unsigned char *src = (const unsigned char *)w->data + (size_t)r0 * (size_t)w->cols * esz;
    px_nn_to_f32(w->dtype, src, dst, (size_t)(r1 - r0) * (size_t)w->cols);
}

typedef struct conv_rows_ctx {
    const px_nn_mat *w;
    float *dst;
    int64_t block;
} conv_rows_ctx;

static void conv_rows_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const conv_rows_ctx *c = ctx;
    for (int64_t t = begin; t < end; t++) {
        int64_t r0 = t * c->block, r1 = r0 + c->block < c->w->rows ? r0 + c->block : c->w->rows;
        mat_rows_f32(c->w, r0, r1, c->dst + (size_t)r0 * (size_t)c->w->cols);
    }
}

/* The weight matrix as f32: its own data when already f32, else a converted
 * copy in the arena. NULL when the arena cannot grow. */
static const float *mat_f32(const px_nn_mat *w, px_nn_arena *arena, px_pool *pool)
{
    if (w->dtype == PX_NN_F32)
        return w->data;
    float *dst = px_nn_arena_floats(arena, (size_t)w->rows * (size_t)w->cols);
    if (!dst)
        return NULL;
    conv_rows_ctx c = {.w = w, .dst = dst, .block = 16};
    px_pool_for(pool, (w->rows + c.block - 1) / c.block, conv_rows_task, &c);
    return dst;
}

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int64_t ceil_div(int64_t a, int64_t b)
{
    return (a + b - 1) / b;
}

/* ---- linear ---- */

/* Tile of a linear: LIN_TOKENS tokens x up to LIN_BUDGET / cols output
 * features. OpenBLAS packs both operands again at every call, so tiles must be
 * large for the packing to vanish next to the multiply (measured on SD
 * shapes: 64 x 512 tiles ran at ~75% of the sgemm peak, 512-1024 x 1024 at
 * 85-100%). A weight tile converted from f16 (rows x cols f32) stays below
 * 4 MiB per worker. */
#define LIN_TOKENS 1024
#define LIN_BUDGET ((int64_t)1 << 20) /* floats */

static int64_t round_up16(int64_t v)
{
    return (v + 15) / 16 * 16;
}

/* Output features per task: the widest tile in the budget, spread evenly
 * over the blocks, and an even task count where that is cheap (2 cores). A
 * function of the shape only, never of the thread count. */
static int64_t lin_rows(int64_t rows, int64_t cols, int64_t ntok)
{
    int64_t rmax = LIN_BUDGET / (cols > 0 ? cols : 1) / 16 * 16;
    rmax = rmax < 64 ? 64 : rmax > 1024 ? 1024 : rmax;
    int64_t nb = (rows + rmax - 1) / rmax;
    if ((nb * ntok) % 2 == 1 && rows >= 128)
        nb++;
    return round_up16((rows + nb - 1) / nb);
}

typedef struct lin_ctx {
    const float *x;
    int64_t n, ldx;
    const px_nn_mat *w;
    const float *bias;
    float *y;
    int64_t ldy;
    int accumulate;
    int64_t ntok;       /* token blocks */
    int64_t rows, toks; /* tile: output features x tokens */
    float *scratch;
    size_t scratch_per;
    int64_t *last_rb; /* per worker: row block its scratch holds, -1 none */
} lin_ctx;

static void lin_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    lin_ctx *c = ctx;
    const px_nn_mat *w = c->w;
    int64_t k = w->cols;
    for (int64_t t = begin; t < end; t++) {
        int64_t rb = t / c->ntok, tb = t % c->ntok;
        int64_t r0 = rb * c->rows, r1 = min64(r0 + c->rows, w->rows);
        int64_t t0 = tb * c->toks, t1 = min64(t0 + c->toks, c->n);
        const float *wr;
        if (w->dtype == PX_NN_F32) {
            wr = (const float *)w->data + (size_t)r0 * (size_t)k;
        } else {
            float *s = c->scratch + (size_t)worker * c->scratch_per;
            if (c->last_rb[worker] != rb) {
                mat_rows_f32(w, r0, r1, s);
                c->last_rb[worker] = rb;
            }
            wr = s;
        }
        float *y = c->y + (size_t)t0 * (size_t)c->ldy + (size_t)r0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(t1 - t0), (int)(r1 - r0), (int)k,
                    1.0f, c->x + (size_t)t0 * (size_t)c->ldx, (int)c->ldx, wr, (int)k,
                    c->accumulate ? 1.0f : 0.0f, y, (int)c->ldy);
        if (c->bias) {
            const float *b = c->bias + r0;
            for (int64_t i = 0; i < t1 - t0; i++) {
                float *yr = y + (size_t)i * (size_t)c->ldy;
                for (int64_t j = 0; j < r1 - r0; j++)
                    yr[j] += b[j];
            }
        }
    }
}

int px_nn_linear(const float *x, int64_t n, int64_t ldx, const px_nn_mat *w, const float *bias,
                 float *y, int64_t ldy, int accumulate, px_nn_arena *arena, px_pool *pool)
{
    if (n <= 0 || w->rows <= 0)
        return PX_OK;
    px_nn_blas_single_thread();
    int nthr = px_pool_threads(pool);
    size_t mark = px_nn_arena_mark(arena);
    lin_ctx c = {.x = x,
                 .n = n,
                 .ldx = ldx,
                 .w = w,
                 .bias = bias,
                 .y = y,
                 .ldy = ldy,
                 .accumulate = accumulate,
                 .toks = LIN_TOKENS};
    c.ntok = ceil_div(n, c.toks);
    c.rows = lin_rows(w->rows, w->cols, c.ntok);
    c.last_rb = px_nn_arena_alloc(arena, (size_t)nthr * sizeof(int64_t));
    if (!c.last_rb)
        return PX_ENOMEM;
    for (int i = 0; i < nthr; i++)
        c.last_rb[i] = -1;
    if (w->dtype != PX_NN_F32) {
        c.scratch_per = ((size_t)c.rows * (size_t)w->cols + 15) / 16 * 16;
        c.scratch = px_nn_arena_floats(arena, c.scratch_per * (size_t)nthr);
        if (!c.scratch) {
            px_nn_arena_release(arena, mark);
            return PX_ENOMEM;
        }
    }
    if (w->cols == 0) {
        /* An empty sum: y = bias (or y += bias). */
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < w->rows; j++)
                y[i * ldy + j] = (accumulate ? y[i * ldy + j] : 0.0f) + (bias ? bias[j] : 0.0f);
    } else {
        px_nn_ops_for(pool, ceil_div(w->rows, c.rows) * c.ntok, lin_task, &c);
    }
    px_nn_ops_count((uint64_t)2 * (uint64_t)n * (uint64_t)w->rows * (uint64_t)w->cols);
    px_nn_arena_release(arena, mark);
    return PX_OK;
}

/* ---- conv2d ---- */

/* im2col tile budget per worker. OpenBLAS packs the whole weight matrix
 * again for every GEMM call, so a tile must be wide (hundreds of pixels) for
 * that to be small next to the multiply; the tile then lives in L3. */
#define CONV_TILE_FLOATS ((int64_t)2 << 20)

void px_nn_conv2d_out_size(const px_nn_conv2d_shape *s, int *oh, int *ow)
{
    *oh = (s->h + 2 * s->pad - s->k) / s->stride + 1;
    *ow = (s->w + 2 * s->pad - s->k) / s->stride + 1;
}

typedef struct conv_ctx {
    const float *x;
    const px_nn_conv2d_shape *s;
    const float *w; /* (c_out, kdim) f32 */
    const float *bias;
    float *y;
    int accumulate;
    int oh, ow;
    int64_t kdim, ohw, tile, ntiles, nrb, rows;
    /* Few-pixel path: all images unrolled side by side (col, kdim x ncols),
     * results in ytmp (c_out x ncols) before they go to y. */
    const px_nn_mat *wm;
    float *col, *ytmp;
    int64_t ncols;
    float *scratch;
    size_t scratch_per;
} conv_ctx;

/* One output row's stretch [ox0, ox0 + len) of im2col row (ci, ky, kx):
 * input row `in` (NULL when the tap falls in the padding rows). Stride 1 is
 * a copy between two zero-filled borders. */
static void im2col_run(const float *in, int w, int stride, int ix0, int len, float *dst)
{
    if (!in) {
        memset(dst, 0, (size_t)len * sizeof(float));
        return;
    }
    int j = 0;
    /* Leading columns left of the image. */
    for (; j < len && ix0 + j * stride < 0; j++)
        dst[j] = 0.0f;
    if (stride == 1) {
        int n = len - j;
        if (ix0 + j + n > w)
            n = w - (ix0 + j);
        if (n > 0) {
            memcpy(dst + j, in + ix0 + j, (size_t)n * sizeof(float));
            j += n;
        }
    } else {
        for (; j < len && ix0 + j * stride < w; j++)
            dst[j] = in[ix0 + j * stride];
    }
    for (; j < len; j++)
        dst[j] = 0.0f;
}

/* col (kdim, cols) = the input patches of output pixels [p0, p0 + cols),
 * built a stretch of one output row at a time. */
static void im2col_tile(const conv_ctx *c, const float *xb, int64_t p0, int64_t cols, float *col,
                        int64_t ld)
{
    const px_nn_conv2d_shape *s = c->s;
    int k = s->k;
    for (int ci = 0; ci < s->c_in; ci++) {
        const float *plane = xb + (size_t)ci * (size_t)s->h * (size_t)s->w;
        for (int ky = 0; ky < k; ky++) {
            for (int kx = 0; kx < k; kx++) {
                float *dst = col + (size_t)((ci * k + ky) * k + kx) * (size_t)ld;
                int64_t p = p0, end = p0 + cols;
                while (p < end) {
                    int oy = (int)(p / c->ow), ox = (int)(p % c->ow);
                    int len = (int)min64(c->ow - ox, end - p);
                    int iy = oy * s->stride - s->pad + ky;
                    const float *in =
                        iy >= 0 && iy < s->h ? plane + (size_t)iy * (size_t)s->w : NULL;
                    im2col_run(in, s->w, s->stride, ox * s->stride - s->pad + kx, len, dst);
                    dst += len;
                    p += len;
                }
            }
        }
    }
}

/* Bias on rows [r0, r1) of a (c_out, ohw) output, columns [p0, p0 + cols). */
static void conv_bias(const conv_ctx *c, float *yb, int64_t r0, int64_t r1, int64_t p0,
                      int64_t cols)
{
    if (!c->bias)
        return;
    for (int64_t r = r0; r < r1; r++) {
        float *row = yb + (size_t)r * (size_t)c->ohw + (size_t)p0;
        float b = c->bias[r];
        for (int64_t j = 0; j < cols; j++)
            row[j] += b;
    }
}

/* Tasks (batch, row block, column tile) of the 1x1 stride-1 path. */
static void conv1x1_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const conv_ctx *c = ctx;
    const px_nn_conv2d_shape *s = c->s;
    for (int64_t t = begin; t < end; t++) {
        int64_t b = t / (c->nrb * c->ntiles), rem = t % (c->nrb * c->ntiles);
        int64_t r0 = rem / c->ntiles * c->rows, r1 = min64(r0 + c->rows, s->c_out);
        int64_t p0 = rem % c->ntiles * c->tile, cols = min64(c->tile, c->ohw - p0);
        const float *xb = c->x + (size_t)b * (size_t)s->c_in * (size_t)c->ohw;
        float *yb = c->y + (size_t)b * (size_t)s->c_out * (size_t)c->ohw;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(r1 - r0), (int)cols,
                    (int)c->kdim, 1.0f, c->w + (size_t)r0 * (size_t)c->kdim, (int)c->kdim, xb + p0,
                    (int)c->ohw, c->accumulate ? 1.0f : 0.0f,
                    yb + (size_t)r0 * (size_t)c->ohw + (size_t)p0, (int)c->ohw);
        conv_bias(c, yb, r0, r1, p0, cols);
    }
}

/* Tasks (batch, column tile) of the im2col path. */
static void conv_im2col_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    const conv_ctx *c = ctx;
    const px_nn_conv2d_shape *s = c->s;
    float *col = c->scratch + (size_t)worker * c->scratch_per;
    for (int64_t t = begin; t < end; t++) {
        int64_t b = t / c->ntiles;
        int64_t p0 = t % c->ntiles * c->tile, cols = min64(c->tile, c->ohw - p0);
        const float *xb = c->x + (size_t)b * (size_t)s->c_in * (size_t)s->h * (size_t)s->w;
        float *yb = c->y + (size_t)b * (size_t)s->c_out * (size_t)c->ohw;
        im2col_tile(c, xb, p0, cols, col, cols);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->c_out, (int)cols, (int)c->kdim,
                    1.0f, c->w, (int)c->kdim, col, (int)cols, c->accumulate ? 1.0f : 0.0f, yb + p0,
                    (int)c->ohw);
        conv_bias(c, yb, 0, s->c_out, p0, cols);
    }
}

/* Few-pixel convs (SD's 16x16 and 8x8 levels) unroll every image once,
 * side by side, so each GEMM spans all of them (batch x pixels columns) and
 * tasks split the output channels instead: a task converts its block of
 * weight rows (f16/bf16) straight into its scratch and uses it at once. With
 * per-image tiles of 64-256 pixels OpenBLAS spent a third of the time
 * repacking the weights, and converting the whole layer first cost as much
 * again. */
#define CONV_SMALL_COLS 1024                 /* batch x pixels at most */
#define CONV_SMALL_FLOATS ((int64_t)8 << 20) /* unrolled images at most */
#define CONV_SMALL_ROWS ((int64_t)4 << 20)   /* converted weight rows per worker */

static void conv_small_im2col_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const conv_ctx *c = ctx;
    const px_nn_conv2d_shape *s = c->s;
    for (int64_t b = begin; b < end; b++)
        im2col_tile(c, c->x + (size_t)b * (size_t)s->c_in * (size_t)s->h * (size_t)s->w, 0, c->ohw,
                    c->col + (size_t)b * (size_t)c->ohw, c->ncols);
}

static void conv_small_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    const conv_ctx *c = ctx;
    const px_nn_conv2d_shape *s = c->s;
    for (int64_t rb = begin; rb < end; rb++) {
        int64_t r0 = rb * c->rows, r1 = min64(r0 + c->rows, s->c_out);
        const float *a;
        if (c->wm->dtype == PX_NN_F32) {
            a = (const float *)c->wm->data + (size_t)r0 * (size_t)c->kdim;
        } else {
            float *sc = c->scratch + (size_t)worker * c->scratch_per;
            mat_rows_f32(c->wm, r0, r1, sc);
            a = sc;
        }
        float *yt = c->ytmp + (size_t)r0 * (size_t)c->ncols;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(r1 - r0), (int)c->ncols,
                    (int)c->kdim, 1.0f, a, (int)c->kdim, c->col, (int)c->ncols, 0.0f, yt,
                    (int)c->ncols);
        for (int64_t r = r0; r < r1; r++) {
            float bias = c->bias ? c->bias[r] : 0.0f;
            const float *src = c->ytmp + (size_t)r * (size_t)c->ncols;
            for (int b = 0; b < s->batch; b++, src += c->ohw) {
                float *dst = c->y + ((size_t)b * (size_t)s->c_out + (size_t)r) * (size_t)c->ohw;
                if (c->accumulate)
                    for (int64_t j = 0; j < c->ohw; j++)
                        dst[j] += src[j] + bias;
                else
                    for (int64_t j = 0; j < c->ohw; j++)
                        dst[j] = src[j] + bias;
            }
        }
    }
}

static int conv_small(conv_ctx *c, const px_nn_mat *w, px_nn_arena *arena, px_pool *pool)
{
    const px_nn_conv2d_shape *s = c->s;
    c->wm = w;
    c->ncols = (int64_t)s->batch * c->ohw;
    c->col = px_nn_arena_floats(arena, (size_t)(c->kdim * c->ncols));
    c->ytmp = px_nn_arena_floats(arena, (size_t)s->c_out * (size_t)c->ncols);
    /* An even number of row blocks (2 cores), each within the scratch budget. */
    int64_t nb = ceil_div((int64_t)s->c_out * c->kdim, CONV_SMALL_ROWS);
    nb = nb < 2 ? 2 : nb + (nb & 1);
    c->rows = round_up16(ceil_div(s->c_out, nb));
    c->nrb = ceil_div(s->c_out, c->rows);
    if (w->dtype != PX_NN_F32) {
        c->scratch_per = (size_t)round_up16(c->rows * c->kdim);
        c->scratch = px_nn_arena_floats(arena, c->scratch_per * (size_t)px_pool_threads(pool));
    }
    if (!c->col || !c->ytmp || (w->dtype != PX_NN_F32 && !c->scratch))
        return PX_ENOMEM;
    px_pool_for(pool, s->batch, conv_small_im2col_task, c);
    px_nn_ops_for(pool, c->nrb, conv_small_task, c);
    return PX_OK;
}

int px_nn_conv2d(const float *x, const px_nn_conv2d_shape *s, const px_nn_mat *w, const float *bias,
                 float *y, int accumulate, px_nn_arena *arena, px_pool *pool)
{
    conv_ctx c = {.x = x, .s = s, .bias = bias, .y = y, .accumulate = accumulate};
    px_nn_conv2d_out_size(s, &c.oh, &c.ow);
    c.ohw = (int64_t)c.oh * c.ow;
    c.kdim = (int64_t)s->c_in * s->k * s->k;
    if (s->batch <= 0 || s->c_out <= 0 || c.ohw <= 0)
        return PX_OK;
    px_nn_blas_single_thread();
    size_t mark = px_nn_arena_mark(arena);
    int64_t ncols = (int64_t)s->batch * c.ohw;
    if (ncols <= CONV_SMALL_COLS && c.kdim * ncols <= CONV_SMALL_FLOATS) {
        int rc = conv_small(&c, w, arena, pool);
        px_nn_arena_release(arena, mark);
        if (rc == PX_OK)
            px_nn_ops_count((uint64_t)2 * (uint64_t)ncols * (uint64_t)s->c_out * (uint64_t)c.kdim);
        return rc;
    }
    c.w = mat_f32(w, arena, pool);
    if (!c.w)
        return PX_ENOMEM;
    int nthr = px_pool_threads(pool);
    if (s->k == 1 && s->stride == 1 && s->pad == 0) {
        /* Same tiling as a linear, pixels for tokens. */
        c.ntiles = ceil_div(c.ohw, LIN_TOKENS);
        c.tile = round_up16(ceil_div(c.ohw, c.ntiles));
        c.ntiles = ceil_div(c.ohw, c.tile);
        c.rows = lin_rows(s->c_out, c.kdim, s->batch * c.ntiles);
        c.nrb = ceil_div(s->c_out, c.rows);
        px_nn_ops_for(pool, (int64_t)s->batch * c.nrb * c.ntiles, conv1x1_task, &c);
    } else {
        /* The widest tile in the budget, then evened out over the tiles. */
        int64_t tile = CONV_TILE_FLOATS / (c.kdim > 0 ? c.kdim : 1) / 16 * 16;
        c.ntiles = ceil_div(c.ohw, tile < 64 ? 64 : tile);
        c.tile = round_up16(ceil_div(c.ohw, c.ntiles));
        c.ntiles = ceil_div(c.ohw, c.tile);
        c.scratch_per = ((size_t)c.kdim * (size_t)c.tile + 15) / 16 * 16;
        c.scratch = px_nn_arena_floats(arena, c.scratch_per * (size_t)nthr);
        if (!c.scratch) {
            px_nn_arena_release(arena, mark);
            return PX_ENOMEM;
        }
        px_nn_ops_for(pool, (int64_t)s->batch * c.ntiles, conv_im2col_task, &c);
    }
    px_nn_ops_count((uint64_t)2 * (uint64_t)s->batch * (uint64_t)s->c_out * (uint64_t)c.ohw *
                    (uint64_t)c.kdim);
    px_nn_arena_release(arena, mark);
    return PX_OK;
}

/* ---- attention ---- */

/* Queries per task and keys per block. Each block's GEMMs repack their
 * operands (OpenBLAS does at every call), so blocks are wide; the score block
 * (ATT_QTILE x ATT_KBLOCK floats, 1 MiB) stays in L2. Measured on SD's
 * 4096-token self-attention (dh 40): whole key rows with 64-128 query tiles
 * ran at 47-57% of the per-core sgemm peak, these 512 x 512 blocks at 65-72%;
 * 1024-token attention (dh 80) at ~80%. */
#define ATT_QTILE 512
#define ATT_KBLOCK 512

typedef struct att_ctx {
    const float *q, *k, *v;
    float *out;
    const px_nn_attn_shape *s;
    int64_t nqt;
    float *scratch;
    size_t scratch_per;
    float *kt; /* AVX-512 path: K per (batch, head) transposed, (dh, nk); else NULL */
} att_ctx;

/* Keys of head (b, h) in panels of 32 for the AVX-512 score kernel: panel c
 * (dh, 32) holds keys 32c..32c+31 transposed, zero past nk. Panels start
 * every 32 keys, so a 512-key block starts at panel j0 / 32. Tasks over
 * batch x heads. */
static size_t att_kt_floats(const px_nn_attn_shape *s)
{
    return (size_t)ceil_div(s->nk, 32) * 32 * (size_t)s->dh;
}

static void att_kt_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const att_ctx *c = ctx;
    const px_nn_attn_shape *s = c->s;
    size_t nk = (size_t)s->nk, dh = (size_t)s->dh, ldk = (size_t)s->ldk;
    for (int64_t t = begin; t < end; t++) {
        size_t b = (size_t)(t / s->heads), h = (size_t)(t % s->heads);
        const float *in = c->k + b * nk * ldk + h * dh;
        float *out = c->kt + (size_t)t * att_kt_floats(s);
        for (size_t j0 = 0; j0 < nk; j0 += 32) {
            float *panel = out + j0 * dh;
            size_t n = nk - j0 < 32 ? nk - j0 : 32;
            for (size_t j = 0; j < 32; j++)
                for (size_t d = 0; d < dh; d++)
                    panel[d * 32 + j] = j < n ? in[(j0 + j) * ldk + d] : 0.0f;
        }
    }
}

/* Online softmax of one block of scores p (rows, kn) for keys [j0, j0+kn):
 * row i's running max m[i] and sum l[i] are updated, its scores become
 * exp(s - m[i]) (0 where causally masked) and, when the max grew, the output
 * row accumulated so far (o, row stride ldo, dh wide) is rescaled to match. */
static void att_softmax_block(float *p, int64_t rows, int64_t kn, int64_t j0, int64_t q0,
                              int causal, float *m, float *l, float *o, int64_t ldo, int dh)
{
    const px_nn_vec_ops *v = px_nn_vec();
    for (int64_t i = 0; i < rows; i++) {
        float *r = p + (size_t)i * (size_t)kn;
        int64_t len = causal ? q0 + i + 1 - j0 : kn;
        len = len < 0 ? 0 : len > kn ? kn : len;
        for (int64_t j = len; j < kn; j++)
            r[j] = 0.0f;
        if (len == 0)
            continue; /* only after block 0, which always has key 0 */
        float mb = v->max(r, len);
        if (j0 == 0) {
            m[i] = mb;
            l[i] = v->expsum(r, len, mb);
            continue;
        }
        float mn = mb > m[i] ? mb : m[i];
        float sum = v->expsum(r, len, mn);
        if (mn > m[i]) {
            float alpha = expf(m[i] - mn);
            float *orow = o + (size_t)i * (size_t)ldo;
            for (int d = 0; d < dh; d++)
                orow[d] *= alpha;
            l[i] *= alpha;
            m[i] = mn;
        }
        l[i] += sum;
    }
}

static void att_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    const att_ctx *c = ctx;
    const px_nn_attn_shape *s = c->s;
    float *p = c->scratch + (size_t)worker * c->scratch_per;
    float *m = p + (size_t)ATT_QTILE * (size_t)ATT_KBLOCK, *l = m + ATT_QTILE;
    for (int64_t t = begin; t < end; t++) {
        int64_t bh = t / c->nqt, qt = t % c->nqt;
        int64_t b = bh / s->heads, h = bh % s->heads;
        int64_t q0 = qt * ATT_QTILE, rows = min64(ATT_QTILE, s->nq - q0);
        /* Keys past the tile's last query are masked for every row. */
        int64_t nk = s->causal ? min64(s->nk, q0 + rows) : s->nk;
        const float *qp = c->q + ((size_t)b * (size_t)s->nq + (size_t)q0) * (size_t)s->ldq +
                          (size_t)h * (size_t)s->dh;
        const float *kp =
            c->k + (size_t)b * (size_t)s->nk * (size_t)s->ldk + (size_t)h * (size_t)s->dh;
        const float *vp =
            c->v + (size_t)b * (size_t)s->nk * (size_t)s->ldv + (size_t)h * (size_t)s->dh;
        float *op = c->out + ((size_t)b * (size_t)s->nq + (size_t)q0) * (size_t)s->ldo +
                    (size_t)h * (size_t)s->dh;
        const float *kt = c->kt ? c->kt + (size_t)bh * att_kt_floats(s) : NULL;
        for (int64_t j0 = 0; j0 < nk; j0 += ATT_KBLOCK) {
            int64_t kn = min64(ATT_KBLOCK, nk - j0);
            if (kt)
                px_nn_attn_scores_avx512(qp, s->ldq, kt + (size_t)j0 * (size_t)s->dh, rows, kn,
                                         s->dh, s->scale, p, kn);
            else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)kn, s->dh,
                            s->scale, qp, (int)s->ldq, kp + (size_t)j0 * (size_t)s->ldk,
                            (int)s->ldk, 0.0f, p, (int)kn);
            att_softmax_block(p, rows, kn, j0, q0, s->causal, m, l, op, s->ldo, s->dh);
            if (kt)
                px_nn_attn_pv_avx512(p, kn, rows, kn, vp + (size_t)j0 * (size_t)s->ldv, s->ldv,
                                     s->dh, op, s->ldo, j0 == 0);
            else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, s->dh, (int)kn,
                            1.0f, p, (int)kn, vp + (size_t)j0 * (size_t)s->ldv, (int)s->ldv,
                            j0 ? 1.0f : 0.0f, op, (int)s->ldo);
        }
        for (int64_t i = 0; i < rows; i++) {
            float inv = 1.0f / l[i], *orow = op + (size_t)i * (size_t)s->ldo;
            for (int d = 0; d < s->dh; d++)
                orow[d] *= inv;
        }
    }
}

int px_nn_attention(const float *q, const float *k, const float *v, float *out,
                    const px_nn_attn_shape *s, px_nn_arena *arena, px_pool *pool)
{
    if (s->batch <= 0 || s->nq <= 0 || s->heads <= 0 || s->dh <= 0)
        return PX_OK;
    if (s->nk <= 0) { /* nothing to attend to: a softmax over no keys, taken as 0 */
        for (int64_t r = 0; r < (int64_t)s->batch * s->nq; r++)
            memset(out + (size_t)r * (size_t)s->ldo, 0,
                   (size_t)s->heads * (size_t)s->dh * sizeof(float));
        return PX_OK;
    }
    px_nn_blas_single_thread();
    att_ctx c = {.q = q, .k = k, .v = v, .out = out, .s = s, .nqt = ceil_div(s->nq, ATT_QTILE)};
    size_t mark = px_nn_arena_mark(arena);
    int nthr = px_pool_threads(pool);
    c.scratch_per = (size_t)round_up16(ATT_QTILE * (ATT_KBLOCK + 2));
    c.scratch = px_nn_arena_floats(arena, c.scratch_per * (size_t)nthr);
    if (!c.scratch)
        return PX_ENOMEM;
    if (px_nn_ops_level() == PX_OPS_AVX512 && s->nk > 0) {
        c.kt = px_nn_arena_floats(arena, (size_t)s->batch * (size_t)s->heads * att_kt_floats(s));
        if (!c.kt) {
            px_nn_arena_release(arena, mark);
            return PX_ENOMEM;
        }
        px_pool_for(pool, (int64_t)s->batch * s->heads, att_kt_task, &c);
    }
    px_nn_ops_for(pool, (int64_t)s->batch * s->heads * c.nqt, att_task, &c);
    /* Two GEMMs of (nq x nk x dh) per head; causal counts what it skips too. */
    px_nn_ops_count((uint64_t)4 * (uint64_t)s->batch * (uint64_t)s->heads * (uint64_t)s->nq *
                    (uint64_t)s->nk * (uint64_t)s->dh);
    px_nn_arena_release(arena, mark);
    return PX_OK;
}
