/*
 * The registry of temporary files being written (px_tmp_*, see px_core.h), so
 * that a signal handler can remove them: a run stopped by Ctrl-C, SIGTERM or
 * SIGHUP in the middle of px_write_file_atomic must not leave
 * NAME.tmp.XXXXXX behind.
 *
 * How it works: a fixed table of slots in static storage (no allocation, so
 * nothing a handler reads is ever freed). A writer claims a free slot with a
 * compare-and-swap, and mkstemp fills in the name inside the slot itself, so
 * there is no moment when the file exists but is not listed. The handler walks
 * the table and unlink()s every claimed name; unlink is async-signal-safe, and
 * a name that mkstemp has not finished or that was already renamed away just
 * fails with ENOENT. When the table is full, a write goes on unlisted (it is
 * still removed on every ordinary failure path).
 */
#include "px_core.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PX_TMP_SLOTS 64

typedef struct tmp_slot {
    atomic_int used; /* 0 free, 1 claimed */
    char path[PATH_MAX];
} tmp_slot;

static tmp_slot g_slots[PX_TMP_SLOTS];

int px_tmp_mkstemp(char *tmpl, int *slot)
{
    *slot = -1;
    const size_t n = strlen(tmpl);
    for (int i = 0; n < PATH_MAX && i < PX_TMP_SLOTS; i++) {
        int expect = 0;
        if (!atomic_compare_exchange_strong(&g_slots[i].used, &expect, 1))
            continue;
        /* the slot was free, so no handler will read it until used is 1: copy, then make */
        memcpy(g_slots[i].path, tmpl, n + 1);
        const int fd = mkstemp(g_slots[i].path);
        if (fd < 0) {
            atomic_store(&g_slots[i].used, 0);
            return -1;
        }
        memcpy(tmpl, g_slots[i].path, n + 1);
        *slot = i;
        return fd;
    }
    return mkstemp(tmpl);
}

void px_tmp_release(int slot)
{
    if (slot >= 0 && slot < PX_TMP_SLOTS)
        atomic_store(&g_slots[slot].used, 0);
}

int px_tmp_unlink_all(void)
{
    int n = 0;
    for (int i = 0; i < PX_TMP_SLOTS; i++)
        if (atomic_load(&g_slots[i].used) && unlink(g_slots[i].path) == 0)
            n++;
    return n;
}
