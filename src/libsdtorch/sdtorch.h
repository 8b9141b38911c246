// libsdtorch: the C surface of SdAppliance's libtorch engine.
//
// Conventions, so the C# binding can stay mechanical:
// - Handles are opaque pointers owned by the caller and freed with the matching *_free.
// - No C++ exception crosses this surface: every entry point runs inside one guard. A failing
//   call records its message in a thread-local slot (sdt_last_error) and returns NULL, -1 or 0
//   as documented (functions without a result: read sdt_last_error); the binding turns that
//   into a .NET exception carrying libtorch's message. Every call clears the previous error,
//   except the three error functions themselves.
// - Every buffer the shim writes into comes with its capacity, and a buffer too small is refused.
// - A NULL tensor handle means "undefined tensor" (e.g. a grad that was never computed),
//   which is not an error unless sdt_last_error says so.
#pragma once
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SDT_API __attribute__((visibility("default")))

typedef void* sdt_tensor;     // at::Tensor*
typedef void* sdt_generator;  // at::Generator*
typedef void* sdt_op;         // a resolved operator (never freed; operators live forever)
typedef void* sdt_guard;      // an RAII guard (inference mode, autocast)
typedef void (*sdt_release_fn)(void* context);

// ---- errors ----
SDT_API const char* sdt_last_error(void);  // NULL when the last failing call on this thread was cleared
SDT_API void sdt_clear_error(void);

// ---- engine ----
SDT_API const char* sdt_torch_version(void);   // e.g. "1.13.0"
SDT_API const char* sdt_torch_library_path(void);  // the libtorch_cpu shared object actually loaded
SDT_API int sdt_get_num_threads(void);
SDT_API int sdt_set_num_threads(int n);
SDT_API int sdt_has_native_sdpa(void);  // 1 when libtorch provides scaled_dot_product_attention
SDT_API int sdt_cuda_is_available(void);
SDT_API int sdt_cuda_device_count(void);
SDT_API int sdt_cuda_compiled(void);  // 1 when this shim was built with CUDA memory/device support
// Fills name (NUL-terminated, at most name_len bytes) and memory figures in bytes. -1 on error.
SDT_API int sdt_cuda_device_info(int index, char* name, int name_len, int64_t* total_bytes, int64_t* free_bytes);
// allocated, reserved, peak allocated, peak reserved (bytes) of libtorch's caching allocator.
SDT_API int sdt_cuda_memory_stats(int index, int64_t* out4);
SDT_API int sdt_cuda_reset_peak_memory_stats(int index);
SDT_API int sdt_cuda_empty_cache(void);
SDT_API int sdt_cuda_synchronize(int index);

// ---- tensors: lifetime and metadata ----
SDT_API void sdt_tensor_free(sdt_tensor t);
SDT_API sdt_tensor sdt_tensor_alias(sdt_tensor t);  // a second handle on the same tensor
SDT_API int sdt_tensor_dim(sdt_tensor t);
// Write dim() values into out, which holds `capacity`; return dim(), or -1 when it does not fit.
SDT_API int sdt_tensor_sizes(sdt_tensor t, int64_t* out, int capacity);
SDT_API int sdt_tensor_strides(sdt_tensor t, int64_t* out, int capacity);
SDT_API int64_t sdt_tensor_numel(sdt_tensor t);
SDT_API int sdt_tensor_dtype(sdt_tensor t);         // c10::ScalarType value
SDT_API int sdt_tensor_device(sdt_tensor t, int* index);  // c10::DeviceType value
SDT_API int64_t sdt_tensor_element_size(sdt_tensor t);
SDT_API int sdt_tensor_is_contiguous(sdt_tensor t);
SDT_API void* sdt_tensor_data_ptr(sdt_tensor t);
SDT_API int sdt_tensor_same(sdt_tensor a, sdt_tensor b);  // same TensorImpl

