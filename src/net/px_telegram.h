/*
 * px_telegram: a client for the subset of the Telegram Bot API the bot uses
 * (getUpdates long polling, getFile + download, sendMessage, sendPhoto,
 * sendDocument, sendChatAction, setMyCommands, and the webhook calls
 * setWebhook, deleteWebhook, getWebhookInfo), over px_http and Jansson.
 *
 * Every method is a request to <api_url>/bot<token>/<method>; the answer is
 * {"ok":true,"result":...} or Telegram's error shape {"ok":false,
 * "error_code":N,"description":"...","parameters":{"retry_after":S}}. The
 * client retries what is worth retrying: 429 waits retry_after seconds, 5xx
 * and timeouts back off exponentially, up to cfg.max_attempts tries; 4xx are
 * returned at once. The token never appears in an error message (URLs are
 * redacted) and the client never logs.
 *
 * A px_tg holds one px_http (one curl handle), so it belongs to one thread at
 * a time: the bot gives its poller and each worker their own. Ids (update,
 * chat, message, user) are 64-bit.
 */
#ifndef PX_TELEGRAM_H
#define PX_TELEGRAM_H

#include <stdatomic.h>

#include "core/px_core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_tg px_tg;

typedef struct px_tg_config {
    const char *api_url;   /* e.g. "https://api.telegram.org" (no trailing slash needed) */
    const char *token;     /* bot token; copied */
    int max_attempts;      /* tries per call for 429/5xx/timeouts (<=0: 5) */
    int backoff_ms;        /* first back-off after a 5xx or timeout, doubled each try (<=0: 500) */
    int max_retry_after_s; /* longest 429 wait honoured before giving up (<=0: 120) */
    long request_timeout_ms;  /* non-polling requests (<=0: 60 s) */
    const atomic_int *cancel; /* optional: when set, polls and back-off sleeps end early */
} px_tg_config;

/* Statuses of the calls below, beyond PX_OK:
 *  PX_EBUSY     429 Too Many Requests still returned after max_attempts (or
 *               retry_after above max_retry_after_s); px_tg_error.retry_after set
 *  PX_ENET      5xx, or no answer (refused, reset), after max_attempts
 *  PX_ETIMEOUT  the request timed out after max_attempts
 *  PX_ECLOSED   409 Conflict: another getUpdates or a webhook is active (fatal),
 *               or the cancel flag was raised
 *  PX_EINVAL    4xx other than 409/429 (bad request, forbidden, not found),
 *               or an answer that is not the Bot API's JSON
 *  PX_ELIMIT    a download over its cap
 * The last answer's details are in *info when info is non-NULL. */
typedef struct px_tg_error {
    int http_status; /* 0 when no HTTP answer */
    int error_code;  /* Telegram's error_code (usually == http_status) */
    int retry_after; /* seconds, from parameters.retry_after (429) */
    int attempts;    /* requests this call made (1 when the first answer was taken) */
    char description[256];
} px_tg_error;

int px_tg_create(const px_tg_config *cfg, px_tg **out, px_err *err);
void px_tg_destroy(px_tg *tg); /* NULL is a no-op */

/* ---- updates ---- */
typedef enum {
    PX_TG_MSG_NONE = 0, /* update with no "message" (other update types) */
    PX_TG_MSG_TEXT,     /* text, including commands */
    PX_TG_MSG_PHOTO,    /* compressed photo: file_id of the largest size */
    PX_TG_MSG_DOCUMENT, /* any file sent as a document */
    PX_TG_MSG_OTHER,    /* sticker, video, voice, location... */
} px_tg_msg_kind;

typedef struct px_tg_update {
    int64_t update_id;
    px_tg_msg_kind kind;
    int64_t chat_id, message_id, user_id; /* 0 when absent */
    char text[512];                       /* text or caption, truncated */
    char file_id[256];                    /* photo/document */
    char file_unique_id[128];
    int64_t file_size;       /* 0 when not given */
    char mime_type[64];      /* document */
    char file_name[128];     /* document */
    char media_group_id[64]; /* albums */
    int width, height;       /* photo */
} px_tg_update;

/* Parses a getUpdates answer (outside input: any bytes). On PX_OK *ups is a
 * malloc'd array of *n updates in the server's order (caller frees; NULL when
 * *n == 0). Updates with fields of the wrong type are kept with those fields
 * empty; a body that is not {"ok":true,"result":[...]} is PX_EINVAL (or the
 * error statuses above when it is Telegram's error shape, with *info set).
 * Thread-safe. */
int px_tg_parse_updates(const char *json, size_t len, px_tg_update **ups, int *n, px_tg_error *info,
                        px_err *err);

