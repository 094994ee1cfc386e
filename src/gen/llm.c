/*
 * The LLM prompt writer: OpenAI-compatible POST /v1/chat/completions (served
 * by llama.cpp's llama-server, Ollama, vLLM...). Each request asks for a
 * batch of distinct scene descriptions as {"prompts": [...]}, constrained by
 * response_format json_schema where the server supports it, and names a
 * different sub-topic mix (place or object, lighting, time of day, season,
 * style, camera) so a long run keeps wandering instead of settling on a few
 * favourite scenes. The answer is validated anyway (servers ignore schemas,
 * models wrap JSON in code fences or write prose): unusable answers are
 * retried a bounded number of times, then the writer fails with the reason.
 *
 * The server's dialect (llama.cpp old and new, Ollama, vLLM, OpenAI; see
 * llm_dialect.c) is probed before the first request, or forced; each
 * request carries a max_tokens sized for its batch and is checked against
 * the server's context first. What the server reported (dialect, version,
 * the model of the last answer) is kept for the manifest (px_gen_llm_describe).
 */
#include "llm_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *url, *model, *key, *vocab;
    double temperature;
    int64_t seed;
    int batch, retries, forced, max_tokens_opt;
    long timeout_ms;
    uint64_t rng;
    px_gen_client *http;
    int probed;
    llm_server sv;
    char reported_model[256]; /* the "model" of the last usable answer */
    int max_tokens, prompt_tokens, counted; /* of the last request */
} llm_state;

px_gen_llm_opts px_gen_llm_opts_default(void)
{
    px_gen_llm_opts o = {.url = "http://127.0.0.1:8080",
                         .model = "",
                         .api_key = NULL,
                         .temperature = 0.9,
                         .seed = -1,
                         .batch = 8,
                         .retries = 3,
                         .timeout_ms = 120000,
                         .vocab_dir = NULL,
                         .dialect = NULL};
    return o;
}

static const char *k_light[] = {"soft morning daylight", "bright midday sun", "warm golden-hour light",
                                "cool overcast light", "blue-hour twilight", "warm lamp light",
                                "dramatic side light", "diffuse studio light", "night with artificial light"};
static const char *k_time[] = {"early morning", "mid-morning", "noon", "afternoon", "late afternoon",
                               "dusk", "evening", "night"};
static const char *k_season[] = {"spring", "summer", "autumn", "winter", "no particular season"};
static const char *k_style[] = {"minimalist", "Scandinavian", "industrial", "classic", "modern",
                                "rustic", "high-tech", "mid-century", "eco-friendly", "luxury",
                                "budget-friendly", "colourful"};
static const char *k_camera[] = {"wide-angle view", "eye-level view", "low angle", "high angle",
                                 "close-up detail", "symmetrical frontal view", "corner view",
                                 "shallow depth of field"};
static const char *k_type_desc[PX_GEN_NTYPES] = {
    "interiors: inside a room or indoor space", "exteriors: buildings, streets or outdoor places",
    "items: close-ups of objects and equipment"};

#define PICK(rng, arr) (arr)[px_gen_rand(rng) % (sizeof(arr) / sizeof((arr)[0]))]

static void llm_state_free(llm_state *s)
{
    if (!s)
        return;
    px_gen_client_destroy(s->http);
    free(s->url);
    free(s->model);
    if (s->key)
        explicit_bzero(s->key, strlen(s->key)); /* an API key should not outlive its use */
    free(s->key);
    free(s->vocab);
    free(s);
}

static void llm_destroy(px_gen_writer *w)
{
    llm_state_free(px_gen_writer_state(w));
}

/* A place/object hint from vocab/<slug>.json when there is one. */
static void place_hint(llm_state *s, const char *slug, int type, char *out, size_t cap)
{
    out[0] = '\0';
    if (!s->vocab)
        return;
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.json", s->vocab, slug);
    json_t *root = json_load_file(path, 0, NULL);
    json_t *l = json_object_get(json_object_get(root, px_gen_type_name(type)), "place");
    if (json_is_array(l) && json_array_size(l) > 0) {
        json_t *e = json_array_get(l, px_gen_rand(&s->rng) % json_array_size(l));
        if (json_is_string(e) && !strchr(json_string_value(e), '{'))
            snprintf(out, cap, "%s", json_string_value(e));
    }
    json_decref(root);
}

