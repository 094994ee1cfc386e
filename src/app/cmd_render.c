/*
 * `pixpipe render`: one image from a text prompt with a Stable Diffusion 1.x
 * model, rendered in-process on the CPU (src/diffusion, px_sd.h). Argument
 * parsing and wiring only.
 *
 * The output file's extension picks its format (.png, .jpg/.jpeg, .webp); it
 * carries the AUTOMATIC1111 "parameters" text and our JSON record, exactly
 * as pool images do (px_image_encode_meta), and is written atomically. On a
 * terminal, stderr shows a progress bar per sampler step; Ctrl-C stops at
 * the end of the current step and writes nothing.
 *
 * The CLIP vocabulary: --tokenizer wins; else a diffusers folder's own
 * tokenizer/; else models/bpe_simple_vocab_16e6.txt.gz, looked for where the
 * face model is (px_anon_find_model: $PIXPIPE_MODEL_DIR, beside the binary,
 * the install prefix, the source tree).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "anon/px_anon.h"
#include "commands.h"
#include "core/px_core.h"
#include "diffusion/px_sd.h"
#include "image/px_image.h"

#define CLIP_VOCAB "bpe_simple_vocab_16e6.txt.gz"

typedef struct render_opts {
    const char *model, *out, *tokenizer, *taesd;
    px_sd_params p;
    int threads, quality, json, quiet, verbose;
    px_format format;
} render_opts;

static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: pixpipe render --model PATH --prompt TEXT -o FILE [options]\n"
        "Renders one image with a Stable Diffusion 1.x model on the CPU.\n"
        "\n"
        "Model:\n"
        "      --model PATH       diffusers folder (model_index.json, unet/, vae/, text_encoder/,\n"
        "                         tokenizer/) or one .safetensors checkpoint (SD 1.4/1.5 and\n"
        "                         fine-tunes, LCM-distilled SD 1.5); pickles (.ckpt) are refused\n"
        "      --tokenizer DIR    CLIP vocabulary: a folder with vocab.json + merges.txt, or\n"
        "                         " CLIP_VOCAB " (default: the model folder's tokenizer/,\n"
        "                         else " CLIP_VOCAB " from $PIXPIPE_MODEL_DIR or models/)\n"
        "      --taesd PATH       decode with this TAESD model (fast, a little softer)\n"
        "      --threads N        CPU threads (default: all cores)\n"
        "\n"
        "Image:\n"
        "      --prompt TEXT      what to draw; over 75 tokens it is encoded in 75-token chunks\n"
        "      --negative TEXT    what to avoid (default: nothing)\n"
        "      --width W          pixels (default 512); rounded to a multiple of 64\n"
        "      --height H         pixels (default 512); rounded to a multiple of 64\n"
        "      --steps N          sampler steps (default 20; lcm: 4)\n"
        "      --cfg X            guidance scale 0..50 (default 7; lcm: 8); 1 or less: no\n"
        "                         negative prompt pass, about twice as fast\n"
        "      --sampler NAME     euler, euler_a, dpmpp_2m or lcm (default: dpmpp_2m with\n"
        "                         Karras sigmas; lcm for an LCM-distilled model)\n"
        "      --karras           Karras sigma spacing with the sampler named\n"
        "      --seed N           noise seed (default: random, printed); the same seed gives\n"
        "                         the same image as diffusers on a CPU\n"
        "      --clip-skip N      use the text encoder's N-th layer from the end (default 1)\n"
        "      --vae-tile N       decode the VAE in tiles of N latents (8N pixels; default:\n"
        "                         whole up to 768x768, tiles of 64 above); 0: never tile\n"
        "\n"
        "Output:\n"
        "  -o, --output FILE      .png, .jpg or .webp; carries the A1111 parameters and our JSON\n"
        "      --quality N        JPEG/WebP quality 1..100 (default 92)\n"
        "      --json             print the render's record as one JSON line on stdout\n"
        "  -q, --quiet            only errors on stderr\n"
        "  -v, --verbose          model facts, memory estimate and stage timings\n"
        "  -h, --help             this text\n"
        "\n"
        "Exit status: 0 written, 1 render failed, 2 bad command line, 3 cannot start.\n"
        "See docs/render.md for models, licences, samplers and memory.\n");
}

static int bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "pixpipe render: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nrun 'pixpipe render --help' for the options\n");
    return PX_EXIT_USAGE;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_float(const char *s, float lo, float hi, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = v;
    return 0;
}

enum {
    OPT_MODEL = 256,
    OPT_PROMPT,
    OPT_NEGATIVE,
    OPT_WIDTH,
    OPT_HEIGHT,
    OPT_STEPS,
    OPT_CFG,
    OPT_SAMPLER,
    OPT_KARRAS,
    OPT_SEED,
    OPT_CLIP_SKIP,
    OPT_TAESD,
    OPT_TOKENIZER,
    OPT_THREADS,
    OPT_QUALITY,
    OPT_JSON,
    OPT_VAE_TILE
};

/* A numeric option into *dst; 0 or a usage error. */
static int num_opt(int c, const char *arg, render_opts *o)
{
    long v = 0;
    float f = 0;
    int ok = 1;
    switch (c) {
    case OPT_WIDTH:
    case OPT_HEIGHT:
        ok = !parse_long(arg, 1, 4096, &v);
        if (ok)
            *(c == OPT_WIDTH ? &o->p.width : &o->p.height) = (int)v;
        break;
    case OPT_STEPS:
        ok = !parse_long(arg, 1, 500, &v);
        o->p.steps = (int)v;
        break;
    case OPT_CFG:
        ok = !parse_float(arg, 0.0f, 50.0f, &f);
        o->p.cfg = f;
        break;
    case OPT_SEED:
        ok = !parse_long(arg, 0, LONG_MAX, &v);
        o->p.seed = v;
        break;
    case OPT_CLIP_SKIP:
        ok = !parse_long(arg, 1, 24, &v);
        o->p.clip_skip = (int)v;
        break;
    case OPT_THREADS:
        ok = !parse_long(arg, 1, 1024, &v);
        o->threads = (int)v;
        break;
    case OPT_QUALITY:
        ok = !parse_long(arg, 1, 100, &v);
        o->quality = (int)v;
        break;
    case OPT_VAE_TILE:
        ok = !parse_long(arg, 0, 512, &v) && (v == 0 || v >= 4);
        o->p.vae_tile = v ? (int)v : -1;
        break;
    }
    return ok ? 0 : -1;
}

