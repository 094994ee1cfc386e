/*
 * bench_gemm: how close px_nn_ops' GEMM-backed layers run to the machine's
 * sgemm peak, on the shapes of Stable Diffusion 1.5's UNet.
 *
 * First it measures the peak: OpenBLAS cblas_sgemm on a large square f32
 * problem, on 1 thread and on 2 (two column halves on our pool, the way the
 * ops split work). Then, for SD shapes (batch 2 for classifier-free guidance;
 * a 512x512 image is a 64x64 latent: 4096/1024/256/64 tokens per image),
 * it times px_nn_linear and px_nn_conv2d with f32 and f16 weights and
 * px_nn_attention, and prints GFLOP/s (from px_nn_flops) and the percentage
 * of the peak on the same thread count. Every figure is the best of --reps
 * runs, because other processes share the CPU. Because wall time on a busy
 * machine measures the neighbours as much as the code, each line also gives
 * GFLOP/s per core-second of process CPU time ("cpu"), compared with the
 * 1-thread peak measured the same way: that figure stays stable when other
 * jobs take turns on the cores. It prints figures only and never fails on
 * time.
 *
 * usage: bench_gemm [--threads T] [--reps N] [--image 512|256] [--only linear|conv|attn|misc]
 *                   [--isa generic|avx2]
 */
#include "core/px_core.h"
#include "nn/ops_internal.h"
#include "nn/px_nn.h"
#include "nn/px_nn_ops.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int g_reps = 3;

static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Best wall and CPU times of one repetition, in ms. */
typedef struct timing {
    double wall, cpu;
} timing;

static void cpu_model(char *buf, size_t n)
{
    snprintf(buf, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "model name", 10)) {
            char *c = strchr(line, ':');
            if (c) {
                c += 2;
                c[strcspn(c, "\n")] = '\0';
                snprintf(buf, n, "%s", c);
            }
            break;
        }
    }
    fclose(f);
}

static float *rand_floats(size_t n, float scale)
{
    float *p = px_aligned_alloc((n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "bench_gemm: out of memory (%zu floats)\n", n);
        exit(1);
    }
    uint32_t s = 12345u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = ((float)((s >> 8) & 0xFFFF) / 32768.0f - 1.0f) * scale;
    }
    return p;
}

/* f32 -> f16 bits, round to nearest (normal range only: bench data). */
static uint16_t f16_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t sign = (b >> 16) & 0x8000u;
    int e = (int)((b >> 23) & 0xFF) - 112;
    if (e <= 0)
        return (uint16_t)sign;
    uint32_t m = (b & 0x7FFFFFu) + 0x1000u;
    return (uint16_t)(sign | (((uint32_t)e << 10) + (m >> 13)));
}

/* ---- peak ---- */

typedef struct peak_ctx {
    const float *a, *b;
    float *c;
    int n;
} peak_ctx;

static void peak_task(void *ctx, int64_t begin, int64_t end, int worker)
{
    (void)worker;
    const peak_ctx *p = ctx;
    int half = p->n / 2;
    for (int64_t t = begin; t < end; t++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p->n, half, p->n, 1.0f, p->a, p->n,
                    p->b + t * half, p->n, 0.0f, p->c + t * half, p->n);
}

/* GFLOP/s by wall time, and per core-second of CPU time in *cpu_gf. */
static double sgemm_peak(px_pool *pool, int n, double *cpu_gf)
{
    float *a = rand_floats((size_t)n * n, 1.0f), *b = rand_floats((size_t)n * n, 1.0f);
    float *c = rand_floats((size_t)n * n, 1.0f);
    peak_ctx p = {.a = a, .b = b, .c = c, .n = n};
    timing best = {1e30, 1e30};
    for (int r = 0; r < g_reps + 1; r++) {
        double t0 = px_now_ms(), c0 = cpu_ms();
        px_pool_for(pool, 2, peak_task, &p);
        double t = px_now_ms() - t0, ct = cpu_ms() - c0;
        if (r > 0 && t < best.wall) /* the first run warms up */
            best.wall = t;
        if (r > 0 && ct < best.cpu)
            best.cpu = ct;
    }
    px_aligned_free(a);
    px_aligned_free(b);
    px_aligned_free(c);
    double flops = 2.0 * n * (double)n * n;
    *cpu_gf = flops / (best.cpu * 1e6);
    return flops / (best.wall * 1e6);
}

/* ---- cases ---- */

