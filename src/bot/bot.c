/*
 * px_bot implementation: the poller, the per-chat job lists, the workers and
 * the replies.
 *
 * Ordering and parallelism: every accepted message becomes a job appended to
 * its chat's list. A chat with jobs is "scheduled" by putting it once on a
 * bounded ready queue; a worker takes a chat, runs its first job, and puts
 * the chat back only if more jobs wait. So one chat's jobs run one after the
 * other in arrival order, and chats run in parallel, without a worker ever
 * blocking on another chat.
 *
 * Confirmation: an update is first written to the SQLite "pending" table
 * (px_bot_store_accept), and only then does the next getUpdates offset pass
 * it. The table, not Telegram's memory, is the queue of record: a job leaves
 * it when its reply was delivered or refused for good (4xx), and a job
 * Telegram would not take now (5xx, 429, no answer) is deferred there with a
 * back-off (at least retry_after) and fed back to the workers when due, also
 * after a restart. An update that could not be recorded holds the offset
 * (it comes back with the next poll). Because nothing accepted stays
 * unconfirmed, getUpdates long-polls even while jobs run. Updates seen again
 * (lost confirmations) are recognised by the SQLite record and skipped, so
 * they are neither answered nor charged against the rate limit twice.
 *
 * Each job's image lives in the worker's memory only, from download to reply.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "bot_metrics.h"
#include "net/px_telegram.h"
#include "px_bot.h"

typedef enum { JOB_MESSAGE = 0, JOB_RATE_LIMITED } job_kind;

typedef struct job {
    px_tg_update u;
    job_kind kind;
    double t_accept;
    int attempts;     /* earlier tries that ended in a retry */
    int64_t first_at; /* Unix time it was accepted */
    int retry_after;  /* seconds Telegram asked us to wait (429), from the last try */
    struct job *next;
} job;

/* Webhook mode: "busy" answers waiting for the main thread at most (each
 * ~1.3 KB); past it a delivery is answered 503 and Telegram sends it again. */
#define NOTICE_CAP 256

typedef struct chat_slot {
    int64_t chat_id;
    job *head, *tail;
    struct chat_slot *next; /* in bot->chats */
} chat_slot;

struct px_bot {
    px_bot_config cfg;
    char *api_url, *token, *db_path;
    px_bot_store *store;
    atomic_int stop; /* polling ends */
    atomic_int hard; /* in-flight requests end too (never set by px_bot_stop) */
    uint64_t salt;
    px_tg *poll_tg, *ctl_tg;

    pthread_mutex_t mu;
    pthread_cond_t done_cv; /* a job finished */
    px_queue *ready;        /* chat_slot* with jobs, each at most once */
    chat_slot *chats;       /* every chat with jobs (queued or running) */
    int pending;            /* accepted jobs not finished */
    int64_t *inflight;      /* update ids of those jobs */
    int ninflight;
    int64_t hold;             /* an update not recorded: the offset stays at it (0: none) */
    int lock_fd;              /* flock'd "<db>.lock": one bot per state file (-1: none) */
    uint64_t px_in_flight;    /* pixels reserved by running jobs (mu) */
    pthread_cond_t budget_cv; /* px_in_flight went down */
    bot_metrics m;            /* counters for /metrics */
    bot_http *msrv;           /* the /healthz and /metrics listener (NULL: none) */
    bot_http *hsrv;           /* the webhook's listener when it is not msrv (NULL: none) */
    /* webhook mode (hook_url NULL: polling) */
    char *hook_url, *hook_path, *hook_listen, *hook_secret;
    px_tg_update *notices;      /* updates to answer "busy" (NOTICE_CAP; mu) */
    int nnotices;               /* main thread sends them */
    atomic_llong hook_taken_at; /* Unix time the webhook last took an update */
    pthread_mutex_t feed_mu;  /* one feeder at a time: pending rows -> jobs, no job twice */
    int64_t *skip;            /* feed_due's copy of inflight (queue_capacity) */
    pthread_t *threads;
    int nthreads;
    int ran;
};

static const char *help_text =
    "I hide the faces in your photos.\n\n"
    "Send me a photo (or an image as a file: JPEG, PNG or WebP, up to 20 MB) and I answer with "
    "the same picture where every face I find is covered. A photo comes back as a photo, a file "
    "as a file in full quality. Albums work too: every photo is answered.\n\n"
    "/mode blur|pixelate|noise|solid chooses how faces are covered in this chat (default: "
    "noise, which keeps nothing of the face).\n\n"
    "Privacy: your picture is held in memory only while I work on it and is gone once I reply. "
    "I keep no image or caption; only this chat's /mode setting, the ids of messages already "
    "answered (so none is answered twice) and, until you have my answer, which message to "
    "answer.";

px_bot_config px_bot_config_default(void)
{
    px_bot_config c;
    memset(&c, 0, sizeof c);
    c.api_url = "https://api.telegram.org";
    c.anon = px_anon_opts_default();
    c.workers = 2;
    c.queue_capacity = 64;
    c.poll_timeout_s = 50;
    c.max_file_bytes = (size_t)20 << 20;
    c.rate_per_minute = 30;
    c.backoff_ms = 500;
    c.max_attempts = 5;
    c.retry_max_age_s = 86400;
    c.photo_max_bytes = (size_t)10 << 20;
    c.document_max_bytes = (size_t)50 << 20;
    c.photo_max_sides = 10000;
    c.pixel_budget = 120000000;
    return c;
}

