/*
 * bench_generate: the generate pipeline against fake image servers
 * (tests/fakes/fake_imageserver) in this process on 127.0.0.1.
 *
 *  bookkeeping  one server that answers at once, several requests in flight:
 *               images per second through everything that is ours (HTTP,
 *               base64, PNG decode, checks, phash, PNG encode with metadata,
 *               file write + rename, SQLite transaction), offline writer.
 *  scaling      N = 1, 2, 4, 8 servers that each take D ms per image, one
 *               request in flight per server: images/s against the ideal N/D.
 *  formats      pool-file size and encode time per format (PNG, JPEG, WebP,
 *               with metadata) on a real photo cropped to WxH: the fake's
 *               drawings compress far better than a rendered scene would.
 *
 * Prints figures; never passes or fails on time (docs/benchmarks.md).
 * usage: bench_generate [bookkeeping|scaling|formats|all] [--count N] [--delay-ms D]
 *        [--size WxH] [--inflight K] [--faces MODEL] [--format png|jpg|webp]
 *        [--quality Q] [--photo FILE]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "face/px_face.h"
#include "fakes/fake_imageserver.h"
#include "gen/px_gen.h"
#include "image/px_image.h"

/* CPU seconds (user + system) this process has used so far. */
static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static px_format g_format = PX_FMT_PNG;
static int g_quality = 92;

static int run_once(const char **servers, int n, int per_server, int count, int w, int h, void *det,
                    px_gen_summary *sum)
{
    char pool[] = "/tmp/px_bench_gen_XXXXXX";
    if (!mkdtemp(pool))
        return -1;
    px_gen_campaign c;
    px_gen_writer *wr;
    px_err e;
    if (px_gen_campaign_single("Business and office", PX_GEN_INTERIORS, count, &c, &e) != PX_OK ||
        px_gen_writer_offline_create(PX_SOURCE_DIR "/vocab", 1, &wr, &e) != PX_OK) {
        fprintf(stderr, "bench_generate: %s\n", e.msg);
        return -1;
    }
    c.render.width = w;
    c.render.height = h;
    px_gen_opts o;
    px_gen_opts_default(&o);
    o.pool = pool;
    o.campaign = &c;
    o.writer = wr;
    o.style_path = PX_SOURCE_DIR "/styles/styles.json";
    o.servers = servers;
    o.nservers = n;
    o.per_server = per_server;
    o.timeout_ms = 30000;
    o.format = g_format;
    o.quality = g_quality;
    if (det) {
        o.checks.faces = PX_GEN_FACES_REJECT;
        o.checks.face_detector = det;
    }
    int st = px_gen_run(&o, sum, &e);
    if (st != PX_OK)
        fprintf(stderr, "bench_generate: %s\n", e.msg);
    px_gen_writer_destroy(wr);
    px_gen_campaign_free(&c);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", pool);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_generate: could not remove %s\n", pool);
    return st == PX_OK ? 0 : -1;
}

/* Size and encode time of one pool file per format, metadata included. */
static int bench_formats(const char *photo, int w, int h)
{
    uint8_t *d;
    size_t n;
    px_err e;
    px_image im;
    px_decode_opts dopt = px_decode_opts_default();
    if (px_read_file(photo, 64u << 20, &d, &n, &e) != PX_OK ||
        px_image_decode(d, n, &dopt, &im, NULL, &e) != PX_OK) {
        fprintf(stderr, "bench_generate: %s: %s\n", photo, e.msg);
        return 1;
    }
    free(d);
    if (im.w < w || im.h < h) {
        fprintf(stderr, "bench_generate: %s is %dx%d, smaller than %dx%d\n", photo, im.w, im.h, w,
                h);
        px_image_free(&im);
        return 1;
    }
    px_image rgb;
    if (px_image_alloc(&rgb, w, h, 3) != PX_OK) {
        px_image_free(&im);
        return 1;
    }
    int x0 = (im.w - w) / 2, y0 = (im.h - h) / 2;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            memcpy(rgb.px + (size_t)y * rgb.stride + (size_t)x * 3,
                   im.px + (size_t)(y0 + y) * im.stride + (size_t)(x0 + x) * im.channels, 3);
    px_image_free(&im);
    const char *params = "a bright open-plan office with plants, photorealistic stock photo\n"
                         "Negative prompt: text, watermark, logo, people, faces\n"
                         "Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 6, Seed: 1234, "
                         "Size: 1024x768";
    const char *json = "{\"id\":1234,\"theme\":\"Business and office\",\"seed\":1234}";
    printf("formats: %s cropped to %dx%d, quality %d, metadata included, best of 5\n", photo, w, h,
           g_quality);
    static const px_format fmts[] = {PX_FMT_PNG, PX_FMT_JPEG, PX_FMT_WEBP};
    px_image_meta meta = {.parameters = params, .json = json};
    for (int k = 0; k < 3; k++) {
        px_format f = fmts[k];
        double best = 1e9;
        size_t bytes = 0;
        for (int r = 0; r < 5; r++) {
            px_buf b = {0};
            double t0 = px_now_ms();
            if (px_gen_encode(&rgb, f, g_quality, &meta, &b, &e) != PX_OK) {
                fprintf(stderr, "bench_generate: %s\n", e.msg);
                return 1;
            }
            double t = px_now_ms() - t0;
            best = t < best ? t : best;
            bytes = b.len;
            px_buf_free(&b);
        }
        printf("formats: %-4s %8zu bytes (%5.2f bits/pixel)  encode %6.1f ms\n",
               px_format_extension(f) + 1, bytes, 8.0 * bytes / ((double)w * h), best);
    }
    px_image_free(&rgb);
    return 0;
}

