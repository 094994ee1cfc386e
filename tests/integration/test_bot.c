/*
 * Integration tests of `pixpipe bot`: the real binary, started as a child
 * process, against the fake Bot API server (tests/fakes) with the real model
 * and the photos in PX_SHARED_DIR/testdata/faces.
 *
 * What the replies are checked for: that they answer the right message in
 * the right chat, that the faces (the reference boxes) changed, and that the
 * rest of the picture is that user's picture. For the last point in the load
 * test every user's photo carries its own coloured marker block away from
 * the faces, so a reply crossed between two users fails the test even when
 * they sent the same base photo.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four above first */
#include <cmocka.h>

#include <arpa/inet.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bot_harness.h"
#include "fakes/fake_telegram.h"
#include "image/px_image.h"
#include "px_test.h"

#define FACES PX_SHARED_DIR "/testdata/faces/"

static char g_tmp[256];
static json_t *g_ref;

typedef struct {
    fake_tg *f;
    bot_proc bot;
    char db[300], log[300];
} fx;

/* ---- helpers ---- */

static uint8_t *photo(const char *name, size_t *len)
{
    char path[512];
    snprintf(path, sizeof path, FACES "%s", name);
    uint8_t *d = bot_read_file(path, len);
    assert_non_null(d);
    return d;
}

static void decode(const uint8_t *d, size_t n, px_image *img)
{
    px_err e;
    px_decode_opts o = px_decode_opts_default();
    int st = px_image_decode(d, n, &o, img, NULL, &e);
    if (st != PX_OK)
        fail_msg("decode: %s", e.msg);
}

/* Mean absolute difference per channel over a box clipped to both images. */
static double box_diff(const px_image *a, const px_image *b, int x1, int y1, int x2, int y2)
{
    if (x1 < 0)
        x1 = 0;
    if (y1 < 0)
        y1 = 0;
    if (x2 > a->w)
        x2 = a->w;
    if (y2 > a->h)
        y2 = a->h;
    double s = 0;
    long n = 0;
    for (int y = y1; y < y2; y++)
        for (int x = x1; x < x2; x++)
            for (int c = 0; c < 3; c++) {
                s += fabs((double)a->px[y * a->stride + (size_t)x * a->channels + c] -
                          b->px[y * b->stride + (size_t)x * b->channels + c]);
                n++;
            }
    return n ? s / n : 0;
}

/* The largest reference box of a test photo. */
static void largest_box(const char *name, int box[4])
{
    json_t *boxes =
        json_object_get(json_object_get(json_object_get(g_ref, "images"), name), "boxes");
    double best = -1;
    size_t i;
    json_t *b;
    json_array_foreach(boxes, i, b)
    {
        double x1 = json_number_value(json_array_get(b, 0)),
               y1 = json_number_value(json_array_get(b, 1));
        double x2 = json_number_value(json_array_get(b, 2)),
               y2 = json_number_value(json_array_get(b, 3));
        if ((x2 - x1) * (y2 - y1) > best) {
            best = (x2 - x1) * (y2 - y1);
            /* the inner half of the box: surely inside the concealed area */
            double cx = (x1 + x2) / 2, cy = (y1 + y2) / 2, hw = (x2 - x1) / 4, hh = (y2 - y1) / 4;
            box[0] = (int)(cx - hw), box[1] = (int)(cy - hh);
            box[2] = (int)(cx + hw), box[3] = (int)(cy + hh);
        }
    }
    assert_true(best > 0);
}

static void start_bot(fx *x, const char *const *extra)
{
    static const char *const defaults[] = {
        "--poll-timeout", "2",   "--backoff-ms", "50",   "--workers", "2",
        "--queue",        "128", "--rate",       "1000", NULL};
    assert_int_equal(bot_spawn(&x->bot, PX_PIXPIPE_BIN, fake_tg_url(x->f), x->db,
                               extra ? extra : defaults, x->log),
                     0);
}

static int setup_fx(void **state)
{
    static int counter;
    fx *x = calloc(1, sizeof *x);
    if (fake_tg_start(BOT_TEST_TOKEN, &x->f))
        return -1;
    counter++;
    snprintf(x->db, sizeof x->db, "%s/state%d.db", g_tmp, counter);
    snprintf(x->log, sizeof x->log, "%s/bot%d.log", g_tmp, counter);
    *state = x;
    return 0;
}

static int setup_running(void **state)
{
    if (setup_fx(state))
        return -1;
    start_bot(*state, NULL);
    return 0;
}

static int teardown_fx(void **state)
{
    fx *x = *state;
    if (x->bot.pid > 0)
        bot_term(&x->bot, px_test_ms(10000));
    /* the token never reaches the log */
    int leaked = bot_log_contains(&x->bot, BOT_TEST_TOKEN);
    fake_tg_stop(x->f);
    free(x);
    return leaked ? -1 : 0;
}

/* Waits for the n-th reply in chat and copies it out. */
static void reply(fx *x, int64_t chat, const char *method, int idx, fake_tg_sent *s)
{
    int got = fake_tg_wait_sent(x->f, chat, method, idx + 1, px_test_ms(30000));
    if (got < idx + 1) {
        size_t ln = 0;
        uint8_t *log = bot_read_file(x->log, &ln);
        print_error("bot log:\n%s\n", log ? (char *)log + (ln > 3000 ? ln - 3000 : 0) : "(none)");
        free(log);
    }
    if (got < idx + 1)
        fail_msg("chat %lld: %d %s replies, expected %d (log %s)", (long long)chat, got,
                 method ? method : "any", idx + 1, x->log);
    assert_int_equal(fake_tg_sent_get(x->f, chat, method, idx, s), 0);
}

/* ---- tests ---- */

/* Sends centerface_t3.jpeg from chat and checks the answer: a photo replying
 * to that message, "1 face hidden", the face changed, a corner not. */
static void photo_round_trip(fx *x, int64_t chat)
{
    size_t n;
    uint8_t *in = photo("centerface_t3.jpeg", &n);
    int64_t upd = fake_tg_add_photo(x->f, chat, chat, in, n, NULL);
    fake_tg_sent s;
    reply(x, chat, NULL, 0, &s);
    assert_string_equal(s.method, "sendPhoto");
    assert_true(s.reply_to == fake_tg_message_id(x->f, upd));
    assert_non_null(strstr(s.text, "1 face hidden"));
    px_image a, b;
    decode(in, n, &a);
    decode(s.data, s.len, &b);
    assert_int_equal(a.w, b.w);
    assert_int_equal(a.h, b.h);
    int box[4];
    largest_box("centerface_t3.jpeg", box);
    double inside = box_diff(&a, &b, box[0], box[1], box[2], box[3]);
    double corner = box_diff(&a, &b, 0, 0, 100, 100);
    assert_true(inside > 25.0);
    assert_true(corner < 6.0);
    px_image_free(&a);
    px_image_free(&b);
    fake_tg_sent_free(&s);
    free(in);
}

static void test_photo(void **state)
{
    fx *x = *state;
    photo_round_trip(x, 1001);
    assert_true(fake_tg_calls(x->f, "sendChatAction") >= 1);
    /* the start-up log names the model and its SHA-256 */
    size_t ln = 0;
    char *log = (char *)bot_read_file(x->log, &ln);
    assert_non_null(log);
    const char *m = strstr(log, "bot: model ");
    assert_non_null(m);
    const char *h = strstr(m, " sha256 ");
    assert_non_null(h);
    assert_true(strspn(h + 8, "0123456789abcdef") == 64);
    free(log);
}

