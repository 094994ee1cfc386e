/*
 * Internal contracts between the parts of pixpipe's Stable Diffusion engine
 * (src/diffusion). Not installed; the public API is px_sd.h.
 *
 * Data flow of one render:
 *   prompt --tokenizer--> ids --clip--> context (tokens, dim)
 *   rng --> initial noise --sampler loop { unet(latent, t, context) -> eps } --> latent
 *   latent --vae (or taesd)--> image
 * Each part owns one section below: the file that implements it is named in
 * the section title. All numeric work goes through src/nn's px_nn_ops.h
 * kernels (GEMM, conv, attention, norms) with an explicit px_pool and
 * px_nn_arena; weights are read through px_sd_weights and stay in the model
 * file's precision (mapped, not copied) apart from 1-D parameters.
 *
 * Names of tensors are always the diffusers names inside a part
 * ("down_blocks.0.resnets.0.conv1.weight" in the UNet, "text_model.encoder.
 * layers.0.mlp.fc1.weight" in the text encoder, "decoder.conv_in.weight" in
 * the VAE); the weights module maps a single-file (original layout)
 * checkpoint onto them, so the network code never sees the layout.
 */
#ifndef PX_SD_INTERNAL_H
#define PX_SD_INTERNAL_H

#include "core/px_core.h"
#include "nn/px_nn_ops.h"

/* ======================================================================
 * safetensors.c — the safetensors container (read-only, mmap).
 * Format: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F16", "shape": [..], "data_offsets": [b, e]}, ...,
 *  "__metadata__": {str: str}}, then the data area; offsets are relative to
 * the data area. Every offset, size and shape product is checked against the
 * file; nothing is ever read outside it.
 * ====================================================================== */
typedef enum px_st_dtype {
    PX_ST_F32,
    PX_ST_F16,
    PX_ST_BF16,
    PX_ST_F64,
    PX_ST_I64,
    PX_ST_I32,
    PX_ST_I16,
    PX_ST_I8,
    PX_ST_U8,
    PX_ST_BOOL,
    PX_ST_OTHER /* a dtype string we do not know (F8_E4M3, ...): kept, never computed with */
} px_st_dtype;

#define PX_ST_MAX_DIMS 8
typedef struct px_st_tensor {
    const char *name;     /* NUL-terminated, owned by the file handle */
    px_st_dtype dtype;
    const char *dtype_name; /* as written in the header ("F16") */
    int ndim;
    int64_t shape[PX_ST_MAX_DIMS];
    const void *data; /* into the mapping (or the caller's buffer) */
    size_t nbytes;
} px_st_tensor;

typedef struct px_st_file px_st_file;
/* Maps and validates a .safetensors file. PX_ENOTFOUND/PX_EIO for the OS,
 * PX_ECORRUPT (truncated, header lies about sizes/offsets, overlapping or
 * out-of-file data, bad JSON) with err naming the file and the first bad
 * tensor. Caller closes. */
int px_st_open(const char *path, px_st_file **out, px_err *err);
/* Same over a caller's buffer, which must outlive the handle (fuzzer). */
int px_st_parse(const uint8_t *buf, size_t len, px_st_file **out, px_err *err);
void px_st_close(px_st_file *f); /* NULL is a no-op; unmaps */
size_t px_st_count(const px_st_file *f);
const px_st_tensor *px_st_at(const px_st_file *f, size_t i); /* i < count */
const px_st_tensor *px_st_find(const px_st_file *f, const char *name); /* NULL if absent */
/* Value of a "__metadata__" key, or NULL. */
const char *px_st_metadata(const px_st_file *f, const char *key);
/* px_nn dtype of a tensor we compute with; -1 for any other dtype. */
int px_st_nn_dtype(px_st_dtype t);

/* ======================================================================
 * weights.c — a model on disk, whatever its layout, as named tensors per
 * part, plus the architecture's configuration.
 * Accepts a diffusers folder (model_index.json, unet/ vae/ text_encoder/
 * with config.json and *.safetensors) or one original-layout .safetensors
 * file (model.diffusion_model.*, first_stage_model.*,
 * cond_stage_model.transformer.text_model.*; the config is inferred from
 * tensor shapes). Refuses pickles (.ckpt .pt .bin .pth) saying they can run
 * code, and recognises SD 2.x / SDXL / SD3 / Flux files to refuse them by
 * name. An optional TAESD file (AutoencoderTiny safetensors or folder) is
 * the TAESD part.
 * ====================================================================== */
