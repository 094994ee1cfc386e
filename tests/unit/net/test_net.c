/*
 * Unit tests of px_http and px_telegram against the fake Bot API server
 * (tests/fakes), plus the getUpdates parser on hand-written answers.
 * Every wait here is short: the fake is told to be slow by fractions of a
 * second, and retry back-offs are set to tens of milliseconds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the four above first */
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fakes/fake_telegram.h"
#include "net/px_http.h"
#include "net/px_telegram.h"

#define TOKEN "123456:TEST-token_abc"

typedef struct {
    fake_tg *f;
    px_tg *tg;
} fx;

static int setup(void **state)
{
    fx *x = calloc(1, sizeof *x);
    if (fake_tg_start(TOKEN, &x->f))
        return -1;
    px_tg_config c = {0};
    c.api_url = fake_tg_url(x->f);
    c.token = TOKEN;
    c.backoff_ms = 20;
    c.max_attempts = 4;
    px_err e;
    if (px_tg_create(&c, &x->tg, &e) != PX_OK)
        return -1;
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    fx *x = *state;
    px_tg_destroy(x->tg);
    fake_tg_stop(x->f);
    free(x);
    return 0;
}

static void test_redact(void **state)
{
    (void)state;
    char out[128];
    px_http_redact_url("https://api.telegram.org/bot123:ABC/getUpdates", out, sizeof out);
    assert_string_equal(out, "https://api.telegram.org/bot<redacted>/getUpdates");
    px_http_redact_url("http://h/file/bot123:ABC/photos/x.jpg", out, sizeof out);
    assert_string_equal(out, "http://h/file/bot<redacted>/photos/x.jpg");
    px_http_redact_url("http://h/bot123:ABC", out, sizeof out);
    assert_string_equal(out, "http://h/bot<redacted>");
    px_http_redact_url("http://h/other/path", out, sizeof out);
    assert_string_equal(out, "http://h/other/path");
    px_http_redact_url("http://h/bot1234567890/x", out, 10);
    assert_int_equal(strlen(out), 9);
}

static void test_parse(void **state)
{
    (void)state;
    const char *j =
        "{\"ok\":true,\"result\":["
        "{\"update_id\":9000000001,\"message\":{\"message_id\":7,\"chat\":{\"id\":-1001234567890},"
        "\"from\":{\"id\":5000000000},\"media_group_id\":\"g1\",\"photo\":["
        "{\"file_id\":\"small\",\"width\":90,\"height\":60,\"file_size\":100},"
        "{\"file_id\":\"big\",\"file_unique_id\":\"u\",\"width\":1280,\"height\":853,\"file_size\":"
        "99999},"
        "{\"file_id\":\"mid\",\"width\":320,\"height\":213}]}},"
        "{\"update_id\":9000000002,\"message\":{\"message_id\":8,\"chat\":{\"id\":5},"
        "\"document\":{\"file_id\":\"d\",\"mime_type\":\"image/"
        "png\",\"file_name\":\"a.png\",\"file_size\":12}}},"
        "{\"update_id\":9000000003,\"message\":{\"message_id\":9,\"chat\":{\"id\":5},\"text\":\"/"
        "mode blur\"}},"
        "{\"update_id\":9000000004,\"message\":{\"message_id\":10,\"chat\":{\"id\":\"oops\"},"
        "\"sticker\":{}}},"
        "{\"update_id\":\"bad\"},"
        "{\"update_id\":9000000005,\"edited_message\":{}}"
        "]}";
    px_tg_update *u = NULL;
    int n = 0;
    px_err e;
    assert_int_equal(px_tg_parse_updates(j, strlen(j), &u, &n, NULL, &e), PX_OK);
    assert_int_equal(n, 5); /* the one without a usable update_id is skipped */
    assert_true(u[0].update_id == 9000000001LL);
    assert_int_equal(u[0].kind, PX_TG_MSG_PHOTO);
    assert_true(u[0].chat_id == -1001234567890LL);
    assert_true(u[0].user_id == 5000000000LL);
    assert_string_equal(u[0].file_id, "big");
    assert_int_equal(u[0].file_size, 99999);
    assert_string_equal(u[0].media_group_id, "g1");
    assert_int_equal(u[1].kind, PX_TG_MSG_DOCUMENT);
    assert_string_equal(u[1].mime_type, "image/png");
    assert_string_equal(u[1].file_name, "a.png");
    assert_int_equal(u[2].kind, PX_TG_MSG_TEXT);
    assert_string_equal(u[2].text, "/mode blur");
    assert_int_equal(u[3].kind, PX_TG_MSG_OTHER);
    assert_int_equal(u[3].chat_id, 0); /* wrong type: left empty */
    assert_int_equal(u[4].kind, PX_TG_MSG_NONE);
    free(u);

    px_tg_error info;
    const char *e429 =
        "{\"ok\":false,\"error_code\":429,\"description\":\"Too Many Requests: retry "
        "after 7\",\"parameters\":{\"retry_after\":7}}";
    assert_int_equal(px_tg_parse_updates(e429, strlen(e429), &u, &n, &info, &e), PX_EBUSY);
    assert_int_equal(info.retry_after, 7);
    assert_int_equal(info.error_code, 429);
    const char *e409 = "{\"ok\":false,\"error_code\":409,\"description\":\"Conflict\"}";
    assert_int_equal(px_tg_parse_updates(e409, strlen(e409), &u, &n, &info, &e), PX_ECLOSED);
    assert_int_equal(px_tg_parse_updates("<html>", 6, &u, &n, &info, &e), PX_EINVAL);
    assert_int_equal(px_tg_parse_updates("{\"ok\":true,\"result\":{}}", 23, &u, &n, &info, &e),
                     PX_EINVAL);
    assert_int_equal(px_tg_parse_updates("{\"ok\":true,\"result\":[]}", 23, &u, &n, &info, &e),
                     PX_OK);
    assert_int_equal(n, 0);
    assert_null(u);
}