static void test_document_png(void **state)
{
    fx *x = *state;
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    px_image a, b;
    decode(in, n, &a);
    px_buf png = {0};
    px_err e;
    assert_int_equal(px_image_encode(&a, PX_FMT_PNG, 90, &png, &e), PX_OK);
    int64_t upd = fake_tg_add_document(x->f, 1002, 1002, png.data, png.len, "me.png", "image/png");
    fake_tg_sent s;
    reply(x, 1002, NULL, 0, &s);
    assert_string_equal(s.method, "sendDocument");
    assert_true(s.reply_to == fake_tg_message_id(x->f, upd));
    assert_int_equal(px_image_sniff(s.data, s.len), PX_FMT_PNG); /* full quality: same format */
    assert_string_equal(s.mime, "image/png");
    decode(s.data, s.len, &b);
    int box[4];
    largest_box("libfd_keliamoniz1.jpg", box);
    assert_true(box_diff(&a, &b, box[0], box[1], box[2], box[3]) > 25.0);
    assert_true(box_diff(&a, &b, 0, 0, 60, 60) < 0.5); /* lossless outside the faces */
    px_image_free(&a);
    px_image_free(&b);
    px_buf_free(&png);
    fake_tg_sent_free(&s);
    free(in);
}

static void test_no_face(void **state)
{
    fx *x = *state;
    size_t n;
    uint8_t *in = photo("inspireface_view.jpg", &n);
    fake_tg_add_photo(x->f, 1003, 1003, in, n, NULL);
    fake_tg_sent s;
    reply(x, 1003, NULL, 0, &s);
    assert_string_equal(s.method, "sendMessage");
    assert_non_null(strstr(s.text, "no face"));
    fake_tg_sent_free(&s);
    free(in);
}

static void test_other_content(void **state)
{
    fx *x = *state;
    const int64_t c = 1004;
    fake_tg_add_document(x->f, c, c, (const uint8_t *)"just text\n", 10, "notes.txt", "text/plain");
    fake_tg_add_sticker(x->f, c, c);
    fake_tg_add_text(x->f, c, c, "/start");
    fake_tg_add_text(x->f, c, c, "/mode pixelate");
    fake_tg_add_text(x->f, c, c, "/mode sparkles");
    /* corrupt JPEG: a header and then nothing useful */
    uint8_t junk[2000];
    memset(junk, 0x55, sizeof junk);
    junk[0] = 0xFF, junk[1] = 0xD8, junk[2] = 0xFF;
    fake_tg_add_document(x->f, c, c, junk, sizeof junk, "broken.jpg", "image/jpeg");
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    fake_tg_add_photo(x->f, c, c, in, n, NULL);
    static const char *expect[] = {
        "not an image", "only work on photos", "Privacy",   "hidden with pixelate",
        "Unknown mode", "could not read",      "(pixelate)"};
    /* one chat: answered in order */
    for (int i = 0; i < 7; i++) {
        fake_tg_sent s;
        reply(x, c, NULL, i, &s);
        if (!strstr(s.text, expect[i]))
            fail_msg("reply %d: '%s' lacks '%s'", i, s.text, expect[i]);
        fake_tg_sent_free(&s);
    }
    free(in);
}

static void test_oversized(void **state)
{
    fx *x = *state;
    size_t big = ((size_t)20 << 20) + 4096;
    uint8_t *d = calloc(1, big);
    d[0] = 0xFF, d[1] = 0xD8, d[2] = 0xFF;
    fake_tg_add_document(x->f, 1005, 1005, d, big, "huge.jpg", "image/jpeg");
    fake_tg_sent s;
    reply(x, 1005, NULL, 0, &s);
    assert_string_equal(s.method, "sendMessage");
    assert_non_null(strstr(s.text, "too large"));
    fake_tg_sent_free(&s);
    free(d);
}

static void test_album(void **state)
{
    fx *x = *state;
    static const char *names[] = {"libfd_keliamoniz1.jpg", "centerface_t3.jpeg",
                                  "libfd_ios_test.jpg"};
    int64_t mids[3];
    for (int i = 0; i < 3; i++) {
        size_t n;
        uint8_t *in = photo(names[i], &n);
        mids[i] = fake_tg_message_id(x->f, fake_tg_add_photo(x->f, 1006, 1006, in, n, "album-1"));
        free(in);
    }
    for (int i = 0; i < 3; i++) {
        fake_tg_sent s;
        reply(x, 1006, "sendPhoto", i, &s);
        assert_true(s.reply_to == mids[i]); /* in order, each answered */
        fake_tg_sent_free(&s);
    }
}

static int wait_log(fx *x, const char *s, int timeout_ms);

static void test_429_500(void **state)
{
    fx *x = *state;
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    int before = fake_tg_calls(x->f, "sendPhoto");
    fake_tg_inject(x->f, "getFile", 2, 500, 0, 0);
    fake_tg_inject(x->f, "sendPhoto", 1, 429, 1, 0);
    double t0 = px_now_ms();
    fake_tg_add_photo(x->f, 1007, 1007, in, n, NULL);
    fake_tg_sent s;
    reply(x, 1007, "sendPhoto", 0, &s);
    assert_true(px_now_ms() - t0 >= 1000); /* retry_after was honoured */
    assert_int_equal(fake_tg_calls(x->f, "sendPhoto") - before, 2);
    assert_int_equal(fake_tg_sent_count(x->f, 1007, NULL), 1);
    /* the retries are visible at the normal log level */
    assert_true(wait_log(x, "getFile took 3 tries (done, last HTTP 200)", px_test_ms(5000)));
    /* logged after the answer came back: the reply can be seen first */
    assert_true(wait_log(x, "sendPhoto took 2 tries (done", px_test_ms(5000)));
    fake_tg_sent_free(&s);
    /* getUpdates failing with 502 for a while: the bot keeps polling */
    fake_tg_inject(x->f, "getUpdates", 3, 502, 0, 0);
    fake_tg_add_photo(x->f, 1008, 1008, in, n, NULL);
    reply(x, 1008, "sendPhoto", 0, &s);
    fake_tg_sent_free(&s);
    free(in);
}

static void test_400_dropped(void **state)
{
    fx *x = *state;
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    fake_tg_inject(x->f, "sendPhoto", 1, 400, 0, 0);
    int before = fake_tg_calls(x->f, "sendPhoto");
    fake_tg_add_photo(x->f, 1009, 1009, in, n, NULL);
    int64_t second = fake_tg_message_id(x->f, fake_tg_add_photo(x->f, 1009, 1009, in, n, NULL));
    fake_tg_sent s;
    /* the first reply was refused (400): not retried, the user is told why,
     * and the bot went on to the second */
    reply(x, 1009, NULL, 0, &s);
    assert_string_equal(s.method, "sendMessage");
    assert_non_null(strstr(s.text, "refused"));
    fake_tg_sent_free(&s);
    reply(x, 1009, NULL, 1, &s);
    assert_string_equal(s.method, "sendPhoto");
    assert_true(s.reply_to == second);
    assert_int_equal(fake_tg_calls(x->f, "sendPhoto") - before, 2);
    usleep(300 * 1000);
    assert_int_equal(fake_tg_sent_count(x->f, 1009, NULL), 2);
    assert_true(bot_log_contains(&x->bot, "outcome=dropped"));
    fake_tg_sent_free(&s);
    free(in);
}

/* Waits until the log has s; 1 when it came. */
static int wait_log(fx *x, const char *s, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        if (bot_log_contains(&x->bot, s))
            return 1;
        usleep(50 * 1000);
    }
    return bot_log_contains(&x->bot, s);
}

