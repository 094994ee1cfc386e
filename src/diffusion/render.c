/*
 * render.c: the public face of the Stable Diffusion engine (px_sd.h). It
 * loads a model's parts once and runs the text-to-image pipeline over them:
 *
 *   prompt, negative -> BPE tokens -> chunks of 75 tokens, each sent to the
 *   text encoder as BOS + 75 + EOS padded to 77, the chunks' outputs
 *   concatenated (AUTOMATIC1111's way with long prompts; the negative is
 *   padded with empty chunks to the prompt's count, or the other way round,
 *   so both contexts have one shape)
 *   -> seeded noise -> per step: UNet on [uncond; cond] as ONE batch-2
 *   forward (uncond first, as diffusers orders it), eps = u + cfg * (c - u),
 *   sampler step, NaN/Inf check
 *   -> VAE decode (tiled above a size) or TAESD -> 8-bit RGB.
 * LCM renders one batch-1 forward per step without guidance (the UNet's
 * guidance embedding stands for it), as diffusers' LCM pipeline does.
 *
 * All scratch memory comes from the model's arena in stack order: the
 * render's own buffers (contexts, latents, image) first, each part's
 * temporaries above them, released as each stage ends. So a second render at
 * the same size allocates nothing, and the arena's peak is the render's.
 * Before any work the render's memory is estimated from the model's shapes
 * (formulas below, checked against the arena's real peak in the tests and
 * the benchmark) and refused when it exceeds what the machine has free.
 */
#include "px_sd.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sd_internal.h"

#define SD_MAX_CHUNKS 8  /* 8 x 75 tokens: far beyond what CLIP attends to usefully */
#define SD_MAX_SIDE 4096 /* pixels */
#define SD_MAX_STEPS 500
#define SD_AUTO_TILE 64                  /* latents (512 pixels) per VAE tile when tiling */
#define SD_AUTO_TILE_AREA (96 * 96)      /* latent area above which the VAE decodes in tiles */
#define SD_OVERHEAD ((uint64_t)96 << 20) /* 1-D parameters, tokenizer, pool, code */

struct px_sd_model {
    px_sd_weights *w;
    const px_sd_config *cfg;
    px_sd_tokenizer *tok;
    px_sd_clip *clip;
    px_sd_unet *unet;
    px_sd_vae *vae;
    px_sd_taesd *taesd;
    px_pool *pool;
    px_nn_arena *arena;
    pthread_mutex_t mu; /* one render (or hash) at a time: pool and arena are shared */
    int threads;
    uint64_t weights_bytes;
    _Atomic uint64_t held; /* the arena's reserved bytes after the last render (for px_sd_plan) */
    char hash[11];         /* "" until first asked */
};

/* ---- loading ------------------------------------------------------------- */

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Bytes of the largest .safetensors in dir (a folder may hold an fp16 and an
 * f32 variant; the loader maps one of them, the estimate assumes the larger). */
static uint64_t largest_safetensors(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    uint64_t best = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 12 || strcmp(e->d_name + l - 12, ".safetensors"))
            continue;
        char p[4096];
        struct stat st;
        if (snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p && stat(p, &st) == 0 &&
            (uint64_t)st.st_size > best)
            best = (uint64_t)st.st_size;
    }
    closedir(d);
    return best;
}

/* Bytes the mapped weights take once touched: the file, or a folder's parts. */
static uint64_t model_bytes(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    if (!S_ISDIR(st.st_mode))
        return (uint64_t)st.st_size;
    static const char *parts[] = {"unet", "vae", "text_encoder"};
    uint64_t sum = 0;
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        char p[4096];
        if (snprintf(p, sizeof p, "%s/%s", path, parts[i]) < (int)sizeof p)
            sum += largest_safetensors(p);
    }
    return sum;
}

/* The tokenizer to load: opts->tokenizer, else the folder's tokenizer/, else opts->vocab. */
static int pick_tokenizer(const char *path, const px_sd_load_opts *o, char *out, size_t cap,
                          px_err *err)
{
    if (o && o->tokenizer && *o->tokenizer) {
        snprintf(out, cap, "%s", o->tokenizer);
        return PX_OK;
    }
    char p[4096];
    if (is_dir(path) && snprintf(p, sizeof p, "%s/tokenizer/vocab.json", path) < (int)sizeof p &&
        is_file(p)) {
        snprintf(out, cap, "%s/tokenizer", path);
        return PX_OK;
    }
    if (o && o->vocab && *o->vocab) {
        snprintf(out, cap, "%s", o->vocab);
        return PX_OK;
    }
    return px_err_set(err, PX_ENOTFOUND,
                      "%s: no CLIP vocabulary (the model has no tokenizer/ folder): give a "
                      "tokenizer folder or bpe_simple_vocab_16e6.txt.gz",
                      path);
}

