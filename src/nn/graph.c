/*
 * Node builders: for each ONNX node, check its attributes, infer the shapes of
 * its outputs, and then either
 *  - fold it: when every input is a constant and the op is one of the cheap
 *    data-movement / arithmetic ops, compute the result now (in int64 for
 *    shape arithmetic, float otherwise) and add it as a constant; Shape is
 *    always folded because every shape is fixed at load;
 *  - or append a runtime step with everything the kernel needs precomputed
 *    (conv geometry, broadcast shapes, resize index tables, slice strides).
 *
 * Reshape/Flatten/Squeeze/Unsqueeze/Identity (and a float->float Cast) become
 * NN_OP_ALIAS steps: no work at run time, the planner makes the output share
 * the input's storage. The runtime is float32 only: an int64 tensor that is
 * not a constant is refused with a clear error.
 *
 * Every error names the node and its op type ("node 'Conv_12' (Resize): mode
 * 'linear' is not supported"), and every index and dimension coming from the
 * file is checked before use.
 */
#include "graph.h"
#include "onnx.pb-c.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct nctx {
    px_nn_model *m;
    const Onnx__NodeProto *node;
    px_err *err;
    const char *name; /* node name or "" */
    const char *op;   /* canonical op type string (static) */
    int n_in;
    int in[64];       /* resolved input tensors, -1 for an omitted optional input */
    int n_out_made;   /* outputs produced by the builder */
} nctx;

static int nerr(nctx *c, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int nerr(nctx *c, int status, const char *fmt, ...)
{
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return px_err_set(c->err, status, "node '%s' (%s): %s", c->name, c->op, buf);
}

static nn_tensor *T(nctx *c, int idx) { return &c->m->t[idx]; }

/* ---- attributes ---- */

static const Onnx__AttributeProto *attr(nctx *c, const char *name)
{
    for (size_t i = 0; i < c->node->n_attribute; i++) {
        const Onnx__AttributeProto *a = c->node->attribute[i];
        if (a && a->name && strcmp(a->name, name) == 0)
            return a;
    }
    return NULL;
}

static int64_t attr_int(nctx *c, const char *name, int64_t def)
{
    const Onnx__AttributeProto *a = attr(c, name);
    return a && a->has_i ? a->i : def;
}

static float attr_float(nctx *c, const char *name, float def)
{
    const Onnx__AttributeProto *a = attr(c, name);
    return a && a->has_f ? a->f : def;
}

/* Copies a string attribute into buf (NUL-terminated, truncated); def if absent. */
static const char *attr_str(nctx *c, const char *name, const char *def, char *buf, size_t cap)
{
    const Onnx__AttributeProto *a = attr(c, name);
    if (!a || !a->has_s)
        return def;
    size_t n = a->s.len < cap - 1 ? a->s.len : cap - 1;
    if (n)
        memcpy(buf, a->s.data, n);
    buf[n] = '\0';
    return buf;
}

/* Reads an ints attribute of at most `max` values. Returns the count, 0 if
 * absent, or a negative status (too many values). */
static int attr_ints(nctx *c, const char *name, int64_t *out, int max)
{
    const Onnx__AttributeProto *a = attr(c, name);
    if (!a || a->n_ints == 0)
        return 0;
    if (a->n_ints > (size_t)max)
        return nerr(c, PX_EINVAL, "attribute '%s' has %zu values (at most %d expected)", name,
                    a->n_ints, max);
    for (size_t i = 0; i < a->n_ints; i++)
        out[i] = a->ints[i];
    return (int)a->n_ints;
}

/* ---- tensors ---- */

static int input(nctx *c, int k) { return k < c->n_in ? c->in[k] : -1; }

static int need_input(nctx *c, int k)
{
    if (input(c, k) < 0)
        return nerr(c, PX_EINVAL, "input %d is missing", k);
    return PX_OK;
}

static int is_const(nctx *c, int idx) { return idx >= 0 && T(c, idx)->kind == NN_CONST; }

static int need_f32(nctx *c, int idx)
{
    if (T(c, idx)->dtype != NN_F32)
        return nerr(c, PX_EUNSUPPORTED,
                    "input '%s' is an int64 tensor computed at run time (the runtime is float only)",
                    T(c, idx)->name);
    return PX_OK;
}

/* Reads a constant as int64 values (floats are truncated). */
static int const_ints(nctx *c, int idx, int64_t *out, int max, int *n)
{
    if (!is_const(c, idx))
        return nerr(c, PX_EUNSUPPORTED, "input '%s' must be a constant", T(c, idx)->name);
    nn_tensor *t = T(c, idx);
    if (t->count > (size_t)max)
        return nerr(c, PX_EINVAL, "input '%s' has %zu values (at most %d expected)", t->name,
                    t->count, max);
    for (size_t i = 0; i < t->count; i++) {
        if (t->dtype == NN_I64) {
            out[i] = ((const int64_t *)t->data)[i];
        } else {
            float f = ((const float *)t->data)[i];
            if (!(f > -9.2e18f && f < 9.2e18f))
                return nerr(c, PX_EINVAL, "input '%s' holds a non-integer value", t->name);
            out[i] = (int64_t)f;
        }
    }
    *n = (int)t->count;
    return PX_OK;
}

static const char *out_name(nctx *c, int k)
{
    if ((size_t)k >= c->node->n_output || !c->node->output[k] || !c->node->output[k][0])
        return NULL;
    return c->node->output[k];
}

/* New constant output k with uninitialised data (count * element size). */
static int out_const(nctx *c, int k, int dtype, int rank, const int64_t *dims, void **data)
{
    const char *name = out_name(c, k);
    if (!name)
        return nerr(c, PX_EINVAL, "output %d has no name", k);
    int idx = px_nn_add_tensor(c->m, name, dtype, NN_CONST, rank, dims, c->err);
    if (idx < 0)
        return px_err_prefix(c->err, idx, "node '%s' (%s)", c->name, c->op);
    nn_tensor *t = T(c, idx);
    size_t bytes = t->count * (dtype == NN_F32 ? 4 : 8);
    if (c->m->fold_bytes + bytes > NN_MAX_FOLD_BYTES)
        return nerr(c, PX_ELIMIT, "folded constants exceed %zu bytes", NN_MAX_FOLD_BYTES);
    c->m->fold_bytes += bytes;
    t->data = bytes ? px_calloc(1, bytes) : NULL;
    if (bytes && !t->data)
        return nerr(c, PX_ENOMEM, "out of memory");
    *data = t->data;
    c->n_out_made = k + 1;
    return idx;
}

/* New runtime step with one float output of the given shape. */
static int out_step(nctx *c, nn_opkind kind, int rank, const int64_t *dims, int *step)
{
    const char *name = out_name(c, 0);
    if (!name)
        return nerr(c, PX_EINVAL, "output 0 has no name");
    size_t count;
    if (px_nn_count(rank, dims, &count) != PX_OK)
        return nerr(c, PX_ELIMIT, "output has a negative dimension or more than %zu elements",
                    NN_MAX_ELEMS);
    if (count == 0)
        return nerr(c, PX_EUNSUPPORTED, "output '%s' would be empty", name);
    int idx = px_nn_add_tensor(c->m, name, NN_F32, NN_ACT, rank, dims, c->err);
    if (idx < 0)
        return px_err_prefix(c->err, idx, "node '%s' (%s)", c->name, c->op);
    int s = px_nn_add_step(c->m, kind, c->name, c->op, c->err);
    if (s < 0)
        return s;
    nn_step *st = &c->m->s[s];
    st->out = idx;
    T(c, idx)->producer = s;
    *step = s;
    c->n_out_made = 1;
    return idx;
}

static int norm_axis(nctx *c, int64_t axis, int rank, int *out)
{
    *out = 0;
    if (axis < -rank || axis >= rank || (rank == 0 && axis != 0))
        return nerr(c, PX_EINVAL, "axis %lld out of range for rank %d", (long long)axis, rank);
    *out = (int)(axis < 0 ? axis + rank : axis);
    return PX_OK;
}

static size_t prod(const int64_t *d, int from, int to)
{
    size_t p = 1;
    for (int i = from; i < to; i++)
        p *= (size_t)d[i];
    return p;
}

static size_t esize(int dtype) { return dtype == NN_F32 ? 4 : 8; }

/* ---- shared fold helpers ---- */

/* Strided N-d copy: out[i..] = in[starts + i * steps] per axis. When the last
 * axis has step 1 its runs are contiguous and copied with one memcpy each. */
static void copy_strided(size_t esz, int rank, const int64_t *in_dims, const int64_t *starts,
                         const int64_t *steps, const int64_t *out_dims, const void *in, void *out)
{
    if (rank == 0) {
        memcpy(out, in, esz);
        return;
    }
    int64_t in_stride[PX_NN_MAX_DIMS], idx[PX_NN_MAX_DIMS] = {0};
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; i--) {
        in_stride[i] = s;
        s *= in_dims[i];
    }
    size_t n = prod(out_dims, 0, rank);
    size_t run = steps[rank - 1] == 1 ? (size_t)out_dims[rank - 1] : 1;
    int last = run > 1 ? rank - 2 : rank - 1; /* innermost axis the odometer walks */
    const char *src = in;
    char *dst = out;
    for (size_t k = 0; k < n; k += run) {
        int64_t off = 0;
        for (int i = 0; i < rank; i++)
            off += (starts[i] + idx[i] * steps[i]) * in_stride[i];
        memcpy(dst + k * esz, src + (size_t)off * esz, run * esz);
        for (int i = last; i >= 0; i--) {
            if (++idx[i] < out_dims[i])
                break;
            idx[i] = 0;
        }
    }
}

