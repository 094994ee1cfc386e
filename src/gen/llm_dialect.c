/*
 * LLM server dialects (see llm_internal.h): probing a server, the request
 * body each dialect needs, and the check that a request fits the server's
 * context.
 *
 * What the probes read (each a GET that a server of another kind answers
 * with 404, or with something that lacks the fields looked for):
 *   llama.cpp  GET /props: build_info, model_path, default_generation_settings.n_ctx
 *              (the context of one slot: -c divided by --parallel)
 *   Ollama     GET /api/version, then POST /api/show for the model's context_length
 *   vLLM       GET /version, then GET /v1/models: id, max_model_len
 *   otherwise  GET /v1/models "owned_by" ("llamacpp", "vllm"), else OpenAI.
 *
 * How the schema travels:
 *   llamacpp-old  top-level "json_schema" and response_format {"type":"json_object","schema"}:
 *                 llama-server builds around b4747 accept a nested response_format
 *                 json_schema but drop it (a shadowed variable), so output is unconstrained;
 *                 these two forms are honoured by old and new builds alike
 *   llamacpp, openai, vllm >= 0.6   response_format {"type":"json_schema","json_schema":{...}}
 *   vllm < 0.6    "guided_json": schema
 *   ollama        POST /api/chat with "format": schema, "options": {num_predict, num_ctx}
 * Every dialect sends a max_tokens (Ollama: num_predict) sized for the batch: without it
 * llama-server generates up to its -n default, which may be a single token.
 */
#include "llm_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const k_names[] = {"auto",   "llamacpp-old", "llamacpp",
                                      "ollama", "vllm",         "openai"};

const char *llm_dialect_name(int d)
{
    return d >= 0 && d < (int)(sizeof k_names / sizeof k_names[0]) ? k_names[d] : "?";
}

int llm_dialect_parse(const char *s)
{
    if (!s || !*s)
        return LLM_AUTO;
    for (int i = 0; i < (int)(sizeof k_names / sizeof k_names[0]); i++)
        if (!strcmp(s, k_names[i]))
            return i;
    if (!strcmp(s, "llama.cpp") || !strcmp(s, "llama-server"))
        return LLM_LLAMACPP;
    return -1;
}

/* Probes are short: a server that does not answer a GET in this time will not serve a batch. */
static long probe_timeout(const llm_conn *c)
{
    return c->timeout_ms > 0 && c->timeout_ms < 15000 ? c->timeout_ms : 15000;
}

/* GET or POST (body non-NULL) path; *out is the JSON answer of a 200, else NULL.
 * Only transport failures are errors. */
static int call_json(const llm_conn *c, const char *path, json_t *body, long timeout_ms,
                     json_t **out, px_err *err)
{
    *out = NULL;
    char url[1024];
    px_gen_join_url(c->url, path, url, sizeof url);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body && !text)
        return px_err_set(err, PX_ENOMEM, "LLM: out of memory");
    px_buf resp = {0};
    long status = 0;
    int st = px_gen_http(c->http, url, text, c->key, timeout_ms, 4u << 20, &status, &resp, err);
    free(text);
    if (st == PX_OK && status == 200 && resp.data)
        *out = json_loadb((const char *)resp.data, resp.len, 0, NULL);
    px_buf_free(&resp);
    return st;
}

static void copy_str(char *dst, size_t cap, json_t *v)
{
    if (json_is_string(v))
        snprintf(dst, cap, "%s", json_string_value(v));
}

/* A context size the server reported (ignored unless a plausible integer), and where from. */
static void set_ctx(llm_server *sv, json_t *v, const char *source)
{
    if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) >= (1 << 30))
        return;
    sv->n_ctx = (int)json_integer_value(v);
    snprintf(sv->ctx_source, sizeof sv->ctx_source, "%s", source);
}

