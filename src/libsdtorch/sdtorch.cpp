// libsdtorch: see sdtorch.h for the conventions of this surface.
#include "internal.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/cuda.h>
#include <torch/version.h>

#include <dlfcn.h>
#include <cmath>
#include <cstdio>
#include <limits>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#ifdef SDT_WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <cuda_runtime_api.h>
#endif

#define SDT_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace sdt {

namespace {
thread_local std::string t_error;
thread_local bool t_has_error = false;
}  // namespace

void set_error(std::string message) {
  t_error = std::move(message);
  t_has_error = true;
}

void clear_error() { t_has_error = false; }

const char* last_error() { return t_has_error ? t_error.c_str() : nullptr; }

}  // namespace sdt

namespace {

using sdt::guarded;
using sdt::set_error;
using sdt::T;

thread_local std::string t_text;

sdt_tensor wrap(at::Tensor t) {
  if (!t.defined()) return nullptr;
  return new at::Tensor(std::move(t));
}

at::Generator& G(sdt_generator g) {
  if (g == nullptr) throw std::invalid_argument("a NULL generator handle was passed where a generator is required");
  return *static_cast<at::Generator*>(g);
}

// Copies dims into a caller's buffer of `capacity` values, refusing one too small.
int copy_dims(c10::IntArrayRef dims, int64_t* out, int capacity) {
  if (static_cast<int64_t>(dims.size()) > capacity) {
    std::ostringstream os;
    os << "the tensor has " << dims.size() << " dimensions, the buffer holds " << capacity;
    throw std::invalid_argument(os.str());
  }
  std::copy(dims.begin(), dims.end(), out);
  return static_cast<int>(dims.size());
}

std::vector<int64_t> shape_of(const int64_t* shape, int ndim) { return std::vector<int64_t>(shape, shape + ndim); }

const char* kind_name(int kind) {
  switch (kind) {
    case SDT_ARG_NONE: return "None";
    case SDT_ARG_DEFAULT: return "the default";
    case SDT_ARG_TENSOR: return "a tensor";
    case SDT_ARG_INT: return "an int";
    case SDT_ARG_DOUBLE: return "a float";
    case SDT_ARG_BOOL: return "a bool";
    case SDT_ARG_STRING: return "a string";
    case SDT_ARG_INT_LIST: return "an int list";
    case SDT_ARG_DOUBLE_LIST: return "a float list";
    case SDT_ARG_BOOL_LIST: return "a bool list";
    case SDT_ARG_TENSOR_LIST: return "a tensor list";
    case SDT_ARG_DEVICE: return "a device";
    case SDT_ARG_GENERATOR: return "a generator";
    case SDT_ARG_SCALAR_TYPE: return "a dtype";
    default: return "an unknown kind";
  }
}

// Whether an argument of this kind may fill a parameter of the declared (real, not JIT-fake)
// type. Ints widen to floats; Scalar takes ints, floats and bools; a dtype fills only ScalarType.
// Raw pointers, not TypePtr copies: this runs for every argument of every call, and each copy of
// a shared type pointer is two atomic operations.
bool accepts(int kind, const c10::Type* type) {
  using K = c10::TypeKind;
  bool optional = false;
  if (auto* opt = type->castRaw<c10::OptionalType>()) {
    optional = true;
    type = opt->getElementType().get();
  }
  const auto k = type->kind();
  auto element = [&] { auto* list = type->castRaw<c10::ListType>(); return list ? list->getElementType()->kind() : K::AnyType; };
  switch (kind) {
    case SDT_ARG_NONE: return optional || k == K::NoneType;
    case SDT_ARG_TENSOR: return k == K::TensorType;
    case SDT_ARG_INT: return k == K::IntType || k == K::SymIntType || k == K::FloatType || k == K::NumberType;
    case SDT_ARG_DOUBLE: return k == K::FloatType || k == K::NumberType;
    case SDT_ARG_BOOL: return k == K::BoolType || k == K::NumberType;
    case SDT_ARG_STRING: return k == K::StringType;
    case SDT_ARG_INT_LIST: return element() == K::IntType || element() == K::SymIntType || element() == K::FloatType;
    case SDT_ARG_DOUBLE_LIST: return element() == K::FloatType;
    case SDT_ARG_BOOL_LIST: return element() == K::BoolType;
    case SDT_ARG_TENSOR_LIST: return element() == K::TensorType;
    case SDT_ARG_DEVICE: return k == K::DeviceObjType;
    case SDT_ARG_GENERATOR: return k == K::GeneratorType;
    case SDT_ARG_SCALAR_TYPE: return k == K::ScalarTypeType;
    default: return false;
  }
}

bool declares_float(const c10::Type* type) {
  if (auto* opt = type->castRaw<c10::OptionalType>()) type = opt->getElementType().get();
  if (auto* list = type->castRaw<c10::ListType>()) type = list->getElementType().get();
  return type->kind() == c10::TypeKind::FloatType;
}

c10::IValue to_ivalue(const sdt_arg& a, const c10::Argument& formal) {
  switch (a.kind) {
    case SDT_ARG_TENSOR: return a.value.p ? c10::IValue(T(const_cast<void*>(a.value.p))) : c10::IValue();
    case SDT_ARG_INT:
      return declares_float(formal.real_type().get()) ? c10::IValue(static_cast<double>(a.value.i)) : c10::IValue(a.value.i);
    case SDT_ARG_SCALAR_TYPE: return c10::IValue(a.value.i);
    case SDT_ARG_DOUBLE: return c10::IValue(a.value.d);
    case SDT_ARG_BOOL: return c10::IValue(a.value.i != 0);
    case SDT_ARG_STRING: return c10::IValue(std::string(static_cast<const char*>(a.value.p)));
    case SDT_ARG_INT_LIST: {
      const auto* v = static_cast<const int64_t*>(a.value.p);
      if (declares_float(formal.real_type().get())) return c10::IValue(std::vector<double>(v, v + a.count));
      return c10::IValue(std::vector<int64_t>(v, v + a.count));
    }
    case SDT_ARG_DOUBLE_LIST: {
      const auto* v = static_cast<const double*>(a.value.p);
      return c10::IValue(std::vector<double>(v, v + a.count));
    }
    case SDT_ARG_BOOL_LIST: {
      const auto* v = static_cast<const int64_t*>(a.value.p);
      c10::List<bool> list;
      for (int i = 0; i < a.count; ++i) list.push_back(v[i] != 0);
      return c10::IValue(list);
    }
    case SDT_ARG_TENSOR_LIST: {
      const auto* v = static_cast<const sdt_tensor*>(a.value.p);
      std::vector<at::Tensor> list;
      list.reserve(static_cast<size_t>(a.count));
      for (int i = 0; i < a.count; ++i) list.push_back(T(v[i]));
      return c10::IValue(list);
    }
    case SDT_ARG_DEVICE:
      return c10::IValue(at::Device(static_cast<at::DeviceType>(a.value.i), static_cast<c10::DeviceIndex>(a.count)));
    case SDT_ARG_GENERATOR: return a.value.p ? c10::IValue(G(const_cast<void*>(a.value.p))) : c10::IValue();
    default: return c10::IValue();
  }
}

// Builds the call's stack from the packed arguments, in schema order: each checked against its
// parameter's declared type (so a wrapper pushing arguments out of order, or one too few, fails
// naming the parameter instead of computing something else), defaults where asked for or where the
// caller stopped early.
void build_stack(const c10::FunctionSchema& schema, const sdt_arg* args, int n, std::vector<c10::IValue>& stack) {
  const auto& formals = schema.arguments();
  auto fail = [&](size_t i, const std::string& problem) {
    std::ostringstream os;
    os << schema << ": argument " << i + 1 << " '" << formals[i].name() << "' (" << formals[i].real_type()->str() << ") " << problem;
    throw std::invalid_argument(os.str());
  };
  if (n < 0 || static_cast<size_t>(n) > formals.size()) {
    std::ostringstream os;
    os << schema << " takes " << formals.size() << " arguments, " << n << " were given";
    throw std::invalid_argument(os.str());
  }
  stack.reserve(formals.size());
  for (size_t i = 0; i < formals.size(); ++i) {
    const auto& formal = formals[i];
    int kind = i < static_cast<size_t>(n) ? args[i].kind : SDT_ARG_DEFAULT;
    if (kind == SDT_ARG_TENSOR && args[i].value.p == nullptr) kind = SDT_ARG_NONE;
    if (kind == SDT_ARG_GENERATOR && args[i].value.p == nullptr) kind = SDT_ARG_NONE;
    if (kind == SDT_ARG_DEFAULT) {
      if (!formal.default_value()) fail(i, "has no default and was not given");
      stack.push_back(*formal.default_value());
      continue;
    }
    if (!accepts(kind, formal.real_type().get())) fail(i, std::string("cannot take ") + kind_name(kind));
    stack.push_back(to_ivalue(args[i], formal));
  }
}

void collect_outputs(const c10::IValue& v, c10::SmallVectorImpl<at::Tensor>& outputs, double& scalar) {
  if (v.isTensor()) {
    outputs.push_back(v.toTensor());
  } else if (v.isTensorList()) {
    for (const at::Tensor& t : v.toTensorVector()) outputs.push_back(t);
  } else if (v.isTuple()) {
    for (const auto& e : v.toTupleRef().elements()) collect_outputs(e, outputs, scalar);
  } else if (v.isDouble()) {
    scalar = v.toDouble();
  } else if (v.isInt()) {
    scalar = static_cast<double>(v.toInt());
  } else if (v.isBool()) {
    scalar = v.toBool() ? 1.0 : 0.0;
  }
}

// Outputs of the last call on this thread that did not fit the caller's buffer.
thread_local std::vector<at::Tensor> t_pending_outputs;

c10::OperatorHandle& OP(sdt_op op) {
  if (op == nullptr) throw std::invalid_argument("a NULL operator handle was passed");
  return *static_cast<c10::OperatorHandle*>(op);
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

variable_list run_forward(sdt_forward_fn forward, void* context, const variable_list& inputs) {
  std::vector<sdt_tensor> in;
  for (const auto& t : inputs) in.push_back(const_cast<at::Tensor*>(&t));
  std::vector<sdt_tensor> out(64, nullptr);
  const int n = forward(context, in.data(), static_cast<int>(in.size()), out.data(), static_cast<int>(out.size()));
  if (n < 0) throw std::runtime_error(sdt::last_error() ? sdt::last_error() : "checkpointed forward failed");
  variable_list result;
  for (int i = 0; i < n; ++i) {
    auto* h = static_cast<at::Tensor*>(out[i]);
    result.push_back(*h);
    delete h;
  }
  return result;
}

std::vector<at::Generator> generators_for(const variable_list& inputs) {
  std::vector<at::Generator> gens{at::detail::getDefaultCPUGenerator()};
  for (const auto& t : inputs)
    if (t.defined() && t.is_cuda()) {
      gens.push_back(at::globalContext().defaultGenerator(t.device()));
      break;
    }
  return gens;
}

// Gradient checkpointing the way torch.utils.checkpoint's reentrant variant does it: run the
// computation without keeping activations, and run it again inside backward, with the random
// generators put back where they were so dropout masks match.
// The caller's context must live as long as the graph node may call back into it: a tiny
// tensor whose deleter releases the context rides along in the node's saved data.
struct ContextKeeper {
  at::Tensor releaser;
};

struct CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
  // Inputs arrive as a TensorList: autograd counts each element as a differentiable input
  // (a std::vector would be taken as one opaque argument).
  static variable_list forward(AutogradContext* ctx, sdt_forward_fn fn, void* context, ContextKeeper keeper,
                               at::TensorList input_list) {
    variable_list inputs = input_list.vec();
    ctx->saved_data["keeper"] = keeper.releaser;
    ctx->saved_data["fn"] = reinterpret_cast<int64_t>(fn);
    ctx->saved_data["context"] = reinterpret_cast<int64_t>(context);
    std::vector<at::Tensor> states;
    for (auto& g : generators_for(inputs)) {
      std::lock_guard<std::mutex> lock(g.mutex());
      states.push_back(g.get_state());
    }
    ctx->saved_data["rng"] = states;
    ctx->save_for_backward(inputs);
    return run_forward(fn, context, inputs);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    auto fn = reinterpret_cast<sdt_forward_fn>(ctx->saved_data["fn"].toInt());
    auto* context = reinterpret_cast<void*>(ctx->saved_data["context"].toInt());
    auto saved = ctx->get_saved_variables();
    variable_list inputs;
    for (const auto& s : saved) {
      auto d = s.detach();
      d.requires_grad_(s.requires_grad());
      inputs.push_back(d);
    }
    auto gens = generators_for(inputs);
    auto saved_states = ctx->saved_data["rng"].toTensorVector();
    std::vector<at::Tensor> current;
    for (size_t i = 0; i < gens.size(); ++i) {
      std::lock_guard<std::mutex> lock(gens[i].mutex());
      current.push_back(gens[i].get_state());
      gens[i].set_state(saved_states[i]);
    }
    variable_list outputs;
    {
      at::AutoGradMode enable(true);
      outputs = run_forward(fn, context, inputs);
    }
    for (size_t i = 0; i < gens.size(); ++i) {
      std::lock_guard<std::mutex> lock(gens[i].mutex());
      gens[i].set_state(current[i]);
    }
    variable_list outs, grads;
    for (size_t i = 0; i < outputs.size() && i < grad_outputs.size(); ++i)
      if (outputs[i].requires_grad() && grad_outputs[i].defined()) {
        outs.push_back(outputs[i]);
        grads.push_back(grad_outputs[i]);
      }
    if (!outs.empty()) torch::autograd::backward(outs, grads);
    variable_list result{at::Tensor(), at::Tensor(), at::Tensor()};
    for (const auto& d : inputs) result.push_back(d.requires_grad() ? d.grad() : at::Tensor());
    return result;
  }
};

struct AutocastState {
  int device_type;
  bool enabled;
  at::ScalarType dtype;
};

bool autocast_is_enabled(at::DeviceType device) {
#if SDT_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(device);
#else
  return device == at::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

at::ScalarType autocast_dtype(at::DeviceType device) {
#if SDT_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(device);
#else
  return device == at::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
#endif
}

void autocast_set(at::DeviceType device, bool enabled, at::ScalarType dtype) {
#if SDT_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(device, enabled);
  at::autocast::set_autocast_dtype(device, dtype);
#else
  if (device == at::kCUDA) {
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  } else {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  }
#endif
}

}  // namespace

at::Tensor sdt::attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask, double dropout_p,
                          bool is_causal, double scale) {
#if SDT_TORCH_AT_LEAST(2, 1)
  c10::optional<at::Tensor> mask_opt = mask.defined() ? c10::optional<at::Tensor>(mask) : c10::nullopt;
  return at::scaled_dot_product_attention(q, k, v, mask_opt, dropout_p, is_causal, scale);
#else
  auto scores = at::matmul(q, k.transpose(-2, -1)) * scale;
  const auto L = q.size(-2), S = k.size(-2);
  if (is_causal) {
    auto keep = at::ones({L, S}, q.options().dtype(at::kBool)).tril();
    scores = scores.masked_fill(keep.logical_not(), -std::numeric_limits<double>::infinity());
  }
  if (mask.defined()) {
    if (mask.scalar_type() == at::kBool)
      scores = scores.masked_fill(mask.logical_not(), -std::numeric_limits<double>::infinity());
    else
      scores = scores + mask;
  }
  auto probs = at::softmax(scores, -1);
  if (dropout_p > 0) probs = at::dropout(probs, dropout_p, true);
  return at::matmul(probs, v);
#endif
}

