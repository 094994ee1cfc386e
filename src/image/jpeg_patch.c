/*
 * JPEG in, JPEG out without generation loss outside what changed.
 *
 * Decoding a JPEG and encoding its pixels again loses a little everywhere
 * (a second rounding of every DCT coefficient, chroma resampled twice). When
 * only a few faces were concealed, almost every block of the output could be
 * the input's block as it was. So: libjpeg's jpeg_read_coefficients gives
 * the input's quantised DCT blocks; the blocks whose pixels changed are
 * computed again from the changed pixels (RGB -> YCbCr as JFIF defines it,
 * chroma averaged over the component's sampling ratio, an 8x8 forward DCT,
 * divided by the input's own quantisation table and rounded), and
 * jpeg_write_coefficients writes the lot with fresh optimised Huffman tables.
 * Nothing else is re-encoded, and the entropy coder's work is all that
 * remains for the untouched blocks.
 *
 * Which blocks changed is not taken on trust: px_image_print hashes every 8x8
 * tile of the image before concealment, and a block is re-encoded when any
 * tile it covers hashes differently now. A region concealed by any code path
 * (first pass, a later strengthening) is therefore re-encoded, and nothing
 * changed is ever left as the input's block.
 *
 * Markers: the source is read without saving any, and the destination gets
 * only what jpeg_write_coefficients writes (JFIF APP0, DQT, SOF, DHT, SOS,
 * EOI), so EXIF, XMP, ICC, IPTC and comments are all dropped, as in jpeg.c.
 *
 * An EXIF orientation is applied to the blocks (mirrored, transposed, as
 * jpegtran does) while copying, since the output is stored upright. Where
 * that cannot be exact (a mirrored side that is not whole MCUs), the pixels
 * are no longer the input's colours (an ICC profile converted, unless it is
 * sRGB itself, see jpeg_icc_is_srgb), or the
 * colour model is one we do not convert (CMYK, YCCK, RGB-coded JPEG), the
 * image is encoded afresh and the caller is told why.
 */
#include "jpeg_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- fingerprint ---- */

static uint64_t mix(uint64_t h, uint64_t v)
{
    h = (h ^ v) * 0x9e3779b97f4a7c15ULL;
    return h ^ (h >> 29);
}

int px_image_print_take(const px_image *img, px_image_print *p, px_err *err)
{
    if (p)
        memset(p, 0, sizeof *p);
    if (!img || !img->px || img->w <= 0 || img->h <= 0 || !p)
        return px_err_set(err, PX_EINVAL, "image fingerprint: no image");
    const int tx = (img->w + 7) / 8, ty = (img->h + 7) / 8;
    p->tile = px_malloc((size_t)tx * (size_t)ty * sizeof *p->tile);
    if (!p->tile)
        return px_err_set(err, PX_ENOMEM, "out of memory for the fingerprint of a %dx%d image",
                          img->w, img->h);
    p->w = img->w;
    p->h = img->h;
    p->tiles_x = tx;
    p->tiles_y = ty;
    const size_t ch = (size_t)img->channels, tile_bytes = 8 * ch;
    const size_t row_bytes = (size_t)img->w * ch;
    for (int y = 0; y < img->h; y++) {
        const uint8_t *row = img->px + (size_t)y * img->stride;
        uint64_t *h = p->tile + (size_t)(y / 8) * (size_t)tx;
        if (y % 8 == 0)
            for (int i = 0; i < tx; i++)
                h[i] = 0x243f6a8885a308d3ULL ^ (uint64_t)i;
        for (int i = 0; i < tx; i++) {
            const size_t off = (size_t)i * tile_bytes;
            const size_t n = row_bytes - off < tile_bytes ? row_bytes - off : tile_bytes;
            size_t k = 0;
            for (; k + 8 <= n; k += 8) {
                uint64_t v;
                memcpy(&v, row + off + k, 8);
                h[i] = mix(h[i], v);
            }
            for (; k < n; k++)
                h[i] = mix(h[i], row[off + k] | (uint64_t)k << 32);
        }
    }
    return PX_OK;
}

void px_image_print_free(px_image_print *p)
{
    if (!p)
        return;
    free(p->tile);
    memset(p, 0, sizeof *p);
}