/* llama-server's /props. 1 when it is one. */
static int read_llamacpp(json_t *props, llm_server *sv)
{
    json_t *dgs = json_object_get(props, "default_generation_settings");
    json_t *bi = json_object_get(props, "build_info");
    if (!json_is_object(props) || (!json_is_object(dgs) && !json_is_string(bi)))
        return 0;
    copy_str(sv->version, sizeof sv->version, bi);
    json_t *mp = json_object_get(props, "model_path");
    if (json_is_string(mp)) {
        const char *p = json_string_value(mp), *slash = strrchr(p, '/');
        snprintf(sv->loaded_model, sizeof sv->loaded_model, "%s", slash ? slash + 1 : p);
    }
    set_ctx(sv, json_object_get(dgs, "n_ctx"), "llama-server's context per slot (/props n_ctx)");
    sv->can_tokenize = 1;
    int build = 0;
    sv->dialect = sscanf(sv->version, "b%d", &build) == 1 && build >= LLM_LLAMACPP_FIXED_BUILD
                      ? LLM_LLAMACPP
                      : LLM_LLAMACPP_OLD;
    return 1;
}

/* Ollama: the model is named in every request, and Ollama loads it on demand. */
static int read_ollama(const llm_conn *c, llm_server *sv, px_err *err)
{
    json_t *j = NULL;
    int st;
    if (!c->model || !*c->model) {
        if ((st = call_json(c, "/api/tags", NULL, probe_timeout(c), &j, err)) != PX_OK)
            return st;
        char list[400] = "";
        json_t *m;
        size_t i;
        json_array_foreach(json_object_get(j, "models"), i, m)
        {
            const char *n = json_string_value(json_object_get(m, "name"));
            size_t l = strlen(list);
            if (n && l + strlen(n) + 3 < sizeof list)
                snprintf(list + l, sizeof list - l, "%s%s", l ? ", " : "", n);
        }
        json_decref(j);
        return px_err_set(err, PX_EINVAL,
                          "LLM: %s is Ollama, which needs --llm-model NAME (it has: "
                          "%s)",
                          c->url, list[0] ? list : "no models; ollama pull one");
    }
    snprintf(sv->loaded_model, sizeof sv->loaded_model, "%s", c->model);
    json_t *req = json_pack("{s:s}", "model", c->model);
    st = call_json(c, "/api/show", req, probe_timeout(c), &j, err);
    json_decref(req);
    if (st != PX_OK)
        return st;
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(j, "model_info"), k, v)
    {
        size_t kl = strlen(k);
        if (kl > 15 && !strcmp(k + kl - 15, ".context_length"))
            set_ctx(sv, v, "the model's context_length (/api/show)");
    }
    json_decref(j);
    return PX_OK;
}

/* /v1/models: the first model's owner, id and (vLLM) max_model_len. */
static int read_models(const llm_conn *c, llm_server *sv, char *owner, size_t cap, px_err *err)
{
    json_t *j = NULL;
    int st = call_json(c, "/v1/models", NULL, probe_timeout(c), &j, err);
    if (st != PX_OK)
        return st;
    json_t *m0 = json_array_get(json_object_get(j, "data"), 0);
    copy_str(owner, cap, json_object_get(m0, "owned_by"));
    /* a server of one model names it here; OpenAI lists every model it has */
    if (!sv->loaded_model[0] && (!strcmp(owner, "vllm") || !strcmp(owner, "llamacpp")))
        copy_str(sv->loaded_model, sizeof sv->loaded_model, json_object_get(m0, "id"));
    if (!sv->n_ctx)
        set_ctx(sv, json_object_get(m0, "max_model_len"),
                "the server's max_model_len (/v1/models)");
    json_decref(j);
    return PX_OK;
}

/* GET path answering {"version": "..."}: 1 (version copied), 0, or a transport error. */
static int read_version(const llm_conn *c, const char *path, llm_server *sv, px_err *err)
{
    json_t *j = NULL;
    int st = call_json(c, path, NULL, probe_timeout(c), &j, err);
    if (st != PX_OK)
        return st;
    json_t *v = json_object_get(j, "version");
    int is = json_is_string(v) && json_object_size(j) <= 3;
    if (is)
        copy_str(sv->version, sizeof sv->version, v);
    json_decref(j);
    return is;
}