typedef struct bench_case {
    const char *kind; /* "linear", "conv", "attn" */
    const char *what;
    int64_t tokens; /* per image (linear, attention queries) */
    int64_t in, out;
    int hw, k;         /* conv: square side, kernel */
    int nk, heads, dh; /* attention */
} bench_case;

typedef struct bench_env {
    px_pool *pool;
    px_nn_arena *arena;
    double peak;     /* wall GFLOP/s on the pool's threads */
    double cpu_peak; /* GFLOP/s per core-second */
} bench_env;

/* Times fn-like work: best GFLOP/s over the reps; returns -1 on failure. */
static double run_case(const bench_case *c, px_nn_dtype dt, const bench_env *e, int div)
{
    const int batch = 2;
    timing best = {1e30, 1e30};
    uint64_t flops = 0;
    float *x = NULL, *y = NULL, *bias = NULL, *q = NULL;
    void *wdata = NULL;
    px_nn_mat w = {0};
    px_nn_conv2d_shape cs = {0};
    px_nn_attn_shape as = {0};
    /* The text encoder's 77 tokens do not shrink with the image. */
    int64_t tokens = c->tokens == 77 ? 77 : c->tokens / div;
    char label[64];
    if (!strcmp(c->kind, "linear"))
        snprintf(label, sizeof label, "%s %lldtok %lld->%lld", c->what, (long long)tokens,
                 (long long)c->in, (long long)c->out);
    else if (!strcmp(c->kind, "conv"))
        snprintf(label, sizeof label, "%dx%d %lld->%lld %dx%d %s", c->k, c->k, (long long)c->in,
                 (long long)c->out, c->hw / (div == 1 ? 1 : 2), c->hw / (div == 1 ? 1 : 2),
                 c->what);
    else
        snprintf(label, sizeof label, "%s %lldtok%s %dx%d", c->what, (long long)tokens,
                 c->nk ? "->77" : "", c->heads, c->dh);
    if (!strcmp(c->kind, "linear") || !strcmp(c->kind, "conv")) {
        int64_t kd = c->in * (strcmp(c->kind, "conv") ? 1 : (int64_t)c->k * c->k);
        float *wf = rand_floats((size_t)(c->out * kd), 0.05f);
        if (dt == PX_NN_F16) {
            uint16_t *h = px_aligned_alloc((size_t)(c->out * kd) * 2);
            if (!h)
                exit(1);
            for (int64_t i = 0; i < c->out * kd; i++)
                h[i] = f16_bits(wf[i]);
            px_aligned_free(wf);
            wdata = h;
        } else {
            wdata = wf;
        }
        w = (px_nn_mat){.dtype = dt, .data = wdata, .rows = c->out, .cols = kd};
        bias = rand_floats((size_t)c->out, 0.1f);
    }
    if (!strcmp(c->kind, "linear")) {
        x = rand_floats((size_t)(batch * tokens * c->in), 1.0f);
        y = rand_floats((size_t)(batch * tokens * c->out), 1.0f);
    } else if (!strcmp(c->kind, "conv")) {
        int side = c->hw / (div == 1 ? 1 : 2);
        cs = (px_nn_conv2d_shape){.batch = batch,
                                  .c_in = (int)c->in,
                                  .h = side,
                                  .w = side,
                                  .c_out = (int)c->out,
                                  .k = c->k,
                                  .stride = 1,
                                  .pad = c->k / 2};
        x = rand_floats((size_t)batch * c->in * side * side, 1.0f);
        y = rand_floats((size_t)batch * c->out * side * side, 1.0f);
    } else {
        int nk = c->nk ? c->nk : (int)tokens;
        int hd = c->heads * c->dh;
        as = (px_nn_attn_shape){.batch = batch,
                                .nq = (int)tokens,
                                .nk = nk,
                                .heads = c->heads,
                                .dh = c->dh,
                                .ldq = hd,
                                .ldk = hd,
                                .ldv = hd,
                                .ldo = hd,
                                .scale = 1.0f / sqrtf((float)c->dh)};
        q = rand_floats((size_t)batch * tokens * hd, 1.0f);
        x = rand_floats((size_t)2 * batch * nk * hd, 1.0f); /* k then v */
        y = rand_floats((size_t)batch * tokens * hd, 1.0f);
    }
    for (int r = 0; r < g_reps + 1; r++) {
        px_nn_flops_reset();
        double t0 = px_now_ms(), c0 = cpu_ms();
        int rc;
        if (!strcmp(c->kind, "linear"))
            rc = px_nn_linear(x, batch * tokens, c->in, &w, bias, y, c->out, 0, e->arena, e->pool);
        else if (!strcmp(c->kind, "conv"))
            rc = px_nn_conv2d(x, &cs, &w, bias, y, 0, e->arena, e->pool);
        else
            rc = px_nn_attention(q, x, x + (size_t)batch * as.nk * c->heads * c->dh, y, &as,
                                 e->arena, e->pool);
        double t = px_now_ms() - t0, ct = cpu_ms() - c0;
        if (rc)
            return -1.0;
        flops = px_nn_flops();
        if (r > 0 && t < best.wall)
            best.wall = t;
        if (r > 0 && ct < best.cpu)
            best.cpu = ct;
    }
    px_aligned_free(x);
    px_aligned_free(y);
    px_aligned_free(q);
    px_aligned_free(bias);
    px_aligned_free(wdata);
    double gf = (double)flops / (best.wall * 1e6), cgf = (double)flops / (best.cpu * 1e6);
    printf("%-6s %-32s %-4s %9.2f ms %6.1f GFLOP/s %5.1f%% | cpu %6.1f GFLOP/s/core %5.1f%%\n",
           c->kind, label, c->kind[0] == 'a' ? "-" : px_nn_dtype_name(dt), best.wall, gf,
           100.0 * gf / e->peak, cgf, 100.0 * cgf / e->cpu_peak);
    fflush(stdout);
    return gf;
}

