/*
 * Tests of the safetensors reader and the SD weights loader: the golden tiny
 * model as a diffusers folder and as one original-layout file must give the
 * same configs and, name by name, the same bytes; damaged and foreign files
 * must be refused with messages that name the problem. Synthetic files are
 * written to a temporary directory by the helpers below.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sd_internal.h"

#define GOLDEN PX_SHARED_DIR "/golden/sd"

static char tmpdir[256];

static int setup_tmp(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/px_sd_weights_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes <tmpdir>/name: an 8-byte LE header length (hlen, or strlen(json)
 * when hlen is 0), the JSON, then ndata bytes 0,1,2,... Returns the path. */
static const char *write_st(const char *name, const char *json, uint64_t hlen, size_t ndata)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t n = hlen ? hlen : strlen(json);
    for (int i = 0; i < 8; i++)
        fputc((int)((n >> (8 * i)) & 0xff), f);
    fputs(json, f);
    for (size_t i = 0; i < ndata; i++)
        fputc((int)(i & 0xff), f);
    fclose(f);
    return path;
}

static void expect_corrupt(const char *json, uint64_t hlen, size_t ndata, const char *needle)
{
    px_st_file *f = (px_st_file *)1;
    px_err err = {{0}};
    const char *p = write_st("bad.safetensors", json, hlen, ndata);
    int rc = px_st_open(p, &f, &err);
    assert_int_equal(rc, PX_ECORRUPT);
    assert_null(f);
    if (!strstr(err.msg, needle) || !strstr(err.msg, "bad.safetensors"))
        fail_msg("message \"%s\" lacks \"%s\" or the file name", err.msg, needle);
}

static void test_st_valid(void **state)
{
    (void)state;
    const char *p =
        write_st("ok.safetensors",
                 "{\"__metadata__\":{\"format\":\"pt\"},"
                 "\"b\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[8,20]},"
                 "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                 "\"e\":{\"dtype\":\"F8_E4M3\",\"shape\":[0],\"data_offsets\":[20,20]}}",
                 0, 20);
    px_st_file *f;
    px_err err = {{0}};
    assert_int_equal(px_st_open(p, &f, &err), PX_OK);
    assert_int_equal(px_st_count(f), 3);
    const px_st_tensor *a = px_st_find(f, "a"), *b = px_st_find(f, "b");
    assert_non_null(a);
    assert_non_null(b);
    assert_null(px_st_find(f, "c"));
    assert_string_equal(px_st_at(f, 0)->name, "b"); /* header order kept */
    assert_int_equal(b->dtype, PX_ST_F16);
    assert_string_equal(b->dtype_name, "F16");
    assert_int_equal(b->ndim, 2);
    assert_int_equal(b->shape[1], 3);
    assert_int_equal(b->nbytes, 12);
    assert_int_equal(((const uint8_t *)b->data)[0], 8);
    assert_int_equal(((const uint8_t *)a->data)[7], 7);
    assert_int_equal(px_st_find(f, "e")->dtype, PX_ST_OTHER);
    assert_int_equal(px_st_nn_dtype(PX_ST_OTHER), -1);
    assert_int_equal(px_st_nn_dtype(PX_ST_BF16), PX_NN_BF16);
    assert_string_equal(px_st_metadata(f, "format"), "pt");
    assert_null(px_st_metadata(f, "nope"));
    px_st_close(f);
    px_st_close(NULL);
}

static void test_st_corrupt(void **state)
{
    (void)state;
    const char *one = "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    expect_corrupt(one, 0, 7, "outside the data area");     /* truncated data */
    expect_corrupt(one, 4000, 8, "header says 4000 bytes"); /* header length lies */
    expect_corrupt(one, 200000000, 8, "limit");             /* absurd header */
    expect_corrupt("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 8,
                   "tensor t: data_offsets span 8 bytes, shape and dtype need 12");
    expect_corrupt("{\"t\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 0, 8,
                   "tensor t: unknown dtype \"Q4\"");
    expect_corrupt("{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 0, 8,
                   "tensor t: shape");
    expect_corrupt("{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],"
                   "\"data_offsets\":[0,8]}}",
                   0, 8, "overflows");
    expect_corrupt("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 0, 8,
                   "outside");
    expect_corrupt("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"u\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                   0, 8, "overlaps");
    expect_corrupt("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
                   0, 8, "header JSON");
    expect_corrupt("{\"t\":", 0, 8, "header JSON");
    expect_corrupt("[1]", 0, 8, "not an object");
    expect_corrupt("{\"__metadata__\":{\"a\":1}}", 0, 0, "__metadata__");
    expect_corrupt("", 0, 0, "empty header"); /* 8-byte file */
    /* px_st_parse on a buffer: the same checks */
    px_st_file *f = NULL;
    px_err err = {{0}};
    const uint8_t tiny[4] = {1, 2, 3, 4};
    assert_int_equal(px_st_parse(tiny, sizeof tiny, &f, &err), PX_ECORRUPT);
    assert_null(f);
    assert_int_equal(px_st_open("/nonexistent/x.safetensors", &f, &err), PX_ENOTFOUND);
}