extern "C" {

// ---- errors ----
const char* sdt_last_error(void) { return sdt::last_error(); }
void sdt_clear_error(void) { sdt::clear_error(); }
void sdt_set_error(const char* message) { set_error(message ? message : "unknown error"); }

// ---- engine ----
const char* sdt_torch_version(void) {
  return guarded<const char*>(nullptr, [] { return TORCH_VERSION; });
}

const char* sdt_torch_library_path(void) {
  return guarded<const char*>(nullptr, [] {
    static std::string path = [] {
      Dl_info info{};
      if (dladdr(reinterpret_cast<void*>(&at::globalContext), &info) && info.dli_fname) return std::string(info.dli_fname);
      return std::string("unknown");
    }();
    return path.c_str();
  });
}

int sdt_get_num_threads(void) {
  return guarded(-1, [] { return at::get_num_threads(); });
}
int sdt_set_num_threads(int n) {
  return guarded(-1, [&] {
    at::set_num_threads(n);
    return 0;
  });
}

int sdt_has_native_sdpa(void) {
  return guarded(-1, [] { return SDT_TORCH_AT_LEAST(2, 1) ? 1 : 0; });
}

int sdt_cuda_is_available(void) {
  return guarded(0, [] { return torch::cuda::is_available() ? 1 : 0; });
}
int sdt_cuda_device_count(void) {
  return guarded(0, [] { return static_cast<int>(torch::cuda::device_count()); });
}

int sdt_cuda_compiled(void) {
  return guarded(-1, [] {
#ifdef SDT_WITH_CUDA
    return 1;
#else
    return 0;
#endif
  });
}

int sdt_cuda_device_info(int index, char* name, int name_len, int64_t* total_bytes, int64_t* free_bytes) {
  return guarded(-1, [&] {
#ifdef SDT_WITH_CUDA
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, index) != cudaSuccess) throw std::runtime_error("cudaGetDeviceProperties failed");
    std::snprintf(name, name_len, "%s", prop.name);
    int previous = 0;
    cudaGetDevice(&previous);
    cudaSetDevice(index);
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    cudaSetDevice(previous);
    *total_bytes = static_cast<int64_t>(total_b);
    *free_bytes = static_cast<int64_t>(free_b);
    return 0;
#else
    (void)index; (void)name; (void)name_len; (void)total_bytes; (void)free_bytes;
    throw std::runtime_error("libsdtorch was built without CUDA support");
    return -1;
#endif
  });
}

