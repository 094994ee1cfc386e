/*
 * Unit tests of the bot's pieces that need no network or model: the SQLite
 * state (handled ids survive a reopen, per-chat mode, per-user rate limit by
 * minute), command parsing, the log tag for chat ids, create's checks
 * (webhook settings too) and the parser of a webhook's update.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four above first */
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bot/px_bot.h"

static char g_dir[64];

static void db_path(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", g_dir, name);
}

static void test_store_handled(void **state)
{
    (void)state;
    char p[128];
    db_path(p, sizeof p, "h.db");
    px_bot_store *s;
    px_err e;
    assert_int_equal(px_bot_store_open(p, &s, &e), PX_OK);
    int64_t big = 9000000000123LL;
    assert_int_equal(px_bot_store_is_handled(s, big), 0);
    assert_int_equal(px_bot_store_mark_handled(s, big, &e), PX_OK);
    assert_int_equal(px_bot_store_mark_handled(s, big, &e), PX_OK); /* idempotent */
    assert_int_equal(px_bot_store_is_handled(s, big), 1);
    assert_int_equal(px_bot_store_is_handled(s, big + 1), 0);
    px_bot_store_close(s);
    /* a restart sees it */
    assert_int_equal(px_bot_store_open(p, &s, &e), PX_OK);
    assert_int_equal(px_bot_store_is_handled(s, big), 1);
    px_bot_store_close(s);
    px_bot_store_close(NULL);
    assert_int_equal(px_bot_store_open("/nonexistent-dir/x/y.db", &s, &e), PX_EIO);
    assert_non_null(strstr(e.msg, "/nonexistent-dir/x/y.db"));
}

static void test_store_mode(void **state)
{
    (void)state;
    char p[128];
    db_path(p, sizeof p, "m.db");
    px_bot_store *s;
    px_err e;
    assert_int_equal(px_bot_store_open(p, &s, &e), PX_OK);
    px_conceal_mode m;
    assert_int_equal(px_bot_store_get_mode(s, -100123, PX_CONCEAL_NOISE, &m), PX_OK);
    assert_int_equal(m, PX_CONCEAL_NOISE);
    assert_int_equal(px_bot_store_set_mode(s, -100123, PX_CONCEAL_PIXELATE, &e), PX_OK);
    assert_int_equal(px_bot_store_set_mode(s, 7, PX_CONCEAL_BLUR, &e), PX_OK);
    assert_int_equal(px_bot_store_set_mode(s, 7, PX_CONCEAL_SOLID, &e), PX_OK);
    assert_int_equal(px_bot_store_get_mode(s, -100123, PX_CONCEAL_NOISE, &m), PX_OK);
    assert_int_equal(m, PX_CONCEAL_PIXELATE);
    assert_int_equal(px_bot_store_get_mode(s, 7, PX_CONCEAL_NOISE, &m), PX_OK);
    assert_int_equal(m, PX_CONCEAL_SOLID);
    px_bot_store_close(s);
}

static void test_store_rate(void **state)
{
    (void)state;
    char p[128];
    db_path(p, sizeof p, "r.db");
    px_bot_store *s;
    px_err e;
    assert_int_equal(px_bot_store_open(p, &s, &e), PX_OK);
    int64_t t = 1700000000 - 1700000000 % 60; /* start of a minute */
    for (int i = 0; i < 3; i++)
        assert_int_equal(px_bot_store_rate_take(s, 5, 3, t + i), 1);
    assert_int_equal(px_bot_store_rate_take(s, 5, 3, t + 30), 0);
    assert_int_equal(px_bot_store_rate_take(s, 5, 3, t + 59), 0);
    assert_int_equal(px_bot_store_rate_take(s, 6, 3, t + 59), 1); /* other users are apart */
    assert_int_equal(px_bot_store_rate_take(s, 5, 3, t + 60), 1); /* next minute */
    px_bot_store_close(s);
}

/* The durable job queue: accepted once (and charged once), deferred jobs
 * wait for their time, a reopen makes them due, finishing moves them to
 * handled. */
