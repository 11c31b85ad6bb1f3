#include "learner/rollout_ledger.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "rhythm/v1/checkpoint.pb.h"

namespace rhythm::learner {
namespace {

// The ledger written the slow, obvious way: every inserted key, and per run the forgetting
// frontier (the largest max_seen - window reached so far); an id is seen if it was inserted or
// lies at or below the frontier. Id 0 is reserved and always seen.
class Reference {
 public:
  explicit Reference(uint64_t window) : window_(window) {}
  bool Seen(const std::string& a, const std::string& r, uint64_t id) const {
    if (id == 0 || inserted_.count({a, r, id})) return true;
    auto f = frontier_.find({a, r});
    return f != frontier_.end() && id <= f->second;
  }
  void Insert(const std::string& a, const std::string& r, uint64_t id) {
    if (id == 0) return;
    inserted_.insert({a, r, id});
    uint64_t& max_seen = max_seen_[{a, r}];
    max_seen = std::max(max_seen, id);
    uint64_t& frontier = frontier_[{a, r}];
    if (max_seen > window_) frontier = std::max(frontier, max_seen - window_);
  }
  void ForgetActor(const std::string& a, const std::string& keep) {
    for (auto it = inserted_.begin(); it != inserted_.end();) {
      it = std::get<0>(*it) == a && std::get<1>(*it) != keep ? inserted_.erase(it) : std::next(it);
    }
    for (auto* m : {&max_seen_, &frontier_}) {
      for (auto it = m->begin(); it != m->end();) {
        it = it->first.first == a && it->first.second != keep ? m->erase(it) : std::next(it);
      }
    }
  }
  int64_t runs() const { return static_cast<int64_t>(max_seen_.size()); }