static int load_parts(px_sd_model *m, const char *path, const px_sd_load_opts *o, px_err *err)
{
    char tok[4096];
    int rc = pick_tokenizer(path, o, tok, sizeof tok, err);
    if (rc == PX_OK && (rc = px_sd_tokenizer_load(tok, &m->tok, err)) != PX_OK)
        px_err_prefix(err, rc, "tokenizer %s", tok);
    if (rc == PX_OK && (px_sd_tokenizer_bos(m->tok) >= m->cfg->clip.vocab ||
                        px_sd_tokenizer_eos(m->tok) >= m->cfg->clip.vocab))
        rc = px_err_set(err, PX_EINVAL,
                        "tokenizer %s: its ids (BOS %d) do not fit the text encoder's vocabulary "
                        "of %d tokens; this model needs its own tokenizer",
                        tok, (int)px_sd_tokenizer_bos(m->tok), m->cfg->clip.vocab);
    if (rc == PX_OK && (m->cfg->clip.max_positions < 3 || m->cfg->clip.max_positions > 1024))
        rc = px_err_set(err, PX_EUNSUPPORTED, "%s: text encoder with %d positions (expected 77)",
                        path, m->cfg->clip.max_positions);
    if (rc == PX_OK && m->cfg->unet.cross_dim != m->cfg->clip.hidden)
        rc = px_err_set(err, PX_EINVAL,
                        "%s: the UNet's cross-attention width %d differs from the text "
                        "encoder's %d",
                        path, m->cfg->unet.cross_dim, m->cfg->clip.hidden);
    if (rc == PX_OK)
        rc = px_sd_clip_create(m->w, &m->clip, err);
    if (rc == PX_OK)
        rc = px_sd_unet_create(m->w, &m->unet, err);
    if (rc == PX_OK)
        rc = px_sd_vae_create(m->w, &m->vae, err);
    if (rc == PX_OK && m->cfg->taesd.present)
        rc = px_sd_taesd_create(m->w, &m->taesd, err);
    if (rc == PX_OK && (px_pool_create(m->threads, &m->pool) != PX_OK ||
                        px_nn_arena_create(0, &m->arena) != PX_OK))
        rc = px_err_set(err, PX_ENOMEM, "%s: cannot start %d compute threads", path, m->threads);
    return rc;
}

int px_sd_model_load(const char *path, const px_sd_load_opts *opts, px_sd_model **out, px_err *err)
{
    if (!out)
        return px_err_set(err, PX_EINVAL, "px_sd_model_load: no output");
    *out = NULL;
    if (!path || !*path)
        return px_err_set(err, PX_EINVAL, "no model path given");
    px_sd_model *m = px_calloc(1, sizeof *m);
    if (!m)
        return px_err_set(err, PX_ENOMEM, "%s: out of memory", path);
    if (pthread_mutex_init(&m->mu, NULL) != 0) {
        free(m);
        return px_err_set(err, PX_ENOMEM, "%s: cannot create a mutex", path);
    }
    m->threads = opts && opts->threads > 0 ? opts->threads : px_cpu_count();
    int rc = px_sd_weights_open(path, opts ? opts->taesd : NULL, &m->w, err);
    if (rc == PX_OK) {
        m->cfg = px_sd_weights_config(m->w);
        m->weights_bytes = model_bytes(path);
        if (opts && opts->taesd)
            m->weights_bytes +=
                is_dir(opts->taesd) ? largest_safetensors(opts->taesd) : model_bytes(opts->taesd);
        rc = load_parts(m, path, opts, err);
    }
    if (rc != PX_OK) {
        px_sd_model_free(m);
        return rc;
    }
    *out = m;
    return PX_OK;
}

