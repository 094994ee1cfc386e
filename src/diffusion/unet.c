/*
 * diffusers' UNet2DConditionModel in the SD 1.x layout: the noise predictor
 * the sampler calls once per step (twice the batch with classifier-free
 * guidance). The blocks themselves are in unet_blocks.c; this file reads the
 * weights (views into the model file, checked against the config's shapes
 * once, at create) and walks the network:
 *
 *   t -> sinusoidal (block_out[0]) [+ cond_proj(tcond)] -> linear, SiLU, linear -> temb
 *   x -> conv_in -> down levels (resnet [+ transformer]) x layers, stride-2 conv
 *        except at the last level -> mid (resnet, transformer, resnet) -> up
 *        levels (resnet on [h | skip] [+ transformer]) x (layers + 1), nearest
 *        2x + conv except at the top -> GroupNorm+SiLU -> conv_out
 *
 * Memory: everything comes from the caller's arena with stack discipline.
 * The skip connections are a stack too (pushed top-down, popped bottom-up),
 * so they live in the arena in push order; the up path's running map
 * ping-pongs between two buffers allocated below them. Peak use is the
 * skips, two full maps and one block's scratch.
 *
 * A forward keeps no state in the handle, so threads may run forwards at
 * once, each with its own arena and pool; the one exception is profiling:
 * PX_SD_PROFILE=1 in the environment when the UNet is created makes every
 * forward log (INFO) a table of time and GFLOP/s per op type, gathered in
 * the handle. tcond is ignored by a UNet without time_cond_proj_dim, and a
 * NULL tcond skips cond_proj, as diffusers does without timestep_cond.
 */
#include "unet_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNET_MAX_LAYERS 3 /* layers_per_block; SD 1.x has 2 */
#define UNET_MAX_SKIPS (1 + PX_SD_MAX_LEVELS * (UNET_MAX_LAYERS + 1))

struct px_sd_unet {
    px_sd_unet_config cfg;
    int temb_dim;                        /* 4 * block_out[0] */
    px_nn_mat time_1, time_2, time_cond; /* linear_1 (T, C0), linear_2 (T, T), cond_proj (C0, P) */
    const float *time_1_b, *time_2_b;
    px_nn_mat conv_in; /* (C0, in*9) */
    const float *conv_in_b;
    unet_resnet down_res[PX_SD_MAX_LEVELS][UNET_MAX_LAYERS];
    unet_xformer down_attn[PX_SD_MAX_LEVELS][UNET_MAX_LAYERS];
    px_nn_mat down_conv[PX_SD_MAX_LEVELS]; /* stride-2 (C, C*9), all levels but the last */
    const float *down_conv_b[PX_SD_MAX_LEVELS];
    unet_resnet mid_res[2];
    unet_xformer mid_attn;
    unet_resnet up_res[PX_SD_MAX_LEVELS][UNET_MAX_LAYERS + 1]; /* indexed by level, not block */
    unet_xformer up_attn[PX_SD_MAX_LEVELS][UNET_MAX_LAYERS + 1];
    px_nn_mat up_conv[PX_SD_MAX_LEVELS]; /* after upsampling, levels > 0 */
    const float *up_conv_b[PX_SD_MAX_LEVELS];
    const float *norm_out_w, *norm_out_b;
    px_nn_mat conv_out; /* (out, C0*9) */
    const float *conv_out_b;
    unet_prof prof;
};

/* ---- Create ------------------------------------------------------------- */

