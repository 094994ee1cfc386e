/*
 * px_sd: pixpipe's Stable Diffusion engine, text to image on the CPU with
 * SD 1.x models (SD 1.4/1.5, their fine-tunes, LCM-distilled SD 1.5), no
 * Python and no GPU.
 *
 * A model is loaded once (px_sd_model_load: weights mapped read-only, the
 * CLIP tokenizer, the text encoder, UNet, VAE and optional TAESD decoder, a
 * thread pool and a scratch arena) and then renders any number of images
 * (px_sd_render). One render:
 *   prompt and negative prompt -> CLIP tokens in 77-token chunks -> text
 *   encoder -> seeded noise -> sampler loop (one UNet forward per step; with
 *   classifier-free guidance that forward has batch 2, unconditional first)
 *   -> VAE (or TAESD) decode -> 8-bit RGB image.
 * The same model, parameters and seed give the same image bit for bit,
 * whatever the thread count; the noise is torch's CPU generator, so a seed
 * means what it means in diffusers on a CPU.
 *
 * Errors are PX_E* statuses with one line in the caller's px_err that names
 * the file, tensor, parameter or step concerned. Nothing here prints.
 */
#ifndef PX_SD_H
#define PX_SD_H

#include "core/px_core.h"
#include "image/px_image.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Model --------------------------------------------------------------- */

typedef struct px_sd_model px_sd_model;

typedef struct px_sd_load_opts {
    /* CLIP vocabulary: CLIP's bpe_simple_vocab_16e6.txt.gz or a folder with HF
     * vocab.json + merges.txt. NULL: the model folder's tokenizer/, else
     * `vocab` below. */
    const char *tokenizer;
    /* The vocabulary used when `tokenizer` is NULL and the model has no
     * tokenizer/ (a single-file checkpoint); the app finds it in models/. */
    const char *vocab;
    /* TAESD decoder (AutoencoderTiny .safetensors or diffusers folder), or NULL. */
    const char *taesd;
    /* Compute threads for every render of this model; <= 0: all cores. */
    int threads;
} px_sd_load_opts;

/* Loads the model at path: a diffusers folder (model_index.json, unet/ vae/
 * text_encoder/ tokenizer/) or one original-layout .safetensors file. opts
 * may be NULL (defaults above; a single file then fails for want of a
 * vocabulary). Weights stay in their file's precision, mapped; nothing is
 * copied but 1-D parameters. Errors: PX_ENOTFOUND/PX_EIO (files),
 * PX_EUNSUPPORTED (pickles, SD 2.x, SDXL, SD3, Flux: named in err),
 * PX_ECORRUPT/PX_EINVAL (bad files, missing or mis-shaped tensors: the first
 * one named), PX_ENOMEM. On failure *out is NULL. Caller frees with
 * px_sd_model_free. */
int px_sd_model_load(const char *path, const px_sd_load_opts *opts, px_sd_model **out, px_err *err);
void px_sd_model_free(px_sd_model *m); /* NULL is a no-op; unmaps everything */

typedef struct px_sd_model_info {
    const char *arch;       /* "SD 1.x" */
    const char *dtype;      /* the UNet weights' dtype: "f32", "f16", "bf16" */
    int single_file;        /* 1: original-layout file; 0: diffusers folder */
    int lcm;                /* 1: the UNet has LCM's guidance embedding (time_cond_proj_dim) */
    int has_taesd;          /* a TAESD decoder was loaded */
    int size_multiple;      /* image sides are multiples of this (64 for SD 1.x) */
    int native_size;        /* the training resolution's side (512 for SD 1.x) */
    int clip_layers;        /* text encoder layers (the largest useful clip skip) */
    int threads;            /* compute threads */
    uint64_t weights_bytes; /* bytes of the model files, as counted by the memory estimate */
    size_t unused_tensors;  /* checkpoint tensors no part asked for (0 for a clean SD 1.x file;
                             * a TAESD file's encoder is not counted) */
    char first_unused[128]; /* the first of them, "part: name", or "" */
} px_sd_model_info;
/* Facts about a loaded model (for messages, --help text and benchmarks). */
void px_sd_model_describe(const px_sd_model *m, px_sd_model_info *out);

