/*
 * Internal to the LLM prompt writer (llm.c, llm_dialect.c): the server
 * dialects it speaks and what probing a server found out about it.
 *
 * Servers that call themselves "OpenAI-compatible" differ where it matters
 * for us: how a JSON schema is passed (and whether it is honoured), how long
 * an answer may be, how large a prompt may be, and what they report back.
 * A dialect is picked once per writer, by probing the server's own endpoints
 * (or forced with --llm-dialect), and decides the request body, the route
 * and the context check.
 */
#ifndef PX_GEN_LLM_INTERNAL_H
#define PX_GEN_LLM_INTERNAL_H

#include "gen_internal.h"

#include <jansson.h>

typedef enum llm_dialect {
    LLM_AUTO = 0,
    LLM_LLAMACPP_OLD, /* llama-server before the response_format fix: top-level "json_schema" */
    LLM_LLAMACPP,     /* llama-server: response_format json_schema */
    LLM_OLLAMA,       /* Ollama's own POST /api/chat with "format": schema */
    LLM_VLLM,         /* vLLM: response_format json_schema (guided_json before 0.6) */
    LLM_OPENAI,       /* anything else: the OpenAI API as documented */
} llm_dialect;

/* "auto", "llamacpp-old", ... for a dialect; parse: -1 when unknown. */
const char *llm_dialect_name(int d);
int llm_dialect_parse(const char *s);

/* What the server said about itself (zeroed: nothing known). */
typedef struct llm_server {
    int dialect;            /* never LLM_AUTO after llm_probe */
    int guided_json;        /* vLLM older than 0.6: the schema goes in "guided_json" */
    char version[64];       /* llama.cpp build_info ("b4747-c392e509"), Ollama/vLLM version */
    char loaded_model[256]; /* the model the server has loaded (llama.cpp, vLLM) */
    int n_ctx;              /* tokens a request may use, prompt and answer (0: unknown) */
    char ctx_source[64];    /* where n_ctx came from ("/props n_ctx per slot") */
    int can_tokenize;       /* exact prompt token counts are available (llama.cpp, vLLM) */
    int completion_tokens;  /* the budget goes in "max_completion_tokens" (OpenAI's reasoning
                             * models refuse "max_tokens"; learnt from their HTTP 400) */
} llm_server;

typedef struct llm_conn {
    px_gen_client *http;
    const char *url, *key, *model;
    long timeout_ms;
} llm_conn;

/* Probes c->url for forced (LLM_AUTO: find out) and fills *sv. Transport
 * failures (PX_ENET, PX_ETIMEOUT) are returned with err naming the URL;
 * PX_EINVAL when the dialect needs something missing (Ollama without a
 * model: err lists the models the server has). */
int llm_probe(const llm_conn *c, int forced, llm_server *sv, px_err *err);

/* The request for one batch: route (appended to the base URL) and body
 * (malloc'd JSON text). messages is borrowed; schema is borrowed. */
int llm_request(const llm_server *sv, const char *model, json_t *messages, json_t *schema,
                double temperature, int64_t seed, int max_tokens, int num_ctx, const char **route,
                char **body);

/* Checks that messages plus max_tokens fit sv->n_ctx. *prompt_tokens gets
 * the count or 0 when n_ctx is unknown; *counted is 1 when the server counted
 * it, else it is an upper bound (the request clearly fits) or an estimate. PX_ELIMIT with the
 * numbers and what to change; transport errors as llm_probe's. */
int llm_check_context(const llm_conn *c, const llm_server *sv, json_t *messages, int batch,
                      int max_tokens, int *prompt_tokens, int *counted, px_err *err);

/* Tokens asked for per scene, and for the JSON around them. */
#define LLM_TOKENS_PER_SCENE 96
#define LLM_TOKENS_OVERHEAD 64
/* The first llama.cpp build taken to honour a nested response_format
 * json_schema (the fix, llama.cpp PR #12168, landed in early March 2025,
 * a few dozen builds after b4747; older and unknown builds get the form
 * every build honours). */
#define LLM_LLAMACPP_FIXED_BUILD 5000

#endif
