#include "common/model/checkpoint.h"

#include <utility>

#include "ATen/ATen.h"
#include "torch/csrc/autograd/autograd.h"
#include "torch/csrc/autograd/custom_function.h"

namespace rhythm::common::model {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// fn travels to backward in the context's saved data, which holds IValues: a capsule holds any
// torch::CustomClassHolder without registering a class.
struct FnHolder : torch::CustomClassHolder {
  explicit FnHolder(CheckpointedFn f) : fn(std::move(f)) {}
  CheckpointedFn fn;
};

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList params,
                            CheckpointedFn fn) {
    at::Tensor y = fn(x);  // autograd is off inside a Function's forward: nothing is saved
    variable_list saved{x};
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["fn"] = c10::IValue::make_capsule(c10::make_intrusive<FnHolder>(std::move(fn)));
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const CheckpointedFn& fn =
        c10::static_intrusive_pointer_cast<FnHolder>(ctx->saved_data["fn"].toCapsule())->fn;
    const at::Tensor x = saved[0].detach().requires_grad_(saved[0].requires_grad());
    at::Tensor y;
    {
      at::AutoGradMode grad(true);
      y = fn(x);
    }
    // grad() needs inputs that require grad; the rest get no gradient.
    variable_list inputs, result(saved.size() + 1);  // + 1: fn, not a tensor
    std::vector<size_t> where;
    for (size_t i = 0; i < saved.size(); ++i) {
      const at::Tensor& in = i == 0 ? x : saved[i];
      if (in.requires_grad()) {
        inputs.push_back(in);
        where.push_back(i);
      }
    }
    if (inputs.empty() || !y.requires_grad()) return result;
    const variable_list g = torch::autograd::grad({y}, inputs, {grads[0]},
                                                  /*retain_graph=*/false, /*create_graph=*/false,
                                                  /*allow_unused=*/true);
    for (size_t i = 0; i < where.size(); ++i) result[where[i]] = g[i];
    return result;
  }
};

}  // namespace

at::Tensor Checkpointed(CheckpointedFn fn, const at::Tensor& x,
                        const std::vector<at::Tensor>& params) {
  std::vector<at::Tensor> defined;
  bool any = x.requires_grad();
  for (const at::Tensor& p : params) {
    if (!p.defined()) continue;
    defined.push_back(p);
    any = any || p.requires_grad();
  }
  if (!at::GradMode::is_enabled() || !any) return fn(x);
  return CheckpointFunction::apply(x, at::TensorList(defined), std::move(fn));
}

}  // namespace rhythm::common::model
