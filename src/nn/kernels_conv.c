/*
 * Conv2D for pixpipe's inference engine: validation, algorithm choice, weight
 * packing, the thread split, and the portable code paths.
 *
 * px_nn_conv_prepare picks one algorithm per conv node, once, at model load:
 *  - "gemm1x1": 1x1 kernel, stride 1, no padding. The input (IC, H*W) already
 *    is a GEMM operand: out (OC, HW) = W (OC, IC) x in (IC, HW), one GEMM per
 *    column tile, no im2col.
 *  - "im2col": everything else that is not depthwise 3x3. A tile of output
 *    columns is unrolled into a (IC/group*KH*KW, T) matrix in the caller's
 *    scratch (T chosen so the tile stays in L2), then one GEMM per tile.
 *  - "dw3x3-avx2" / "dw3x3": depthwise 3x3, stride 1 or 2, dilation 1, any
 *    padding. BLAS has nothing for this (as a GEMM it is K=9, M=1: all
 *    copying), so it is a direct kernel: kernels_conv_avx2.c on AVX2+FMA
 *    CPUs, px_nn_dw3x3_generic below otherwise.
 *  - "conv3x3s2-avx2": 3x3 stride 2 with at most 4 input channels (network
 *    stems such as YuNet's first layer) on AVX2: a direct kernel, because
 *    im2col there spent a third of the time gathering every other pixel.
 *  - "gemm1x1+dw3x3[-avx2]": px_nn_conv_prepare_dp, a 1x1 conv fused with the
 *    depthwise 3x3 that consumes it (dp_task below), so the intermediate map
 *    (6.5 MB on YuNet's first layers) never goes through DRAM.
 * Which GEMM: with AVX2+FMA and K <= 256 (all of YuNet's convs) our own
 * register-blocked kernel px_nn_sgemm_small_avx2; otherwise OpenBLAS
 * cblas_sgemm. With K and M of 16..64 OpenBLAS spends about as long copying
 * operands into its panel layout as multiplying; on YuNet's 1x1 layers the
 * small kernel measured 1.1-1.5x faster (PX_NN_NOSMALL=1 in the environment,
 * read at prepare, sends everything to OpenBLAS for such comparisons). Bias
 * and ReLU are applied to each tile right after its GEMM, while in cache.
 * px_nn_force_generic(1) before prepare selects the portable paths (OpenBLAS
 * plus plain C), as on CPUs without AVX2.
 *
 * Determinism: OpenBLAS is set to one thread (once, via pthread_once) and we
 * parallelise ourselves with px_pool_for over a fixed index space (group x
 * column tile, channels, or row bands). Tiles depend only on the conv shape,
 * so every GEMM call, and hence every output bit, is the same for any thread
 * count.
 */
#include "kernels.h"
#include "kernels_internal.h"
#include "ops_internal.h"
#include "px_nn.h"

#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum { ALGO_GEMM1X1, ALGO_IM2COL, ALGO_DW3X3, ALGO_C3S2 };

/* Output rows per task of the direct 3x3 stride-2 conv. */
#define PX_C3S2_ROWS 8

/* Up to this K (input channels x kernel taps), GEMMs use our unpacked AVX2
 * kernel; above it OpenBLAS's packing pays for itself. */
#define PX_SMALL_GEMM_MAX_K 256

struct px_nn_conv_packed {
    px_nn_conv_params p;
    int algo;
    int avx2;         /* dw3x3 / epilogue use the AVX2 code */
    int avx512;       /* ... and the GEMM, dw3x3 and stem their AVX-512 twins */
    px_sgemm_small_fn gemm;     /* the small GEMM of this ISA (when small) */
    px_dw3x3_fn dw;             /* depthwise 3x3 of this ISA */
    px_dw3x3_plane_fn dw_plane; /* ... on a ready plane (AVX2 and up) */
    int small;        /* GEMMs go through px_nn_sgemm_small_avx2 instead of OpenBLAS */
    int pack_b;       /* small 1x1: copy B tiles first (input planes 4 KiB-aliased) */
    float *w;         /* (OC, K) with K = IC/group*KH*KW: per group a row-major GEMM A operand */
    float *bias;      /* (OC,), zeros when the node has none */
    size_t k;         /* IC/group * KH * KW */
    size_t hw;        /* OH * OW */
    size_t tile;      /* output columns per task (gemm algorithms) */
    size_t ntiles;    /* ceil(hw / tile) */
    int pool_rows;    /* dw3x3 with fused pool: output rows per chunk */
    size_t out_plane; /* dw3x3: floats per output channel (pooled if p.pool) */
    /* Fused pointwise + depthwise (px_nn_conv_prepare_dp): p/w/bias above are
     * the 1x1 conv, dw the depthwise 3x3 that consumes its output. */
    px_nn_conv_packed *dp;
    int dp_band;                    /* output rows per task */
    int dp_step;                    /* output rows per window step inside a task */
    int dp_wrows;                   /* rows of 1x1 output a window holds: (step-1)*stride + 3 */
    int dp_cols;                    /* AVX2 window: floats per padded row */
    size_t dp_win, dp_pack, dp_pad; /* per-thread scratch parts, floats, 16-aligned */
    size_t dp_scratch;              /* bytes per thread */
};

/* ---- ISA choice ---- */

static atomic_int g_force_generic, g_force_avx2;

void px_nn_force_generic(int on)
{
    atomic_store(&g_force_generic, on ? 1 : 0);
}

