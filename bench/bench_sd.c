/*
 * bench_sd: times pixpipe's Stable Diffusion engine stage by stage and, when
 * given a stable-diffusion.cpp build (--peer PATH_TO_sd-cli), that engine on
 * the same file with the same settings, in the same run.
 *
 * For each size (default 256 and 512): one render through px_sd_render with
 * Euler, cfg 7 (so every step is one batch-2 UNet forward), seed 42, --steps
 * steps (default 2), VAE decode; with --taesd, a second one-step render for
 * the TAESD decode time. A 64x64 one-step render before them pages the
 * mapped weights in (the peer loads its weights before timing anything too,
 * with --eager-load when it has that flag). Printed per size: text encoder seconds, seconds per
 * step, achieved GFLOP/s of the UNet (GEMM work counted by px_nn_flops over
 * the sampling time; the UNet's own count beside it) against the machine's
 * sgemm peak (OpenBLAS cblas_sgemm 2048^3 on --threads threads, best of 3,
 * measured here first), VAE decode seconds, and peak RSS (VmHWM, reset
 * between sizes through /proc/self/clear_refs). The peer runs as a child
 * process: its times come from its own log lines ("get_learned_condition
 * completed, taking X s", "sampling completed", "decode_first_stage
 * completed") and its peak RSS from wait4. Figures only; nothing passes or
 * fails on time. Run it on a quiet machine.
 */
#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/px_core.h"
#include "diffusion/px_sd.h"
#include "image/px_image.h"
#include "nn/px_nn_ops.h"

void openblas_set_num_threads(int n);

#define PROMPT "a photo of a lighthouse on a cliff at sunset, dramatic sky, highly detailed"
#define NEGATIVE "blurry, low quality"
#define MAX_SIZES 8

typedef struct bench_opts {
    const char *model, *tokenizer, *vocab, *taesd, *peer;
    int threads, steps, nsizes, sizes[MAX_SIZES];
    float cfg;
} bench_opts;

typedef struct stage_times {
    double text, step, decode, taesd; /* seconds; < 0: not measured */
    double unet_gflops, unet_model_gflop, decode_gflops;
    double rss_mib;
    double est_mib, arena_mib;
} stage_times;

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_sd --model FILE [--steps N] [--sizes 256,512] [--threads T] [--cfg X]\n"
            "                [--tokenizer DIR | --vocab FILE.gz] [--taesd PATH] [--peer sd-cli]\n");
}

/* ---- machine --------------------------------------------------------------- */

static void cpu_model(char *out, size_t cap)
{
    snprintf(out, cap, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            char *v = strchr(line, ':') + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            v[strcspn(v, "\n")] = '\0';
            snprintf(out, cap, "%s", v);
            break;
        }
    fclose(f);
}

/* Best of three 2048^3 sgemms on `threads` OpenBLAS threads, in GFLOP/s. */
static double sgemm_peak(int threads)
{
    const int n = 2048;
    float *a = px_aligned_alloc((size_t)n * n * 4), *b = px_aligned_alloc((size_t)n * n * 4),
          *c = px_aligned_alloc((size_t)n * n * 4);
    if (!a || !b || !c) {
        px_aligned_free(a);
        px_aligned_free(b);
        px_aligned_free(c);
        return 0;
    }
    for (size_t i = 0; i < (size_t)n * n; i++) {
        a[i] = (float)((i * 2654435761u) >> 24) / 256.0f - 0.5f;
        b[i] = (float)((i * 40503u) & 255) / 256.0f - 0.5f;
    }
    openblas_set_num_threads(threads);
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double t = px_now_ms();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                    n);
        double g = 2.0 * n * n * n / ((px_now_ms() - t) * 1e6);
        best = g > best ? g : best;
    }
    openblas_set_num_threads(1); /* px_nn parallelises over its own pool */
    px_aligned_free(a);
    px_aligned_free(b);
    px_aligned_free(c);
    return best;
}

/* VmHWM of this process in MiB. */
static double peak_rss_mib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    double v = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            v = strtod(line + 6, NULL) / 1024.0;
    fclose(f);
    return v;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0), so each size gets its own peak. */