void px_nn_slice_run(int rank, const int64_t *in_dims, const int64_t *starts, const int64_t *steps,
                  const int64_t *out_dims, const float *in, float *out)
{
    copy_strided(sizeof(float), rank, in_dims, starts, steps, out_dims, in, out);
}

/* ---- op builders ---- */

/* Output shares the input's data: Reshape & co. */
static int make_alias(nctx *c, int x, int rank, const int64_t *dims)
{
    size_t count;
    if (px_nn_count(rank, dims, &count) != PX_OK || count != T(c, x)->count)
        return nerr(c, PX_EINVAL, "new shape has a different element count than '%s' (%zu)",
                    T(c, x)->name, T(c, x)->count);
    if (is_const(c, x)) {
        void *d;
        int dtype = T(c, x)->dtype;
        int o = out_const(c, 0, dtype, rank, dims, &d);
        if (o < 0)
            return o;
        if (count)
            memcpy(d, T(c, x)->data, count * esize(dtype));
        return PX_OK;
    }
    int rc = need_f32(c, x);
    if (rc < 0)
        return rc;
    int s;
    int o = out_step(c, NN_OP_ALIAS, rank, dims, &s);
    if (o < 0)
        return o;
    c->m->s[s].n_in = 1;
    c->m->s[s].in[0] = x;
    return PX_OK;
}

static int op_identity(nctx *c)
{
    int rc = need_input(c, 0);
    if (rc < 0)
        return rc;
    int x = input(c, 0);
    return make_alias(c, x, T(c, x)->rank, T(c, x)->dims);
}

static int op_cast(nctx *c)
{
    int rc = need_input(c, 0);
    if (rc < 0)
        return rc;
    int x = input(c, 0);
    int64_t to = attr_int(c, "to", 0);
    int dtype = to == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT ? NN_F32
                : to == ONNX__TENSOR_PROTO__DATA_TYPE__INT64 ? NN_I64
                                                             : 0;
    if (!dtype)
        return nerr(c, PX_EUNSUPPORTED, "cast to type %lld is not supported (float, int64)",
                    (long long)to);
    nn_tensor *t = T(c, x);
    if (!is_const(c, x)) {
        if (dtype != NN_F32)
            return nerr(c, PX_EUNSUPPORTED, "cast to int64 at run time is not supported");
        return make_alias(c, x, t->rank, t->dims);
    }
    void *d;
    int o = out_const(c, 0, dtype, t->rank, t->dims, &d);
    if (o < 0)
        return o;
    t = T(c, x);
    for (size_t i = 0; i < t->count; i++) {
        if (t->dtype == dtype) {
            memcpy((char *)d + i * esize(dtype), (char *)t->data + i * esize(dtype), esize(dtype));
        } else if (dtype == NN_F32) {
            ((float *)d)[i] = (float)((const int64_t *)t->data)[i];
        } else {
            float f = ((const float *)t->data)[i];
            if (!(f > -9.2e18f && f < 9.2e18f))
                return nerr(c, PX_EINVAL, "value %g cannot be cast to int64", (double)f);
            ((int64_t *)d)[i] = (int64_t)f;
        }
    }
    return PX_OK;
}

static int op_constant(nctx *c)
{
    const Onnx__AttributeProto *a;
    if ((a = attr(c, "value")) && a->t) {
        const char *name = out_name(c, 0);
        if (!name)
            return nerr(c, PX_EINVAL, "output 0 has no name");
        int idx = px_nn_const_from_proto(c->m, name, a->t, c->err);
        if (idx < 0)
            return px_err_prefix(c->err, idx, "node '%s' (%s)", c->name, c->op);
        c->n_out_made = 1;
        return PX_OK;
    }
    void *d;
    int64_t n;
    if ((a = attr(c, "value_float")) && a->has_f) {
        int o = out_const(c, 0, NN_F32, 0, NULL, &d);
        if (o < 0)
            return o;
        *(float *)d = a->f;
    } else if ((a = attr(c, "value_int")) && a->has_i) {
        int o = out_const(c, 0, NN_I64, 0, NULL, &d);
        if (o < 0)
            return o;
        *(int64_t *)d = a->i;
    } else if ((a = attr(c, "value_floats"))) {
        n = (int64_t)a->n_floats;
        int o = out_const(c, 0, NN_F32, 1, &n, &d);
        if (o < 0)
            return o;
        if (n)
            memcpy(d, a->floats, (size_t)n * sizeof(float));
    } else if ((a = attr(c, "value_ints"))) {
        n = (int64_t)a->n_ints;
        int o = out_const(c, 0, NN_I64, 1, &n, &d);
        if (o < 0)
            return o;
        if (n)
            memcpy(d, a->ints, (size_t)n * sizeof(int64_t));
    } else {
        return nerr(c, PX_EUNSUPPORTED, "needs a 'value' tensor, float(s) or int(s) attribute");
    }
    return PX_OK;
}

static int op_shape(nctx *c)
{
    int rc = need_input(c, 0);
    if (rc < 0)
        return rc;
    nn_tensor *t = T(c, input(c, 0));
    int r = t->rank;
    int64_t start = attr_int(c, "start", 0), end = attr_int(c, "end", r);
    if (start < 0)
        start = start < -r ? 0 : start + r;
    if (end < 0)
        end = end < -r ? 0 : end + r;
    start = start > r ? r : start;
    end = end > r ? r : end;
    int64_t n = end > start ? end - start : 0;
    int64_t dims[PX_NN_MAX_DIMS];
    memcpy(dims, t->dims, sizeof dims);
    void *d;
    int o = out_const(c, 0, NN_I64, 1, &n, &d);
    if (o < 0)
        return o;
    for (int64_t i = 0; i < n; i++)
        ((int64_t *)d)[i] = dims[start + i];
    return PX_OK;
}

static int op_reshape(nctx *c)
{
    int rc;
    if ((rc = need_input(c, 0)) < 0)
        return rc;
    int x = input(c, 0);
    int64_t shape[PX_NN_MAX_DIMS];
    int n;
    if (input(c, 1) >= 0) {
        if ((rc = const_ints(c, input(c, 1), shape, PX_NN_MAX_DIMS, &n)) < 0)
            return rc;
    } else if ((n = attr_ints(c, "shape", shape, PX_NN_MAX_DIMS)) <= 0) {
        return n < 0 ? n : nerr(c, PX_EINVAL, "no target shape");
    }
    int allowzero = (int)attr_int(c, "allowzero", 0);
    int minus = -1;
    size_t known = 1;
    for (int i = 0; i < n; i++) {
        if (shape[i] == 0 && !allowzero) {
            if (i >= T(c, x)->rank)
                return nerr(c, PX_EINVAL, "shape[%d] = 0 but input has rank %d", i,
                            T(c, x)->rank);
            shape[i] = T(c, x)->dims[i];
        }
        if (shape[i] == -1) {
            if (minus >= 0)
                return nerr(c, PX_EINVAL, "more than one -1 in the target shape");
            minus = i;
            continue;
        }
        if (shape[i] < 0 || (uint64_t)shape[i] > NN_MAX_ELEMS)
            return nerr(c, PX_EINVAL, "bad target dimension %lld", (long long)shape[i]);
        known *= (size_t)shape[i];
        if (known > NN_MAX_ELEMS)
            return nerr(c, PX_EINVAL, "target shape too large");
    }
    if (minus >= 0) {
        if (known == 0 || T(c, x)->count % known)
            return nerr(c, PX_EINVAL, "cannot infer -1: %zu elements into blocks of %zu",
                        T(c, x)->count, known);
        shape[minus] = (int64_t)(T(c, x)->count / known);
    }
    return make_alias(c, x, n, shape);
}

