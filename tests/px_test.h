/*
 * Waiting in tests without depending on the machine's speed.
 *
 * A test that waits for work waits for the event (a reply, a row, an exit)
 * and gives up only after a deadline far beyond what the work needs; the
 * deadline is scaled by px_test_slow(), so a sanitizer build (5-20x slower)
 * or a machine busy with other work does not fail a test that is right. A
 * passing test never waits the deadline out, so generous costs nothing.
 * No test asserts on elapsed time; load tests use px_test_load() to run a
 * smaller load under the sanitizers.
 *
 * px_test_slow(): 1 in an optimised build, 4 under ASan/UBSan, 8 under TSan
 * (or in a debug build: 2), times PX_TEST_SLOW from the environment when set
 * (e.g. PX_TEST_SLOW=3 on a slow CI machine).
 */
#ifndef PX_TEST_H
#define PX_TEST_H

#include <stdlib.h>
#include <time.h>

#if defined(__SANITIZE_THREAD__)
#define PX_TEST_SANITIZER 2
#elif defined(__SANITIZE_ADDRESS__)
#define PX_TEST_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PX_TEST_SANITIZER 2
#elif __has_feature(address_sanitizer)
#define PX_TEST_SANITIZER 1
#endif
#endif
#ifndef PX_TEST_SANITIZER
#define PX_TEST_SANITIZER 0
#endif

/* 1 under a sanitizer (ASan/UBSan or TSan), else 0. */
static inline int px_test_sanitized(void)
{
    return PX_TEST_SANITIZER != 0;
}

/* How much slower than an optimised build on an idle machine to allow for. */
static inline double px_test_slow(void)
{
    double f = PX_TEST_SANITIZER == 2 ? 8 : PX_TEST_SANITIZER == 1 ? 4 : 1;
#ifndef NDEBUG
    if (f < 2)
        f = 2;
#endif
    const char *e = getenv("PX_TEST_SLOW");
    double env = e ? atof(e) : 0;
    return env >= 1 ? f * env : f;
}

/* A deadline of ms milliseconds on an idle optimised build, scaled. */
static inline int px_test_ms(int ms)
{
    double v = ms * px_test_slow();
    return v > 2e9 ? 2000000000 : (int)v;
}

/* The size of a load test: full, or small under a sanitizer (where the
 * races and leaks show with a few rounds as well as with many). */
static inline int px_test_load(int full, int sanitized)
{
    return px_test_sanitized() ? sanitized : full;
}

/* Monotonic milliseconds and a sleep, for polling loops. */
static inline double px_test_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline void px_test_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

#endif