static void reset_peak_rss(void)
{
    int fd = open("/proc/self/clear_refs", O_WRONLY);
    if (fd >= 0) {
        if (write(fd, "5", 1) != 1)
            fprintf(stderr, "bench_sd: cannot reset the peak RSS; figures are cumulative\n");
        close(fd);
    }
}

/* ---- ours ------------------------------------------------------------------ */

static int render_once(px_sd_model *m, const bench_opts *o, int size, int steps, int taesd,
                       px_sd_result *r)
{
    px_sd_params p;
    px_sd_params_default(&p);
    p.prompt = PROMPT;
    p.negative = NEGATIVE;
    p.width = p.height = size;
    p.steps = steps;
    p.cfg = o->cfg;
    p.sampler = "euler";
    p.seed = 42;
    p.use_taesd = taesd;
    px_image img;
    px_err err;
    int rc = px_sd_render(m, &p, &img, r, &err);
    if (rc != PX_OK) {
        fprintf(stderr, "bench_sd: %dx%d: %s\n", size, size, err.msg);
        return rc;
    }
    px_image_free(&img);
    return PX_OK;
}

static int bench_ours(px_sd_model *m, const bench_opts *o, int size, stage_times *t)
{
    px_sd_result r;
    reset_peak_rss();
    px_nn_flops_reset();
    int rc = render_once(m, o, size, o->steps, 0, &r);
    if (rc != PX_OK)
        return rc;
    t->rss_mib = peak_rss_mib();
    t->text = r.ms_text / 1000.0;
    t->step = r.ms_sample / 1000.0 / r.steps;
    t->decode = r.ms_decode / 1000.0;
    t->unet_gflops = r.gflop_sample / (r.ms_sample / 1000.0);
    t->unet_model_gflop = r.gflop_unet_forward;
    t->decode_gflops = r.gflop_decode / (r.ms_decode / 1000.0);
    t->est_mib = (double)r.memory.total / 1048576.0;
    t->arena_mib = (double)r.arena_peak / 1048576.0;
    t->taesd = -1;
    if (o->taesd) {
        rc = render_once(m, o, size, 1, 1, &r);
        if (rc != PX_OK)
            return rc;
        t->taesd = r.ms_decode / 1000.0;
    }
    return PX_OK;
}

/* ---- the peer -------------------------------------------------------------- */

/* Seconds after "KEY completed, taking " (or "KEY, taking ") in the log, or -1. */
static double log_seconds(const char *log, const char *key)
{
    const char *p = log, *best = NULL;
    while ((p = strstr(p, key))) { /* the last occurrence */
        best = p;
        p += strlen(key);
    }
    if (!best)
        return -1;
    const char *t = strstr(best, "taking ");
    if (!t || t - best > 80)
        return -1;
    return strtod(t + 7, NULL);
}

/* Runs argv, collecting stdout+stderr into a malloc'd string; peak RSS via wait4. */
static int run_child(char *const argv[], char **log, double *rss_mib, int *status)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(fds[1], 1);
        dup2(fds[1], 2);
        close(fds[0]);
        close(fds[1]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    px_buf b = {0};
    char chunk[4096];
    ssize_t n;
    while ((n = read(fds[0], chunk, sizeof chunk)) > 0 || (n < 0 && errno == EINTR))
        if (n > 0 && px_buf_append(&b, chunk, (size_t)n) != PX_OK)
            break;
    close(fds[0]);
    struct rusage ru;
    if (wait4(pid, status, 0, &ru) < 0)
        return -1;
    *rss_mib = ru.ru_maxrss / 1024.0;
    if (px_buf_append(&b, "", 1) != PX_OK) {
        px_buf_free(&b);
        return -1;
    }
    *log = (char *)b.data;
    return 0;
}

/* 1 when the peer's --help offers flag (newer sd.cpp loads weights lazily,
 * inside the timed stages, unless given --eager-load). */
