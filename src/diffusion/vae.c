/*
 * vae.c: Stable Diffusion's image autoencoder (diffusers' AutoencoderKL):
 * the decoder (latents -> image) that every render ends with, and the
 * encoder (image -> latent mean and log-variance) for tests and img2img.
 *
 * Decoder: post_quant_conv (1x1), conv_in, a mid block (resnet, single-head
 * self-attention over the h*w positions, resnet), then one up block per level
 * from the widest channel count down (layers_per_block + 1 resnets, then a
 * nearest 2x upsample and a 3x3 conv on every level but the last), GroupNorm
 * + SiLU and conv_out to 3 channels. A resnet is GN+SiLU, conv3x3, GN+SiLU,
 * conv3x3, plus the input (through a 1x1 conv_shortcut when the channel count
 * changes). The encoder mirrors it: conv_in, down blocks (resnets, then a
 * stride-2 3x3 conv after padding one zero row/column on the bottom/right),
 * the mid block, GN+SiLU, conv_out to 2*latent channels and quant_conv.
 *
 * Memory: a 512x512 decode works on maps of up to 512 channels x 64x64 and
 * 256 channels x 512x512 (256 MiB each), so the forward pass keeps one
 * "current activation" buffer A, sized once for the largest map of the pass,
 * and every block works on A in place with its temporaries on the arena
 * above it, released when the block ends (the arena is a stack). The peak is
 * A plus two or three maps of one block. Larger images should use tiles:
 * px_sd_vae_decode with tile > 0 decodes overlapping latent tiles and blends
 * them with linear ramps across each overlap (weights normalised per pixel),
 * which bounds memory by the tile size. Tiles see their own GroupNorm
 * statistics, so a tiled decode is close to, not equal to, a whole one.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sd_internal.h"

#define VAE_EPS 1e-6f       /* every GroupNorm of the autoencoder */
#define VAE_MAX_LATENT 1024 /* latent rows/columns (8192 pixels) */
#define VAE_MIN_TILE 4      /* latents; the overlap is tile / 4 */

typedef struct vae_conv {
    px_nn_mat w;    /* (cout, cin*k*k) */
    const float *b; /* (cout,) */
    int cin, cout, k;
} vae_conv;

typedef struct vae_norm {
    const float *g, *b; /* (c,) */
} vae_norm;

typedef struct vae_resnet {
    int cin, cout;
    vae_norm n1, n2;
    vae_conv c1, c2, sc; /* sc.w.data is NULL when cin == cout */
} vae_resnet;

typedef struct vae_attn {
    int c;
    vae_norm gn;
    px_nn_mat q, k, v, o; /* (c, c) */
    const float *qb, *kb, *vb, *ob;
} vae_attn;

typedef struct vae_mid {
    vae_resnet r0, r1;
    vae_attn attn;
} vae_mid;

/* One side of the autoencoder. For the decoder, level i is up block i (channels
 * block_out[levels-1-i]), with nres = layers_per_block + 1 resnets and a
 * resampling conv on all levels but the last; for the encoder, down block i. */
typedef struct vae_half {
    int present;
    vae_conv quant; /* post_quant_conv / quant_conv (1x1); w.data NULL when absent */
    vae_conv conv_in, conv_out;
    vae_mid mid;
    int nres;
    vae_resnet *res;                     /* levels * nres */
    vae_conv resample[PX_SD_MAX_LEVELS]; /* upsamplers.0.conv / downsamplers.0.conv */
    vae_norm norm_out;
} vae_half;

struct px_sd_vae {
    px_sd_vae_config cfg;
    vae_half dec, enc;
};

/* ---- Loading ------------------------------------------------------------ */

