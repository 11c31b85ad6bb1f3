// A learner step at long response lengths (issue 18): peak memory and time of the gradient
// forward + backward for today's explicit attention, chunked attention, and chunked attention
// with per-layer activation checkpointing; plus the no-grad old-log-prob pass, explicit (as it
// ran before 2026-12-02) and chunked (the Trainer's call site now).
//
//   build/bin/bench_long_sequence [--lengths 512,2048,4096] [--reps 3] [--warmup 1]
//                                 [--threads 1] [--batch 2] [--chunk 256] [--configs a,b]
// (--configs: a comma-separated subset of the configuration names in the table)
//
// Each (length, configuration) runs in a fresh child process (this binary with --child), so
// its peak RSS (VmHWM) is its own; the parent never touches torch. The model is
// bench_model_config.h's (4 layers, d = 256, 4 heads, 2 KV heads, 4.07 M parameters) with
// max_position_embeddings raised; the batch is `batch` rows of a 64-token prompt and a
// response of the given length, the second row's response 10% shorter (right padding). The
// loss is the trainer's policy-gradient surrogate at ratio 1: −Σ A · log π(response token) /
// tokens, with log_softmax over the vocabulary. The time is the median over `reps` steps
// after `warmup` steps; one intra-op thread by default (on the shared 2-core machine two
// threads made a step 2.8x slower: OpenMP barrier spinning while other jobs held a core);
// "allocator peak" is the CPU allocator's own count over one step (cpu_memory_meter.h), "VmHWM" the
// process's peak RSS, model and all.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include "bench/bench_model_config.h"
#include "common/model/cpu_memory_meter.h"
#include "common/model/transformer.h"

namespace rhythm::bench {
namespace {

using common::model::ForwardOptions;

constexpr int64_t kPrompt = 64;

struct Args {
  std::vector<int64_t> lengths = {512, 2048, 4096};
  int reps = 3;
  int warmup = 1;
  int threads = 1;
  int64_t batch = 2;
  int64_t chunk = 256;
  // Child only.
  bool child = false;
  int64_t length = 0;
  std::string config;
  std::vector<std::string> configs;  // the parent's subset; empty = all
};

const char* const kConfigs[] = {"explicit", "chunked", "chunked+ckpt", "old-logprob explicit",
                                "old-logprob chunked"};

int64_t StatusKb(const char* key) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(key, 0) == 0) return std::atoll(line.c_str() + std::string(key).size());
  }
  return -1;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty()      ? 0
         : v.size() % 2 ? v[v.size() / 2]
                        : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// One step in this process; prints "median_s alloc_peak_bytes vmhwm_kb rss_before_kb".
