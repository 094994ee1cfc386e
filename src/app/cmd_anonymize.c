/*
 * `pixpipe anonymize`: hide every face in photos given as files, directories
 * (walked recursively, images picked by extension or magic bytes) or `-`
 * (stdin to stdout). Argument parsing and wiring only; the work is
 * px_anon_process.
 *
 * Where outputs go: `-o FILE` for a single input, `--outdir DIR` (mirroring
 * the paths below each directory argument), else NAME.anon.EXT beside the
 * input. An input is never overwritten unless --in-place: the output's
 * device/inode is checked against every input. Outputs are written to a
 * temporary file and renamed (px_write_file_atomic), so a failure leaves
 * nothing half-written; SIGINT/SIGTERM/SIGHUP remove the temporary files in
 * flight before the process dies (on_fatal_signal).
 *
 * Threads: with several files, files run in parallel, one worker per thread,
 * each with its own session of one shared detector and one compute thread;
 * a single file gets all threads inside the engine. Either way --threads
 * cores are busy. A bad input is reported as one "pixpipe: FILE: reason"
 * line and the run goes on; the exit status says whether any failed.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <dirent.h>

#include "anon/px_anon.h"
#include "commands.h"
#include "core/px_core.h"

#define MAX_INPUT_BYTES ((size_t)512 << 20)

typedef struct job {
    char *in;       /* path as given or found ("-" for stdin) */
    char *rel;      /* path below its directory argument (outdir mirroring) */
    int status;     /* PX_OK or the failure */
    int dup_of;     /* --outdir: index of an earlier job with the same relative path, or -1 */
    int dir_errno;  /* a directory that could not be listed (reported as a failed input), or 0 */
} job;

typedef struct job_list {
    job *v;
    int n, cap;
} job_list;

typedef struct file_id {
    dev_t dev;
    ino_t ino;
} file_id;

typedef struct run_ctx {
    /* options */
    const char *out_file; /* -o */
    const char *outdir;   /* --outdir */
    int in_place, json, quiet, verbose;
    px_format format; /* --format, or from -o's extension; UNKNOWN: the input's */
    px_anon_opts aopts;

    px_face_detector *det;
    job_list jobs;
    file_id *inputs; /* sorted device/inode of every input file */
    int n_inputs;

    atomic_int next, done, failed;
    int total_faces;
    pthread_mutex_t out_mu; /* stdout / stderr lines and counters */
    int progress;           /* a progress line is on stderr */
} run_ctx;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pixpipe anonymize [options] INPUT...\n"
            "Hides every face in photos (JPEG, PNG, WebP, TIFF, GIF, HEIC/HEIF, AVIF).\n"
            "INPUT is a file, a directory (searched recursively) or - (stdin to stdout).\n"
            "\n"
            "Output:\n"
            "  -o, --output FILE    write the result here (one input only; - for stdout)\n"
            "      --outdir DIR     write results under DIR, mirroring directory inputs\n"
            "      --in-place       overwrite the inputs (never done otherwise)\n"
            "      --format FMT     jpeg, png or webp (default: -o's extension, else the\n"
            "                       input's; TIFF, GIF, HEIF and AVIF inputs give JPEG)\n"
            "      --quality N      JPEG/WebP quality 1..100 (default 90; a JPEG written from\n"
            "                       a JPEG otherwise keeps the input's blocks and quality)\n"
            "  Without -o/--outdir, NAME.EXT becomes NAME.anon.EXT beside the input.\n"
            "\n"
            "Concealment:\n"
            "      --mode MODE      noise (default), blur, pixelate or solid\n"
            "      --boxes          rectangular masks instead of head-shaped ellipses\n"
            "      --mask-scale F   mask size relative to the face box (default 1.4; boxes 1.2)\n"
            "      --seed N         fixed noise seed (default: fresh per image)\n"
            "\n"
            "Detection:\n"
            "      --model PATH     ONNX model (YuNet or UltraFace; default\n"
            "                       " PX_ANON_DEFAULT_MODEL ")\n"
            "      --threshold F    score threshold 0..1 (default 0.6)\n"
            "      --min-face N     smallest face side to find, in pixels (default 20)\n"
            "      --max-passes N   cap on network runs per image (default: none)\n"
            "      --max-pixels N   refuse larger images (default 100M; K/M/G suffixes)\n"
            "      --turns T        probe (default: one pass finds faces turned by 90/180/\n"
            "                       270 degrees, only those turns are searched), upright, all\n"
            "      --no-check       skip the self-check (detection again over the output,\n"
            "                       concealing more strongly any face still found)\n"
            "      --threads N      CPU threads (default: all cores)\n"
            "\n"
            "Reporting:\n"
            "      --json           one JSON line per image on stdout\n"
            "  -q, --quiet          only errors on stderr\n"
            "  -v, --verbose        one line per image on stderr\n"
            "  -h, --help           this text\n"
            "  -V, --version        print the version\n"
            "\n"
            "Exit status: 0 all done, 1 some inputs failed, 2 bad command line, 3 cannot start.\n");
}

static int bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "pixpipe anonymize: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nrun 'pixpipe anonymize --help' for the options\n");
    return PX_EXIT_USAGE;
}

