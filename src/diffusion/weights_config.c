/*
 * The architecture's configuration: read from a diffusers folder's
 * config.json files, or inferred from tensor shapes when the model is one
 * original-layout file (which carries no config).
 *
 * Defaults are SD 1.5's, so a config.json that omits a field means what
 * diffusers would take it to mean. Two diffusers quirks matter here:
 * SD 1.x UNet configs put the number of heads in "attention_head_dim" (an int
 * or one per level) and leave "num_attention_heads" null; and CLIP configs
 * copied from openai/clip-vit-large-patch14 carry the legacy token ids
 * bos 0 / eos 2, which transformers reads as "the EOS is the highest id".
 *
 * What shapes cannot tell (heads, norm groups, eps, scaling factor) is SD 1.x's
 * fixed value: UNet 8 heads at every level; CLIP heads = hidden / 64 (ViT-L/14:
 * 768 -> 12), and for toy widths below 64 (test models) hidden / 8, which
 * gives the golden tiny model's 4 heads at 32.
 */
#include "weights_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CONFIG_MAX_BYTES (1 << 20)

void sd_config_defaults(px_sd_config *c)
{
    memset(c, 0, sizeof *c);
    c->arch = PX_SD_ARCH_SD1;
    px_sd_unet_config *u = &c->unet;
    u->in_channels = u->out_channels = 4;
    u->levels = 4;
    static const int bo[4] = {320, 640, 1280, 1280};
    for (int i = 0; i < 4; i++) {
        u->block_out[i] = bo[i];
        u->cross_attn[i] = i < 3;
        u->heads[i] = 8;
    }
    u->layers_per_block = 2;
    u->cross_dim = 768;
    u->norm_groups = 32;
    u->norm_eps = 1e-5f;
    u->flip_sin_to_cos = 1;
    c->clip = (px_sd_clip_config){.vocab = 49408,
                                  .hidden = 768,
                                  .layers = 12,
                                  .heads = 12,
                                  .intermediate = 3072,
                                  .max_positions = 77,
                                  .act = PX_NN_QUICK_GELU,
                                  .eps = 1e-5f,
                                  .bos = 49406,
                                  .eos = 49407,
                                  .pad = 49407};
    px_sd_vae_config *v = &c->vae;
    v->levels = 4;
    static const int vo[4] = {128, 256, 512, 512};
    memcpy(v->block_out, vo, sizeof vo);
    v->layers_per_block = 2;
    v->latent_channels = 4;
    v->norm_groups = 32;
    v->scaling_factor = 0.18215f;
    c->train_timesteps = 1000;
    c->beta_start = 0.00085f;
    c->beta_end = 0.012f;
    c->steps_offset = 1;
}

/* Parses dir/rel as a JSON object. PX_ENOTFOUND when absent (callers decide
 * whether that is an error). */
static int load_json(const char *dir, const char *rel, json_t **out, px_err *err)
{
    char path[4096];
    *out = NULL;
    if (snprintf(path, sizeof path, "%s/%s", dir, rel) >= (int)sizeof path)
        return px_err_set(err, PX_EINVAL, "%s: path too long", dir);
    struct stat st;
    if (stat(path, &st) != 0)
        return px_err_set(err, PX_ENOTFOUND, "%s: missing", path);
    uint8_t *data;
    size_t len;
    int rc = px_read_file(path, CONFIG_MAX_BYTES, &data, &len, err);
    if (rc != PX_OK)
        return rc;
    json_error_t jerr;
    json_t *j = json_loadb((const char *)data, len, 0, &jerr);
    free(data);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        return px_err_set(err, PX_ECORRUPT, "%s: not a JSON object (%s, line %d)", path,
                          j ? "wrong type" : jerr.text, j ? 0 : jerr.line);
    }
    *out = j;
    return PX_OK;
}

/* Reads an integer field; absent or null keeps *v; other types are an error. */
static int get_int(const json_t *o, const char *key, int lo, int hi, int *v, const char *file,
                   px_err *err)
{
    const json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j))
        return PX_OK;
    if (!json_is_integer(j) || json_integer_value(j) < lo || json_integer_value(j) > hi)
        return px_err_set(err, PX_EINVAL, "%s: %s must be an integer in [%d, %d]", file, key, lo,
                          hi);
    *v = (int)json_integer_value(j);
    return PX_OK;
}

static int get_float(const json_t *o, const char *key, float *v, const char *file, px_err *err)
{
    const json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j))
        return PX_OK;
    if (!json_is_number(j))
        return px_err_set(err, PX_EINVAL, "%s: %s must be a number", file, key);
    *v = (float)json_number_value(j);
    return PX_OK;
}