void px_nn_force_avx2(int on)
{
    atomic_store(&g_force_avx2, on ? 1 : 0);
}

static int cpu_has_avx2_fma(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int px_nn_use_avx2(void)
{
    return !atomic_load(&g_force_generic) && cpu_has_avx2_fma();
}

static int cpu_has_avx512f(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

int px_nn_use_avx512(void)
{
    const char *no = getenv("PX_NN_NOAVX512");
    return px_nn_use_avx2() && !atomic_load(&g_force_avx2) && !(no && *no && *no != '0') &&
           cpu_has_avx512f();
}

const char *px_nn_isa(void)
{
    return px_nn_use_avx512() ? "avx512+fma" : px_nn_use_avx2() ? "avx2+fma" : "generic";
}

static pthread_once_t g_blas_once = PTHREAD_ONCE_INIT;

/* OpenBLAS's pthreads build starts its worker threads when it is loaded,
 * before main, and (0.3.21, Debian 12) they keep polling with sched_yield
 * after openblas_set_num_threads(1): a fifth of the second core's time,
 * measured with perf on `pixpipe anonymize`. Its own shutdown (what it runs
 * before a fork) stops them; single-threaded calls never start them again.
 * Weak: another BLAS simply lacks it. */
extern int blas_thread_shutdown_(void) __attribute__((weak));

static void blas_single_thread(void)
{
    /* We split work ourselves; OpenBLAS's own threads would fight our pool
     * and make results depend on its internal partitioning. */
    openblas_set_num_threads(1);
    if (blas_thread_shutdown_)
        blas_thread_shutdown_();
}

void px_nn_blas_single_thread(void)
{
    pthread_once(&g_blas_once, blas_single_thread);
}

/* ---- prepare ---- */

static int check_params(const px_nn_conv_params *p, px_err *err)
{
    if (p->ic <= 0 || p->ih <= 0 || p->iw <= 0 || p->oc <= 0 || p->oh <= 0 || p->ow <= 0)
        return px_err_set(err, PX_EINVAL,
                          "conv: sizes must be positive (ic=%d ih=%d iw=%d oc=%d oh=%d ow=%d)",
                          p->ic, p->ih, p->iw, p->oc, p->oh, p->ow);
    if (p->kh <= 0 || p->kw <= 0 || p->sh <= 0 || p->sw <= 0 || p->dh <= 0 || p->dw <= 0)
        return px_err_set(err, PX_EINVAL,
                          "conv: kernel %dx%d, strides %d,%d and dilations %d,%d must be positive",
                          p->kh, p->kw, p->sh, p->sw, p->dh, p->dw);
    if (p->pt < 0 || p->pl < 0 || p->pb < 0 || p->pr < 0)
        return px_err_set(err, PX_EINVAL, "conv: negative padding (%d,%d,%d,%d)", p->pt, p->pl,
                          p->pb, p->pr);
    if (p->group <= 0 || p->ic % p->group || p->oc % p->group)
        return px_err_set(err, PX_EINVAL, "conv: group %d does not divide ic=%d and oc=%d",
                          p->group, p->ic, p->oc);
    if (p->act != PX_NN_ACT_NONE && p->act != PX_NN_ACT_RELU)
        return px_err_set(err, PX_EINVAL, "conv: unknown activation %d", p->act);
    if (p->pool != 0 && p->pool != 1)
        return px_err_set(err, PX_EINVAL, "conv: unknown fused pool %d", p->pool);
    /* Keep every index product well inside int/size_t range. */
    const int64_t lim = (int64_t)1 << 30;
    if ((int64_t)p->ic * p->ih * p->iw > lim || (int64_t)p->oc * p->oh * p->ow > lim ||
        (int64_t)p->ic * p->kh * p->kw > lim || p->kh > 1 << 14 || p->kw > 1 << 14 ||
        p->dh > 1 << 14 || p->dw > 1 << 14 || p->sh > 1 << 14 || p->sw > 1 << 14 ||
        p->pt > 1 << 14 || p->pl > 1 << 14 || p->pb > 1 << 14 || p->pr > 1 << 14)
        return px_err_set(err, PX_ELIMIT, "conv: tensor or kernel too large");
    int64_t ekh = (int64_t)p->dh * (p->kh - 1) + 1, ekw = (int64_t)p->dw * (p->kw - 1) + 1;
    int64_t spanh = (int64_t)p->ih + p->pt + p->pb - ekh;
    int64_t spanw = (int64_t)p->iw + p->pl + p->pr - ekw;
    if (spanh < 0 || spanw < 0)
        return px_err_set(err, PX_EINVAL,
                          "conv: kernel %lldx%lld (dilated) larger than padded input %lldx%lld",
                          (long long)ekh, (long long)ekw, (long long)(p->ih + p->pt + p->pb),
                          (long long)(p->iw + p->pl + p->pr));
    if (spanh / p->sh + 1 != p->oh || spanw / p->sw + 1 != p->ow)
        return px_err_set(err, PX_EINVAL, "conv: output %dx%d does not match expected %lldx%lld",
                          p->oh, p->ow, (long long)(spanh / p->sh + 1),
                          (long long)(spanw / p->sw + 1));
    return PX_OK;
}

static int dw3x3_shape(const px_nn_conv_params *p)
{
    return p->group == p->ic && p->group == p->oc && p->kh == 3 && p->kw == 3 && p->dh == 1 &&
           p->dw == 1 && p->sh == p->sw && (p->sh == 1 || p->sh == 2);
}

int px_nn_conv_pool_fusable(const px_nn_conv_params *p)
{
    return p && !p->pool && dw3x3_shape(p) && p->oh >= 2 && p->ow >= 2;
}

static size_t round_down(size_t v, size_t m)
{
    return v / m * m;
}

int px_nn_conv_prepare(const px_nn_conv_params *p, const float *w, const float *bias,
                    px_nn_conv_packed **out, px_err *err)
{
    *out = NULL;
    if (!p || !w)
        return px_err_set(err, PX_EINVAL, "conv: missing %s", p ? "weights" : "parameters");
    int rc = check_params(p, err);
    if (rc)
        return rc;
    pthread_once(&g_blas_once, blas_single_thread);

    px_nn_conv_packed *c = px_calloc(1, sizeof *c);
    if (!c)
        return px_err_set(err, PX_ENOMEM, "conv: out of memory");
    c->p = *p;
    c->k = (size_t)(p->ic / p->group) * (size_t)p->kh * (size_t)p->kw;
    c->hw = (size_t)p->oh * (size_t)p->ow;
    c->avx2 = px_nn_use_avx2();
    c->avx512 = c->avx2 && px_nn_use_avx512();
    c->gemm = c->avx512 ? px_nn_sgemm_small_avx512 : px_nn_sgemm_small_avx2;
    c->dw = c->avx512 ? px_nn_dw3x3_avx512 : c->avx2 ? px_nn_dw3x3_avx2 : px_nn_dw3x3_generic;
    c->dw_plane = c->avx512 ? px_nn_dw3x3_avx512_plane : px_nn_dw3x3_avx2_plane;
    size_t nw = (size_t)p->oc * c->k;
    c->w = px_aligned_alloc(nw * sizeof(float));
    c->bias = px_aligned_alloc((size_t)p->oc * sizeof(float));
    if (!c->w || !c->bias) {
        px_nn_conv_packed_destroy(c);
        return px_err_set(err, PX_ENOMEM, "conv: out of memory for %zu weights", nw);
    }
    /* The ONNX layout (OC, IC/group, KH, KW) already is, per group, the
     * row-major (OC/group, K) matrix every algorithm here wants. */
    memcpy(c->w, w, nw * sizeof(float));
    if (bias)
        memcpy(c->bias, bias, (size_t)p->oc * sizeof(float));
    else
        memset(c->bias, 0, (size_t)p->oc * sizeof(float));

    if (dw3x3_shape(p)) {
        c->algo = ALGO_DW3X3;
        /* Rows per chunk when a max pool is fused: computed into scratch,
         * pooled from there. Even, so chunks pool independently. */
        c->pool_rows = 16;
        c->out_plane = p->pool ? (size_t)(p->oh / 2) * (size_t)(p->ow / 2) : c->hw;
    } else if (c->avx2 && p->group == 1 && p->ic <= 4 && p->kh == 3 && p->kw == 3 && p->sh == 2 &&
               p->sw == 2 && p->dh == 1 && p->dw == 1 && !p->pool) {
        c->algo = ALGO_C3S2; /* network stems: im2col would mostly gather pixels */
    } else if (p->pool) {
        px_nn_conv_packed_destroy(c);
        return px_err_set(err, PX_EUNSUPPORTED,
                          "conv: a fused max pool needs a depthwise 3x3 conv (got %dx%d, group %d)",
                          p->kh, p->kw, p->group);
    } else if (p->kh == 1 && p->kw == 1 && p->sh == 1 && p->sw == 1 && !p->pt && !p->pl && !p->pb &&
               !p->pr) {
        c->algo = ALGO_GEMM1X1;
        /* Input and output column tiles together around 256 KiB (L2 is 512 KiB
         * or more on anything with AVX2), at least 64 columns. */
        size_t rows = (size_t)(p->ic / p->group + p->oc / p->group);
        size_t t = round_down((size_t)65536 / rows, 64);
        c->tile = t < 64 ? 64 : t;
    } else {
        c->algo = ALGO_IM2COL;
        /* The unrolled (K, T) tile around 256 KiB, at least 16 columns. */
        size_t t = round_down((size_t)65536 / c->k, 16);
        c->tile = t < 16 ? 16 : t;
    }
    if (c->algo != ALGO_DW3X3 && c->algo != ALGO_C3S2) {
        c->small = c->avx2 && c->k <= PX_SMALL_GEMM_MAX_K && !getenv("PX_NN_NOSMALL");
        if (c->small && c->algo == ALGO_GEMM1X1)
            c->tile = 256;
        /* Input rows of a 1x1 GEMM are one plane (HW floats) apart; when that
         * is a multiple of 4 KiB every row maps to the same L1 sets and
         * reading B in place thrashes (YuNet's 160x160 and 320x320 maps). */
        c->pack_b = c->small && c->algo == ALGO_GEMM1X1 && c->hw * sizeof(float) % 4096 == 0;
        if (c->tile > c->hw)
            c->tile = c->hw;
        c->ntiles = (c->hw + c->tile - 1) / c->tile;
    }
    *out = c;
    return PX_OK;
}

void px_nn_conv_packed_destroy(px_nn_conv_packed *c)
{
    if (!c)
        return;
    px_nn_conv_packed_destroy(c->dp);
    px_aligned_free(c->w);
    px_aligned_free(c->bias);
    free(c);
}

/* dw3x3 with a fused pool: the padded plane of one chunk (AVX2) and the
 * chunk's conv output, in floats, each part 16-aligned. */
static size_t dw_pad_floats(const px_nn_conv_packed *c)
{
    return c->avx2 ? (px_nn_dw3x3_avx2_scratch(c->pool_rows, c->p.ow, c->p.sh) + 15) / 16 * 16 : 0;
}

static size_t dw_pool_scratch(const px_nn_conv_packed *c)
{
    return dw_pad_floats(c) + ((size_t)c->pool_rows * (size_t)c->p.ow + 15) / 16 * 16;
}

size_t px_nn_conv_scratch_size(const px_nn_conv_packed *c, int threads)
{
    if (!c)
        return 0;
    if (threads < 1)
        threads = 1;
    size_t per = 0;
    if (c->dp)
        per = c->dp_scratch;
    else if (c->algo == ALGO_IM2COL || c->small)
        per = c->k * ((c->tile + 15) / 16 * 16) * sizeof(float);
    else if (c->algo == ALGO_C3S2 && c->avx512) /* reads in place: one zero row */
        per = (size_t)c->p.iw * sizeof(float);
    else if (c->algo == ALGO_C3S2)
        per = px_nn_conv3x3s2_avx2_scratch(c->p.ic, PX_C3S2_ROWS, c->p.ow) * sizeof(float);
    else if (c->algo == ALGO_DW3X3 && c->p.pool)
        per = dw_pool_scratch(c) * sizeof(float);
    else if (c->algo == ALGO_DW3X3 && c->avx2)
        per = px_nn_dw3x3_avx2_scratch(c->p.oh, c->p.ow, c->p.sh) * sizeof(float);
    per = (per + 63) / 64 * 64;
    return per * (size_t)threads;
}

const char *px_nn_conv_algo(const px_nn_conv_packed *c)
{
    if (!c)
        return "none";
    if (c->dp)
        return c->avx512 ? "gemm1x1+dw3x3-avx512"
               : c->avx2 ? "gemm1x1+dw3x3-avx2"
                         : "gemm1x1+dw3x3";
    switch (c->algo) {
    case ALGO_GEMM1X1:
        return "gemm1x1";
    case ALGO_IM2COL:
        return "im2col";
    case ALGO_C3S2:
        return c->avx512 ? "conv3x3s2-avx512" : "conv3x3s2-avx2";
    default:
        return c->avx512 ? "dw3x3-avx512" : c->avx2 ? "dw3x3-avx2" : "dw3x3";
    }
}

static double conv_flops(const px_nn_conv_params *p)
{
    return 2.0 * (double)p->oc * p->oh * p->ow * (double)(p->ic / p->group) * p->kh * p->kw;
}

double px_nn_conv_flops(const px_nn_conv_packed *c)
{
    return c ? conv_flops(&c->p) + (c->dp ? conv_flops(&c->dp->p) : 0.0) : 0.0;
}

/* ---- portable depthwise 3x3 ---- */

/* Portable depthwise 3x3: each output row is accumulated tap by tap, every
 * tap a multiply-add of a (strided) input row segment into the output row,
 * clipped to the columns whose input lies inside the row. The inner loops
 * are plain axpys the compiler vectorises with the baseline ISA. */
void px_nn_dw3x3_generic(const float *in, int ih, int iw, float *out, int oh, int ow, const float *w9,
                      float bias, int relu, int s, int pt, int pl, float *pad)
{
    (void)pad;
    int lo[3], hi[3]; /* per kx: output columns [lo, hi) read inside the row */
    for (int kx = 0; kx < 3; kx++) {
        int off = kx - pl;
        lo[kx] = off >= 0 ? 0 : (-off + s - 1) / s;
        hi[kx] = iw - 1 - off < 0 ? 0 : (iw - 1 - off) / s + 1;
        if (hi[kx] > ow)
            hi[kx] = ow;
        if (lo[kx] > hi[kx])
            lo[kx] = hi[kx];
    }
    for (int oy = 0; oy < oh; oy++) {
        float *o = out + (size_t)oy * ow;
        for (int ox = 0; ox < ow; ox++)
            o[ox] = 0.0f;
        for (int ky = 0; ky < 3; ky++) {
            int iy = oy * s - pt + ky;
            if (iy < 0 || iy >= ih)
                continue;
            const float *row = in + (size_t)iy * iw;
            for (int kx = 0; kx < 3; kx++) {
                float wv = w9[ky * 3 + kx];
                int off = kx - pl;
                if (s == 1) {
                    for (int ox = lo[kx]; ox < hi[kx]; ox++)
                        o[ox] += wv * row[ox + off];
                } else {
                    for (int ox = lo[kx]; ox < hi[kx]; ox++)
                        o[ox] += wv * row[ox * s + off];
                }
            }
        }
        for (int ox = 0; ox < ow; ox++) {
            float v = o[ox] + bias;
            o[ox] = relu && v < 0.0f ? 0.0f : v;
        }
    }
}

/* ---- run ---- */

static void bias_act(float *o, size_t n, float bias, int relu, int avx2)
{
    if (avx2) {
        px_nn_bias_act_avx2(o, n, bias, relu);
        return;
    }
    if (relu) {
        for (size_t i = 0; i < n; i++) {
            float v = o[i] + bias;
            o[i] = v < 0.0f ? 0.0f : v;
        }
    } else {
        for (size_t i = 0; i < n; i++)
            o[i] += bias;
    }
}

/* Unrolls output columns [j0, j0+n) of one group into col (K, n): row
 * (ic, ky, kx) holds the input pixel each output column reads through that
 * tap, 0 where it falls into the padding. */
static void im2col_tile(const px_nn_conv_params *p, const float *in, size_t j0, size_t n, float *col,
                        int avx2)
{
    int icg = p->ic / p->group;
    float *row = col;
    for (int ic = 0; ic < icg; ic++) {
        const float *plane = in + (size_t)ic * p->ih * p->iw;
        for (int ky = 0; ky < p->kh; ky++) {
            for (int kx = 0; kx < p->kw; kx++, row += n) {
                /* Output columns ox in [lo, hi) read inside the row. */
                int off = kx * p->dw - p->pl;
                int lo = off >= 0 ? 0 : (-off + p->sw - 1) / p->sw;
                int hi = p->iw - 1 - off < 0 ? 0 : (p->iw - 1 - off) / p->sw + 1;
                if (hi > p->ow)
                    hi = p->ow;
                if (lo > hi)
                    lo = hi;
                size_t j = j0, end = j0 + n;
                while (j < end) {
                    int oy = (int)(j / (size_t)p->ow), ox = (int)(j % (size_t)p->ow);
                    int ox_end = p->ow;
                    if ((size_t)(ox_end - ox) > end - j)
                        ox_end = ox + (int)(end - j);
                    float *dst = row + (j - j0); /* dst[x - ox] is output column (oy, x) */
                    int iy = oy * p->sh - p->pt + ky * p->dh;
                    if (iy < 0 || iy >= p->ih) {
                        memset(dst, 0, (size_t)(ox_end - ox) * sizeof(float));
                    } else {
                        const float *src = plane + (size_t)iy * p->iw;
                        /* zeros [ox, a), pixels [a, b), zeros [b, ox_end) */
                        int a = lo < ox_end ? lo : ox_end;
                        if (a < ox)
                            a = ox;
                        int b = hi < ox_end ? hi : ox_end;
                        if (b < a)
                            b = a;
                        for (int x = ox; x < a; x++)
                            dst[x - ox] = 0.0f;
                        if (p->sw == 1) {
                            if (b > a)
                                memcpy(dst + (a - ox), src + (a + off),
                                       (size_t)(b - a) * sizeof(float));
                        } else if (p->sw == 2 && avx2) {
                            if (b > a)
                                px_nn_gather_s2_avx2(dst + (a - ox), src + (2 * a + off), b - a);
                        } else {
                            for (int x = a; x < b; x++)
                                dst[x - ox] = src[x * p->sw + off];
                        }
                        for (int x = b; x < ox_end; x++)
                            dst[x - ox] = 0.0f;
                    }
                    j += (size_t)(ox_end - ox);
                }
            }
        }
    }
}

typedef struct {
    const px_nn_conv_packed *c;
    const float *in;
    float *out;
    char *scratch;
    size_t scratch_per;
} conv_job;

static void gemm_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    const conv_job *j = ctx;
    const px_nn_conv_packed *c = j->c;
    const px_nn_conv_params *p = &c->p;
    int ocg = p->oc / p->group, icg = p->ic / p->group;
    size_t in_plane = (size_t)p->ih * p->iw;
    for (int64_t task = begin; task < end; task++) {
        int g = (int)(task / (int64_t)c->ntiles);
        size_t j0 = (size_t)(task % (int64_t)c->ntiles) * c->tile;
        size_t n = c->hw - j0 < c->tile ? c->hw - j0 : c->tile;
        const float *in_g = j->in + (size_t)g * icg * in_plane;
        const float *b;
        size_t ldb;
        if (c->algo == ALGO_GEMM1X1 && c->small && c->pack_b) {
            /* Rows of B are HW floats apart, here a multiple of 4 KiB: read
             * in place, K rows would fight over the same L1 sets. */
            float *pk = (float *)(void *)(j->scratch + (size_t)worker * j->scratch_per);
            px_nn_pack_b16((int)c->k, (int)n, in_g + j0, c->hw, pk);
            float *o = j->out + (size_t)g * ocg * c->hw + j0;
            c->gemm(ocg, (int)n, (int)c->k, c->w + (size_t)g * ocg * c->k, pk, 16, 16 * c->k, o,
                    c->hw, c->bias + (size_t)g * ocg, p->act == PX_NN_ACT_RELU);
            continue;
        } else if (c->algo ==
                   ALGO_GEMM1X1) { /* in place: OpenBLAS packs, or rows are not 4K-aliased */
            b = in_g + j0;
            ldb = c->hw;
        } else {
            float *col = (float *)(void *)(j->scratch + (size_t)worker * j->scratch_per);
            im2col_tile(p, in_g, j0, n, col, c->avx2);
            b = col;
            ldb = n;
        }
        float *o = j->out + (size_t)g * ocg * c->hw + j0;
        if (c->small) {
            c->gemm(ocg, (int)n, (int)c->k, c->w + (size_t)g * ocg * c->k, b, ldb, 16, o, c->hw,
                    c->bias + (size_t)g * ocg, p->act == PX_NN_ACT_RELU);
            continue;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ocg, (int)n, (int)c->k, 1.0f,
                    c->w + (size_t)g * ocg * c->k, (int)c->k, b, (int)ldb, 0.0f, o, (int)c->hw);
        for (int oc = 0; oc < ocg; oc++)
            bias_act(o + (size_t)oc * c->hw, n, c->bias[g * ocg + oc], p->act == PX_NN_ACT_RELU,
                     c->avx2);
    }
}

static void c3s2_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    const conv_job *j = ctx;
    const px_nn_conv_packed *c = j->c;
    const px_nn_conv_params *p = &c->p;
    float *pad = (float *)(void *)(j->scratch + (size_t)worker * j->scratch_per);
    for (int64_t band = begin; band < end; band++) {
        int r0 = (int)band * PX_C3S2_ROWS, r1 = r0 + PX_C3S2_ROWS;
        if (r1 > p->oh)
            r1 = p->oh;
        (c->avx512 ? px_nn_conv3x3s2_avx512 : px_nn_conv3x3s2_avx2)(
            j->in, p->ic, p->ih, p->iw, j->out, p->oc, p->oh, p->ow, r0, r1, p->pt, p->pl, c->w,
            c->bias, p->act == PX_NN_ACT_RELU, pad);
    }
}

