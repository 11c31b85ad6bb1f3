// Activation checkpointing of one function of a tensor (a decoder layer): forward runs it
// without recording anything for backward and keeps only its input; backward runs it again,
// with autograd on, from that input and backpropagates the incoming gradient through the
// recomputed graph to the input and the parameters.
//
//   forward:  y = fn(x)                 under no-grad; saved: x (and the parameter handles)
//   backward: y' = fn(x.detach())       with grad; (dx, dparams) = grad(y', (x', params), dy)
//
// The parameters' gradients come out of the checkpoint node like any other op's, so they
// accumulate into .grad exactly as without it (one contribution per forward). fn must be
// deterministic (the decoder has no dropout) and must read nothing that changes between
// forward and backward; what it captures by reference (the model) must outlive backward.
// Autograd's reentrant backward runs the recomputation on the thread running backward.
//
// Without grad mode, or when neither x nor a parameter requires grad, this is fn(x).
// Thread-safety: as fn.
#pragma once

#include <functional>
#include <vector>

#include "ATen/core/Tensor.h"

namespace rhythm::common::model {

using CheckpointedFn = std::function<at::Tensor(const at::Tensor&)>;

// y = fn(x); `params` lists every tensor requiring grad that fn reads besides x (undefined
// entries are skipped). Throws c10::Error as fn does.
at::Tensor Checkpointed(CheckpointedFn fn, const at::Tensor& x,
                        const std::vector<at::Tensor>& params);

}  // namespace rhythm::common::model
