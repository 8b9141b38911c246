// Data-parallel training through libtorch's own c10d: the TCPStore rendezvous, the Gloo (every build) or NCCL (CUDA
// builds with NCCL headers) process group, the collectives the trainer needs, and gradient buckets that are
// all-reduced from autograd hooks while backward still runs, as PyTorch's DistributedDataParallel does. (c10d's own
// Reducer cannot be built against Debian's headers, which lack the distributed autograd ones it includes.)
#include "internal.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#ifndef SDT_WITHOUT_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>
#ifdef SDT_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace {

using StorePtr = c10::intrusive_ptr<c10d::Store>;
using GroupPtr = c10::intrusive_ptr<c10d::ProcessGroup>;

StorePtr& S(sdt_store s) {
  if (s == nullptr) throw std::invalid_argument("a NULL store handle was passed");
  return *static_cast<StorePtr*>(s);
}

GroupPtr& G(sdt_process_group g) {
  if (g == nullptr) throw std::invalid_argument("a NULL process group handle was passed");
  return *static_cast<GroupPtr*>(g);
}

std::vector<at::Tensor> Tensors(const sdt_tensor* tensors, int n) {
  if (n < 0 || (n > 0 && tensors == nullptr)) throw std::invalid_argument("a tensor list of negative length or without elements was passed");
  std::vector<at::Tensor> list;
  list.reserve(n);
  for (int i = 0; i < n; i++) list.push_back(sdt::T(tensors[i]));
  return list;
}

std::string Key(const char* key) {
  if (key == nullptr || *key == '\0') throw std::invalid_argument("a store key must not be empty");
  return key;
}

// Gloo reduces sum, product, min and max; an average is a sum divided by the group's size, as torch.distributed
// does for backends without ReduceOp.AVG.
void AllReduce(GroupPtr& group, std::vector<at::Tensor>& tensors, int op) {
  c10d::AllreduceOptions options;
  options.reduceOp = op == SDT_REDUCE_MAX ? c10d::ReduceOp::MAX : op == SDT_REDUCE_MIN ? c10d::ReduceOp::MIN : c10d::ReduceOp::SUM;
  // One call per tensor: Gloo's allreduce takes a list only of one tensor per local device.
  std::vector<c10::intrusive_ptr<c10d::Work>> pending;
  for (auto& t : tensors) {
    std::vector<at::Tensor> one{t};
    pending.push_back(group->allreduce(one, options));
  }
  for (auto& work : pending) work->wait();
  if (op == SDT_REDUCE_AVG)
    for (auto& t : tensors) t.div_(group->getSize());
}

// The gradients of the trained parameters in buckets of contiguous flat tensors. Armed for one backward, each
// parameter's gradient accumulator tells the buckets when its (accumulated) gradient is final; a bucket whose every
// gradient is in starts its all-reduce at once, in bucket order, so that every rank issues the same collectives in
// the same sequence. finish() puts in what no hook delivered (unused parameters, or .grad from earlier micro-steps),
// all-reduces which parameters had a gradient anywhere, waits, and writes the reduced values back to .grad.
class GradientBuckets {
 public:
  GradientBuckets(GroupPtr group, std::vector<at::Tensor> params, int64_t bucket_bytes, int64_t first_bucket_bytes, bool average)
      : group_(std::move(group)), params_(std::move(params)), average_(average) {
    // Backward delivers the last parameters first: fill buckets from the end, one dtype and device per bucket.
    std::map<std::pair<int, std::string>, size_t> open;
    bucket_of_.assign(params_.size(), 0);
    for (size_t k = params_.size(); k-- > 0;) {
      auto& p = params_[k];
      if (!p.requires_grad()) throw std::invalid_argument("parameter " + std::to_string(k) + " does not require grad; give only trained ones");
      auto key = std::make_pair(static_cast<int>(p.scalar_type()), p.device().str());
      auto found = open.find(key);
      // The first bucket has its own, smaller limit.
      auto full = [&](size_t b) { return bytes_[b] > 0 && bytes_[b] + p.numel() * p.element_size() > (b == 0 ? first_bucket_bytes : bucket_bytes); };
      if (found == open.end() || full(found->second)) {
        buckets_.emplace_back();
        bytes_.push_back(0);
        found = open.insert_or_assign(key, buckets_.size() - 1).first;
      }
      buckets_[found->second].push_back(k);
      bytes_[found->second] += p.numel() * p.element_size();
      bucket_of_[k] = found->second;
    }
    for (auto& bucket : buckets_) {
      int64_t numel = 0;
      for (auto k : bucket) numel += params_[k].numel();
      auto& first = params_[bucket[0]];
      flat_.push_back(at::zeros({numel}, first.options().requires_grad(false)));
    }
    offset_.assign(params_.size(), 0);
    for (auto& bucket : buckets_) {
      int64_t offset = 0;
      for (auto k : bucket) {
        offset_[k] = offset;
        offset += params_[k].numel();
      }
    }
    // The accumulators are held here: a variable keeps only a weak reference, and a new one would have no hook.
    for (size_t k = 0; k < params_.size(); k++) {
      auto accumulator = torch::autograd::impl::grad_accumulator(params_[k]);
      accumulator->add_post_hook(std::make_unique<Hook>(this, k));
      accumulators_.push_back(std::move(accumulator));
    }
  }

