// The 8-bit optimizers' step on CPU in one pass per block, as bitsandbytes' block-wise kernels make it on CUDA:
// dequantise the moments, update them and the parameter in float32, find each block's new largest magnitude, and
// quantise the moments again to the nearest code value. The same step composed of aten operators (any device) is
// in SdAppliance.Torch/Optim; this one touches each value once instead of some twenty times.
#include "internal.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

namespace {

constexpr int64_t kBlock = 2048;
constexpr int64_t kCodes = 256;
// Blocks per task: a parameter of fewer than 16 blocks (32K values) is stepped on the calling thread, where waking the
// pool would cost more than the work.
constexpr int64_t kGrain = 16;

// The nearest code's index: how many of the 255 boundaries between neighbouring codes are <= x (torch.bucketize
// with right=True over the same boundaries). `start` holds that count for the lowest float of each value of a float's
// top 16 bits (sign, exponent, 7 mantissa bits); a range that narrow holds at most one boundary of a dynamic code, so
// the scan from there takes a step or none, where a binary search takes eight dependent ones.
inline uint8_t nearest(const float* bounds, const uint8_t* start, float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  int i = start[bits >> 16];
  while (i < kCodes - 1 && bounds[i] <= x) ++i;
  return static_cast<uint8_t>(i);
}

// A block of zeros keeps its values 0 rather than 0/0 (the composed path clamps the divisor the same way).
inline float divisor(float absmax) { return std::max(absmax, 1.17549435e-38f); }

void require(bool ok, const char* what) {
  if (!ok) throw std::invalid_argument(std::string("sdt_optim_8bit_step_cpu: ") + what);
}

void require_state(const at::Tensor& codes, const at::Tensor& absmax, int64_t n, int64_t blocks, const char* which) {
  if (codes.device().is_cpu() && codes.scalar_type() == at::kByte && codes.is_contiguous() && codes.numel() == n &&
      absmax.device().is_cpu() && absmax.scalar_type() == at::kFloat && absmax.is_contiguous() && absmax.numel() == blocks)
    return;
  // Formatted only for the refusal: the check runs on every parameter of every step.
  std::ostringstream os;
  os << which << " must be a contiguous uint8 CPU tensor of " << n << " values with a float32 absmax of " << blocks;
  require(false, os.str().c_str());
}

void require_table(const at::Tensor& code, const at::Tensor& bounds, const at::Tensor& start) {
  require(code.scalar_type() == at::kFloat && code.numel() == kCodes && code.is_contiguous() &&
              bounds.scalar_type() == at::kFloat && bounds.numel() == kCodes - 1 && bounds.is_contiguous() &&
              start.scalar_type() == at::kByte && start.numel() == 65536 && start.is_contiguous(),
          "a code must be 256 float32 values with 255 float32 boundaries and 65536 uint8 start indices");
}

}  // namespace

