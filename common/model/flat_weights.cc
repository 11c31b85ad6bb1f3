#include "common/model/flat_weights.h"

#include <cstring>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "c10/core/Event.h"
#include "c10/core/StreamGuard.h"
#include "c10/core/impl/VirtualGuardImpl.h"

namespace rhythm::common::model {
namespace {

at::ScalarType WireType(v1::WireDType d) {
  return d == v1::WIRE_DTYPE_BF16 ? at::kBFloat16 : at::kFloat;
}

// Host<->device copies of a swap are staged through pinned host memory on a side stream when
// the model is on a GPU of a LibTorch with CUDA: pageable memory makes the driver copy through
// its own small bounce buffer, synchronously. Anywhere else (every CPU build) the plain copies
// run and no CUDA call is made.
bool StagesThroughPinnedMemory(const at::Device& device) {
  return device.is_cuda() && at::hasCUDA();
}

// A pooled side stream of `device` that first waits for the work already queued on the current
// stream (the optimizer's last update, the last generation step), without blocking the host.
class SideStream {
 public:
  explicit SideStream(const at::Device& device)
      : impl_(device.type()), side_(impl_.getStreamFromGlobalPool(device)) {
    c10::Event ready(device.type());
    ready.record(impl_.getStream(device));
    ready.block(side_);
  }
  const c10::Stream& stream() const { return side_; }
  // Blocks the host until everything queued on the side stream is done: the weights are in
  // place (or in the pinned buffer) and the pinned buffer may be freed.
  void Synchronize() const { impl_.synchronizeStream(side_); }

 private:
  c10::impl::VirtualGuardImpl impl_;
  c10::Stream side_;
};

at::Tensor PinnedBytes(size_t size) {
  return at::empty({static_cast<int64_t>(size)},
                   at::TensorOptions().dtype(at::kByte).pinned_memory(true));
}

// `shape` of `type` at byte `offset` of the byte tensor `buffer`.
at::Tensor Region(const at::Tensor& buffer, uint64_t offset, at::IntArrayRef shape,
                  at::ScalarType type) {
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  return buffer.narrow(0, static_cast<int64_t>(offset), numel * at::elementSize(type))
      .view(type)
      .view(shape);
}

}  // namespace

FlatWeights FlattenWeights(const Transformer& model, v1::WireDType dtype) {
  FlatWeights out;
  out.dtype = dtype == v1::WIRE_DTYPE_BF16 ? v1::WIRE_DTYPE_BF16 : v1::WIRE_DTYPE_FP32;
  const at::ScalarType type = WireType(out.dtype);
  at::NoGradGuard no_grad;
  if (StagesThroughPinnedMemory(model.device())) {
    uint64_t total = 0;
    for (const auto& [name, p] : model.NamedParameters()) {
      v1::TensorSpec spec;
      spec.set_name(name);
      for (int64_t d : p.sizes()) spec.add_shape(d);
      spec.set_offset(total);
      total += static_cast<uint64_t>(p.numel()) * at::elementSize(type);
      out.tensors.push_back(std::move(spec));
    }
    const at::Tensor pinned = PinnedBytes(total);
    const SideStream side(model.device());
    {
      c10::StreamGuard on_side(side.stream());
      size_t i = 0;
      for (const auto& [name, p] : model.NamedParameters()) {
        // The cast runs on the device; the device-to-host copy lands in pinned memory.
        Region(pinned, out.tensors[i++].offset(), p.sizes(), type)
            .copy_(p.detach().to(type), /*non_blocking=*/true);
      }
    }
    side.Synchronize();
    out.bytes.assign(static_cast<const char*>(pinned.data_ptr()), total);
    return out;
  }
  std::vector<at::Tensor> parts;
  uint64_t offset = 0;
  for (const auto& [name, p] : model.NamedParameters()) {
    at::Tensor t = p.detach().to(at::kCPU, type).contiguous();
    v1::TensorSpec spec;
    spec.set_name(name);
    for (int64_t d : t.sizes()) spec.add_shape(d);
    spec.set_offset(offset);
    offset += static_cast<uint64_t>(t.numel()) * t.element_size();
    out.tensors.push_back(std::move(spec));
    parts.push_back(std::move(t));
  }
  out.bytes.resize(offset);
  for (size_t i = 0; i < parts.size(); ++i) {
    std::memcpy(out.bytes.data() + out.tensors[i].offset(), parts[i].data_ptr(),
                parts[i].numel() * parts[i].element_size());
  }
  return out;
}

absl::Status ApplyFlatWeights(const std::vector<v1::TensorSpec>& tensors,
                              const std::string& bytes, v1::WireDType dtype, Transformer& model) {
  const at::ScalarType type = WireType(dtype);
  const TensorMap params = model.NamedParameters();
  if (tensors.size() != params.size()) {
    return absl::InvalidArgumentError(absl::StrCat("weights: ", tensors.size(),
                                                   " tensors, the model has ", params.size()));
  }
  const size_t elem = at::elementSize(type);
  for (const v1::TensorSpec& spec : tensors) {
    auto it = params.find(spec.name());
    if (it == params.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("weights: tensor '", spec.name(), "' is not in the model"));
    }
    const std::vector<int64_t> shape(spec.shape().begin(), spec.shape().end());
    if (it->second.sizes() != at::IntArrayRef(shape)) {
      return absl::InvalidArgumentError(
          absl::StrCat("weights: tensor '", spec.name(), "' has the wrong shape"));
    }
    if (spec.offset() + it->second.numel() * elem > bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat("weights: tensor '", spec.name(),
                                                     "' lies past the end of the buffer (",
                                                     bytes.size(), " bytes)"));
    }
  }
  at::NoGradGuard no_grad;
  if (StagesThroughPinnedMemory(model.device())) {
    const at::Tensor pinned = PinnedBytes(bytes.size());
    std::memcpy(pinned.data_ptr(), bytes.data(), bytes.size());
    const SideStream side(model.device());
    {
      c10::StreamGuard on_side(side.stream());
      for (const v1::TensorSpec& spec : tensors) {
        at::Tensor dst = params.at(spec.name());
        const at::Tensor src = Region(pinned, spec.offset(), dst.sizes(), type);
        if (dst.scalar_type() == type) {
          dst.copy_(src, /*non_blocking=*/true);
        } else {
          // Cast on the device: a CPU-side cast would copy from an unpinned temporary.
          dst.copy_(src.to(dst.device(), type, /*non_blocking=*/true));
        }
      }
    }
    side.Synchronize();
    return absl::OkStatus();
  }
  for (const v1::TensorSpec& spec : tensors) {
    at::Tensor dst = params.at(spec.name());
    const at::Tensor src =
        at::from_blob(const_cast<char*>(bytes.data()) + spec.offset(), dst.sizes(),
                      at::TensorOptions().dtype(type));
    dst.copy_(src);
  }
  return absl::OkStatus();
}

}  // namespace rhythm::common::model
