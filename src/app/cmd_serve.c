/*
 * `pixpipe serve`: runs the HTTP API and the review page (src/serve) until
 * SIGTERM or SIGINT, then stops gracefully (requests in progress get up to
 * --grace seconds to finish).
 *
 * SIGTERM/SIGINT go through a self-pipe: the handler (which may run on any
 * thread, including ones a library such as OpenBLAS started before main, so
 * blocking the signals in our threads would not be enough) only writes the
 * signal number to a pipe, and the main thread waits on the pipe's other end
 * and does the shutdown outside signal context. The first line on stdout is
 * "pixpipe serve: listening on http://ADDR:PORT/" (tests read the port from
 * it when they ask for port 0).
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "anon/px_anon.h"
#include "commands.h"
#include "core/px_core.h"
#include "manifest/px_manifest.h"
#include "serve/px_serve.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pixpipe serve [options]\n"
            "       pixpipe serve reviewer add NAME [--admin] --pool DIR\n"
            "       pixpipe serve reviewer list|remove [NAME] --pool DIR\n"
            "\n"
            "HTTP API (/v1/anonymize, /v1/pool/...), metrics and the expert review page\n"
            "(http://ADDR:PORT/review/). See docs/api.md and docs/review.md.\n"
            "\n"
            "  --listen ADDR:PORT   where to listen (default 127.0.0.1:8080; port 0: any free port)\n"
            "  --pool DIR           image pool to review (folder with manifest.sqlite)\n"
            "  --model PATH         face detector model (default: %s, searched as anonymize does)\n"
            "  --no-anonymize       run without a face model: /v1/anonymize answers 503\n"
            "  --mode MODE          default concealment: blur, pixelate, noise (default), solid\n"
            "  --workers N          anonymize worker threads (default 2)\n"
            "  --threads N          compute threads per image (default: cores / workers)\n"
            "  --queue N            anonymize jobs that may wait before 503 (default 2 x workers)\n"
            "  --io-threads N       HTTP I/O threads (default 2)\n"
            "  --max-body MB        largest request body (default 25)\n"
            "  --max-inflight N     requests handled at once before 503 (default 64)\n"
            "  --timeout-ms MS      anonymize processing timeout, 504 after it (default 30000)\n"
            "  --read-timeout S     idle connection timeout (default 15)\n"
            "  --per-ip N           open connections from one client address (default 32)\n"
            "  --header-timeout S   request headers must be complete within S seconds (default 15)\n"
            "  --allowed-host NAME  also answer to this Host (NAME or NAME:PORT; repeatable);\n"
            "                       default: the listen address, localhost and 127.0.0.1\n"
            "  --grace S            shutdown grace period for requests in progress (default 10)\n"
            "  --lease-seconds S    how long a reviewer's claimed images stay theirs (default 600)\n"
            "  --secure-cookie      mark the login cookie Secure (when served behind HTTPS)\n"
            "  -v, --verbose        log every request\n"
            "Campaigns page (admin; docs/campaigns.md): what it may render on and ask prompts of\n"
            "  --gen-server NAME=URL  a render server the page may choose (repeatable)\n"
            "  --gen-backend a1111|openai   their API (a1111)\n"
            "  --gen-llm NAME=URL   an OpenAI-compatible LLM for prompts (repeatable)\n"
            "  --gen-llm-model M    model name sent to it; key from $PIXPIPE_LLM_API_KEY\n"
            "  --gen-model PATH     the local engine (SD 1.x) as a render choice\n"
            "  --gen-threads N      its compute threads (default half the cores)\n"
            "  -h, --help           this text\n"
            "\n"
            "Accounts: `reviewer add` prints a login token once (the pool keeps only its\n"
            "SHA-256); the review page logs in with it, scripts send it as a bearer token.\n"
            "Once the pool has an account, every pool and review request needs one.\n"
            "\n"
            "Environment: PIXPIPE_API_TOKEN, when set, is a bearer token with the admin role\n"
            "('Authorization: Bearer TOKEN'), for scripts from before accounts.\n",
            PX_ANON_DEFAULT_MODEL);
}

static int g_sigpipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(g_sigpipe[1], &b, 1) < 0) {
        /* pipe full: a stop is already pending */
    }
    errno = saved;
}

/* Option numbers: core's parser (one wording for every command), printed here. */
static int int_arg(const char *opt, const char *v, long lo, long hi, long *out)
{
    px_err e;
    if (px_parse_long(opt, v, lo, hi, out, &e) == PX_OK)
        return 0;
    fprintf(stderr, "pixpipe serve: %s\n", e.msg);
    return -1;
}