static int get_bool(const json_t *o, const char *key, int *v)
{
    const json_t *j = json_object_get(o, key);
    if (json_is_boolean(j))
        *v = json_is_true(j);
    return PX_OK;
}

/* An int list field of 1..PX_SD_MAX_LEVELS entries; *n gets its length. An
 * int instead of a list fills `fill` entries (diffusers broadcasts it). */
static int get_list(const json_t *o, const char *key, int *v, int *n, int fill, const char *file,
                    px_err *err)
{
    const json_t *j = json_object_get(o, key);
    if (!j || json_is_null(j))
        return PX_OK;
    if (json_is_integer(j) && json_integer_value(j) > 0 && json_integer_value(j) < 1 << 20) {
        for (int i = 0; i < fill; i++)
            v[i] = (int)json_integer_value(j);
        return PX_OK;
    }
    size_t len = json_array_size(j);
    if (!json_is_array(j) || len < 1 || len > PX_SD_MAX_LEVELS)
        return px_err_set(err, PX_EUNSUPPORTED, "%s: %s must be a list of 1 to %d integers", file,
                          key, PX_SD_MAX_LEVELS);
    for (size_t i = 0; i < len; i++) {
        const json_t *e = json_array_get(j, i);
        if (!json_is_integer(e) || json_integer_value(e) < 1 || json_integer_value(e) > 1 << 20)
            return px_err_set(err, PX_EINVAL, "%s: %s[%zu] must be a positive integer", file, key,
                              i);
        v[i] = (int)json_integer_value(e);
    }
    if (n)
        *n = (int)len;
    return PX_OK;
}

static int unet_config(px_sd_config *c, const json_t *j, const char *file, px_err *err)
{
    px_sd_unet_config *u = &c->unet;
    const json_t *cd = json_object_get(j, "cross_attention_dim");
    const json_t *add = json_object_get(j, "addition_embed_type");
    if (json_is_string(add) || json_is_array(cd) ||
        (json_is_integer(cd) && json_integer_value(cd) >= 2048))
        c->arch = PX_SD_ARCH_SDXL;
    else if (json_is_integer(cd) && json_integer_value(cd) == 1024)
        c->arch = PX_SD_ARCH_SD2;
    if (c->arch != PX_SD_ARCH_SD1)
        return PX_OK;
    int rc;
    if ((rc = get_int(j, "in_channels", 1, 64, &u->in_channels, file, err)) ||
        (rc = get_int(j, "out_channels", 1, 64, &u->out_channels, file, err)) ||
        (rc = get_list(j, "block_out_channels", u->block_out, &u->levels, 0, file, err)) ||
        (rc = get_int(j, "layers_per_block", 1, 16, &u->layers_per_block, file, err)) ||
        (rc = get_int(j, "cross_attention_dim", 1, 1 << 16, &u->cross_dim, file, err)) ||
        (rc = get_int(j, "norm_num_groups", 1, 1024, &u->norm_groups, file, err)) ||
        (rc = get_float(j, "norm_eps", &u->norm_eps, file, err)) ||
        (rc = get_int(j, "time_cond_proj_dim", 0, 1 << 16, &u->time_cond_proj_dim, file, err)) ||
        (rc = get_int(j, "freq_shift", 0, 1 << 16, &u->freq_shift, file, err)))
        return rc;
    get_bool(j, "use_linear_projection", &u->use_linear_projection);
    get_bool(j, "flip_sin_to_cos", &u->flip_sin_to_cos);
    /* heads: num_attention_heads when set, else attention_head_dim (see top) */
    const char *hk = json_is_null(json_object_get(j, "num_attention_heads")) ||
                             !json_object_get(j, "num_attention_heads")
                         ? "attention_head_dim"
                         : "num_attention_heads";
    if ((rc = get_list(j, hk, u->heads, NULL, u->levels, file, err)))
        return rc;
    const json_t *types = json_object_get(j, "down_block_types");
    if (json_is_array(types)) {
        if ((int)json_array_size(types) != u->levels)
            return px_err_set(err, PX_EINVAL, "%s: %zu down_block_types for %d levels", file,
                              json_array_size(types), u->levels);
        for (int i = 0; i < u->levels; i++) {
            const char *t = json_string_value(json_array_get(types, (size_t)i));
            u->cross_attn[i] = t && strncmp(t, "CrossAttn", 9) == 0;
        }
    }
    return PX_OK;
}

