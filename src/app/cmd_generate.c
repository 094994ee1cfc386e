/*
 * `pixpipe generate`: fill an image pool from a campaign (or one theme/type
 * batch) with prompts written by an LLM or the offline writer and images
 * rendered on one or more servers, or in this process with `--backend local
 * --model PATH` (pixpipe's Stable Diffusion engine; the model is loaded once
 * per run). Argument parsing and wiring only; the work is px_gen_run
 * (src/gen). Also `--rerender ID`, which renders one recorded job again with
 * its prompt and seed.
 *
 * Output: a progress bar on a terminal (redrawn in place), plain lines every
 * 10 s otherwise, then a summary per theme and type from the manifest.
 * Ctrl-C abandons the renders in flight (stopping them on the server where
 * it can) and stops; running the same command again
 * resumes.
 */
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "anon/px_anon.h"
#include "commands.h"
#include "core/px_core.h"
#include "face/px_face.h"
#include "gen/px_gen.h"

#ifndef PX_DATA_DIR
#define PX_DATA_DIR "."
#endif

#define MAX_SERVERS 64
#define CLIP_VOCAB "bpe_simple_vocab_16e6.txt.gz" /* a single-file model's vocabulary, models/ */

/* Where vocab/, styles/ and campaigns/ are: $PIXPIPE_DATA_DIR, else
 * <binary>/../share/pixpipe (an installed pixpipe: cmake --install), else
 * the source tree this binary was built from. The first with a vocab/
 * folder wins; the last is the answer when none has one (so messages name it). */
static const char *data_dir(void)
{
    static char dir[PATH_MAX];
    if (dir[0])
        return dir;
    const char *env = getenv("PIXPIPE_DATA_DIR");
    char exe[PATH_MAX] = "";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = '\0';
    }
    char installed[PATH_MAX + 32];
    snprintf(installed, sizeof installed, "%s/../share/pixpipe", exe);
    const char *cand[3] = {env && *env ? env : NULL, n > 0 ? installed : NULL, PX_DATA_DIR};
    for (int i = 0; i < 3; i++) {
        if (!cand[i])
            continue;
        char probe[PATH_MAX + 64];
        snprintf(probe, sizeof probe, "%s/vocab", cand[i]);
        if (access(probe, R_OK) == 0 || i == 2) {
            if (!realpath(cand[i], dir)) /* /usr/local/share/pixpipe, not .../bin/../share/... */
                snprintf(dir, sizeof dir, "%s", cand[i]);
            break;
        }
    }
    return dir;
}

const char *px_app_data_dir(void)
{
    return data_dir();
}