static void test_store_pending(void **state)
{
    (void)state;
    char p[128];
    db_path(p, sizeof p, "p.db");
    px_bot_store *s;
    px_err e;
    assert_int_equal(px_bot_store_open(p, &s, &e), PX_OK);
    int64_t t = 1700000000 - 1700000000 % 60;
    px_tg_update u;
    memset(&u, 0, sizeof u);
    u.update_id = 5000000001LL;
    u.kind = PX_TG_MSG_PHOTO;
    u.chat_id = -1001234567890LL;
    u.user_id = 77;
    u.message_id = 9;
    snprintf(u.file_id, sizeof u.file_id, "AgACfile");
    snprintf(u.text, sizeof u.text, "a caption");
    px_tg_update cmd = u;
    cmd.update_id++;
    cmd.kind = PX_TG_MSG_TEXT;
    snprintf(cmd.text, sizeof cmd.text, "/mode blur");
    int limited = -1;
    assert_int_equal(px_bot_store_accept(s, &u, 1, t, &limited, &e), 1);
    assert_int_equal(limited, 0);
    assert_int_equal(px_bot_store_accept(s, &u, 1, t, &limited, &e), 0); /* seen again */
    assert_int_equal(px_bot_store_rate_take(s, 77, 2, t), 1);            /* charged once: 1 of 2 */
    assert_int_equal(px_bot_store_rate_take(s, 77, 2, t), 0);
    assert_int_equal(px_bot_store_accept(s, &cmd, 1, t, &limited, &e), 1);
    assert_int_equal(px_bot_store_is_known(s, u.update_id), 1);
    assert_int_equal(px_bot_store_is_known(s, u.update_id + 5), 0);

    px_bot_pending due[4];
    assert_int_equal(px_bot_store_due(s, t, NULL, 0, due, 4), 2);
    assert_true(due[0].u.update_id == u.update_id);
    assert_true(due[0].u.chat_id == u.chat_id);
    assert_string_equal(due[0].u.file_id, "AgACfile");
    assert_string_equal(due[0].u.text, ""); /* a caption is not kept */
    assert_int_equal(due[0].u.kind, PX_TG_MSG_PHOTO);
    assert_string_equal(due[1].u.text, "/mode blur");
    assert_int_equal(px_bot_store_due(s, t, &u.update_id, 1, due, 4), 1); /* skipped */
    assert_true(due[0].u.update_id == cmd.update_id);

    assert_int_equal(px_bot_store_defer(s, u.update_id, t + 200, &e), PX_OK);
    assert_int_equal(px_bot_store_due(s, t + 10, NULL, 0, due, 4), 1);
    int64_t at = 0;
    assert_int_equal(px_bot_store_next_due(s, t + 10, &at), 1);
    assert_true(at == t + 200);
    assert_int_equal(px_bot_store_due(s, t + 200, NULL, 0, due, 4), 2);
    assert_int_equal(due[0].attempts, 1);
    assert_true(due[0].first_at == t);
    assert_int_equal(px_bot_store_finish(s, cmd.update_id, &e), PX_OK);
    assert_int_equal(px_bot_store_defer(s, u.update_id, t + 200, &e), PX_OK);
    px_bot_store_close(s);

    /* reopened (a restart): what waits is due at once */
    assert_int_equal(px_bot_store_open(p, &s, &e), PX_OK);
    assert_int_equal(px_bot_store_due(s, t, NULL, 0, due, 4), 1);
    assert_int_equal(due[0].attempts, 2);
    assert_int_equal(px_bot_store_next_due(s, t, &at), 0);
    assert_int_equal(px_bot_store_is_known(s, cmd.update_id), 1); /* handled now */
    assert_int_equal(px_bot_store_finish(s, u.update_id, &e), PX_OK);
    assert_int_equal(px_bot_store_due(s, t, NULL, 0, due, 4), 0);
    assert_int_equal(px_bot_store_is_handled(s, u.update_id), 1);
    px_bot_store_close(s);
}

/* Fitting a result into upload limits: untouched when it fits; else JPEG at
 * falling quality, then scaled; an impossible limit is PX_ELIMIT. */