typedef enum px_sd_part {
    PX_SD_UNET = 0,
    PX_SD_VAE,
    PX_SD_CLIP,
    PX_SD_TAESD,
    PX_SD_NPARTS
} px_sd_part;
const char *px_sd_part_name(px_sd_part p); /* "unet", "vae", "text_encoder", "taesd" */

typedef enum px_sd_arch {
    PX_SD_ARCH_SD1 = 1, /* SD 1.x and fine-tunes (CLIP ViT-L/14, 768-d context) */
    PX_SD_ARCH_SD2,     /* recognised, refused today */
    PX_SD_ARCH_SDXL,    /* recognised, refused */
    PX_SD_ARCH_SD3,     /* recognised, refused */
    PX_SD_ARCH_FLUX     /* recognised, refused */
} px_sd_arch;

#define PX_SD_MAX_LEVELS 4
typedef struct px_sd_unet_config {
    int in_channels, out_channels;      /* 4, 4 */
    int levels;                         /* len(block_out_channels) */
    int block_out[PX_SD_MAX_LEVELS];    /* 320 640 1280 1280 */
    int cross_attn[PX_SD_MAX_LEVELS];   /* 1 when down block i is CrossAttnDownBlock2D (the up
                                           block levels-1-i mirrors it) */
    int layers_per_block;               /* 2 */
    int heads[PX_SD_MAX_LEVELS];        /* attention heads per level (SD1: 8 everywhere) */
    int cross_dim;                      /* 768 */
    int norm_groups;                    /* 32 */
    float norm_eps;                     /* 1e-5 */
    int use_linear_projection;          /* 0 for SD1 (proj_in/out are 1x1 convs) */
    int time_cond_proj_dim;             /* 0, or 256 for LCM-distilled UNets */
    int flip_sin_to_cos, freq_shift;    /* 1, 0 */
} px_sd_unet_config;

typedef struct px_sd_clip_config {
    int vocab, hidden, layers, heads, intermediate, max_positions; /* 49408 768 12 12 3072 77 */
    px_nn_act act;                                                 /* quick_gelu for SD1 */
    float eps;
    int bos, eos, pad; /* token ids from the config (49406, 49407, 49407) */
} px_sd_clip_config;

typedef struct px_sd_vae_config {
    int levels;
    int block_out[PX_SD_MAX_LEVELS]; /* 128 256 512 512 */
    int layers_per_block;            /* 2 (decoder up blocks have layers_per_block + 1) */
    int latent_channels;             /* 4 */
    int norm_groups;
    float scaling_factor; /* 0.18215 */
} px_sd_vae_config;

typedef struct px_sd_taesd_config {
    int present;
    int latent_channels;
    int channels;   /* decoder_block_out_channels (all equal in TAESD: 64; golden: 16) */
    int blocks[PX_SD_MAX_LEVELS]; /* num_decoder_blocks */
    float latent_magnitude, latent_shift;
} px_sd_taesd_config;

typedef struct px_sd_config {
    px_sd_arch arch;
    int single_file; /* 1: original-layout file; 0: diffusers folder */
    px_sd_unet_config unet;
    px_sd_clip_config clip;
    px_sd_vae_config vae;
    px_sd_taesd_config taesd;
    /* scheduler/config.json when the folder has one, else SD1 defaults */
    int train_timesteps;          /* 1000 */
    float beta_start, beta_end;   /* 0.00085 0.012, scaled_linear */
    int steps_offset;             /* 1 */
    int prediction_v;             /* 0: epsilon (SD1); 1: v-prediction (SD 2.x 768) */
} px_sd_config;

typedef struct px_sd_weights px_sd_weights;
/* Opens a model (folder or file; taesd_path may be NULL). Refusals and
 * errors as described above, one line in err naming the file.
 * A handle is not thread-safe: px_sd_w_mat/_f32 record use and convert once,
 * so parts fetch their weights while being created, one at a time; what they
 * get back stays valid and read-only until px_sd_weights_close. */
