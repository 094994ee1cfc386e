/* Unit tests for px_core: errors, thread pool determinism, bounded queue, atomic writes,
 * bounded file reads, and temporary files removed by a signal handler (in child processes). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/px_core.h"

static void test_err_prefix(void **state)
{
    (void)state;
    px_err e;
    px_err_clear(&e);
    assert_int_equal(px_err_set(&e, PX_ECORRUPT, "bad %s", "header"), PX_ECORRUPT);
    assert_int_equal(px_err_prefix(&e, PX_ECORRUPT, "%s", "a.jpg"), PX_ECORRUPT);
    assert_string_equal(e.msg, "a.jpg: bad header");
    assert_int_equal(px_err_set(NULL, PX_EIO, "ignored"), PX_EIO);
}

typedef struct {
    int64_t *hits;
} fill_ctx;

static void fill(void *ctx, int64_t b, int64_t e, int worker)
{
    fill_ctx *c = ctx;
    (void)worker;
    for (int64_t i = b; i < e; i++)
        c->hits[i] += i * 3 + 1;
}

static void test_pool_covers_every_index_once(void **state)
{
    (void)state;
    for (int threads = 1; threads <= 5; threads++) {
        px_pool *p;
        assert_int_equal(px_pool_create(threads, &p), PX_OK);
        assert_int_equal(px_pool_threads(p), threads);
        for (int64_t n = 0; n < 40; n += 7) {
            int64_t *hits = calloc((size_t)n + 1, sizeof *hits);
            fill_ctx c = {hits};
            for (int rep = 0; rep < 3; rep++)
                px_pool_for(p, n, fill, &c);
            for (int64_t i = 0; i < n; i++)
                assert_int_equal(hits[i], 3 * (i * 3 + 1));
            free(hits);
        }
        px_pool_destroy(p);
    }
    px_pool_destroy(NULL);
}

static void test_queue_bounded(void **state)
{
    (void)state;
    px_queue *q;
    int a = 1, b = 2, c = 3;
    void *out;
    assert_int_equal(px_queue_create(2, &q), PX_OK);
    assert_int_equal(px_queue_try_push(q, &a), PX_OK);
    assert_int_equal(px_queue_try_push(q, &b), PX_OK);
    assert_int_equal(px_queue_try_push(q, &c), PX_EBUSY);
    assert_int_equal(px_queue_length(q), 2);
    assert_int_equal(px_queue_pop(q, &out, 0), PX_OK);
    assert_ptr_equal(out, &a);
    assert_int_equal(px_queue_pop(q, &out, 0), PX_OK);
    assert_ptr_equal(out, &b);
    assert_int_equal(px_queue_pop(q, &out, 20), PX_ETIMEOUT);
    assert_int_equal(px_queue_try_push(q, &c), PX_OK);
    px_queue_close(q);
    assert_int_equal(px_queue_try_push(q, &a), PX_ECLOSED);
    assert_int_equal(px_queue_pop(q, &out, -1), PX_OK); /* drains after close */
    assert_ptr_equal(out, &c);
    assert_int_equal(px_queue_pop(q, &out, -1), PX_ECLOSED);
    px_queue_destroy(q);
}

#define NPROD 4
#define NITEMS 500
static px_queue *g_q;
static void *producer(void *arg)
{
    intptr_t base = (intptr_t)arg;
    for (intptr_t i = 0; i < NITEMS; i++)
        px_queue_push(g_q, (void *)(base * NITEMS + i + 1));
    return NULL;
}

static void test_queue_many_producers(void **state)
{
    (void)state;
    assert_int_equal(px_queue_create(8, &g_q), PX_OK);
    pthread_t t[NPROD];
    for (intptr_t i = 0; i < NPROD; i++)
        pthread_create(&t[i], NULL, producer, (void *)i);
    char *seen = calloc(NPROD * NITEMS + 1, 1);
    for (int i = 0; i < NPROD * NITEMS; i++) {
        void *v;
        assert_int_equal(px_queue_pop(g_q, &v, 5000), PX_OK);
        intptr_t k = (intptr_t)v;
        assert_true(k >= 1 && k <= NPROD * NITEMS);
        assert_int_equal(seen[k], 0);
        seen[k] = 1;
    }
    for (int i = 0; i < NPROD; i++)
        pthread_join(t[i], NULL);
    free(seen);
    px_queue_destroy(g_q);
}

