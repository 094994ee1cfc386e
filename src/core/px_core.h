/*
 * px_core: what every pixpipe module shares — status codes, the caller-owned
 * error buffer, a small logger, checked allocation, a fixed thread pool with a
 * deterministic parallel-for, and a bounded blocking queue.
 *
 * Conventions used across the project:
 *  - functions return an int status: 0 (PX_OK) on success, a negative PX_E*
 *    code on failure; results come back through out-parameters;
 *  - a human-readable reason goes into a caller-supplied px_err (never a
 *    global), and names the thing that failed (file, op, field);
 *  - nothing here prints to the user except px_log, which the app configures.
 */
#ifndef PX_CORE_H
#define PX_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PX_VERSION "0.1.0"

/* Statuses: functions return an int holding one of these (0 ok, negative error). */
typedef enum px_status {
    PX_OK = 0,
    PX_EINVAL = -1,       /* bad argument or malformed input */
    PX_ENOMEM = -2,       /* allocation failed */
    PX_EIO = -3,          /* read/write/OS error */
    PX_EUNSUPPORTED = -4, /* valid input we do not handle (format, operator, attribute) */
    PX_ELIMIT = -5,       /* input exceeds a configured limit (pixels, bytes, count) */
    PX_ECORRUPT = -6,     /* input is damaged or truncated */
    PX_ETIMEOUT = -7,     /* an operation ran out of time */
    PX_ENET = -8,         /* network / remote peer failure */
    PX_EBUSY = -9,        /* queue full or resource busy; try later */
    PX_ENOTFOUND = -10,   /* named thing does not exist */
    PX_ECLOSED = -11,     /* queue or service was shut down */
} px_status;

/* Short constant name of a status ("invalid input", ...). Never NULL. */
const char *px_strstatus(int status);

/* Error buffer the caller owns and passes down. msg is always NUL-terminated. */
typedef struct px_err {
    char msg[512];
} px_err;

/* Formats into err (if err is non-NULL) and returns status unchanged, so a
 * failure path can be written `return px_err_set(err, PX_EINVAL, "...", ...);` */