static volatile int g_stop;
static void on_sigint(int sig)
{
    (void)sig;
    g_stop = 1;
    signal(SIGINT, SIG_DFL); /* a second Ctrl-C ends it at once */
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: pixpipe generate --theme THEME --type TYPE --count N --out POOL [options]\n"
        "       pixpipe generate --campaign FILE --out POOL [options]\n"
        "       pixpipe generate --rerender ID --out POOL [-o FILE] [options]\n"
        "       pixpipe generate --out POOL [options]   carries on the campaign the pool's\n"
        "                     Campaigns page (pixpipe serve) started\n"
        "       pixpipe generate (--campaign FILE | --theme T --type T --count N) --dry-run[=N]\n"
        "Writes prompts, renders them on image servers and keeps the images that pass\n"
        "the automatic checks in POOL/<theme>/<type>/<id>.png (manifest: POOL/manifest.sqlite).\n"
        "Running the same command again resumes where it stopped.\n\n"
        "what to make:\n"
        "  --theme T --type interiors|exteriors|items --count N   one batch\n"
        "  --campaign FILE    themes, counts and type split (see docs/campaigns.md); a bare\n"
        "                     NAME is %s/campaigns/NAME.json (e.g. --campaign default)\n"
        "  --allow-people     do not put people/faces in the negative prompt\n"
        "  --width W --height H --steps N --cfg X --sampler S --model M   render settings\n"
        "  --format png|jpg|webp   pool files (png; jpg/webp keep the prompt in EXIF\n"
        "                     UserComment and our JSON in XMP)   --quality N (92, jpg/webp)\n"
        "prompts:\n"
        "  --llm URL          OpenAI-compatible chat server (POST URL/v1/chat/completions);\n"
        "                     without it the offline writer uses vocab/ (13 shipped themes)\n"
        "  --llm-model NAME   --llm-temperature X (0.9)   --llm-seed N   --llm-batch N (8)\n"
        "  --llm-retries N    extra tries after an unusable answer (3)\n"
        "  --llm-timeout S    per LLM request (120)   --llm-max-tokens N  answer budget per\n"
        "                     request (default: scenes x 96 + 64)\n"
        "  --llm-dialect auto|llamacpp|llamacpp-old|ollama|vllm|openai   how to ask for JSON\n"
        "                     (auto: probe the server; docs/generate.md)\n"
        "                     API key from $PIXPIPE_LLM_API_KEY (or $OPENAI_API_KEY)\n"
        "  --vocab DIR        offline vocabularies (default %s/vocab)\n"
        "  --style FILE       per-type style suffix and negative prompt (default %s/styles/styles.json)\n"
        "  --dedup X          near-duplicate prompt threshold, Jaccard 0..1 (0.7)\n",
        data_dir(), data_dir(), data_dir());
    fputs( /* two parts: ISO C bounds a string literal at 4095 characters */
        "rendering:\n"
        "  --server URL       render server, repeat for several (default http://127.0.0.1:7860)\n"
        "  --backend a1111|openai|comfyui|local (a1111)   --workflow FILE (ComfyUI API-format\n"
        "                     workflow)\n"
        "  --per-server N     requests in flight per server (1)\n"
        "  --timeout S        per request (300)   --max-attempts N (3)   --server-failures N (5)\n"
        "  --backoff-ms N     first wait after a server fails, doubling to 30 s (500)\n"
        "  --seed N           base seed (default: seed = job id)\n"
        "  --size-mismatch refuse|rescale|keep   an image of another size than asked: stop\n"
        "                     the run saying so (refuse), centre-crop and scale it to the size\n"
        "                     asked (rescale), or keep it and record its real size (keep)\n"
        "local rendering (--backend local: Stable Diffusion 1.x on this CPU, no server):\n"
        "  --model PATH       diffusers folder or .safetensors checkpoint, loaded once per run\n"
        "                     (with the other backends --model names the server's checkpoint)\n"
        "  --tokenizer DIR    CLIP vocabulary (default: the model folder's tokenizer/, else\n"
        "                     models/" CLIP_VOCAB ")   --taesd PATH  fast TAESD decoder\n"
        "  --threads N        CPU threads of each render (default: all cores). One render at a\n"
        "                     time already uses every core, so --per-server (local workers,\n"
        "                     one model) stays 1 unless checks and writing should overlap\n"
        "                     the next render. Without a campaign size: the model's native size\n"
        "                     in 3:2 landscape (768x512 for SD 1.x); sides round to 64\n"
        "checks:\n"
        "  --faces reject|flag|off (reject)   --face-model FILE (default: as for anonymize,\n"
        "                     " PX_ANON_DEFAULT_MODEL " from $PIXPIPE_MODEL_DIR or models/)\n"
        "  --min-blur X (30)  --min-contrast X (12)   --phash-distance N (4; -1 off)\n"
        "other:\n"
        "  --rerender ID      render image/job ID again into -o FILE (default POOL/rerender-ID.EXT,\n"
        "                     in the stored image's format; FILE's extension picks the format)\n"
        "  --fsync            fsync each image (survives power loss, slower)\n"
        "  --dry-run[=N]      write prompts only (at most N): JSON Lines on stdout, one per\n"
        "                     prompt; nothing rendered or stored, no image server needed;\n"
        "                     --out is optional (an existing pool is only read)\n"
        "  --progress auto|bar|plain|none   -q, --quiet   -h, --help\n",
        f);
}

typedef struct {
    int tty, mode; /* mode: 0 none, 1 bar, 2 plain */
} progress_ctx;

static void on_progress(void *ctx, const char *line, int final)
{
    progress_ctx *p = ctx;
    if (p->mode == 0)
        return;
    if (p->mode == 1) {
        fprintf(stderr, "\r\033[K%s%s", line, final ? "\n" : "");
    } else {
        fprintf(stderr, "%s\n", line);
    }
    fflush(stderr);
}

