/*
 * ONNX loader: bytes -> px_nn_model.
 *
 * The file is decoded with the protobuf-c reader generated at build time from
 * onnx.proto (protobuf-c bounds every length against the buffer, so garbage
 * comes back as a NULL message, which we report as PX_ECORRUPT). We then walk
 * the GraphProto once, in order: initializers become constants (TensorProto
 * data checked against its shape), graph inputs get their fixed shape from the
 * ValueInfo (a symbolic or missing batch dimension becomes 1, any other
 * unknown dimension is an error), and every node is handed to graph.c, which
 * infers its output shapes and either folds it or appends a runtime step.
 * ONNX requires nodes in topological order, so a node naming an input nobody
 * produced yet is malformed. Finally plan.c fuses, packs and plans memory.
 *
 * Tensor names are looked up through a small open-addressing hash so that
 * hostile files with many nodes stay linear.
 */
#include "graph.h"
#include "onnx.pb-c.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Files larger than this are refused before parsing (the models we run are
 * a few MB; the largest face models are tens of MB). */
#define NN_MAX_FILE_BYTES ((size_t)512 << 20)

int px_nn_count(int rank, const int64_t *dims, size_t *count)
{
    size_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (dims[i] < 0 || (uint64_t)dims[i] > NN_MAX_ELEMS)
            return PX_ELIMIT;
        n *= (size_t)dims[i];
        if (n > NN_MAX_ELEMS)
            return PX_ELIMIT;
    }
    *count = n;
    return PX_OK;
}

/* protobuf-c allocates the parsed model through core's allocator too, so a
 * PX_FAULT_INJECTION build reaches every allocation of a model load. */
static void *pb_alloc(void *data, size_t n)
{
    (void)data;
    return px_malloc(n);
}

static void pb_free(void *data, void *p)
{
    (void)data;
    free(p);
}

static ProtobufCAllocator pb_allocator = {pb_alloc, pb_free, NULL};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

int px_nn_find(const px_nn_model *m, const char *name)
{
    if (!m->hash_cap)
        return -1;
    size_t mask = m->hash_cap - 1;
    for (size_t i = hash_str(name) & mask;; i = (i + 1) & mask) {
        int t = m->hash[i];
        if (t < 0)
            return -1;
        if (strcmp(m->t[t].name, name) == 0)
            return t;
    }
}

static int hash_insert(px_nn_model *m, int idx)
{
    /* keep the load factor under 1/2 */
    if ((size_t)(m->nt + 1) * 2 > m->hash_cap) {
        size_t cap = m->hash_cap ? m->hash_cap * 2 : 256;
        int *h = px_malloc(cap * sizeof *h);
        if (!h)
            return PX_ENOMEM;
        for (size_t i = 0; i < cap; i++)
            h[i] = -1;
        for (size_t j = 0; j < m->hash_cap; j++) {
            int t = m->hash[j];
            if (t < 0 || t == idx)
                continue;
            size_t i = hash_str(m->t[t].name) & (cap - 1);
            while (h[i] >= 0)
                i = (i + 1) & (cap - 1);
            h[i] = t;
        }
        free(m->hash);
        m->hash = h;
        m->hash_cap = cap;
    }
    size_t mask = m->hash_cap - 1;
    size_t i = hash_str(m->t[idx].name) & mask;
    while (m->hash[i] >= 0)
        i = (i + 1) & mask;
    m->hash[i] = idx;
    return PX_OK;
}

