#include "learner/rollout_ledger.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "rhythm/v1/checkpoint.pb.h"

namespace rhythm::learner {

RolloutLedger::RolloutLedger(uint64_t window) : window_(window) {}

bool RolloutLedger::Seen(const std::string& actor_id, const std::string& run_id,
                         uint64_t rollout_id) const {
  if (rollout_id == 0) return true;  // reserved; see the header
  auto a = actors_.find(actor_id);
  if (a == actors_.end()) return false;
  auto r = a->second.find(run_id);
  if (r == a->second.end()) return false;
  return rollout_id <= r->second.watermark || r->second.above.contains(rollout_id);
}

void RolloutLedger::Insert(const std::string& actor_id, const std::string& run_id,
                           uint64_t rollout_id) {
  if (rollout_id == 0) return;
  Run& run = actors_[actor_id][run_id];
  if (rollout_id <= run.watermark) return;
  if (rollout_id == run.watermark + 1 && run.above.empty()) {
    run.watermark = rollout_id;  // the common case: in order, nothing held
    return;
  }
  run.above.insert(rollout_id);
  Normalize(run);
}

void RolloutLedger::Normalize(Run& run) const {
  // The window first: the jump can land just below held ids, which compaction then absorbs.
  if (!run.above.empty()) {
    const uint64_t max_seen = *run.above.rbegin();
    if (max_seen - run.watermark > window_) {
      run.watermark = max_seen - window_;
      run.above.erase(run.above.begin(), run.above.upper_bound(run.watermark));
    }
  }
  while (!run.above.empty() && *run.above.begin() == run.watermark + 1) {
    run.watermark = *run.above.begin();
    run.above.erase(run.above.begin());
  }
}

void RolloutLedger::ForgetActor(const std::string& actor_id, const std::string& keep_run_id) {
  auto a = actors_.find(actor_id);
  if (a == actors_.end()) return;
  std::map<std::string, Run>& runs = a->second;
  for (auto it = runs.begin(); it != runs.end();) {
    it = it->first == keep_run_id ? std::next(it) : runs.erase(it);
  }
  if (runs.empty()) actors_.erase(a);
}

int64_t RolloutLedger::runs() const {
  int64_t n = 0;
  for (const auto& [actor, runs] : actors_) n += static_cast<int64_t>(runs.size());
  return n;
}

int64_t RolloutLedger::ids_held() const {
  int64_t n = 0;
  for (const auto& [actor, runs] : actors_) {
    for (const auto& [run_id, run] : runs) n += static_cast<int64_t>(run.above.size());
  }
  return n;
}

void RolloutLedger::ToProto(v1::RolloutLedgerState* out) const {
  out->Clear();
  for (const auto& [actor, runs] : actors_) {
    for (const auto& [run_id, run] : runs) {
      v1::LedgerRun* r = out->add_runs();
      r->set_actor_id(actor);
      r->set_run_id(run_id);
      r->set_watermark(run.watermark);
      r->mutable_above()->Reserve(static_cast<int>(run.above.size()));
      for (uint64_t id : run.above) r->add_above(id);
    }
  }
}

absl::StatusOr<RolloutLedger> RolloutLedger::FromProto(const v1::RolloutLedgerState& state,
                                                       uint64_t window) {
  RolloutLedger ledger(window);
  // Where each (actor, run) was first listed, to name both entries of a duplicate.
  std::map<std::pair<std::string, std::string>, int> first_index;
  for (int i = 0; i < state.runs_size(); ++i) {
    const v1::LedgerRun& r = state.runs(i);
    const std::string at = absl::StrCat("rollout ledger: runs[", i, "]");
    if (r.actor_id().empty()) return absl::DataLossError(absl::StrCat(at, ".actor_id is empty"));
    if (r.run_id().empty()) return absl::DataLossError(absl::StrCat(at, ".run_id is empty"));
    auto [where, fresh] = first_index.emplace(std::make_pair(r.actor_id(), r.run_id()), i);
    if (!fresh) {
      return absl::DataLossError(absl::StrCat(at, " (actor_id \"", r.actor_id(), "\", run_id \"",
                                              r.run_id(), "\") duplicates runs[", where->second,
                                              "]"));
    }
    Run run;
    run.watermark = r.watermark();
    for (int j = 0; j < r.above_size(); ++j) {
      const uint64_t id = r.above(j);
      if (id <= r.watermark()) {
        return absl::DataLossError(absl::StrCat(at, ".above[", j, "] = ", id,
                                                " is not above watermark = ", r.watermark()));
      }
      if (j > 0 && id <= r.above(j - 1)) {
        return absl::DataLossError(absl::StrCat(at, ".above[", j, "] = ", id,
                                                " is not greater than above[", j - 1,
                                                "] = ", r.above(j - 1)));
      }
      run.above.insert(run.above.end(), id);
    }
    ledger.Normalize(run);
    ledger.actors_[r.actor_id()][r.run_id()] = std::move(run);
  }
  return ledger;
}

}  // namespace rhythm::learner
