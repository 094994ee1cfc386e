/*
 * px_gen: the automatic stock-image pipeline behind `pixpipe generate`.
 *
 * A campaign (themes, counts, type split) becomes exact quotas per theme and
 * type; a prompt writer (an OpenAI-compatible LLM, or the offline template
 * composer over vocab/ files) writes scene descriptions; near-duplicates are
 * dropped; render backends (AUTOMATIC1111, OpenAI images, ComfyUI) on one or
 * more servers, or pixpipe's own Stable Diffusion engine in-process (the
 * local backend), turn prompts into images; automatic checks accept, flag or
 * reject each image; everything is recorded in the pool's manifest
 * (px_manifest.h), so a run resumes after any crash.
 *
 * Pool layout: POOL/manifest.sqlite, POOL/<theme-slug>/<type>/<id>.png (or
 * .jpg / .webp, px_gen_opts.format), POOL/rejected/<theme-slug>/<type>/<id>.png
 * (+ <id>.txt with the reason).
 *
 * Unless said otherwise functions are thread-safe on distinct objects, return
 * PX_OK or a negative PX_E* status with the reason in err, and never print.
 */
#ifndef PX_GEN_H
#define PX_GEN_H

#include "core/px_core.h"
#include "image/px_image.h"
#include "manifest/px_manifest.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- image types and themes --------------------------------------------- */

/* The kinds of image a campaign asks for (also indexes per-type arrays). */
typedef enum px_gen_type {
    PX_GEN_INTERIORS = 0,
    PX_GEN_EXTERIORS = 1,
    PX_GEN_ITEMS = 2,
    PX_GEN_NTYPES = 3 /* count, not a type */
} px_gen_type;
const char *px_gen_type_name(int type); /* "interiors" | "exteriors" | "items" | "?" */
/* Parses a type name (case-insensitive; singular accepted). PX_EINVAL names it. */
int px_gen_type_parse(const char *s, int *type, px_err *err);
/* Lower-case ASCII slug of a theme ("Business and office" -> "business-and-office"):
 * letters and digits kept, everything else collapsed to single '-'. PX_EINVAL
 * when nothing is left or it does not fit cap. */
int px_gen_slug(const char *theme, char *out, size_t cap, px_err *err);

/* Largest-remainder apportionment: splits total into n integers proportional
 * to the non-negative weights w (not all zero), summing exactly to total; ties
 * go to the lower index. PX_EINVAL on bad weights. */
int px_gen_apportion(int total, const double *w, int n, int *out, px_err *err);

/* ---- campaigns ---------------------------------------------------------- */

typedef struct px_gen_theme {
    char name[128];
    char slug[96];
    int count;     /* explicit images for this theme, or -1 (share of the total) */
    double weight; /* share of the total when count is -1 (default 1) */
    int quota[PX_GEN_NTYPES]; /* filled by px_gen_campaign_quotas */
} px_gen_theme;

typedef struct px_gen_render_defaults {
    int width, height, steps; /* default 1024 x 768, 30 steps */
    double cfg;               /* default 6.0 */
    char sampler[64];         /* default "DPM++ 2M Karras" */
    char model[128];          /* checkpoint/model name sent to the server; "" = server default */
    int size_set;             /* bit 0: width given, bit 1: height given (campaign or command
                               * line); the local backend fills a missing side from the model */
} px_gen_render_defaults;

typedef struct px_gen_campaign {
    char name[128];
    int total;                     /* all images, or -1 when every theme has a count */
    double split[PX_GEN_NTYPES];   /* type weights, default 60/20/20 */
    px_gen_theme *themes;          /* owned */
    int nthemes;
    px_gen_render_defaults render;
    int allow_people;              /* 0: "people, faces" go into the negative prompt */
    px_format format;              /* defaults.format; PX_FMT_UNKNOWN when not given (PNG) */
    int quality;                   /* defaults.quality 1..100, 0 when not given */
    char *json;                    /* the campaign as JSON text (owned), stored in the manifest */
} px_gen_campaign;

/* Parses a campaign JSON document (see docs/campaigns.md). origin names the
 * file in messages. PX_EINVAL with "origin: field: what was expected" for
 * malformed input (unknown type, negative count, duplicate theme, ...).
 * Computes the quotas. On failure *c is left empty. */
