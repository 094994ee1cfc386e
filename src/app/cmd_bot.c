/*
 * `pixpipe bot`: runs the Telegram bot that anonymizes photos (px_bot).
 * Argument parsing and wiring only: read the token, load the detector once,
 * start the bot, turn SIGTERM/SIGINT into an orderly stop.
 *
 * The token comes from PIXPIPE_TELEGRAM_TOKEN or --token-file, never from the
 * command line (argv is readable by every user of the machine through ps and
 * /proc) and is never printed. The webhook secret likewise comes from a file
 * (--webhook-secret-file) or is made at random by the bot at each start.
 */
#include <curl/curl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "anon/px_anon.h"
#include "bot/px_bot.h"
#include "commands.h"
#include "core/px_core.h"

static px_bot *g_bot; /* for the signal handler only */

static void on_signal(int sig)
{
    (void)sig;
    px_bot_stop(g_bot); /* one atomic store: async-signal-safe */
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pixpipe bot [options]\n"
            "Runs the Telegram bot that hides faces in the photos people send it.\n"
            "The token is read from PIXPIPE_TELEGRAM_TOKEN or --token-file (never the command "
            "line).\n\n"
            "  --token-file FILE   file holding the bot token (from @BotFather)\n"
            "  --api-url URL       Bot API server (default https://api.telegram.org)\n"
            "  --db FILE           SQLite state file (default pixpipe-bot.db)\n"
            "  --model FILE        face detection model (default: found like `anonymize`)\n"
            "  --mode MODE         default concealment: blur|pixelate|noise|solid (default noise)\n"
            "  --workers N         photos processed at once (default: cores)\n"
            "  --threads N         compute threads per photo (default: cores)\n"
            "  --queue N           accepted jobs waiting at most; beyond: \"busy\" (default 64)\n"
            "  --poll-timeout S    getUpdates long-poll seconds (default 50)\n"
            "  --rate N            photos per user per minute (default 30)\n"
            "  --max-file-mb N     largest image taken, in MB (default 20)\n"
            "  --backoff-ms N      first retry delay after a 5xx or timeout (default 500)\n"
            "  --photo-limit-kb N  largest photo Telegram takes, in KB (default 10240)\n"
            "  --file-limit-kb N   largest file Telegram takes, in KB (default 51200; a local\n"
            "                      Bot API server takes 2048000)\n"
            "  --photo-sides N     a photo's width + height at most (default 10000)\n"
            "  --max-megapixels N  pixels worked on at once by all workers (default 120;\n"
            "                      about 10 bytes a pixel: keep it under the memory limit)\n"
            "  --metrics IP:PORT   serve GET /healthz and /metrics (Prometheus) there, e.g.\n"
            "                      127.0.0.1:9464 (default: off)\n"
            "  --polling           get updates with getUpdates (the default); deletes a webhook\n"
            "                      left set, keeping its waiting updates\n"
            "  --webhook URL       webhook mode instead: Telegram POSTs updates to URL\n"
            "                      (https://HOST[:PORT]/PATH, port 443, 80, 88 or 8443) through a\n"
            "                      TLS-terminating proxy that forwards PATH to --listen\n"
            "  --listen IP:PORT    where the webhook is served, e.g. 127.0.0.1:8081 (may be the\n"
            "                      --metrics address: one listener serves both)\n"
            "  --webhook-secret-file FILE  the secret Telegram sends back in\n"
            "                      X-Telegram-Bot-Api-Secret-Token (1-256 of A-Z a-z 0-9 _ -;\n"
            "                      default: a random one made at each start)\n"
            "  --webhook-connections N  setWebhook max_connections, 1-100 (default 40)\n"
            "  --webhook-check S   read getWebhookInfo every S seconds: failed deliveries are\n"
            "                      logged and make /healthz 503 (default 30)\n"
            "  -v, --verbose       debug log   -q, --quiet   warnings and errors only\n"
            "  -h, --help          this text\n");
}

/* Reads a secret file (what: "token" or "webhook secret"), trimming
 * surrounding whitespace; warns when others can read it. */