static int check_config(const px_sd_unet_config *c, px_err *err)
{
    if (c->levels < 1 || c->levels > PX_SD_MAX_LEVELS)
        return px_err_set(err, PX_EUNSUPPORTED, "unet: %d levels, expected 1..%d", c->levels,
                          PX_SD_MAX_LEVELS);
    if (c->layers_per_block < 1 || c->layers_per_block > UNET_MAX_LAYERS)
        return px_err_set(err, PX_EUNSUPPORTED, "unet: layers_per_block %d, expected 1..%d",
                          c->layers_per_block, UNET_MAX_LAYERS);
    if (c->in_channels < 1 || c->out_channels < 1 || c->cross_dim < 1 || c->norm_groups < 1 ||
        c->time_cond_proj_dim < 0 || !(c->norm_eps > 0))
        return px_err_set(err, PX_EINVAL, "unet: config has a non-positive size or eps");
    if (c->block_out[0] % 2)
        return px_err_set(err, PX_EUNSUPPORTED, "unet: block_out[0] %d is odd", c->block_out[0]);
    for (int l = 0; l < c->levels; l++) {
        int ch = c->block_out[l];
        if (ch < 1 || ch % c->norm_groups)
            return px_err_set(err, PX_EINVAL,
                              "unet: block_out[%d] = %d, expected a positive multiple of "
                              "norm_num_groups %d",
                              l, ch, c->norm_groups);
        if (c->cross_attn[l] && (c->heads[l] < 1 || ch % c->heads[l]))
            return px_err_set(err, PX_EINVAL,
                              "unet: %d heads do not divide %d channels at level %d", c->heads[l],
                              ch, l);
    }
    int top = c->block_out[c->levels - 1], hl = c->heads[c->levels - 1];
    if (hl < 1 || top % hl)
        return px_err_set(err, PX_EINVAL, "unet: %d mid-block heads do not divide %d channels", hl,
                          top);
    return PX_OK;
}

static int load_down(px_sd_unet *u, px_sd_weights *w, px_err *err)
{
    const px_sd_unet_config *c = &u->cfg;
    char p[128];
    int ch = c->block_out[0], rc = PX_OK;
    for (int l = 0; l < c->levels && rc == PX_OK; l++) {
        int co = c->block_out[l];
        for (int j = 0; j < c->layers_per_block && rc == PX_OK; j++) {
            snprintf(p, sizeof p, "down_blocks.%d.resnets.%d", l, j);
            rc = unet_resnet_load(w, p, ch, co, u->temb_dim, c->norm_groups, c->norm_eps,
                                  &u->down_res[l][j], err);
            ch = co;
            if (rc == PX_OK && c->cross_attn[l]) {
                snprintf(p, sizeof p, "down_blocks.%d.attentions.%d", l, j);
                rc = unet_xformer_load(w, p, co, c->heads[l], c->cross_dim, c->norm_groups,
                                       &u->down_attn[l][j], err);
            }
        }
        if (rc == PX_OK && l < c->levels - 1) {
            snprintf(p, sizeof p, "down_blocks.%d.downsamplers.0", l);
            rc = unet_load_mat(w, p, "conv.weight", co, co, 3, &u->down_conv[l], err);
            if (rc == PX_OK)
                rc = unet_load_vec(w, p, "conv.bias", co, &u->down_conv_b[l], err);
        }
    }
    return rc;
}

/* Up block i works at level l = levels-1-i. Resnet j takes the running map
 * (the mid block's output, or the previous resnet's) concatenated with the
 * skip pushed last, whose channel count follows the down path in reverse. */
