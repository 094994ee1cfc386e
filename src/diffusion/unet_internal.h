/*
 * Private to unet.c and unet_blocks.c: the UNet's two repeated building
 * blocks (diffusers' ResnetBlock2D and Transformer2DModel with one
 * BasicTransformerBlock), the thin wrappers through which every kernel call
 * goes (so that PX_SD_PROFILE=1 can time them per op type), and the
 * bookkeeping of one forward pass.
 *
 * Layouts: maps are NCHW (batch, c, h*w); inside a transformer the tokens are
 * (batch * h*w, c), as diffusers reshapes them. Weights are views into the
 * model file (px_nn_mat) or float32 1-D parameters owned by px_sd_weights.
 */
#ifndef PX_SD_UNET_INTERNAL_H
#define PX_SD_UNET_INTERNAL_H

#include "sd_internal.h"

/* Op types of the per-op timing table. */
typedef enum unet_op {
    UNET_OP_CONV3,     /* 3x3 convolutions (resnets, conv_in/out, down/up samplers) */
    UNET_OP_CONV1,     /* 1x1 convolutions (shortcuts, proj_in/out) */
    UNET_OP_LINEAR,    /* q/k/v/out projections, time embedding */
    UNET_OP_FF,        /* the feed-forward's two linears */
    UNET_OP_ATTN_SELF, /* softmax(q k^T) v over the image tokens */
    UNET_OP_ATTN_CROSS,
    UNET_OP_GROUPNORM,
    UNET_OP_LAYERNORM,
    UNET_OP_GEGLU,
    UNET_OP_LAYOUT, /* transpose, concat, upsample, copies */
    UNET_OP_ELEM,   /* activations, per-channel adds */
    UNET_OP_COUNT
} unet_op;

typedef struct unet_prof {
    int on;                       /* PX_SD_PROFILE=1 at create time */
    double ms[UNET_OP_COUNT];     /* wall time per op type, this forward */
    double cpu_ms[UNET_OP_COUNT]; /* CPU time of the whole process (all threads) per op type */
    double flops[UNET_OP_COUNT];  /* GEMM flops per op type (2 per multiply-add) */
    int64_t calls[UNET_OP_COUNT]; /* number of kernel calls */
} unet_prof;

/* State of one forward pass: where scratch comes from and who computes. */
typedef struct unet_run {
    px_nn_arena *arena;
    px_pool *pool;
    unet_prof *prof; /* always non-NULL; prof->on says whether to time */
    int batch;
    double flops; /* GEMM flops issued so far (checked against px_sd_unet_flops) */
} unet_run;

/* ResnetBlock2D: out = shortcut(x) + conv2(silu(gn2(conv1(silu(gn1(x))) + temb_proj))) */
typedef struct unet_resnet {
    int c_in, c_out, temb_dim, groups;
    float eps;
    const float *norm1_w, *norm1_b, *norm2_w, *norm2_b; /* (c_in,), (c_out,) */
    px_nn_mat conv1;                                    /* (c_out, c_in*9) */
    px_nn_mat conv2;                                    /* (c_out, c_out*9) */
    px_nn_mat temb;                                     /* time_emb_proj (c_out, temb_dim) */
    px_nn_mat shortcut; /* conv_shortcut (c_out, c_in); data NULL when c_in == c_out */
    const float *conv1_b, *conv2_b, *temb_b, *shortcut_b;
} unet_resnet;

