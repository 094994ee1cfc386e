/*
 * px_nn_ops: the dense-tensor kernels that hand-written networks (the Stable
 * Diffusion engine in src/diffusion) call directly, without an ONNX graph.
 * They share the graph executor's thread pool (px_pool from core), its GEMM
 * (OpenBLAS set to one thread, parallelised by us over a fixed tiling) and its
 * CPU-feature dispatch (AVX-512 / AVX2+FMA+F16C / portable C, chosen at run
 * time).
 *
 * Conventions
 *  - Activations are float32, dense, row-major. Image-like tensors are NCHW
 *    (batch, channels, height, width); token sequences are (batch, tokens,
 *    features) — "tokens-major", as torch's Linear sees them.
 *  - Weight matrices stay in their file's precision (f32, f16, bf16) and are
 *    described by px_nn_mat; kernels convert them to f32 on the fly, a panel
 *    at a time, never the whole model. 1-D parameters (biases, norm scales)
 *    are plain float32 arrays.
 *  - Determinism: every kernel splits its work over an index space that
 *    depends only on the shapes, never on the thread count, so the output is
 *    bitwise identical for 1 and N threads.
 *  - Scratch memory comes from a px_nn_arena (below); a kernel takes what it
 *    needs and gives it back before returning (stack discipline). After the
 *    first call at a given shape the arena has grown to its peak and later
 *    calls allocate nothing.
 *  - Functions returning int give PX_OK, or PX_ENOMEM when the arena cannot
 *    grow (nothing written to outputs is then meaningful). Shapes are the
 *    caller's contract (PX_ASSERT-level), not validated input: the model
 *    loader checks every tensor's shape against the config first.
 *  - Thread-safety: a kernel call uses the pool and arena it is given; two
 *    concurrent calls need two pools and two arenas.
 */
#ifndef PX_NN_OPS_H
#define PX_NN_OPS_H

#include "core/px_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Element types of weights ------------------------------------------- */
typedef enum px_nn_dtype { PX_NN_F32 = 0, PX_NN_F16 = 1, PX_NN_BF16 = 2 } px_nn_dtype;

/* Bytes per element of a dtype (4, 2, 2). */
size_t px_nn_dtype_size(px_nn_dtype t);
/* "f32", "f16", "bf16". */
const char *px_nn_dtype_name(px_nn_dtype t);

/* Converts n elements of src (dtype t, little-endian, any alignment) to
 * float32. Vectorised (F16C / AVX-512) where the CPU has it. Not threaded. */
void px_nn_to_f32(px_nn_dtype t, const void *src, float *dst, size_t n);

/* A weight matrix W (rows, cols), row-major, in its stored precision:
 * a Linear's weight (out_features, in_features), or a conv's weight viewed as
 * (out_channels, in_channels * kh * kw). data is not owned (it usually points
 * into a mapped model file) and must stay valid while the matrix is used. */
typedef struct px_nn_mat {
    px_nn_dtype dtype;
    const void *data;
    int64_t rows, cols;
} px_nn_mat;

/* ---- Scratch arena ------------------------------------------------------
 * A chunked bump allocator with stack-discipline release. Blocks never move;
 * chunks released are kept for reuse, so a repeated sequence of calls at the
 * same shapes allocates only the first time ("planned" by the first run).
 * Not thread-safe: one arena per concurrent user. */
typedef struct px_nn_arena px_nn_arena;
/* chunk_bytes: minimum size of each new chunk (0: 64 MiB). PX_OK / PX_ENOMEM. */
int px_nn_arena_create(size_t chunk_bytes, px_nn_arena **out);
void px_nn_arena_destroy(px_nn_arena *a); /* NULL is a no-op; frees every chunk */
/* 64-byte aligned block of `bytes` (0 gives a valid unique pointer); NULL when
 * out of memory. Valid until a release to a mark taken before it. */
void *px_nn_arena_alloc(px_nn_arena *a, size_t bytes);
/* Same, for n floats (n * 4 bytes, overflow-checked). */
float *px_nn_arena_floats(px_nn_arena *a, size_t n);
/* Current position; px_nn_arena_release(a, m) frees everything allocated after it. */
size_t px_nn_arena_mark(const px_nn_arena *a);
void px_nn_arena_release(px_nn_arena *a, size_t mark);
/* Highest number of bytes in use at once since creation, and bytes held now
 * (chunks allocated from the OS). */
size_t px_nn_arena_peak(const px_nn_arena *a);
size_t px_nn_arena_reserved(const px_nn_arena *a);

/* ---- GEMM-backed layers -------------------------------------------------- */

/* Linear: y (n, w->rows) = x (n, w->cols) . W^T + bias, tokens-major.
 * x has row stride ldx >= w->cols, y row stride ldy >= w->rows (floats).
 * bias (w->rows,) or NULL. If accumulate is non-zero, the result is added to
 * what y already holds (residual connections) instead of overwriting it.
 * x and y must not overlap. */
int px_nn_linear(const float *x, int64_t n, int64_t ldx, const px_nn_mat *w, const float *bias,
                 float *y, int64_t ldy, int accumulate, px_nn_arena *arena, px_pool *pool);

/* 2-D convolution, NCHW, square kernel, same stride and padding on both axes:
 * x (batch, c_in, h, w) -> y (batch, c_out, oh, ow) with
 * oh = (h + 2*pad - k) / stride + 1 (same for ow). W is (c_out, c_in*k*k).
 * bias (c_out,) or NULL. accumulate as in px_nn_linear. 1x1 stride-1 convs
 * are a plain GEMM; others go through im2col in tiles of output columns
 * (at most 8 MiB each), except small maps (batch x oh x ow <= 1024, SD's
 * 16x16 and 8x8 levels), unrolled whole (at most 32 MiB) so that one GEMM
 * spans all images. */