static char *read_text(const char *path, px_err *err)
{
    uint8_t *d;
    size_t n;
    if (px_read_file(path, 8u << 20, &d, &n, err) != PX_OK)
        return NULL;
    char *s = px_realloc(d, n + 1);
    if (!s) {
        free(d);
        px_err_set(err, PX_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    s[n] = '\0';
    return s;
}

static void print_summary(const char *pool, const px_gen_summary *sum, FILE *f)
{
    char db[1100];
    snprintf(db, sizeof db, "%s/%s", pool, PX_MANIFEST_FILE);
    px_manifest *s;
    px_err err;
    if (px_manifest_open(db, 1, &s, &err) != PX_OK) {
        fprintf(stderr, "pixpipe: %s\n", err.msg);
        return;
    }
    px_manifest_stat *st;
    size_t n;
    if (px_manifest_stats(s, &st, &n, &err) == PX_OK) {
        fprintf(f, "%-40s %-10s %7s %7s %7s %8s %6s\n", "theme", "type", "quota", "good",
                "flagged", "rejected", "failed");
        int tq = 0, tg = 0, tr = 0, tf = 0, tfl = 0;
        for (size_t i = 0; i < n; i++) {
            int good = st[i].accepted + st[i].flagged;
            fprintf(f, "%-40.40s %-10s %7d %7d %7d %8d %6d\n", st[i].theme, st[i].type,
                    st[i].quota, good, st[i].flagged, st[i].rejected, st[i].jobs_failed);
            tq += st[i].quota;
            tg += good;
            tfl += st[i].flagged;
            tr += st[i].rejected;
            tf += st[i].jobs_failed;
        }
        fprintf(f, "%-40s %-10s %7d %7d %7d %8d %6d\n", "total", "", tq, tg, tfl, tr, tf);
        free(st);
    }
    double dup = sum->prompts_written ? 100.0 * sum->prompts_dup / sum->prompts_written : 0;
    fprintf(f,
            "this run: %d images rendered (%d accepted, %d flagged, %d rejected), %d jobs failed, "
            "%d prompts written, %d near-duplicates dropped (%.1f%%), %d servers set aside, "
            "%.1f s\n",
            sum->rendered, sum->accepted, sum->flagged, sum->rejected, sum->jobs_failed,
            sum->prompts_written, sum->prompts_dup, dup, sum->servers_set_aside, sum->seconds);
    px_manifest_close(s);
}

/* Option numbers: core's parsers (one wording for every command), printed here. */
static int parse_int(const char *opt, const char *v, int lo, int hi, int *out)
{
    px_err e;
    if (px_parse_int(opt, v, lo, hi, out, &e) == PX_OK)
        return 0;
    fprintf(stderr, "pixpipe generate: %s\n", e.msg);
    return -1;
}

static int parse_double(const char *opt, const char *v, double lo, double hi, double *out)
{
    px_err e;
    if (px_parse_double(opt, v, lo, hi, out, &e) == PX_OK)
        return 0;
    fprintf(stderr, "pixpipe generate: %s\n", e.msg);
    return -1;
}

/* Everything the command line says, before any of it is acted on. */
typedef struct gen_args {
    px_gen_opts o;
    px_gen_llm_opts lo;
    const char *theme, *type_s, *campaign, *workflow_path, *llm, *vocab, *style, *face_model;
    const char *progress, *out_file, *sampler, *model, *tokenizer, *taesd;
    const char *servers[MAX_SERVERS];
    int nservers, count, quiet, people, width, height, steps, rerender, timeout_s, seed_set, seed,
        quality, threads;
    int llm_timeout_s, dry_run, dry_max; /* --llm-timeout; --dry-run[=N] */
    px_format format; /* PX_FMT_UNKNOWN: not given */
    double cfg;
    char vocab_def[PATH_MAX + 16], style_def[PATH_MAX + 32], camp_path[PATH_MAX + 32];
    int64_t run_id; /* resuming the pool's campaign run (no --campaign, no --theme) */
} gen_args;

enum {
    O_THEME = 256, O_TYPE, O_COUNT, O_CAMPAIGN, O_OUT, O_SERVER, O_BACKEND, O_WORKFLOW,
    O_PERSERVER, O_LLM, O_LLMMODEL, O_LLMTEMP, O_LLMSEED, O_LLMBATCH, O_VOCAB, O_STYLE,
    O_DEDUP, O_TIMEOUT, O_ATTEMPTS, O_SFAIL, O_SEED, O_FACES, O_FACEMODEL, O_MINBLUR,
    O_MINCONTRAST, O_PHASH, O_RERENDER, O_FSYNC, O_PROGRESS, O_PEOPLE, O_WIDTH, O_HEIGHT,
    O_STEPS, O_CFG, O_SAMPLER, O_MODEL, O_BACKOFF, O_LLMRETRIES, O_FORMAT, O_QUALITY,
    O_TOKENIZER, O_TAESD, O_THREADS,
    O_LLMDIALECT, O_LLMTIMEOUT, O_DRYRUN, O_LLMMAXTOK,
    O_SIZEMISMATCH
};

static const struct option k_longopts[] = {
    {"theme", required_argument, 0, O_THEME},       {"type", required_argument, 0, O_TYPE},
    {"count", required_argument, 0, O_COUNT},       {"campaign", required_argument, 0, O_CAMPAIGN},
    {"out", required_argument, 0, O_OUT},           {"server", required_argument, 0, O_SERVER},
    {"backend", required_argument, 0, O_BACKEND},   {"workflow", required_argument, 0, O_WORKFLOW},
    {"per-server", required_argument, 0, O_PERSERVER}, {"llm", required_argument, 0, O_LLM},
    {"llm-model", required_argument, 0, O_LLMMODEL}, {"llm-temperature", required_argument, 0, O_LLMTEMP},
    {"llm-seed", required_argument, 0, O_LLMSEED},  {"llm-batch", required_argument, 0, O_LLMBATCH},
    {"vocab", required_argument, 0, O_VOCAB},       {"style", required_argument, 0, O_STYLE},
    {"dedup", required_argument, 0, O_DEDUP},       {"timeout", required_argument, 0, O_TIMEOUT},
    {"max-attempts", required_argument, 0, O_ATTEMPTS}, {"server-failures", required_argument, 0, O_SFAIL},
    {"seed", required_argument, 0, O_SEED},         {"faces", required_argument, 0, O_FACES},
    {"face-model", required_argument, 0, O_FACEMODEL}, {"min-blur", required_argument, 0, O_MINBLUR},
    {"min-contrast", required_argument, 0, O_MINCONTRAST}, {"phash-distance", required_argument, 0, O_PHASH},
    {"rerender", required_argument, 0, O_RERENDER}, {"fsync", no_argument, 0, O_FSYNC},
    {"progress", required_argument, 0, O_PROGRESS}, {"allow-people", no_argument, 0, O_PEOPLE},
    {"width", required_argument, 0, O_WIDTH},       {"height", required_argument, 0, O_HEIGHT},
    {"steps", required_argument, 0, O_STEPS},       {"cfg", required_argument, 0, O_CFG},
    {"sampler", required_argument, 0, O_SAMPLER},   {"model", required_argument, 0, O_MODEL},
    {"backoff-ms", required_argument, 0, O_BACKOFF}, {"llm-retries", required_argument, 0, O_LLMRETRIES},
    {"format", required_argument, 0, O_FORMAT},     {"quality", required_argument, 0, O_QUALITY},
    {"tokenizer", required_argument, 0, O_TOKENIZER}, {"taesd", required_argument, 0, O_TAESD},
    {"threads", required_argument, 0, O_THREADS},
    {"llm-dialect", required_argument, 0, O_LLMDIALECT}, {"llm-timeout", required_argument, 0, O_LLMTIMEOUT},
    {"dry-run", optional_argument, 0, O_DRYRUN}, {"llm-max-tokens", required_argument, 0, O_LLMMAXTOK},
    {"size-mismatch", required_argument, 0, O_SIZEMISMATCH},
    {"quiet", no_argument, 0, 'q'},                 {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0}};

/* The options that are words, not numbers: -1 when handled, else an exit code. */
static int parse_word_option(gen_args *a, int c, const char *arg)
{
    px_err err;
    switch (c) {
    case O_SERVER:
        if (a->nservers == MAX_SERVERS) {
            fprintf(stderr, "pixpipe generate: at most %d --server\n", MAX_SERVERS);
            return PX_EXIT_USAGE;
        }
        a->servers[a->nservers++] = arg;
        return -1;
    case O_BACKEND:
        if (px_gen_backend_parse(arg, &a->o.backend, &err) != PX_OK) {
            fprintf(stderr, "pixpipe generate: --backend: %s\n", err.msg);
            return PX_EXIT_USAGE;
        }
        return -1;
    case O_FACES:
        if (!strcmp(arg, "reject"))
            a->o.checks.faces = PX_GEN_FACES_REJECT;
        else if (!strcmp(arg, "flag"))
            a->o.checks.faces = PX_GEN_FACES_FLAG;
        else if (!strcmp(arg, "off"))
            a->o.checks.faces = PX_GEN_FACES_OFF;
        else {
            fprintf(stderr, "pixpipe generate: --faces '%s': expected reject, flag or off\n", arg);
            return PX_EXIT_USAGE;
        }
        return -1;
    case O_SIZEMISMATCH:
        if (px_gen_size_policy_parse(arg, &a->o.size_mismatch, &err) != PX_OK) {
            fprintf(stderr, "pixpipe generate: %s\n", err.msg);
            return PX_EXIT_USAGE;
        }
        return -1;
    case O_FORMAT:
        if ((a->format = px_format_parse(arg)) == PX_FMT_UNKNOWN) {
            fprintf(stderr, "pixpipe generate: --format '%s': expected png, jpg or webp\n", arg);
            return PX_EXIT_USAGE;
        }
        return -1;
    default: usage(stderr); return PX_EXIT_USAGE;
    }
}

/* One option: -1 when it was fine, else the exit code. */
static int parse_option(gen_args *a, int c, const char *arg)
{
    px_gen_opts *o = &a->o;
    int bad = 0, v = 0;
    switch (c) {
    case O_THEME: a->theme = arg; break;
    case O_TYPE: a->type_s = arg; break;
    case O_COUNT: bad = parse_int("--count", arg, 0, 10000000, &a->count); break;
    case O_CAMPAIGN: a->campaign = arg; break;
    case O_OUT: o->pool = arg; break;
    case O_WORKFLOW: a->workflow_path = arg; break;
    case O_PERSERVER: bad = parse_int("--per-server", arg, 1, 16, &o->per_server); break;
    case O_LLM: a->llm = arg; break;
    case O_LLMMODEL: a->lo.model = arg; break;
    case O_LLMTEMP: bad = parse_double("--llm-temperature", arg, 0.01, 2, &a->lo.temperature); break;
    case O_LLMSEED: bad = parse_int("--llm-seed", arg, 0, 2000000000, &v); a->lo.seed = v; break;
    case O_LLMRETRIES: bad = parse_int("--llm-retries", arg, 0, 20, &a->lo.retries); break;
    case O_LLMBATCH: bad = parse_int("--llm-batch", arg, 1, 50, &a->lo.batch); break;
    case O_VOCAB: a->vocab = arg; break;
    case O_STYLE: a->style = arg; break;
    case O_DEDUP: bad = parse_double("--dedup", arg, 0.05, 1, &o->dedup_threshold); break;
    case O_TIMEOUT: bad = parse_int("--timeout", arg, 1, 86400, &a->timeout_s); break;
    case O_ATTEMPTS: bad = parse_int("--max-attempts", arg, 1, 100, &o->max_attempts); break;
    case O_SFAIL: bad = parse_int("--server-failures", arg, 1, 1000, &o->server_failures); break;
    case O_BACKOFF: bad = parse_int("--backoff-ms", arg, 0, 60000, &v); o->backoff_ms = v; break;
    case O_SEED: bad = parse_int("--seed", arg, 0, 2000000000, &a->seed); a->seed_set = 1; break;
    case O_FACEMODEL: a->face_model = arg; break;
    case O_MINBLUR: bad = parse_double("--min-blur", arg, 0, 1e9, &o->checks.min_blur); break;
    case O_MINCONTRAST: bad = parse_double("--min-contrast", arg, 0, 255, &o->checks.min_stddev); break;
    case O_PHASH: bad = parse_int("--phash-distance", arg, -1, 64, &o->checks.phash_distance); break;
    case O_RERENDER: bad = parse_int("--rerender", arg, 1, 2000000000, &a->rerender); break;
    case O_FSYNC: o->fsync = 1; break;
    case O_PROGRESS: a->progress = arg; break;
    case O_PEOPLE: a->people = 1; break;
    case O_WIDTH: bad = parse_int("--width", arg, 64, 4096, &a->width); break;
    case O_HEIGHT: bad = parse_int("--height", arg, 64, 4096, &a->height); break;
    case O_STEPS: bad = parse_int("--steps", arg, 1, 500, &a->steps); break;
    case O_CFG: bad = parse_double("--cfg", arg, 0.1, 50, &a->cfg); break;
    case O_SAMPLER: a->sampler = arg; break;
    case O_MODEL: a->model = arg; break;
    case O_QUALITY: bad = parse_int("--quality", arg, 1, 100, &a->quality); break;
    case O_TOKENIZER: a->tokenizer = arg; break;
    case O_TAESD: a->taesd = arg; break;
    case O_THREADS: bad = parse_int("--threads", arg, 1, 1024, &a->threads); break;
    case O_LLMDIALECT: a->lo.dialect = arg; break;
    case O_LLMTIMEOUT: bad = parse_int("--llm-timeout", arg, 1, 86400, &a->llm_timeout_s); break;
    case O_LLMMAXTOK: bad = parse_int("--llm-max-tokens", arg, 16, 1000000, &a->lo.max_tokens); break;
    case O_DRYRUN:
        a->dry_run = 1;
        bad = arg ? parse_int("--dry-run", arg, 1, 10000000, &a->dry_max) : 0;
        break;
    case 'o': a->out_file = arg; break;
    case 'q': a->quiet = 1; break;
    case 'h': usage(stdout); return PX_EXIT_OK;
    default: return parse_word_option(a, c, arg);
    }
    return bad ? PX_EXIT_USAGE : -1;
}

/* The options of the local backend against those of the servers: -1 when
 * they make sense together, else the exit code. */
static int check_backend_args(const gen_args *a)
{
    const char *msg = NULL;
    if (a->o.backend == PX_GEN_LOCAL) {
        if (!a->model)
            msg = "--backend local needs --model PATH (a diffusers folder or a .safetensors file)";
        else if (a->nservers)
            msg = "--backend local renders in this process: --server is for a1111, openai and "
                  "comfyui";
        else if (a->workflow_path)
            msg = "--workflow is for --backend comfyui, not local";
    } else if (a->tokenizer || a->taesd || a->threads) {
        msg = "--tokenizer, --taesd and --threads are for --backend local (the server has its "
              "own)";
    }
    if (!msg)
        return -1;
    fprintf(stderr, "pixpipe generate: %s\n", msg);
    return PX_EXIT_USAGE;
}

/* Parses argv into *a with the defaults filled in: -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, gen_args *a)
{
    memset(a, 0, sizeof *a);
    px_gen_opts_default(&a->o);
    a->o.checks.faces = PX_GEN_FACES_REJECT; /* stock images must not carry generated faces */
    a->lo = px_gen_llm_opts_default();
    snprintf(a->vocab_def, sizeof a->vocab_def, "%s/vocab", data_dir());
    snprintf(a->style_def, sizeof a->style_def, "%s/styles/styles.json", data_dir());
    a->vocab = a->vocab_def;
    a->style = a->style_def;
    a->progress = "auto";
    a->count = -1;
    a->timeout_s = 300;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "qho:", k_longopts, NULL)) != -1) {
        int rc = parse_option(a, c, optarg);
        if (rc >= 0)
            return rc;
    }
    if (optind < argc) {
        fprintf(stderr, "pixpipe generate: unexpected argument '%s'\n", argv[optind]);
        return PX_EXIT_USAGE;
    }
    if (a->llm_timeout_s)
        a->lo.timeout_ms = (long)a->llm_timeout_s * 1000;
    if (a->dry_run && a->rerender) {
        fprintf(stderr, "pixpipe generate: --dry-run writes prompts; --rerender renders: not both\n");
        return PX_EXIT_USAGE;
    }
    if (!a->o.pool && !a->dry_run) {
        fprintf(stderr, "pixpipe generate: --out POOL is required\n");
        return PX_EXIT_USAGE;
    }
    if (a->seed_set)
        a->o.seed = a->seed;
    int rc = check_backend_args(a);
    if (rc >= 0)
        return rc;
    if (a->nservers == 0 && a->o.backend != PX_GEN_LOCAL)
        a->servers[a->nservers++] = "http://127.0.0.1:7860";
    a->o.servers = a->servers;
    a->o.nservers = a->nservers;
    a->o.timeout_ms = (long)a->timeout_s * 1000;
    if (a->quality)
        a->o.quality = a->quality;
    return -1;
}

