/*
 * fake_imageserver: see fake_imageserver.h. libmicrohttpd with a thread per
 * connection, so a slow answer (the delay) holds only its own client, as on
 * a real GPU server where each client waits for its image. Request bodies are
 * collected per connection, parsed with Jansson, and the image is drawn with
 * a splitmix64 generator seeded from hash(prompt) ^ seed, encoded with
 * libpng's simplified writer.
 */
#include "fake_imageserver.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <png.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#define MAX_BODY (8u << 20)
#define MAX_SDJOBS 256
#define MAX_COMFY 4096

typedef struct {
    int id;
    uint8_t *png;
    size_t len;
    double ready_ms;
} comfy_item;

/* sd-server's async jobs (/sdcpp/v1/img_gen): one worker renders them in
 * turn, each taking the delay; a job is queued before its start, generating
 * until its end. */
typedef struct {
    int id;
    double start_ms, end_ms;
    int cancelled;
    uint8_t *png;
    size_t len;
} sd_job;

struct fake_img {
    struct MHD_Daemon *d;
    int flavor;        /* FAKE_IMG_* */
    char model[128];   /* the loaded model */
    int model_switch;  /* A1111: override_settings.sd_model_checkpoint switches the model */
    int rendering;     /* sync renders under way */
    int interrupt_gen; /* bumped by POST /sdapi/v1/interrupt */
    int interrupts, cancels, cancels_refused;
    int max_inflight; /* most renders under way or queued at once */
    fake_img_used last;
    int have_last;
    sd_job *sdjobs; /* ring of MAX_SDJOBS */
    int next_sdjob;
    double sd_busy_until;
    char url[64];
    int w, h;
    pthread_mutex_t mu;
    int delay_ms, fail_next, fail_http, fail_always;
    int poll_delay_ms; /* before each answer to GET /sdcpp/v1/jobs/{id} */
    int blank_k, dark_k, corrupt_k, notimage_k, garbage_k, photo_k;
    uint8_t *photo;
    size_t photo_len;
    int renders;
    int64_t *seeds;
    size_t nseeds, capseeds;
    comfy_item *comfy; /* ring of MAX_COMFY */
    int next_comfy;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint64_t sm64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int encode_png(const uint8_t *rgb, int w, int h, uint8_t **png, size_t *len)
{
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = (png_uint_32)w;
    im.height = (png_uint_32)h;
    im.format = PNG_FORMAT_RGB;
    im.flags = PNG_IMAGE_FLAG_FAST; /* the fake should cost the benchmark as little as it can */
    png_alloc_size_t n = 0;
    if (!png_image_write_get_memory_size(im, n, 0, rgb, 0, NULL))
        return -1;
    uint8_t *b = malloc(n);
    if (!b)
        return -1;
    if (!png_image_write_to_memory(&im, b, &n, 0, rgb, 0, NULL)) {
        free(b);
        return -1;
    }
    *png = b;
    *len = n;
    return 0;
}

int fake_img_draw_png(const char *prompt, int64_t seed, int w, int h, uint8_t **png, size_t *len)
{
    uint64_t s = 1469598103934665603ULL;
    for (const char *p = prompt; p && *p; p++)
        s = (s ^ (unsigned char)*p) * 1099511628211ULL;
    s ^= (uint64_t)seed * 0x9e3779b97f4a7c15ULL;
    uint8_t *rgb = malloc((size_t)w * h * 3);
    if (!rgb)
        return -1;
    /* background: a two-colour gradient in a random direction */
    int c0[3], c1[3];
    for (int c = 0; c < 3; c++) {
        c0[c] = 50 + (int)(sm64(&s) % 150);
        c1[c] = 50 + (int)(sm64(&s) % 150);
    }
    int horiz = (int)(sm64(&s) & 1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double t = horiz ? (double)x / w : (double)y / h;
            for (int c = 0; c < 3; c++)
                rgb[((size_t)y * w + x) * 3 + c] = (uint8_t)(c0[c] + (c1[c] - c0[c]) * t);
        }
    /* random rectangles and discs: the structure the perceptual hash sees */
    int nshapes = 4 + (int)(sm64(&s) % 5);
    for (int k = 0; k < nshapes; k++) {
        int x0 = (int)(sm64(&s) % (uint64_t)w), y0 = (int)(sm64(&s) % (uint64_t)h);
        int rw = w / 8 + (int)(sm64(&s) % (uint64_t)(w / 2)),
            rh = h / 8 + (int)(sm64(&s) % (uint64_t)(h / 2));
        int disc = (int)(sm64(&s) & 1);
        uint8_t col[3];
        for (int c = 0; c < 3; c++)
            col[c] = (uint8_t)(30 + sm64(&s) % 200);
        for (int y = y0; y < y0 + rh && y < h; y++)
            for (int x = x0; x < x0 + rw && x < w; x++) {
                if (disc) {
                    double dx = (x - x0 - rw / 2.0) / (rw / 2.0), dy = (y - y0 - rh / 2.0) / (rh / 2.0);
                    if (dx * dx + dy * dy > 1)
                        continue;
                }
                memcpy(rgb + ((size_t)y * w + x) * 3, col, 3);
            }
    }
    /* fine diagonal stripes: texture, so blur checks pass. No per-pixel noise: it would make
     * every PNG incompressible and the fake, not the pipeline, would be what a benchmark
     * measures. */
    int period = 3 + (int)(sm64(&s) % 5);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int d = ((x + y) / period) % 2 ? 12 : -12;
            for (int c = 0; c < 3; c++) {
                uint8_t *p = rgb + ((size_t)y * w + x) * 3 + c;
                int v = *p + d;
                *p = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    int r = encode_png(rgb, w, h, png, len);
    free(rgb);
    return r;
}

static int flat_png(int w, int h, int level, int noise, uint8_t **png, size_t *len)
{
    uint8_t *rgb = malloc((size_t)w * h * 3);
    if (!rgb)
        return -1;
    uint64_t s = 7;
    for (size_t i = 0; i < (size_t)w * h; i++) /* grey noise: full luma spread */
        rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] =
            (uint8_t)(level + (noise ? (int)(sm64(&s) % (uint64_t)noise) : 0));
    int r = encode_png(rgb, w, h, png, len);
    free(rgb);
    return r;
}

static const char k_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64(const uint8_t *d, size_t n)
{
    char *o = malloc((n + 2) / 3 * 4 + 1), *p = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) |
                     (i + 2 < n ? d[i + 2] : 0);
        *p++ = k_b64[v >> 18 & 63];
        *p++ = k_b64[v >> 12 & 63];
        *p++ = i + 1 < n ? k_b64[v >> 6 & 63] : '=';
        *p++ = i + 2 < n ? k_b64[v & 63] : '=';
    }
    *p = '\0';
    return o;
}