static void test_fit(void **state)
{
    (void)state;
    px_image img;
    assert_int_equal(px_image_alloc(&img, 800, 600, 3), PX_OK);
    uint32_t r = 7;
    for (int y = 0; y < img.h; y++)
        for (int x = 0; x < img.w * 3; x++) {
            r = r * 1103515245u + 12345u;
            img.px[(size_t)y * img.stride + (size_t)x] = (uint8_t)(r >> 24);
        }
    px_buf png = {0}, out = {0};
    px_err e;
    assert_int_equal(px_image_encode(&img, PX_FMT_PNG, 90, &png, &e), PX_OK);
    char note[256];
    px_bot_fit_limits lim = {png.len, 10000};
    assert_int_equal(px_bot_fit(png.data, png.len, 800, 600, &lim, 0, &out, note, sizeof note, &e),
                     0);
    assert_null(out.data);
    /* a file: JPEG at the first quality that fits, same size */
    lim.max_bytes = png.len / 2;
    assert_int_equal(px_bot_fit(png.data, png.len, 800, 600, &lim, 0, &out, note, sizeof note, &e),
                     1);
    assert_true(out.len <= lim.max_bytes);
    assert_int_equal(px_image_sniff(out.data, out.len), PX_FMT_JPEG);
    assert_non_null(strstr(note, "JPEG quality"));
    assert_null(strstr(note, "scaled"));
    px_buf_free(&out);
    /* a photo: sides over the limit and a small byte limit: scaled */
    lim.max_bytes = 40 << 10;
    lim.max_sides = 1000;
    assert_int_equal(px_bot_fit(png.data, png.len, 800, 600, &lim, 1, &out, note, sizeof note, &e),
                     1);
    assert_true(out.len <= lim.max_bytes);
    px_image back;
    px_decode_opts o = px_decode_opts_default();
    assert_int_equal(px_image_decode(out.data, out.len, &o, &back, NULL, &e), PX_OK);
    assert_true(back.w + back.h <= 1000);
    assert_non_null(strstr(note, "scaled down from 800x600"));
    px_image_free(&back);
    px_buf_free(&out);
    /* the header sizes the pixel budget charges */
    assert_true(px_bot_image_pixels(png.data, png.len) == 800u * 600u);
    assert_true(px_bot_image_pixels(out.data, out.len) == (uint64_t)back.w * back.h);
    px_buf webp = {0};
    assert_int_equal(px_image_encode(&img, PX_FMT_WEBP, 80, &webp, &e), PX_OK);
    assert_true(px_bot_image_pixels(webp.data, webp.len) == 800u * 600u);
    px_buf_free(&webp);
    assert_int_equal(px_image_encode(&img, PX_FMT_WEBP, 100, &webp, &e), PX_OK); /* lossless */
    assert_true(px_bot_image_pixels(webp.data, webp.len) == 800u * 600u);
    px_buf_free(&webp);
    assert_true(px_bot_image_pixels(png.data, 20) == 0); /* cut short */
    assert_true(px_bot_image_pixels((const uint8_t *)"hello world", 11) == 0);
    lim.max_bytes = 100; /* not even a 1x1 JPEG */
    assert_int_equal(px_bot_fit(png.data, png.len, 800, 600, &lim, 1, &out, note, sizeof note, &e),
                     PX_ELIMIT);
    assert_null(out.data);
    px_buf_free(&png);
    px_image_free(&img);
}

static void test_sha256(void **state)
{
    (void)state;
    char p[128], hex[65];
    px_err e;
    db_path(p, sizeof p, "abc.bin");
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs("abc", f);
    fclose(f);
    assert_int_equal(px_bot_file_sha256(p, hex, &e), PX_OK);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    db_path(p, sizeof p, "missing.bin");
    assert_int_equal(px_bot_file_sha256(p, hex, &e), PX_EIO);
    assert_string_equal(hex, "");
}

static void test_commands(void **state)
{
    (void)state;
    char arg[16];
    assert_int_equal(px_bot_parse_command("/start", arg, sizeof arg), PX_BOT_CMD_START);
    assert_string_equal(arg, "");
    assert_int_equal(px_bot_parse_command("/HELP", arg, sizeof arg), PX_BOT_CMD_HELP);
    assert_int_equal(px_bot_parse_command("/mode@PixBot  blur", arg, sizeof arg), PX_BOT_CMD_MODE);
    assert_string_equal(arg, "blur");
    assert_int_equal(px_bot_parse_command("/mode pixelate extra", arg, sizeof arg),
                     PX_BOT_CMD_MODE);
    assert_string_equal(arg, "pixelate");
    assert_int_equal(px_bot_parse_command("/mode averyveryverylongargument", arg, sizeof arg),
                     PX_BOT_CMD_MODE);
    assert_int_equal(strlen(arg), sizeof arg - 1);
    assert_int_equal(px_bot_parse_command("/modes", arg, sizeof arg), PX_BOT_CMD_UNKNOWN);
    assert_int_equal(px_bot_parse_command("hello /start", arg, sizeof arg), PX_BOT_CMD_NONE);
    assert_int_equal(px_bot_parse_command("", arg, sizeof arg), PX_BOT_CMD_NONE);
    assert_int_equal(px_bot_parse_command(NULL, arg, sizeof arg), PX_BOT_CMD_NONE);
}

static void test_chat_tag(void **state)
{
    (void)state;
    char a[9], b[9], c[9];
    px_bot_chat_tag(1, 123456789, a);
    px_bot_chat_tag(1, 123456789, b);
    px_bot_chat_tag(1, 123456788, c);
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_int_equal(strlen(a), 8);
    assert_null(strstr(a, "1234"));
    px_bot_chat_tag(2, 123456789, c); /* another run, another tag */
    assert_string_not_equal(a, c);
}

static void test_create_checks(void **state)
{
    (void)state;
    px_bot_config c = px_bot_config_default();
    px_bot *b = NULL;
    px_err e;
    assert_int_equal(px_bot_create(&c, &b, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "token"));
    c.token = "1:x";
    assert_int_equal(px_bot_create(&c, &b, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "database"));
    c.db_path = "/tmp/x.db";
    assert_int_equal(px_bot_create(&c, &b, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "detector"));
    assert_null(b);
    px_bot_destroy(NULL);
}