/* --rerender ID: one recorded job again, into --out-file or beside the pool. */
static int run_rerender(gen_args *a)
{
    px_gen_opts *o = &a->o;
    char def[1100];
    const char *out_file = a->out_file;
    if (!out_file) { /* in the stored image's format, else --format's */
        const char *ext = px_format_extension(a->format ? a->format : PX_FMT_PNG) + 1;
        char db[1100], stored_ext[8] = "";
        snprintf(db, sizeof db, "%s/%s", o->pool, PX_MANIFEST_FILE);
        px_manifest *s = NULL;
        px_manifest_image im;
        if (!a->format && px_manifest_open(db, 1, &s, NULL) == PX_OK &&
            px_manifest_get_image(s, a->rerender, &im, NULL) == PX_OK) {
            const char *dot = strrchr(im.path, '.');
            if (dot && strlen(dot) < sizeof stored_ext)
                snprintf(stored_ext, sizeof stored_ext, "%s", dot + 1);
            px_manifest_image_clear(&im);
        }
        px_manifest_close(s);
        snprintf(def, sizeof def, "%s/rerender-%d.%s", o->pool, a->rerender,
                 stored_ext[0] ? stored_ext : ext);
        out_file = def;
    }
    if (a->format)
        o->format = a->format;
    o->checks.faces = PX_GEN_FACES_OFF;
    int same = 0;
    px_err err;
    int st = px_gen_rerender(o, a->rerender, out_file, &same, &err);
    if (st != PX_OK) {
        fprintf(stderr, "pixpipe generate: rerender %d: %s\n", a->rerender, err.msg);
        return st == PX_ENOTFOUND ? PX_EXIT_USAGE : PX_EXIT_FAILED;
    }
    printf("%s: %s\n", out_file,
           same ? "identical to the stored image" : "differs from the stored image (or none stored)");
    return PX_EXIT_OK;
}

