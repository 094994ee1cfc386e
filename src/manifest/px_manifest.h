/*
 * px_manifest: the manifest of one image pool, a single SQLite database in WAL
 * mode (POOL/manifest.sqlite), and its exports. `pixpipe generate` (src/gen)
 * writes it; the review page (src/serve) reads images and stats from it and
 * writes expert verdicts; `pixpipe export` reads it. It sits below both so the
 * server does not link the generator to read a database. ("Pool" here is the
 * image pool; core's px_pool is the thread pool, whose name stays.)
 *
 * Schema (version 1; created by px_manifest_open, see manifest_db.c for the SQL):
 *
 *   meta(key TEXT PRIMARY KEY, value TEXT)            -- schema_version, pool settings
 *   campaigns(id INTEGER PK, name, json, created_at)  -- every campaign run on the pool
 *   quotas(theme_slug, type, theme, quota, campaign_id, PK(theme_slug, type))
 *                                                      -- images wanted per theme and type
 *   prompts(id INTEGER PK, theme_slug, type, text, writer, subtopic, created_at,
 *           source -- added by manifest_prompt_source.c: JSON, what the LLM server reported)
 *   jobs(id INTEGER PK, theme, theme_slug, type, prompt_id, prompt, negative, seed,
 *        width, height, steps, cfg, sampler, backend, model,
 *        status TEXT  -- 'pending' | 'running' | 'done' | 'failed'
 *        attempts, server, error (last failed attempt's message, cleared by a later
 *        success), created_at, started_at, finished_at, render_ms,
 *        rerender_of)                                  -- one render of one prompt
 *   images(id INTEGER PK  -- equal to the job id that produced it
 *          job_id UNIQUE, theme_slug, type, path (relative to the pool), sha256, bytes,
 *          width, height, phash (64-bit perceptual hash, stored as signed int64),
 *          status TEXT  -- 'accepted' | 'flagged' | 'rejected'  (automatic checks)
 *          reason, checks (JSON of the measured values), created_at)
 *   verdicts(id INTEGER PK, image_id REFERENCES images(id), reviewer,
 *            verdict TEXT -- 'approve' | 'reject' | 'skip'
 *            reason, created_at)                       -- expert review; many per image
 *
 * Times are UTC ISO-8601 text ("2026-11-22T03:40:00Z"). An image counts
 * toward its quota when its automatic status is 'accepted' or 'flagged'.
 * The latest verdict of an image (highest verdict id) is its review state.
 *
 * Threads and processes: a px_manifest handle is thread-safe (one mutex inside;
 * calls are short). Several processes may open the same pool at once (a run
 * of `generate` and the review server): WAL lets readers go on while one
 * writer commits, and a busy timeout of 5 s absorbs write contention.
 *
 * Errors: every function returns PX_OK or a negative PX_E* status with a
 * one-line message in err naming the database and what failed. Strings in
 * the structs returned by the list functions are owned by the array; free the
 * array with the matching _free function.
 */
#ifndef PX_MANIFEST_H
#define PX_MANIFEST_H

#include "core/px_core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PX_MANIFEST_FILE "manifest.sqlite" /* name of the manifest inside a pool folder */
#define PX_MANIFEST_SCHEMA_VERSION 1

typedef struct px_manifest px_manifest;

/* Opens (creating when absent) the manifest at db_path, sets WAL mode and
 * creates the schema. readonly != 0 opens an existing database read-only
 * (PX_ENOTFOUND when missing). PX_EUNSUPPORTED when the file's schema version
 * is newer than this code. On failure *out is NULL. */
int px_manifest_open(const char *db_path, int readonly, px_manifest **out, px_err *err);
/* Closes the database (checkpointing WAL when it is the last connection).
 * NULL is a no-op. No other call may be in flight on s. */
void px_manifest_close(px_manifest *s);
const char *px_manifest_path(const px_manifest *s); /* the db_path given to open */

/* ---- Reading: images, verdicts and stats (review page, export) ---------- */

typedef enum {
    PX_VERDICT_FILTER_ANY = 0, /* every image */
    PX_VERDICT_FILTER_NONE,    /* images with no verdict yet */
    PX_VERDICT_FILTER_APPROVE, /* latest verdict is approve */
    PX_VERDICT_FILTER_REJECT,  /* latest verdict is reject */
    PX_VERDICT_FILTER_SKIP,    /* latest verdict is skip */
} px_verdict_filter;