/* getUpdates with allowed_updates ["message"]. offset confirms every update
 * below it (0: none); timeout_s is the long-poll wait (0: return at once);
 * limit 1..100. Same result as px_tg_parse_updates. Retried like every
 * call (429, 5xx, timeouts; the HTTP timeout is timeout_s + 15 s); the
 * cancel flag ends a poll in progress within about a second. */
int px_tg_get_updates(px_tg *tg, int64_t offset, int timeout_s, int limit, px_tg_update **ups,
                      int *n, px_tg_error *info, px_err *err);

/* ---- files ---- */
/* getFile: on PX_OK path (capacity cap) holds file_path, which is relative
 * for api.telegram.org and may be absolute with a local Bot API server;
 * *size is file_size (0 when not given). */
int px_tg_get_file(px_tg *tg, const char *file_id, char *path, size_t cap, int64_t *size,
                   px_tg_error *info, px_err *err);
/* Downloads a file_path from getFile into *out (appended; caller frees):
 * GET <api_url>/file/bot<token>/<path>, or a direct read when path is
 * absolute (local Bot API server). More than max_bytes is PX_ELIMIT. */
int px_tg_download(px_tg *tg, const char *path, size_t max_bytes, px_buf *out, px_tg_error *info,
                   px_err *err);

/* ---- sending ----
 * reply_to (0: none) is sent as reply_parameters with
 * allow_sending_without_reply, so a deleted original does not fail the reply.
 * *sent_id (may be NULL) gets the new message's id. */
int px_tg_send_message(px_tg *tg, int64_t chat_id, int64_t reply_to, const char *text,
                       int64_t *sent_id, px_tg_error *info, px_err *err);
/* sendPhoto / sendDocument with the bytes uploaded as multipart/form-data. */
int px_tg_send_photo(px_tg *tg, int64_t chat_id, int64_t reply_to, const uint8_t *data, size_t len,
                     const char *filename, const char *mime, const char *caption, int64_t *sent_id,
                     px_tg_error *info, px_err *err);
int px_tg_send_document(px_tg *tg, int64_t chat_id, int64_t reply_to, const uint8_t *data,
                        size_t len, const char *filename, const char *mime, const char *caption,
                        int64_t *sent_id, px_tg_error *info, px_err *err);
/* action: "typing", "upload_photo", "upload_document"... */
int px_tg_send_chat_action(px_tg *tg, int64_t chat_id, const char *action, px_tg_error *info,
                           px_err *err);

typedef struct px_tg_command {
    const char *command; /* without the slash */
    const char *description;
} px_tg_command;
int px_tg_set_my_commands(px_tg *tg, const px_tg_command *cmds, int n, px_tg_error *info,
                          px_err *err);

/* ---- webhooks ----
 * Telegram either answers getUpdates or POSTs each update to a webhook URL,
 * never both: while a webhook is set, getUpdates is refused with 409. */

/* 1 when s is usable as a webhook secret_token (1-256 characters, only
 * A-Z a-z 0-9 _ -), else 0. Thread-safe. */
int px_tg_secret_token_valid(const char *s);
/* setWebhook: url (https), secret_token (checked above; Telegram sends it
 * back in the X-Telegram-Bot-Api-Secret-Token header of every delivery),
 * allowed_updates ["message"] as getUpdates asks, max_connections 1..100
 * (<=0: Telegram's default, 40). Pending updates are kept. The secret never
 * appears in an error message. */
int px_tg_set_webhook(px_tg *tg, const char *url, const char *secret_token, int max_connections,
                      px_tg_error *info, px_err *err);
/* deleteWebhook without drop_pending_updates: updates not yet delivered
 * are kept for getUpdates. */
int px_tg_delete_webhook(px_tg *tg, px_tg_error *info, px_err *err);

typedef struct px_tg_webhook_info {
    char url[512];                 /* empty when no webhook is set */
    int64_t pending_update_count;  /* updates waiting for delivery */
    int64_t last_error_date;       /* Unix time of the last failed delivery (0: none) */
    char last_error_message[256];  /* Telegram's words for it */
    int max_connections;           /* 0 when not given */
} px_tg_webhook_info;
/* getWebhookInfo into *out (zeroed first). */
int px_tg_get_webhook_info(px_tg *tg, px_tg_webhook_info *out, px_tg_error *info, px_err *err);

/* Parses one Update object as a webhook delivers it (outside input: any
 * bytes) into *u, like one element of getUpdates' result. PX_EINVAL when
 * the body is not a JSON object with a non-negative integer update_id.
 * Thread-safe. */
int px_tg_parse_update(const char *json, size_t len, px_tg_update *u, px_err *err);

#ifdef __cplusplus
}
#endif
#endif
