/*
 * px_bot: the Telegram bot that anonymizes photos.
 *
 * One poller thread long-polls getUpdates and turns each message into a job;
 * a fixed pool of workers runs the jobs (download, px_anon_process with the
 * one shared detector, reply). Jobs of one chat run in arrival order, one at
 * a time; different chats run in parallel. The number of accepted jobs not
 * yet finished is bounded: past the bound a message gets "busy, try again
 * shortly" at once.
 *
 * Delivery: an accepted update is written to SQLite (the "pending" jobs)
 * before it is confirmed to Telegram (the getUpdates offset passes it), and
 * leaves that table only when its reply was delivered or definitively
 * refused (4xx; the user is told when Telegram lets us). A reply Telegram
 * does not take now (5xx, 429 with a long retry_after, no answer) stays
 * pending and is retried later, also after a restart, so neither a crash nor
 * an outage loses an accepted photo. Handled update ids are recorded too, so
 * a redelivered update is never answered twice nor charged twice against the
 * rate limit. The file also keeps the per-chat settings (/mode) and the
 * per-user rate counters. It never holds an image; a pending job holds the
 * message's file id (and a command's text) until it is answered. Image bytes
 * live only in the worker's memory for the length of the job.
 *
 * Webhook mode (px_bot_config.webhook_url): instead of polling, the bot
 * listens for Telegram's POSTs behind a TLS-terminating reverse proxy, sets
 * the webhook with a secret token at start, and takes each update the same
 * way: stored as pending before the 200, worked on by the same pool. In
 * polling mode a webhook left set is deleted first (getUpdates is refused
 * while one is set).
 *
 * Stopping (px_bot_stop, e.g. from SIGTERM): polling ends, jobs being worked
 * on finish and are answered, jobs still waiting stay pending for the next
 * start, the offset is confirmed, and px_bot_run returns PX_OK.
 */
#ifndef PX_BOT_H
#define PX_BOT_H

#include "anon/px_anon.h"
#include "core/px_core.h"
#include "face/px_face.h"
#include "net/px_telegram.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct px_bot px_bot;

typedef struct px_bot_config {
    const char *api_url;   /* default "https://api.telegram.org" */
    const char *token;     /* required; copied, never logged */
    const char *db_path;   /* SQLite state file; required */
    px_face_detector *det; /* shared by all workers; not owned; must outlive the bot */
    px_anon_opts anon;     /* base options; the mode is replaced by the chat's /mode */
    int workers;           /* worker threads (<=0: 2) */
    int queue_capacity;    /* accepted, unfinished jobs (<=0: 64) */
    int poll_timeout_s;    /* getUpdates long-poll wait (<=0: 50; at most 60) */
    size_t max_file_bytes; /* biggest photo/file taken (0: 20 MB, the Bot API's getFile limit) */
    int rate_per_minute;   /* photos per user per minute (<=0: 30) */
    int backoff_ms;        /* first retry delay for 5xx/timeouts (<=0: 500) */
    int max_attempts;      /* tries per Bot API call (<=0: 5) */
    int retry_max_age_s;   /* a job Telegram keeps refusing to take (5xx, 429, no answer) is
                              retried, also across restarts, for this long after it came in,
                              then dropped (<=0: 86400, the time Telegram keeps an update) */
    /* Telegram's upload limits; a result over them is re-encoded (JPEG quality
     * steps, then downscaling) and its caption says so. A local Bot API server
     * takes files up to 2000 MB. */
    size_t photo_max_bytes;    /* sendPhoto (0: 10 MB) */
    size_t document_max_bytes; /* sendDocument (0: 50 MB) */
    int photo_max_sides;       /* sendPhoto: width + height at most (<=0: 10000) */
    /* Pixels being worked on at once across the workers (a job's memory is
     * about 10 bytes a pixel: 120 MP ~ 1.2 GB). A job waits while others
     * hold too much; one image over the budget runs alone. (0: 120 MP) */
    uint64_t pixel_budget;
    /* "IPV4:PORT" where GET /healthz (200 while getUpdates works, 503 after
     * three failures in a row) and GET /metrics (Prometheus) are served,
     * e.g. "127.0.0.1:9464" (port 0: any free one, logged). NULL: none.
     * Must outlive px_bot_run. */
    const char *metrics_addr;
    /* Webhook mode instead of polling (NULL: polling). Telegram POSTs each
     * update to webhook_url ("https://HOST[:PORT]/PATH"), a TLS-terminating
     * proxy forwards PATH to webhook_listen ("IPV4:PORT", e.g.
     * "127.0.0.1:8443"; port 0: any free one, logged), and the bot answers
     * 200 once the update is stored as a pending job. Telegram sends
     * webhook_secret back in X-Telegram-Bot-Api-Secret-Token (1-256 of A-Z
     * a-z 0-9 _ -; NULL: a random one made at each start); a request without
     * it is refused (401/403) and never logged. All three are copied. */
    const char *webhook_url;
    const char *webhook_listen;
    const char *webhook_secret;
    int webhook_max_connections; /* setWebhook max_connections, 1..100 (<=0: 40) */
    size_t webhook_max_body;     /* largest update taken, bytes (0: 1 MB) */
    int webhook_check_s;         /* getWebhookInfo read this often (<=0: 30 s) */
} px_bot_config;
px_bot_config px_bot_config_default(void);