static int peer_has_flag(const char *peer, const char *flag)
{
    char *argv[] = {(char *)peer, "--help", NULL}, *log = NULL;
    double rss;
    int status, has = 0;
    if (run_child(argv, &log, &rss, &status) == 0)
        has = strstr(log, flag) != NULL;
    free(log);
    return has;
}

static int bench_peer(const bench_opts *o, int size, stage_times *t)
{
    char steps[16], cfg[32], wh[16], threads[16], out[64];
    snprintf(steps, sizeof steps, "%d", o->steps);
    snprintf(cfg, sizeof cfg, "%g", (double)o->cfg);
    snprintf(wh, sizeof wh, "%d", size);
    snprintf(threads, sizeof threads, "%d", o->threads);
    snprintf(out, sizeof out, "/tmp/bench_sd_peer_%d.png", (int)getpid());
    const char *eager = peer_has_flag(o->peer, "--eager-load") ? "--eager-load" : NULL;
    char *argv[] = {(char *)o->peer,
                    "-m",
                    (char *)o->model,
                    "-p",
                    PROMPT,
                    "-n",
                    NEGATIVE,
                    "--steps",
                    steps,
                    "--cfg-scale",
                    cfg,
                    "--sampling-method",
                    "euler",
                    "-W",
                    wh,
                    "-H",
                    wh,
                    "-t",
                    threads,
                    "-s",
                    "42",
                    "-o",
                    out,
                    (char *)eager,
                    NULL};
    printf("  peer: %s -m %s -p \"%s\" -n \"%s\" --steps %s --cfg-scale %s --sampling-method euler "
           "-W %s -H %s -t %s -s 42 -o %s%s%s\n",
           o->peer, o->model, PROMPT, NEGATIVE, steps, cfg, wh, wh, threads, out, eager ? " " : "",
           eager ? eager : "");
    fflush(stdout);
    char *log = NULL;
    int status = 0;
    if (run_child(argv, &log, &t->rss_mib, &status) != 0 || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
        fprintf(stderr, "bench_sd: the peer failed (status %d); its output:\n%s\n", status,
                log ? log : "");
        free(log);
        return PX_EIO;
    }
    t->text = log_seconds(log, "get_learned_condition completed");
    double sampling = log_seconds(log, "sampling completed");
    t->step = sampling >= 0 ? sampling / o->steps : -1;
    t->decode = log_seconds(log, "decode_first_stage completed");
    t->taesd = -1;
    free(log);
    unlink(out);
    return PX_OK;
}

/* ---- report ------------------------------------------------------------------ */

static void row(const char *name, double ours, double peer, const char *unit, const char *extra)
{
    printf("  %-16s %9.2f %-4s", name, ours, unit);
    if (peer >= 0)
        printf("  %9.2f %-4s  x%.2f", peer, unit, ours / peer);
    else
        printf("  %9s %-4s  %5s", "-", "", "");
    printf("  %s\n", extra ? extra : "");
}

static void report(int size, const stage_times *a, const stage_times *p, int have_peer, double peak)
{
    const stage_times none = {-1, -1, -1, -1, 0, 0, 0, -1, 0, 0};
    if (!have_peer)
        p = &none;
    char extra[160];
    printf("%dx%d                 pixpipe        sd.cpp       ratio (pixpipe / sd.cpp)\n", size,
           size);
    row("text encoder", a->text, p->text, "s", NULL);
    snprintf(extra, sizeof extra, "UNet %.1f GFLOP/s = %.0f%% of sgemm peak; %.1f GFLOP/forward",
             a->unet_gflops, peak > 0 ? 100.0 * a->unet_gflops / peak : 0.0, a->unet_model_gflop);
    row("one step (b=2)", a->step, p->step, "s", extra);
    snprintf(extra, sizeof extra, "%.1f GFLOP/s", a->decode_gflops);
    row("VAE decode", a->decode, p->decode, "s", extra);
    if (a->taesd >= 0)
        row("TAESD decode", a->taesd, -1, "s", NULL);
    snprintf(extra, sizeof extra, "estimate %.0f MiB, scratch peak %.0f MiB", a->est_mib,
             a->arena_mib);
    row("peak RSS", a->rss_mib, p->rss_mib, "MiB", extra);
    fflush(stdout);
}