static const char *opt_name(int c, const struct option *lo)
{
    for (; lo->name; lo++)
        if (lo->val == c)
            return lo->name;
    return "?";
}

static int parse_args(int argc, char **argv, render_opts *o)
{
    static const struct option lo[] = {
        {"model", required_argument, NULL, OPT_MODEL},
        {"prompt", required_argument, NULL, OPT_PROMPT},
        {"negative", required_argument, NULL, OPT_NEGATIVE},
        {"width", required_argument, NULL, OPT_WIDTH},
        {"height", required_argument, NULL, OPT_HEIGHT},
        {"steps", required_argument, NULL, OPT_STEPS},
        {"cfg", required_argument, NULL, OPT_CFG},
        {"sampler", required_argument, NULL, OPT_SAMPLER},
        {"karras", no_argument, NULL, OPT_KARRAS},
        {"seed", required_argument, NULL, OPT_SEED},
        {"clip-skip", required_argument, NULL, OPT_CLIP_SKIP},
        {"taesd", required_argument, NULL, OPT_TAESD},
        {"tokenizer", required_argument, NULL, OPT_TOKENIZER},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"vae-tile", required_argument, NULL, OPT_VAE_TILE},
        {"output", required_argument, NULL, 'o'},
        {"quality", required_argument, NULL, OPT_QUALITY},
        {"json", no_argument, NULL, OPT_JSON},
        {"quiet", no_argument, NULL, 'q'},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    px_sd_params_default(&o->p);
    o->quality = 92;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":o:qvh", lo, NULL)) != -1) {
        switch (c) {
        case OPT_MODEL:
            o->model = optarg;
            break;
        case OPT_PROMPT:
            o->p.prompt = optarg;
            break;
        case OPT_NEGATIVE:
            o->p.negative = optarg;
            break;
        case OPT_SAMPLER:
            o->p.sampler = optarg;
            break;
        case OPT_KARRAS:
            o->p.karras = 1;
            break;
        case OPT_TAESD:
            o->taesd = optarg;
            o->p.use_taesd = 1;
            break;
        case OPT_TOKENIZER:
            o->tokenizer = optarg;
            break;
        case OPT_JSON:
            o->json = 1;
            break;
        case 'o':
            o->out = optarg;
            break;
        case 'q':
            o->quiet = 1;
            break;
        case 'v':
            o->verbose = 1;
            break;
        case 'h':
            usage(stdout);
            return -1;
        case ':':
            return bad_usage("%s needs a value", argv[optind - 1]);
        case '?':
            return bad_usage("unknown option '%s'", argv[optind - 1]);
        default:
            if (num_opt(c, optarg, o)) {
                char msg[300];
                snprintf(msg, sizeof msg, "--%s: bad value '%.200s'", opt_name(c, lo), optarg);
                return bad_usage("%s", msg);
            }
        }
    }
    if (optind < argc)
        return bad_usage("unexpected argument '%s'", argv[optind]);
    if (!o->model)
        return bad_usage("%s", "--model PATH is required");
    if (!o->p.prompt)
        return bad_usage("%s", "--prompt TEXT is required");
    if (!o->out)
        return bad_usage("%s", "-o FILE is required");
    o->format = px_format_from_path(o->out);
    if (o->format == PX_FMT_UNKNOWN)
        return bad_usage("output '%s': the name must end in .png, .jpg, .jpeg or .webp", o->out);
    return 0;
}