/* The campaign file (a path or a shipped name) or the one-batch campaign of
 * --theme/--type/--count, with the render options of the command line on top. */
static int load_campaign(gen_args *a, px_gen_campaign *camp)
{
    px_err err;
    int st;
    const char *campaign = a->campaign;
    if (campaign) {
        if (a->theme || a->type_s || a->count >= 0) {
            fprintf(stderr, "pixpipe generate: give either --campaign or --theme/--type/--count\n");
            return PX_EXIT_USAGE;
        }
        if (!strchr(campaign, '/') && access(campaign, F_OK) != 0) { /* a shipped one by name */
            snprintf(a->camp_path, sizeof a->camp_path, "%s/campaigns/%s%s", data_dir(), campaign,
                     strstr(campaign, ".json") ? "" : ".json");
            campaign = a->camp_path;
        }
        st = px_gen_campaign_load(campaign, camp, &err);
    } else if (!a->theme && !a->type_s && a->count < 0) {
        /* neither: carry on the campaign the pool's Campaigns page (pixpipe serve) started */
        st = px_gen_campaign_from_pool(a->o.pool, camp, &a->run_id, &err);
    } else {
        if (!a->theme || !a->type_s || a->count < 0) {
            fprintf(stderr, "pixpipe generate: --theme, --type and --count are needed (or --campaign)\n");
            return PX_EXIT_USAGE;
        }
        int type;
        st = px_gen_type_parse(a->type_s, &type, &err);
        if (st == PX_OK)
            st = px_gen_campaign_single(a->theme, type, a->count, camp, &err);
    }
    if (st != PX_OK) {
        fprintf(stderr, "pixpipe generate: %s\n", err.msg);
        return PX_EXIT_USAGE;
    }
    if (a->people)
        camp->allow_people = 1;
    if (a->width) {
        camp->render.width = a->width;
        camp->render.size_set |= 1;
    }
    if (a->height) {
        camp->render.height = a->height;
        camp->render.size_set |= 2;
    }
    if (a->steps)
        camp->render.steps = a->steps;
    if (a->cfg > 0)
        camp->render.cfg = a->cfg;
    if (a->sampler)
        snprintf(camp->render.sampler, sizeof camp->render.sampler, "%s", a->sampler);
    if (a->model && a->o.backend != PX_GEN_LOCAL) /* local: the model's own name and hash */
        snprintf(camp->render.model, sizeof camp->render.model, "%s", a->model);
    a->o.format = a->format ? a->format : camp->format;
    if (!a->quality && camp->quality)
        a->o.quality = camp->quality;
    a->o.campaign = camp;
    a->o.style_path = a->style;
    return -1;
}