/* Waits until Telegram was told to forget update upd (the offset passed it). */
static int wait_confirmed(fx *x, int64_t upd, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 50) {
        if (fake_tg_confirmed(x->f) > upd)
            return 1;
        usleep(50 * 1000);
    }
    return fake_tg_confirmed(x->f) > upd;
}

/* The outages of issue 13: sendPhoto failing more times than one job's
 * tries (500 x 6), then 429 with retry_after 200. Both photos are confirmed
 * to Telegram while their replies still wait (so Telegram would never send
 * them again), and both still arrive: the first from the bot's own retry,
 * the second after a restart (which tries pending replies at once; waiting
 * the 200 s would be right too, but a test cannot). */
static void test_no_loss(void **state)
{
    fx *x = *state;
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    fake_tg_inject(x->f, "sendPhoto", 6, 500, 0, 0);
    int64_t upd = fake_tg_add_photo(x->f, 1010, 1010, in, n, NULL);
    assert_true(wait_log(x, "retrying in", px_test_ms(30000)));
    assert_true(wait_confirmed(x, upd, px_test_ms(10000)));
    fake_tg_sent s;
    reply(x, 1010, NULL, 0, &s);
    assert_string_equal(s.method, "sendPhoto");
    assert_true(s.reply_to == fake_tg_message_id(x->f, upd));
    assert_int_equal(fake_tg_calls(x->f, "sendPhoto"), 7);
    fake_tg_sent_free(&s);

    fake_tg_inject(x->f, "sendPhoto", 1, 429, 200, 0);
    upd = fake_tg_add_photo(x->f, 1011, 1011, in, n, NULL);
    assert_true(wait_log(x, "retrying in 200 s", px_test_ms(30000)));
    assert_true(wait_confirmed(x, upd, px_test_ms(10000)));
    assert_int_equal(bot_term(&x->bot, px_test_ms(20000)), 0);
    assert_int_equal(fake_tg_sent_count(x->f, 1011, NULL), 0);
    start_bot(x, NULL);
    reply(x, 1011, NULL, 0, &s);
    assert_string_equal(s.method, "sendPhoto");
    assert_true(s.reply_to == fake_tg_message_id(x->f, upd));
    fake_tg_sent_free(&s);
    usleep(500 * 1000);
    assert_int_equal(fake_tg_sent_count(x->f, 1010, NULL), 1); /* no repeat of the first */
    assert_int_equal(fake_tg_sent_count(x->f, 1011, NULL), 1);
    free(in);
}

/* A face photo pasted on a 1600x1200 canvas of noise: noise does not
 * compress, so the result is megabytes, over the lowered limits below. */
static void big_canvas(px_image *out)
{
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    px_image face;
    decode(in, n, &face);
    free(in);
    assert_int_equal(px_image_alloc(out, 1600, 1200, 3), PX_OK);
    uint32_t r = 12345;
    for (int y = 0; y < out->h; y++)
        for (int x = 0; x < out->w * 3; x++) {
            r = r * 1103515245u + 12345u;
            out->px[(size_t)y * out->stride + (size_t)x] = (uint8_t)(r >> 24);
        }
    for (int y = 0; y < face.h && y < out->h; y++)
        memcpy(out->px + (size_t)y * out->stride, face.px + (size_t)y * face.stride,
               (size_t)(face.w < out->w ? face.w : out->w) * 3);
    px_image_free(&face);
}

/* Telegram's upload limits (lowered here to 300 KB and w+h 2000 for photos,
 * 1 MB for files, in the bot and the fake alike, which refuses more): the
 * results are re-encoded and scaled to fit, and the caption says so. */
static void test_upload_limits(void **state)
{
    fx *x = *state;
    fake_tg_set_upload_limits(x->f, 300 << 10, 1 << 20, 2000);
    static const char *const lim[] = {"--poll-timeout",
                                      "2",
                                      "--backoff-ms",
                                      "50",
                                      "--photo-limit-kb",
                                      "300",
                                      "--file-limit-kb",
                                      "1024",
                                      "--photo-sides",
                                      "2000",
                                      NULL};
    start_bot(x, lim);
    px_image canvas;
    big_canvas(&canvas);
    px_buf jpg = {0}, png = {0};
    px_err e;
    assert_int_equal(px_image_encode(&canvas, PX_FMT_JPEG, 95, &jpg, &e), PX_OK);
    assert_int_equal(px_image_encode(&canvas, PX_FMT_PNG, 90, &png, &e), PX_OK);
    assert_true(jpg.len > (300u << 10) && png.len > (1u << 20));
    fake_tg_add_photo(x->f, 1012, 1012, jpg.data, jpg.len, NULL);
    fake_tg_add_document(x->f, 1013, 1013, png.data, png.len, "big.png", "image/png");

    fake_tg_sent s;
    px_image b;
    reply(x, 1012, NULL, 0, &s);
    assert_string_equal(s.method, "sendPhoto");
    assert_true(s.len <= (300u << 10));
    decode(s.data, s.len, &b);
    assert_true(b.w + b.h <= 2000 && b.w + b.h > 1500);
    assert_true(fabs((double)b.w / b.h - 4.0 / 3.0) < 0.01);
    assert_non_null(strstr(s.text, "1 face hidden"));
    assert_non_null(strstr(s.text, "Telegram takes photos up to 300 KB"));
    assert_non_null(strstr(s.text, "scaled down from 1600x1200"));
    px_image_free(&b);
    fake_tg_sent_free(&s);

    reply(x, 1013, NULL, 0, &s);
    assert_string_equal(s.method, "sendDocument");
    assert_true(s.len <= (1u << 20));
    assert_int_equal(px_image_sniff(s.data, s.len), PX_FMT_JPEG);
    assert_string_equal(s.mime, "image/jpeg");
    assert_non_null(strstr(s.text, "Telegram takes files up to 1 MB"));
    decode(s.data, s.len, &b);
    assert_true(b.w <= 1600 && b.w > 0);
    px_image_free(&b);
    fake_tg_sent_free(&s);
    px_image_free(&canvas);
    px_buf_free(&jpg);
    px_buf_free(&png);
}

/* Mode bits of a file other than the owner's; -1 when it does not exist. */
static int others_bits(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int)(st.st_mode & 077) : -1;
}

/* One instance per database: a second bot on the same state file exits 3
 * at once with a clear message (and warns about a token file others can
 * read); the database and its WAL are 0600. */
static void test_one_instance(void **state)
{
    fx *x = *state;
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    fake_tg_add_photo(x->f, 1014, 1014, in, n, NULL);
    fake_tg_sent s;
    reply(x, 1014, NULL, 0, &s); /* the first bot has written its database */
    fake_tg_sent_free(&s);
    free(in);
    char wal[320], tok[300], log2[320];
    snprintf(wal, sizeof wal, "%s-wal", x->db);
    assert_int_equal(others_bits(x->db), 0);
    assert_int_equal(others_bits(wal), 0);

    snprintf(tok, sizeof tok, "%s/token-0644", g_tmp);
    FILE *fp = fopen(tok, "w");
    assert_non_null(fp);
    fputs(BOT_TEST_TOKEN "\n", fp);
    fclose(fp);
    assert_int_equal(chmod(tok, 0644), 0);
    snprintf(log2, sizeof log2, "%s.second", x->log);
    const char *const extra[] = {"--poll-timeout", "2", "--token-file", tok, NULL};
    bot_proc second;
    assert_int_equal(bot_spawn(&second, PX_PIXPIPE_BIN, fake_tg_url(x->f), x->db, extra, log2), 0);
    int st = bot_wait_exit(&second, px_test_ms(20000));
    if (st < 0)
        bot_kill(&second);
    assert_int_equal(st, 3);
    assert_true(bot_log_contains(&second, "another pixpipe bot is already running"));
    assert_true(bot_log_contains(&second, "can be read by other users"));
    assert_false(bot_log_contains(&second, BOT_TEST_TOKEN));
    /* the first one is unharmed */
    assert_int_equal(bot_term(&x->bot, px_test_ms(20000)), 0);
}

