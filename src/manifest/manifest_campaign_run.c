/*
 * Campaign runs: the campaigns started from the review server's Campaigns
 * page (issue 15), one row each, so the pool itself says what is being made,
 * who asked, and whether it runs, is paused or stopped. A serve restart
 * resumes the rows left "running", and `pixpipe generate --out POOL` without
 * a campaign resumes the latest one, so the browser and the command line
 * share one record.
 *
 *   campaign_runs(id INTEGER PK, name, campaign (the campaign JSON as the
 *       campaign parser reads it), settings (JSON: prompt writer and render
 *       target names, never URLs), extra (JSON: quota raises,
 *       {"add": {"slug/type": n}, "replace": {"slug/type": n}}),
 *       state 'created' | 'running' | 'paused' | 'stopped' | 'done' | 'failed',
 *       message (why it ended or paused), created_by, created_at, updated_at)
 *
 * Also the pool's latest rejections (the page's "last rejection reasons"),
 * read from images and jobs.
 */
#include "manifest_internal.h"
#include "px_manifest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mf_step_campaign_runs(struct px_manifest *s, char **msg);
int mf_step_campaign_runs(struct px_manifest *s, char **msg)
{
    return sqlite3_exec(s->db,
                        "CREATE TABLE IF NOT EXISTS campaign_runs("
                        " id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                        " campaign TEXT NOT NULL, settings TEXT NOT NULL,"
                        " extra TEXT NOT NULL DEFAULT '{}', state TEXT NOT NULL,"
                        " message TEXT NOT NULL DEFAULT '', created_by TEXT NOT NULL DEFAULT '',"
                        " created_at TEXT NOT NULL, updated_at TEXT NOT NULL)",
                        NULL, NULL, msg);
}

static int state_ok(const char *state)
{
    static const char *const k[] = {"created", "running", "paused", "stopped", "done", "failed"};
    for (size_t i = 0; state && i < sizeof k / sizeof k[0]; i++)
        if (!strcmp(state, k[i]))
            return 1;
    return 0;
}

int px_manifest_campaign_run_add(px_manifest *s, const char *name, const char *campaign,
                                 const char *settings, const char *created_by, const char *state,
                                 int64_t *id, px_err *err)
{
    if (!state_ok(state))
        return px_err_set(err, PX_EINVAL, "campaign run: unknown state '%s'", state ? state : "");
    char now[32];
    px_manifest_now_iso(now, sizeof now);
    return mf_run_stmt(s, err, "add campaign run", id, NULL,
                       "INSERT INTO campaign_runs(name, campaign, settings, state, created_by,"
                       " created_at, updated_at) VALUES(?, ?, ?, ?, ?, ?, ?)",
                       "ttttttt", name, campaign, settings, state, created_by, (const char *)now,
                       (const char *)now);
}

/* Sets text columns of run id (sql binds a, b, now, id); PX_ENOTFOUND when
 * there is no such run. */
static int set_columns(px_manifest *s, int64_t id, const char *sql, const char *a, const char *b,
                       px_err *err)
{
    char now[32];
    px_manifest_now_iso(now, sizeof now);
    int changes = 0;
    int r = mf_run_stmt(s, err, "update campaign run", NULL, &changes, sql, "tttI", a, b,
                        (const char *)now, id);
    if (r == PX_OK && changes == 0)
        r = px_err_set(err, PX_ENOTFOUND, "%s: no campaign run %lld", s->path, (long long)id);
    return r;
}

int px_manifest_campaign_run_set_state(px_manifest *s, int64_t id, const char *state,
                                       const char *message, px_err *err)
{
    if (!state_ok(state))
        return px_err_set(err, PX_EINVAL, "campaign run: unknown state '%s'", state ? state : "");
    return set_columns(s, id,
                       "UPDATE campaign_runs SET state = ?1, message = ?2, updated_at = ?3"
                       " WHERE id = ?4",
                       state, message ? message : "", err);
}

int px_manifest_campaign_run_set_extra(px_manifest *s, int64_t id, const char *extra, px_err *err)
{
    /* ?2 is unused: one helper binds both updates */
    return set_columns(s, id,
                       "UPDATE campaign_runs SET extra = ?1, updated_at = ?3 WHERE id = ?4"
                       " AND ?2 = ''",
                       extra, "", err);
}

void px_manifest_campaign_run_clear(px_manifest_campaign_run *r)
{
    if (!r)
        return;
    char **strs[] = {&r->name,    &r->campaign,   &r->settings,   &r->extra,     &r->state,
                     &r->message, &r->created_by, &r->created_at, &r->updated_at};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        free(*strs[i]);
    memset(r, 0, sizeof *r);
}

void px_manifest_campaign_runs_free(px_manifest_campaign_run *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        px_manifest_campaign_run_clear(&v[i]);
    free(v);
}

#define RUN_COLUMNS                                                                                \
    "SELECT id, name, campaign, settings, extra, state, message, created_by, created_at,"          \
    " updated_at FROM campaign_runs "

static int read_run(sqlite3_stmt *st, px_manifest_campaign_run *r)
{
    memset(r, 0, sizeof *r);
    r->id = sqlite3_column_int64(st, 0);
    char **strs[] = {&r->name,    &r->campaign,   &r->settings,   &r->extra,     &r->state,
                     &r->message, &r->created_by, &r->created_at, &r->updated_at};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (!(*strs[i] = mf_col_str(st, (int)i + 1))) {
            px_manifest_campaign_run_clear(r);
            return PX_ENOMEM;
        }
    return PX_OK;
}