int px_nn_add_tensor(px_nn_model *m, const char *name, int dtype, int kind, int rank,
                  const int64_t *dims, px_err *err)
{
    if (!name || !name[0])
        return px_err_set(err, PX_EINVAL, "tensor with an empty name");
    if (rank < 0 || rank > PX_NN_MAX_DIMS)
        return px_err_set(err, PX_EUNSUPPORTED, "tensor '%s': rank %d (at most %d supported)",
                          name, rank, PX_NN_MAX_DIMS);
    /* dims may point into m->t, which the realloc below can move: copy first */
    int64_t d[PX_NN_MAX_DIMS];
    for (int i = 0; i < rank; i++)
        d[i] = dims[i];
    size_t count;
    if (px_nn_count(rank, d, &count) != PX_OK)
        return px_err_set(err, PX_ELIMIT, "tensor '%s': negative dimension or more than %zu elements",
                          name, NN_MAX_ELEMS);
    if (px_nn_find(m, name) >= 0)
        return px_err_set(err, PX_EINVAL, "tensor '%s' is defined twice", name);
    if (m->nt == m->cap_t) {
        int cap = m->cap_t ? m->cap_t * 2 : 64;
        nn_tensor *t = px_realloc(m->t, (size_t)cap * sizeof *t);
        if (!t)
            return px_err_set(err, PX_ENOMEM, "out of memory");
        m->t = t;
        m->cap_t = cap;
    }
    nn_tensor *t = &m->t[m->nt];
    memset(t, 0, sizeof *t);
    t->name = px_strdup(name);
    if (!t->name)
        return px_err_set(err, PX_ENOMEM, "out of memory");
    t->dtype = dtype;
    t->kind = kind;
    t->rank = rank;
    for (int i = 0; i < rank; i++)
        t->dims[i] = d[i];
    t->count = count;
    t->root = m->nt;
    t->producer = -1;
    t->last_use = -1;
    if (hash_insert(m, m->nt) != PX_OK) {
        free(t->name);
        return px_err_set(err, PX_ENOMEM, "out of memory");
    }
    return m->nt++;
}

int px_nn_add_step(px_nn_model *m, nn_opkind kind, const char *name, const char *op, px_err *err)
{
    if (m->ns == m->cap_s) {
        int cap = m->cap_s ? m->cap_s * 2 : 64;
        nn_step *s = px_realloc(m->s, (size_t)cap * sizeof *s);
        if (!s)
            return px_err_set(err, PX_ENOMEM, "out of memory");
        m->s = s;
        m->cap_s = cap;
    }
    nn_step *s = &m->s[m->ns];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->op = op;
    s->out = -1;
    for (int i = 0; i < 8; i++)
        s->in[i] = -1;
    s->name = px_strdup(name ? name : "");
    if (!s->name)
        return px_err_set(err, PX_ENOMEM, "out of memory");
    return m->ns++;
}

/* Copies n elements of a TensorProto's typed field or raw_data into a new
 * constant; raw_data is little-endian as ONNX specifies (so is every host we
 * build for). */