/* Photos accepted (confirmed to Telegram) but not yet answered when the bot
 * is killed are answered after the restart, and count once against the rate
 * limit: three photos with --rate 3 get three pictures, no "too fast". */
static void test_rate_redelivered(void **state)
{
    fx *x = *state;
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    fake_tg_inject(x->f, "getFile", 100, 0, 0, 60000); /* no job gets far */
    int64_t last = 0;
    for (int i = 0; i < 3; i++)
        last = fake_tg_add_photo(x->f, 1015, 1015, in, n, NULL);
    static const char *const rate3[] = {
        "--poll-timeout", "2", "--backoff-ms", "50", "--rate", "3", NULL};
    start_bot(x, rate3);
    assert_true(wait_confirmed(x, last, px_test_ms(20000)));
    bot_kill(&x->bot);
    fake_tg_stop(x->f); /* a fresh server: the slow getFile rule gone, the same updates */
    assert_int_equal(fake_tg_start(BOT_TEST_TOKEN, &x->f), 0);
    for (int i = 0; i < 3; i++)
        fake_tg_add_photo(x->f, 1015, 1015, in, n, NULL);
    start_bot(x, rate3);
    assert_int_equal(fake_tg_wait_sent(x->f, 1015, NULL, 3, px_test_ms(30000)), 3);
    usleep(500 * 1000);
    assert_int_equal(fake_tg_sent_count(x->f, 1015, "sendPhoto"), 3);
    assert_int_equal(fake_tg_sent_count(x->f, 1015, NULL), 3);
    free(in);
}

/* While a job runs, the poller long-polls (here 2 s) instead of asking
 * every 250 ms: a 3 s job sees a handful of getUpdates calls at most. */
static void test_no_busy_poll(void **state)
{
    fx *x = *state;
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    fake_tg_inject(x->f, "getFile", 1, 0, 0, 3000);
    int before = fake_tg_calls(x->f, "getUpdates");
    fake_tg_add_photo(x->f, 1016, 1016, in, n, NULL);
    fake_tg_sent s;
    reply(x, 1016, NULL, 0, &s);
    fake_tg_sent_free(&s);
    int polls = fake_tg_calls(x->f, "getUpdates") - before;
    print_message("getUpdates calls during a 3 s job: %d\n", polls);
    assert_true(polls <= 5); /* 250 ms polling made about 12 */
    free(in);
}

/* The pixel budget (--max-megapixels 1, two workers): two 1.9 MP photos of
 * two chats at once are worked on one after the other (the first holds its
 * pixels through a slow upload), and both are answered. */
static void test_pixel_budget(void **state)
{
    fx *x = *state;
    px_image canvas;
    big_canvas(&canvas); /* 1.9 MP: over the whole budget, so it runs alone */
    px_buf jpg = {0};
    px_err e;
    assert_int_equal(px_image_encode(&canvas, PX_FMT_JPEG, 80, &jpg, &e), PX_OK);
    px_image_free(&canvas);
    const uint8_t *in = jpg.data;
    size_t n = jpg.len;
    static const char *const budget[] = {
        "--poll-timeout",   "2", "--backoff-ms", "50", "--workers", "2",
        "--max-megapixels", "1", "-v",           NULL};
    fake_tg_inject(x->f, "sendPhoto", 1, 0, 0, 2000);
    fake_tg_add_photo(x->f, 1017, 1017, in, n, NULL);
    fake_tg_add_photo(x->f, 1018, 1018, in, n, NULL);
    start_bot(x, budget);
    fake_tg_sent s;
    reply(x, 1017, "sendPhoto", 0, &s);
    fake_tg_sent_free(&s);
    reply(x, 1018, "sendPhoto", 0, &s);
    fake_tg_sent_free(&s);
    assert_true(bot_log_contains(&x->bot, "waits for the pixel budget"));
    px_buf_free(&jpg);
}

/* A raw HTTP/1.0 request to 127.0.0.1:port (headers: extra header lines,
 * each ending in \r\n, may be ""); the whole answer (headers and body) in
 * out. Returns the status code (0: no answer). */
static int http_req(int port, const char *method, const char *path, const char *headers,
                    const char *body, char *out, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    size_t bl = body ? strlen(body) : 0;
    char *req = malloc(bl + strlen(headers) + 512);
    assert_non_null(req);
    int n = sprintf(req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\n%s", method, path, headers);
    if (body)
        n += sprintf(req + n, "Content-Type: application/json\r\nContent-Length: %zu\r\n", bl);
    n += sprintf(req + n, "\r\n%s", body ? body : "");
    for (ssize_t off = 0, w; off < n; off += w)
        if ((w = send(fd, req + off, (size_t)(n - off), MSG_NOSIGNAL)) <= 0)
            break;
    free(req);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(fd, out + got, cap - 1 - got)) > 0)
        got += (size_t)r;
    out[got] = '\0';
    close(fd);
    return !strncmp(out, "HTTP/1.", 7) && got >= 12 ? atoi(out + 9) : 0;
}

static void http_get(int port, const char *path, char *out, size_t cap)
{
    http_req(port, "GET", path, "", NULL, out, cap);
}

/* /healthz and /metrics on a local port: the counters follow a photo. */
static void test_metrics(void **state)
{
    fx *x = *state;
    static const char *const args[] = {"--poll-timeout", "2", "--backoff-ms", "50", "--metrics",
                                       "127.0.0.1:0",    NULL};
    start_bot(x, args);
    assert_true(wait_log(x, "/metrics on port ", px_test_ms(20000)));
    size_t ln = 0;
    char *log = (char *)bot_read_file(x->log, &ln);
    assert_non_null(log);
    int port = atoi(strstr(log, "/metrics on port ") + 17);
    free(log);
    assert_true(port > 0);
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    fake_tg_add_photo(x->f, 1019, 1019, in, n, NULL);
    fake_tg_sent s;
    reply(x, 1019, NULL, 0, &s);
    fake_tg_sent_free(&s);
    free(in);
    static char page[16384];
    /* the counters are bumped just after the reply: look until they are */
    for (int i = 0; i < 100; i++) {
        http_get(port, "/metrics", page, sizeof page);
        if (strstr(page, "pixpipe_bot_jobs_sent_total 1\n"))
            break;
        usleep(50 * 1000);
    }
    assert_non_null(strstr(page, "200 OK"));
    assert_non_null(strstr(page, "pixpipe_bot_jobs_sent_total 1\n"));
    assert_non_null(strstr(page, "pixpipe_bot_updates_total 1\n"));
    assert_non_null(strstr(page, "pixpipe_bot_photos_total 1\n"));
    assert_null(strstr(page, "pixpipe_bot_faces_total 0\n"));
    assert_non_null(strstr(page, "pixpipe_bot_job_seconds_count 1\n"));
    assert_non_null(strstr(page, "pixpipe_bot_refused_total{reason=\"busy\"} 0"));
    http_get(port, "/healthz", page, sizeof page);
    assert_non_null(strstr(page, "200 OK"));
    http_get(port, "/nothing", page, sizeof page);
    assert_non_null(strstr(page, "404"));
}