/* Opens the state file and prepares the clients (no network yet). One bot
 * per state file: an exclusive lock on "<db_path>.lock" (flock) is held
 * until px_bot_destroy. Errors: PX_EINVAL (missing token, db path or
 * detector; a webhook URL that is not https://, no listen address, a bad
 * secret), PX_EBUSY (another bot holds the lock), PX_EIO (state file),
 * PX_ENOMEM. */
int px_bot_create(const px_bot_config *cfg, px_bot **out, px_err *err);
/* Runs until px_bot_stop or a fatal error; blocks the calling thread.
 * Returns PX_OK after a stop; PX_ECLOSED on 409 Conflict (another instance
 * polling, or a webhook set that could not be deleted) or, in webhook mode,
 * when another program replaced the webhook; PX_EINVAL when Telegram
 * refuses the token (401/404) or the webhook (400); PX_EIO when the listen
 * address cannot be used. err says why. Call once per bot. */
int px_bot_run(px_bot *bot, px_err *err);
/* Asks the bot to stop. Async-signal-safe (one atomic store) and
 * thread-safe; may be called before or during px_bot_run. */
void px_bot_stop(px_bot *bot);
/* Frees everything. Call after px_bot_run returned (or instead of it). NULL
 * is a no-op. */
void px_bot_destroy(px_bot *bot);

/* ---- lower-level pieces, exposed for tests ---- */

/* The SQLite state: handled update ids, per-chat mode, per-user rate
 * counters. Thread-safe (one connection behind a mutex). */
typedef struct px_bot_store px_bot_store;
/* Opening makes every pending job due at once: a restart is the operator's
 * way to say "try now" (Telegram answers another 429 if it is too early).
 * The file (and so its -wal and -shm) is created 0600; an existing one
 * readable by others is narrowed to 0600. */
int px_bot_store_open(const char *path, px_bot_store **out, px_err *err);
void px_bot_store_close(px_bot_store *s); /* NULL is a no-op */
/* 1 when update_id was recorded as handled, 0 when not, <0 on error. */
int px_bot_store_is_handled(px_bot_store *s, int64_t update_id);
int px_bot_store_mark_handled(px_bot_store *s, int64_t update_id, px_err *err);
/* Chat's concealment mode; *mode = def when none was set. */
int px_bot_store_get_mode(px_bot_store *s, int64_t chat_id, px_conceal_mode def,
                          px_conceal_mode *mode);
int px_bot_store_set_mode(px_bot_store *s, int64_t chat_id, px_conceal_mode mode, px_err *err);
/* Counts one photo for user_id in the current minute (now_s: Unix time).
 * Returns 1 when allowed, 0 when the user already had limit photos this
 * minute (nothing counted then), <0 on error. */
int px_bot_store_rate_take(px_bot_store *s, int64_t user_id, int limit, int64_t now_s);

