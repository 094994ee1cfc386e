/*
 * bench_bot: end-to-end latency of `pixpipe bot` under load. Starts the
 * fake Bot API server in-process and the real bot binary as a child, then
 * runs simulated users on threads: each sends a photo, waits for the reply
 * in its chat, sends the next (closed loop, as a person would). With
 * BENCH_BOT_BURST=1 each user sends all its photos at once instead (users x
 * photos in flight; the k-th reply in a chat answers its k-th photo, as one
 * chat's jobs run in order), the load of issue 13's burst figures. With
 * BENCH_BOT_WEBHOOK=1 the bot runs in webhook mode and the fake delivers the
 * updates to its listener (40 at once, as Telegram's default) instead of
 * answering getUpdates. Latency is
 * from the message's arrival at the "server" to the reply's upload, so it
 * includes long polling, download, detection, encoding and upload.
 *
 * usage: bench_bot PIXPIPE_BIN [users=10] [photos=20] [workers=2] [threads]
 * (threads: compute threads per photo, the bot's --threads; default: the bot's)
 * Prints p50/p95/max latency and throughput; never fails on time.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../tests/fakes/fake_telegram.h"
#include "../tests/integration/bot_harness.h"
#include "core/px_core.h"

static const char *photos[] = {"libfd_keliamoniz1.jpg", "centerface_t3.jpeg", "libfd_ios_test.jpg",
                               "ultraface_imgs_2.jpg", "ultraface_imgs_3.jpg"};

typedef struct {
    fake_tg *f;
    int user, n, burst;
    const uint8_t *data;
    size_t len;
    double *lat; /* n latencies, ms */
    int failed;
} user_ctx;