static void test_atomic_write_and_read(void **state)
{
    (void)state;
    char dir[] = "/tmp/px_core_testXXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof path, "%s/out.bin", dir);
    px_err e;
    assert_int_equal(px_write_file_atomic(path, "hello", 5, &e), PX_OK);
    uint8_t *d;
    size_t n;
    assert_int_equal(px_read_file(path, 100, &d, &n, &e), PX_OK);
    assert_int_equal(n, 5);
    assert_memory_equal(d, "hello", 5);
    free(d);
    assert_int_equal(px_read_file(path, 4, &d, &n, &e), PX_ELIMIT);
    assert_non_null(strstr(e.msg, "out.bin"));
    /* a write into a missing directory fails and leaves nothing behind */
    snprintf(path, sizeof path, "%s/missing/out.bin", dir);
    assert_int_equal(px_write_file_atomic(path, "x", 1, &e), PX_EIO);
    snprintf(path, sizeof path, "%s/out.bin", dir);
    unlink(path);
    assert_int_equal(rmdir(dir), 0); /* empty: no temporary left over */
}

/* px_write_file_atomic_opts: the asked mode whatever the umask, with and without fsync. */
static void test_atomic_write_mode(void **state)
{
    (void)state;
    char dir[] = "/tmp/px_core_mode_XXXXXX", path[128];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/f.bin", dir);
    px_err e;
    px_write_opts o = {.mode = 0640, .fsync = 0};
    assert_int_equal(px_write_file_atomic_opts(path, "abc", 3, &o, &e), PX_OK);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0640);
    assert_int_equal(sb.st_size, 3);
    o.mode = 0604;
    o.fsync = 1;
    assert_int_equal(px_write_file_atomic_opts(path, "abcd", 4, &o, &e), PX_OK);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0604);
    assert_int_equal(sb.st_size, 4);
    unlink(path);
    rmdir(dir);
}

static void test_mkdir_p(void **state)
{
    (void)state;
    char dir[] = "/tmp/px_core_mkdir_XXXXXX", path[256], file[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/a/b/c", dir);
    px_err e;
    assert_int_equal(px_mkdir_p(path, &e), PX_OK);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(px_mkdir_p(path, &e), PX_OK); /* exists already: fine */
    snprintf(file, sizeof file, "%s/a/f", dir);
    assert_int_equal(px_write_file_atomic(file, "x", 1, &e), PX_OK);
    char under[300];
    snprintf(under, sizeof under, "%s/g", file);
    assert_int_equal(px_mkdir_p(under, &e), PX_EIO); /* a file in the way */
    assert_non_null(strstr(e.msg, "/a/f"));
    assert_int_equal(px_mkdir_p(file, &e), PX_EIO);
    assert_int_equal(px_mkdir_p("", &e), PX_EINVAL);
    unlink(file);
    rmdir(path);
    snprintf(path, sizeof path, "%s/a/b", dir);
    rmdir(path);
    snprintf(path, sizeof path, "%s/a", dir);
    rmdir(path);
    rmdir(dir);
}

/* One wording for every option number; bad values leave *out alone. */
static void test_parse_numbers(void **state)
{
    (void)state;
    px_err e;
    int i = 7;
    assert_int_equal(px_parse_int("--n", "42", 1, 100, &i, &e), PX_OK);
    assert_int_equal(i, 42);
    const char *bad[] = {"", "4x", "x", "101", "0", "1e2", " 5", "99999999999999999999"};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        assert_int_equal(px_parse_int("--n", bad[k], 1, 100, &i, &e), PX_EINVAL);
        assert_int_equal(i, 42);
    }
    assert_string_equal(e.msg, "--n '99999999999999999999': expected an integer in 1..100");
    assert_int_equal(px_parse_int("--n", NULL, 1, 100, &i, &e), PX_EINVAL);
    long l = 0;
    assert_int_equal(px_parse_long("--big", "-5000000000", -6000000000L, 0, &l, &e), PX_OK);
    assert_true(l == -5000000000L);
    double d = 0;
    assert_int_equal(px_parse_double("--cfg", "7.5", 0.1, 50, &d, &e), PX_OK);
    assert_true(d == 7.5);
    assert_int_equal(px_parse_double("--cfg", "nan", 0.1, 50, &d, &e), PX_EINVAL);
    assert_int_equal(px_parse_double("--cfg", "inf", 0, 1e308, &d, &e), PX_EINVAL);
    assert_int_equal(px_parse_double("--cfg", "51", 0.1, 50, &d, &e), PX_EINVAL);
    assert_string_equal(e.msg, "--cfg '51': expected a number in 0.1..50");
    assert_true(d == 7.5);
}

static void test_alloc_wrappers(void **state)
{
    (void)state;
    char *s = px_strdup("hello");
    assert_string_equal(s, "hello");
    free(s);
    s = px_strndup("hello", 3);
    assert_string_equal(s, "hel");
    free(s);
    assert_null(px_strdup(NULL));
    void *p = px_realloc(NULL, 10);
    assert_non_null(p);
    p = px_realloc(p, 100);
    assert_non_null(p);
    free(p);
}

/* Peak resident memory of this process, in KiB (Linux reports ru_maxrss in KiB). */
static long peak_kib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* A 1 GiB file (sparse: it takes no disk) is refused from its size before a
 * byte is read; a pipe is refused once it passes the limit. Both in a child
 * whose peak memory must grow by less than 16 MiB (reading the file would
 * take 1 GiB; the limit here is 1 MiB). */