/* Option numbers: core's parsers (one wording for every command), printed here. */
static int opt_long(const char *opt, const char *s, long lo, long hi, long *out)
{
    px_err e;
    if (px_parse_long(opt, s, lo, hi, out, &e) == PX_OK)
        return 0;
    fprintf(stderr, "pixpipe anonymize: %s\nrun 'pixpipe anonymize --help' for the options\n",
            e.msg);
    return -1;
}

static int opt_float(const char *opt, const char *s, float lo, float hi, float *out)
{
    px_err e;
    double v = 0;
    if (px_parse_double(opt, s, lo, hi, &v, &e) == PX_OK) {
        *out = (float)v;
        return 0;
    }
    fprintf(stderr, "pixpipe anonymize: %s\nrun 'pixpipe anonymize --help' for the options\n",
            e.msg);
    return -1;
}

static int parse_pixels(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || s[0] == '-')
        return -1;
    uint64_t mul = 1;
    if (*end == 'k' || *end == 'K')
        mul = 1000, end++;
    else if (*end == 'm' || *end == 'M')
        mul = 1000000, end++;
    else if (*end == 'g' || *end == 'G')
        mul = 1000000000, end++;
    if (*end || v == 0 || v > UINT64_MAX / mul)
        return -1;
    *out = (uint64_t)v * mul;
    return 0;
}

static int parse_format(const char *s, px_format *f)
{
    if (!strcasecmp(s, "jpeg") || !strcasecmp(s, "jpg"))
        *f = PX_FMT_JPEG;
    else if (!strcasecmp(s, "png"))
        *f = PX_FMT_PNG;
    else if (!strcasecmp(s, "webp"))
        *f = PX_FMT_WEBP;
    else
        return -1;
    return 0;
}

/* ---- input collection --------------------------------------------------- */

static int job_add(job_list *l, const char *in, const char *rel)
{
    if (l->n == l->cap) {
        int ncap = l->cap ? l->cap * 2 : 16;
        job *nv = px_realloc(l->v, sizeof *nv * (size_t)ncap);
        if (!nv)
            return PX_ENOMEM;
        l->v = nv;
        l->cap = ncap;
    }
    job *j = &l->v[l->n];
    j->in = px_strdup(in);
    j->rel = px_strdup(rel);
    j->status = PX_OK;
    j->dup_of = -1;
    j->dir_errno = 0;
    if (!j->in || !j->rel) {
        free(j->in);
        free(j->rel);
        return PX_ENOMEM;
    }
    l->n++;
    return PX_OK;
}

/* Files found in directories count when they look like images: a known
 * extension, or the magic bytes of a format we read. Our own outputs
 * (NAME.anon.EXT) and temporary files are skipped so a second run does not
 * anonymize them again. A file we cannot open counts too: it is then
 * reported by name as a failed input instead of being skipped unseen. */
static int looks_like_image(const char *path, const char *name)
{
    if (strstr(name, ".anon.") || strstr(name, ".tmp."))
        return 0;
    if (px_format_from_path_any(path) != PX_FMT_UNKNOWN)
        return 1;
    FILE *f = fopen(path, "rb");
    if (!f)
        return 1;
    uint8_t head[32];
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    return px_image_sniff(head, n) != PX_FMT_UNKNOWN;
}

static int same_file(const char *a, const struct stat *b)
{
    struct stat sa;
    return a && stat(a, &sa) == 0 && sa.st_dev == b->st_dev && sa.st_ino == b->st_ino;
}

/* Walks dir recursively in name order (so runs are reproducible), skipping
 * hidden entries, symlinked directories (no loops) and the output folder. */
static int walk_dir(run_ctx *c, const char *dir, const char *rel, int depth)
{
    if (depth > 64)
        return PX_OK;
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort);
    if (n < 0) {
        /* a failed input like an unreadable file: named on stderr and in
         * --json, counted in the exit status; the walk goes on elsewhere */
        const int e = errno;
        int st = job_add(&c->jobs, dir, rel[0] ? rel : ".");
        if (st == PX_OK)
            c->jobs.v[c->jobs.n - 1].dir_errno = e;
        return st;
    }
    int st = PX_OK;
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        if (st == PX_OK && name[0] != '.') {
            char path[PATH_MAX], sub[PATH_MAX];
            int k1 = snprintf(path, sizeof path, "%s/%s", dir, name);
            int k2 = rel[0] ? snprintf(sub, sizeof sub, "%s/%s", rel, name)
                            : snprintf(sub, sizeof sub, "%s", name);
            struct stat lst, tst;
            if (k1 < 0 || (size_t)k1 >= sizeof path || k2 < 0 || (size_t)k2 >= sizeof sub) {
                fprintf(stderr, "pixpipe: %s/%s: path too long, skipped\n", dir, name);
            } else if (lstat(path, &lst) == 0) {
                if (S_ISDIR(lst.st_mode)) {
                    if (!(c->outdir && same_file(c->outdir, &lst)))
                        st = walk_dir(c, path, sub, depth + 1);
                } else if ((S_ISREG(lst.st_mode) ||
                            (S_ISLNK(lst.st_mode) && stat(path, &tst) == 0 && S_ISREG(tst.st_mode))) &&
                           looks_like_image(path, name)) {
                    st = job_add(&c->jobs, path, sub);
                }
            }
        }
        free(names[i]);
    }
    free(names);
    return st == PX_ENOMEM ? st : PX_OK;
}

