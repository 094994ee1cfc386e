/*
 * What the files of src/serve share and nobody else sees: the server
 * structure, the per-request context, the metrics block and the reply
 * helpers. server.c owns the daemon and the job machinery; metrics.c the
 * counters; route_anon.c and route_pool.c one group of endpoints each.
 */
#ifndef PX_SERVE_INTERNAL_H
#define PX_SERVE_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>

#include "px_serve.h"

/* Routes, as labelled in the metrics. */
typedef enum {
    PX_R_HEALTHZ = 0,
    PX_R_METRICS,
    PX_R_ANONYMIZE,
    PX_R_POOL_STATS,
    PX_R_POOL_IMAGES,
    PX_R_POOL_IMAGE,
    PX_R_POOL_VERDICT,
    PX_R_REVIEW,
    PX_R_CSRF,
    PX_R_LOGIN,         /* POST /v1/login (auth.c) */
    PX_R_LOGOUT,        /* POST /v1/logout */
    PX_R_ME,            /* GET /v1/me */
    PX_R_CLAIM,         /* POST /v1/review/claim (route_review.c) */
    PX_R_UNDO,          /* POST /v1/review/undo */
    PX_R_REASONS,       /* GET /v1/review/reasons */
    PX_R_ADMIN_QUEUE,   /* GET /v1/review/admin-queue */
    PX_R_QC,            /* GET /v1/review/qc */
    PX_R_POOL_THUMB,    /* GET /v1/pool/images/{id}/thumb */
    PX_R_POOL_SIMILAR,  /* GET /v1/pool/images/{id}/similar */
    PX_R_CAMPAIGNS,     /* /v1/campaigns... (route_campaign.c) */
    PX_R_OTHER,
    PX_R_COUNT
} px_route;
const char *px_route_name(px_route r);

/* Status codes with their own counter; anything else counts as "other". 0 is
 * a request that ended without a response (client went away, read timeout). */
#define PX_METRIC_CODES 20
#define PX_METRIC_BUCKETS 14
typedef struct px_metrics {
    atomic_uint_fast64_t requests[PX_R_COUNT][PX_METRIC_CODES + 1];
    atomic_uint_fast64_t latency[PX_R_COUNT][PX_METRIC_BUCKETS + 1]; /* per bucket, +Inf last */
    atomic_uint_fast64_t latency_us_sum[PX_R_COUNT];
    atomic_uint_fast64_t images;       /* images anonymized */
    atomic_uint_fast64_t faces;        /* faces concealed */
    atomic_uint_fast64_t rejected_busy; /* 503 for the concurrency limit or a full queue */
    atomic_uint_fast64_t timeouts;     /* 504 from the watchdog */
    atomic_uint_fast64_t verdicts;     /* verdicts stored */
    atomic_uint_fast64_t header_timeouts; /* connections shut for slow headers */
    atomic_uint_fast64_t stage_us[4];  /* decode, detect, conceal, encode: time summed */
} px_metrics;
void px_metrics_observe(px_metrics *m, px_route r, int code, double ms);

/* One anonymize request on its way through the queue. Two references: the
 * request (dropped when MHD reports it completed) and the worker (dropped
 * after processing, or when the job is dropped unprocessed at shutdown).
 * Everything but refs is guarded by px_server.mu once the job is queued. */
typedef enum { JOB_QUEUED = 0, JOB_RUNNING, JOB_DONE } job_state;
typedef struct anon_job {
    atomic_int refs;
    struct MHD_Connection *conn;
    uint8_t *body;
    size_t len;
    px_anon_opts opts;
    int want_json;
    job_state state;
    int answered;   /* connection resumed with an outcome (exactly once) */
    int outcome;    /* HTTP status to send: 200, an error code, 504, 503 */
    double t_queued, deadline;
    int status;     /* px_anon_process status */
    px_err err;
    px_anon_result res;
    struct anon_job *prev, *next; /* in px_server.pending while not answered */
} anon_job;
void px_job_release(anon_job *job);
typedef struct px_pool_ctx px_pool_ctx; /* route_pool.c: the opened manifest */
typedef struct px_campaign_mgr px_campaign_mgr; /* route_campaign.c: the campaign worker */

/* One Host name the server answers to; port 0 matches any port. */
typedef struct px_host_entry {
    char name[256]; /* lower case; an IPv6 address keeps its brackets */
    int port;
} px_host_entry;

struct px_server {
    px_serve_opts o;
    char *token;
    char csrf[65]; /* hex of 32 random bytes, made at create */
    px_host_entry *hosts; /* written before ready is set, read-only after */
    size_t n_hosts;
    atomic_int ready; /* hosts complete (the port is known): requests before it get 503 */

