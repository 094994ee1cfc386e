/*
 * fake_telegram: a test double of the Telegram Bot API server, run in the
 * test's own process on 127.0.0.1 (a random free port) with libmicrohttpd.
 *
 * It serves /bot<token>/<method> for getUpdates (long polling that really
 * waits, offsets that confirm), getFile, sendMessage, sendPhoto,
 * sendDocument, sendChatAction, setMyCommands, getMe, and the webhook
 * (setWebhook, deleteWebhook, getWebhookInfo, deliveries), with JSON,
 * urlencoded or multipart bodies as the real server takes them, and
 * /file/bot<token>/<path> downloads. Errors use Telegram's shape
 * {"ok":false,"error_code":N,"description":"...","parameters":{...}}.
 *
 * The C API below is the control interface: inject user messages, make calls
 * fail or go slow, and read back what the bot sent to each chat (uploaded
 * bytes included). All functions are thread-safe.
 */
#ifndef FAKE_TELEGRAM_H
#define FAKE_TELEGRAM_H

#include <stddef.h>
#include <stdint.h>

typedef struct fake_tg fake_tg;

/* Starts the server; returns 0 or -1. token is what the bot must use. */
int fake_tg_start(const char *token, fake_tg **out);
void fake_tg_stop(fake_tg *f);             /* NULL is a no-op; wakes waiting long polls */
const char *fake_tg_url(const fake_tg *f); /* "http://127.0.0.1:PORT" */

/* Injected user messages; each returns the new update_id (> 0) or -1.
 * media_group_id may be NULL. */
int64_t fake_tg_add_photo(fake_tg *f, int64_t chat_id, int64_t user_id, const uint8_t *data,
                          size_t len, const char *media_group_id);
int64_t fake_tg_add_document(fake_tg *f, int64_t chat_id, int64_t user_id, const uint8_t *data,
                             size_t len, const char *file_name, const char *mime);
int64_t fake_tg_add_text(fake_tg *f, int64_t chat_id, int64_t user_id, const char *text);
int64_t fake_tg_add_sticker(fake_tg *f, int64_t chat_id, int64_t user_id);
/* message_id of the message carried by an update (for checking replies). */
int64_t fake_tg_message_id(fake_tg *f, int64_t update_id);

/* getFile answers absolute paths under dir (files written there), as a local
 * Bot API server does. NULL restores relative paths. */
void fake_tg_set_local_dir(fake_tg *f, const char *dir);

/* Upload limits (defaults: Telegram's 10 MB and width + height 10000 for
 * photos, 50 MB for documents), lowered by tests so that small images
 * exercise them. */
void fake_tg_set_upload_limits(fake_tg *f, size_t photo_bytes, size_t document_bytes,
                               int photo_sides);

/* The next `count` calls of method ("*": any) wait delay_ms, then fail with
 * http_code (0: do not fail, just be slow). retry_after is sent for 429. */
void fake_tg_inject(fake_tg *f, const char *method, int count, int http_code, int retry_after,
                    int delay_ms);

/* What the bot sent. */
typedef struct fake_tg_sent {
    char method[32];
    int64_t chat_id, reply_to, message_id;
    char text[1024]; /* text or caption */
    uint8_t *data;   /* uploaded file (photo/document), malloc'd copy; NULL otherwise */
    size_t len;
    char filename[128], mime[64];
} fake_tg_sent;
/* Number of sends so far matching chat_id (0: any) and method (NULL: any of
 * sendMessage/sendPhoto/sendDocument). */
int fake_tg_sent_count(fake_tg *f, int64_t chat_id, const char *method);
/* Copies the idx-th matching send into *out (free with fake_tg_sent_free).
 * Returns 0, or -1 when there is no such send. */
int fake_tg_sent_get(fake_tg *f, int64_t chat_id, const char *method, int idx, fake_tg_sent *out);
void fake_tg_sent_free(fake_tg_sent *s);
/* Waits until at least count matching sends exist; returns the count seen. */
int fake_tg_wait_sent(fake_tg *f, int64_t chat_id, const char *method, int count, int timeout_ms);

int fake_tg_calls(fake_tg *f, const char *method); /* calls received, failed ones included */
int64_t fake_tg_confirmed(fake_tg *f); /* highest offset a getUpdates confirmed (0: none) */
/* Forgets confirmations: every update is delivered again, as if the bot's
 * confirmation had been lost. */
void fake_tg_unconfirm_all(fake_tg *f);

/* ---- the webhook ----
 * setWebhook (https URL on port 443, 80, 88 or 8443; secret_token of 1-256
 * A-Z a-z 0-9 _ -; max_connections 1..100), deleteWebhook and
 * getWebhookInfo behave as Telegram's do, and getUpdates is refused with
 * 409 while a webhook is set. Pusher threads then POST each update (its
 * JSON, with the X-Telegram-Bot-Api-Secret-Token header) to the webhook,
 * up to max_connections at once, one chat's updates in order; a 2xx
 * confirms it, anything else is tried again later (100 ms doubling, at
 * most 2 s). */
/* The "reverse proxy": deliveries for the webhook URL's path go over plain
 * HTTP to ipv4_port ("127.0.0.1:PORT"); NULL or "": unreachable (the
 * deliveries fail with "Connection refused" and are retried). */
void fake_tg_set_webhook_route(fake_tg *f, const char *ipv4_port);
/* 1 when a webhook is set (its URL and secret copied out), else 0. */
int fake_tg_webhook(fake_tg *f, char *url, size_t ucap, char *secret, size_t scap);
/* Sets a webhook as an earlier program would have left it. */
void fake_tg_preset_webhook(fake_tg *f, const char *url, const char *secret);
/* Deliveries answered 2xx and not, and getWebhookInfo's last_error_message. */
void fake_tg_webhook_stats(fake_tg *f, int *delivered, int *failed, char *last_error, size_t cap);

#endif
