/*
 * taesd.c: the tiny autoencoder's decoder (diffusers' AutoencoderTiny /
 * madebyollin's TAESD), a fast approximate replacement for the VAE decoder
 * (previews, or whole renders where speed matters more than detail).
 *
 * diffusers' DecoderTiny is one nn.Sequential, so its tensors are named by
 * position, "decoder.layers.<i>...":
 *   latents -> tanh(z / 3) * 3 (a soft clamp)
 *   [0] conv3x3 latent->C, [1] ReLU,
 *   per level l = 0..3: num_decoder_blocks[l] blocks, then on levels 0..2 a
 *   nearest 2x upsample and a conv3x3 C->C without bias; level 3 ends with
 *   conv3x3 C->3 (with bias).
 * A block is relu(conv(relu(conv(relu(conv(x))))) + x) with 3x3 convs
 * ("conv.0", "conv.2", "conv.4"; the skip is the identity because all
 * levels have C channels). The network outputs an image in [0, 1], which
 * diffusers maps to [-1, 1] as 2x - 1; so do we, so that TAESD and the VAE
 * are interchangeable.
 *
 * Memory follows vae.c: one activation buffer sized for the largest map
 * (C channels at the output resolution), temporaries above it on the arena.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sd_internal.h"

#define TAESD_LEVELS 4
#define TAESD_MAX_LATENT 1024

typedef struct taesd_conv {
    px_nn_mat w;    /* (cout, cin*9) */
    const float *b; /* (cout,) or NULL */
    int cin, cout;
} taesd_conv;

typedef struct taesd_block {
    taesd_conv c[3];
} taesd_block;

struct px_sd_taesd {
    px_sd_taesd_config cfg;
    taesd_conv conv_in, conv_out;
    taesd_conv up[TAESD_LEVELS - 1];
    int nblocks;
    taesd_block *blocks; /* all levels' blocks in order */
};

