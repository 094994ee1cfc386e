/*
 * px_core implementation: errors, logging, allocation helpers, clock, files
 * and growable buffers. The thread pool and queue live in pool.c.
 */
#include "px_core.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *px_strstatus(int status)
{
    switch (status) {
    case PX_OK: return "ok";
    case PX_EINVAL: return "invalid input";
    case PX_ENOMEM: return "out of memory";
    case PX_EIO: return "I/O error";
    case PX_EUNSUPPORTED: return "unsupported";
    case PX_ELIMIT: return "over limit";
    case PX_ECORRUPT: return "corrupt data";
    case PX_ETIMEOUT: return "timed out";
    case PX_ENET: return "network error";
    case PX_EBUSY: return "busy";
    case PX_ENOTFOUND: return "not found";
    case PX_ECLOSED: return "closed";
    default: return "unknown error";
    }
}

int px_err_set(px_err *err, int status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return status;
}

int px_err_prefix(px_err *err, int status, const char *fmt, ...)
{
    if (err) {
        char prefix[256], old[sizeof err->msg];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        memcpy(old, err->msg, sizeof old);
        const char *rest = old[0] ? old : px_strstatus(status);
        /* join by hand: snprintf("%s: %s") trips -Wformat-truncation */
        size_t n = strlen(prefix), cap = sizeof err->msg - 1;
        if (n > cap)
            n = cap;
        memcpy(err->msg, prefix, n);
        if (n + 2 <= cap) {
            memcpy(err->msg + n, ": ", 2);
            n += 2;
        }
        size_t r = strlen(rest);
        if (r > cap - n)
            r = cap - n;
        memcpy(err->msg + n, rest, r);
        err->msg[n + r] = '\0';
    }
    return status;
}

static px_log_level g_log_level = PX_LOG_INFO;

void px_log_set_level(px_log_level lvl)
{
    __atomic_store_n(&g_log_level, lvl, __ATOMIC_RELAXED);
}

px_log_level px_log_get_level(void)
{
    return __atomic_load_n(&g_log_level, __ATOMIC_RELAXED);
}