static int op_flatten(nctx *c)
{
    int rc;
    if ((rc = need_input(c, 0)) < 0)
        return rc;
    int x = input(c, 0);
    int r = T(c, x)->rank, axis;
    int64_t a = attr_int(c, "axis", 1);
    if (a == r) {
        axis = r;
    } else if ((rc = norm_axis(c, a, r, &axis)) < 0) {
        return rc;
    }
    int64_t dims[2] = {(int64_t)prod(T(c, x)->dims, 0, axis),
                       (int64_t)prod(T(c, x)->dims, axis, r)};
    return make_alias(c, x, 2, dims);
}

/* Squeeze / Unsqueeze: axes from the attribute (opset < 13) or input 1. */
static int get_axes(nctx *c, int64_t *axes, int *n)
{
    if (c->m->opset >= 13) {
        *n = 0;
        if (input(c, 1) < 0)
            return PX_OK;
        return const_ints(c, input(c, 1), axes, PX_NN_MAX_DIMS, n);
    }
    int k = attr_ints(c, "axes", axes, PX_NN_MAX_DIMS);
    if (k < 0)
        return k;
    *n = k;
    return PX_OK;
}

static int op_unsqueeze(nctx *c)
{
    int rc, n;
    int64_t axes[PX_NN_MAX_DIMS];
    if ((rc = need_input(c, 0)) < 0 || (rc = get_axes(c, axes, &n)) < 0)
        return rc;
    int x = input(c, 0);
    int r = T(c, x)->rank, orank = r + n;
    if (n == 0)
        return nerr(c, PX_EINVAL, "no axes");
    if (orank > PX_NN_MAX_DIMS)
        return nerr(c, PX_EUNSUPPORTED, "result rank %d exceeds %d", orank, PX_NN_MAX_DIMS);
    int is_new[PX_NN_MAX_DIMS] = {0};
    for (int i = 0; i < n; i++) {
        int a;
        if ((rc = norm_axis(c, axes[i], orank, &a)) < 0)
            return rc;
        if (is_new[a])
            return nerr(c, PX_EINVAL, "axis %d repeated", a);
        is_new[a] = 1;
    }
    int64_t dims[PX_NN_MAX_DIMS];
    for (int i = 0, j = 0; i < orank; i++)
        dims[i] = is_new[i] ? 1 : T(c, x)->dims[j++];
    return make_alias(c, x, orank, dims);
}

static int op_squeeze(nctx *c)
{
    int rc, n;
    int64_t axes[PX_NN_MAX_DIMS];
    if ((rc = need_input(c, 0)) < 0 || (rc = get_axes(c, axes, &n)) < 0)
        return rc;
    int x = input(c, 0);
    int r = T(c, x)->rank;
    int drop[PX_NN_MAX_DIMS] = {0};
    for (int i = 0; i < n; i++) {
        int a;
        if ((rc = norm_axis(c, axes[i], r, &a)) < 0)
            return rc;
        if (T(c, x)->dims[a] != 1)
            return nerr(c, PX_EINVAL, "cannot squeeze axis %d of size %lld", a,
                        (long long)T(c, x)->dims[a]);
        drop[a] = 1;
    }
    int64_t dims[PX_NN_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < r; i++)
        if (!(n ? drop[i] : T(c, x)->dims[i] == 1))
            dims[k++] = T(c, x)->dims[i];
    return make_alias(c, x, k, dims);
}

static int op_concat(nctx *c)
{
    int n = c->n_in, rc;
    if (n < 1)
        return nerr(c, PX_EINVAL, "no inputs");
    for (int i = 0; i < n; i++)
        if (input(c, i) < 0)
            return nerr(c, PX_EINVAL, "input %d is missing", i);
    nn_tensor *t0 = T(c, input(c, 0));
    int r = t0->rank, axis;
    if ((rc = norm_axis(c, attr_int(c, "axis", 0), r, &axis)) < 0)
        return rc;
    int64_t dims[PX_NN_MAX_DIMS];
    memcpy(dims, t0->dims, sizeof dims);
    dims[axis] = 0;
    int all_const = 1;
    for (int i = 0; i < n; i++) {
        nn_tensor *t = T(c, input(c, i));
        if (t->rank != r)
            return nerr(c, PX_EINVAL, "input '%s' has rank %d, expected %d", t->name, t->rank, r);
        for (int d = 0; d < r; d++)
            if (d != axis && t->dims[d] != dims[d])
                return nerr(c, PX_EINVAL, "input '%s' dimension %d is %lld, expected %lld",
                            t->name, d, (long long)t->dims[d], (long long)dims[d]);
        if (t->dtype != t0->dtype)
            return nerr(c, PX_EINVAL, "inputs have different element types");
        dims[axis] += t->dims[axis];
        if ((uint64_t)dims[axis] > NN_MAX_ELEMS)
            return nerr(c, PX_ELIMIT, "result too large");
        all_const &= is_const(c, input(c, i));
    }
    size_t outer = prod(dims, 0, axis), inner = prod(dims, axis + 1, r);
    if (all_const) {
        void *d;
        int dtype = t0->dtype;
        int o = out_const(c, 0, dtype, r, dims, &d);
        if (o < 0)
            return o;
        size_t es = esize(dtype), off = 0;
        for (size_t ou = 0; ou < outer; ou++) {
            for (int i = 0; i < n; i++) {
                nn_tensor *t = T(c, input(c, i));
                size_t len = (size_t)t->dims[axis] * inner;
                if (len)
                    memcpy((char *)d + off * es, (char *)t->data + ou * len * es, len * es);
                off += len;
            }
        }
        return PX_OK;
    }
    for (int i = 0; i < n; i++)
        if ((rc = need_f32(c, input(c, i))) < 0)
            return rc;
    int s;
    int o = out_step(c, NN_OP_CONCAT, r, dims, &s);
    if (o < 0)
        return o;
    nn_step *st = &c->m->s[s];
    st->many_in = px_malloc((size_t)n * sizeof(int));
    st->u.concat.lens = px_malloc((size_t)n * sizeof(size_t));
    if (!st->many_in || !st->u.concat.lens)
        return nerr(c, PX_ENOMEM, "out of memory");
    st->n_in = n;
    st->u.concat.outer = outer;
    st->u.concat.inner = inner;
    for (int i = 0; i < n; i++) {
        st->many_in[i] = input(c, i);
        st->u.concat.lens[i] = (size_t)T(c, input(c, i))->dims[axis];
    }
    return PX_OK;
}

