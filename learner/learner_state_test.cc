// LearnerState: leases with hard deadlines and named renewals, durable sessions, the dataset
// cursor, versions; and the property the learner's durability rests on: a snapshot taken at any
// point plus replay of the records after it equals applying every record straight through.
#include "learner/learner_state.h"

#include <random>

#include "gtest/gtest.h"
#include "learner/journal.h"

namespace rhythm::learner {
namespace {

PromptSpec Prompt(uint64_t index) {
  PromptSpec spec;
  spec.prompt_id = 1000 + index;
  spec.text = "p" + std::to_string(index);
  spec.token_ids = {1, 2};
  spec.answer = "a";
  return spec;
}

LearnerState::Options Opts(uint32_t group_size = 2) {
  LearnerState::Options o;
  o.group_size = group_size;
  o.lease_timeout_s = 60;
  o.lease_max_lifetime_s = 150;
  o.ledger_window = 64;
  return o;
}

// A state and its queue, driven the way the learner drives it: plan, "journal", apply.
struct Machine {
  explicit Machine(LearnerState::Options o = Opts(), PromptSource source = Prompt)
      : queue({/*batch_groups=*/1, /*max_staleness=*/1000, /*drop_zero_variance=*/false}),
        state(std::move(source), o, queue) {}
  // Applies and remembers (the journal).
  std::vector<LearnerState::RolloutOutcome> Commit(const std::vector<v1::JournalRecord>& rs) {
    std::vector<LearnerState::RolloutOutcome> out;
    for (const v1::JournalRecord& r : rs) {
      // What is applied is what would be read back from the log.
      absl::StatusOr<v1::JournalRecord> back = DecodeRecord(journal.size() + 1, EncodeRecord(r));
      EXPECT_TRUE(back.ok()) << back.status();
      journal.push_back(*back);
      out.push_back(state.Apply(*back));
      state.set_log_seq(journal.size());
    }
    return out;
  }
  std::vector<v1::PromptLease> Lease(const std::string& actor, uint32_t n, double now) {
    std::vector<v1::PromptLease> out;
    std::vector<v1::JournalRecord> rs = state.PlanGrants(actor, n, now);
    Commit(rs);
    for (const auto& r : rs) {
      if (r.has_grant()) out.push_back(r.grant().lease());
    }
    return out;
  }
  BatchAssembler queue;
  LearnerState state;
  std::vector<v1::JournalRecord> journal;
};

v1::JournalRecord RolloutRecord(const v1::PromptLease& lease, uint32_t sample, uint64_t id,
                                const std::string& actor = "a", const std::string& run = "r1",
                                double reward = 1) {
  v1::JournalRecord rec;
  v1::Rollout* r = rec.mutable_rollout();
  r->set_rollout_id(id);
  r->set_actor_id(actor);
  r->set_run_id(run);
  r->set_group_id(lease.lease_id());
  r->set_prompt_id(lease.prompt_id());
  r->set_sample_index(sample);
  r->set_group_size(lease.group_size());
  r->add_version_spans()->set_version(0);
  r->add_response_token_ids(7);
  r->add_behaviour_logprobs(-1);
  r->mutable_verifier()->set_reward(reward);
  return rec;
}

v1::JournalRecord Expiry(uint64_t lease_id) {
  v1::JournalRecord r;
  r.mutable_expiry()->set_lease_id(lease_id);
  return r;
}

v1::JournalRecord Session(const std::string& actor, const std::string& run) {
  v1::JournalRecord r;
  r.mutable_session()->set_actor_id(actor);
  r.mutable_session()->set_run_id(run);
  return r;
}

std::string Bytes(const LearnerState& s) {
  std::string out;
  s.Snapshot().SerializeToString(&out);
  return out;
}

auto Never = [](const std::string&) { return false; };

TEST(LearnerState, GrantsInOrderReissuesExpiredPromptsFirstUnderNewIds) {
  Machine m(Opts(4));
  std::vector<v1::PromptLease> a = m.Lease("actor-a", 2, 1000);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].prompt_id(), 1000u);
  EXPECT_EQ(a[1].prompt_id(), 1001u);
  EXPECT_EQ(a[0].group_size(), 4u);
  EXPECT_DOUBLE_EQ(a[0].deadline_unix_s(), 1060.0);
  // actor-a goes silent: its leases expire; actor-b's do not.
  std::vector<v1::PromptLease> b = m.Lease("actor-b", 1, 1005);
  m.Commit(m.state.PlanExpiries(1011, [](const std::string& x) { return x == "actor-a"; }));
  EXPECT_EQ(m.state.outstanding(), 1);
  EXPECT_EQ(m.state.FindLease(a[1].lease_id()), nullptr);
  std::vector<v1::PromptLease> c = m.Lease("actor-b", 3, 1012);
  EXPECT_EQ(c[0].prompt_id(), 1000u) << "the expired prompts come first";
  EXPECT_EQ(c[1].prompt_id(), 1001u);
  EXPECT_EQ(c[2].prompt_id(), 1003u);
  EXPECT_GT(c[0].lease_id(), b[0].lease_id()) << "under new lease ids";
}