void px_log(px_log_level lvl, const char *fmt, ...)
{
    if (lvl > px_log_get_level())
        return;
    static const char *names[] = {"error", "warning", "info", "debug"};
    char line[2048];
    int n = snprintf(line, sizeof line, "pixpipe: %s: ", names[lvl]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    /* one write() per line keeps lines from different threads whole */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

/* Fault injection: one counter of allocations for the process. The target
 * (the allocation number that fails) comes from PIXPIPE_FAIL_ALLOC at the
 * first allocation or from px_alloc_fail_after. Atomics, not a mutex: the
 * wrappers are called from every thread. */
#ifdef PX_FAULT_INJECTION
#include <stdatomic.h>
static atomic_long g_alloc_count, g_alloc_fail_at = -1; /* -1: not read from the env yet */

static int alloc_should_fail(void)
{
    long at = atomic_load(&g_alloc_fail_at);
    if (at == -1) {
        const char *e = getenv("PIXPIPE_FAIL_ALLOC");
        long v = e ? strtol(e, NULL, 10) : 0;
        long expect = -1;
        atomic_compare_exchange_strong(&g_alloc_fail_at, &expect, v > 0 ? v : 0);
        at = atomic_load(&g_alloc_fail_at);
    }
    long n = atomic_fetch_add(&g_alloc_count, 1) + 1;
    return at > 0 && n == at;
}

long px_alloc_fail_after(long n)
{
    long made = atomic_exchange(&g_alloc_count, 0);
    atomic_store(&g_alloc_fail_at, n > 0 ? n : 0);
    return made;
}
#define PX_ALLOC_FAILS() alloc_should_fail()
#else
long px_alloc_fail_after(long n)
{
    (void)n;
    return 0;
}
#define PX_ALLOC_FAILS() 0
#endif

void *px_malloc(size_t n)
{
    if (PX_ALLOC_FAILS())
        return NULL;
    return malloc(n ? n : 1);
}

void *px_calloc(size_t n, size_t size)
{
    if (PX_ALLOC_FAILS())
        return NULL;
    return calloc(n ? n : 1, size ? size : 1);
}

void *px_realloc(void *p, size_t n)
{
    if (PX_ALLOC_FAILS())
        return NULL;
    return realloc(p, n ? n : 1);
}

char *px_strndup(const char *s, size_t n)
{
    if (!s)
        return NULL;
    size_t len = strnlen(s, n);
    char *d = px_malloc(len + 1);
    if (!d)
        return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

char *px_strdup(const char *s)
{
    return s ? px_strndup(s, SIZE_MAX) : NULL;
}

void *px_aligned_alloc(size_t n)
{
    if (PX_ALLOC_FAILS())
        return NULL;
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0)
        return NULL;
    return p;
}

void px_aligned_free(void *p)
{
    free(p);
}

int px_mul_size(size_t a, size_t b, size_t *out)
{
    if (a && b > SIZE_MAX / a)
        return PX_ELIMIT;
    *out = a * b;
    return PX_OK;
}

double px_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int px_cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

int px_read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *len, px_err *err)
{
    *data = NULL;
    *len = 0;
    int fd = strcmp(path, "-") == 0 ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return px_err_set(err, errno == ENOENT ? PX_ENOTFOUND : PX_EIO, "%s: cannot open: %s",
                          path, strerror(errno));
    px_buf b = {0};
    uint8_t chunk[65536];
    int status = PX_OK;
    /* a regular file says its size: refuse it before reading a byte, and
     * allocate once (the loop below still stops at max_bytes if it grows) */
    struct stat sb;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode)) {
        if ((uint64_t)sb.st_size > (uint64_t)max_bytes)
            status = px_err_set(err, PX_ELIMIT, "%s: %lld bytes, larger than the %zu-byte limit",
                                path, (long long)sb.st_size, max_bytes);
        else if (sb.st_size > 0 && !(b.data = px_malloc((size_t)sb.st_size + 1)))
            status = px_err_set(err, PX_ENOMEM, "%s: out of memory reading file", path);
        else
            b.cap = b.data ? (size_t)sb.st_size + 1 : 0;
    }
    while (status == PX_OK) {
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            status = px_err_set(err, PX_EIO, "%s: read failed: %s", path, strerror(errno));
            break;
        }
        if (r == 0)
            break;
        if (b.len + (size_t)r > max_bytes) {
            status = px_err_set(err, PX_ELIMIT, "%s: larger than the %zu-byte limit", path,
                                max_bytes);
            break;
        }
        if (b.len + (size_t)r > b.cap) {
            /* grow by doubling but never past max_bytes, so a pipe that is
             * refused at the limit has not made us hold twice the limit */
            size_t cap = b.cap ? b.cap * 2 : sizeof chunk;
            if (cap > max_bytes)
                cap = max_bytes;
            if (cap < b.len + (size_t)r)
                cap = b.len + (size_t)r;
            uint8_t *nd = px_realloc(b.data, cap);
            if (!nd) {
                status = px_err_set(err, PX_ENOMEM, "%s: out of memory reading file", path);
                break;
            }
            b.data = nd;
            b.cap = cap;
        }
        memcpy(b.data + b.len, chunk, (size_t)r);
        b.len += (size_t)r;
    }
    if (fd != STDIN_FILENO)
        close(fd);
    if (status != PX_OK) {
        px_buf_free(&b);
        return status;
    }
    if (!b.data) /* empty file: still return a valid pointer */
        b.data = px_malloc(1);
    *data = b.data;
    *len = b.len;
    return PX_OK;
}

int px_write_file_atomic(const char *path, const void *data, size_t len, px_err *err)
{
    return px_write_file_atomic_opts(path, data, len, NULL, err);
}