static int op_gather(nctx *c)
{
    int rc;
    if ((rc = need_input(c, 0)) < 0 || (rc = need_input(c, 1)) < 0)
        return rc;
    int x = input(c, 0), ix = input(c, 1);
    nn_tensor *t = T(c, x);
    int r = t->rank, axis;
    if (r < 1)
        return nerr(c, PX_EINVAL, "data must have rank >= 1");
    if ((rc = norm_axis(c, attr_int(c, "axis", 0), r, &axis)) < 0)
        return rc;
    if (!is_const(c, ix))
        return nerr(c, PX_EUNSUPPORTED, "indices must be a constant");
    nn_tensor *it = T(c, ix);
    int orank = r - 1 + it->rank;
    if (orank > PX_NN_MAX_DIMS)
        return nerr(c, PX_EUNSUPPORTED, "result rank %d exceeds %d", orank, PX_NN_MAX_DIMS);
    int64_t dims[PX_NN_MAX_DIMS];
    int k = 0;
    for (int i = 0; i < axis; i++)
        dims[k++] = t->dims[i];
    for (int i = 0; i < it->rank; i++)
        dims[k++] = it->dims[i];
    for (int i = axis + 1; i < r; i++)
        dims[k++] = t->dims[i];
    size_t n_idx = it->count;
    int64_t *idx = px_malloc((n_idx ? n_idx : 1) * sizeof *idx);
    if (!idx)
        return nerr(c, PX_ENOMEM, "out of memory");
    int64_t alen = t->dims[axis];
    for (size_t i = 0; i < n_idx; i++) {
        int64_t v;
        if (it->dtype == NN_I64) {
            v = ((const int64_t *)it->data)[i];
        } else {
            float fv = ((const float *)it->data)[i];
            v = fv > -1e18f && fv < 1e18f ? (int64_t)fv : INT64_MAX; /* NaN/huge: out of range */
        }
        if (v < -alen || v >= alen) {
            free(idx);
            return nerr(c, PX_EINVAL, "index %lld out of range for axis of size %lld",
                        (long long)v, (long long)alen);
        }
        idx[i] = v < 0 ? v + alen : v;
    }
    size_t outer = prod(t->dims, 0, axis), inner = prod(t->dims, axis + 1, r);
    if (is_const(c, x)) {
        void *d;
        int dtype = t->dtype;
        int o = out_const(c, 0, dtype, orank, dims, &d);
        if (o < 0) {
            free(idx);
            return o;
        }
        t = T(c, x);
        size_t es = esize(dtype);
        for (size_t ou = 0; ou < outer; ou++)
            for (size_t j = 0; j < n_idx; j++)
                if (inner)
                    memcpy((char *)d + ((ou * n_idx + j) * inner) * es,
                           (char *)t->data + ((ou * (size_t)alen + (size_t)idx[j]) * inner) * es,
                           inner * es);
        free(idx);
        return PX_OK;
    }
    int s;
    if ((rc = need_f32(c, x)) < 0 || (rc = out_step(c, NN_OP_GATHER, orank, dims, &s)) < 0) {
        free(idx);
        return rc;
    }
    nn_step *st = &c->m->s[s];
    st->n_in = 1;
    st->in[0] = x;
    st->u.gather.outer = outer;
    st->u.gather.axis_len = (size_t)alen;
    st->u.gather.inner = inner;
    st->u.gather.n_idx = n_idx;
    st->u.gather.idx = idx;
    return PX_OK;
}

static int op_slice(nctx *c)
{
    int rc;
    if ((rc = need_input(c, 0)) < 0)
        return rc;
    int x = input(c, 0);
    nn_tensor *t = T(c, x);
    int r = t->rank;
    int64_t starts[PX_NN_MAX_DIMS], ends[PX_NN_MAX_DIMS], axes[PX_NN_MAX_DIMS],
        steps[PX_NN_MAX_DIMS];
    int ns, ne, na = 0, nst = 0;
    if (c->m->opset < 10) {
        if ((ns = attr_ints(c, "starts", starts, PX_NN_MAX_DIMS)) < 0 ||
            (ne = attr_ints(c, "ends", ends, PX_NN_MAX_DIMS)) < 0 ||
            (na = attr_ints(c, "axes", axes, PX_NN_MAX_DIMS)) < 0)
            return ns < 0 ? ns : ne < 0 ? ne : na;
    } else {
        if ((rc = need_input(c, 1)) < 0 || (rc = need_input(c, 2)) < 0)
            return rc;
        if ((rc = const_ints(c, input(c, 1), starts, PX_NN_MAX_DIMS, &ns)) < 0 ||
            (rc = const_ints(c, input(c, 2), ends, PX_NN_MAX_DIMS, &ne)) < 0)
            return rc;
        if (input(c, 3) >= 0 && (rc = const_ints(c, input(c, 3), axes, PX_NN_MAX_DIMS, &na)) < 0)
            return rc;
        if (input(c, 4) >= 0 && (rc = const_ints(c, input(c, 4), steps, PX_NN_MAX_DIMS, &nst)) < 0)
            return rc;
    }
    if (ns != ne || (na && na != ns) || (nst && nst != ns))
        return nerr(c, PX_EINVAL, "starts/ends/axes/steps have different lengths");
    int64_t st_[PX_NN_MAX_DIMS], sp_[PX_NN_MAX_DIMS], od[PX_NN_MAX_DIMS];
    int seen[PX_NN_MAX_DIMS] = {0};
    for (int i = 0; i < r; i++) {
        st_[i] = 0;
        sp_[i] = 1;
        od[i] = t->dims[i];
    }
    for (int i = 0; i < ns; i++) {
        int a;
        if ((rc = norm_axis(c, na ? axes[i] : i, r, &a)) < 0)
            return rc;
        if (seen[a]++)
            return nerr(c, PX_EINVAL, "axis %d repeated", a);
        int64_t d = t->dims[a], s = starts[i], e = ends[i], step = nst ? steps[i] : 1;
        if (step == 0)
            return nerr(c, PX_EINVAL, "step 0");
        /* any |step| > d takes at most one element: clamp so the arithmetic cannot overflow */
        if (step > d + 1)
            step = d + 1;
        if (step < -(d + 1))
            step = -(d + 1);
        if (s < 0)
            s = s < -d ? -1 : s + d;
        if (e < 0)
            e = e < -d ? -1 : e + d;
        int64_t len;
        if (step > 0) {
            s = s < 0 ? 0 : s > d ? d : s;
            e = e < 0 ? 0 : e > d ? d : e;
            len = e > s ? (e - s + step - 1) / step : 0;
        } else {
            s = s < 0 ? 0 : s > d - 1 ? d - 1 : s;
            e = e < -1 ? -1 : e > d - 1 ? d - 1 : e;
            len = s > e ? (s - e - step - 1) / -step : 0;
        }
        st_[a] = s;
        sp_[a] = step;
        od[a] = len;
    }
    if (is_const(c, x)) {
        void *d;
        int dtype = t->dtype;
        int o = out_const(c, 0, dtype, r, od, &d);
        if (o < 0)
            return o;
        t = T(c, x);
        if (T(c, o)->count)
            copy_strided(esize(dtype), r, t->dims, st_, sp_, od, t->data, d);
        return PX_OK;
    }
    int s;
    if ((rc = need_f32(c, x)) < 0 || (rc = out_step(c, NN_OP_SLICE, r, od, &s)) < 0)
        return rc;
    nn_step *stp = &c->m->s[s];
    stp->n_in = 1;
    stp->in[0] = x;
    stp->u.slice.rank = r;
    for (int i = 0; i < r; i++) {
        stp->u.slice.in_dims[i] = T(c, x)->dims[i];
        stp->u.slice.out_dims[i] = od[i];
        stp->u.slice.starts[i] = st_[i];
        stp->u.slice.steps[i] = sp_[i];
    }
    return PX_OK;
}