void px_bot_chat_tag(uint64_t salt, int64_t chat_id, char out[9])
{
    /* FNV-1a over salt and id, then a final avalanche: enough to correlate
     * lines of one run without printing the id */
    uint64_t h = 1469598103934665603ULL;
    uint64_t v[2] = {salt, (uint64_t)chat_id};
    const unsigned char *p = (const unsigned char *)v;
    for (size_t i = 0; i < sizeof v; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    snprintf(out, 9, "%08x", (unsigned)(h & 0xffffffffu));
}

px_bot_cmd px_bot_parse_command(const char *text, char *arg, size_t cap)
{
    if (arg && cap)
        arg[0] = '\0';
    if (!text || text[0] != '/')
        return PX_BOT_CMD_NONE;
    const char *p = text + 1;
    size_t n = strcspn(p, " @\t\n");
    const char *rest = p + n;
    if (*rest == '@') /* "/mode@MyBot": the command is addressed to a bot */
        rest += strcspn(rest, " \t\n");
    while (*rest == ' ' || *rest == '\t' || *rest == '\n')
        rest++;
    if (arg && cap) {
        size_t an = strcspn(rest, " \t\n");
        if (an >= cap)
            an = cap - 1;
        memcpy(arg, rest, an);
        arg[an] = '\0';
    }
    if (n == 5 && !strncasecmp(p, "start", 5))
        return PX_BOT_CMD_START;
    if (n == 4 && !strncasecmp(p, "help", 4))
        return PX_BOT_CMD_HELP;
    if (n == 4 && !strncasecmp(p, "mode", 4))
        return PX_BOT_CMD_MODE;
    return PX_BOT_CMD_UNKNOWN;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = px_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static int make_tg(px_bot *b, const atomic_int *cancel, px_tg **out, px_err *err)
{
    px_tg_config tc = {0};
    tc.api_url = b->api_url;
    tc.token = b->token;
    tc.max_attempts = b->cfg.max_attempts;
    tc.backoff_ms = b->cfg.backoff_ms;
    tc.cancel = cancel;
    return px_tg_create(&tc, out, err);
}

/* Two bots on one state file would both poll (Telegram stops only one,
 * with 409) and both work the pending jobs: refuse the second at start. The
 * lock is a separate file because SQLite's own POSIX locks on the database
 * are dropped when any descriptor of it is closed. */
static int lock_db(px_bot *b, px_err *err)
{
    size_t n = strlen(b->db_path) + 6;
    char *p = px_malloc(n);
    if (!p)
        return px_err_set(err, PX_ENOMEM, "bot: out of memory");
    snprintf(p, n, "%s.lock", b->db_path);
    b->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    int st = PX_OK;
    if (b->lock_fd < 0)
        st = px_err_set(err, PX_EIO, "bot: cannot create the lock file %s: %s", p, strerror(errno));
    else if (flock(b->lock_fd, LOCK_EX | LOCK_NB) != 0)
        st = errno == EWOULDBLOCK
                 ? px_err_set(err, PX_EBUSY,
                              "bot: another pixpipe bot is already running on the state file %s "
                              "(it holds %s); run one instance per database",
                              b->db_path, p)
                 : px_err_set(err, PX_EIO, "bot: cannot lock %s: %s", p, strerror(errno));
    free(p);
    return st;
}

/* The webhook settings: the path from the URL, the secret (random when
 * none was given: 32 characters of A-Z a-z 0-9 _ -, 192 bits). */
static int setup_webhook(px_bot *b, const px_bot_config *cfg, px_err *err)
{
    const char *u = cfg->webhook_url;
    if (strncmp(u, "https://", 8) || !u[8] || u[8] == '/' || strpbrk(u, "?# ") || strlen(u) >= 512)
        return px_err_set(err, PX_EINVAL,
                          "bot: --webhook '%s': expected https://HOST[:PORT]/PATH (Telegram "
                          "delivers to HTTPS only; no query or fragment)",
                          u);
    if (!cfg->webhook_listen || !cfg->webhook_listen[0])
        return px_err_set(err, PX_EINVAL,
                          "bot: --webhook needs --listen IPV4:PORT (where the proxy forwards to)");
    if (cfg->webhook_secret && !px_tg_secret_token_valid(cfg->webhook_secret))
        return px_err_set(err, PX_EINVAL,
                          "bot: the webhook secret must be 1-256 characters of A-Z, a-z, 0-9, _ "
                          "and -");
    const char *slash = strchr(u + 8, '/');
    b->hook_url = dup_str(u);
    b->hook_path = dup_str(slash ? slash : "/");
    b->hook_listen = dup_str(cfg->webhook_listen);
    b->hook_secret = px_calloc(1, 257);
    b->notices = px_calloc(NOTICE_CAP, sizeof *b->notices);
    if (!b->hook_url || !b->hook_path || !b->hook_listen || !b->hook_secret || !b->notices)
        return px_err_set(err, PX_ENOMEM, "bot: out of memory");
    if (cfg->webhook_secret) {
        snprintf(b->hook_secret, 257, "%s", cfg->webhook_secret);
    } else {
        static const char abc[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
        unsigned char r[32];
        if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
            return px_err_set(err, PX_EIO, "bot: no random bytes for the webhook secret");
        for (size_t i = 0; i < sizeof r; i++)
            b->hook_secret[i] = abc[r[i] & 63];
        explicit_bzero(r, sizeof r);
    }
    b->cfg.webhook_url = b->hook_url;
    b->cfg.webhook_listen = b->hook_listen;
    b->cfg.webhook_secret = NULL; /* only hook_secret holds it */
    if (b->cfg.webhook_max_body == 0)
        b->cfg.webhook_max_body = (size_t)1 << 20;
    return PX_OK;
}

int px_bot_create(const px_bot_config *cfg, px_bot **out, px_err *err)
{
    *out = NULL;
    if (!cfg || !cfg->token || !cfg->token[0])
        return px_err_set(err, PX_EINVAL, "bot: no token (PIXPIPE_TELEGRAM_TOKEN or --token-file)");
    if (!cfg->db_path || !cfg->db_path[0])
        return px_err_set(err, PX_EINVAL, "bot: no state database path");
    if (!cfg->det)
        return px_err_set(err, PX_EINVAL, "bot: no face detector");
    px_bot *b = px_calloc(1, sizeof *b);
    if (!b)
        return px_err_set(err, PX_ENOMEM, "bot: out of memory");
    px_bot_config d = px_bot_config_default();
    b->cfg = *cfg;
    if (b->cfg.workers <= 0)
        b->cfg.workers = d.workers;
    if (b->cfg.queue_capacity <= 0)
        b->cfg.queue_capacity = d.queue_capacity;
    if (b->cfg.poll_timeout_s <= 0)
        b->cfg.poll_timeout_s = d.poll_timeout_s;
    if (b->cfg.poll_timeout_s > 60)
        b->cfg.poll_timeout_s = 60;
    if (b->cfg.max_file_bytes == 0)
        b->cfg.max_file_bytes = d.max_file_bytes;
    if (b->cfg.rate_per_minute <= 0)
        b->cfg.rate_per_minute = d.rate_per_minute;
    if (b->cfg.retry_max_age_s <= 0)
        b->cfg.retry_max_age_s = d.retry_max_age_s;
    if (b->cfg.photo_max_bytes == 0)
        b->cfg.photo_max_bytes = d.photo_max_bytes;
    if (b->cfg.document_max_bytes == 0)
        b->cfg.document_max_bytes = d.document_max_bytes;
    if (b->cfg.photo_max_sides <= 0)
        b->cfg.photo_max_sides = d.photo_max_sides;
    if (b->cfg.pixel_budget == 0)
        b->cfg.pixel_budget = d.pixel_budget;
    atomic_init(&b->stop, 0);
    atomic_init(&b->hard, 0);
    b->lock_fd = -1;
    bot_metrics_init(&b->m);
    atomic_init(&b->hook_taken_at, 0);
    pthread_mutex_init(&b->mu, NULL);
    pthread_mutex_init(&b->feed_mu, NULL);
    pthread_cond_init(&b->done_cv, NULL);
    pthread_cond_init(&b->budget_cv, NULL);
    b->api_url = dup_str(cfg->api_url ? cfg->api_url : d.api_url);
    b->token = dup_str(cfg->token);
    b->db_path = dup_str(cfg->db_path);
    b->inflight = px_calloc((size_t)b->cfg.queue_capacity, sizeof *b->inflight);
    b->skip = px_calloc((size_t)b->cfg.queue_capacity, sizeof *b->skip);
    b->threads = px_calloc((size_t)b->cfg.workers, sizeof *b->threads);
    int st = PX_ENOMEM;
    if (b->api_url && b->token && b->db_path && b->inflight && b->skip && b->threads)
        st = px_queue_create((size_t)b->cfg.queue_capacity + 1, &b->ready);
    if (st != PX_OK) {
        px_err_set(err, st, "bot: out of memory");
        px_bot_destroy(b);
        return st;
    }
    b->cfg.api_url = b->api_url;
    b->cfg.token = b->token;
    b->cfg.db_path = b->db_path;
    if ((cfg->webhook_url && (st = setup_webhook(b, cfg, err)) != PX_OK) ||
        (st = lock_db(b, err)) != PX_OK ||
        (st = px_bot_store_open(b->db_path, &b->store, err)) != PX_OK ||
        (st = make_tg(b, &b->stop, &b->poll_tg, err)) != PX_OK ||
        (st = make_tg(b, &b->hard, &b->ctl_tg, err)) != PX_OK) {
        px_bot_destroy(b);
        return st;
    }
    /* the salt only has to differ between runs and be unknown to readers of the log */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    b->salt = ((uint64_t)ts.tv_nsec << 32) ^ (uint64_t)ts.tv_sec ^ (uint64_t)(uintptr_t)b;
    *out = b;
    return PX_OK;
}

void px_bot_stop(px_bot *bot)
{
    if (bot)
        atomic_store(&bot->stop, 1);
}

void px_bot_destroy(px_bot *b)
{
    if (!b)
        return;
    px_tg_destroy(b->poll_tg);
    px_tg_destroy(b->ctl_tg);
    px_bot_store_close(b->store);
    if (b->lock_fd >= 0)
        close(b->lock_fd); /* releases the lock */
    px_queue_destroy(b->ready);
    while (b->chats) {
        chat_slot *c = b->chats;
        b->chats = c->next;
        while (c->head) {
            job *j = c->head;
            c->head = j->next;
            free(j);
        }
        free(c);
    }
    if (b->token)
        explicit_bzero(b->token, strlen(b->token));
    free(b->token);
    if (b->hook_secret)
        explicit_bzero(b->hook_secret, 257);
    free(b->hook_secret);
    free(b->hook_url);
    free(b->hook_path);
    free(b->hook_listen);
    free(b->notices);
    free(b->api_url);
    free(b->db_path);
    free(b->inflight);
    free(b->skip);
    free(b->threads);
    pthread_cond_destroy(&b->done_cv);
    pthread_cond_destroy(&b->budget_cv);
    pthread_mutex_destroy(&b->feed_mu);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

/* ---- in-flight bookkeeping (mu held) ---- */

static int inflight_has(const px_bot *b, int64_t id)
{
    for (int i = 0; i < b->ninflight; i++)
        if (b->inflight[i] == id)
            return 1;
    return 0;
}

static void inflight_remove(px_bot *b, int64_t id)
{
    for (int i = 0; i < b->ninflight; i++)
        if (b->inflight[i] == id) {
            b->inflight[i] = b->inflight[--b->ninflight];
            return;
        }
}

/* ---- the jobs ---- */

typedef enum { OUT_SENT = 0, OUT_DROPPED, OUT_RETRY } outcome;

static const char *outcome_name(outcome o)
{
    return o == OUT_SENT ? "sent" : o == OUT_DROPPED ? "dropped" : "retry";
}

/* Maps a send's status to what happens to the update: a 4xx (other than
 * 429) will fail the same way again, so it is dropped; the rest is retried. */
static outcome send_outcome(int st, const px_err *e, char *detail, size_t cap)
{
    if (st == PX_OK)
        return OUT_SENT;
    snprintf(detail, cap, "%s", e->msg);
    return st == PX_EINVAL ? OUT_DROPPED : OUT_RETRY;
}

static outcome reply_text(px_tg *tg, job *j, const char *text, char *detail, size_t cap)
{
    px_err e = {{0}};
    px_tg_error info;
    int st = px_tg_send_message(tg, j->u.chat_id, j->u.message_id, text, NULL, &info, &e);
    if (st == PX_EBUSY)
        j->retry_after = info.retry_after;
    return send_outcome(st, &e, detail, cap);
}

static int is_image_document(const px_tg_update *u)
{
    static const char *mimes[] = {"image/jpeg", "image/jpg", "image/png", "image/webp"};
    for (size_t i = 0; i < sizeof mimes / sizeof mimes[0]; i++)
        if (!strcasecmp(u->mime_type, mimes[i]))
            return 1;
    /* some clients send application/octet-stream: trust a known extension,
     * the decoder sniffs the bytes anyway */
    return !u->mime_type[0] || !strcasecmp(u->mime_type, "application/octet-stream")
               ? px_format_from_path(u->file_name) != PX_FMT_UNKNOWN
               : 0;
}

static const char *mime_of(px_format f)
{
    return f == PX_FMT_PNG ? "image/png" : f == PX_FMT_WEBP ? "image/webp" : "image/jpeg";
}

/* A call that needed more than one request (the client retried a 429, 5xx
 * or timeout) is logged at info: an operator sees Telegram's trouble at the
 * normal log level, not only the jobs it finally broke. */
static void log_retries(px_bot *b, const job *j, const char *method, const px_tg_error *info,
                        int st)
{
    if (info->attempts <= 1)
        return;
    atomic_fetch_add(&b->m.c[BM_CALL_RETRIES], info->attempts - 1);
    char tag[9];
    px_bot_chat_tag(b->salt, j->u.chat_id, tag);
    px_log(PX_LOG_INFO, "bot: chat=%s update=%lld: %s took %d tries (%s, last HTTP %d)", tag,
           (long long)j->u.update_id, method, info->attempts, st == PX_OK ? "done" : "gave up",
           info->http_status);
}

/* Sends the anonymized image back (as a photo for a photo, else as a
 * file), re-encoded first when it breaks Telegram's upload limits. */
static outcome send_result(px_bot *b, px_tg *tg, job *j, const px_anon_result *r,
                           px_conceal_mode mode, char *detail, size_t cap)
{
    const px_tg_update *u = &j->u;
    int photo = u->kind == PX_TG_MSG_PHOTO;
    px_bot_fit_limits lim = {photo ? b->cfg.photo_max_bytes : b->cfg.document_max_bytes,
                             b->cfg.photo_max_sides};
    px_buf fitted = {0};
    char note[256], text[768];
    px_err e = {{0}};
    int fit = px_bot_fit(r->out.data, r->out.len, r->width, r->height, &lim, photo, &fitted, note,
                         sizeof note, &e);
    if (fit < 0) {
        snprintf(detail, cap, "%s", e.msg);
        if (fit == PX_ENOMEM)
            return OUT_RETRY;
        outcome told = reply_text(tg, j,
                                  "The picture I made is too big for Telegram and I could not "
                                  "make it smaller. Please send a smaller one.",
                                  detail, cap);
        return told == OUT_RETRY ? OUT_RETRY : OUT_DROPPED;
    }
    const uint8_t *data = fit ? fitted.data : r->out.data;
    size_t len = fit ? fitted.len : r->out.len;
    px_format fmt = fit ? PX_FMT_JPEG : r->out_format;
    snprintf(text, sizeof text, "%d face%s hidden (%s). %s%sNothing is kept after this reply.",
             r->n_faces, r->n_faces == 1 ? "" : "s", px_anon_mode_name(mode), note,
             note[0] ? " " : "");
    char fname[64];
    snprintf(fname, sizeof fname, "anonymized%s", px_format_extension(fmt));
    px_tg_error info;
    int st;
    if (photo)
        st = px_tg_send_photo(tg, u->chat_id, u->message_id, data, len, fname, mime_of(fmt), text,
                              NULL, &info, &e);
    else
        st = px_tg_send_document(tg, u->chat_id, u->message_id, data, len, fname, mime_of(fmt),
                                 text, NULL, &info, &e);
    px_buf_free(&fitted);
    log_retries(b, j, photo ? "sendPhoto" : "sendDocument", &info, st);
    if (st == PX_EBUSY)
        j->retry_after = info.retry_after;
    outcome oc = send_outcome(st, &e, detail, cap);
    if (oc == OUT_DROPPED) {
        /* refused for good: the user hears why rather than nothing */
        char keep[512];
        snprintf(keep, sizeof keep, "%s", detail);
        snprintf(text, sizeof text,
                 "Telegram refused the picture I made (%.200s). Please send it again, "
                 "perhaps smaller.",
                 info.description[0] ? info.description : "no reason given");
        if (reply_text(tg, j, text, detail, cap) == OUT_RETRY)
            oc = OUT_RETRY;
        else
            snprintf(detail, cap, "%s", keep);
    }
    return oc;
}

static outcome process_image(px_bot *b, px_tg *tg, job *j, px_buf *img, int *faces, char *detail,
                             size_t cap);

/* Reserves pixels of the budget for job j, waiting while other jobs hold
 * too much; returns what was reserved (0 pixels: unknown size, charged as
 * the whole budget). */
static uint64_t budget_take(px_bot *b, const job *j, uint64_t pixels)
{
    uint64_t cost = pixels == 0 || pixels > b->cfg.pixel_budget ? b->cfg.pixel_budget : pixels;
    pthread_mutex_lock(&b->mu);
    if (b->px_in_flight > 0 && b->px_in_flight + cost > b->cfg.pixel_budget)
        px_log(PX_LOG_DEBUG, "bot: update=%lld waits for the pixel budget (%.1f MP, %.1f in use)",
               (long long)j->u.update_id, cost / 1e6, b->px_in_flight / 1e6);
    while (b->px_in_flight > 0 && b->px_in_flight + cost > b->cfg.pixel_budget)
        pthread_cond_wait(&b->budget_cv, &b->mu);
    b->px_in_flight += cost;
    pthread_mutex_unlock(&b->mu);
    return cost;
}

static void budget_give(px_bot *b, uint64_t cost)
{
    pthread_mutex_lock(&b->mu);
    b->px_in_flight -= cost;
    pthread_cond_broadcast(&b->budget_cv);
    pthread_mutex_unlock(&b->mu);
}

static outcome run_image(px_bot *b, px_tg *tg, job *j, int *faces, char *detail, size_t cap)
{
    const px_tg_update *u = &j->u;
    char mb[64];
    snprintf(mb, sizeof mb, "%zu MB", b->cfg.max_file_bytes >> 20);
    char text[512];
    if (u->kind == PX_TG_MSG_DOCUMENT && !is_image_document(u))
        return reply_text(tg, j,
                          "That file is not an image I can work on. Send a photo, or a JPEG, PNG "
                          "or WebP image as a file.",
                          detail, cap);
    if (u->file_size > 0 && (uint64_t)u->file_size > b->cfg.max_file_bytes) {
        snprintf(text, sizeof text, "That image is too large: I take files up to %s.", mb);
        return reply_text(tg, j, text, detail, cap);
    }
    if (!u->file_id[0])
        return reply_text(tg, j, "I could not find the image in that message.", detail, cap);

    px_err e = {{0}};
    px_tg_send_chat_action(tg, u->chat_id,
                           u->kind == PX_TG_MSG_PHOTO ? "upload_photo" : "upload_document", NULL,
                           NULL); /* cosmetic: a failure changes nothing */
    char path[1024];
    int64_t size = 0;
    px_tg_error info;
    int st = px_tg_get_file(tg, u->file_id, path, sizeof path, &size, &info, &e);
    log_retries(b, j, "getFile", &info, st);
    if (st == PX_EINVAL && strstr(info.description, "too big")) {
        snprintf(text, sizeof text, "That image is too large: I take files up to %s.", mb);
        return reply_text(tg, j, text, detail, cap);
    }
    if (st == PX_EINVAL) {
        snprintf(detail, cap, "%s", e.msg);
        return reply_text(tg, j, "Telegram would not give me that file; please send it again.",
                          detail, cap) == OUT_SENT
                   ? OUT_DROPPED
                   : OUT_RETRY;
    }
    if (st == PX_EBUSY)
        j->retry_after = info.retry_after;
    if (st != PX_OK)
        return send_outcome(st, &e, detail, cap);
    if (size > 0 && (uint64_t)size > b->cfg.max_file_bytes) {
        snprintf(text, sizeof text, "That image is too large: I take files up to %s.", mb);
        return reply_text(tg, j, text, detail, cap);
    }
    px_buf img = {0};
    st = px_tg_download(tg, path, b->cfg.max_file_bytes, &img, &info, &e);
    log_retries(b, j, "download", &info, st);
    if (st == PX_ELIMIT) {
        px_buf_free(&img);
        snprintf(text, sizeof text, "That image is too large: I take files up to %s.", mb);
        return reply_text(tg, j, text, detail, cap);
    }
    if (st != PX_OK) {
        px_buf_free(&img);
        return send_outcome(st == PX_EINVAL ? PX_ENET : st, &e, detail, cap);
    }
    /* the decoded pixels dominate a job's memory: hold them to a budget
     * shared by the workers (one image over it runs alone) */
    uint64_t cost = budget_take(b, j, px_bot_image_pixels(img.data, img.len));
    outcome oc = process_image(b, tg, j, &img, faces, detail, cap);
    budget_give(b, cost);
    return oc;
}

/* Decodes, hides the faces, answers; frees *img. */
static outcome process_image(px_bot *b, px_tg *tg, job *j, px_buf *img, int *faces, char *detail,
                             size_t cap)
{
    const px_tg_update *u = &j->u;
    px_err e = {{0}};
    int st;
    px_anon_opts o = b->cfg.anon;
    px_bot_store_get_mode(b->store, u->chat_id, b->cfg.anon.mode, &o.mode);
    /* a photo goes back as a photo (Telegram recompresses it to JPEG anyway);
     * a file keeps its own format at full quality */
    o.out_format = u->kind == PX_TG_MSG_PHOTO ? PX_FMT_JPEG : PX_FMT_UNKNOWN;
    if (u->kind == PX_TG_MSG_DOCUMENT)
        o.jpeg_quality = 95;
    px_anon_result r;
    st = px_anon_process(b->cfg.det, img->data, img->len, &o, &r, &e);
    px_buf_free(img);
    if (st != PX_OK) {
        snprintf(detail, cap, "%s", e.msg);
        const char *why = st == PX_ELIMIT ? "That image has too many pixels for me."
                          : st == PX_ENOMEM
                              ? "I am short of memory right now; please try again in a minute."
                              : "I could not read that image. Send a photo, or a JPEG, PNG or "
                                "WebP image as a file.";
        char keep[256];
        snprintf(keep, sizeof keep, "%s", detail);
        outcome oc = reply_text(tg, j, why, detail, cap);
        if (oc == OUT_SENT)
            snprintf(detail, cap, "%s", keep);
        return oc;
    }
    *faces = r.n_faces;
    outcome oc;
    if (r.n_faces == 0) {
        oc = reply_text(tg, j,
                        "I found no face in this image, so there is nothing to hide. I am not "
                        "sending it back.",
                        detail, cap);
    } else {
        oc = send_result(b, tg, j, &r, o.mode, detail, cap);
    }
    px_anon_result_free(&r);
    return oc;
}

static outcome run_text(px_bot *b, px_tg *tg, job *j, char *detail, size_t cap)
{
    char arg[64], text[512];
    switch (px_bot_parse_command(j->u.text, arg, sizeof arg)) {
    case PX_BOT_CMD_START:
    case PX_BOT_CMD_HELP:
        return reply_text(tg, j, help_text, detail, cap);
    case PX_BOT_CMD_MODE: {
        px_conceal_mode m;
        if (!arg[0]) {
            px_bot_store_get_mode(b->store, j->u.chat_id, b->cfg.anon.mode, &m);
            snprintf(text, sizeof text,
                     "Faces in this chat are hidden with: %s. Change it with /mode "
                     "blur|pixelate|noise|solid.",
                     px_anon_mode_name(m));
        } else if (px_anon_mode_parse(arg, &m) != PX_OK) {
            snprintf(text, sizeof text,
                     "Unknown mode. Use /mode blur, /mode pixelate, /mode "
                     "noise or /mode solid.");
        } else {
            px_err e = {{0}};
            if (px_bot_store_set_mode(b->store, j->u.chat_id, m, &e) != PX_OK) {
                snprintf(detail, cap, "%s", e.msg);
                snprintf(text, sizeof text, "I could not save that setting; please try again.");
            } else {
                snprintf(text, sizeof text, "Done: faces in this chat will be hidden with %s.",
                         px_anon_mode_name(m));
            }
        }
        return reply_text(tg, j, text, detail, cap);
    }
    case PX_BOT_CMD_UNKNOWN:
        return reply_text(tg, j, "I do not know that command. /help lists what I can do.", detail,
                          cap);
    case PX_BOT_CMD_NONE:
    default:
        return reply_text(tg, j,
                          "Send me a photo and I will hide the faces in it. /help says more.",
                          detail, cap);
    }
}

static const char *kind_name(const job *j)
{
    if (j->kind == JOB_RATE_LIMITED)
        return "rate-limited";
    switch (j->u.kind) {
    case PX_TG_MSG_PHOTO:
        return "photo";
    case PX_TG_MSG_DOCUMENT:
        return "document";
    case PX_TG_MSG_TEXT:
        return "text";
    default:
        return "other";
    }
}

/* Seconds until a job that ended in a retry is tried again: past the
 * client's own back-off (backoff_ms doubled per call try), doubling per job
 * try, at most 10 minutes, and never before Telegram's retry_after. */
static int job_delay_s(const px_bot *b, const job *j)
{
    int shift = (b->cfg.max_attempts > 0 ? b->cfg.max_attempts : 5) + j->attempts;
    int64_t ms = (int64_t)(b->cfg.backoff_ms > 0 ? b->cfg.backoff_ms : 500)
                 << (shift < 20 ? shift : 20);
    if (ms > 600000)
        ms = 600000;
    int s = (int)((ms + 999) / 1000);
    return j->retry_after > s ? j->retry_after : s;
}

static void run_job(px_bot *b, px_tg *tg, job *j)
{
    double t0 = px_now_ms();
    px_log(PX_LOG_DEBUG, "bot: job update=%lld starts at %.0f ms (accepted at %.0f)",
           (long long)j->u.update_id, t0, j->t_accept);
    int faces = -1;
    char detail[512] = "";
    outcome oc;
    if (j->kind == JOB_RATE_LIMITED) {
        char text[256];
        snprintf(text, sizeof text,
                 "You are sending photos faster than I can take them (limit %d a minute). Please "
                 "wait a minute and send that one again.",
                 b->cfg.rate_per_minute);
        oc = reply_text(tg, j, text, detail, sizeof detail);
    } else if (j->u.kind == PX_TG_MSG_PHOTO || j->u.kind == PX_TG_MSG_DOCUMENT) {
        oc = run_image(b, tg, j, &faces, detail, sizeof detail);
    } else if (j->u.kind == PX_TG_MSG_TEXT) {
        oc = run_text(b, tg, j, detail, sizeof detail);
    } else {
        oc = reply_text(tg, j,
                        "I only work on photos and image files (JPEG, PNG, WebP). /help says more.",
                        detail, sizeof detail);
    }

    char tag[9];
    px_bot_chat_tag(b->salt, j->u.chat_id, tag);
    px_err e = {{0}};
    int64_t now = (int64_t)time(NULL);
    if (faces >= 0)
        atomic_fetch_add(&b->m.c[BM_PHOTOS], 1);
    if (faces > 0)
        atomic_fetch_add(&b->m.c[BM_FACES], faces);
    if (oc == OUT_RETRY && now - j->first_at >= b->cfg.retry_max_age_s) {
        oc = OUT_DROPPED; /* Telegram has forgotten the message by now as well */
        px_log(PX_LOG_WARN, "bot: chat=%s update=%lld: giving up after %d tries over %lld s", tag,
               (long long)j->u.update_id, j->attempts + 1, (long long)(now - j->first_at));
    }
    atomic_fetch_add(&b->m.c[oc == OUT_SENT      ? BM_SENT
                             : oc == OUT_DROPPED ? BM_DROPPED
                                                 : BM_DEFERRED],
                     1);
    bot_metrics_job(&b->m, px_now_ms() - t0);
    if (oc == OUT_RETRY) {
        int delay = job_delay_s(b, j);
        px_log(PX_LOG_INFO, "bot: chat=%s update=%lld: reply not taken (try %d), retrying in %d s",
               tag, (long long)j->u.update_id, j->attempts + 1, delay);
        if (px_bot_store_defer(b->store, j->u.update_id, now + delay, &e) != PX_OK)
            px_log(PX_LOG_ERROR, "bot: %s", e.msg);
    } else if (px_bot_store_finish(b->store, j->u.update_id, &e) != PX_OK) {
        px_log(PX_LOG_ERROR, "bot: %s", e.msg);
    }
    double ms = px_now_ms() - t0, wait = t0 - j->t_accept;
    px_log(oc == OUT_SENT ? PX_LOG_INFO : PX_LOG_WARN,
           "bot job chat=%s update=%lld kind=%s faces=%d ms=%.0f queued_ms=%.0f outcome=%s%s%s",
           tag, (long long)j->u.update_id, kind_name(j), faces, ms, wait, outcome_name(oc),
           detail[0] ? " detail=" : "", detail);
}

static void enqueue(px_bot *b, job *j);

/* Turns pending rows that are due into jobs while there is room. Called by
 * the poller before each poll and by a worker when it finishes a job. */
static void feed_due(px_bot *b)
{
    pthread_mutex_lock(&b->feed_mu);
    px_bot_pending due[16];
    for (;;) {
        pthread_mutex_lock(&b->mu);
        int room = b->cfg.queue_capacity - b->pending;
        int nskip = b->ninflight;
        memcpy(b->skip, b->inflight, (size_t)nskip * sizeof *b->skip);
        pthread_mutex_unlock(&b->mu);
        if (room <= 0 || atomic_load(&b->stop))
            break;
        int want = room < 16 ? room : 16;
        int n = px_bot_store_due(b->store, (int64_t)time(NULL), b->skip, nskip, due, want);
        for (int i = 0; i < n; i++) {
            job *j = px_calloc(1, sizeof *j);
            if (!j)
                break; /* stays pending: fed again later */
            j->u = due[i].u;
            j->kind = due[i].rate_limited ? JOB_RATE_LIMITED : JOB_MESSAGE;
            j->t_accept = px_now_ms();
            j->attempts = due[i].attempts;
            j->first_at = due[i].first_at;
            pthread_mutex_lock(&b->mu);
            enqueue(b, j);
            pthread_mutex_unlock(&b->mu);
        }
        if (n < want)
            break;
    }
    pthread_mutex_unlock(&b->feed_mu);
}

typedef struct {
    px_bot *b;
    px_tg *tg;
} worker_arg;

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    px_bot *b = wa->b;
    void *item;
    while (px_queue_pop(b->ready, &item, -1) == PX_OK) {
        chat_slot *c = item;
        pthread_mutex_lock(&b->mu);
        job *j = c->head;
        c->head = j->next;
        if (!c->head)
            c->tail = NULL;
        int stopping = atomic_load(&b->stop);
        pthread_mutex_unlock(&b->mu);

        /* on stop, jobs not started stay unconfirmed: Telegram redelivers them
         * to the next run */
        if (!stopping)
            run_job(b, wa->tg, j);

        pthread_mutex_lock(&b->mu);
        if (!stopping)
            inflight_remove(b, j->u.update_id);
        b->pending--;
        atomic_store(&b->m.queue_depth, b->pending);
        if (c->head) {
            px_queue_try_push(b->ready, c); /* capacity covers every chat */
        } else {
            chat_slot **pp = &b->chats;
            while (*pp != c)
                pp = &(*pp)->next;
            *pp = c->next;
            free(c);
        }
        pthread_cond_broadcast(&b->done_cv);
        pthread_mutex_unlock(&b->mu);
        free(j);
        if (!stopping)
            feed_due(b); /* room for a waiting pending job, without waiting for the poller */
    }
    px_tg_destroy(wa->tg);
    free(wa);
    return NULL;
}

/* ---- the poller ---- */

/* Appends a job to its chat (mu held). A chat that already has a slot is
 * either queued or running (popped, but its entry kept until its worker
 * ends), so appending is enough: the worker re-queues the chat when it
 * finishes. A slot is created only when the chat has no job at all, which is
 * exactly when it must be queued. */
static void enqueue(px_bot *b, job *j)
{
    chat_slot *c = b->chats;
    while (c && c->chat_id != j->u.chat_id)
        c = c->next;
    int schedule = 0;
    if (!c) {
        c = px_calloc(1, sizeof *c);
        if (!c) {
            free(j);
            return; /* stays unconfirmed; comes back with the next poll */
        }
        c->chat_id = j->u.chat_id;
        c->next = b->chats;
        b->chats = c;
        schedule = 1; /* a new slot is neither queued nor running */
    }
    if (c->tail)
        c->tail->next = j;
    else
        c->head = j;
    c->tail = j;
    b->pending++;
    atomic_store(&b->m.queue_depth, b->pending);
    b->inflight[b->ninflight++] = j->u.update_id;
    if (schedule)
        px_queue_try_push(b->ready, c);
}

/* Keeps the offset at or below id (poller only). */
static void hold(px_bot *b, int64_t id)
{
    if (b->hold == 0 || id < b->hold)
        b->hold = id;
}

typedef enum {
    ACC_TAKEN = 0, /* recorded as pending and queued (or nothing to answer, or known) */
    ACC_FULL,      /* the queue is full: nothing recorded, the sender is to hear "busy" */
    ACC_RETRY,     /* could not be recorded: Telegram must deliver it again */
} acc_result;

/* Records u as a pending job (in the database first) and queues it. From
 * the poller, or from the webhook's threads at once: feed_mu makes each
 * acceptance whole (and keeps a feeder from taking the row before it is
 * queued here). */
static acc_result accept_update(px_bot *b, const px_tg_update *u)
{
    px_err e = {{0}};
    if (u->kind == PX_TG_MSG_NONE || u->chat_id == 0) {
        px_bot_store_mark_handled(b->store, u->update_id, &e); /* nothing to answer */
        return ACC_TAKEN;
    }
    job *j = px_calloc(1, sizeof *j);
    if (!j)
        return ACC_RETRY;
    j->u = *u;
    j->t_accept = px_now_ms();
    acc_result res = ACC_TAKEN;
    pthread_mutex_lock(&b->feed_mu);
    pthread_mutex_lock(&b->mu);
    int full = b->pending >= b->cfg.queue_capacity;
    pthread_mutex_unlock(&b->mu);
    if (full) {
        res = ACC_FULL;
    } else {
        int limited = 0;
        int64_t now = (int64_t)time(NULL);
        int r = px_bot_store_accept(b->store, u, b->cfg.rate_per_minute, now, &limited, &e);
        if (r == 1) {
            atomic_fetch_add(&b->m.c[limited ? BM_RATE : BM_UPDATES], 1);
            j->kind = limited ? JOB_RATE_LIMITED : JOB_MESSAGE;
            j->first_at = now;
            pthread_mutex_lock(&b->mu);
            enqueue(b, j); /* owns j now (frees it when short of memory: the row stays) */
            pthread_mutex_unlock(&b->mu);
            j = NULL;
        } else if (r < 0) {
            px_log(PX_LOG_ERROR, "bot: %s", e.msg);
            res = ACC_RETRY;
        }
    }
    pthread_mutex_unlock(&b->feed_mu);
    free(j);
    return res;
}

/* Tells the sender of u that the queue is full (ctl_tg: the poller or the
 * webhook's main thread). Returns 1 when done with u (told, or refused for
 * good), 0 when Telegram should deliver it again. */
static int send_busy(px_bot *b, const px_tg_update *u)
{
    px_err e = {{0}};
    atomic_fetch_add(&b->m.c[BM_BUSY], 1);
    int st = px_tg_send_message(b->ctl_tg, u->chat_id, u->message_id,
                                "I am busy right now; please try again shortly.", NULL, NULL, &e);
    char tag[9];
    px_bot_chat_tag(b->salt, u->chat_id, tag);
    job tmp = {.u = *u, .kind = JOB_MESSAGE};
    px_log(PX_LOG_WARN, "bot job chat=%s update=%lld kind=%s faces=-1 ms=0 outcome=busy%s%s", tag,
           (long long)u->update_id, kind_name(&tmp),
           st == PX_OK ? "" : " detail=", st == PX_OK ? "" : e.msg);
    if (st != PX_OK && st != PX_EINVAL)
        return 0;
    px_bot_store_mark_handled(b->store, u->update_id, &e);
    return 1;
}

/* Every update seen is recorded (pending or handled) except a held one. */
static int64_t confirm_offset(const px_bot *b, int64_t max_seen)
{
    int64_t off = max_seen > 0 ? max_seen + 1 : 0;
    if (b->hold > 0 && (off == 0 || b->hold < off))
        off = b->hold;
    return off;
}

/* The long-poll wait: the configured one, shortened so that a deferred job
 * is fed soon after its time. */
static int poll_wait_s(px_bot *b)
{
    int64_t now = (int64_t)time(NULL), at = 0;
    int w = b->cfg.poll_timeout_s;
    if (px_bot_store_next_due(b->store, now, &at) == 1 && at - now < w)
        w = (int)(at - now);
    return w < 1 ? 1 : w;
}

static void nap(px_bot *b, int ms)
{
    for (; ms > 0 && !atomic_load(&b->stop); ms -= 20) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* "https://host:port/secret/path" -> "https://host:port" for log lines:
 * some operators keep the path secret. */
static void url_origin(const char *url, char *out, size_t cap)
{
    const char *h = strstr(url, "://");
    size_t n = h ? (size_t)(h + 3 - url) + strcspn(h + 3, "/") : strlen(url);
    snprintf(out, cap, "%.*s", (int)n, url);
}

/* ---- webhook mode ---- */

/* A POST whose secret matched (bot_http's threads, concurrently): the
 * update is stored before the 200, so a crash after it loses nothing. */
static int hook_update(void *ctx, const char *body, size_t len)
{
    px_bot *b = ctx;
    px_tg_update u;
    px_err e = {{0}};
    if (px_tg_parse_update(body, len, &u, &e) != PX_OK)
        return 400;
    if (atomic_load(&b->stop))
        return 503; /* Telegram delivers it again, to the next run */
    atomic_store(&b->hook_taken_at, (long long)time(NULL));
    pthread_mutex_lock(&b->mu);
    int known = inflight_has(b, u.update_id);
    for (int i = 0; i < b->nnotices && !known; i++)
        known = b->notices[i].update_id == u.update_id;
    pthread_mutex_unlock(&b->mu);
    int k = known ? 1 : px_bot_store_is_known(b->store, u.update_id);
    if (k < 0)
        return 500;
    if (k == 1)
        return 200; /* a repeat (our 200 was lost): nothing to do */
    acc_result r = accept_update(b, &u);
    if (r == ACC_RETRY)
        return 500;
    if (r == ACC_TAKEN)
        return 200;
    /* queue full: the main thread says "busy", so this answer stays quick */
    pthread_mutex_lock(&b->mu);
    int room = b->nnotices < NOTICE_CAP;
    if (room)
        b->notices[b->nnotices++] = u;
    pthread_mutex_unlock(&b->mu);
    return room ? 200 : 503;
}

static void hook_routes(px_bot *b, bot_http_routes *r)
{
    int mc = b->cfg.webhook_max_connections > 0 ? b->cfg.webhook_max_connections : 40;
    r->hook_path = b->hook_path;
    r->secret = b->hook_secret;
    r->max_body = b->cfg.webhook_max_body;
    r->max_conns += mc + 8;
    r->on_update = hook_update;
    r->ctx = b;
}

/* Starts /healthz+/metrics (--metrics) and the webhook (--listen): one
 * listener when both name the same address. */
static int start_listeners(px_bot *b, px_err *err)
{
    const char *ma = b->cfg.metrics_addr && b->cfg.metrics_addr[0] ? b->cfg.metrics_addr : NULL;
    int same = b->hook_url && ma && !strcmp(ma, b->hook_listen);
    int port = 0, st;
    if (ma) {
        bot_http_routes r = {.m = &b->m, .max_conns = 16};
        if (same)
            hook_routes(b, &r);
        if ((st = bot_http_start(ma, &r, &b->msrv, &port, err)) != PX_OK)
            return st;
        px_log(PX_LOG_INFO, "bot: /healthz and /metrics on port %d (%s)", port, ma);
    }
    if (b->hook_url && !same) {
        bot_http_routes r = {0};
        hook_routes(b, &r);
        if ((st = bot_http_start(b->hook_listen, &r, &b->hsrv, &port, err)) != PX_OK)
            return st;
    }
    if (b->hook_url)
        px_log(PX_LOG_INFO, "bot: webhook listening on port %d (%s), %zu bytes at most", port,
               b->hook_listen, b->cfg.webhook_max_body);
    return PX_OK;
}

/* Sends the waiting "busy" notices (main thread). */
static void send_notices(px_bot *b)
{
    for (;;) {
        pthread_mutex_lock(&b->mu);
        px_tg_update u;
        int have = b->nnotices > 0;
        if (have)
            u = b->notices[--b->nnotices];
        pthread_mutex_unlock(&b->mu);
        if (!have)
            return;
        if (!send_busy(b, &u))
            px_log(PX_LOG_WARN, "bot: update=%lld: the \"busy\" answer could not be sent",
                   (long long)u.update_id);
    }
}

/* Reads getWebhookInfo: PX_ECLOSED when another program changed the
 * webhook; logs deliveries Telegram reports failing (*seen: the last
 * reported) and sets the health: unhealthy while Telegram's last failed
 * delivery is newer than both the last update taken and set_at (when the
 * webhook was set: older errors are another run's). */
static int check_webhook(px_bot *b, int64_t set_at, int64_t *seen, px_err *err)
{
    px_tg_webhook_info wi;
    px_err e = {{0}};
    if (px_tg_get_webhook_info(b->ctl_tg, &wi, NULL, &e) != PX_OK) {
        px_log(PX_LOG_WARN, "bot: getWebhookInfo failed (carrying on): %s", e.msg);
        return PX_OK;
    }
    if (strcmp(wi.url, b->hook_url)) {
        char now[128];
        url_origin(wi.url, now, sizeof now);
        return px_err_set(err, PX_ECLOSED,
                          "bot: the webhook was changed by someone else (now '%s'): another "
                          "instance with this token?",
                          wi.url[0] ? now : "none");
    }
    if (wi.last_error_date > *seen) {
        *seen = wi.last_error_date;
        px_log(PX_LOG_WARN,
               "bot: Telegram reports a failed webhook delivery %lld s ago: %s (%lld updates "
               "waiting); check the proxy",
               (long long)((int64_t)time(NULL) - wi.last_error_date), wi.last_error_message,
               (long long)wi.pending_update_count);
    }
    int64_t taken = (int64_t)atomic_load(&b->hook_taken_at);
    atomic_store(&b->m.healthy, wi.last_error_date <= (taken > set_at ? taken : set_at));
    return PX_OK;
}

/* Webhook mode after the workers started: set the webhook, then feed due
 * pending jobs, send "busy" notices and read getWebhookInfo every
 * webhook_check_s until stop. */
static int webhook_loop(px_bot *b, px_err *err)
{
    px_err e = {{0}};
    px_tg_error info;
    char origin[160];
    url_origin(b->hook_url, origin, sizeof origin);
    int mc = b->cfg.webhook_max_connections;
    int st = px_tg_set_webhook(b->ctl_tg, b->hook_url, b->hook_secret, mc, &info, &e);
    if (st == PX_EINVAL && (info.error_code == 401 || info.error_code == 404))
        return px_err_set(err, PX_EINVAL, "bot: Telegram refused the token (%s)", e.msg);
    if (st != PX_OK)
        return px_err_set(err, st, "bot: setWebhook for %s/... failed: %s", origin, e.msg);
    px_log(PX_LOG_INFO, "bot: webhook set for %s/... (%d workers, queue %d, max_connections %d)",
           origin, b->nthreads, b->cfg.queue_capacity, mc > 0 ? mc : 40);
    int64_t set_at = (int64_t)time(NULL), seen = set_at, next_check = 0;
    while (!atomic_load(&b->stop)) {
        feed_due(b);
        send_notices(b);
        int64_t now = (int64_t)time(NULL);
        if (now >= next_check) {
            if ((st = check_webhook(b, set_at, &seen, err)) != PX_OK)
                return st;
            next_check = now + (b->cfg.webhook_check_s > 0 ? b->cfg.webhook_check_s : 30);
        }
        nap(b, 250);
    }
    return PX_OK;
}

/* ---- polling mode ---- */

/* Telegram refuses getUpdates while a webhook is set (409): one left by
 * an earlier --webhook run is deleted (its waiting updates are kept). */
static void drop_webhook(px_bot *b)
{
    px_tg_webhook_info wi;
    px_err e = {{0}};
    if (px_tg_get_webhook_info(b->ctl_tg, &wi, NULL, &e) != PX_OK) {
        px_log(PX_LOG_WARN, "bot: getWebhookInfo failed (carrying on): %s", e.msg);
        return;
    }
    if (!wi.url[0])
        return;
    char origin[160];
    url_origin(wi.url, origin, sizeof origin);
    px_log(PX_LOG_INFO,
           "bot: a webhook is set (%s/..., %lld updates waiting): deleting it so that polling "
           "works; the updates are kept",
           origin, (long long)wi.pending_update_count);
    if (px_tg_delete_webhook(b->ctl_tg, NULL, &e) != PX_OK)
        px_log(PX_LOG_WARN, "bot: deleteWebhook failed: %s", e.msg);
}

/* Polling until stop; *max_seen: the highest update id seen. */
static int poll_loop(px_bot *b, int64_t *max_seen, px_err *err)
{
    px_err e = {{0}};
    px_tg_error info;
    drop_webhook(b);
    px_log(PX_LOG_INFO, "bot: polling (%d workers, queue %d, long poll %d s)", b->nthreads,
           b->cfg.queue_capacity, b->cfg.poll_timeout_s);
    int fails = 0;
    while (!atomic_load(&b->stop)) {
        feed_due(b);
        int64_t offset = confirm_offset(b, *max_seen);
        px_tg_update *ups = NULL;
        int n = 0;
        int st = px_tg_get_updates(b->poll_tg, offset, poll_wait_s(b), 100, &ups, &n, &info, &e);
        if (st == PX_ECLOSED && atomic_load(&b->stop))
            break;
        if (st == PX_ECLOSED)
            return px_err_set(err, PX_ECLOSED,
                              "bot: Telegram answered 409 Conflict: another instance of this "
                              "bot is polling, or a webhook is set (%s)",
                              info.description);
        if (st == PX_EINVAL && (info.error_code == 401 || info.error_code == 404))
            return px_err_set(err, PX_EINVAL, "bot: Telegram refused the token (%s)", e.msg);
        if (st != PX_OK) {
            int wait = b->cfg.backoff_ms << (fails < 6 ? fails : 6);
            fails++;
            if (fails >= 3)
                atomic_store(&b->m.healthy, 0);
            px_log(PX_LOG_WARN, "bot: getUpdates failed, retrying in %d ms: %s", wait, e.msg);
            nap(b, wait);
            continue;
        }
        fails = 0;
        atomic_store(&b->m.healthy, 1);
        b->hold = 0; /* a held update is in this batch again */
        int fresh = 0;
        for (int i = 0; i < n; i++) {
            const px_tg_update *u = &ups[i];
            if (u->update_id > *max_seen)
                *max_seen = u->update_id;
            pthread_mutex_lock(&b->mu);
            int known = inflight_has(b, u->update_id);
            pthread_mutex_unlock(&b->mu);
            if (known || px_bot_store_is_known(b->store, u->update_id) == 1)
                continue;
            fresh++;
            acc_result r = accept_update(b, u);
            if (r == ACC_RETRY || (r == ACC_FULL && !send_busy(b, u)))
                hold(b, u->update_id); /* unconfirmed: comes back with the next poll */
        }
        free(ups);
        px_log(PX_LOG_DEBUG, "bot: poll at %.0f ms: %d updates, %d new, offset %lld", px_now_ms(),
               n, fresh, (long long)offset);
        if (b->hold)
            nap(b,
                b->cfg.backoff_ms > 0 ? b->cfg.backoff_ms : 500); /* getUpdates answers at once */
    }
    return PX_OK;
}

static int start_workers(px_bot *b)
{
    px_err e = {{0}};
    int started = 0;
    for (; started < b->cfg.workers; started++) {
        worker_arg *wa = px_calloc(1, sizeof *wa);
        int st = wa ? make_tg(b, &b->hard, &wa->tg, &e) : PX_ENOMEM;
        if (wa)
            wa->b = b;
        if (st != PX_OK || pthread_create(&b->threads[started], NULL, worker_main, wa) != 0) {
            if (wa)
                px_tg_destroy(wa->tg);
            free(wa);
            break;
        }
    }
    b->nthreads = started;
    return started;
}

int px_bot_run(px_bot *b, px_err *err)
{
    if (!b)
        return px_err_set(err, PX_EINVAL, "bot: no bot");
    if (b->ran)
        return px_err_set(err, PX_EINVAL, "bot: px_bot_run called twice");
    b->ran = 1;
    px_err e = {{0}};
    static const px_tg_command cmds[] = {
        {"start", "what this bot does"},
        {"help", "how to use it, and privacy"},
        {"mode", "blur | pixelate | noise | solid: how faces are hidden"},
    };
    px_tg_error info;
    int st = px_tg_set_my_commands(b->ctl_tg, cmds, 3, &info, &e);
    if (st == PX_EINVAL && (info.error_code == 401 || info.error_code == 404))
        return px_err_set(err, PX_EINVAL, "bot: Telegram refused the token (%s)", e.msg);
    if (st != PX_OK)
        px_log(PX_LOG_WARN, "bot: setMyCommands failed (carrying on): %s", e.msg);

    /* listening before setWebhook, so Telegram's first delivery finds us */
    int result = start_listeners(b, err);
    int64_t max_seen = 0;
    if (result == PX_OK && start_workers(b) == 0)
        result = px_err_set(err, PX_ENOMEM, "bot: could not start any worker");
    if (result == PX_OK)
        result = b->hook_url ? webhook_loop(b, err) : poll_loop(b, &max_seen, err);

    /* stop: no new updates; workers finish what they run, skip what waits, then exit */
    atomic_store(&b->stop, 1);
    bot_http_stop(b->hsrv);
    b->hsrv = NULL;
    if (b->hook_url)
        send_notices(b); /* "busy" answers owed to updates taken before the stop */
    px_queue_close(b->ready);
    for (int i = 0; i < b->nthreads; i++)
        pthread_join(b->threads[i], NULL);
    b->nthreads = 0;
    if (result == PX_OK && !b->hook_url) {
        /* confirm what was answered; timeout 0 returns at once */
        int64_t offset = confirm_offset(b, max_seen);
        px_tg_update *ups = NULL;
        int n = 0;
        if (offset > 0 && px_tg_get_updates(b->ctl_tg, offset, 0, 1, &ups, &n, NULL, &e) != PX_OK)
            px_log(PX_LOG_WARN, "bot: final offset confirmation failed: %s", e.msg);
        free(ups);
    }
    bot_http_stop(b->msrv);
    b->msrv = NULL;
    px_log(PX_LOG_INFO, "bot: stopped");
    return result;
}
