/*
 * The UNet's repeated blocks, as diffusers computes them for SD 1.x:
 *  - ResnetBlock2D: GroupNorm+SiLU, 3x3 conv, plus a per-channel projection
 *    of the time embedding, GroupNorm+SiLU, 3x3 conv, plus the shortcut
 *    (identity, or a 1x1 conv when the channel count changes);
 *  - Transformer2DModel with one BasicTransformerBlock: GroupNorm (eps 1e-6),
 *    proj_in, then on tokens LayerNorm -> self-attention, LayerNorm ->
 *    cross-attention on the text context, LayerNorm -> GEGLU feed-forward,
 *    each with its residual, then proj_out and the outer residual.
 * Every residual add is folded into the GEMM that produces the branch
 * (px_nn_linear / px_nn_conv2d with accumulate): the shortcut is written
 * first and conv2 adds onto it; attention and feed-forward outputs add onto
 * the token buffer; proj_out adds onto the input map. proj_in/proj_out run
 * as 1x1 convs on NCHW maps whether the file stores them as convs (SD 1.x)
 * or linears (use_linear_projection): the arithmetic is the same, and it
 * leaves exactly one transpose each way. The feed-forward runs over the
 * tokens in row chunks so its 8c-wide hidden layer stays small.
 *
 * Kernel calls go through the unet_* wrappers at the bottom, which count
 * GEMM flops and, when profiling, time each op type.
 */
#include "unet_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Tokens per feed-forward chunk: big enough for full-speed GEMMs (the
 * inner dimension is the channel count), small enough that the (rows, 8c)
 * hidden layer is a few MiB instead of hundreds at 64x64 latents. */
#ifndef UNET_FF_ROWS
#define UNET_FF_ROWS 1024
#endif

/* ---- Loading ------------------------------------------------------------ */

static int tensor_name(char *buf, size_t len, const char *prefix, const char *suffix, px_err *err)
{
    int n = snprintf(buf, len, "%s.%s", prefix, suffix);
    if (n < 0 || (size_t)n >= len)
        return px_err_set(err, PX_EINVAL, "unet: tensor name %s.%s is too long", prefix, suffix);
    return PX_OK;
}

int unet_load_mat(px_sd_weights *w, const char *prefix, const char *suffix, int64_t rows,
                  int64_t cols, int k, px_nn_mat *m, px_err *err)
{
    char name[256];
    int rc = tensor_name(name, sizeof name, prefix, suffix, err);
    if (rc != PX_OK)
        return rc;
    int64_t dims[4] = {rows, cols, k, k};
    return px_sd_w_mat(w, PX_SD_UNET, name, k > 1 ? 4 : 2, dims, m, err);
}

int unet_load_vec(px_sd_weights *w, const char *prefix, const char *suffix, int64_t n,
                  const float **v, px_err *err)
{
    char name[256];
    int rc = tensor_name(name, sizeof name, prefix, suffix, err);
    if (rc != PX_OK)
        return rc;
    return px_sd_w_f32(w, PX_SD_UNET, name, n, v, err);
}

int unet_resnet_load(px_sd_weights *w, const char *prefix, int c_in, int c_out, int temb_dim,
                     int groups, float eps, unet_resnet *rn, px_err *err)
{
    memset(rn, 0, sizeof *rn);
    rn->c_in = c_in;
    rn->c_out = c_out;
    rn->temb_dim = temb_dim;
    rn->groups = groups;
    rn->eps = eps;
    int rc = PX_OK;
    if (rc == PX_OK)
        rc = unet_load_vec(w, prefix, "norm1.weight", c_in, &rn->norm1_w, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, prefix, "norm1.bias", c_in, &rn->norm1_b, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, prefix, "conv1.weight", c_out, c_in, 3, &rn->conv1, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, prefix, "conv1.bias", c_out, &rn->conv1_b, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, prefix, "time_emb_proj.weight", c_out, temb_dim, 1, &rn->temb, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, prefix, "time_emb_proj.bias", c_out, &rn->temb_b, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, prefix, "norm2.weight", c_out, &rn->norm2_w, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, prefix, "norm2.bias", c_out, &rn->norm2_b, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, prefix, "conv2.weight", c_out, c_out, 3, &rn->conv2, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, prefix, "conv2.bias", c_out, &rn->conv2_b, err);
    if (rc == PX_OK && c_in != c_out) {
        rc = unet_load_mat(w, prefix, "conv_shortcut.weight", c_out, c_in, 1, &rn->shortcut, err);
        if (rc == PX_OK)
            rc = unet_load_vec(w, prefix, "conv_shortcut.bias", c_out, &rn->shortcut_b, err);
    }
    return rc;
}