int px_sd_weights_open(const char *path, const char *taesd_path, px_sd_weights **out, px_err *err);
void px_sd_weights_close(px_sd_weights *w); /* NULL is a no-op; unmaps everything */
const px_sd_config *px_sd_weights_config(const px_sd_weights *w);
/* The dtype most of the UNet's weights have (for messages and benchmarks). */
px_nn_dtype px_sd_weights_dtype(const px_sd_weights *w);

/* A weight matrix: tensor `name` of `part` must have exactly the shape
 * dims[0..ndim) (trailing dimensions of size 1 beyond the second are
 * ignored on either side, so a (C,C,1,1) attention weight matches (C,C)).
 * The result views it as (dims[0], product of the rest), in its stored
 * dtype (f32/f16/bf16 only). Errors: PX_ENOTFOUND "unet: missing tensor
 * down_blocks.0...", PX_EINVAL "... has shape [a,b], expected [c,d]",
 * PX_EUNSUPPORTED for another dtype. Marks the tensor used. */
int px_sd_w_mat(px_sd_weights *w, px_sd_part part, const char *name, int ndim,
                const int64_t *dims, px_nn_mat *out, px_err *err);
/* A parameter of n elements (any shape whose product is n; biases, norm
 * scales, embeddings) converted to float32 once and kept by w (freed with
 * it). Same errors. Marks the tensor used. */
int px_sd_w_f32(px_sd_weights *w, px_sd_part part, const char *name, int64_t n,
                const float **out, px_err *err);
/* 1 when the part has a tensor of this name. */
int px_sd_w_has(const px_sd_weights *w, px_sd_part part, const char *name);
/* Number of tensors of the part never requested (known-unused ones such as
 * position_ids or EMA copies excluded); the first one's name into first. */
size_t px_sd_weights_unused(const px_sd_weights *w, px_sd_part part, char *first, size_t len);
/* First 10 hex digits of the SHA-256 of the checkpoint file (A1111's "Model
 * hash"); for a folder, of unet/diffusion_pytorch_model.safetensors. Computed
 * once, on first call. */
int px_sd_weights_hash(px_sd_weights *w, char out[11], px_err *err);

/* ======================================================================
 * tokenizer.c — CLIP's byte-level BPE (openai/CLIP simple_tokenizer).
 * ====================================================================== */
typedef struct px_sd_tokenizer px_sd_tokenizer;
/* path: CLIP's bpe_simple_vocab_16e6.txt.gz, or a folder with HF vocab.json +
 * merges.txt (a diffusers tokenizer/ folder). */
int px_sd_tokenizer_load(const char *path, px_sd_tokenizer **out, px_err *err);
void px_sd_tokenizer_destroy(px_sd_tokenizer *t);
/* Tokenizes text: *ids = [BOS, ..., EOS], malloc'd, *n entries, neither
 * truncated nor padded. Text must be UTF-8 (PX_EINVAL otherwise). Thread-safe. */
int px_sd_tokenize(const px_sd_tokenizer *t, const char *text, int32_t **ids, size_t *n,
                   px_err *err);
int32_t px_sd_tokenizer_bos(const px_sd_tokenizer *t);
int32_t px_sd_tokenizer_eos(const px_sd_tokenizer *t);

/* ======================================================================
 * clip.c — CLIP text encoder (transformers' CLIPTextModel).
 * ====================================================================== */
typedef struct px_sd_clip px_sd_clip;
int px_sd_clip_create(px_sd_weights *w, px_sd_clip **out, px_err *err);
void px_sd_clip_destroy(px_sd_clip *c);
/* ids (n <= max_positions) -> hidden (n, hidden). clip_skip <= 1: the last
 * layer's output after final_layer_norm (last_hidden_state); clip_skip = k >= 2:
 * the output of layer (layers - k + 1), i.e. hidden_states[-k], then
 * final_layer_norm (as diffusers and A1111 do). pooled (hidden,) or NULL: the
 * final-normed state at the first EOS token (position 0 if none) of the last
 * layer, whatever clip_skip (transformers' pooler_output).
 * PX_EINVAL for n outside 1..max_positions, an id outside the vocabulary or
 * clip_skip > layers + 1; PX_ENOMEM. The encoder is read-only: concurrent
 * calls need their own arena and pool. */