typedef struct px_manifest_filter {
    const char *theme_slug; /* NULL: any theme */
    const char *type;       /* "interiors" | "exteriors" | "items"; NULL: any */
    const char *status;     /* automatic status "accepted" | "flagged" | "rejected"; NULL: any */
    px_verdict_filter verdict;
    int64_t after_id; /* keyset paging: only ids > after_id (0 from the start) */
    int limit;        /* at most this many rows (<= 0: 100; capped at 10000) */
} px_manifest_filter;

typedef struct px_manifest_image {
    int64_t id;       /* image id == job id; file name is <id>.png */
    char *theme;      /* display name, e.g. "Business and office" */
    char *theme_slug; /* e.g. "business-and-office" */
    char *type;       /* "interiors" | "exteriors" | "items" */
    char *path;       /* relative to the pool folder, e.g. "business-and-office/interiors/42.png" */
    char *sha256;     /* 64 lowercase hex digits of the file */
    int64_t bytes;    /* file size */
    int width, height; /* pixels */
    uint64_t phash;    /* 64-bit DCT perceptual hash */
    char *status;      /* "accepted" | "flagged" | "rejected" */
    char *reason;      /* why rejected/flagged ("" when accepted) */
    char *checks;      /* JSON object of measured values (mean, contrast, blur, faces...) */
    char *prompt;      /* the prompt it was rendered from */
    char *negative;    /* negative prompt */
    int64_t seed;      /* render seed */
    char *backend;     /* "a1111" | "openai" | "comfyui" */
    char *model;       /* model name sent to / reported by the server ("" if unknown) */
    char *created_at;  /* UTC ISO-8601 */
    char *verdict;     /* latest expert verdict "approve" | "reject" | "skip", or "" */
    char *verdict_by;  /* its reviewer, or "" */
} px_manifest_image;

/* Lists images matching f (NULL: everything, first 100) in ascending id
 * order. On PX_OK *out is an array of *n images (NULL when 0); free it with
 * px_manifest_images_free. Thread-safe. */
int px_manifest_list_images(px_manifest *s, const px_manifest_filter *f, px_manifest_image **out,
                            size_t *n, px_err *err);
/* One image by id: PX_OK and *out filled (free with px_manifest_images_free(out, 1)
 * after copying, or px_manifest_image_clear), PX_ENOTFOUND when absent. */
int px_manifest_get_image(px_manifest *s, int64_t id, px_manifest_image *out, px_err *err);
void px_manifest_image_clear(px_manifest_image *img); /* frees the strings, zeroes *img */
void px_manifest_images_free(px_manifest_image *imgs, size_t n); /* NULL is a no-op */

typedef struct px_manifest_verdict {
    int64_t id;
    int64_t image_id;
    char *reviewer;
    char *verdict;    /* "approve" | "reject" | "skip" */
    char *reason;     /* free text, may be "" */
    char *created_at; /* UTC ISO-8601 */
} px_manifest_verdict;

/* Records an expert verdict. verdict must be "approve", "reject" or "skip"
 * (else PX_EINVAL); reviewer non-empty (<= 128 bytes), reason may be NULL
 * (<= 2000 bytes). PX_ENOTFOUND when the image does not exist. *id (may be
 * NULL) receives the new verdict id. Thread-safe. */
int px_manifest_add_verdict(px_manifest *s, int64_t image_id, const char *reviewer,
                            const char *verdict, const char *reason, int64_t *id, px_err *err);
/* Verdicts of one image (image_id > 0) or of all images (image_id == 0), in
 * id order. Free with px_manifest_verdicts_free. */
int px_manifest_list_verdicts(px_manifest *s, int64_t image_id, px_manifest_verdict **out,
                              size_t *n, px_err *err);
void px_manifest_verdicts_free(px_manifest_verdict *v, size_t n);

/* Per theme and type: the quota against what exists. */
typedef struct px_manifest_stat {
    char theme[128];
    char theme_slug[96];
    char type[16];
    int quota;           /* images wanted (0 when no quota row exists) */
    int accepted;        /* automatic checks passed */
    int flagged;         /* passed but flagged (counts toward quota) */
    int rejected;        /* automatic checks failed (in rejected/) */
    int jobs_pending;    /* jobs pending or running */
    int jobs_failed;     /* jobs given up after their attempts */
    int approved;        /* latest verdict approve */
    int expert_rejected; /* latest verdict reject */
    int skipped;         /* latest verdict skip */
    int unreviewed;      /* accepted or flagged images with no verdict */
} px_manifest_stat;

