// Adam(W)'s step on CPU over a list of parameters in one call. Each parameter gets the single-tensor update of
// torch.optim's Adam, operator by operator (the same kernels, so the same bits as stepping it alone); what this
// saves over the list operators is that the list operators on CPU loop over the tensors one by one on the calling
// thread, eight sweeps of the list, where this steps each tensor whole while it is in cache and shares the tensors
// out across the intra-op threads. A LoRA's hundreds of small tensors are each below libtorch's grain size, so no
// single operator on them would ever use a second thread.
#include "internal.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <vector>

namespace {

// Below this many elements libtorch runs an elementwise kernel on the calling thread (at::internal::GRAIN_SIZE);
// at or above it the kernel itself splits the tensor across threads, so such a tensor is stepped outside the
// parallel region (where its kernels split it as they would for a tensor stepped alone: the same chunks, the same
// bits).
constexpr int64_t kSplitByKernel = 32768;

struct AdamScalars {
  double lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt;
  bool decoupled, amsgrad, maximize;
};

// torch.optim's single-tensor Adam(W) update, in its order of operations.
void step_one(const AdamScalars& s, at::Tensor& param, const at::Tensor& grad, at::Tensor& exp_avg, at::Tensor& exp_avg_sq,
              at::Tensor* max_exp_avg_sq) {
  at::Tensor g = s.maximize ? at::neg(grad) : grad;
  if (s.weight_decay != 0) {
    if (s.decoupled)
      param.mul_(1 - s.lr * s.weight_decay);
    else
      g = at::add(g, param, s.weight_decay);
  }
  exp_avg.lerp_(g, 1 - s.beta1);
  exp_avg_sq.mul_(s.beta2);
  exp_avg_sq.addcmul_(g, g, 1 - s.beta2);
  const at::Tensor* second = &exp_avg_sq;
  if (max_exp_avg_sq != nullptr) {
    at::maximum_out(*max_exp_avg_sq, *max_exp_avg_sq, exp_avg_sq);
    second = max_exp_avg_sq;
  }
  at::Tensor denom = at::sqrt(*second);
  denom.div_(s.bias_correction2_sqrt);
  denom.add_(s.eps);
  param.addcdiv_(exp_avg, denom, -s.step_size);
}

}  // namespace

extern "C" {

int sdt_optim_adam_step_cpu(const sdt_tensor* params, const sdt_tensor* grads, const sdt_tensor* exp_avgs, const sdt_tensor* exp_avg_sqs,
                            const sdt_tensor* max_exp_avg_sqs, int n, double lr, double beta1, double beta2, double eps,
                            double weight_decay, int decoupled, int maximize, double step_size, double bias_correction2_sqrt) {
  return sdt::guarded(-1, [&] {
    using sdt::T;
    if (n < 0 || (n > 0 && (params == nullptr || grads == nullptr || exp_avgs == nullptr || exp_avg_sqs == nullptr)))
      throw std::invalid_argument("sdt_optim_adam_step_cpu: the parameter, gradient and moment lists must hold n handles");
    const AdamScalars s{lr, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt,
                        decoupled != 0, max_exp_avg_sqs != nullptr, maximize != 0};
    // A tensor on another device is refused before any parameter changes.
    for (int i = 0; i < n; ++i) {
      const auto& p = T(params[i]);
      if (!p.device().is_cpu() || !T(grads[i]).device().is_cpu() || !T(exp_avgs[i]).device().is_cpu() ||
          !T(exp_avg_sqs[i]).device().is_cpu() || (s.amsgrad && !T(max_exp_avg_sqs[i]).device().is_cpu()))
        throw std::invalid_argument("sdt_optim_adam_step_cpu: every parameter, gradient and moment must be a CPU tensor");
    }
    auto step = [&](int i) {
      step_one(s, T(params[i]), T(grads[i]), T(exp_avgs[i]), T(exp_avg_sqs[i]), s.amsgrad ? &T(max_exp_avg_sqs[i]) : nullptr);
    };
    // The update is never part of a graph (and would fail on a leaf that requires grad if it were).
    at::NoGradGuard no_grad;

    std::vector<int> small;
    int64_t small_elements = 0;
    for (int i = 0; i < n; ++i) {
      const int64_t numel = T(params[i]).numel();
      if (numel >= kSplitByKernel) {
        step(i);
      } else {
        small.push_back(i);
        small_elements += numel;
      }
    }
    const int64_t threads = at::get_num_threads();
    if (small.empty()) return 0;
    if (threads <= 1 || small_elements < kSplitByKernel || at::in_parallel_region()) {
      for (int i : small) step(i);
      return 0;
    }
    // One run of consecutive tensors per thread, of about equal element counts. The pool's threads start with
    // default thread-local state: each takes the caller's (no_grad, inference mode, dispatch keys).
    std::vector<size_t> starts(threads + 1, small.size());
    starts[0] = 0;
    int64_t seen = 0;
    int64_t chunk = 1;
    for (size_t k = 0; k < small.size() && chunk < threads; ++k) {
      while (chunk < threads && seen >= small_elements * chunk / threads) starts[chunk++] = k;
      seen += T(params[small[k]]).numel();
    }
    const at::ThreadLocalState caller;
    at::parallel_for(0, threads, 0, [&](int64_t begin, int64_t end) {
      at::ThreadLocalStateGuard same_state(caller);
      for (int64_t t = begin; t < end; ++t)
        for (size_t k = starts[t]; k < starts[t + 1]; ++k) step(small[k]);
    });
    return 0;
  });
}

}  // extern "C"
