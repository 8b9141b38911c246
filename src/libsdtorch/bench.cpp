// Native timings for tools/bench-engine: the binding's benchmark operations, written as a C++
// program using libtorch would write them, timed here so the benchmark can print binding ÷ native.
#include "internal.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>

#include <chrono>
#include <cmath>
#include <sstream>
#include <vector>

namespace {

void require_inputs(int kind, int have, int need) {
  if (have < need) {
    std::ostringstream os;
    os << "benchmark " << kind << " takes " << need << " inputs, " << have << " were given";
    throw std::invalid_argument(os.str());
  }
}

// Seconds for `iterations` runs; each run keeps its result alive until it ends, as a caller would.
template <typename F>
double time_runs(int iterations, F&& run) {
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < iterations; ++i) run();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

extern "C" double sdt_bench_native(int kind, const sdt_tensor* inputs, int n_inputs, int iterations) {
  return sdt::guarded(-1.0, [&] {
    using sdt::T;
    switch (kind) {
      case SDT_BENCH_ADD: {
        require_inputs(kind, n_inputs, 2);
        const auto& a = T(inputs[0]);
        const auto& b = T(inputs[1]);
        return time_runs(iterations, [&] { auto c = a + b; });
      }
      case SDT_BENCH_ADD_BOXED: {
        require_inputs(kind, n_inputs, 2);
        const auto& a = T(inputs[0]);
        const auto& b = T(inputs[1]);
        auto op = c10::Dispatcher::singleton().findSchemaOrThrow("aten::add", "Tensor");
        std::vector<c10::IValue> stack;
        return time_runs(iterations, [&] {
          stack.clear();
          stack.emplace_back(a);
          stack.emplace_back(b);
          stack.emplace_back(1.0);
          op.callBoxed(&stack);
          stack.clear();
        });
      }
      case SDT_BENCH_ADD_SHIM: {
        require_inputs(kind, n_inputs, 2);
        auto op = sdt_op_find("aten::add", "Tensor");
        if (!op) throw std::runtime_error("aten::add.Tensor not found");
        sdt_arg args[3] = {};
        args[0].kind = SDT_ARG_TENSOR;
        args[0].value.p = inputs[0];
        args[1].kind = SDT_ARG_TENSOR;
        args[1].value.p = inputs[1];
        args[2].kind = SDT_ARG_DOUBLE;
        args[2].value.d = 1.0;
        sdt_tensor out = nullptr;
        return time_runs(iterations, [&] {
          if (sdt_op_call(op, args, 3, &out, 1, nullptr) < 0) throw std::runtime_error(sdt::last_error());
          sdt_tensor_free(out);
        });
      }
      case SDT_BENCH_CONV2D: {
        require_inputs(kind, n_inputs, 2);
        const auto& x = T(inputs[0]);
        const auto& w = T(inputs[1]);
        return time_runs(iterations, [&] { auto y = at::conv2d(x, w, {}, 1, 1); });
      }
      case SDT_BENCH_CONV2D_BACKWARD: {
        require_inputs(kind, n_inputs, 2);
        auto& x = T(inputs[0]);
        auto& w = T(inputs[1]);
        return time_runs(iterations, [&] {
          at::conv2d(x, w, {}, 1, 1).sum().backward();
          x.mutable_grad().reset();
          w.mutable_grad().reset();
        });
      }
      case SDT_BENCH_LINEAR: {
        require_inputs(kind, n_inputs, 2);
        const auto& x = T(inputs[0]);
        const auto& w = T(inputs[1]);
        return time_runs(iterations, [&] { auto y = at::linear(x, w); });
      }
      case SDT_BENCH_ATTENTION: {
        require_inputs(kind, n_inputs, 3);
        const auto& q = T(inputs[0]);
        const auto& k = T(inputs[1]);
        const auto& v = T(inputs[2]);
        const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(-1)));
        return time_runs(iterations, [&] { auto o = sdt::attention(q, k, v, at::Tensor(), 0.0, false, scale); });
      }
      default:
        throw std::invalid_argument("unknown benchmark kind " + std::to_string(kind));
    }
  });
}