// ---- tensors: data in and out ----
// Copies `bytes` from data into a new CPU tensor of the given shape and dtype.
SDT_API sdt_tensor sdt_tensor_from_data(const void* data, int64_t bytes, const int64_t* shape, int ndim, int dtype);
// Wraps external memory without copying. `release(context)` runs when the storage dies.
SDT_API sdt_tensor sdt_tensor_from_external(void* data, const int64_t* shape, int ndim, int dtype,
                                            sdt_release_fn release, void* context);
// Copies the tensor's elements (made contiguous on CPU) into dst, which holds `bytes` bytes.
SDT_API int sdt_tensor_copy_out(sdt_tensor t, void* dst, int64_t bytes);
SDT_API double sdt_tensor_item_double(sdt_tensor t);
SDT_API int64_t sdt_tensor_item_int64(sdt_tensor t);
SDT_API const char* sdt_tensor_to_string(sdt_tensor t);  // thread-local buffer, valid until next call

// ---- autograd ----
SDT_API int sdt_tensor_requires_grad(sdt_tensor t);
SDT_API int sdt_tensor_set_requires_grad(sdt_tensor t, int value);
SDT_API int sdt_tensor_is_leaf(sdt_tensor t);
SDT_API sdt_tensor sdt_tensor_grad(sdt_tensor t);               // NULL when undefined
SDT_API int sdt_tensor_set_grad(sdt_tensor t, sdt_tensor grad);  // grad NULL resets to undefined
SDT_API int sdt_tensor_has_grad_fn(sdt_tensor t);
SDT_API int sdt_backward(const sdt_tensor* tensors, const sdt_tensor* grads, int n, int retain_graph, int create_graph);
SDT_API int sdt_grad_enabled(void);
SDT_API int sdt_set_grad_enabled(int enabled);
SDT_API sdt_guard sdt_inference_mode_enter(int enabled);
SDT_API int sdt_inference_mode_exit(sdt_guard g);
SDT_API int sdt_is_inference_mode(void);
// Autocast for a device type (CUDA=1, CPU=0) to dtype; returns a guard restoring the previous state.
SDT_API sdt_guard sdt_autocast_enter(int device_type, int dtype, int enabled);
SDT_API int sdt_autocast_exit(sdt_guard g);
SDT_API int sdt_autocast_enabled(int device_type);

// Gradient checkpointing. forward(context, inputs, n_in, outputs, max_out) runs the wrapped
// computation and returns how many outputs it wrote (handles owned by the shim), or -1 on
// failure (the callback records the message with sdt_set_error). release(context) runs once,
// when the graph no longer needs forward (at once if nothing requires grad).
typedef int (*sdt_forward_fn)(void* context, const sdt_tensor* inputs, int n_in, sdt_tensor* outputs, int max_out);
SDT_API int sdt_checkpoint(sdt_forward_fn forward, sdt_release_fn release, void* context, const sdt_tensor* inputs,
                           int n_in, sdt_tensor* outputs, int max_out);
SDT_API void sdt_set_error(const char* message);

// ---- generators ----
SDT_API sdt_generator sdt_generator_new(int device_type, int device_index, uint64_t seed);
SDT_API sdt_generator sdt_generator_default(int device_type, int device_index);  // a shared reference: free it too
SDT_API void sdt_generator_free(sdt_generator g);
SDT_API int sdt_generator_manual_seed(sdt_generator g, uint64_t seed);
SDT_API uint64_t sdt_generator_initial_seed(sdt_generator g);
SDT_API sdt_tensor sdt_generator_get_state(sdt_generator g);
SDT_API int sdt_generator_set_state(sdt_generator g, sdt_tensor state);
SDT_API int sdt_manual_seed(uint64_t seed);  // every default generator, like torch.manual_seed

// ---- operators through libtorch's dispatcher ----
// Every aten operator is reachable by schema name and overload ("aten::add", "Tensor"), with
// autograd, autocast and device dispatch exactly as PyTorch does it.
SDT_API sdt_op sdt_op_find(const char* name, const char* overload);  // NULL + error when unknown
// The operator's schema as libtorch prints it ("aten::add.Tensor(Tensor self, Tensor other, *,
// Scalar alpha=1) -> Tensor"), written NUL-terminated into buffer (at most capacity bytes, cut
// short when it does not fit); returns the schema's full length, -1 on error.
SDT_API int sdt_op_schema(sdt_op op, char* buffer, int capacity);