static int read_secret(const char *what, const char *path, char *out, size_t cap)
{
    uint8_t *data = NULL;
    size_t len = 0;
    px_err e = {{0}};
    struct stat st;
    if (stat(path, &st) == 0 && (st.st_mode & 077))
        fprintf(stderr,
                "pixpipe bot: warning: %s file %s can be read by other users (mode %03o); "
                "anyone who reads it %s: chmod 600 it\n",
                what, path, (unsigned)(st.st_mode & 0777),
                strcmp(what, "token") ? "can send the bot forged updates" : "controls the bot");
    if (px_read_file(path, 4096, &data, &len, &e) != PX_OK) {
        fprintf(stderr, "pixpipe bot: %s file %s\n", what, e.msg);
        return -1;
    }
    size_t a = 0, b = len;
    while (a < b && (data[a] == ' ' || data[a] == '\n' || data[a] == '\r' || data[a] == '\t'))
        a++;
    while (b > a && (data[b - 1] == ' ' || data[b - 1] == '\n' || data[b - 1] == '\r' ||
                     data[b - 1] == '\t'))
        b--;
    if (b == a || b - a >= cap) {
        fprintf(stderr, "pixpipe bot: %s file %s: empty or too long\n", what, path);
        free(data);
        return -1;
    }
    memcpy(out, data + a, b - a);
    out[b - a] = '\0';
    memset(data, 0, len);
    free(data);
    return 0;
}

/* Option numbers: core's parser (one wording for every command), printed here. */
static int parse_int(const char *opt, const char *s, int lo, int hi, int *out)
{
    px_err e;
    if (px_parse_int(opt, s, lo, hi, out, &e) == PX_OK)
        return 0;
    fprintf(stderr, "pixpipe bot: %s\n", e.msg);
    return -1;
}

enum {
    O_TOKEN_FILE = 256,
    O_API,
    O_DB,
    O_MODEL,
    O_MODE,
    O_WORKERS,
    O_THREADS,
    O_QUEUE,
    O_POLL,
    O_RATE,
    O_MAXMB,
    O_BACKOFF,
    O_TOKEN,
    O_PHOTO_KB,
    O_FILE_KB,
    O_SIDES,
    O_MAXMP,
    O_METRICS,
    O_POLLING,
    O_WEBHOOK,
    O_LISTEN,
    O_HOOK_SECRET,
    O_HOOK_CONNS,
    O_HOOK_CHECK
};