static int cmp_id(const void *pa, const void *pb)
{
    const file_id *a = pa, *b = pb;
    if (a->dev != b->dev)
        return a->dev < b->dev ? -1 : 1;
    if (a->ino != b->ino)
        return a->ino < b->ino ? -1 : 1;
    return 0;
}

static int collect_ids(run_ctx *c)
{
    c->inputs = px_calloc((size_t)(c->jobs.n > 0 ? c->jobs.n : 1), sizeof *c->inputs);
    if (!c->inputs)
        return PX_ENOMEM;
    for (int i = 0; i < c->jobs.n; i++) {
        struct stat st;
        if (strcmp(c->jobs.v[i].in, "-") && stat(c->jobs.v[i].in, &st) == 0) {
            c->inputs[c->n_inputs].dev = st.st_dev;
            c->inputs[c->n_inputs].ino = st.st_ino;
            c->n_inputs++;
        }
    }
    qsort(c->inputs, (size_t)c->n_inputs, sizeof *c->inputs, cmp_id);
    return PX_OK;
}

/* With --outdir, two inputs with the same relative path (a/x.jpg and
 * b/x.jpg given as files) would write the same output: the later ones are
 * refused rather than silently overwriting the first. */
static const job_list *dup_jobs;
static int cmp_rel(const void *pa, const void *pb)
{
    const int a = *(const int *)pa, b = *(const int *)pb;
    const int r = strcmp(dup_jobs->v[a].rel, dup_jobs->v[b].rel);
    return r ? r : (a > b) - (a < b);
}

static int mark_duplicates(job_list *l)
{
    if (l->n < 2)
        return PX_OK;
    int *idx = px_malloc(sizeof *idx * (size_t)l->n);
    if (!idx)
        return PX_ENOMEM;
    for (int i = 0; i < l->n; i++)
        idx[i] = i;
    dup_jobs = l;
    qsort(idx, (size_t)l->n, sizeof *idx, cmp_rel);
    for (int i = 1; i < l->n; i++) {
        const job *prev = &l->v[idx[i - 1]];
        job *cur = &l->v[idx[i]];
        if (!strcmp(prev->rel, cur->rel))
            cur->dup_of = prev->dup_of >= 0 ? prev->dup_of : idx[i - 1];
    }
    free(idx);
    return PX_OK;
}

static int is_input(const run_ctx *c, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return 0;
    file_id k = {st.st_dev, st.st_ino};
    return bsearch(&k, c->inputs, (size_t)c->n_inputs, sizeof k, cmp_id) != NULL;
}

/* ---- output paths -------------------------------------------------------- */

/* mkdir -p of the directory part of path. */
static int make_parents(const char *path, px_err *err)
{
    char buf[PATH_MAX];
    if (strlen(path) >= sizeof buf)
        return px_err_set(err, PX_ELIMIT, "output path too long");
    strcpy(buf, path);
    char *slash = strrchr(buf, '/');
    if (!slash || slash == buf)
        return PX_OK;
    *slash = '\0';
    return px_mkdir_p(buf, err);
}

/* Output path for a job, once the output format is known. "-" for stdout. */
static int output_path(const run_ctx *c, const job *j, px_format out_fmt, char *out, size_t cap,
                       px_err *err)
{
    int k;
    if (c->out_file)
        k = snprintf(out, cap, "%s", c->out_file);
    else if (!strcmp(j->in, "-") && !c->outdir)
        k = snprintf(out, cap, "-");
    else if (c->in_place)
        k = snprintf(out, cap, "%s", j->in);
    else {
        /* keep the input's own extension when the format is unchanged
         * (photo.JPG stays .JPG), else use the format's */
        const char *src = c->outdir ? j->rel : j->in;
        const char *slash = strrchr(src, '/');
        const char *base = slash ? slash + 1 : src;
        const char *dot = strrchr(base, '.');
        size_t stem = dot && dot != base ? (size_t)(dot - src) : strlen(src);
        const char *ext = dot && dot != base && px_format_from_path(src) == out_fmt
                              ? dot
                              : px_format_extension(out_fmt);
        if (c->outdir)
            k = snprintf(out, cap, "%s/%.*s%s", c->outdir, (int)stem, src, ext);
        else
            k = snprintf(out, cap, "%.*s.anon%s", (int)stem, src, ext);
    }
    if (k < 0 || (size_t)k >= cap)
        return px_err_set(err, PX_ELIMIT, "output path too long");
    return PX_OK;
}

/* ---- reporting ------------------------------------------------------------ */

/* 1 if s is well-formed UTF-8 (no overlongs, surrogates or code points past
 * U+10FFFF), the only text JSON can carry. */