int px_sd_clip_encode(px_sd_clip *c, const int32_t *ids, int n, int clip_skip, float *hidden,
                      float *pooled, px_nn_arena *arena, px_pool *pool, px_err *err);
/* The same for `batch` sequences of n ids each at once: ids (batch, n) ->
 * hidden (batch, n, hidden), pooled (batch, hidden) or NULL. One pass over
 * the weights for all of them (a render's negative and positive chunks);
 * each row equals what px_sd_clip_encode gives for that sequence alone, up to
 * the GEMMs' summation order. */
int px_sd_clip_encode_batch(px_sd_clip *c, const int32_t *ids, int batch, int n, int clip_skip,
                            float *hidden, float *pooled, px_nn_arena *arena, px_pool *pool,
                            px_err *err);

/* ======================================================================
 * unet.c — UNet2DConditionModel (SD 1.x layout).
 * ====================================================================== */
typedef struct px_sd_unet px_sd_unet;
int px_sd_unet_create(px_sd_weights *w, px_sd_unet **out, px_err *err);
void px_sd_unet_destroy(px_sd_unet *u);
/* x (batch, in_channels, h, w) latents, t (batch,) timesteps, context
 * (batch, nctx, cross_dim), tcond (batch, time_cond_proj_dim) or NULL (LCM
 * guidance embedding) -> out (batch, out_channels, h, w). h and w must be
 * multiples of 2^(levels-1). PX_ENOMEM if the arena cannot grow. */
int px_sd_unet_forward(px_sd_unet *u, const float *x, int batch, int h, int w, const float *t,
                       const float *context, int nctx, const float *tcond, float *out,
                       px_nn_arena *arena, px_pool *pool, px_err *err);
/* FLOPs of one forward at this size (2 per multiply-add), for benchmarks. */
double px_sd_unet_flops(const px_sd_unet *u, int batch, int h, int w, int nctx);

/* ======================================================================
 * vae.c — AutoencoderKL decoder (and encoder, for tests and img2img).
 * taesd.c — AutoencoderTiny decoder.
 * ====================================================================== */
typedef struct px_sd_vae px_sd_vae;
int px_sd_vae_create(px_sd_weights *w, px_sd_vae **out, px_err *err);
void px_sd_vae_destroy(px_sd_vae *v);
/* z (1, latent, h, w) = latents already divided by scaling_factor ->
 * img (1, 3, 8h, 8w), about [-1, 1]. tile: 0 decodes whole; > 0 decodes in
 * overlapping latent tiles of that size, blended (bounded memory for large
 * images). Tiles are >= 4 latents and overlap by at least tile/4, blended
 * linearly; a tile covering the whole latent is the whole decode, bitwise.
 * Tiles see their own GroupNorm/attention statistics, so a tiled image is
 * close to, not equal to, the whole one. PX_ELIMIT beyond 1024 latents a
 * side, PX_EINVAL for a tile in 1..3, PX_ENOMEM. */
int px_sd_vae_decode(px_sd_vae *v, const float *z, int h, int w, int tile, float *img,
                     px_nn_arena *arena, px_pool *pool, px_err *err);
/* img (1, 3, H, W) in [-1, 1] -> mean, logvar (1, latent, H/8, W/8); logvar
 * clamped to [-30, 20] as diffusers does. H, W multiples of 8 (PX_EINVAL);
 * PX_EUNSUPPORTED when the VAE file has no encoder. */
int px_sd_vae_encode(px_sd_vae *v, const float *img, int H, int W, float *mean, float *logvar,
                     px_nn_arena *arena, px_pool *pool, px_err *err);
/* FLOPs of px_sd_vae_decode's convolutions and attention (2 per
 * multiply-add) for a whole decode at latent h x w: what px_nn_flops counts. */
double px_sd_vae_decode_flops(const px_sd_vae *v, int h, int w);

typedef struct px_sd_taesd px_sd_taesd;
int px_sd_taesd_create(px_sd_weights *w, px_sd_taesd **out, px_err *err);
void px_sd_taesd_destroy(px_sd_taesd *t);
/* z (1, latent, h, w) = the sampler's latents (unscaled, as AutoencoderTiny
 * .decode takes them) -> img (1, 3, 8h, 8w) in [-1, 1]. */
