/* The subcommands main.c dispatches to: each parses its own arguments and
 * returns the process exit status (see docs/cli.md for the codes). */
#ifndef PX_APP_COMMANDS_H
#define PX_APP_COMMANDS_H

/* Exit codes shared by all subcommands. */
enum {
    PX_EXIT_OK = 0,
    PX_EXIT_FAILED = 1, /* some inputs failed; the rest were processed */
    PX_EXIT_USAGE = 2,  /* bad command line */
    PX_EXIT_SETUP = 3,  /* could not start: model missing, output dir unwritable... */
};

int px_cmd_anonymize(int argc, char **argv);
int px_cmd_bot(int argc, char **argv);
int px_cmd_serve(int argc, char **argv);
int px_cmd_generate(int argc, char **argv);
int px_cmd_export(int argc, char **argv);
int px_cmd_render(int argc, char **argv);

/* The data folder (vocab/, styles/, campaigns/) `pixpipe generate` reads,
 * for `pixpipe serve`'s Campaigns page too (cmd_generate.c). */
const char *px_app_data_dir(void);

#endif