/* Conv "<name>.weight" (cout, cin, k, k) and "<name>.bias" (cout). */
static int vae_conv_load(px_sd_weights *w, vae_conv *c, int cout, int cin, int k, px_err *err,
                         const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static int vae_conv_load(px_sd_weights *w, vae_conv *c, int cout, int cin, int k, px_err *err,
                         const char *fmt, ...)
{
    char base[200], name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(base, sizeof base, fmt, ap);
    va_end(ap);
    const int64_t dims[4] = {cout, cin, k, k};
    c->cin = cin;
    c->cout = cout;
    c->k = k;
    snprintf(name, sizeof name, "%s.weight", base);
    int rc = px_sd_w_mat(w, PX_SD_VAE, name, 4, dims, &c->w, err);
    if (rc != PX_OK)
        return rc;
    snprintf(name, sizeof name, "%s.bias", base);
    return px_sd_w_f32(w, PX_SD_VAE, name, cout, &c->b, err);
}

/* GroupNorm "<name>.weight" / "<name>.bias" of c channels. */
static int vae_norm_load(px_sd_weights *w, vae_norm *n, int c, px_err *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int vae_norm_load(px_sd_weights *w, vae_norm *n, int c, px_err *err, const char *fmt, ...)
{
    char base[200], name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(base, sizeof base, fmt, ap);
    va_end(ap);
    snprintf(name, sizeof name, "%s.weight", base);
    int rc = px_sd_w_f32(w, PX_SD_VAE, name, c, &n->g, err);
    if (rc != PX_OK)
        return rc;
    snprintf(name, sizeof name, "%s.bias", base);
    return px_sd_w_f32(w, PX_SD_VAE, name, c, &n->b, err);
}

/* resnets.<i> under `block` ("decoder.up_blocks.0"). */
static int vae_resnet_load(px_sd_weights *w, vae_resnet *r, int cin, int cout, const char *block,
                           int i, px_err *err)
{
    r->cin = cin;
    r->cout = cout;
    int rc;
    if ((rc = vae_norm_load(w, &r->n1, cin, err, "%s.resnets.%d.norm1", block, i)) ||
        (rc = vae_conv_load(w, &r->c1, cout, cin, 3, err, "%s.resnets.%d.conv1", block, i)) ||
        (rc = vae_norm_load(w, &r->n2, cout, err, "%s.resnets.%d.norm2", block, i)) ||
        (rc = vae_conv_load(w, &r->c2, cout, cout, 3, err, "%s.resnets.%d.conv2", block, i)))
        return rc;
    if (cin == cout)
        return PX_OK;
    return vae_conv_load(w, &r->sc, cout, cin, 1, err, "%s.resnets.%d.conv_shortcut", block, i);
}

/* The mid block's attention: diffusers names (to_q ...), or the names diffusers used before
 * 0.14 (query, key, value, proj_attn) that some older VAE folders still have. */
static int vae_attn_load(px_sd_weights *w, vae_attn *a, int c, const char *half, px_err *err)
{
    static const char *const now[4] = {"to_q", "to_k", "to_v", "to_out.0"};
    static const char *const old[4] = {"query", "key", "value", "proj_attn"};
    px_nn_mat *mats[4] = {&a->q, &a->k, &a->v, &a->o};
    const float **bias[4] = {&a->qb, &a->kb, &a->vb, &a->ob};
    char name[256];
    a->c = c;
    snprintf(name, sizeof name, "%s.mid_block.attentions.0.to_q.weight", half);
    const char *const *names = px_sd_w_has(w, PX_SD_VAE, name) ? now : old;
    int rc = vae_norm_load(w, &a->gn, c, err, "%s.mid_block.attentions.0.group_norm", half);
    const int64_t dims[2] = {c, c};
    for (int i = 0; i < 4 && rc == PX_OK; i++) {
        snprintf(name, sizeof name, "%s.mid_block.attentions.0.%s.weight", half, names[i]);
        rc = px_sd_w_mat(w, PX_SD_VAE, name, 2, dims, mats[i], err);
        if (rc == PX_OK) {
            snprintf(name, sizeof name, "%s.mid_block.attentions.0.%s.bias", half, names[i]);
            rc = px_sd_w_f32(w, PX_SD_VAE, name, c, bias[i], err);
        }
    }
    return rc;
}

static int vae_mid_load(px_sd_weights *w, vae_mid *m, int c, const char *half, px_err *err)
{
    char block[64];
    snprintf(block, sizeof block, "%s.mid_block", half);
    int rc;
    if ((rc = vae_resnet_load(w, &m->r0, c, c, block, 0, err)) ||
        (rc = vae_attn_load(w, &m->attn, c, half, err)) ||
        (rc = vae_resnet_load(w, &m->r1, c, c, block, 1, err)))
        return rc;
    return PX_OK;
}

/* Optional 1x1 quant conv: absent in VAEs made with use_quant_conv = false. */
static int vae_quant_load(px_sd_weights *w, vae_conv *c, int ch, const char *name, px_err *err)
{
    char full[128];
    snprintf(full, sizeof full, "%s.weight", name);
    if (!px_sd_w_has(w, PX_SD_VAE, full))
        return PX_OK;
    return vae_conv_load(w, c, ch, ch, 1, err, "%s", name);
}

static int vae_decoder_load(px_sd_weights *w, const px_sd_vae_config *c, vae_half *d, px_err *err)
{
    const int top = c->block_out[c->levels - 1], lat = c->latent_channels;
    int rc;
    if ((rc = vae_quant_load(w, &d->quant, lat, "post_quant_conv", err)) ||
        (rc = vae_conv_load(w, &d->conv_in, top, lat, 3, err, "decoder.conv_in")) ||
        (rc = vae_mid_load(w, &d->mid, top, "decoder", err)))
        return rc;
    d->nres = c->layers_per_block + 1;
    d->res = px_calloc((size_t)(c->levels * d->nres), sizeof *d->res);
    if (!d->res)
        return px_err_set(err, PX_ENOMEM, "vae: out of memory");
    int prev = top;
    for (int i = 0; i < c->levels; i++) {
        char block[64];
        snprintf(block, sizeof block, "decoder.up_blocks.%d", i);
        const int ch = c->block_out[c->levels - 1 - i];
        for (int j = 0; j < d->nres; j++) {
            rc = vae_resnet_load(w, &d->res[i * d->nres + j], j ? ch : prev, ch, block, j, err);
            if (rc != PX_OK)
                return rc;
        }
        if (i < c->levels - 1 &&
            (rc = vae_conv_load(w, &d->resample[i], ch, ch, 3, err, "%s.upsamplers.0.conv", block)))
            return rc;
        prev = ch;
    }
    if ((rc = vae_norm_load(w, &d->norm_out, prev, err, "decoder.conv_norm_out")) ||
        (rc = vae_conv_load(w, &d->conv_out, 3, prev, 3, err, "decoder.conv_out")))
        return rc;
    d->present = 1;
    return PX_OK;
}

static int vae_encoder_load(px_sd_weights *w, const px_sd_vae_config *c, vae_half *e, px_err *err)
{
    const int lat = c->latent_channels;
    int rc;
    if ((rc = vae_conv_load(w, &e->conv_in, c->block_out[0], 3, 3, err, "encoder.conv_in")))
        return rc;
    e->nres = c->layers_per_block;
    e->res = px_calloc((size_t)(c->levels * e->nres), sizeof *e->res);
    if (!e->res)
        return px_err_set(err, PX_ENOMEM, "vae: out of memory");
    int prev = c->block_out[0];
    for (int i = 0; i < c->levels; i++) {
        char block[64];
        snprintf(block, sizeof block, "encoder.down_blocks.%d", i);
        const int ch = c->block_out[i];
        for (int j = 0; j < e->nres; j++) {
            rc = vae_resnet_load(w, &e->res[i * e->nres + j], j ? ch : prev, ch, block, j, err);
            if (rc != PX_OK)
                return rc;
        }
        if (i < c->levels - 1 && (rc = vae_conv_load(w, &e->resample[i], ch, ch, 3, err,
                                                     "%s.downsamplers.0.conv", block)))
            return rc;
        prev = ch;
    }
    if ((rc = vae_mid_load(w, &e->mid, prev, "encoder", err)) ||
        (rc = vae_norm_load(w, &e->norm_out, prev, err, "encoder.conv_norm_out")) ||
        (rc = vae_conv_load(w, &e->conv_out, 2 * lat, prev, 3, err, "encoder.conv_out")) ||
        (rc = vae_quant_load(w, &e->quant, 2 * lat, "quant_conv", err)))
        return rc;
    e->present = 1;
    return PX_OK;
}

static int vae_config_check(const px_sd_vae_config *c, px_err *err)
{
    int ok = c->levels >= 1 && c->levels <= PX_SD_MAX_LEVELS && c->layers_per_block >= 1 &&
             c->layers_per_block <= 16 && c->latent_channels >= 1 && c->norm_groups >= 1;
    for (int i = 0; ok && i < c->levels; i++)
        ok = c->block_out[i] >= 1 && c->block_out[i] % c->norm_groups == 0;
    if (!ok)
        return px_err_set(err, PX_EINVAL,
                          "vae: config levels %d, layers_per_block %d, latent_channels %d, "
                          "norm_groups %d: expected 1..%d levels of channels divisible by "
                          "norm_groups",
                          c->levels, c->layers_per_block, c->latent_channels, c->norm_groups,
                          PX_SD_MAX_LEVELS);
    return PX_OK;
}

int px_sd_vae_create(px_sd_weights *w, px_sd_vae **out, px_err *err)
{
    *out = NULL;
    const px_sd_vae_config *c = &px_sd_weights_config(w)->vae;
    int rc = vae_config_check(c, err);
    if (rc != PX_OK)
        return rc;
    px_sd_vae *v = px_calloc(1, sizeof *v);
    if (!v)
        return px_err_set(err, PX_ENOMEM, "vae: out of memory");
    v->cfg = *c;
    rc = vae_decoder_load(w, c, &v->dec, err);
    /* The encoder is optional: decode-only VAE files exist and renders never need it. */
    if (rc == PX_OK && px_sd_w_has(w, PX_SD_VAE, "encoder.conv_in.weight"))
        rc = vae_encoder_load(w, c, &v->enc, err);
    if (rc != PX_OK) {
        px_sd_vae_destroy(v);
        return rc;
    }
    *out = v;
    return PX_OK;
}

void px_sd_vae_destroy(px_sd_vae *v)
{
    if (!v)
        return;
    free(v->dec.res);
    free(v->enc.res);
    free(v);
}

/* ---- Blocks --------------------------------------------------------------
 * Each works on the current activation A (capacity checked by the caller) and
 * leaves its result there; temporaries live above the caller's arena mark. */

typedef struct vae_ctx {
    int groups;
    px_nn_arena *arena;
    px_pool *pool;
} vae_ctx;

static int vae_conv_run(const vae_conv *c, const float *x, int h, int w, int stride, int pad,
                        float *y, int accumulate, const vae_ctx *cx)
{
    const px_nn_conv2d_shape s = {.batch = 1,
                                  .c_in = c->cin,
                                  .h = h,
                                  .w = w,
                                  .c_out = c->cout,
                                  .k = c->k,
                                  .stride = stride,
                                  .pad = pad};
    return px_nn_conv2d(x, &s, &c->w, c->b, y, accumulate, cx->arena, cx->pool);
}

static int vae_resnet_run(const vae_resnet *r, float *a, int h, int w, const vae_ctx *cx)
{
    const int64_t hw = (int64_t)h * w;
    const int cmax = r->cin > r->cout ? r->cin : r->cout;
    const size_t mark = px_nn_arena_mark(cx->arena);
    float *t = px_nn_arena_floats(cx->arena, (size_t)(cmax * hw));
    float *u = px_nn_arena_floats(cx->arena, (size_t)(r->cout * hw));
    int rc = t && u ? PX_OK : PX_ENOMEM;
    if (rc == PX_OK) {
        px_nn_group_norm(a, t, 1, r->cin, hw, cx->groups, r->n1.g, r->n1.b, VAE_EPS, 1, cx->pool);
        rc = vae_conv_run(&r->c1, t, h, w, 1, 1, u, 0, cx);
    }
    if (rc == PX_OK) {
        px_nn_group_norm(u, u, 1, r->cout, hw, cx->groups, r->n2.g, r->n2.b, VAE_EPS, 1, cx->pool);
        if (r->cin == r->cout) {
            rc = vae_conv_run(&r->c2, u, h, w, 1, 1, a, 1, cx); /* a += conv2(u) */
        } else {
            /* t is dead after conv1 and holds max(cin, cout) maps: the shortcut goes there. */
            rc = vae_conv_run(&r->sc, a, h, w, 1, 0, t, 0, cx);
            if (rc == PX_OK)
                rc = vae_conv_run(&r->c2, u, h, w, 1, 1, t, 1, cx);
            if (rc == PX_OK)
                memcpy(a, t, (size_t)(r->cout * hw) * sizeof(float));
        }
    }
    px_nn_arena_release(cx->arena, mark);
    return rc;
}

/* Single-head self-attention over the h*w positions, with a residual. */
static int vae_attn_run(const vae_attn *at, float *a, int h, int w, const vae_ctx *cx)
{
    const int64_t n = (int64_t)h * w, c = at->c;
    const size_t mark = px_nn_arena_mark(cx->arena);
    float *xn = px_nn_arena_floats(cx->arena, (size_t)(c * n));
    float *tok = px_nn_arena_floats(cx->arena, (size_t)(c * n));
    float *qkv = px_nn_arena_floats(cx->arena, (size_t)(3 * c * n));
    float *att = px_nn_arena_floats(cx->arena, (size_t)(c * n));
    int rc = xn && tok && qkv && att ? PX_OK : PX_ENOMEM;
    if (rc == PX_OK) {
        px_nn_group_norm(a, xn, 1, (int)c, n, cx->groups, at->gn.g, at->gn.b, VAE_EPS, 0, cx->pool);
        px_nn_transpose(xn, tok, 1, c, n, cx->pool); /* (c, n) -> (n, c) */
        if ((rc = px_nn_linear(tok, n, c, &at->q, at->qb, qkv, 3 * c, 0, cx->arena, cx->pool)) ||
            (rc =
                 px_nn_linear(tok, n, c, &at->k, at->kb, qkv + c, 3 * c, 0, cx->arena, cx->pool)) ||
            (rc = px_nn_linear(tok, n, c, &at->v, at->vb, qkv + 2 * c, 3 * c, 0, cx->arena,
                               cx->pool))) {
            px_nn_arena_release(cx->arena, mark);
            return rc;
        }
        const px_nn_attn_shape s = {.batch = 1,
                                    .nq = (int)n,
                                    .nk = (int)n,
                                    .heads = 1,
                                    .dh = (int)c,
                                    .ldq = 3 * c,
                                    .ldk = 3 * c,
                                    .ldv = 3 * c,
                                    .ldo = c,
                                    .scale = 1.0f / sqrtf((float)c),
                                    .causal = 0};
        rc = px_nn_attention(qkv, qkv + c, qkv + 2 * c, att, &s, cx->arena, cx->pool);
    }
    if (rc == PX_OK)
        rc = px_nn_linear(att, n, c, &at->o, at->ob, tok, c, 0, cx->arena, cx->pool);
    if (rc == PX_OK) {
        px_nn_transpose(tok, xn, 1, n, c, cx->pool); /* back to (c, n) */
        px_nn_add(a, xn, a, (size_t)(c * n), cx->pool);
    }
    px_nn_arena_release(cx->arena, mark);
    return rc;
}

static int vae_mid_run(const vae_mid *m, float *a, int h, int w, const vae_ctx *cx)
{
    int rc;
    if ((rc = vae_resnet_run(&m->r0, a, h, w, cx)) || (rc = vae_attn_run(&m->attn, a, h, w, cx)))
        return rc;
    return vae_resnet_run(&m->r1, a, h, w, cx);
}

/* Nearest 2x upsample then the level's 3x3 conv: A (c, h, w) -> A (c, 2h, 2w). */
static int vae_upsample_run(const vae_conv *c, float *a, int h, int w, const vae_ctx *cx)
{
    const size_t mark = px_nn_arena_mark(cx->arena);
    float *t = px_nn_arena_floats(cx->arena, (size_t)c->cin * 4 * (size_t)h * (size_t)w);
    int rc = t ? PX_OK : PX_ENOMEM;
    if (rc == PX_OK) {
        px_nn_upsample2x(a, t, c->cin, h, w, cx->pool);
        rc = vae_conv_run(c, t, 2 * h, 2 * w, 1, 1, a, 0, cx);
    }
    px_nn_arena_release(cx->arena, mark);
    return rc;
}

/* diffusers' Downsample2D with padding 0: one zero row below and one zero column to the right,
 * then a stride-2 3x3 conv: A (c, h, w) -> A (c, h/2, w/2) for even h, w. */
static int vae_downsample_run(const vae_conv *c, float *a, int h, int w, const vae_ctx *cx)
{
    const int ph = h + 1, pw = w + 1;
    const size_t mark = px_nn_arena_mark(cx->arena);
    float *p = px_nn_arena_floats(cx->arena, (size_t)c->cin * (size_t)ph * (size_t)pw);
    int rc = p ? PX_OK : PX_ENOMEM;
    if (rc == PX_OK) {
        for (int ch = 0; ch < c->cin; ch++) {
            float *dst = p + (size_t)ch * ph * pw;
            const float *src = a + (size_t)ch * h * w;
            for (int y = 0; y < h; y++) {
                memcpy(dst + (size_t)y * pw, src + (size_t)y * w, (size_t)w * sizeof(float));
                dst[(size_t)y * pw + w] = 0.0f;
            }
            memset(dst + (size_t)h * pw, 0, (size_t)pw * sizeof(float));
        }
        rc = vae_conv_run(c, p, ph, pw, 2, 0, a, 0, cx);
    }
    px_nn_arena_release(cx->arena, mark);
    return rc;
}

/* ---- Decoder -------------------------------------------------------------- */

/* Floats of the decoder's largest activation at latent size h x w (resnet scratch included
 * separately by the blocks). */
static size_t vae_dec_capacity(const px_sd_vae *v, int h, int w)
{
    const px_sd_vae_config *c = &v->cfg;
    size_t hw = (size_t)h * (size_t)w, cap = (size_t)c->block_out[c->levels - 1] * hw;
    int prev = c->block_out[c->levels - 1];
    for (int i = 0; i < c->levels; i++, hw *= 4) {
        const int ch = c->block_out[c->levels - 1 - i];
        const size_t widest = (size_t)(prev > ch ? prev : ch) * hw;
        cap = widest > cap ? widest : cap;
        if (i < c->levels - 1 && (size_t)ch * 4 * hw > cap)
            cap = (size_t)ch * 4 * hw;
        prev = ch;
    }
    return cap;
}

/* Whole decode of z (latent, h, w) into img (3, f*h, f*w), f = 2^(levels-1). */
static int vae_decode_whole(const px_sd_vae *v, const float *z, int h, int w, float *img,
                            const vae_ctx *cx)
{
    const px_sd_vae_config *c = &v->cfg;
    const vae_half *d = &v->dec;
    const size_t mark = px_nn_arena_mark(cx->arena);
    float *a = px_nn_arena_floats(cx->arena, vae_dec_capacity(v, h, w));
    if (!a)
        return PX_ENOMEM;
    const size_t top = px_nn_arena_mark(cx->arena);
    int rc = PX_OK;
    const float *in = z;
    if (d->quant.w.data) {
        float *t = px_nn_arena_floats(cx->arena, (size_t)c->latent_channels * h * w);
        rc = t ? vae_conv_run(&d->quant, z, h, w, 1, 0, t, 0, cx) : PX_ENOMEM;
        in = t;
    }
    if (rc == PX_OK)
        rc = vae_conv_run(&d->conv_in, in, h, w, 1, 1, a, 0, cx);
    px_nn_arena_release(cx->arena, top);
    if (rc == PX_OK)
        rc = vae_mid_run(&d->mid, a, h, w, cx);
    int ch = c->block_out[c->levels - 1];
    for (int i = 0; i < c->levels && rc == PX_OK; i++) {
        for (int j = 0; j < d->nres && rc == PX_OK; j++)
            rc = vae_resnet_run(&d->res[i * d->nres + j], a, h, w, cx);
        ch = c->block_out[c->levels - 1 - i];
        if (rc == PX_OK && i < c->levels - 1) {
            rc = vae_upsample_run(&d->resample[i], a, h, w, cx);
            h *= 2;
            w *= 2;
        }
    }
    if (rc == PX_OK) {
        px_nn_group_norm(a, a, 1, ch, (int64_t)h * w, cx->groups, d->norm_out.g, d->norm_out.b,
                         VAE_EPS, 1, cx->pool);
        rc = vae_conv_run(&d->conv_out, a, h, w, 1, 1, img, 0, cx);
    }
    px_nn_arena_release(cx->arena, mark);
    return rc;
}

/* Tiles along one axis of n latents: count and first position of tile i, spread evenly so
 * that consecutive tiles overlap by at least tile / 4. */
static int vae_tile_count(int n, int tile)
{
    if (tile >= n)
        return 1;
    const int stride = tile - tile / 4;
    return 1 + (n - tile + stride - 1) / stride;
}

static int vae_tile_pos(int n, int tile, int count, int i)
{
    if (count == 1)
        return 0;
    return (int)(((int64_t)(n - tile) * i + (count - 1) / 2) / (count - 1));
}

/* Blend weight of pixel u (0..len) of tile i along one axis: a linear ramp across the
 * overlap with each neighbour, 1 elsewhere (and at the image border). */
static float vae_tile_weight(int n, int tile, int count, int i, int f, int u)
{
    const int len = tile * f;
    float wgt = 1.0f;
    if (i > 0) {
        const int ov =
            (vae_tile_pos(n, tile, count, i - 1) + tile - vae_tile_pos(n, tile, count, i)) * f;
        const float r = ((float)u + 0.5f) / (float)ov;
        wgt = r < wgt ? r : wgt;
    }
    if (i < count - 1) {
        const int ov =
            (vae_tile_pos(n, tile, count, i) + tile - vae_tile_pos(n, tile, count, i + 1)) * f;
        const float r = ((float)(len - u) - 0.5f) / (float)ov;
        wgt = r < wgt ? r : wgt;
    }
    return wgt;
}

/* Sum over tiles of the weights of each pixel along one axis (n latents -> n*f pixels). */
static void vae_tile_wsum(int n, int tile, int f, float *sum)
{
    const int count = vae_tile_count(n, tile);
    memset(sum, 0, (size_t)n * f * sizeof(float));
    for (int i = 0; i < count; i++) {
        const int p = vae_tile_pos(n, tile, count, i) * f;
        for (int u = 0; u < tile * f; u++)
            sum[p + u] += vae_tile_weight(n, tile, count, i, f, u);
    }
}

/* Decodes tile (ty, tx) and adds it, weighted, into img (3, f*h, f*w). */
static int vae_decode_tile(const px_sd_vae *v, const float *z, int h, int w, int th, int tw, int ty,
                           int tx, float *img, const vae_ctx *cx)
{
    const int f = 1 << (v->cfg.levels - 1), lat = v->cfg.latent_channels;
    const int ny = vae_tile_count(h, th), nx = vae_tile_count(w, tw);
    const int py = vae_tile_pos(h, th, ny, ty), px = vae_tile_pos(w, tw, nx, tx);
    const size_t mark = px_nn_arena_mark(cx->arena);
    float *zt = px_nn_arena_floats(cx->arena, (size_t)lat * th * tw);
    float *ot = px_nn_arena_floats(cx->arena, (size_t)3 * th * f * tw * f);
    float *wx = px_nn_arena_floats(cx->arena, (size_t)tw * f);
    int rc = zt && ot && wx ? PX_OK : PX_ENOMEM;
    if (rc == PX_OK) {
        for (int c = 0; c < lat; c++)
            for (int y = 0; y < th; y++)
                memcpy(zt + ((size_t)c * th + y) * tw, z + ((size_t)c * h + py + y) * w + px,
                       (size_t)tw * sizeof(float));
        rc = vae_decode_whole(v, zt, th, tw, ot, cx);
    }
    if (rc == PX_OK) {
        const int oh = th * f, ow = tw * f, W = w * f;
        for (int u = 0; u < ow; u++)
            wx[u] = vae_tile_weight(w, tw, nx, tx, f, u);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < oh; y++) {
                const float wy = vae_tile_weight(h, th, ny, ty, f, y);
                const float *src = ot + ((size_t)c * oh + y) * ow;
                float *dst = img + ((size_t)c * h * f + (size_t)py * f + y) * W + (size_t)px * f;
                for (int u = 0; u < ow; u++)
                    dst[u] += wy * wx[u] * src[u];
            }
    }
    px_nn_arena_release(cx->arena, mark);
    return rc;
}

static int vae_decode_tiled(const px_sd_vae *v, const float *z, int h, int w, int tile, float *img,
                            const vae_ctx *cx)
{
    const int f = 1 << (v->cfg.levels - 1);
    const int th = tile < h ? tile : h, tw = tile < w ? tile : w;
    const int ny = vae_tile_count(h, th), nx = vae_tile_count(w, tw);
    const int H = h * f, W = w * f;
    const size_t mark = px_nn_arena_mark(cx->arena);
    float *sy = px_nn_arena_floats(cx->arena, (size_t)H);
    float *sx = px_nn_arena_floats(cx->arena, (size_t)W);
    if (!sy || !sx) {
        px_nn_arena_release(cx->arena, mark);
        return PX_ENOMEM;
    }
    memset(img, 0, (size_t)3 * H * W * sizeof(float));
    int rc = PX_OK;
    for (int ty = 0; ty < ny && rc == PX_OK; ty++)
        for (int tx = 0; tx < nx && rc == PX_OK; tx++)
            rc = vae_decode_tile(v, z, h, w, th, tw, ty, tx, img, cx);
    if (rc == PX_OK) {
        /* The weights are separable over a grid of tiles, so their per-pixel sum is the
         * product of the per-axis sums. */
        vae_tile_wsum(h, th, f, sy);
        vae_tile_wsum(w, tw, f, sx);
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < H; y++) {
                float *row = img + ((size_t)c * H + y) * W;
                for (int u = 0; u < W; u++)
                    row[u] /= sy[y] * sx[u];
            }
    }
    px_nn_arena_release(cx->arena, mark);
    return rc;
}