void px_sd_model_free(px_sd_model *m)
{
    if (!m)
        return;
    px_sd_taesd_destroy(m->taesd);
    px_sd_vae_destroy(m->vae);
    px_sd_unet_destroy(m->unet);
    px_sd_clip_destroy(m->clip);
    px_sd_tokenizer_destroy(m->tok);
    px_pool_destroy(m->pool);
    px_nn_arena_destroy(m->arena);
    px_sd_weights_close(m->w);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static int size_multiple(const px_sd_config *c)
{
    return 8 << (c->unet.levels - 1);
}

void px_sd_model_describe(const px_sd_model *m, px_sd_model_info *out)
{
    memset(out, 0, sizeof *out);
    const px_sd_config *c = m->cfg;
    out->arch = "SD 1.x";
    out->dtype = px_nn_dtype_name(px_sd_weights_dtype(m->w));
    out->single_file = c->single_file;
    out->lcm = c->unet.time_cond_proj_dim > 0;
    out->has_taesd = m->taesd != NULL;
    out->size_multiple = size_multiple(c);
    out->native_size = 512;
    out->clip_layers = c->clip.layers;
    out->threads = m->threads;
    out->weights_bytes = m->weights_bytes;
    char first[128] = "";
    for (int p = 0; p < PX_SD_TAESD; p++) { /* TAESD files carry an encoder we never run */
        char name[112] = "";
        size_t n = px_sd_weights_unused(m->w, (px_sd_part)p, name, sizeof name);
        if (n && !first[0])
            snprintf(first, sizeof first, "%s: %s", px_sd_part_name((px_sd_part)p), name);
        out->unused_tensors += n;
    }
    memcpy(out->first_unused, first, sizeof first);
}

int px_sd_model_hash(px_sd_model *m, char out[11], px_err *err)
{
    pthread_mutex_lock(&m->mu);
    int rc = PX_OK;
    if (!m->hash[0])
        rc = px_sd_weights_hash(m->w, m->hash, err);
    if (rc == PX_OK)
        memcpy(out, m->hash, 11);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

/* ---- parameters and the memory estimate ------------------------------------ */

void px_sd_params_default(px_sd_params *p)
{
    memset(p, 0, sizeof *p);
    p->seed = -1;
    p->karras = -1;
    p->cfg = -1.0f;
}

/* A render's settings after defaults, rounding and checks. */
typedef struct sd_plan {
    px_sd_sampler_kind kind;
    int karras, steps, guided, batch;
    float cfg;
    int width, height, req_w, req_h, lw, lh, tile, clip_skip;
    size_t n; /* latent floats */
} sd_plan;

static int round_side(int v, int mult)
{
    int r = (v + mult / 2) / mult * mult;
    return r < mult ? mult : r;
}

static int make_plan(const px_sd_model *m, const px_sd_params *p, sd_plan *s, px_err *err)
{
    const px_sd_config *c = m->cfg;
    memset(s, 0, sizeof *s);
    if (!p || !p->prompt)
        return px_err_set(err, PX_EINVAL, "render: no prompt given");
    if (p->sampler && *p->sampler) {
        if (px_sd_sampler_parse(p->sampler, &s->kind) != PX_OK)
            return px_err_set(err, PX_EINVAL,
                              "sampler '%s': expected euler, euler_a, dpmpp_2m or lcm", p->sampler);
        s->karras = p->karras > 0;
    } else {
        s->kind = c->unet.time_cond_proj_dim > 0 ? PX_SD_LCM : PX_SD_DPMPP_2M;
        s->karras = s->kind == PX_SD_LCM ? 0 : p->karras != 0;
    }
    if (s->kind == PX_SD_LCM && s->karras)
        return px_err_set(err, PX_EINVAL, "Karras sigmas do not apply to the lcm sampler");
    int lcm = s->kind == PX_SD_LCM;
    s->steps = p->steps ? p->steps : lcm ? 4 : 20;
    if (s->steps < 1 || s->steps > SD_MAX_STEPS)
        return px_err_set(err, PX_EINVAL, "steps %d: expected 1..%d", s->steps, SD_MAX_STEPS);
    s->cfg = p->cfg >= 0.0f ? p->cfg : lcm ? 8.0f : 7.0f;
    if (!(s->cfg <= 50.0f)) /* NaN too */
        return px_err_set(err, PX_EINVAL, "cfg %g: expected 0..50", (double)s->cfg);
    s->guided = !lcm && s->cfg > 1.0f;
    s->batch = s->guided ? 2 : 1;
    s->req_w = p->width ? p->width : 512;
    s->req_h = p->height ? p->height : 512;
    if (s->req_w < 1 || s->req_h < 1 || s->req_w > SD_MAX_SIDE || s->req_h > SD_MAX_SIDE)
        return px_err_set(err, PX_EINVAL, "size %dx%d: expected 1..%d pixels a side", s->req_w,
                          s->req_h, SD_MAX_SIDE);
    int mult = size_multiple(c);
    s->width = round_side(s->req_w, mult);
    s->height = round_side(s->req_h, mult);
    s->lw = s->width / 8;
    s->lh = s->height / 8;
    s->n = (size_t)c->unet.in_channels * (size_t)s->lw * (size_t)s->lh;
    s->clip_skip = p->clip_skip <= 1 ? 1 : p->clip_skip;
    if (s->clip_skip > c->clip.layers)
        return px_err_set(err, PX_EINVAL, "clip skip %d: this text encoder has %d layers",
                          p->clip_skip, c->clip.layers);
    if (p->use_taesd && !m->taesd)
        return px_err_set(err, PX_EUNSUPPORTED, "TAESD decode asked for but no TAESD model loaded");
    s->tile = p->vae_tile > 0                                         ? p->vae_tile
              : p->vae_tile == 0 && s->lw * s->lh > SD_AUTO_TILE_AREA ? SD_AUTO_TILE
                                                                      : 0;
    if (s->tile > 0 && s->tile < 4)
        return px_err_set(err, PX_EINVAL, "VAE tile of %d latents: expected 4 or more", s->tile);
    if (s->tile >= s->lw && s->tile >= s->lh)
        s->tile = 0;
    if (p->latent_out && p->latent_out_len < s->n)
        return px_err_set(err, PX_EINVAL, "latent_out holds %zu floats, %dx%d needs %zu",
                          p->latent_out_len, s->width, s->height, s->n);
    return PX_OK;
}

/* Scratch of one UNet forward (floats): the skip connections kept for the up
 * path, plus the largest working set of one block, taken as 10 C per token
 * for a transformer block on C-wide tokens (q k v, attention output, part of
 * the GEGLU's 8 C) and 6 C per pixel for a resnet. Measured on SD 1.5 f16,
 * batch 2 (arena peak, conv weight widening included): 119 MiB at 256x256,
 * 252 MiB at 512x512; this formula plus kernel_floats gives 1.3-1.6x that. */
static double unet_floats(const px_sd_unet_config *u, int batch, int lh, int lw, int nctx)
{
    double hw = (double)lh * lw, skips = u->block_out[0] * hw, work = 0;
    for (int l = 0; l < u->levels; l++) {
        double a = ldexp(hw, -2 * l), ch = u->block_out[l];
        skips += ch * a * (u->layers_per_block + (l < u->levels - 1));
        double wk = ch * a * (u->cross_attn[l] ? 10.0 : 6.0) + ch * nctx;
        if (wk > work)
            work = wk;
    }
    return batch * (skips + work);
}

/* Scratch of a VAE decode of an h x w latent (floats): three maps of each
 * level's channel count at its output resolution (the running activation and
 * a resnet's temporaries; see vae.c). At 512x512 that is 768 MiB where the
 * process grew by about 600 MiB during the decode (measured, SD 1.5). */
static double vae_floats(const px_sd_vae_config *v, int lh, int lw)
{
    double best = 0;
    for (int i = 0; i < v->levels; i++) {
        double ch = v->block_out[v->levels - 1 - i];
        int up = i < v->levels - 1 ? i + 1 : i;
        double f = 3.0 * ch * ldexp((double)lh * lw, 2 * up);
        if (f > best)
            best = f;
    }
    return best;
}

/* Scratch the kernels take whatever the size (floats): im2col tiles of up to
 * 32 MiB per thread and, in the UNet, a conv layer's f16/bf16 weights widened
 * to f32 a layer at a time (the largest is a deepest-level up-block resnet
 * conv, C out x 2C in x 3x3: 118 MiB for SD 1.x). */
static double kernel_floats(const px_sd_model *m, int unet)
{
    const px_sd_unet_config *u = &m->cfg->unet;
    double widest = 0, conv = 0;
    for (int l = 0; l < u->levels; l++)
        widest = fmax(widest, (double)u->block_out[l]);
    if (unet && px_sd_weights_dtype(m->w) != PX_NN_F32)
        conv = widest * 2.0 * widest * 9.0;
    return conv + (double)m->threads * (8 << 20);
}

/* Reads "Key: N kB" from /proc/meminfo, in bytes; 0 if absent. */
static uint64_t meminfo(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    uint64_t v = 0;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            v = strtoull(line + kl + 1, NULL, 10) * 1024;
            break;
        }
    fclose(f);
    return v;
}

static uint64_t read_u64_file(const char *path, int *ok)
{
    char buf[64] = "";
    FILE *f = fopen(path, "r");
    *ok = 0;
    if (!f)
        return 0;
    if (fgets(buf, sizeof buf, f) && buf[0] >= '0' && buf[0] <= '9')
        *ok = 1;
    fclose(f);
    return *ok ? strtoull(buf, NULL, 10) : 0;
}

/* What a render may use: MemAvailable, or less when a cgroup (v2 or v1) limit
 * leaves less room. Weights counted by the estimate are partly page cache,
 * which MemAvailable includes, so the comparison needs no correction. */
static uint64_t memory_available(void)
{
    uint64_t avail = meminfo("MemAvailable");
    int ok1, ok2;
    uint64_t max = read_u64_file("/sys/fs/cgroup/memory.max", &ok1);
    uint64_t cur = read_u64_file("/sys/fs/cgroup/memory.current", &ok2);
    if (!ok1) {
        max = read_u64_file("/sys/fs/cgroup/memory/memory.limit_in_bytes", &ok1);
        cur = read_u64_file("/sys/fs/cgroup/memory/memory.usage_in_bytes", &ok2);
    }
    if (ok1 && ok2 && max > cur && max - cur < avail)
        avail = max - cur;
    return avail;
}

static void estimate(px_sd_model *m, const px_sd_params *p, const sd_plan *s, px_sd_memory *mem)
{
    const px_sd_config *c = m->cfg;
    int nctx = SD_MAX_CHUNKS * c->clip.max_positions; /* the worst case: prompt not read yet */
    double own = (double)s->batch * ((double)nctx * c->clip.hidden + 3.0 * s->n) + 2.0 * s->n;
    double unet = unet_floats(&c->unet, s->batch, s->lh, s->lw, nctx);
    double img = 3.0 * s->width * s->height, dec;
    if (p->use_taesd) /* TAESD: a few 64-wide maps at full resolution */
        dec = 4.0 * c->taesd.channels * s->width * s->height;
    else if (s->tile)
        dec = vae_floats(&c->vae, s->tile, s->tile) + s->width + s->height;
    else
        dec = vae_floats(&c->vae, s->lh, s->lw);
    double text = 16.0 * c->clip.max_positions * c->clip.intermediate;
    double peak =
        own + fmax(fmax(unet + kernel_floats(m, 1), text), img + dec + kernel_floats(m, 0));
    mem->weights = m->weights_bytes;
    mem->activations = (uint64_t)(peak * 4.0 * 1.15); /* 15%: attention tiles, alignment */
    mem->held = atomic_load(&m->held);
    mem->total = mem->weights + mem->activations + SD_OVERHEAD;
    mem->available = p->mem_limit ? p->mem_limit : memory_available();
}

/* Fills the plan-like fields of r. */
static void plan_result(const sd_plan *s, px_sd_result *r)
{
    r->steps = s->steps;
    r->cfg = s->cfg;
    r->guided = s->guided;
    snprintf(r->sampler, sizeof r->sampler, "%s", px_sd_sampler_name(s->kind));
    snprintf(r->sampler_a1111, sizeof r->sampler_a1111, "%s%s", px_sd_sampler_a1111(s->kind),
             s->karras ? " Karras" : "");
    r->karras = s->karras;
    r->width = s->width;
    r->height = s->height;
    r->req_width = s->req_w;
    r->req_height = s->req_h;
    r->rounded = s->width != s->req_w || s->height != s->req_h;
    r->clip_skip = s->clip_skip;
    r->vae_tile = s->tile;
}

int px_sd_plan(px_sd_model *m, const px_sd_params *p, px_sd_result *plan, px_err *err)
{
    sd_plan s;
    int rc = make_plan(m, p, &s, err);
    if (rc != PX_OK)
        return rc;
    memset(plan, 0, sizeof *plan);
    plan_result(&s, plan);
    plan->taesd = p->use_taesd != 0;
    estimate(m, p, &s, &plan->memory);
    return PX_OK;
}

/* Is the estimate more than the machine can give? Scratch the arena holds
 * already is ours: only the rest must still be found. */
static int check_memory(const px_sd_memory *mem, int w, int h, px_err *err)
{
    uint64_t extra = mem->activations > mem->held ? mem->activations - mem->held : 0;
    uint64_t need = mem->weights + extra + SD_OVERHEAD;
    if (need <= mem->available || mem->available == 0) /* 0: the OS did not say */
        return PX_OK;
    return px_err_set(err, PX_ELIMIT,
                      "%dx%d needs about %llu MiB (weights %llu MiB + working memory %llu MiB), "
                      "only %llu MiB available: try a smaller size",
                      w, h, (unsigned long long)(need >> 20),
                      (unsigned long long)(mem->weights >> 20),
                      (unsigned long long)((mem->activations + SD_OVERHEAD) >> 20),
                      (unsigned long long)(mem->available >> 20));
}

/* ---- text ------------------------------------------------------------------- */

/* Token ids of text as chunks of 77: BOS, up to 75 tokens, EOS, padding.
 * *ids is malloc'd (*nchunks * len entries); at least one chunk. */
static int tokenize_chunks(const px_sd_model *m, const char *text, int32_t **ids, int *nchunks,
                           int *ntokens, px_err *err)
{
    const int len = m->cfg->clip.max_positions, body = len - 2;
    int32_t *raw = NULL;
    size_t n = 0;
    int rc = px_sd_tokenize(m->tok, text ? text : "", &raw, &n, err);
    if (rc != PX_OK)
        return rc;
    size_t tokens = n >= 2 ? n - 2 : 0; /* without BOS and EOS */
    size_t chunks = tokens ? (tokens + (size_t)body - 1) / (size_t)body : 1;
    if (chunks > SD_MAX_CHUNKS) {
        free(raw);
        return px_err_set(err, PX_ELIMIT, "%zu tokens, at most %d (%d chunks of %d)", tokens,
                          SD_MAX_CHUNKS * body, SD_MAX_CHUNKS, body);
    }
    int32_t *out = px_malloc(chunks * (size_t)len * sizeof *out);
    if (!out) {
        free(raw);
        return px_err_set(err, PX_ENOMEM, "tokens: out of memory");
    }
    const int32_t bos = px_sd_tokenizer_bos(m->tok), eos = px_sd_tokenizer_eos(m->tok);
    for (size_t c = 0; c < chunks; c++) {
        int32_t *row = out + c * (size_t)len;
        size_t first = c * (size_t)body, k = tokens - first;
        if (k > (size_t)body)
            k = (size_t)body;
        row[0] = bos;
        memcpy(row + 1, raw + 1 + first, k * sizeof *row);
        row[1 + k] = eos;
        for (int i = (int)k + 2; i < len; i++)
            row[i] = m->cfg->clip.pad;
    }
    free(raw);
    *ids = out;
    *nchunks = (int)chunks;
    *ntokens = (int)tokens;
    return PX_OK;
}

/* Copies nchunks chunks of ids into rows (nchunks, 77); chunks past `have`
 * (padding of the shorter prompt) are the empty prompt. */
static void fill_chunks(const px_sd_model *m, const int32_t *ids, int have, int nchunks,
                        int32_t *rows)
{
    const int len = m->cfg->clip.max_positions;
    for (int c = 0; c < nchunks; c++) {
        int32_t *row = rows + (size_t)c * len;
        if (c < have) {
            memcpy(row, ids + (size_t)c * len, (size_t)len * sizeof *row);
            continue;
        }
        row[0] = px_sd_tokenizer_bos(m->tok);
        row[1] = px_sd_tokenizer_eos(m->tok);
        for (int i = 2; i < len; i++)
            row[i] = m->cfg->clip.pad;
    }
}

/* Encodes the negative chunks (when guided) and the prompt's chunks in ONE
 * text-encoder pass, so the weights are streamed once: rows are
 * [negative chunks; prompt chunks], which is exactly ctx's (batch, nctx,
 * hidden) layout. */
static int encode_all(px_sd_model *m, const int32_t *pos, int npos, const int32_t *neg, int nneg,
                      int chunks, int guided, int clip_skip, float *ctx, px_err *err)
{
    const int len = m->cfg->clip.max_positions, nrows = (guided ? 2 : 1) * chunks;
    int32_t *rows = px_malloc((size_t)nrows * (size_t)len * sizeof *rows);
    if (!rows)
        return px_err_set(err, PX_ENOMEM, "text context: out of memory");
    if (guided)
        fill_chunks(m, neg, nneg, chunks, rows);
    fill_chunks(m, pos, npos, chunks, rows + (size_t)(guided ? chunks : 0) * len);
    int rc = px_sd_clip_encode_batch(m->clip, rows, nrows, len, clip_skip, ctx, NULL, m->arena,
                                     m->pool, err);
    free(rows);
    return rc;
}

/* ---- the render ------------------------------------------------------------- */

typedef struct sd_run {
    px_sd_model *m;
    const px_sd_params *p;
    sd_plan s;
    px_sd_result *r;
    double t0;
    int nctx;      /* context tokens (chunks * 77) */
    float *ctx;    /* (batch, nctx, hidden): [uncond; cond] when guided, else cond */
    float *latent; /* (n) */
    float *x_in;   /* (batch, n) the UNet's input */
    float *u_out;  /* (batch, n) the UNet's output */
    float *eps;    /* (n) guided prediction */
    float *tvec;   /* (batch) timesteps */
    float *tcond;  /* (batch, time_cond_proj_dim) or NULL */
} sd_run;

static double flops_g(void)
{
    return (double)px_nn_flops() * 1e-9;
}

static int run_text(sd_run *x, px_err *err)
{
    px_sd_model *m = x->m;
    const int len = m->cfg->clip.max_positions, hid = m->cfg->clip.hidden;
    int32_t *pos = NULL, *neg = NULL;
    int npos = 0, nneg = 0, tpos = 0, tneg = 0;
    int rc = tokenize_chunks(m, x->p->prompt, &pos, &npos, &tpos, err);
    if (rc != PX_OK)
        return px_err_prefix(err, rc, "prompt");
    if (x->s.guided &&
        (rc = tokenize_chunks(m, x->p->negative, &neg, &nneg, &tneg, err)) != PX_OK) {
        free(pos);
        return px_err_prefix(err, rc, "negative prompt");
    }
    int chunks = npos > nneg ? npos : nneg;
    x->nctx = chunks * len;
    x->ctx = px_nn_arena_floats(m->arena, (size_t)x->s.batch * x->nctx * hid);
    if (!x->ctx)
        rc = px_err_set(err, PX_ENOMEM, "text context: out of memory");
    if (rc == PX_OK)
        rc = encode_all(m, pos, npos, neg, nneg, chunks, x->s.guided, x->s.clip_skip, x->ctx, err);
    free(pos);
    free(neg);
    x->r->chunks = chunks;
    x->r->prompt_tokens = tpos;
    x->r->negative_tokens = tneg;
    return rc;
}

/* The render's own buffers, below every part's scratch on the arena. */
static int alloc_run(sd_run *x, px_err *err)
{
    px_nn_arena *a = x->m->arena;
    const int b = x->s.batch, tdim = x->m->cfg->unet.time_cond_proj_dim;
    x->latent = px_nn_arena_floats(a, x->s.n);
    x->x_in = px_nn_arena_floats(a, (size_t)b * x->s.n);
    x->u_out = px_nn_arena_floats(a, (size_t)b * x->s.n);
    x->eps = px_nn_arena_floats(a, x->s.n);
    x->tvec = px_nn_arena_floats(a, (size_t)b);
    x->tcond = tdim > 0 ? px_nn_arena_floats(a, (size_t)b * tdim) : NULL;
    if (!x->latent || !x->x_in || !x->u_out || !x->eps || !x->tvec || (tdim > 0 && !x->tcond))
        return px_err_set(err, PX_ENOMEM, "latents: out of memory");
    for (int i = 0; tdim > 0 && i < b; i++) /* diffusers feeds w = cfg - 1 to the embedding */
        px_sd_guidance_embedding(x->s.cfg, tdim, x->tcond + (size_t)i * tdim);
    return PX_OK;
}

/* 0 when every value is finite, else 1 (NaN seen) or 2 (only infinities). */
static int non_finite(const float *v, size_t n)
{
    int inf = 0;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            if (isnan(v[i]))
                return 1;
            inf = 1;
        }
    return inf ? 2 : 0;
}