/* What the command line says, before any of it is acted on. */
typedef struct serve_args {
    px_serve_opts o;
    char addr[64];
    const char *model;
    int no_anon, verbose;
    long threads, grace;
    const char *hosts[33]; /* --allowed-host, NULL-terminated */
    int n_hosts;
    const char *gen_servers[65], *gen_llms[65]; /* --gen-server, --gen-llm, NULL-terminated */
    int n_gen_servers, n_gen_llms;
    char vocab[PATH_MAX + 16], style[PATH_MAX + 32], clip[PATH_MAX];
} serve_args;

/* The Campaigns page's options: 1 when argv[*i] was one (taken), 0 when it is
 * not, -1 for a bad one (printed). */
static int parse_gen_option(serve_args *args, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    const char *val = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (!val || strncmp(a, "--gen-", 6))
        return 0;
    int is_server = !strcmp(a, "--gen-server"), is_llm = !strcmp(a, "--gen-llm");
    if (is_server || is_llm) {
        int *n = is_server ? &args->n_gen_servers : &args->n_gen_llms;
        if (*n >= 64) {
            fprintf(stderr, "pixpipe serve: %s: at most 64\n", a);
            return -1;
        }
        (is_server ? args->gen_servers : args->gen_llms)[(*n)++] = val;
    } else if (!strcmp(a, "--gen-backend")) {
        args->o.gen_backend = val;
    } else if (!strcmp(a, "--gen-llm-model")) {
        args->o.gen_llm_model = val;
    } else if (!strcmp(a, "--gen-model")) {
        args->o.gen_model = val;
    } else if (!strcmp(a, "--gen-threads")) {
        long v;
        if (int_arg(a, val, 1, 1024, &v))
            return -1;
        args->o.gen_threads = (int)v;
    } else {
        return 0;
    }
    (*i)++;
    return 1;
}

/* Where the Campaigns page's writer and styles come from: the data folder
 * `pixpipe generate` uses. */
static void gen_paths(serve_args *a)
{
    snprintf(a->vocab, sizeof a->vocab, "%s/vocab", px_app_data_dir());
    snprintf(a->style, sizeof a->style, "%s/styles/styles.json", px_app_data_dir());
    a->o.gen_vocab_dir = access(a->vocab, R_OK) == 0 ? a->vocab : NULL;
    a->o.gen_style_path = access(a->style, R_OK) == 0 ? a->style : NULL;
    a->o.gen_servers = a->n_gen_servers ? a->gen_servers : NULL;
    a->o.gen_llms = a->n_gen_llms ? a->gen_llms : NULL;
    const char *key = getenv("PIXPIPE_LLM_API_KEY");
    a->o.gen_llm_api_key = key && *key ? key : getenv("OPENAI_API_KEY");
    px_err err;
    if (a->o.gen_model &&
        px_anon_find_model(NULL, "bpe_simple_vocab_16e6.txt.gz", a->clip, sizeof a->clip, &err) ==
            PX_OK)
        a->o.gen_clip_vocab = a->clip;
}

