/*
 * bench_nn: times pixpipe's own inference engine on one ONNX model.
 *
 * Loads the model, fills input 0 either from a raw float32 file (--input;
 * bench/opencv_peer.py --dump-input writes one from a photo, so both engines
 * see the same tensor) or from a deterministic pixel-like pattern, runs
 * --warmup untimed inferences, then --runs timed ones, and prints the minimum
 * and median wall time in milliseconds. It prints figures only and never
 * fails on time. --profile sets PX_NN_PROFILE=1 so the executor logs one line
 * per step for the last run; --generic forces the portable conv kernels,
 * --avx2 the AVX2 ones on a CPU with AVX-512 (as PX_NN_NOAVX512=1 does).
 *
 * Output (one "key: value" per line, for run-nn-bench.sh to pick up):
 *   model, input, isa, threads, runs, min_ms, median_ms, checksum
 */
#include "core/px_core.h"
#include "nn/kernels.h"
#include "nn/px_nn.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    fprintf(stderr, "usage: bench_nn MODEL.onnx [--threads T] [--runs N] [--warmup W]\n"
                    "                [--input FILE.f32] [--profile] [--generic] [--avx2]\n");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Same pattern as opencv_peer.py's: values 0..255 like an 8-bit image. */
static void fill_pattern(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(((uint32_t)i * 2654435761u) >> 24);
}

static int parse_int(const char *s, int lo, int hi, int *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *input_path = NULL;
    int threads = 1, runs = 50, warmup = 5, profile = 0, generic = 0, avx2 = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int *target = NULL, lo = 0, hi = 0;
        if (strcmp(a, "--threads") == 0) {
            target = &threads, lo = 1, hi = 256;
        } else if (strcmp(a, "--runs") == 0) {
            target = &runs, lo = 1, hi = 100000;
        } else if (strcmp(a, "--warmup") == 0) {
            target = &warmup, lo = 0, hi = 100000;
        } else if (strcmp(a, "--input") == 0 && i + 1 < argc) {
            input_path = argv[++i];
            continue;
        } else if (strcmp(a, "--profile") == 0) {
            profile = 1;
            continue;
        } else if (strcmp(a, "--generic") == 0) {
            generic = 1;
            continue;
        } else if (strcmp(a, "--avx2") == 0) {
            avx2 = 1;
            continue;
        } else if (a[0] != '-' && !model_path) {
            model_path = a;
            continue;
        } else {
            usage();
            return 2;
        }
        if (i + 1 >= argc || parse_int(argv[++i], lo, hi, target) != 0) {
            fprintf(stderr, "bench_nn: %s needs an integer in [%d, %d]\n", a, lo, hi);
            return 2;
        }
    }
    if (!model_path) {
        usage();
        return 2;
    }
    if (generic)
        px_nn_force_generic(1);
    if (avx2)
        px_nn_force_avx2(1);

    px_err err = {{0}};
    px_nn_model *m = NULL;
    px_nn_session *s = NULL;
    uint8_t *raw = NULL;
    double *times = NULL;
    int rc = 1;
    double t0 = px_now_ms();
    if (px_nn_model_load(model_path, &m, &err) != PX_OK) {
        fprintf(stderr, "bench_nn: %s\n", err.msg);
        goto out;
    }
    double load_ms = px_now_ms() - t0;
    px_nn_tensor_info in_info;
    if (px_nn_model_num_inputs(m) < 1 || px_nn_model_input_info(m, 0, &in_info) != PX_OK) {
        fprintf(stderr, "bench_nn: %s has no input\n", model_path);
        goto out;
    }
    if (px_nn_session_create(m, threads, &s, &err) != PX_OK) {
        fprintf(stderr, "bench_nn: %s\n", err.msg);
        goto out;
    }
    float *input = px_nn_session_input(s, 0);
    if (input_path) {
        size_t len = 0;
        if (px_read_file(input_path, (size_t)1 << 30, &raw, &len, &err) != PX_OK) {
            fprintf(stderr, "bench_nn: %s\n", err.msg);
            goto out;
        }
        if (len != in_info.count * sizeof(float)) {
            fprintf(stderr, "bench_nn: %s has %zu bytes, input '%s' needs %zu floats\n", input_path,
                    len, in_info.name, in_info.count);
            goto out;
        }
        memcpy(input, raw, len);
    } else {
        fill_pattern(input, in_info.count);
    }

    times = calloc((size_t)runs, sizeof *times);
    if (!times) {
        fprintf(stderr, "bench_nn: out of memory\n");
        goto out;
    }
    for (int i = 0; i < warmup; i++) {
        if (px_nn_session_run(s, &err) != PX_OK) {
            fprintf(stderr, "bench_nn: run failed: %s\n", err.msg);
            goto out;
        }
    }
    for (int i = 0; i < runs; i++) {
        double t = px_now_ms();
        if (px_nn_session_run(s, &err) != PX_OK) {
            fprintf(stderr, "bench_nn: run failed: %s\n", err.msg);
            goto out;
        }
        times[i] = px_now_ms() - t;
    }
    if (profile) {
        /* Five more runs with per-step timing, after the timed ones so logging
         * does not disturb them. A new session reads PX_NN_PROFILE. */
        px_nn_session *ps = NULL;
        setenv("PX_NN_PROFILE", "1", 1);
        px_log_set_level(PX_LOG_INFO);
        if (px_nn_session_create(m, threads, &ps, &err) == PX_OK) {
            memcpy(px_nn_session_input(ps, 0), input, in_info.count * sizeof(float));
            for (int i = 0; i < 5; i++) /* several, so a reader can take each step's min */
                if (px_nn_session_run(ps, &err) != PX_OK) {
                    fprintf(stderr, "bench_nn: profile run failed: %s\n", err.msg);
                    break;
                }
        }
        px_nn_session_destroy(ps);
    }
    qsort(times, (size_t)runs, sizeof *times, cmp_double);
    double median = runs % 2 ? times[runs / 2] : 0.5 * (times[runs / 2 - 1] + times[runs / 2]);

    /* A checksum of every output, to notice a broken build that is fast. */
    double sum = 0;
    for (int o = 0; o < px_nn_model_num_outputs(m); o++) {
        px_nn_tensor_info oi;
        const float *y = px_nn_session_output(s, o);
        if (px_nn_model_output_info(m, o, &oi) != PX_OK || !y)
            continue;
        for (size_t i = 0; i < oi.count; i++)
            sum += fabs((double)y[i]);
    }
    printf("model: %s\n", model_path);
    printf("input: %s", in_info.name);
    for (int d = 0; d < in_info.rank; d++)
        printf("%c%lld", d ? 'x' : ' ', (long long)in_info.dims[d]);
    printf(" (%s)\n", input_path ? input_path : "pattern");
    printf("isa: %s\n", px_nn_isa());
    printf("threads: %d\n", threads);
    printf("load_ms: %.1f\n", load_ms);
    printf("runs: %d (+%d warm-up)\n", runs, warmup);
    printf("min_ms: %.3f\n", times[0]);
    printf("median_ms: %.3f\n", median);
    printf("checksum: %.6g\n", sum);
    rc = 0;
out:
    free(times);
    free(raw);
    px_nn_session_destroy(s);
    px_nn_model_destroy(m);
    return rc;
}