/* One sampler step i: the UNet on the scaled latent (both halves of the batch
 * see the same input), guidance, the sampler's update. */
static int run_step(sd_run *x, px_sd_sampler *smp, int i, px_err *err)
{
    px_sd_model *m = x->m;
    const size_t n = x->s.n;
    const int b = x->s.batch;
    const float t = px_sd_sampler_timestep(smp, i);
    px_sd_sampler_scale_input(smp, i, x->latent, x->x_in);
    for (int k = 0; k < b; k++) {
        if (k)
            memcpy(x->x_in + (size_t)k * n, x->x_in, n * sizeof *x->x_in);
        x->tvec[k] = t;
    }
    int rc = px_sd_unet_forward(m->unet, x->x_in, b, x->s.lh, x->s.lw, x->tvec, x->ctx, x->nctx,
                                x->tcond, x->u_out, m->arena, m->pool, err);
    if (rc != PX_OK)
        return px_err_prefix(err, rc, "UNet at step %d", i + 1);
    const float *eps = x->u_out;
    if (x->s.guided) {
        const float *u = x->u_out, *c = x->u_out + n, g = x->s.cfg;
        for (size_t j = 0; j < n; j++)
            x->eps[j] = u[j] + g * (c[j] - u[j]);
        eps = x->eps;
    }
    if (px_sd_sampler_step(smp, i, eps, x->latent) != PX_OK)
        return px_err_set(err, PX_ENOMEM, "sampler step %d: out of memory", i + 1);
    int bad = non_finite(x->latent, n);
    if (bad)
        return px_err_set(err, PX_ECORRUPT,
                          "model produced %s at step %d of %d (the latent is no longer finite; "
                          "nothing was decoded)",
                          bad == 1 ? "NaN" : "Inf", i + 1, x->s.steps);
    return PX_OK;
}