  int bucket_count() const { return static_cast<int>(buckets_.size()); }

  void prepare() {
    std::lock_guard<std::mutex> lock(mutex_);
    delivered_.assign(params_.size(), 0);
    used_.assign(params_.size(), 0);
    missing_.clear();
    for (auto& bucket : buckets_) missing_.push_back(static_cast<int>(bucket.size()));
    works_.clear();
    next_ = 0;
    armed_ = true;
  }

  void finish() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!armed_) throw std::logic_error("the gradient buckets were not prepared for this backward");
      for (size_t k = 0; k < params_.size(); k++)
        if (!delivered_[k]) Deliver(k);
      armed_ = false;
    }
    // On the parameters' device: NCCL reduces CUDA tensors only.
    auto used = at::tensor(std::vector<float>(used_.begin(), used_.end())).to(params_[0].device());
    std::vector<at::Tensor> one{used};
    // After the buckets, so that the used map is every rank's last collective of the step.
    for (auto& work : works_) work->wait();
    group_->allreduce(one)->wait();
    auto used_cpu = used.cpu();
    auto used_anywhere = used_cpu.accessor<float, 1>();
    for (size_t b = 0; b < buckets_.size(); b++) {
      if (average_) flat_[b].div_(group_->getSize());
      for (auto k : buckets_[b]) {
        auto& p = params_[k];
        if (used_anywhere[k] == 0) continue;  // no rank had a gradient: .grad stays as it was (undefined)
        auto reduced = flat_[b].narrow(0, offset_[k], p.numel()).view(p.sizes());
        at::NoGradGuard no_grad;
        if (p.grad().defined())
          p.mutable_grad().copy_(reduced);
        else
          p.mutable_grad() = reduced.clone();
      }
    }
  }

 private:
  struct Hook : torch::autograd::FunctionPostHook {
    Hook(GradientBuckets* owner, size_t index) : owner(owner), index(index) {}
    torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) override {
      owner->Ready(index);
      return outputs;
    }
    GradientBuckets* owner;
    size_t index;
  };

  void Ready(size_t k) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (armed_ && !delivered_[k]) Deliver(k);
  }

  // Copies parameter k's gradient (zeros when it has none) into its bucket and starts every bucket, in order, whose
  // gradients are all in.
  void Deliver(size_t k) {
    auto& p = params_[k];
    auto b = bucket_of_[k];
    auto view = flat_[b].narrow(0, offset_[k], p.numel());
    at::NoGradGuard no_grad;
    if (p.grad().defined()) {
      view.copy_(p.grad().reshape({-1}));
      used_[k] = 1;
    } else {
      view.zero_();
    }
    delivered_[k] = 1;
    missing_[b]--;
    while (next_ < buckets_.size() && missing_[next_] == 0) {
      std::vector<at::Tensor> one{flat_[next_]};
      works_.push_back(group_->allreduce(one));
      next_++;
    }
  }

  GroupPtr group_;
  std::vector<at::Tensor> params_;
  bool average_;
  std::vector<std::vector<size_t>> buckets_;
  std::vector<int64_t> bytes_;
  std::vector<size_t> bucket_of_;
  std::vector<int64_t> offset_;
  std::vector<at::Tensor> flat_;
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;
  std::mutex mutex_;
  bool armed_ = false;
  std::vector<char> delivered_, used_;
  std::vector<int> missing_;
  std::vector<c10::intrusive_ptr<c10d::Work>> works_;
  size_t next_ = 0;
};