static int trim_into(const char *s, size_t n, char **out)
{
    while (n > 0 && (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r' || *s == '-' ||
                     *s == '*'))
        s++, n--;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        n--;
    *out = NULL;
    if (n < 12 || n > 1000)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 && s[i] != '\t' && s[i] != '\n')
            return 0;
    char *d = px_malloc(n + 1);
    if (!d)
        return -1;
    for (size_t i = 0; i < n; i++)
        d[i] = (s[i] == '\n' || s[i] == '\t') ? ' ' : s[i];
    d[n] = '\0';
    *out = d;
    return 1;
}

int px_gen_llm_parse(const char *body, size_t len, char ***out, size_t *nout, px_err *err)
{
    *out = NULL;
    *nout = 0;
    json_error_t je;
    json_t *root = json_loadb(body, len, 0, &je);
    if (!root)
        return px_err_set(err, PX_ECORRUPT, "answer is not JSON (line %d: %s)", je.line, je.text);
    int st = PX_OK;
    json_t *inner = NULL;
    json_t *content =
        json_object_get(json_object_get(json_array_get(json_object_get(root, "choices"), 0),
                                        "message"),
                        "content");
    if (!content) /* Ollama's own /api/chat: {"message": {"content": ...}} */
        content = json_object_get(json_object_get(root, "message"), "content");
    if (!json_is_string(content)) {
        st = px_err_set(err, PX_ECORRUPT, "answer has no choices[0].message.content string");
        goto out;
    }
    const char *c = json_string_value(content);
    size_t cl = json_string_length(content);
    /* models like to wrap JSON in ``` fences even when told not to */
    const char *open = memchr(c, '[', cl), *brace = memchr(c, '{', cl);
    if (brace && (!open || brace < open))
        open = brace;
    if (!open) {
        st = px_err_set(err, PX_ECORRUPT, "message content holds no JSON: \"%.60s\"", c);
        goto out;
    }
    const char *close = NULL;
    for (const char *p = c + cl; p > open; p--)
        if (p[-1] == ']' || p[-1] == '}') {
            close = p;
            break;
        }
    inner = close ? json_loadb(open, (size_t)(close - open), 0, &je) : NULL;
    if (!inner) {
        st = px_err_set(err, PX_ECORRUPT, "message content is not valid JSON: \"%.60s\"", c);
        goto out;
    }
    json_t *arr = json_is_array(inner) ? inner : json_object_get(inner, "prompts");
    if (!json_is_array(arr)) {
        st = px_err_set(err, PX_ECORRUPT, "message content has no \"prompts\" array");
        goto out;
    }
    size_t na = json_array_size(arr);
    if (na > 200)
        na = 200;
    char **v = px_calloc(na ? na : 1, sizeof *v);
    if (!v) {
        st = px_err_set(err, PX_ENOMEM, "LLM answer: out of memory");
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < na; i++) {
        json_t *e = json_array_get(arr, i);
        if (!json_is_string(e))
            continue;
        char *t;
        int r = trim_into(json_string_value(e), json_string_length(e), &t);
        if (r < 0) {
            px_manifest_strings_free(v, k);
            st = px_err_set(err, PX_ENOMEM, "LLM answer: out of memory");
            goto out;
        }
        if (r == 0)
            continue;
        int dup = 0;
        for (size_t j = 0; j < k && !dup; j++)
            dup = !strcmp(v[j], t);
        if (dup)
            free(t);
        else
            v[k++] = t;
    }
    if (k == 0) {
        free(v);
        st = px_err_set(err, PX_ECORRUPT, "\"prompts\" holds no usable scene (%zu entries, each "
                        "must be a string of 12..1000 characters)", na);
        goto out;
    }
    *out = v;
    *nout = k;
out:
    json_decref(inner);
    json_decref(root);
    return st;
}