static int vae_config(px_sd_vae_config *v, const json_t *j, const char *file, px_err *err)
{
    int rc;
    if ((rc = get_list(j, "block_out_channels", v->block_out, &v->levels, 0, file, err)) ||
        (rc = get_int(j, "layers_per_block", 1, 16, &v->layers_per_block, file, err)) ||
        (rc = get_int(j, "latent_channels", 1, 64, &v->latent_channels, file, err)) ||
        (rc = get_int(j, "norm_num_groups", 1, 1024, &v->norm_groups, file, err)) ||
        (rc = get_float(j, "scaling_factor", &v->scaling_factor, file, err)))
        return rc;
    return PX_OK;
}

static int clip_config(px_sd_config *c, const json_t *j, const char *file, px_err *err)
{
    px_sd_clip_config *k = &c->clip;
    int rc;
    if ((rc = get_int(j, "vocab_size", 1, 1 << 24, &k->vocab, file, err)) ||
        (rc = get_int(j, "hidden_size", 1, 1 << 16, &k->hidden, file, err)) ||
        (rc = get_int(j, "num_hidden_layers", 1, 256, &k->layers, file, err)) ||
        (rc = get_int(j, "num_attention_heads", 1, 1024, &k->heads, file, err)) ||
        (rc = get_int(j, "intermediate_size", 1, 1 << 20, &k->intermediate, file, err)) ||
        (rc = get_int(j, "max_position_embeddings", 1, 1 << 16, &k->max_positions, file, err)) ||
        (rc = get_float(j, "layer_norm_eps", &k->eps, file, err)) ||
        (rc = get_int(j, "bos_token_id", 0, 1 << 24, &k->bos, file, err)) ||
        (rc = get_int(j, "eos_token_id", 0, 1 << 24, &k->eos, file, err)) ||
        (rc = get_int(j, "pad_token_id", 0, 1 << 24, &k->pad, file, err)))
        return rc;
    if (k->hidden % k->heads)
        return px_err_set(err, PX_EINVAL, "%s: hidden_size %d is not a multiple of %d heads", file,
                          k->hidden, k->heads);
    /* legacy ids (see top): the real ones are the vocabulary's last two */
    if (k->eos == 2 || k->eos >= k->vocab || k->bos >= k->vocab || k->pad >= k->vocab) {
        k->bos = k->vocab - 2;
        k->eos = k->pad = k->vocab - 1;
    }
    const char *act = json_string_value(json_object_get(j, "hidden_act"));
    if (act && strcmp(act, "quick_gelu") == 0)
        k->act = PX_NN_QUICK_GELU;
    else if (act && strcmp(act, "gelu") == 0)
        k->act = PX_NN_GELU;
    else if (act)
        return px_err_set(err, PX_EUNSUPPORTED, "%s: hidden_act \"%s\" (quick_gelu or gelu)", file,
                          act);
    if (k->hidden >= 1024)
        c->arch = PX_SD_ARCH_SD2; /* OpenCLIP ViT-H (SD 2.x) */
    return PX_OK;
}

static int scheduler_config(px_sd_config *c, const json_t *j, const char *file, px_err *err)
{
    int rc;
    if ((rc = get_int(j, "num_train_timesteps", 1, 100000, &c->train_timesteps, file, err)) ||
        (rc = get_float(j, "beta_start", &c->beta_start, file, err)) ||
        (rc = get_float(j, "beta_end", &c->beta_end, file, err)) ||
        (rc = get_int(j, "steps_offset", 0, 1000, &c->steps_offset, file, err)))
        return rc;
    const char *sched = json_string_value(json_object_get(j, "beta_schedule"));
    if (sched && strcmp(sched, "scaled_linear") != 0)
        return px_err_set(err, PX_EUNSUPPORTED, "%s: beta_schedule \"%s\" (only scaled_linear)",
                          file, sched);
    const char *pred = json_string_value(json_object_get(j, "prediction_type"));
    c->prediction_v = pred && strcmp(pred, "v_prediction") == 0;
    if (pred && !c->prediction_v && strcmp(pred, "epsilon") != 0)
        return px_err_set(err, PX_EUNSUPPORTED, "%s: prediction_type \"%s\"", file, pred);
    return PX_OK;
}

/* model_index.json names the pipeline class: the quickest way to tell an SDXL,
 * SD3 or Flux folder from an SD 1.x one. */
static int pipeline_arch(const json_t *j)
{
    const char *cls = json_string_value(json_object_get(j, "_class_name"));
    if (!cls)
        return PX_SD_ARCH_SD1;
    if (strstr(cls, "XL"))
        return PX_SD_ARCH_SDXL;
    if (strstr(cls, "StableDiffusion3"))
        return PX_SD_ARCH_SD3;
    if (strstr(cls, "Flux"))
        return PX_SD_ARCH_FLUX;
    return PX_SD_ARCH_SD1;
}

