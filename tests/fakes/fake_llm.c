/*
 * fake_llm: see fake_llm.h. Scenes are "<adjective> <place> with <object>
 * and <object>, <material> surfaces, <detail>": with the lists below there
 * are millions of combinations, and every slot changes between scenes, so a
 * valid answer is rarely a near-duplicate of an earlier one, while REPEAT
 * mode exercises the duplicate filter.
 */
#include "fake_llm.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct fake_llm {
    struct MHD_Daemon *d;
    char url[64];
    pthread_mutex_t mu;
    int mode, bad_n, bad_mode, requests;
    int kind, n_ctx, delay_ms, unconstrained;
    char *last;
    char auth[256];
};

static const char *k_adj[] = {"spacious", "compact", "sunlit", "airy", "cosy", "sleek", "rustic",
                              "bright", "quiet", "elegant", "modern", "vintage", "minimal",
                              "colourful", "open-plan", "tidy", "industrial", "warm", "cool",
                              "polished"};
static const char *k_place[] = {"meeting room", "reception area", "corner office", "library",
                                "workshop", "lobby", "studio", "kitchen", "waiting room",
                                "laboratory", "classroom", "lounge", "atrium", "archive",
                                "greenhouse", "gallery", "co-working hall", "break room",
                                "server room", "conference hall"};
static const char *k_obj[] = {"oak table", "glass partition", "potted fern", "brass lamp",
                              "leather armchair", "whiteboard", "bookshelf", "ceramic vase",
                              "steel cabinet", "woven rug", "pendant light", "monstera plant",
                              "wall clock", "linen sofa", "stacked notebooks", "copper kettle",
                              "drafting desk", "terrazzo bench", "projector screen", "globe"};
static const char *k_mat[] = {"walnut", "concrete", "marble", "birch plywood", "brushed steel",
                              "terracotta", "cork", "linen", "slate", "bamboo"};
static const char *k_detail[] = {"morning light through tall windows",
                                 "soft shadows across the floor",
                                 "rain visible on the glass",
                                 "a view of a snowy courtyard",
                                 "evening lamps glowing",
                                 "autumn trees outside",
                                 "dust motes in a sunbeam",
                                 "city lights beyond the window",
                                 "a calm overcast sky outside",
                                 "long golden-hour shadows"};

static uint64_t sm64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

#define PICK(s, a) (a)[sm64(s) % (sizeof(a) / sizeof((a)[0]))]

static json_t *scenes(int n, uint64_t seed, int repeat)
{
    json_t *arr = json_array();
    uint64_t s = repeat ? 42 : seed;
    for (int i = 0; i < n; i++) {
        char buf[400];
        if (repeat)
            s = 42 + (uint64_t)(i % 2); /* two scenes, again and again */
        const char *o1 = PICK(&s, k_obj), *o2 = PICK(&s, k_obj);
        snprintf(buf, sizeof buf, "A %s %s with a %s and a %s, %s surfaces, %s", PICK(&s, k_adj),
                 PICK(&s, k_place), o1, o2, PICK(&s, k_mat), PICK(&s, k_detail));
        json_array_append_new(arr, json_string(buf));
    }
    return arr;
}

typedef struct {
    char *body;
    size_t len;
} conn;

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, char *s)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(s), s, MHD_RESPMEM_MUST_FREE);
    MHD_add_response_header(r, "Content-Type", "application/json");
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

#define LLAMA_MODEL "fake-7b-instruct-q4_k_m.gguf"
#define VLLM_MODEL "Qwen/Qwen2.5-7B-Instruct"

static int ntokens(size_t bytes)
{
    return (int)((bytes + 3) / 4);
}

