// RolloutLog throughput: fsync'd group commits of 4 KB records (what acking a rollout costs),
// the replay path a restart takes, and the CRC-32C underneath both.
//
//   build/bin/bench_rollout_log --benchmark_min_time=1
//
// The log is written under $RHYTHM_BENCH_DIR (default /tmp), which must be on the disk you want
// to measure (not tmpfs: there fsync is free).
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "benchmark/benchmark.h"
#include "common/crc32c.h"
#include "learner/rollout_log.h"

namespace rhythm::learner {
namespace {

std::string BenchDir(absl::string_view name) {
  const char* base = std::getenv("RHYTHM_BENCH_DIR");
  return absl::StrCat(base != nullptr ? base : "/tmp", "/rollout_log_bench_", ::getpid(), "_",
                      name);
}

std::string RandomRecord(size_t n, std::mt19937& rng) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

std::unique_ptr<RolloutLog> OpenOrDie(const std::string& dir, benchmark::State& state) {
  std::filesystem::remove_all(dir);
  RolloutLog::Options options;
  options.dir = dir;
  auto log = RolloutLog::Open(options);
  if (!log.ok()) {
    state.SkipWithError(std::string(log.status().message()).c_str());
    return nullptr;
  }
  return std::move(log).value();
}

// One iteration = one AppendAndSync of range(0) records of 4 KB: write + one fsync.
void BM_AppendAndSync4KB(benchmark::State& state) {
  constexpr size_t kRecordBytes = 4096;
  const int group = static_cast<int>(state.range(0));
  std::mt19937 rng(1);
  std::vector<std::string> batch;
  for (int i = 0; i < group; ++i) batch.push_back(RandomRecord(kRecordBytes, rng));
  const std::string dir = BenchDir(absl::StrCat("append_", group));
  std::unique_ptr<RolloutLog> log = OpenOrDie(dir, state);
  if (log == nullptr) return;
  for (auto _ : state) {
    auto seq = log->AppendAndSync(batch);
    if (!seq.ok()) {
      state.SkipWithError(std::string(seq.status().message()).c_str());
      break;
    }
    benchmark::DoNotOptimize(*seq);
  }
  state.SetItemsProcessed(state.iterations() * group);
  state.SetBytesProcessed(state.iterations() * group * static_cast<int64_t>(kRecordBytes));
  log.reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_AppendAndSync4KB)->Arg(1)->Arg(8)->Arg(32)->UseRealTime();

// Replay of 64 MiB of 4 KB records from the page cache: read + checksum, the CPU part of a
// restart (Open does the same scan).
void BM_Replay4KB(benchmark::State& state) {
  constexpr size_t kRecordBytes = 4096;
  constexpr int kRecords = 16384;
  std::mt19937 rng(2);
  const std::string dir = BenchDir("replay");
  std::unique_ptr<RolloutLog> log = OpenOrDie(dir, state);
  if (log == nullptr) return;
  std::vector<std::string> batch;
  for (int i = 0; i < 256; ++i) batch.push_back(RandomRecord(kRecordBytes, rng));
  for (int i = 0; i < kRecords / 256; ++i) {
    if (!log->AppendAndSync(batch).ok()) return state.SkipWithError("append failed");
  }
  for (auto _ : state) {
    int64_t seen = 0;
    const absl::Status s = log->Replay(0, [&](uint64_t, absl::string_view record) {
      seen += static_cast<int64_t>(record.size());
      return absl::OkStatus();
    });
    if (!s.ok()) return state.SkipWithError(std::string(s.message()).c_str());
    benchmark::DoNotOptimize(seen);
  }
  state.SetItemsProcessed(state.iterations() * kRecords);
  state.SetBytesProcessed(state.iterations() * kRecords * static_cast<int64_t>(kRecordBytes));
  log.reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_Replay4KB)->Unit(benchmark::kMillisecond);

void BM_Crc32c(benchmark::State& state, bool hardware) {
  if (hardware && !common::crc32c_internal::HardwareAvailable()) {
    return state.SkipWithError("no SSE4.2");
  }
  std::mt19937 rng(3);
  const std::string data = RandomRecord(static_cast<size_t>(state.range(0)), rng);
  for (auto _ : state) {
    benchmark::DoNotOptimize(
        hardware ? common::crc32c_internal::ExtendHardware(0, data.data(), data.size())
                 : common::crc32c_internal::ExtendPortable(0, data.data(), data.size()));
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK_CAPTURE(BM_Crc32c, hardware, true)->Arg(4096)->Arg(1 << 20);
BENCHMARK_CAPTURE(BM_Crc32c, portable, false)->Arg(4096)->Arg(1 << 20);

}  // namespace
}  // namespace rhythm::learner