/* Memory-bound ops at SD's largest activation (2 x 320 x 64x64): best ms and
 * GB/s of the bytes each must read and write once. */
static void bench_misc(px_pool *pool, int div)
{
    const int batch = 2, c = 320;
    const int64_t hw = 4096 / div, n = (int64_t)batch * c * hw;
    float *x = rand_floats((size_t)n * 4, 1.0f), *y = rand_floats((size_t)n * 4, 1.0f);
    float *g = rand_floats(1280, 1.0f), *b = rand_floats(1280, 1.0f);
    /* Shapes in the names: batch 2, 320 channels, hw pixels (4096 at 512x512). */
    const char *names[] = {
        "group_norm+silu 2x320xhw", "layer_norm (2hw)x320", "geglu (2hw)x(2x1280)",
        "transpose 2x320xhw",       "add 2x320xhw",         "activate gelu 2x320xhw",
        "concat 2x(320+320)xhw",    "upsample2x 640x(hw/4)"};
    double bytes[] = {8.0 * n, 8.0 * n,  4.0 * 3 * batch * hw * 1280, 8.0 * n, 12.0 * n,
                      8.0 * n, 16.0 * n, 4.0 * 5 * 640 * 1024 / div};
    for (int op = 0; op < 8; op++) {
        double best = 1e30;
        for (int r = 0; r < g_reps + 1; r++) {
            double t0 = px_now_ms();
            switch (op) {
            case 0:
                px_nn_group_norm(x, y, batch, c, hw, 32, g, b, 1e-5f, 1, pool);
                break;
            case 1:
                px_nn_layer_norm(x, c, y, c, batch * hw, c, g, b, 1e-5f, pool);
                break;
            case 2:
                px_nn_geglu(x, 2560, y, 1280, batch * hw, 1280, pool);
                break;
            case 3:
                px_nn_transpose(x, y, batch, c, hw, pool);
                break;
            case 4:
                px_nn_add(x, y, y, (size_t)n, pool);
                break;
            case 5:
                px_nn_activate(y, (size_t)n, PX_NN_GELU, pool);
                break;
            case 6:
                px_nn_concat_channels(x, c, x + n, c, y, batch, hw, pool);
                break;
            default:
                px_nn_upsample2x(x, y, 640, 32 / (div == 1 ? 1 : 2), 32 / (div == 1 ? 1 : 2), pool);
            }
            double t = px_now_ms() - t0;
            if (r > 0 && t < best)
                best = t;
        }
        printf("misc   %-32s hw=%-5lld %9.3f ms %6.1f GB/s\n", names[op], (long long)hw, best,
               bytes[op] / (best * 1e6));
    }
    px_aligned_free(x);
    px_aligned_free(y);
    px_aligned_free(g);
    px_aligned_free(b);
}