TEST(LearnerState, ALeaseHasAHardDeadlineThatOnlyANamedRenewalMoves) {
  Machine m;
  std::vector<v1::PromptLease> l = m.Lease("a", 2, 1000);
  // The actor is alive (never silent) but names only the first lease: the second expires at its
  // deadline although its actor kept heartbeating (failure 2: a lost LeasePrompts reply).
  for (double t = 1010; t <= 1050; t += 10) {
    if (auto r = m.state.PlanRenewal("a", l[0].lease_id(), t)) m.Commit({*r});
  }
  EXPECT_DOUBLE_EQ(m.state.FindLease(l[0].lease_id())->lease().deadline_unix_s(), 1100);
  EXPECT_TRUE(m.state.PlanExpiries(1060, Never).empty());
  std::vector<v1::JournalRecord> e = m.state.PlanExpiries(1061, Never);
  ASSERT_EQ(e.size(), 1u);
  EXPECT_EQ(e[0].expiry().lease_id(), l[1].lease_id());
  m.Commit(e);
  // Renewals are rate-limited (a quarter of the timeout) and never pass the lifetime (150 s).
  EXPECT_FALSE(m.state.PlanRenewal("a", l[0].lease_id(), 1051).has_value());
  EXPECT_FALSE(m.state.PlanRenewal("b", l[0].lease_id(), 1090).has_value()) << "not b's lease";
  for (double t = 1090; t <= 1300; t += 20) {
    if (auto r = m.state.PlanRenewal("a", l[0].lease_id(), t)) m.Commit({*r});
  }
  EXPECT_DOUBLE_EQ(m.state.FindLease(l[0].lease_id())->lease().deadline_unix_s(), 1150);
  EXPECT_EQ(m.state.PlanExpiries(1151, Never).size(), 1u);
}

