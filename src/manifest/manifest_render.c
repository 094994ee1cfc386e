/*
 * What a render server really did for a job: the job row's settings are
 * overwritten with what the server reports it used (seed, size, steps, CFG,
 * sampler, model), the server's own account is kept in jobs.render_info
 * (JSON: what was asked, what the server said), and the error text of
 * earlier failed attempts is cleared, so a job that succeeded on a retry
 * does not read as failed.
 */
#include "manifest_internal.h"
#include "px_manifest.h"

int mf_step_render_info(struct px_manifest *s, char **msg); /* manifest_ext.c */

int mf_step_render_info(struct px_manifest *s, char **msg)
{
    return mf_add_column(s, "jobs", "render_info TEXT", msg);
}

int px_manifest_job_rendered(px_manifest *s, const px_manifest_job *j, const char *render_info,
                             px_err *err)
{
    pthread_mutex_lock(&s->mu);
    sqlite3_stmt *st;
    int r = mf_prep(s,
                    "UPDATE jobs SET seed=?1, width=?2, height=?3, steps=?4, cfg=?5, sampler=?6,"
                    " model=?7, render_info=?8, error=NULL WHERE id=?9",
                    &st, err);
    if (r == PX_OK) {
        sqlite3_bind_int64(st, 1, j->seed);
        sqlite3_bind_int(st, 2, j->width);
        sqlite3_bind_int(st, 3, j->height);
        sqlite3_bind_int(st, 4, j->steps);
        sqlite3_bind_double(st, 5, j->cfg);
        mf_bind_text(st, 6, j->sampler);
        mf_bind_text(st, 7, j->model);
        if (render_info)
            mf_bind_text(st, 8, render_info);
        else
            sqlite3_bind_null(st, 8);
        sqlite3_bind_int64(st, 9, j->id);
        r = mf_step_done(s, st, err, "record what the server used");
    }
    pthread_mutex_unlock(&s->mu);
    return r;
}