int px_sd_vae_decode(px_sd_vae *v, const float *z, int h, int w, int tile, float *img,
                     px_nn_arena *arena, px_pool *pool, px_err *err)
{
    if (h < 1 || w < 1 || h > VAE_MAX_LATENT || w > VAE_MAX_LATENT)
        return px_err_set(err, PX_ELIMIT, "vae decode: latent %dx%d, expected 1..%d per side", h, w,
                          VAE_MAX_LATENT);
    if (tile < 0 || (tile > 0 && tile < VAE_MIN_TILE))
        return px_err_set(err, PX_EINVAL, "vae decode: tile %d, expected 0 or >= %d latents", tile,
                          VAE_MIN_TILE);
    const vae_ctx cx = {.groups = v->cfg.norm_groups, .arena = arena, .pool = pool};
    int rc;
    if (tile == 0 || (tile >= h && tile >= w))
        rc = vae_decode_whole(v, z, h, w, img, &cx);
    else
        rc = vae_decode_tiled(v, z, h, w, tile, img, &cx);
    if (rc != PX_OK)
        return px_err_set(err, rc, "vae decode: out of memory at latent %dx%d (tile %d)", h, w,
                          tile);
    return PX_OK;
}

/* ---- Encoder -------------------------------------------------------------- */

static size_t vae_enc_capacity(const px_sd_vae *v, int H, int W)
{
    const px_sd_vae_config *c = &v->cfg;
    size_t hw = (size_t)H * (size_t)W, cap = (size_t)c->block_out[0] * hw;
    int prev = c->block_out[0];
    for (int i = 0; i < c->levels; i++, hw /= 4) {
        const int ch = c->block_out[i];
        const size_t widest = (size_t)(prev > ch ? prev : ch) * hw;
        cap = widest > cap ? widest : cap;
        prev = ch;
    }
    return cap;
}