int px_nn_const_from_proto(px_nn_model *m, const char *name, const Onnx__TensorProto *tp,
                        px_err *err)
{
    if (tp->n_dims > PX_NN_MAX_DIMS)
        return px_err_set(err, PX_EUNSUPPORTED, "tensor '%s': rank %zu (at most %d supported)",
                          name, tp->n_dims, PX_NN_MAX_DIMS);
    if (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
        return px_err_set(err, PX_EUNSUPPORTED, "tensor '%s': external data is not supported", name);
    if (tp->segment)
        return px_err_set(err, PX_EUNSUPPORTED, "tensor '%s': segmented tensors are not supported",
                          name);
    int src = tp->has_data_type ? tp->data_type : 0;
    int dtype;
    size_t esz;
    switch (src) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
        dtype = NN_F32, esz = 4;
        break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
        dtype = NN_F32, esz = 8;
        break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
        dtype = NN_I64, esz = 8;
        break;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
        dtype = NN_I64, esz = 4;
        break;
    default:
        return px_err_set(err, PX_EUNSUPPORTED,
                          "tensor '%s': data type %d is not supported (float, double, int32, int64)",
                          name, src);
    }
    int64_t dims[PX_NN_MAX_DIMS];
    for (size_t i = 0; i < tp->n_dims; i++)
        dims[i] = tp->dims[i];
    int idx = px_nn_add_tensor(m, name, dtype, NN_CONST, (int)tp->n_dims, dims, err);
    if (idx < 0)
        return idx;
    nn_tensor *t = &m->t[idx];
    size_t n = t->count;
    const uint8_t *raw = NULL;
    size_t have;
    if (tp->has_raw_data) {
        raw = tp->raw_data.data;
        if (tp->raw_data.len != n * esz)
            return px_err_set(err, PX_ECORRUPT, "tensor '%s': raw_data has %zu bytes, shape needs %zu",
                              name, tp->raw_data.len, n * esz);
    } else {
        switch (src) {
        case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: have = tp->n_float_data; break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: have = tp->n_double_data; break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: have = tp->n_int64_data; break;
        default: have = tp->n_int32_data; break;
        }
        if (have != n)
            return px_err_set(err, PX_ECORRUPT, "tensor '%s': %zu values, shape needs %zu", name,
                              have, n);
    }
    if (n == 0)
        return idx;
    t->data = px_malloc(n * (dtype == NN_F32 ? 4 : 8));
    if (!t->data)
        return px_err_set(err, PX_ENOMEM, "tensor '%s': out of memory", name);
    float *f = t->data;
    int64_t *q = t->data;
    for (size_t i = 0; i < n; i++) {
        switch (src) {
        case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
            if (raw)
                memcpy(&f[i], raw + 4 * i, 4);
            else
                f[i] = tp->float_data[i];
            break;
        case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: {
            double d;
            if (raw)
                memcpy(&d, raw + 8 * i, 8);
            else
                d = tp->double_data[i];
            f[i] = (float)d;
            break;
        }
        case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
            if (raw)
                memcpy(&q[i], raw + 8 * i, 8);
            else
                q[i] = tp->int64_data[i];
            break;
        default: {
            int32_t v;
            if (raw)
                memcpy(&v, raw + 4 * i, 4);
            else
                v = tp->int32_data[i];
            q[i] = v;
            break;
        }
        }
    }
    return idx;
}

void px_nn_step_free(nn_step *s)
{
    free(s->name);
    free(s->many_in);
    switch (s->kind) {
    case NN_OP_CONV:
        free(s->u.conv.w);
        free(s->u.conv.b);
        px_nn_conv_packed_destroy(s->u.conv.packed);
        break;
    case NN_OP_RESIZE:
        free(s->u.resize.ys);
        free(s->u.resize.xs);
        break;
    case NN_OP_CONCAT:
        free(s->u.concat.lens);
        break;
    case NN_OP_BATCHNORM:
        free(s->u.bn.scale);
        free(s->u.bn.bias);
        free(s->u.bn.mean);
        free(s->u.bn.var);
        break;
    case NN_OP_GATHER:
        free(s->u.gather.idx);
        break;
    default:
        break;
    }
    memset(s, 0, sizeof *s);
}

void px_nn_model_destroy(px_nn_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->nt; i++) {
        free(m->t[i].name);
        free(m->t[i].data);
    }
    for (int i = 0; i < m->ns; i++)
        px_nn_step_free(&m->s[i]);
    free(m->t);
    free(m->s);
    free(m->inputs);
    free(m->outputs);
    free(m->hash);
    free(m);
}