/* "decoder.layers.<name>.weight" (cout, cin, 3, 3) and, if bias, ".bias". */
static int taesd_conv_load(px_sd_weights *w, taesd_conv *c, int cout, int cin, int bias,
                           px_err *err, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static int taesd_conv_load(px_sd_weights *w, taesd_conv *c, int cout, int cin, int bias,
                           px_err *err, const char *fmt, ...)
{
    char base[128], name[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(base, sizeof base, fmt, ap);
    va_end(ap);
    const int64_t dims[4] = {cout, cin, 3, 3};
    c->cin = cin;
    c->cout = cout;
    c->b = NULL;
    snprintf(name, sizeof name, "decoder.layers.%s.weight", base);
    int rc = px_sd_w_mat(w, PX_SD_TAESD, name, 4, dims, &c->w, err);
    if (rc != PX_OK || !bias)
        return rc;
    snprintf(name, sizeof name, "decoder.layers.%s.bias", base);
    return px_sd_w_f32(w, PX_SD_TAESD, name, cout, &c->b, err);
}

static int taesd_load(px_sd_weights *w, px_sd_taesd *t, px_err *err)
{
    const int ch = t->cfg.channels;
    int idx = 0, nb = 0, rc;
    if ((rc = taesd_conv_load(w, &t->conv_in, ch, t->cfg.latent_channels, 1, err, "%d", idx)))
        return rc;
    idx += 2; /* conv, ReLU */
    for (int l = 0; l < TAESD_LEVELS; l++) {
        for (int b = 0; b < t->cfg.blocks[l]; b++, idx++, nb++)
            for (int j = 0; j < 3; j++)
                if ((rc = taesd_conv_load(w, &t->blocks[nb].c[j], ch, ch, 1, err, "%d.conv.%d", idx,
                                          2 * j)))
                    return rc;
        if (l < TAESD_LEVELS - 1) {
            idx++; /* Upsample */
            rc = taesd_conv_load(w, &t->up[l], ch, ch, 0, err, "%d", idx++);
        } else {
            rc = taesd_conv_load(w, &t->conv_out, 3, ch, 1, err, "%d", idx++);
        }
        if (rc != PX_OK)
            return rc;
    }
    return PX_OK;
}

int px_sd_taesd_create(px_sd_weights *w, px_sd_taesd **out, px_err *err)
{
    *out = NULL;
    const px_sd_taesd_config *c = &px_sd_weights_config(w)->taesd;
    if (!c->present)
        return px_err_set(err, PX_ENOTFOUND, "taesd: no TAESD weights were given");
    int ok = c->latent_channels >= 1 && c->channels >= 1, total = 0;
    for (int l = 0; l < TAESD_LEVELS; l++) {
        ok = ok && c->blocks[l] >= 0 && c->blocks[l] <= 64;
        total += c->blocks[l];
    }
    if (!ok)
        return px_err_set(err, PX_EINVAL,
                          "taesd: config latent_channels %d, channels %d, blocks %d %d %d %d: "
                          "expected positive channels and 0..64 blocks per level",
                          c->latent_channels, c->channels, c->blocks[0], c->blocks[1], c->blocks[2],
                          c->blocks[3]);
    px_sd_taesd *t = px_calloc(1, sizeof *t);
    if (!t || !(t->blocks = px_calloc((size_t)total + 1, sizeof *t->blocks))) {
        free(t);
        return px_err_set(err, PX_ENOMEM, "taesd: out of memory");
    }
    t->cfg = *c;
    t->nblocks = total;
    int rc = taesd_load(w, t, err);
    if (rc != PX_OK) {
        px_sd_taesd_destroy(t);
        return rc;
    }
    *out = t;
    return PX_OK;
}

void px_sd_taesd_destroy(px_sd_taesd *t)
{
    if (!t)
        return;
    free(t->blocks);
    free(t);
}

typedef struct taesd_ctx {
    px_nn_arena *arena;
    px_pool *pool;
} taesd_ctx;

static int taesd_conv_run(const taesd_conv *c, const float *x, int h, int w, float *y,
                          int accumulate, const taesd_ctx *cx)
{
    const px_nn_conv2d_shape s = {.batch = 1,
                                  .c_in = c->cin,
                                  .h = h,
                                  .w = w,
                                  .c_out = c->cout,
                                  .k = 3,
                                  .stride = 1,
                                  .pad = 1};
    return px_nn_conv2d(x, &s, &c->w, c->b, y, accumulate, cx->arena, cx->pool);
}

/* a = relu(a + conv4(relu(conv2(relu(conv0(a)))))), in place. */
static int taesd_block_run(const taesd_block *b, float *a, int h, int w, const taesd_ctx *cx)
{
    const size_t n = (size_t)b->c[0].cout * h * w;
    const size_t mark = px_nn_arena_mark(cx->arena);
    float *t1 = px_nn_arena_floats(cx->arena, n), *t2 = px_nn_arena_floats(cx->arena, n);
    int rc = t1 && t2 ? PX_OK : PX_ENOMEM;
    if (rc == PX_OK && (rc = taesd_conv_run(&b->c[0], a, h, w, t1, 0, cx)) == PX_OK) {
        px_nn_activate(t1, n, PX_NN_RELU, cx->pool);
        rc = taesd_conv_run(&b->c[1], t1, h, w, t2, 0, cx);
    }
    if (rc == PX_OK) {
        px_nn_activate(t2, n, PX_NN_RELU, cx->pool);
        rc = taesd_conv_run(&b->c[2], t2, h, w, a, 1, cx);
    }
    if (rc == PX_OK)
        px_nn_activate(a, n, PX_NN_RELU, cx->pool);
    px_nn_arena_release(cx->arena, mark);
    return rc;
}

/* Nearest 2x upsample and the level's conv: a (C, h, w) -> a (C, 2h, 2w). */
static int taesd_up_run(const taesd_conv *c, float *a, int h, int w, const taesd_ctx *cx)
{
    const size_t mark = px_nn_arena_mark(cx->arena);
    float *t = px_nn_arena_floats(cx->arena, (size_t)c->cin * 4 * h * w);
    int rc = t ? PX_OK : PX_ENOMEM;
    if (rc == PX_OK) {
        px_nn_upsample2x(a, t, c->cin, h, w, cx->pool);
        rc = taesd_conv_run(c, t, 2 * h, 2 * w, a, 0, cx);
    }
    px_nn_arena_release(cx->arena, mark);
    return rc;
}

static int taesd_run(const px_sd_taesd *t, const float *z, int h, int w, float *img,
                     const taesd_ctx *cx)
{
    const int f = 1 << (TAESD_LEVELS - 1);
    const size_t nz = (size_t)t->cfg.latent_channels * h * w;
    const size_t mark = px_nn_arena_mark(cx->arena);
    float *a = px_nn_arena_floats(cx->arena, (size_t)t->cfg.channels * h * w * f * f);
    float *zc = px_nn_arena_floats(cx->arena, nz);
    if (!a || !zc) {
        px_nn_arena_release(cx->arena, mark);
        return PX_ENOMEM;
    }
    for (size_t i = 0; i < nz; i++)
        zc[i] = tanhf(z[i] / 3.0f) * 3.0f;
    int rc = taesd_conv_run(&t->conv_in, zc, h, w, a, 0, cx);
    if (rc == PX_OK)
        px_nn_activate(a, (size_t)t->cfg.channels * h * w, PX_NN_RELU, cx->pool);
    int nb = 0;
    for (int l = 0; l < TAESD_LEVELS && rc == PX_OK; l++) {
        for (int b = 0; b < t->cfg.blocks[l] && rc == PX_OK; b++)
            rc = taesd_block_run(&t->blocks[nb++], a, h, w, cx);
        if (rc == PX_OK && l < TAESD_LEVELS - 1) {
            rc = taesd_up_run(&t->up[l], a, h, w, cx);
            h *= 2;
            w *= 2;
        }
    }
    if (rc == PX_OK)
        rc = taesd_conv_run(&t->conv_out, a, h, w, img, 0, cx);
    if (rc == PX_OK) {
        const size_t n = (size_t)3 * h * w;
        for (size_t i = 0; i < n; i++)
            img[i] = img[i] * 2.0f - 1.0f;
    }
    px_nn_arena_release(cx->arena, mark);
    return rc;
}

int px_sd_taesd_decode(px_sd_taesd *t, const float *z, int h, int w, float *img, px_nn_arena *arena,
                       px_pool *pool, px_err *err)
{
    if (h < 1 || w < 1 || h > TAESD_MAX_LATENT || w > TAESD_MAX_LATENT)
        return px_err_set(err, PX_ELIMIT, "taesd decode: latent %dx%d, expected 1..%d per side", h,
                          w, TAESD_MAX_LATENT);
    const taesd_ctx cx = {.arena = arena, .pool = pool};
    int rc = taesd_run(t, z, h, w, img, &cx);
    if (rc != PX_OK)
        return px_err_set(err, rc, "taesd decode: out of memory at latent %dx%d", h, w);
    return PX_OK;
}