/* Max-pools nr (even) conv rows of one channel, starting at conv row r
 * (even), into that channel's pooled output plane. */
static void pool_rows_out(const px_nn_conv_packed *d, const float *tile, int nr, float *out_ch, int r)
{
    int pw = d->p.ow / 2;
    px_nn_pool2d_params pp = {1, nr, d->p.ow, nr / 2, pw, 2, 2, 2, 2, 0, 0, 0, 0};
    px_nn_maxpool2d(&pp, tile, out_ch + (size_t)(r / 2) * pw, NULL);
}

static void dw_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    const conv_job *j = ctx;
    const px_nn_conv_packed *c = j->c;
    const px_nn_conv_params *p = &c->p;
    px_dw3x3_fn fn = c->dw;
    size_t in_plane = (size_t)p->ih * p->iw;
    float *pad = c->avx2 ? (float *)(void *)(j->scratch + (size_t)worker * j->scratch_per) : NULL;
    for (int64_t ch = begin; ch < end; ch++) {
        const float *in = j->in + (size_t)ch * in_plane;
        const float *w9 = c->w + (size_t)ch * 9;
        int relu = p->act == PX_NN_ACT_RELU;
        if (!p->pool) {
            fn(in, p->ih, p->iw, j->out + (size_t)ch * c->hw, p->oh, p->ow, w9, c->bias[ch], relu,
               p->sh, p->pt, p->pl, pad);
            continue;
        }
        /* Chunks of pool_rows conv rows (the top padding shifted by the
         * chunk's first row) go to scratch, then pool into the output. */
        float *tile =
            (float *)(void *)(j->scratch + (size_t)worker * j->scratch_per) + dw_pad_floats(c);
        int rows = p->oh / 2 * 2; /* an odd last row is dropped by the pool */
        for (int r = 0; r < rows; r += c->pool_rows) {
            int nr = rows - r < c->pool_rows ? rows - r : c->pool_rows;
            fn(in, p->ih, p->iw, tile, nr, p->ow, w9, c->bias[ch], relu, p->sh, p->pt - r * p->sh,
               p->pl, pad);
            pool_rows_out(c, tile, nr, j->out + (size_t)ch * c->out_plane, r);
        }
    }
}

