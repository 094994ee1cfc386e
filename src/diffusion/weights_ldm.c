/*
 * Original-layout ("ldm") single-file checkpoints, the format A1111 and most
 * model sites share: one .safetensors with the UNet under
 * model.diffusion_model.*, the VAE under first_stage_model.* and CLIP under
 * cond_stage_model.transformer.*. This file recognises the model family from
 * the keys, renames every tensor onto the diffusers name the network code
 * asks for, and infers the configuration from tensor shapes.
 *
 * The renaming is the layout correspondence that diffusers' single-file
 * conversion encodes. UNet: input_blocks is one flat list (conv_in, then per
 * level layers_per_block (resnet, attention?) pairs and a downsampler "op"),
 * output_blocks the mirror (resnet, attention?, upsampler "conv"), so the
 * level and slot come from the block index once levels and layers per block
 * are known (counted from the keys first). Inside a resnet only the layer
 * names differ (in_layers.0 -> norm1 ...); inside a spatial transformer the
 * names already agree. VAE: down.i / up.i with up counted from the bottom
 * (diffusers counts from the top), nin_shortcut -> conv_shortcut, and the
 * mid-block attention's q/k/v/proj_out/norm -> to_q/to_k/to_v/to_out.0/
 * group_norm. Its q/k/v weights are stored (C,C,1,1) here and (C,C) in
 * diffusers: the bytes are the same, and px_sd_w_mat ignores trailing 1s.
 * CLIP keeps transformers' names after the prefix.
 */
#include "weights_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define UNET_PFX "model.diffusion_model."
#define VAE_PFX "first_stage_model."
#define CLIP_PFX "cond_stage_model.transformer."