static void test_folder_config(void **state)
{
    (void)state;
    px_sd_weights *w;
    px_err err = {{0}};
    int rc = px_sd_weights_open(GOLDEN, GOLDEN "/taesd", &w, &err);
    if (rc != PX_OK)
        fail_msg("open: %s", err.msg);
    const px_sd_config *c = px_sd_weights_config(w);
    assert_int_equal(c->arch, PX_SD_ARCH_SD1);
    assert_int_equal(c->single_file, 0);
    assert_int_equal(c->unet.levels, 2);
    assert_int_equal(c->unet.block_out[0], 32);
    assert_int_equal(c->unet.block_out[1], 64);
    assert_int_equal(c->unet.cross_attn[0], 1);
    assert_int_equal(c->unet.cross_attn[1], 0);
    assert_int_equal(c->unet.layers_per_block, 1);
    assert_int_equal(c->unet.heads[0], 8);
    assert_int_equal(c->unet.heads[1], 8);
    assert_int_equal(c->unet.cross_dim, 32);
    assert_int_equal(c->unet.in_channels, 4);
    assert_int_equal(c->unet.time_cond_proj_dim, 0);
    assert_int_equal(c->clip.hidden, 32);
    assert_int_equal(c->clip.layers, 3);
    assert_int_equal(c->clip.heads, 4);
    assert_int_equal(c->clip.vocab, 527);
    assert_int_equal(c->clip.intermediate, 64);
    assert_int_equal(c->clip.bos, 525);
    assert_int_equal(c->clip.eos, 526);
    assert_int_equal(c->clip.act, PX_NN_QUICK_GELU);
    assert_int_equal(c->vae.levels, 4);
    assert_int_equal(c->vae.block_out[0], 32);
    assert_int_equal(c->vae.block_out[3], 64);
    assert_int_equal(c->vae.layers_per_block, 1);
    assert_true(c->vae.scaling_factor == 0.18215f);
    assert_int_equal(c->taesd.present, 1);
    assert_int_equal(c->taesd.channels, 16);
    assert_int_equal(c->taesd.blocks[0], 1);
    assert_int_equal(c->train_timesteps, 1000);
    assert_true(c->beta_start == 0.00085f && c->beta_end == 0.012f);
    assert_int_equal(c->steps_offset, 1);
    assert_int_equal(px_sd_weights_dtype(w), PX_NN_F32);
    px_sd_weights_close(w);
}

static void test_mat_and_f32(void **state)
{
    (void)state;
    px_sd_weights *w;
    px_err err = {{0}};
    assert_int_equal(px_sd_weights_open(GOLDEN, NULL, &w, &err), PX_OK);
    px_nn_mat m;
    int64_t good[4] = {32, 32, 1, 1}, bad[4] = {64, 32, 1, 1};
    const char *pin = "down_blocks.0.attentions.0.proj_in.weight";
    assert_int_equal(px_sd_w_mat(w, PX_SD_UNET, pin, 4, good, &m, &err), PX_OK);
    assert_int_equal(m.rows, 32);
    assert_int_equal(m.cols, 32);
    assert_int_equal(m.dtype, PX_NN_F32);
    assert_int_equal(px_sd_w_mat(w, PX_SD_UNET, pin, 2, good, &m, &err), PX_OK); /* (C,C) view */
    assert_int_equal(px_sd_w_mat(w, PX_SD_UNET, pin, 4, bad, &m, &err), PX_EINVAL);
    assert_string_equal(err.msg, "unet: tensor down_blocks.0.attentions.0.proj_in.weight has "
                                 "shape [32,32,1,1], expected [64,32,1,1]");
    assert_int_equal(px_sd_w_mat(w, PX_SD_UNET, "down_blocks.9.x.weight", 2, good, &m, &err),
                     PX_ENOTFOUND);
    assert_string_equal(err.msg, "unet: missing tensor down_blocks.9.x.weight");
    const float *b;
    assert_int_equal(px_sd_w_f32(w, PX_SD_VAE, "decoder.conv_in.bias", 63, &b, &err), PX_EINVAL);
    assert_string_equal(err.msg, "vae: tensor decoder.conv_in.bias has shape [64], expected 63 "
                                 "elements");
    const px_st_tensor *t = NULL;
    px_st_file *raw;
    assert_int_equal(px_st_open(GOLDEN "/vae/diffusion_pytorch_model.safetensors", &raw, &err),
                     PX_OK);
    t = px_st_find(raw, "decoder.conv_in.bias");
    assert_non_null(t);
    int64_t n = t->shape[0];
    assert_int_equal(px_sd_w_f32(w, PX_SD_VAE, "decoder.conv_in.bias", n, &b, &err), PX_OK);
    assert_memory_equal(b, t->data, (size_t)n * 4);
    const float *b2;
    assert_int_equal(px_sd_w_f32(w, PX_SD_VAE, "decoder.conv_in.bias", n, &b2, &err), PX_OK);
    assert_ptr_equal(b, b2); /* converted once */
    px_st_close(raw);
    assert_true(px_sd_w_has(w, PX_SD_CLIP, "text_model.final_layer_norm.weight"));
    assert_false(px_sd_w_has(w, PX_SD_CLIP, "text_model.nope"));
    char first[128];
    size_t unused = px_sd_weights_unused(w, PX_SD_UNET, first, sizeof first);
    assert_int_equal(unused, 207); /* 208 tensors, one used */
    assert_true(first[0] != '\0');
    px_sd_weights_close(w);
}