static int report(sd_run *x, px_sd_stage stage, int step, double ms_step, px_err *err)
{
    if (!x->p->progress)
        return PX_OK;
    px_sd_progress pr = {.stage = stage,
                         .step = step,
                         .steps = x->s.steps,
                         .ms_step = ms_step,
                         .ms_elapsed = px_now_ms() - x->t0};
    if (!x->p->progress(x->p->progress_ctx, &pr))
        return PX_OK;
    if (stage == PX_SD_STAGE_SAMPLE)
        return px_err_set(err, PX_ECLOSED, "render cancelled at step %d", step);
    return px_err_set(err, PX_ECLOSED, "render cancelled before %s",
                      stage == PX_SD_STAGE_TEXT ? "the text encoder" : "decoding");
}

static int run_sampler(sd_run *x, uint64_t seed, px_err *err)
{
    px_sd_rng rng;
    px_sd_rng_seed(&rng, seed);
    px_sd_sampler *smp = NULL;
    int rc = px_sd_sampler_create(x->s.kind, x->s.steps, x->s.karras, x->m->cfg, x->s.n, &rng, &smp,
                                  err);
    if (rc != PX_OK)
        return rc;
    px_sd_sampler_init(smp, x->latent);
    for (int i = 0; i < x->s.steps && rc == PX_OK; i++) {
        double t = px_now_ms();
        rc = run_step(x, smp, i, err);
        if (rc == PX_OK)
            rc = report(x, PX_SD_STAGE_SAMPLE, i + 1, px_now_ms() - t, err);
    }
    px_sd_sampler_destroy(smp);
    return rc;
}