/* ---- request handling ----------------------------------------------------------- */

typedef struct {
    char *body;
    size_t len;
    int too_big;
} conn;

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status, const char *type,
                             void *data, size_t len, int owned)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, data, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", type);
    enum MHD_Result ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result reply_str(struct MHD_Connection *c, unsigned status, const char *s)
{
    return reply(c, status, "application/json", (void *)s, strlen(s), 0);
}

enum { OUT_OK = 0, OUT_BLANK, OUT_DARK, OUT_CORRUPT, OUT_NOTIMAGE, OUT_GARBAGE, OUT_PHOTO,
       OUT_FAIL };

/* Counts the render, records the seed, decides what this request gets. */
static int decide(fake_img *f, int64_t seed, int *http, int *delay)
{
    pthread_mutex_lock(&f->mu);
    int n = ++f->renders;
    if (f->nseeds == f->capseeds) {
        size_t nc = f->capseeds ? f->capseeds * 2 : 1024;
        int64_t *ns = realloc(f->seeds, nc * sizeof *ns);
        if (ns) {
            f->seeds = ns;
            f->capseeds = nc;
        }
    }
    if (f->nseeds < f->capseeds)
        f->seeds[f->nseeds++] = seed;
    int out = OUT_OK;
    *delay = f->delay_ms;
    if (f->fail_always) {
        *http = f->fail_always;
        out = OUT_FAIL;
    } else if (f->fail_next > 0) {
        f->fail_next--;
        *http = f->fail_http;
        out = OUT_FAIL;
    } else if (f->blank_k && n % f->blank_k == 0) {
        out = OUT_BLANK;
    } else if (f->dark_k && n % f->dark_k == 0) {
        out = OUT_DARK;
    } else if (f->corrupt_k && n % f->corrupt_k == 0) {
        out = OUT_CORRUPT;
    } else if (f->notimage_k && n % f->notimage_k == 0) {
        out = OUT_NOTIMAGE;
    } else if (f->garbage_k && n % f->garbage_k == 0) {
        out = OUT_GARBAGE;
    } else if (f->photo_k && f->photo && n % f->photo_k == 0) {
        out = OUT_PHOTO;
    }
    pthread_mutex_unlock(&f->mu);
    return out;
}

/* The image bytes for an outcome (malloc'd). */
static int make_image(fake_img *f, int out, const char *prompt, int64_t seed, uint8_t **png,
                      size_t *len)
{
    switch (out) {
    case OUT_BLANK: return flat_png(f->w, f->h, 128, 0, png, len);
    case OUT_DARK: return flat_png(f->w, f->h, 0, 50, png, len);
    case OUT_NOTIMAGE:
        *png = (uint8_t *)strdup("this is not an image at all");
        *len = strlen((char *)*png);
        return *png ? 0 : -1;
    case OUT_PHOTO:
        pthread_mutex_lock(&f->mu);
        *png = malloc(f->photo_len);
        if (*png)
            memcpy(*png, f->photo, f->photo_len);
        *len = f->photo_len;
        pthread_mutex_unlock(&f->mu);
        return *png ? 0 : -1;
    default: {
        int r = fake_img_draw_png(prompt, seed, f->w, f->h, png, len);
        if (r == 0 && out == OUT_CORRUPT)
            *len /= 2; /* truncated mid-IDAT */
        return r;
    }
    }
}

