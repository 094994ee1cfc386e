/*
 * bot_harness: process control for the bot's integration tests and bench.
 * fork + execve (not system()) so the test has the child's pid to signal,
 * the token goes through the environment only, and the log is a file the
 * test can search (for the token: it must never be there).
 */
#include "bot_harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int bot_spawn(bot_proc *p, const char *bin, const char *url, const char *db,
              const char *const *extra, const char *log_path)
{
    memset(p, 0, sizeof *p);
    snprintf(p->log_path, sizeof p->log_path, "%s", log_path);
    const char *argv[64];
    int n = 0;
    argv[n++] = bin;
    argv[n++] = "bot";
    argv[n++] = "--api-url";
    argv[n++] = url;
    argv[n++] = "--db";
    argv[n++] = db;
    for (int i = 0; extra && extra[i] && n < 62; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    /* the environment is built before fork: the test has threads (the fake
     * server), and a child of a threaded process may only call
     * async-signal-safe functions until execve (setenv mallocs) */
    static char tokvar[] = "PIXPIPE_TELEGRAM_TOKEN=" BOT_TEST_TOKEN;
    size_t ne = 0;
    while (environ[ne])
        ne++;
    char **envp = calloc(ne + 2, sizeof *envp);
    if (!envp)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < ne; i++)
        if (strncmp(environ[i], "PIXPIPE_TELEGRAM_TOKEN=", 23))
            envp[k++] = environ[i];
    envp[k++] = tokvar;
    envp[k] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        free(envp);
        return -1;
    }
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, 2);
            close(fd);
        }
        execve(bin, (char *const *)argv, envp);
        _exit(127);
    }
    free(envp);
    p->pid = pid;
    return 0;
}

int bot_wait_exit(bot_proc *p, int timeout_ms)
{
    if (p->pid <= 0)
        return -1;
    for (int waited = 0;; waited += 10) {
        int status;
        pid_t r = waitpid(p->pid, &status, WNOHANG);
        if (r == p->pid) {
            p->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        if (waited >= timeout_ms)
            return -1;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

int bot_term(bot_proc *p, int timeout_ms)
{
    if (p->pid <= 0)
        return -1;
    kill(p->pid, SIGTERM);
    int st = bot_wait_exit(p, timeout_ms);
    if (st < 0) {
        bot_kill(p);
        return -1;
    }
    return st;
}

void bot_kill(bot_proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
}

uint8_t *bot_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *d = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (d && fread(d, 1, (size_t)n, f) != (size_t)n) {
        free(d);
        d = NULL;
    }
    fclose(f);
    if (d) {
        d[n] = 0;
        *len = (size_t)n;
    }
    return d;
}

int bot_log_contains(const bot_proc *p, const char *s)
{
    size_t n;
    uint8_t *d = bot_read_file(p->log_path, &n);
    if (!d)
        return 0;
    int r = strstr((char *)d, s) != NULL;
    free(d);
    return r;
}

int bot_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}