/* [-1, 1] planar floats -> 8-bit RGB, as diffusers' (x / 2 + 0.5).clamp(0, 1) * 255, rounded. */
static void to_rgb8(const float *img, int w, int h, px_image *out)
{
    const size_t plane = (size_t)w * h;
    for (int y = 0; y < h; y++) {
        uint8_t *row = out->px + (size_t)y * out->stride;
        for (int xx = 0; xx < w; xx++)
            for (int c = 0; c < 3; c++) {
                float v = img[c * plane + (size_t)y * w + xx] * 0.5f + 0.5f;
                v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
                row[xx * 3 + c] = (uint8_t)lrintf(v * 255.0f);
            }
    }
}

static int run_decode(sd_run *x, px_image *out, px_err *err)
{
    px_sd_model *m = x->m;
    const int W = x->s.width, H = x->s.height;
    float *img = px_nn_arena_floats(m->arena, (size_t)3 * W * H);
    if (!img)
        return px_err_set(err, PX_ENOMEM, "image %dx%d: out of memory", W, H);
    int rc;
    if (x->p->use_taesd) {
        rc = px_sd_taesd_decode(m->taesd, x->latent, x->s.lh, x->s.lw, img, m->arena, m->pool, err);
    } else {
        /* the VAE takes latents divided by its scaling factor; x_in is free now */
        const float inv = 1.0f / m->cfg->vae.scaling_factor;
        for (size_t j = 0; j < x->s.n; j++)
            x->x_in[j] = x->latent[j] * inv;
        rc = px_sd_vae_decode(m->vae, x->x_in, x->s.lh, x->s.lw, x->s.tile, img, m->arena, m->pool,
                              err);
    }
    if (rc != PX_OK)
        return px_err_prefix(err, rc, "%s decode", x->p->use_taesd ? "TAESD" : "VAE");
    if (non_finite(img, (size_t)3 * W * H))
        return px_err_set(err, PX_ECORRUPT, "model produced NaN in the %s decoder",
                          x->p->use_taesd ? "TAESD" : "VAE");
    if (px_image_alloc(out, W, H, 3) != PX_OK)
        return px_err_set(err, PX_ENOMEM, "image %dx%d: out of memory", W, H);
    to_rgb8(img, W, H, out);
    return PX_OK;
}