static int load_mid_up(px_sd_unet *u, px_sd_weights *w, px_err *err)
{
    const px_sd_unet_config *c = &u->cfg;
    const int L = c->levels, top = c->block_out[L - 1];
    char p[128];
    int rc = PX_OK;
    for (int j = 0; j < 2 && rc == PX_OK; j++) {
        snprintf(p, sizeof p, "mid_block.resnets.%d", j);
        rc = unet_resnet_load(w, p, top, top, u->temb_dim, c->norm_groups, c->norm_eps,
                              &u->mid_res[j], err);
    }
    if (rc == PX_OK)
        rc = unet_xformer_load(w, "mid_block.attentions.0", top, c->heads[L - 1], c->cross_dim,
                               c->norm_groups, &u->mid_attn, err);

    /* skip channels, in push order: conv_in, then per level its resnets' and downsampler's */
    int skip_c[UNET_MAX_SKIPS], ns = 0;
    skip_c[ns++] = c->block_out[0];
    for (int l = 0; l < L; l++)
        for (int j = 0; j < c->layers_per_block + (l < L - 1); j++)
            skip_c[ns++] = c->block_out[l];

    int ch = top;
    for (int i = 0; i < L && rc == PX_OK; i++) {
        int l = L - 1 - i, co = c->block_out[l];
        for (int j = 0; j <= c->layers_per_block && rc == PX_OK; j++) {
            if (ns == 0) /* cannot happen: as many pops as pushes */
                return px_err_set(err, PX_EINVAL, "unet: skip connections do not add up");
            int cin = ch + skip_c[--ns];
            snprintf(p, sizeof p, "up_blocks.%d.resnets.%d", i, j);
            rc = unet_resnet_load(w, p, cin, co, u->temb_dim, c->norm_groups, c->norm_eps,
                                  &u->up_res[l][j], err);
            ch = co;
            if (rc == PX_OK && c->cross_attn[l]) {
                snprintf(p, sizeof p, "up_blocks.%d.attentions.%d", i, j);
                rc = unet_xformer_load(w, p, co, c->heads[l], c->cross_dim, c->norm_groups,
                                       &u->up_attn[l][j], err);
            }
        }
        if (rc == PX_OK && l > 0) {
            snprintf(p, sizeof p, "up_blocks.%d.upsamplers.0", i);
            rc = unet_load_mat(w, p, "conv.weight", co, co, 3, &u->up_conv[l], err);
            if (rc == PX_OK)
                rc = unet_load_vec(w, p, "conv.bias", co, &u->up_conv_b[l], err);
        }
    }
    return rc;
}

static int load_ends(px_sd_unet *u, px_sd_weights *w, px_err *err)
{
    const px_sd_unet_config *c = &u->cfg;
    const int c0 = c->block_out[0], T = u->temb_dim;
    int rc = unet_load_mat(w, "time_embedding", "linear_1.weight", T, c0, 1, &u->time_1, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, "time_embedding", "linear_1.bias", T, &u->time_1_b, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, "time_embedding", "linear_2.weight", T, T, 1, &u->time_2, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, "time_embedding", "linear_2.bias", T, &u->time_2_b, err);
    if (rc == PX_OK && c->time_cond_proj_dim > 0)
        rc = unet_load_mat(w, "time_embedding", "cond_proj.weight", c0, c->time_cond_proj_dim, 1,
                           &u->time_cond, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, "conv_in", "weight", c0, c->in_channels, 3, &u->conv_in, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, "conv_in", "bias", c0, &u->conv_in_b, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, "conv_norm_out", "weight", c0, &u->norm_out_w, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, "conv_norm_out", "bias", c0, &u->norm_out_b, err);
    if (rc == PX_OK)
        rc = unet_load_mat(w, "conv_out", "weight", c->out_channels, c0, 3, &u->conv_out, err);
    if (rc == PX_OK)
        rc = unet_load_vec(w, "conv_out", "bias", c->out_channels, &u->conv_out_b, err);
    return rc;
}

int px_sd_unet_create(px_sd_weights *w, px_sd_unet **out, px_err *err)
{
    *out = NULL;
    const px_sd_config *cfg = px_sd_weights_config(w);
    int rc = check_config(&cfg->unet, err);
    if (rc != PX_OK)
        return rc;
    px_sd_unet *u = px_calloc(1, sizeof *u);
    if (!u)
        return px_err_set(err, PX_ENOMEM, "unet: out of memory");
    u->cfg = cfg->unet;
    u->temb_dim = 4 * u->cfg.block_out[0];
    rc = load_ends(u, w, err);
    if (rc == PX_OK)
        rc = load_down(u, w, err);
    if (rc == PX_OK)
        rc = load_mid_up(u, w, err);
    if (rc != PX_OK) {
        free(u);
        return rc;
    }
    const char *prof = getenv("PX_SD_PROFILE");
    u->prof.on = prof && prof[0] == '1';
    *out = u;
    return PX_OK;
}

void px_sd_unet_destroy(px_sd_unet *u)
{
    free(u); /* weights are views owned by px_sd_weights */
}