static void sleep_ms(int ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* POST /v1/images/generations of the A1111 flavours: seed, steps, cfg_scale and
 * negative_prompt as top-level fields (LocalAI's way). */
static enum MHD_Result render_sync(fake_img *f, struct MHD_Connection *c, json_t *req)
{
    const char *prompt = json_string_value(json_object_get(req, "prompt"));
    json_t *sj = json_object_get(req, "seed");
    if (!prompt)
        return reply_str(c, 422, "{\"detail\":\"prompt missing\"}");
    int64_t seed = json_is_integer(sj) ? json_integer_value(sj) : -1;
    int http = 500, delay = 0;
    int out = decide(f, seed, &http, &delay);
    sleep_ms(delay);
    if (out == OUT_FAIL)
        return reply_str(c, (unsigned)http, "{\"error\":\"injected failure\"}");
    if (out == OUT_GARBAGE)
        return reply(c, 200, "text/html", (void *)"<html>Bad gateway</html>", 24, 0);
    uint8_t *png;
    size_t len;
    if (make_image(f, out, prompt, seed, &png, &len) != 0)
        return reply_str(c, 500, "{\"error\":\"out of memory\"}");
    char *enc = b64(png, len);
    free(png);
    json_t *ans = json_pack("{s:i, s:[{s:s}]}", "created", 0, "data", "b64_json", enc);
    free(enc);
    char *s = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
    json_decref(ans);
    if (!s)
        return reply_str(c, 500, "{\"error\":\"out of memory\"}");
    return reply(c, 200, "application/json", s, strlen(s), 1);
}

/* First input named key anywhere in the workflow. */
static json_t *find_input(json_t *wf, const char *key)
{
    const char *id;
    json_t *node;
    json_object_foreach(wf, id, node)
    {
        json_t *v = json_object_get(json_object_get(node, "inputs"), key);
        if (v)
            return v;
    }
    return NULL;
}

static enum MHD_Result comfy_prompt(fake_img *f, struct MHD_Connection *c, json_t *req)
{
    json_t *wf = json_object_get(req, "prompt");
    const char *prompt = json_string_value(find_input(wf, "text"));
    json_t *sj = find_input(wf, "seed");
    if (!json_is_object(wf) || !prompt || !json_is_integer(sj))
        return reply_str(c, 400, "{\"error\":{\"message\":\"invalid prompt\"}}");
    int64_t seed = json_integer_value(sj);
    int http = 500, delay = 0;
    int out = decide(f, seed, &http, &delay);
    if (out == OUT_FAIL)
        return reply_str(c, (unsigned)http, "{\"error\":\"injected failure\"}");
    if (out == OUT_GARBAGE)
        return reply(c, 200, "text/plain", (void *)"garbage", 7, 0);
    uint8_t *png;
    size_t len;
    if (make_image(f, out, prompt, seed, &png, &len) != 0)
        return reply_str(c, 500, "{\"error\":\"out of memory\"}");
    pthread_mutex_lock(&f->mu);
    int id = f->next_comfy++;
    comfy_item *it = &f->comfy[id % MAX_COMFY];
    free(it->png);
    it->id = id;
    it->png = png;
    it->len = len;
    it->ready_ms = now_ms() + delay;
    pthread_mutex_unlock(&f->mu);
    char buf[128];
    snprintf(buf, sizeof buf, "{\"prompt_id\":\"p-%d\",\"number\":%d,\"node_errors\":{}}", id, id);
    return reply_str(c, 200, buf);
}

static comfy_item *comfy_find(fake_img *f, int id)
{
    if (id < 0 || id >= f->next_comfy || id < f->next_comfy - MAX_COMFY)
        return NULL;
    comfy_item *it = &f->comfy[id % MAX_COMFY];
    return it->id == id && it->png ? it : NULL;
}

static enum MHD_Result comfy_history(fake_img *f, struct MHD_Connection *c, const char *pid)
{
    int id = -1;
    if (sscanf(pid, "p-%d", &id) != 1)
        return reply_str(c, 200, "{}");
    pthread_mutex_lock(&f->mu);
    comfy_item *it = comfy_find(f, id);
    int ready = it && now_ms() >= it->ready_ms;
    pthread_mutex_unlock(&f->mu);
    if (!ready)
        return reply_str(c, 200, "{}");
    char buf[512];
    snprintf(buf, sizeof buf,
             "{\"%s\":{\"prompt\":[],\"outputs\":{\"9\":{\"images\":[{\"filename\":\"ComfyUI_%d_.png\","
             "\"subfolder\":\"\",\"type\":\"output\"}]}},\"status\":{\"status_str\":\"success\","
             "\"completed\":true,\"messages\":[]}}}",
             pid, id);
    return reply_str(c, 200, buf);
}

static enum MHD_Result comfy_view(fake_img *f, struct MHD_Connection *c)
{
    const char *fn = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "filename");
    int id = -1;
    if (!fn || sscanf(fn, "ComfyUI_%d_.png", &id) != 1)
        return reply_str(c, 404, "{\"error\":\"no such file\"}");
    pthread_mutex_lock(&f->mu);
    comfy_item *it = comfy_find(f, id);
    uint8_t *copy = it ? malloc(it->len) : NULL;
    size_t len = it ? it->len : 0;
    if (copy)
        memcpy(copy, it->png, len);
    pthread_mutex_unlock(&f->mu);
    if (!copy)
        return reply_str(c, 404, "{\"error\":\"no such file\"}");
    return reply(c, 200, "image/png", copy, len, 1);
}

/* ---- the real servers' behaviours (fake_img_set_flavor) ---------------------------- */

/* What one render is asked for and then uses. */
typedef struct {
    char *prompt; /* malloc'd */
    fake_img_used u;
    int64_t seed_asked; /* as sent (-1: random) */
    int asked_w, asked_h;
} render_params;

static const char *const k_a1111_samplers[] = {"Euler a",  "Euler",        "LMS",  "Heun", "DPM2",
                                               "DPM++ 2M", "DPM++ 2M SDE", "DDIM", "LCM"};
static const char *const k_a1111_old_samplers[] = {
    "Euler a", "Euler", "DPM++ 2M", "DPM++ 2M Karras", "DPM++ 2M SDE Karras", "DDIM"};
static const char *const k_sd_samplers[] = {
    "euler", "euler_a", "heun",          "dpm2", "dpm++2s_a",   "dpm++2m", "dpm++2mv2",
    "ipndm", "lcm",     "ddim_trailing", "tcd",  "dpm++2m_sde", "lms"};
static const char *const k_sd_schedulers[] = {"discrete",    "karras", "exponential", "ays",
                                              "sgm_uniform", "simple", "lcm"};
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static int in_list(const char *const *l, size_t n, const char *s)
{
    for (size_t i = 0; s && i < n; i++)
        if (!strcmp(l[i], s))
            return 1;
    return 0;
}

/* sd-server's A1111 route: its own names first, then A1111's (lower-cased). */
static const char *sd_sampler_from_a1111(const char *name)
{
    static const char *const map[][2] = {{"euler a", "euler_a"},  {"euler", "euler"},
                                         {"heun", "heun"},        {"dpm2", "dpm2"},
                                         {"lcm", "lcm"},          {"ddim", "ddim_trailing"},
                                         {"dpm++ 2m", "dpm++2m"}, {"dpm++ 2m sde", "dpm++2m_sde"}};
    if (in_list(k_sd_samplers, NELEM(k_sd_samplers), name))
        return name;
    char low[64];
    size_t i = 0;
    for (; name && name[i] && i < sizeof low - 1; i++)
        low[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    low[i] = '\0';
    for (size_t k = 0; k < NELEM(map); k++)
        if (!strcmp(low, map[k][0]))
            return map[k][1];
    return NULL;
}

static int round64(int v)
{
    return (v + 63) / 64 * 64;
}

/* A1111's infotext (also what sd-server writes into its PNGs). */
static char *infotext(const fake_img *f, const render_params *p)
{
    char *t = malloc(strlen(p->prompt) + 2048);
    if (!t)
        return NULL;
    int n = sprintf(t, "%s\n", p->prompt);
    if (p->u.negative[0])
        n += sprintf(t + n, "Negative prompt: %s\n", p->u.negative);
    if (f->flavor == FAKE_IMG_SDCPP)
        sprintf(t + n,
                "Steps: %d, CFG scale: %f, Guidance: 3.500000, Eta: 0.000000, Seed: %lld, "
                "Size: %dx%d, Model: %s, RNG: cuda, Sampler: %s %s, ",
                p->u.steps, p->u.cfg, (long long)p->u.seed, p->asked_w, p->asked_h, p->u.model,
                p->u.sampler, p->u.scheduler[0] ? p->u.scheduler : "discrete");
    else
        sprintf(t + n,
                "Steps: %d, Sampler: %s, %s%s%sCFG scale: %g, Seed: %lld, Size: %dx%d, "
                "Model hash: 6ce0161689, Model: %s, Version: %s",
                p->u.steps, p->u.sampler, p->u.scheduler[0] ? "Schedule type: " : "",
                p->u.scheduler, p->u.scheduler[0] ? ", " : "", p->u.cfg, (long long)p->u.seed,
                p->asked_w, p->asked_h, p->u.model,
                f->flavor == FAKE_IMG_A1111 ? "v1.10.1" : "v1.6.0");
    return t;
}

/* Inserts a tEXt chunk key=text after the IHDR of png (realloc'd). */
static int png_add_text(uint8_t **png, size_t *len, const char *key, const char *text)
{
    size_t kl = strlen(key), tl = strlen(text), dl = kl + 1 + tl, at = 8 + 25;
    if (*len < at)
        return -1;
    uint8_t *n = malloc(*len + dl + 12);
    if (!n)
        return -1;
    memcpy(n, *png, at);
    uint8_t *c = n + at;
    c[0] = (uint8_t)(dl >> 24), c[1] = (uint8_t)(dl >> 16), c[2] = (uint8_t)(dl >> 8),
    c[3] = (uint8_t)dl;
    memcpy(c + 4, "tEXt", 4);
    memcpy(c + 8, key, kl + 1);
    memcpy(c + 8 + kl + 1, text, tl);
    uLong crc = crc32(0, c + 4, (uInt)(4 + dl));
    uint8_t *q = c + 8 + dl;
    q[0] = (uint8_t)(crc >> 24), q[1] = (uint8_t)(crc >> 16), q[2] = (uint8_t)(crc >> 8),
    q[3] = (uint8_t)crc;
    memcpy(q + 4, *png + at, *len - at);
    free(*png);
    *png = n;
    *len += dl + 12;
    return 0;
}

/* The defaults a server renders with when not told. */
static void params_init(fake_img *f, render_params *p, const char *prompt)
{
    memset(p, 0, sizeof *p);
    p->prompt = strdup(prompt ? prompt : "");
    int sd = f->flavor == FAKE_IMG_SDCPP;
    p->u.seed = p->seed_asked = sd ? 42 : -1;
    p->asked_w = p->asked_h = 512;
    p->u.steps = 20;
    p->u.cfg = 7;
    snprintf(p->u.sampler, sizeof p->u.sampler, "%s", sd ? "euler_a" : "Euler a");
    pthread_mutex_lock(&f->mu);
    snprintf(p->u.model, sizeof p->u.model, "%s", f->model);
    pthread_mutex_unlock(&f->mu);
}

/* sd-server's native schema (the <sd_cpp_extra_args> JSON and /sdcpp/v1/img_gen). */
static void params_from_sdcpp(render_params *p, json_t *j)
{
    json_t *v, *sp = json_object_get(j, "sample_params");
    if (json_is_string(v = json_object_get(j, "negative_prompt")))
        snprintf(p->u.negative, sizeof p->u.negative, "%s", json_string_value(v));
    if (json_is_integer(v = json_object_get(j, "seed")))
        p->u.seed = p->seed_asked = json_integer_value(v);
    if (json_is_integer(v = json_object_get(j, "width")))
        p->asked_w = (int)json_integer_value(v);
    if (json_is_integer(v = json_object_get(j, "height")))
        p->asked_h = (int)json_integer_value(v);
    if (json_is_integer(v = json_object_get(sp, "sample_steps")))
        p->u.steps = (int)json_integer_value(v);
    if (json_is_number(v = json_object_get(json_object_get(sp, "guidance"), "txt_cfg")))
        p->u.cfg = json_number_value(v);
    const char *m = json_string_value(json_object_get(sp, "sample_method"));
    if (in_list(k_sd_samplers, NELEM(k_sd_samplers), m)) /* unknown: silently the default */
        snprintf(p->u.sampler, sizeof p->u.sampler, "%s", m);
    m = json_string_value(json_object_get(sp, "scheduler"));
    if (in_list(k_sd_schedulers, NELEM(k_sd_schedulers), m))
        snprintf(p->u.scheduler, sizeof p->u.scheduler, "%s", m);
}

/* The A1111 txt2img fields, as A1111 (flavors A1111*) or sd-server reads them.
 * Returns 0, or an HTTP status with *msg. */
static int params_from_a1111(fake_img *f, render_params *p, json_t *j, const char **msg)
{
    json_t *v;
    if (json_is_string(v = json_object_get(j, "negative_prompt")))
        snprintf(p->u.negative, sizeof p->u.negative, "%s", json_string_value(v));
    if (json_is_integer(v = json_object_get(j, "seed")))
        p->u.seed = p->seed_asked = json_integer_value(v);
    if (json_is_integer(v = json_object_get(j, "width")))
        p->asked_w = (int)json_integer_value(v);
    if (json_is_integer(v = json_object_get(j, "height")))
        p->asked_h = (int)json_integer_value(v);
    if (json_is_integer(v = json_object_get(j, "steps")))
        p->u.steps = (int)json_integer_value(v);
    if (json_is_number(v = json_object_get(j, "cfg_scale")))
        p->u.cfg = json_number_value(v);
    const char *sampler = json_string_value(json_object_get(j, "sampler_name"));
    const char *sched = json_string_value(json_object_get(j, "scheduler"));
    if (f->flavor == FAKE_IMG_SDCPP) {
        const char *m = sampler ? sd_sampler_from_a1111(sampler) : NULL;
        if (m) /* unknown: silently the default, as sd-server does */
            snprintf(p->u.sampler, sizeof p->u.sampler, "%s", m);
        if (in_list(k_sd_schedulers, NELEM(k_sd_schedulers), sched))
            snprintf(p->u.scheduler, sizeof p->u.scheduler, "%s", sched);
        return 0;
    }
    int old = f->flavor == FAKE_IMG_A1111_OLD;
    if (sampler && *sampler) {
        if (!(old ? in_list(k_a1111_old_samplers, NELEM(k_a1111_old_samplers), sampler)
                  : in_list(k_a1111_samplers, NELEM(k_a1111_samplers), sampler))) {
            *msg = "{\"detail\":\"Sampler not found\"}";
            return 404;
        }
        snprintf(p->u.sampler, sizeof p->u.sampler, "%s", sampler);
    }
    if (!old && sched && *sched) {
        static const char *const names[][2] = {{"automatic", ""},
                                               {"karras", "Karras"},
                                               {"exponential", "Exponential"},
                                               {"sgm_uniform", "SGM Uniform"}};
        size_t k = 0;
        for (; k < NELEM(names); k++)
            if (!strcmp(sched, names[k][0]) || (names[k][1][0] && !strcmp(sched, names[k][1])))
                break;
        if (k == NELEM(names)) {
            *msg = "{\"detail\":\"Scheduler not found\"}";
            return 404;
        }
        snprintf(p->u.scheduler, sizeof p->u.scheduler, "%s", names[k][1]);
    }
    if (p->u.seed == -1)
        p->u.seed = 1234567;
    const char *ck = json_string_value(
        json_object_get(json_object_get(j, "override_settings"), "sd_model_checkpoint"));
    pthread_mutex_lock(&f->mu);
    if (ck && *ck && f->model_switch)
        snprintf(p->u.model, sizeof p->u.model, "%s", ck);
    pthread_mutex_unlock(&f->mu);
    char *br = strstr(p->u.model, " ["); /* A1111 reports the model's name, not its title */
    if (br)
        *br = '\0';
    char *dot = strrchr(p->u.model, '.');
    if (dot && !strcmp(dot, ".safetensors"))
        *dot = '\0';
    return 0;
}

/* The image for p (sizes: sd-server's rounded up to 64, A1111's the fake's own),
 * with sd-server's "parameters" text; records what was used. */
static int render_params_png(fake_img *f, int out, render_params *p, uint8_t **png, size_t *len)
{
    int sd = f->flavor == FAKE_IMG_SDCPP;
    p->u.width = sd ? round64(p->asked_w) : f->w;
    p->u.height = sd ? round64(p->asked_h) : f->h;
    int r;
    if (sd && out == OUT_OK) {
        r = fake_img_draw_png(p->prompt, p->u.seed, p->u.width, p->u.height, png, len);
        char *t = r == 0 ? infotext(f, p) : NULL;
        if (r == 0 && (!t || png_add_text(png, len, "parameters", t) != 0)) {
            free(*png);
            r = -1;
        }
        free(t);
    } else {
        r = make_image(f, out, p->prompt, p->u.seed, png, len);
    }
    pthread_mutex_lock(&f->mu);
    f->last = p->u;
    f->have_last = 1;
    pthread_mutex_unlock(&f->mu);
    return r;
}

/* Waits ms unless an interrupt comes first (A1111 then answers at once). */
static void render_wait(fake_img *f, int ms)
{
    pthread_mutex_lock(&f->mu);
    int gen = f->interrupt_gen;
    f->rendering++;
    if (f->rendering > f->max_inflight)
        f->max_inflight = f->rendering;
    pthread_mutex_unlock(&f->mu);
    double end = now_ms() + ms;
    for (;;) {
        pthread_mutex_lock(&f->mu);
        int stop = f->interrupt_gen != gen && f->flavor != FAKE_IMG_SDCPP;
        pthread_mutex_unlock(&f->mu);
        double left = end - now_ms();
        if (stop || left <= 0)
            break;
        sleep_ms(left < 10 ? (int)left + 1 : 10);
    }
    pthread_mutex_lock(&f->mu);
    f->rendering--;
    pthread_mutex_unlock(&f->mu);
}

static enum MHD_Result reply_json(struct MHD_Connection *c, unsigned status, json_t *ans)
{
    char *s = ans ? json_dumps(ans, JSON_COMPACT) : NULL;
    json_decref(ans);
    if (!s)
        return reply_str(c, 500, "{\"error\":\"out of memory\"}");
    return reply(c, status, "application/json", s, strlen(s), 1);
}

/* POST /sdapi/v1/txt2img of the A1111 flavours and of sd-server. */
static enum MHD_Result txt2img_real(fake_img *f, struct MHD_Connection *c, json_t *req)
{
    const char *prompt = json_string_value(json_object_get(req, "prompt"));
    if (!prompt)
        return reply_str(c, 422, "{\"detail\":\"prompt missing\"}");
    render_params p;
    params_init(f, &p, prompt);
    const char *msg = NULL;
    int bad = params_from_a1111(f, &p, req, &msg);
    if (bad) {
        free(p.prompt);
        return reply_str(c, (unsigned)bad, msg);
    }
    int http = 500, delay = 0;
    int out = decide(f, p.u.seed, &http, &delay);
    render_wait(f, delay);
    if (out == OUT_FAIL || out == OUT_GARBAGE) {
        free(p.prompt);
        return out == OUT_FAIL
                   ? reply_str(c, (unsigned)http, "{\"error\":\"injected failure\"}")
                   : reply(c, 200, "text/html", (void *)"<html>Bad gateway</html>", 24, 0);
    }
    uint8_t *png;
    size_t len;
    if (render_params_png(f, out, &p, &png, &len) != 0) {
        free(p.prompt);
        return reply_str(c, 500, "{\"error\":\"out of memory\"}");
    }
    char *enc = b64(png, len), *it = infotext(f, &p);
    free(png);
    json_t *info =
        json_pack("{s:s, s:s, s:I, s:[I], s:i, s:i, s:i, s:f, s:s, s:s, s:s, s:[s], s:{s:s}}",
                  "prompt", p.prompt, "negative_prompt", p.u.negative, "seed", (json_int_t)p.u.seed,
                  "all_seeds", (json_int_t)p.u.seed, "width", p.asked_w, "height", p.asked_h,
                  "steps", p.u.steps, "cfg_scale", p.u.cfg, "sampler_name", p.u.sampler,
                  "sd_model_name", p.u.model, "sd_model_hash", "6ce0161689", "infotexts",
                  it ? it : "", "extra_generation_params", "Schedule type", p.u.scheduler);
    if (info && f->flavor == FAKE_IMG_A1111)
        json_object_set_new(info, "scheduler",
                            json_string(p.u.scheduler[0] ? p.u.scheduler : "Automatic"));
    char *is = info ? json_dumps(info, JSON_COMPACT) : NULL;
    json_decref(info);
    json_t *ans = enc && is
                      ? json_pack("{s:[s], s:O, s:s}", "images", enc, "parameters", req, "info", is)
                      : NULL;
    free(enc);
    free(it);
    free(is);
    free(p.prompt);
    return reply_json(c, 200, ans);
}

/* Cuts <sd_cpp_extra_args>...</sd_cpp_extra_args> out of p->prompt and applies it. */
static int take_extra_args(render_params *p)
{
    char *a = strstr(p->prompt, "<sd_cpp_extra_args>");
    char *b = a ? strstr(a, "</sd_cpp_extra_args>") : NULL;
    if (!a || !b)
        return 0;
    *b = '\0';
    json_t *j = json_loads(a + 19, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return -1;
    }
    params_from_sdcpp(p, j);
    json_decref(j);
    memmove(a, b + 20, strlen(b + 20) + 1);
    size_t n = strlen(p->prompt);
    while (n > 0 && p->prompt[n - 1] == ' ')
        p->prompt[--n] = '\0';
    return 0;
}

/* sd-server's POST /v1/images/generations: prompt, n, size, output_format only. */
static enum MHD_Result openai_sdcpp(fake_img *f, struct MHD_Connection *c, json_t *req)
{
    const char *prompt = json_string_value(json_object_get(req, "prompt"));
    if (!prompt || !*prompt)
        return reply_str(c, 400, "{\"error\":\"prompt required\"}");
    render_params p;
    params_init(f, &p, prompt);
    const char *size = json_string_value(json_object_get(req, "size"));
    if (size)
        sscanf(size, "%dx%d", &p.asked_w, &p.asked_h);
    if (!p.prompt || take_extra_args(&p) != 0) {
        free(p.prompt);
        return reply_str(c, 400, "{\"error\":\"invalid sd_cpp_extra_args\"}");
    }
    int http = 500, delay = 0;
    int out = decide(f, p.u.seed, &http, &delay);
    render_wait(f, delay);
    if (out == OUT_FAIL) {
        free(p.prompt);
        return reply_str(c, (unsigned)http, "{\"error\":\"injected failure\"}");
    }
    uint8_t *png;
    size_t len;
    int r = render_params_png(f, out, &p, &png, &len);
    free(p.prompt);
    if (r != 0)
        return reply_str(c, 500, "{\"error\":\"out of memory\"}");
    char *enc = b64(png, len);
    free(png);
    json_t *ans = enc ? json_pack("{s:i, s:s, s:[{s:s}]}", "created", 0, "output_format", "png",
                                  "data", "b64_json", enc)
                      : NULL;
    free(enc);
    return reply_json(c, 200, ans);
}

static enum MHD_Result sd_capabilities(fake_img *f, struct MHD_Connection *c)
{
    json_t *sm = json_array(), *sc = json_array();
    for (size_t i = 0; i < NELEM(k_sd_samplers); i++)
        json_array_append_new(sm, json_string(k_sd_samplers[i]));
    for (size_t i = 0; i < NELEM(k_sd_schedulers); i++)
        json_array_append_new(sc, json_string(k_sd_schedulers[i]));
    char stem[128];
    pthread_mutex_lock(&f->mu);
    snprintf(stem, sizeof stem, "%s", f->model);
    pthread_mutex_unlock(&f->mu);
    char *dot = strrchr(stem, '.');
    if (dot)
        *dot = '\0';
    json_t *feat = json_pack("{s:b, s:b}", "cancel_queued", 1, "cancel_generating", 0);
    return reply_json(
        c, 200,
        json_pack("{s:{s:s, s:s, s:s}, s:s, s:[s], s:o, s:o, s:{s:o}, s:{s:i, s:i, s:i, s:i, s:i, "
                  "s:i}}",
                  "model", "name", f->model, "stem", stem, "path", f->model, "current_mode",
                  "img_gen", "supported_modes", "img_gen", "samplers", sm, "schedulers", sc,
                  "features_by_mode", "img_gen", feat, "limits", "min_width", 64, "max_width", 4096,
                  "min_height", 64, "max_height", 4096, "max_batch_count", 8, "max_queue_size",
                  64));
}

/* Async jobs not ended (caller holds mu). */
static int sd_busy(fake_img *f)
{
    int n = 0;
    double now = now_ms();
    for (int k = 0; k < MAX_SDJOBS; k++)
        n += f->sdjobs[k].png && !f->sdjobs[k].cancelled && now < f->sdjobs[k].end_ms;
    return n;
}

/* POST /sdcpp/v1/img_gen: queued behind the jobs before it, one worker. */
static enum MHD_Result sd_img_gen(fake_img *f, struct MHD_Connection *c, json_t *req)
{
    const char *prompt = json_string_value(json_object_get(req, "prompt"));
    if (!prompt)
        return reply_str(c, 400, "{\"error\":\"prompt required\"}");
    render_params p;
    params_init(f, &p, prompt);
    params_from_sdcpp(&p, req);
    int http = 500, delay = 0;
    int out = decide(f, p.u.seed, &http, &delay);
    if (out == OUT_FAIL) {
        free(p.prompt);
        return reply_str(c, (unsigned)http, "{\"error\":\"injected failure\"}");
    }
    uint8_t *png;
    size_t len;
    int r = render_params_png(f, out, &p, &png, &len);
    free(p.prompt);
    if (r != 0)
        return reply_str(c, 500, "{\"error\":\"out of memory\"}");
    pthread_mutex_lock(&f->mu);
    int id = f->next_sdjob++;
    sd_job *j = &f->sdjobs[id % MAX_SDJOBS];
    free(j->png);
    double now = now_ms();
    j->id = id;
    j->start_ms = f->sd_busy_until > now ? f->sd_busy_until : now;
    j->end_ms = j->start_ms + delay;
    f->sd_busy_until = j->end_ms;
    j->cancelled = 0;
    j->png = png;
    j->len = len;
    int pending = sd_busy(f);
    if (pending > f->max_inflight)
        f->max_inflight = pending;
    pthread_mutex_unlock(&f->mu);
    char buf[200];
    snprintf(buf, sizeof buf,
             "{\"id\":\"job_%d\",\"kind\":\"img_gen\",\"status\":\"queued\","
             "\"created\":0,\"poll_url\":\"/sdcpp/v1/jobs/job_%d\"}",
             id, id);
    return reply_str(c, 202, buf);
}

static sd_job *sd_find(fake_img *f, const char *idtext)
{
    int id = -1;
    if (sscanf(idtext, "job_%d", &id) != 1 || id < 0 || id >= f->next_sdjob ||
        id < f->next_sdjob - MAX_SDJOBS)
        return NULL;
    sd_job *j = &f->sdjobs[id % MAX_SDJOBS];
    return j->id == id && j->png ? j : NULL;
}

static const char *sd_state(const sd_job *j, double now)
{
    return j->cancelled        ? "cancelled"
           : now < j->start_ms ? "queued"
           : now < j->end_ms   ? "generating"
                               : "completed";
}

/* GET /sdcpp/v1/jobs/{id} and POST /sdcpp/v1/jobs/{id}/cancel. */
static enum MHD_Result sd_job_route(fake_img *f, struct MHD_Connection *c, const char *rest,
                                    int cancel)
{
    char idt[64];
    snprintf(idt, sizeof idt, "%.*s", (int)strcspn(rest, "/"), rest);
    pthread_mutex_lock(&f->mu);
    sd_job *j = sd_find(f, idt);
    if (!j) {
        pthread_mutex_unlock(&f->mu);
        return reply_str(c, 404, "{\"error\":\"job not found\"}");
    }
    double now = now_ms();
    const char *st = sd_state(j, now);
    if (cancel && !strcmp(st, "generating")) {
        f->cancels_refused++;
        pthread_mutex_unlock(&f->mu);
        return reply_str(c, 409,
                         "{\"error\":\"job is currently generating and cannot be "
                         "interrupted yet\"}");
    }
    if (cancel && !strcmp(st, "queued")) {
        /* the jobs after it move up */
        double d = j->end_ms - j->start_ms;
        for (int k = 0; k < MAX_SDJOBS; k++) {
            sd_job *o = &f->sdjobs[k];
            if (o->png && !o->cancelled && o->start_ms > j->start_ms) {
                o->start_ms -= d;
                o->end_ms -= d;
            }
        }
        f->sd_busy_until -= d;
        j->cancelled = 1;
        f->cancels++;
        st = "cancelled";
    }
    json_t *ans = json_pack("{s:s, s:s, s:s}", "id", idt, "kind", "img_gen", "status", st);
    if (ans && !strcmp(st, "completed")) {
        char *enc = b64(j->png, j->len);
        json_object_set_new(ans, "result",
                            json_pack("{s:s, s:[{s:i, s:s}]}", "output_format", "png", "images",
                                      "index", 0, "b64_json", enc ? enc : ""));
        free(enc);
    } else if (ans && !strcmp(st, "cancelled")) {
        json_object_set_new(
            ans, "error",
            json_pack("{s:s, s:s}", "code", "cancelled", "message", "job cancelled by client"));
    }
    pthread_mutex_unlock(&f->mu);
    return reply_json(c, 200, ans);
}

/* GET routes of the real servers; NULL reply means not one of them. */
static int real_get(fake_img *f, struct MHD_Connection *c, const char *url, enum MHD_Result *r)
{
    int fl = f->flavor;
    if (fl == FAKE_IMG_SDCPP && !strcmp(url, "/sdcpp/v1/capabilities")) {
        *r = sd_capabilities(f, c);
    } else if (fl == FAKE_IMG_SDCPP && !strncmp(url, "/sdcpp/v1/jobs/", 15)) {
        pthread_mutex_lock(&f->mu);
        int wait = f->poll_delay_ms;
        pthread_mutex_unlock(&f->mu);
        if (wait > 0) { /* a busy server slow to answer a status request */
            struct timespec ts = {wait / 1000, (wait % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        *r = sd_job_route(f, c, url + 15, 0);
    } else if (!strcmp(url, "/sdapi/v1/samplers")) {
        json_t *a = json_array();
        const char *const *l = fl == FAKE_IMG_A1111_OLD ? k_a1111_old_samplers
                               : fl == FAKE_IMG_SDCPP   ? k_sd_samplers
                                                        : k_a1111_samplers;
        size_t n = fl == FAKE_IMG_A1111_OLD ? NELEM(k_a1111_old_samplers)
                   : fl == FAKE_IMG_SDCPP   ? NELEM(k_sd_samplers)
                                            : NELEM(k_a1111_samplers);
        for (size_t i = 0; i < n; i++)
            json_array_append_new(
                a, json_pack("{s:s, s:[], s:{}}", "name", l[i], "aliases", "options"));
        *r = reply_json(c, 200, a);
    } else if (!strcmp(url, "/sdapi/v1/schedulers") && fl == FAKE_IMG_A1111) {
        *r = reply_str(c, 200,
                       "[{\"name\":\"automatic\",\"label\":\"Automatic\"},{\"name\":"
                       "\"karras\",\"label\":\"Karras\"},{\"name\":\"exponential\","
                       "\"label\":\"Exponential\"},{\"name\":\"sgm_uniform\",\"label\":"
                       "\"SGM Uniform\"}]");
    } else if (!strcmp(url, "/sdapi/v1/options")) {
        char buf[300];
        pthread_mutex_lock(&f->mu);
        snprintf(buf, sizeof buf,
                 "{\"sd_model_checkpoint\":\"%s [6ce0161689]\","
                 "\"samples_format\":\"png\"}",
                 f->model);
        pthread_mutex_unlock(&f->mu);
        *r = reply_str(c, 200, buf);
    } else {
        return 0;
    }
    return 1;
}

/* POST routes of the real servers; 0 when not one of them. */
static int real_post(fake_img *f, struct MHD_Connection *c, const char *url, json_t *req,
                     enum MHD_Result *r)
{
    int fl = f->flavor;
    if (!strcmp(url, "/sdapi/v1/txt2img")) {
        *r = txt2img_real(f, c, req);
    } else if (!strcmp(url, "/sdapi/v1/interrupt") && fl != FAKE_IMG_SDCPP) {
        pthread_mutex_lock(&f->mu);
        f->interrupt_gen++;
        f->interrupts++;
        pthread_mutex_unlock(&f->mu);
        *r = reply_str(c, 200, "{}");
    } else if (fl == FAKE_IMG_SDCPP && !strcmp(url, "/v1/images/generations")) {
        *r = openai_sdcpp(f, c, req);
    } else if (fl == FAKE_IMG_SDCPP && !strcmp(url, "/sdcpp/v1/img_gen")) {
        *r = sd_img_gen(f, c, req);
    } else if (fl == FAKE_IMG_SDCPP && !strncmp(url, "/sdcpp/v1/jobs/", 15) &&
               strstr(url, "/cancel")) {
        *r = sd_job_route(f, c, url + 15, 1);
    } else {
        return 0;
    }
    return 1;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    fake_img *f = cls;
    conn *cn = *con_cls;
    if (!cn) {
        cn = calloc(1, sizeof *cn);
        if (!cn)
            return MHD_NO;
        *con_cls = cn;
        return MHD_YES;
    }
    if (*upload_size) {
        if (cn->len + *upload_size > MAX_BODY) {
            cn->too_big = 1;
        } else {
            char *nb = realloc(cn->body, cn->len + *upload_size + 1);
            if (!nb)
                return MHD_NO;
            memcpy(nb + cn->len, upload, *upload_size);
            cn->body = nb;
            cn->len += *upload_size;
            cn->body[cn->len] = '\0';
        }
        *upload_size = 0;
        return MHD_YES;
    }
    enum MHD_Result rr;
    if (!strcmp(method, "GET")) {
        if (real_get(f, c, url, &rr))
            return rr;
        if (!strncmp(url, "/history/", 9))
            return comfy_history(f, c, url + 9);
        if (!strcmp(url, "/view"))
            return comfy_view(f, c);
        return reply_str(c, 404, "{\"detail\":\"Not Found\"}");
    }
    if (strcmp(method, "POST"))
        return reply_str(c, 405, "{\"detail\":\"Method Not Allowed\"}");
    if (cn->too_big)
        return reply_str(c, 413, "{\"detail\":\"too large\"}");
    json_t *req = cn->body ? json_loadb(cn->body, cn->len, 0, NULL) : NULL;
    if (!json_is_object(req)) {
        json_decref(req);
        return reply_str(c, 422, "{\"detail\":\"body is not a JSON object\"}");
    }
    enum MHD_Result r;
    if (real_post(f, c, url, req, &r))
        ;
    else if (!strcmp(url, "/v1/images/generations"))
        r = render_sync(f, c, req);
    else if (!strcmp(url, "/prompt"))
        r = comfy_prompt(f, c, req);
    else
        r = reply_str(c, 404, "{\"detail\":\"Not Found\"}");
    json_decref(req);
    return r;
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

int fake_img_start(int w, int h, fake_img **out)
{
    *out = NULL;
    fake_img *f = calloc(1, sizeof *f);
    if (!f)
        return -1;
    f->w = w > 0 ? w : 96;
    f->h = h > 0 ? h : 64;
    f->comfy = calloc(MAX_COMFY, sizeof *f->comfy);
    f->sdjobs = calloc(MAX_SDJOBS, sizeof *f->sdjobs);
    snprintf(f->model, sizeof f->model, "base.safetensors");
    f->model_switch = 1;
    pthread_mutex_init(&f->mu, NULL);
    if (!f->comfy || !f->sdjobs) {
        free(f->comfy);
        free(f->sdjobs);
        free(f);
        return -1;
    }
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    f->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                                MHD_USE_ERROR_LOG,
                            0, NULL, NULL, on_request, f, MHD_OPTION_SOCK_ADDR, &sa,
                            MHD_OPTION_NOTIFY_COMPLETED, on_done, f, MHD_OPTION_CONNECTION_TIMEOUT,
                            (unsigned)30, MHD_OPTION_END);
    if (!f->d) {
        free(f->comfy);
        free(f->sdjobs);
        free(f);
        return -1;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(f->d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(f->url, sizeof f->url, "http://127.0.0.1:%u", di ? di->port : 0);
    *out = f;
    return 0;
}

void fake_img_stop(fake_img *f)
{
    if (!f)
        return;
    MHD_stop_daemon(f->d);
    for (int i = 0; i < MAX_COMFY; i++)
        free(f->comfy[i].png);
    free(f->comfy);
    for (int i = 0; i < MAX_SDJOBS; i++)
        free(f->sdjobs[i].png);
    free(f->sdjobs);
    free(f->seeds);
    free(f->photo);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

const char *fake_img_url(const fake_img *f)
{
    return f->url;
}

#define SETTER(name, field)                                                                        \
    void name(fake_img *f, int v)                                                                  \
    {                                                                                              \
        pthread_mutex_lock(&f->mu);                                                                \
        f->field = v;                                                                              \
        pthread_mutex_unlock(&f->mu);                                                              \
    }
SETTER(fake_img_set_delay, delay_ms)
SETTER(fake_img_set_poll_delay, poll_delay_ms)
SETTER(fake_img_fail_always, fail_always)
SETTER(fake_img_blank_every, blank_k)
SETTER(fake_img_dark_every, dark_k)
SETTER(fake_img_corrupt_every, corrupt_k)
SETTER(fake_img_notimage_every, notimage_k)
SETTER(fake_img_garbage_every, garbage_k)
SETTER(fake_img_set_flavor, flavor)

void fake_img_set_model(fake_img *f, const char *model, int switches)
{
    pthread_mutex_lock(&f->mu);
    snprintf(f->model, sizeof f->model, "%s", model);
    f->model_switch = switches;
    pthread_mutex_unlock(&f->mu);
}

#define GETTER(name, expr)                                                                         \
    int name(const fake_img *f)                                                                    \
    {                                                                                              \
        fake_img *m = (fake_img *)f;                                                               \
        pthread_mutex_lock(&m->mu);                                                                \
        int v = (expr);                                                                            \
        pthread_mutex_unlock(&m->mu);                                                              \
        return v;                                                                                  \
    }
GETTER(fake_img_interrupts, m->interrupts)
GETTER(fake_img_cancels, m->cancels)
GETTER(fake_img_cancels_refused, m->cancels_refused)
GETTER(fake_img_busy, m->rendering + sd_busy(m))
GETTER(fake_img_max_inflight, m->max_inflight)

int fake_img_last(const fake_img *f, fake_img_used *u)
{
    fake_img *m = (fake_img *)f;
    pthread_mutex_lock(&m->mu);
    int have = m->have_last;
    if (have)
        *u = m->last;
    pthread_mutex_unlock(&m->mu);
    return have ? 0 : -1;
}

void fake_img_fail_next(fake_img *f, int n, int http)
{
    pthread_mutex_lock(&f->mu);
    f->fail_next = n;
    f->fail_http = http;
    pthread_mutex_unlock(&f->mu);
}

int fake_img_photo_every(fake_img *f, const char *path, int k)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return -1;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *d = n > 0 ? malloc((size_t)n) : NULL;
    if (!d || fread(d, 1, (size_t)n, fp) != (size_t)n) {
        free(d);
        fclose(fp);
        return -1;
    }
    fclose(fp);
    pthread_mutex_lock(&f->mu);
    free(f->photo);
    f->photo = d;
    f->photo_len = (size_t)n;
    f->photo_k = k;
    pthread_mutex_unlock(&f->mu);
    return 0;
}

int fake_img_renders(const fake_img *f)
{
    fake_img *m = (fake_img *)f;
    pthread_mutex_lock(&m->mu);
    int n = m->renders;
    pthread_mutex_unlock(&m->mu);
    return n;
}

int fake_img_seed_count(const fake_img *f, int64_t seed)
{
    fake_img *m = (fake_img *)f;
    int n = 0;
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < m->nseeds; i++)
        n += m->seeds[i] == seed;
    pthread_mutex_unlock(&m->mu);
    return n;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int fake_img_distinct_seeds(const fake_img *f)
{
    fake_img *m = (fake_img *)f;
    pthread_mutex_lock(&m->mu);
    int64_t *c = malloc((m->nseeds + 1) * sizeof *c);
    size_t n = m->nseeds;
    if (c)
        memcpy(c, m->seeds, n * sizeof *c);
    pthread_mutex_unlock(&m->mu);
    if (!c)
        return -1;
    qsort(c, n, sizeof *c, cmp64);
    int d = 0;
    for (size_t i = 0; i < n; i++)
        d += i == 0 || c[i] != c[i - 1];
    free(c);
    return d;
}