static void test_busy_and_rate_limit(void **state)
{
    fx *x = *state;
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    /* five people at once, room for two: the other three hear "busy". The
     * first downloads are slowed so no job ends while the five are sorted. */
    fake_tg_inject(x->f, "getFile", 2, 0, 0, 1500);
    for (int i = 0; i < 5; i++)
        fake_tg_add_photo(x->f, 1100 + i, 1100 + i, in, n, NULL);
    static const char *const small_queue[] = {
        "--poll-timeout", "2", "--backoff-ms", "50", "--workers", "1", "--queue", "2", NULL};
    start_bot(x, small_queue);
    assert_int_equal(fake_tg_wait_sent(x->f, 0, NULL, 5, px_test_ms(30000)), 5);
    assert_int_equal(fake_tg_sent_count(x->f, 0, "sendPhoto"), 2);
    int busy = 0;
    for (int i = 0; i < 5; i++) {
        fake_tg_sent s;
        assert_int_equal(fake_tg_sent_get(x->f, 0, "sendMessage", i, &s) == 0, i < 3);
        busy += i < 3 && strstr(s.text, "busy") != NULL;
        fake_tg_sent_free(&s);
    }
    assert_int_equal(busy, 3);
    assert_int_equal(bot_term(&x->bot, px_test_ms(20000)), 0);

    /* one person, four photos, three a minute allowed */
    for (int i = 0; i < 4; i++)
        fake_tg_add_photo(x->f, 1200, 1200, in, n, NULL);
    static const char *const rate3[] = {
        "--poll-timeout", "2", "--backoff-ms", "50", "--rate", "3", NULL};
    start_bot(x, rate3);
    assert_int_equal(fake_tg_wait_sent(x->f, 1200, NULL, 4, px_test_ms(30000)), 4);
    assert_int_equal(fake_tg_sent_count(x->f, 1200, "sendPhoto"), 3);
    fake_tg_sent s;
    assert_int_equal(fake_tg_sent_get(x->f, 1200, "sendMessage", 0, &s), 0);
    assert_non_null(strstr(s.text, "faster than"));
    fake_tg_sent_free(&s);
    free(in);
}

static void test_sigterm_restart(void **state)
{
    fx *x = *state;
    size_t n;
    uint8_t *in = photo("libfd_ios_test.jpg", &n);
    int64_t mids[8];
    for (int i = 0; i < 8; i++)
        mids[i] = fake_tg_message_id(
            x->f, fake_tg_add_photo(x->f, 2001 + i % 2, 2001 + i % 2, in, n, NULL));
    start_bot(x, NULL);
    assert_true(fake_tg_wait_sent(x->f, 0, NULL, 2, px_test_ms(30000)) >= 2);
    assert_int_equal(bot_term(&x->bot, px_test_ms(20000)), 0); /* in-flight jobs finished, exit 0 */
    int answered = fake_tg_sent_count(x->f, 0, NULL);
    assert_true(answered >= 2 && answered <= 8);
    /* the confirmations are lost: Telegram delivers everything again */
    fake_tg_unconfirm_all(x->f);
    start_bot(x, NULL);
    assert_int_equal(fake_tg_wait_sent(x->f, 0, NULL, 8, px_test_ms(30000)), 8);
    usleep(1500 * 1000); /* time for any duplicate to show up */
    assert_int_equal(fake_tg_sent_count(x->f, 0, NULL), 8);
    for (int i = 0; i < 8; i++) {
        int seen = 0;
        for (int k = 0; k < 8; k++) {
            fake_tg_sent s;
            assert_int_equal(fake_tg_sent_get(x->f, 0, NULL, k, &s), 0);
            seen += s.reply_to == mids[i] && s.chat_id == 2001 + i % 2;
            fake_tg_sent_free(&s);
        }
        assert_int_equal(seen, 1);
    }
    free(in);
}

static void test_kill_restart(void **state)
{
    fx *x = *state;
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    for (int i = 0; i < 6; i++)
        fake_tg_add_photo(x->f, 2101, 2101, in, n, NULL);
    start_bot(x, NULL);
    assert_true(fake_tg_wait_sent(x->f, 0, NULL, 1, px_test_ms(30000)) >= 1);
    bot_kill(&x->bot); /* a crash: no clean shutdown */
    start_bot(x, NULL);
    assert_true(fake_tg_wait_sent(x->f, 0, NULL, 6, px_test_ms(30000)) >= 6);
    usleep(1000 * 1000);
    int total = fake_tg_sent_count(x->f, 0, NULL);
    /* none lost; a repeat is possible only for a job killed between its
     * reply and its record (at most one per worker) */
    assert_true(total >= 6 && total <= 8);
    free(in);
}

static void test_conflict(void **state)
{
    fx *x = *state;
    fake_tg_inject(x->f, "getUpdates", 1000, 409, 0, 0);
    start_bot(x, NULL);
    int st = bot_wait_exit(&x->bot, px_test_ms(20000));
    assert_int_not_equal(st, 0);
    assert_true(st > 0 && st < 128); /* an exit, not a crash */
    assert_true(bot_log_contains(&x->bot, "409 Conflict"));
}

/* ---- webhook mode ---- */

#define HOOK_URL "https://bot.example.org/tg/hook-7f3a"
#define HOOK_PATH "/tg/hook-7f3a"

/* A free port on 127.0.0.1 for --listen. */
static int free_port(void)
{
    int port = bot_free_port();
    assert_true(port > 0);
    return port;
}

/* How many times s is in the log. */
static int log_count(fx *x, const char *s)
{
    size_t n = 0;
    char *log = (char *)bot_read_file(x->log, &n);
    int c = 0;
    for (const char *p = log; p && (p = strstr(p, s)) != NULL; p += strlen(s))
        c++;
    free(log);
    return c;
}

/* Starts the bot in webhook mode on 127.0.0.1:port, with more (NULL-ended,
 * may be NULL) appended, and waits until it set the webhook. route: whether
 * the fake's "proxy" forwards deliveries to it. */
static void start_hook_bot(fx *x, int port, int route, const char *const *more)
{
    static char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *args[32] = {"--poll-timeout", "2",   "--backoff-ms", "50",   "--workers", "2",
                            "--queue",        "128", "--rate",       "1000", "--webhook", HOOK_URL,
                            "--listen",       listen};
    int n = 14;
    for (int i = 0; more && more[i] && n < 31; i++)
        args[n++] = more[i];
    args[n] = NULL;
    fake_tg_set_webhook_route(x->f, route ? listen : NULL);
    static const char set_line[] = "bot: webhook set for https://bot.example.org/...";
    int before = log_count(x, set_line);
    assert_int_equal(bot_spawn(&x->bot, PX_PIXPIPE_BIN, fake_tg_url(x->f), x->db, args, x->log), 0);
    char url[600];
    for (int waited = 0; waited < px_test_ms(20000); waited += 20) {
        if (fake_tg_webhook(x->f, url, sizeof url, NULL, 0) && !strcmp(url, HOOK_URL) &&
            log_count(x, set_line) > before)
            return;
        usleep(20 * 1000);
    }
    fail_msg("the bot did not set its webhook (log %s)", x->log);
}

/* A photo through the webhook: setWebhook with a random secret, the update
 * POSTed by the fake with it, the answer as in polling; no getUpdates at
 * all; the webhook and /metrics share one listener. */