/* ---- progress ------------------------------------------------------------------ */

typedef struct progress_ctx {
    int bar;   /* draw a bar on stderr (a terminal, not --quiet) */
    int drawn; /* a bar line is on screen */
    int verbose;
} progress_ctx;

static int on_progress(void *ctx, const px_sd_progress *p)
{
    progress_ctx *c = ctx;
    if (c->bar && p->stage == PX_SD_STAGE_SAMPLE) {
        enum { WIDTH = 30 };
        char bar[WIDTH + 1];
        int fill = p->step * WIDTH / p->steps;
        for (int i = 0; i < WIDTH; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[WIDTH] = '\0';
        double per = p->ms_elapsed / 1000.0 / p->step; /* includes the text encoder, once */
        fprintf(stderr, "\r  step %d/%d [%s] %.1f s/step, %.0f s left  ", p->step, p->steps, bar,
                p->ms_step / 1000.0, per * (p->steps - p->step));
        c->drawn = 1;
    } else if (c->bar && p->stage == PX_SD_STAGE_DECODE) {
        fprintf(stderr, "\r  decoding...%60s\r", "");
        c->drawn = 1;
    }
    fflush(stderr);
    return g_interrupted != 0;
}

static void end_progress(progress_ctx *c)
{
    if (c->drawn)
        fprintf(stderr, "\r%80s\r", "");
    c->drawn = 0;
}

/* ---- output -------------------------------------------------------------------- */

/* The model's name as A1111 writes it: the file or folder name without extension. */
static void model_name(const char *path, char *out, size_t cap)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    size_t l = strlen(tmp);
    while (l > 1 && tmp[l - 1] == '/')
        tmp[--l] = '\0';
    const char *base = strrchr(tmp, '/');
    base = base ? base + 1 : tmp;
    snprintf(out, cap, "%s", base);
    char *dot = strrchr(out, '.');
    if (dot && dot != out && (!strcmp(dot, ".safetensors") || !strcmp(dot, ".ckpt")))
        *dot = '\0';
}