int sdt_cuda_memory_stats(int index, int64_t* out4) {
  return guarded(-1, [&] {
#ifdef SDT_WITH_CUDA
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
    out4[0] = stats.allocated_bytes[0].current;
    out4[1] = stats.reserved_bytes[0].current;
    out4[2] = stats.allocated_bytes[0].peak;
    out4[3] = stats.reserved_bytes[0].peak;
    return 0;
#else
    (void)index; (void)out4;
    throw std::runtime_error("libsdtorch was built without CUDA support");
    return -1;
#endif
  });
}

int sdt_cuda_reset_peak_memory_stats(int index) {
  return guarded(-1, [&] {
#ifdef SDT_WITH_CUDA
    c10::cuda::CUDACachingAllocator::resetPeakStats(index);
#else
    (void)index;
#endif
    return 0;
  });
}

int sdt_cuda_empty_cache(void) {
  return guarded(-1, [] {
#ifdef SDT_WITH_CUDA
    c10::cuda::CUDACachingAllocator::emptyCache();
#endif
    return 0;
  });
}

int sdt_cuda_synchronize(int index) {
  return guarded(-1, [&] {
#ifdef SDT_WITH_CUDA
    int previous = 0;
    cudaGetDevice(&previous);
    cudaSetDevice(index);
    cudaDeviceSynchronize();
    cudaSetDevice(previous);
#else
    (void)index;
#endif
    return 0;
  });
}

