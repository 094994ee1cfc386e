/*
 * Internal representation of a loaded model, shared by the loader
 * (onnx_load.c), the node builders and constant folder (graph.c), the
 * optimiser and memory planner (plan.c) and the executor (exec.c).
 *
 * A model is a table of tensors plus a list of steps in topological (ONNX
 * file) order. Every tensor has a fixed shape known at load time and one of
 * three kinds: a constant (owned data: initializers and everything folded
 * from them), a graph input, or an activation produced by a step. Activations
 * do not own memory: each one names a `root` tensor whose byte range in the
 * session arena it shares (itself when it has its own storage; the input's
 * root for alias steps such as Reshape, and for in-place unary steps).
 *
 * Not installed, not public: px_nn.h is the contract.
 */
#ifndef PX_NN_GRAPH_H
#define PX_NN_GRAPH_H

#include "kernels.h"
#include "px_nn.h"

#include <stdint.h>

/* Element types we keep: float32 everywhere at run time; int64 only in
 * constants (shape arithmetic folded at load). Values match ONNX TensorProto. */
enum { NN_F32 = 1, NN_I64 = 7 };
enum { NN_CONST = 0, NN_INPUT = 1, NN_ACT = 2 };

/* Limits against hostile files: elements of one tensor, bytes of all folded
 * constants together, bytes of the activation arena, nodes in a graph. */
#define NN_MAX_ELEMS ((size_t)1 << 28)
#define NN_MAX_FOLD_BYTES ((size_t)256 << 20)
#define NN_MAX_ARENA ((size_t)4 << 30)
#define NN_MAX_NODES 100000

typedef struct nn_tensor {
    char *name; /* owned */
    int dtype;  /* NN_F32 / NN_I64 */
    int kind;   /* NN_CONST / NN_INPUT / NN_ACT */
    int rank;
    int64_t dims[PX_NN_MAX_DIMS];
    size_t count;   /* product of dims (1 for a scalar) */
    void *data;     /* NN_CONST only: count values of dtype, owned (NULL if count == 0) */
    int root;       /* NN_INPUT/NN_ACT: tensor whose arena range this one uses */
    int pinned;     /* graph input or output: storage must live through the whole run */
    int producer;   /* step index that writes it, -1 for constants and inputs */
    int last_use;   /* planner: last step reading it (INT32_MAX when pinned) */
    size_t offset;  /* planner, roots only: byte offset in the arena */
} nn_tensor;

typedef enum {
    NN_OP_ALIAS = 0, /* Reshape/Flatten/Squeeze/Unsqueeze/Identity/Cast: no work */
    NN_OP_CONV,
    NN_OP_UNARY,
    NN_OP_MAXPOOL,
    NN_OP_RESIZE,
    NN_OP_BINARY,
    NN_OP_SOFTMAX,
    NN_OP_CONCAT,
    NN_OP_TRANSPOSE,
    NN_OP_BATCHNORM,
    NN_OP_SLICE,  /* strided copy */
    NN_OP_GATHER, /* index copy along one axis */
} nn_opkind;