/* First 10 hex digits of the SHA-256 of the checkpoint (AUTOMATIC1111's
 * "Model hash"; for a folder, of unet/diffusion_pytorch_model.safetensors).
 * Reads the whole file once (seconds for a 2 GB file), then remembered.
 * PX_EIO if the file cannot be read. Thread-safe (serialised with renders). */
int px_sd_model_hash(px_sd_model *m, char out[11], px_err *err);

/* ---- Render -------------------------------------------------------------- */

typedef enum px_sd_stage {
    PX_SD_STAGE_TEXT = 0, /* tokenizing and text encoder */
    PX_SD_STAGE_SAMPLE,   /* the sampler loop: one call per finished step */
    PX_SD_STAGE_DECODE    /* VAE or TAESD decode (called when it starts) */
} px_sd_stage;

typedef struct px_sd_progress {
    px_sd_stage stage;
    int step;          /* steps finished (1..steps) in PX_SD_STAGE_SAMPLE, else 0 */
    int steps;         /* steps of this render */
    double ms_step;    /* duration of the step just finished */
    double ms_elapsed; /* since px_sd_render began */
} px_sd_progress;
/* Called on the rendering thread; returning non-zero cancels the render
 * (px_sd_render then returns PX_ECLOSED, "cancelled at step k"). */
typedef int (*px_sd_progress_fn)(void *ctx, const px_sd_progress *p);

typedef struct px_sd_params {
    const char *prompt;   /* UTF-8; required ("" is allowed) */
    const char *negative; /* UTF-8 negative prompt; NULL or "": none */
    /* Image size in pixels; 0: the model's native size (512). Each side is
     * rounded to the nearest multiple of the model's size_multiple (64 for
     * SD 1.x: the UNet halves the 1/8-scale latent three times), at least
     * one multiple; px_sd_result says what was used. At most 4096. */
    int width, height;
    int steps; /* 1..500; 0: 20 (LCM: 4) */
    float cfg; /* guidance scale, 0..50; < 0: 7 (LCM: 8). <= 1 (or LCM): no
                * unconditional pass, one batch-1 UNet forward per step */
    /* "euler", "euler_a", "dpmpp_2m" or "lcm". NULL: "dpmpp_2m" with Karras
     * sigmas (A1111's "DPM++ 2M Karras"), or "lcm" for an LCM-distilled
     * model. */
    const char *sampler;
    int karras;    /* Karras sigma spacing: -1 as the default sampler has it
                    * (on for the NULL default, off for a named sampler), 0 off, 1 on
                    * (not for lcm) */
    int64_t seed;  /* 0..2^63-1; < 0: a random 32-bit seed, reported in the result */
    int clip_skip; /* 0 or 1: the text encoder's last layer; k >= 2: layer
                    * (layers - k + 1), as A1111's "Clip skip: k" */
    int use_taesd; /* decode with TAESD (needs opts.taesd at load) instead of the VAE */
    /* VAE decode in overlapping latent tiles of this side (>= 4): 0: automatic (tiles
     * of 64 when the image is larger than 768x768 pixels of area), < 0: never. */
    int vae_tile;
    /* Refuse (PX_ELIMIT, before any work) when the memory estimate exceeds
     * this many bytes; 0: the memory available now (MemAvailable, or the
     * cgroup's limit when lower). */
    uint64_t mem_limit;
    /* Optional: receives the final latent before decoding, 4 * (height/8) *
     * (width/8) floats (NCHW, the sampler's scale, not divided by the VAE's
     * scaling factor) for the size actually rendered; the caller sizes it
     * from px_sd_plan or for the largest size it asks. NULL: not returned. */
    float *latent_out;
    size_t latent_out_len;      /* floats latent_out holds; PX_EINVAL if too few */
    px_sd_progress_fn progress; /* or NULL */
    void *progress_ctx;
} px_sd_params;

/* Fills p with the defaults above (seed -1: random; karras -1; cfg -1). Start
 * every px_sd_params from this: a zeroed struct means seed 0, no Karras and
 * cfg 0 (no guidance). */