/* Runs `sql` (RUN_COLUMNS ...) with an optional int64 parameter and collects the rows. */
static int list_runs(px_manifest *s, const char *sql, int64_t param, int bind,
                     px_manifest_campaign_run **out, size_t *n, px_err *err)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = NULL;
    int r = mf_prep(s, sql, &st, err);
    size_t cap = 0;
    while (r == PX_OK) {
        if (bind)
            sqlite3_bind_int64(st, 1, param);
        bind = 0;
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
            break;
        if (rc != SQLITE_ROW) {
            r = mf_db_err(s, err, "read campaign runs");
            break;
        }
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 8;
            px_manifest_campaign_run *nv = px_realloc(*out, nc * sizeof *nv);
            if (!nv) {
                r = px_err_set(err, PX_ENOMEM, "%s: out of memory", s->path);
                break;
            }
            *out = nv;
            cap = nc;
        }
        if (read_run(st, &(*out)[*n]) != PX_OK) {
            r = px_err_set(err, PX_ENOMEM, "%s: out of memory", s->path);
            break;
        }
        (*n)++;
    }
    if (st)
        sqlite3_finalize(st);
    pthread_mutex_unlock(&s->mu);
    if (r != PX_OK) {
        px_manifest_campaign_runs_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return r;
}

int px_manifest_campaign_run_list(px_manifest *s, px_manifest_campaign_run **out, size_t *n,
                                  px_err *err)
{
    return list_runs(s, RUN_COLUMNS "ORDER BY id DESC LIMIT 200", 0, 0, out, n, err);
}

int px_manifest_campaign_run_get(px_manifest *s, int64_t id, px_manifest_campaign_run *out,
                                 px_err *err)
{
    px_manifest_campaign_run *v = NULL;
    size_t n = 0;
    memset(out, 0, sizeof *out);
    int r = id > 0 ? list_runs(s, RUN_COLUMNS "WHERE id = ?1", id, 1, &v, &n, err)
                   : list_runs(s, RUN_COLUMNS "ORDER BY id DESC LIMIT 1", 0, 0, &v, &n, err);
    if (r != PX_OK)
        return r;
    if (n == 0)
        return id > 0 ? px_err_set(err, PX_ENOTFOUND, "%s: no campaign run %lld", s->path,
                                   (long long)id)
                      : px_err_set(err, PX_ENOTFOUND, "%s: no campaign run yet", s->path);
    *out = v[0];
    memset(&v[0], 0, sizeof v[0]);
    px_manifest_campaign_runs_free(v, n);
    return PX_OK;
}

void px_manifest_rejections_free(px_manifest_rejection *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++) {
        free(v[i].theme_slug);
        free(v[i].type);
        free(v[i].reason);
        free(v[i].at);
    }
    free(v);
}

int px_manifest_recent_rejections(px_manifest *s, int limit, px_manifest_rejection **out, size_t *n,
                                  px_err *err)
{
    *out = NULL;
    *n = 0;
    if (limit <= 0 || limit > 100)
        limit = 10;
    *out = px_calloc((size_t)limit, sizeof **out);
    if (!*out)
        return px_err_set(err, PX_ENOMEM, "%s: out of memory", s->path);
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    /* rejected images, and jobs given up (their last error), newest first */
    int r = mf_prep(s,
                    "SELECT id, theme_slug, type, reason, created_at FROM ("
                    " SELECT id, theme_slug, type, reason, created_at FROM images"
                    "  WHERE status = 'rejected'"
                    " UNION ALL SELECT id, theme_slug, type, error, finished_at FROM jobs"
                    "  WHERE status = 'failed')"
                    " ORDER BY created_at DESC, id DESC LIMIT ?1",
                    &st, err);
    if (r == PX_OK) {
        sqlite3_bind_int(st, 1, limit);
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            px_manifest_rejection *x = &(*out)[*n];
            x->id = sqlite3_column_int64(st, 0);
            x->theme_slug = mf_col_str(st, 1);
            x->type = mf_col_str(st, 2);
            x->reason = mf_col_str(st, 3);
            x->at = mf_col_str(st, 4);
            (*n)++;
            if (!x->theme_slug || !x->type || !x->reason || !x->at) {
                r = px_err_set(err, PX_ENOMEM, "%s: out of memory", s->path);
                break;
            }
        }
        if (r == PX_OK && rc != SQLITE_DONE)
            r = mf_db_err(s, err, "read rejections");
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    if (r != PX_OK) {
        px_manifest_rejections_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return r;
}

int px_manifest_last_campaign(px_manifest *s, char **name, char **json, char **created_at,
                              px_err *err)
{
    *name = *json = *created_at = NULL;
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st = NULL;
    int r = mf_prep(s, "SELECT name, json, created_at FROM campaigns ORDER BY id DESC LIMIT 1", &st,
                    err);
    if (r == PX_OK) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *name = mf_col_str(st, 0);
            *json = mf_col_str(st, 1);
            *created_at = mf_col_str(st, 2);
            if (!*name || !*json || !*created_at)
                r = px_err_set(err, PX_ENOMEM, "%s: out of memory", s->path);
        } else if (rc == SQLITE_DONE) {
            r = px_err_set(err, PX_ENOTFOUND, "%s: no campaign has run on this pool", s->path);
        } else {
            r = mf_db_err(s, err, "read campaigns");
        }
        sqlite3_finalize(st);
    }
    pthread_mutex_unlock(&s->mu);
    if (r != PX_OK) {
        free(*name);
        free(*json);
        free(*created_at);
        *name = *json = *created_at = NULL;
    }
    return r;
}