/* The pending jobs: accepted updates not yet answered. */
typedef struct px_bot_pending {
    px_tg_update u;   /* what answering needs: ids, kind, file id, a command's text */
    int rate_limited; /* accepted over the user's rate: the answer says so */
    int attempts;     /* tries that ended in a retry so far */
    int64_t first_at; /* Unix time it was accepted */
} px_bot_pending;
/* 1 when update_id was answered or is pending, 0 when unknown, <0 on error. */
int px_bot_store_is_known(px_bot_store *s, int64_t update_id);
/* Accepts u in one transaction: charges a photo or document against the
 * user's rate (rate_limit per minute; *rate_limited = 1 when over it, then
 * nothing is charged) and records the job as pending, due now. Returns 1
 * when accepted, 0 when the update was already known (nothing changed), or
 * PX_EIO on a database error (then nothing was recorded). */
int px_bot_store_accept(px_bot_store *s, const px_tg_update *u, int rate_limit, int64_t now_s,
                        int *rate_limited, px_err *err);
/* The job is answered (or given up): pending -> handled, one transaction. */
int px_bot_store_finish(px_bot_store *s, int64_t update_id, px_err *err);
/* The job is to be tried again at next_at_s (Unix time); counts an attempt. */
int px_bot_store_defer(px_bot_store *s, int64_t update_id, int64_t next_at_s, px_err *err);
/* Up to max pending jobs due at now_s, oldest first, skipping the ids in
 * skip[0..nskip). Returns how many were written to out, or <0 on error. */
int px_bot_store_due(px_bot_store *s, int64_t now_s, const int64_t *skip, int nskip,
                     px_bot_pending *out, int max);
/* Earliest next try after now_s of a pending job (*at_s): 1 when there is
 * one, 0 when none, <0 on error. */
int px_bot_store_next_due(px_bot_store *s, int64_t now_s, int64_t *at_s);

/* Upload limits for px_bot_fit. */
typedef struct px_bot_fit_limits {
    size_t max_bytes; /* encoded size */
    int max_sides;    /* photo only: width + height (<=0: none) */
} px_bot_fit_limits;
/* Makes an encoded result (data, len; w x h pixels) fit lim. Returns 0 when
 * it already fits (out untouched), 1 when *out (caller frees) holds a JPEG
 * that fits, with note (capacity cap) saying what was changed, or <0 (err
 * set): PX_ELIMIT when no size tried fit, PX_ENOMEM, decode errors.
 * photo: the side limit applies and the quality steps start lower.
 * Thread-safe. */
int px_bot_fit(const uint8_t *data, size_t len, int w, int h, const px_bot_fit_limits *lim,
               int photo, px_buf *out, char *note, size_t cap, px_err *err);

/* Pixels of an encoded JPEG, PNG or WebP from its header (width x height),
 * or 0 when the header is not one of those or is cut short. Thread-safe. */
uint64_t px_bot_image_pixels(const uint8_t *data, size_t len);

/* SHA-256 of the file at path as 64 lowercase hex digits (hex[0] = 0 on
 * error): PX_EIO when it cannot be read. Thread-safe. */
int px_bot_file_sha256(const char *path, char hex[65], px_err *err);

/* What a text message asks for. */
typedef enum {
    PX_BOT_CMD_NONE = 0, /* not a command */
    PX_BOT_CMD_START,
    PX_BOT_CMD_HELP,
    PX_BOT_CMD_MODE,
    PX_BOT_CMD_UNKNOWN, /* some other /command */
} px_bot_cmd;
/* Parses "/mode@SomeBot pixelate" into PX_BOT_CMD_MODE and arg "pixelate"
 * (arg: capacity cap, empty when none). Thread-safe. */
px_bot_cmd px_bot_parse_command(const char *text, char *arg, size_t cap);

/* A short, stable, non-reversible tag for a chat id in log lines:
 * 8 hex digits of a salted hash. Thread-safe. */
void px_bot_chat_tag(uint64_t salt, int64_t chat_id, char out[9]);

#ifdef __cplusplus
}
#endif
#endif