/* Parses argv into *a: -1 to go on, else the exit code. */
static int parse_args(int argc, char **argv, serve_args *args)
{
    args->o = px_serve_opts_default();
    snprintf(args->addr, sizeof args->addr, "127.0.0.1");
    args->grace = 10;
    long v;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
#define NUM(name, lo, hi)                                                                         \
    (!strcmp(a, name) && (int_arg(name, val, lo, hi, &v) == 0 ? (i++, 1) : (v = -1, 1)))
        int g = parse_gen_option(args, argc, argv, &i);
        if (g < 0)
            return PX_EXIT_USAGE;
        if (g)
            continue;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return PX_EXIT_OK;
        } else if (!strcmp(a, "--listen") && val) {
            px_err err;
            px_err_clear(&err);
            if (px_serve_parse_listen(val, args->addr, sizeof args->addr, &args->o.port, &err) != PX_OK) {
                fprintf(stderr, "pixpipe serve: %s\n", err.msg);
                return PX_EXIT_USAGE;
            }
            i++;
        } else if (!strcmp(a, "--pool") && val) {
            args->o.pool_dir = argv[++i];
        } else if (!strcmp(a, "--allowed-host") && val) {
            if (args->n_hosts >= 32) {
                fprintf(stderr, "pixpipe serve: --allowed-host: at most 32\n");
                return PX_EXIT_USAGE;
            }
            args->hosts[args->n_hosts++] = argv[++i];
        } else if (NUM("--header-timeout", 1, 3600)) {
            if (v < 0)
                return PX_EXIT_USAGE;
            args->o.header_timeout_s = (int)v;
        } else if (NUM("--lease-seconds", 1, 86400)) {
            if (v < 0)
                return PX_EXIT_USAGE;
            args->o.lease_seconds = (int)v;
        } else if (!strcmp(a, "--secure-cookie")) {
            args->o.secure_cookie = 1;
        } else if (NUM("--per-ip", 1, 100000)) {
            if (v < 0)
                return PX_EXIT_USAGE;
            args->o.per_ip_connections = (int)v;
        } else if (!strcmp(a, "--model") && val) {
            args->model = argv[++i];
        } else if (!strcmp(a, "--no-anonymize")) {
            args->no_anon = 1;
        } else if (!strcmp(a, "--mode") && val) {
            if (px_anon_mode_parse(val, &args->o.anon.mode) != PX_OK) {
                fprintf(stderr, "pixpipe serve: --mode '%s': expected blur, pixelate, noise or "
                                "solid\n", val);
                return PX_EXIT_USAGE;
            }
            i++;
        } else if (NUM("--workers", 1, 64)) {
            if (v < 0)
                return PX_EXIT_USAGE;
            args->o.workers = (int)v;
        } else if (NUM("--threads", 1, 256)) {
            if (v < 0)
                return PX_EXIT_USAGE;
            args->threads = v;
        } else if (NUM("--queue", 1, 10000)) {
            if (v < 0)
                return PX_EXIT_USAGE;
            args->o.queue_capacity = (int)v;
        } else if (NUM("--io-threads", 1, 64)) {
            if (v < 0)
                return PX_EXIT_USAGE;
            args->o.io_threads = (int)v;
        } else if (NUM("--max-body", 1, 1024)) {
            if (v < 0)
                return PX_EXIT_USAGE;
            args->o.max_body_bytes = (size_t)v << 20;
        } else if (NUM("--max-inflight", 1, 100000)) {
            if (v < 0)
                return PX_EXIT_USAGE;
            args->o.max_inflight = (int)v;
        } else if (NUM("--timeout-ms", 1, 3600000)) {
            if (v < 0)
                return PX_EXIT_USAGE;
            args->o.process_timeout_ms = (int)v;
        } else if (NUM("--read-timeout", 1, 3600)) {
            if (v < 0)
                return PX_EXIT_USAGE;
            args->o.read_timeout_s = (int)v;
        } else if (NUM("--grace", 0, 3600)) {
            if (v < 0)
                return PX_EXIT_USAGE;
            args->grace = v;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            args->verbose = 1;
        } else {
            fprintf(stderr, "pixpipe serve: unknown or incomplete option '%s'; see --help\n", a);
            return PX_EXIT_USAGE;
        }
#undef NUM
    }
    gen_paths(args);
    args->o.listen_addr = args->addr;
    args->o.allowed_hosts = args->n_hosts ? args->hosts : NULL;
    args->o.log_requests = args->verbose;
    const char *tok = getenv("PIXPIPE_API_TOKEN");
    args->o.api_token = tok && *tok ? tok : NULL;
    return -1;
}

/* Signals into a pipe, the detector, the server; then waits for SIGTERM or
 * SIGINT and stops within the grace period. Returns the exit code. */
