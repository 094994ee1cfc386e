/*
 * Loader, optimiser and executor tests on small ONNX models built in memory.
 *
 * Each test fills the protobuf-c structs generated from onnx.proto (the same
 * ones the loader reads), packs them to bytes and loads them with
 * px_nn_model_load_buffer, so the whole path from bytes to outputs is used.
 * Results are compared with naive reference computations written here.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/graph.h" /* the planner test checks the internal plan */
#include "nn/px_nn.h"
#include "onnx.pb-c.h"

/* ---- a tiny graph builder; everything it allocates is freed by gb_free ---- */

typedef struct gb {
    void *allocs[1024];
    int n_allocs;
    Onnx__NodeProto *nodes[64];
    int n_nodes;
    Onnx__TensorProto *inits[64];
    int n_inits;
    Onnx__ValueInfoProto *ins[8], *outs[8];
    int n_ins, n_outs;
    int64_t opset;
} gb;

static void *gb_alloc(gb *g, size_t n)
{
    void *p = calloc(1, n ? n : 1);
    assert_non_null(p);
    assert_true(g->n_allocs < 1024);
    g->allocs[g->n_allocs++] = p;
    return p;
}

static void gb_free(gb *g)
{
    for (int i = 0; i < g->n_allocs; i++)
        free(g->allocs[i]);
}

static char *S(const char *s) { return (char *)(uintptr_t)s; }

static Onnx__NodeProto *gb_node(gb *g, const char *op, const char *name, int n_in,
                                const char *const *in, const char *out)
{
    Onnx__NodeProto *n = gb_alloc(g, sizeof *n);
    onnx__node_proto__init(n);
    n->op_type = S(op);
    n->name = S(name);
    n->n_input = (size_t)n_in;
    n->input = gb_alloc(g, (size_t)n_in * sizeof(char *));
    for (int i = 0; i < n_in; i++)
        n->input[i] = S(in[i]);
    n->n_output = 1;
    n->output = gb_alloc(g, sizeof(char *));
    n->output[0] = S(out);
    n->attribute = gb_alloc(g, 8 * sizeof(Onnx__AttributeProto *));
    g->nodes[g->n_nodes++] = n;
    return n;
}

static Onnx__AttributeProto *gb_attr(gb *g, Onnx__NodeProto *n, const char *name,
                                     Onnx__AttributeProto__AttributeType type)
{
    Onnx__AttributeProto *a = gb_alloc(g, sizeof *a);
    onnx__attribute_proto__init(a);
    a->name = S(name);
    a->has_type = 1;
    a->type = type;
    n->attribute[n->n_attribute++] = a;
    return a;
}