static int vae_encode_run(const px_sd_vae *v, const float *img, int h, int w, float *mean,
                          float *logvar, const vae_ctx *cx)
{
    const px_sd_vae_config *c = &v->cfg;
    const vae_half *e = &v->enc;
    const size_t mark = px_nn_arena_mark(cx->arena);
    float *a = px_nn_arena_floats(cx->arena, vae_enc_capacity(v, h, w));
    if (!a)
        return PX_ENOMEM;
    int rc = vae_conv_run(&e->conv_in, img, h, w, 1, 1, a, 0, cx);
    for (int i = 0; i < c->levels && rc == PX_OK; i++) {
        for (int j = 0; j < e->nres && rc == PX_OK; j++)
            rc = vae_resnet_run(&e->res[i * e->nres + j], a, h, w, cx);
        if (rc == PX_OK && i < c->levels - 1) {
            rc = vae_downsample_run(&e->resample[i], a, h, w, cx);
            h /= 2;
            w /= 2;
        }
    }
    if (rc == PX_OK)
        rc = vae_mid_run(&e->mid, a, h, w, cx);
    const int lat = c->latent_channels;
    const size_t n = (size_t)lat * h * w;
    float *m1 = px_nn_arena_floats(cx->arena, 2 * n), *m2 = px_nn_arena_floats(cx->arena, 2 * n);
    if (rc == PX_OK && (!m1 || !m2))
        rc = PX_ENOMEM;
    if (rc == PX_OK) {
        const int top = c->block_out[c->levels - 1];
        px_nn_group_norm(a, a, 1, top, (int64_t)h * w, cx->groups, e->norm_out.g, e->norm_out.b,
                         VAE_EPS, 1, cx->pool);
        rc = vae_conv_run(&e->conv_out, a, h, w, 1, 1, m1, 0, cx);
    }
    const float *moments = m1;
    if (rc == PX_OK && e->quant.w.data) {
        rc = vae_conv_run(&e->quant, m1, h, w, 1, 0, m2, 0, cx);
        moments = m2;
    }
    if (rc == PX_OK) {
        memcpy(mean, moments, n * sizeof(float));
        /* DiagonalGaussianDistribution clamps the log-variance to [-30, 20]. */
        for (size_t i = 0; i < n; i++) {
            const float lv = moments[n + i];
            logvar[i] = lv < -30.0f ? -30.0f : (lv > 20.0f ? 20.0f : lv);
        }
    }
    px_nn_arena_release(cx->arena, mark);
    return rc;
}