/* ---- fused 1x1 -> depthwise 3x3 ----
 * Task = a band of dp_band output rows of the depthwise conv. It walks the
 * band dp_step output rows at a time, keeping a window of the 1x1 output
 * rows those need (all channels, dp_wrows rows each) in scratch: rows shared
 * with the previous step are moved to the front, only the new rows are
 * computed (one GEMM over all channels), then the depthwise kernel runs on
 * the window with its top padding adjusted. The 1x1 output thus never goes
 * to memory; only the 2-row halo at band edges is computed twice. Bands and
 * steps depend only on the shapes, so results do not depend on threads. */
static void dp_pointwise(const px_nn_conv_packed *c, const float *in, int y, int rows, float *dst,
                         size_t ldc)
{
    const px_nn_conv_params *p = &c->p;
    size_t w = (size_t)p->ow, n = (size_t)rows * w;
    const float *b = in + (size_t)y * w;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p->oc, (int)n, (int)c->k, 1.0f, c->w,
                (int)c->k, b, (int)c->hw, 0.0f, dst, (int)ldc);
    for (int oc = 0; oc < p->oc; oc++)
        bias_act(dst + (size_t)oc * ldc, n, c->bias[oc], p->act == PX_NN_ACT_RELU, c->avx2);
}

static void dp_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    const conv_job *j = ctx;
    const px_nn_conv_packed *c = j->c, *d = c->dp;
    const px_nn_conv_params *dp = &d->p;
    int h = c->p.oh, w = c->p.ow, s = dp->sh;
    size_t wstride = (size_t)c->dp_wrows * (size_t)w; /* channel stride in the window */
    float *win = (float *)(void *)(j->scratch + (size_t)worker * j->scratch_per);
    float *pad = win + c->dp_win, *tile = pad + c->dp_pad;
    px_dw3x3_fn fn = d->dw;
    int oh = dp->pool ? dp->oh / 2 * 2 : dp->oh; /* a pool drops an odd last row */
    for (int64_t band = begin; band < end; band++) {
        int r_end = (int)(band + 1) * c->dp_band;
        if (r_end > oh)
            r_end = oh;
        int pa = 0, pb = 0; /* 1x1 rows [pa, pb) in the window */
        for (int r = (int)band * c->dp_band; r < r_end; r += c->dp_step) {
            int nr = r_end - r < c->dp_step ? r_end - r : c->dp_step;
            int ya = r * s - dp->pt, yb = (r + nr - 1) * s - dp->pt + 3;
            if (ya < 0)
                ya = 0;
            if (yb > h)
                yb = h;
            if (yb < ya)
                yb = ya;
            int keep0 = pa > ya ? pa : ya, keep1 = pb < yb ? pb : yb;
            if (keep1 > keep0 && keep0 > pa) {
                for (int ch = 0; ch < c->p.oc; ch++)
                    memmove(win + ch * wstride, win + ch * wstride + (size_t)(keep0 - pa) * w,
                            (size_t)(keep1 - keep0) * w * sizeof(float));
            }
            int have = keep1 > keep0 && keep0 == ya ? keep1 : ya; /* rows [ya, have) kept */
            if (yb > have)
                dp_pointwise(c, j->in, have, yb - have, win + (size_t)(have - ya) * w, wstride);
            pa = ya;
            pb = yb;
            int pt = ya + dp->pt - r * s; /* >= 0 by the choice of ya */
            for (int ch = 0; ch < dp->oc; ch++) {
                float *o = dp->pool ? tile : j->out + (size_t)ch * d->hw + (size_t)r * dp->ow;
                fn(win + ch * wstride, yb - ya, w, o, nr, dp->ow, d->w + ch * 9, d->bias[ch],
                   dp->act == PX_NN_ACT_RELU, s, pt, dp->pl, pad);
                if (dp->pool)
                    pool_rows_out(d, tile, nr, j->out + (size_t)ch * d->out_plane, r);
            }
        }
    }
}