/* Every tensor of every part of the folder, by its diffusers name, must have
 * the same bytes in the single file (so the engine is bit-identical on both). */
static void check_part_bytes(px_sd_weights *ldm, px_sd_part part, const char *file)
{
    px_st_file *f;
    px_err err = {{0}};
    assert_int_equal(px_st_open(file, &f, &err), PX_OK);
    assert_true(px_st_count(f) > 10);
    for (size_t i = 0; i < px_st_count(f); i++) {
        const px_st_tensor *t = px_st_at(f, i);
        px_nn_mat m;
        int rc = px_sd_w_mat(ldm, part, t->name, t->ndim, t->shape, &m, &err);
        if (rc != PX_OK)
            fail_msg("%s: %s", t->name, err.msg);
        assert_int_equal(m.dtype, px_st_nn_dtype(t->dtype));
        if (memcmp(m.data, t->data, t->nbytes) != 0)
            fail_msg("%s %s: bytes differ", px_sd_part_name(part), t->name);
    }
    char first[128];
    size_t left = px_sd_weights_unused(ldm, part, first, sizeof first);
    if (left)
        fail_msg("%s: %zu tensors of the file not in the folder, first %s", px_sd_part_name(part),
                 left, first);
    px_st_close(f);
}

static void test_ldm_file(void **state)
{
    (void)state;
    px_sd_weights *a, *b;
    px_err err = {{0}};
    assert_int_equal(px_sd_weights_open(GOLDEN, GOLDEN "/taesd", &a, &err), PX_OK);
    int rc = px_sd_weights_open(GOLDEN "/ldm/tiny-sd15.safetensors", GOLDEN "/taesd.safetensors",
                                &b, &err);
    if (rc != PX_OK)
        fail_msg("open ldm: %s", err.msg);
    const px_sd_config *ca = px_sd_weights_config(a), *cb = px_sd_weights_config(b);
    assert_int_equal(cb->single_file, 1);
    assert_int_equal(cb->arch, PX_SD_ARCH_SD1);
    assert_memory_equal(&ca->unet, &cb->unet, sizeof ca->unet);
    assert_memory_equal(&ca->clip, &cb->clip, sizeof ca->clip);
    assert_memory_equal(&ca->vae, &cb->vae, sizeof ca->vae);
    assert_memory_equal(&ca->taesd, &cb->taesd, sizeof ca->taesd);
    assert_int_equal(ca->train_timesteps, cb->train_timesteps);
    assert_true(ca->beta_start == cb->beta_start && ca->beta_end == cb->beta_end);
    check_part_bytes(b, PX_SD_UNET, GOLDEN "/unet/diffusion_pytorch_model.safetensors");
    check_part_bytes(b, PX_SD_VAE, GOLDEN "/vae/diffusion_pytorch_model.safetensors");
    check_part_bytes(b, PX_SD_CLIP, GOLDEN "/text_encoder/model.safetensors");
    check_part_bytes(b, PX_SD_TAESD, GOLDEN "/taesd/diffusion_pytorch_model.safetensors");
    /* the one shape change: VAE mid attention (C,C,1,1) in the file, (C,C) asked */
    px_nn_mat m;
    int64_t cc[2] = {64, 64};
    assert_int_equal(
        px_sd_w_mat(b, PX_SD_VAE, "decoder.mid_block.attentions.0.to_q.weight", 2, cc, &m, &err),
        PX_OK);
    assert_int_equal(m.cols, 64);
    px_sd_weights_close(a);
    px_sd_weights_close(b);
}

/* A tiny synthetic checkpoint holding the given keys (each one F32 [1]). */
static const char *write_keys(const char *file, const char *const *keys, size_t n)
{
    char json[4096];
    size_t pos = 0;
    pos += (size_t)snprintf(json, sizeof json, "{");
    for (size_t i = 0; i < n; i++)
        pos += (size_t)snprintf(json + pos, sizeof json - pos,
                                "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[1],"
                                "\"data_offsets\":[%zu,%zu]}",
                                i ? "," : "", keys[i], 4 * i, 4 * i + 4);
    snprintf(json + pos, sizeof json - pos, "}");
    return write_st(file, json, 0, 4 * n);
}

