// Generation throughput of the rollout engine, for the bench model (bench_model_config.h):
//  * taps off and on, alternately in one run (the machines are noisy: compare the ratio), batch
//    16 x 128 new tokens, at 1 torch thread (rhythm train's layout) and at one per core, with
//    the memory of the online summary state against the N x N maps of the tapped layers that
//    the reference (and the paper's extra forward pass) materialises;
//  * continuous against static batching on a long-tail workload: 128 samples through 16 slots,
//    lengths geometric (EOS is 11 of the 512 ids of a near-uniform random model: median ~32
//    tokens) and capped at 8x the median (256).
// Run: build/bin/bench_generation  (OPENBLAS_CORETYPE matters on CPUs OpenBLAS misdetects:
// see README "Benchmarks").
#include <algorithm>
#include <thread>

#include "ATen/Parallel.h"
#include "benchmark/benchmark.h"
#include "common/runtime.h"
#include "bench/bench_model_config.h"
#include "common/rollout/engine.h"

namespace rhythm::common::rollout {
namespace {

// The CPU's BLAS kernels, not the ones a misdetecting OpenBLAS picks (common/runtime.h); an
// explicit OPENBLAS_CORETYPE wins, e.g. Prescott to measure what that costs.
const bool kBlasKernels = (UseTheCpusBlasKernels(), KeepFreedMemoryInTheHeap(), true);

int Threads(int64_t arg) {
  return arg > 0 ? static_cast<int>(arg)
                 : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

std::vector<std::vector<int32_t>> RaggedPrompts() {
  std::vector<std::vector<int32_t>> prompts(16);
  for (int i = 0; i < 16; ++i) {
    for (int j = 0; j < 16 + i; ++j) prompts[i].push_back((i * 31 + j * 7) % 512);
  }
  return prompts;
}

// Taps off and on alternately in every iteration, so both see the same machine load; reports
// the overhead of taps from the fastest run of each (the least disturbed one). Arg: threads
// (0 = one per core).
void BM_TapOverheadPaired(benchmark::State& state) {
  at::set_num_threads(Threads(state.range(0)));
  auto m = *model::Transformer::RandomInit(bench::BenchModelConfig(), 0);
  const auto prompts = RaggedPrompts();
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
  state.counters["summary_state_MB"] = stats.summary_state_bytes / 1e6;
  // What full maps of the tapped layers would take for this batch: B x heads x N x N fp32.
  const int64_t n = 31 + 128;
  const int64_t tapped = static_cast<int64_t>(DefaultTapLayers(4).size());
  state.counters["full_maps_MB"] = 16.0 * tapped * 4 * n * n * 4 / 1e6;
}
BENCHMARK(BM_TapOverheadPaired)->Arg(1)->Arg(0)->ArgName("threads")->Iterations(6)
    ->Unit(benchmark::kMillisecond);

// The decode kernels against the generic ATen ops (the path non-CPU and bf16 models take, and
// the engine's only path before the kernels), alternately, taps off, 1 thread.
void BM_KernelsVsGenericOps(benchmark::State& state) {
  at::set_num_threads(1);
  auto m = *model::Transformer::RandomInit(bench::BenchModelConfig(), 0);
  const auto prompts = RaggedPrompts();
  GenerationOptions o;
  o.max_new_tokens = 128;
  o.taps = false;
  double best_kernels = 1e30, best_generic = 1e30;
  GenerationStats stats;
  for (auto _ : state) {
    for (bool kernels : {true, false}) {
      m->UseDecodeKernels(kernels);
      auto out = GenerationEngine(*m).Generate(prompts, o, &stats);
      double& best = kernels ? best_kernels : best_generic;
      best = std::min(best, stats.seconds);
    }
  }
  state.counters["kernels_tok_per_s"] = 16 * 128 / best_kernels;
  state.counters["generic_tok_per_s"] = 16 * 128 / best_generic;
  state.counters["speedup"] = best_generic / best_kernels;
}
BENCHMARK(BM_KernelsVsGenericOps)->Iterations(4)->Unit(benchmark::kMillisecond);

// Continuous and static batching alternately on the long-tail workload, same slots, taps on.
void BM_LongTailContinuousVsStatic(benchmark::State& state) {
  at::set_num_threads(Threads(state.range(0)));
  auto m = *model::Transformer::RandomInit(bench::BenchModelConfig(), 0);
  std::vector<std::vector<int32_t>> prompts = RaggedPrompts();  // x 8 samples = 128
  GenerationOptions cont;
  cont.max_new_tokens = 256;
  cont.samples_per_prompt = 8;
  cont.slots = 16;
  for (int32_t id = 500; id < 511; ++id) cont.stop_token_ids.push_back(id);
  GenerationOptions stat = cont;
  stat.continuous = false;
  double best_cont = 1e30, best_static = 1e30;
  int64_t tokens = 0, steps_cont = 0, steps_static = 0;
  std::vector<int64_t> lengths;
  uint64_t seed = 1;
  for (auto _ : state) {
    // One seed for both; the schedules differ, so the draws (and lengths) differ a little:
    // compare tokens/s.
    cont.seed = stat.seed = seed++;
    GenerationStats sc, ss;
    auto a = GenerationEngine(*m).Generate(prompts, cont, &sc);
    auto b = GenerationEngine(*m).Generate(prompts, stat, &ss);
    best_cont = std::min(best_cont, sc.seconds / sc.new_tokens);
    best_static = std::min(best_static, ss.seconds / ss.new_tokens);
    tokens = sc.new_tokens;
    steps_cont = sc.decode_steps;
    steps_static = ss.decode_steps;
    lengths.clear();
    for (const auto& s : *a) lengths.push_back(static_cast<int64_t>(s.response_ids.size()));
  }
  std::sort(lengths.begin(), lengths.end());
  state.counters["continuous_tok_per_s"] = 1.0 / best_cont;
  state.counters["static_tok_per_s"] = 1.0 / best_static;
  state.counters["speedup"] = best_static / best_cont;
  state.counters["median_len"] = static_cast<double>(lengths[lengths.size() / 2]);
  state.counters["max_len"] = static_cast<double>(lengths.back());
  state.counters["tokens"] = static_cast<double>(tokens);
  state.counters["steps_continuous"] = static_cast<double>(steps_cont);
  state.counters["steps_static"] = static_cast<double>(steps_static);
}
BENCHMARK(BM_LongTailContinuousVsStatic)->Arg(1)->ArgName("threads")->Iterations(3)
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace rhythm::common::rollout
