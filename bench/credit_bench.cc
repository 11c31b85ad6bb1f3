// Cost of the learner's credit math per training batch: gamma for one 512-token response, and
// the clipped loss forward + backward for a [64, 512] batch.
#include <random>

#include "ATen/ATen.h"
#include "benchmark/benchmark.h"
#include "common/credit/policy_loss.h"
#include "common/credit/token_credit.h"

namespace rhythm::common::credit {
namespace {

void BM_TokenCredit(benchmark::State& state) {
  const int64_t n = state.range(0);
  at::manual_seed(0);
  ResponseSignals s{at::rand({n}) * 10, at::rand({n}), at::rand({n})};
  TokenCreditOptions o;
  o.strategy = static_cast<v1::CreditStrategy>(state.range(1));
  for (auto _ : state) benchmark::DoNotOptimize(ComputeTokenCredit(s, o));
  state.SetItemsProcessed(state.iterations() * n);
}
BENCHMARK(BM_TokenCredit)
    ->Args({512, v1::CREDIT_STRATEGY_NONE})
    ->Args({512, v1::CREDIT_STRATEGY_COUPLED})
    ->Args({4096, v1::CREDIT_STRATEGY_COUPLED});

void BM_PolicyLossForwardBackward(benchmark::State& state) {
  const int64_t b = state.range(0), t = state.range(1);
  at::manual_seed(0);
  PolicyLossInputs in;
  in.old_logprobs = -at::rand({b, t}) * 3;
  in.behaviour_logprobs = in.old_logprobs + at::randn({b, t}) * 0.1;
  in.advantages = at::randn({b, t});
  in.mask = at::ones({b, t});
  for (auto _ : state) {
    in.logprobs = (in.old_logprobs + at::randn({b, t}) * 0.1).requires_grad_(true);
    auto r = ComputePolicyLoss(in, PolicyLossOptions());
    r->loss.backward();
  }
  state.SetItemsProcessed(state.iterations() * b * t);
}
BENCHMARK(BM_PolicyLossForwardBackward)->Args({64, 512});

}  // namespace
}  // namespace rhythm::common::credit