static char *record_json(const render_opts *o, const px_sd_result *r, const char *name)
{
    json_t *t = json_pack("{s:f, s:f, s:f, s:f}", "text", r->ms_text, "sampling", r->ms_sample,
                          "decode", r->ms_decode, "total", r->ms_total);
    json_t *j = json_pack(
        "{s:s, s:s, s:I, s:i, s:i, s:i, s:f, s:s, s:b, s:i, s:s, s:s, s:s, s:s, s:s, s:o*}",
        "prompt", o->p.prompt, "negative", o->p.negative ? o->p.negative : "", "seed",
        (json_int_t)r->seed, "width", r->width, "height", r->height, "steps", r->steps, "cfg",
        (double)r->cfg, "sampler", r->sampler, "karras", r->karras, "clip_skip", r->clip_skip,
        "decoder", r->taesd ? "taesd" : "vae", "backend", "local", "model", name, "model_hash",
        r->model_hash, "pixpipe", PX_VERSION, "timings_ms", t);
    if (!j)
        return NULL;
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    return s;
}

static int write_output(const render_opts *o, const px_image *img, const px_sd_result *r)
{
    char name[256];
    model_name(o->model, name, sizeof name);
    char *params = px_sd_a1111_parameters(&o->p, r, name);
    char *json = record_json(o, r, name);
    px_buf buf = {0};
    px_err err;
    int rc = params && json ? PX_OK : px_err_set(&err, PX_ENOMEM, "out of memory");
    px_image_meta meta = {.parameters = params, .json = json};
    if (rc == PX_OK)
        rc = px_image_encode_meta(img, o->format, o->quality, &meta, &buf, &err);
    if (rc == PX_OK)
        rc = px_write_file_atomic(o->out, buf.data, buf.len, &err);
    if (rc != PX_OK)
        fprintf(stderr, "pixpipe render: %s: %s\n", o->out, err.msg);
    else if (o->json)
        printf("%s\n", json);
    px_buf_free(&buf);
    free(params);
    free(json);
    return rc;
}

/* ---- wiring -------------------------------------------------------------------- */

static px_sd_model *load_model(const render_opts *o)
{
    char vocab[PATH_MAX] = "";
    px_err verr, err;
    int have_vocab =
        o->tokenizer || px_anon_find_model(NULL, CLIP_VOCAB, vocab, sizeof vocab, &verr) == PX_OK;
    px_sd_load_opts lo = {.tokenizer = o->tokenizer,
                          .vocab = vocab[0] ? vocab : NULL,
                          .taesd = o->taesd,
                          .threads = o->threads};
    double t0 = px_now_ms();
    px_sd_model *m = NULL;
    int rc = px_sd_model_load(o->model, &lo, &m, &err);
    if (rc != PX_OK) {
        fprintf(stderr, "pixpipe render: %s\n", err.msg);
        if (rc == PX_ENOTFOUND && !have_vocab)
            fprintf(stderr, "pixpipe render: %s; or pass --tokenizer DIR\n", verr.msg);
        return NULL;
    }
    if (o->verbose) {
        px_sd_model_info i;
        px_sd_model_describe(m, &i);
        fprintf(stderr, "model: %s, %s weights, %s%s, %.0f MiB, %d threads, loaded in %.2f s\n",
                i.arch, i.dtype, i.single_file ? "single file" : "diffusers folder",
                i.lcm ? ", LCM" : "", (double)i.weights_bytes / 1048576.0, i.threads,
                (px_now_ms() - t0) / 1000.0);
        if (i.unused_tensors)
            fprintf(stderr, "model: %zu tensors unused (first: %s)\n", i.unused_tensors,
                    i.first_unused);
    }
    return m;
}