static void test_read_file_bounded(void **state)
{
    (void)state;
    char dir[] = "/tmp/px_core_read_XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/big", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)1 << 30), 0);
    close(fd);
    int pfd[2];
    assert_int_equal(pipe(pfd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(pfd[1]);
        const long before = peak_kib();
        uint8_t *d = NULL;
        size_t n = 0;
        px_err e;
        int bad = 0;
        bad |= px_read_file(path, 1u << 20, &d, &n, &e) != PX_ELIMIT;
        bad |= strstr(e.msg, "1073741824 bytes") == NULL;
        char fdpath[64];
        snprintf(fdpath, sizeof fdpath, "/dev/fd/%d", pfd[0]);
        bad |= (px_read_file(fdpath, 1u << 20, &d, &n, &e) != PX_ELIMIT) << 1;
        bad |= (d != NULL) << 2;
        bad |= (peak_kib() - before > 16 * 1024) << 3;
        _exit(bad);
    }
    close(pfd[0]);
    /* 4 MiB into the pipe; the child stops reading at 1 MiB, so ignore EPIPE */
    signal(SIGPIPE, SIG_IGN);
    static uint8_t buf[1 << 16];
    for (int i = 0; i < 64; i++)
        if (write(pfd[1], buf, sizeof buf) < 0)
            break;
    close(pfd[1]);
    signal(SIGPIPE, SIG_DFL);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("bounded read child: status %d (bits: 1 file, 2 pipe, 4 data, 8 memory)", st);
    unlink(path);
    rmdir(dir);
}

/* What pixpipe anonymize's handler does. */
static void on_term(int sig)
{
    px_tmp_unlink_all();
    signal(sig, SIG_DFL);
    raise(sig);
}

static int count_tmp(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += strstr(e->d_name, ".tmp.") != NULL;
    if (d)
        closedir(d);
    return n;
}

/* A child killed by SIGTERM (SIGHUP, SIGINT) leaves no temporary file:
 * first one listed by px_tmp_mkstemp and then the signal raised (exact), then
 * a child writing 32 MiB files over and over with px_write_file_atomic_opts,
 * killed once its temporary file is seen on disk. */
static void test_tmp_removed_on_signal(void **state)
{
    (void)state;
    char dir[] = "/tmp/px_core_tmp_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/out.bin", dir);
    const int sigs[3] = {SIGTERM, SIGHUP, SIGINT};
    for (int k = 0; k < 3; k++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            signal(sigs[k], on_term);
            char tmpl[80];
            snprintf(tmpl, sizeof tmpl, "%s.tmp.XXXXXX", path);
            int slot = -1;
            if (px_tmp_mkstemp(tmpl, &slot) < 0 || slot < 0 || count_tmp(dir) != 1)
                _exit(3);
            raise(sigs[k]);
            _exit(4); /* not reached */
        }
        int st = 0;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFSIGNALED(st));
        assert_int_equal(WTERMSIG(st), sigs[k]);
        assert_int_equal(count_tmp(dir), 0);
    }
    /* a released slot is no longer removed */
    char tmpl[80];
    snprintf(tmpl, sizeof tmpl, "%s.tmp.XXXXXX", path);
    int slot = -1, fd = px_tmp_mkstemp(tmpl, &slot);
    assert_true(fd >= 0 && slot >= 0);
    close(fd);
    px_tmp_release(slot);
    assert_int_equal(px_tmp_unlink_all(), 0);
    assert_int_equal(unlink(tmpl), 0);

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGTERM, on_term);
        const size_t n = (size_t)32 << 20;
        uint8_t *big = calloc(1, n);
        px_write_opts o = {.mode = 0, .fsync = 0};
        for (int i = 0; big && i < 100000; i++)
            px_write_file_atomic_opts(path, big, n, &o, NULL);
        _exit(5);
    }
    int seen = 0;
    for (int i = 0; i < 20000 && !seen; i++) {
        seen = count_tmp(dir) > 0;
        if (!seen)
            usleep(500);
    }
    kill(pid, SIGTERM);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(seen);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
    assert_int_equal(count_tmp(dir), 0);
    unlink(path);
    assert_int_equal(rmdir(dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_prefix),
        cmocka_unit_test(test_pool_covers_every_index_once),
        cmocka_unit_test(test_queue_bounded),
        cmocka_unit_test(test_queue_many_producers),
        cmocka_unit_test(test_atomic_write_and_read),
        cmocka_unit_test(test_atomic_write_mode),
        cmocka_unit_test(test_mkdir_p),
        cmocka_unit_test(test_parse_numbers),
        cmocka_unit_test(test_alloc_wrappers),
        cmocka_unit_test(test_read_file_bounded),
        cmocka_unit_test(test_tmp_removed_on_signal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