/* The chat messages of one batch request, and the schema of its answer. */
static int build_messages(llm_state *s, const char *theme, const char *slug, int type, int n,
                          char *subtopic, size_t cap, json_t **messages, json_t **schema)
{
    char place[256];
    place_hint(s, slug, type, place, sizeof place);
    const char *light = PICK(&s->rng, k_light), *tod = PICK(&s->rng, k_time),
               *season = PICK(&s->rng, k_season), *style = PICK(&s->rng, k_style),
               *camera = PICK(&s->rng, k_camera);
    char sub[600];
    snprintf(sub, sizeof sub, "%s%s%s lighting: %s; time: %s; season: %s; style: %s; camera: %s",
             place[0] ? "place/object: " : "", place, place[0] ? ";" : "", light, tod, season, style,
             camera);
    if (subtopic && cap)
        snprintf(subtopic, cap, "%s", sub);
    char user[2048];
    snprintf(user, sizeof user,
             "Theme: \"%s\". Image type: %s.\n"
             "Write %d distinct scene descriptions for photorealistic stock photos of this theme "
             "and type. For this batch lean towards: %s; vary the specific place or object, "
             "layout, materials and colours between the %d scenes.\n"
             "Each description: one sentence of 15 to 40 words with concrete visual details. No "
             "people, no faces, no text, signs, logos or brand names.\n"
             "Answer with JSON only: {\"prompts\": [\"...\", ...]}.",
             theme, k_type_desc[type], n, sub, n);
    /* string lengths bound what a grammar-constrained server may write per scene */
    *schema = json_pack("{s:s, s:{s:{s:s, s:{s:s, s:i, s:i}, s:i, s:i}}, s:[s], s:b}", "type",
                        "object", "properties", "prompts", "type", "array", "items", "type",
                        "string", "minLength", 12, "maxLength", 400, "minItems", 1, "maxItems", n,
                        "required", "prompts", "additionalProperties", 0);
    *messages = json_pack(
        "[{s:s, s:s}, {s:s, s:s}]", "role", "system", "content",
        "You write short, concrete scene descriptions for a text-to-image model that makes stock "
        "photos. You answer with JSON only.",
        "role", "user", "content", user);
    if (*schema && *messages)
        return PX_OK;
    json_decref(*schema);
    json_decref(*messages);
    return PX_ENOMEM;
}

/* The "model" and finish reason of an answer ("" when absent). */
static void answer_meta(const px_buf *resp, char *model, size_t mcap, char *finish, size_t fcap)
{
    model[0] = finish[0] = '\0';
    json_t *root = resp->data ? json_loadb((const char *)resp->data, resp->len, 0, NULL) : NULL;
    json_t *m = json_object_get(root, "model");
    if (json_is_string(m))
        snprintf(model, mcap, "%s", json_string_value(m));
    json_t *f = json_object_get(json_array_get(json_object_get(root, "choices"), 0),
                                "finish_reason");
    if (!f)
        f = json_object_get(root, "done_reason"); /* Ollama */
    if (json_is_string(f))
        snprintf(finish, fcap, "%s", json_string_value(f));
    json_decref(root);
}

/* Probes the server once per writer and says what it found. Errors other
 * than the transport's are final (a missing model name). */
static int ensure_probed(llm_state *s, px_err *err)
{
    if (s->probed)
        return PX_OK;
    llm_conn c = {s->http, s->url, s->key, s->model, s->timeout_ms};
    int st = llm_probe(&c, s->forced, &s->sv, err);
    if (st != PX_OK)
        return st;
    s->probed = 1;
    char ctx[32] = "unknown";
    if (s->sv.n_ctx)
        snprintf(ctx, sizeof ctx, "%d tokens", s->sv.n_ctx);
    px_log(PX_LOG_INFO, "LLM %s: dialect %s%s%s, version %s, model %s, context %s", s->url,
           llm_dialect_name(s->sv.dialect), s->forced ? " (--llm-dialect)" : " (probed)",
           s->sv.guided_json ? ", guided_json" : "", s->sv.version[0] ? s->sv.version : "?",
           s->sv.loaded_model[0] ? s->sv.loaded_model : "?", ctx);
    return PX_OK;
}

/* One request for n scenes: PX_OK with *out filled, or an error in *last
 * (final: PX_ELIMIT, PX_EINVAL, PX_ENOMEM). */
