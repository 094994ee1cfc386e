/*
 * What jpeg.c shares with jpeg_patch.c: libjpeg's error manager that turns
 * errors (and the warnings that mean damaged data) into a longjmp with a
 * message, and the destination manager that appends to a px_buf. Private to
 * the image module.
 */
#ifndef PX_JPEG_INTERNAL_H
#define PX_JPEG_INTERNAL_H

#include "image_internal.h"

#include <setjmp.h>
#include <stdio.h> /* jpeglib.h needs FILE */

/* jpeglib.h first: it pulls in jconfig.h, whose JPEG_LIB_VERSION and
 * D_ARITH_CODING_SUPPORTED decide the numbering of jerror.h's message codes. */
#include <jpeglib.h>

typedef struct jerr_mgr {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    int status; /* PX_* status to return after the longjmp */
    char msg[JMSG_LENGTH_MAX];
} jerr_mgr;

/* Sets up m: errors and data-damage warnings longjmp to m->jb with m->status
 * and m->msg set; nothing is printed. */
void px_jpeg_err_init(jerr_mgr *m);

typedef struct jdest {
    struct jpeg_destination_mgr pub;
    px_buf *out;
    uint8_t chunk[16384];
} jdest;

/* A destination that appends to *out in 16 KB chunks (errors: JERR_OUT_OF_MEMORY). */
void px_jpeg_dest_init(jdest *d, px_buf *out);

#endif
