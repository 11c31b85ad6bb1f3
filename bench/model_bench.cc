// Starting figures for the policy model on this machine: a 4-layer, d=256 decoder (vocab 512,
// 4 heads, 2 KV heads, MLP 1024), training forward + backward over B x T tokens, and single
// sequence greedy decode through the KV cache. Items are tokens, so items_per_second is
// tokens/s. Run: build/bin/bench_model --benchmark_min_time=2
#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include <thread>

#include "benchmark/benchmark.h"
#include "common/runtime.h"
#include "bench/bench_model_config.h"
#include "common/model/decode_kernels.h"
#include "common/model/transformer.h"

namespace rhythm::common::model {
namespace {

// The CPU's BLAS kernels, not the ones a misdetecting OpenBLAS picks (common/runtime.h); an
// explicit OPENBLAS_CORETYPE wins, e.g. Prescott to measure what that costs.
const bool kBlasKernels = (UseTheCpusBlasKernels(), KeepFreedMemoryInTheHeap(), true);


void SetThreads() { at::set_num_threads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency()))); }

void BM_TrainForwardBackward(benchmark::State& state) {
  SetThreads();
  const int64_t b = state.range(0), t = state.range(1);
  auto m = *Transformer::RandomInit(bench::BenchModelConfig(), 0);
  m->SetRequiresGrad(true);
  const at::Tensor ids = at::randint(512, {b, t}, at::kLong);
  const at::Tensor mask = at::ones({b, t});
  for (auto _ : state) {
    const at::Tensor logits = m->Forward(ids, mask)->logits;
    at::cross_entropy_loss(logits.view({b * t, 512}), ids.view({b * t})).backward();
  }
  state.SetItemsProcessed(state.iterations() * b * t);
}
BENCHMARK(BM_TrainForwardBackward)->Args({16, 128})->Unit(benchmark::kMillisecond);

void BM_DecodeOneSequence(benchmark::State& state) {
  SetThreads();
  const int64_t new_tokens = state.range(0);
  auto m = *Transformer::RandomInit(bench::BenchModelConfig(), 0);
  KvCache cache(m->config(), 1, 16 + new_tokens + 1, at::kFloat, at::kCPU);
  std::vector<int32_t> prompt(16);
  for (int i = 0; i < 16; ++i) prompt[i] = (i * 37) % 512;
  for (auto _ : state) {
    cache.Reset();
    at::Tensor logits = *m->Prefill({0}, {prompt}, cache);
    for (int64_t i = 0; i < new_tokens; ++i) {
      const int64_t next = logits[0].argmax().item<int64_t>();
      logits = m->DecodeStep({next}, {1}, cache)->logits;
    }
  }
  state.SetItemsProcessed(state.iterations() * new_tokens);
}
BENCHMARK(BM_DecodeOneSequence)->Arg(128)->Unit(benchmark::kMillisecond);

// A decode step's linear layer: 16 slots through the bench model's gate/up projection (W
// [2048, 256]) and down projection: BLAS (at::mm_out, kernel 0) against the packed decode
// kernel (2), one thread. Items are FLOP.
void BM_DecodeLinear(benchmark::State& state) {
  at::set_num_threads(1);
  const int64_t kernel = state.range(0);
  const int64_t m = 16, k = state.range(1), n = state.range(2);
  const at::Tensor x = at::randn({m, k}), w = at::randn({n, k});
  at::Tensor out = at::empty({m, n});
  kernels::PackedWeight packed;
  kernels::PackWeight(w.data_ptr<float>(), n, k, &packed);
  for (auto _ : state) {
    if (kernel == 2) {
      kernels::LinearPacked(x.data_ptr<float>(), m, packed, nullptr, false, out.data_ptr<float>());
    } else {
      at::mm_out(out, x, w.t());
    }
    benchmark::DoNotOptimize(out.data_ptr<float>());
  }
  state.SetItemsProcessed(state.iterations() * 2 * m * k * n);
}
BENCHMARK(BM_DecodeLinear)
    ->ArgNames({"kernel", "k", "n"})
    ->Args({0, 256, 2048})
    ->Args({2, 256, 2048})
    ->Args({0, 1024, 256})
    ->Args({2, 1024, 256});

}  // namespace
}  // namespace rhythm::common::model