static int op_transpose(nctx *c)
{
    int rc;
    if ((rc = need_input(c, 0)) < 0)
        return rc;
    int x = input(c, 0);
    nn_tensor *t = T(c, x);
    int r = t->rank;
    int64_t p64[PX_NN_MAX_DIMS];
    int n = attr_ints(c, "perm", p64, PX_NN_MAX_DIMS);
    if (n < 0)
        return n;
    int perm[PX_NN_MAX_DIMS], seen[PX_NN_MAX_DIMS] = {0};
    if (n == 0) {
        for (int i = 0; i < r; i++)
            perm[i] = r - 1 - i;
    } else {
        if (n != r)
            return nerr(c, PX_EINVAL, "perm has %d entries for rank %d", n, r);
        for (int i = 0; i < r; i++) {
            if (p64[i] < 0 || p64[i] >= r || seen[p64[i]]++)
                return nerr(c, PX_EINVAL, "perm is not a permutation of 0..%d", r - 1);
            perm[i] = (int)p64[i];
        }
    }
    int64_t od[PX_NN_MAX_DIMS];
    for (int i = 0; i < r; i++)
        od[i] = t->dims[perm[i]];
    if (is_const(c, x)) {
        /* a permutation is a strided view: walk the input with permuted strides */
        void *d;
        int dtype = t->dtype;
        int o = out_const(c, 0, dtype, r, od, &d);
        if (o < 0)
            return o;
        t = T(c, x);
        int64_t stride[PX_NN_MAX_DIMS], s = 1, flat[PX_NN_MAX_DIMS];
        for (int i = r - 1; i >= 0; i--) {
            stride[i] = s;
            s *= t->dims[i];
        }
        size_t es = esize(dtype), cnt = t->count;
        int64_t idx[PX_NN_MAX_DIMS] = {0};
        for (int i = 0; i < r; i++)
            flat[i] = stride[perm[i]];
        for (size_t k = 0; k < cnt; k++) {
            int64_t off = 0;
            for (int i = 0; i < r; i++)
                off += idx[i] * flat[i];
            memcpy((char *)d + k * es, (char *)t->data + (size_t)off * es, es);
            for (int i = r - 1; i >= 0; i--) {
                if (++idx[i] < od[i])
                    break;
                idx[i] = 0;
            }
        }
        return PX_OK;
    }
    int s;
    if ((rc = need_f32(c, x)) < 0 || (rc = out_step(c, NN_OP_TRANSPOSE, r, od, &s)) < 0)
        return rc;
    nn_step *st = &c->m->s[s];
    st->n_in = 1;
    st->in[0] = x;
    st->u.transpose.rank = r;
    for (int i = 0; i < r; i++) {
        st->u.transpose.dims[i] = T(c, x)->dims[i];
        st->u.transpose.perm[i] = perm[i];
    }
    return PX_OK;
}

/* numpy broadcasting of two shapes, right-aligned to the output rank */
static int broadcast(nctx *c, const nn_tensor *a, const nn_tensor *b, int *rank, int64_t *od,
                     int64_t *ad, int64_t *bd)
{
    int r = a->rank > b->rank ? a->rank : b->rank;
    *rank = 0;
    for (int i = 0; i < r; i++) {
        int ia = i - (r - a->rank), ib = i - (r - b->rank);
        ad[i] = ia >= 0 ? a->dims[ia] : 1;
        bd[i] = ib >= 0 ? b->dims[ib] : 1;
        if (ad[i] != bd[i] && ad[i] != 1 && bd[i] != 1)
            return nerr(c, PX_EINVAL, "shapes of '%s' and '%s' do not broadcast (axis %d: %lld vs %lld)",
                        a->name, b->name, i, (long long)ad[i], (long long)bd[i]);
        od[i] = ad[i] == 1 ? bd[i] : ad[i];
    }
    *rank = r;
    return PX_OK;
}

static int op_binary(nctx *c, px_nn_binop op)
{
    int rc;
    if ((rc = need_input(c, 0)) < 0 || (rc = need_input(c, 1)) < 0)
        return rc;
    int a = input(c, 0), b = input(c, 1), r;
    int64_t od[PX_NN_MAX_DIMS], ad[PX_NN_MAX_DIMS], bd[PX_NN_MAX_DIMS];
    if ((rc = broadcast(c, T(c, a), T(c, b), &r, od, ad, bd)) < 0)
        return rc;
    if (is_const(c, a) && is_const(c, b)) {
        if (T(c, a)->dtype != T(c, b)->dtype)
            return nerr(c, PX_EINVAL, "inputs have different element types");
        int dtype = T(c, a)->dtype;
        void *d;
        int o = out_const(c, 0, dtype, r, od, &d);
        if (o < 0)
            return o;
        int64_t as[PX_NN_MAX_DIMS], bs[PX_NN_MAX_DIMS], idx[PX_NN_MAX_DIMS] = {0}, sa = 1, sb = 1;
        for (int i = r - 1; i >= 0; i--) {
            as[i] = ad[i] == 1 ? 0 : sa;
            bs[i] = bd[i] == 1 ? 0 : sb;
            sa *= ad[i];
            sb *= bd[i];
        }
        size_t n = T(c, o)->count;
        for (size_t k = 0; k < n; k++) {
            int64_t oa = 0, ob = 0;
            for (int i = 0; i < r; i++) {
                oa += idx[i] * as[i];
                ob += idx[i] * bs[i];
            }
            if (dtype == NN_F32) {
                float x = ((const float *)T(c, a)->data)[oa], y = ((const float *)T(c, b)->data)[ob];
                ((float *)d)[k] = op == PX_NN_BIN_ADD   ? x + y
                                  : op == PX_NN_BIN_SUB ? x - y
                                  : op == PX_NN_BIN_MUL ? x * y
                                                     : x / y;
            } else {
                /* shape arithmetic: wrap instead of overflowing (UB) on hostile values */
                uint64_t x = (uint64_t)((const int64_t *)T(c, a)->data)[oa];
                uint64_t y = (uint64_t)((const int64_t *)T(c, b)->data)[ob];
                int64_t v;
                if (op == PX_NN_BIN_ADD)
                    v = (int64_t)(x + y);
                else if (op == PX_NN_BIN_SUB)
                    v = (int64_t)(x - y);
                else if (op == PX_NN_BIN_MUL)
                    v = (int64_t)(x * y);
                else if (y == 0 || ((int64_t)x == INT64_MIN && (int64_t)y == -1))
                    return nerr(c, PX_EINVAL, "integer division by zero or overflow");
                else
                    v = (int64_t)x / (int64_t)y;
                ((int64_t *)d)[k] = v;
            }
            for (int i = r - 1; i >= 0; i--) {
                if (++idx[i] < od[i])
                    break;
                idx[i] = 0;
            }
        }
        return PX_OK;
    }
    if ((rc = need_f32(c, a)) < 0 || (rc = need_f32(c, b)) < 0)
        return rc;
    int s;
    if ((rc = out_step(c, NN_OP_BINARY, r, od, &s)) < 0)
        return rc;
    nn_step *st = &c->m->s[s];
    st->n_in = 2;
    st->in[0] = a;
    st->in[1] = b;
    st->u.bin.op = op;
    st->u.bin.rank = r;
    memcpy(st->u.bin.od, od, sizeof od);
    memcpy(st->u.bin.ad, ad, sizeof ad);
    memcpy(st->u.bin.bd, bd, sizeof bd);
    return PX_OK;
}

static int op_unary(nctx *c, px_nn_unop op)
{
    int rc;
    if ((rc = need_input(c, 0)) < 0)
        return rc;
    int x = input(c, 0);
    if ((rc = need_f32(c, x)) < 0)
        return rc;
    nn_tensor *t = T(c, x);
    if (is_const(c, x)) {
        void *d;
        int o = out_const(c, 0, NN_F32, t->rank, t->dims, &d);
        if (o < 0)
            return o;
        t = T(c, x);
        for (size_t i = 0; i < t->count; i++) {
            float v = ((const float *)t->data)[i];
            ((float *)d)[i] = op == PX_NN_UN_RELU      ? (v > 0 ? v : 0)
                              : op == PX_NN_UN_SIGMOID ? 1.0f / (1.0f + expf(-v))
                                                    : expf(v);
        }
        return PX_OK;
    }
    int s;
    if ((rc = out_step(c, NN_OP_UNARY, t->rank, t->dims, &s)) < 0)
        return rc;
    c->m->s[s].n_in = 1;
    c->m->s[s].in[0] = x;
    c->m->s[s].u.unary = op;
    return PX_OK;
}

static int op_softmax(nctx *c)
{
    int rc;
    if ((rc = need_input(c, 0)) < 0)
        return rc;
    int x = input(c, 0);
    if ((rc = need_f32(c, x)) < 0)
        return rc;
    nn_tensor *t = T(c, x);
    int r = t->rank, axis;
    if ((rc = norm_axis(c, attr_int(c, "axis", c->m->opset >= 13 ? -1 : 1), r, &axis)) < 0)
        return rc;
    int s;
    if ((rc = out_step(c, NN_OP_SOFTMAX, t->rank, t->dims, &s)) < 0)
        return rc;
    t = T(c, x);
    nn_step *st = &c->m->s[s];
    st->n_in = 1;
    st->in[0] = x;
    if (c->m->opset >= 13) {
        st->u.softmax.outer = prod(t->dims, 0, axis);
        st->u.softmax.len = (size_t)t->dims[axis];
        st->u.softmax.inner = prod(t->dims, axis + 1, r);
    } else {
        /* before opset 13 the input is coerced to 2-D at axis */
        st->u.softmax.outer = prod(t->dims, 0, axis);
        st->u.softmax.len = prod(t->dims, axis, r);
        st->u.softmax.inner = 1;
    }
    return PX_OK;
}

