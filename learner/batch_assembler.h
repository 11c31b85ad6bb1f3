// BatchAssembler: turns ingested rollouts into training batches of complete groups
// (docs/architecture.md §4.4, §4.6).
//
// Rollouts are keyed by group (= lease) id; a group is complete when it holds group_size
// distinct samples. NextBatch hands out `batch_groups` complete groups, dropping (and counting)
// groups older than max_staleness policy versions and, if configured, groups whose rewards are
// all equal (no learning signal). Everything queued can be snapshotted for a checkpoint.
// Thread-safe; NextBatch blocks until a batch is ready or Close() is called.
//
// Filtering and dynamic sampling (DAPO). Every complete group is examined once, for the batch
// being assembled: as it completes while NextBatch waits (it wakes on each completion, so a
// dropped group frees its queue room, and with it room for more leases, at once), or, if it
// completed while the trainer stepped, when the next NextBatch starts. A batch's
// "examined" groups are the zero-variance groups dropped for it plus the groups it trains on;
// a round is batch_groups examined groups, and every round past the first is an extra round.
//   - dynamic_sampling off (today's behaviour): NextBatch waits, without bound, until
//     batch_groups groups with signal are held; it never hands out a short batch.
//   - dynamic_sampling on: it waits at most until (1 + max_extra_rounds) * batch_groups groups
//     have been examined for this batch; then, holding at least one group with signal, it hands
//     out what it holds (a short batch). Holding none, it keeps waiting for the first one
//     (a step of nothing would publish a version that learned nothing).
// Dropped groups leave without a journal record, as trained batches do: their rollouts were
// acked and are in the ledger; after a crash replay queues them again and they are dropped
// again (the rule depends only on their rewards; the new process counts them again).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "rhythm/v1/config.pb.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::learner {

using Group = std::vector<v1::Rollout>;  // sorted by sample_index

class BatchAssembler {
 public:
  struct Options {
    int64_t batch_groups = 8;
    int64_t max_staleness = 2;
    bool drop_zero_variance = true;
    // trainer.dynamic_sampling and trainer.dynamic_sampling_max_rounds (see above).
    bool dynamic_sampling = false;
    int64_t max_extra_rounds = 4;
  };
  struct Counters {
    int64_t dropped_stale = 0;
    int64_t dropped_zero_variance = 0;
    int64_t dropped_expired = 0;
    int64_t batches = 0;
    int64_t short_batches = 0;  // dynamic sampling: batches of fewer than batch_groups groups
    int64_t extra_rounds = 0;   // summed over batches
  };
  // How one batch was assembled (NextBatch's `info`).
  struct BatchInfo {
    int64_t groups = 0;                 // handed out
    int64_t dropped_zero_variance = 0;  // dropped for this batch
    int64_t extra_rounds = 0;           // ceil((dropped + groups) / batch_groups) - 1, >= 0
    bool short_batch = false;           // groups < batch_groups
    // dropped / (dropped + groups): the share of examined groups filtered out.
    double filtered_fraction() const {
      const int64_t examined = dropped_zero_variance + groups;
      return examined == 0 ? 0.0 : static_cast<double>(dropped_zero_variance) / examined;
    }
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

  // Blocks until batch_groups fresh complete groups exist, or (dynamic sampling) the batch's
  // round budget is spent with at least one held (then removes and returns them, oldest group
  // ids first, and fills `info` when given), or until Close() / `timeout` (then nullopt; the
  // drops so far still count for the next batch). Staleness is judged against
  // `current_version`, the oldest token version of a group counting.
  std::optional<std::vector<Group>> NextBatch(int64_t current_version, absl::Duration timeout,
                                              BatchInfo* info = nullptr);

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
  // Zero-variance groups dropped since the last batch was handed out (for the next one).
  int64_t pending_dropped_ ABSL_GUARDED_BY(mu_) = 0;
  // Groups completed so far: the waiting NextBatch wakes when it moves.
  uint64_t completions_ ABSL_GUARDED_BY(mu_) = 0;
};

// The assembler's options from the config (trainer.batch_groups, max_staleness,
// dynamic_sampling, dynamic_sampling_max_rounds; credit.drop_zero_variance_groups).
BatchAssembler::Options BatchAssemblerOptions(const v1::RhythmConfig& config);

// INVALID_ARGUMENT naming the fields and values for batch-assembly settings that cannot work
// together: trainer.dynamic_sampling without credit.drop_zero_variance_groups (nothing is
// filtered, so there is nothing to sample more for), or with learner.queue_capacity below
// trainer.batch_groups * trainer.group_size (a full batch would never fit the queue).
absl::Status ValidateBatchAssembly(const v1::RhythmConfig& config);

}  // namespace rhythm::learner