/* ---- Forward ------------------------------------------------------------ */

/* diffusers' get_timestep_embedding, in float32 as torch computes it (the
 * argument t * freq reaches ~1000 rad, so the rounding of each step shows). */
static void timestep_embedding(const px_sd_unet *u, const float *t, int batch, float *emb)
{
    const int half = u->cfg.block_out[0] / 2;
    const float neg_log = (float)-log(10000.0);
    const float denom = (float)(half - u->cfg.freq_shift);
    for (int b = 0; b < batch; b++) {
        float *e = emb + (size_t)b * 2 * half;
        float *sin_part = e + (u->cfg.flip_sin_to_cos ? half : 0);
        float *cos_part = e + (u->cfg.flip_sin_to_cos ? 0 : half);
        for (int i = 0; i < half; i++) {
            float freq = expf(neg_log * (float)i / denom);
            float arg = t[b] * freq;
            sin_part[i] = (float)sin((double)arg);
            cos_part[i] = (float)cos((double)arg);
        }
    }
}

/* temb (batch, T) = silu(linear_2(silu(linear_1(emb [+ cond_proj(tcond)])))); the outer SiLU
 * is every resnet's own, done once here. */
static int time_embed(const px_sd_unet *u, unet_run *r, const float *t, const float *tcond,
                      float *temb)
{
    const int b = r->batch, c0 = u->cfg.block_out[0], T = u->temb_dim;
    const size_t mark = px_nn_arena_mark(r->arena);
    float *emb = unet_floats(r, (size_t)b * c0), *hid = unet_floats(r, (size_t)b * T);
    int rc = PX_ENOMEM;
    if (!emb || !hid)
        goto done;
    timestep_embedding(u, t, b, emb);
    rc = PX_OK;
    if (u->time_cond.data && tcond)
        rc = unet_linear(r, UNET_OP_LINEAR, tcond, b, u->cfg.time_cond_proj_dim, &u->time_cond,
                         NULL, emb, c0, 1);
    if (rc == PX_OK)
        rc = unet_linear(r, UNET_OP_LINEAR, emb, b, c0, &u->time_1, u->time_1_b, hid, T, 0);
    if (rc != PX_OK)
        goto done;
    px_nn_activate(hid, (size_t)b * T, PX_NN_SILU, r->pool);
    rc = unet_linear(r, UNET_OP_LINEAR, hid, b, T, &u->time_2, u->time_2_b, temb, T, 0);
    if (rc == PX_OK)
        px_nn_activate(temb, (size_t)b * T, PX_NN_SILU, r->pool);
done:
    px_nn_arena_release(r->arena, mark);
    return rc;
}

/* The skip connections: maps in the arena, popped in reverse push order. */
typedef struct skip_stack {
    float *map[UNET_MAX_SKIPS];
    int c[UNET_MAX_SKIPS];
    size_t mark[UNET_MAX_SKIPS]; /* arena position before the map: popping releases to it */
    int n;
} skip_stack;

static float *skip_push(unet_run *r, skip_stack *s, int c, int64_t hw)
{
    s->mark[s->n] = px_nn_arena_mark(r->arena);
    float *m = unet_floats(r, (size_t)r->batch * c * hw);
    if (m) {
        s->map[s->n] = m;
        s->c[s->n++] = c;
    }
    return m;
}

/* conv_in and the down levels; leaves every skip on the stack, the last one
 * being the running map. *h, *w become the bottom level's size. */