static uint64_t random_seed(void)
{
    uint32_t v = 0;
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0 || read(fd, &v, sizeof v) != (ssize_t)sizeof v) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        v = (uint32_t)(ts.tv_nsec ^ ts.tv_sec ^ (long)getpid() * 2654435761u);
    }
    if (fd >= 0)
        close(fd);
    return v;
}

/* The stages, timed; called with the model's lock held. */
static int render_locked(sd_run *x, px_image *out, px_err *err)
{
    px_sd_result *r = x->r;
    px_sd_model *m = x->m;
    uint64_t seed = x->p->seed < 0 ? random_seed() : (uint64_t)x->p->seed;
    r->seed = (int64_t)seed;
    int rc = m->hash[0] ? PX_OK : px_sd_weights_hash(m->w, m->hash, err);
    if (rc != PX_OK)
        return rc;
    memcpy(r->model_hash, m->hash, sizeof r->model_hash);
    x->t0 = px_now_ms();
    double g0 = flops_g(), t1, t2;
    rc = report(x, PX_SD_STAGE_TEXT, 0, 0, err);
    if (rc == PX_OK)
        rc = run_text(x, err);
    r->ms_text = (t1 = px_now_ms()) - x->t0;
    r->gflop_text = flops_g() - g0;
    if (rc == PX_OK)
        r->gflop_unet_forward =
            px_sd_unet_flops(m->unet, x->s.batch, x->s.lh, x->s.lw, x->nctx) * 1e-9;
    if (rc == PX_OK)
        rc = alloc_run(x, err);
    if (rc == PX_OK)
        rc = run_sampler(x, seed, err);
    r->ms_sample = (t2 = px_now_ms()) - t1;
    r->gflop_sample = flops_g() - g0 - r->gflop_text;
    if (rc == PX_OK && x->p->latent_out)
        memcpy(x->p->latent_out, x->latent, x->s.n * sizeof *x->latent);
    if (rc == PX_OK)
        rc = report(x, PX_SD_STAGE_DECODE, 0, 0, err);
    if (rc == PX_OK)
        rc = run_decode(x, out, err);
    r->ms_decode = px_now_ms() - t2;
    r->gflop_decode = flops_g() - g0 - r->gflop_text - r->gflop_sample;
    r->ms_total = px_now_ms() - x->t0;
    return rc;
}