    /* connections waiting for headers, for the header deadline (guard.c);
     * conn_mu guards the list and sweep_stop */
    pthread_mutex_t conn_mu;
    pthread_cond_t sweep_cv; /* monotonic clock */
    struct px_conn *conns;
    pthread_t sweeper;
    int sweeper_started, sweep_stop;
    char addr[64];
    int port;
    struct MHD_Daemon *daemon;
    MHD_socket quiesced_fd;

    /* anonymize jobs: a bounded queue, the workers, and the watchdog that
     * answers jobs past their deadline; mu guards the job list and job states */
    px_queue *jobs;
    pthread_t *workers;
    int n_workers;
    pthread_t watchdog;
    int watchdog_started;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* monotonic clock */
    anon_job *pending; /* jobs not answered yet, for the watchdog */
    atomic_int stopping; /* new work refused with 503 (read without mu) */
    int stop_threads;

    atomic_int inflight;
    atomic_int running; /* jobs a worker is processing */
    int stopped;

    px_pool_ctx *pool;
    px_campaign_mgr *campaigns;
    px_metrics metrics;
};

/* Per-request state (MHD's con_cls). */
typedef struct px_req {
    px_server *srv;
    px_route route;
    int code; /* status sent, 0 until a response is queued */
    double t0;
    int counted; /* holds one unit of srv->inflight */
    px_buf body;
    int too_large;
    int64_t id; /* pool image id from the URL */
    anon_job *job;
    /* who is asking (auth.c), worked out on first use */
    int auth_done, auth_kind;
    int role;           /* px_role */
    int64_t account_id; /* 0: no account (anonymous, legacy --token) */
    char account[65];   /* the account's name, "" without one */
    char method[8];     /* "GET", "POST"... (for routes that take several) */
    void *campaign;     /* route_campaign.c: a preview resumed with its answer */
} px_req;

/* Reply helpers: each queues a response (taking ownership of body when take
 * is set), records the code on r and returns what the access handler returns. */
enum MHD_Result px_reply(struct MHD_Connection *c, px_req *r, int code, const char *ctype,
                         void *body, size_t len, int take);
enum MHD_Result px_reply_error(struct MHD_Connection *c, px_req *r, int code, const char *fmt,
                               ...) __attribute__((format(printf, 4, 5)));
/* Queues a prepared response with the standard headers added; destroys it. */
enum MHD_Result px_reply_response(struct MHD_Connection *c, px_req *r, int code,
                                  struct MHD_Response *resp, const char *ctype);
/* JSON (jansson) reply; the value is consumed. */
struct json_t;
enum MHD_Result px_reply_json(struct MHD_Connection *c, px_req *r, int code, struct json_t *v);
/* Maps a PX_E* status to an HTTP status code. */
int px_http_status_for(int px_status);

/* route_anon.c: query -> options (400 on a bad parameter, message in err). */
int px_anon_query_opts(struct MHD_Connection *c, const px_anon_opts *defaults, px_anon_opts *o,
                       int *want_json, px_err *err);
/* Runs one job on a worker thread. */
void px_anon_job_run(px_server *srv, anon_job *job);
/* Builds the reply for a finished job on the I/O thread. */
enum MHD_Result px_anon_job_reply(struct MHD_Connection *c, px_req *r, anon_job *job);
/* Submits the body in r as a job (or answers at once when it cannot). */
enum MHD_Result px_anon_submit(struct MHD_Connection *c, px_req *r);

/* guard.c: the safe-by-default checks. px_guard_init (before the daemon
 * starts) makes the CSRF token and copies opts.allowed_hosts; once the port
 * is known px_guard_add_defaults adds the listen address, localhost and
 * 127.0.0.1. Each check returns 0 to go on, or 1 when it has answered the
 * request (the handler returns *ret). */
int px_guard_init(px_server *srv, px_err *err);
int px_guard_add_defaults(px_server *srv, px_err *err);
/* URL and header sizes (414, 431) and the Host allow-list (421). */
int px_guard_request(struct MHD_Connection *c, px_req *r, const char *url, enum MHD_Result *ret);
/* Sec-Fetch-Site and Origin of a request that is not GET/HEAD (403). */
int px_guard_origin(struct MHD_Connection *c, px_req *r, enum MHD_Result *ret);
/* X-CSRF-Token of a write without a bearer token (403). */
int px_guard_csrf(struct MHD_Connection *c, px_req *r, enum MHD_Result *ret);
/* GET /v1/csrf */
enum MHD_Result px_guard_csrf_reply(struct MHD_Connection *c, px_req *r);
/* Header deadline: MHD's connection notifier (tracks each connection), the
 * access handler's "headers complete" (busy 1) and "request over" (busy 0),
 * and the thread that shuts down connections past the deadline. */