int unet_xformer_load(px_sd_weights *w, const char *prefix, int c, int heads, int cross_dim,
                      int groups, unet_xformer *tf, px_err *err)
{
    memset(tf, 0, sizeof *tf);
    tf->c = c;
    tf->heads = heads;
    tf->cross_dim = cross_dim;
    tf->groups = groups;
    char blk[224];
    int n = snprintf(blk, sizeof blk, "%s.transformer_blocks.0", prefix);
    if (n < 0 || (size_t)n >= sizeof blk)
        return px_err_set(err, PX_EINVAL, "unet: tensor prefix %s is too long", prefix);
    static const char *const ln_names[3][2] = {{"norm1.weight", "norm1.bias"},
                                               {"norm2.weight", "norm2.bias"},
                                               {"norm3.weight", "norm3.bias"}};
    int rc = unet_load_vec(w, prefix, "norm.weight", c, &tf->norm_w, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, prefix, "norm.bias", c, &tf->norm_b, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, prefix, "proj_in.weight", c, c, 1, &tf->proj_in, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, prefix, "proj_in.bias", c, &tf->proj_in_b, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, prefix, "proj_out.weight", c, c, 1, &tf->proj_out, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, prefix, "proj_out.bias", c, &tf->proj_out_b, err);
    for (int i = 0; i < 3 && rc == PX_OK; i++) {
        rc = unet_load_vec(w, blk, ln_names[i][0], c, &tf->ln_w[i], err);
        if (rc == PX_OK)
            rc = unet_load_vec(w, blk, ln_names[i][1], c, &tf->ln_b[i], err);
    }
    if (rc == PX_OK)
        rc = unet_load_mat(w, blk, "attn1.to_q.weight", c, c, 1, &tf->q1, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, blk, "attn1.to_k.weight", c, c, 1, &tf->k1, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, blk, "attn1.to_v.weight", c, c, 1, &tf->v1, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, blk, "attn1.to_out.0.weight", c, c, 1, &tf->o1, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, blk, "attn1.to_out.0.bias", c, &tf->o1_b, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, blk, "attn2.to_q.weight", c, c, 1, &tf->q2, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, blk, "attn2.to_k.weight", c, cross_dim, 1, &tf->k2, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, blk, "attn2.to_v.weight", c, cross_dim, 1, &tf->v2, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, blk, "attn2.to_out.0.weight", c, c, 1, &tf->o2, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, blk, "attn2.to_out.0.bias", c, &tf->o2_b, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, blk, "ff.net.0.proj.weight", 8 * (int64_t)c, c, 1, &tf->ff1, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, blk, "ff.net.0.proj.bias", 8 * (int64_t)c, &tf->ff1_b, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, blk, "ff.net.2.weight", c, 4 * (int64_t)c, 1, &tf->ff2, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, blk, "ff.net.2.bias", c, &tf->ff2_b, err);
    return rc;
}

/* ---- ResnetBlock2D ------------------------------------------------------ */