static const struct option k_longopts[] = {
    {"token-file", required_argument, NULL, O_TOKEN_FILE},
    {"api-url", required_argument, NULL, O_API},
    {"db", required_argument, NULL, O_DB},
    {"model", required_argument, NULL, O_MODEL},
    {"mode", required_argument, NULL, O_MODE},
    {"workers", required_argument, NULL, O_WORKERS},
    {"threads", required_argument, NULL, O_THREADS},
    {"queue", required_argument, NULL, O_QUEUE},
    {"poll-timeout", required_argument, NULL, O_POLL},
    {"rate", required_argument, NULL, O_RATE},
    {"max-file-mb", required_argument, NULL, O_MAXMB},
    {"backoff-ms", required_argument, NULL, O_BACKOFF},
    {"token", required_argument, NULL, O_TOKEN},
    {"photo-limit-kb", required_argument, NULL, O_PHOTO_KB},
    {"file-limit-kb", required_argument, NULL, O_FILE_KB},
    {"photo-sides", required_argument, NULL, O_SIDES},
    {"max-megapixels", required_argument, NULL, O_MAXMP},
    {"metrics", required_argument, NULL, O_METRICS},
    {"polling", no_argument, NULL, O_POLLING},
    {"webhook", required_argument, NULL, O_WEBHOOK},
    {"listen", required_argument, NULL, O_LISTEN},
    {"webhook-secret-file", required_argument, NULL, O_HOOK_SECRET},
    {"webhook-connections", required_argument, NULL, O_HOOK_CONNS},
    {"webhook-check", required_argument, NULL, O_HOOK_CHECK},
    {"verbose", no_argument, NULL, 'v'},
    {"quiet", no_argument, NULL, 'q'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* What the command line says, before any of it is acted on. */
typedef struct bot_args {
    px_bot_config cfg;
    const char *token_file, *model, *db, *secret_file;
    int workers, threads, maxmb, photo_kb, file_kb, max_mp, polling;
} bot_args;

/* One option: -1 when it was fine, else the exit code. */
static int parse_option(bot_args *a, int c, const char *arg)
{
    int bad = 0;
    switch (c) {
    case O_TOKEN_FILE: a->token_file = arg; break;
    case O_API: a->cfg.api_url = arg; break;
    case O_DB: a->db = arg; break;
    case O_MODEL: a->model = arg; break;
    case O_MODE:
        if (px_anon_mode_parse(arg, &a->cfg.anon.mode) != PX_OK) {
            fprintf(stderr, "pixpipe bot: --mode '%s': expected blur, pixelate, noise or solid\n",
                    arg);
            bad = 1;
        }
        break;
    case O_WORKERS: bad = parse_int("--workers", arg, 1, 64, &a->workers); break;
    case O_THREADS: bad = parse_int("--threads", arg, 1, 256, &a->threads); break;
    case O_QUEUE: bad = parse_int("--queue", arg, 1, 100000, &a->cfg.queue_capacity); break;
    case O_POLL: bad = parse_int("--poll-timeout", arg, 0, 60, &a->cfg.poll_timeout_s); break;
    case O_RATE: bad = parse_int("--rate", arg, 1, 100000, &a->cfg.rate_per_minute); break;
    case O_MAXMB: bad = parse_int("--max-file-mb", arg, 1, 2000, &a->maxmb); break;
    case O_BACKOFF: bad = parse_int("--backoff-ms", arg, 1, 600000, &a->cfg.backoff_ms); break;
    case O_PHOTO_KB: bad = parse_int("--photo-limit-kb", arg, 16, 2048000, &a->photo_kb); break;
    case O_FILE_KB: bad = parse_int("--file-limit-kb", arg, 16, 2048000, &a->file_kb); break;
    case O_SIDES: bad = parse_int("--photo-sides", arg, 64, 1000000, &a->cfg.photo_max_sides); break;
    case O_MAXMP: bad = parse_int("--max-megapixels", arg, 1, 100000, &a->max_mp); break;
    case O_METRICS: a->cfg.metrics_addr = arg; break;
    case O_POLLING:
        a->polling = 1;
        break;
    case O_WEBHOOK:
        a->cfg.webhook_url = arg;
        break;
    case O_LISTEN:
        a->cfg.webhook_listen = arg;
        break;
    case O_HOOK_SECRET:
        a->secret_file = arg;
        break;
    case O_HOOK_CONNS:
        bad = parse_int("--webhook-connections", arg, 1, 100, &a->cfg.webhook_max_connections);
        break;
    case O_HOOK_CHECK:
        bad = parse_int("--webhook-check", arg, 1, 3600, &a->cfg.webhook_check_s);
        break;
    case O_TOKEN:
        fprintf(stderr, "pixpipe bot: the token is never taken on the command line (other "
                        "users can read it there); use PIXPIPE_TELEGRAM_TOKEN or --token-file\n");
        return PX_EXIT_USAGE;
    case 'v': px_log_set_level(PX_LOG_DEBUG); break;
    case 'q': px_log_set_level(PX_LOG_WARN); break;
    case 'h': usage(stdout); return PX_EXIT_OK;
    default: usage(stderr); return PX_EXIT_USAGE;
    }
    return bad ? PX_EXIT_USAGE : -1;
}

/* Parses argv into *a: -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, bot_args *a)
{
    a->cfg = px_bot_config_default();
    a->db = "pixpipe-bot.db";
    a->maxmb = 20;
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "vqh", k_longopts, NULL)) != -1) {
        int rc = parse_option(a, c, optarg);
        if (rc >= 0)
            return rc;
    }
    if (optind < argc) {
        fprintf(stderr, "pixpipe bot: unexpected argument '%s'\n", argv[optind]);
        return PX_EXIT_USAGE;
    }
    const char *mode_err = a->polling && a->cfg.webhook_url ? "--polling and --webhook exclude "
                                                              "each other"
                           : a->cfg.webhook_url && !a->cfg.webhook_listen
                               ? "--webhook needs --listen IP:PORT (where the proxy forwards to)"
                           : !a->cfg.webhook_url && (a->cfg.webhook_listen || a->secret_file)
                               ? "--listen and --webhook-secret-file go with --webhook URL"
                               : NULL;
    if (mode_err) {
        fprintf(stderr, "pixpipe bot: %s\n", mode_err);
        return PX_EXIT_USAGE;
    }
    if (a->cfg.poll_timeout_s == 0)
        a->cfg.poll_timeout_s = 1; /* 0 would mean the default; keep "--poll-timeout 0" short */
    int cores = px_cpu_count();
    if (a->workers <= 0)
        a->workers = cores;
    /* all cores per photo even with several workers: a photo alone then
     * gets the whole machine, and two at once still beat one thread each
     * (bench_bot: p95 0.75 s against 1.3 s on 2 cores, docs/bot.md) */
    if (a->threads <= 0)
        a->threads = cores;
    a->cfg.workers = a->workers;
    a->cfg.max_file_bytes = (size_t)a->maxmb << 20;
    if (a->photo_kb > 0)
        a->cfg.photo_max_bytes = (size_t)a->photo_kb << 10;
    if (a->file_kb > 0)
        a->cfg.document_max_bytes = (size_t)a->file_kb << 10;
    if (a->max_mp > 0)
        a->cfg.pixel_budget = (uint64_t)a->max_mp * 1000000u;
    a->cfg.db_path = a->db;
    return -1;
}

/* The token from --token-file or PIXPIPE_TELEGRAM_TOKEN: -1 when found, else the exit code. */
static int get_token(const bot_args *a, char *token, size_t cap)
{
    const char *env = getenv("PIXPIPE_TELEGRAM_TOKEN");
    if (a->token_file)
        return read_secret("token", a->token_file, token, cap) ? PX_EXIT_SETUP : -1;
    if (env && env[0] && strlen(env) < cap) {
        snprintf(token, cap, "%s", env);
        return -1;
    }
    fprintf(stderr, "pixpipe bot: no token: set PIXPIPE_TELEGRAM_TOKEN or pass --token-file "
                    "(get one from @BotFather; see docs/bot.md)\n");
    return PX_EXIT_USAGE;
}

/* The webhook secret from --webhook-secret-file into secret (when given):
 * -1 when fine, else the exit code. */
static int get_secret(bot_args *a, char *secret, size_t cap)
{
    if (!a->secret_file)
        return -1;
    if (read_secret("webhook secret", a->secret_file, secret, cap))
        return PX_EXIT_SETUP;
    if (!px_tg_secret_token_valid(secret)) {
        fprintf(stderr,
                "pixpipe bot: webhook secret file %s: expected 1-256 characters of A-Z, a-z, "
                "0-9, _ and -\n",
                a->secret_file);
        return PX_EXIT_SETUP;
    }
    a->cfg.webhook_secret = secret;
    return -1;
}

/* Runs the bot until SIGTERM/SIGINT. cfg->det is made here; curl is set up
 * once, before any thread exists (curl's rule). token is wiped as soon as the
 * bot holds its copy. Returns the exit code. */
static int run_bot(bot_args *a, char *token)
{
    a->cfg.token = token;
    px_err e = {{0}};
    char model_path[4096];
    if (px_anon_find_model(a->model, NULL, model_path, sizeof model_path, &e) != PX_OK) {
        fprintf(stderr, "pixpipe bot: %s\n", e.msg);
        return PX_EXIT_SETUP;
    }
    px_face_detector_opts dopts = {PX_FACE_MODEL_AUTO, a->threads, a->workers, 0};
    px_face_detector *det = NULL;
    if (px_face_detector_create(model_path, &dopts, &det, &e) != PX_OK) {
        fprintf(stderr, "pixpipe bot: %s\n", e.msg);
        return PX_EXIT_SETUP;
    }
    a->cfg.det = det;
    char sha[65];
    if (px_bot_file_sha256(model_path, sha, &e) != PX_OK)
        snprintf(sha, sizeof sha, "unknown (%.40s)", e.msg);
    px_log(PX_LOG_INFO, "bot: model %s sha256 %s", model_path, sha);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "pixpipe bot: curl_global_init failed\n");
        px_face_detector_destroy(det);
        return PX_EXIT_SETUP;
    }
    px_bot *bot = NULL;
    int st = px_bot_create(&a->cfg, &bot, &e);
    memset(token, 0, strlen(token));
    if (a->cfg.webhook_secret) /* the bot holds its copy */
        explicit_bzero((char *)a->cfg.webhook_secret, strlen(a->cfg.webhook_secret));
    if (st == PX_OK) {
        g_bot = bot;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
        st = px_bot_run(bot, &e);
        g_bot = NULL;
    }
    px_bot_destroy(bot);
    px_face_detector_destroy(det);
    curl_global_cleanup();
    if (st != PX_OK) {
        fprintf(stderr, "pixpipe bot: %s\n", e.msg);
        return PX_EXIT_SETUP;
    }
    return PX_EXIT_OK;
}

int px_cmd_bot(int argc, char **argv)
{
    bot_args a;
    memset(&a, 0, sizeof a);
    int rc = parse_args(argc, argv, &a);
    char token[256] = "", secret[300] = "";
    if (rc < 0)
        rc = get_token(&a, token, sizeof token);
    if (rc < 0)
        rc = get_secret(&a, secret, sizeof secret);
    if (rc < 0)
        rc = run_bot(&a, token);
    memset(token, 0, sizeof token); /* also when run_bot was never reached */
    explicit_bzero(secret, sizeof secret);
    return rc;
}