static void expect_refused(const char *path, int status, const char *needle)
{
    px_sd_weights *w = (px_sd_weights *)1;
    px_err err = {{0}};
    assert_int_equal(px_sd_weights_open(path, NULL, &w, &err), status);
    assert_null(w);
    if (!strstr(err.msg, needle))
        fail_msg("message \"%s\" lacks \"%s\"", err.msg, needle);
}

static void test_refusals(void **state)
{
    (void)state;
    static const char *const sdxl[] = {"conditioner.embedders.0.transformer.text_model.x",
                                       "model.diffusion_model.input_blocks.0.0.weight"};
    expect_refused(write_keys("xl.safetensors", sdxl, 2), PX_EUNSUPPORTED, "an SDXL checkpoint");
    static const char *const sd2[] = {"cond_stage_model.model.token_embedding.weight",
                                      "model.diffusion_model.input_blocks.0.0.weight"};
    expect_refused(write_keys("sd2.safetensors", sd2, 2), PX_EUNSUPPORTED,
                   "a Stable Diffusion 2.x checkpoint");
    static const char *const sd3[] = {"model.diffusion_model.joint_blocks.0.x.weight"};
    expect_refused(write_keys("sd3.safetensors", sd3, 1), PX_EUNSUPPORTED,
                   "a Stable Diffusion 3 checkpoint");
    static const char *const flux[] = {"double_blocks.0.img_attn.qkv.weight"};
    expect_refused(write_keys("flux.safetensors", flux, 1), PX_EUNSUPPORTED, "a Flux checkpoint");
    static const char *const none[] = {"encoder.layers.0.weight"};
    expect_refused(write_keys("none.safetensors", none, 1), PX_EUNSUPPORTED,
                   "not a Stable Diffusion checkpoint");
    static const char *const bad[] = {"model.diffusion_model.input_blocks.0.0.weight",
                                      "model.diffusion_model.input_blocks.1.0.in_layers.0.weight",
                                      "model.diffusion_model.input_blocks.2.0.op.weight",
                                      "model.diffusion_model.input_blocks.3.0.in_layers.0.weight",
                                      "model.diffusion_model.input_blocks.3.0.whatever.weight"};
    expect_refused(write_keys("odd.safetensors", bad, 5), PX_EUNSUPPORTED,
                   "cannot map tensor model.diffusion_model.input_blocks.3.0.whatever.weight");
    /* pickles: by extension before reading, and by magic whatever the name */
    expect_refused(write_st("model.ckpt", "{}", 0, 0), PX_EUNSUPPORTED,
                   "pickle checkpoint, which can run code");
    char path[512];
    snprintf(path, sizeof path, "%s/zip.safetensors", tmpdir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite("PK\x03\x04rest", 1, 8, f);
    fclose(f);
    expect_refused(path, PX_EUNSUPPORTED, "convert it to .safetensors");
    snprintf(path, sizeof path, "%s/pickle.safetensors", tmpdir);
    f = fopen(path, "wb");
    fwrite("\x80\x02}q\x00(X\x01\x00", 1, 10, f);
    fclose(f);
    expect_refused(path, PX_EUNSUPPORTED, "pickle checkpoint");
    expect_refused("/nonexistent/model.safetensors", PX_ENOTFOUND, "no such model");
    expect_refused(tmpdir, PX_ENOTFOUND, "no unet/config.json");
}

/* <tmpdir>/<dir>/<rel>: a symlink to target, or a file with text. */
static void put_file(const char *dir, const char *rel, const char *target, const char *text)
{
    char path[512], cmd[1200];
    snprintf(path, sizeof path, "%s/%s/%s", tmpdir, dir, rel);
    snprintf(cmd, sizeof cmd, "mkdir -p \"$(dirname '%s')\"", path);
    assert_int_equal(system(cmd), 0);
    unlink(path);
    if (target) {
        assert_int_equal(symlink(target, path), 0);
    } else {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
    }
}

static void make_fp16_folder(const char *dir, const char *index_class, const char *unet_cfg)
{
    char cls[256];
    snprintf(cls, sizeof cls, "{\"_class_name\": \"%s\"}", index_class);
    put_file(dir, "model_index.json", NULL, cls);
    if (unet_cfg)
        put_file(dir, "unet/config.json", NULL, unet_cfg);
    else
        put_file(dir, "unet/config.json", GOLDEN "/unet/config.json", NULL);
    put_file(dir, "unet/diffusion_pytorch_model.fp16.safetensors",
             GOLDEN "/unet/diffusion_pytorch_model.safetensors", NULL);
    put_file(dir, "vae/config.json", GOLDEN "/vae/config.json", NULL);
    put_file(dir, "vae/diffusion_pytorch_model.fp16.safetensors",
             GOLDEN "/vae/diffusion_pytorch_model.safetensors", NULL);
    put_file(dir, "text_encoder/config.json", GOLDEN "/text_encoder/config.json", NULL);
    put_file(dir, "text_encoder/model.fp16.safetensors", GOLDEN "/text_encoder/model.safetensors",
             NULL);
}

static void test_folder_variants(void **state)
{
    (void)state;
    make_fp16_folder("fp16", "StableDiffusionPipeline", NULL);
    put_file("fp16", "scheduler/scheduler_config.json", NULL,
             "{\"beta_start\": 0.001, \"beta_end\": 0.02, \"beta_schedule\": "
             "\"scaled_linear\", \"num_train_timesteps\": 500, \"steps_offset\": 0, "
             "\"prediction_type\": \"v_prediction\"}");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/fp16", tmpdir);
    px_sd_weights *w;
    px_err err = {{0}};
    int rc = px_sd_weights_open(dir, NULL, &w, &err);
    if (rc != PX_OK)
        fail_msg("%s", err.msg);
    const px_sd_config *c = px_sd_weights_config(w);
    assert_int_equal(c->train_timesteps, 500);
    assert_true(c->beta_start == 0.001f && c->beta_end == 0.02f);
    assert_int_equal(c->steps_offset, 0);
    assert_int_equal(c->prediction_v, 1);
    assert_int_equal(c->unet.block_out[1], 64);
    assert_int_equal(c->taesd.present, 0);
    assert_true(px_sd_w_has(w, PX_SD_CLIP, "text_model.final_layer_norm.bias"));
    px_sd_weights_close(w);

    make_fp16_folder("xl", "StableDiffusionXLPipeline", NULL);
    snprintf(dir, sizeof dir, "%s/xl", tmpdir);
    expect_refused(dir, PX_EUNSUPPORTED, "an SDXL model");
    make_fp16_folder("sd2", "StableDiffusionPipeline",
                     "{\"cross_attention_dim\": 1024, \"attention_head_dim\": [5, 10, 20, 20]}");
    snprintf(dir, sizeof dir, "%s/sd2", tmpdir);
    expect_refused(dir, PX_EUNSUPPORTED, "a Stable Diffusion 2.x model");
}

/* First 10 hex digits of `sha256sum file`. */
static void sha256sum10(const char *file, char out[11])
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", file);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(out, 11, p));
    pclose(p);
    assert_int_equal(strlen(out), 10);
}