int unet_resnet_forward(const unet_resnet *rn, unet_run *r, const float *x, int h, int w,
                        const float *temb, float *y)
{
    const int b = r->batch;
    const int64_t hw = (int64_t)h * w;
    const size_t mark = px_nn_arena_mark(r->arena);
    int rc = PX_ENOMEM;
    float *tp = unet_floats(r, (size_t)b * rn->c_out);
    float *t2 = unet_floats(r, (size_t)b * rn->c_out * hw);
    const size_t mark_t1 = px_nn_arena_mark(r->arena);
    float *t1 = unet_floats(r, (size_t)b * rn->c_in * hw);
    if (!tp || !t2 || !t1)
        goto done;

    unet_group_norm(r, x, t1, rn->c_in, hw, rn->groups, rn->norm1_w, rn->norm1_b, rn->eps, 1);
    /* time_emb_proj plus conv1's bias: one bias per (item, channel), added once */
    rc = unet_linear(r, UNET_OP_LINEAR, temb, b, rn->temb_dim, &rn->temb, rn->temb_b, tp, rn->c_out,
                     0);
    if (rc != PX_OK)
        goto done;
    for (int i = 0; i < b; i++)
        for (int c = 0; c < rn->c_out; c++)
            tp[(size_t)i * rn->c_out + c] += rn->conv1_b[c];
    rc = unet_conv(r, UNET_OP_CONV3, t1, rn->c_in, h, w, &rn->conv1, NULL, 3, 1, t2, 0);
    if (rc != PX_OK)
        goto done;
    px_nn_arena_release(r->arena, mark_t1); /* t1 is spent; conv2's scratch reuses it */
    unet_tick t0 = unet_prof_begin(r);
    px_nn_add_channel(t2, tp, b, rn->c_out, hw, r->pool);
    unet_prof_end(r, UNET_OP_ELEM, t0, 0);
    unet_group_norm(r, t2, t2, rn->c_out, hw, rn->groups, rn->norm2_w, rn->norm2_b, rn->eps, 1);

    if (rn->shortcut.data) {
        rc = unet_conv(r, UNET_OP_CONV1, x, rn->c_in, h, w, &rn->shortcut, rn->shortcut_b, 1, 1, y,
                       0);
        if (rc != PX_OK)
            goto done;
    } else if (y != x) {
        t0 = unet_prof_begin(r);
        memcpy(y, x, sizeof(float) * (size_t)b * rn->c_out * hw);
        unet_prof_end(r, UNET_OP_LAYOUT, t0, 0);
    }
    rc = unet_conv(r, UNET_OP_CONV3, t2, rn->c_out, h, w, &rn->conv2, rn->conv2_b, 3, 1, y, 1);
done:
    px_nn_arena_release(r->arena, mark);
    return rc;
}

double unet_resnet_flops(const unet_resnet *rn, int batch, int64_t hw)
{
    double per_px = 9.0 * rn->c_out * rn->c_in + 9.0 * rn->c_out * rn->c_out;
    if (rn->shortcut.data)
        per_px += (double)rn->c_out * rn->c_in;
    return 2.0 * batch * (per_px * (double)hw + (double)rn->c_out * rn->temb_dim);
}

/* ---- Transformer2DModel ------------------------------------------------- */

static int attention(unet_run *r, unet_op op, int batch, const float *q, int64_t ldq,
                     const float *k, const float *v, int64_t ldkv, float *out, int64_t ldo,
                     int64_t nq, int nk, int heads, int c)
{
    const int dh = c / heads; /* heads divide c (checked at create) */
    px_nn_attn_shape s = {.batch = batch,
                          .nq = (int)nq,
                          .nk = nk,
                          .heads = heads,
                          .dh = dh,
                          .ldq = ldq,
                          .ldk = ldkv,
                          .ldv = ldkv,
                          .ldo = ldo,
                          .scale = 1.0f / sqrtf((float)dh),
                          .causal = 0};
    double fl = 4.0 * batch * (double)nq * nk * c;
    unet_tick t0 = unet_prof_begin(r);
    int rc = px_nn_attention(q, k, v, out, &s, r->arena, r->pool);
    unet_prof_end(r, op, t0, fl);
    return rc;
}

static void layer_norm(unet_run *r, const unet_xformer *tf, int i, const float *x, float *y,
                       int64_t n)
{
    unet_tick t0 = unet_prof_begin(r);
    px_nn_layer_norm(x, tf->c, y, tf->c, n, tf->c, tf->ln_w[i], tf->ln_b[i], 1e-5f, r->pool);
    unet_prof_end(r, UNET_OP_LAYERNORM, t0, 0);
}

static void transpose(unet_run *r, const float *in, float *out, int64_t rows, int64_t cols)
{
    unet_tick t0 = unet_prof_begin(r);
    px_nn_transpose(in, out, r->batch, rows, cols, r->pool);
    unet_prof_end(r, UNET_OP_LAYOUT, t0, 0);
}

/* Self-attention runs on head-major copies of q, k and v: each head's
 * (hw, dh) block contiguous, so the kernel's GEMMs pack dense panels instead
 * of gathering dh floats from every 3c-wide token row (at SD 1.5's level 0,
 * dh = 40 of 960: about 10-25% faster measured, for a copy of a few MiB). */