/* auto_pad / pads / strides / dilations for a 2-D window op over (ih, iw). */
static int window_geometry(nctx *c, int ih, int iw, int kh, int kw, int *sh, int *sw, int *dh,
                           int *dw, int *pads, int ceil_mode, int *oh, int *ow)
{
    int64_t v[8];
    int n;
    *sh = *sw = *dh = *dw = 1;
    if ((n = attr_ints(c, "strides", v, 8)) < 0)
        return n;
    if (n) {
        if (n != 2 || v[0] < 1 || v[1] < 1 || v[0] > 4096 || v[1] > 4096)
            return nerr(c, PX_EUNSUPPORTED, "strides must be 2 values in 1..4096");
        *sh = (int)v[0], *sw = (int)v[1];
    }
    if ((n = attr_ints(c, "dilations", v, 8)) < 0)
        return n;
    if (n) {
        if (n != 2 || v[0] < 1 || v[1] < 1 || v[0] > 4096 || v[1] > 4096)
            return nerr(c, PX_EUNSUPPORTED, "dilations must be 2 values in 1..4096");
        *dh = (int)v[0], *dw = (int)v[1];
    }
    int ekh = *dh * (kh - 1) + 1, ekw = *dw * (kw - 1) + 1;
    char buf[32];
    const char *ap = attr_str(c, "auto_pad", "NOTSET", buf, sizeof buf);
    if (strcmp(ap, "NOTSET") == 0) {
        pads[0] = pads[1] = pads[2] = pads[3] = 0;
        if ((n = attr_ints(c, "pads", v, 8)) < 0)
            return n;
        if (n) {
            if (n != 4)
                return nerr(c, PX_EUNSUPPORTED, "pads must have 4 values for a 2-D op");
            for (int i = 0; i < 4; i++) {
                if (v[i] < 0 || v[i] > 4096)
                    return nerr(c, PX_EUNSUPPORTED, "pad %lld out of range 0..4096", (long long)v[i]);
            }
            /* ONNX order: (top, left, bottom, right) = x1_begin, x2_begin, x1_end, x2_end */
            pads[0] = (int)v[0], pads[1] = (int)v[1], pads[2] = (int)v[2], pads[3] = (int)v[3];
        }
        int64_t nh = (int64_t)ih + pads[0] + pads[2] - ekh, nw = (int64_t)iw + pads[1] + pads[3] - ekw;
        if (nh < 0 || nw < 0)
            return nerr(c, PX_EINVAL, "window %dx%d larger than padded input %dx%d", ekh, ekw,
                        ih + pads[0] + pads[2], iw + pads[1] + pads[3]);
        if (ceil_mode) {
            *oh = (int)((nh + *sh - 1) / *sh) + 1;
            *ow = (int)((nw + *sw - 1) / *sw) + 1;
            /* the last window must start inside the input or its leading padding */
            if ((int64_t)(*oh - 1) * *sh >= (int64_t)ih + pads[0])
                (*oh)--;
            if ((int64_t)(*ow - 1) * *sw >= (int64_t)iw + pads[1])
                (*ow)--;
        } else {
            *oh = (int)(nh / *sh) + 1;
            *ow = (int)(nw / *sw) + 1;
        }
    } else if (strcmp(ap, "VALID") == 0) {
        pads[0] = pads[1] = pads[2] = pads[3] = 0;
        if (ih < ekh || iw < ekw)
            return nerr(c, PX_EINVAL, "window larger than input");
        *oh = (ih - ekh) / *sh + 1;
        *ow = (iw - ekw) / *sw + 1;
    } else if (strcmp(ap, "SAME_UPPER") == 0 || strcmp(ap, "SAME_LOWER") == 0) {
        *oh = (ih + *sh - 1) / *sh;
        *ow = (iw + *sw - 1) / *sw;
        int th = (*oh - 1) * *sh + ekh - ih, tw = (*ow - 1) * *sw + ekw - iw;
        th = th < 0 ? 0 : th;
        tw = tw < 0 ? 0 : tw;
        int upper = ap[5] == 'U';
        /* SAME_UPPER puts the odd pixel at the end, SAME_LOWER at the beginning */
        pads[0] = upper ? th / 2 : th - th / 2;
        pads[2] = th - pads[0];
        pads[1] = upper ? tw / 2 : tw - tw / 2;
        pads[3] = tw - pads[1];
    } else {
        return nerr(c, PX_EUNSUPPORTED, "auto_pad '%s' is not supported", ap);
    }
    if (*oh < 1 || *ow < 1)
        return nerr(c, PX_EINVAL, "output would be empty");
    return PX_OK;
}

static int op_conv(nctx *c)
{
    int rc;
    if ((rc = need_input(c, 0)) < 0 || (rc = need_input(c, 1)) < 0)
        return rc;
    int x = input(c, 0), w = input(c, 1), b = input(c, 2);
    if ((rc = need_f32(c, x)) < 0)
        return rc;
    nn_tensor *tx = T(c, x), *tw = T(c, w);
    if (tx->rank != 4 || tx->dims[0] != 1)
        return nerr(c, PX_EUNSUPPORTED, "input '%s' must be 4-D NCHW with batch 1", tx->name);
    if (!is_const(c, w) || tw->dtype != NN_F32 || tw->rank != 4)
        return nerr(c, PX_EUNSUPPORTED, "weights '%s' must be a constant 4-D float tensor",
                    tw->name);
    if (b >= 0 && (!is_const(c, b) || T(c, b)->dtype != NN_F32 || T(c, b)->count != (size_t)tw->dims[0]))
        return nerr(c, PX_EUNSUPPORTED, "bias '%s' must be a constant float vector of %lld",
                    T(c, b)->name, (long long)tw->dims[0]);
    int64_t group = attr_int(c, "group", 1);
    int64_t oc = tw->dims[0], icg = tw->dims[1], kh = tw->dims[2], kw = tw->dims[3];
    int64_t ks[4];
    int n = attr_ints(c, "kernel_shape", ks, 4);
    if (n < 0)
        return n;
    if (n && (n != 2 || ks[0] != kh || ks[1] != kw))
        return nerr(c, PX_EINVAL, "kernel_shape does not match weights %lldx%lld", (long long)kh,
                    (long long)kw);
    if (group < 1 || oc < 1 || icg < 1 || kh < 1 || kw < 1 || oc % group ||
        icg * group != tx->dims[1] || kh > 4096 || kw > 4096 || tx->dims[2] > INT32_MAX ||
        tx->dims[3] > INT32_MAX || tx->dims[1] > INT32_MAX || oc > INT32_MAX)
        return nerr(c, PX_EINVAL,
                    "weights %lldx%lldx%lldx%lld with group %lld do not fit input channels %lld",
                    (long long)oc, (long long)icg, (long long)kh, (long long)kw, (long long)group,
                    (long long)tx->dims[1]);
    px_nn_conv_params p = {0};
    p.ic = (int)tx->dims[1];
    p.ih = (int)tx->dims[2];
    p.iw = (int)tx->dims[3];
    p.oc = (int)oc;
    p.kh = (int)kh;
    p.kw = (int)kw;
    p.group = (int)group;
    int pads[4];
    if ((rc = window_geometry(c, p.ih, p.iw, p.kh, p.kw, &p.sh, &p.sw, &p.dh, &p.dw, pads, 0,
                              &p.oh, &p.ow)) < 0)
        return rc;
    p.pt = pads[0], p.pl = pads[1], p.pb = pads[2], p.pr = pads[3];
    p.act = PX_NN_ACT_NONE;
    int64_t od[4] = {1, p.oc, p.oh, p.ow};
    int s;
    if ((rc = out_step(c, NN_OP_CONV, 4, od, &s)) < 0)
        return rc;
    nn_step *st = &c->m->s[s];
    st->n_in = 1;
    st->in[0] = x;
    st->u.conv.p = p;
    /* private copies: BN fusion rewrites them before packing */
    size_t wn = T(c, w)->count;
    st->u.conv.w = px_malloc(wn * sizeof(float));
    st->u.conv.b = px_calloc((size_t)p.oc, sizeof(float));
    if (!st->u.conv.w || !st->u.conv.b)
        return nerr(c, PX_ENOMEM, "out of memory");
    memcpy(st->u.conv.w, T(c, w)->data, wn * sizeof(float));
    if (b >= 0)
        memcpy(st->u.conv.b, T(c, b)->data, (size_t)p.oc * sizeof(float));
    return PX_OK;
}