static const uint8_t jpeg_bytes[] = {0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 4, 5, 0, 0xFF, 0xD9};

static void test_updates_and_offsets(void **state)
{
    fx *x = *state;
    px_tg_update *u = NULL;
    int n = 0;
    px_err e;
    /* an empty long poll really waits */
    double t0 = px_now_ms();
    assert_int_equal(px_tg_get_updates(x->tg, 0, 1, 100, &u, &n, NULL, &e), PX_OK);
    assert_int_equal(n, 0);
    assert_true(px_now_ms() - t0 >= 900);

    int64_t a = fake_tg_add_text(x->f, 11, 21, "hello");
    int64_t b = fake_tg_add_photo(x->f, 12, 22, jpeg_bytes, sizeof jpeg_bytes, NULL);
    assert_true(a > 4294967296LL); /* ids past 32 bits survive */
    assert_int_equal(px_tg_get_updates(x->tg, 0, 5, 100, &u, &n, NULL, &e), PX_OK);
    assert_int_equal(n, 2);
    assert_true(u[0].update_id == a && u[1].update_id == b);
    assert_string_equal(u[0].text, "hello");
    assert_true(u[1].chat_id == 12 && u[1].kind == PX_TG_MSG_PHOTO);
    free(u);
    /* confirming a leaves only b */
    assert_int_equal(px_tg_get_updates(x->tg, a + 1, 0, 100, &u, &n, NULL, &e), PX_OK);
    assert_int_equal(n, 1);
    assert_true(u[0].update_id == b);
    free(u);
    assert_true(fake_tg_confirmed(x->f) == a + 1);
    /* a long poll wakes when a message arrives */
    assert_int_equal(px_tg_get_updates(x->tg, b + 1, 0, 100, &u, &n, NULL, &e), PX_OK);
    assert_int_equal(n, 0);
}