static void test_webhook_photo(void **state)
{
    fx *x = *state;
    int port = free_port();
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *const more[] = {"--metrics", listen, NULL};
    start_hook_bot(x, port, 1, more);
    char secret[300];
    assert_int_equal(fake_tg_webhook(x->f, NULL, 0, secret, sizeof secret), 1);
    assert_int_equal(strlen(secret), 32);
    assert_int_equal(
        strspn(secret, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"), 32);
    photo_round_trip(x, 4001);
    int ok = 0, failed = 0;
    fake_tg_webhook_stats(x->f, &ok, &failed, NULL, 0);
    assert_int_equal(ok, 1);
    assert_int_equal(failed, 0);
    assert_int_equal(fake_tg_calls(x->f, "getUpdates"), 0);
    static char page[16384];
    assert_int_equal(http_req(port, "GET", "/metrics", "", NULL, page, sizeof page), 200);
    assert_non_null(strstr(page, "pixpipe_bot_webhook_requests_total{result=\"ok\"} 1\n"));
    assert_non_null(strstr(page, "pixpipe_bot_updates_total 1\n"));
    assert_int_equal(bot_term(&x->bot, px_test_ms(20000)), 0);
    assert_false(bot_log_contains(&x->bot, secret));
    /* a stop leaves the webhook set: Telegram keeps the updates for the next start */
    assert_int_equal(fake_tg_webhook(x->f, NULL, 0, NULL, 0), 1);
}

/* Requests without the secret (or with a wrong one, or elsewhere) are
 * refused and nothing is worked on; the same update with the secret is. */
static void test_webhook_secret(void **state)
{
    fx *x = *state;
    int port = free_port();
    start_hook_bot(x, port, 0, NULL); /* no route: only this test's requests arrive */
    char secret[300], hdr[400], wrong[400], page[4096];
    assert_int_equal(fake_tg_webhook(x->f, NULL, 0, secret, sizeof secret), 1);
    snprintf(hdr, sizeof hdr, "X-Telegram-Bot-Api-Secret-Token: %s\r\n", secret);
    char bad[300];
    snprintf(bad, sizeof bad, "%s", secret);
    bad[31] = bad[31] == 'A' ? 'B' : 'A'; /* one character off */
    snprintf(wrong, sizeof wrong, "X-Telegram-Bot-Api-Secret-Token: %s\r\n", bad);
    fake_tg_add_text(x->f, 5001, 5001, "hello"); /* the chat exists (never delivered: no route) */
    const char *upd = "{\"update_id\":777,\"message\":{\"message_id\":9,\"date\":1,\"chat\":"
                      "{\"id\":5001,\"type\":\"private\"},\"from\":{\"id\":5001,\"is_bot\":false,"
                      "\"first_name\":\"T\"},\"text\":\"/start\"}}";
    assert_int_equal(http_req(port, "POST", HOOK_PATH, "", upd, page, sizeof page), 401);
    assert_int_equal(http_req(port, "POST", HOOK_PATH, wrong, upd, page, sizeof page), 403);
    assert_int_equal(http_req(port, "POST", HOOK_PATH, "X-Telegram-Bot-Api-Secret-Token: \r\n", upd,
                              page, sizeof page),
                     403);
    assert_int_equal(http_req(port, "POST", "/tg/other", hdr, upd, page, sizeof page), 404);
    assert_int_equal(http_req(port, "GET", HOOK_PATH, hdr, NULL, page, sizeof page), 405);
    assert_int_equal(http_req(port, "POST", HOOK_PATH, hdr, "{\"no\":1}", page, sizeof page), 400);
    /* 2 MB announced (over the 1 MB limit): refused from the headers alone */
    char big[500];
    snprintf(big, sizeof big, "%sContent-Length: %u\r\n", hdr, 2u << 20);
    assert_int_equal(http_req(port, "POST", HOOK_PATH, big, NULL, page, sizeof page), 413);
    usleep(500 * 1000);
    assert_int_equal(fake_tg_calls(x->f, "sendMessage"), 0); /* nothing was worked on */
    /* the real thing: taken, answered once even when delivered twice */
    assert_int_equal(http_req(port, "POST", HOOK_PATH, hdr, upd, page, sizeof page), 200);
    assert_int_equal(http_req(port, "POST", HOOK_PATH, hdr, upd, page, sizeof page), 200);
    fake_tg_sent s;
    reply(x, 5001, "sendMessage", 0, &s);
    assert_non_null(strstr(s.text, "Privacy"));
    assert_true(s.reply_to == 9);
    fake_tg_sent_free(&s);
    usleep(500 * 1000);
    assert_int_equal(fake_tg_sent_count(x->f, 5001, NULL), 1);
    assert_int_equal(bot_term(&x->bot, px_test_ms(20000)), 0);
    assert_false(bot_log_contains(&x->bot, secret));
    assert_false(bot_log_contains(&x->bot, bad));
}

/* Killed right after it answered 200 (the job stuck in a slow getFile):
 * Telegram will not deliver the update again, and the restarted bot still
 * answers it, once, from its state database. The restart uses
 * --webhook-secret-file (a bad one is refused first, exit 3). */
static void test_webhook_crash_after_200(void **state)
{
    fx *x = *state;
    int port = free_port();
    start_hook_bot(x, port, 1, NULL);
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    fake_tg_inject(x->f, "getFile", 1, 0, 0, 4000);
    int64_t upd = fake_tg_add_photo(x->f, 4101, 4101, in, n, NULL);
    int ok = 0;
    for (int waited = 0; ok < 1 && waited < px_test_ms(20000); waited += 20) {
        fake_tg_webhook_stats(x->f, &ok, NULL, NULL, 0);
        usleep(20 * 1000);
    }
    assert_int_equal(ok, 1); /* delivered: Telegram forgets it */
    bot_kill(&x->bot);
    assert_int_equal(fake_tg_sent_count(x->f, 4101, NULL), 0);
    /* the restart takes its secret from a file; one with a bad character is refused first */
    char sf[320];
    snprintf(sf, sizeof sf, "%s/hook-secret", g_tmp);
    FILE *fp = fopen(sf, "w");
    assert_non_null(fp);
    fputs("not/allowed\n", fp);
    fclose(fp);
    const char *const with_file[] = {"--webhook-secret-file", sf, NULL};
    static char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    const char *const bad_run[] = {
        "--webhook", HOOK_URL, "--listen", listen, "--webhook-secret-file", sf, NULL};
    bot_proc bad;
    assert_int_equal(bot_spawn(&bad, PX_PIXPIPE_BIN, fake_tg_url(x->f), x->db, bad_run, x->log), 0);
    assert_int_equal(bot_wait_exit(&bad, px_test_ms(20000)), 3);
    assert_true(bot_log_contains(&x->bot, "expected 1-256 characters of A-Z"));
    assert_false(bot_log_contains(&x->bot, "not/allowed"));
    fp = fopen(sf, "w");
    assert_non_null(fp);
    fputs("file_Secret-4101\n", fp);
    fclose(fp);
    assert_int_equal(chmod(sf, 0600), 0);
    start_hook_bot(x, port, 1, with_file);
    char secret[300];
    assert_int_equal(fake_tg_webhook(x->f, NULL, 0, secret, sizeof secret), 1);
    assert_string_equal(secret, "file_Secret-4101");
    fake_tg_sent s;
    reply(x, 4101, NULL, 0, &s);
    assert_string_equal(s.method, "sendPhoto");
    assert_true(s.reply_to == fake_tg_message_id(x->f, upd));
    fake_tg_sent_free(&s);
    usleep(1000 * 1000);
    assert_int_equal(fake_tg_sent_count(x->f, 4101, NULL), 1);
    fake_tg_webhook_stats(x->f, &ok, NULL, NULL, 0);
    assert_int_equal(ok, 1); /* not delivered again: the bot's own record answered it */
    assert_int_equal(bot_term(&x->bot, px_test_ms(20000)), 0);
    assert_false(bot_log_contains(&x->bot, "file_Secret-4101"));
    free(in);
}

/* A full queue in webhook mode: the deliveries are still answered 200 at
 * once, and the senders hear "busy" (sent by the bot's main thread). */
static void test_webhook_busy(void **state)
{
    fx *x = *state;
    const char *const more[] = {"--workers", "1", "--queue", "1", NULL};
    start_hook_bot(x, free_port(), 1, more);
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    fake_tg_inject(x->f, "getFile", 1, 0, 0, 3000); /* the first job holds the only place */
    for (int i = 0; i < 3; i++)
        fake_tg_add_photo(x->f, 4301 + i, 4301 + i, in, n, NULL);
    assert_int_equal(fake_tg_wait_sent(x->f, 0, NULL, 3, px_test_ms(30000)), 3);
    /* deliveries run in parallel: whichever came first got the place */
    assert_int_equal(fake_tg_sent_count(x->f, 0, "sendPhoto"), 1);
    int busy = 0;
    for (int i = 0; i < 3; i++) {
        fake_tg_sent s;
        assert_int_equal(fake_tg_sent_count(x->f, 4301 + i, NULL), 1);
        assert_int_equal(fake_tg_sent_get(x->f, 4301 + i, NULL, 0, &s), 0);
        busy += !strcmp(s.method, "sendMessage") && strstr(s.text, "busy");
        fake_tg_sent_free(&s);
    }
    assert_int_equal(busy, 2);
    int ok = 0, failed = 0;
    fake_tg_webhook_stats(x->f, &ok, &failed, NULL, 0);
    assert_int_equal(ok, 3);
    assert_int_equal(failed, 0);
    free(in);
}

/* Telegram cannot reach the bot (the proxy forwards nowhere): the failed
 * deliveries it reports in getWebhookInfo are logged and make /healthz 503;
 * once the proxy works the photo comes through and health is back. */
static void test_webhook_health(void **state)
{
    fx *x = *state;
    int mport = free_port();
    char maddr[32], page[4096];
    snprintf(maddr, sizeof maddr, "127.0.0.1:%d", mport);
    const char *const more[] = {"--metrics", maddr, "--webhook-check", "1", NULL};
    int port = free_port();
    start_hook_bot(x, port, 0, more);
    assert_int_equal(http_req(mport, "GET", "/healthz", "", NULL, page, sizeof page), 200);
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    fake_tg_add_photo(x->f, 4401, 4401, in, n, NULL);
    assert_true(wait_log(x, "Telegram reports a failed webhook delivery", px_test_ms(20000)));
    assert_true(bot_log_contains(&x->bot, "Connection refused"));
    int code = 0;
    for (int waited = 0; code != 503 && waited < px_test_ms(10000); waited += 100) {
        code = http_req(mport, "GET", "/healthz", "", NULL, page, sizeof page);
        usleep(100 * 1000);
    }
    assert_int_equal(code, 503);
    char listen[32];
    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    fake_tg_set_webhook_route(x->f, listen);
    fake_tg_sent s;
    reply(x, 4401, NULL, 0, &s);
    assert_string_equal(s.method, "sendPhoto");
    fake_tg_sent_free(&s);
    for (int waited = 0; code != 200 && waited < px_test_ms(10000); waited += 100) {
        code = http_req(mport, "GET", "/healthz", "", NULL, page, sizeof page);
        usleep(100 * 1000);
    }
    assert_int_equal(code, 200);
    free(in);
}

/* From webhook mode back to polling: the webhook left set makes Telegram
 * refuse getUpdates (409); --polling deletes it (updates kept) and answers
 * the photo that waited. */
static void test_polling_deletes_webhook(void **state)
{
    fx *x = *state;
    start_hook_bot(x, free_port(), 0, NULL);
    assert_int_equal(bot_term(&x->bot, px_test_ms(20000)), 0);
    size_t n;
    uint8_t *in = photo("libfd_keliamoniz1.jpg", &n);
    fake_tg_add_photo(x->f, 4201, 4201, in, n, NULL);
    char page[4096];
    int fport = atoi(strrchr(fake_tg_url(x->f), ':') + 1);
    assert_int_equal(
        http_req(fport, "POST", "/bot" BOT_TEST_TOKEN "/getUpdates", "", "{}", page, sizeof page),
        409);
    assert_non_null(strstr(page, "can't use getUpdates method while webhook is active"));
    static const char *const polling[] = {"--poll-timeout", "2", "--backoff-ms", "50",
                                          "--polling",      NULL};
    start_bot(x, polling);
    fake_tg_sent s;
    reply(x, 4201, NULL, 0, &s);
    assert_string_equal(s.method, "sendPhoto");
    fake_tg_sent_free(&s);
    assert_int_equal(fake_tg_webhook(x->f, NULL, 0, NULL, 0), 0);
    assert_int_equal(fake_tg_calls(x->f, "deleteWebhook"), 1);
    assert_true(bot_log_contains(&x->bot, "deleting it so that polling works"));
    free(in);
}

/* ---- load: 10 users x 10 photos at once (fewer under a sanitizer) ---- */

enum { USERS = 10 };
/* photos per user in test_load: 10 (3 under a sanitizer), or
 * PX_BOT_LOAD_PER_USER (the thread sanitizer run uses 1 so that ten users
 * still overlap); set in main */
static int g_per_user = 10;

typedef struct {
    px_image orig; /* the photo as sent (marker included), decoded */
    int box[4];    /* inner part of its largest face */
    int mark[4];   /* the marker block */
    uint8_t rgb[3];
} user_photo;

/* A 24x24 block well outside every reference face and its mask (1.4x box, feathered). */
static int find_marker(const char *name, int w, int h, int out[4])
{
    json_t *boxes =
        json_object_get(json_object_get(json_object_get(g_ref, "images"), name), "boxes");
    for (int y = 4; y + 24 < h; y += 8)
        for (int x = 4; x + 24 < w; x += 8) {
            int ok = 1;
            size_t i;
            json_t *b;
            json_array_foreach(boxes, i, b)
            {
                double bw = json_number_value(json_array_get(b, 2)) -
                            json_number_value(json_array_get(b, 0));
                double m = 12 + 0.45 * bw;
                if (x + 24 > json_number_value(json_array_get(b, 0)) - m &&
                    x < json_number_value(json_array_get(b, 2)) + m &&
                    y + 24 > json_number_value(json_array_get(b, 1)) - m &&
                    y < json_number_value(json_array_get(b, 3)) + m)
                    ok = 0;
            }
            if (ok) {
                out[0] = x, out[1] = y, out[2] = x + 24, out[3] = y + 24;
                return 0;
            }
        }
    return -1;
}

static void run_load(fx *x)
{
    static const char *bases[] = {"libfd_keliamoniz1.jpg", "centerface_t3.jpeg",
                                  "libfd_ios_test.jpg", "ultraface_imgs_2.jpg",
                                  "ultraface_imgs_3.jpg"};
    user_photo up[USERS];
    px_buf sent[USERS];
    px_err e;
    for (int u = 0; u < USERS; u++) {
        const char *name = bases[u % 5];
        size_t n;
        uint8_t *in = photo(name, &n);
        decode(in, n, &up[u].orig);
        free(in);
        largest_box(name, up[u].box);
        assert_int_equal(find_marker(name, up[u].orig.w, up[u].orig.h, up[u].mark), 0);
        up[u].rgb[0] = (uint8_t)(20 + 23 * u), up[u].rgb[1] = (uint8_t)(230 - 21 * u);
        up[u].rgb[2] = (uint8_t)(u % 2 ? 40 : 210);
        for (int y = up[u].mark[1]; y < up[u].mark[3]; y++)
            for (int xx = up[u].mark[0]; xx < up[u].mark[2]; xx++)
                memcpy(&up[u].orig.px[y * up[u].orig.stride + (size_t)xx * up[u].orig.channels],
                       up[u].rgb, 3);
        memset(&sent[u], 0, sizeof sent[u]);
        assert_int_equal(px_image_encode(&up[u].orig, PX_FMT_JPEG, 95, &sent[u], &e), PX_OK);
        /* compare against what the bot really received */
        px_image_free(&up[u].orig);
        decode(sent[u].data, sent[u].len, &up[u].orig);
    }
    double t0 = px_now_ms();
    /* interleaved, as ten people sending at once would be */
    for (int k = 0; k < g_per_user; k++)
        for (int u = 0; u < USERS; u++)
            fake_tg_add_photo(x->f, 3000 + u, 3000 + u, sent[u].data, sent[u].len, NULL);
    int got = fake_tg_wait_sent(x->f, 0, "sendPhoto", USERS * g_per_user, px_test_ms(80000));
    double secs = (px_now_ms() - t0) / 1000;
    print_message("load: %d replies in %.1f s\n", got, secs);
    if (got < USERS * g_per_user) {
        int ok = 0, failed = 0;
        char why[256];
        fake_tg_webhook_stats(x->f, &ok, &failed, why, sizeof why);
        print_error("webhook deliveries: %d ok, %d failed (last: %s)\n", ok, failed, why);
    }
    assert_int_equal(got, USERS * g_per_user);
    for (int u = 0; u < USERS; u++) {
        assert_int_equal(fake_tg_sent_count(x->f, 3000 + u, NULL), g_per_user);
        for (int k = 0; k < g_per_user; k++) {
            fake_tg_sent s;
            assert_int_equal(fake_tg_sent_get(x->f, 3000 + u, NULL, k, &s), 0);
            assert_string_equal(s.method, "sendPhoto");
            px_image b;
            decode(s.data, s.len, &b);
            const px_image *a = &up[u].orig;
            assert_int_equal(b.w, a->w);
            assert_int_equal(b.h, a->h);
            /* this user's marker, this user's picture, faces hidden */
            double mark = box_diff(a, &b, up[u].mark[0] + 4, up[u].mark[1] + 4, up[u].mark[2] - 4,
                                   up[u].mark[3] - 4);
            double face = box_diff(a, &b, up[u].box[0], up[u].box[1], up[u].box[2], up[u].box[3]);
            if (mark > 8 || face < 25)
                fail_msg("user %d reply %d: marker diff %.1f, face diff %.1f", u, k, mark, face);
            px_image_free(&b);
            fake_tg_sent_free(&s);
        }
    }
    for (int u = 0; u < USERS; u++) {
        px_image_free(&up[u].orig);
        px_buf_free(&sent[u]);
    }
}

static void test_load(void **state)
{
    run_load(*state);
}

/* The same load through the webhook: the fake delivers up to 8 updates at
 * once (max_connections), so the listener's threads accept concurrently. */
static void test_webhook_load(void **state)
{
    fx *x = *state;
    const char *const more[] = {"--webhook-connections", "8", NULL};
    start_hook_bot(x, free_port(), 1, more);
    run_load(x);
    int ok = 0, failed = 0;
    fake_tg_webhook_stats(x->f, &ok, &failed, NULL, 0);
    assert_int_equal(ok, USERS * g_per_user);
    assert_int_equal(failed, 0);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(g_tmp, sizeof g_tmp, "/tmp/px_bot_it_XXXXXX");
    if (!mkdtemp(g_tmp))
        return -1;
    g_ref = json_load_file(FACES "reference_boxes.json", 0, NULL);
    return g_ref ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    json_decref(g_ref);
    if (getenv("PX_TEST_KEEP")) { /* the logs are kept for a look */
        fprintf(stderr, "test_bot: kept %s\n", g_tmp);
        return 0;
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    if (access(PX_PIXPIPE_BIN, X_OK) != 0) {
        fprintf(stderr, "test_bot: %s not built\n", PX_PIXPIPE_BIN);
        return 1;
    }
    g_per_user = px_test_load(10, 3);
    const char *per = getenv("PX_BOT_LOAD_PER_USER");
    if (per && atoi(per) > 0)
        g_per_user = atoi(per);
    /* PX_TEST_FILTER: run only the tests whose name matches (cmocka's * and ? wildcards) */
    if (getenv("PX_TEST_FILTER"))
        cmocka_set_test_filter(getenv("PX_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_photo, setup_running, teardown_fx),
        cmocka_unit_test_setup_teardown(test_document_png, setup_running, teardown_fx),
        cmocka_unit_test_setup_teardown(test_no_face, setup_running, teardown_fx),
        cmocka_unit_test_setup_teardown(test_other_content, setup_running, teardown_fx),
        cmocka_unit_test_setup_teardown(test_oversized, setup_running, teardown_fx),
        cmocka_unit_test_setup_teardown(test_album, setup_running, teardown_fx),
        cmocka_unit_test_setup_teardown(test_429_500, setup_running, teardown_fx),
        cmocka_unit_test_setup_teardown(test_400_dropped, setup_running, teardown_fx),
        cmocka_unit_test_setup_teardown(test_no_loss, setup_running, teardown_fx),
        cmocka_unit_test_setup_teardown(test_upload_limits, setup_fx, teardown_fx),
        cmocka_unit_test_setup_teardown(test_one_instance, setup_running, teardown_fx),
        cmocka_unit_test_setup_teardown(test_rate_redelivered, setup_fx, teardown_fx),
        cmocka_unit_test_setup_teardown(test_no_busy_poll, setup_running, teardown_fx),
        cmocka_unit_test_setup_teardown(test_pixel_budget, setup_fx, teardown_fx),
        cmocka_unit_test_setup_teardown(test_metrics, setup_fx, teardown_fx),
        cmocka_unit_test_setup_teardown(test_busy_and_rate_limit, setup_fx, teardown_fx),
        cmocka_unit_test_setup_teardown(test_sigterm_restart, setup_fx, teardown_fx),
        cmocka_unit_test_setup_teardown(test_kill_restart, setup_fx, teardown_fx),
        cmocka_unit_test_setup_teardown(test_conflict, setup_fx, teardown_fx),
        cmocka_unit_test_setup_teardown(test_webhook_photo, setup_fx, teardown_fx),
        cmocka_unit_test_setup_teardown(test_webhook_secret, setup_fx, teardown_fx),
        cmocka_unit_test_setup_teardown(test_webhook_crash_after_200, setup_fx, teardown_fx),
        cmocka_unit_test_setup_teardown(test_webhook_busy, setup_fx, teardown_fx),
        cmocka_unit_test_setup_teardown(test_webhook_health, setup_fx, teardown_fx),
        cmocka_unit_test_setup_teardown(test_polling_deletes_webhook, setup_fx, teardown_fx),
        cmocka_unit_test_setup_teardown(test_load, setup_running, teardown_fx),
        cmocka_unit_test_setup_teardown(test_webhook_load, setup_fx, teardown_fx),
    };
    int r = cmocka_run_group_tests(tests, group_setup, group_teardown);
    return r;
}