static int run_server(serve_args *a)
{
    if (pipe(g_sigpipe) != 0) {
        fprintf(stderr, "pixpipe serve: cannot create the signal pipe: %s\n", strerror(errno));
        return PX_EXIT_SETUP;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a client hanging up mid-response is not fatal */

    px_err err;
    px_err_clear(&err);
    px_face_detector *det = NULL;
    char model_path[PATH_MAX];
    if (!a->no_anon) {
        if (a->threads <= 0) {
            a->threads = px_cpu_count() / a->o.workers;
            if (a->threads < 1)
                a->threads = 1;
        }
        /* no pass spreading: under load it made no difference to throughput
         * (wrk, 10.4-10.6 against 10.9 req/s), and requests come in parallel */
        px_face_detector_opts dopts = {PX_FACE_MODEL_AUTO, (int)a->threads, a->o.workers, 0};
        if (px_anon_find_model(a->model, NULL, model_path, sizeof model_path, &err) != PX_OK ||
            px_face_detector_create(model_path, &dopts, &det, &err) != PX_OK) {
            fprintf(stderr, "pixpipe serve: %s (or run with --no-anonymize)\n", err.msg);
            return PX_EXIT_SETUP;
        }
    }
    a->o.detector = det;
    px_server *srv = NULL;
    if (px_server_create(&a->o, &srv, &err) != PX_OK) {
        fprintf(stderr, "pixpipe serve: %s\n", err.msg);
        px_face_detector_destroy(det);
        return PX_EXIT_SETUP;
    }
    int v6 = strchr(a->addr, ':') != NULL;
    printf("pixpipe serve: listening on http://%s%s%s:%d/\n", v6 ? "[" : "", a->addr, v6 ? "]" : "",
           px_server_port(srv));
    fflush(stdout);
    if (a->verbose)
        fprintf(stderr, "pixpipe serve: %s, pool %s, %d workers, token %s\n",
                det ? model_path : "no face model", a->o.pool_dir ? a->o.pool_dir : "none", a->o.workers,
                a->o.api_token ? "required for writes" : "not set");

    unsigned char b = 0;
    ssize_t got;
    do
        got = read(g_sigpipe[0], &b, 1);
    while (got < 0 && errno == EINTR);
    int sig = b;
    fprintf(stderr, "pixpipe serve: %s, stopping (grace %ld s)\n",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", a->grace);
    px_server_stop(srv, (int)a->grace * 1000);
    px_server_destroy(srv);
    px_face_detector_destroy(det);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    close(g_sigpipe[0]);
    close(g_sigpipe[1]);
    return PX_EXIT_OK;
}

/* ---- pixpipe serve reviewer add|list|remove ---------------------------------- */

static int reviewer_usage(const char *why)
{
    fprintf(stderr, "pixpipe serve reviewer: %s\n"
                    "usage: pixpipe serve reviewer add NAME [--admin] --pool DIR\n"
                    "       pixpipe serve reviewer list --pool DIR\n"
                    "       pixpipe serve reviewer remove NAME --pool DIR\n", why);
    return PX_EXIT_USAGE;
}

/* Opens POOL/manifest.sqlite read-write; an error names the pool. */
static int open_pool(const char *pool, px_manifest **m)
{
    char db[PATH_MAX];
    px_err err;
    px_err_clear(&err);
    snprintf(db, sizeof db, "%s/%s", pool, PX_MANIFEST_FILE);
    if (access(db, F_OK) != 0) {
        fprintf(stderr, "pixpipe serve reviewer: pool '%s': no %s in it\n", pool,
                PX_MANIFEST_FILE);
        return PX_EXIT_SETUP;
    }
    if (px_manifest_open(db, 0, m, &err) != PX_OK) {
        fprintf(stderr, "pixpipe serve reviewer: %s\n", err.msg);
        return PX_EXIT_SETUP;
    }
    return PX_EXIT_OK;
}

static int reviewer_cmd(int argc, char **argv)
{
    const char *verb = argc > 1 ? argv[1] : NULL, *name = NULL, *pool = NULL;
    int admin = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--pool") && i + 1 < argc)
            pool = argv[++i];
        else if (!strcmp(argv[i], "--admin"))
            admin = 1;
        else if (argv[i][0] != '-' && !name)
            name = argv[i];
        else
            return reviewer_usage("unknown or incomplete argument");
    }
    if (!verb || (strcmp(verb, "add") && strcmp(verb, "list") && strcmp(verb, "remove")))
        return reviewer_usage("expected add, list or remove");
    if (!pool)
        return reviewer_usage("--pool DIR is required");
    if (strcmp(verb, "list") && !name)
        return reviewer_usage("a reviewer NAME is required");
    px_manifest *m = NULL;
    int rc = open_pool(pool, &m);
    if (rc)
        return rc;
    px_err err;
    px_err_clear(&err);
    int st = PX_OK;
    if (!strcmp(verb, "add")) {
        char token[65];
        if ((st = px_manifest_account_add(m, name, admin, token, NULL, &err)) == PX_OK) {
            printf("%s\n", token);
            fprintf(stderr, "pixpipe serve reviewer: added %s (%s); the line above is the login "
                            "token, shown only now\n", name, admin ? "admin" : "reviewer");
        }
    } else if (!strcmp(verb, "remove")) {
        if ((st = px_manifest_account_remove(m, name, &err)) == PX_OK)
            fprintf(stderr, "pixpipe serve reviewer: removed %s\n", name);
    } else {
        px_manifest_account *v = NULL;
        size_t n = 0;
        if ((st = px_manifest_account_list(m, &v, &n, &err)) == PX_OK)
            for (size_t i = 0; i < n; i++)
                printf("%s\t%s\t%s\n", v[i].name, v[i].admin ? "admin" : "reviewer",
                       v[i].created_at);
        free(v);
    }
    px_manifest_close(m);
    if (st != PX_OK) {
        fprintf(stderr, "pixpipe serve reviewer: %s\n", err.msg);
        return st == PX_EINVAL || st == PX_ENOTFOUND ? PX_EXIT_USAGE : PX_EXIT_SETUP;
    }
    return PX_EXIT_OK;
}

int px_cmd_serve(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "reviewer"))
        return reviewer_cmd(argc - 1, argv + 1);
    serve_args a;
    memset(&a, 0, sizeof a);
    int rc = parse_args(argc, argv, &a);
    return rc >= 0 ? rc : run_server(&a);
}