int px_err_set(px_err *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepends "prefix: " to the message already in err (for adding context such
 * as a file name as an error travels up). Returns status. */
int px_err_prefix(px_err *err, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void px_err_clear(px_err *err)
{
    if (err)
        err->msg[0] = '\0';
}

/* Logging: levels, one line per call, to stderr by default. Thread-safe (one
 * write per line). The app sets the level; libraries log sparingly. */
typedef enum { PX_LOG_ERROR = 0, PX_LOG_WARN, PX_LOG_INFO, PX_LOG_DEBUG } px_log_level;
void px_log_set_level(px_log_level lvl);
px_log_level px_log_get_level(void);
void px_log(px_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Allocation: every allocation outside src/nn and src/diffusion goes through
 * these, so a build with -DPX_FAULT_INJECTION=ON can make any one of them
 * fail (see px_alloc_fail_after) and the out-of-memory paths get run.
 * They return NULL on failure (never abort); free with free(), except
 * px_aligned_alloc's memory (64-byte aligned), freed with px_aligned_free.
 * px_realloc leaves p untouched on failure, like realloc. px_strdup(NULL)
 * and px_strndup(NULL, n) return NULL. Thread-safe. */
void *px_malloc(size_t n);
void *px_calloc(size_t n, size_t size);
void *px_realloc(void *p, size_t n);
char *px_strdup(const char *s);
char *px_strndup(const char *s, size_t n); /* at most n bytes of s, NUL-terminated */
void *px_aligned_alloc(size_t n);
void px_aligned_free(void *p);
/* Fault injection (only in a PX_FAULT_INJECTION build; elsewhere a no-op
 * that returns 0): the n-th allocation from now (1 = the next) and only that
 * one fails; n <= 0 turns it off. At start-up the environment variable
 * PIXPIPE_FAIL_ALLOC=N does the same. Returns how many allocations were made
 * since the last call, so a test can count a run's allocations. */
long px_alloc_fail_after(long n);
/* a*b without overflow: returns 0 and stores the product, or PX_ELIMIT. */
int px_mul_size(size_t a, size_t b, size_t *out);

/* Monotonic clock in milliseconds (double, sub-ms resolution). */
double px_now_ms(void);

/* Number of online CPU cores (>= 1). */
int px_cpu_count(void);

/* ---- Thread pool --------------------------------------------------------
 * A fixed set of worker threads for data-parallel loops. px_pool_for splits
 * [0, n) into `px_pool_threads(pool)` contiguous chunks whose boundaries
 * depend only on n and the thread count, calls fn on each chunk (one of them
 * on the calling thread) and returns when all are done. A NULL pool or a
 * 1-thread pool runs fn(ctx, 0, n, 0) inline. One px_pool_for at a time per
 * pool (the pool is not re-entrant); different pools are independent.
 */
typedef struct px_pool px_pool;
typedef void (*px_pool_fn)(void *ctx, int64_t begin, int64_t end, int worker);
/* threads <= 0 means px_cpu_count(). Returns PX_OK or PX_ENOMEM/PX_EIO. */
int px_pool_create(int threads, px_pool **out);
void px_pool_destroy(px_pool *pool); /* NULL is a no-op; joins workers */
int px_pool_threads(const px_pool *pool); /* 1 for NULL */
void px_pool_for(px_pool *pool, int64_t n, px_pool_fn fn, void *ctx);

/* ---- Bounded queue ------------------------------------------------------
 * A fixed-capacity FIFO of pointers, safe for many producers and consumers.
 * The queue never owns the items. */
typedef struct px_queue px_queue;
int px_queue_create(size_t capacity, px_queue **out);
void px_queue_destroy(px_queue *q); /* NULL is a no-op; items left are not freed */
/* Non-blocking push: PX_OK, PX_EBUSY when full, PX_ECLOSED after close. */
int px_queue_try_push(px_queue *q, void *item);
/* Blocking push (waits for room): PX_OK or PX_ECLOSED. */
int px_queue_push(px_queue *q, void *item);
/* Blocking pop: waits up to timeout_ms (<0 forever). PX_OK with *item set,
 * PX_ETIMEOUT, or PX_ECLOSED once closed *and* drained. */
int px_queue_pop(px_queue *q, void **item, int timeout_ms);
/* After close, pushes fail and pops drain what is left, then return PX_ECLOSED. */
void px_queue_close(px_queue *q);
size_t px_queue_length(px_queue *q);

/* ---- Files --------------------------------------------------------------
 * Reads a whole file (or stdin for "-") into a malloc'd buffer, refusing more
 * than max_bytes (PX_ELIMIT). A regular file's size is checked (fstat) before
 * anything is read or allocated; a pipe or stdin is read in chunks and
 * refused as soon as it passes max_bytes, so no more than max_bytes is ever
 * held. Caller frees *data. */
int px_read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *len, px_err *err);
/* Writes data atomically: to "<path>.tmp.XXXXXX" in the same directory, fsync,
 * then rename over path, mode 0666 less the umask. On failure nothing is left
 * behind. Same as px_write_file_atomic_opts with {.mode = 0, .fsync = 1}. */
int px_write_file_atomic(const char *path, const void *data, size_t len, px_err *err);
typedef struct px_write_opts {
    unsigned mode; /* permission bits; 0: 0666 less the umask */
    int fsync;     /* 1: fsync before the rename (power-cut safe), 0: kill -9 safe only */
} px_write_opts;
/* px_write_file_atomic with a mode and a choice of fsync (o NULL: defaults). */
int px_write_file_atomic_opts(const char *path, const void *data, size_t len,
                              const px_write_opts *o, px_err *err);
/* Temporary files in flight, for signal handlers: px_write_file_atomic lists
 * its "<path>.tmp.XXXXXX" here from mkstemp until the rename or unlink, and
 * px_tmp_unlink_all() removes every one listed. px_tmp_unlink_all only calls
 * unlink() and reads static memory: it is async-signal-safe, meant for the
 * app's SIGINT/SIGTERM/SIGHUP handler (which then exits). It returns how many
 * files it removed.
 * px_tmp_mkstemp is mkstemp(tmpl) that also lists the file: returns the fd
 * (-1 with errno on failure) and *slot, to pass to px_tmp_release once the
 * file is renamed or removed. With all 64 slots busy the file is made but not
 * listed (*slot = -1; px_tmp_release(-1) is a no-op). Thread-safe. */
int px_tmp_mkstemp(char *tmpl, int *slot);
void px_tmp_release(int slot);
int px_tmp_unlink_all(void);
/* mkdir -p: creates path and its missing parents (mode 0777 less the umask).
 * PX_OK when it exists already; PX_EIO naming the folder that could not be
 * made, PX_ELIMIT for a path over PATH_MAX. */
int px_mkdir_p(const char *path, px_err *err);

/* ---- Option numbers -------------------------------------------------------
 * Parse a whole option value (from the command line or the environment) as a
 * base-10 integer / a finite number within lo..hi. On failure *out is
 * unchanged and PX_EINVAL comes with one wording for every command:
 * "<name> '<value>': expected an integer in lo..hi" (or "a number"). */
int px_parse_int(const char *name, const char *s, int lo, int hi, int *out, px_err *err);
int px_parse_long(const char *name, const char *s, long lo, long hi, long *out, px_err *err);
int px_parse_double(const char *name, const char *s, double lo, double hi, double *out,
                    px_err *err);

/* ---- Growable byte buffer (for encoders, HTTP bodies) -------------------- */
typedef struct px_buf {
    uint8_t *data;
    size_t len, cap;
} px_buf;
int px_buf_append(px_buf *b, const void *data, size_t n); /* PX_OK or PX_ENOMEM */
void px_buf_free(px_buf *b);

#ifdef __cplusplus
}
#endif
#endif