static int parse_args(int argc, char **argv, bench_opts *o)
{
    *o = (bench_opts){.threads = 2, .steps = 2, .cfg = 7.0f, .nsizes = 2, .sizes = {256, 512}};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return -1;
        if (!strcmp(a, "--model"))
            o->model = v;
        else if (!strcmp(a, "--tokenizer"))
            o->tokenizer = v;
        else if (!strcmp(a, "--vocab"))
            o->vocab = v;
        else if (!strcmp(a, "--taesd"))
            o->taesd = v;
        else if (!strcmp(a, "--peer"))
            o->peer = v;
        else if (!strcmp(a, "--threads"))
            o->threads = atoi(v);
        else if (!strcmp(a, "--steps"))
            o->steps = atoi(v);
        else if (!strcmp(a, "--cfg"))
            o->cfg = strtof(v, NULL);
        else if (!strcmp(a, "--sizes")) {
            o->nsizes = 0;
            for (char *s = (char *)v; *s && o->nsizes < MAX_SIZES;) {
                o->sizes[o->nsizes++] = (int)strtol(s, &s, 10);
                s += *s == ',';
            }
        } else
            return -1;
        i++;
    }
    return o->model && o->threads > 0 && o->steps > 0 && o->nsizes > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    bench_opts o;
    if (parse_args(argc, argv, &o)) {
        usage();
        return 2;
    }
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    double peak = sgemm_peak(o.threads);
    printf("machine: %s, %d of %d cores, kernels %s\n", cpu, o.threads, px_cpu_count(),
           px_nn_ops_isa());
    printf("sgemm peak: %.1f GFLOP/s (OpenBLAS, %d threads, 2048^3, best of 3)\n", peak, o.threads);
    px_sd_load_opts lo = {
        .tokenizer = o.tokenizer, .vocab = o.vocab, .taesd = o.taesd, .threads = o.threads};
    px_err err;
    px_sd_model *m = NULL;
    double t0 = px_now_ms();
    if (px_sd_model_load(o.model, &lo, &m, &err) != PX_OK) {
        fprintf(stderr, "bench_sd: %s\n", err.msg);
        return 1;
    }
    double t1 = px_now_ms();
    char hash[11];
    if (px_sd_model_hash(m, hash, &err) != PX_OK) {
        fprintf(stderr, "bench_sd: %s\n", err.msg);
        px_sd_model_free(m);
        return 1;
    }
    px_sd_model_info info;
    px_sd_model_describe(m, &info);
    printf("model: %s (%s, %s weights, %.0f MiB, hash %s): loaded in %.2f s, hashed in %.2f s; "
           "%zu tensors unused\n",
           o.model, info.arch, info.dtype, (double)info.weights_bytes / 1048576.0, hash,
           (t1 - t0) / 1000.0, (px_now_ms() - t1) / 1000.0, info.unused_tensors);
    printf("settings: euler, cfg %g, %d step%s, seed 42, %d threads\n", (double)o.cfg, o.steps,
           o.steps > 1 ? "s" : "", o.threads);
    /* A 64x64 one-step render first reads every weight page once (the mapped
     * file), as the peer's --eager-load does before its stages are timed. */
    px_sd_result warm;
    double tw = px_now_ms();
    int rc = render_once(m, &o, 64, 1, 0, &warm) == PX_OK ? 0 : 1;
    printf("warm-up: 64x64, 1 step in %.2f s (pages the weights in)\n\n", (px_now_ms() - tw) / 1e3);
    for (int i = 0; i < o.nsizes && !rc; i++) {
        stage_times ours = {0}, peer = {0};
        if (bench_ours(m, &o, o.sizes[i], &ours) != PX_OK) {
            rc = 1;
            break;
        }
        int have_peer = o.peer && bench_peer(&o, o.sizes[i], &peer) == PX_OK;
        report(o.sizes[i], &ours, &peer, have_peer, peak);
        printf("\n");
    }
    px_sd_model_free(m);
    return rc;
}