static int llm_attempt(px_gen_writer *w, llm_state *s, const char *theme, const char *slug,
                       int type, int n, char ***out, size_t *nout, char *subtopic, size_t cap,
                       px_err *last)
{
    int st = ensure_probed(s, last);
    if (st != PX_OK) {
        px_gen_writer_count(w, 1, 0);
        return st;
    }
    json_t *messages, *schema;
    if (build_messages(s, theme, slug, type, n, subtopic, cap, &messages, &schema) != PX_OK)
        return px_err_set(last, PX_ENOMEM, "LLM request: out of memory");
    llm_conn c = {s->http, s->url, s->key, s->model, s->timeout_ms};
    int max_tokens = s->max_tokens_opt > 0 ? s->max_tokens_opt
                                           : n * LLM_TOKENS_PER_SCENE + LLM_TOKENS_OVERHEAD;
    st = llm_check_context(&c, &s->sv, messages, n, max_tokens, &s->prompt_tokens, &s->counted,
                           last);
    /* Ollama takes the context per request (its default, 2048 or 4096, cuts prompts silently) */
    int num_ctx = (s->prompt_tokens > 0 ? s->prompt_tokens : 1024) + max_tokens;
    num_ctx = (num_ctx + 255) / 256 * 256;
    if (num_ctx < 2048)
        num_ctx = 2048;
    if (s->sv.n_ctx > 0 && num_ctx > s->sv.n_ctx)
        num_ctx = s->sv.n_ctx;
    if (st != PX_OK) {
        json_decref(messages);
        json_decref(schema);
        return st;
    }
    int64_t seed = s->seed >= 0 ? s->seed + (int64_t)(s->rng & 0xffffff) : -1;
    /* vLLM refuses a model name it does not serve: "" means the one it has */
    const char *model = !s->model[0] && s->sv.dialect == LLM_VLLM ? s->sv.loaded_model : s->model;
    s->max_tokens = max_tokens;
    char url[1024] = "";
    px_buf resp = {0};
    long status = 0;
    /* OpenAI's reasoning models refuse max_tokens, naming the field they take: ask again once */
    for (int send = 0; st == PX_OK && send < 2; send++) {
        const char *route = NULL;
        char *body = NULL;
        if (llm_request(&s->sv, model, messages, schema, s->temperature, seed, max_tokens, num_ctx,
                        &route, &body) != PX_OK) {
            st = px_err_set(last, PX_ENOMEM, "LLM request: out of memory");
            break;
        }
        px_gen_join_url(s->url, route, url, sizeof url);
        st = px_gen_http(s->http, url, body, s->key, s->timeout_ms, 8u << 20, &status, &resp,
                         last);
        free(body);
        px_gen_writer_count(w, 1, 0);
        if (st != PX_OK || status != 400 || s->sv.completion_tokens || !resp.data ||
            !strstr((const char *)resp.data, "max_completion_tokens"))
            break;
        s->sv.completion_tokens = 1;
        px_log(PX_LOG_INFO, "LLM %s: the model wants max_completion_tokens; asking with it", s->url);
    }
    json_decref(messages);
    json_decref(schema);
    if (st == PX_ENOMEM) {
        px_buf_free(&resp);
        return st;
    }
    char said[256], finish[32];
    answer_meta(&resp, said, sizeof said, finish, sizeof finish);
    if (st == PX_ETIMEOUT) {
        px_err_set(last, st, "%s: no answer in %ld s (--llm-timeout)", url, s->timeout_ms / 1000);
    } else if (st == PX_OK && status != 200) {
        st = px_err_set(last, status >= 500 ? PX_ENET : PX_ECORRUPT, "%s: HTTP %ld: %.100s", url,
                        status, resp.data ? (char *)resp.data : "");
    } else if (st == PX_OK) {
        px_err pe;
        st = px_gen_llm_parse((const char *)resp.data, resp.len, out, nout, &pe);
        if (st != PX_OK && !strcmp(finish, "length"))
            px_err_set(last, st, "%s: the answer was cut at max_tokens %d: %s", url, max_tokens,
                       pe.msg);
        else if (st != PX_OK)
            px_err_set(last, st, "%s: %s", url, pe.msg);
        else
            snprintf(s->reported_model, sizeof s->reported_model, "%s", said);
    }
    px_buf_free(&resp);
    return st;
}

static int llm_write(px_gen_writer *w, const char *theme, const char *slug, int type, int n,
                     char ***out, size_t *nout, char *subtopic, size_t cap, px_err *err)
{
    llm_state *s = px_gen_writer_state(w);
    if (n > s->batch)
        n = s->batch;
    px_err last;
    px_err_clear(&last);
    int last_st = PX_ECORRUPT;
    for (int attempt = 0; attempt <= s->retries; attempt++) {
        int st = llm_attempt(w, s, theme, slug, type, n, out, nout, subtopic, cap, &last);
        if (st == PX_OK)
            return PX_OK;
        if (st == PX_ENOMEM || st == PX_ELIMIT || st == PX_EINVAL)
            return px_err_set(err, st, "%s", last.msg);
        last_st = st;
        px_gen_writer_count(w, 0, 1);
    }
    return px_err_set(err, last_st, "LLM gave no usable answer in %d tries; last: %s",
                      s->retries + 1, last.msg);
}