/* AVX2 variant: the window is kept as the depthwise kernel's zero-padded
 * plane (padded rows [q0, q0+wrows), dp_cols floats per row, 1x1 outputs
 * written straight into the interior), so the depthwise step reads it in
 * place instead of copying it into a padded plane first. The 1x1 is one GEMM
 * per new row (N = width) writing each channel's row at its padded spot. */
static void dp_task_avx2(void *ctx, int64_t begin, int64_t end, int worker)
{
    const conv_job *j = ctx;
    const px_nn_conv_packed *c = j->c, *d = c->dp;
    const px_nn_conv_params *dp = &d->p;
    int h = c->p.oh, w = c->p.ow, s = dp->sh, cols = c->dp_cols, mid = c->p.oc;
    size_t wstride = (size_t)c->dp_wrows * (size_t)cols;
    float *win = (float *)(void *)(j->scratch + (size_t)worker * j->scratch_per);
    float *pack = win + c->dp_win, *tile = pack + c->dp_pack;
    int oh = dp->pool ? dp->oh / 2 * 2 : dp->oh; /* a pool drops an odd last row */
    for (int64_t band = begin; band < end; band++) {
        int r_end = (int)(band + 1) * c->dp_band;
        if (r_end > oh)
            r_end = oh;
        int qa = 0, qb = 0; /* padded rows [qa, qb) in the window */
        for (int r = (int)band * c->dp_band; r < r_end; r += c->dp_step) {
            int nr = r_end - r < c->dp_step ? r_end - r : c->dp_step;
            int q0 = r * s, q1 = (r + nr - 1) * s + 3;
            int have = q0;
            if (qb > q0 && qa <= q0) {
                if (q0 > qa)
                    for (int ch = 0; ch < mid; ch++)
                        memmove(win + ch * wstride, win + ch * wstride + (size_t)(q0 - qa) * cols,
                                (size_t)(qb - q0) * cols * sizeof(float));
                have = qb;
            }
            for (int q = have; q < q1; q++) {
                int iy = q - dp->pt;
                float *row = win + (size_t)(q - q0) * cols;
                if (iy < 0 || iy >= h) {
                    for (int ch = 0; ch < mid; ch++)
                        memset(row + ch * wstride, 0, (size_t)cols * sizeof(float));
                    continue;
                }
                for (int ch = 0; ch < mid; ch++) {
                    float *rc = row + ch * wstride;
                    if (dp->pl)
                        memset(rc, 0, (size_t)dp->pl * sizeof(float));
                    if (cols > dp->pl + w)
                        memset(rc + dp->pl + w, 0, (size_t)(cols - dp->pl - w) * sizeof(float));
                }
                const float *b = j->in + (size_t)iy * w;
                if (c->pack_b) {
                    px_nn_pack_b16((int)c->k, w, b, c->hw, pack);
                    c->gemm(mid, w, (int)c->k, c->w, pack, 16, 16 * c->k, row + dp->pl, wstride,
                            c->bias, c->p.act == PX_NN_ACT_RELU);
                } else {
                    c->gemm(mid, w, (int)c->k, c->w, b, c->hw, 16, row + dp->pl, wstride, c->bias,
                            c->p.act == PX_NN_ACT_RELU);
                }
            }
            qa = q0;
            qb = q1;
            for (int ch = 0; ch < dp->oc; ch++) {
                float *o = dp->pool ? tile : j->out + (size_t)ch * d->hw + (size_t)r * dp->ow;
                d->dw_plane(win + ch * wstride, cols, o, nr, dp->ow, d->w + ch * 9, d->bias[ch],
                            dp->act == PX_NN_ACT_RELU, s);
                if (dp->pool)
                    pool_rows_out(d, tile, nr, j->out + (size_t)ch * d->out_plane, r);
            }
        }
    }
}