typedef struct perm_ctx {
    const float *src;
    float *dst;
    int64_t hw, c, ld; /* ld: row stride of the token-major side */
    int heads, dh, bh; /* bh = batch * heads */
    int to_heads;      /* 1: (batch, hw, ld) -> (part, bh, hw, dh); 0: back into (batch, hw, c) */
} perm_ctx;

static void perm_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const perm_ctx *p = ctx;
    const size_t row = sizeof(float) * (size_t)p->dh;
    for (int64_t t = begin; t < end; t++) {
        const int64_t part = t / p->bh, bh = t % p->bh, b = bh / p->heads, h = bh % p->heads;
        const int64_t tok0 = b * p->hw * p->ld + part * p->c + h * p->dh; /* token side */
        const int64_t hm0 = t * p->hw * p->dh;                            /* head-major side */
        for (int64_t i = 0; i < p->hw; i++) {
            if (p->to_heads)
                memcpy(p->dst + hm0 + i * p->dh, p->src + tok0 + i * p->ld, row);
            else
                memcpy(p->dst + tok0 + i * p->ld, p->src + hm0 + i * p->dh, row);
        }
    }
}

static void permute(unet_run *r, const unet_xformer *tf, const float *src, float *dst, int64_t hw,
                    int parts, int to_heads)
{
    const int dh = tf->c / tf->heads;
    perm_ctx p = {.src = src,
                  .dst = dst,
                  .hw = hw,
                  .c = tf->c,
                  .ld = to_heads ? (int64_t)parts * tf->c : tf->c,
                  .heads = tf->heads,
                  .dh = dh,
                  .bh = r->batch * tf->heads,
                  .to_heads = to_heads};
    unet_tick t0 = unet_prof_begin(r);
    px_pool_for(r->pool, (int64_t)parts * p.bh, perm_task, &p);
    unet_prof_end(r, UNET_OP_LAYOUT, t0, 0);
}

/* ao (n, c) = self-attention of qkv (n, 3c) = [q | k | v]; qkv is clobbered. */
static int self_attention(const unet_xformer *tf, unet_run *r, float *qkv, float *ao, int64_t hw)
{
    const int64_t n = (int64_t)r->batch * hw, dh = tf->c / tf->heads;
    const size_t mark = px_nn_arena_mark(r->arena);
    float *hm = unet_floats(r, (size_t)n * 3 * tf->c); /* (3, batch*heads, hw, dh) */
    if (!hm)
        return PX_ENOMEM;
    const size_t part = (size_t)n * tf->c;
    permute(r, tf, qkv, hm, hw, 3, 1);
    /* every (item, head) is one "batch" item of a single-head attention */
    int rc = attention(r, UNET_OP_ATTN_SELF, r->batch * tf->heads, hm, dh, hm + part, hm + 2 * part,
                       dh, qkv, dh, hw, (int)hw, 1, (int)dh);
    if (rc == PX_OK)
        permute(r, tf, qkv, ao, hw, 1, 0);
    px_nn_arena_release(r->arena, mark);
    return rc;
}