int px_gen_campaign_parse(const char *json, size_t len, const char *origin, px_gen_campaign *c,
                          px_err *err);
int px_gen_campaign_load(const char *path, px_gen_campaign *c, px_err *err);
/* A one-batch campaign: count images of one theme and one type. */
int px_gen_campaign_single(const char *theme, int type, int count, px_gen_campaign *c,
                           px_err *err);
/* (Re)computes every theme's quota: theme totals by largest remainder over
 * the weights (or their counts), then a controlled rounding of the theme x
 * type table so each theme's row sums to its total and each type's column
 * sums to the campaign-wide largest-remainder split. */
int px_gen_campaign_quotas(px_gen_campaign *c, px_err *err);
void px_gen_campaign_free(px_gen_campaign *c); /* safe on a zeroed campaign */

/* ---- styles ------------------------------------------------------------- */

typedef struct px_gen_style {
    char suffix[PX_GEN_NTYPES][1024];   /* appended to every scene of that type */
    char negative[PX_GEN_NTYPES][1024]; /* negative prompt of that type */
    char no_people[512];                /* appended to the negative unless people are allowed */
} px_gen_style;
/* Loads styles JSON ({"interiors": {"suffix":..., "negative":...}, ...,
 * "no_people": "..."}); path NULL gives built-in defaults. */
int px_gen_style_load(const char *path, px_gen_style *st, px_err *err);

/* ---- prompt writers ----------------------------------------------------- */

typedef struct px_gen_writer px_gen_writer;

/* Offline writer over vocab_dir/<theme-slug>.json and vocab_dir/_common.json.
 * Deterministic for a seed. */
int px_gen_writer_offline_create(const char *vocab_dir, uint64_t seed, px_gen_writer **out,
                                 px_err *err);

typedef struct px_gen_llm_opts {
    const char *url;     /* base URL, e.g. http://127.0.0.1:8080 (the path /v1/chat/completions is added) */
    const char *model;   /* model name sent in the request ("" allowed by llama-server) */
    const char *api_key; /* bearer token or NULL */
    double temperature;  /* default 0.9 */
    int64_t seed;        /* sent to the server; -1: none */
    int batch;           /* scenes asked per request (default 8, max 50) */
    int retries;         /* extra attempts on bad output (default 3) */
    long timeout_ms;     /* per request (default 120000) */
    const char *vocab_dir; /* optional: _common.json sub-topic lists; NULL: built-in lists */
    const char *dialect;   /* "auto" or NULL: probe the server; "llamacpp", "llamacpp-old",
                            * "ollama", "vllm", "openai": force one (docs/generate.md) */
    int max_tokens;        /* answer budget per request; 0: scenes x 96 + 64 */
} px_gen_llm_opts;
px_gen_llm_opts px_gen_llm_opts_default(void);
/* PX_EINVAL for an unknown dialect. The server is probed before the first
 * request (a missing Ollama model, or a batch that does not fit the server's
 * context, then fails that request with PX_EINVAL / PX_ELIMIT, not retried). */
int px_gen_writer_llm_create(const px_gen_llm_opts *o, px_gen_writer **out, px_err *err);
/* What an LLM writer's server reported once it has been probed, as a JSON
 * object text into buf: server, dialect, how ("probed" | "--llm-dialect"),
 * version, model (what the server used: the loaded model where the server
 * reports one, as llama-server echoes any name asked for; else the last
 * usable answer's "model"), answer_model, loaded_model, n_ctx, max_tokens
 * and prompt_tokens of the last request (prompt_tokens_counted: true when
 * the server counted them; else an upper bound or an estimate). Returns 1
 * when written, 0 (buf "") for another writer, before the first request, or
 * when cap is too small. */
int px_gen_llm_describe(px_gen_writer *w, char *buf, size_t cap);
/* Scenes a writer is asked for per call: an LLM writer's batch (--llm-batch,
 * 1..50), 8 for the others. */
int px_gen_llm_batch(px_gen_writer *w);

/* Writes up to n (1..50) scene descriptions for theme/type. *out gets a
 * malloc'd array of *nout malloc'd strings (free with px_manifest_strings_free);
 * subtopic (cap bytes, may be NULL) receives a note of the variation asked
 * for. The offline writer fails with PX_ENOTFOUND "no vocabulary for theme
 * ...; use an LLM (--llm URL)" for an unknown theme. Not thread-safe per writer. */
