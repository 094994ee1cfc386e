/*
 * Private to weights.c and weights_ldm.c: the tensor table of an opened
 * model. Each part keeps its tensors under their diffusers names, sorted for
 * lookup; a tensor points into one of the mapped files the handle owns.
 */
#ifndef PX_SD_WEIGHTS_INTERNAL_H
#define PX_SD_WEIGHTS_INTERNAL_H

#include "sd_internal.h"

typedef struct sd_wref {
    char *name; /* diffusers name, owned */
    const px_st_tensor *t;
    int used;
    float *f32; /* px_sd_w_f32's copy, made on first request */
} sd_wref;

typedef struct sd_wpart {
    sd_wref *r;
    size_t n, cap;
} sd_wpart;

#define SD_MAX_FILES 8
struct px_sd_weights {
    px_sd_config cfg;
    sd_wpart parts[PX_SD_NPARTS];
    px_st_file *files[SD_MAX_FILES];
    int nfiles;
    char *hash_path; /* the file px_sd_weights_hash digests */
    char hash[11];
    int hashed;
};

/* Adds tensor t to part under name (copied). PX_OK / PX_ENOMEM. */
int sd_w_add(px_sd_weights *w, px_sd_part part, const char *name, const px_st_tensor *t);
/* Keeps f open with w (closed by px_sd_weights_close). PX_OK / PX_ELIMIT. */
int sd_w_keep(px_sd_weights *w, px_st_file *f);
/* Tensor of part under its diffusers name, or NULL (the part must be sorted). */
const px_st_tensor *sd_w_get(const px_sd_weights *w, px_sd_part part, const char *name);
/* Sorts each part's table and refuses a name given twice. */
int sd_w_finish(px_sd_weights *w, const char *label, px_err *err);

/* weights_config.c: SD 1.5 defaults; a diffusers folder's config.json files
 * (refusing other families by name); a TAESD folder's config.json. */
void sd_config_defaults(px_sd_config *c);
int sd_folder_config(px_sd_weights *w, const char *dir, px_err *err);
int sd_taesd_config(px_sd_weights *w, const char *dir, px_err *err);

/* Configuration from the tensors themselves (diffusers names): for
 * single-file checkpoints, which carry no config. */
int sd_infer_unet(const px_sd_weights *w, px_sd_unet_config *c, const char *label, px_err *err);
int sd_infer_vae(const px_sd_weights *w, px_sd_vae_config *c, const char *label, px_err *err);
int sd_infer_clip(const px_sd_weights *w, px_sd_clip_config *c, const char *label, px_err *err);
int sd_infer_taesd(const px_sd_weights *w, px_sd_taesd_config *c, const char *label, px_err *err);

/* Recognises the architecture of a single-file checkpoint from its keys
 * (PX_SD_ARCH_SD1 when it looks like SD 1.x; 0 when no model is found). */
int sd_ldm_detect(const px_st_file *f);
/* Loads an original-layout (ldm) SD 1.x file: maps every tensor onto its
 * diffusers name in the right part. label names the file in errors. */
int sd_ldm_load(px_sd_weights *w, const px_st_file *f, const char *label, px_err *err);

#endif