/* One row per (theme_slug, type) that has a quota or any job, sorted by
 * theme_slug then type. Free *out with free(). Thread-safe. */
int px_manifest_stats(px_manifest *s, px_manifest_stat **out, size_t *n, px_err *err);

/* ---- Writing: used by the generate pipeline ----------------------------- */

/* Stores a campaign's JSON text (for the record), returns its id. */
int px_manifest_add_campaign(px_manifest *s, const char *name, const char *json, int64_t *id,
                             px_err *err);
/* Sets the quota of (theme_slug, type) (insert or replace). */
int px_manifest_set_quota(px_manifest *s, int64_t campaign_id, const char *theme,
                          const char *theme_slug, const char *type, int quota, px_err *err);
/* Counts for one theme/type: images accepted+flagged (*good), jobs pending or
 * running (*open), jobs failed (*failed), images rejected (*rejected). Any
 * out pointer may be NULL. */
int px_manifest_count(px_manifest *s, const char *theme_slug, const char *type, int *good,
                      int *open, int *failed, int *rejected, px_err *err);

/* Every prompt text of the pool (for near-duplicate filtering), in id order.
 * *texts is an array of *n malloc'd strings; free with px_manifest_strings_free. */
int px_manifest_all_prompts(px_manifest *s, char ***texts, size_t *n, px_err *err);
void px_manifest_strings_free(char **v, size_t n);

/* A job as created and as claimed by a render worker. */
typedef struct px_manifest_job {
    int64_t id;
    char *theme, *theme_slug, *type;
    char *prompt, *negative;
    char *scene; /* add_job only: the writer's scene text stored in prompts (NULL: prompt) */
    int64_t seed;
    int width, height, steps;
    double cfg;
    char *sampler, *backend, *model;
    char *status; /* "pending" | "running" | "done" | "failed" */
    int attempts;
    char *server, *error;
    int64_t rerender_of; /* 0 unless made by --rerender */
} px_manifest_job;
void px_manifest_job_clear(px_manifest_job *j);
void px_manifest_jobs_free(px_manifest_job *j, size_t n);

/* Creates a prompt row and a pending job for it in one transaction; fields
 * read from j: theme, theme_slug, type, prompt, negative, seed (if < 0 the
 * job id is used, so seeds are unique and recorded), width, height, steps,
 * cfg, sampler, backend, model, rerender_of. writer/subtopic describe where
 * the prompt came from (may be NULL). *job_id and *seed receive what was
 * stored (either may be NULL). */
int px_manifest_add_job(px_manifest *s, const px_manifest_job *j, const char *writer,
                        const char *subtopic, int64_t *job_id, int64_t *seed, px_err *err);
/* Records where job_id's prompt came from (prompts.source: for an LLM the
 * JSON its server reported, px_gen_llm_describe). PX_OK also when there is
 * no such job (nothing changes). */
int px_manifest_prompt_source(px_manifest *s, int64_t job_id, const char *source, px_err *err);
/* Jobs with the given status ("pending", "running", ...; NULL: pending and
 * running) in id order, at most limit (<= 0: all). Free with px_manifest_jobs_free. */
int px_manifest_list_jobs(px_manifest *s, const char *status, int limit, px_manifest_job **out,
                          size_t *n, px_err *err);
int px_manifest_get_job(px_manifest *s, int64_t id, px_manifest_job *out,
                        px_err *err); /* PX_ENOTFOUND */
/* Marks a job running on server (attempts += 1, started_at = now). */
int px_manifest_job_start(px_manifest *s, int64_t id, const char *server, px_err *err);
/* Records a failed attempt: error text kept; status back to "pending", or
 * "failed" when give_up != 0. */
int px_manifest_job_fail(px_manifest *s, int64_t id, const char *error, int give_up, px_err *err);
/* Records what a render server reported it used for job j (seed, width,
 * height, steps, cfg, sampler, model read from j) with its account
 * (render_info: JSON text, may be NULL) in jobs.render_info, and clears the
 * error text of earlier attempts (manifest_render.c). */
int px_manifest_job_rendered(px_manifest *s, const px_manifest_job *j, const char *render_info,
                             px_err *err);
/* Highest job id so far (0 for an empty pool). */
int px_manifest_max_job_id(px_manifest *s, int64_t *id, px_err *err);
/* Resets every "running" job to "pending" (after a crash). *n may be NULL. */
int px_manifest_reset_running(px_manifest *s, int *n, px_err *err);