int px_gen_writer_write(px_gen_writer *w, const char *theme, const char *slug, int type, int n,
                        char ***out, size_t *nout, char *subtopic, size_t cap, px_err *err);
const char *px_gen_writer_name(const px_gen_writer *w); /* "offline" | "llm" */
/* LLM stats: requests made, bad answers retried. */
void px_gen_writer_stats(const px_gen_writer *w, int *requests, int *bad_answers);
void px_gen_writer_destroy(px_gen_writer *w); /* NULL is a no-op */

/* Parses an LLM chat-completion response body into scene strings: the
 * message content must be JSON, either an array of strings or an object with
 * a "prompts" array. Strings are trimmed; ones shorter than 12 or longer than
 * 1000 characters are dropped. PX_ECORRUPT when nothing usable is found
 * (message names what was wrong). Exposed for tests and the fuzzer. */
int px_gen_llm_parse(const char *body, size_t len, char ***out, size_t *nout, px_err *err);

/* ---- near-duplicate prompts --------------------------------------------- */

typedef struct px_gen_dedup px_gen_dedup;
/* threshold: Jaccard similarity of word 3-shingles at or above which a
 * prompt is a duplicate (default 0.7 when <= 0). MinHash (64 hashes) with
 * LSH banding finds candidates; the estimate decides. */
int px_gen_dedup_create(double threshold, px_gen_dedup **out, px_err *err);
void px_gen_dedup_destroy(px_gen_dedup *d);
/* Returns 1 when text is a near-duplicate of a prompt already added, else
 * adds it and returns 0; negative PX_E* on allocation failure. Not thread-safe. */
int px_gen_dedup_add(px_gen_dedup *d, const char *text);
size_t px_gen_dedup_count(const px_gen_dedup *d);
/* Exact Jaccard of the two texts' normalized word 3-shingle sets (tests). */
double px_gen_jaccard(const char *a, const char *b);

/* ---- images: payloads in, pool files out, automatic checks ------------- */

/* Decodes a render server's PNG/JPEG/WebP payload into *out as 3-channel RGB
 * (alpha composited on black, stride w*3; free with px_image_free), refusing
 * more than max_pixels (0: 64 Mi). PX_EUNSUPPORTED when it is not an image,
 * PX_ECORRUPT when truncated, PX_ELIMIT, PX_ENOMEM. */
int px_gen_decode(const uint8_t *data, size_t len, uint64_t max_pixels, px_image *out,
                  px_err *err);

/* Encodes a pool file: img as f (PX_FMT_UNKNOWN: PNG) with both metadata
 * texts (see px_image_encode_meta), quality 1..100 for JPEG and WebP (out of
 * range: 92; WebP stays lossy, at most 99: lossless pool files are PNG).
 * Appends to *out. */
int px_gen_encode(const px_image *img, px_format f, int quality, const px_image_meta *meta,
                  px_buf *out, px_err *err);

/* What a face found in a generated image does to it. */
typedef enum px_gen_faces {
    PX_GEN_FACES_OFF = 0, /* not looked for */
    PX_GEN_FACES_FLAG,    /* accepted, flagged for review */
    PX_GEN_FACES_REJECT,  /* rejected */
} px_gen_faces;

typedef struct px_gen_check_opts {
    double min_stddev;     /* near-uniform below this luma stddev (default 12) */
    double min_mean;       /* too dark below this mean luma (default 28) */
    double max_mean;       /* too bright above (default 235) */
    double min_blur;       /* blurry below this variance of the Laplacian (default 30) */
    int phash_distance;    /* duplicate when Hamming distance <= this (default 4; <0 off) */
    px_gen_faces faces;
    void *face_detector;   /* px_face_detector* when faces != OFF */
} px_gen_check_opts;
px_gen_check_opts px_gen_check_opts_default(void);

typedef struct px_gen_check_result {
    double mean, stddev, blur; /* luma statistics */
    uint64_t phash;
    int64_t duplicate_of;      /* image id of a near-duplicate, 0 if none */
    int faces;                 /* faces found (-1: not checked) */
    char status[16];           /* "accepted" | "flagged" | "rejected" */
    char reason[160];          /* "" or e.g. "too dark (mean luma 12.3 < 28)" */
} px_gen_check_result;

