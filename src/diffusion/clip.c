/*
 * clip.c: the CLIP text encoder of Stable Diffusion (transformers'
 * CLIPTextModel), token ids -> one hidden vector per token.
 *
 * The network is a pre-LayerNorm transformer over at most max_positions
 * tokens: x = token_embedding[id] + position_embedding[pos], then per layer
 *   x += out_proj(causal_attention(q, k, v of layer_norm1(x)))
 *   x += fc2(act(fc1(layer_norm2(x))))
 * and final_layer_norm at the end. Everything runs tokens-major (n, hidden)
 * on the px_nn_ops kernels; q, k and v are written side by side into one
 * (n, 3*hidden) buffer so the attention kernel reads them as column slices.
 *
 * Weights are looked up once in px_sd_clip_create with the shapes the config
 * implies and kept as views. The token embedding (49408 x 768 in SD 1.x) is
 * the one large table: it stays a px_nn_mat in the file's precision and only
 * the n rows a prompt uses are converted, instead of holding a float copy of
 * the whole table.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sd_internal.h"

typedef struct clip_layer {
    const float *ln1_g, *ln1_b, *ln2_g, *ln2_b; /* (hidden,) */
    px_nn_mat q, k, v, o;                       /* (hidden, hidden) */
    const float *q_b, *k_b, *v_b, *o_b;         /* (hidden,) */
    px_nn_mat fc1, fc2;                         /* (inter, hidden), (hidden, inter) */
    const float *fc1_b, *fc2_b;                 /* (inter,), (hidden,) */
} clip_layer;

struct px_sd_clip {
    px_sd_clip_config cfg;
    px_nn_mat tok_emb;          /* (vocab, hidden), file precision */
    const float *pos_emb;       /* (max_positions, hidden) */
    const float *lnf_g, *lnf_b; /* final_layer_norm (hidden,) */
    clip_layer *layers;         /* cfg.layers entries */
};

#define CLIP_PREFIX "text_model."