/* The prompt writer: the LLM, or the offline one checked against every theme
 * of the campaign before any job exists. -1 when made, else the exit code. */
static int make_writer(gen_args *a, const px_gen_campaign *camp, px_gen_writer **writer)
{
    px_err err;
    int st;
    if (a->llm) {
        a->lo.url = a->llm;
        a->lo.vocab_dir = a->vocab;
        a->lo.api_key = getenv("PIXPIPE_LLM_API_KEY");
        if (!a->lo.api_key)
            a->lo.api_key = getenv("OPENAI_API_KEY");
        st = px_gen_writer_llm_create(&a->lo, writer, &err);
    } else {
        /* without --seed, a fresh sequence each run: a resumed run would otherwise propose
         * the scenes it already has, only to drop them as duplicates */
        uint64_t wseed = a->seed_set ? (uint64_t)a->seed
                                     : (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();
        st = px_gen_writer_offline_create(a->vocab, wseed, writer, &err);
    }
    if (st != PX_OK) {
        fprintf(stderr, "pixpipe generate: %s\n", err.msg);
        return PX_EXIT_SETUP;
    }
    for (int i = 0; !a->llm && i < camp->nthemes; i++) {
        char **v;
        size_t n;
        px_gen_writer *probe;
        if (px_gen_writer_offline_create(a->vocab, 1, &probe, &err) != PX_OK ||
            px_gen_writer_write(probe, camp->themes[i].name, camp->themes[i].slug, 0, 1, &v, &n,
                                NULL, 0, &err) != PX_OK) {
            fprintf(stderr, "pixpipe generate: %s\n", err.msg);
            px_gen_writer_destroy(probe);
            return PX_EXIT_SETUP;
        }
        px_manifest_strings_free(v, n);
        px_gen_writer_destroy(probe);
    }
    a->o.writer = *writer;
    return -1;
}

/* The face detector of the face check, one session per request in flight. */
static int make_detector(gen_args *a, px_face_detector **det)
{
    if (a->o.checks.faces == PX_GEN_FACES_OFF)
        return -1;
    px_err err;
    int slots = a->o.backend == PX_GEN_LOCAL ? 1 : a->nservers; /* local: one "server" */
    px_face_detector_opts fo = {.kind = PX_FACE_MODEL_AUTO, .threads = 1,
                                .max_sessions = slots * a->o.per_server};
    char model_path[PATH_MAX];
    if (px_anon_find_model(a->face_model, NULL, model_path, sizeof model_path, &err) != PX_OK ||
        px_face_detector_create(model_path, &fo, det, &err) != PX_OK) {
        fprintf(stderr, "pixpipe generate: face check: %s (use --face-model FILE, or --faces off)\n",
                err.msg);
        return PX_EXIT_SETUP;
    }
    a->o.checks.face_detector = *det;
    return -1;
}

/* --backend local: the model, loaded once for the run (or the rerender).
 * -1 when loaded (or not asked for), else the exit code. */
static int make_local(gen_args *a, px_gen_local **local)
{
    if (a->o.backend != PX_GEN_LOCAL)
        return -1;
    char vocab[PATH_MAX] = "";
    px_err verr, err;
    int have_vocab =
        a->tokenizer || px_anon_find_model(NULL, CLIP_VOCAB, vocab, sizeof vocab, &verr) == PX_OK;
    px_gen_local_opts lo = {.model = a->model, .tokenizer = a->tokenizer,
                            .vocab = vocab[0] ? vocab : NULL, .taesd = a->taesd,
                            .threads = a->threads};
    int st = px_gen_local_create(&lo, local, &err);
    if (st != PX_OK) {
        fprintf(stderr, "pixpipe generate: --model: %s\n", err.msg);
        if (st == PX_ENOTFOUND && !have_vocab)
            fprintf(stderr, "pixpipe generate: %s; or pass --tokenizer DIR\n", verr.msg);
        return PX_EXIT_SETUP;
    }
    if (!a->quiet)
        fprintf(stderr, "pixpipe generate: local model %s [%s], %d threads per render\n",
                px_gen_local_name(*local), px_gen_local_hash(*local),
                px_gen_local_threads(*local));
    a->o.local = *local;
    return -1;
}

/* --progress: -1 when pc is set, else the exit code. */
static int setup_progress(const gen_args *a, progress_ctx *pc)
{
    pc->tty = isatty(2);
    if (a->quiet || !strcmp(a->progress, "none"))
        pc->mode = 0;
    else if (!strcmp(a->progress, "bar") || (!strcmp(a->progress, "auto") && pc->tty))
        pc->mode = 1;
    else if (!strcmp(a->progress, "plain") || !strcmp(a->progress, "auto"))
        pc->mode = 2;
    else {
        fprintf(stderr, "pixpipe generate: --progress '%s': expected auto, bar, plain or none\n",
                a->progress);
        return PX_EXIT_USAGE;
    }
    return -1;
}

/* --dry-run: one JSON object per prompt on stdout. */
static void print_prompt(void *ctx, const px_gen_prompt_rec *p)
{
    (void)ctx;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "theme", p->theme,
                          "theme_slug", p->theme_slug, "type", p->type, "scene", p->scene,
                          "prompt", p->prompt, "negative", p->negative, "subtopic", p->subtopic,
                          "writer", p->writer);
    char *s = o ? json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII) : NULL;
    if (s)
        printf("%s\n", s);
    fflush(stdout);
    free(s);
    json_decref(o);
}