// One argument of an operator call, in schema order. A call carries all of them in one array, so
// it crosses from .NET to C++ once. Pointers (tensor handles, strings, list elements) are read
// during the call only.
enum {
  SDT_ARG_NONE = 0,
  SDT_ARG_DEFAULT = 1,      // the schema's default value for this position
  SDT_ARG_TENSOR = 2,       // value.p: sdt_tensor (NULL: None)
  SDT_ARG_INT = 3,          // value.i (widened where the schema says float)
  SDT_ARG_DOUBLE = 4,       // value.d
  SDT_ARG_BOOL = 5,         // value.i != 0
  SDT_ARG_STRING = 6,       // value.p: NUL-terminated UTF-8
  SDT_ARG_INT_LIST = 7,     // value.p: count int64_t values
  SDT_ARG_DOUBLE_LIST = 8,  // value.p: count doubles
  SDT_ARG_BOOL_LIST = 9,    // value.p: count int64_t values, non-zero = true
  SDT_ARG_TENSOR_LIST = 10, // value.p: count sdt_tensor handles
  SDT_ARG_DEVICE = 11,      // value.i: c10::DeviceType, count: device index
  SDT_ARG_GENERATOR = 12,   // value.p: sdt_generator (NULL: None)
  SDT_ARG_SCALAR_TYPE = 13, // value.i: c10::ScalarType (a dtype)
};
typedef struct {
  int32_t kind;
  int32_t count;
  union {
    int64_t i;
    double d;
    const void* p;
  } value;
} sdt_arg;

// Runs the operator. Each argument is checked against its parameter's declared type (a tensor
// where the schema says int is refused, naming the parameter and the schema); arguments left off
// at the end take the schema's defaults. Returns the number of tensors produced (tensor lists
// and tuples flattened in order), -1 on error. The first max_outputs are written to outputs
// (new handles); the rest wait for sdt_op_take_outputs; outputs NULL discards them (in-place
// operators). A scalar result (int, float, bool) goes to *scalar when scalar is not NULL.
SDT_API int sdt_op_call(sdt_op op, const sdt_arg* args, int n_args, sdt_tensor* outputs, int max_outputs, double* scalar);
// The outputs of this thread's last sdt_op_call that did not fit its buffer; returns how many,
// -1 when more wait than capacity.
SDT_API int sdt_op_take_outputs(sdt_tensor* out, int capacity);
// Checks the arguments against the schema exactly as sdt_op_call does, without calling: 0 or -1.
SDT_API int sdt_op_check(sdt_op op, const sdt_arg* args, int n_args);

// ---- attention (version-dependent) ----
// softmax(q k^T * scale + mask) v, over [..., L, E] inputs; mask may be NULL (bool: true = keep;
// float: added). scale <= 0 means 1/sqrt(E). Uses libtorch's fused kernel when it has one.
SDT_API sdt_tensor sdt_scaled_dot_product_attention(sdt_tensor q, sdt_tensor k, sdt_tensor v, sdt_tensor mask,
                                                    double dropout_p, int is_causal, double scale);