GradientBuckets& B(sdt_grad_buckets b) {
  if (b == nullptr) throw std::invalid_argument("a NULL gradient buckets handle was passed");
  return *static_cast<GradientBuckets*>(b);
}

}  // namespace

extern "C" {

sdt_store sdt_tcp_store_new(const char* host, int port, int world_size, int is_server, int64_t timeout_ms) {
  return sdt::guarded<sdt_store>(nullptr, [&]() -> sdt_store {
    if (host == nullptr || *host == '\0') throw std::invalid_argument("the store's host must not be empty");
    if (port < 0 || port > 65535) throw std::invalid_argument("the store's port " + std::to_string(port) + " is outside 0..65535");
    c10d::TCPStoreOptions options;
    options.port = static_cast<std::uint16_t>(port);
    options.isServer = is_server != 0;
    if (world_size > 0) options.numWorkers = world_size;
    // The server does not wait for its clients here: the process group's rendezvous waits for every rank anyway,
    // with the same timeout, and then names who did not come.
    options.waitWorkers = false;
    options.timeout = std::chrono::milliseconds(timeout_ms);
    StorePtr store = c10::make_intrusive<c10d::TCPStore>(host, options);
    return new StorePtr(std::move(store));
  });
}

sdt_store sdt_prefix_store_new(const char* prefix, sdt_store inner) {
  return sdt::guarded<sdt_store>(nullptr, [&]() -> sdt_store {
    StorePtr store = c10::make_intrusive<c10d::PrefixStore>(Key(prefix), S(inner));
    return new StorePtr(std::move(store));
  });
}

void sdt_store_free(sdt_store s) {
  sdt::guarded(0, [&] {
    delete static_cast<StorePtr*>(s);
    return 0;
  });
}

int sdt_store_port(sdt_store s) {
  return sdt::guarded(-1, [&] {
    auto* tcp = dynamic_cast<c10d::TCPStore*>(S(s).get());
    if (tcp == nullptr) throw std::invalid_argument("the store is not a TCPStore");
    return static_cast<int>(tcp->getPort());
  });
}

int sdt_store_set(sdt_store s, const char* key, const void* data, int64_t length) {
  return sdt::guarded(-1, [&] {
    if (length < 0 || (length > 0 && data == nullptr)) throw std::invalid_argument("a store value needs its bytes");
    auto* bytes = static_cast<const uint8_t*>(data);
    S(s)->set(Key(key), std::vector<uint8_t>(bytes, bytes + length));
    return 0;
  });
}

int64_t sdt_store_get(sdt_store s, const char* key, void* buffer, int64_t capacity) {
  return sdt::guarded<int64_t>(-1, [&]() -> int64_t {
    auto value = S(s)->get(Key(key));
    auto length = static_cast<int64_t>(value.size());
    if (length <= capacity && length > 0) std::memcpy(buffer, value.data(), value.size());
    return length;
  });
}

int64_t sdt_store_add(sdt_store s, const char* key, int64_t delta) {
  return sdt::guarded<int64_t>(INT64_MIN, [&] { return S(s)->add(Key(key), delta); });
}

int sdt_store_check(sdt_store s, const char* key) {
  return sdt::guarded(-1, [&] { return S(s)->check({Key(key)}) ? 1 : 0; });
}

int sdt_store_set_timeout(sdt_store s, int64_t timeout_ms) {
  return sdt::guarded(-1, [&] {
    S(s)->setTimeout(std::chrono::milliseconds(timeout_ms));
    return 0;
  });
}

int sdt_nccl_available(void) {
#ifdef SDT_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

sdt_process_group sdt_process_group_new(sdt_store store, int backend, int rank, int world_size, int64_t timeout_ms, const char* hostname) {
  return sdt::guarded<sdt_process_group>(nullptr, [&]() -> sdt_process_group {
    if (world_size < 1 || rank < 0 || rank >= world_size)
      throw std::invalid_argument("rank " + std::to_string(rank) + " is outside a world of " + std::to_string(world_size));
    auto timeout = std::chrono::milliseconds(timeout_ms);
    if (backend == SDT_BACKEND_GLOO) {
#ifdef SDT_WITHOUT_GLOO
      throw std::invalid_argument("this libsdtorch was built without gloo's headers (Debian: apt-get install libgloo-dev, then rebuild)");
#else
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      // As torch.distributed: GLOO_SOCKET_IFNAME picks the network interface when no address is given (a machine
      // whose host name resolves to a loopback address would otherwise announce that to its peers).
      const char* interface_name = std::getenv("GLOO_SOCKET_IFNAME");
      options->devices.push_back(hostname != nullptr && *hostname != '\0' ? c10d::ProcessGroupGloo::createDeviceForHostname(hostname)
                                 : interface_name != nullptr && *interface_name != '\0' ? c10d::ProcessGroupGloo::createDeviceForInterface(interface_name)
                                                                                          : c10d::ProcessGroupGloo::createDefaultDevice());
      GroupPtr group = c10::make_intrusive<c10d::ProcessGroupGloo>(S(store), rank, world_size, options);
      return new GroupPtr(std::move(group));
#endif
    }
    if (backend == SDT_BACKEND_NCCL) {
#ifdef SDT_WITH_NCCL
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      GroupPtr group = c10::make_intrusive<c10d::ProcessGroupNCCL>(S(store), rank, world_size, options);
      return new GroupPtr(std::move(group));
#else
      throw std::invalid_argument("this libsdtorch was built without NCCL (a CUDA libtorch with NCCL headers); use the gloo backend");
#endif
    }
    throw std::invalid_argument("unknown process group backend " + std::to_string(backend));
  });
}

void sdt_process_group_free(sdt_process_group g) {
  sdt::guarded(0, [&] {
    delete static_cast<GroupPtr*>(g);
    return 0;
  });
}

int sdt_all_reduce(sdt_process_group g, const sdt_tensor* tensors, int n, int op) {
  return sdt::guarded(-1, [&] {
    auto list = Tensors(tensors, n);
    AllReduce(G(g), list, op);
    return 0;
  });
}

int sdt_broadcast(sdt_process_group g, const sdt_tensor* tensors, int n, int root, int64_t bucket_bytes) {
  return sdt::guarded(-1, [&] {
    auto& group = G(g);
    if (root < 0 || root >= group->getSize()) throw std::invalid_argument("broadcast root " + std::to_string(root) + " is outside the group");
    auto list = Tensors(tensors, n);
    // c10d's own: tensors of one dtype and device flattened into buckets of bucket_bytes, one broadcast each.
    c10d::broadcast_coalesced(group, list, static_cast<size_t>(bucket_bytes), root);
    return 0;
  });
}

int sdt_all_gather(sdt_process_group g, sdt_tensor input, sdt_tensor* outputs, int n_outputs) {
  return sdt::guarded(-1, [&] {
    auto& group = G(g);
    if (n_outputs != group->getSize())
      throw std::invalid_argument("all_gather needs one output per rank (" + std::to_string(group->getSize()) + "), got " + std::to_string(n_outputs));
    std::vector<at::Tensor> inputs{sdt::T(input)};
    std::vector<std::vector<at::Tensor>> gathered{Tensors(outputs, n_outputs)};
    group->allgather(gathered, inputs)->wait();
    return 0;
  });
}

int sdt_barrier(sdt_process_group g) {
  return sdt::guarded(-1, [&] {
    G(g)->barrier()->wait();
    return 0;
  });
}

sdt_grad_buckets sdt_grad_buckets_new(sdt_process_group g, const sdt_tensor* params, int n, int64_t bucket_bytes, int64_t first_bucket_bytes,
                                      int op) {
  return sdt::guarded<sdt_grad_buckets>(nullptr, [&]() -> sdt_grad_buckets {
    if (op != SDT_REDUCE_SUM && op != SDT_REDUCE_AVG) throw std::invalid_argument("gradients are reduced by sum or average");
    if (bucket_bytes <= 0 || first_bucket_bytes <= 0) throw std::invalid_argument("bucket sizes must be positive");
    return new GradientBuckets(G(g), Tensors(params, n), bucket_bytes, first_bucket_bytes, op == SDT_REDUCE_AVG);
  });
}

int sdt_grad_buckets_count(sdt_grad_buckets b) {
  return sdt::guarded(-1, [&] { return B(b).bucket_count(); });
}

int sdt_grad_buckets_prepare(sdt_grad_buckets b) {
  return sdt::guarded(-1, [&] {
    B(b).prepare();
    return 0;
  });
}

int sdt_grad_buckets_finish(sdt_grad_buckets b) {
  return sdt::guarded(-1, [&] {
    B(b).finish();
    return 0;
  });
}

void sdt_grad_buckets_free(sdt_grad_buckets b) {
  sdt::guarded(0, [&] {
    delete static_cast<GradientBuckets*>(b);
    return 0;
  });
}

}  // extern "C"