static int dp_supported(const px_nn_conv_params *pw, const px_nn_conv_params *dw)
{
    if (!pw || !dw)
        return 0;
    return !pw->pool && pw->kh == 1 && pw->kw == 1 && pw->sh == 1 && pw->sw == 1 && !pw->pt &&
           !pw->pl && !pw->pb && !pw->pr && pw->group == 1 && dw->group == dw->ic &&
           dw->ic == dw->oc && dw->ic == pw->oc && dw->ih == pw->oh && dw->iw == pw->ow &&
           dw->kh == 3 && dw->kw == 3 && dw->dh == 1 && dw->dw == 1 && dw->sh == dw->sw &&
           (dw->sh == 1 || dw->sh == 2);
}

int px_nn_conv_dp_fusable(const px_nn_conv_params *pw, const px_nn_conv_params *dw)
{
    /* Only where the intermediate is far beyond L2 (YuNet's 6.5 MB maps at
     * 320x320x16 and 160x160x64) and the 1x1 is memory-bound (K <= 32) or
     * a max pool is fused too: there the saved DRAM round trip wins. With
     * K = 64 the 1x1 is compute-bound and the per-row GEMMs and recomputed
     * band halo made the fused step slower in the full model, as did
     * fusing on 1.6-3.3 MB maps, which stay in L3 anyway. */
    return dp_supported(pw, dw) && (pw->ic <= 32 || dw->pool) &&
           (size_t)pw->oc * (size_t)pw->oh * (size_t)pw->ow * sizeof(float) >= ((size_t)4 << 20);
}