static int utf8_valid(const unsigned char *s)
{
    while (*s) {
        unsigned c = *s, n = c < 0x80 ? 0 : c >= 0xC2 && c <= 0xDF ? 1 : (c & 0xF0) == 0xE0 ? 2
                                          : c >= 0xF0 && c <= 0xF4                ? 3
                                                                                  : 9;
        if (n == 9)
            return 0;
        unsigned cp = n ? c & (0x3Fu >> n) : c;
        for (unsigned k = 1; k <= n; k++) {
            if ((s[k] & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (s[k] & 0x3Fu);
        }
        if ((n == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        s += n + 1;
    }
    return 1;
}

/* s with each byte that does not start a well-formed character replaced by
 * U+FFFD (malloc'd; NULL when out of memory). */
static char *utf8_lossy(const char *s)
{
    const size_t n = strlen(s);
    char *out = px_malloc(n * 3 + 1);
    size_t m = 0;
    for (size_t i = 0; out && i < n;) {
        /* the shortest valid character starting here, else one bad byte */
        size_t k = 0;
        for (size_t len = 1; len <= 4 && i + len <= n && !k; len++) {
            char one[5] = {0};
            memcpy(one, s + i, len);
            if (utf8_valid((const unsigned char *)one))
                k = len;
        }
        if (k) {
            memcpy(out + m, s + i, k);
            m += k, i += k;
        } else {
            memcpy(out + m, "\xEF\xBF\xBD", 3);
            m += 3, i++;
        }
    }
    if (out)
        out[m] = '\0';
    return out;
}

/* RFC 4648 base64 of s (malloc'd; NULL when out of memory). */
static char *base64(const char *str)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *s = (const unsigned char *)str;
    const size_t n = strlen(str);
    char *out = px_malloc((n + 2) / 3 * 4 + 1);
    size_t q = 0;
    for (size_t i = 0; out && i < n; i += 3) {
        const unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) |
                           (i + 2 < n ? s[i + 2] : 0);
        out[q++] = tab[v >> 18 & 63];
        out[q++] = tab[v >> 12 & 63];
        out[q++] = i + 1 < n ? tab[v >> 6 & 63] : '=';
        out[q++] = i + 2 < n ? tab[v & 63] : '=';
    }
    if (out)
        out[q] = '\0';
    return out;
}

/* A file name for --json. File names are bytes, JSON strings are UTF-8: a
 * name that is not valid UTF-8 is written lossily (utf8_lossy: readable) and
 * its exact bytes go in "<key>_base64" beside it, so that every input still
 * gets its one line and a script can find the file again (docs/anonymize.md). */
static void json_set_name(json_t *o, const char *key, const char *name)
{
    if (utf8_valid((const unsigned char *)name)) {
        json_object_set_new(o, key, json_string(name));
        return;
    }
    char *lossy = utf8_lossy(name), *b64 = base64(name);
    char key64[32];
    snprintf(key64, sizeof key64, "%s_base64", key);
    if (lossy && b64) {
        json_object_set_new(o, key, json_string(lossy));
        json_object_set_new(o, key64, json_string(b64));
    }
    free(lossy);
    free(b64);
}

static void clear_progress(run_ctx *c)
{
    if (c->progress)
        fputs("\r\033[K", stderr);
}

static void report_error(run_ctx *c, const job *j, int status, const px_err *err)
{
    const char *name = strcmp(j->in, "-") ? j->in : "(stdin)";
    /* px_read_file names the file itself: do not say it twice */
    const char *msg = err->msg[0] ? err->msg : px_strstatus(status);
    const size_t nl = strlen(j->in);
    if (!strncmp(msg, j->in, nl) && !strncmp(msg + nl, ": ", 2))
        msg += nl + 2;
    pthread_mutex_lock(&c->out_mu);
    clear_progress(c);
    fprintf(stderr, "pixpipe: %s: %s\n", name, msg);
    if (c->json) {
        /* the message may quote the file name: made valid UTF-8 the same way */
        json_t *o = json_object();
        char *m = utf8_lossy(msg);
        if (o && m) {
            json_set_name(o, "input", j->in);
            json_object_set_new(o, "error", json_string(m));
            json_object_set_new(o, "status", json_string(px_strstatus(status)));
        }
        free(m);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        if (s) {
            puts(s);
            fflush(stdout);
        }
        free(s);
        json_decref(o);
    }
    pthread_mutex_unlock(&c->out_mu);
}

static json_t *faces_json(const px_anon_result *r)
{
    json_t *arr = json_array();
    for (int i = 0; arr && i < r->n_faces; i++) {
        const px_face *f = &r->faces[i];
        json_t *o = json_pack("{s:[f,f,f,f], s:f}", "box", (double)f->x1, (double)f->y1,
                              (double)f->x2, (double)f->y2, "score", (double)f->score);
        if (o && f->has_landmarks) {
            json_t *lm = json_array();
            for (int k = 0; lm && k < 5; k++)
                json_array_append_new(lm, json_pack("[f,f]", (double)f->lm[k][0], (double)f->lm[k][1]));
            json_object_set_new(o, "landmarks", lm);
        }
        json_array_append_new(arr, o);
    }
    return arr;
}

static void report_ok(run_ctx *c, const job *j, const char *out, const px_anon_result *r,
                      double ms_read, double ms_write, double ms_total)
{
    pthread_mutex_lock(&c->out_mu);
    c->total_faces += r->n_faces;
    if (c->json) {
        json_t *o = json_object(), *rest = json_pack(
            "{s:i, s:i, s:s, s:s, s:i, s:o, s:i, s:{s:f, s:f, s:f, s:f, s:f, s:f, s:f}}",
            "width", r->width, "height", r->height, "input_format",
            px_format_name(r->in_format), "output_format", px_format_name(r->out_format),
            "orientation", r->orientation, "faces", faces_json(r), "passes",
            r->detect_stats.passes, "timings_ms", "read", ms_read, "decode", r->ms_decode, "detect",
            r->ms_detect, "conceal", r->ms_conceal, "encode", r->ms_encode, "write", ms_write,
            "total", ms_total);
        if (o && rest) {
            json_set_name(o, "input", j->in);
            json_set_name(o, "output", out);
            json_object_update(o, rest);
            json_object_set_new(o, "verified", json_boolean(r->verified));
            json_object_set_new(o, "strengthened", json_integer(r->strengthened));
            json_object_set_new(o, "check_passes", json_integer(r->verify_passes));
            json_object_set_new(o, "check_ms", json_real(r->ms_verify));
            json_t *turns = json_array();
            for (int k = 0; k < 4 && turns; k++)
                if (r->coverage.turns_run & (1 << k))
                    json_array_append_new(turns, json_integer(90 * k));
            json_object_set_new(o, "turns_searched", turns);
            if (r->out_format == PX_FMT_JPEG) /* docs/anonymize.md: JPEG in, JPEG out */
                json_object_set_new(o, "jpeg",
                                    json_string(r->jpeg.lossless ? "lossless-outside-masks"
                                                                 : "reencoded"));
            if (r->jpeg.why[0])
                json_object_set_new(o, "jpeg_reencoded_because", json_string(r->jpeg.why));
        }
        json_decref(rest);
        char *s = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
        if (s) {
            puts(s);
            fflush(stdout);
        }
        free(s);
        json_decref(o);
    }
    if (c->verbose) {
        clear_progress(c);
        fprintf(stderr,
                "pixpipe: %s -> %s: %dx%d, %d face%s, %d passes, %.0f ms (decode %.0f, detect "
                "%.0f, conceal %.0f, encode %.0f)\n",
                j->in, out, r->width, r->height, r->n_faces, r->n_faces == 1 ? "" : "s",
                r->detect_stats.passes, ms_total, r->ms_decode, r->ms_detect, r->ms_conceal,
                r->ms_encode);
    }
    pthread_mutex_unlock(&c->out_mu);
}

static void update_progress(run_ctx *c)
{
    if (!c->progress)
        return;
    pthread_mutex_lock(&c->out_mu);
    fprintf(stderr, "\r\033[Kpixpipe: %d/%d images, %d failed", atomic_load(&c->done), c->jobs.n,
            atomic_load(&c->failed));
    pthread_mutex_unlock(&c->out_mu);
}

/* ---- work ------------------------------------------------------------------- */

static int process(run_ctx *c, job *j, px_err *err)
{
    const double t0 = px_now_ms();
    if (j->dir_errno)
        return px_err_set(err, PX_EIO, "cannot read directory: %s", strerror(j->dir_errno));
    if (j->dup_of >= 0)
        return px_err_set(err, PX_EINVAL, "same output name as %s under --outdir; skipped",
                          c->jobs.v[j->dup_of].in);
    uint8_t *data = NULL;
    size_t len = 0;
    int st = px_read_file(j->in, MAX_INPUT_BYTES, &data, &len, err);
    if (st != PX_OK)
        return st;
    const double t1 = px_now_ms();
    px_anon_opts o = c->aopts;
    px_anon_result r;
    st = px_anon_process(c->det, data, len, &o, &r, err);
    free(data);
    if (st != PX_OK)
        return st;

    char out[PATH_MAX];
    const double t2 = px_now_ms();
    st = output_path(c, j, r.out_format, out, sizeof out, err);
    if (st == PX_OK && strcmp(out, "-")) {
        if (!c->in_place && is_input(c, out))
            st = px_err_set(err, PX_EINVAL, "output %s is an input; refusing to overwrite it "
                            "(use --in-place)", out);
        else if (c->outdir)
            st = make_parents(out, err);
        if (st == PX_OK)
            st = px_write_file_atomic(out, r.out.data, r.out.len, err);
    } else if (st == PX_OK) {
        pthread_mutex_lock(&c->out_mu);
        if (fwrite(r.out.data, 1, r.out.len, stdout) != r.out.len || fflush(stdout) != 0)
            st = px_err_set(err, PX_EIO, "writing to stdout: %s", strerror(errno));
        pthread_mutex_unlock(&c->out_mu);
    }
    const double t3 = px_now_ms();
    if (st == PX_OK)
        report_ok(c, j, out, &r, t1 - t0, t3 - t2, t3 - t0);
    px_anon_result_free(&r);
    return st;
}

static void *worker(void *arg)
{
    run_ctx *c = arg;
    for (;;) {
        const int i = atomic_fetch_add(&c->next, 1);
        if (i >= c->jobs.n)
            break;
        job *j = &c->jobs.v[i];
        px_err err;
        px_err_clear(&err);
        j->status = process(c, j, &err);
        if (j->status != PX_OK) {
            atomic_fetch_add(&c->failed, 1);
            report_error(c, j, j->status, &err);
        }
        atomic_fetch_add(&c->done, 1);
        update_progress(c);
    }
    return NULL;
}

/* ---- main ------------------------------------------------------------------- */

enum {
    OPT_OUTDIR = 256,
    OPT_IN_PLACE,
    OPT_FORMAT,
    OPT_QUALITY,
    OPT_MODE,
    OPT_BOXES,
    OPT_MASK_SCALE,
    OPT_SEED,
    OPT_MODEL,
    OPT_THRESHOLD,
    OPT_MIN_FACE,
    OPT_MAX_PASSES,
    OPT_MAX_PIXELS,
    OPT_THREADS,
    OPT_JSON,
    OPT_TURNS,
    OPT_NO_CHECK,
};

static void free_ctx(run_ctx *c)
{
    for (int i = 0; i < c->jobs.n; i++) {
        free(c->jobs.v[i].in);
        free(c->jobs.v[i].rel);
    }
    free(c->jobs.v);
    free(c->inputs);
    px_face_detector_destroy(c->det);
    pthread_mutex_destroy(&c->out_mu);
}

static const struct option k_longopts[] = {
    {"output", required_argument, NULL, 'o'},
    {"outdir", required_argument, NULL, OPT_OUTDIR},
    {"in-place", no_argument, NULL, OPT_IN_PLACE},
    {"format", required_argument, NULL, OPT_FORMAT},
    {"quality", required_argument, NULL, OPT_QUALITY},
    {"mode", required_argument, NULL, OPT_MODE},
    {"boxes", no_argument, NULL, OPT_BOXES},
    {"mask-scale", required_argument, NULL, OPT_MASK_SCALE},
    {"seed", required_argument, NULL, OPT_SEED},
    {"model", required_argument, NULL, OPT_MODEL},
    {"threshold", required_argument, NULL, OPT_THRESHOLD},
    {"min-face", required_argument, NULL, OPT_MIN_FACE},
    {"max-passes", required_argument, NULL, OPT_MAX_PASSES},
    {"max-pixels", required_argument, NULL, OPT_MAX_PIXELS},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"json", no_argument, NULL, OPT_JSON},
    {"turns", required_argument, NULL, OPT_TURNS},
    {"no-check", no_argument, NULL, OPT_NO_CHECK},
    {"quiet", no_argument, NULL, 'q'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

/* The options (not the inputs): -1 to go on, else the exit code. *model and
 * *threads receive --model and --threads. */
static int parse_options(int argc, char **argv, run_ctx *c, const char **model, int *threads)
{
    int mask_scale_set = 0, ch;
    long lv = 0;
    float fv = 0.0f;
    optind = 1; /* argv here starts at the subcommand name */
    opterr = 0;
    int rc = PX_EXIT_OK;
    while ((ch = getopt_long(argc, argv, ":o:qvhV", k_longopts, NULL)) != -1 && rc == PX_EXIT_OK) {
        switch (ch) {
        case 'o': c->out_file = optarg; break;
        case OPT_OUTDIR: c->outdir = optarg; break;
        case OPT_IN_PLACE: c->in_place = 1; break;
        case OPT_FORMAT:
            if (parse_format(optarg, &c->format))
                rc = bad_usage("--format: '%s' is not jpeg, png or webp", optarg);
            break;
        case OPT_QUALITY:
            if (opt_long("--quality", optarg, 1, 100, &lv))
                rc = PX_EXIT_USAGE;
            c->aopts.jpeg_quality = (int)lv;
            c->aopts.jpeg_keep_blocks = 0; /* a quality asked for: encode at it */
            break;
        case OPT_MODE:
            if (px_anon_mode_parse(optarg, &c->aopts.mode))
                rc = bad_usage("--mode: '%s' is not noise, blur, pixelate or solid", optarg);
            break;
        case OPT_BOXES: c->aopts.mask.shape = PX_MASK_BOX; break;
        case OPT_MASK_SCALE:
            if (opt_float("--mask-scale", optarg, 1.0f, 8.0f, &fv))
                rc = PX_EXIT_USAGE;
            c->aopts.mask.scale = fv;
            mask_scale_set = 1;
            break;
        case OPT_SEED:
            if (opt_long("--seed", optarg, 1, LONG_MAX, &lv))
                rc = PX_EXIT_USAGE;
            c->aopts.seed = (uint64_t)lv;
            break;
        case OPT_MODEL: *model = optarg; break;
        case OPT_THRESHOLD:
            if (opt_float("--threshold", optarg, 0.0f, 1.0f, &fv))
                rc = PX_EXIT_USAGE;
            c->aopts.detect.score_threshold = fv;
            break;
        case OPT_MIN_FACE:
            if (opt_long("--min-face", optarg, 4, 100000, &lv))
                rc = PX_EXIT_USAGE;
            c->aopts.detect.min_face = (int)lv;
            break;
        case OPT_MAX_PASSES:
            if (opt_long("--max-passes", optarg, 1, 100000, &lv))
                rc = PX_EXIT_USAGE;
            c->aopts.detect.max_passes = (int)lv;
            break;
        case OPT_MAX_PIXELS:
            if (parse_pixels(optarg, &c->aopts.max_pixels))
                rc = bad_usage("--max-pixels: '%s' is not a pixel count (e.g. 50M)", optarg);
            break;
        case OPT_THREADS:
            if (opt_long("--threads", optarg, 1, 1024, &lv))
                rc = PX_EXIT_USAGE;
            *threads = (int)lv;
            break;
        case OPT_JSON: c->json = 1; break;
        case OPT_TURNS:
            if (!strcmp(optarg, "probe") || !strcmp(optarg, "upright") || !strcmp(optarg, "all"))
                c->aopts.rotations = optarg[0] == 'p' ? 1 : optarg[0] == 'u' ? 0 : 2;
            else
                rc = bad_usage("--turns: '%s' is not probe, upright or all", optarg);
            break;
        case OPT_NO_CHECK: c->aopts.verify = 0; break;
        case 'q': c->quiet = 1; break;
        case 'v': c->verbose = 1; break;
        case 'h':
            usage(stdout);
            return PX_EXIT_OK;
        case 'V':
            printf("pixpipe %s\n", PX_VERSION);
            return PX_EXIT_OK;
        case ':':
            rc = bad_usage("option '%s' needs a value", argv[optind - 1]);
            break;
        default:
            rc = bad_usage("unknown option '%s'", argv[optind - 1]);
            break;
        }
    }
    if (rc != PX_EXIT_OK)
        return rc;
    if (!mask_scale_set)
        c->aopts.mask.scale = px_mask_default_scale(c->aopts.mask.shape);
    if (c->quiet)
        c->verbose = 0;
    return -1;
}

/* -o / --outdir / --in-place / stdin agree with each other and the inputs:
 * -1 to go on, else the exit code. */
static int check_outputs(int argc, char **argv, run_ctx *c)
{
    const int n_args = argc - optind;
    int n_stdin = 0;
    for (int i = optind; i < argc; i++)
        n_stdin += !strcmp(argv[i], "-");
    if (n_args == 0)
        return bad_usage("%s", "no INPUT given (a file, a directory or -)");
    if (n_stdin > 1)
        return bad_usage("%s", "- (stdin) can be given only once");
    if (c->out_file && c->outdir)
        return bad_usage("%s", "-o and --outdir exclude each other");
    if (c->in_place && (c->out_file || c->outdir))
        return bad_usage("%s", "--in-place excludes -o and --outdir");
    if (c->in_place && c->format != PX_FMT_UNKNOWN)
        return bad_usage("%s", "--in-place keeps each file's format; drop --format");
    if (c->in_place && n_stdin)
        return bad_usage("%s", "--in-place cannot apply to - (stdin)");
    if (c->out_file) {
        struct stat st;
        if (n_args != 1 || (strcmp(argv[optind], "-") && stat(argv[optind], &st) == 0 &&
                            S_ISDIR(st.st_mode)))
            return bad_usage("%s", "-o takes exactly one input file; use --outdir for several");
        if (c->format == PX_FMT_UNKNOWN && strcmp(c->out_file, "-")) {
            c->format = px_format_from_path(c->out_file);
            if (c->format == PX_FMT_UNKNOWN)
                return bad_usage(
                    "-o %s: extension is not .jpg, .jpeg, .png or .webp (or use --format)",
                    c->out_file);
        }
    }
    const int image_to_stdout =
        (c->out_file && !strcmp(c->out_file, "-")) || (n_stdin && !c->out_file && !c->outdir);
    if (image_to_stdout && c->json)
        return bad_usage("%s", "--json and an image on stdout exclude each other (add -o FILE)");
    if (image_to_stdout && isatty(STDOUT_FILENO))
        return bad_usage("%s", "refusing to write an image to a terminal (redirect stdout or use -o)");
    c->aopts.out_format = c->format;
    return -1;
}

/* The jobs: stdin, every image under a directory, or a named file; then the
 * output folder. -1 to go on, else the exit code. */
static int collect_inputs(int argc, char **argv, run_ctx *c)
{
    int rc = -1;
    for (int i = optind; i < argc && rc < 0; i++) {
        const char *a = argv[i];
        struct stat st;
        if (!strcmp(a, "-")) {
            if (job_add(&c->jobs, "-", "stdin") != PX_OK)
                rc = PX_EXIT_SETUP;
            continue;
        }
        if (stat(a, &st) == 0 && S_ISDIR(st.st_mode)) {
            /* strip trailing slashes so the paths found read cleanly */
            char dir[PATH_MAX];
            snprintf(dir, sizeof dir, "%s", a);
            for (size_t l = strlen(dir); l > 1 && dir[l - 1] == '/'; l--)
                dir[l - 1] = '\0';
            int before = c->jobs.n;
            if (walk_dir(c, dir, "", 0) == PX_ENOMEM)
                rc = PX_EXIT_SETUP;
            if (c->jobs.n == before && !c->quiet)
                fprintf(stderr, "pixpipe: %s: no images found in this directory\n", a);
            continue;
        }
        /* a named file: processed even if it does not look like an image,
         * so the user hears why it was not anonymized */
        const char *slash = strrchr(a, '/');
        if (job_add(&c->jobs, a, slash ? slash + 1 : a) != PX_OK)
            rc = PX_EXIT_SETUP;
    }
    if (rc >= 0 || collect_ids(c) != PX_OK ||
        (c->outdir && mark_duplicates(&c->jobs) != PX_OK)) {
        fprintf(stderr, "pixpipe: out of memory while listing inputs\n");
        return PX_EXIT_SETUP;
    }
    if (c->outdir && mkdir(c->outdir, 0777) != 0 && errno != EEXIST) {
        fprintf(stderr, "pixpipe: %s: cannot create output directory: %s\n", c->outdir,
                strerror(errno));
        return PX_EXIT_SETUP;
    }
    return -1;
}

/* The detector: one single-threaded session per thread. Several files run in
 * parallel, one per worker; a large image's tiling passes are spread over
 * whatever sessions are idle (all of them when there is one file), which
 * uses the cores better than splitting each network run across threads.
 * Then the run and its one-line report. Returns the exit code. */
static int run_jobs(run_ctx *c, const char *model, int threads)
{
    if (threads <= 0)
        threads = px_cpu_count();
    const int workers = c->jobs.n > 1 ? (threads < c->jobs.n ? threads : c->jobs.n) : 1;
    px_face_detector_opts dopts = {PX_FACE_MODEL_AUTO, 1, threads, 1};
    char model_path[PATH_MAX];
    px_err err;
    px_err_clear(&err);
    if (px_anon_find_model(model, NULL, model_path, sizeof model_path, &err) != PX_OK ||
        px_face_detector_create(model_path, &dopts, &c->det, &err) != PX_OK) {
        fprintf(stderr, "pixpipe: %s\n", err.msg);
        return PX_EXIT_SETUP;
    }
    if (c->verbose)
        fprintf(stderr, "pixpipe: model %s, %d image%s, %d worker%s, %d detector session%s\n",
                model_path, c->jobs.n, c->jobs.n == 1 ? "" : "s", workers,
                workers == 1 ? "" : "s", threads, threads == 1 ? "" : "s");
    c->progress = c->jobs.n >= 4 && !c->quiet && !c->verbose && isatty(STDERR_FILENO);

    const double t0 = px_now_ms();
    pthread_t *tids = px_calloc((size_t)workers, sizeof *tids);
    int started = 0;
    for (int i = 1; tids && i < workers; i++) {
        if (pthread_create(&tids[i], NULL, worker, c) != 0)
            break;
        started = i;
    }
    worker(c); /* the main thread works too (and finishes the queue alone if no thread started) */
    for (int i = 1; i <= started; i++)
        pthread_join(tids[i], NULL);
    free(tids);
    const int failed = atomic_load(&c->failed);
    if (c->progress)
        fputs("\n", stderr);
    if (!c->quiet && !c->json && (c->jobs.n > 1 || c->verbose))
        fprintf(stderr, "pixpipe: %d image%s, %d face%s concealed, %d failed, %.1f s\n",
                c->jobs.n - failed, c->jobs.n - failed == 1 ? "" : "s", c->total_faces,
                c->total_faces == 1 ? "" : "s", failed, (px_now_ms() - t0) / 1000.0);
    return failed || c->jobs.n == 0 ? PX_EXIT_FAILED : PX_EXIT_OK;
}

/* Ctrl-C, SIGTERM or SIGHUP while outputs are being written: remove the
 * temporary files in flight (px_tmp_unlink_all: async-signal-safe), then die
 * of the same signal with its default action, so the caller sees how we
 * ended. Outputs already renamed into place stay; none is half-written. */
static void on_fatal_signal(int sig)
{
    px_tmp_unlink_all();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Installs on_fatal_signal (install = 1) or puts back what was there. A
 * signal ignored when we started (SIGHUP under nohup) stays ignored. */
static void set_signals(int install)
{
    static const int sigs[3] = {SIGINT, SIGTERM, SIGHUP};
    static struct sigaction old[3];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 3; i++)
        sigaddset(&sa.sa_mask, sigs[i]); /* one handler at a time */
    sa.sa_handler = on_fatal_signal;
    for (int i = 0; i < 3; i++) {
        if (!install)
            sigaction(sigs[i], &old[i], NULL);
        else if (sigaction(sigs[i], NULL, &old[i]) == 0 && old[i].sa_handler != SIG_IGN)
            sigaction(sigs[i], &sa, NULL);
    }
}

int px_cmd_anonymize(int argc, char **argv)
{
    run_ctx c;
    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.out_mu, NULL);
    c.aopts = px_anon_opts_default();
    const char *model = NULL;
    int threads = 0;
    int rc = parse_options(argc, argv, &c, &model, &threads);
    if (rc < 0)
        rc = check_outputs(argc, argv, &c);
    if (rc < 0)
        rc = collect_inputs(argc, argv, &c);
    if (rc < 0) {
        set_signals(1);
        rc = run_jobs(&c, model, threads);
        set_signals(0);
    }
    free_ctx(&c);
    return rc;
}
