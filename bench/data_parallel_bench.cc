// The data-parallel learner's step time (issue 18): one rank alone against two ranks over Gloo
// on loopback (this process is rank 0; rank 1 is this program again, spawned with --rank 1),
// side by side in one run on the reasoning regime's shapes (bench/regime_batch.h: the
// warm-countdown3 architecture, 4 groups x 8 responses of 40-100 tokens, 4 updates per batch,
// micro-batches of 8). Cases, each timed over --steps steps after one warm-up step, alternating
// for --rounds rounds so they see the same machine load:
//   1 rank, --threads torch threads;  1 rank, 2 x --threads threads (the same cores as two
//   ranks);  2 ranks, --threads each.
// Prints one line per case: median step time, the 2-rank ratio, and AdamW state per rank.
// Run: build/bin/bench_data_parallel [--steps 5] [--rounds 3] [--threads 1] [--wide 0|1]
// (--wide 0 skips the 2 x --threads case)
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "ATen/ATen.h"
#include "ATen/Parallel.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/regime_batch.h"
#include "common/model/transformer.h"
#include "common/runtime.h"
#include "common/subprocess.h"
#include "learner/rank_group.h"
#include "learner/trainer.h"

namespace rhythm::learner {
namespace {

using common::model::Transformer;

v1::TrainerConfig Config() {
  v1::TrainerConfig tc;
  tc.set_lr(5e-5);
  tc.set_mini_batches(4);
  tc.set_micro_batch_size(8);
  return tc;
}

std::unique_ptr<Transformer> Model() { return *Transformer::RandomInit(bench::RegimeModel(), 3); }

struct Case {
  std::vector<double> seconds;  // per step
  int64_t state_numel = 0;
};

// `steps` steps (after one warm-up) of a trainer on `ranks` (null: alone).
absl::Status TimeSteps(int steps, RankGroup* ranks, Case& c) {
  auto m = Model();
  auto t = Trainer::Create(*m, Config(), v1::CreditConfig(), 1, 0, 1.0, {}, {}, ranks);
  if (!t.ok()) return t.status();
  c.state_numel = (*t)->optimizer_state_numel();
  for (int i = 0; i <= steps; ++i) {
    const std::vector<Group> batch = bench::RegimeBatch(100 + i);
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<StepStats> s = (*t)->Step(batch);
    if (!s.ok()) return s.status();
    if (i > 0) {
      c.seconds.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
  }
  (*t)->StopRanks();
  return absl::OkStatus();
}

int Follower(const std::string& dir) {
  RankGroup::Options o;
  o.world_size = 2;
  o.rank = 1;
  o.run_dir = dir;
  auto g = RankGroup::Create(o);
  if (!g.ok()) {
    std::fprintf(stderr, "rank 1: %s\n", g.status().ToString().c_str());
    return 1;
  }
  auto m = Model();
  auto t = Trainer::Create(*m, Config(), v1::CreditConfig(), 1, 0, 1.0, {}, {}, g->get());
  absl::Status s = t.ok() ? (*t)->FollowRank0() : t.status();
  if (!s.ok()) std::fprintf(stderr, "rank 1: %s\n", s.ToString().c_str());
  return s.ok() ? 0 : 1;
}

int Main(int argc, char** argv) {
  common::UseTheCpusBlasKernels();
  int steps = 5, rounds = 3, threads = 1, rank = 0, wide = 1;
  std::string dir;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    bool ok = true;
    if (k == "--steps")
      ok = absl::SimpleAtoi(v, &steps);
    else if (k == "--rounds")
      ok = absl::SimpleAtoi(v, &rounds);
    else if (k == "--threads")
      ok = absl::SimpleAtoi(v, &threads);
    else if (k == "--rank")
      ok = absl::SimpleAtoi(v, &rank);
    else if (k == "--wide")
      ok = absl::SimpleAtoi(v, &wide);
    else if (k == "--dir")
      dir = v;
    else
      ok = false;
    if (!ok) {
      std::fprintf(stderr, "bench_data_parallel: bad flag %s %s\n", k.c_str(), v.c_str());
      return 2;
    }
  }
  at::set_num_threads(threads);
  if (rank == 1) return Follower(dir);
  const std::string self = common::SelfExecutable();
  Case one, one_wide, two;
  for (int r = 0; r < rounds; ++r) {
    at::set_num_threads(threads);
    if (absl::Status s = TimeSteps(steps, nullptr, one); !s.ok()) {
      std::fprintf(stderr, "1 rank: %s\n", s.ToString().c_str());
      return 1;
    }
    at::set_num_threads(2 * threads);
    if (absl::Status s = wide ? TimeSteps(steps, nullptr, one_wide) : absl::OkStatus(); !s.ok()) {
      std::fprintf(stderr, "1 rank, wide: %s\n", s.ToString().c_str());
      return 1;
    }
    at::set_num_threads(threads);
    const std::string d = absl::StrCat("/tmp/bench_data_parallel.", getpid(), ".", r);
    std::filesystem::remove_all(d);
    common::ChildProcess follower;
    if (!follower.Start({self, "--rank", "1", "--dir", d, "--threads", std::to_string(threads)},
                        d + ".rank1.log")) {
      std::fprintf(stderr, "cannot spawn rank 1\n");
      return 1;
    }
    RankGroup::Options o;
    o.world_size = 2;
    o.run_dir = d;
    auto g = RankGroup::Create(o);
    if (!g.ok()) {
      std::fprintf(stderr, "rank 0: %s\n", g.status().ToString().c_str());
      return 1;
    }
    if (absl::Status s = TimeSteps(steps, g->get(), two); !s.ok()) {
      std::fprintf(stderr, "2 ranks: %s\n", s.ToString().c_str());
      return 1;
    }
    follower.Stop(SIGTERM, 30);
    std::filesystem::remove_all(d);
    std::filesystem::remove(d + ".rank1.log");
  }
  const double t1 = bench::Median(one.seconds), t1w = bench::Median(one_wide.seconds),
               t2 = bench::Median(two.seconds);
  std::printf(
      "bench_data_parallel: %d rounds x %d steps, 32 sequences per step, %d thread(s) "
      "per rank\n",
      rounds, steps, threads);
  std::printf("  1 rank,  %d thread(s):  %.3f s/step  AdamW state %lld elements\n", threads, t1,
              static_cast<long long>(one.state_numel));
  if (wide) std::printf("  1 rank,  %d thread(s):  %.3f s/step\n", 2 * threads, t1w);
  std::printf(
      "  2 ranks, %d thread(s) each: %.3f s/step  (%.2fx the 1-rank time)  AdamW state "
      "%lld elements per rank\n",
      threads, t2, t2 / t1, static_cast<long long>(two.state_numel));
  std::printf("  per-round 1-rank / 2-rank medians:");
  for (int r = 0; r < rounds; ++r) {
    auto round = [&](const Case& c) {
      return bench::Median(
          std::vector<double>(c.seconds.begin() + r * steps, c.seconds.begin() + (r + 1) * steps));
    };
    std::printf(" %.2f/%.2f", round(one), round(two));
  }
  std::printf("\n");
  return 0;
}

}  // namespace
}  // namespace rhythm::learner

int main(int argc, char** argv) { return rhythm::learner::Main(argc, argv); }