static void test_hash(void **state)
{
    (void)state;
    static const char *const models[][2] = {
        {GOLDEN, GOLDEN "/unet/diffusion_pytorch_model.safetensors"},
        {GOLDEN "/ldm/tiny-sd15.safetensors", GOLDEN "/ldm/tiny-sd15.safetensors"}};
    for (int i = 0; i < 2; i++) {
        px_sd_weights *w;
        px_err err = {{0}};
        assert_int_equal(px_sd_weights_open(models[i][0], NULL, &w, &err), PX_OK);
        char want[11], got[11], again[11];
        sha256sum10(models[i][1], want);
        assert_int_equal(px_sd_weights_hash(w, got, &err), PX_OK);
        assert_string_equal(got, want);
        assert_int_equal(px_sd_weights_hash(w, again, &err), PX_OK);
        assert_string_equal(again, want);
        px_sd_weights_close(w);
    }
}

static void expect_shape(px_sd_weights *w, px_sd_part part, const char *name, int ndim, int64_t a,
                         int64_t b, int64_t c, int64_t d)
{
    int64_t dims[4] = {a, b, c, d};
    px_nn_mat m;
    px_err err = {{0}};
    if (px_sd_w_mat(w, part, name, ndim, dims, &m, &err) != PX_OK)
        fail_msg("%s", err.msg);
}

/* A full-size SD 1.5 file (random values, real shapes: made by
 * shared/tools/sd/make_random_sd15.py) named by PX_SD15_FILE; skipped when
 * unset, as in CI. Every tensor must map (1143 keys: 686 UNet, 248 VAE, 197
 * CLIP with position_ids, 12 DDPM buffers), and the inferred config must be
 * SD 1.5's. */