/* Measures img (3-channel RGB, as px_gen_decode makes) and decides (phash duplicates are decided by the caller
 * against the pool, see px_gen_phash_index). */
int px_gen_check_image(const px_image *img, const px_gen_check_opts *o,
                       px_gen_check_result *res, px_err *err);
/* 64-bit DCT perceptual hash (32x32 luma, top-left 8x8 DCT, > median). */
uint64_t px_gen_phash(const px_image *img); /* img: 3-channel RGB */
int px_gen_hamming(uint64_t a, uint64_t b);

/* ---- render backends ---------------------------------------------------- */

/* Where images are rendered: the HTTP APIs a render server may speak, or in this process. */
typedef enum px_gen_backend {
    PX_GEN_A1111 = 0, /* AUTOMATIC1111 / Forge: /sdapi/v1/txt2img */
    PX_GEN_OPENAI,    /* OpenAI-compatible /v1/images/generations */
    PX_GEN_COMFYUI,   /* ComfyUI /prompt with an API-format workflow */
    PX_GEN_LOCAL,     /* pixpipe's own Stable Diffusion engine in-process (px_gen_local) */
} px_gen_backend;
const char *px_gen_backend_name(px_gen_backend backend);
int px_gen_backend_parse(const char *s, px_gen_backend *backend, px_err *err);

typedef struct px_gen_render_req {
    const char *prompt, *negative;
    int64_t seed;
    int width, height, steps;
    double cfg;
    const char *sampler, *model;
} px_gen_render_req;

typedef struct px_gen_client px_gen_client; /* one HTTP connection; one thread at a time */
int px_gen_client_create(px_gen_client **out, px_err *err);
void px_gen_client_destroy(px_gen_client *c);

/* From now on every request of c ends with PX_ECLOSED as soon as *flag
 * becomes non-zero (NULL: never). The flag must outlive the client's use. */
void px_gen_client_set_cancel(px_gen_client *c, const void *flag /* const atomic_int * */);

/* What a render server is and can do, learnt once per run (px_gen_probe). */
typedef struct px_gen_server_info {
    char kind[16];          /* "a1111" | "sd-server" | "openai" | "comfyui" */
    int split_scheduler;    /* sampler and scheduler are two fields (A1111 >= 1.9, sd-server) */
    int nsamplers, nschedulers; /* -1: the server gave no list, names are not checked */
    char samplers[64][40];  /* names (and A1111 aliases) as the server spells them */
    char schedulers[32][32];
    char model[256];        /* loaded model as the server names it ("" when it does not say) */
    int max_inflight;       /* renders it runs at once: sd-server 1, 0 unknown */
    int interrupt;          /* POST /sdapi/v1/interrupt stops its render (A1111) */
} px_gen_server_info;

/* Asks the server at url what it is (sd-server's /sdcpp/v1/capabilities,
 * A1111's /sdapi/v1/samplers, /schedulers and /options). PX_ENET /
 * PX_ETIMEOUT when it cannot be reached; PX_EUNSUPPORTED when the backend's
 * route cannot carry our settings there (the OpenAI images API on a server
 * that is not sd-server: no seed, steps, CFG, negative prompt or sampler). */
int px_gen_probe(px_gen_client *c, px_gen_backend backend, const char *url, long timeout_ms,
                 px_gen_server_info *info, px_err *err);

/* Maps our sampler name ("DPM++ 2M Karras": A1111's combined name, or
 * "DPM++ 2M" alone) to what this server takes: A1111 >= 1.9 "DPM++ 2M" +
 * scheduler "karras", older A1111 the combined name, sd-server "dpm++2m" +
 * "karras". scheduler "" when none is sent. PX_EINVAL naming the sampler
 * (and what the server knows) when the server would not use it. */
int px_gen_server_sampler(const px_gen_server_info *info, const char *name, char *sampler,
                          size_t scap, char *scheduler, size_t hcap, px_err *err);

/* What a server reports it did for one render (fields it did not report
 * keep the request's values and their bit stays clear in known). */