// ---- tensors ----
void sdt_tensor_free(sdt_tensor t) {
  guarded(0, [&] {
    delete static_cast<at::Tensor*>(t);
    return 0;
  });
}
sdt_tensor sdt_tensor_alias(sdt_tensor t) {
  return guarded<sdt_tensor>(nullptr, [&] { return wrap(T(t)); });
}
int sdt_tensor_dim(sdt_tensor t) {
  return guarded(-1, [&] { return static_cast<int>(T(t).dim()); });
}
int sdt_tensor_sizes(sdt_tensor t, int64_t* out, int capacity) {
  return guarded(-1, [&] { return copy_dims(T(t).sizes(), out, capacity); });
}
int sdt_tensor_strides(sdt_tensor t, int64_t* out, int capacity) {
  return guarded(-1, [&] { return copy_dims(T(t).strides(), out, capacity); });
}
int64_t sdt_tensor_numel(sdt_tensor t) {
  return guarded<int64_t>(-1, [&] { return T(t).numel(); });
}
int sdt_tensor_dtype(sdt_tensor t) {
  return guarded(-1, [&] { return static_cast<int>(T(t).scalar_type()); });
}
int sdt_tensor_device(sdt_tensor t, int* index) {
  return guarded(-1, [&] {
    auto d = T(t).device();
    *index = d.has_index() ? d.index() : (d.is_cuda() ? 0 : -1);
    return static_cast<int>(d.type());
  });
}
int64_t sdt_tensor_element_size(sdt_tensor t) {
  return guarded<int64_t>(-1, [&] { return static_cast<int64_t>(T(t).element_size()); });
}
int sdt_tensor_is_contiguous(sdt_tensor t) {
  return guarded(-1, [&] { return T(t).is_contiguous() ? 1 : 0; });
}
void* sdt_tensor_data_ptr(sdt_tensor t) {
  return guarded<void*>(nullptr, [&] { return T(t).data_ptr(); });
}
int sdt_tensor_same(sdt_tensor a, sdt_tensor b) {
  return guarded(-1, [&] { return T(a).is_same(T(b)) ? 1 : 0; });
}