TEST(LearnerState, SkippedPromptsMoveTheCursorAndAllUnusableGrantsNothing) {
  std::vector<uint64_t> skipped;
  LearnerState::Options o = Opts();
  o.on_skip = [&](uint64_t index, const PromptSpec& spec) {
    EXPECT_EQ(spec.skip_reason, "too_long");
    skipped.push_back(index);
  };
  Machine m(o, [](uint64_t i) {
    PromptSpec spec = Prompt(i);
    if (i == 1 || i == 2 || i == 5) spec.skip_reason = "too_long";
    return spec;
  });
  std::vector<v1::PromptLease> got = m.Lease("a", 3, 0);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(got[1].prompt_id(), 1003u);
  EXPECT_EQ(got[2].prompt_id(), 1004u);
  EXPECT_EQ(skipped, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(m.Lease("a", 1, 0)[0].prompt_id(), 1006u);
  EXPECT_EQ(m.state.Snapshot().next_prompt_index(), 7u);

  Machine none(Opts(), [](uint64_t i) {
    PromptSpec spec = Prompt(i);
    spec.skip_reason = "unencodable";
    return spec;
  });
  EXPECT_TRUE(none.Lease("a", 2, 0).empty()) << "returns rather than spinning";
  EXPECT_EQ(none.state.Snapshot().next_prompt_index(), 10000u)
      << "a cursor record moved past the skipped prompts";
}

TEST(LearnerState, AnExpiryReplayedAfterACheckpointNeitherStallsNorLosesTheGroup) {
  // Failure 1: the actor dies mid-group, its lease expires, the learner is killed and resumes,
  // over and over. Each resume restores the checkpoint and replays the journal after it. Before,
  // replay kept the partial groups without their leases and the queue filled with groups that
  // never complete (measured: queue depth 0 -> 5 -> 8 -> ... -> 24, then a permanent stall).
  // Now the ended lease's group waits for a lease that completes it, live and replayed alike:
  // at most one partial group at a time, and every rollout committed ends in a complete group.
  Machine live;
  v1::DurableState checkpoint = live.state.Snapshot();
  size_t checkpoint_seq = 0;
  uint64_t id = 1;
  for (int cycle = 0; cycle < 8; ++cycle) {
    std::vector<v1::PromptLease> l = live.Lease("a", 1, 1000 + cycle);
    ASSERT_EQ(l.size(), 1u);
    // A fresh lease gets sample 0 (half a group); a continuation its missing sample.
    const uint32_t sample = l[0].sample_indices_size() > 0 ? l[0].sample_indices(0) : 0;
    EXPECT_EQ(l[0].sample_indices_size(), cycle % 2) << "cycle " << cycle;
    live.Commit({RolloutRecord(l[0], sample, id++)});
    checkpoint = live.state.Snapshot();  // a checkpoint with the partial group
    checkpoint_seq = live.journal.size();
    live.Commit({Expiry(l[0].lease_id())});
    // kill -9, then --resume: a fresh state restores the checkpoint and replays the rest.
    Machine back;
    ASSERT_TRUE(back.state.Restore(checkpoint).ok());
    for (size_t i = checkpoint_seq; i < live.journal.size(); ++i) {
      back.state.Apply(live.journal[i]);
      back.state.set_log_seq(i + 1);
    }
    EXPECT_LE(back.queue.PartialGroups().size(), 1u) << "cycle " << cycle;
    EXPECT_EQ(Bytes(back.state), Bytes(live.state)) << "cycle " << cycle;
  }
  EXPECT_EQ(live.queue.queued(), 8) << "no committed rollout was dropped";
  EXPECT_TRUE(live.queue.PartialGroups().empty()) << "4 complete groups of 2";
  EXPECT_EQ(live.state.outstanding(), 0);
}

TEST(LearnerState, AGroupWhoseLeaseEndedIsCompletedByTheNextLeaseOfItsPrompt) {
  Machine m(Opts(4));
  std::vector<v1::PromptLease> l = m.Lease("a", 2, 0);
  // Samples 0 and 2 of the first group are acked, then its actor goes silent.
  m.Commit({RolloutRecord(l[0], 0, 1), RolloutRecord(l[0], 2, 2)});
  std::vector<v1::JournalRecord> expired =
      m.state.PlanExpiries(0, [](const std::string&) { return true; });
  ASSERT_EQ(expired.size(), 2u);
  m.Commit(expired);
  EXPECT_EQ(m.queue.queued(), 2) << "kept, not dropped";
  // The next grant continues the group (first), then re-issues the untouched prompt.
  std::vector<v1::JournalRecord> plan = m.state.PlanGrants("b", 2, 10);
  ASSERT_EQ(plan.size(), 2u);
  const v1::OutstandingLease& cont = plan[0].grant();
  EXPECT_EQ(cont.continues_group(), l[0].lease_id());
  EXPECT_EQ(cont.lease().prompt_id(), l[0].prompt_id());
  EXPECT_EQ(std::vector<uint32_t>(cont.lease().sample_indices().begin(),
                                  cont.lease().sample_indices().end()),
            (std::vector<uint32_t>{1, 3}));
  EXPECT_EQ(plan[1].grant().continues_group(), 0u);
  EXPECT_EQ(plan[1].grant().lease().prompt_id(), l[1].prompt_id());
  EXPECT_EQ(plan[1].grant().lease().sample_indices_size(), 0) << "a whole group";
  m.Commit(plan);
  // A snapshot mid-continuation restores to the same state.
  Machine back(Opts(4));
  ASSERT_TRUE(back.state.Restore(m.state.Snapshot()).ok());
  EXPECT_EQ(Bytes(back.state), Bytes(m.state));
  using O = LearnerState::RolloutOutcome;
  const v1::PromptLease& c = cont.lease();
  EXPECT_EQ(back.Commit({RolloutRecord(c, 1, 1, "b", "rb")})[0], O::kQueued);
  EXPECT_EQ(back.Commit({RolloutRecord(c, 3, 2, "b", "rb")})[0], O::kGroupComplete);
  std::optional<std::vector<Group>> batch = back.queue.NextBatch(0, absl::ZeroDuration());
  ASSERT_TRUE(batch.has_value());
  ASSERT_EQ((*batch)[0].size(), 4u);
  for (uint32_t i = 0; i < 4; ++i) {
    EXPECT_EQ((*batch)[0][i].sample_index(), i);
    EXPECT_EQ((*batch)[0][i].group_id(), c.lease_id()) << "held under the continuing lease";
  }
  EXPECT_EQ((*batch)[0][0].actor_id(), "a") << "actor a's acked samples are trained";
}

TEST(LearnerState, RestoreDropsPartialGroupsWithoutALease) {
  // A checkpoint written by the old learner could hold a partial group whose lease was gone.
  Machine m;
  std::vector<v1::PromptLease> l = m.Lease("a", 2, 0);
  m.Commit({RolloutRecord(l[0], 0, 1), RolloutRecord(l[1], 0, 2), RolloutRecord(l[1], 1, 3)});
  v1::DurableState s = m.state.Snapshot();
  ASSERT_EQ(s.queued_size(), 3);
  s.clear_outstanding();  // l[0]'s lease gone; l[1] is complete (no lease needed)
  Machine back;
  ASSERT_TRUE(back.state.Restore(s).ok());
  EXPECT_EQ(back.queue.queued(), 2) << "only the complete group stays";
}

TEST(LearnerState, ARestartedActorsOldLeasesAreReleasedEvenAcrossALearnerRestart) {
  // Failure 2: an actor with a fixed actor_id restarts while the learner is down. Sessions are
  // durable, so its registration with a new run id releases the old run's leases.
  Machine m;
  m.Commit({Session("a", "r1")});
  std::vector<v1::PromptLease> l = m.Lease("a", 2, 0);
  m.Commit({RolloutRecord(l[0], 0, 1)});
  Machine back;
  ASSERT_TRUE(back.state.Restore(m.state.Snapshot()).ok());
  EXPECT_FALSE(back.state.PlanSession("a", "r1").has_value()) << "the same run: nothing to do";
  std::optional<v1::JournalRecord> s = back.state.PlanSession("a", "r2");
  ASSERT_TRUE(s.has_value());
  back.Commit({*s});
  EXPECT_EQ(back.state.outstanding(), 0);
  EXPECT_EQ(back.queue.queued(), 1) << "its acked sample waits for the group's completion";
  EXPECT_EQ(back.state.RunOf("a"), "r2");
  EXPECT_EQ(back.state.ledger().runs(), 0) << "the old run can never resend: forgotten";
  std::vector<v1::PromptLease> again = back.Lease("b", 2, 0);
  ASSERT_EQ(again.size(), 2u);
  EXPECT_EQ(again[0].prompt_id(), 1000u) << "its prompts are issued again";
  EXPECT_EQ(again[0].sample_indices_size(), 1) << "the first only for its missing sample";
  EXPECT_EQ(again[1].prompt_id(), 1001u);
}

// Issue 17: the identity that registered an actor is part of its durable session, so a learner
// restart (checkpoint or journal replay) does not let another identity take the actor_id.
TEST(LearnerState, TheRegisteringIdentitySurvivesCheckpointAndReplay) {
  Machine m;
  std::optional<v1::JournalRecord> s = m.state.PlanSession("a", "r1", "cn-a");
  ASSERT_TRUE(s.has_value());
  m.Commit({*s});
  EXPECT_EQ(m.state.IdentityOf("a"), "cn-a");
  EXPECT_EQ(m.state.IdentityOf("b"), "") << "never registered";
  EXPECT_FALSE(m.state.PlanSession("a", "r1", "cn-a").has_value());
  EXPECT_TRUE(m.state.PlanSession("a", "r1", "cn-b").has_value())
      << "another identity is a change the server must decide on";
  std::vector<v1::PromptLease> l = m.Lease("a", 3, 0);
  EXPECT_EQ(m.state.LeasesHeldBy("a"), 3);
  EXPECT_EQ(m.state.LeasesHeldBy("b"), 0);
  Machine back;  // from the checkpoint
  ASSERT_TRUE(back.state.Restore(m.state.Snapshot()).ok());
  EXPECT_EQ(back.state.IdentityOf("a"), "cn-a");
  EXPECT_EQ(back.state.LeasesHeldBy("a"), 3);
  Machine replayed;  // from the journal alone
  replayed.Commit({*s});
  EXPECT_EQ(replayed.state.IdentityOf("a"), "cn-a");
}

TEST(LearnerState, RolloutsAreIngestedOnceAndPublicationsSurviveARestore) {
  Machine m;
  std::vector<v1::PromptLease> l = m.Lease("a", 1, 0);
  using O = LearnerState::RolloutOutcome;
  EXPECT_EQ(m.Commit({RolloutRecord(l[0], 0, 1)})[0], O::kQueued);
  EXPECT_EQ(m.Commit({RolloutRecord(l[0], 0, 1)})[0], O::kDuplicate);
  EXPECT_EQ(m.Commit({RolloutRecord(l[0], 1, 2)})[0], O::kGroupComplete);
  EXPECT_EQ(m.state.outstanding(), 0);
  EXPECT_EQ(m.Commit({RolloutRecord(l[0], 1, 3)})[0], O::kDeadGroup) << "lease retired";
  EXPECT_TRUE(m.state.Seen(RolloutRecord(l[0], 1, 3).rollout())) << "but recorded as ingested";
  v1::JournalRecord p;
  p.mutable_publication()->set_version(7);
  m.Commit({p});
  p.mutable_publication()->set_version(5);
  m.Commit({p});
  EXPECT_EQ(m.state.max_published_version(), 7) << "only forward";
  Machine back;
  ASSERT_TRUE(back.state.Restore(m.state.Snapshot()).ok());
  EXPECT_EQ(back.state.max_published_version(), 7);
  EXPECT_EQ(back.queue.queued(), 2);
}

TEST(LearnerState, LegacyCheckpointsConvert) {
  v1::LearnerCheckpoint c;
  c.set_version(4);
  c.set_log_seq(9);
  c.set_next_prompt_index(3);
  c.set_next_lease_id(5);
  c.add_seen_rollouts("a/r1/1");
  c.add_seen_rollouts("a/r1/3");
  c.add_seen_rollouts("b/r9/2");
  Machine m;
  ASSERT_TRUE(m.state.Restore(LearnerState::FromLegacy(c)).ok());
  v1::Rollout r;
  r.set_actor_id("a");
  r.set_run_id("r1");
  for (uint64_t id : {1, 3}) {
    r.set_rollout_id(id);
    EXPECT_TRUE(m.state.Seen(r)) << id;
  }
  r.set_rollout_id(2);
  EXPECT_FALSE(m.state.Seen(r));
  EXPECT_EQ(m.state.max_published_version(), 4);
  EXPECT_EQ(m.state.log_seq(), 9u);
  EXPECT_EQ(m.Lease("x", 1, 0)[0].lease_id(), 5u);
}

TEST(LearnerState, SnapshotPlusReplayEqualsStraightApplicationOnRandomJournals) {
  for (uint32_t seed = 1; seed <= 40; ++seed) {
    std::mt19937 rng(seed);
    auto pick = [&](size_t n) { return std::uniform_int_distribution<size_t>(0, n - 1)(rng); };
    Machine live;
    const std::vector<std::string> actors = {"a", "b", "c"};
    std::map<std::string, int> run;  // actor -> run number
    std::map<std::string, uint64_t> next_id;
    std::vector<v1::PromptLease> leases;
    double now = 1000;
    // Snapshots at random points: (journal position, snapshot).
    std::vector<std::pair<size_t, v1::DurableState>> snaps = {{0, live.state.Snapshot()}};
    for (int step = 0; step < 300; ++step) {
      now += std::uniform_real_distribution<double>(0, 8)(rng);
      const std::string& actor = actors[pick(actors.size())];
      const std::string run_id = actor + "-r" + std::to_string(run[actor]);
      switch (pick(8)) {
        case 0:
        case 1:
          for (auto& l : live.Lease(actor, 1 + pick(3), now)) leases.push_back(l);
          break;
        case 2:
        case 3:
        case 4:
          if (!leases.empty()) {  // a rollout, sometimes a resend, sometimes for a dead lease
            const v1::PromptLease& l = leases[pick(leases.size())];
            const uint64_t id = pick(5) == 0 && next_id[run_id] > 1
                                    ? 1 + pick(next_id[run_id] - 1)
                                    : ++next_id[run_id];
            live.Commit({RolloutRecord(l, static_cast<uint32_t>(pick(2)), id, actor, run_id,
                                       static_cast<double>(pick(2)))});
          }
          break;
        case 5:
          live.Commit(live.state.PlanExpiries(now, [&](const std::string& x) {
            return x == actors[pick(actors.size())] && pick(4) == 0;
          }));
          if (!leases.empty()) {
            if (auto r = live.state.PlanRelease(leases[pick(leases.size())].lease_id())) {
              if (pick(3) == 0) live.Commit({*r});
            }
          }
          break;
        case 6:
          if (!leases.empty()) {
            if (auto r = live.state.PlanRenewal(actor, leases[pick(leases.size())].lease_id(),
                                                now)) {
              live.Commit({*r});
            }
          }
          break;
        case 7: {
          if (pick(2) == 0) ++run[actor];  // a restart
          const std::string r = actor + "-r" + std::to_string(run[actor]);
          if (auto s = live.state.PlanSession(actor, r)) live.Commit({*s});
          v1::JournalRecord p;
          p.mutable_publication()->set_version(static_cast<int64_t>(pick(50)));
          live.Commit({p});
          break;
        }
      }
      if (pick(10) == 0) snaps.emplace_back(live.journal.size(), live.state.Snapshot());
      // Invariant: every partial group queued has its lease outstanding, or waits (once) for
      // one that continues it.
      std::map<uint64_t, int> continued;
      const v1::DurableState now_state = live.state.Snapshot();
      for (const auto& c : now_state.continuations()) ++continued[c.group_id()];
      for (uint64_t g : live.queue.PartialGroups()) {
        ASSERT_TRUE(live.state.FindLease(g) != nullptr || continued[g] == 1)
            << "seed " << seed << " step " << step;
        ASSERT_FALSE(live.state.FindLease(g) != nullptr && continued[g] > 0);
      }
    }
    const std::string want = Bytes(live.state);
    for (const auto& [pos, snap] : snaps) {
      Machine back;
      // Through bytes, as a checkpoint would be.
      std::string wire;
      snap.SerializeToString(&wire);
      v1::DurableState read;
      ASSERT_TRUE(read.ParseFromString(wire));
      ASSERT_TRUE(back.state.Restore(read).ok());
      for (size_t i = pos; i < live.journal.size(); ++i) {
        back.state.Apply(live.journal[i]);
        back.state.set_log_seq(i + 1);
      }
      ASSERT_EQ(Bytes(back.state), want) << "seed " << seed << ", snapshot at record " << pos;
    }
  }
}

}  // namespace
}  // namespace rhythm::learner