/* What the pipeline records for an image, with the job marked done in the
 * same transaction (id = job id). */
typedef struct px_manifest_image_rec {
    int64_t job_id;
    const char *path;   /* relative to the pool */
    const char *sha256; /* 64 hex */
    int64_t bytes;
    int width, height;
    uint64_t phash;
    const char *status; /* "accepted" | "flagged" | "rejected" */
    const char *reason; /* NULL or "" when accepted */
    const char *checks; /* JSON object text */
    const char *server; /* who rendered it */
    double render_ms;
} px_manifest_image_rec;
/* Inserts (or replaces, for an adopted orphan) the image row and marks its
 * job done, atomically. */
int px_manifest_add_image(px_manifest *s, const px_manifest_image_rec *r, px_err *err);
/* Every stored phash with its image id, for in-pool duplicate checks (only
 * accepted and flagged images). Arrays malloc'd; caller frees both. */
int px_manifest_all_phashes(px_manifest *s, int64_t **ids, uint64_t **hashes, size_t *n,
                            px_err *err);

/* meta table: small key/value settings (e.g. "schema_version"). get returns
 * PX_ENOTFOUND when absent; the value is copied into buf (truncated to cap). */
int px_manifest_meta_get(px_manifest *s, const char *key, char *buf, size_t cap, px_err *err);
int px_manifest_meta_set(px_manifest *s, const char *key, const char *value, px_err *err);

/* Current UTC time as ISO-8601 into buf (>= 21 bytes). */
void px_manifest_now_iso(char *buf, size_t cap);

/* ---- Accounts (manifest_accounts.c) --------------------------------------
 * accounts(id, name UNIQUE, role 'reviewer'|'admin', token_sha256 UNIQUE, created_at)
 * sessions(sid_sha256 PK, account_id, expires (Unix s), created_at)
 * Only SHA-256 hex digests of login tokens and session ids are stored. */
typedef struct px_manifest_account {
    int64_t id;
    char name[65]; /* 1..64 of letters, digits, space, . _ - */
    int admin;     /* role admin (else reviewer) */
    char created_at[32];
} px_manifest_account;
/* PX_OK when name is a valid reviewer name, else PX_EINVAL naming the fault. */
int px_manifest_account_name_ok(const char *name, px_err *err);
/* Creates an account with a new login token (32 random bytes, 64 hex digits
 * into token); PX_EINVAL for a bad or existing name. *id may be NULL. */
int px_manifest_account_add(px_manifest *s, const char *name, int admin, char token[65],
                            int64_t *id, px_err *err);
/* Removes the account, its sessions and its leases (its verdicts stay).
 * PX_ENOTFOUND when there is none of that name. */
int px_manifest_account_remove(px_manifest *s, const char *name, px_err *err);
/* Every account, by name; free *out with free(). */
int px_manifest_account_list(px_manifest *s, px_manifest_account **out, size_t *n, px_err *err);
int px_manifest_account_count(px_manifest *s, int *n, px_err *err);
/* The account whose login token this is: PX_ENOTFOUND (err untouched) when none. */
int px_manifest_account_by_token(px_manifest *s, const char *token, px_manifest_account *out,
                                 px_err *err);
/* Sessions: sid is the cookie's random value (stored hashed). get finds the
 * account of an unexpired session (PX_ENOTFOUND, err untouched, otherwise). */
int px_manifest_session_add(px_manifest *s, const char *sid, int64_t account_id, double expires,
                            px_err *err);
int px_manifest_session_get(px_manifest *s, const char *sid, double now, px_manifest_account *out,
                            px_err *err);
int px_manifest_session_remove(px_manifest *s, const char *sid, px_err *err);
/* SHA-256 of text as 64 hex digits (PX_OK or PX_ENOMEM); nbytes (<= 64)
 * random bytes from the system as hex into out (2 * nbytes + 1 bytes). */
int px_manifest_sha256_hex(const char *text, char out[65]);
int px_manifest_random_hex(char *out, size_t nbytes, px_err *err);

/* ---- Review: leases, double review, undo, QC (manifest_review.c) ----------
 * leases(image_id PK, account_id, claimed, expires)   -- Unix seconds
 * verdicts gain account_id (NULL: anonymous or legacy token), at (Unix s),
 * seconds (time spent, NULL when not measured); images gain review_votes
 * (different reviewers with a verdict, kept by triggers). Account 0 below
 * means "no account" (anonymous local use or the legacy --token). */

