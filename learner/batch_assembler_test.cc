// Batch assembly with zero-variance filtering and DAPO dynamic sampling, against a brute-force
// model of the rule (learner/batch_assembler.h), plus the blocking behaviour and the config
// checks.
#include "learner/batch_assembler.h"

#include <atomic>
#include <random>
#include <set>
#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace rhythm::learner {
namespace {

constexpr uint32_t kGroupSize = 3;

// One rollout of group `group`, at policy version `version`.
v1::Rollout Sample(uint64_t group, uint32_t sample, double reward, int64_t version = 5) {
  v1::Rollout r;
  r.set_rollout_id(group * 100 + sample + 1);
  r.set_group_id(group);
  r.set_sample_index(sample);
  r.set_group_size(kGroupSize);
  r.add_version_spans()->set_version(version);
  r.mutable_verifier()->set_reward(reward);
  return r;
}

// A complete group: all rewards 0 when `zero_variance`, else one of them 1.
void AddGroup(BatchAssembler& b, uint64_t group, bool zero_variance) {
  for (uint32_t s = 0; s < kGroupSize; ++s) {
    b.Add(Sample(group, s, !zero_variance && s == 1 ? 1.0 : 0.0));
  }
}

// The rule, the slow and obvious way: each poll examines every group that arrived since the
// last one; a zero-variance group is counted and forgotten, any other is held. A poll hands out
// the batch_groups lowest held ids when that many are held; with dynamic sampling, when at
// least one is held and the drops since the last batch plus the held groups reach
// (1 + rounds) * batch_groups, it hands out everything held (a short batch).
struct Model {
  int64_t b = 1, rounds = 0;
  bool dynamic = false;
  std::vector<std::pair<uint64_t, bool>> arrived;  // (group, zero variance), not examined yet
  std::set<uint64_t> held;
  int64_t dropped = 0;  // since the last batch

