/*
 * fake_imageserver_run: the fake image server (fake_imageserver.c) as a
 * process, for tests that start real programs (the browser test of the
 * Campaigns page). It starts the server on a free port, then runs COMMAND
 * with every "{URL}" in its arguments replaced by the server's base URL,
 * forwards SIGTERM/SIGINT to it, and exits with its status, so a caller can
 * treat "fake_imageserver_run ... -- pixpipe serve ..." as the server.
 *
 *   fake_imageserver_run [--delay-ms N] [--size WxH] -- COMMAND [ARGS...]
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fake_imageserver.h"

static volatile sig_atomic_t g_child;

static void forward(int sig)
{
    if (g_child > 0)
        kill((pid_t)g_child, sig);
}

/* arg with each "{URL}" replaced by url (malloc'd). */
static char *substitute(const char *arg, const char *url)
{
    size_t n = strlen(arg) + 1, ul = strlen(url);
    for (const char *p = strstr(arg, "{URL}"); p; p = strstr(p + 5, "{URL}"))
        n += ul;
    char *out = malloc(n), *o = out;
    if (!out)
        return NULL;
    for (const char *p = arg; *p;) {
        if (!strncmp(p, "{URL}", 5)) {
            memcpy(o, url, ul);
            o += ul;
            p += 5;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    return out;
}

int main(int argc, char **argv)
{
    int delay = 0, w = 96, h = 64, i = 1;
    for (; i < argc && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "--delay-ms") && i + 1 < argc)
            delay = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--size") && i + 1 < argc &&
                 sscanf(argv[++i], "%dx%d", &w, &h) == 2)
            continue;
        else {
            fprintf(stderr,
                    "usage: fake_imageserver_run [--delay-ms N] [--size WxH] -- COMMAND...\n");
            return 2;
        }
    }
    if (i + 1 >= argc) {
        fprintf(stderr, "fake_imageserver_run: no command after --\n");
        return 2;
    }
    fake_img *f = NULL;
    if (fake_img_start(w, h, &f) != 0) {
        fprintf(stderr, "fake_imageserver_run: cannot start the fake image server\n");
        return 3;
    }
    fake_img_set_delay(f, delay);
    int n = argc - i - 1;
    char **args = calloc((size_t)n + 1, sizeof *args);
    for (int k = 0; args && k < n; k++)
        if (!(args[k] = substitute(argv[i + 1 + k], fake_img_url(f))))
            return 3;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = forward;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        execvp(args[0], args);
        fprintf(stderr, "fake_imageserver_run: %s: %s\n", args[0], strerror(errno));
        _exit(127);
    }
    g_child = pid;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    fake_img_stop(f);
    for (int k = 0; k < n; k++)
        free(args[k]);
    free(args);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