int px_sd_taesd_decode(px_sd_taesd *t, const float *z, int h, int w, float *img,
                       px_nn_arena *arena, px_pool *pool, px_err *err);

/* ======================================================================
 * rng.c — torch's CPU generator (mt19937 + torch.randn's sampling), so a
 * seed gives the same noise as diffusers on CPU.
 * ====================================================================== */
typedef struct px_sd_rng {
    uint32_t mt[624];
    int idx;
    /* torch's generator also caches a spare normal for scalar sampling */
    int has_next_double_normal;
    double next_double_normal;
} px_sd_rng;
void px_sd_rng_seed(px_sd_rng *r, uint64_t seed);
/* out[0..n) = torch.randn(n, generator=g) (n consecutive floats drawn as one
 * tensor: torch's vectorised path for n >= 16, scalar path below). */
void px_sd_rng_randn(px_sd_rng *r, float *out, size_t n);

/* ======================================================================
 * sampler.c — noise schedules and samplers, as diffusers' schedulers
 * (EulerDiscrete, EulerAncestralDiscrete, DPMSolverMultistep 2M, LCM) with
 * timestep_spacing "leading" and optional Karras sigmas.
 * ====================================================================== */
typedef enum px_sd_sampler_kind {
    PX_SD_EULER = 0,
    PX_SD_EULER_A,
    PX_SD_DPMPP_2M,
    PX_SD_LCM
} px_sd_sampler_kind;
const char *px_sd_sampler_name(px_sd_sampler_kind k); /* "euler", "euler_a", "dpmpp_2m", "lcm" */
/* A1111's display name ("Euler", "Euler a", "DPM++ 2M", "LCM"). */
const char *px_sd_sampler_a1111(px_sd_sampler_kind k);
int px_sd_sampler_parse(const char *name, px_sd_sampler_kind *out); /* PX_EINVAL if unknown */

typedef struct px_sd_sampler px_sd_sampler;
/* A sampler for `steps` steps over latents of n floats. karras: Karras sigma
 * spacing (not for LCM). cfg supplies the training schedule. The rng is
 * borrowed (noise for ancestral/LCM steps is drawn from it, after the
 * initial noise, as diffusers draws from the pipeline's generator). */
int px_sd_sampler_create(px_sd_sampler_kind kind, int steps, int karras,
                         const px_sd_config *cfg, size_t n, px_sd_rng *rng,
                         px_sd_sampler **out, px_err *err);
void px_sd_sampler_destroy(px_sd_sampler *s);
/* latent = randn(n) * init_noise_sigma (draws from the rng). */
void px_sd_sampler_init(px_sd_sampler *s, float *latent);
/* Timestep fed to the UNet at step i (0 <= i < steps) and the factor the
 * latent is multiplied by to make the UNet's input (scale_model_input). */
float px_sd_sampler_timestep(const px_sd_sampler *s, int i);
float px_sd_sampler_input_scale(const px_sd_sampler *s, int i);
/* x_in[0..n) = the UNet input at step i, as diffusers' scale_model_input makes
 * it: latent / sqrt(sigma^2 + 1) (Euler, Euler a), or a copy. Dividing (not
 * multiplying by input_scale) keeps diffusers' bits. x_in may be latent. */
void px_sd_sampler_scale_input(const px_sd_sampler *s, int i, const float *latent, float *x_in);
/* One step: eps (n) is the guided noise prediction at step i; updates latent
 * (n) in place. Returns PX_OK or PX_ENOMEM. */
int px_sd_sampler_step(px_sd_sampler *s, int i, const float *eps, float *latent);
/* Sigmas (steps + 1, last 0) and timesteps (steps) actually used (tests). */
const float *px_sd_sampler_sigmas(const px_sd_sampler *s);
const float *px_sd_sampler_timesteps(const px_sd_sampler *s);
/* LCM's guidance embedding (diffusers get_guidance_scale_embedding):
 * w = guidance_scale - 1 scaled by 1000, sinusoidal, dim values into out. */
void px_sd_guidance_embedding(float guidance_scale, int dim, float *out);

#endif