int llm_probe(const llm_conn *c, int forced, llm_server *sv, px_err *err)
{
    memset(sv, 0, sizeof *sv);
    json_t *j = NULL;
    int st = PX_OK, r;
    char owner[64] = "";
    if (forced == LLM_AUTO || forced == LLM_LLAMACPP || forced == LLM_LLAMACPP_OLD) {
        if ((st = call_json(c, "/props", NULL, probe_timeout(c), &j, err)) != PX_OK)
            return st;
        int is = read_llamacpp(j, sv);
        json_decref(j);
        if (is || forced != LLM_AUTO) {
            if (forced != LLM_AUTO)
                sv->dialect = forced;
            return PX_OK;
        }
    }
    if (forced == LLM_AUTO || forced == LLM_OLLAMA) {
        if ((r = read_version(c, "/api/version", sv, err)) < 0)
            return r;
        if (r || forced == LLM_OLLAMA) {
            sv->dialect = LLM_OLLAMA;
            return read_ollama(c, sv, err);
        }
    }
    if (forced == LLM_AUTO || forced == LLM_VLLM) {
        if ((r = read_version(c, "/version", sv, err)) < 0)
            return r;
        if (r || forced == LLM_VLLM) {
            sv->dialect = LLM_VLLM;
            int major = 0, minor = 0;
            sv->guided_json =
                sscanf(sv->version, "%d.%d", &major, &minor) == 2 && major == 0 && minor < 6;
            sv->can_tokenize = 1;
            return read_models(c, sv, owner, sizeof owner, err);
        }
    }
    if ((st = read_models(c, sv, owner, sizeof owner, err)) != PX_OK)
        return st;
    if (forced != LLM_AUTO)
        sv->dialect = forced;
    else if (!strcmp(owner, "llamacpp"))
        sv->dialect = LLM_LLAMACPP_OLD; /* /props turned off: the build is unknown */
    else if (!strcmp(owner, "vllm"))
        sv->dialect = LLM_VLLM;
    else
        sv->dialect = LLM_OPENAI;
    sv->can_tokenize = sv->dialect == LLM_VLLM;
    return PX_OK;
}

int llm_request(const llm_server *sv, const char *model, json_t *messages, json_t *schema,
                double temperature, int64_t seed, int max_tokens, int num_ctx, const char **route,
                char **body)
{
    *body = NULL;
    json_t *req;
    if (sv->dialect == LLM_OLLAMA) {
        *route = "/api/chat";
        req = json_pack("{s:s, s:O, s:b, s:O, s:{s:f, s:i, s:i}}", "model", model, "messages",
                        messages, "stream", 0, "format", schema, "options", "temperature",
                        temperature, "num_predict", max_tokens, "num_ctx", num_ctx);
        if (req && seed >= 0)
            json_object_set_new(json_object_get(req, "options"), "seed", json_integer(seed));
    } else {
        *route = "/v1/chat/completions";
        req = json_pack("{s:s, s:O, s:f, s:i}", "model", model, "messages", messages, "temperature",
                        temperature, sv->completion_tokens ? "max_completion_tokens" : "max_tokens",
                        max_tokens);
        if (req && seed >= 0)
            json_object_set_new(req, "seed", json_integer(seed));
        json_t *rf = NULL;
        if (sv->dialect == LLM_LLAMACPP_OLD) {
            json_object_set(req, "json_schema", schema);
            rf = json_pack("{s:s, s:O}", "type", "json_object", "schema", schema);
        } else if (sv->dialect == LLM_VLLM && sv->guided_json) {
            json_object_set(req, "guided_json", schema);
        } else {
            rf = json_pack("{s:s, s:{s:s, s:b, s:O}}", "type", "json_schema", "json_schema", "name",
                           "scenes", "strict", 1, "schema", schema);
        }
        if (req && rf)
            json_object_set_new(req, "response_format", rf);
    }
    if (!req)
        return PX_ENOMEM;
    *body = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return *body ? PX_OK : PX_ENOMEM;
}

/* The exact prompt size where the server counts: llama-server applies its
 * chat template (/apply-template) and tokenizes (/tokenize); vLLM tokenizes
 * chat messages itself. 0 when the server could not say. */