// ---- native timings for tools/bench-engine ----
// The same operations as the binding's benchmarks, timed here through libtorch's C++ API, so the
// benchmark can say what the binding costs. Runs `iterations` times and returns the seconds taken,
// -1 on error. Inputs by kind:
//   SDT_BENCH_ADD             a, b: a + b (at::add, the typed C++ call)
//   SDT_BENCH_ADD_BOXED       a, b: aten::add.Tensor through the dispatcher's boxed call, as the shim makes it
//   SDT_BENCH_CONV2D          x, w: conv2d, stride 1, padding 1
//   SDT_BENCH_CONV2D_BACKWARD x, w: conv2d as above, sum, backward, gradients dropped
//   SDT_BENCH_LINEAR          x, w: linear without bias
//   SDT_BENCH_ATTENTION       q, k, v: scaled dot-product attention (libtorch's own where it has it)
//   SDT_BENCH_ADD_SHIM        a, b: a + b through sdt_op_call, called from C++ (the shim without .NET)
enum {
  SDT_BENCH_ADD = 0,
  SDT_BENCH_ADD_BOXED = 1,
  SDT_BENCH_CONV2D = 2,
  SDT_BENCH_CONV2D_BACKWARD = 3,
  SDT_BENCH_LINEAR = 4,
  SDT_BENCH_ATTENTION = 5,
  SDT_BENCH_ADD_SHIM = 6,
};
SDT_API double sdt_bench_native(int kind, const sdt_tensor* inputs, int n_inputs, int iterations);

// ---- 8-bit optimizers (optim8bit.cpp) ----
// One step of AdamW8bit or Lion8bit over a contiguous float32 CPU parameter and gradient whose moments are uint8
// codes of the parameter's size with a float32 absmax per block of 2048 (state2/absmax2/code2/bounds2/start2 only
// for AdamW8bit, else NULL). code is the 256 values of a dynamic code, bounds the 255 boundaries between neighbours,
// start (uint8, 65536) the number of boundaries <= the lowest float of each value of a float's top 16 bits; code1
// is the signed one. AdamW8bit: p += step_size * m / (sqrt(v) + eps * correction2), then p *= 1 - lr * wd;
// Lion8bit: p *= 1 - lr * wd, p -= lr * sign(beta1 m + (1 - beta1) g), m = beta2 m + (1 - beta2) g. 0 or -1.
enum {
  SDT_OPTIM_ADAMW8BIT = 0,
  SDT_OPTIM_LION8BIT = 1,
};
SDT_API int sdt_optim_8bit_step_cpu(int algorithm, sdt_tensor param, sdt_tensor grad, sdt_tensor state1, sdt_tensor absmax1,
                                    sdt_tensor state2, sdt_tensor absmax2, sdt_tensor code1, sdt_tensor bounds1, sdt_tensor start1,
                                    sdt_tensor code2, sdt_tensor bounds2, sdt_tensor start2, double beta1, double beta2, double eps, double lr,
                                    double weight_decay, double step_size, double correction2);

// ---- data parallel (distributed.cpp): libtorch's c10d ----
// A TCPStore is the rendezvous: the server (rank 0's process) listens on host:port (port 0: any free one, read
// it back with sdt_store_port), the others connect, every wait bounded by timeout_ms. A prefix store puts every
// key of `inner` under "prefix/", so that several groups share one store. Values are bytes; get waits for the key.
typedef void* sdt_store;          // c10::intrusive_ptr<c10d::Store>*
typedef void* sdt_process_group;  // c10::intrusive_ptr<c10d::ProcessGroup>*
typedef void* sdt_grad_buckets;   // gradient buckets all-reduced during backward
SDT_API sdt_store sdt_tcp_store_new(const char* host, int port, int world_size, int is_server, int64_t timeout_ms);
SDT_API sdt_store sdt_prefix_store_new(const char* prefix, sdt_store inner);
SDT_API void sdt_store_free(sdt_store s);
SDT_API int sdt_store_port(sdt_store s);  // a TCPStore's port, -1 on error
SDT_API int sdt_store_set(sdt_store s, const char* key, const void* data, int64_t length);
// Waits for the key and returns its value's length, copying the value into buffer when it fits in capacity bytes
// (call again with a larger buffer when it does not); -1 on error (a timeout, a lost store).
SDT_API int64_t sdt_store_get(sdt_store s, const char* key, void* buffer, int64_t capacity);
SDT_API int64_t sdt_store_add(sdt_store s, const char* key, int64_t delta);  // the counter after adding; INT64_MIN on error
SDT_API int sdt_store_check(sdt_store s, const char* key);  // 1 when the key exists, 0 when not, -1 on error
SDT_API int sdt_store_set_timeout(sdt_store s, int64_t timeout_ms);
// A process group of world_size ranks rendezvousing through the store; every collective fails after timeout_ms,
// or as soon as a peer's connection drops. hostname: the address Gloo binds and announces (NULL: this machine's).
enum {
  SDT_BACKEND_GLOO = 0,
  SDT_BACKEND_NCCL = 1,
};
enum {
  SDT_REDUCE_SUM = 0,
  SDT_REDUCE_AVG = 1,
  SDT_REDUCE_MAX = 2,
  SDT_REDUCE_MIN = 3,
};
SDT_API int sdt_nccl_available(void);  // 1 when this shim was built with ProcessGroupNCCL
SDT_API sdt_process_group sdt_process_group_new(sdt_store store, int backend, int rank, int world_size, int64_t timeout_ms,
                                                const char* hostname);