int px_sd_render(px_sd_model *m, const px_sd_params *p, px_image *out, px_sd_result *info,
                 px_err *err)
{
    if (!m || !out)
        return px_err_set(err, PX_EINVAL, "px_sd_render: no model or output");
    memset(out, 0, sizeof *out);
    px_sd_result local;
    sd_run x = {.m = m, .p = p, .r = info ? info : &local};
    memset(x.r, 0, sizeof *x.r);
    int rc = make_plan(m, p, &x.s, err);
    if (rc != PX_OK)
        return rc;
    plan_result(&x.s, x.r);
    x.r->taesd = p->use_taesd != 0;
    pthread_mutex_lock(&m->mu);
    estimate(m, p, &x.s, &x.r->memory);
    rc = check_memory(&x.r->memory, x.s.width, x.s.height, err);
    size_t mark = px_nn_arena_mark(m->arena);
    if (rc == PX_OK)
        rc = render_locked(&x, out, err);
    px_nn_arena_release(m->arena, mark);
    x.r->arena_peak = px_nn_arena_peak(m->arena);
    atomic_store(&m->held, px_nn_arena_reserved(m->arena));
    pthread_mutex_unlock(&m->mu);
    if (rc != PX_OK)
        px_image_free(out);
    return rc;
}

/* ---- metadata ----------------------------------------------------------------- */

char *px_sd_a1111_parameters(const px_sd_params *p, const px_sd_result *r, const char *model_name)
{
    const char *neg = p->negative ? p->negative : "";
    size_t cap = strlen(p->prompt) + strlen(neg) + (model_name ? strlen(model_name) : 0) + 512;
    char *s = px_malloc(cap);
    if (!s)
        return NULL;
    int k = snprintf(s, cap, "%s\n", p->prompt);
    if (*neg)
        k += snprintf(s + k, cap - (size_t)k, "Negative prompt: %s\n", neg);
    k += snprintf(s + k, cap - (size_t)k,
                  "Steps: %d, Sampler: %s, CFG scale: %g, Seed: %lld, Size: %dx%d", r->steps,
                  r->sampler_a1111, (double)r->cfg, (long long)r->seed, r->width, r->height);
    if (r->model_hash[0])
        k += snprintf(s + k, cap - (size_t)k, ", Model hash: %s", r->model_hash);
    if (model_name && *model_name)
        k += snprintf(s + k, cap - (size_t)k, ", Model: %s", model_name);
    if (r->clip_skip > 1)
        snprintf(s + k, cap - (size_t)k, ", Clip skip: %d", r->clip_skip);
    return s;
}