/* Graph input: float tensor with a fixed shape; batch may be symbolic. */
static int add_graph_input(px_nn_model *m, const Onnx__ValueInfoProto *vi, px_err *err)
{
    const char *name = vi->name ? vi->name : "";
    if (!name[0])
        return px_err_set(err, PX_EINVAL, "graph input with an empty name");
    const Onnx__TypeProto *ty = vi->type;
    if (!ty || ty->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !ty->tensor_type)
        return px_err_set(err, PX_EUNSUPPORTED, "graph input '%s' is not a tensor", name);
    const Onnx__TypeProto__Tensor *tt = ty->tensor_type;
    if (tt->has_elem_type && tt->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return px_err_set(err, PX_EUNSUPPORTED,
                          "graph input '%s' has element type %d (only float is supported)", name,
                          tt->elem_type);
    if (!tt->shape)
        return px_err_set(err, PX_EUNSUPPORTED, "graph input '%s' has no shape", name);
    if (tt->shape->n_dim > PX_NN_MAX_DIMS)
        return px_err_set(err, PX_EUNSUPPORTED, "graph input '%s' has rank %zu (at most %d)", name,
                          tt->shape->n_dim, PX_NN_MAX_DIMS);
    /* the first graph input at another height and width (fully
     * convolutional models run at any size) */
    const int resize = m->n_inputs == 0 && m->in_h > 0 && m->in_w > 0;
    if (resize && tt->shape->n_dim != 4)
        return px_err_set(err, PX_EUNSUPPORTED,
                          "graph input '%s' has rank %zu: only a 4-d (N, C, H, W) input can be "
                          "given another size",
                          name, tt->shape->n_dim);
    int64_t dims[PX_NN_MAX_DIMS];
    for (size_t i = 0; i < tt->shape->n_dim; i++) {
        if (resize && i >= 2) {
            dims[i] = i == 2 ? m->in_h : m->in_w;
            continue;
        }
        const Onnx__TensorShapeProto__Dimension *d = tt->shape->dim[i];
        int known = d && d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE &&
                    d->dim_value > 0;
        if (known)
            dims[i] = d->dim_value;
        else if (i == 0)
            dims[i] = 1; /* symbolic batch: we run batch 1 */
        else
            return px_err_set(err, PX_EINVAL,
                              "graph input '%s': dimension %zu is unknown (fixed shapes only)",
                              name, i);
    }
    int idx = px_nn_add_tensor(m, name, NN_F32, NN_INPUT, (int)tt->shape->n_dim, dims, err);
    if (idx < 0)
        return idx;
    m->t[idx].pinned = 1;
    int *in = px_realloc(m->inputs, (size_t)(m->n_inputs + 1) * sizeof *in);
    if (!in)
        return px_err_set(err, PX_ENOMEM, "out of memory");
    m->inputs = in;
    m->inputs[m->n_inputs++] = idx;
    return PX_OK;
}

static int build(px_nn_model *m, const Onnx__ModelProto *mp, px_err *err)
{
    m->opset = -1;
    for (size_t i = 0; i < mp->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = mp->opset_import[i];
        if (o && (!o->domain || !o->domain[0] || strcmp(o->domain, "ai.onnx") == 0))
            m->opset = o->has_version && o->version > 0 && o->version < 1000 ? (int)o->version : -1;
    }
    if (m->opset < 1)
        return px_err_set(err, PX_EINVAL, "model has no valid opset_import for the ONNX domain");
    const Onnx__GraphProto *g = mp->graph;
    if (!g)
        return px_err_set(err, PX_ECORRUPT, "model has no graph");
    if (g->n_node > NN_MAX_NODES)
        return px_err_set(err, PX_ELIMIT, "graph has %zu nodes (limit %d)", g->n_node,
                          NN_MAX_NODES);
    int rc;
    for (size_t i = 0; i < g->n_initializer; i++) {
        const Onnx__TensorProto *tp = g->initializer[i];
        if (!tp || !tp->name || !tp->name[0])
            return px_err_set(err, PX_EINVAL, "initializer %zu has no name", i);
        if ((rc = px_nn_const_from_proto(m, tp->name, tp, err)) < 0)
            return px_err_prefix(err, rc, "initializer");
    }
    for (size_t i = 0; i < g->n_input; i++) {
        const Onnx__ValueInfoProto *vi = g->input[i];
        if (!vi)
            continue;
        /* older exporters list initializers among the inputs too */
        if (vi->name && px_nn_find(m, vi->name) >= 0 && m->t[px_nn_find(m, vi->name)].kind == NN_CONST)
            continue;
        if ((rc = add_graph_input(m, vi, err)) < 0)
            return rc;
    }
    if (m->n_inputs == 0)
        return px_err_set(err, PX_EINVAL, "graph has no (non-initializer) input");
    for (size_t i = 0; i < g->n_node; i++) {
        if (!g->node[i])
            return px_err_set(err, PX_ECORRUPT, "node %zu is empty", i);
        if ((rc = px_nn_build_node(m, g->node[i], err)) < 0)
            return rc;
    }
    if (g->n_output == 0)
        return px_err_set(err, PX_EINVAL, "graph has no output");
    m->outputs = px_malloc(g->n_output * sizeof *m->outputs);
    if (!m->outputs)
        return px_err_set(err, PX_ENOMEM, "out of memory");
    for (size_t i = 0; i < g->n_output; i++) {
        const char *name = g->output[i] && g->output[i]->name ? g->output[i]->name : "";
        int t = px_nn_find(m, name);
        if (t < 0)
            return px_err_set(err, PX_EINVAL, "graph output '%s' is not produced by any node", name);
        if (m->t[t].dtype != NN_F32)
            return px_err_set(err, PX_EUNSUPPORTED, "graph output '%s' is not float", name);
        m->t[t].pinned = 1;
        m->outputs[m->n_outputs++] = t;
    }
    return px_nn_plan(m, err);
}

struct px_nn_source {
    Onnx__ModelProto *mp;
};

int px_nn_source_open(const void *data, size_t len, px_nn_source **out, px_err *err)
{
    if (!out)
        return px_err_set(err, PX_EINVAL, "px_nn_source_open: out is NULL");
    *out = NULL;
    if (!data || len == 0)
        return px_err_set(err, PX_ECORRUPT, "ONNX model: empty buffer");
    if (len > NN_MAX_FILE_BYTES)
        return px_err_set(err, PX_ELIMIT, "ONNX model: %zu bytes (limit %zu)", len,
                          NN_MAX_FILE_BYTES);
    px_nn_source *s = px_calloc(1, sizeof *s);
    if (!s)
        return px_err_set(err, PX_ENOMEM, "out of memory");
    s->mp = onnx__model_proto__unpack(&pb_allocator, len, data);
    if (!s->mp) {
        free(s);
        return px_err_set(err, PX_ECORRUPT,
                          "ONNX model: not a valid ModelProto (truncated or garbage)");
    }
    *out = s;
    return PX_OK;
}

void px_nn_source_close(px_nn_source *s)
{
    if (!s)
        return;
    onnx__model_proto__free_unpacked(s->mp, &pb_allocator);
    free(s);
}

int px_nn_model_from_source(const px_nn_source *s, int h, int w, px_nn_model **out, px_err *err)
{
    if (!out)
        return px_err_set(err, PX_EINVAL, "px_nn_model_from_source: out is NULL");
    *out = NULL;
    if (!s || h < 0 || w < 0 || (h > 0) != (w > 0) || h > 65536 || w > 65536)
        return px_err_set(err, PX_EINVAL,
                          "px_nn_model_from_source: no source, or input size %dx%d (both 0 for "
                          "the declared size, else both 1..65536)",
                          w, h);
    px_nn_model *m = px_calloc(1, sizeof *m);
    if (!m)
        return px_err_set(err, PX_ENOMEM, "out of memory");
    m->in_h = h, m->in_w = w;
    int rc = build(m, s->mp, err); /* reads the source, never changes it */
    if (rc < 0) {
        px_nn_model_destroy(m);
        return rc;
    }
    *out = m;
    return PX_OK;
}

int px_nn_model_load_buffer(const void *data, size_t len, px_nn_model **out, px_err *err)
{
    if (!out)
        return px_err_set(err, PX_EINVAL, "px_nn_model_load_buffer: out is NULL");
    *out = NULL;
    px_nn_source *s = NULL;
    int rc = px_nn_source_open(data, len, &s, err);
    if (rc == PX_OK)
        rc = px_nn_model_from_source(s, 0, 0, out, err);
    px_nn_source_close(s);
    return rc;
}

int px_nn_model_load(const char *path, px_nn_model **out, px_err *err)
{
    if (!out || !path)
        return px_err_set(err, PX_EINVAL, "px_nn_model_load: NULL argument");
    *out = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = px_read_file(path, NN_MAX_FILE_BYTES, &buf, &len, err);
    if (rc < 0)
        return rc;
    rc = px_nn_model_load_buffer(buf, len, out, err);
    free(buf);
    if (rc < 0)
        return px_err_prefix(err, rc, "%s", path);
    return PX_OK;
}