static void test_files(void **state)
{
    fx *x = *state;
    px_err e;
    uint8_t big[5000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7);
    int64_t id = fake_tg_add_document(x->f, 31, 41, big, sizeof big, "x.bin", "application/zip");
    px_tg_update *u = NULL;
    int n = 0;
    assert_int_equal(px_tg_get_updates(x->tg, id, 0, 100, &u, &n, NULL, &e), PX_OK);
    assert_int_equal(n, 1);
    char path[256];
    int64_t size = 0;
    assert_int_equal(px_tg_get_file(x->tg, u[0].file_id, path, sizeof path, &size, NULL, &e),
                     PX_OK);
    assert_int_equal(size, sizeof big);
    px_buf b = {0};
    assert_int_equal(px_tg_download(x->tg, path, 1 << 20, &b, NULL, &e), PX_OK);
    assert_int_equal(b.len, sizeof big);
    assert_memory_equal(b.data, big, sizeof big);
    px_buf_free(&b);
    /* over the cap: refused, and the message names no token */
    assert_int_equal(px_tg_download(x->tg, path, 1000, &b, NULL, &e), PX_ELIMIT);
    assert_null(strstr(e.msg, TOKEN));
    px_buf_free(&b);
    /* a local Bot API server gives absolute paths */
    char dir[] = "/tmp/px_net_test_XXXXXX";
    assert_non_null(mkdtemp(dir));
    fake_tg_set_local_dir(x->f, dir);
    assert_int_equal(px_tg_get_file(x->tg, u[0].file_id, path, sizeof path, &size, NULL, &e),
                     PX_OK);
    assert_int_equal(path[0], '/');
    assert_int_equal(px_tg_download(x->tg, path, 1 << 20, &b, NULL, &e), PX_OK);
    assert_int_equal(b.len, sizeof big);
    assert_memory_equal(b.data, big, sizeof big);
    px_buf_free(&b);
    unlink(path);
    rmdir(dir);
    px_tg_error info;
    assert_int_equal(px_tg_get_file(x->tg, "nope", path, sizeof path, &size, &info, &e), PX_EINVAL);
    assert_int_equal(info.error_code, 400);
    free(u);
}

static void test_send(void **state)
{
    fx *x = *state;
    px_err e;
    int64_t upd = fake_tg_add_photo(x->f, 51, 61, jpeg_bytes, sizeof jpeg_bytes, NULL);
    int64_t mid = fake_tg_message_id(x->f, upd);
    int64_t sent = 0;
    assert_int_equal(px_tg_send_photo(x->tg, 51, mid, jpeg_bytes, sizeof jpeg_bytes, "a.jpg",
                                      "image/jpeg", "2 faces hidden", &sent, NULL, &e),
                     PX_OK);
    assert_true(sent > 0);
    assert_int_equal(px_tg_send_message(x->tg, 51, mid, "hi there", NULL, NULL, &e), PX_OK);
    assert_int_equal(
        px_tg_send_document(x->tg, 51, 0, jpeg_bytes, 5, "d.bin", NULL, NULL, NULL, NULL, &e),
        PX_OK);
    assert_int_equal(px_tg_send_chat_action(x->tg, 51, "upload_photo", NULL, &e), PX_OK);
    px_tg_command cmds[] = {{"help", "what I do"}};
    assert_int_equal(px_tg_set_my_commands(x->tg, cmds, 1, NULL, &e), PX_OK);
    fake_tg_sent s;
    assert_int_equal(fake_tg_sent_get(x->f, 51, "sendPhoto", 0, &s), 0);
    assert_int_equal(s.len, sizeof jpeg_bytes);
    assert_memory_equal(s.data, jpeg_bytes, sizeof jpeg_bytes);
    assert_true(s.reply_to == mid);
    assert_string_equal(s.text, "2 faces hidden");
    assert_string_equal(s.filename, "a.jpg");
    fake_tg_sent_free(&s);
    assert_int_equal(fake_tg_sent_get(x->f, 51, "sendMessage", 0, &s), 0);
    assert_string_equal(s.text, "hi there");
    assert_true(s.reply_to == mid);
    fake_tg_sent_free(&s);
    assert_int_equal(fake_tg_sent_count(x->f, 51, NULL), 3);
    /* the real server's checks: unknown chat, not an image */
    px_tg_error info;
    assert_int_equal(px_tg_send_message(x->tg, 999, 0, "x", NULL, &info, &e), PX_EINVAL);
    assert_int_equal(info.error_code, 400);
    assert_non_null(strstr(e.msg, "chat not found"));
    assert_int_equal(px_tg_send_photo(x->tg, 51, 0, (const uint8_t *)"text", 4, "a.jpg",
                                      "image/jpeg", NULL, NULL, &info, &e),
                     PX_EINVAL);
}

