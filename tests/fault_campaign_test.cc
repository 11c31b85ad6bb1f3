// The fault campaign: a real learner and three actors (fixed actor ids, one of them through a
// FaultProxy) under a seeded random schedule of faults for a bounded time: kill -9 of the
// learner then --resume on the same port; kill -9 of an actor then a restart with the same id;
// SIGSTOP of an actor past learner.heartbeat_timeout_s then SIGCONT; reply dropping and
// blackholes on the proxy. Then everything is stopped cleanly and FaultAudit checks, from the
// journal, the per-incarnation dumps, the logs and the final checkpoint, that every acked
// rollout was trained exactly once or is still queued, that versions never went back and that
// training continued after every resume.
//
// The seed is printed; RHYTHM_FAULT_SEED=<n> replays a schedule (process timing still varies,
// so a replay is the same faults at about the same moments, not the same interleaving).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/fault_audit.h"
#include "tests/fault_proxy.h"
#include "tests/loop_procs.h"

namespace rhythm::testing {
namespace {

constexpr int kGroupSize = 2;            // SmallLoopConfig's trainer.group_size
constexpr double kHeartbeatTimeout = 2;  // learner.heartbeat_timeout_s
constexpr double kFaultSeconds = 50;     // the faulty phase; the whole test is ~60 s

enum Fault { kLearnerKill, kActorKill, kActorStop, kReplyDrop, kBlackhole, kNumFaults };
const char* const kFaultNames[] = {"learner_kill9", "actor_kill9", "actor_sigstop",
                                   "proxy_reply_drop", "proxy_blackhole"};

uint64_t Seed() {
  if (const char* s = std::getenv("RHYTHM_FAULT_SEED"); s != nullptr && *s != '\0') {
    return std::strtoull(s, nullptr, 10);
  }
  return 20251201;
}

double Uniform(std::mt19937_64& rng, double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(rng);
}

class Campaign {
 public:
  explicit Campaign(uint64_t seed) : rng_(seed) {
    run_ = ::testing::TempDir() + "/fault_campaign";
    std::filesystem::remove_all(run_);
    std::filesystem::remove_all(run_ + ".out");
    std::filesystem::create_directories(run_ + ".out");
    port_ = FreePort();
  }

  const std::string& run() const { return run_; }
  const std::vector<Incarnation>& incarnations() const { return incarnations_; }
  const std::vector<double>& lifetimes() const { return lifetimes_; }
  int injected(Fault f) const { return injected_[f]; }
  int restarts_while_down() const { return restarts_while_down_; }
  Proc& learner() { return *learner_; }
  FaultProxy& proxy() { return *proxy_; }

  void StartLearnerIncarnation() {
    const int k = static_cast<int>(incarnations_.size());
    Incarnation inc{absl::StrCat(run_, ".out/learner-", k, ".log"),
                    absl::StrCat(run_, ".out/dumps-", k)};
    learner_ = std::make_unique<Proc>();
    StartLearner(*learner_, run_, port_, /*resume=*/k > 0, inc.log,
                 {"--set", absl::StrCat("learner.heartbeat_timeout_s=", kHeartbeatTimeout), "--set",
                  "learner.lease_timeout_s=3",
                  // Stale groups would be dropped by design; the campaign audits delivery.
                  "--set", "trainer.max_staleness=1000000",
                  // Back-pressure keeps the queue short, so most acked rollouts get trained
                  // (and audited as trained) within the run rather than left queued.
                  "--set", "learner.queue_capacity=32", "--dump-rollouts", inc.dump_dir});
    incarnations_.push_back(inc);
    started_ = absl::Now();
    if (!proxy_) {
      auto p = FaultProxy::Start({port_, rng_()});
      ASSERT_TRUE(p.ok()) << p.status();
      proxy_ = *std::move(p);
    }
  }

  void StartActors() {
    for (int i = 0; i < 3; ++i) StartActorSlot(i);
  }

  // Ends the learner's current incarnation (its wall lifetime is recorded).
  int EndLearner(int signal) {
    lifetimes_.push_back(absl::ToDoubleSeconds(absl::Now() - started_));
    return learner_->p.Stop(signal, 60);
  }