/* The campaign file's "review" object: {"votes": 1..5, "reject_reasons": [...]}. */
typedef struct px_manifest_review_cfg {
    int votes;       /* verdicts of different reviewers an image needs (default 1) */
    char **reasons;  /* reject reasons (defaults when the campaign has none) */
    size_t n_reasons;
} px_manifest_review_cfg;
/* From the latest campaign stored in the pool (defaults when none); PX_EINVAL
 * when its "review" is malformed. Free with px_manifest_review_cfg_free. */
int px_manifest_review_cfg_get(px_manifest *s, px_manifest_review_cfg *c, px_err *err);
/* The same from campaign JSON text (NULL: defaults). */
int px_manifest_review_cfg_parse(const char *campaign_json, px_manifest_review_cfg *c,
                                 px_err *err);
void px_manifest_review_cfg_free(px_manifest_review_cfg *c);

typedef struct px_manifest_claim_req {
    int64_t account_id;     /* who claims (0: no account) */
    int votes;              /* review.votes */
    const char *theme_slug; /* NULL: any */
    const char *type;       /* NULL: any */
    int n;                  /* 1..100 images wanted */
    int lease_s;            /* lease length */
    double now;             /* Unix seconds */
} px_manifest_claim_req;
typedef struct px_manifest_lease {
    int64_t image_id;
    double expires; /* Unix seconds */
} px_manifest_lease;
/* Leases up to r->n images to the account in one transaction: first its own
 * unexpired leases under the filter (renewed), then accepted/flagged images
 * that have fewer than r->votes reviewers, none of them this account, and no
 * unexpired lease. out has room for r->n; *remaining (may be NULL) the images
 * under the filter still needing this account's vote, not held by others. */
int px_manifest_claim(px_manifest *s, const px_manifest_claim_req *r, px_manifest_lease *out,
                      size_t *n_out, int64_t *remaining, px_err *err);

typedef struct px_manifest_vote {
    int64_t image_id;
    int64_t account_id;  /* 0: no account */
    const char *reviewer; /* the account's name, or the typed name without one */
    const char *verdict;  /* approve | reject | skip */
    const char *reason;   /* may be NULL */
    double now;
} px_manifest_vote_req;
/* Stores a verdict and releases the image's lease. PX_EBUSY when another
 * account holds an unexpired lease on it, PX_ENOTFOUND for an unknown image,
 * PX_EINVAL for a bad field. */
int px_manifest_vote(px_manifest *s, const px_manifest_vote_req *v, int64_t *verdict_id, px_err *err);
/* Deletes the account's latest verdict if it is at most window_s old and
 * leases the image back to it for lease_s (unless another holds it now).
 * PX_ENOTFOUND when there is nothing to undo. */
int px_manifest_undo(px_manifest *s, int64_t account_id, double now, int window_s, int lease_s,
                     int64_t *image_id, int64_t *verdict_id, px_err *err);

/* Review state of every image with a verdict, in image id order. */
typedef struct px_manifest_tally {
    int64_t image_id;
    int voters;     /* different reviewers */
    int approvals;  /* reviewers whose latest verdict is approve */
    int rejects;    /* ... reject */
    int decided;    /* 1 approved, -1 rejected, 0 open (needs votes or an admin) */
    int disputed;   /* votes >= 2: approvals and rejects, not settled by an admin */
    int settled;    /* decided by an admin's verdict after the others */
} px_manifest_tally;
/* votes <= 1: the latest verdict decides (as before double review). votes
 * >= 2: approved when approvals >= votes and no reviewer's latest verdict
 * is reject; an admin's verdict that comes last settles a dispute. Free
 * *out with free(). */
int px_manifest_review_tally(px_manifest *s, int votes, px_manifest_tally **out, size_t *n,
                             px_err *err);

/* Quality control per reviewer name. */
typedef struct px_manifest_qc {
    char name[132];
    int judged;            /* images with a verdict of theirs */
    int approved;          /* ... whose latest is approve */
    double approval_rate;  /* approved / judged */
    double median_seconds; /* per verdict; < 0 when none measured */
    double agreement;      /* share of other reviewers' approve/reject on the same images
                              that match theirs; < 0 when there is nothing to compare */
} px_manifest_qc;
int px_manifest_review_qc(px_manifest *s, px_manifest_qc **out, size_t *n, px_err *err);

/* Checkpoints off the request path (the review server): wal_autocheckpoint
 * for this handle (0: never checkpoint on commit), and one PASSIVE
 * checkpoint, meant for a second handle on a background thread, so a commit
 * never waits for the database file's fsync. */