enum {
    PX_GEN_USED_SEED = 1, PX_GEN_USED_SIZE = 2, PX_GEN_USED_STEPS = 4, PX_GEN_USED_CFG = 8,
    PX_GEN_USED_SAMPLER = 16, PX_GEN_USED_MODEL = 32, PX_GEN_USED_NEGATIVE = 64
};
typedef struct px_gen_render_used {
    int known;              /* PX_GEN_USED_* bits */
    int64_t seed;
    int width, height, steps;
    double cfg;
    char sampler[64];       /* as the server names it, scheduler appended ("DPM++ 2M Karras") */
    char model[256], model_hash[32];
    int negative_same;      /* PX_GEN_USED_NEGATIVE: 1 when it used our negative prompt */
    char info[2048];        /* the server's own account (A1111 infotext), cut to fit */
} px_gen_render_used;

/* Reads an A1111 infotext ("prompt\nNegative prompt: ...\nSteps: 4, Sampler:
 * ..., CFG scale: 6, Seed: 1, Size: 64x64, Model: m") into u (known bits
 * set for what it names). Exposed for tests. */
void px_gen_parse_infotext(const char *text, const char *negative, px_gen_render_used *u);

/* Renders one image on the server at base_url. info is what px_gen_probe
 * learnt about it (NULL: nothing, the request goes out as is). workflow is
 * the ComfyUI API-format workflow JSON (NULL for the others). timeout_ms
 * bounds each request (ComfyUI: the whole poll too). On PX_OK *image is the
 * raw image file (caller frees with px_buf_free) and *used (may be NULL)
 * what the server reports it used. PX_ENET / PX_ETIMEOUT for the transport
 * (a timed-out or cancelled render is interrupted on the server where it
 * can be), PX_ECLOSED when cancelled, PX_ECORRUPT when the server answered
 * something unusable, PX_EINVAL when it cannot render the request as asked
 * (sampler, model). */
int px_gen_render(px_gen_client *c, px_gen_backend backend, const char *base_url,
                  const px_gen_server_info *info, const char *workflow,
                  const px_gen_render_req *req, long timeout_ms, px_buf *image,
                  px_gen_render_used *used, px_err *err);

/* What to do with an image whose size differs from the request. */
typedef enum px_gen_size_policy {
    PX_GEN_SIZE_REFUSE = 0, /* the job fails and the run stops, naming both sizes */
    PX_GEN_SIZE_RESCALE,    /* centre-cropped to the requested shape, then scaled to it */
    PX_GEN_SIZE_KEEP,       /* kept as it came; the job and image rows get its real size */
} px_gen_size_policy;
int px_gen_size_policy_parse(const char *s, px_gen_size_policy *p, px_err *err);
/* Scales and centre-crops img (3-channel RGB) to w x h in place. */
int px_gen_rescale(px_image *img, int w, int h, px_err *err);

/* ---- the local backend: Stable Diffusion in this process ----------------- */

/* One SD 1.x model (src/diffusion, px_sd.h), loaded once for a run and shared
 * read-only by the render workers. Renders on it run one at a time (they
 * share its thread pool and scratch arena), each on all its threads. */
typedef struct px_gen_local px_gen_local;

typedef struct px_gen_local_opts {
    const char *model;     /* diffusers folder or original-layout .safetensors (required) */
    const char *tokenizer; /* CLIP vocabulary file or folder; NULL: the model folder's own */
    const char *vocab;     /* the vocabulary of a single-file model when tokenizer is NULL */
    const char *taesd;     /* decode every image with this TAESD model; NULL: the VAE */
    int threads;           /* compute threads; <= 0: all cores */
} px_gen_local_opts;

/* Loads the model and reads its A1111 hash (the whole checkpoint once).
 * Errors as px_sd_model_load's, err naming the file. Free with
 * px_gen_local_destroy (NULL is a no-op). */
int px_gen_local_create(const px_gen_local_opts *o, px_gen_local **out, px_err *err);
void px_gen_local_destroy(px_gen_local *l);
const char *px_gen_local_name(const px_gen_local *l); /* file/folder name without .safetensors */
const char *px_gen_local_hash(const px_gen_local *l); /* 10 hex digits of the SHA-256 */
int px_gen_local_threads(const px_gen_local *l);      /* compute threads of each render */

/* Maps a sampler name to the engine's: A1111's ("Euler", "Euler a", "DPM++ 2M",
 * "LCM", each but LCM with an optional " Karras"), ComfyUI's euler_ancestral,
 * or ours (euler, euler_a, dpmpp_2m, lcm), case-insensitive. *ours is a static
 * string. PX_EINVAL naming the sampler and listing those known. */