typedef struct px_conn px_conn;
void px_guard_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                     enum MHD_ConnectionNotificationCode toe);
void px_guard_conn_busy(px_server *srv, struct MHD_Connection *c, int busy);
void *px_guard_sweeper(void *arg);

/* auth.c: who is asking. px_auth_role gives the role of the request's
 * credentials (PX_ROLE_NONE: none or wrong ones) and *account_id (may be
 * NULL) its account, 0 for the legacy --token and the local anonymous admin. */
typedef enum px_role { PX_ROLE_NONE = 0, PX_ROLE_REVIEWER, PX_ROLE_ADMIN } px_role;
px_role px_auth_role(struct MHD_Connection *c, px_req *r, int64_t *account_id);
/* Whether a write with these credentials must carry the CSRF token (a
 * browser's: session cookie or anonymous; not a bearer token). */
int px_auth_uses_csrf(struct MHD_Connection *c, px_req *r);
/* Answers 401 (no or wrong credentials, with WWW-Authenticate) or 403 (role
 * below need) and returns 1 (the handler returns *ret); 0 to go on. */
int px_auth_require(struct MHD_Connection *c, px_req *r, px_role need, int64_t *account_id,
                    enum MHD_Result *ret);
/* A 401 JSON answer with WWW-Authenticate: Bearer. */
enum MHD_Result px_auth_unauthorized(struct MHD_Connection *c, px_req *r, const char *msg);
/* Wall-clock time in Unix seconds (leases, sessions). */
double px_auth_now(void);
/* Whether the pool has any account (then nothing is anonymous). */
int px_auth_accounts_exist(px_server *srv);
#define PX_SESSION_COOKIE "px_session"
/* POST /v1/login, POST /v1/logout, GET /v1/me */
enum MHD_Result px_auth_handle(struct MHD_Connection *c, px_req *r);

/* route_review.c: the routes of /v1/review/... and the image's thumb and
 * similar; px_review_route maps a URL (0, or 404) and sets *want (method);
 * px_review_gate checks role and CSRF token on the headers (1: answered). */
int px_review_route(px_req *r, const char *url, const char **want);
int px_review_gate(struct MHD_Connection *c, px_req *r, int write, enum MHD_Result *ret);
enum MHD_Result px_review_handle(struct MHD_Connection *c, px_req *r);
/* GET /v1/review/qc's JSON (also read by /metrics); NULL on error (err set). */
struct json_t *px_review_qc_json(px_server *srv, px_err *err);
/* route_review_thumb.c: GET /v1/pool/images/{id}/thumb and /similar */
enum MHD_Result px_review_thumb(struct MHD_Connection *c, px_req *r);
enum MHD_Result px_review_similar(struct MHD_Connection *c, px_req *r);

/* route_campaign.c: the Campaigns API (admin) and its worker thread.
 * init after the pool is open (starts a run left running), shutdown before
 * the daemon stops (the run stays "running" for the next start), free at
 * destroy. handle answers /v1/campaigns...; resumed answers a preview whose
 * connection its thread resumed; req_free drops one never answered. */
int px_campaign_init(px_server *srv, px_err *err);
void px_campaign_shutdown(px_server *srv);
void px_campaign_free(px_server *srv);
enum MHD_Result px_campaign_handle(struct MHD_Connection *c, px_req *r, const char *url);
enum MHD_Result px_campaign_resumed(struct MHD_Connection *c, px_req *r);
void px_campaign_req_free(px_req *r);

/* route_pool.c */
int px_pool_open(px_server *srv, const char *pool_dir, px_err *err);
void px_pool_close(px_server *srv);
int px_pool_available(const px_server *srv);
struct px_manifest;
struct px_manifest *px_pool_store(px_server *srv); /* NULL without a pool */
struct px_manifest_image;
struct json_t *px_pool_image_json(const struct px_manifest_image *m); /* with "file" */
const char *px_pool_dir(px_server *srv);
/* Whether rel (a manifest path) resolves to a file under the pool; its real
 * path into real (PATH_MAX bytes). */
int px_pool_file(px_server *srv, const char *rel, char *real);
/* Answers with the file at path (200, or 304 when If-None-Match is etag),
 * ETag and Cache-Control: private, max-age=86400; 404 JSON when unreadable. */
enum MHD_Result px_pool_send_file(struct MHD_Connection *c, px_req *r, const char *path,
                                  const char *etag, const char *ctype);
/* review.votes and the reject reasons (a new JSON array) of the pool's
 * latest campaign, cached for a few seconds; either out may be NULL. */
int px_pool_review_cfg(px_server *srv, int *votes, struct json_t **reasons, px_err *err);
enum MHD_Result px_pool_handle(struct MHD_Connection *c, px_req *r);

#endif