int px_write_file_atomic_opts(const char *path, const void *data, size_t len,
                              const px_write_opts *o, px_err *err)
{
    px_write_opts def = {.mode = 0, .fsync = 1};
    if (!o)
        o = &def;
    size_t plen = strlen(path);
    char *tmp = px_malloc(plen + 16);
    if (!tmp)
        return px_err_set(err, PX_ENOMEM, "%s: out of memory", path);
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    int slot = -1; /* listed for px_tmp_unlink_all until renamed or removed */
    int fd = px_tmp_mkstemp(tmp, &slot);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return px_err_set(err, PX_EIO, "%s: cannot create temporary file: %s", path, strerror(e));
    }
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            px_tmp_release(slot);
        free(tmp);
            return px_err_set(err, PX_EIO, "%s: write failed: %s", path, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    /* mkstemp creates 0600; give the file the asked mode, or the usual umask-derived one.
     * umask() can only be read by setting it, so that needs no other thread doing the same. */
    mode_t mode = (mode_t)o->mode;
    if (!mode) {
        mode_t um = umask(0);
        umask(um);
        mode = 0666 & ~um;
    }
    if (fchmod(fd, mode) != 0 || (o->fsync && fsync(fd) != 0) || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        px_tmp_release(slot);
        free(tmp);
        return px_err_set(err, PX_EIO, "%s: cannot finish writing: %s", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        px_tmp_release(slot);
        free(tmp);
        return px_err_set(err, PX_EIO, "%s: cannot rename into place: %s", path, strerror(e));
    }
    px_tmp_release(slot);
        free(tmp);
    return PX_OK;
}

int px_mkdir_p(const char *path, px_err *err)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0)
        return px_err_set(err, PX_EINVAL, "cannot create a folder with an empty name");
    if (n >= sizeof buf)
        return px_err_set(err, PX_ELIMIT, "%.80s...: path longer than %d bytes", path, PATH_MAX);
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        struct stat sb;
        /* stat first: mkdir on an existing folder of a read-only parent is EACCES, not EEXIST */
        if (stat(buf, &sb) != 0 && mkdir(buf, 0777) != 0 && errno != EEXIST)
            return px_err_set(err, PX_EIO, "%s: cannot create folder: %s", buf, strerror(errno));
        buf[i] = c;
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return px_err_set(err, PX_EIO, "%s: exists and is not a folder", path);
    return PX_OK;
}

int px_parse_long(const char *name, const char *s, long lo, long hi, long *out, px_err *err)
{
    char *end;
    errno = 0;
    /* strtol would skip leading blanks; a value with blanks is a typo, not a number */
    long v = s && !isspace((unsigned char)*s) ? strtol(s, &end, 10) : 0;
    if (!s || !*s || isspace((unsigned char)*s) || *end || errno || v < lo || v > hi)
        return px_err_set(err, PX_EINVAL, "%s '%s': expected an integer in %ld..%ld", name,
                          s ? s : "", lo, hi);
    *out = v;
    return PX_OK;
}

int px_parse_int(const char *name, const char *s, int lo, int hi, int *out, px_err *err)
{
    long v = 0;
    int st = px_parse_long(name, s, lo, hi, &v, err);
    if (st == PX_OK)
        *out = (int)v;
    return st;
}

int px_parse_double(const char *name, const char *s, double lo, double hi, double *out,
                    px_err *err)
{
    char *end;
    errno = 0;
    double v = s && !isspace((unsigned char)*s) ? strtod(s, &end) : 0;
    if (!s || !*s || isspace((unsigned char)*s) || *end || errno || !isfinite(v) || !(v >= lo && v <= hi))
        return px_err_set(err, PX_EINVAL, "%s '%s': expected a number in %g..%g", name,
                          s ? s : "", lo, hi);
    *out = v;
    return PX_OK;
}

int px_buf_append(px_buf *b, const void *data, size_t n)
{
    if (n == 0)
        return PX_OK;
    if (b->len + n < b->len)
        return PX_ENOMEM;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) {
            if (cap > SIZE_MAX / 2)
                return PX_ENOMEM;
            cap *= 2;
        }
        uint8_t *d = px_realloc(b->data, cap);
        if (!d)
            return PX_ENOMEM;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    return PX_OK;
}

void px_buf_free(px_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