static void print_summary(const render_opts *o, const px_sd_result *r)
{
    if (o->verbose)
        fprintf(stderr,
                "timings: text encoder %.2f s (%d chunk%s), sampling %.2f s (%.2f s/step, "
                "%.1f GFLOP/s), decode %.2f s (%s), total %.2f s\n",
                r->ms_text / 1000.0, r->chunks, r->chunks > 1 ? "s" : "", r->ms_sample / 1000.0,
                r->ms_sample / 1000.0 / r->steps,
                r->ms_sample > 0 ? r->gflop_sample / (r->ms_sample / 1000.0) : 0.0,
                r->ms_decode / 1000.0,
                r->taesd      ? "TAESD"
                : r->vae_tile ? "VAE, tiled"
                              : "VAE",
                r->ms_total / 1000.0);
    if (!o->quiet)
        fprintf(stderr, "wrote %s: %dx%d, %s, %d step%s, cfg %g, seed %lld, %.1f s\n", o->out,
                r->width, r->height, r->sampler_a1111, r->steps, r->steps > 1 ? "s" : "",
                (double)r->cfg, (long long)r->seed, r->ms_total / 1000.0);
}

/* Size rounding and the memory estimate, said before the long part starts. */
static int plan_render(px_sd_model *m, const render_opts *o)
{
    px_sd_result plan;
    px_err err;
    if (px_sd_plan(m, &o->p, &plan, &err) != PX_OK) {
        fprintf(stderr, "pixpipe render: %s\n", err.msg);
        return PX_EXIT_USAGE;
    }
    px_sd_model_info info;
    px_sd_model_describe(m, &info);
    if (plan.rounded && !o->quiet)
        fprintf(stderr, "pixpipe render: %dx%d is not a multiple of %d a side; rendering %dx%d\n",
                plan.req_width, plan.req_height, info.size_multiple, plan.width, plan.height);
    if (o->verbose)
        fprintf(stderr, "memory: about %llu MiB (weights %llu + working %llu), %llu available\n",
                (unsigned long long)(plan.memory.total >> 20),
                (unsigned long long)(plan.memory.weights >> 20),
                (unsigned long long)(plan.memory.activations >> 20),
                (unsigned long long)(plan.memory.available >> 20));
    return PX_EXIT_OK;
}

int px_cmd_render(int argc, char **argv)
{
    render_opts o = {0};
    int rc = parse_args(argc, argv, &o);
    if (rc)
        return rc < 0 ? PX_EXIT_OK : rc;
    px_sd_model *m = load_model(&o);
    if (!m)
        return PX_EXIT_SETUP;
    rc = plan_render(m, &o);
    if (rc != PX_EXIT_OK) {
        px_sd_model_free(m);
        return rc;
    }
    progress_ctx pc = {.bar = !o.quiet && isatty(STDERR_FILENO), .verbose = o.verbose};
    o.p.progress = on_progress;
    o.p.progress_ctx = &pc;
    struct sigaction sa = {.sa_handler = on_sigint}, old;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old);
    px_image img;
    px_sd_result r;
    px_err err;
    int st = px_sd_render(m, &o.p, &img, &r, &err);
    sigaction(SIGINT, &old, NULL);
    end_progress(&pc);
    if (st != PX_OK) {
        fprintf(stderr, "pixpipe render: %s\n", err.msg);
        px_sd_model_free(m);
        if (st == PX_ELIMIT) /* memory for the size, or a prompt beyond 8 chunks */
            return strstr(err.msg, "MiB") ? PX_EXIT_SETUP : PX_EXIT_USAGE;
        return st == PX_EINVAL ? PX_EXIT_USAGE : PX_EXIT_FAILED;
    }
    if (g_interrupted) { /* Ctrl-C during the decode: keep the promise of writing nothing */
        fprintf(stderr, "pixpipe render: interrupted; nothing written\n");
        px_image_free(&img);
        px_sd_model_free(m);
        return PX_EXIT_FAILED;
    }
    st = write_output(&o, &img, &r);
    if (st == PX_OK)
        print_summary(&o, &r);
    px_image_free(&img);
    px_sd_model_free(m);
    return st == PX_OK ? PX_EXIT_OK : PX_EXIT_FAILED;
}