static char *dump(json_t *o)
{
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

static char *chat_answer(const char *content, const char *model, const char *finish)
{
    return dump(json_pack("{s:s, s:s, s:s, s:s, s:[{s:i, s:{s:s, s:s}, s:s}]}", "id",
                          "chatcmpl-fake", "object", "chat.completion", "model", model,
                          "system_fingerprint", "b4747-c392e509", "choices", "index", 0, "message",
                          "role", "assistant", "content", content, "finish_reason", finish));
}

/* The schema this kind of server turns into a grammar, or NULL when it would
 * generate freely. */
static json_t *honoured_schema(int kind, json_t *req)
{
    json_t *rf = json_object_get(req, "response_format");
    const char *rt = json_string_value(json_object_get(rf, "type"));
    json_t *nested = json_object_get(json_object_get(rf, "json_schema"), "schema");
    json_t *top = json_object_get(req, "json_schema");
    json_t *obj = rt && !strcmp(rt, "json_object") ? json_object_get(rf, "schema") : NULL;
    switch (kind) {
    case FAKE_LLM_KIND_LLAMACPP_OLD: return top ? top : obj; /* the nested one is dropped */
    case FAKE_LLM_KIND_LLAMACPP: return nested ? nested : top ? top : obj;
    case FAKE_LLM_KIND_OLLAMA: return json_is_object(json_object_get(req, "format"))
                                          ? json_object_get(req, "format")
                                          : NULL;
    case FAKE_LLM_KIND_VLLM:
        return json_object_get(req, "guided_json") ? json_object_get(req, "guided_json") : nested;
    default: return nested;
    }
}

/* Bytes of every message's content (what the prompt is made of). */
static size_t message_bytes(json_t *req)
{
    size_t n = 0, i;
    json_t *m;
    json_array_foreach(json_object_get(req, "messages"), i, m)
        n += json_string_length(json_object_get(m, "content")) + 16; /* + the template's */
    return n;
}

/* The probe and helper endpoints of each kind: a malloc'd body, or NULL (404). */
static char *info_answer(int kind, int n_ctx, const char *method, const char *url, json_t *req)
{
    int get = !strcmp(method, "GET");
    if (kind == FAKE_LLM_KIND_LLAMACPP_OLD || kind == FAKE_LLM_KIND_LLAMACPP) {
        const char *build = kind == FAKE_LLM_KIND_LLAMACPP ? "b5200-3f1e9a2b" : "b4747-c392e509";
        if (get && !strcmp(url, "/props"))
            return dump(json_pack("{s:{s:i, s:{s:i}}, s:i, s:s, s:s}",
                                  "default_generation_settings", "n_ctx", n_ctx, "params",
                                  "n_predict", -1, "total_slots", 1, "model_path",
                                  "/models/" LLAMA_MODEL, "build_info", build));
        if (get && !strcmp(url, "/v1/models"))
            return dump(json_pack("{s:s, s:[{s:s, s:s, s:s}]}", "object", "list", "data", "id",
                                  "/models/" LLAMA_MODEL, "object", "model", "owned_by",
                                  "llamacpp"));
        if (!get && !strcmp(url, "/apply-template")) {
            char *t = malloc(message_bytes(req) + 1);
            if (!t)
                return NULL;
            memset(t, 'x', message_bytes(req));
            t[message_bytes(req)] = '\0';
            char *r = dump(json_pack("{s:s}", "prompt", t));
            free(t);
            return r;
        }
        if (!get && !strcmp(url, "/tokenize")) {
            json_t *toks = json_array();
            int n = ntokens(json_string_length(json_object_get(req, "content")));
            for (int i = 0; i < n; i++)
                json_array_append_new(toks, json_integer(100 + i % 1000));
            return dump(json_pack("{s:o}", "tokens", toks));
        }
    } else if (kind == FAKE_LLM_KIND_OLLAMA) {
        if (get && !strcmp(url, "/api/version"))
            return strdup("{\"version\":\"0.5.7\"}");
        if (get && !strcmp(url, "/api/tags"))
            return strdup("{\"models\":[{\"name\":\"llama3.2:latest\"},"
                          "{\"name\":\"qwen2.5:7b\"}]}");
        if (!get && !strcmp(url, "/api/show"))
            return dump(json_pack("{s:{s:s, s:i}}", "model_info", "general.architecture", "llama",
                                  "llama.context_length", n_ctx));
    } else if (kind == FAKE_LLM_KIND_OPENAI || kind == FAKE_LLM_KIND_OPENAI_REASONING) {
        if (get && !strcmp(url, "/v1/models")) /* every model of the account */
            return strdup("{\"object\":\"list\",\"data\":[{\"id\":\"gpt-4o\",\"object\":"
                          "\"model\",\"owned_by\":\"system\"},{\"id\":\"o-fake\",\"object\":"
                          "\"model\",\"owned_by\":\"openai\"}]}");
    } else if (kind == FAKE_LLM_KIND_VLLM) {
        if (get && !strcmp(url, "/version"))
            return strdup("{\"version\":\"0.6.3\"}");
        if (get && !strcmp(url, "/v1/models"))
            return dump(json_pack("{s:s, s:[{s:s, s:s, s:s, s:i}]}", "object", "list", "data",
                                  "id", VLLM_MODEL, "object", "model", "owned_by", "vllm",
                                  "max_model_len", n_ctx));
        if (!get && !strcmp(url, "/tokenize"))
            return dump(json_pack("{s:i, s:i}", "count", ntokens(message_bytes(req)),
                                  "max_model_len", n_ctx));
    }
    return NULL;
}

/* The content the current mode writes for want scenes (malloc'd). */
static char *mode_content(int mode, int want, int n)
{
    switch (mode) {
    case FAKE_LLM_PROSE:
        return strdup("Sure! Here are some lovely scenes: a room, another room, a third room.");
    case FAKE_LLM_WRONG: return strdup("{\"scenes\": 3, \"note\": \"I could not do it\"}");
    default: break;
    }
    json_t *o = json_pack("{s:o}", "prompts",
                          scenes(want, (uint64_t)n * 7919, mode == FAKE_LLM_REPEAT));
    char *inner = dump(o);
    if (inner && mode == FAKE_LLM_FENCED) {
        size_t l = strlen(inner) + 64;
        char *w = malloc(l);
        if (w)
            snprintf(w, l, "Here you go:\n```json\n%s\n```\n", inner);
        free(inner);
        inner = w;
    }
    return inner;
}

/* The answer's token limit: max_tokens (n_predict, Ollama's num_predict), or
 * the server's default when absent: llama-server's -n (1 here), else none. */
static int token_limit(int kind, json_t *req)
{
    json_t *mt = kind == FAKE_LLM_KIND_OLLAMA
                     ? json_object_get(json_object_get(req, "options"), "num_predict")
                 : kind == FAKE_LLM_KIND_OPENAI_REASONING
                     ? json_object_get(req, "max_completion_tokens")
                     : json_object_get(req, "max_tokens");
    if (!mt && (kind == FAKE_LLM_KIND_LLAMACPP_OLD || kind == FAKE_LLM_KIND_LLAMACPP))
        mt = json_object_get(req, "n_predict");
    if (json_is_integer(mt) && json_integer_value(mt) > 0)
        return (int)json_integer_value(mt);
    return kind == FAKE_LLM_KIND_LLAMACPP_OLD || kind == FAKE_LLM_KIND_LLAMACPP ? 1 : 1 << 30;
}

/* What the server would refuse before generating: an HTTP status and body, or 0. */
static unsigned chat_refusal(int kind, int n_ctx, json_t *req, int limit, char **body)
{
    const char *model = json_string_value(json_object_get(req, "model"));
    int prompt = ntokens(message_bytes(req));
    char msg[512];
    if (kind == FAKE_LLM_KIND_OPENAI_REASONING && json_object_get(req, "max_tokens")) {
        *body = strdup("{\"error\":{\"message\":\"Unsupported parameter: 'max_tokens' is not "
                       "supported with this model. Use 'max_completion_tokens' instead.\",\"type\":"
                       "\"invalid_request_error\",\"param\":\"max_tokens\",\"code\":"
                       "\"unsupported_parameter\"}}");
        return 400;
    }
    if (kind == FAKE_LLM_KIND_OLLAMA && (!model || !*model)) {
        *body = strdup("{\"error\":\"model is required\"}");
        return 400;
    }
    if (kind == FAKE_LLM_KIND_VLLM && (!model || strcmp(model, VLLM_MODEL))) {
        snprintf(msg, sizeof msg, "{\"object\":\"error\",\"message\":\"The model `%s` does not "
                 "exist.\",\"type\":\"NotFoundError\",\"code\":404}", model ? model : "");
        *body = strdup(msg);
        return 404;
    }
    if (kind == FAKE_LLM_KIND_VLLM && prompt + (limit < (1 << 30) ? limit : 0) > n_ctx) {
        snprintf(msg, sizeof msg, "{\"object\":\"error\",\"message\":\"This model's maximum "
                 "context length is %d tokens. However, you requested %d tokens.\",\"code\":400}",
                 n_ctx, prompt + limit);
        *body = strdup(msg);
        return 400;
    }
    if ((kind == FAKE_LLM_KIND_LLAMACPP_OLD || kind == FAKE_LLM_KIND_LLAMACPP) && prompt >= n_ctx) {
        *body = strdup("{\"error\":{\"code\":400,\"message\":\"the request exceeds the available "
                       "context size. try increasing the context size or enable context shift\"}}");
        return 400;
    }
    return 0;
}

static enum MHD_Result answer(fake_llm *f, struct MHD_Connection *c, const char *body, size_t len)
{
    pthread_mutex_lock(&f->mu);
    int n = ++f->requests;
    int mode = f->mode, kind = f->kind, n_ctx = f->n_ctx, delay = f->delay_ms;
    if (f->bad_n > 0) {
        f->bad_n--;
        mode = f->bad_mode;
    }
    free(f->last);
    f->last = malloc(len + 1);
    if (f->last) {
        memcpy(f->last, body, len);
        f->last[len] = '\0';
    }
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    snprintf(f->auth, sizeof f->auth, "%s", auth ? auth : "");
    pthread_mutex_unlock(&f->mu);
    if (delay > 0) {
        struct timespec ts = {delay / 1000, (long)(delay % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }

    json_t *req = json_loadb(body, len, 0, NULL);
    if (!json_is_array(json_object_get(req, "messages"))) {
        json_decref(req);
        return reply(c, 400, strdup("{\"error\":{\"message\":\"messages missing\"}}"));
    }
    json_t *schema = honoured_schema(kind, req);
    json_t *mi = json_object_get(json_object_get(json_object_get(schema, "properties"), "prompts"),
                                 "maxItems");
    int want = json_is_integer(mi) ? (int)json_integer_value(mi) : 8;
    if (want < 1 || want > 100)
        want = 8;
    int limit = token_limit(kind, req);
    char *refused = NULL, model[256];
    unsigned rs = chat_refusal(kind, n_ctx, req, limit, &refused);
    int openai = kind == FAKE_LLM_KIND_OPENAI || kind == FAKE_LLM_KIND_OPENAI_REASONING;
    snprintf(model, sizeof model, "%s", openai ? "gpt-fake"
                                        : json_string_value(json_object_get(req, "model"))
                                            ? json_string_value(json_object_get(req, "model"))
                                            : "");
    json_decref(req);
    if (rs)
        return reply(c, rs, refused);
    if (mode == FAKE_LLM_HTTP500)
        return reply(c, 500, strdup("{\"error\":{\"message\":\"overloaded\"}}"));
    if (mode == FAKE_LLM_BROKEN)
        return reply(c, 200, strdup("{\"choices\": [ {\"message\": "));
    if (!openai && !schema) { /* no grammar: the model writes freely */
        pthread_mutex_lock(&f->mu);
        f->unconstrained++;
        pthread_mutex_unlock(&f->mu);
        mode = FAKE_LLM_PROSE;
    }
    char *content = mode_content(mode, want, n);
    if (!content)
        return MHD_NO;
    const char *finish = "stop";
    if ((size_t)limit < strlen(content) / 4 + 1) { /* cut at the token limit */
        content[(size_t)limit * 4 < strlen(content) ? (size_t)limit * 4 : strlen(content)] = '\0';
        finish = "length";
    }
    char *s;
    if (kind == FAKE_LLM_KIND_OLLAMA)
        s = dump(json_pack("{s:s, s:s, s:{s:s, s:s}, s:b, s:s}", "model", model, "created_at",
                           "2026-12-02T19:00:00Z", "message", "role", "assistant", "content",
                           content, "done", 1, "done_reason", finish));
    else
        s = chat_answer(content, model, finish);
    free(content);
    if (!s)
        return MHD_NO;
    return reply(c, 200, s);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    fake_llm *f = cls;
    conn *cn = *con_cls;
    if (!cn) {
        if (!(cn = calloc(1, sizeof *cn)))
            return MHD_NO;
        *con_cls = cn;
        return MHD_YES;
    }
    if (*upload_size) {
        if (cn->len + *upload_size > (1u << 20))
            return MHD_NO;
        char *nb = realloc(cn->body, cn->len + *upload_size + 1);
        if (!nb)
            return MHD_NO;
        memcpy(nb + cn->len, upload, *upload_size);
        cn->body = nb;
        cn->len += *upload_size;
        *upload_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&f->mu);
    int kind = f->kind, n_ctx = f->n_ctx;
    pthread_mutex_unlock(&f->mu);
    const char *chat = kind == FAKE_LLM_KIND_OLLAMA ? "/api/chat" : "/v1/chat/completions";
    if (!strcmp(method, "POST") && !strcmp(url, chat))
        return answer(f, c, cn->body ? cn->body : "", cn->len);
    json_t *req = cn->body ? json_loadb(cn->body, cn->len, 0, NULL) : NULL;
    char *info = info_answer(kind, n_ctx, method, url, req);
    json_decref(req);
    if (info)
        return reply(c, 200, info);
    return reply(c, 404, strdup("{\"error\":{\"message\":\"not found\"}}"));
}

static void on_done(void *cls, struct MHD_Connection *c, void **con_cls,
                    enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    conn *cn = *con_cls;
    if (cn) {
        free(cn->body);
        free(cn);
        *con_cls = NULL;
    }
}

int fake_llm_start(fake_llm **out)
{
    *out = NULL;
    fake_llm *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    pthread_mutex_init(&f->mu, NULL);
    f->n_ctx = 4096;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    f->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                                MHD_USE_ERROR_LOG,
                            0, NULL, NULL, on_request, f, MHD_OPTION_SOCK_ADDR, &sa,
                            MHD_OPTION_NOTIFY_COMPLETED, on_done, f, MHD_OPTION_END);
    if (!f->d) {
        free(f);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(f->d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%u", di ? di->port : 0);
    *out = f;
    return 0;
}

void fake_llm_stop(fake_llm *f)
{
    if (!f)
        return;
    MHD_stop_daemon(f->d);
    free(f->last);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

const char *fake_llm_url(const fake_llm *f)
{
    return f->url;
}

void fake_llm_set_mode(fake_llm *f, int mode)
{
    pthread_mutex_lock(&f->mu);
    f->mode = mode;
    pthread_mutex_unlock(&f->mu);
}

void fake_llm_bad_next(fake_llm *f, int n, int bad_mode)
{
    pthread_mutex_lock(&f->mu);
    f->bad_n = n;
    f->bad_mode = bad_mode;
    pthread_mutex_unlock(&f->mu);
}

int fake_llm_requests(const fake_llm *f)
{
    fake_llm *m = (fake_llm *)f;
    pthread_mutex_lock(&m->mu);
    int n = m->requests;
    pthread_mutex_unlock(&m->mu);
    return n;
}

char *fake_llm_last_request(const fake_llm *f)
{
    fake_llm *m = (fake_llm *)f;
    pthread_mutex_lock(&m->mu);
    char *s = m->last ? strdup(m->last) : NULL;
    pthread_mutex_unlock(&m->mu);
    return s;
}

void fake_llm_last_auth(const fake_llm *f, char *buf, int cap)
{
    fake_llm *m = (fake_llm *)f;
    pthread_mutex_lock(&m->mu);
    snprintf(buf, (size_t)cap, "%s", m->auth);
    pthread_mutex_unlock(&m->mu);
}

void fake_llm_set_kind(fake_llm *f, int kind)
{
    pthread_mutex_lock(&f->mu);
    f->kind = kind;
    pthread_mutex_unlock(&f->mu);
}

void fake_llm_set_ctx(fake_llm *f, int n_ctx)
{
    pthread_mutex_lock(&f->mu);
    f->n_ctx = n_ctx;
    pthread_mutex_unlock(&f->mu);
}

void fake_llm_set_delay_ms(fake_llm *f, int ms)
{
    pthread_mutex_lock(&f->mu);
    f->delay_ms = ms;
    pthread_mutex_unlock(&f->mu);
}

int fake_llm_unconstrained(const fake_llm *f)
{
    fake_llm *m = (fake_llm *)f;
    pthread_mutex_lock(&m->mu);
    int n = m->unconstrained;
    pthread_mutex_unlock(&m->mu);
    return n;
}
