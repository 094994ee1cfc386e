/*
 * serve_make_pool DIR [PER_SLOT] [QUOTA]: makes a small review pool for the
 * browser test and for trying the review page by hand (two themes x two
 * types of synthetic images, through the real store; see
 * tests/integration/test_serve_fixture.h). Prints the first image id.
 */
#include <stdio.h>
#include <stdlib.h>

#include "integration/test_serve_fixture.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: serve_make_pool DIR [PER_SLOT] [QUOTA]\n");
        return 2;
    }
    int per = argc > 2 ? atoi(argv[2]) : 3;
    int quota = argc > 3 ? atoi(argv[3]) : 5;
    if (per < 1 || per > 500 || quota < 0) {
        fprintf(stderr, "serve_make_pool: PER_SLOT must be 1..500 and QUOTA >= 0\n");
        return 2;
    }
    px_err err = {{0}};
    int64_t first = 0;
    if (fx_make_pool(argv[1], per, quota, &first, &err) != PX_OK) {
        fprintf(stderr, "serve_make_pool: %s\n", err.msg);
        return 1;
    }
    printf("%lld\n", (long long)first);
    return 0;
}