static int starts(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static int ends(const char *s, const char *p)
{
    size_t a = strlen(s), b = strlen(p);
    return a >= b && strcmp(s + a - b, p) == 0;
}

/* Parses "<digits>." at s: *v gets the number (bounded), returns what follows. */
static const char *eat_int(const char *s, int *v)
{
    int n = 0, d = 0;
    while (*s >= '0' && *s <= '9' && d < 6) {
        n = 10 * n + (*s++ - '0');
        d++;
    }
    if (!d || *s != '.')
        return NULL;
    *v = n;
    return s + 1;
}

/* snprintf that reports truncation as failure. */
static int put(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int put(char *out, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, len, fmt, ap);
    va_end(ap);
    return n > 0 && (size_t)n < len;
}

/* Rewrites the first matching prefix of s from table (pairs: from, to). */
static const char *rename_prefix(const char *s, const char *const *table, size_t n,
                                 const char **rest)
{
    for (size_t i = 0; i < n; i += 2)
        if (starts(s, table[i])) {
            *rest = s + strlen(table[i]);
            return table[i + 1];
        }
    return NULL;
}

static const char *const unet_resnet[] = {
    "in_layers.0.",  "norm1.", "in_layers.2.",  "conv1.", "emb_layers.1.",    "time_emb_proj.",
    "out_layers.0.", "norm2.", "out_layers.3.", "conv2.", "skip_connection.", "conv_shortcut.",
};

/* A UNet resnet (ResBlock) inside a diffusers block at `at`. */
static int unet_res(const char *at, const char *rest, char *out, size_t len)
{
    const char *tail;
    const char *to = rename_prefix(rest, unet_resnet, 12, &tail);
    return to && put(out, len, "%s%s%s", at, to, tail);
}

/* A spatial transformer: names agree, only checked to be one. */
static int unet_attn(const char *at, const char *rest, char *out, size_t len)
{
    if (!starts(rest, "norm.") && !starts(rest, "proj_in.") && !starts(rest, "proj_out.") &&
        !starts(rest, "transformer_blocks."))
        return 0;
    return put(out, len, "%s%s", at, rest);
}

static int unet_input(const char *s, int n_layers, char *out, size_t len)
{
    int i, m;
    const char *r = eat_int(s, &i);
    if (!r || !(r = eat_int(r, &m)))
        return 0;
    if (i == 0)
        return m == 0 && put(out, len, "conv_in.%s", r);
    int level = (i - 1) / (n_layers + 1), j = (i - 1) % (n_layers + 1);
    char at[64];
    if (j == n_layers)
        return m == 0 && starts(r, "op.") &&
               put(out, len, "down_blocks.%d.downsamplers.0.conv.%s", level, r + 3);
    if (m == 0) {
        snprintf(at, sizeof at, "down_blocks.%d.resnets.%d.", level, j);
        return unet_res(at, r, out, len);
    }
    snprintf(at, sizeof at, "down_blocks.%d.attentions.%d.", level, j);
    return m == 1 && unet_attn(at, r, out, len);
}

static int unet_output(const char *s, int n_layers, char *out, size_t len)
{
    int i, m;
    const char *r = eat_int(s, &i);
    if (!r || !(r = eat_int(r, &m)))
        return 0;
    int level = i / (n_layers + 1), j = i % (n_layers + 1);
    char at[64];
    if (m == 0) {
        snprintf(at, sizeof at, "up_blocks.%d.resnets.%d.", level, j);
        return unet_res(at, r, out, len);
    }
    if (starts(r, "conv.")) /* the upsampler: after the resnet, or after the attention */
        return j == n_layers && put(out, len, "up_blocks.%d.upsamplers.0.conv.%s", level, r + 5);
    snprintf(at, sizeof at, "up_blocks.%d.attentions.%d.", level, j);
    return m == 1 && unet_attn(at, r, out, len);
}

/* s: a UNet key after UNET_PFX. */
static int unet_name(const char *s, int n_layers, char *out, size_t len)
{
    int m;
    const char *r;
    if (starts(s, "input_blocks."))
        return unet_input(s + 13, n_layers, out, len);
    if (starts(s, "output_blocks."))
        return unet_output(s + 14, n_layers, out, len);
    if (starts(s, "middle_block.") && (r = eat_int(s + 13, &m))) {
        if (m == 1)
            return unet_attn("mid_block.attentions.0.", r, out, len);
        return (m == 0 || m == 2) &&
               unet_res(m ? "mid_block.resnets.1." : "mid_block.resnets.0.", r, out, len);
    }
    static const char *const top[] = {"time_embed.0.", "time_embedding.linear_1.", "time_embed.2.",
                                      "time_embedding.linear_2.", "out.0.", "conv_norm_out.",
                                      "out.2.", "conv_out.",
                                      /* LCM's guidance embedding, as converters name it */
                                      "time_embedding.cond_proj.", "time_embedding.cond_proj."};
    const char *tail, *to = rename_prefix(s, top, sizeof top / sizeof top[0], &tail);
    return to && put(out, len, "%s%s", to, tail);
}

static const char *const vae_resnet[] = {"norm1.",        "norm1.",        "conv1.", "conv1.",
                                         "norm2.",        "norm2.",        "conv2.", "conv2.",
                                         "nin_shortcut.", "conv_shortcut."};
static const char *const vae_attn[] = {"norm.", "group_norm.", "q.",    "to_q.",     "k.",
                                       "to_k.", "v.",          "to_v.", "proj_out.", "to_out.0."};

static int vae_sub(const char *at, const char *rest, const char *const *table, size_t n, char *out,
                   size_t len)
{
    const char *tail, *to = rename_prefix(rest, table, n, &tail);
    return to && put(out, len, "%s%s%s", at, to, tail);
}

/* s: "down.L.block.J.x" / "down.L.downsample.conv.x" (or up/upsample). */
static int vae_level(const char *side, const char *s, int up, int levels, char *out, size_t len)
{
    int l, j;
    const char *r = eat_int(s, &l);
    if (!r || l >= levels)
        return 0;
    int dl = up ? levels - 1 - l : l; /* ldm counts up blocks from the bottom */
    const char *kind = up ? "up" : "down";
    char at[96];
    if (starts(r, "block.") && (r = eat_int(r + 6, &j))) {
        snprintf(at, sizeof at, "%s.%s_blocks.%d.resnets.%d.", side, kind, dl, j);
        return vae_sub(at, r, vae_resnet, 10, out, len);
    }
    const char *sampler = up ? "upsample.conv." : "downsample.conv.";
    return starts(r, sampler) && put(out, len, "%s.%s_blocks.%d.%ssamplers.0.conv.%s", side, kind,
                                     dl, kind, r + strlen(sampler));
}

/* s: a VAE key after VAE_PFX. */
static int vae_name(const char *s, int levels, char *out, size_t len)
{
    if (starts(s, "quant_conv.") || starts(s, "post_quant_conv."))
        return put(out, len, "%s", s);
    const char *side = starts(s, "encoder.") ? "encoder" : starts(s, "decoder.") ? "decoder" : NULL;
    if (!side)
        return 0;
    const char *r = s + 8;
    if (starts(r, "conv_in.") || starts(r, "conv_out."))
        return put(out, len, "%s", s);
    if (starts(r, "norm_out."))
        return put(out, len, "%s.conv_norm_out.%s", side, r + 9);
    if (starts(r, "mid.block_1."))
        return vae_sub(side[0] == 'e' ? "encoder.mid_block.resnets.0."
                                      : "decoder.mid_block.resnets.0.",
                       r + 12, vae_resnet, 10, out, len);
    if (starts(r, "mid.block_2."))
        return vae_sub(side[0] == 'e' ? "encoder.mid_block.resnets.1."
                                      : "decoder.mid_block.resnets.1.",
                       r + 12, vae_resnet, 10, out, len);
    if (starts(r, "mid.attn_1."))
        return vae_sub(side[0] == 'e' ? "encoder.mid_block.attentions.0."
                                      : "decoder.mid_block.attentions.0.",
                       r + 11, vae_attn, 10, out, len);
    if (side[0] == 'e' && starts(r, "down."))
        return vae_level(side, r + 5, 0, levels, out, len);
    if (side[0] == 'd' && starts(r, "up."))
        return vae_level(side, r + 3, 1, levels, out, len);
    return 0;
}

/* Keys of original checkpoints that nothing reads: EMA copies, the DDPM
 * schedule buffers (we compute the schedule), the VAE's training loss. */
static int ldm_ignored(const char *k)
{
    static const char *const buffers[] = {
        "betas",
        "alphas_cumprod",
        "alphas_cumprod_prev",
        "sqrt_alphas_cumprod",
        "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod",
        "sqrt_recip_alphas_cumprod",
        "sqrt_recipm1_alphas_cumprod",
        "posterior_variance",
        "posterior_log_variance_clipped",
        "posterior_mean_coef1",
        "posterior_mean_coef2",
        "logvar",
        "lvlb_weights",
    };
    if (starts(k, "model_ema.") || starts(k, VAE_PFX "loss."))
        return 1;
    for (size_t i = 0; i < sizeof buffers / sizeof buffers[0]; i++)
        if (strcmp(k, buffers[i]) == 0)
            return 1;
    return 0;
}

int sd_ldm_detect(const px_st_file *f)
{
    int unet = 0, sd2 = 0;
    for (size_t i = 0; i < px_st_count(f); i++) {
        const px_st_tensor *t = px_st_at(f, i);
        const char *k = t->name;
        if (starts(k, "conditioner.embedders."))
            return PX_SD_ARCH_SDXL;
        if (strstr(k, "joint_blocks."))
            return PX_SD_ARCH_SD3;
        if (strstr(k, "double_blocks."))
            return PX_SD_ARCH_FLUX;
        if (starts(k, "cond_stage_model.model."))
            sd2 = 1; /* OpenCLIP ViT-H */
        if (starts(k, UNET_PFX)) {
            unet = 1;
            /* 1024-d cross-attention context: SD 2.x even without its text encoder */
            if (ends(k, "attn2.to_k.weight") && t->ndim == 2 && t->shape[1] == 1024)
                sd2 = 1;
        }
    }
    if (sd2)
        return PX_SD_ARCH_SD2;
    return unet ? PX_SD_ARCH_SD1 : 0;
}

/* Levels and layers per block of the UNet, and the VAE's levels, from the
 * keys alone (needed before any name can be mapped). */
static int ldm_layout(const px_st_file *f, int *unet_levels, int *n_layers, int *vae_levels,
                      const char *label, px_err *err)
{
    int max_in = -1, downs = 0, max_vae = -1, v;
    for (size_t i = 0; i < px_st_count(f); i++) {
        const char *k = px_st_at(f, i)->name;
        const char *r;
        if (starts(k, UNET_PFX "input_blocks.") && (r = eat_int(k + 35, &v))) {
            if (v > max_in)
                max_in = v;
            if (starts(r, "0.op.weight"))
                downs++;
        } else if (starts(k, VAE_PFX "encoder.down.") && eat_int(k + 31, &v) && v > max_vae) {
            max_vae = v;
        }
    }
    *unet_levels = downs + 1;
    *n_layers = (max_in + 1) / *unet_levels - 1;
    *vae_levels = max_vae + 1;
    if (*unet_levels > PX_SD_MAX_LEVELS || *n_layers < 1 || (max_in + 1) % *unet_levels != 0)
        return px_err_set(err, PX_EUNSUPPORTED,
                          "%s: UNet input_blocks 0..%d with %d downsamplers is not an SD 1.x "
                          "layout",
                          label, max_in, downs);
    if (*vae_levels > PX_SD_MAX_LEVELS)
        return px_err_set(err, PX_EUNSUPPORTED, "%s: VAE with %d levels (at most %d)", label,
                          *vae_levels, PX_SD_MAX_LEVELS);
    return PX_OK;
}

int sd_ldm_load(px_sd_weights *w, const px_st_file *f, const char *label, px_err *err)
{
    int levels, n_layers, vae_levels;
    int rc = ldm_layout(f, &levels, &n_layers, &vae_levels, label, err);
    if (rc != PX_OK)
        return rc;
    size_t counts[PX_SD_NPARTS] = {0};
    for (size_t i = 0; i < px_st_count(f); i++) {
        const px_st_tensor *t = px_st_at(f, i);
        const char *k = t->name;
        char name[512];
        px_sd_part part;
        int ok;
        if (starts(k, UNET_PFX)) {
            part = PX_SD_UNET;
            ok = unet_name(k + strlen(UNET_PFX), n_layers, name, sizeof name);
        } else if (starts(k, VAE_PFX) && !ldm_ignored(k)) {
            part = PX_SD_VAE;
            ok = vae_name(k + strlen(VAE_PFX), vae_levels, name, sizeof name);
        } else if (starts(k, CLIP_PFX)) {
            part = PX_SD_CLIP;
            /* very old files lack the text_model level transformers added in 4.x */
            const char *r = k + strlen(CLIP_PFX);
            ok = put(name, sizeof name, "%s%s", starts(r, "text_model.") ? "" : "text_model.", r);
        } else {
            continue; /* EMA copies, schedule buffers, anything not part of the model */
        }
        if (!ok)
            return px_err_set(err, PX_EUNSUPPORTED,
                              "%s: %s: cannot map tensor %s onto the diffusers layout", label,
                              px_sd_part_name(part), k);
        if (sd_w_add(w, part, name, t) != PX_OK)
            return px_err_set(err, PX_ENOMEM, "%s: out of memory", label);
        counts[part]++;
    }
    for (int p = 0; p < PX_SD_TAESD; p++)
        if (!counts[p])
            return px_err_set(err, PX_EUNSUPPORTED, "%s: no %s tensors (%s*): a partial checkpoint",
                              label, px_sd_part_name((px_sd_part)p),
                              p == PX_SD_UNET  ? UNET_PFX
                              : p == PX_SD_VAE ? VAE_PFX
                                               : CLIP_PFX);
    return PX_OK;
}

/* ---- configuration from shapes ------------------------------------------ */

/* Tensor `fmt` (printf-formatted) of part, or NULL. */
static const px_st_tensor *getf(const px_sd_weights *w, px_sd_part part, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static const px_st_tensor *getf(const px_sd_weights *w, px_sd_part part, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof name)
        return NULL;
    return sd_w_get(w, part, name);
}

/* A tensor the inference cannot do without, with rank at least ndim. */
static int need(const px_st_tensor *t, int ndim, px_sd_part part, const char *name,
                const char *label, px_err *err)
{
    if (!t)
        return px_err_set(err, PX_ECORRUPT, "%s: %s: missing tensor %s", label,
                          px_sd_part_name(part), name);
    if (t->ndim < ndim || t->shape[0] < 1 || t->shape[0] > INT32_MAX ||
        (ndim > 1 && (t->shape[1] < 1 || t->shape[1] > INT32_MAX)))
        return px_err_set(err, PX_ECORRUPT, "%s: %s: tensor %s has an unexpected shape", label,
                          px_sd_part_name(part), name);
    return PX_OK;
}

int sd_infer_unet(const px_sd_weights *w, px_sd_unet_config *c, const char *label, px_err *err)
{
    const px_sd_part U = PX_SD_UNET;
    const px_st_tensor *in = sd_w_get(w, U, "conv_in.weight");
    const px_st_tensor *out = sd_w_get(w, U, "conv_out.weight");
    int rc;
    if ((rc = need(in, 2, U, "conv_in.weight", label, err)) ||
        (rc = need(out, 2, U, "conv_out.weight", label, err)))
        return rc;
    c->in_channels = (int)in->shape[1];
    c->out_channels = (int)out->shape[0];
    c->levels = 0;
    const px_st_tensor *t;
    while (c->levels < PX_SD_MAX_LEVELS &&
           (t = getf(w, U, "down_blocks.%d.resnets.0.conv1.weight", c->levels))) {
        if ((rc = need(t, 2, U, "down_blocks.N.resnets.0.conv1.weight", label, err)))
            return rc;
        c->block_out[c->levels] = (int)t->shape[0];
        c->cross_attn[c->levels] =
            getf(w, U, "down_blocks.%d.attentions.0.proj_in.weight", c->levels) != NULL;
        c->heads[c->levels] = 8; /* SD 1.x; not recorded in the file (see weights_config.c) */
        c->levels++;
    }
    if (c->levels == 0)
        return need(NULL, 2, U, "down_blocks.0.resnets.0.conv1.weight", label, err);
    c->layers_per_block = 0;
    while (getf(w, U, "down_blocks.0.resnets.%d.conv1.weight", c->layers_per_block))
        c->layers_per_block++;
    const px_st_tensor *k = sd_w_get(w, U,
                                     "mid_block.attentions.0.transformer_blocks.0.attn2."
                                     "to_k.weight");
    if ((rc = need(k, 2, U, "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight", label,
                   err)))
        return rc;
    c->cross_dim = (int)k->shape[1];
    const px_st_tensor *pin = sd_w_get(w, U, "mid_block.attentions.0.proj_in.weight");
    c->use_linear_projection = pin && pin->ndim == 2;
    const px_st_tensor *cp = sd_w_get(w, U, "time_embedding.cond_proj.weight");
    c->time_cond_proj_dim = cp && cp->ndim == 2 ? (int)cp->shape[1] : 0;
    c->norm_groups = 32;
    c->norm_eps = 1e-5f;
    c->flip_sin_to_cos = 1;
    c->freq_shift = 0;
    return PX_OK;
}

int sd_infer_vae(const px_sd_weights *w, px_sd_vae_config *c, const char *label, px_err *err)
{
    const px_sd_part V = PX_SD_VAE;
    const px_st_tensor *t;
    int rc;
    c->levels = 0;
    while (c->levels < PX_SD_MAX_LEVELS &&
           (t = getf(w, V, "encoder.down_blocks.%d.resnets.0.conv1.weight", c->levels))) {
        if ((rc = need(t, 2, V, "encoder.down_blocks.N.resnets.0.conv1.weight", label, err)))
            return rc;
        c->block_out[c->levels++] = (int)t->shape[0];
    }
    if (c->levels == 0)
        return need(NULL, 2, V, "encoder.down_blocks.0.resnets.0.conv1.weight", label, err);
    c->layers_per_block = 0;
    while (getf(w, V, "encoder.down_blocks.0.resnets.%d.conv1.weight", c->layers_per_block))
        c->layers_per_block++;
    const px_st_tensor *pq = sd_w_get(w, V, "post_quant_conv.weight");
    if ((rc = need(pq, 2, V, "post_quant_conv.weight", label, err)))
        return rc;
    c->latent_channels = (int)pq->shape[0];
    c->norm_groups = 32;
    c->scaling_factor = 0.18215f; /* SD 1.x's; a file does not record it */
    return PX_OK;
}

int sd_infer_clip(const px_sd_weights *w, px_sd_clip_config *c, const char *label, px_err *err)
{
    const px_sd_part C = PX_SD_CLIP;
    const px_st_tensor *tok = sd_w_get(w, C, "text_model.embeddings.token_embedding.weight");
    const px_st_tensor *pos = sd_w_get(w, C, "text_model.embeddings.position_embedding.weight");
    const px_st_tensor *fc1 = sd_w_get(w, C, "text_model.encoder.layers.0.mlp.fc1.weight");
    int rc;
    if ((rc = need(tok, 2, C, "text_model.embeddings.token_embedding.weight", label, err)) ||
        (rc = need(pos, 2, C, "text_model.embeddings.position_embedding.weight", label, err)) ||
        (rc = need(fc1, 2, C, "text_model.encoder.layers.0.mlp.fc1.weight", label, err)))
        return rc;
    c->vocab = (int)tok->shape[0];
    c->hidden = (int)tok->shape[1];
    c->max_positions = (int)pos->shape[0];
    c->intermediate = (int)fc1->shape[0];
    c->layers = 0;
    while (c->layers < 1000 && getf(w, C, "text_model.encoder.layers.%d.mlp.fc1.weight", c->layers))
        c->layers++;
    /* heads: not in the file; ViT-L/14 has 64-wide heads, toy test models 8-wide */
    c->heads = c->hidden >= 64 ? c->hidden / 64 : c->hidden / 8;
    if (c->heads < 1 || c->hidden % c->heads)
        return px_err_set(err, PX_EUNSUPPORTED, "%s: text encoder width %d: cannot tell its heads",
                          label, c->hidden);
    c->act = PX_NN_QUICK_GELU;
    c->eps = 1e-5f;
    c->bos = c->vocab - 2; /* CLIP's <|startoftext|>, <|endoftext|> close the vocabulary */
    c->eos = c->pad = c->vocab - 1;
    return PX_OK;
}

int sd_infer_taesd(const px_sd_weights *w, px_sd_taesd_config *c, const char *label, px_err *err)
{
    /* diffusers' DecoderTiny: conv, relu, then per level its blocks
     * (conv.0/2/4), an upsample (no weights) and a bias-free conv; a last conv */
    const px_sd_part T = PX_SD_TAESD;
    const px_st_tensor *first = sd_w_get(w, T, "decoder.layers.0.weight");
    int rc = need(first, 2, T, "decoder.layers.0.weight", label, err);
    if (rc != PX_OK)
        return rc;
    c->latent_channels = (int)first->shape[1];
    c->channels = (int)first->shape[0];
    int idx = 2;
    for (int l = 0; l < PX_SD_MAX_LEVELS; l++) {
        c->blocks[l] = 0;
        while (c->blocks[l] < 64 && getf(w, T, "decoder.layers.%d.conv.0.weight", idx)) {
            c->blocks[l]++;
            idx++;
        }
        if (l < PX_SD_MAX_LEVELS - 1)
            idx += 2;
        if (!c->blocks[l] || !getf(w, T, "decoder.layers.%d.weight", idx - (l < 3 ? 1 : 0)))
            return px_err_set(err, PX_EUNSUPPORTED,
                              "%s: taesd: decoder level %d does not have TAESD's layout", label, l);
    }
    c->latent_magnitude = 3.0f;
    c->latent_shift = 0.5f;
    c->present = 1;
    return PX_OK;
}