/* ---- forward DCT of the changed blocks ---- */

/* The JPEG DCT is the orthonormal 2-D DCT-II: F(v,u) = sum c[v][y] c[u][x] f(y,x). */
static void dct_table(float c[8][8])
{
    for (int u = 0; u < 8; u++)
        for (int x = 0; x < 8; x++)
            c[u][x] = (float)((u == 0 ? sqrt(0.125) : 0.5) * cos((2 * x + 1) * u * M_PI / 16.0));
}

/* Eight floats as one value (GCC/clang vector extension: SSE pairs on
 * baseline x86-64, one AVX register where enabled). */
typedef float f8 __attribute__((vector_size(32)));

/* The DCT matrix both ways round and a component's quantisation steps as
 * floats, made once per component rather than per block. */
typedef struct fdct_tables {
    float c[8][8];
    f8 ct[8]; /* ct[x][u] = c[u][x] */
    f8 qv[8]; /* steps of row v (0 read as 1) */
} fdct_tables;

static void fdct_tables_make(fdct_tables *t, const UINT16 *q)
{
    dct_table(t->c);
    for (int x = 0; x < 8; x++)
        for (int u = 0; u < 8; u++)
            t->ct[x][u] = t->c[u][x];
    for (int v = 0; v < 8; v++)
        for (int u = 0; u < 8; u++)
            t->qv[v][u] = (float)(q[v * 8 + u] ? q[v * 8 + u] : 1);
}

/* Quantised DCT of samples f (level-shifted, row-major) into blk, natural
 * order: rows then columns, each step a multiply-add of eight frequencies. */
static void fdct_quant(const float f[64], const fdct_tables *tb, JCOEF *blk)
{
    const f8 *ct = tb->ct;
    f8 t[8]; /* rows transformed: t[y][u] */
    for (int y = 0; y < 8; y++) {
        f8 acc = ct[0] * f[y * 8];
        for (int x = 1; x < 8; x++)
            acc += ct[x] * f[y * 8 + x];
        t[y] = acc;
    }
    for (int v = 0; v < 8; v++) {
        f8 acc = t[0] * tb->c[v][0];
        for (int y = 1; y < 8; y++)
            acc += t[y] * tb->c[v][y];
        acc /= tb->qv[v];
        for (int u = 0; u < 8; u++) {
            const float x = acc[u];
            /* half away from zero, as roundf, without the call */
            float r = (float)(int)(x + (x < 0.0f ? -0.5f : 0.5f));
            r = r > 32767.0f ? 32767.0f : r < -32767.0f ? -32767.0f : r;
            blk[v * 8 + u] = (JCOEF)r;
        }
    }
}

/* Component `kind` (0 Y, 1 Cb, 2 Cr) of an RGB pixel, JFIF's equations. */
static float to_ycc(const uint8_t *px, int kind)
{
    const float r = px[0], g = px[1], b = px[2];
    if (kind == 0)
        return 0.299f * r + 0.587f * g + 0.114f * b;
    if (kind == 1)
        return -0.168735892f * r - 0.331264108f * g + 0.5f * b + 128.0f;
    return 0.5f * r - 0.418687589f * g - 0.081312411f * b + 128.0f;
}

/* The 8x8 samples of a block of component `kind` whose top-left sample is
 * pixel (x0, y0), each the mean of rx x ry pixels (edges replicated), minus 128. */
