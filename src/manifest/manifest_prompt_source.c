/*
 * Where each prompt came from, beyond the writer's name: for an LLM, what
 * its server reported when it wrote the prompt (dialect, version, the model
 * it used; px_gen_llm_describe), kept in prompts.source as JSON, so a pool
 * filled over several runs against different servers says which wrote what.
 */
#include "manifest_internal.h"
#include "px_manifest.h"

int mf_step_prompt_source(struct px_manifest *s, char **msg); /* manifest_ext.c */

int mf_step_prompt_source(struct px_manifest *s, char **msg)
{
    return mf_add_column(s, "prompts", "source TEXT", msg);
}

int px_manifest_prompt_source(px_manifest *s, int64_t job_id, const char *source, px_err *err)
{
    return mf_run_stmt(s, err, "prompt source", NULL, NULL,
                       "UPDATE prompts SET source = ?1 WHERE id = (SELECT prompt_id FROM jobs"
                       " WHERE id = ?2)",
                       "tI", source, job_id);
}