 private:
  uint64_t window_;
  std::set<std::tuple<std::string, std::string, uint64_t>> inserted_;
  std::map<std::pair<std::string, std::string>, uint64_t> max_seen_, frontier_;
};

// Every id of every run up to `top`, plus one unknown run, answered alike by both.
void ExpectSameAnswers(const RolloutLedger& ledger, const Reference& ref,
                       const std::vector<std::string>& actors, const std::vector<std::string>& runs,
                       uint64_t top) {
  for (const std::string& a : actors) {
    for (const std::string& r : runs) {
      for (uint64_t id = 0; id <= top; ++id) {
        ASSERT_EQ(ledger.Seen(a, r, id), ref.Seen(a, r, id)) << a << "/" << r << "/" << id;
      }
    }
  }
  EXPECT_FALSE(ledger.Seen("nobody", "none", 1));
}

RolloutLedger RoundTrip(const RolloutLedger& ledger) {
  v1::RolloutLedgerState state;
  ledger.ToProto(&state);
  v1::RolloutLedgerState parsed;
  EXPECT_TRUE(parsed.ParseFromString(state.SerializeAsString()));
  absl::StatusOr<RolloutLedger> back = RolloutLedger::FromProto(parsed, ledger.window());
  EXPECT_TRUE(back.ok()) << back.status();
  v1::RolloutLedgerState again;
  back->ToProto(&again);
  EXPECT_EQ(again.SerializeAsString(), state.SerializeAsString());
  return *std::move(back);
}

TEST(RolloutLedger, MatchesTheReferenceUnderOutOfOrderInsertsAcrossActorsAndRuns) {
  for (uint64_t window : {0u, 1u, 5u, 64u}) {
    SCOPED_TRACE(absl::StrCat("window ", window));
    std::mt19937_64 rng(1234 + window);
    const std::vector<std::string> actors = {"a", "b", "c"};
    const std::vector<std::string> runs = {"r1", "r2"};
    RolloutLedger ledger(window);
    Reference ref(window);
    // Each run hands out ids 1, 2, 3, ... and inserts them shuffled within a span a bit wider
    // than the window (so some arrive too late and are forgotten), sometimes twice, sometimes
    // never (a rejected rollout: a hole).
    std::map<std::pair<std::string, std::string>, uint64_t> next;
    std::map<std::pair<std::string, std::string>, std::vector<uint64_t>> pending;
    uint64_t top = 0;
    for (int step = 0; step < 20000; ++step) {
      const std::string& a = actors[rng() % actors.size()];
      const std::string& r = runs[rng() % runs.size()];
      std::vector<uint64_t>& p = pending[{a, r}];
      if (p.empty() || rng() % 3 != 0) {
        const uint64_t id = ++next[{a, r}];
        top = std::max(top, id);
        if (rng() % 10 != 0) p.push_back(id);  // 1 in 10 never arrives
      }
      if (p.empty()) continue;
      const size_t span = std::min<size_t>(p.size(), window + 3);
      const size_t pick = p.size() - 1 - rng() % span;
      const uint64_t id = p[pick];
      if (rng() % 8 != 0) p.erase(p.begin() + static_cast<std::ptrdiff_t>(pick));  // else resent
      ASSERT_EQ(ledger.Seen(a, r, id), ref.Seen(a, r, id)) << a << "/" << r << "/" << id;
      ledger.Insert(a, r, id);
      ref.Insert(a, r, id);
      ASSERT_TRUE(ledger.Seen(a, r, id));
      if (step % 4000 == 0) ExpectSameAnswers(ledger, ref, actors, runs, top + 2);
    }
    ExpectSameAnswers(ledger, ref, actors, runs, top + 2);
    EXPECT_EQ(ledger.runs(), ref.runs());
    EXPECT_LE(ledger.ids_held(), ledger.runs() * static_cast<int64_t>(window));
    // A checkpoint round trip answers identically.
    RolloutLedger back = RoundTrip(ledger);
    ExpectSameAnswers(back, ref, actors, runs, top + 2);
    EXPECT_EQ(back.runs(), ledger.runs());
    EXPECT_EQ(back.ids_held(), ledger.ids_held());
  }
}

TEST(RolloutLedger, InOrderInsertsHoldNothing) {
  RolloutLedger ledger(16);
  for (uint64_t id = 1; id <= 1000; ++id) ledger.Insert("a", "r", id);
  EXPECT_EQ(ledger.ids_held(), 0);
  EXPECT_TRUE(ledger.Seen("a", "r", 1000));
  EXPECT_FALSE(ledger.Seen("a", "r", 1001));
  EXPECT_FALSE(ledger.Seen("a", "other", 1));
  EXPECT_FALSE(ledger.Seen("b", "r", 1));
  ledger.Insert("a", "r", 500);  // idempotent
  EXPECT_EQ(ledger.ids_held(), 0);
  v1::RolloutLedgerState state;
  ledger.ToProto(&state);
  ASSERT_EQ(state.runs_size(), 1);
  EXPECT_EQ(state.runs(0).watermark(), 1000u);
  EXPECT_EQ(state.runs(0).above_size(), 0);
}

TEST(RolloutLedger, CompactsAndForgetsHolesBehindTheWindow) {
  RolloutLedger ledger(4);
  for (uint64_t id : {1, 2, 4, 5}) ledger.Insert("a", "r", id);  // 3 is missing
  EXPECT_FALSE(ledger.Seen("a", "r", 3));
  EXPECT_EQ(ledger.ids_held(), 2);  // W = 2, {4, 5}
  ledger.Insert("a", "r", 3);       // fills the hole: W = 5
  EXPECT_EQ(ledger.ids_held(), 0);
  ledger.Insert("a", "r", 7);  // 6 missing: W = 5, {7}
  ledger.Insert("a", "r", 9);  // max 9 - W 5 = 4: within the window
  EXPECT_FALSE(ledger.Seen("a", "r", 6));
  ledger.Insert("a", "r", 10);  // 10 - 5 > 4: W = 6 (6 now counts as seen), then 7 compacts
  EXPECT_TRUE(ledger.Seen("a", "r", 6));
  EXPECT_FALSE(ledger.Seen("a", "r", 8));
  v1::RolloutLedgerState state;
  ledger.ToProto(&state);
  ASSERT_EQ(state.runs_size(), 1);
  EXPECT_EQ(state.runs(0).watermark(), 7u);
  EXPECT_EQ(std::vector<uint64_t>(state.runs(0).above().begin(), state.runs(0).above().end()),
            (std::vector<uint64_t>{9, 10}));
}

TEST(RolloutLedger, IdZeroIsReserved) {
  RolloutLedger ledger;
  EXPECT_TRUE(ledger.Seen("a", "r", 0));
  ledger.Insert("a", "r", 0);
  EXPECT_EQ(ledger.runs(), 0);
  EXPECT_FALSE(ledger.Seen("a", "r", 1));
}

TEST(RolloutLedger, IdsHeldStayWithinTheWindowOverManyInserts) {
  constexpr uint64_t kWindow = 256;
  RolloutLedger ledger(kWindow);
  std::mt19937_64 rng(7);
  uint64_t next = 0;
  std::vector<uint64_t> pending;
  for (int i = 0; i < 100000; ++i) {
    // Ids handed out in order; a third never arrive (holes pile up unless forgotten); the rest
    // arrive up to 2 x window late.
    while (pending.size() < 2 * kWindow) {
      ++next;
      if (rng() % 3 != 0) pending.push_back(next);
    }
    const size_t pick = rng() % pending.size();
    const std::string run = i % 2 ? "r1" : "r2";
    ledger.Insert("a", run, pending[pick]);
    pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(pick));
    ASSERT_LE(ledger.ids_held(), 2 * static_cast<int64_t>(kWindow)) << "after " << i;
    if (i % 97 == 0) {
      v1::RolloutLedgerState state;
      ledger.ToProto(&state);
      for (const v1::LedgerRun& r : state.runs()) {
        ASSERT_LE(r.above_size(), static_cast<int>(kWindow)) << r.run_id() << " after " << i;
      }
    }
  }
  EXPECT_EQ(ledger.runs(), 2);
  v1::RolloutLedgerState state;
  ledger.ToProto(&state);
  for (const v1::LedgerRun& r : state.runs()) {
    EXPECT_LE(r.above_size(), static_cast<int>(kWindow));
    ASSERT_GT(r.above_size(), 0);
    EXPECT_LE(r.above(r.above_size() - 1) - r.watermark(), kWindow);
  }
}

TEST(RolloutLedger, ForgetActorDropsItsOtherRunsOnly) {
  RolloutLedger ledger;
  for (const char* run : {"old1", "old2", "new"}) {
    ledger.Insert("a", run, 1);
    ledger.Insert("a", run, 3);
  }
  ledger.Insert("b", "old1", 1);
  ASSERT_EQ(ledger.runs(), 4);
  ledger.ForgetActor("a", "new");
  EXPECT_EQ(ledger.runs(), 2);
  EXPECT_FALSE(ledger.Seen("a", "old1", 1));
  EXPECT_FALSE(ledger.Seen("a", "old2", 3));
  EXPECT_TRUE(ledger.Seen("a", "new", 1));
  EXPECT_TRUE(ledger.Seen("a", "new", 3));
  EXPECT_FALSE(ledger.Seen("a", "new", 2));
  EXPECT_TRUE(ledger.Seen("b", "old1", 1));  // another actor's run of the same name stays
  EXPECT_EQ(ledger.ids_held(), 1);
  ledger.ForgetActor("a", "unknown");  // keeps nothing of a
  ledger.ForgetActor("nobody", "x");
  EXPECT_EQ(ledger.runs(), 1);
  EXPECT_FALSE(ledger.Seen("a", "new", 1));
}

TEST(RolloutLedger, FromProtoAppliesASmallerWindowAndCompacts) {
  v1::RolloutLedgerState state;
  v1::LedgerRun* r = state.add_runs();
  r->set_actor_id("a");
  r->set_run_id("r");
  r->set_watermark(10);
  for (uint64_t id : {11, 12, 15, 40}) r->add_above(id);  // 11, 12 not compacted
  absl::StatusOr<RolloutLedger> l = RolloutLedger::FromProto(state, 100);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->ids_held(), 2);  // W = 12, {15, 40}
  EXPECT_FALSE(l->Seen("a", "r", 13));
  l = RolloutLedger::FromProto(state, 10);  // 40 - 12 > 10: W = 30, {40}
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->ids_held(), 1);
  EXPECT_TRUE(l->Seen("a", "r", 30));
  EXPECT_FALSE(l->Seen("a", "r", 31));
}