int px_manifest_wal_autocheckpoint(px_manifest *s, int pages, px_err *err);
int px_manifest_checkpoint(px_manifest *s, px_err *err);

/* ---- Campaign runs (manifest_campaign_run.c) ----------------------------- */

/* A campaign started from the review server's Campaigns page (or resumed
 * from the command line): its campaign JSON, its settings (JSON: writer and
 * render target names, never URLs), quota raises (extra, JSON) and state
 * ("created" | "running" | "paused" | "stopped" | "done" | "failed"). */
typedef struct px_manifest_campaign_run {
    int64_t id;
    char *name, *campaign, *settings, *extra, *state, *message, *created_by;
    char *created_at, *updated_at; /* UTC ISO-8601 */
} px_manifest_campaign_run;
/* Adds a run; PX_EINVAL for an unknown state. *id (may be NULL) gets its id. */
int px_manifest_campaign_run_add(px_manifest *s, const char *name, const char *campaign,
                                 const char *settings, const char *created_by, const char *state,
                                 int64_t *id, px_err *err);
/* Run id, or the latest one when id is 0; PX_ENOTFOUND when absent. Free
 * with px_manifest_campaign_run_clear. */
int px_manifest_campaign_run_get(px_manifest *s, int64_t id, px_manifest_campaign_run *out,
                                 px_err *err);
/* The latest 200 runs, newest first; free with px_manifest_campaign_runs_free. */
int px_manifest_campaign_run_list(px_manifest *s, px_manifest_campaign_run **out, size_t *n,
                                  px_err *err);
int px_manifest_campaign_run_set_state(px_manifest *s, int64_t id, const char *state,
                                       const char *message, px_err *err);
int px_manifest_campaign_run_set_extra(px_manifest *s, int64_t id, const char *extra,
                                       px_err *err);
void px_manifest_campaign_run_clear(px_manifest_campaign_run *r);
void px_manifest_campaign_runs_free(px_manifest_campaign_run *v, size_t n);

/* The pool's latest rejected images and failed jobs, newest first (at most
 * limit, 1..100). Free with px_manifest_rejections_free. */
typedef struct px_manifest_rejection {
    int64_t id; /* image or job id */
    char *theme_slug, *type, *reason, *at;
} px_manifest_rejection;
int px_manifest_recent_rejections(px_manifest *s, int limit, px_manifest_rejection **out,
                                  size_t *n, px_err *err);
void px_manifest_rejections_free(px_manifest_rejection *v, size_t n);
/* The campaign the pool's latest run recorded (px_manifest_add_campaign:
 * `pixpipe generate` or the Campaigns page), its name, JSON and time, each
 * malloc'd. PX_ENOTFOUND when none ran yet. */
int px_manifest_last_campaign(px_manifest *s, char **name, char **json, char **created_at,
                              px_err *err);

/* ---- Export ------------------------------------------------------------ */

/* Writes the pool manifest as CSV (jsonl == 0) or JSON Lines to f (a FILE*),
 * one row per image with its job's prompt, seed and render settings, the
 * automatic checks and the latest expert verdict. PX_EIO when a write fails,
 * PX_ENOMEM. */
int px_manifest_export(px_manifest *s, void *file, int jsonl, px_err *err);

/* Export of the approved images (`pixpipe export --approved DIR`):
 * Copies every image whose latest expert verdict is "approve" from the pool
 * at pool_dir into out_dir in a stock layout, out_dir/<theme_slug>/<type>/<id>.<ext>,
 * and writes out_dir/metadata.csv (RFC 4180, UTF-8, one row per image:
 * file,id,theme,theme_slug,type,width,height,title,prompt,sha256,bytes,
 * reviewer,approved_at,backend,model,seed). Each file and the CSV are written
 * atomically; files already exported with the same bytes are rewritten
 * harmlessly, so it can be re-run as more images get approved. *n_out (may be
 * NULL) receives the number of images exported. PX_ENOTFOUND for a missing
 * pool or image file, PX_ECORRUPT for a manifest row whose theme slug or type
 * is not a safe folder name, PX_EIO for a write failure (err names the path);
 * files copied before a failure stay, metadata.csv is only written on success.
 * Not thread-safe with respect to other exports into the same out_dir. */
int px_manifest_export_approved(const char *pool_dir, const char *out_dir, size_t *n_out,
                                px_err *err);

#ifdef __cplusplus
}
#endif
#endif