void px_sd_params_default(px_sd_params *p);

typedef struct px_sd_memory {
    uint64_t weights;     /* model files (mapped; resident once touched) */
    uint64_t activations; /* scratch for the largest stage at this size */
    uint64_t total;       /* weights + activations + fixed overhead */
    uint64_t available;   /* what the render may use (see px_sd_params.mem_limit); 0:
                           * unknown (no /proc/meminfo), not checked */
    uint64_t held;        /* scratch this model holds already from earlier renders */
} px_sd_memory;

typedef struct px_sd_result {
    int64_t seed; /* the seed used (drawn when params->seed < 0) */
    int steps;
    float cfg;              /* guidance scale used (LCM: fed to the guidance embedding) */
    int guided;             /* 1: classifier-free guidance (batch-2 UNet forwards) */
    char sampler[16];       /* "euler", "euler_a", "dpmpp_2m", "lcm" */
    char sampler_a1111[32]; /* "Euler a", "DPM++ 2M Karras", ... */
    int karras;
    int width, height;                  /* size rendered */
    int req_width, req_height;          /* size asked for (after defaults) */
    int rounded;                        /* 1 when the size asked for was rounded */
    int clip_skip;                      /* as used (1 = last layer) */
    int chunks;                         /* 77-token chunks the text encoder ran per prompt */
    int prompt_tokens, negative_tokens; /* BPE tokens without BOS/EOS */
    int taesd;                          /* 1: decoded with TAESD */
    int vae_tile;                       /* latent tile side used by the VAE, 0: whole */
    char model_hash[11];                /* see px_sd_model_hash */
    /* Wall-clock milliseconds per stage, and GEMM work (GFLOP, as px_nn_flops
     * counts it) per stage: the counter is process-wide, so the GFLOP figures
     * hold only when no other model computes at the same time. */
    double ms_text, ms_sample, ms_decode, ms_total;
    double gflop_text, gflop_sample, gflop_decode;
    double gflop_unet_forward; /* the UNet's own count for one forward at this size and batch */
    px_sd_memory memory;       /* the estimate that was checked */
    uint64_t arena_peak;       /* most scratch bytes in use at once in any render of this model */
} px_sd_result;

/* The size a render with p would use and its memory estimate, without
 * rendering. Fills what px_sd_render would put in result->width, height,
 * rounded, memory. PX_EINVAL for bad parameters (named). Thread-safe. */
int px_sd_plan(px_sd_model *m, const px_sd_params *p, px_sd_result *plan, px_err *err);

/* Renders one image into *out (RGB, 3 channels, the size in info; caller
 * frees with px_image_free). info may be NULL. Errors, with err naming the
 * cause: PX_EINVAL (bad parameter, prompt not UTF-8), PX_ELIMIT (prompt
 * longer than 8 chunks of 75 tokens; memory estimate above what is
 * available: both figures in MiB in err), PX_EUNSUPPORTED (use_taesd without
 * a TAESD decoder), PX_ECORRUPT ("model produced NaN at step k": a latent
 * value became NaN or infinite; nothing is decoded), PX_ECLOSED (cancelled
 * by the progress callback), PX_ENOMEM. On failure *out is zeroed and info's
 * fields are undefined. Thread-safe: renders on one model run one at a time
 * (they share its thread pool and scratch arena); use one model per
 * concurrent render. */
int px_sd_render(px_sd_model *m, const px_sd_params *p, px_image *out, px_sd_result *info,
                 px_err *err);

/* The text AUTOMATIC1111 writes into an image's "parameters" for this render
 * ("PROMPT\nNegative prompt: ...\nSteps: 20, Sampler: DPM++ 2M Karras, CFG
 * scale: 7, Seed: 42, Size: 512x512, Model hash: 0123456789, Model: NAME",
 * plus ", Clip skip: k" when k > 1). model_name: the checkpoint's name
 * without extension (NULL: omitted). Returns a malloc'd string, or NULL when
 * out of memory. */
char *px_sd_a1111_parameters(const px_sd_params *p, const px_sd_result *r, const char *model_name);

#ifdef __cplusplus
}
#endif
#endif
