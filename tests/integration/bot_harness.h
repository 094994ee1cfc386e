/*
 * Helpers shared by the bot's integration tests and its benchmark: start the
 * real `pixpipe bot` binary as a child process against the fake Bot API
 * server, stop it the way systemd does, read test photos.
 */
#ifndef PX_BOT_HARNESS_H
#define PX_BOT_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BOT_TEST_TOKEN "4242424242:AAH-test-token_DoNotLog"

typedef struct bot_proc {
    pid_t pid;
    char log_path[512];
} bot_proc;

/* Starts `bin bot --api-url url --db db [extra...]` with the token in the
 * environment and stderr appended to log_path. extra is NULL-terminated (may
 * be NULL). Returns 0 or -1. */
int bot_spawn(bot_proc *p, const char *bin, const char *url, const char *db,
              const char *const *extra, const char *log_path);
/* Waits for the child to exit: its exit status (0..255), 128+signal when
 * killed, or -1 on timeout (the child is left running). */
int bot_wait_exit(bot_proc *p, int timeout_ms);
/* SIGTERM, then waits; SIGKILL when it did not exit in time. */
int bot_term(bot_proc *p, int timeout_ms);
void bot_kill(bot_proc *p); /* SIGKILL and reap */
/* Whether the log contains s (1/0). */
int bot_log_contains(const bot_proc *p, const char *s);

/* A free TCP port on 127.0.0.1 (the kernel's pick, released at once, so
 * another program could take it first; fine for tests), or -1. */
int bot_free_port(void);

/* Reads a file into a malloc'd buffer; NULL on failure. */
uint8_t *bot_read_file(const char *path, size_t *len);

#endif