int Child(const Args& a) {
  at::set_num_threads(a.threads);
  common::model::ModelConfig c = BenchModelConfig();
  c.max_position_embeddings = kPrompt + a.length;
  auto model = common::model::Transformer::RandomInit(c, 1);
  if (!model.ok()) {
    std::cerr << model.status() << "\n";
    return 1;
  }
  common::model::Transformer& m = **model;
  const bool grad = a.config.rfind("old-logprob", 0) != 0;
  m.SetRequiresGrad(grad);
  const int64_t t = kPrompt + a.length;
  at::manual_seed(2);
  const at::Tensor ids = at::randint(3, c.vocab_size, {a.batch, t}, at::kLong);
  at::Tensor mask = at::ones({a.batch, t}, at::kLong);
  if (a.batch > 1) mask[1].narrow(0, t - a.length / 10, a.length / 10).fill_(0);
  const at::Tensor adv = at::randn({a.batch, a.length});
  // Response token j (position kPrompt + j) is predicted by position kPrompt + j - 1.
  const at::Tensor targets = ids.narrow(1, kPrompt, a.length).unsqueeze(-1);
  const at::Tensor resp_mask = mask.narrow(1, kPrompt, a.length).to(at::kFloat);
  ForwardOptions o;
  if (a.config == "chunked") o = ForwardOptions::Training(a.chunk, false);
  if (a.config == "chunked+ckpt") o = ForwardOptions::Training(a.chunk, true);
  if (a.config == "old-logprob chunked") o = ForwardOptions::Training(a.chunk, false);
  auto step = [&]() {
    for (const at::Tensor& p : m.Parameters()) p.mutable_grad() = at::Tensor();
    if (!grad) {
      at::NoGradGuard no_grad;
      const at::Tensor logits = m.Forward(ids, mask, o).value().logits;
      return logits.sum().item<double>();
    }
    const at::Tensor logits = m.Forward(ids, mask, o).value().logits;
    const at::Tensor logp = at::log_softmax(logits.narrow(1, kPrompt - 1, a.length), -1)
                                .gather(-1, targets)
                                .squeeze(-1);
    const at::Tensor loss = -(logp * adv * resp_mask).sum() / resp_mask.sum();
    loss.backward();
    return loss.item<double>();
  };
  const int64_t rss_before = StatusKb("VmRSS:");
  for (int w = 0; w < a.warmup; ++w) step();
  std::vector<double> times;
  auto meter = std::make_shared<common::model::CpuMemoryMeter>();
  for (int r = 0; r < a.reps; ++r) {
    const auto start = std::chrono::steady_clock::now();
    if (r == 0) {
      c10::DebugInfoGuard guard(c10::DebugInfoKind::PROFILER_STATE, meter);
      step();
    } else {
      step();
    }
    times.push_back(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::printf("%.3f %lld %lld %lld\n", Median(times), static_cast<long long>(meter->peak()),
              static_cast<long long>(StatusKb("VmHWM:")), static_cast<long long>(rss_before));
  return 0;
}

std::vector<int64_t> ParseList(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) out.push_back(std::atoll(item.c_str()));
  return out;
}

int Parent(const Args& a, const std::string& self) {
  std::printf(
      "batch %lld x (64-token prompt + response), %d threads, chunk %lld, median of %d after "
      "%d warm-up\n",
      static_cast<long long>(a.batch), a.threads, static_cast<long long>(a.chunk), a.reps,
      a.warmup);
  std::printf("| response | configuration | step s | allocator peak MB | VmHWM MB |\n");
  std::printf("|---:|---|---:|---:|---:|\n");
  for (int64_t len : a.lengths) {
    for (const char* config : kConfigs) {
      if (!a.configs.empty() &&
          std::find(a.configs.begin(), a.configs.end(), config) == a.configs.end()) {
        continue;
      }
      std::ostringstream cmd;
      cmd << "'" << self << "' --child --length " << len << " --config '" << config << "' --reps "
          << a.reps << " --warmup " << a.warmup << " --threads " << a.threads << " --batch "
          << a.batch << " --chunk " << a.chunk;
      FILE* p = popen(cmd.str().c_str(), "r");
      double secs = 0;
      long long alloc = 0, hwm = 0, before = 0;
      const int got =
          p == nullptr ? 0 : std::fscanf(p, "%lf %lld %lld %lld", &secs, &alloc, &hwm, &before);
      const int rc = p == nullptr ? -1 : pclose(p);
      if (got != 4 || rc != 0) {
        std::printf("| %lld | %s | failed (exit %d) | | |\n", static_cast<long long>(len), config,
                    rc);
        continue;
      }
      std::printf("| %lld | %s | %.2f | %.0f | %.0f |\n", static_cast<long long>(len), config, secs,
                  alloc / 1e6, hwm / 1024.0);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace rhythm::bench

int main(int argc, char** argv) {
  rhythm::bench::Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << k << ": missing value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--child") {
      a.child = true;
    } else if (k == "--lengths") {
      a.lengths = rhythm::bench::ParseList(value());
    } else if (k == "--reps") {
      a.reps = std::max(1, std::atoi(value().c_str()));
    } else if (k == "--warmup") {
      a.warmup = std::max(0, std::atoi(value().c_str()));
    } else if (k == "--threads") {
      a.threads = std::max(1, std::atoi(value().c_str()));
    } else if (k == "--batch") {
      a.batch = std::max<int64_t>(1, std::atoll(value().c_str()));
    } else if (k == "--chunk") {
      a.chunk = std::max<int64_t>(1, std::atoll(value().c_str()));
    } else if (k == "--length") {
      a.length = std::atoll(value().c_str());
    } else if (k == "--config") {
      a.config = value();
    } else if (k == "--configs") {
      std::stringstream in(value());
      for (std::string c; std::getline(in, c, ',');) a.configs.push_back(c);
    } else {
      std::cerr << "unknown flag " << k << "\n";
      return 2;
    }
  }
  if (a.child) return rhythm::bench::Child(a);
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return 1;
  self[n] = 0;
  return rhythm::bench::Parent(a, self);
}