static int op_maxpool(nctx *c)
{
    int rc;
    if ((rc = need_input(c, 0)) < 0)
        return rc;
    int x = input(c, 0);
    if ((rc = need_f32(c, x)) < 0)
        return rc;
    nn_tensor *t = T(c, x);
    if (t->rank != 4 || t->dims[0] != 1 || t->dims[1] > INT32_MAX || t->dims[2] > INT32_MAX ||
        t->dims[3] > INT32_MAX)
        return nerr(c, PX_EUNSUPPORTED, "input '%s' must be 4-D NCHW with batch 1", t->name);
    if (out_name(c, 1))
        return nerr(c, PX_EUNSUPPORTED, "the Indices output is not supported");
    if (attr_int(c, "storage_order", 0) != 0)
        return nerr(c, PX_EUNSUPPORTED, "storage_order 1 is not supported");
    int64_t ks[4];
    int n = attr_ints(c, "kernel_shape", ks, 4);
    if (n < 0)
        return n;
    if (n != 2 || ks[0] < 1 || ks[1] < 1 || ks[0] > 4096 || ks[1] > 4096)
        return nerr(c, PX_EUNSUPPORTED, "kernel_shape must be 2 values in 1..4096");
    px_nn_pool2d_params p = {0};
    p.c = (int)t->dims[1];
    p.ih = (int)t->dims[2];
    p.iw = (int)t->dims[3];
    p.kh = (int)ks[0];
    p.kw = (int)ks[1];
    int dh, dw, pads[4];
    if ((rc = window_geometry(c, p.ih, p.iw, p.kh, p.kw, &p.sh, &p.sw, &dh, &dw, pads,
                              (int)attr_int(c, "ceil_mode", 0), &p.oh, &p.ow)) < 0)
        return rc;
    if (dh != 1 || dw != 1)
        return nerr(c, PX_EUNSUPPORTED, "dilations other than 1 are not supported");
    /* ONNX requires pads < kernel: a window entirely in padding has no maximum */
    if (pads[0] >= p.kh || pads[2] >= p.kh || pads[1] >= p.kw || pads[3] >= p.kw)
        return nerr(c, PX_EINVAL, "pads (%d,%d,%d,%d) must be smaller than the kernel %dx%d",
                    pads[0], pads[1], pads[2], pads[3], p.kh, p.kw);
    p.pt = pads[0], p.pl = pads[1], p.pb = pads[2], p.pr = pads[3];
    int64_t od[4] = {1, p.c, p.oh, p.ow};
    int s;
    if ((rc = out_step(c, NN_OP_MAXPOOL, 4, od, &s)) < 0)
        return rc;
    c->m->s[s].n_in = 1;
    c->m->s[s].in[0] = x;
    c->m->s[s].u.pool = p;
    return PX_OK;
}

/* Source index of output coordinate o for nearest resize. */
static int32_t nearest_src(int o, int in, int out, double scale, const char *ctm, const char *nm)
{
    double x;
    if (strcmp(ctm, "half_pixel") == 0)
        x = (o + 0.5) / scale - 0.5;
    else if (strcmp(ctm, "pytorch_half_pixel") == 0)
        x = out > 1 ? (o + 0.5) / scale - 0.5 : 0.0;
    else if (strcmp(ctm, "align_corners") == 0)
        x = out > 1 ? (double)o * (in - 1) / (out - 1) : 0.0;
    else if (strcmp(ctm, "tf_half_pixel_for_nearest") == 0)
        x = (o + 0.5) / scale;
    else /* asymmetric */
        x = o / scale;
    double r;
    if (strcmp(nm, "floor") == 0)
        r = floor(x);
    else if (strcmp(nm, "ceil") == 0)
        r = ceil(x);
    else if (strcmp(nm, "round_prefer_ceil") == 0)
        r = floor(x + 0.5);
    else /* round_prefer_floor */
        r = x - floor(x) == 0.5 ? floor(x) : floor(x + 0.5);
    if (r < 0)
        r = 0;
    if (r > in - 1)
        r = in - 1;
    return (int32_t)r;
}

