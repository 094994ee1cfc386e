/*
 * px_nn: pixpipe's own ONNX inference engine (float32, batch 1, CPU).
 *
 * A model is loaded once (px_nn_model_load): the ONNX protobuf is parsed with
 * protobuf-c, shapes are inferred for the model's fixed input shape, shape-only
 * subgraphs (Shape/Gather/Unsqueeze/Concat/Slice/Constant...) are folded to
 * constants, BatchNormalization and Relu are fused into the preceding Conv,
 * conv weights are pre-packed and an activation memory plan (buffer reuse by
 * liveness) is computed. Nothing of this changes after load: a model is
 * read-only and may be shared by any number of threads.
 *
 * A session (px_nn_session_create) owns one copy of the planned activation
 * memory and a thread pool; px_nn_session_run allocates nothing. One session
 * runs one inference at a time; use one session per concurrent caller.
 * Outputs are identical for any thread count.
 *
 * Unsupported operators or attributes are reported at load time as an error
 * naming the node and operator; malformed files are PX_ECORRUPT/PX_EINVAL,
 * never a crash.
 */
#ifndef PX_NN_H
#define PX_NN_H

#include "core/px_core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PX_NN_MAX_DIMS 6

typedef struct px_nn_model px_nn_model;
typedef struct px_nn_session px_nn_session;

/* Shape and name of one graph input or output. dims[0..rank). Name points into
 * the model and lives as long as it. */
typedef struct px_nn_tensor_info {
    const char *name;
    int rank;
    int64_t dims[PX_NN_MAX_DIMS];
    size_t count; /* product of dims */
} px_nn_tensor_info;

/* Loads an ONNX file. Returns PX_OK and *out, or an error with err filled
 * (file, node, operator named). Caller frees with px_nn_model_destroy. */
int px_nn_model_load(const char *path, px_nn_model **out, px_err *err);
/* Same from memory (the buffer is not kept). Used by the fuzzer. */
int px_nn_model_load_buffer(const void *data, size_t len, px_nn_model **out, px_err *err);

/* A parsed ONNX file kept to build the model more than once, at several
 * input sizes (a fully convolutional detector fitted to each pass): the
 * protobuf is parsed once, not once per size. Read-only once open, so
 * several threads may build from one source at once. */
typedef struct px_nn_source px_nn_source;
int px_nn_source_open(const void *data, size_t len, px_nn_source **out, px_err *err);
void px_nn_source_close(px_nn_source *s); /* NULL is a no-op */
/* The model with graph input 0's height and width set to h x w (a 4-d
 * N, C, H, W input; PX_EUNSUPPORTED otherwise), or as declared when both
 * are 0. Errors as px_nn_model_load's (a size the graph cannot take fails
 * in the node that cannot take it). */
int px_nn_model_from_source(const px_nn_source *s, int h, int w, px_nn_model **out,
                            px_err *err);
void px_nn_model_destroy(px_nn_model *m); /* NULL is a no-op */

int px_nn_model_num_inputs(const px_nn_model *m);
int px_nn_model_num_outputs(const px_nn_model *m);
/* i out of range -> PX_EINVAL. */
int px_nn_model_input_info(const px_nn_model *m, int i, px_nn_tensor_info *info);
int px_nn_model_output_info(const px_nn_model *m, int i, px_nn_tensor_info *info);
/* Index of the output with this name, or -1. */
int px_nn_model_find_output(const px_nn_model *m, const char *name);
/* Number of graph nodes after folding/fusion that run per inference (for
 * diagnostics and tests). */
int px_nn_model_num_steps(const px_nn_model *m);

/* Creates a session with `threads` compute threads (<=0: all cores).
 * The model must outlive the session. */
int px_nn_session_create(const px_nn_model *m, int threads, px_nn_session **out, px_err *err);
void px_nn_session_destroy(px_nn_session *s); /* NULL is a no-op */
/* Bytes of activation memory a session of m uses (0 for NULL). */
size_t px_nn_model_arena_bytes(const px_nn_model *m);
/* A session that runs on the caller's pool and arena instead of its own:
 * several sessions (models of one graph at different input sizes) that
 * never run at the same time can share one arena and one pool. arena must
 * be 64-byte aligned, at least px_nn_model_arena_bytes(m) long, and outlive
 * the session, as must the pool; destroying the session frees neither. The
 * arena is not cleared: fill the inputs before every run. PX_EINVAL when the
 * arena is too small. */
int px_nn_session_create_in(const px_nn_model *m, px_pool *pool, void *arena, size_t arena_len,
                            px_nn_session **out, px_err *err);
/* Writable buffer of input i (float32, row-major, shape from input_info).
 * Fill it before each run. NULL if i is out of range. */
float *px_nn_session_input(px_nn_session *s, int i);
/* Runs the graph. Allocation-free. PX_OK or an error in err. */
int px_nn_session_run(px_nn_session *s, px_err *err);
/* Output i of the last run (valid until the next run or destroy); NULL if i
 * is out of range. */
const float *px_nn_session_output(const px_nn_session *s, int i);

/* Which conv kernels the engine picked at run time ("avx2+fma" or "generic"),
 * and a switch for tests/benchmarks to force the portable fallback. */
const char *px_nn_isa(void);
void px_nn_force_generic(int on);

#ifdef __cplusplus
}
#endif
#endif
