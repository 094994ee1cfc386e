/*
 * pixpipe entry point: picks the subcommand and hands it argv. Every
 * subcommand lives in its own cmd_*.c and does only argument parsing and
 * wiring; the work is in the libraries under src/.
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "core/px_core.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"anonymize", px_cmd_anonymize, "hide every face in photos (blur, pixelate, noise, solid)"},
    {"bot", px_cmd_bot, "run the Telegram bot that hides faces in photos sent to it"},
    {"serve", px_cmd_serve, "HTTP API (anonymize, pool) and the expert review page"},
    {"generate", px_cmd_generate, "fill an image pool: prompts by LLM or templates, renders on servers"},
    {"export", px_cmd_export, "a pool's manifest as CSV/JSON Lines, or its approved images"},
    {"render", px_cmd_render, "one image from a prompt, Stable Diffusion 1.x on the CPU"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: pixpipe COMMAND [options] ...\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'pixpipe COMMAND --help' describes a command's options.\n"
               "  -h, --help     this text\n"
               "  -V, --version  print the version\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return PX_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        usage(stdout);
        return PX_EXIT_OK;
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("pixpipe %s\n", PX_VERSION);
        return PX_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(cmd, commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "pixpipe: unknown command '%s'; run 'pixpipe --help' for the list\n", cmd);
    return PX_EXIT_USAGE;
}