typedef struct nn_step {
    nn_opkind kind;
    int dead;         /* removed by fusion */
    char *name;       /* ONNX node name (owned, may be "") */
    const char *op;   /* ONNX op type of the original node (static string) */
    int n_in;
    int in[8];        /* tensor indices; unused slots -1 */
    int out;          /* tensor index */
    int *many_in;     /* NN_OP_CONCAT: n_in inputs (owned), in[] unused */
    union {
        struct {
            px_nn_conv_params p;
            float *w, *b;           /* owned until packed (fusion edits them), then freed */
            px_nn_conv_packed *packed; /* owned */
        } conv;
        px_nn_unop unary;
        px_nn_pool2d_params pool;
        struct {
            int c, ih, iw, oh, ow;
            int32_t *ys, *xs; /* owned index tables */
        } resize;
        struct {
            px_nn_binop op;
            int rank;
            int64_t od[PX_NN_MAX_DIMS], ad[PX_NN_MAX_DIMS], bd[PX_NN_MAX_DIMS];
        } bin;
        struct {
            size_t outer, len, inner;
        } softmax;
        struct {
            size_t outer, inner;
            size_t *lens; /* owned, n_in entries */
        } concat;
        struct {
            int rank;
            int64_t dims[PX_NN_MAX_DIMS];
            int perm[PX_NN_MAX_DIMS];
        } transpose;
        struct {
            int c;
            size_t hw;
            float eps;
            float *scale, *bias, *mean, *var; /* owned copies */
        } bn;
        struct {
            int rank;
            int64_t in_dims[PX_NN_MAX_DIMS], out_dims[PX_NN_MAX_DIMS];
            int64_t starts[PX_NN_MAX_DIMS], steps[PX_NN_MAX_DIMS];
        } slice;
        struct {
            size_t outer, axis_len, inner, n_idx;
            int64_t *idx; /* owned, n_idx entries already in [0, axis_len) */
        } gather;
    } u;
} nn_step;

struct px_nn_model {
    nn_tensor *t;
    int nt, cap_t;
    int in_h, in_w; /* > 0: graph input 0's last two dims while building (px_nn_model_from_source) */
    nn_step *s;
    int ns, cap_s;
    int opset;
    int *inputs, n_inputs;   /* tensor indices of graph inputs (not initializers) */
    int *outputs, n_outputs; /* tensor indices of graph outputs */
    /* name -> tensor index, open addressing (-1 empty) */
    int *hash;
    size_t hash_cap;
    size_t fold_bytes;  /* bytes of constants made by folding so far */
    size_t arena_bytes; /* planner result */
    int n_run_steps;    /* steps that do work per run */
};

/* ---- model building (onnx_load.c) ---- */
/* Index of the tensor named `name`, or -1. */
int px_nn_find(const px_nn_model *m, const char *name);
/* Appends a tensor (name copied, shape checked against NN_MAX_ELEMS, name must
 * be new). Returns its index >= 0 or a negative status with err set. */
int px_nn_add_tensor(px_nn_model *m, const char *name, int dtype, int kind, int rank,
                  const int64_t *dims, px_err *err);
/* Appends a zeroed step; returns its index or PX_ENOMEM. */
int px_nn_add_step(px_nn_model *m, nn_opkind kind, const char *name, const char *op, px_err *err);
/* Element count of dims with overflow/limit check: PX_OK or PX_ELIMIT. */
int px_nn_count(int rank, const int64_t *dims, size_t *count);

/* ---- graph.c ---- */
struct Onnx__NodeProto;
struct Onnx__TensorProto;
/* Adds one ONNX node: shape inference, then either folds it to constants or
 * appends a runtime step. Errors name the node and op. */
int px_nn_build_node(px_nn_model *m, const struct Onnx__NodeProto *node, px_err *err);
/* Turns a TensorProto into a new constant tensor named `name`. */
int px_nn_const_from_proto(px_nn_model *m, const char *name, const struct Onnx__TensorProto *tp,
                        px_err *err);
void px_nn_step_free(nn_step *s);
/* Runtime Slice: strided copy of a float tensor (rank <= PX_NN_MAX_DIMS). */
void px_nn_slice_run(int rank, const int64_t *in_dims, const int64_t *starts, const int64_t *steps,
                  const int64_t *out_dims, const float *in, float *out);

/* ---- exec.c ---- */
/* Evaluates step si now (all its inputs are constants) and turns its output
 * into a constant; the step is removed. */
int px_nn_fold_step(px_nn_model *m, int si, px_err *err);

/* ---- plan.c ---- */
/* Fuses BN/Relu into convs, packs conv weights, assigns roots and arena
 * offsets. Called once after all nodes are built. */
int px_nn_plan(px_nn_model *m, px_err *err);

#endif