  void Inject(Fault f) {
    ++injected_[f];
    const int who = std::uniform_int_distribution<int>(0, 2)(rng_);
    switch (f) {
      case kLearnerKill: {
        EXPECT_EQ(EndLearner(SIGKILL), 128 + SIGKILL);
        absl::SleepFor(absl::Seconds(Uniform(rng_, 0, 1)));
        if (Uniform(rng_, 0, 1) < 0.5) {
          // An actor restarts while the learner is down: it registers its new run with the
          // next incarnation, which must release the old run's leases it restored.
          ++injected_[kActorKill];
          ++restarts_while_down_;
          EXPECT_EQ(actors_[who]->p.Stop(SIGKILL, 10), 128 + SIGKILL);
          StartActorSlot(who);
        }
        StartLearnerIncarnation();
        break;
      }
      case kActorKill: {
        EXPECT_EQ(actors_[who]->p.Stop(SIGKILL, 10), 128 + SIGKILL);
        absl::SleepFor(absl::Seconds(Uniform(rng_, 0, 0.5)));
        StartActorSlot(who);
        break;
      }
      case kActorStop: {
        kill(actors_[who]->p.pid(), SIGSTOP);
        absl::SleepFor(absl::Seconds(kHeartbeatTimeout + Uniform(rng_, 0.5, 1.5)));
        kill(actors_[who]->p.pid(), SIGCONT);
        break;
      }
      case kReplyDrop: {
        proxy_->SetReplyDropProbability(Uniform(rng_, 0.05, 0.3));
        absl::SleepFor(absl::Seconds(Uniform(rng_, 1, 3)));
        proxy_->SetReplyDropProbability(0);
        break;
      }
      case kBlackhole: {
        const absl::Duration d = absl::Seconds(Uniform(rng_, 1, 3));
        proxy_->Blackhole(d);
        absl::SleepFor(d + absl::Milliseconds(100));
        break;
      }
      case kNumFaults:
        break;
    }
  }

  // Faults for `seconds`: every class once per round, in a seeded order, with seeded gaps.
  void RunFaults(double seconds) {
    const absl::Time end = absl::Now() + absl::Seconds(seconds);
    std::vector<Fault> bag;
    while (absl::Now() < end && !::testing::Test::HasFatalFailure()) {
      absl::SleepFor(absl::Seconds(Uniform(rng_, 0.5, 2.5)));
      if (bag.empty()) {
        bag = {kLearnerKill, kActorKill, kActorStop, kReplyDrop, kBlackhole};
        std::shuffle(bag.begin(), bag.end(), rng_);
      }
      const Fault f = bag.back();
      bag.pop_back();
      std::cout << "fault campaign: t+" << absl::ToInt64Seconds(absl::Now() - end) + seconds << "s "
                << kFaultNames[f] << std::endl;
      Inject(f);
    }
  }

  // SIGCONT for all (none should be stopped), then SIGTERM: every surviving actor process must
  // have every rollout it sent answered (acked, or rejected as stale after its lease expired).
  void StopActors() {
    for (auto& a : actors_) kill(a->p.pid(), SIGCONT);
    for (int i = 0; i < 3; ++i) {
      const ActorReport r = StopActor(*actors_[i]);
      EXPECT_GE(r.sent, 0) << "actor " << i << " printed its report";
      EXPECT_EQ(r.acked + r.rejected, r.sent) << "actor " << i << ": every rollout answered";
    }
  }

 private:
  void StartActorSlot(int i) {
    actors_[i] = std::make_unique<Proc>();
    // actor-0 talks to the learner through the proxy.
    const int port = i == 0 ? proxy_->port() : port_;
    StartActor(*actors_[i], port, absl::StrCat("actor-", i),
               absl::StrCat(run_, ".out/actor-", i, "-", actor_starts_[i]++, ".log"));
  }