static void gb_ints(gb *g, Onnx__NodeProto *n, const char *name, int cnt, const int64_t *v)
{
    Onnx__AttributeProto *a = gb_attr(g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->n_ints = (size_t)cnt;
    a->ints = gb_alloc(g, (size_t)cnt * sizeof(int64_t));
    memcpy(a->ints, v, (size_t)cnt * sizeof(int64_t));
}

static void gb_int(gb *g, Onnx__NodeProto *n, const char *name, int64_t v)
{
    Onnx__AttributeProto *a = gb_attr(g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
}

static void gb_float(gb *g, Onnx__NodeProto *n, const char *name, float v)
{
    Onnx__AttributeProto *a = gb_attr(g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = 1;
    a->f = v;
}

static void gb_str(gb *g, Onnx__NodeProto *n, const char *name, const char *v)
{
    Onnx__AttributeProto *a = gb_attr(g, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
    a->has_s = 1;
    a->s.data = (uint8_t *)S(v);
    a->s.len = strlen(v);
}

static void gb_tensor(gb *g, const char *name, int rank, const int64_t *dims, const float *f,
                      const int64_t *q)
{
    Onnx__TensorProto *t = gb_alloc(g, sizeof *t);
    onnx__tensor_proto__init(t);
    t->name = S(name);
    t->n_dims = (size_t)rank;
    t->dims = gb_alloc(g, (size_t)rank * sizeof(int64_t));
    size_t n = 1;
    for (int i = 0; i < rank; i++) {
        t->dims[i] = dims[i];
        n *= (size_t)dims[i];
    }
    t->has_data_type = 1;
    if (f) {
        /* floats as raw_data (what exporters write), int64 as the typed field: both paths */
        t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        t->has_raw_data = 1;
        t->raw_data.len = n * sizeof(float);
        t->raw_data.data = gb_alloc(g, n * sizeof(float));
        memcpy(t->raw_data.data, f, n * sizeof(float));
    } else {
        t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
        t->n_int64_data = n;
        t->int64_data = gb_alloc(g, n * sizeof(int64_t));
        if (q)
            memcpy(t->int64_data, q, n * sizeof(int64_t));
    }
    g->inits[g->n_inits++] = t;
}

static Onnx__ValueInfoProto *gb_vinfo(gb *g, const char *name, int rank, const int64_t *dims)
{
    Onnx__ValueInfoProto *v = gb_alloc(g, sizeof *v);
    onnx__value_info_proto__init(v);
    v->name = S(name);
    Onnx__TypeProto *tp = gb_alloc(g, sizeof *tp);
    onnx__type_proto__init(tp);
    Onnx__TypeProto__Tensor *tt = gb_alloc(g, sizeof *tt);
    onnx__type_proto__tensor__init(tt);
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    Onnx__TensorShapeProto *sh = gb_alloc(g, sizeof *sh);
    onnx__tensor_shape_proto__init(sh);
    sh->n_dim = (size_t)rank;
    sh->dim = gb_alloc(g, (size_t)rank * sizeof *sh->dim);
    for (int i = 0; i < rank; i++) {
        Onnx__TensorShapeProto__Dimension *d = gb_alloc(g, sizeof *d);
        onnx__tensor_shape_proto__dimension__init(d);
        if (dims[i] > 0) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[i];
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = S("N");
        }
        sh->dim[i] = d;
    }
    tt->shape = sh;
    tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    tp->tensor_type = tt;
    v->type = tp;
    return v;
}

static void gb_input(gb *g, const char *name, int rank, const int64_t *dims)
{
    g->ins[g->n_ins++] = gb_vinfo(g, name, rank, dims);
}

static void gb_output(gb *g, const char *name)
{
    g->outs[g->n_outs++] = gb_vinfo(g, name, 0, NULL);
}

/* Packs the model into *buf (malloc'd, *len bytes). */
static void gb_pack(gb *g, uint8_t **buf, size_t *len);

/* Packs the model and loads it. Returns the load status; *m set on success. */
static int gb_load(gb *g, px_nn_model **m, px_err *err)
{
    uint8_t *buf;
    size_t len;
    gb_pack(g, &buf, &len);
    int rc = px_nn_model_load_buffer(buf, len, m, err);
    free(buf);
    return rc;
}

static void gb_pack(gb *g, uint8_t **out, size_t *out_len)
{
    Onnx__GraphProto graph = ONNX__GRAPH_PROTO__INIT;
    graph.name = S("test");
    graph.n_node = (size_t)g->n_nodes;
    graph.node = g->nodes;
    graph.n_initializer = (size_t)g->n_inits;
    graph.initializer = g->inits;
    graph.n_input = (size_t)g->n_ins;
    graph.input = g->ins;
    graph.n_output = (size_t)g->n_outs;
    graph.output = g->outs;
    Onnx__OperatorSetIdProto ops = ONNX__OPERATOR_SET_ID_PROTO__INIT;
    ops.domain = S("");
    ops.has_version = 1;
    ops.version = g->opset ? g->opset : 11;
    Onnx__OperatorSetIdProto *opsp = &ops;
    Onnx__ModelProto model = ONNX__MODEL_PROTO__INIT;
    model.has_ir_version = 1;
    model.ir_version = 7;
    model.n_opset_import = 1;
    model.opset_import = &opsp;
    model.graph = &graph;
    size_t len = onnx__model_proto__get_packed_size(&model);
    uint8_t *buf = malloc(len);
    assert_non_null(buf);
    assert_int_equal(onnx__model_proto__pack(&model, buf), len);
    /* PX_NN_SEED_DIR=dir writes every model built here: seeds for fuzz_onnx */
    const char *seed_dir = getenv("PX_NN_SEED_DIR");
    if (seed_dir) {
        static int n_seed;
        char path[1024];
        snprintf(path, sizeof path, "%s/graph_%02d.onnx", seed_dir, n_seed++);
        px_err werr;
        px_write_file_atomic(path, buf, len, &werr);
    }
    *out = buf;
    *out_len = len;
}

/* ---- tests ---- */

static void test_unsupported_operator(void **state)
{
    (void)state;
    gb g = {0};
    int64_t d[4] = {1, 1, 4, 4};
    gb_input(&g, "x", 4, d);
    const char *in[] = {"x"};
    gb_node(&g, "Relu", "r0", 1, in, "y0");
    const char *in2[] = {"y0"};
    gb_node(&g, "FancyOp", "my_node_7", 1, in2, "y");
    gb_output(&g, "y");
    px_nn_model *m = NULL;
    px_err err;
    assert_int_equal(gb_load(&g, &m, &err), PX_EUNSUPPORTED);
    assert_null(m);
    assert_non_null(strstr(err.msg, "my_node_7"));
    assert_non_null(strstr(err.msg, "FancyOp"));
    gb_free(&g);

    /* a supported op with an unsupported attribute value names node, op and value */
    gb h = {0};
    gb_input(&h, "x", 4, d);
    float scales[4] = {1, 1, 2, 2};
    int64_t four = 4;
    gb_tensor(&h, "scales", 1, &four, scales, NULL);
    const char *rin[] = {"x", "", "scales"};
    Onnx__NodeProto *n = gb_node(&h, "Resize", "Resize_12", 3, rin, "y");
    gb_str(&h, n, "mode", "linear");
    gb_output(&h, "y");
    assert_int_equal(gb_load(&h, &m, &err), PX_EUNSUPPORTED);
    assert_non_null(strstr(err.msg, "Resize_12"));
    assert_non_null(strstr(err.msg, "(Resize)"));
    assert_non_null(strstr(err.msg, "linear"));
    gb_free(&h);
}

static void test_truncated_and_garbage(void **state)
{
    (void)state;
    uint8_t *buf;
    size_t len;
    px_err err;
    assert_int_equal(px_read_file(PX_MODEL_DIR "/face_detection_yunet_2023mar.onnx", 64 << 20, &buf,
                                  &len, &err),
                     PX_OK);
    px_nn_model *m = NULL;
    /* the whole file loads; every prefix must fail cleanly */
    assert_int_equal(px_nn_model_load_buffer(buf, len, &m, &err), PX_OK);
    px_nn_model_destroy(m);
    size_t cuts[] = {1, 2, 10, 100, 1000, len / 3, len / 2, len - 100, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        m = (px_nn_model *)&err; /* must be reset to NULL on failure */
        int rc = px_nn_model_load_buffer(buf, cuts[i], &m, &err);
        assert_true(rc < 0);
        assert_null(m);
        assert_true(strlen(err.msg) > 0);
    }
    /* garbage: flipped bytes in the middle of the file */
    uint8_t *bad = malloc(len);
    assert_non_null(bad);
    uint32_t r = 7;
    for (int k = 0; k < 8; k++) {
        memcpy(bad, buf, len);
        for (int j = 0; j < 16; j++) {
            r = r * 1664525u + 1013904223u;
            bad[(r >> 8) % len] ^= (uint8_t)(r >> 24 | 1);
        }
        m = NULL;
        int rc = px_nn_model_load_buffer(bad, len, &m, &err);
        if (rc == PX_OK) { /* a flip inside weights still loads: then it must run */
            px_nn_session *s;
            assert_int_equal(px_nn_session_create(m, 1, &s, &err), PX_OK);
            assert_int_equal(px_nn_session_run(s, &err), PX_OK);
            px_nn_session_destroy(s);
            px_nn_model_destroy(m);
        }
    }
    const char junk[] = "this is not an onnx model at all";
    assert_int_equal(px_nn_model_load_buffer(junk, sizeof junk, &m, &err), PX_ECORRUPT);
    free(bad);
    free(buf);
}

/* Conv (stride 2x1, asymmetric pads) -> BatchNormalization -> Relu, against a naive loop. */
static void test_conv_bn_relu(void **state)
{
    (void)state;
    enum { IC = 2, OC = 3, H = 5, W = 5, K = 3 };
    int64_t xd[4] = {0, IC, H, W}; /* symbolic batch -> 1 */
    int64_t wd[4] = {OC, IC, K, K}, cd[1] = {OC};
    float w[OC * IC * K * K], b[OC], sc[OC], bi[OC], mean[OC], var[OC];
    for (int i = 0; i < OC * IC * K * K; i++)
        w[i] = (float)((i * 7) % 11 - 5) * 0.1f;
    for (int o = 0; o < OC; o++) {
        b[o] = 0.1f * (float)o - 0.1f;
        sc[o] = 1.0f + 0.5f * (float)o;
        bi[o] = -0.2f + 0.3f * (float)o;
        mean[o] = 0.05f * (float)o;
        var[o] = 0.5f + (float)o;
    }
    gb g = {0};
    gb_input(&g, "x", 4, xd);
    gb_tensor(&g, "w", 4, wd, w, NULL);
    gb_tensor(&g, "b", 1, cd, b, NULL);
    gb_tensor(&g, "sc", 1, cd, sc, NULL);
    gb_tensor(&g, "bi", 1, cd, bi, NULL);
    gb_tensor(&g, "mean", 1, cd, mean, NULL);
    gb_tensor(&g, "var", 1, cd, var, NULL);
    const char *cin[] = {"x", "w", "b"};
    Onnx__NodeProto *conv = gb_node(&g, "Conv", "conv", 3, cin, "c");
    int64_t k[2] = {K, K}, st[2] = {2, 1}, pads[4] = {1, 0, 0, 1}, dil[2] = {1, 1};
    gb_ints(&g, conv, "kernel_shape", 2, k);
    gb_ints(&g, conv, "strides", 2, st);
    gb_ints(&g, conv, "pads", 4, pads);
    gb_ints(&g, conv, "dilations", 2, dil);
    gb_int(&g, conv, "group", 1);
    const char *bin[] = {"c", "sc", "bi", "mean", "var"};
    Onnx__NodeProto *bn = gb_node(&g, "BatchNormalization", "bn", 5, bin, "n");
    gb_float(&g, bn, "epsilon", 1e-3f);
    const char *rin[] = {"n"};
    gb_node(&g, "Relu", "relu", 1, rin, "y");
    gb_output(&g, "y");
    px_nn_model *m = NULL;
    px_err err;
    if (gb_load(&g, &m, &err) != PX_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(px_nn_model_num_steps(m), 1); /* BN and Relu fused into the conv */
    px_nn_tensor_info oi;
    assert_int_equal(px_nn_model_output_info(m, 0, &oi), PX_OK);
    const int OH = (H + 1 + 0 - K) / 2 + 1, OW = (W + 0 + 1 - K) / 1 + 1;
    assert_int_equal(oi.rank, 4);
    assert_int_equal(oi.dims[0], 1);
    assert_int_equal(oi.dims[1], OC);
    assert_int_equal(oi.dims[2], OH);
    assert_int_equal(oi.dims[3], OW);
    px_nn_session *s;
    assert_int_equal(px_nn_session_create(m, 2, &s, &err), PX_OK);
    float *x = px_nn_session_input(s, 0);
    for (int i = 0; i < IC * H * W; i++)
        x[i] = (float)((i * 13) % 17) * 0.25f - 2.0f;
    assert_int_equal(px_nn_session_run(s, &err), PX_OK);
    const float *y = px_nn_session_output(s, 0);
    int positives = 0, zeros = 0;
    for (int o = 0; o < OC; o++)
        for (int oy = 0; oy < OH; oy++)
            for (int ox = 0; ox < OW; ox++) {
                double acc = b[o];
                for (int c = 0; c < IC; c++)
                    for (int ky = 0; ky < K; ky++)
                        for (int kx = 0; kx < K; kx++) {
                            int iy = oy * 2 - 1 + ky, ix = ox - 0 + kx;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W)
                                continue;
                            acc += (double)w[((o * IC + c) * K + ky) * K + kx] * x[(c * H + iy) * W + ix];
                        }
                double v = (acc - mean[o]) / sqrt((double)var[o] + 1e-3) * sc[o] + bi[o];
                v = v > 0 ? v : 0;
                positives += v > 0;
                zeros += v == 0;
                double got = y[(o * OH + oy) * OW + ox];
                if (fabs(got - v) > 1e-4)
                    fail_msg("y[%d,%d,%d] = %g, expected %g", o, oy, ox, got, v);
            }
    assert_true(positives > 0 && zeros > 0); /* the Relu really clipped something */
    px_nn_session_destroy(s);
    px_nn_model_destroy(m);
    gb_free(&g);
}

/* Shape -> Gather -> Unsqueeze -> Concat -> Reshape folds to a constant shape;
 * the Reshape becomes an alias, so only the Sigmoid runs. */
static void test_shape_folding(void **state)
{
    (void)state;
    gb g = {0};
    int64_t xd[4] = {1, 3, 4, 4};
    gb_input(&g, "x", 4, xd);
    int64_t one = 1, zero = 0, minus1 = -1;
    gb_tensor(&g, "idx0", 0, NULL, NULL, &zero);
    gb_tensor(&g, "m1", 1, &one, NULL, &minus1);
    const char *a[] = {"x"};
    gb_node(&g, "Shape", "shape", 1, a, "shp");
    const char *b[] = {"shp", "idx0"};
    Onnx__NodeProto *ga = gb_node(&g, "Gather", "gather", 2, b, "n");
    gb_int(&g, ga, "axis", 0);
    const char *c[] = {"n"};
    Onnx__NodeProto *un = gb_node(&g, "Unsqueeze", "unsq", 1, c, "n1");
    gb_ints(&g, un, "axes", 1, &zero);
    const char *d[] = {"n1", "m1"};
    Onnx__NodeProto *cat = gb_node(&g, "Concat", "cat", 2, d, "newshape");
    gb_int(&g, cat, "axis", 0);
    const char *e[] = {"x", "newshape"};
    gb_node(&g, "Reshape", "reshape", 2, e, "flat");
    const char *f[] = {"flat"};
    gb_node(&g, "Sigmoid", "sig", 1, f, "y");
    gb_output(&g, "y");
    px_nn_model *m = NULL;
    px_err err;
    if (gb_load(&g, &m, &err) != PX_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(px_nn_model_num_steps(m), 1);
    px_nn_tensor_info oi;
    assert_int_equal(px_nn_model_output_info(m, 0, &oi), PX_OK);
    assert_int_equal(oi.rank, 2);
    assert_int_equal(oi.dims[0], 1);
    assert_int_equal(oi.dims[1], 48);
    px_nn_session *s;
    assert_int_equal(px_nn_session_create(m, 1, &s, &err), PX_OK);
    float *x = px_nn_session_input(s, 0);
    for (int i = 0; i < 48; i++)
        x[i] = (float)i * 0.2f - 4.0f;
    assert_int_equal(px_nn_session_run(s, &err), PX_OK);
    const float *y = px_nn_session_output(s, 0);
    for (int i = 0; i < 48; i++)
        assert_true(fabs(y[i] - 1.0 / (1.0 + exp(-((double)i * 0.2 - 4.0)))) < 1e-5);
    px_nn_session_destroy(s);
    px_nn_model_destroy(m);
    gb_free(&g);
}

/* Broadcast arithmetic, Transpose, Softmax (opset 13: along the axis), Slice
 * with inputs, and memory reuse: every intermediate is checked through the
 * final result. */
static void test_elementwise_chain(void **state)
{
    (void)state;
    gb g = {0};
    g.opset = 13;
    int64_t xd[3] = {1, 4, 6};
    gb_input(&g, "x", 3, xd);
    float bias[6] = {0.5f, -1, 2, 0, 1, -0.5f};
    int64_t bd[1] = {6}, one = 1;
    gb_tensor(&g, "bias", 1, bd, bias, NULL);
    float two = 2.0f;
    gb_tensor(&g, "two", 1, &one, &two, NULL);
    int64_t st = 1, en = 5, ax = 2;
    gb_tensor(&g, "st", 1, &one, NULL, &st);
    gb_tensor(&g, "en", 1, &one, NULL, &en);
    gb_tensor(&g, "ax", 1, &one, NULL, &ax);
    const char *a[] = {"x", "bias"};
    gb_node(&g, "Add", "add", 2, a, "s1"); /* (1,4,6) + (6) */
    const char *b[] = {"s1", "two"};
    gb_node(&g, "Mul", "mul", 2, b, "s2");
    const char *c[] = {"s2", "st", "en", "ax"};
    gb_node(&g, "Slice", "slice", 4, c, "s3"); /* (1,4,4): columns 1..4 */
    const char *d[] = {"s3"};
    int64_t perm[3] = {0, 2, 1};
    Onnx__NodeProto *tr = gb_node(&g, "Transpose", "tr", 1, d, "s4"); /* (1,4,4)^T */
    gb_ints(&g, tr, "perm", 3, perm);
    const char *e[] = {"s4"};
    Onnx__NodeProto *sm = gb_node(&g, "Softmax", "sm", 1, e, "y");
    gb_int(&g, sm, "axis", 1); /* opset 13: along axis 1 only */
    gb_output(&g, "y");
    px_nn_model *m = NULL;
    px_err err;
    if (gb_load(&g, &m, &err) != PX_OK)
        fail_msg("%s", err.msg);
    px_nn_session *s;
    assert_int_equal(px_nn_session_create(m, 1, &s, &err), PX_OK);
    float *x = px_nn_session_input(s, 0);
    for (int i = 0; i < 24; i++)
        x[i] = (float)((i * 5) % 7) * 0.3f;
    assert_int_equal(px_nn_session_run(s, &err), PX_OK);
    const float *y = px_nn_session_output(s, 0);
    /* reference: t[j][r] = (x[r][j+1] + bias[j+1]) * 2, softmax over j for each r */
    for (int r = 0; r < 4; r++) {
        double v[4], mx = -1e9, sum = 0;
        for (int j = 0; j < 4; j++) {
            v[j] = ((double)x[r * 6 + j + 1] + bias[j + 1]) * 2;
            mx = v[j] > mx ? v[j] : mx;
        }
        for (int j = 0; j < 4; j++)
            sum += exp(v[j] - mx);
        for (int j = 0; j < 4; j++) {
            double want = exp(v[j] - mx) / sum, got = y[j * 4 + r];
            if (fabs(got - want) > 1e-5)
                fail_msg("y[%d][%d] = %g, expected %g", j, r, got, want);
        }
    }
    /* a session on the caller's arena and pool computes the same; the arena
     * is the caller's (it may hold another model's activations between
     * runs), so the session frees neither */
    px_pool *pool;
    assert_true(px_pool_create(1, &pool) >= 0);
    const size_t need = px_nn_model_arena_bytes(m);
    assert_true(need > 0);
    uint8_t *arena = px_aligned_alloc(need);
    assert_non_null(arena);
    memset(arena, 0xA5, need); /* garbage: every run fills what it reads */
    px_nn_session *t = NULL;
    assert_int_equal(px_nn_session_create_in(m, pool, arena, need - 1, &t, &err), PX_EINVAL);
    assert_null(t);
    assert_int_equal(px_nn_session_create_in(m, pool, arena, need, &t, &err), PX_OK);
    memcpy(px_nn_session_input(t, 0), x, sizeof(float) * 24);
    assert_int_equal(px_nn_session_run(t, &err), PX_OK);
    assert_memory_equal(px_nn_session_output(t, 0), y, sizeof(float) * 16);
    px_nn_session_destroy(t);
    px_pool_destroy(pool);
    px_aligned_free(arena);
    px_nn_session_destroy(s);
    px_nn_model_destroy(m);
    gb_free(&g);
}

/* Input naming an undefined tensor, and a Reshape with a wrong element count. */
static void test_bad_graphs(void **state)
{
    (void)state;
    int64_t xd[2] = {2, 3};
    px_nn_model *m = NULL;
    px_err err;
    gb g = {0};
    gb_input(&g, "x", 2, xd);
    const char *a[] = {"nope"};
    gb_node(&g, "Relu", "r", 1, a, "y");
    gb_output(&g, "y");
    assert_int_equal(gb_load(&g, &m, &err), PX_EINVAL);
    assert_non_null(strstr(err.msg, "nope"));
    gb_free(&g);

    gb h = {0};
    gb_input(&h, "x", 2, xd);
    int64_t shp[2] = {4, 2}, two = 2;
    gb_tensor(&h, "shp", 1, &two, NULL, shp);
    const char *b[] = {"x", "shp"};
    gb_node(&h, "Reshape", "rs", 2, b, "y");
    gb_output(&h, "y");
    assert_int_equal(gb_load(&h, &m, &err), PX_EINVAL);
    assert_non_null(strstr(err.msg, "rs"));
    gb_free(&h);
}

/* Resize nearest through `sizes` (3 -> 5 columns): half_pixel/round_prefer_floor
 * and asymmetric/floor pick different source columns. */
static void test_resize_modes(void **state)
{
    (void)state;
    static const struct {
        const char *ctm, *nm;
        int want[5];
    } cases[] = {{"half_pixel", "round_prefer_floor", {0, 0, 1, 2, 2}},
                 {"asymmetric", "floor", {0, 0, 1, 1, 2}},
                 {"align_corners", "round_prefer_ceil", {0, 1, 1, 2, 2}}};
    for (int k = 0; k < 3; k++) {
        gb g = {0};
        int64_t xd[4] = {1, 1, 1, 3}, four = 4, sizes[4] = {1, 1, 1, 5};
        gb_input(&g, "x", 4, xd);
        gb_tensor(&g, "sizes", 1, &four, NULL, sizes);
        const char *in[] = {"x", "", "", "sizes"};
        Onnx__NodeProto *n = gb_node(&g, "Resize", "rz", 4, in, "y");
        gb_str(&g, n, "mode", "nearest");
        gb_str(&g, n, "coordinate_transformation_mode", cases[k].ctm);
        gb_str(&g, n, "nearest_mode", cases[k].nm);
        gb_output(&g, "y");
        px_nn_model *m = NULL;
        px_err err;
        if (gb_load(&g, &m, &err) != PX_OK)
            fail_msg("%s", err.msg);
        px_nn_session *s;
        assert_int_equal(px_nn_session_create(m, 1, &s, &err), PX_OK);
        float *x = px_nn_session_input(s, 0);
        x[0] = 10, x[1] = 11, x[2] = 12;
        assert_int_equal(px_nn_session_run(s, &err), PX_OK);
        const float *y = px_nn_session_output(s, 0);
        for (int i = 0; i < 5; i++)
            if (y[i] != 10.0f + (float)cases[k].want[i])
                fail_msg("%s/%s: y[%d] = %g, expected %g", cases[k].ctm, cases[k].nm, i,
                         (double)y[i], 10.0 + cases[k].want[i]);
        px_nn_session_destroy(s);
        px_nn_model_destroy(m);
        gb_free(&g);
    }
}

/* MaxPool 2x2 stride 2 with ceil_mode on 5x5 -> 3x3 (the last window is partial). */
static void test_maxpool_ceil(void **state)
{
    (void)state;
    gb g = {0};
    int64_t xd[4] = {1, 2, 5, 5}, k[2] = {2, 2}, st[2] = {2, 2}, pads[4] = {0, 0, 0, 0};
    gb_input(&g, "x", 4, xd);
    const char *in[] = {"x"};
    Onnx__NodeProto *n = gb_node(&g, "MaxPool", "mp", 1, in, "y");
    gb_ints(&g, n, "kernel_shape", 2, k);
    gb_ints(&g, n, "strides", 2, st);
    gb_ints(&g, n, "pads", 4, pads);
    gb_int(&g, n, "ceil_mode", 1);
    gb_output(&g, "y");
    px_nn_model *m = NULL;
    px_err err;
    if (gb_load(&g, &m, &err) != PX_OK)
        fail_msg("%s", err.msg);
    px_nn_tensor_info oi;
    assert_int_equal(px_nn_model_output_info(m, 0, &oi), PX_OK);
    assert_int_equal(oi.dims[2], 3);
    assert_int_equal(oi.dims[3], 3);
    px_nn_session *s;
    assert_int_equal(px_nn_session_create(m, 1, &s, &err), PX_OK);
    float *x = px_nn_session_input(s, 0);
    for (int i = 0; i < 50; i++)
        x[i] = (float)((i * 37) % 23) - 11.0f;
    assert_int_equal(px_nn_session_run(s, &err), PX_OK);
    const float *y = px_nn_session_output(s, 0);
    for (int c = 0; c < 2; c++)
        for (int oy = 0; oy < 3; oy++)
            for (int ox = 0; ox < 3; ox++) {
                float mx = -1e30f;
                for (int dy = 0; dy < 2; dy++)
                    for (int dx = 0; dx < 2; dx++) {
                        int iy = oy * 2 + dy, ix = ox * 2 + dx;
                        if (iy < 5 && ix < 5 && x[(c * 5 + iy) * 5 + ix] > mx)
                            mx = x[(c * 5 + iy) * 5 + ix];
                    }
                assert_true(y[(c * 3 + oy) * 3 + ox] == mx);
            }
    px_nn_session_destroy(s);
    px_nn_model_destroy(m);
    gb_free(&g);
}

/* A MaxPool whose input is a constant is evaluated at load with the kernel:
 * only the Add that reads the graph input is left to run. */
static void test_fold_with_kernels(void **state)
{
    (void)state;
    gb g = {0};
    int64_t xd[4] = {1, 1, 2, 2}, cd[4] = {1, 1, 3, 3}, k[2] = {2, 2};
    float cv[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    gb_input(&g, "x", 4, xd);
    gb_tensor(&g, "c", 4, cd, cv, NULL);
    const char *a[] = {"c"};
    Onnx__NodeProto *n = gb_node(&g, "MaxPool", "mp", 1, a, "p");
    gb_ints(&g, n, "kernel_shape", 2, k);
    const char *b[] = {"x", "p"};
    gb_node(&g, "Add", "add", 2, b, "y");
    gb_output(&g, "y");
    px_nn_model *m = NULL;
    px_err err;
    if (gb_load(&g, &m, &err) != PX_OK)
        fail_msg("%s", err.msg);
    assert_int_equal(px_nn_model_num_steps(m), 1);
    px_nn_session *s;
    assert_int_equal(px_nn_session_create(m, 1, &s, &err), PX_OK);
    float *x = px_nn_session_input(s, 0);
    for (int i = 0; i < 4; i++)
        x[i] = 0.5f * (float)i;
    assert_int_equal(px_nn_session_run(s, &err), PX_OK);
    const float *y = px_nn_session_output(s, 0);
    const float want[4] = {4, 5.5f, 8, 9.5f};
    for (int i = 0; i < 4; i++)
        assert_true(y[i] == want[i]);
    px_nn_session_destroy(s);
    px_nn_model_destroy(m);
    gb_free(&g);
}

/* The memory plan of the real models: any two storage roots that are alive
 * at the same step must not share arena bytes, every root lies inside the
 * arena, and reuse really happens (arena < sum of all roots). */
static void test_memory_plan(void **state)
{
    (void)state;
    const char *files[] = {"face_detection_yunet_2023mar.onnx", "ultraface_rfb_640.onnx",
                           "face_detection_yunet_2022mar.onnx"};
    for (int f = 0; f < 3; f++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", PX_MODEL_DIR, files[f]);
        px_nn_model *m = NULL;
        px_err err;
        if (px_nn_model_load(path, &m, &err) != PX_OK)
            fail_msg("%s", err.msg);
        int nt = m->nt;
        int *first = malloc((size_t)nt * sizeof(int)), *last = malloc((size_t)nt * sizeof(int));
        assert_true(first && last);
        for (int t = 0; t < nt; t++)
            first[t] = INT32_MAX, last[t] = -1;
        /* a root is alive from the first step that writes any tensor sharing it to the last
         * step that reads one (inputs from the start, pinned ones to the end) */
        for (int t = 0; t < nt; t++) {
            const nn_tensor *x = &m->t[t];
            if (x->kind == NN_CONST || (x->kind == NN_ACT && x->producer < 0))
                continue;
            int r = x->root, a = x->kind == NN_INPUT ? -1 : x->producer;
            int b = x->pinned ? INT32_MAX : (x->last_use > a ? x->last_use : a);
            first[r] = a < first[r] ? a : first[r];
            last[r] = b > last[r] ? b : last[r];
        }
        size_t sum = 0;
        for (int r = 0; r < nt; r++) {
            if (last[r] < 0 || m->t[r].root != r)
                continue;
            size_t sz_r = m->t[r].count * sizeof(float);
            sum += sz_r;
            assert_true(m->t[r].offset + sz_r <= m->arena_bytes);
            assert_true(m->t[r].offset % 64 == 0);
            for (int q = r + 1; q < nt; q++) {
                if (last[q] < 0 || m->t[q].root != q)
                    continue;
                int overlap_time = first[r] <= last[q] && first[q] <= last[r];
                size_t sz_q = m->t[q].count * sizeof(float);
                int overlap_mem = m->t[r].offset < m->t[q].offset + sz_q &&
                                  m->t[q].offset < m->t[r].offset + sz_r;
                if (overlap_time && overlap_mem)
                    fail_msg("%s: '%s' and '%s' share memory while both alive", files[f],
                             m->t[r].name, m->t[q].name);
            }
        }
        assert_true(m->arena_bytes < sum);
        free(first);
        free(last);
        px_nn_model_destroy(m);
    }
}

/* One parsed file, models built from it at several input sizes. */
typedef struct src_job {
    const px_nn_source *src;
    int h, w, st;
    float corner, middle;
} src_job;

static void *build_and_run(void *arg)
{
    src_job *j = arg;
    px_nn_model *m = NULL;
    px_nn_session *ses = NULL;
    px_err e;
    j->st = px_nn_model_from_source(j->src, j->h, j->w, &m, &e);
    if (j->st == PX_OK)
        j->st = px_nn_session_create(m, 1, &ses, &e);
    if (j->st == PX_OK) {
        float *in = px_nn_session_input(ses, 0);
        for (int i = 0; i < 2 * j->h * j->w; i++)
            in[i] = 1.0f;
        j->st = px_nn_session_run(ses, &e);
        const float *o = px_nn_session_output(ses, 0);
        j->corner = o[0];                                       /* sees the zero padding */
        j->middle = o[(size_t)(j->h / 2) * (size_t)j->w + (size_t)(j->w / 2)]; /* does not */
    }
    px_nn_session_destroy(ses);
    px_nn_model_destroy(m);
    return NULL;
}

static void test_model_from_source_sizes(void **state)
{
    (void)state;
    enum { IC = 2, OC = 3, K = 3 };
    int64_t xd[4] = {1, IC, 5, 5}, wd[4] = {OC, IC, K, K};
    float w[OC * IC * K * K];
    for (int i = 0; i < OC * IC * K * K; i++)
        w[i] = (float)((i * 5) % 7 - 3) * 0.25f;
    gb g = {0};
    gb_input(&g, "x", 4, xd);
    gb_tensor(&g, "w", 4, wd, w, NULL);
    const char *cin[] = {"x", "w"};
    Onnx__NodeProto *conv = gb_node(&g, "Conv", "conv", 2, cin, "y");
    int64_t k[2] = {K, K}, pads[4] = {1, 1, 1, 1};
    gb_ints(&g, conv, "kernel_shape", 2, k);
    gb_ints(&g, conv, "pads", 4, pads);
    gb_output(&g, "y");
    uint8_t *buf;
    size_t len;
    gb_pack(&g, &buf, &len);
    px_nn_source *src = NULL;
    px_err e;
    assert_int_equal(px_nn_source_open(buf, len, &src, &e), PX_OK);
    free(buf); /* the source keeps what it needs */
    /* as declared, and at other sizes, from two threads at once */
    src_job jobs[3] = {{src, 5, 5, -1, 0, 0}, {src, 9, 7, -1, 0, 0}, {src, 16, 32, -1, 0, 0}};
    pthread_t t[2];
    assert_int_equal(pthread_create(&t[0], NULL, build_and_run, &jobs[1]), 0);
    assert_int_equal(pthread_create(&t[1], NULL, build_and_run, &jobs[2]), 0);
    build_and_run(&jobs[0]);
    assert_int_equal(pthread_join(t[0], NULL), 0);
    assert_int_equal(pthread_join(t[1], NULL), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(jobs[i].st, PX_OK);
        /* the same weights at every size: the same value where the window is
         * inside the input, and at the corner, which sees the padding */
        assert_float_equal(jobs[i].middle, jobs[0].middle, 1e-6f);
        assert_float_equal(jobs[i].corner, jobs[0].corner, 1e-6f);
    }
    px_nn_model *m = NULL;
    assert_int_equal(px_nn_model_from_source(src, 9, 7, &m, &e), PX_OK);
    px_nn_tensor_info ti;
    assert_int_equal(px_nn_model_input_info(m, 0, &ti), PX_OK);
    assert_int_equal(ti.dims[2], 9);
    assert_int_equal(ti.dims[3], 7);
    assert_int_equal(px_nn_model_output_info(m, 0, &ti), PX_OK);
    assert_int_equal(ti.count, (size_t)OC * 9 * 7);
    px_nn_model_destroy(m);
    /* sizes it refuses */
    assert_int_equal(px_nn_model_from_source(src, 9, 0, &m, &e), PX_EINVAL);
    assert_null(m);
    assert_int_equal(px_nn_model_from_source(NULL, 9, 7, &m, &e), PX_EINVAL);
    px_nn_source_close(src);

    /* a 2-d input cannot be given another height and width */
    gb g2 = {0};
    int64_t d2[2] = {4, 6};
    gb_input(&g2, "x", 2, d2);
    const char *rin[] = {"x"};
    gb_node(&g2, "Relu", "relu", 1, rin, "y");
    gb_output(&g2, "y");
    gb_pack(&g2, &buf, &len);
    assert_int_equal(px_nn_source_open(buf, len, &src, &e), PX_OK);
    free(buf);
    assert_int_equal(px_nn_model_from_source(src, 8, 8, &m, &e), PX_EUNSUPPORTED);
    assert_non_null(strstr(e.msg, "4-d"));
    assert_int_equal(px_nn_model_from_source(src, 0, 0, &m, &e), PX_OK);
    px_nn_model_destroy(m);
    px_nn_source_close(src);
    assert_int_equal(px_nn_source_open("junk", 4, &src, &e), PX_ECORRUPT);
    assert_null(src);
    gb_free(&g);
    gb_free(&g2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unsupported_operator), cmocka_unit_test(test_truncated_and_garbage),
        cmocka_unit_test(test_conv_bn_relu),         cmocka_unit_test(test_shape_folding),
        cmocka_unit_test(test_elementwise_chain),    cmocka_unit_test(test_bad_graphs),
        cmocka_unit_test(test_resize_modes),         cmocka_unit_test(test_maxpool_ceil),
        cmocka_unit_test(test_fold_with_kernels),    cmocka_unit_test(test_memory_plan),
        cmocka_unit_test(test_model_from_source_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