/* --dry-run: prompts only, then a line on stderr saying what was done. */
static int run_dry(gen_args *a)
{
    px_gen_summary sum;
    px_err err;
    a->o.stop = &g_stop;
    signal(SIGINT, on_sigint);
    int st = px_gen_dry_run(&a->o, a->dry_max, print_prompt, NULL, &sum, &err);
    signal(SIGINT, SIG_DFL);
    if (st != PX_OK) {
        fprintf(stderr, "pixpipe generate: dry run: %s\n", err.msg);
        return sum.prompts_written ? PX_EXIT_FAILED : PX_EXIT_SETUP;
    }
    char llm[1536];
    if (!a->quiet) {
        fprintf(stderr, "pixpipe generate: dry run: %d prompts written, %d near-duplicates "
                "dropped, %.1f s; nothing rendered or stored\n",
                sum.prompts_written - sum.prompts_dup, sum.prompts_dup, sum.seconds);
        if (px_gen_llm_describe(a->o.writer, llm, sizeof llm))
            fprintf(stderr, "pixpipe generate: LLM server: %s\n", llm);
    }
    return PX_EXIT_OK;
}

/* The run itself, Ctrl-C stopping it between images, then the summary. */
static int run_and_report(gen_args *a, progress_ctx *pc)
{
    px_gen_opts *o = &a->o;
    o->progress = on_progress;
    o->progress_ctx = pc;
    o->progress_interval_ms = pc->mode == 1 ? 250 : 10000;
    o->stop = &g_stop;
    o->cancel = &g_stop; /* Ctrl-C abandons renders in flight too, stopping them on the server */
    signal(SIGINT, on_sigint);
    signal(SIGTERM, on_sigint);
    px_gen_summary sum;
    px_err err;
    int st = px_gen_run(o, &sum, &err);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    int rc = PX_EXIT_OK;
    if (st != PX_OK) {
        fprintf(stderr, "pixpipe generate: %s\n", err.msg);
        rc = sum.rendered || sum.prompts_written ? PX_EXIT_FAILED : PX_EXIT_SETUP;
    } else if (!sum.complete) {
        rc = PX_EXIT_FAILED;
    }
    if (!a->quiet)
        print_summary(o->pool, &sum, stdout);
    if (a->run_id && st == PX_OK && !g_stop &&
        px_gen_campaign_run_ended(o->pool, a->run_id, sum.complete, &err) != PX_OK)
        fprintf(stderr, "pixpipe generate: %s\n", err.msg);
    char llm[1536]; /* also in the manifest's meta table, key "llm" */
    if (!a->quiet && px_gen_llm_describe(o->writer, llm, sizeof llm))
        fprintf(stderr, "pixpipe generate: LLM server: %s\n", llm);
    if (sum.capped && !sum.complete && !a->quiet)
        fprintf(stderr, "pixpipe generate: %d theme/type slot%s stopped at the job cap (%d jobs "
                "per image of quota, too many rejected or failed); run again to go on\n",
                sum.capped, sum.capped > 1 ? "s" : "", o->max_jobs_factor);
    if (g_stop && !a->quiet)
        fprintf(stderr, "pixpipe generate: stopped; run the same command again to resume\n");
    return rc;
}

