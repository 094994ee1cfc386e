/*
 * Schema growth after the original tables (see manifest_internal.h): each
 * feature adds one step to k_steps, in the order they landed. Steps are
 * idempotent and run at every read-write open.
 */
#include "manifest_internal.h"

#include <stdio.h>
#include <string.h>

typedef int (*mf_step_fn)(struct px_manifest *s, char **msg);

int mf_step_campaign_runs(struct px_manifest *s, char **msg); /* manifest_campaign_run.c */
int mf_step_accounts(struct px_manifest *s, char **msg); /* manifest_accounts.c */
int mf_step_review(struct px_manifest *s, char **msg);   /* manifest_review.c */
int mf_step_render_info(struct px_manifest *s, char **msg); /* manifest_render.c */
int mf_step_prompt_source(struct px_manifest *s, char **msg); /* manifest_prompt_source.c */

/* One line per feature, appended as features land. */
static const mf_step_fn k_steps[] = {
    NULL,
    mf_step_accounts,
    mf_step_review,
    mf_step_campaign_runs,
    mf_step_render_info,
    mf_step_prompt_source,
};

int mf_extend(struct px_manifest *s, char **msg)
{
    for (size_t i = 0; i < sizeof k_steps / sizeof k_steps[0]; i++) {
        if (!k_steps[i])
            continue;
        int rc = k_steps[i](s, msg);
        if (rc != SQLITE_OK)
            return rc;
    }
    return SQLITE_OK;
}

int mf_add_column(struct px_manifest *s, const char *table, const char *decl, char **msg)
{
    size_t name_len = strcspn(decl, " \t");
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT 1 FROM pragma_table_info('%s') WHERE name = ?", table);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) {
        *msg = sqlite3_mprintf("%s", sqlite3_errmsg(s->db));
        return rc;
    }
    sqlite3_bind_text(st, 1, decl, (int)name_len, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return SQLITE_OK; /* already there */
    if (rc != SQLITE_DONE) {
        *msg = sqlite3_mprintf("%s", sqlite3_errmsg(s->db));
        return rc;
    }
    snprintf(sql, sizeof sql, "ALTER TABLE %s ADD COLUMN %s", table, decl);
    return sqlite3_exec(s->db, sql, NULL, NULL, msg);
}