typedef struct px_nn_conv2d_shape {
    int batch, c_in, h, w;
    int c_out, k, stride, pad;
} px_nn_conv2d_shape;
void px_nn_conv2d_out_size(const px_nn_conv2d_shape *s, int *oh, int *ow);
int px_nn_conv2d(const float *x, const px_nn_conv2d_shape *s, const px_nn_mat *w,
                 const float *bias, float *y, int accumulate, px_nn_arena *arena, px_pool *pool);

/* Multi-head scaled-dot-product attention, tokens-major, computed in tiles
 * of queries with an online softmax: the (nq, nk) score matrix is never
 * materialised whole.
 *   q (batch, nq, heads*dh) row stride ldq; k, v (batch, nk, heads*dh) row
 *   strides ldk, ldv (so q/k/v may be column slices of one fused buffer);
 *   out (batch, nq, heads*dh) row stride ldo.
 * Head h uses columns [h*dh, (h+1)*dh). scale multiplies q.k (usually
 * 1/sqrt(dh)). causal: query i attends to keys 0..i only (CLIP). out must not
 * overlap q, k or v. */
typedef struct px_nn_attn_shape {
    int batch, nq, nk, heads, dh;
    int64_t ldq, ldk, ldv, ldo;
    float scale;
    int causal;
} px_nn_attn_shape;
int px_nn_attention(const float *q, const float *k, const float *v, float *out,
                    const px_nn_attn_shape *s, px_nn_arena *arena, px_pool *pool);

/* ---- Normalisation ------------------------------------------------------- */

/* GroupNorm over NCHW: x (batch, c, hw) -> y, statistics per (batch, group)
 * over c/groups channels x hw, then y = norm * gamma[c] + beta[c]; if silu,
 * y = y * sigmoid(y) is fused. x may equal y. Mean/variance in double. */
void px_nn_group_norm(const float *x, float *y, int batch, int c, int64_t hw, int groups,
                      const float *gamma, const float *beta, float eps, int silu, px_pool *pool);

/* LayerNorm over the last dimension: x (n, d) -> y (n, d), row strides ldx, ldy.
 * x may equal y. */
void px_nn_layer_norm(const float *x, int64_t ldx, float *y, int64_t ldy, int64_t n, int64_t d,
                      const float *gamma, const float *beta, float eps, px_pool *pool);

/* ---- Elementwise --------------------------------------------------------- */
typedef enum px_nn_act {
    PX_NN_SILU,       /* x * sigmoid(x) */
    PX_NN_GELU,       /* exact: 0.5 x (1 + erf(x / sqrt 2)), as torch's default */
    PX_NN_GELU_TANH,  /* tanh approximation */
    PX_NN_QUICK_GELU, /* x * sigmoid(1.702 x), CLIP's */
    PX_NN_RELU,
    PX_NN_TANH
} px_nn_act;
/* In place: x[i] = act(x[i]) for n floats. */
void px_nn_activate(float *x, size_t n, px_nn_act act, px_pool *pool);

/* GEGLU (diffusers' GEGLU after its proj): in (n, 2*d) row stride ldi holds
 * [value | gate]; out (n, d) row stride ldo = value * gelu(gate) (exact GELU).
 * out may alias in's first d columns of each row only if ldo == ldi. */
void px_nn_geglu(const float *in, int64_t ldi, float *out, int64_t ldo, int64_t n, int64_t d,
                 px_pool *pool);

/* y[i] = a[i] + b[i] (y may be a or b). */
void px_nn_add(const float *a, const float *b, float *y, size_t n, px_pool *pool);
/* y[i] = alpha * a[i] + beta * b[i] (y may be a or b). */
void px_nn_axpby(float alpha, const float *a, float beta, const float *b, float *y, size_t n,
                 px_pool *pool);
/* NCHW per-channel add: x (batch, c, hw) += v (batch, c) (a time embedding
 * added to every pixel of its channel). */
void px_nn_add_channel(float *x, const float *v, int batch, int c, int64_t hw, px_pool *pool);

/* ---- Layout -------------------------------------------------------------- */

/* Per batch item, transposes a (rows, cols) matrix: in (batch, rows, cols) ->
 * out (batch, cols, rows). NCHW (c, hw) <-> tokens-major (hw, c). */
void px_nn_transpose(const float *in, float *out, int batch, int64_t rows, int64_t cols,
                     px_pool *pool);
/* Nearest-neighbour 2x upsampling: in (planes, h, w) -> out (planes, 2h, 2w). */
void px_nn_upsample2x(const float *in, float *out, int64_t planes, int h, int w, px_pool *pool);
/* Concatenation along channels: a (batch, ca, hw), b (batch, cb, hw) ->
 * out (batch, ca+cb, hw) (UNet skip connections). */
void px_nn_concat_channels(const float *a, int ca, const float *b, int cb, float *out, int batch,
                           int64_t hw, px_pool *pool);

/* ---- Machine ------------------------------------------------------------- */

/* The instruction set the ops kernels dispatch to: "avx512", "avx2+fma+f16c"
 * or "generic". px_nn_force_generic (px_nn.h) applies here too. */
const char *px_nn_ops_isa(void);

/* Floating-point operations of the GEMMs run by px_nn_linear, px_nn_conv2d and
 * px_nn_attention since the last reset, summed over all threads (2 per
 * multiply-add). For benchmarks: achieved GFLOP/s = flops / time. Atomic. */
uint64_t px_nn_flops(void);
void px_nn_flops_reset(void);

#ifdef __cplusplus
}
#endif
#endif
