#include "common/model/flat_weights.h"

#include <cstring>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"

namespace rhythm::common::model {
namespace {

at::ScalarType WireType(v1::WireDType d) {
  return d == v1::WIRE_DTYPE_BF16 ? at::kBFloat16 : at::kFloat;
}

}  // namespace

FlatWeights FlattenWeights(const Transformer& model, v1::WireDType dtype) {
  FlatWeights out;
  out.dtype = dtype == v1::WIRE_DTYPE_BF16 ? v1::WIRE_DTYPE_BF16 : v1::WIRE_DTYPE_FP32;
  const at::ScalarType type = WireType(out.dtype);
  at::NoGradGuard no_grad;
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