int px_sd_vae_encode(px_sd_vae *v, const float *img, int H, int W, float *mean, float *logvar,
                     px_nn_arena *arena, px_pool *pool, px_err *err)
{
    const int f = 1 << (v->cfg.levels - 1);
    if (!v->enc.present)
        return px_err_set(err, PX_EUNSUPPORTED, "vae encode: this VAE has no encoder weights");
    if (H < f || W < f || H % f || W % f || H > VAE_MAX_LATENT * f || W > VAE_MAX_LATENT * f)
        return px_err_set(err, PX_EINVAL,
                          "vae encode: image %dx%d, expected multiples of %d up to %d per side", W,
                          H, f, VAE_MAX_LATENT * f);
    const vae_ctx cx = {.groups = v->cfg.norm_groups, .arena = arena, .pool = pool};
    int rc = vae_encode_run(v, img, H, W, mean, logvar, &cx);
    if (rc != PX_OK)
        return px_err_set(err, rc, "vae encode: out of memory at %dx%d", W, H);
    return PX_OK;
}

/* ---- FLOPs ------------------------------------------------------------------ */

static double vae_conv_flops(int cout, int cin, int k, double hw)
{
    return 2.0 * cout * cin * k * k * hw;
}

static double vae_resnet_flops(int cin, int cout, double hw)
{
    double f = vae_conv_flops(cout, cin, 3, hw) + vae_conv_flops(cout, cout, 3, hw);
    return cin == cout ? f : f + vae_conv_flops(cout, cin, 1, hw);
}

double px_sd_vae_decode_flops(const px_sd_vae *v, int h, int w)
{
    const px_sd_vae_config *c = &v->cfg;
    const int top = c->block_out[c->levels - 1], lat = c->latent_channels;
    double hw = (double)h * w;
    double f = 0;
    if (v->dec.quant.w.data)
        f += vae_conv_flops(lat, lat, 1, hw);
    f += vae_conv_flops(top, lat, 3, hw);
    /* mid: two resnets; attention = 4 projections + scores + weighted sum */
    f += 2 * vae_resnet_flops(top, top, hw);
    f += 4 * 2.0 * hw * top * top + 2 * 2.0 * hw * hw * top;
    int prev = top;
    for (int i = 0; i < c->levels; i++) {
        const int ch = c->block_out[c->levels - 1 - i];
        for (int j = 0; j < v->dec.nres; j++)
            f += vae_resnet_flops(j ? ch : prev, ch, hw);
        if (i < c->levels - 1) {
            hw *= 4;
            f += vae_conv_flops(ch, ch, 3, hw);
        }
        prev = ch;
    }
    return f + vae_conv_flops(3, prev, 3, hw);
}