sdt_tensor sdt_tensor_from_data(const void* data, int64_t bytes, const int64_t* shape, int ndim, int dtype) {
  return guarded<sdt_tensor>(nullptr, [&] {
    auto t = at::empty(shape_of(shape, ndim), at::TensorOptions().dtype(static_cast<at::ScalarType>(dtype)));
    const auto expected = static_cast<int64_t>(t.numel() * t.element_size());
    if (expected != bytes) {
      std::ostringstream os;
      os << "tensor of shape " << t.sizes() << " and dtype " << t.scalar_type() << " needs " << expected
         << " bytes, " << bytes << " were given";
      throw std::invalid_argument(os.str());
    }
    if (bytes > 0) std::memcpy(t.data_ptr(), data, static_cast<size_t>(bytes));
    return wrap(t);
  });
}

sdt_tensor sdt_tensor_from_external(void* data, const int64_t* shape, int ndim, int dtype, sdt_release_fn release,
                                    void* context) {
  return guarded<sdt_tensor>(nullptr, [&] {
    auto options = at::TensorOptions().dtype(static_cast<at::ScalarType>(dtype));
    auto t = at::from_blob(
        data, shape_of(shape, ndim), [release, context](void*) { if (release) release(context); }, options);
    return wrap(t);
  });
}

