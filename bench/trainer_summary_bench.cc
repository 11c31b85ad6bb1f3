// The learner-side cost of computing the attention summaries itself (credit.summary_source =
// learner: the old-log-prob pass captures the tapped layers' maps and summarises every
// sequence) against taking the actor's (summary_source = actor), on the reasoning regime's
// shapes: the warm-countdown3 model's architecture (4 layers, 4 heads, 2 KV heads, hidden 128,
// vocab 101), 4 groups x 8 responses of 40-100 tokens after a 14-token prompt, 4 optimiser
// updates per batch, micro-batches of 8, the paper's taps (W = 10, FAI band [10, 100], default
// layers), 1 torch thread (rhythm train's layout).
//
// Both trainers step alternately in every iteration, so they see the same machine load; the
// counters report the median step time of each and the median of the per-iteration ratios.
// Arg: 0 = learner source alone, 1 = learner source with agreement against the actor's.
// Run: build/bin/bench_trainer_summary (30 s per case)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include "bench/regime_batch.h"
#include "benchmark/benchmark.h"
#include "common/fp16.h"
#include "common/runtime.h"
#include "learner/trainer.h"

namespace rhythm::learner {
namespace {

const bool kBlasKernels = (common::UseTheCpusBlasKernels(), true);

using bench::Median;
using bench::RegimeBatch;
using bench::RegimeModel;

void BM_TrainerStepLearnerVsActorSummaries(benchmark::State& state) {
  at::set_num_threads(1);
  auto actor_model = *common::model::Transformer::RandomInit(RegimeModel(), 0);
  auto learner_model = *common::model::Transformer::RandomInit(RegimeModel(), 0);
  v1::TrainerConfig tc;
  tc.set_lr(5e-5);
  tc.set_mini_batches(4);
  tc.set_micro_batch_size(8);
  v1::CreditConfig actor_cc, learner_cc;  // coupled
  learner_cc.set_summary_source(v1::SUMMARY_SOURCE_LEARNER);
  learner_cc.set_summary_agreement(state.range(0) == 1);
  common::rollout::TapOptions tap;  // W = 10, band [10, 100], default layers, q = 0.3
  auto actor = *Trainer::Create(*actor_model, tc, actor_cc, 1, 0, 1.0, tap);
  auto learner = *Trainer::Create(*learner_model, tc, learner_cc, 1, 0, 1.0, tap);
  std::vector<double> actor_s, learner_s, ratio;
  uint64_t seed = 0;
  for (auto _ : state) {
    const std::vector<Group> batch = RegimeBatch(++seed);
    // Alternate which goes first, so neither always runs on a warm cache.
    double t[2] = {0, 0};
    for (int k = 0; k < 2; ++k) {
      const int which = (k + static_cast<int>(seed)) % 2;
      Trainer& trainer = which == 0 ? *actor : *learner;
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<StepStats> s = trainer.Step(batch);
      t[which] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (!s.ok()) {
        state.SkipWithError(std::string(s.status().message()).c_str());
        return;
      }
      benchmark::DoNotOptimize(s->loss);
    }
    actor_s.push_back(t[0]);
    learner_s.push_back(t[1]);
    ratio.push_back(t[1] / t[0]);
  }
  state.counters["actor_step_ms"] = 1e3 * Median(actor_s);
  state.counters["learner_step_ms"] = 1e3 * Median(learner_s);
  state.counters["ratio_median"] = Median(ratio);
  state.counters["pairs"] = static_cast<double>(ratio.size());
}
BENCHMARK(BM_TrainerStepLearnerVsActorSummaries)
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(30)
    ->UseRealTime();

// Where the extra time goes: one micro-batch of 8 regime-shaped sequences (right-padded), the
// no-grad forward of the old-log-prob pass as the actor source runs it, against the same
// forward capturing the tapped layers plus SummaryFromMaps for each of the 8 sequences,
// alternately. Counters: median ms of each part per micro-batch.
void BM_OldLogprobPassWithSummaries(benchmark::State& state) {
  at::set_num_threads(1);
  auto model = *common::model::Transformer::RandomInit(RegimeModel(), 0);
  const common::rollout::TapOptions tap =
      *common::rollout::ResolveTapOptions({}, RegimeModel().num_layers);
  const std::vector<Group> batch = RegimeBatch(7);
  std::vector<int64_t> prompt_len, response_len;
  int64_t len = 0;
  for (int i = 0; i < 8; ++i) {
    const v1::Rollout& r = batch[0][i];
    prompt_len.push_back(r.prompt_token_ids_size());
    response_len.push_back(r.response_token_ids_size());
    len = std::max(len, prompt_len.back() + response_len.back());
  }
  at::Tensor ids = at::zeros({8, len}, at::kLong), mask = at::zeros({8, len});
  for (int i = 0; i < 8; ++i) {
    const v1::Rollout& r = batch[0][i];
    int64_t j = 0;
    for (uint32_t t : r.prompt_token_ids()) ids[i][j++] = static_cast<int64_t>(t);
    for (uint32_t t : r.response_token_ids()) ids[i][j++] = static_cast<int64_t>(t);
    mask[i].narrow(0, 0, j).fill_(1.0);
  }
  at::NoGradGuard no_grad;
  std::vector<double> plain, captured, summaries;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    benchmark::DoNotOptimize(model->Forward(ids, mask).value().logits);
    auto t1 = std::chrono::steady_clock::now();
    common::model::ForwardOutput out = model->Forward(ids, mask, tap.layers).value();
    auto t2 = std::chrono::steady_clock::now();
    for (int64_t b = 0; b < 8; ++b) {
      std::vector<at::Tensor> maps;
      for (const at::Tensor& layer : out.attention) maps.push_back(layer[b]);
      benchmark::DoNotOptimize(
          common::rollout::SummaryFromMaps(tap, maps, prompt_len[b], response_len[b]));
    }
    auto t3 = std::chrono::steady_clock::now();
    plain.push_back(std::chrono::duration<double>(t1 - t0).count());
    captured.push_back(std::chrono::duration<double>(t2 - t1).count());
    summaries.push_back(std::chrono::duration<double>(t3 - t2).count());
  }
  state.counters["forward_ms"] = 1e3 * Median(plain);
  state.counters["forward_capture_ms"] = 1e3 * Median(captured);
  state.counters["summaries_ms"] = 1e3 * Median(summaries);
  state.counters["rows"] =
      static_cast<double>(std::accumulate(response_len.begin(), response_len.end(), int64_t{0}));
}
BENCHMARK(BM_OldLogprobPassWithSummaries)->Unit(benchmark::kMillisecond)->MinTime(10);

}  // namespace
}  // namespace rhythm::learner