static const char *arch_words(int arch)
{
    switch (arch) {
    case PX_SD_ARCH_SD2:
        return "a Stable Diffusion 2.x";
    case PX_SD_ARCH_SDXL:
        return "an SDXL";
    case PX_SD_ARCH_SD3:
        return "a Stable Diffusion 3";
    default:
        return "a Flux";
    }
}

typedef int (*config_fn)(px_sd_config *c, const json_t *j, const char *file, px_err *err);

static int vae_fn(px_sd_config *c, const json_t *j, const char *file, px_err *err)
{
    return vae_config(&c->vae, j, file, err);
}

/* One config file of the folder: required ones must exist. */
static int read_one(px_sd_config *c, const char *dir, const char *rel, int required, config_fn fn,
                    px_err *err)
{
    json_t *j;
    int rc = load_json(dir, rel, &j, err);
    if (rc == PX_ENOTFOUND && !required)
        return PX_OK;
    if (rc != PX_OK)
        return rc;
    char file[4200];
    snprintf(file, sizeof file, "%s/%s", dir, rel);
    rc = fn(c, j, file, err);
    json_decref(j);
    return rc;
}

int sd_folder_config(px_sd_weights *w, const char *dir, px_err *err)
{
    px_sd_config *c = &w->cfg;
    json_t *idx;
    int rc = load_json(dir, "model_index.json", &idx, err);
    if (rc != PX_OK && rc != PX_ENOTFOUND)
        return rc;
    if (idx) {
        c->arch = (px_sd_arch)pipeline_arch(idx);
        json_decref(idx);
    }
    if (c->arch == PX_SD_ARCH_SD1 &&
        (rc = read_one(c, dir, "unet/config.json", 1, unet_config, err)) != PX_OK) {
        if (rc == PX_ENOTFOUND)
            return px_err_set(err, PX_ENOTFOUND,
                              "%s: not a diffusers Stable Diffusion folder (no unet/config.json)",
                              dir);
        return rc;
    }
    if (c->arch == PX_SD_ARCH_SD1 &&
        ((rc = read_one(c, dir, "vae/config.json", 1, vae_fn, err)) != PX_OK ||
         (rc = read_one(c, dir, "text_encoder/config.json", 1, clip_config, err)) != PX_OK ||
         (rc = read_one(c, dir, "scheduler/scheduler_config.json", 0, scheduler_config, err)) !=
             PX_OK))
        return rc;
    if (c->arch != PX_SD_ARCH_SD1)
        return px_err_set(err, PX_EUNSUPPORTED,
                          "%s: this is %s model; only Stable Diffusion 1.x is supported", dir,
                          arch_words(c->arch));
    return PX_OK;
}

static int taesd_fn(px_sd_config *c, const json_t *j, const char *file, px_err *err)
{
    px_sd_taesd_config *t = &c->taesd;
    int ch[PX_SD_MAX_LEVELS] = {64, 64, 64, 64}, n = 4, rc;
    t->latent_channels = 4;
    t->latent_magnitude = 3.0f;
    t->latent_shift = 0.5f;
    for (int i = 0; i < PX_SD_MAX_LEVELS; i++)
        t->blocks[i] = 3;
    int nb = 4;
    if ((rc = get_int(j, "latent_channels", 1, 64, &t->latent_channels, file, err)) ||
        (rc = get_list(j, "decoder_block_out_channels", ch, &n, 4, file, err)) ||
        (rc = get_list(j, "num_decoder_blocks", t->blocks, &nb, 4, file, err)) ||
        (rc = get_float(j, "latent_magnitude", &t->latent_magnitude, file, err)) ||
        (rc = get_float(j, "latent_shift", &t->latent_shift, file, err)))
        return rc;
    for (int i = 1; i < n; i++)
        if (ch[i] != ch[0])
            return px_err_set(err, PX_EUNSUPPORTED,
                              "%s: decoder_block_out_channels differ between levels", file);
    if (n != 4 || nb != 4)
        return px_err_set(err, PX_EUNSUPPORTED, "%s: TAESD needs 4 decoder levels", file);
    t->channels = ch[0];
    t->present = 1;
    return PX_OK;
}

int sd_taesd_config(px_sd_weights *w, const char *dir, px_err *err)
{
    /* without config.json the shapes tell (sd_infer_taesd) */
    return read_one(&w->cfg, dir, "config.json", 0, taesd_fn, err);
}