int sdt_tensor_copy_out(sdt_tensor t, void* dst, int64_t bytes) {
  return guarded(-1, [&] {
    auto c = T(t).detach().to(at::kCPU).contiguous();
    const auto have = static_cast<int64_t>(c.numel() * c.element_size());
    if (have != bytes) {
      std::ostringstream os;
      os << "tensor holds " << have << " bytes, the destination " << bytes;
      throw std::invalid_argument(os.str());
    }
    if (bytes > 0) std::memcpy(dst, c.data_ptr(), static_cast<size_t>(bytes));
    return 0;
  });
}

double sdt_tensor_item_double(sdt_tensor t) {
  return guarded(0.0, [&] { return T(t).item<double>(); });
}
int64_t sdt_tensor_item_int64(sdt_tensor t) {
  return guarded<int64_t>(0, [&] { return T(t).item<int64_t>(); });
}
const char* sdt_tensor_to_string(sdt_tensor t) {
  return guarded<const char*>(nullptr, [&] {
    std::ostringstream os;
    os << T(t);
    t_text = os.str();
    return t_text.c_str();
  });
}

// ---- autograd ----
int sdt_tensor_requires_grad(sdt_tensor t) {
  return guarded(-1, [&] { return T(t).requires_grad() ? 1 : 0; });
}
int sdt_tensor_set_requires_grad(sdt_tensor t, int value) {
  return guarded(-1, [&] {
    T(t).requires_grad_(value != 0);
    return 0;
  });
}
int sdt_tensor_is_leaf(sdt_tensor t) {
  return guarded(-1, [&] { return T(t).is_leaf() ? 1 : 0; });
}
sdt_tensor sdt_tensor_grad(sdt_tensor t) {
  return guarded<sdt_tensor>(nullptr, [&] { return wrap(T(t).grad()); });
}
int sdt_tensor_set_grad(sdt_tensor t, sdt_tensor grad) {
  return guarded(-1, [&] {
    T(t).mutable_grad() = grad ? T(grad) : at::Tensor();
    return 0;
  });
}
int sdt_tensor_has_grad_fn(sdt_tensor t) {
  return guarded(-1, [&] { return T(t).grad_fn() ? 1 : 0; });
}

int sdt_backward(const sdt_tensor* tensors, const sdt_tensor* grads, int n, int retain_graph, int create_graph) {
  return guarded(-1, [&] {
    std::vector<at::Tensor> outs, gs;
    for (int i = 0; i < n; ++i) {
      outs.push_back(T(tensors[i]));
      gs.push_back(grads && grads[i] ? T(grads[i]) : at::Tensor());
    }
    torch::autograd::backward(outs, gs, c10::optional<bool>(retain_graph != 0), create_graph != 0);
    return 0;
  });
}

int sdt_grad_enabled(void) {
  return guarded(-1, [] { return at::GradMode::is_enabled() ? 1 : 0; });
}
int sdt_set_grad_enabled(int enabled) {
  return guarded(-1, [&] {
    at::GradMode::set_enabled(enabled != 0);
    return 0;
  });
}