/* Webhook settings are checked at create: https only, --listen needed, the
 * secret's alphabet; a good set creates a bot (no network yet). */
static void test_create_webhook(void **state)
{
    (void)state;
    char p[128];
    db_path(p, sizeof p, "hook.db");
    px_bot_config c = px_bot_config_default();
    c.token = "1:x";
    c.db_path = p;
    c.det = (px_face_detector *)(uintptr_t)1; /* never used before px_bot_run */
    px_bot *b = NULL;
    px_err e;
    static const char *const bad_urls[] = {"http://x.org/hook", "https://", "https:///p",
                                           "https://x.org/h?k=1", "https://x.org/a b"};
    c.webhook_listen = "127.0.0.1:0";
    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        c.webhook_url = bad_urls[i];
        assert_int_equal(px_bot_create(&c, &b, &e), PX_EINVAL);
        assert_non_null(strstr(e.msg, "--webhook"));
        assert_null(b);
    }
    c.webhook_url = "https://bot.example.org:8443/tg/hook";
    c.webhook_listen = NULL;
    assert_int_equal(px_bot_create(&c, &b, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "--listen"));
    c.webhook_listen = "127.0.0.1:0";
    c.webhook_secret = "has space";
    assert_int_equal(px_bot_create(&c, &b, &e), PX_EINVAL);
    assert_non_null(strstr(e.msg, "secret"));
    assert_null(strstr(e.msg, "has space")); /* a secret is never repeated */
    c.webhook_secret = "Good_secret-0123";
    assert_int_equal(px_bot_create(&c, &b, &e), PX_OK);
    px_bot_destroy(b);
}

/* One Update object as a webhook delivers it, and the secret's alphabet. */
static void test_parse_update(void **state)
{
    (void)state;
    px_tg_update u;
    px_err e;
    const char *ok = "{\"update_id\":9000000001,\"message\":{\"message_id\":7,\"chat\":"
                     "{\"id\":-100123},\"from\":{\"id\":55},\"photo\":[{\"file_id\":\"s\","
                     "\"width\":90,\"height\":90},{\"file_id\":\"big\",\"width\":1280,"
                     "\"height\":960,\"file_size\":12345}]}}";
    assert_int_equal(px_tg_parse_update(ok, strlen(ok), &u, &e), PX_OK);
    assert_true(u.update_id == 9000000001LL);
    assert_int_equal(u.kind, PX_TG_MSG_PHOTO);
    assert_true(u.chat_id == -100123 && u.message_id == 7 && u.user_id == 55);
    assert_string_equal(u.file_id, "big");
    const char *other = "{\"update_id\":5,\"edited_message\":{\"text\":\"x\"}}";
    assert_int_equal(px_tg_parse_update(other, strlen(other), &u, &e), PX_OK);
    assert_int_equal(u.kind, PX_TG_MSG_NONE);
    static const char *const bad[] = {"",
                                      "[]",
                                      "{\"update_id\":-1}",
                                      "{\"update_id\":\"5\"}",
                                      "{\"message\":{}}",
                                      "{\"update_id\":5",
                                      "null"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(px_tg_parse_update(bad[i], strlen(bad[i]), &u, &e), PX_EINVAL);
        assert_true(u.update_id == 0);
    }
    assert_int_equal(px_tg_parse_update(NULL, 0, &u, &e), PX_EINVAL);
    char s257[258];
    memset(s257, 'a', 257);
    s257[257] = '\0';
    assert_false(px_tg_secret_token_valid(s257));
    s257[256] = '\0';
    assert_true(px_tg_secret_token_valid(s257));
    assert_true(px_tg_secret_token_valid("AZaz09_-"));
    assert_false(px_tg_secret_token_valid(""));
    assert_false(px_tg_secret_token_valid(NULL));
    assert_false(px_tg_secret_token_valid("a.b"));
    assert_false(px_tg_secret_token_valid("a b"));
    assert_false(px_tg_secret_token_valid("\xc3\xa9t\xc3\xa9"));
}

int main(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/px_bot_unit_XXXXXX");
    if (!mkdtemp(g_dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_handled), cmocka_unit_test(test_store_mode),
        cmocka_unit_test(test_store_rate),    cmocka_unit_test(test_store_pending),
        cmocka_unit_test(test_fit),           cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_commands),      cmocka_unit_test(test_chat_tag),
        cmocka_unit_test(test_create_checks), cmocka_unit_test(test_create_webhook),
        cmocka_unit_test(test_parse_update),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0)
        r = 1;
    return r;
}