extern "C" {

int sdt_optim_8bit_step_cpu(int algorithm, sdt_tensor param, sdt_tensor grad, sdt_tensor state1, sdt_tensor absmax1,
                            sdt_tensor state2, sdt_tensor absmax2, sdt_tensor code1, sdt_tensor bounds1, sdt_tensor start1,
                            sdt_tensor code2, sdt_tensor bounds2, sdt_tensor start2, double beta1, double beta2, double eps, double lr,
                            double weight_decay, double step_size, double correction2) {
  return sdt::guarded(-1, [&] {
    using sdt::T;
    require(algorithm == SDT_OPTIM_ADAMW8BIT || algorithm == SDT_OPTIM_LION8BIT, "unknown algorithm");
    const bool adam = algorithm == SDT_OPTIM_ADAMW8BIT;
    auto& p = T(param);
    auto& g = T(grad);
    const int64_t n = p.numel();
    const int64_t blocks = (n + kBlock - 1) / kBlock;
    require(p.device().is_cpu() && p.scalar_type() == at::kFloat && p.is_contiguous(),
            "the parameter must be a contiguous float32 CPU tensor");
    require(g.device().is_cpu() && g.scalar_type() == at::kFloat && g.is_contiguous() && g.numel() == n,
            "the gradient must be a contiguous float32 CPU tensor of the parameter's size");
    require_state(T(state1), T(absmax1), n, blocks, "state1");
    require_table(T(code1), T(bounds1), T(start1));
    if (adam) {
      require_state(T(state2), T(absmax2), n, blocks, "state2");
      require_table(T(code2), T(bounds2), T(start2));
    }

    float* pv = p.data_ptr<float>();
    const float* gv = g.data_ptr<float>();
    uint8_t* s1 = T(state1).data_ptr<uint8_t>();
    float* a1 = T(absmax1).data_ptr<float>();
    const float* c1 = T(code1).data_ptr<float>();
    const float* b1 = T(bounds1).data_ptr<float>();
    const uint8_t* t1 = T(start1).data_ptr<uint8_t>();
    uint8_t* s2 = adam ? T(state2).data_ptr<uint8_t>() : nullptr;
    float* a2 = adam ? T(absmax2).data_ptr<float>() : nullptr;
    const float* c2 = adam ? T(code2).data_ptr<float>() : nullptr;
    const float* b2 = adam ? T(bounds2).data_ptr<float>() : nullptr;
    const uint8_t* t2 = adam ? T(start2).data_ptr<uint8_t>() : nullptr;

    // Every scalar rounded to float once, as the composed path's operators take them.
    const float fb1 = static_cast<float>(beta1), fb2 = static_cast<float>(beta2);
    const float omb1 = static_cast<float>(1 - beta1), omb2 = static_cast<float>(1 - beta2);
    const float feps = static_cast<float>(eps * correction2), fstep = static_cast<float>(step_size);
    const float decay = static_cast<float>(1 - lr * weight_decay), neg_lr = static_cast<float>(-lr);
    const bool decays = weight_decay != 0;

    at::parallel_for(0, blocks, kGrain, [&](int64_t begin, int64_t end) {
      float m[kBlock];
      float v[kBlock];
      for (int64_t b = begin; b < end; ++b) {
        const int64_t i0 = b * kBlock;
        const int64_t len = std::min(kBlock, n - i0);
        float max1 = 0, max2 = 0;
        if (adam) {
          for (int64_t j = 0; j < len; ++j) {
            const float gj = gv[i0 + j];
            m[j] = (c1[s1[i0 + j]] * a1[b]) * fb1 + omb1 * gj;
            v[j] = (c2[s2[i0 + j]] * a2[b]) * fb2 + omb2 * (gj * gj);
            max1 = std::max(max1, std::abs(m[j]));
            max2 = std::max(max2, std::abs(v[j]));
            float pj = pv[i0 + j] + fstep * (m[j] / (std::sqrt(v[j]) + feps));
            if (decays) pj *= decay;
            pv[i0 + j] = pj;
          }
        } else {
          for (int64_t j = 0; j < len; ++j) {
            const float gj = gv[i0 + j];
            const float old = c1[s1[i0 + j]] * a1[b];
            float pj = pv[i0 + j];
            if (decays) pj *= decay;
            const float u = old * fb1 + omb1 * gj;
            pv[i0 + j] = pj + neg_lr * static_cast<float>((u > 0) - (u < 0));
            m[j] = old * fb2 + omb2 * gj;
            max1 = std::max(max1, std::abs(m[j]));
          }
        }
        a1[b] = max1;
        const float d1 = divisor(max1);
        for (int64_t j = 0; j < len; ++j) s1[i0 + j] = nearest(b1, t1, m[j] / d1);
        if (adam) {
          a2[b] = max2;
          const float d2 = divisor(max2);
          for (int64_t j = 0; j < len; ++j) s2[i0 + j] = nearest(b2, t2, v[j] / d2);
        }
      }
    });
    return 0;
  });
}

}  // extern "C"