sdt_guard sdt_inference_mode_enter(int enabled) {
  return guarded<sdt_guard>(nullptr, [&] { return new c10::InferenceMode(enabled != 0); });
}
int sdt_inference_mode_exit(sdt_guard g) {
  return guarded(-1, [&] {
    delete static_cast<c10::InferenceMode*>(g);
    return 0;
  });
}
int sdt_is_inference_mode(void) {
  return guarded(-1, [] { return c10::InferenceMode::is_enabled() ? 1 : 0; });
}

sdt_guard sdt_autocast_enter(int device_type, int dtype, int enabled) {
  return guarded<sdt_guard>(nullptr, [&] {
    auto device = static_cast<at::DeviceType>(device_type);
    if (device != at::kCUDA && device != at::kCPU) throw std::invalid_argument("autocast supports cpu and cuda");
    auto* previous = new AutocastState{device_type, autocast_is_enabled(device), autocast_dtype(device)};
    autocast_set(device, enabled != 0, static_cast<at::ScalarType>(dtype));
    at::autocast::increment_nesting();
    return previous;
  });
}

int sdt_autocast_exit(sdt_guard g) {
  return guarded(-1, [&] {
    std::unique_ptr<AutocastState> previous(static_cast<AutocastState*>(g));
    if (!previous) return 0;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    autocast_set(static_cast<at::DeviceType>(previous->device_type), previous->enabled, previous->dtype);
    return 0;
  });
}

int sdt_autocast_enabled(int device_type) {
  return guarded(-1, [&] { return autocast_is_enabled(static_cast<at::DeviceType>(device_type)) ? 1 : 0; });
}

int sdt_checkpoint(sdt_forward_fn forward, sdt_release_fn release, void* context, const sdt_tensor* inputs, int n_in,
                   sdt_tensor* outputs, int max_out) {
  return guarded(-1, [&] {
    static char anchor = 0;
    ContextKeeper keeper;
    try {
      keeper.releaser = at::from_blob(
          &anchor, {1}, [release, context](void*) { if (release) release(context); }, at::TensorOptions().dtype(at::kByte));
    } catch (...) {
      if (release) release(context);  // the promise of sdtorch.h: release runs once, whatever happens
      throw;
    }
    variable_list in;
    for (int i = 0; i < n_in; ++i) in.push_back(T(inputs[i]));
    auto out = CheckpointFunction::apply(forward, context, keeper, at::TensorList(in));
    if (static_cast<int>(out.size()) > max_out) throw std::invalid_argument("checkpointed function returned too many outputs");
    for (size_t i = 0; i < out.size(); ++i) outputs[i] = wrap(out[i]);
    return static_cast<int>(out.size());
  });
}

// ---- generators ----
sdt_generator sdt_generator_new(int device_type, int device_index, uint64_t seed) {
  return guarded<sdt_generator>(nullptr, [&]() -> sdt_generator {
    auto device = static_cast<at::DeviceType>(device_type);
    if (device == at::kCPU) return new at::Generator(at::make_generator<at::CPUGeneratorImpl>(seed));
#ifdef SDT_WITH_CUDA
    if (device == at::kCUDA) {
      auto g = at::make_generator<at::CUDAGeneratorImpl>(static_cast<c10::DeviceIndex>(device_index));
      g.set_current_seed(seed);
      return new at::Generator(g);
    }
#endif
    (void)device_index;
    throw std::invalid_argument("generators can be created for cpu" + std::string(sdt_cuda_compiled() ? " and cuda" : ""));
  });
}

sdt_generator sdt_generator_default(int device_type, int device_index) {
  return guarded<sdt_generator>(nullptr, [&]() -> sdt_generator {
    auto device = static_cast<at::DeviceType>(device_type);
    if (device == at::kCPU) return new at::Generator(at::detail::getDefaultCPUGenerator());
    return new at::Generator(at::globalContext().defaultGenerator(at::Device(device, static_cast<c10::DeviceIndex>(device_index))));
  });
}

void sdt_generator_free(sdt_generator g) {
  guarded(0, [&] {
    delete static_cast<at::Generator*>(g);
    return 0;
  });
}

int sdt_generator_manual_seed(sdt_generator g, uint64_t seed) {
  return guarded(-1, [&] {
    std::lock_guard<std::mutex> lock(G(g).mutex());
    G(g).set_current_seed(seed);
    return 0;
  });
}

uint64_t sdt_generator_initial_seed(sdt_generator g) {
  return guarded<uint64_t>(0, [&] { return G(g).current_seed(); });
}

sdt_tensor sdt_generator_get_state(sdt_generator g) {
  return guarded<sdt_tensor>(nullptr, [&] {
    std::lock_guard<std::mutex> lock(G(g).mutex());
    return wrap(G(g).get_state());
  });
}