int px_gen_local_sampler(const char *name, const char **ours, int *karras, px_err *err);

/* Turns a campaign's render defaults into what this model will render, in
 * place: no size given -> the model's native size in 3:2 landscape (768x512
 * for SD 1.x), one side given -> the other in the same shape; sides rounded
 * to the model's multiple; sampler -> its canonical A1111 name; model -> the
 * checkpoint title "name [hash]". note (cap bytes, may be NULL) receives a
 * warning worth showing ("" if none): a rounded size, an LCM model with
 * another sampler. PX_EINVAL for an unknown sampler or bad value, PX_ELIMIT
 * when the size needs more memory than is available (the estimate in err). */
int px_gen_local_resolve(px_gen_local *l, px_gen_render_defaults *r, char *note, size_t cap,
                         px_err *err);

/* What a local render really used. */
typedef struct px_gen_local_used {
    int64_t seed;
    int width, height, steps;
    double cfg;
    char sampler[32]; /* A1111's name, e.g. "DPM++ 2M Karras" */
    double ms;        /* the render's wall-clock time */
} px_gen_local_used;

/* Called on the rendering thread after each sampler step (step 1..steps);
 * returning non-zero cancels the render. */
typedef int (*px_gen_local_step_fn)(void *arg, int step, int steps);

/* Renders req (seed >= 0; sampler as px_gen_local_sampler reads it; model is
 * ignored) into *out (RGB; free with px_image_free). on_step (may be NULL)
 * is called after every sampler step with step_arg; non-zero stops the
 * render with PX_ECLOSED. used may be NULL. Errors as px_sd_render's
 * (PX_ECORRUPT "model produced NaN at step k", PX_ELIMIT for memory, ...),
 * *out zeroed. Thread-safe: concurrent calls on one l run one after another. */
int px_gen_local_render(px_gen_local *l, const px_gen_render_req *req, px_gen_local_step_fn on_step,
                        void *step_arg, px_image *out, px_gen_local_used *used, px_err *err);

/* ---- the pipeline ------------------------------------------------------- */

typedef void (*px_gen_progress_fn)(void *ctx, const char *line, int final);

/* One render server's state with each progress report (serve's Campaigns page). */
typedef enum px_gen_server_state {
    PX_GEN_SERVER_OK = 0,
    PX_GEN_SERVER_BACKOFF,   /* failed recently: takes no work for a while */
    PX_GEN_SERVER_SET_ASIDE, /* failed too often: out for the rest of the run */
} px_gen_server_state;
typedef struct px_gen_server_status {
    const char *url; /* as given in px_gen_opts.servers ("local" for the local backend) */
    int done, failures;
    px_gen_server_state state;
} px_gen_server_status;
typedef void (*px_gen_servers_fn)(void *ctx, const px_gen_server_status *s, int n);

typedef struct px_gen_opts {
    const char *pool;          /* output folder (created) */
    const px_gen_campaign *campaign;
    px_gen_writer *writer;     /* owned by the caller */
    const char *style_path;    /* NULL: built-in styles */
    px_gen_backend backend;
    const char **servers;      /* base URLs (none for PX_GEN_LOCAL) */
    int nservers;
    int per_server;            /* requests in flight per server (default 1); PX_GEN_LOCAL:
                                * workers sharing the model (renders still one at a time) */
    px_gen_local *local;       /* PX_GEN_LOCAL: the loaded model (the caller's; run-wide) */
    const char *workflow;      /* ComfyUI workflow JSON text */
    int max_attempts;          /* per job (default 3) */
    int server_failures;       /* consecutive failures before a server is set aside (default 5) */
    long timeout_ms;           /* per request (default 300000) */
    long backoff_ms;           /* first retry delay on a failing server (default 500, doubles, max 30 s) */
    double dedup_threshold;    /* <= 0: 0.7 */
    px_gen_check_opts checks;
    int max_jobs_factor;       /* stop making jobs past factor x quota per slot (default 4) */
    int64_t seed;              /* base seed: -1 = job id; else seed + job id */
    px_format format;          /* pool files: PX_FMT_PNG (default; also for UNKNOWN), JPEG, WEBP */
    int quality;               /* JPEG/WebP quality 1..100 (default 92) */
    int fsync;                 /* fsync each image before rename (default 0: kill -9 safe, not power-cut safe) */
    px_gen_progress_fn progress; /* optional; called from the controller thread */
    void *progress_ctx;
    double progress_interval_ms; /* default 1000 */
    const volatile int *stop;  /* optional: set non-zero (SIGINT) to stop after in-flight jobs */
    const volatile int *cancel; /* optional: set non-zero to abandon in-flight renders too
                                 * (interrupted on the server where it can); jobs stay pending */
    px_gen_size_policy size_mismatch; /* an image of another size than asked (default refuse) */
    px_gen_servers_fn servers_status; /* optional: every server's state with each progress
                                       * report, from the controller thread (ctx: progress_ctx) */
} px_gen_opts;
void px_gen_opts_default(px_gen_opts *o);