static void block_samples(const px_image *img, int kind, int x0, int y0, int rx, int ry,
                          float f[64])
{
    static const float k[3][4] = {{0.299f, 0.587f, 0.114f, 0.0f},
                                  {-0.168735892f, -0.331264108f, 0.5f, 128.0f},
                                  {0.5f, -0.418687589f, -0.081312411f, 128.0f}};
    const float kr = k[kind][0], kg = k[kind][1], kb = k[kind][2], k0 = k[kind][3];
    const int cn = img->channels;
    if (rx == 1 && ry == 1 && x0 + 8 <= img->w && y0 + 8 <= img->h) {
        /* a whole full-resolution block: no averaging, no edge */
        for (int i = 0; i < 8; i++) {
            const uint8_t *p = img->px + (size_t)(y0 + i) * img->stride + (size_t)x0 * (size_t)cn;
            for (int j = 0; j < 8; j++, p += cn)
                f[i * 8 + j] = kr * (float)p[0] + kg * (float)p[1] + kb * (float)p[2] + k0 - 128.0f;
        }
        return;
    }
    const float norm = 1.0f / (float)(rx * ry);
    if (x0 + 8 * rx <= img->w && y0 + 8 * ry <= img->h) {
        /* inside the image: the same sums without the edge clamps */
        for (int i = 0; i < 8; i++)
            for (int j = 0; j < 8; j++) {
                float s = 0.0f;
                for (int a = 0; a < ry; a++) {
                    const uint8_t *p = img->px + (size_t)(y0 + i * ry + a) * img->stride +
                                       (size_t)(x0 + j * rx) * (size_t)cn;
                    for (int b = 0; b < rx; b++, p += cn)
                        s += kr * (float)p[0] + kg * (float)p[1] + kb * (float)p[2] + k0;
                }
                f[i * 8 + j] = s * norm - 128.0f;
            }
        return;
    }
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) {
            float s = 0.0f;
            for (int a = 0; a < ry; a++) {
                int y = y0 + i * ry + a;
                y = y < img->h ? y : img->h - 1;
                const uint8_t *row = img->px + (size_t)y * img->stride;
                for (int b = 0; b < rx; b++) {
                    int x = x0 + j * rx + b;
                    x = x < img->w ? x : img->w - 1;
                    s += to_ycc(row + (size_t)x * (size_t)cn, kind);
                }
            }
            f[i * 8 + j] = s * norm - 128.0f;
        }
}

/* 1 when any tile of [tx0, tx0+n) x [ty0, ty0+m) differs between the prints. */
static int tiles_changed(const px_image_print *a, const px_image_print *b, int tx0, int ty0, int n,
                         int m)
{
    for (int ty = ty0; ty < ty0 + m && ty < a->tiles_y; ty++)
        for (int tx = tx0; tx < tx0 + n && tx < a->tiles_x; tx++) {
            const size_t i = (size_t)ty * (size_t)a->tiles_x + (size_t)tx;
            if (a->tile[i] != b->tile[i])
                return 1;
        }
    return 0;
}

/* ---- the patch ---- */

typedef struct jpatch {
    struct jpeg_decompress_struct src;
    struct jpeg_compress_struct dst;
    jerr_mgr jerr; /* shared by both: one object runs at a time */
    jdest dest;
    int have_dst;
    px_image_print now;
} jpatch;

/* Why the block copy cannot apply to this source (header read), or NULL. */
static const char *unsupported(const struct jpeg_decompress_struct *s, char *buf, size_t cap)
{
    if (s->data_precision != 8) {
        snprintf(buf, cap, "%d-bit samples", s->data_precision);
        return buf;
    }
    const int ycc = s->num_components == 3 && s->jpeg_color_space == JCS_YCbCr;
    const int grey = s->num_components == 1 && s->jpeg_color_space == JCS_GRAYSCALE;
    if (!ycc && !grey) {
        snprintf(buf, cap, "colour space %s with %d components (not YCbCr or grey)",
                 s->jpeg_color_space == JCS_CMYK   ? "CMYK"
                 : s->jpeg_color_space == JCS_YCCK ? "YCCK"
                 : s->jpeg_color_space == JCS_RGB  ? "RGB"
                                                   : "other",
                 s->num_components);
        return buf;
    }
    for (int ci = 0; ci < s->num_components; ci++) {
        const jpeg_component_info *c = &s->comp_info[ci];
        if (c->h_samp_factor <= 0 || c->v_samp_factor <= 0 ||
            s->max_h_samp_factor % c->h_samp_factor || s->max_v_samp_factor % c->v_samp_factor) {
            snprintf(buf, cap, "sampling factors %dx%d of a component are not a divisor of %dx%d",
                     c->h_samp_factor, c->v_samp_factor, s->max_h_samp_factor,
                     s->max_v_samp_factor);
            return buf;
        }
    }
    return NULL;
}