int px_gen_llm_batch(px_gen_writer *w)
{
    if (!w || strcmp(px_gen_writer_name(w), "llm"))
        return 8;
    return ((llm_state *)px_gen_writer_state(w))->batch;
}

int px_gen_llm_describe(px_gen_writer *w, char *buf, size_t cap)
{
    if (!w || strcmp(px_gen_writer_name(w), "llm") || !cap)
        return 0;
    llm_state *s = px_gen_writer_state(w);
    if (!s->probed) {
        buf[0] = '\0';
        return 0;
    }
    /* llama-server serves the one model it loaded and echoes whatever name a request gave
     * (none: "gpt-3.5-turbo"), so there its own report of the model counts */
    int llama = s->sv.dialect == LLM_LLAMACPP || s->sv.dialect == LLM_LLAMACPP_OLD;
    const char *model = (llama || !s->reported_model[0]) && s->sv.loaded_model[0]
                            ? s->sv.loaded_model
                            : s->reported_model;
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:b}", "server",
                          s->url, "dialect", llm_dialect_name(s->sv.dialect), "how",
                          s->forced ? "--llm-dialect" : "probed", "version", s->sv.version,
                          "model", model, "answer_model", s->reported_model, "loaded_model",
                          s->sv.loaded_model, "n_ctx", s->sv.n_ctx, "max_tokens", s->max_tokens,
                          "prompt_tokens", s->prompt_tokens, "prompt_tokens_counted", s->counted);
    char *t = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(o);
    int ok = t && strlen(t) < cap;
    snprintf(buf, cap, "%s", ok ? t : "");
    free(t);
    return ok;
}

int px_gen_writer_llm_create(const px_gen_llm_opts *o, px_gen_writer **out, px_err *err)
{
    *out = NULL;
    if (!o || !o->url || strncmp(o->url, "http", 4))
        return px_err_set(err, PX_EINVAL, "LLM: URL '%s' must start with http:// or https://",
                          o && o->url ? o->url : "");
    llm_state *s = px_calloc(1, sizeof *s);
    if (!s)
        return px_err_set(err, PX_ENOMEM, "LLM: out of memory");
    s->url = px_strdup(o->url);
    /* OpenAI clients are configured with ".../v1"; our routes start at the server's root */
    size_t ul = s->url ? strlen(s->url) : 0;
    while (ul > 0 && s->url[ul - 1] == '/')
        s->url[--ul] = '\0';
    const char *host = s->url ? strstr(s->url, "://") : NULL;
    if (host && ul > 3 && !strcmp(s->url + ul - 3, "/v1") && host + 3 < s->url + ul - 3)
        s->url[ul - 3] = '\0';
    s->model = px_strdup(o->model ? o->model : "");
    s->key = o->api_key ? px_strdup(o->api_key) : NULL;
    s->vocab = o->vocab_dir ? px_strdup(o->vocab_dir) : NULL;
    s->temperature = o->temperature > 0 ? o->temperature : 0.9;
    s->seed = o->seed;
    s->batch = o->batch > 0 ? (o->batch > 50 ? 50 : o->batch) : 8;
    s->retries = o->retries >= 0 ? o->retries : 3;
    s->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 120000;
    s->max_tokens_opt = o->max_tokens;
    s->forced = llm_dialect_parse(o->dialect);
    if (s->forced < 0) {
        llm_state_free(s);
        return px_err_set(err, PX_EINVAL, "LLM: --llm-dialect '%s': expected auto, llamacpp, "
                          "llamacpp-old, ollama, vllm or openai", o->dialect);
    }
    s->rng = (uint64_t)(o->seed >= 0 ? o->seed : 12345) ^ 0xd1b54a32d192ed03ULL;
    int st = PX_OK;
    if (!s->url || !s->model || (o->api_key && !s->key) || (o->vocab_dir && !s->vocab))
        st = px_err_set(err, PX_ENOMEM, "LLM: out of memory");
    if (st == PX_OK)
        st = px_gen_client_create(&s->http, err);
    px_gen_writer *w = st == PX_OK ? px_gen_writer_new("llm", llm_write, llm_destroy, s) : NULL;
    if (!w) {
        if (st == PX_OK)
            st = px_err_set(err, PX_ENOMEM, "LLM: out of memory");
        llm_state_free(s);
        return st;
    }
    *out = w;
    return PX_OK;
}