/* A matrix of the text encoder named by a printf format, shape (rows, cols). */
static int clip_mat(px_sd_weights *w, px_nn_mat *m, int64_t rows, int64_t cols, px_err *err,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int clip_mat(px_sd_weights *w, px_nn_mat *m, int64_t rows, int64_t cols, px_err *err,
                    const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const int64_t dims[2] = {rows, cols};
    return px_sd_w_mat(w, PX_SD_CLIP, name, 2, dims, m, err);
}

/* A float parameter of n elements named by a printf format. */
static int clip_vec(px_sd_weights *w, const float **v, int64_t n, px_err *err, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static int clip_vec(px_sd_weights *w, const float **v, int64_t n, px_err *err, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return px_sd_w_f32(w, PX_SD_CLIP, name, n, v, err);
}

static int clip_load_layer(px_sd_weights *w, const px_sd_clip_config *c, int i, clip_layer *l,
                           px_err *err)
{
    const int64_t d = c->hidden, f = c->intermediate;
#define LAYER CLIP_PREFIX "encoder.layers.%d."
    int rc;
    if ((rc = clip_vec(w, &l->ln1_g, d, err, LAYER "layer_norm1.weight", i)) ||
        (rc = clip_vec(w, &l->ln1_b, d, err, LAYER "layer_norm1.bias", i)) ||
        (rc = clip_vec(w, &l->ln2_g, d, err, LAYER "layer_norm2.weight", i)) ||
        (rc = clip_vec(w, &l->ln2_b, d, err, LAYER "layer_norm2.bias", i)) ||
        (rc = clip_mat(w, &l->q, d, d, err, LAYER "self_attn.q_proj.weight", i)) ||
        (rc = clip_vec(w, &l->q_b, d, err, LAYER "self_attn.q_proj.bias", i)) ||
        (rc = clip_mat(w, &l->k, d, d, err, LAYER "self_attn.k_proj.weight", i)) ||
        (rc = clip_vec(w, &l->k_b, d, err, LAYER "self_attn.k_proj.bias", i)) ||
        (rc = clip_mat(w, &l->v, d, d, err, LAYER "self_attn.v_proj.weight", i)) ||
        (rc = clip_vec(w, &l->v_b, d, err, LAYER "self_attn.v_proj.bias", i)) ||
        (rc = clip_mat(w, &l->o, d, d, err, LAYER "self_attn.out_proj.weight", i)) ||
        (rc = clip_vec(w, &l->o_b, d, err, LAYER "self_attn.out_proj.bias", i)) ||
        (rc = clip_mat(w, &l->fc1, f, d, err, LAYER "mlp.fc1.weight", i)) ||
        (rc = clip_vec(w, &l->fc1_b, f, err, LAYER "mlp.fc1.bias", i)) ||
        (rc = clip_mat(w, &l->fc2, d, f, err, LAYER "mlp.fc2.weight", i)) ||
        (rc = clip_vec(w, &l->fc2_b, d, err, LAYER "mlp.fc2.bias", i)))
        return rc;
#undef LAYER
    return PX_OK;
}

int px_sd_clip_create(px_sd_weights *w, px_sd_clip **out, px_err *err)
{
    *out = NULL;
    const px_sd_clip_config *c = &px_sd_weights_config(w)->clip;
    if (c->hidden <= 0 || c->layers <= 0 || c->heads <= 0 || c->hidden % c->heads != 0 ||
        c->intermediate <= 0 || c->max_positions <= 0 || c->vocab <= 0)
        return px_err_set(err, PX_EINVAL,
                          "text_encoder: config hidden %d, layers %d, heads %d, intermediate %d, "
                          "positions %d, vocab %d: expected positive sizes, hidden divisible by "
                          "heads",
                          c->hidden, c->layers, c->heads, c->intermediate, c->max_positions,
                          c->vocab);
    px_sd_clip *m = px_calloc(1, sizeof *m);
    if (!m)
        return px_err_set(err, PX_ENOMEM, "text_encoder: out of memory");
    m->cfg = *c;
    m->layers = px_calloc((size_t)c->layers, sizeof *m->layers);
    int rc = m->layers ? PX_OK : px_err_set(err, PX_ENOMEM, "text_encoder: out of memory");
    if (rc == PX_OK)
        rc = clip_mat(w, &m->tok_emb, c->vocab, c->hidden, err,
                      CLIP_PREFIX "embeddings.token_embedding.weight");
    if (rc == PX_OK)
        rc = clip_vec(w, &m->pos_emb, (int64_t)c->max_positions * c->hidden, err,
                      CLIP_PREFIX "embeddings.position_embedding.weight");
    if (rc == PX_OK)
        rc = clip_vec(w, &m->lnf_g, c->hidden, err, CLIP_PREFIX "final_layer_norm.weight");
    if (rc == PX_OK)
        rc = clip_vec(w, &m->lnf_b, c->hidden, err, CLIP_PREFIX "final_layer_norm.bias");
    for (int i = 0; rc == PX_OK && i < c->layers; i++)
        rc = clip_load_layer(w, c, i, &m->layers[i], err);
    if (rc != PX_OK) {
        px_sd_clip_destroy(m);
        return rc;
    }
    *out = m;
    return PX_OK;
}

void px_sd_clip_destroy(px_sd_clip *c)
{
    if (!c)
        return;
    free(c->layers);
    free(c);
}

/* Scratch of one forward: x (n, d) residual stream, h (n, d) normed input,
 * qkv (n, 3d), att (n, d), mlp (n, inter). */
typedef struct clip_bufs {
    float *x, *h, *qkv, *att, *mlp;
} clip_bufs;

/* One encoder layer on b->x in place. */
static int clip_layer_forward(const px_sd_clip *m, const clip_layer *l, int batch, int seq,
                              clip_bufs *b, px_nn_arena *arena, px_pool *pool)
{
    const int64_t d = m->cfg.hidden, f = m->cfg.intermediate;
    const int64_t n = (int64_t)batch * seq; /* rows of every token-wise op */
    const float eps = m->cfg.eps;
    int rc;
    px_nn_layer_norm(b->x, d, b->h, d, n, d, l->ln1_g, l->ln1_b, eps, pool);
    if ((rc = px_nn_linear(b->h, n, d, &l->q, l->q_b, b->qkv, 3 * d, 0, arena, pool)) ||
        (rc = px_nn_linear(b->h, n, d, &l->k, l->k_b, b->qkv + d, 3 * d, 0, arena, pool)) ||
        (rc = px_nn_linear(b->h, n, d, &l->v, l->v_b, b->qkv + 2 * d, 3 * d, 0, arena, pool)))
        return rc;
    const int dh = m->cfg.hidden / m->cfg.heads;
    const px_nn_attn_shape as = {.batch = batch,
                                 .nq = seq,
                                 .nk = seq,
                                 .heads = m->cfg.heads,
                                 .dh = dh,
                                 .ldq = 3 * d,
                                 .ldk = 3 * d,
                                 .ldv = 3 * d,
                                 .ldo = d,
                                 .scale = 1.0f / sqrtf((float)dh),
                                 .causal = 1};
    if ((rc = px_nn_attention(b->qkv, b->qkv + d, b->qkv + 2 * d, b->att, &as, arena, pool)) ||
        (rc = px_nn_linear(b->att, n, d, &l->o, l->o_b, b->x, d, 1, arena, pool)))
        return rc;
    px_nn_layer_norm(b->x, d, b->h, d, n, d, l->ln2_g, l->ln2_b, eps, pool);
    if ((rc = px_nn_linear(b->h, n, d, &l->fc1, l->fc1_b, b->mlp, f, 0, arena, pool)))
        return rc;
    px_nn_activate(b->mlp, (size_t)(n * f), m->cfg.act, pool);
    return px_nn_linear(b->mlp, n, f, &l->fc2, l->fc2_b, b->x, d, 1, arena, pool);
}

/* The token whose final state is the pooled output: the first EOS, as
 * transformers picks it for configs with a real eos_token_id. Configs with
 * the legacy id 2 (where transformers takes the largest id instead, which is
 * CLIP's EOS) reach us with the real id, rewritten by weights_config.c. With
 * no EOS at all, position 0, as transformers' argmax over all-false gives. */
static int clip_pool_index(const px_sd_clip_config *c, const int32_t *ids, int n)
{
    for (int i = 0; i < n; i++)
        if (ids[i] == c->eos)
            return i;
    return 0;
}

static int clip_check(const px_sd_clip *c, const int32_t *ids, int n, int clip_skip, px_err *err)
{
    if (n < 1 || n > c->cfg.max_positions)
        return px_err_set(err, PX_EINVAL, "text_encoder: %d tokens, expected 1..%d", n,
                          c->cfg.max_positions);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->cfg.vocab)
            return px_err_set(err, PX_EINVAL, "text_encoder: token %d is id %d, expected 0..%d", i,
                              (int)ids[i], c->cfg.vocab - 1);
    if (clip_skip > c->cfg.layers + 1)
        return px_err_set(err, PX_EINVAL, "text_encoder: clip_skip %d, expected at most %d",
                          clip_skip, c->cfg.layers + 1);
    return PX_OK;
}

int px_sd_clip_encode(px_sd_clip *c, const int32_t *ids, int n, int clip_skip, float *hidden,
                      float *pooled, px_nn_arena *arena, px_pool *pool, px_err *err)
{
    return px_sd_clip_encode_batch(c, ids, 1, n, clip_skip, hidden, pooled, arena, pool, err);
}

/* x (batch*n, d) = token + position embeddings of each sequence. */
static void clip_embed(const px_sd_clip *c, const int32_t *ids, int batch, int n, float *x)
{
    const int64_t d = c->cfg.hidden;
    const size_t esz = px_nn_dtype_size(c->tok_emb.dtype);
    for (int r = 0; r < batch * n; r++) {
        float *row = x + (int64_t)r * d;
        const int t = r % n;
        px_nn_to_f32(c->tok_emb.dtype, (const char *)c->tok_emb.data + (size_t)ids[r] * d * esz,
                     row, (size_t)d);
        for (int64_t j = 0; j < d; j++)
            row[j] += c->pos_emb[t * d + j];
    }
}

int px_sd_clip_encode_batch(px_sd_clip *c, const int32_t *ids, int batch, int n, int clip_skip,
                            float *hidden, float *pooled, px_nn_arena *arena, px_pool *pool,
                            px_err *err)
{
    if (batch < 1)
        return px_err_set(err, PX_EINVAL, "text_encoder: batch %d, expected at least 1", batch);
    int rc = PX_OK;
    for (int i = 0; i < batch && rc == PX_OK; i++)
        rc = clip_check(c, ids + (size_t)i * n, n, clip_skip, err);
    if (rc != PX_OK)
        return rc;
    const int64_t d = c->cfg.hidden, f = c->cfg.intermediate, rows = (int64_t)batch * n;
    /* hidden_states[-k] is the output of layer (layers + 1 - k); 0 is the embedding. */
    const int keep = c->cfg.layers + 1 - (clip_skip <= 1 ? 1 : clip_skip);
    const size_t mark = px_nn_arena_mark(arena);
    clip_bufs b;
    b.x = px_nn_arena_floats(arena, (size_t)(rows * d));
    b.h = px_nn_arena_floats(arena, (size_t)(rows * d));
    b.qkv = px_nn_arena_floats(arena, (size_t)(3 * rows * d));
    b.att = px_nn_arena_floats(arena, (size_t)(rows * d));
    b.mlp = px_nn_arena_floats(arena, (size_t)(rows * f));
    if (!b.x || !b.h || !b.qkv || !b.att || !b.mlp) {
        px_nn_arena_release(arena, mark);
        return px_err_set(err, PX_ENOMEM, "text_encoder: out of memory for %d x %d tokens", batch,
                          n);
    }
    clip_embed(c, ids, batch, n, b.x);
    /* Layers past `keep` only matter for the pooled output (always taken from the last layer,
     * as transformers' pooler_output). */
    const int run = pooled ? c->cfg.layers : keep;
    for (int i = 0; i < run && rc == PX_OK; i++) {
        if (i == keep)
            memcpy(hidden, b.x, (size_t)(rows * d) * sizeof(float));
        rc = clip_layer_forward(c, &c->layers[i], batch, n, &b, arena, pool);
    }
    if (rc != PX_OK) {
        px_nn_arena_release(arena, mark);
        return px_err_set(err, rc, "text_encoder: out of memory for %d x %d tokens", batch, n);
    }
    const float *src = keep == run ? b.x : hidden;
    px_nn_layer_norm(src, d, hidden, d, rows, d, c->lnf_g, c->lnf_b, c->cfg.eps, pool);
    for (int i = 0; pooled && i < batch; i++) {
        const int p = clip_pool_index(&c->cfg, ids + (size_t)i * n, n);
        px_nn_layer_norm(b.x + ((int64_t)i * n + p) * d, d, pooled + (int64_t)i * d, d, 1, d,
                         c->lnf_g, c->lnf_b, c->cfg.eps, pool);
    }
    px_nn_arena_release(arena, mark);
    return PX_OK;
}
