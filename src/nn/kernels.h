/*
 * Internal contract between the graph executor (graph.c, exec.c) and the
 * operator kernels (kernels_*.c). Not installed, not public.
 *
 * All tensors are float32, dense, row-major (NCHW for images) with batch 1;
 * the executor loops over the batch if ever needed. Kernels never allocate:
 * scratch memory is sized by *_scratch_size at load time and handed in.
 * Every kernel that takes a px_pool splits its work with px_pool_for over an
 * index space that is independent of the thread count and writes disjoint
 * outputs per index, so results are bitwise identical for 1 and N threads.
 */
#ifndef PX_NN_KERNELS_H
#define PX_NN_KERNELS_H

#include "core/px_core.h"

enum { PX_NN_ACT_NONE = 0, PX_NN_ACT_RELU = 1 };

/* ---- Conv2D (NCHW, batch 1) ----
 * in (IC, IH, IW) -> out (OC, OH, OW); weights (OC, IC/group, KH, KW);
 * bias (OC,) or none. Padding is explicit (top, left, bottom, right), as ONNX
 * 'pads' after auto_pad is resolved by the caller. OH = (IH + pt + pb - (dh*(KH-1)+1)) / sh + 1.
 * Activation is fused (applied after bias). */
typedef struct px_nn_conv_params {
    int ic, ih, iw;
    int oc, oh, ow;
    int kh, kw;
    int sh, sw;
    int pt, pl, pb, pr;
    int dh, dw;
    int group;
    int act;
    /* 1: a MaxPool 2x2, stride 2, no padding, floor mode follows the conv and
     * is fused: px_nn_conv_run then writes (oc, oh/2, ow/2). Only for depthwise
     * 3x3 convs (see px_nn_conv_pool_fusable); 0 otherwise. */
    int pool;
} px_nn_conv_params;

/* Weights re-laid out once for the chosen algorithm (1x1 GEMM, im2col GEMM,
 * depthwise 3x3 AVX2, generic direct). Opaque; read-only after creation. */
typedef struct px_nn_conv_packed px_nn_conv_packed;

/* Validates params (PX_EINVAL with a reason if inconsistent) and packs
 * weights (copied; caller keeps ownership of w and bias). */
int px_nn_conv_prepare(const px_nn_conv_params *p, const float *w, const float *bias,
                    px_nn_conv_packed **out, px_err *err);
void px_nn_conv_packed_destroy(px_nn_conv_packed *c); /* NULL is a no-op */
/* Bytes of scratch px_nn_conv_run needs with `threads` threads (may be 0). */
size_t px_nn_conv_scratch_size(const px_nn_conv_packed *c, int threads);
/* Runs the convolution. in and out must not overlap. scratch must be at
 * least px_nn_conv_scratch_size(c, px_pool_threads(pool)) bytes, 64-byte aligned. */
void px_nn_conv_run(const px_nn_conv_packed *c, const float *in, float *out, void *scratch,
                 px_pool *pool);
/* Name of the algorithm chosen for c ("gemm1x1", "im2col", "dw3x3-avx2",
 * "dw3x3-avx512", ...; the ISA suffix is the widest one its kernels use). */
const char *px_nn_conv_algo(const px_nn_conv_packed *c);
/* Floating-point operations of one run, 2 per multiply-add (a fused 1x1 +
 * depthwise step counts both convs; a fused pool adds none); 0 for NULL. */
double px_nn_conv_flops(const px_nn_conv_packed *c);

/* 1: convs prepared from now on use the AVX2 kernels even where the CPU has
 * AVX-512 (for comparisons: bench_nn --avx2, the bitwise tests); 0: back to
 * the widest. Like px_nn_force_generic, a process-wide switch. */
void px_nn_force_avx2(int on);

/* 1 when conv p (with p->pool == 0) can absorb a following 2x2/2 MaxPool
 * through p->pool = 1 (it is a depthwise 3x3 with stride 1 or 2), else 0. */
int px_nn_conv_pool_fusable(const px_nn_conv_params *p);