int sdt_generator_set_state(sdt_generator g, sdt_tensor state) {
  return guarded(-1, [&] {
    std::lock_guard<std::mutex> lock(G(g).mutex());
    G(g).set_state(T(state));
    return 0;
  });
}

int sdt_manual_seed(uint64_t seed) {
  return guarded(-1, [&] {
    {
      auto g = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(g.mutex());
      g.set_current_seed(seed);
    }
    const auto n = torch::cuda::is_available() ? torch::cuda::device_count() : 0;
    for (size_t i = 0; i < n; ++i) {
      auto g = at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
      std::lock_guard<std::mutex> lock(g.mutex());
      g.set_current_seed(seed);
    }
    return 0;
  });
}

// ---- operators ----
sdt_op sdt_op_find(const char* name, const char* overload) {
  return guarded<sdt_op>(nullptr, [&]() -> sdt_op {
    auto handle = c10::Dispatcher::singleton().findSchema({name, overload ? overload : ""});
    if (!handle) {
      std::string full = std::string(name) + (overload && *overload ? std::string(".") + overload : "");
      throw std::invalid_argument("libtorch " TORCH_VERSION " has no operator " + full);
    }
    return new c10::OperatorHandle(*handle);
  });
}

int sdt_op_schema(sdt_op op, char* buffer, int capacity) {
  return guarded(-1, [&] {
    std::ostringstream os;
    os << OP(op).schema();
    const auto text = os.str();
    if (buffer && capacity > 0) std::snprintf(buffer, static_cast<size_t>(capacity), "%s", text.c_str());
    return static_cast<int>(text.size());
  });
}

int sdt_op_check(sdt_op op, const sdt_arg* args, int n_args) {
  return guarded(-1, [&] {
    std::vector<c10::IValue> stack;
    build_stack(OP(op).schema(), args, n_args, stack);
    return 0;
  });
}

int sdt_op_call(sdt_op op, const sdt_arg* args, int n_args, sdt_tensor* outputs, int max_outputs, double* scalar) {
  return guarded(-1, [&] {
    auto& handle = OP(op);
    // A local stack, not a thread-local one: a tensor freed inside the call may run a .NET release
    // callback that calls another operator on this thread.
    std::vector<c10::IValue> stack;
    build_stack(handle.schema(), args, n_args, stack);
    try {
      handle.callBoxed(&stack);
    } catch (const c10::Error& e) {
      throw std::runtime_error(handle.schema().name() + ": " + e.what_without_backtrace());
    }
    c10::SmallVector<at::Tensor, 4> produced;
    double value = 0;
    for (const auto& v : stack) collect_outputs(v, produced, value);
    if (scalar) *scalar = value;
    const int count = static_cast<int>(produced.size());
    t_pending_outputs.clear();
    if (outputs) {
      const int direct = std::min(count, std::max(max_outputs, 0));
      for (int i = 0; i < direct; ++i) outputs[i] = wrap(std::move(produced[i]));
      t_pending_outputs.assign(std::make_move_iterator(produced.begin() + direct), std::make_move_iterator(produced.end()));
    }
    return count;
  });
}

int sdt_op_take_outputs(sdt_tensor* out, int capacity) {
  return guarded(-1, [&] {
    auto& pending = t_pending_outputs;
    if (static_cast<int64_t>(pending.size()) > capacity) {
      std::ostringstream os;
      os << pending.size() << " outputs are pending, the buffer holds " << capacity;
      throw std::invalid_argument(os.str());
    }
    for (size_t i = 0; i < pending.size(); ++i) out[i] = wrap(std::move(pending[i]));
    const int count = static_cast<int>(pending.size());
    pending.clear();
    return count;
  });
}

// ---- attention ----
sdt_tensor sdt_scaled_dot_product_attention(sdt_tensor q, sdt_tensor k, sdt_tensor v, sdt_tensor mask, double dropout_p,
                                            int is_causal, double scale) {
  return guarded<sdt_tensor>(nullptr, [&] {
    const auto& query = T(q);
    const double s = scale > 0 ? scale : 1.0 / std::sqrt(static_cast<double>(query.size(-1)));
    at::Tensor m = mask ? T(mask) : at::Tensor();
    return wrap(sdt::attention(query, T(k), T(v), m, dropout_p, is_causal != 0, s));
  });
}

}  // extern "C"