static int down_path(const px_sd_unet *u, unet_run *r, const float *x, int *h, int *w,
                     const float *temb, const float *ctx, int nctx, skip_stack *s)
{
    const px_sd_unet_config *c = &u->cfg;
    int ch = c->block_out[0];
    float *cur = skip_push(r, s, ch, (int64_t)*h * *w);
    if (!cur)
        return PX_ENOMEM;
    int rc = unet_conv(r, UNET_OP_CONV3, x, c->in_channels, *h, *w, &u->conv_in, u->conv_in_b, 3, 1,
                       cur, 0);
    for (int l = 0; l < c->levels && rc == PX_OK; l++) {
        const int64_t hw = (int64_t)*h * *w;
        for (int j = 0; j < c->layers_per_block && rc == PX_OK; j++) {
            float *y = skip_push(r, s, c->block_out[l], hw);
            if (!y)
                return PX_ENOMEM;
            rc = unet_resnet_forward(&u->down_res[l][j], r, cur, *h, *w, temb, y);
            if (rc == PX_OK && c->cross_attn[l])
                rc = unet_xformer_forward(&u->down_attn[l][j], r, y, hw, ctx, nctx);
            cur = y;
            ch = c->block_out[l];
        }
        if (rc == PX_OK && l < c->levels - 1) {
            float *y = skip_push(r, s, ch, hw / 4);
            if (!y)
                return PX_ENOMEM;
            rc = unet_conv(r, UNET_OP_CONV3, cur, ch, *h, *w, &u->down_conv[l], u->down_conv_b[l],
                           3, 2, y, 0);
            cur = y;
            *h /= 2;
            *w /= 2;
        }
    }
    return rc;
}

/* Mid block from the top skip into buf[0]; then the up levels, ping-ponging
 * between buf[0] and buf[1]. Returns the final map in *res. */
static int up_path(const px_sd_unet *u, unet_run *r, int *h, int *w, const float *temb,
                   const float *ctx, int nctx, skip_stack *s, float *buf[2], float **res)
{
    const px_sd_unet_config *c = &u->cfg;
    const int L = c->levels, b = r->batch;
    int ch = c->block_out[L - 1], cur = 0;
    int64_t hw = (int64_t)*h * *w;
    size_t mark = px_nn_arena_mark(r->arena);
    float *m = unet_floats(r, (size_t)b * ch * hw);
    if (!m)
        return PX_ENOMEM;
    int rc = unet_resnet_forward(&u->mid_res[0], r, s->map[s->n - 1], *h, *w, temb, m);
    if (rc == PX_OK)
        rc = unet_xformer_forward(&u->mid_attn, r, m, hw, ctx, nctx);
    if (rc == PX_OK)
        rc = unet_resnet_forward(&u->mid_res[1], r, m, *h, *w, temb, buf[cur]);
    px_nn_arena_release(r->arena, mark);

    for (int l = L - 1; l >= 0 && rc == PX_OK; l--) {
        for (int j = 0; j <= c->layers_per_block && rc == PX_OK; j++) {
            const int k = --s->n, cin = ch + s->c[k];
            float *cat = unet_floats(r, (size_t)b * cin * hw);
            if (!cat)
                return PX_ENOMEM;
            unet_tick t0 = unet_prof_begin(r);
            px_nn_concat_channels(buf[cur], ch, s->map[k], s->c[k], cat, b, hw, r->pool);
            unet_prof_end(r, UNET_OP_LAYOUT, t0, 0);
            rc = unet_resnet_forward(&u->up_res[l][j], r, cat, *h, *w, temb, buf[!cur]);
            px_nn_arena_release(r->arena, s->mark[k]); /* the skip and cat */
            cur = !cur;
            ch = c->block_out[l];
            if (rc == PX_OK && c->cross_attn[l])
                rc = unet_xformer_forward(&u->up_attn[l][j], r, buf[cur], hw, ctx, nctx);
        }
        if (rc == PX_OK && l > 0) {
            mark = px_nn_arena_mark(r->arena);
            float *big = unet_floats(r, (size_t)b * ch * hw * 4);
            if (!big)
                return PX_ENOMEM;
            unet_tick t0 = unet_prof_begin(r);
            px_nn_upsample2x(buf[cur], big, (int64_t)b * ch, *h, *w, r->pool);
            unet_prof_end(r, UNET_OP_LAYOUT, t0, 0);
            *h *= 2;
            *w *= 2;
            hw *= 4;
            rc = unet_conv(r, UNET_OP_CONV3, big, ch, *h, *w, &u->up_conv[l], u->up_conv_b[l], 3, 1,
                           buf[!cur], 0);
            cur = !cur;
            px_nn_arena_release(r->arena, mark);
        }
    }
    *res = buf[cur];
    return rc;
}