typedef struct px_gen_summary {
    int rendered;        /* images received this run */
    int accepted, flagged, rejected;
    int jobs_failed;     /* given up this run */
    int prompts_written; /* scenes proposed by the writer */
    int prompts_dup;     /* dropped as near-duplicates */
    int servers_set_aside;
    double seconds;
    int complete;        /* every quota met */
    int capped;          /* theme/type slots that stopped short at their job cap
                          * (max_jobs_factor x quota jobs made; each is logged, naming it) */
} px_gen_summary;

/* Runs (or resumes) the campaign into o->pool. Returns PX_OK when it ran to
 * an end (complete or out of budget, see summary), or an error that stopped
 * it (store, disk, writer). Calls progress from the calling thread. */
int px_gen_run(const px_gen_opts *o, px_gen_summary *sum, px_err *err);

/* The campaign of a run recorded in the pool (px_manifest_campaign_run):
 * its JSON parsed as px_gen_campaign_parse does (origin "campaign 'NAME'"),
 * then its quota raises added ({"add": {"SLUG/TYPE": n}, "replace":
 * {"SLUG/TYPE": n}} in run->extra). PX_EINVAL naming the field. */
int px_gen_campaign_from_run(const px_manifest_campaign_run *run, px_gen_campaign *c,
                             px_err *err);
/* The pool's latest campaign run, for `pixpipe generate --out POOL` without
 * a campaign (resuming what the Campaigns page started): *run_id gets its id.
 * PX_ENOTFOUND when the pool has none, PX_EBUSY while it is running in
 * `pixpipe serve`, PX_EINVAL when it is done; err says what to do. */
int px_gen_campaign_from_pool(const char *pool, px_gen_campaign *c, int64_t *run_id, px_err *err);
/* Records how a command-line run of campaign run run_id ended: "done" when
 * complete, else "paused" (resumable from either side). */
int px_gen_campaign_run_ended(const char *pool, int64_t run_id, int complete, px_err *err);

/* One prompt of a dry run, as a job would get it (strings borrowed for the call). */
typedef struct px_gen_prompt_rec {
    const char *theme, *theme_slug, *type; /* type: "interiors" ... */
    const char *scene;                     /* the writer's scene description */
    const char *prompt, *negative;         /* with the type's style suffix and negative */
    const char *subtopic, *writer;         /* the variation asked for; "offline" | "llm" */
} px_gen_prompt_rec;
typedef void (*px_gen_prompt_fn)(void *ctx, const px_gen_prompt_rec *p);

/* `generate --dry-run`: writes the prompts a run of o would write, at most
 * max_prompts (<= 0: every image still needed), and hands each to fn (from
 * the calling thread), round robin over theme x type so a capped preview
 * covers every slot. Nothing is rendered or stored and no render server is
 * used; o->pool (may be NULL) is only read when its manifest exists: its
 * good images and open jobs count against the quotas and its prompts as
 * near-duplicates. sum gets prompts_written, prompts_dup, seconds and
 * complete. Errors: the writer's (an LLM that fails), style, manifest. */
int px_gen_dry_run(const px_gen_opts *o, int max_prompts, px_gen_prompt_fn fn, void *ctx,
                   px_gen_summary *sum, px_err *err);

/* Renders job `id` of the pool again with its recorded prompt and seed and
 * writes it to out_path (PNG with the same metadata). *same (may be NULL)
 * is 1 when the pixels equal the stored image's. */
int px_gen_rerender(const px_gen_opts *o, int64_t id, const char *out_path, int *same,
                    px_err *err);

#ifdef __cplusplus
}
#endif
#endif
