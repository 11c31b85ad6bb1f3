// The learner-side cost of the reference-policy KL (trainer.kl_coef > 0: a frozen copy of the
// weights and one more no-grad forward per micro-batch in the old-log-prob pass) and of replaying
// the actors' top-k / top-p on the learner's logits, against a trainer without either, on the
// reasoning regime's shapes (trainer_summary_bench.cc: the warm-countdown3 architecture, 4
// groups x 8 responses of 40-100 tokens, 4 updates per batch, micro-batches of 8, 1 torch
// thread).
//
// Both trainers step alternately in every iteration (which goes first alternates too), so they
// see the same machine load. Counters: the median step time of each and of the per-iteration
// ratios; memory as the reference's parameter bytes (what the copy keeps for the whole run) and
// the median peak-RSS growth of a step over the RSS before it (transient memory: activations;
// measured by resetting the high-water mark through /proc/self/clear_refs after malloc_trim).
// Arg: 0 = KL in the loss (k3), 1 = KL in the reward (k3), 2 = top-k 20 / top-p 0.95 replayed.
// Run: build/bin/bench_trainer_kl (20 s per case)
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <random>
#include <string>

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

// kB of a /proc/self/status line ("VmRSS", "VmHWM").
double StatusKb(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1));
  }
  return 0;
}

// Peak RSS growth of one call over the RSS before it, in MB.
template <typename F>
double PeakGrowthMb(F&& f) {
  malloc_trim(0);
  { std::ofstream("/proc/self/clear_refs") << "5"; }  // resets VmHWM to the current RSS
  const double before = StatusKb("VmRSS");
  f();
  return (StatusKb("VmHWM") - before) / 1024.0;
}

void BM_TrainerStepWithVsWithout(benchmark::State& state) {
  at::set_num_threads(1);
  auto base_model = *common::model::Transformer::RandomInit(RegimeModel(), 0);
  auto with_model = *common::model::Transformer::RandomInit(RegimeModel(), 0);
  v1::TrainerConfig tc;
  tc.set_lr(5e-5);
  tc.set_mini_batches(4);
  tc.set_micro_batch_size(8);
  v1::TrainerConfig with_tc = tc;
  ActorSettings actor;
  double temperature = 1.0;
  if (state.range(0) <= 1) {
    with_tc.set_kl_coef(0.01);
    with_tc.set_kl_placement(state.range(0) == 0 ? v1::KL_PLACEMENT_LOSS : v1::KL_PLACEMENT_REWARD);
  } else {
    actor.top_k = 20;
    actor.top_p = 0.95;
  }
  const v1::CreditConfig cc;  // coupled, the actor's summaries
  auto base = *Trainer::Create(*base_model, tc, cc, 1, 0, temperature, {});
  auto with = *Trainer::Create(*with_model, with_tc, cc, 1, 0, temperature, {}, actor);
  double param_bytes = 0;
  for (const auto& [name, t] : with_model->NamedParameters()) {
    param_bytes += static_cast<double>(t.numel() * t.element_size());
  }
  std::vector<double> base_s, with_s, ratio, base_mb, with_mb;
  uint64_t seed = 0;
  for (auto _ : state) {
    const std::vector<Group> batch = RegimeBatch(++seed);
    double t[2] = {0, 0}, mb[2] = {0, 0};
    for (int k = 0; k < 2; ++k) {
      const int which = (k + static_cast<int>(seed)) % 2;
      Trainer& trainer = which == 0 ? *base : *with;
      absl::StatusOr<StepStats> s;
      mb[which] = PeakGrowthMb([&] {
        const auto start = std::chrono::steady_clock::now();
        s = trainer.Step(batch);
        t[which] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      });
      if (!s.ok()) {
        state.SkipWithError(std::string(s.status().message()).c_str());
        return;
      }
      benchmark::DoNotOptimize(s->loss);
    }
    base_s.push_back(t[0]);
    with_s.push_back(t[1]);
    ratio.push_back(t[1] / t[0]);
    base_mb.push_back(mb[0]);
    with_mb.push_back(mb[1]);
  }
  state.counters["without_step_ms"] = 1e3 * Median(base_s);
  state.counters["with_step_ms"] = 1e3 * Median(with_s);
  state.counters["ratio_median"] = Median(ratio);
  state.counters["without_peak_growth_MB"] = Median(base_mb);
  state.counters["with_peak_growth_MB"] = Median(with_mb);
  state.counters["reference_MB"] = state.range(0) <= 1 ? param_bytes / (1 << 20) : 0.0;
  state.counters["pairs"] = static_cast<double>(ratio.size());
}
BENCHMARK(BM_TrainerStepWithVsWithout)
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(20)
    ->UseRealTime();

}  // namespace
}  // namespace rhythm::learner