TEST(RolloutLedger, FromProtoRejectsBadStateNamingTheField) {
  auto run = [](v1::RolloutLedgerState& s, const std::string& a, const std::string& r, uint64_t w,
                std::vector<uint64_t> above) {
    v1::LedgerRun* lr = s.add_runs();
    lr->set_actor_id(a);
    lr->set_run_id(r);
    lr->set_watermark(w);
    for (uint64_t id : above) lr->add_above(id);
  };
  struct Bad {
    std::function<void(v1::RolloutLedgerState&)> make;
    std::string want;
  };
  const std::vector<Bad> bad = {
      {[&](v1::RolloutLedgerState& s) {
         run(s, "a", "r", 7, {9, 5});
       },
       "runs[0].above[1] = 5 is not above watermark = 7"},
      {[&](v1::RolloutLedgerState& s) { run(s, "a", "r", 7, {7}); },
       "runs[0].above[0] = 7 is not above watermark = 7"},
      {[&](v1::RolloutLedgerState& s) { run(s, "a", "r", 0, {0}); },
       "runs[0].above[0] = 0 is not above watermark = 0"},
      {[&](v1::RolloutLedgerState& s) {
         run(s, "a", "r", 1, {9, 9});
       },
       "runs[0].above[1] = 9 is not greater than above[0] = 9"},
      {[&](v1::RolloutLedgerState& s) {
         run(s, "a", "r", 1, {12, 9});
       },
       "runs[0].above[1] = 9 is not greater than above[0] = 12"},
      {[&](v1::RolloutLedgerState& s) {
         run(s, "a", "r", 1, {});
         run(s, "b", "r", 1, {});
         run(s, "a", "r", 2, {});
       },
       "runs[2] (actor_id \"a\", run_id \"r\") duplicates runs[0]"},
      {[&](v1::RolloutLedgerState& s) { run(s, "", "r", 1, {}); }, "runs[0].actor_id is empty"},
      {[&](v1::RolloutLedgerState& s) {
         run(s, "a", "r", 1, {});
         run(s, "a", "", 1, {});
       },
       "runs[1].run_id is empty"},
  };
  for (const Bad& b : bad) {
    v1::RolloutLedgerState s;
    b.make(s);
    absl::StatusOr<RolloutLedger> l = RolloutLedger::FromProto(s, 4096);
    ASSERT_FALSE(l.ok()) << b.want;
    EXPECT_EQ(l.status().code(), absl::StatusCode::kDataLoss) << l.status();
    EXPECT_NE(l.status().message().find(b.want), std::string::npos) << l.status();
  }
  v1::RolloutLedgerState empty;
  absl::StatusOr<RolloutLedger> l = RolloutLedger::FromProto(empty, 4096);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->runs(), 0);
}

}  // namespace
}  // namespace rhythm::learner
