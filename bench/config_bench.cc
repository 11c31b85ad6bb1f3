// How long loading and dumping the whole configuration takes (it happens at every start and on
// every actor registration).
#include "benchmark/benchmark.h"
#include "common/config.h"

namespace {

void BM_LoadDefaultsWithOverrides(benchmark::State& state) {
  const std::vector<std::string> overrides = {"trainer.lr=1e-6", "credit.strategy=coupled",
                                              "generation.stop_strings=[a, b]"};
  for (auto _ : state) {
    auto config = rhythm::common::LoadConfig("", overrides);
    benchmark::DoNotOptimize(config);
  }
}
BENCHMARK(BM_LoadDefaultsWithOverrides);

void BM_ConfigYamlRoundTrip(benchmark::State& state) {
  const auto config = rhythm::common::LoadConfig("", {}).value();
  for (auto _ : state) {
    rhythm::v1::RhythmConfig back;
    auto status = rhythm::common::MergeYaml(rhythm::common::ConfigToYaml(config), "bench", back);
    benchmark::DoNotOptimize(status);
  }
}
BENCHMARK(BM_ConfigYamlRoundTrip);

}  // namespace