/* Re-encodes the changed blocks of every component in place. */
static void patch_blocks(jpatch *j, jvirt_barray_ptr *coefs, const px_image *img,
                         const px_image_print *before, px_jpeg_patch_info *info)
{
    struct jpeg_decompress_struct *s = &j->src;
    const int grey = s->num_components == 1;
    for (int ci = 0; ci < s->num_components; ci++) {
        jpeg_component_info *comp = &s->comp_info[ci];
        const int rx = s->max_h_samp_factor / comp->h_samp_factor;
        const int ry = s->max_v_samp_factor / comp->v_samp_factor;
        const int kind = grey ? 0 : ci;
        fdct_tables tb;
        fdct_tables_make(&tb, comp->quant_table->quantval);
        info->blocks += (long)comp->width_in_blocks * (long)comp->height_in_blocks;
        for (JDIMENSION by = 0; by < comp->height_in_blocks; by++) {
            JBLOCKARRAY rows = NULL;
            for (JDIMENSION bx = 0; bx < comp->width_in_blocks; bx++) {
                if (!tiles_changed(before, &j->now, (int)bx * rx, (int)by * ry, rx, ry))
                    continue;
                if (!rows)
                    rows = (*s->mem->access_virt_barray)((j_common_ptr)s, coefs[ci], by, 1, TRUE);
                float f[64];
                block_samples(img, kind, (int)bx * 8 * rx, (int)by * 8 * ry, rx, ry, f);
                fdct_quant(f, &tb, rows[0][bx]);
                info->blocks_reencoded++;
            }
        }
    }
}

/* ---- EXIF orientations in the DCT domain ----
 * Upright pixel (x, y) is stored pixel (sx, sy): without t, sx = x or W-1-x
 * (fx) and sy = y or H-1-y (fy); with t (5..8) the axes swap, sx from y and
 * sy from x (see px_image_apply_orientation). On 8x8 blocks: the block grid
 * is mirrored/transposed the same way, a mirrored axis multiplies the
 * coefficients of odd frequency along it by -1, a transpose transposes the
 * coefficients (and the quantisation tables). Exact, but only when a
 * mirrored axis holds whole MCUs: else the partial edge blocks would land at
 * the start of the row, so those images are encoded afresh. */
typedef struct turn {
    int t, fx, fy;
} turn;

static turn turn_of(int o)
{
    static const turn k[9] = {{0, 0, 0}, {0, 0, 0}, {0, 1, 0}, {0, 1, 1}, {0, 0, 1},
                              {1, 0, 0}, {1, 0, 1}, {1, 1, 1}, {1, 1, 0}};
    return k[o >= 1 && o <= 8 ? o : 1];
}

static void turn_block(const JCOEF *in, JCOEF *out, turn tr)
{
    for (int v = 0; v < 8; v++)
        for (int u = 0; u < 8; u++) {
            /* row frequency v, column frequency u of the output */
            const JCOEF c = tr.t ? in[u * 8 + v] : in[v * 8 + u];
            const int neg = tr.t ? ((tr.fy && (u & 1)) ^ (tr.fx && (v & 1)))
                                 : ((tr.fx && (u & 1)) ^ (tr.fy && (v & 1)));
            out[v * 8 + u] = neg ? (JCOEF)-c : c;
        }
}

/* The destination set up for the turned image: size and sampling factors
 * swapped, quantisation tables transposed. */
static void turn_params(struct jpeg_compress_struct *d, turn tr)
{
    if (!tr.t)
        return;
    const JDIMENSION w = d->image_width;
    d->image_width = d->image_height;
    d->image_height = w;
    const UINT16 xd = d->X_density;
    d->X_density = d->Y_density;
    d->Y_density = xd;
    for (int ci = 0; ci < d->num_components; ci++) {
        jpeg_component_info *c = &d->comp_info[ci];
        const int h = c->h_samp_factor;
        c->h_samp_factor = c->v_samp_factor;
        c->v_samp_factor = h;
    }
    for (int i = 0; i < NUM_QUANT_TBLS; i++) {
        JQUANT_TBL *q = d->quant_tbl_ptrs[i];
        if (!q)
            continue;
        for (int v = 0; v < 8; v++)
            for (int u = v + 1; u < 8; u++) {
                const UINT16 a = q->quantval[v * 8 + u];
                q->quantval[v * 8 + u] = q->quantval[u * 8 + v];
                q->quantval[u * 8 + v] = a;
            }
    }
}