  std::mt19937_64 rng_;
  std::string run_;
  int port_ = 0;
  std::unique_ptr<Proc> learner_;
  std::unique_ptr<FaultProxy> proxy_;
  std::unique_ptr<Proc> actors_[3];
  int actor_starts_[3] = {0, 0, 0};
  std::vector<Incarnation> incarnations_;
  std::vector<double> lifetimes_;
  absl::Time started_;
  int injected_[kNumFaults] = {};
  int restarts_while_down_ = 0;  // of injected_[kActorKill]
};

TEST(FaultCampaign, SeededFaultsLoseNothingTrainNothingTwiceAndVersionsGoForward) {
  const auto wall = std::chrono::steady_clock::now();
  const uint64_t seed = Seed();
  std::cout << "fault campaign: seed " << seed << " (RHYTHM_FAULT_SEED=" << seed
            << " replays this schedule)" << std::endl;
  Campaign c(seed);
  c.StartLearnerIncarnation();
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  c.StartActors();
  ASSERT_FALSE(::testing::Test::HasFatalFailure());
  ASSERT_TRUE(WaitFor(
      [&] { return Metric(c.learner().metrics_port, "rhythm_learner_steps_total") >= 2; }, 60))
      << "the loop trains before any fault";

  c.RunFaults(kFaultSeconds);
  ASSERT_FALSE(::testing::Test::HasFatalFailure());

  // Settle: no faults, the last incarnation trains on.
  c.proxy().SetReplyDropProbability(0);
  const double steps_before = Metric(c.learner().metrics_port, "rhythm_learner_steps_total");
  EXPECT_TRUE(WaitFor(
      [&] {
        return Metric(c.learner().metrics_port, "rhythm_learner_steps_total") >= steps_before + 2;
      },
      60))
      << "training continues after the last fault";
  c.StopActors();
  EXPECT_EQ(c.EndLearner(SIGTERM), 0) << "SIGTERM writes the final checkpoint and exits 0";

  const FaultAuditReport rep = AuditRun(c.run(), c.incarnations(), kGroupSize);
  const FaultProxy::Counters pc = c.proxy().counters();
  std::string faults;
  for (int f = 0; f < kNumFaults; ++f) {
    absl::StrAppend(&faults, kFaultNames[f], "=", c.injected(static_cast<Fault>(f)), " ");
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count();
  std::cout << "fault campaign summary: seed " << seed << " | faults " << faults
            << "(actor kills while the learner was down " << c.restarts_while_down()
            << "; proxy cuts " << pc.replies_dropped << " reply, " << pc.blackhole_cuts
            << " blackhole) | " << rep.Summary() << " | learner incarnations "
            << c.incarnations().size() << " | wall " << static_cast<int>(seconds) << " s"
            << std::endl;
  for (const std::string& p : rep.problems) ADD_FAILURE() << "seed " << seed << ": " << p;
  EXPECT_EQ(rep.lost, 0);
  EXPECT_EQ(rep.duplicated, 0);
  EXPECT_GT(rep.trained, 0);
  EXPECT_EQ(rep.acked,
            rep.trained + rep.queued + rep.lost + rep.duplicated)
      << "every acked rollout has exactly one fate";
  // The faults happened, and the learner saw them.
  for (int f = 0; f < kNumFaults; ++f) {
    EXPECT_GE(c.injected(static_cast<Fault>(f)), 1) << kFaultNames[f] << " was injected";
  }
  EXPECT_EQ(static_cast<int>(c.incarnations().size()), 1 + c.injected(kLearnerKill));
  EXPECT_GE(rep.restarts, c.injected(kActorKill)) << "each restarted actor re-registered";
  // (c) Steps continued after every resume: an incarnation that lived 6 s trained.
  for (size_t k = 0; k < c.incarnations().size(); ++k) {
    if (c.lifetimes()[k] >= 6) {
      EXPECT_GE(rep.steps_logged[k], 1) << "incarnation " << k << " lived " << c.lifetimes()[k]
                                        << " s; see " << c.incarnations()[k].log;
    }
  }
  if (::testing::Test::HasFailure()) return;

  // The audit is not vacuous: a batch trained twice, or a trained batch gone, is caught.
  const Incarnation& last = c.incarnations().back();
  std::vector<std::filesystem::path> steps;
  for (const auto& e : std::filesystem::directory_iterator(last.dump_dir)) steps.push_back(e);
  ASSERT_FALSE(steps.empty()) << "the last incarnation trained";
  std::sort(steps.begin(), steps.end());
  std::filesystem::copy_file(steps.front(), last.dump_dir + "/step-99999999.jsonl");
  const FaultAuditReport twice = AuditRun(c.run(), c.incarnations(), kGroupSize);
  EXPECT_GT(twice.duplicated, 0) << "a batch dumped twice in the lineage is caught";
  std::filesystem::remove(last.dump_dir + "/step-99999999.jsonl");
  std::filesystem::remove(steps.front());
  const FaultAuditReport gone = AuditRun(c.run(), c.incarnations(), kGroupSize);
  EXPECT_GT(gone.lost, 0) << "a trained batch that vanished is caught";
  if (!::testing::Test::HasFailure()) {
    std::filesystem::remove_all(c.run());
    std::filesystem::remove_all(c.run() + ".out");
  }
}

}  // namespace
}  // namespace rhythm::testing