static void test_full_size_sd15(void **state)
{
    (void)state;
    const char *path = getenv("PX_SD15_FILE");
    if (!path || !*path) {
        skip();
        return;
    }
    px_sd_weights *w;
    px_err err = {{0}};
    int rc = px_sd_weights_open(path, NULL, &w, &err);
    if (rc != PX_OK)
        fail_msg("%s", err.msg);
    const px_sd_config *c = px_sd_weights_config(w);
    const px_sd_unet_config *u = &c->unet;
    assert_int_equal(u->levels, 4);
    const int bo[4] = {320, 640, 1280, 1280}, ca[4] = {1, 1, 1, 0};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(u->block_out[i], bo[i]);
        assert_int_equal(u->cross_attn[i], ca[i]);
        assert_int_equal(u->heads[i], 8);
    }
    assert_int_equal(u->layers_per_block, 2);
    assert_int_equal(u->cross_dim, 768);
    assert_int_equal(u->in_channels, 4);
    assert_int_equal(u->out_channels, 4);
    assert_int_equal(u->use_linear_projection, 0);
    assert_int_equal(u->time_cond_proj_dim, 0);
    const px_sd_clip_config *k = &c->clip;
    assert_int_equal(k->hidden, 768);
    assert_int_equal(k->layers, 12);
    assert_int_equal(k->heads, 12);
    assert_int_equal(k->intermediate, 3072);
    assert_int_equal(k->vocab, 49408);
    assert_int_equal(k->max_positions, 77);
    assert_int_equal(k->bos, 49406);
    assert_int_equal(k->eos, 49407);
    const int vo[4] = {128, 256, 512, 512};
    assert_int_equal(c->vae.levels, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(c->vae.block_out[i], vo[i]);
    assert_int_equal(c->vae.layers_per_block, 2);
    assert_int_equal(c->vae.latent_channels, 4);
    assert_int_equal(px_sd_weights_dtype(w), PX_NN_F16);
    /* nothing requested yet: everything but position_ids counts as unused */
    assert_int_equal(px_sd_weights_unused(w, PX_SD_UNET, NULL, 0), 686);
    assert_int_equal(px_sd_weights_unused(w, PX_SD_VAE, NULL, 0), 248);
    assert_int_equal(px_sd_weights_unused(w, PX_SD_CLIP, NULL, 0), 196);
    /* the block arithmetic at its edges: where levels, slots and samplers meet */
    const px_sd_part U = PX_SD_UNET, V = PX_SD_VAE;
    expect_shape(w, U, "conv_in.weight", 4, 320, 4, 3, 3);
    expect_shape(w, U, "time_embedding.linear_1.weight", 2, 1280, 320, 1, 1);
    expect_shape(w, U, "down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight", 2, 320,
                 768, 1, 1);
    expect_shape(w, U, "down_blocks.1.resnets.0.conv_shortcut.weight", 4, 640, 320, 1, 1);
    expect_shape(w, U, "down_blocks.2.downsamplers.0.conv.weight", 4, 1280, 1280, 3, 3);
    expect_shape(w, U, "down_blocks.3.resnets.1.conv1.weight", 4, 1280, 1280, 3, 3);
    expect_shape(w, U, "mid_block.attentions.0.proj_in.weight", 4, 1280, 1280, 1, 1);
    expect_shape(w, U, "mid_block.resnets.1.time_emb_proj.weight", 2, 1280, 1280, 1, 1);
    expect_shape(w, U, "up_blocks.0.resnets.2.conv1.weight", 4, 1280, 2560, 3, 3);
    expect_shape(w, U, "up_blocks.0.upsamplers.0.conv.weight", 4, 1280, 1280, 3, 3);
    expect_shape(w, U, "up_blocks.1.attentions.2.proj_out.weight", 4, 1280, 1280, 1, 1);
    expect_shape(w, U, "up_blocks.1.resnets.2.conv1.weight", 4, 1280, 1920, 3, 3);
    expect_shape(w, U, "up_blocks.2.upsamplers.0.conv.weight", 4, 640, 640, 3, 3);
    expect_shape(w, U, "up_blocks.3.resnets.0.conv1.weight", 4, 320, 960, 3, 3);
    expect_shape(w, U, "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.0.proj.weight", 2,
                 2560, 320, 1, 1);
    expect_shape(w, U, "conv_out.weight", 4, 4, 320, 3, 3);
    assert_false(px_sd_w_has(w, U, "up_blocks.3.upsamplers.0.conv.weight"));
    assert_false(px_sd_w_has(w, U, "down_blocks.3.downsamplers.0.conv.weight"));
    expect_shape(w, V, "encoder.down_blocks.1.resnets.0.conv_shortcut.weight", 4, 256, 128, 1, 1);
    expect_shape(w, V, "encoder.down_blocks.2.downsamplers.0.conv.weight", 4, 512, 512, 3, 3);
    expect_shape(w, V, "encoder.conv_out.weight", 4, 8, 512, 3, 3);
    expect_shape(w, V, "quant_conv.weight", 4, 8, 8, 1, 1);
    expect_shape(w, V, "decoder.mid_block.attentions.0.to_q.weight", 2, 512, 512, 1, 1);
    expect_shape(w, V, "decoder.up_blocks.0.upsamplers.0.conv.weight", 4, 512, 512, 3, 3);
    expect_shape(w, V, "decoder.up_blocks.2.resnets.0.conv_shortcut.weight", 4, 256, 512, 1, 1);
    expect_shape(w, V, "decoder.up_blocks.3.resnets.2.conv2.weight", 4, 128, 128, 3, 3);
    expect_shape(w, V, "decoder.conv_norm_out.weight", 1, 128, 1, 1, 1);
    expect_shape(w, PX_SD_CLIP, "text_model.encoder.layers.11.mlp.fc2.weight", 2, 768, 3072, 1, 1);
    px_sd_weights_close(w);
}