SDT_API void sdt_process_group_free(sdt_process_group g);
// In place, every rank the same list (same shapes and dtypes, in the same order). 0 or -1.
SDT_API int sdt_all_reduce(sdt_process_group g, const sdt_tensor* tensors, int n, int op);
// root's values into every rank's tensors, flattened into buckets of bucket_bytes. 0 or -1.
SDT_API int sdt_broadcast(sdt_process_group g, const sdt_tensor* tensors, int n, int root, int64_t bucket_bytes);
// Every rank's input into outputs[rank] (n_outputs = world size, each the input's shape and dtype). 0 or -1.
SDT_API int sdt_all_gather(sdt_process_group g, sdt_tensor input, sdt_tensor* outputs, int n_outputs);
SDT_API int sdt_barrier(sdt_process_group g);
// Gradient buckets, as DistributedDataParallel's: the parameters' gradients in buckets (first_bucket_bytes, then
// bucket_bytes, filled in reverse parameter order, one dtype and device each). During a backward after prepare, each
// bucket starts its all-reduce (op: SUM or AVG) as soon as its gradients are final; finish (after backward) waits and
// writes the reduced gradients to .grad. A parameter without a gradient on any rank keeps none. A backward without
// prepare accumulates locally (gradient accumulation); finish reduces what .grad holds then.
SDT_API sdt_grad_buckets sdt_grad_buckets_new(sdt_process_group g, const sdt_tensor* params, int n, int64_t bucket_bytes,
                                              int64_t first_bucket_bytes, int op);
SDT_API int sdt_grad_buckets_count(sdt_grad_buckets b);
SDT_API int sdt_grad_buckets_prepare(sdt_grad_buckets b);
SDT_API int sdt_grad_buckets_finish(sdt_grad_buckets b);
SDT_API void sdt_grad_buckets_free(sdt_grad_buckets b);

// ---- Adam(W) on CPU (optim_adam.cpp) ----
// One Adam(W) step of n CPU parameters that share a step count: for each, torch.optim's single-tensor update
// (g = grad, negated if maximize; decoupled ? p *= 1 - lr * wd : g += wd * p; m.lerp_(g, 1 - beta1);
// v = v * beta2 + (1 - beta2) * g * g; with amsgrad vmax = max(vmax, v), used for v below;
// p += -step_size * m / (sqrt(v) / bias_correction2_sqrt + eps)), with the same operators, so the same bits;
// the tensors are shared out across the intra-op threads. max_exp_avg_sqs is NULL without amsgrad. 0 or -1.
SDT_API int sdt_optim_adam_step_cpu(const sdt_tensor* params, const sdt_tensor* grads, const sdt_tensor* exp_avgs,
                                    const sdt_tensor* exp_avg_sqs, const sdt_tensor* max_exp_avg_sqs, int n, double lr,
                                    double beta1, double beta2, double eps, double weight_decay, int decoupled, int maximize,
                                    double step_size, double bias_correction2_sqrt);

#ifdef __cplusplus
}
#endif
