// Generation throughput of the rollout engine with attention taps on and off, side by side in
// one run (the machines are noisy: compare the ratio), for a 4-layer d=256 model, batch 16 x 128
// new tokens, and the memory of the online summary state against the N x N maps of the tapped
// layers that the reference (and the paper's extra forward pass) materialises.
// Run: build/bin/bench_generation --benchmark_min_time=3 --benchmark_repetitions=3
#include <thread>

#include "ATen/Parallel.h"
#include "benchmark/benchmark.h"
#include "bench/bench_model_config.h"
#include "common/rollout/engine.h"

namespace rhythm::common::rollout {
namespace {


void BM_Generate(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  const bool taps = state.range(0) != 0;
  auto m = *model::Transformer::RandomInit(bench::BenchModelConfig(), 0);
  std::vector<std::vector<int32_t>> prompts(16);
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16 + i; ++j) prompts[i].push_back((i * 31 + j * 7) % 512);  // ragged
  }
  GenerationOptions o;
  o.max_new_tokens = 128;
  o.taps = taps;
  GenerationStats stats;
  int64_t tokens = 0;
  for (auto _ : state) {
    auto out = GenerationEngine(*m).Generate(prompts, o, &stats);
    tokens += stats.new_tokens;
  }
  state.SetItemsProcessed(tokens);
  state.counters["summary_state_MB"] = stats.summary_state_bytes / 1e6;
  // What full maps of the tapped layers would take for this batch: B x heads x N x N fp32.
  const int64_t n = 31 + 128;
  const int64_t tapped = static_cast<int64_t>(DefaultTapLayers(4).size());
  state.counters["full_maps_MB"] = taps ? 16.0 * tapped * 4 * n * n * 4 / 1e6 : 0.0;
}
BENCHMARK(BM_Generate)->Arg(0)->Arg(1)->ArgName("taps")->Unit(benchmark::kMillisecond);

// Taps off and on alternately in every iteration, so both see the same machine load; reports
// the overhead of taps from the fastest run of each (the least disturbed one).
void BM_TapOverheadPaired(benchmark::State& state) {
  at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  auto m = *model::Transformer::RandomInit(bench::BenchModelConfig(), 0);
  std::vector<std::vector<int32_t>> prompts(16);
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16 + i; ++j) prompts[i].push_back((i * 31 + j * 7) % 512);
  }
  GenerationOptions off, on;
  off.max_new_tokens = on.max_new_tokens = 128;
  off.taps = false;
  double best_off = 1e30, best_on = 1e30;
  GenerationStats stats;
  for (auto _ : state) {
    for (GenerationOptions* o : {&off, &on}) {
      auto out = GenerationEngine(*m).Generate(prompts, *o, &stats);
      double& best = o->taps ? best_on : best_off;
      best = std::min(best, stats.seconds);
    }
  }
  state.counters["off_tok_per_s"] = 16 * 128 / best_off;
  state.counters["on_tok_per_s"] = 16 * 128 / best_on;
  state.counters["overhead_pct"] = 100.0 * (best_on / best_off - 1.0);
}
BENCHMARK(BM_TapOverheadPaired)->Iterations(8)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace rhythm::common::rollout