/* X (n, c) += attn1(LN1(X)); X += attn2(LN2(X), context). nb (n, c) scratch. */
static int attention_blocks(const unet_xformer *tf, unet_run *r, float *X, float *nb, int64_t hw,
                            const float *context, int nctx)
{
    const int64_t c = tf->c;
    const int64_t n = (int64_t)r->batch * hw;
    const int64_t nk2 = (int64_t)r->batch * nctx;
    const size_t mark = px_nn_arena_mark(r->arena);
    int rc = PX_ENOMEM;
    float *qkv = unet_floats(r, (size_t)n * 3 * c); /* (n, 3c): q | k | v */
    float *ao = unet_floats(r, (size_t)n * c);
    float *kv2 = unet_floats(r, (size_t)nk2 * 2 * c); /* (batch*nctx, 2c): k | v */
    if (!qkv || !ao || !kv2)
        goto done;

    layer_norm(r, tf, 0, X, nb, n);
    rc = unet_linear(r, UNET_OP_LINEAR, nb, n, c, &tf->q1, NULL, qkv, 3 * c, 0);
    if (rc == PX_OK)
        rc = unet_linear(r, UNET_OP_LINEAR, nb, n, c, &tf->k1, NULL, qkv + c, 3 * c, 0);
    if (rc == PX_OK)
        rc = unet_linear(r, UNET_OP_LINEAR, nb, n, c, &tf->v1, NULL, qkv + 2 * c, 3 * c, 0);
    if (rc == PX_OK)
        rc = self_attention(tf, r, qkv, ao, hw);
    if (rc == PX_OK)
        rc = unet_linear(r, UNET_OP_LINEAR, ao, n, c, &tf->o1, tf->o1_b, X, c, 1);
    if (rc != PX_OK)
        goto done;

    layer_norm(r, tf, 1, X, nb, n);
    rc = unet_linear(r, UNET_OP_LINEAR, nb, n, c, &tf->q2, NULL, qkv, c, 0);
    if (rc == PX_OK)
        rc = unet_linear(r, UNET_OP_LINEAR, context, nk2, tf->cross_dim, &tf->k2, NULL, kv2, 2 * c,
                         0);
    if (rc == PX_OK)
        rc = unet_linear(r, UNET_OP_LINEAR, context, nk2, tf->cross_dim, &tf->v2, NULL, kv2 + c,
                         2 * c, 0);
    if (rc == PX_OK)
        rc = attention(r, UNET_OP_ATTN_CROSS, r->batch, qkv, c, kv2, kv2 + c, 2 * c, ao, c, hw,
                       nctx, tf->heads, tf->c);
    if (rc == PX_OK)
        rc = unet_linear(r, UNET_OP_LINEAR, ao, n, c, &tf->o2, tf->o2_b, X, c, 1);
done:
    px_nn_arena_release(r->arena, mark);
    return rc;
}

/* X (n, c) += ff(LN3(X)), in row chunks. nb (n, c) scratch. */
static int feed_forward(const unet_xformer *tf, unet_run *r, float *X, float *nb, int64_t n)
{
    const int c = tf->c;
    const int64_t inner = 4 * (int64_t)c;
    const int64_t rows = n < UNET_FF_ROWS ? n : UNET_FF_ROWS;
    const size_t mark = px_nn_arena_mark(r->arena);
    int rc = PX_ENOMEM;
    float *hid = unet_floats(r, (size_t)rows * 2 * inner); /* [value | gate] */
    float *act = unet_floats(r, (size_t)rows * inner);
    if (!hid || !act)
        goto done;
    layer_norm(r, tf, 2, X, nb, n);
    rc = PX_OK;
    for (int64_t r0 = 0; r0 < n && rc == PX_OK; r0 += rows) {
        int64_t m = n - r0 < rows ? n - r0 : rows;
        rc = unet_linear(r, UNET_OP_FF, nb + r0 * c, m, c, &tf->ff1, tf->ff1_b, hid, 2 * inner, 0);
        if (rc != PX_OK)
            break;
        unet_tick t0 = unet_prof_begin(r);
        px_nn_geglu(hid, 2 * inner, act, inner, m, inner, r->pool);
        unet_prof_end(r, UNET_OP_GEGLU, t0, 0);
        rc = unet_linear(r, UNET_OP_FF, act, m, inner, &tf->ff2, tf->ff2_b, X + r0 * c, c, 1);
    }
done:
    px_nn_arena_release(r->arena, mark);
    return rc;
}

int unet_xformer_forward(const unet_xformer *tf, unet_run *r, float *x, int64_t hw,
                         const float *context, int nctx)
{
    const int c = tf->c;
    const int64_t n = (int64_t)r->batch * hw;
    const size_t mark = px_nn_arena_mark(r->arena);
    int rc = PX_ENOMEM;
    float *X = unet_floats(r, (size_t)n * c);  /* tokens (batch, hw, c): the inner residual */
    float *nb = unet_floats(r, (size_t)n * c); /* normed tokens / NCHW scratch */
    float *mb = unet_floats(r, (size_t)n * c); /* NCHW scratch */
    if (!X || !nb || !mb)
        goto done;

    unet_group_norm(r, x, nb, c, hw, tf->groups, tf->norm_w, tf->norm_b, 1e-6f, 0);
    /* proj_in as a 1x1 conv on the map (h*w as one row of pixels), then tokens */
    rc = unet_conv(r, UNET_OP_CONV1, nb, c, 1, (int)hw, &tf->proj_in, tf->proj_in_b, 1, 1, mb, 0);
    if (rc != PX_OK)
        goto done;
    transpose(r, mb, X, c, hw);

    rc = attention_blocks(tf, r, X, nb, hw, context, nctx);
    if (rc == PX_OK)
        rc = feed_forward(tf, r, X, nb, n);
    if (rc != PX_OK)
        goto done;

    transpose(r, X, mb, hw, c);
    rc = unet_conv(r, UNET_OP_CONV1, mb, c, 1, (int)hw, &tf->proj_out, tf->proj_out_b, 1, 1, x, 1);
done:
    px_nn_arena_release(r->arena, mark);
    return rc;
}