/* Why orientation o cannot be done on these blocks, or NULL. */
static const char *turn_unfit(const struct jpeg_decompress_struct *s, int o, char *buf, size_t cap)
{
    const turn tr = turn_of(o);
    const int mw = 8 * s->max_h_samp_factor, mh = 8 * s->max_v_samp_factor;
    if ((tr.fx && s->image_width % (JDIMENSION)mw) || (tr.fy && s->image_height % (JDIMENSION)mh)) {
        snprintf(buf, cap,
                 "EXIF orientation %d on a %ux%u image that is not whole %dx%d blocks along the "
                 "mirrored side",
                 o, (unsigned)s->image_width, (unsigned)s->image_height, mw, mh);
        return buf;
    }
    return NULL;
}

/* Destination arrays of the turned image, requested before
 * jpeg_write_coefficients realises them (libjpeg's own sizes). */
static jvirt_barray_ptr *turn_arrays(struct jpeg_compress_struct *d, JDIMENSION wb[],
                                     JDIMENSION hb[])
{
    int mh = 1, mv = 1;
    for (int ci = 0; ci < d->num_components; ci++) {
        mh = d->comp_info[ci].h_samp_factor > mh ? d->comp_info[ci].h_samp_factor : mh;
        mv = d->comp_info[ci].v_samp_factor > mv ? d->comp_info[ci].v_samp_factor : mv;
    }
    jvirt_barray_ptr *arr = (*d->mem->alloc_small)((j_common_ptr)d, JPOOL_IMAGE,
                                                   sizeof(jvirt_barray_ptr) * MAX_COMPONENTS);
    for (int ci = 0; ci < d->num_components; ci++) {
        const jpeg_component_info *c = &d->comp_info[ci];
        const long h = c->h_samp_factor, v = c->v_samp_factor;
        wb[ci] = (JDIMENSION)((d->image_width * h + 8 * mh - 1) / (8 * mh));
        hb[ci] = (JDIMENSION)((d->image_height * v + 8 * mv - 1) / (8 * mv));
        arr[ci] = (*d->mem->request_virt_barray)(
            (j_common_ptr)d, JPOOL_IMAGE, FALSE, (JDIMENSION)((wb[ci] + h - 1) / h * h),
            (JDIMENSION)((hb[ci] + v - 1) / v * v), (JDIMENSION)v);
    }
    return arr;
}

/* Fills the turned image's blocks: the input's blocks turned, or, where the
 * tiles changed, re-encoded from img with the (turned) output tables. */
static void turn_fill(jpatch *j, jvirt_barray_ptr *in, jvirt_barray_ptr *outa, turn tr,
                      const px_image *img, const px_image_print *before, px_jpeg_patch_info *info)
{
    struct jpeg_compress_struct *d = &j->dst;
    for (int ci = 0; ci < d->num_components; ci++) {
        const jpeg_component_info *co = &d->comp_info[ci], *cs = &j->src.comp_info[ci];
        const int rx = d->max_h_samp_factor / co->h_samp_factor;
        const int ry = d->max_v_samp_factor / co->v_samp_factor;
        const UINT16 *q = d->quant_tbl_ptrs[co->quant_tbl_no]->quantval;
        const int kind = d->num_components == 1 ? 0 : ci;
        fdct_tables tb;
        fdct_tables_make(&tb, q);
        info->blocks += (long)co->width_in_blocks * (long)co->height_in_blocks;
        for (JDIMENSION oy = 0; oy < co->height_in_blocks; oy++) {
            JBLOCKARRAY orow =
                (*d->mem->access_virt_barray)((j_common_ptr)d, outa[ci], oy, 1, TRUE);
            for (JDIMENSION ox = 0; ox < co->width_in_blocks; ox++) {
                if (tiles_changed(before, &j->now, (int)ox * rx, (int)oy * ry, rx, ry)) {
                    float f[64];
                    block_samples(img, kind, (int)ox * 8 * rx, (int)oy * 8 * ry, rx, ry, f);
                    fdct_quant(f, &tb, orow[0][ox]);
                    info->blocks_reencoded++;
                    continue;
                }
                const JDIMENSION a = tr.t ? oy : ox,
                                 b = tr.t ? ox : oy; /* stored x, y unmirrored */
                const JDIMENSION sx = tr.fx ? cs->width_in_blocks - 1 - a : a;
                const JDIMENSION sy = tr.fy ? cs->height_in_blocks - 1 - b : b;
                JBLOCKARRAY irow =
                    (*j->src.mem->access_virt_barray)((j_common_ptr)&j->src, in[ci], sy, 1, FALSE);
                turn_block(irow[0][sx], orow[0][ox], tr);
            }
        }
    }
}