static const bench_case g_cases[] = {
    {"linear", "attn proj", 4096, 320, 320, 0, 0, 0, 0, 0},
    {"linear", "geglu proj", 4096, 320, 2560, 0, 0, 0, 0, 0},
    {"linear", "ff out", 4096, 1280, 320, 0, 0, 0, 0, 0},
    {"linear", "attn proj", 1024, 640, 640, 0, 0, 0, 0, 0},
    {"linear", "geglu proj", 1024, 640, 5120, 0, 0, 0, 0, 0},
    {"linear", "geglu proj", 256, 1280, 10240, 0, 0, 0, 0, 0},
    {"linear", "ff out", 256, 5120, 1280, 0, 0, 0, 0, 0},
    {"linear", "attn proj", 64, 1280, 1280, 0, 0, 0, 0, 0},
    {"linear", "cross k/v", 77, 768, 320, 0, 0, 0, 0, 0},
    {"conv", "", 0, 320, 320, 64, 3, 0, 0, 0},
    {"conv", "", 0, 640, 640, 32, 3, 0, 0, 0},
    {"conv", "", 0, 1280, 1280, 16, 3, 0, 0, 0},
    {"conv", "", 0, 1280, 1280, 8, 3, 0, 0, 0},
    {"conv", "(up)", 0, 960, 320, 64, 3, 0, 0, 0},
    {"conv", "(skip)", 0, 640, 320, 64, 1, 0, 0, 0},
    {"conv", "(proj)", 0, 320, 320, 64, 1, 0, 0, 0},
    {"attn", "self", 4096, 0, 0, 0, 0, 0, 8, 40},
    {"attn", "cross", 4096, 0, 0, 0, 0, 77, 8, 40},
    {"attn", "self", 1024, 0, 0, 0, 0, 0, 8, 80},
    {"attn", "self", 256, 0, 0, 0, 0, 0, 8, 160},
    {"attn", "self", 64, 0, 0, 0, 0, 0, 8, 160},
};

int main(int argc, char **argv)
{
    int threads = 2, div = 1;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
            g_reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--image") && i + 1 < argc)
            div = atoi(argv[++i]) == 256 ? 4 : 1;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else if (!strcmp(argv[i], "--isa") && i + 1 < argc) {
            /* Run a lesser code path than the CPU's best (AVX2 or portable C). */
            const char *isa = argv[++i];
            if (!strcmp(isa, "generic"))
                px_nn_force_generic(1);
            else if (!strcmp(isa, "avx2"))
                px_nn_ops_cap_level(PX_OPS_AVX2);
        } else {
            fprintf(stderr, "usage: bench_gemm [--threads T] [--reps N] [--image 512|256] "
                            "[--only linear|conv|attn|misc]\n"
                            "                  [--isa generic|avx2]\n");
            return 2;
        }
    }
    if (g_reps < 1)
        g_reps = 1;
    openblas_set_num_threads(1);
    char model[256];
    cpu_model(model, sizeof model);
    px_pool *p1 = NULL, *pn = NULL;
    px_nn_arena *arena = NULL;
    if (px_pool_create(1, &p1) || px_pool_create(threads, &pn) || px_nn_arena_create(0, &arena)) {
        fprintf(stderr, "bench_gemm: cannot create pool/arena\n");
        return 1;
    }
    printf("cpu: %s\nisa: %s\nthreads: %d\nreps: %d (best of)\nimage: %d\n", model, px_nn_ops_isa(),
           threads, g_reps, div == 1 ? 512 : 256);
    double cpu1, cpun;
    double peak1 = sgemm_peak(p1, 2048, &cpu1), peakn = sgemm_peak(pn, 2048, &cpun);
    printf("sgemm peak (2048^3, OpenBLAS %s): 1 thread %.1f GFLOP/s, %d threads %.1f GFLOP/s; "
           "per core-second of CPU time %.1f (1 thread), %.1f (%d threads)\n",
           openblas_get_corename(), peak1, threads, peakn, cpu1, cpun, threads);
    bench_env e = {.pool = pn, .arena = arena, .peak = peakn, .cpu_peak = cpu1};
    for (size_t i = 0; i < sizeof g_cases / sizeof g_cases[0]; i++) {
        const bench_case *c = &g_cases[i];
        if (only && strcmp(only, c->kind))
            continue;
        if (strcmp(c->kind, "attn")) {
            run_case(c, PX_NN_F32, &e, div);
            run_case(c, PX_NN_F16, &e, div);
        } else {
            run_case(c, PX_NN_F32, &e, div);
        }
    }
    if (!only || !strcmp(only, "misc"))
        bench_misc(pn, div);
    printf("arena peak: %.1f MiB\n", (double)px_nn_arena_peak(arena) / (1 << 20));
    px_nn_arena_destroy(arena);
    px_pool_destroy(p1);
    px_pool_destroy(pn);
    return 0;
}