/* Transformer2DModel with one BasicTransformerBlock (SD 1.x). */
typedef struct unet_xformer {
    int c, heads, cross_dim, groups;
    const float *norm_w, *norm_b;        /* GroupNorm (c,), eps 1e-6 */
    px_nn_mat proj_in, proj_out;         /* (c, c): 1x1 conv or linear, same arithmetic */
    const float *proj_in_b, *proj_out_b; /* (c,) */
    const float *ln_w[3], *ln_b[3];      /* norm1..3 (c,) */
    px_nn_mat q1, k1, v1, o1;            /* self-attention (c, c) */
    const float *o1_b;
    px_nn_mat q2, k2, v2, o2; /* cross: q2, o2 (c, c); k2, v2 (c, cross_dim) */
    const float *o2_b;
    px_nn_mat ff1, ff2;         /* ff.net.0.proj (8c, c), ff.net.2 (c, 4c) */
    const float *ff1_b, *ff2_b; /* (8c,), (c,) */
} unet_xformer;

/* Tensor "<prefix>.<suffix>" as a matrix: (rows, cols) when k is 1 (a
 * Linear, or a 1x1 conv stored (rows, cols, 1, 1)), (rows, cols, k, k)
 * viewed as (rows, cols*k*k) otherwise. Errors as px_sd_w_mat. */
int unet_load_mat(px_sd_weights *w, const char *prefix, const char *suffix, int64_t rows,
                  int64_t cols, int k, px_nn_mat *m, px_err *err);
/* Tensor "<prefix>.<suffix>" of n elements as float32. */
int unet_load_vec(px_sd_weights *w, const char *prefix, const char *suffix, int64_t n,
                  const float **v, px_err *err);

/* Loads "<prefix>.norm1.weight" ... with the shapes implied by the arguments. */
int unet_resnet_load(px_sd_weights *w, const char *prefix, int c_in, int c_out, int temb_dim,
                     int groups, float eps, unet_resnet *rn, px_err *err);
int unet_xformer_load(px_sd_weights *w, const char *prefix, int c, int heads, int cross_dim,
                      int groups, unet_xformer *tf, px_err *err);

/* x (batch, c_in, h, w) -> y (batch, c_out, h, w). temb (batch, temb_dim)
 * already passed through SiLU. y may equal x when c_in == c_out (no shortcut
 * conv). Scratch from the arena, given back. PX_OK or PX_ENOMEM. */
int unet_resnet_forward(const unet_resnet *rn, unet_run *r, const float *x, int h, int w,
                        const float *temb, float *y);
/* In place on x (batch, c, hw). context (batch, nctx, cross_dim). */
int unet_xformer_forward(const unet_xformer *tf, unet_run *r, float *x, int64_t hw,
                         const float *context, int nctx);

/* GEMM flops of one block at this size (batch included). */
double unet_resnet_flops(const unet_resnet *rn, int batch, int64_t hw);
double unet_xformer_flops(const unet_xformer *tf, int batch, int64_t hw, int nctx);

/* Kernel wrappers: the px_nn_ops call, timed and counted under op when
 * profiling. k is 3 or 1; stride 1 or 2; pad = k / 2. */
int unet_conv(unet_run *r, unet_op op, const float *x, int c_in, int h, int w, const px_nn_mat *wt,
              const float *bias, int k, int stride, float *y, int accumulate);
int unet_linear(unet_run *r, unet_op op, const float *x, int64_t n, int64_t ldx,
                const px_nn_mat *wt, const float *bias, float *y, int64_t ldy, int accumulate);
void unet_group_norm(unet_run *r, const float *x, float *y, int c, int64_t hw, int groups,
                     const float *gamma, const float *beta, float eps, int silu);
/* Arena floats; NULL when out of memory. */
float *unet_floats(unet_run *r, size_t n);
/* Clock readings around a kernel call (zero when not profiling). CPU time
 * keeps the table meaningful on a shared machine, where wall time also
 * counts other processes' turns. */
typedef struct unet_tick {
    double wall, cpu; /* ms */
} unet_tick;
unet_tick unet_prof_begin(const unet_run *r);
void unet_prof_end(unet_run *r, unet_op op, unet_tick t0, double flops);
/* Process CPU time in ms (CLOCK_PROCESS_CPUTIME_ID). */
double unet_cpu_ms(void);

#endif