static void test_errors_and_retries(void **state)
{
    fx *x = *state;
    px_err e;
    px_tg_error info;
    fake_tg_add_text(x->f, 71, 81, "x");
    /* 429: waits retry_after, then succeeds */
    int before = fake_tg_calls(x->f, "sendMessage");
    fake_tg_inject(x->f, "sendMessage", 1, 429, 1, 0);
    double t0 = px_now_ms();
    assert_int_equal(px_tg_send_message(x->tg, 71, 0, "after 429", NULL, &info, &e), PX_OK);
    assert_true(px_now_ms() - t0 >= 950);
    assert_int_equal(fake_tg_calls(x->f, "sendMessage") - before, 2);
    /* 500 twice: retried with back-off */
    before = fake_tg_calls(x->f, "sendMessage");
    fake_tg_inject(x->f, "sendMessage", 2, 500, 0, 0);
    assert_int_equal(px_tg_send_message(x->tg, 71, 0, "after 500", NULL, &info, &e), PX_OK);
    assert_int_equal(fake_tg_calls(x->f, "sendMessage") - before, 3);
    /* 500 for ever: gives up after max_attempts */
    before = fake_tg_calls(x->f, "sendMessage");
    fake_tg_inject(x->f, "sendMessage", 4, 502, 0, 0);
    assert_int_equal(px_tg_send_message(x->tg, 71, 0, "never", NULL, &info, &e), PX_ENET);
    assert_int_equal(info.error_code, 502);
    assert_int_equal(fake_tg_calls(x->f, "sendMessage") - before, 4);
    /* 400: not retried */
    before = fake_tg_calls(x->f, "sendMessage");
    fake_tg_inject(x->f, "sendMessage", 1, 400, 0, 0);
    assert_int_equal(px_tg_send_message(x->tg, 71, 0, "bad", NULL, &info, &e), PX_EINVAL);
    assert_int_equal(fake_tg_calls(x->f, "sendMessage") - before, 1);
    /* 409 on getUpdates */
    px_tg_update *u = NULL;
    int n = 0;
    fake_tg_inject(x->f, "getUpdates", 1, 409, 0, 0);
    assert_int_equal(px_tg_get_updates(x->tg, 0, 0, 100, &u, &n, &info, &e), PX_ECLOSED);
    assert_int_equal(info.error_code, 409);
    assert_null(strstr(e.msg, TOKEN));
}

static void test_bad_token_and_timeout(void **state)
{
    fx *x = *state;
    px_err e;
    px_tg_error info;
    px_tg_config c = {0};
    c.api_url = fake_tg_url(x->f);
    c.token = "999:WRONG";
    c.backoff_ms = 10;
    c.max_attempts = 2;
    c.request_timeout_ms = 300;
    px_tg *bad;
    assert_int_equal(px_tg_create(&c, &bad, &e), PX_OK);
    assert_int_equal(px_tg_send_chat_action(bad, 1, "typing", &info, &e), PX_EINVAL);
    assert_int_equal(info.error_code, 401);
    assert_null(strstr(e.msg, "WRONG"));
    px_tg_destroy(bad);
    /* a slow server: timeouts, retried, then PX_ETIMEOUT */
    c.token = TOKEN;
    assert_int_equal(px_tg_create(&c, &bad, &e), PX_OK);
    fake_tg_add_text(x->f, 91, 1, "x");
    fake_tg_inject(x->f, "sendChatAction", 2, 0, 0, 1000);
    assert_int_equal(px_tg_send_chat_action(bad, 91, "typing", &info, &e), PX_ETIMEOUT);
    assert_null(strstr(e.msg, TOKEN));
    assert_non_null(strstr(e.msg, "<redacted>"));
    px_tg_destroy(bad);
    /* nothing listening */
    c.api_url = "http://127.0.0.1:1";
    assert_int_equal(px_tg_create(&c, &bad, &e), PX_OK);
    assert_int_equal(px_tg_send_chat_action(bad, 91, "typing", &info, &e), PX_ENET);
    px_tg_destroy(bad);
    c.token = "bad/token";
    assert_int_equal(px_tg_create(&c, &bad, &e), PX_EINVAL);
}

static void test_cancel(void **state)
{
    fx *x = *state;
    px_err e;
    atomic_int stop;
    atomic_init(&stop, 1);
    px_tg_config c = {0};
    c.api_url = fake_tg_url(x->f);
    c.token = TOKEN;
    c.cancel = &stop;
    px_tg *tg;
    assert_int_equal(px_tg_create(&c, &tg, &e), PX_OK);
    px_tg_update *u = NULL;
    int n = 0;
    double t0 = px_now_ms();
    assert_int_equal(px_tg_get_updates(tg, 0, 30, 100, &u, &n, NULL, &e), PX_ECLOSED);
    /* cancelled, not the 30 s long poll run out (no bound tighter than that: a busy
     * machine must not fail this) */
    assert_true(px_now_ms() - t0 < 29000);
    px_tg_destroy(tg);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_redact),
        cmocka_unit_test(test_parse),
        cmocka_unit_test_setup_teardown(test_updates_and_offsets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_and_retries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_token_and_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return r;
}