double unet_xformer_flops(const unet_xformer *tf, int batch, int64_t hw, int nctx)
{
    const double c = tf->c, n = (double)batch * (double)hw;
    double f = 0;
    f += 2 * n * c * c * 2;                                /* proj_in, proj_out */
    f += 2 * n * c * c * 4;                                /* q1 k1 v1 o1 */
    f += 4 * n * (double)hw * c;                           /* self-attention: q.k and p.v */
    f += 2 * n * c * c * 2;                                /* q2 o2 */
    f += 2 * (double)batch * nctx * tf->cross_dim * c * 2; /* k2 v2 */
    f += 4 * n * (double)nctx * c;                         /* cross-attention */
    f += 2 * n * c * (8 * c) + 2 * n * (4 * c) * c;        /* GEGLU proj, ff.net.2 */
    return f;
}

/* ---- Kernel wrappers ---------------------------------------------------- */

float *unet_floats(unet_run *r, size_t n)
{
    return px_nn_arena_floats(r->arena, n);
}

double unet_cpu_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0)
        return 0;
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

unet_tick unet_prof_begin(const unet_run *r)
{
    if (!r->prof->on)
        return (unet_tick){0, 0};
    return (unet_tick){px_now_ms(), unet_cpu_ms()};
}

void unet_prof_end(unet_run *r, unet_op op, unet_tick t0, double flops)
{
    r->flops += flops;
    if (!r->prof->on)
        return;
    r->prof->ms[op] += px_now_ms() - t0.wall;
    r->prof->cpu_ms[op] += unet_cpu_ms() - t0.cpu;
    r->prof->flops[op] += flops;
    r->prof->calls[op]++;
}

int unet_conv(unet_run *r, unet_op op, const float *x, int c_in, int h, int w, const px_nn_mat *wt,
              const float *bias, int k, int stride, float *y, int accumulate)
{
    px_nn_conv2d_shape s = {.batch = r->batch,
                            .c_in = c_in,
                            .h = h,
                            .w = w,
                            .c_out = (int)wt->rows,
                            .k = k,
                            .stride = stride,
                            .pad = k / 2};
    int oh, ow;
    px_nn_conv2d_out_size(&s, &oh, &ow);
    double fl = 2.0 * r->batch * (double)wt->rows * (double)wt->cols * oh * ow;
    unet_tick t0 = unet_prof_begin(r);
    int rc = px_nn_conv2d(x, &s, wt, bias, y, accumulate, r->arena, r->pool);
    unet_prof_end(r, op, t0, fl);
    return rc;
}

int unet_linear(unet_run *r, unet_op op, const float *x, int64_t n, int64_t ldx,
                const px_nn_mat *wt, const float *bias, float *y, int64_t ldy, int accumulate)
{
    double fl = 2.0 * (double)n * (double)wt->rows * (double)wt->cols;
    unet_tick t0 = unet_prof_begin(r);
    int rc = px_nn_linear(x, n, ldx, wt, bias, y, ldy, accumulate, r->arena, r->pool);
    unet_prof_end(r, op, t0, fl);
    return rc;
}

void unet_group_norm(unet_run *r, const float *x, float *y, int c, int64_t hw, int groups,
                     const float *gamma, const float *beta, float eps, int silu)
{
    unet_tick t0 = unet_prof_begin(r);
    px_nn_group_norm(x, y, r->batch, c, hw, groups, gamma, beta, eps, silu, r->pool);
    unet_prof_end(r, UNET_OP_GROUPNORM, t0, 0);
}