int px_cmd_generate(int argc, char **argv)
{
    gen_args *a = px_calloc(1, sizeof *a); /* ~20 KB of paths: not on the stack */
    if (!a) {
        fprintf(stderr, "pixpipe generate: out of memory\n");
        return PX_EXIT_SETUP;
    }
    int rc = parse_args(argc, argv, a);
    char *workflow = NULL;
    px_err err;
    if (rc < 0 && a->workflow_path && !(workflow = read_text(a->workflow_path, &err))) {
        fprintf(stderr, "pixpipe generate: --workflow: %s\n", err.msg);
        rc = PX_EXIT_SETUP;
    }
    a->o.workflow = workflow;
    px_gen_local *local = NULL;
    if (rc < 0)
        rc = a->dry_run ? -1 : make_local(a, &local); /* --dry-run renders nothing */
    if (rc < 0 && a->rerender)
        rc = run_rerender(a);
    px_gen_campaign camp;
    memset(&camp, 0, sizeof camp);
    px_gen_writer *writer = NULL;
    px_face_detector *det = NULL;
    progress_ctx pc = {0};
    if (rc < 0)
        rc = load_campaign(a, &camp);
    if (rc < 0)
        rc = make_writer(a, &camp, &writer);
    if (rc < 0)
        rc = a->dry_run ? run_dry(a) : make_detector(a, &det);
    if (rc < 0)
        rc = setup_progress(a, &pc);
    if (rc < 0)
        rc = run_and_report(a, &pc);
    px_face_detector_destroy(det);
    px_gen_writer_destroy(writer);
    px_gen_local_destroy(local);
    px_gen_campaign_free(&camp);
    free(workflow);
    free(a);
    return rc;
}
