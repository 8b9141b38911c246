// What the shim's source files share: the exception guard and handle access (see sdtorch.h).
#pragma once
#include "sdtorch.h"

#include <ATen/ATen.h>

#include <exception>
#include <string>

namespace sdt {

void set_error(std::string message);
void clear_error();
const char* last_error();  // NULL when the last call on this thread succeeded

// Runs body; any exception becomes the thread's last error and `fallback` is returned.
template <typename R, typename F>
R guarded(R fallback, F&& body) {
  try {
    clear_error();
    return body();
  } catch (const c10::Error& e) {
    set_error(e.what_without_backtrace());
  } catch (const std::exception& e) {
    set_error(e.what());
  } catch (...) {
    set_error("unknown C++ exception in libsdtorch");
  }
  return fallback;
}

inline at::Tensor& T(sdt_tensor t) {
  if (t == nullptr) throw std::invalid_argument("a NULL tensor handle was passed where a tensor is required");
  return *static_cast<at::Tensor*>(t);
}

// softmax(q k^T * scale + mask) v: libtorch's fused kernel where it has one (2.1+), else the
// matmul-softmax composition.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask, double dropout_p,
                     bool is_causal, double scale);

}  // namespace sdt