int main(int argc, char **argv)
{
    const char *what = "all", *faces = NULL;
    const char *photo = PX_SOURCE_DIR "/../shared/testdata/faces/inspireface_view.jpg";
    int count = 1000, delay = 250, w = 256, h = 192, inflight = 4;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--count") && i + 1 < argc)
            count = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--delay-ms") && i + 1 < argc)
            delay = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc)
            sscanf(argv[++i], "%dx%d", &w, &h);
        else if (!strcmp(argv[i], "--inflight") && i + 1 < argc)
            inflight = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--faces") && i + 1 < argc)
            faces = argv[++i];
        else if (!strcmp(argv[i], "--format") && i + 1 < argc &&
                 px_format_parse(argv[i + 1]) != PX_FMT_UNKNOWN)
            g_format = px_format_parse(argv[++i]);
        else if (!strcmp(argv[i], "--quality") && i + 1 < argc)
            g_quality = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--photo") && i + 1 < argc)
            photo = argv[++i];
        else if (argv[i][0] != '-')
            what = argv[i];
        else {
            fprintf(stderr, "usage: bench_generate [bookkeeping|scaling|formats|all] [--count N] "
                            "[--delay-ms D] [--size WxH] [--inflight K] [--faces MODEL] "
                            "[--format png|jpg|webp] [--quality Q] [--photo FILE]\n");
            return 2;
        }
    }
    px_log_set_level(PX_LOG_ERROR);
    px_face_detector *det = NULL;
    if (faces) {
        px_err e;
        px_face_detector_opts fo = {
            .kind = PX_FACE_MODEL_AUTO, .threads = 1, .max_sessions = inflight};
        if (px_face_detector_create(faces, &fo, &det, &e) != PX_OK) {
            fprintf(stderr, "bench_generate: %s\n", e.msg);
            return 1;
        }
    }
    printf("bench_generate: %d cores, images %dx%d, pool files %s\n", px_cpu_count(), w, h,
           px_format_extension(g_format) + 1);
    if (!strcmp(what, "formats"))
        return bench_formats(photo, w, h);
    if (!strcmp(what, "bookkeeping") || !strcmp(what, "all")) {
        fake_img *f;
        if (fake_img_start(w, h, &f) != 0)
            return 1;
        const char *s[1] = {fake_img_url(f)};
        px_gen_summary sum;
        double c0 = cpu_s();
        if (run_once(s, 1, inflight, count, w, h, det, &sum) == 0) {
            double cpu = cpu_s() - c0;
            printf("bookkeeping: %d images (%d accepted, %d rejected) in %.2f s = %.0f images/s "
                   "(1 instant server, %d in flight, face check %s; the fake's drawing shares the "
                   "cores)\n",
                   sum.rendered, sum.accepted, sum.rejected, sum.seconds,
                   sum.rendered / sum.seconds, inflight, det ? "on" : "off");
            /* wall-clock rates swing with whatever else runs on the machine; CPU per image
             * does not, and bounds the rate on 2 idle cores at 2 / cpu */
            printf("bookkeeping: %.2f ms CPU per image, pipeline and fake together "
                   "(=> %.0f images/s on 2 idle cores)\n",
                   cpu * 1000 / sum.rendered, 2 * sum.rendered / cpu);
        }
        fake_img_stop(f);
    }
    if (!strcmp(what, "scaling") || !strcmp(what, "all")) {
        for (int n = 1; n <= 8; n *= 2) {
            fake_img *f[8];
            const char *s[8];
            for (int i = 0; i < n; i++) {
                if (fake_img_start(w, h, &f[i]) != 0)
                    return 1;
                fake_img_set_delay(f[i], delay);
                s[i] = fake_img_url(f[i]);
            }
            int per = 8 * n; /* 8 images per server */
            px_gen_summary sum;
            if (run_once(s, n, 1, per, w, h, det, &sum) == 0) {
                double rate = sum.rendered / sum.seconds, ideal = n * 1000.0 / delay;
                printf("scaling: N=%d servers x %d ms/image: %d images (%d rejected) in %.2f s = "
                       "%.2f images/s (ideal N/D = %.2f; efficiency %.2f)\n",
                       n, delay, sum.rendered, sum.rejected, sum.seconds, rate, ideal,
                       rate / ideal);
            }
            for (int i = 0; i < n; i++)
                fake_img_stop(f[i]);
        }
    }
    px_face_detector_destroy(det);
    return 0;
}