static int count_tokens(const llm_conn *c, const llm_server *sv, json_t *messages, int *n,
                        px_err *err)
{
    *n = 0;
    json_t *ans = NULL, *req;
    int st;
    if (sv->dialect == LLM_VLLM) {
        req = json_pack("{s:s, s:O}", "model", c->model && *c->model ? c->model : sv->loaded_model,
                        "messages", messages);
        st = call_json(c, "/tokenize", req, probe_timeout(c), &ans, err);
        json_decref(req);
        json_t *cnt = json_object_get(ans, "count");
        if (st == PX_OK && json_is_integer(cnt))
            *n = (int)json_integer_value(cnt);
        json_decref(ans);
        return st;
    }
    req = json_pack("{s:O}", "messages", messages);
    st = call_json(c, "/apply-template", req, probe_timeout(c), &ans, err);
    json_decref(req);
    json_t *prompt = json_object_get(ans, "prompt");
    if (st != PX_OK || !json_is_string(prompt)) {
        json_decref(ans);
        return st;
    }
    req = json_pack("{s:O, s:b}", "content", prompt, "add_special", 1);
    json_decref(ans);
    ans = NULL;
    st = req ? call_json(c, "/tokenize", req, probe_timeout(c), &ans, err) : PX_ENOMEM;
    json_decref(req);
    json_t *toks = json_object_get(ans, "tokens");
    if (st == PX_OK && json_is_array(toks))
        *n = (int)json_array_size(toks);
    json_decref(ans);
    return st;
}

int llm_check_context(const llm_conn *c, const llm_server *sv, json_t *messages, int batch,
                      int max_tokens, int *prompt_tokens, int *counted, px_err *err)
{
    *prompt_tokens = *counted = 0;
    if (sv->n_ctx <= 0)
        return PX_OK;
    size_t bytes = 0, i;
    json_t *m;
    json_array_foreach(messages, i, m) bytes += json_string_length(json_object_get(m, "content"));
    /* a token covers at least one byte; the chat template adds its own tokens */
    int upper = (int)(bytes < (1u << 28) ? bytes : (1u << 28)) + 128;
    if (upper + max_tokens <= sv->n_ctx) {
        *prompt_tokens = upper;
        return PX_OK;
    }
    int exact = 0, n = 0, st;
    if (sv->can_tokenize) {
        if ((st = count_tokens(c, sv, messages, &n, err)) != PX_OK)
            return st;
        exact = n > 0;
    }
    if (!exact)
        n = (int)(bytes / 3) + 64; /* English text runs about 4 bytes a token */
    *prompt_tokens = n;
    *counted = exact;
    if (n + max_tokens <= sv->n_ctx)
        return PX_OK;
    int fits = (sv->n_ctx - n - LLM_TOKENS_OVERHEAD) / LLM_TOKENS_PER_SCENE;
    char hint[96], how[64];
    if (max_tokens == batch * LLM_TOKENS_PER_SCENE + LLM_TOKENS_OVERHEAD)
        snprintf(how, sizeof how, ": %d scenes x %d + %d", batch, LLM_TOKENS_PER_SCENE,
                 LLM_TOKENS_OVERHEAD);
    else
        snprintf(how, sizeof how, "%s", " from --llm-max-tokens");
    if (fits >= 1 && fits < batch)
        snprintf(hint, sizeof hint, " or ask for fewer scenes per request (--llm-batch %d fits)",
                 fits);
    else
        snprintf(hint, sizeof hint, "%s", "");
    return px_err_set(
        err, PX_ELIMIT,
        "LLM: a request for %d scene%s does not fit %s: its prompt is %s%d tokens and "
        "the answer may take %d (max_tokens%s), %d in all, but the context is %d "
        "tokens; give the server a larger context (llama-server -c, vLLM "
        "--max-model-len)%s",
        batch, batch == 1 ? "" : "s", sv->ctx_source, exact ? "" : "about ", n, max_tokens, how,
        n + max_tokens, sv->n_ctx, hint);
}
