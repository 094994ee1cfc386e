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

struct fake_llm {
    struct MHD_Daemon *d;
    char url[64];
    pthread_mutex_t mu;
    int mode, bad_n, bad_mode, requests;
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

static char *chat_answer(const char *content)
{
    json_t *a = json_pack("{s:s, s:s, s:[{s:i, s:{s:s, s:s}, s:s}]}", "id", "chatcmpl-fake",
                          "object", "chat.completion", "choices", "index", 0, "message", "role",
                          "assistant", "content", content, "finish_reason", "stop");
    char *s = json_dumps(a, JSON_COMPACT);
    json_decref(a);
    return s;
}

static enum MHD_Result answer(fake_llm *f, struct MHD_Connection *c, const char *body, size_t len)
{
    pthread_mutex_lock(&f->mu);
    int n = ++f->requests;
    int mode = f->mode;
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

    json_t *req = json_loadb(body, len, 0, NULL);
    json_t *mi = json_object_get(
        json_object_get(json_object_get(json_object_get(json_object_get(json_object_get(
                                                            req, "response_format"),
                                                        "json_schema"),
                                                    "schema"),
                                    "properties"),
                        "prompts"),
        "maxItems");
    int want = json_is_integer(mi) ? (int)json_integer_value(mi) : 8;
    int has_messages = json_is_array(json_object_get(req, "messages"));
    json_decref(req);
    if (!has_messages)
        return reply(c, 400, strdup("{\"error\":{\"message\":\"messages missing\"}}"));
    if (want < 1 || want > 100)
        want = 8;
    char *s = NULL;
    switch (mode) {
    case FAKE_LLM_HTTP500: return reply(c, 500, strdup("{\"error\":{\"message\":\"overloaded\"}}"));
    case FAKE_LLM_BROKEN: return reply(c, 200, strdup("{\"choices\": [ {\"message\": "));
    case FAKE_LLM_PROSE:
        s = chat_answer("Sure! Here are some lovely scenes: a room, another room, a third room.");
        break;
    case FAKE_LLM_WRONG: s = chat_answer("{\"scenes\": 3, \"note\": \"I could not do it\"}"); break;
    default: {
        json_t *o = json_pack("{s:o}", "prompts",
                              scenes(want, (uint64_t)n * 7919, mode == FAKE_LLM_REPEAT));
        char *inner = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (mode == FAKE_LLM_FENCED) {
            size_t l = strlen(inner) + 64;
            char *w = malloc(l);
            if (w)
                snprintf(w, l, "Here you go:\n```json\n%s\n```\n", inner);
            free(inner);
            inner = w;
        }
        s = inner ? chat_answer(inner) : NULL;
        free(inner);
    }
    }
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
    if (strcmp(method, "POST") || strcmp(url, "/v1/chat/completions"))
        return reply(c, 404, strdup("{\"error\":{\"message\":\"not found\"}}"));
    return answer(f, c, cn->body ? cn->body : "", cn->len);
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