/* An extra tensor for copy_st: F32, zeros. */
typedef struct extra_tensor {
    const char *name;
    int ndim;
    int64_t shape[4];
} extra_tensor;

static void json_add(px_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void json_add(px_buf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t)n < sizeof tmp);
    assert_int_equal(px_buf_append(b, tmp, (size_t)n), PX_OK);
}

static void json_entry(px_buf *b, int first, const char *name, const char *dtype, int ndim,
                       const int64_t *shape, size_t off, size_t nbytes)
{
    json_add(b, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", first ? "" : ",", name, dtype);
    for (int d = 0; d < ndim; d++)
        json_add(b, "%s%lld", d ? "," : "", (long long)shape[d]);
    json_add(b, "],\"data_offsets\":[%zu,%zu]}", off, off + nbytes);
}

/* Copies safetensors file src to <tmpdir>/dst, keeping the tensors for which
 * rename(name, out) returns 1 under the name it writes into out, then
 * appending the extra tensors (zeros). Returns the path (static buffer). */
static const char *copy_st(const char *src_path, const char *dst,
                           int (*rename_fn)(const char *name, char *out, size_t len),
                           const extra_tensor *extra, size_t nextra)
{
    px_st_file *src;
    px_err err = {{0}};
    assert_int_equal(px_st_open(src_path, &src, &err), PX_OK);
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tmpdir, dst);
    px_buf json = {0};
    json_add(&json, "{");
    size_t off = 0, first = 1;
    char name[256];
    for (size_t i = 0; i < px_st_count(src); i++) {
        const px_st_tensor *t = px_st_at(src, i);
        if (!rename_fn(t->name, name, sizeof name))
            continue;
        json_entry(&json, (int)first, name, t->dtype_name, t->ndim, t->shape, off, t->nbytes);
        off += t->nbytes;
        first = 0;
    }
    for (size_t i = 0; i < nextra; i++) {
        size_t nb = 4;
        for (int d = 0; d < extra[i].ndim; d++)
            nb *= (size_t)extra[i].shape[d];
        json_entry(&json, (int)first, extra[i].name, "F32", extra[i].ndim, extra[i].shape, off, nb);
        off += nb;
        first = 0;
    }
    json_add(&json, "}");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int i = 0; i < 8; i++)
        fputc((int)(((uint64_t)json.len >> (8 * i)) & 0xff), f);
    fwrite(json.data, 1, json.len, f);
    size_t written = 0;
    for (size_t i = 0; i < px_st_count(src); i++) {
        const px_st_tensor *t = px_st_at(src, i);
        if (rename_fn(t->name, name, sizeof name)) {
            fwrite(t->data, 1, t->nbytes, f);
            written += t->nbytes;
        }
    }
    for (; written < off; written++)
        fputc(0, f);
    fclose(f);
    px_buf_free(&json);
    px_st_close(src);
    return path;
}

/* TAESD's own release names: decoder.layers.N.x -> <N+1>.x, decoder only. */
static int taesd_raw_name(const char *name, char *out, size_t len)
{
    int n;
    char rest[128];
    if (sscanf(name, "decoder.layers.%d%127s", &n, rest) != 2)
        return 0;
    snprintf(out, len, "%d%s", n + 1, rest);
    return 1;
}

static int same_name(const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s", name);
    return 1;
}