/* The lossless path. PX_OK with out appended; PX_EUNSUPPORTED with info->why
 * when it does not apply (the caller encodes afresh); other errors as is. */
static int patch(jpatch *j, const uint8_t *data, size_t len, int o, const px_image *img,
                 const px_image_print *before, px_buf *out, px_jpeg_patch_info *info, px_err *err)
{
    const size_t start_len = out->len;
    px_jpeg_err_init(&j->jerr);
    j->src.err = &j->jerr.pub;
    j->dst.err = &j->jerr.pub;
    jpeg_create_decompress(&j->src);
    if (setjmp(j->jerr.jb) != 0) {
        /* decoded fine a moment ago, so this is memory or damage the pixel
         * decoder tolerated: encode afresh then, unless memory ran out */
        out->len = start_len;
        if (j->jerr.status == PX_ENOMEM)
            return px_err_set(err, PX_ENOMEM, "out of memory rewriting a JPEG");
        snprintf(info->why, sizeof info->why, "the input's blocks could not be copied: %.80s",
                 j->jerr.msg);
        return PX_EUNSUPPORTED;
    }
    jpeg_mem_src(&j->src, data, (unsigned long)len);
    jpeg_read_header(&j->src, TRUE);
    const turn tr = turn_of(o);
    const int uw = (int)(tr.t ? j->src.image_height : j->src.image_width);
    const int uh = (int)(tr.t ? j->src.image_width : j->src.image_height);
    if (uw != img->w || uh != img->h) {
        snprintf(info->why, sizeof info->why, "image is %dx%d, the JPEG %dx%d upright", img->w,
                 img->h, uw, uh);
        return PX_EUNSUPPORTED;
    }
    if (unsupported(&j->src, info->why, sizeof info->why) ||
        turn_unfit(&j->src, o, info->why, sizeof info->why))
        return PX_EUNSUPPORTED;
    const int progressive = j->src.progressive_mode;
    jvirt_barray_ptr *coefs = jpeg_read_coefficients(&j->src);
    for (int ci = 0; ci < j->src.num_components; ci++)
        if (!j->src.comp_info[ci].quant_table) {
            snprintf(info->why, sizeof info->why, "a component has no quantisation table");
            return PX_EUNSUPPORTED;
        }
    if (o == 1)
        patch_blocks(j, coefs, img, before, info); /* in place */
    jpeg_create_compress(&j->dst);
    j->have_dst = 1;
    px_jpeg_dest_init(&j->dest, out);
    j->dst.dest = &j->dest.pub;
    jpeg_copy_critical_parameters(&j->src, &j->dst);
    /* libjpeg's standard Huffman tables: optimised ones cost a second pass over
     * every block (measured: the patch then takes 0.9-1.7x a fresh encode
     * instead of about 0.5x) for files only 1-2% smaller */
    j->dst.optimize_coding = FALSE;
    j->dst.arith_code = FALSE;
    if (progressive)
        jpeg_simple_progression(&j->dst); /* keeps the file about as small as it was */
    jvirt_barray_ptr *outa = coefs;
    JDIMENSION wb[MAX_COMPONENTS], hb[MAX_COMPONENTS];
    if (o != 1) {
        turn_params(&j->dst, tr);
        outa = turn_arrays(&j->dst, wb, hb);
    }
    jpeg_write_coefficients(&j->dst, outa);
    if (o != 1) {
        for (int ci = 0; ci < j->dst.num_components; ci++)
            if (j->dst.comp_info[ci].width_in_blocks != wb[ci] ||
                j->dst.comp_info[ci].height_in_blocks != hb[ci] ||
                j->dst.max_h_samp_factor % j->dst.comp_info[ci].h_samp_factor ||
                j->dst.max_v_samp_factor % j->dst.comp_info[ci].v_samp_factor) {
                out->len = start_len;
                snprintf(info->why, sizeof info->why, "turned block grid not as expected");
                return PX_EUNSUPPORTED;
            }
        turn_fill(j, coefs, outa, tr, img, before, info);
    }
    jpeg_finish_compress(&j->dst);
    jpeg_finish_decompress(&j->src);
    info->lossless = 1;
    return PX_OK;
}