/* One INFO line per op type: wall ms, share of the wall time, CPU ms (all
 * threads), GEMM GFLOP, GFLOP/s of wall time and per CPU-second (the latter
 * is what to hold against one core's sgemm peak on a busy machine). */
static void prof_report(px_sd_unet *u, const unet_run *r, int h, int w, int nctx, double wall_ms,
                        double cpu_ms)
{
    static const char *const names[UNET_OP_COUNT] = {
        "conv3x3",   "conv1x1",   "linear", "ff",     "attn-self",  "attn-cross",
        "groupnorm", "layernorm", "geglu",  "layout", "elementwise"};
    const unet_prof *p = &u->prof;
    px_log(PX_LOG_INFO,
           "unet profile: batch %d, %dx%d latents, %.0f ms wall, %.0f ms CPU, %.2f GFLOP "
           "(%.2f counted), %.1f GFLOP/s, %.1f per CPU-s",
           r->batch, h, w, wall_ms, cpu_ms, r->flops * 1e-9,
           px_sd_unet_flops(u, r->batch, h, w, nctx) * 1e-9,
           wall_ms > 0 ? r->flops * 1e-6 / wall_ms : 0.0,
           cpu_ms > 0 ? r->flops * 1e-6 / cpu_ms : 0.0);
    px_log(PX_LOG_INFO, "  %-11s %5s %9s %6s %9s %8s %8s %8s", "op", "calls", "wall ms", "wall%",
           "CPU ms", "GFLOP", "GFLOP/s", "per CPU");
    for (int i = 0; i < UNET_OP_COUNT; i++) {
        const double ms = p->ms[i], cms = p->cpu_ms[i];
        px_log(PX_LOG_INFO, "  %-11s %5lld %9.1f %5.1f%% %9.1f %8.2f %8.1f %8.1f", names[i],
               (long long)p->calls[i], ms, wall_ms > 0 ? 100 * ms / wall_ms : 0.0, cms,
               p->flops[i] * 1e-9, ms > 0 ? p->flops[i] * 1e-6 / ms : 0.0,
               cms > 0 ? p->flops[i] * 1e-6 / cms : 0.0);
    }
}

static int check_args(const px_sd_unet *u, const float *x, int batch, int h, int w, const float *t,
                      const float *context, int nctx, const float *out, px_err *err)
{
    const int mult = 1 << (u->cfg.levels - 1);
    if (!x || !t || !context || !out)
        return px_err_set(err, PX_EINVAL, "unet: NULL input or output");
    if (batch < 1 || nctx < 1 || h < 1 || w < 1)
        return px_err_set(err, PX_EINVAL, "unet: batch %d, %dx%d, %d context tokens: expected >= 1",
                          batch, h, w, nctx);
    if (h % mult || w % mult)
        return px_err_set(err, PX_EINVAL, "unet: latent size %dx%d is not a multiple of %d", h, w,
                          mult);
    if ((int64_t)h * w > (1 << 24))
        return px_err_set(err, PX_ELIMIT, "unet: latent size %dx%d is too large", h, w);
    return PX_OK;
}