static void test_taesd_forms(void **state)
{
    (void)state;
    px_sd_weights *ref, *w;
    px_err err = {{0}};
    assert_int_equal(px_sd_weights_open(GOLDEN, GOLDEN "/taesd", &ref, &err), PX_OK);
    /* TAESD's own decoder file, no config: same config, same bytes */
    int rc = px_sd_weights_open(
        GOLDEN,
        copy_st(GOLDEN "/taesd.safetensors", "taesd_decoder.safetensors", taesd_raw_name, NULL, 0),
        &w, &err);
    if (rc != PX_OK)
        fail_msg("%s", err.msg);
    assert_memory_equal(&px_sd_weights_config(ref)->taesd, &px_sd_weights_config(w)->taesd,
                        sizeof(px_sd_taesd_config));
    int64_t dims[4] = {16, 4, 3, 3};
    px_nn_mat a, b;
    assert_int_equal(px_sd_w_mat(ref, PX_SD_TAESD, "decoder.layers.0.weight", 4, dims, &a, &err),
                     PX_OK);
    assert_int_equal(px_sd_w_mat(w, PX_SD_TAESD, "decoder.layers.0.weight", 4, dims, &b, &err),
                     PX_OK);
    assert_memory_equal(a.data, b.data, 16 * 4 * 9 * 4);
    assert_true(px_sd_w_has(w, PX_SD_TAESD, "decoder.layers.11.conv.4.bias"));
    assert_true(px_sd_w_has(w, PX_SD_TAESD, "decoder.layers.12.weight"));
    px_sd_weights_close(w);
    /* a folder without config.json: shapes tell */
    put_file("taesd_nocfg", "diffusion_pytorch_model.safetensors", GOLDEN "/taesd.safetensors",
             NULL);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/taesd_nocfg", tmpdir);
    assert_int_equal(px_sd_weights_open(GOLDEN, dir, &w, &err), PX_OK);
    assert_memory_equal(&px_sd_weights_config(ref)->taesd, &px_sd_weights_config(w)->taesd,
                        sizeof(px_sd_taesd_config));
    px_sd_weights_close(w);
    px_sd_weights_close(ref);
    /* the UNet given as TAESD */
    assert_int_equal(px_sd_weights_open(GOLDEN, GOLDEN "/unet.safetensors", &w, &err),
                     PX_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "not a TAESD decoder"));
}

/* openai/clip-vit-large-patch14's config carries bos 0 / eos 2 / pad 1. */
static void test_clip_legacy_ids(void **state)
{
    (void)state;
    make_fp16_folder("legacy", "StableDiffusionPipeline", NULL);
    put_file("legacy", "text_encoder/config.json", NULL,
             "{\"vocab_size\": 527, \"hidden_size\": 32, \"num_attention_heads\": 4, "
             "\"num_hidden_layers\": 3, \"intermediate_size\": 64, \"bos_token_id\": 0, "
             "\"eos_token_id\": 2, \"pad_token_id\": 1, \"hidden_act\": \"quick_gelu\"}");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/legacy", tmpdir);
    px_sd_weights *w;
    px_err err = {{0}};
    assert_int_equal(px_sd_weights_open(dir, NULL, &w, &err), PX_OK);
    const px_sd_clip_config *c = &px_sd_weights_config(w)->clip;
    assert_int_equal(c->bos, 525);
    assert_int_equal(c->eos, 526);
    assert_int_equal(c->pad, 526);
    px_sd_weights_close(w);
}

/* What real single files carry besides the model: EMA copies, the DDPM
 * buffers, position_ids; and an LCM UNet's guidance projection. */
static void test_ldm_extras(void **state)
{
    (void)state;
    static const extra_tensor extra[] = {
        {"model_ema.decay", 0, {0}},
        {"model_ema.diffusion_modelinput_blocks00weight", 4, {32, 4, 3, 3}},
        {"betas", 1, {1000}},
        {"alphas_cumprod", 1, {1000}},
        {"posterior_mean_coef2", 1, {1000}},
        {"cond_stage_model.transformer.text_model.embeddings.position_ids", 2, {1, 77}},
        {"model.diffusion_model.time_embedding.cond_proj.weight", 2, {128, 256}},
    };
    const char *p = copy_st(GOLDEN "/ldm/tiny-sd15.safetensors", "extras.safetensors", same_name,
                            extra, sizeof extra / sizeof extra[0]);
    px_sd_weights *w;
    px_err err = {{0}};
    int rc = px_sd_weights_open(p, NULL, &w, &err);
    if (rc != PX_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(px_sd_weights_config(w)->unet.time_cond_proj_dim, 256);
    assert_true(px_sd_w_has(w, PX_SD_UNET, "time_embedding.cond_proj.weight"));
    assert_true(px_sd_w_has(w, PX_SD_CLIP, "text_model.embeddings.position_ids"));
    assert_false(px_sd_w_has(w, PX_SD_UNET, "betas"));
    /* position_ids is known-unused; the others are real model tensors */
    assert_int_equal(px_sd_weights_unused(w, PX_SD_CLIP, NULL, 0), 52);
    assert_int_equal(px_sd_weights_unused(w, PX_SD_UNET, NULL, 0), 209);
    assert_int_equal(px_sd_weights_unused(w, PX_SD_VAE, NULL, 0), 180);
    px_sd_weights_close(w);
}

int main(void)
{
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_st_valid),
        cmocka_unit_test(test_st_corrupt),
        cmocka_unit_test(test_folder_config),
        cmocka_unit_test(test_mat_and_f32),
        cmocka_unit_test(test_ldm_file),
        cmocka_unit_test(test_ldm_extras),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_folder_variants),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_taesd_forms),
        cmocka_unit_test(test_clip_legacy_ids),
        cmocka_unit_test(test_full_size_sd15),
    };
    /* clang-format on */
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