int px_nn_conv_prepare_dp(const px_nn_conv_params *pw, const float *pw_w, const float *pw_b,
                       const px_nn_conv_params *dw, const float *dw_w, const float *dw_b,
                       px_nn_conv_packed **out, px_err *err)
{
    *out = NULL;
    if (!dp_supported(pw, dw))
        return px_err_set(
            err, PX_EUNSUPPORTED,
            "conv: fusion needs a 1x1 conv feeding a depthwise 3x3 conv of its output");
    px_nn_conv_packed *c = NULL, *d = NULL;
    int rc = px_nn_conv_prepare(pw, pw_w, pw_b, &c, err);
    if (rc)
        return rc;
    rc = px_nn_conv_prepare(dw, dw_w, dw_b, &d, err);
    if (rc) {
        px_nn_conv_packed_destroy(c);
        return rc;
    }
    c->dp = d;
    int s = dw->sh;
    /* Four bands (enough for a few threads), at least 16 rows each so the
     * recomputed 2-row halo stays small. */
    c->dp_band = (dw->oh + 3) / 4;
    if (c->dp_band < 16)
        c->dp_band = 16;
    c->dp_band += c->dp_band & 1; /* even bands and steps: a fused pool takes row pairs */
    if (c->small && d->avx2) {
        c->dp_cols = px_nn_dw3x3_avx2_cols(dw->ow, s);
        if (c->dp_cols < dw->pl + pw->ow)
            c->dp_cols = dw->pl + pw->ow;
        /* As many output rows per step as keep the window near 256 KiB. */
        int budget = (int)((size_t)262144 / ((size_t)pw->oc * (size_t)c->dp_cols * sizeof(float)));
        c->dp_step = budget > 3 ? (budget - 3) / s + 1 : 1;
        if (c->dp_step < 4)
            c->dp_step = 4;
        if (c->dp_step > c->dp_band)
            c->dp_step = c->dp_band;
        c->dp_step -= c->dp_step & 1;
        c->dp_wrows = (c->dp_step - 1) * s + 3;
        c->dp_win = ((size_t)pw->oc * (size_t)c->dp_wrows * (size_t)c->dp_cols + 15) / 16 * 16;
        c->dp_pack = c->k * (((size_t)pw->ow + 15) / 16 * 16);
        c->dp_pad = 0;
    } else {
        c->dp_step = s == 1 ? 4 : 2;
        c->dp_wrows = (c->dp_step - 1) * s + 3;
        size_t win_n = (size_t)c->dp_wrows * (size_t)pw->ow;
        c->dp_win = ((size_t)pw->oc * win_n + 15) / 16 * 16;
        c->dp_pack = 0;
        c->dp_pad = d->avx2 ? (px_nn_dw3x3_avx2_scratch(c->dp_step, dw->ow, s) + 15) / 16 * 16 : 0;
    }
    size_t tile = dw->pool ? ((size_t)c->dp_step * (size_t)dw->ow + 15) / 16 * 16 : 0;
    c->dp_scratch = (c->dp_win + c->dp_pack + c->dp_pad + tile) * sizeof(float);
    *out = c;
    return PX_OK;
}

void px_nn_conv_run(const px_nn_conv_packed *c, const float *in, float *out, void *scratch, px_pool *pool)
{
    conv_job j = {c, in, out, scratch, px_nn_conv_scratch_size(c, 1)};
    if (c->dp) {
        int64_t bands = (c->dp->p.oh + c->dp_band - 1) / c->dp_band;
        px_pool_for(pool, bands, c->dp_cols ? dp_task_avx2 : dp_task, &j);
        return;
    }
    if (c->algo == ALGO_DW3X3) {
        px_pool_for(pool, c->p.oc, dw_task, &j);
        return;
    }
    if (c->algo == ALGO_C3S2) {
        px_pool_for(pool, (c->p.oh + PX_C3S2_ROWS - 1) / PX_C3S2_ROWS, c3s2_task, &j);
        return;
    }
    px_pool_for(pool, (int64_t)c->p.group * (int64_t)c->ntiles, gemm_task, &j);
}