int px_sd_unet_forward(px_sd_unet *u, const float *x, int batch, int h, int w, const float *t,
                       const float *context, int nctx, const float *tcond, float *out,
                       px_nn_arena *arena, px_pool *pool, px_err *err)
{
    int rc = check_args(u, x, batch, h, w, t, context, nctx, out, err);
    if (rc != PX_OK)
        return rc;
    const px_sd_unet_config *c = &u->cfg;
    const unet_tick t_start = {u->prof.on ? px_now_ms() : 0, u->prof.on ? unet_cpu_ms() : 0};
    if (u->prof.on)
        u->prof = (unet_prof){.on = 1};
    unet_run r = {.arena = arena, .pool = pool, .prof = &u->prof, .batch = batch};
    const size_t mark0 = px_nn_arena_mark(arena);

    /* the largest running map of the up path: a level's channels at its own
     * size, or (after upsampling) at the size of the level above */
    size_t maxmap = 0;
    for (int l = 0; l < c->levels; l++) {
        size_t hw = (size_t)(h >> l) * (size_t)(w >> l);
        size_t m = (size_t)c->block_out[l] * (l > 0 ? hw * 4 : hw);
        maxmap = m > maxmap ? m : maxmap;
    }
    float *temb = unet_floats(&r, (size_t)batch * u->temb_dim);
    float *buf[2] = {unet_floats(&r, maxmap * batch), unet_floats(&r, maxmap * batch)};
    skip_stack s = {.n = 0};
    float *res = NULL;
    int hh = h, ww = w;
    rc = PX_ENOMEM;
    if (temb && buf[0] && buf[1])
        rc = time_embed(u, &r, t, tcond, temb);
    if (rc == PX_OK)
        rc = down_path(u, &r, x, &hh, &ww, temb, context, nctx, &s);
    if (rc == PX_OK)
        rc = up_path(u, &r, &hh, &ww, temb, context, nctx, &s, buf, &res);
    if (rc == PX_OK) {
        float *other = res == buf[0] ? buf[1] : buf[0];
        unet_group_norm(&r, res, other, c->block_out[0], (int64_t)h * w, c->norm_groups,
                        u->norm_out_w, u->norm_out_b, c->norm_eps, 1);
        rc = unet_conv(&r, UNET_OP_CONV3, other, c->block_out[0], h, w, &u->conv_out, u->conv_out_b,
                       3, 1, out, 0);
    }
    px_nn_arena_release(arena, mark0);
    if (rc != PX_OK)
        return px_err_set(err, rc, "unet: %s during the forward pass (batch %d, %dx%d)",
                          px_strstatus(rc), batch, h, w);
    if (u->prof.on)
        prof_report(u, &r, h, w, nctx, px_now_ms() - t_start.wall, unet_cpu_ms() - t_start.cpu);
    return PX_OK;
}

double px_sd_unet_flops(const px_sd_unet *u, int batch, int h, int w, int nctx)
{
    const px_sd_unet_config *c = &u->cfg;
    const double b = batch, T = u->temb_dim, c0 = c->block_out[0];
    double f = 2 * b * (c0 * T + T * T);
    if (c->time_cond_proj_dim > 0)
        f += 2 * b * c->time_cond_proj_dim * c0;
    f += 2 * b * (double)h * w * c0 * 9 * (c->in_channels + c->out_channels); /* conv_in, _out */
    for (int l = 0; l < c->levels; l++) {
        const int64_t hw = (int64_t)(h >> l) * (w >> l);
        const double co = c->block_out[l];
        for (int j = 0; j < c->layers_per_block; j++) {
            f += unet_resnet_flops(&u->down_res[l][j], batch, hw);
            if (c->cross_attn[l])
                f += unet_xformer_flops(&u->down_attn[l][j], batch, hw, nctx);
        }
        for (int j = 0; j <= c->layers_per_block; j++) {
            f += unet_resnet_flops(&u->up_res[l][j], batch, hw);
            if (c->cross_attn[l])
                f += unet_xformer_flops(&u->up_attn[l][j], batch, hw, nctx);
        }
        if (l < c->levels - 1) /* stride-2 conv to level l+1 */
            f += 2 * b * ((double)hw / 4) * co * co * 9;
        if (l > 0) /* conv after upsampling to level l-1's size */
            f += 2 * b * (double)(hw * 4) * co * co * 9;
    }
    const int L = c->levels;
    const int64_t hwb = (int64_t)(h >> (L - 1)) * (w >> (L - 1));
    f += unet_resnet_flops(&u->mid_res[0], batch, hwb) +
         unet_resnet_flops(&u->mid_res[1], batch, hwb);
    f += unet_xformer_flops(&u->mid_attn, batch, hwb, nctx);
    return f;
}