static int op_resize(nctx *c)
{
    int rc;
    if ((rc = need_input(c, 0)) < 0)
        return rc;
    int x = input(c, 0);
    if ((rc = need_f32(c, x)) < 0)
        return rc;
    char b1[40], b2[40], b3[40];
    const char *mode = attr_str(c, "mode", "nearest", b1, sizeof b1);
    if (strcmp(mode, "nearest") != 0)
        return nerr(c, PX_EUNSUPPORTED, "mode '%s' is not supported", mode);
    const char *ctm = attr_str(c, "coordinate_transformation_mode",
                               c->m->opset >= 11 ? "half_pixel" : "asymmetric", b2, sizeof b2);
    const char *nm = attr_str(c, "nearest_mode", c->m->opset >= 11 ? "round_prefer_floor" : "floor",
                              b3, sizeof b3);
    static const char *ctms[] = {"half_pixel", "pytorch_half_pixel", "align_corners",
                                 "asymmetric", "tf_half_pixel_for_nearest"};
    static const char *nms[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
    int ok = 0;
    for (size_t i = 0; i < sizeof ctms / sizeof *ctms; i++)
        ok |= strcmp(ctm, ctms[i]) == 0;
    if (!ok)
        return nerr(c, PX_EUNSUPPORTED, "coordinate_transformation_mode '%s' is not supported", ctm);
    ok = 0;
    for (size_t i = 0; i < sizeof nms / sizeof *nms; i++)
        ok |= strcmp(nm, nms[i]) == 0;
    if (!ok)
        return nerr(c, PX_EUNSUPPORTED, "nearest_mode '%s' is not supported", nm);
    if (attr_int(c, "exclude_outside", 0) != 0)
        return nerr(c, PX_EUNSUPPORTED, "exclude_outside 1 is not supported");
    nn_tensor *t = T(c, x);
    if (t->rank != 4 || t->dims[0] != 1 || t->dims[1] > INT32_MAX || t->dims[2] > INT32_MAX ||
        t->dims[3] > INT32_MAX)
        return nerr(c, PX_EUNSUPPORTED, "input '%s' must be 4-D NCHW with batch 1", t->name);
    /* opset 10: (X, scales); opset 11+: (X, roi, scales, sizes) */
    int si = c->m->opset >= 11 ? 2 : 1, zi = c->m->opset >= 11 ? 3 : -1;
    int sc = input(c, si), sz = zi >= 0 ? input(c, zi) : -1;
    double scale[4];
    int64_t od[4];
    if (sz >= 0 && T(c, sz)->count > 0) {
        int64_t v[4];
        int n;
        if ((rc = const_ints(c, sz, v, 4, &n)) < 0)
            return rc;
        if (n != 4)
            return nerr(c, PX_EINVAL, "sizes must have 4 values");
        for (int i = 0; i < 4; i++) {
            if (v[i] < 1 || v[i] > (int64_t)NN_MAX_ELEMS)
                return nerr(c, PX_EINVAL, "size %lld out of range", (long long)v[i]);
            od[i] = v[i];
            scale[i] = (double)v[i] / (double)t->dims[i];
        }
    } else if (sc >= 0 && T(c, sc)->count > 0) {
        nn_tensor *ts = T(c, sc);
        if (!is_const(c, sc) || ts->dtype != NN_F32 || ts->count != 4)
            return nerr(c, PX_EUNSUPPORTED, "scales must be a constant float tensor of 4 values");
        for (int i = 0; i < 4; i++) {
            double v = ((const float *)ts->data)[i];
            if (!(v > 0 && v <= 65536))
                return nerr(c, PX_EINVAL, "scale %g out of range", v);
            double o = floor((double)t->dims[i] * v);
            if (o < 1 || o > (double)NN_MAX_ELEMS)
                return nerr(c, PX_EINVAL, "scaled size out of range");
            od[i] = (int64_t)o;
            scale[i] = v;
        }
    } else {
        return nerr(c, PX_EINVAL, "needs scales or sizes");
    }
    if (od[0] != 1 || od[1] != t->dims[1])
        return nerr(c, PX_EUNSUPPORTED, "only spatial (H, W) resizing is supported");
    if (od[2] > INT32_MAX || od[3] > INT32_MAX)
        return nerr(c, PX_ELIMIT, "output too large");
    int s;
    if ((rc = out_step(c, NN_OP_RESIZE, 4, od, &s)) < 0)
        return rc;
    t = T(c, x);
    nn_step *st = &c->m->s[s];
    st->n_in = 1;
    st->in[0] = x;
    st->u.resize.c = (int)t->dims[1];
    st->u.resize.ih = (int)t->dims[2];
    st->u.resize.iw = (int)t->dims[3];
    st->u.resize.oh = (int)od[2];
    st->u.resize.ow = (int)od[3];
    st->u.resize.ys = px_malloc((size_t)od[2] * sizeof(int32_t));
    st->u.resize.xs = px_malloc((size_t)od[3] * sizeof(int32_t));
    if (!st->u.resize.ys || !st->u.resize.xs)
        return nerr(c, PX_ENOMEM, "out of memory");
    for (int i = 0; i < (int)od[2]; i++)
        st->u.resize.ys[i] = nearest_src(i, (int)t->dims[2], (int)od[2], scale[2], ctm, nm);
    for (int i = 0; i < (int)od[3]; i++)
        st->u.resize.xs[i] = nearest_src(i, (int)t->dims[3], (int)od[3], scale[3], ctm, nm);
    return PX_OK;
}

static int op_batchnorm(nctx *c)
{
    int rc;
    for (int i = 0; i < 5; i++)
        if ((rc = need_input(c, i)) < 0)
            return rc;
    int x = input(c, 0);
    if ((rc = need_f32(c, x)) < 0)
        return rc;
    nn_tensor *t = T(c, x);
    if (t->rank < 2 || t->dims[0] != 1 || t->dims[1] > INT32_MAX)
        return nerr(c, PX_EUNSUPPORTED, "input '%s' must be (1, C, ...)", t->name);
    for (int k = 1; k < 5; k++)
        if (out_name(c, k))
            return nerr(c, PX_EUNSUPPORTED, "training-mode outputs are not supported");
    size_t ch = (size_t)t->dims[1];
    for (int i = 1; i < 5; i++) {
        nn_tensor *p = T(c, input(c, i));
        if (!is_const(c, input(c, i)) || p->dtype != NN_F32 || p->count != ch)
            return nerr(c, PX_EUNSUPPORTED, "parameter '%s' must be a constant float vector of %zu",
                        p->name, ch);
    }
    int s;
    if ((rc = out_step(c, NN_OP_BATCHNORM, t->rank, t->dims, &s)) < 0)
        return rc;
    t = T(c, x);
    nn_step *st = &c->m->s[s];
    st->n_in = 1;
    st->in[0] = x;
    st->u.bn.c = (int)ch;
    st->u.bn.hw = t->count / ch;
    st->u.bn.eps = attr_float(c, "epsilon", 1e-5f);
    float **dst[4] = {&st->u.bn.scale, &st->u.bn.bias, &st->u.bn.mean, &st->u.bn.var};
    for (int i = 0; i < 4; i++) {
        *dst[i] = px_malloc(ch * sizeof(float));
        if (!*dst[i])
            return nerr(c, PX_ENOMEM, "out of memory");
        memcpy(*dst[i], T(c, input(c, i + 1))->data, ch * sizeof(float));
    }
    return PX_OK;
}

typedef struct op_entry {
    const char *name;
    int (*fn)(nctx *);
} op_entry;

static int op_relu(nctx *c) { return op_unary(c, PX_NN_UN_RELU); }
static int op_sigmoid(nctx *c) { return op_unary(c, PX_NN_UN_SIGMOID); }
static int op_exp(nctx *c) { return op_unary(c, PX_NN_UN_EXP); }
static int op_add(nctx *c) { return op_binary(c, PX_NN_BIN_ADD); }
static int op_sub(nctx *c) { return op_binary(c, PX_NN_BIN_SUB); }
static int op_mul(nctx *c) { return op_binary(c, PX_NN_BIN_MUL); }
static int op_div(nctx *c) { return op_binary(c, PX_NN_BIN_DIV); }

static const op_entry OPS[] = {
    {"Conv", op_conv},
    {"Relu", op_relu},
    {"MaxPool", op_maxpool},
    {"Resize", op_resize},
    {"Add", op_add},
    {"Sub", op_sub},
    {"Mul", op_mul},
    {"Div", op_div},
    {"Sigmoid", op_sigmoid},
    {"Exp", op_exp},
    {"Softmax", op_softmax},
    {"Concat", op_concat},
    {"Reshape", op_reshape},
    {"Transpose", op_transpose},
    {"BatchNormalization", op_batchnorm},
    {"Shape", op_shape},
    {"Gather", op_gather},
    {"Unsqueeze", op_unsqueeze},
    {"Squeeze", op_squeeze},
    {"Slice", op_slice},
    {"Constant", op_constant},
    {"Flatten", op_flatten},
    {"Identity", op_identity},
    {"Cast", op_cast},
};

int px_nn_build_node(px_nn_model *m, const Onnx__NodeProto *node, px_err *err)
{
    nctx c = {0};
    c.m = m;
    c.node = node;
    c.err = err;
    c.name = node->name ? node->name : "";
    const char *op_type = node->op_type ? node->op_type : "";
    const op_entry *e = NULL;
    for (size_t i = 0; i < sizeof OPS / sizeof *OPS; i++)
        if (strcmp(OPS[i].name, op_type) == 0)
            e = &OPS[i];
    if (!e) {
        /* keep the message readable whatever the file put in op_type */
        char op[64];
        snprintf(op, sizeof op, "%s", op_type);
        c.op = op;
        return nerr(&c, PX_EUNSUPPORTED, "operator '%s' is not supported", op);
    }
    c.op = e->name;
    if (node->domain && node->domain[0] && strcmp(node->domain, "ai.onnx") != 0)
        return nerr(&c, PX_EUNSUPPORTED, "domain '%.64s' is not supported", node->domain);
    if (node->n_input > sizeof c.in / sizeof *c.in)
        return nerr(&c, PX_EUNSUPPORTED, "%zu inputs (at most %zu)", node->n_input,
                    sizeof c.in / sizeof *c.in);
    c.n_in = (int)node->n_input;
    for (int i = 0; i < c.n_in; i++) {
        const char *in = node->input[i];
        if (!in || !in[0]) {
            c.in[i] = -1; /* omitted optional input */
            continue;
        }
        c.in[i] = px_nn_find(m, in);
        if (c.in[i] < 0)
            return nerr(&c, PX_EINVAL, "input '%.100s' is not produced by any earlier node", in);
    }
    if (node->n_output < 1 || !out_name(&c, 0))
        return nerr(&c, PX_EINVAL, "has no output");
    int ns_before = m->ns;
    int rc = e->fn(&c);
    if (rc < 0)
        return rc;
    /* a runtime step whose inputs all turned out constant (Conv, MaxPool, Resize, Softmax,
     * BatchNormalization, Concat of floats...) is evaluated now with the kernels */
    if (m->ns > ns_before) {
        nn_step *st = &m->s[m->ns - 1];
        int all_const = 1;
        for (int k = 0; k < st->n_in; k++) {
            int t = st->many_in ? st->many_in[k] : st->in[k];
            if (t >= 0 && m->t[t].kind != NN_CONST)
                all_const = 0;
        }
        if (all_const && st->kind != NN_OP_ALIAS && (rc = px_nn_fold_step(m, m->ns - 1, err)) < 0)
            return rc;
    }
    for (size_t k = (size_t)c.n_out_made; k < node->n_output; k++)
        if (out_name(&c, (int)k))
            return nerr(&c, PX_EUNSUPPORTED, "output %zu ('%.100s') is not supported", k,
                        node->output[k]);
    return PX_OK;
}
