// BatchAssembler: turns ingested rollouts into training batches of complete groups
// (docs/architecture.md §4.4, §4.6).
//
// Rollouts are keyed by group (= lease) id; a group is complete when it holds group_size
// distinct samples. NextBatch hands out `batch_groups` complete groups, dropping (and counting)
// groups older than max_staleness policy versions and, if configured, groups whose rewards are
// all equal (no learning signal). Everything queued can be snapshotted for a checkpoint.
// Thread-safe; NextBatch blocks until a batch is ready or Close() is called.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::learner {

using Group = std::vector<v1::Rollout>;  // sorted by sample_index

class BatchAssembler {
 public:
  struct Options {
    int64_t batch_groups = 8;
    int64_t max_staleness = 2;
    bool drop_zero_variance = true;
  };
  struct Counters {
    int64_t dropped_stale = 0;
    int64_t dropped_zero_variance = 0;
    int64_t dropped_expired = 0;
    int64_t batches = 0;
  };
  enum class AddResult { kQueued, kGroupComplete, kDuplicateSample };

  explicit BatchAssembler(const Options& options) : options_(options) {}

  AddResult Add(v1::Rollout rollout);
  // Drops a partial group whose lease expired. Returns the rollouts dropped.
  int64_t DropGroup(uint64_t group_id);
  // The sample indices a partial group holds, in order (empty: no such partial group).
  std::vector<uint32_t> HeldSamples(uint64_t group_id) const;
  // Re-keys partial group `from` as `to` (each held rollout's group_id becomes `to`): a new
  // lease continues it. No-op when `from` holds nothing.
  void MoveGroup(uint64_t from, uint64_t to);

  // Blocks until batch_groups fresh complete groups exist (then removes and returns them) or
  // until Close() / `timeout` (then nullopt). Staleness is judged against `current_version`,
  // the oldest token version of a group counting.
  std::optional<std::vector<Group>> NextBatch(int64_t current_version, absl::Duration timeout);

  void Close();
  // Empties it (LearnerState::Restore); counters are kept.
  void Clear();
  // Ids of the groups still incomplete.
  std::vector<uint64_t> PartialGroups() const;
  // After a resume that published the restored weights (trained up to `restored_version`) as
  // `resumed_version` > restored_version, staleness is counted along the weights' lineage: a
  // version v <= restored_version is (resumed - restored) further back, and a version lost in
  // the crash (restored < v <= resumed) counts as resumed_version (its real off-policyness is in
  // its behaviour log-probs, which truncated importance sampling corrects).
  void SetResumePoint(int64_t restored_version, int64_t resumed_version);
  // A version as the staleness rule above sees it.
  int64_t LineageVersion(int64_t version) const;
  // Rollouts held (partial and complete groups).
  int64_t queued() const;
  Counters counters() const;
  // Every held rollout, for a checkpoint.
  std::vector<v1::Rollout> Snapshot() const;

  // The oldest policy version that generated any token of the group.
  static int64_t OldestVersion(const Group& group);

 private:
  void DropStaleLocked(int64_t current_version) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  int64_t LineageVersionLocked(int64_t version) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  mutable absl::Mutex mu_;
  std::map<uint64_t, std::map<uint32_t, v1::Rollout>> partial_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Group> complete_ ABSL_GUARDED_BY(mu_);  // ordered by group id: FIFO-ish
  int64_t queued_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  int64_t restored_version_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t resumed_version_ ABSL_GUARDED_BY(mu_) = 0;
  Counters counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace rhythm::learner