/* ---- Fused 1x1 conv -> depthwise 3x3 conv (YuNet's building block) ----
 * A pair is supported when pw (1x1, stride 1, no padding, group 1) feeds dw
 * (depthwise 3x3 on pw's output: dw.ic == dw.oc == dw.group == pw.oc,
 * dw.ih/iw == pw.oh/ow, dilation 1, stride 1 or 2, any padding).
 * px_nn_conv_dp_fusable: 1 when the pair is supported and fusing it pays (pw's
 * output is 4 MiB or more, and pw.ic <= 32 or dw.pool is set: decide a
 * fused pool first), else 0. Pure function, thread-safe. */
int px_nn_conv_dp_fusable(const px_nn_conv_params *pw, const px_nn_conv_params *dw);
/* Packs a supported pair (each conv with its own bias and activation) into
 * one px_nn_conv_packed; px_nn_conv_run then reads pw's input (pw.ic, pw.ih, pw.iw)
 * and writes dw's output (dw.oc, dw.oh, dw.ow), computing pw's output a few
 * rows at a time in scratch instead of in memory. Same scratch/run/destroy
 * rules as a single conv. PX_EUNSUPPORTED (and *out NULL) for a pair that is
 * not supported, else as px_nn_conv_prepare. The output equals running the two
 * convs one after the other (bitwise with the AVX2 kernels). dw->pool may be
 * set (then the pooled output is written); pw->pool may not. */
int px_nn_conv_prepare_dp(const px_nn_conv_params *pw, const float *pw_w, const float *pw_b,
                       const px_nn_conv_params *dw, const float *dw_w, const float *dw_b,
                       px_nn_conv_packed **out, px_err *err);

/* ---- MaxPool 2D (NCHW, batch 1), padding treated as -inf ---- */
typedef struct px_nn_pool2d_params {
    int c, ih, iw, oh, ow;
    int kh, kw, sh, sw, pt, pl, pb, pr;
} px_nn_pool2d_params;
void px_nn_maxpool2d(const px_nn_pool2d_params *p, const float *in, float *out, px_pool *pool);

/* ---- Resize, nearest, NCHW: out (C, OH, OW) from in (C, IH, IW).
 * For each output coordinate the source index is computed per ONNX
 * coordinate_transformation_mode/nearest_mode; the caller precomputes the
 * index tables (ys: OH entries, xs: OW entries, each clamped into range). */
void px_nn_resize_nearest(int c, int ih, int iw, int oh, int ow, const int32_t *ys,
                       const int32_t *xs, const float *in, float *out, px_pool *pool);

/* ---- Elementwise with numpy broadcasting (rank <= 6) ----
 * Shapes are given already right-aligned to the output rank. */
typedef enum { PX_NN_BIN_ADD, PX_NN_BIN_SUB, PX_NN_BIN_MUL, PX_NN_BIN_DIV } px_nn_binop;
void px_nn_binary(px_nn_binop op, int rank, const int64_t *out_dims, const float *a,
               const int64_t *a_dims, const float *b, const int64_t *b_dims, float *out,
               px_pool *pool);
typedef enum { PX_NN_UN_RELU, PX_NN_UN_SIGMOID, PX_NN_UN_EXP } px_nn_unop;
void px_nn_unary(px_nn_unop op, const float *in, float *out, size_t n, px_pool *pool); /* in may == out */

/* Softmax over `axis` of a tensor viewed as (outer, axis_len, inner). in may == out. */
void px_nn_softmax(const float *in, float *out, size_t outer, size_t axis_len, size_t inner);

/* Transpose: out = permute(in, perm). rank <= 6. */
void px_nn_permute(const float *in, int rank, const int64_t *in_dims, const int *perm, float *out);

/* Concat along axis, viewed as (outer, len_i, inner) per input. */
void px_nn_concat(const float *const *ins, const size_t *lens, int n_inputs, size_t outer,
               size_t inner, float *out);

/* BatchNormalization as a standalone op (when it could not be fused):
 * y = (x - mean) / sqrt(var + eps) * scale + bias, per channel, NCHW. */
void px_nn_batchnorm(const float *in, float *out, int c, size_t hw, const float *scale,
                  const float *bias, const float *mean, const float *var, float eps);

#endif