static void *user_main(void *arg)
{
    user_ctx *u = arg;
    int64_t chat = 7000 + u->user;
    if (u->burst) {
        double t0 = px_now_ms();
        for (int k = 0; k < u->n; k++)
            fake_tg_add_photo(u->f, chat, chat, u->data, u->len, NULL);
        for (int k = 0; k < u->n; k++) {
            if (fake_tg_wait_sent(u->f, chat, NULL, k + 1, 120000) < k + 1) {
                u->failed = 1;
                return NULL;
            }
            u->lat[k] = px_now_ms() - t0;
        }
        return NULL;
    }
    for (int k = 0; k < u->n; k++) {
        double t0 = px_now_ms();
        fake_tg_add_photo(u->f, chat, chat, u->data, u->len, NULL);
        if (fake_tg_wait_sent(u->f, chat, NULL, k + 1, 60000) < k + 1) {
            u->failed = 1;
            return NULL;
        }
        u->lat[k] = px_now_ms() - t0;
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_bot PIXPIPE_BIN [users] [photos] [workers] [threads]\n");
        return 2;
    }
    int users = argc > 2 ? atoi(argv[2]) : 10, per = argc > 3 ? atoi(argv[3]) : 20;
    const char *workers = argc > 4 ? argv[4] : "2";
    const char *threads = argc > 5 ? argv[5] : NULL; /* NULL: the bot's default (all cores) */
    if (users < 1 || users > 100 || per < 1 || per > 1000) {
        fprintf(stderr, "bench_bot: users 1..100, photos 1..1000\n");
        return 2;
    }
    fake_tg *f;
    if (fake_tg_start(BOT_TEST_TOKEN, &f)) {
        fprintf(stderr, "bench_bot: cannot start the fake server\n");
        return 1;
    }
    char dir[] = "/tmp/px_bench_bot_XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char db[64], log[64];
    snprintf(db, sizeof db, "%s/state.db", dir);
    snprintf(log, sizeof log, "%s/bot.log", dir);
    const char *extra[24] = {"--poll-timeout", "10",  "--workers", workers,
                             "--queue",        "256", "--rate",    "100000"};
    int ne = 8;
    int webhook = getenv("BENCH_BOT_WEBHOOK") && atoi(getenv("BENCH_BOT_WEBHOOK")) > 0;
    char listen[32];
    if (webhook) {
        int port = bot_free_port();
        if (port <= 0)
            return 1;
        snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
        fake_tg_set_webhook_route(f, listen);
        extra[ne++] = "--webhook";
        extra[ne++] = "https://bench.example.org/hook";
        extra[ne++] = "--listen";
        extra[ne++] = listen;
    }
    if (threads) {
        extra[ne++] = "--threads";
        extra[ne++] = threads;
    }
    if (getenv("BENCH_BOT_KEEP_LOG"))
        extra[ne++] = "-v";
    extra[ne] = NULL;
    bot_proc bot;
    if (bot_spawn(&bot, argv[1], fake_tg_url(f), db, extra, log)) {
        fprintf(stderr, "bench_bot: cannot start %s\n", argv[1]);
        return 1;
    }
    uint8_t *data[5];
    size_t len[5];
    for (int i = 0; i < 5; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/testdata/faces/%s", PX_SHARED_DIR, photos[i]);
        data[i] = bot_read_file(path, &len[i]);
        if (!data[i]) {
            fprintf(stderr, "bench_bot: cannot read %s\n", path);
            return 1;
        }
    }
    /* one warm-up photo so model load is not in the figures */
    fake_tg_add_photo(f, 6999, 6999, data[0], len[0], NULL);
    fake_tg_wait_sent(f, 6999, NULL, 1, 60000);

    int burst = getenv("BENCH_BOT_BURST") && atoi(getenv("BENCH_BOT_BURST")) > 0;
    user_ctx *uc = calloc((size_t)users, sizeof *uc);
    pthread_t *th = calloc((size_t)users, sizeof *th);
    double *lat = calloc((size_t)users * (size_t)per, sizeof *lat);
    double t0 = px_now_ms();
    for (int u = 0; u < users; u++) {
        uc[u] = (user_ctx){f, u, per, burst, data[u % 5], len[u % 5], lat + (size_t)u * per, 0};
        pthread_create(&th[u], NULL, user_main, &uc[u]);
    }
    int failed = 0;
    for (int u = 0; u < users; u++) {
        pthread_join(th[u], NULL);
        failed += uc[u].failed;
    }
    double secs = (px_now_ms() - t0) / 1000;
    int total = users * per;
    int term = bot_term(&bot, 20000);
    if (failed) {
        fprintf(stderr, "bench_bot: %d users did not get every reply (log %s)\n", failed, log);
        return 1;
    }
    qsort(lat, (size_t)total, sizeof *lat, cmp);
    printf("bench_bot: %d users x %d photos (%s, %s), %s workers x %s threads, %d cores\n", users,
           per, burst ? "burst: all at once" : "closed loop", webhook ? "webhook" : "polling",
           workers, threads ? threads : "default", px_cpu_count());
    printf("latency ms: p50 %.0f  p95 %.0f  max %.0f\n", lat[total / 2], lat[(int)(total * 0.95)],
           lat[total - 1]);
    printf("throughput: %.2f photos/s (%d in %.1f s); bot exit status %d\n", total / secs, total,
           secs, term);
    for (int i = 0; i < 5; i++)
        free(data[i]);
    free(uc);
    free(th);
    free(lat);
    fake_tg_stop(f);
    unlink(db);
    if (getenv("BENCH_BOT_KEEP_LOG"))
        printf("bot log kept: %s\n", log);
    else
        unlink(log);
    char wal[80];
    snprintf(wal, sizeof wal, "%s-wal", db);
    unlink(wal);
    snprintf(wal, sizeof wal, "%s-shm", db);
    unlink(wal);
    snprintf(wal, sizeof wal, "%s.lock", db);
    unlink(wal);
    rmdir(dir); /* fails, harmlessly, when the log was kept */
    return 0;
}