/* ---- an sRGB profile needs no conversion ----
 * Cameras embed the sRGB IEC 61966-2.1 profile; the decoder then "converts"
 * every pixel from sRGB to sRGB, which moves none by more than a rounding,
 * and copying blocks is as good as encoding the converted pixels
 * (px_icc_is_srgb decides, with icc.c's own transform). */

/* 1 when the JPEG's ICC profile is sRGB in effect. */
static int jpeg_icc_is_srgb(const uint8_t *data, size_t len)
{
    struct icc_read {
        struct jpeg_decompress_struct d;
        jerr_mgr e;
        JOCTET *icc;
        unsigned int icc_len;
    } *r = px_calloc(1, sizeof *r);
    if (!r)
        return 0;
    px_jpeg_err_init(&r->e);
    r->d.err = &r->e.pub;
    jpeg_create_decompress(&r->d);
    if (setjmp(r->e.jb) == 0) {
        jpeg_mem_src(&r->d, data, (unsigned long)len);
        jpeg_save_markers(&r->d, JPEG_APP0 + 2, 0xFFFF);
        jpeg_read_header(&r->d, TRUE);
        if (!jpeg_read_icc_profile(&r->d, &r->icc, &r->icc_len))
            r->icc = NULL;
    }
    jpeg_destroy_decompress(&r->d);
    const int same = r->icc && px_icc_is_srgb(r->icc, r->icc_len);
    free(r->icc);
    free(r);
    return same;
}

int px_image_encode_jpeg_patched(const uint8_t *jpeg, size_t len, const px_decode_info *dinfo,
                                 const px_image *img, const px_image_print *before, int quality,
                                 px_buf *out, px_jpeg_patch_info *info, px_err *err)
{
    px_jpeg_patch_info local;
    if (!info)
        info = &local;
    memset(info, 0, sizeof *info);
    if (!jpeg || !len || !dinfo || !img || !img->px || !out)
        return px_err_set(err, PX_EINVAL, "JPEG rewrite: missing input, image or output");
    if (dinfo->format != PX_FMT_JPEG)
        snprintf(info->why, sizeof info->why, "the input is not a JPEG");
    else if (dinfo->icc == 1 && !jpeg_icc_is_srgb(jpeg, len))
        snprintf(info->why, sizeof info->why, "pixels were converted from an ICC profile to sRGB");
    else if (img->channels != 3)
        snprintf(info->why, sizeof info->why, "the image has %d channels", img->channels);
    else if (!before || !before->tile || before->w != img->w || before->h != img->h)
        snprintf(info->why, sizeof info->why, "no fingerprint of the %dx%d image", img->w, img->h);
    if (info->why[0])
        return px_image_encode(img, PX_FMT_JPEG, quality, out, err);

    jpatch *j = px_calloc(1, sizeof *j);
    if (!j)
        return px_err_set(err, PX_ENOMEM, "out of memory starting the JPEG rewrite");
    int st = px_image_print_take(img, &j->now, err);
    if (st == PX_OK)
        st = patch(j, jpeg, len, dinfo->orientation, img, before, out, info, err);
    if (j->have_dst)
        jpeg_destroy_compress(&j->dst);
    jpeg_destroy_decompress(&j->src);
    px_image_print_free(&j->now);
    free(j);
    if (st == PX_EUNSUPPORTED) {
        info->lossless = 0;
        info->blocks = info->blocks_reencoded = 0;
        return px_image_encode(img, PX_FMT_JPEG, quality, out, err);
    }
    return st;
}
