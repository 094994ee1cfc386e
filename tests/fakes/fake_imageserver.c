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
#include <netinet/in.h>
#include <microhttpd.h>
#include <png.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_BODY (8u << 20)
#define MAX_COMFY 4096

typedef struct {
    int id;
    uint8_t *png;
    size_t len;
    double ready_ms;
} comfy_item;

struct fake_img {
    struct MHD_Daemon *d;
    char url[64];
    int w, h;
    pthread_mutex_t mu;
    int delay_ms, fail_next, fail_http, fail_always;
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

static enum MHD_Result render_sync(fake_img *f, struct MHD_Connection *c, json_t *req, int openai)
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
    json_t *ans = openai ? json_pack("{s:i, s:[{s:s}]}", "created", 0, "data", "b64_json", enc)
                         : json_pack("{s:[s], s:{}, s:s}", "images", enc, "parameters", "info",
                                     "{}");
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
    if (!strcmp(method, "GET")) {
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
    if (!strcmp(url, "/sdapi/v1/txt2img"))
        r = render_sync(f, c, req, 0);
    else if (!strcmp(url, "/v1/images/generations"))
        r = render_sync(f, c, req, 1);
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
    pthread_mutex_init(&f->mu, NULL);
    if (!f->comfy) {
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
SETTER(fake_img_fail_always, fail_always)
SETTER(fake_img_blank_every, blank_k)
SETTER(fake_img_dark_every, dark_k)
SETTER(fake_img_corrupt_every, corrupt_k)
SETTER(fake_img_notimage_every, notimage_k)
SETTER(fake_img_garbage_every, garbage_k)

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
