/*
 * `pixpipe export`: writes a pool's manifest (images with their prompts,
 * seeds, checks and latest expert verdict) as CSV or JSON Lines, to stdout or
 * a file (written to a temporary name, then renamed); or, with --approved DIR,
 * copies the images experts approved into a stock folder layout with a
 * metadata.csv. Wiring only; the rows come from px_manifest_export and the copies
 * from px_manifest_export_approved (src/manifest).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "core/px_core.h"
#include "manifest/px_manifest.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: pixpipe export --out POOL [--format csv|jsonl] [-o FILE]\n"
               "       pixpipe export --out POOL --approved DIR\n"
               "Writes the pool's manifest, one row per image, as CSV (default) or JSON Lines\n"
               "to FILE or stdout. With --approved, copies every image whose latest expert\n"
               "verdict is 'approve' to DIR/<theme>/<type>/<id>.<ext> and writes\n"
               "DIR/metadata.csv; safe to re-run as more images get approved.\n"
               "Exit codes: 0 done, 2 usage, 3 pool cannot be opened, 1 export failed.\n");
}

int px_cmd_export(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"out", required_argument, 0, 'p'},    {"pool", required_argument, 0, 'p'},
        {"format", required_argument, 0, 'f'}, {"approved", required_argument, 0, 'a'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    const char *pool = NULL, *format = "csv", *out = NULL, *approved = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "ho:", longopts, NULL)) != -1) {
        switch (c) {
        case 'p':
            pool = optarg;
            break;
        case 'f':
            format = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'a':
            approved = optarg;
            break;
        case 'h':
            usage(stdout);
            return PX_EXIT_OK;
        default:
            usage(stderr);
            return PX_EXIT_USAGE;
        }
    }
    if (!pool || optind < argc) {
        usage(stderr);
        return PX_EXIT_USAGE;
    }
    px_err err;
    if (approved) {
        if (out) {
            fprintf(stderr, "pixpipe export: --approved writes a folder; -o does not apply\n");
            return PX_EXIT_USAGE;
        }
        size_t n = 0;
        int st = px_manifest_export_approved(pool, approved, &n, &err);
        if (st != PX_OK) {
            fprintf(stderr, "pixpipe export: %s\n", err.msg);
            return st == PX_ENOTFOUND ? PX_EXIT_SETUP : PX_EXIT_FAILED;
        }
        fprintf(stderr, "pixpipe export: %zu approved image%s in %s (metadata.csv)\n", n,
                n == 1 ? "" : "s", approved);
        return PX_EXIT_OK;
    }
    int jsonl;
    if (!strcmp(format, "csv"))
        jsonl = 0;
    else if (!strcmp(format, "jsonl"))
        jsonl = 1;
    else {
        fprintf(stderr, "pixpipe export: --format '%s': expected csv or jsonl\n", format);
        return PX_EXIT_USAGE;
    }
    char db[1100];
    snprintf(db, sizeof db, "%s/%s", pool, PX_MANIFEST_FILE);
    px_manifest *s;
    if (px_manifest_open(db, 1, &s, &err) != PX_OK) {
        fprintf(stderr, "pixpipe export: %s\n", err.msg);
        return PX_EXIT_SETUP;
    }
    char *buf = NULL;
    size_t len = 0;
    FILE *f = out ? open_memstream(&buf, &len) : stdout;
    int st =
        f ? px_manifest_export(s, f, jsonl, &err) : px_err_set(&err, PX_ENOMEM, "out of memory");
    px_manifest_close(s);
    if (out && f)
        fclose(f);
    if (st == PX_OK && out)
        st = px_write_file_atomic(out, buf, len, &err);
    free(buf);
    if (st != PX_OK) {
        fprintf(stderr, "pixpipe export: %s\n", err.msg);
        return PX_EXIT_FAILED;
    }
    return PX_EXIT_OK;
}