  struct Batch {
    std::vector<uint64_t> groups;
    int64_t dropped = 0;
    int64_t extra_rounds = 0;
    bool short_batch = false;
  };
  std::optional<Batch> Poll() {
    for (const auto& [g, zero] : arrived) {
      if (zero) {
        ++dropped;
      } else {
        held.insert(g);
      }
    }
    arrived.clear();
    const int64_t n = static_cast<int64_t>(held.size());
    const bool full = n >= b;
    const bool spent = dynamic && n >= 1 && dropped + n >= (1 + rounds) * b;
    if (!full && !spent) return std::nullopt;
    Batch out;
    while (static_cast<int64_t>(out.groups.size()) < b && !held.empty()) {
      out.groups.push_back(*held.begin());
      held.erase(held.begin());
    }
    out.dropped = dropped;
    // Rounds of b examined groups it took, less the first.
    const int64_t examined = dropped + static_cast<int64_t>(out.groups.size());
    int64_t rounds_used = 0;
    while (rounds_used * b < examined) ++rounds_used;
    out.extra_rounds = std::max<int64_t>(0, rounds_used - 1);
    out.short_batch = static_cast<int64_t>(out.groups.size()) < b;
    dropped = 0;
    return out;
  }
};

TEST(BatchAssemblerDynamicSampling, MatchesTheBruteForceRuleOnRandomStreams) {
  std::mt19937_64 rng(20);
  int64_t short_batches_seen = 0, full_after_extra_rounds = 0, batches_seen = 0;
  for (int trial = 0; trial < 400; ++trial) {
    Model m;
    m.b = std::uniform_int_distribution<int64_t>(1, 4)(rng);
    m.rounds = std::uniform_int_distribution<int64_t>(0, 3)(rng);
    m.dynamic = trial % 2 == 0;
    const double p_zero = std::uniform_real_distribution<double>(0.0, 0.95)(rng);
    BatchAssembler::Options o;
    o.batch_groups = m.b;
    o.max_staleness = 1000;
    o.drop_zero_variance = true;
    o.dynamic_sampling = m.dynamic;
    o.max_extra_rounds = m.rounds;
    BatchAssembler b(o);
    // Group ids arrive out of order within small windows, as leases finish unevenly.
    std::vector<uint64_t> ids(120);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = 10 + i;
    for (size_t i = 0; i + 3 < ids.size(); i += 3)
      std::shuffle(ids.begin() + i, ids.begin() + i + 3, rng);
    int64_t want_short = 0, want_rounds = 0, want_batches = 0;
    for (size_t next = 0; next < ids.size() || !m.arrived.empty();) {
      // A burst of 0-3 arrivals (several groups completing while the trainer steps), then a
      // poll.
      const int burst = std::uniform_int_distribution<int>(0, 3)(rng);
      for (int i = 0; i < burst && next < ids.size(); ++i, ++next) {
        const bool zero = std::bernoulli_distribution(p_zero)(rng);
        AddGroup(b, ids[next], zero);
        m.arrived.emplace_back(ids[next], zero);
      }
      BatchAssembler::BatchInfo info;
      std::optional<std::vector<Group>> got = b.NextBatch(5, absl::ZeroDuration(), &info);
      std::optional<Model::Batch> want = m.Poll();
      ASSERT_EQ(got.has_value(), want.has_value()) << "trial " << trial << " at " << next;
      if (!want) continue;
      std::vector<uint64_t> got_ids;
      for (const Group& g : *got) {
        ASSERT_EQ(g.size(), kGroupSize);
        got_ids.push_back(g.front().group_id());
      }
      EXPECT_EQ(got_ids, want->groups) << "trial " << trial;
      EXPECT_EQ(info.groups, static_cast<int64_t>(want->groups.size()));
      EXPECT_EQ(info.dropped_zero_variance, want->dropped) << "trial " << trial;
      EXPECT_EQ(info.extra_rounds, want->extra_rounds) << "trial " << trial;
      EXPECT_EQ(info.short_batch, want->short_batch) << "trial " << trial;
      const int64_t examined = want->dropped + static_cast<int64_t>(want->groups.size());
      EXPECT_DOUBLE_EQ(info.filtered_fraction(),
                       static_cast<double>(want->dropped) / static_cast<double>(examined));
      if (!m.dynamic) {
        EXPECT_FALSE(info.short_batch) << "without dynamic sampling, always full";
      }
      want_short += want->short_batch ? 1 : 0;
      want_rounds += want->extra_rounds;
      ++want_batches;
      full_after_extra_rounds += !want->short_batch && want->extra_rounds > 0 ? 1 : 0;
      if (next >= ids.size() && m.arrived.empty() && m.held.empty()) break;
    }
    const BatchAssembler::Counters c = b.counters();
    EXPECT_EQ(c.batches, want_batches);
    EXPECT_EQ(c.short_batches, want_short);
    EXPECT_EQ(c.extra_rounds, want_rounds);
    short_batches_seen += want_short;
    batches_seen += want_batches;
  }
  // The streams exercised every branch.
  EXPECT_GT(short_batches_seen, 20);
  EXPECT_GT(full_after_extra_rounds, 20);
  EXPECT_GT(batches_seen, 1000);
}

TEST(BatchAssemblerDynamicSampling, AWaitingStepTrainsAShortBatchOnceItsRoundsAreSpent) {
  BatchAssembler::Options o;
  o.batch_groups = 4;
  o.drop_zero_variance = true;
  o.dynamic_sampling = true;
  o.max_extra_rounds = 2;  // at most (1 + 2) * 4 = 12 groups examined
  BatchAssembler b(o);
  std::atomic<bool> returned{false};
  std::optional<std::vector<Group>> got;
  BatchAssembler::BatchInfo info;
  std::thread trainer([&] {
    got = b.NextBatch(5, absl::Seconds(30), &info);
    returned = true;
  });
  AddGroup(b, 1, false);  // one with signal
  for (uint64_t g = 2; g <= 11; ++g) AddGroup(b, g, true);
  // 1 held + 10 dropped = 11 < 12: still waiting.
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_FALSE(returned.load());
  EXPECT_EQ(b.counters().dropped_zero_variance, 10) << "dropped as they complete";
  EXPECT_EQ(b.queued(), static_cast<int64_t>(kGroupSize)) << "dropped groups free queue room";
  AddGroup(b, 12, true);  // the twelfth examined group
  trainer.join();
  ASSERT_TRUE(got.has_value());
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ(got->front().front().group_id(), 1u);
  EXPECT_TRUE(info.short_batch);
  EXPECT_EQ(info.dropped_zero_variance, 11);
  EXPECT_EQ(info.extra_rounds, 2);
  EXPECT_DOUBLE_EQ(info.filtered_fraction(), 11.0 / 12.0);
}

TEST(BatchAssemblerDynamicSampling, WithNothingToLearnFromItKeepsWaiting) {
  for (bool dynamic : {false, true}) {
    BatchAssembler::Options o;
    o.batch_groups = 2;
    o.dynamic_sampling = dynamic;
    o.max_extra_rounds = 0;
    BatchAssembler b(o);
    for (uint64_t g = 1; g <= 20; ++g) AddGroup(b, g, true);
    EXPECT_FALSE(b.NextBatch(5, absl::Milliseconds(20)).has_value()) << dynamic;
    // The drops count for the batch that finally comes, however many calls it took.
    AddGroup(b, 21, false);
    BatchAssembler::BatchInfo info;
    std::optional<std::vector<Group>> got = b.NextBatch(5, absl::Milliseconds(20), &info);
    EXPECT_EQ(got.has_value(), dynamic) << "off: waits for a second group with signal";
    if (dynamic) {
      EXPECT_EQ(info.groups, 1);
      EXPECT_EQ(info.dropped_zero_variance, 20);
      EXPECT_EQ(info.extra_rounds, 10);  // ceil(21 / 2) - 1: they arrived before it looked
      EXPECT_TRUE(info.short_batch);
    } else {
      AddGroup(b, 22, false);
      got = b.NextBatch(5, absl::Milliseconds(20), &info);
      ASSERT_TRUE(got.has_value());
      EXPECT_EQ(info.groups, 2);
      EXPECT_FALSE(info.short_batch);
      EXPECT_EQ(info.dropped_zero_variance, 20);
    }
  }
}

TEST(BatchAssemblerDynamicSampling, StaleDropsAreNotFilteredOnes) {
  BatchAssembler::Options o;
  o.batch_groups = 2;
  o.max_staleness = 1;
  o.dynamic_sampling = true;
  o.max_extra_rounds = 0;
  BatchAssembler b(o);
  for (uint32_t s = 0; s < kGroupSize; ++s) b.Add(Sample(1, s, s == 0 ? 1.0 : 0.0, 2));  // stale
  AddGroup(b, 2, false);
  BatchAssembler::BatchInfo info;
  EXPECT_FALSE(b.NextBatch(5, absl::ZeroDuration(), &info).has_value())
      << "one group held, nothing filtered: the round is not spent";
  AddGroup(b, 3, true);
  ASSERT_TRUE(b.NextBatch(5, absl::ZeroDuration(), &info).has_value());
  EXPECT_EQ(info.groups, 1);
  EXPECT_EQ(info.dropped_zero_variance, 1);
  EXPECT_EQ(b.counters().dropped_stale, 1);
}

TEST(BatchAssemblerDynamicSampling, ConfigComesFromTheTrainerAndBadCombinationsAreNamed) {
  v1::RhythmConfig c;
  c.mutable_trainer()->set_batch_groups(8);
  c.mutable_trainer()->set_group_size(4);
  c.mutable_trainer()->set_dynamic_sampling(true);
  c.mutable_trainer()->set_dynamic_sampling_max_rounds(3);
  const BatchAssembler::Options o = BatchAssemblerOptions(c);
  EXPECT_EQ(o.batch_groups, 8);
  EXPECT_TRUE(o.dynamic_sampling);
  EXPECT_EQ(o.max_extra_rounds, 3);
  EXPECT_TRUE(o.drop_zero_variance);
  EXPECT_TRUE(ValidateBatchAssembly(c).ok());

  v1::RhythmConfig off = c;
  off.mutable_trainer()->set_dynamic_sampling(false);
  EXPECT_FALSE(BatchAssemblerOptions(off).dynamic_sampling);
  EXPECT_EQ(v1::RhythmConfig().trainer().dynamic_sampling_max_rounds(), 4) << "the default";

  v1::RhythmConfig kept = c;
  kept.mutable_credit()->set_drop_zero_variance_groups(false);
  absl::Status s = ValidateBatchAssembly(kept);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("credit.drop_zero_variance_groups"), std::string::npos) << s;
  EXPECT_TRUE(ValidateBatchAssembly(off).ok()) << "checked only with dynamic sampling";

  v1::RhythmConfig small = c;
  small.mutable_learner()->set_queue_capacity(31);
  s = ValidateBatchAssembly(small);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("learner.queue_capacity = 31"), std::string::npos) << s;
  EXPECT_NE(s.message().find("= 32"), std::string::npos) << s;
}

}  // namespace
}  // namespace rhythm::learner
