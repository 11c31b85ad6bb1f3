#include "learner/batch_assembler.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"

namespace rhythm::learner {

int64_t BatchAssembler::OldestVersion(const Group& group) {
  int64_t oldest = std::numeric_limits<int64_t>::max();
  for (const v1::Rollout& r : group) {
    for (const v1::VersionSpan& s : r.version_spans()) oldest = std::min(oldest, s.version());
  }
  return oldest == std::numeric_limits<int64_t>::max() ? 0 : oldest;
}

BatchAssembler::AddResult BatchAssembler::Add(v1::Rollout rollout) {
  absl::MutexLock lock(&mu_);
  const uint64_t group_id = rollout.group_id();
  if (complete_.count(group_id)) return AddResult::kDuplicateSample;
  auto& samples = partial_[group_id];
  if (samples.count(rollout.sample_index())) return AddResult::kDuplicateSample;
  const uint32_t group_size = rollout.group_size();
  samples.emplace(rollout.sample_index(), std::move(rollout));
  ++queued_;
  if (samples.size() < group_size) return AddResult::kQueued;
  Group group;
  for (auto& [index, r] : samples) group.push_back(std::move(r));
  partial_.erase(group_id);
  complete_.emplace(group_id, std::move(group));
  ++completions_;
  return AddResult::kGroupComplete;
}

int64_t BatchAssembler::DropGroup(uint64_t group_id) {
  absl::MutexLock lock(&mu_);
  auto it = partial_.find(group_id);
  if (it == partial_.end()) return 0;
  const int64_t n = static_cast<int64_t>(it->second.size());
  queued_ -= n;
  partial_.erase(it);
  ++counters_.dropped_expired;
  return n;
}

void BatchAssembler::DropStaleLocked(int64_t current_version) {
  for (auto it = complete_.begin(); it != complete_.end();) {
    const Group& g = it->second;
    bool drop = false;
    if (current_version - LineageVersionLocked(OldestVersion(g)) > options_.max_staleness) {
      ++counters_.dropped_stale;
      drop = true;
    } else if (options_.drop_zero_variance) {
      bool all_equal = true;
      for (const v1::Rollout& r : g) {
        all_equal = all_equal && r.verifier().reward() == g.front().verifier().reward();
      }
      if (all_equal) {
        ++counters_.dropped_zero_variance;
        ++pending_dropped_;
        drop = true;
      }
    }
    if (drop) {
      queued_ -= static_cast<int64_t>(g.size());
      it = complete_.erase(it);
    } else {
      ++it;
    }
  }
}

std::optional<std::vector<Group>> BatchAssembler::NextBatch(int64_t current_version,
                                                            absl::Duration timeout,
                                                            BatchInfo* info) {
  absl::MutexLock lock(&mu_);
  const absl::Time deadline = absl::Now() + timeout;
  const int64_t b = options_.batch_groups;
  const int64_t budget = (1 + options_.max_extra_rounds) * b;  // examined groups, dynamic
  while (true) {
    DropStaleLocked(current_version);
    if (closed_) return std::nullopt;
    const int64_t held = static_cast<int64_t>(complete_.size());
    if (held >= b) break;
    if (options_.dynamic_sampling && held >= 1 && pending_dropped_ + held >= budget) break;
    // Wake on every completion (examine it now: a dropped group frees queue room at once).
    const uint64_t seen = completions_;
    auto moved = [this, seen]()
                     ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return closed_ || completions_ != seen; };
    if (!mu_.AwaitWithDeadline(absl::Condition(&moved), deadline)) return std::nullopt;
  }
  std::vector<Group> batch;
  while (static_cast<int64_t>(batch.size()) < b && !complete_.empty()) {
    auto it = complete_.begin();
    queued_ -= static_cast<int64_t>(it->second.size());
    batch.push_back(std::move(it->second));
    complete_.erase(it);
  }
  BatchInfo made;
  made.groups = static_cast<int64_t>(batch.size());
  made.dropped_zero_variance = pending_dropped_;
  made.extra_rounds =
      std::max<int64_t>(0, (made.dropped_zero_variance + made.groups + b - 1) / b - 1);
  made.short_batch = made.groups < b;
  pending_dropped_ = 0;
  ++counters_.batches;
  counters_.short_batches += made.short_batch ? 1 : 0;
  counters_.extra_rounds += made.extra_rounds;
  if (info) *info = made;
  return batch;
}

void BatchAssembler::Clear() {
  absl::MutexLock lock(&mu_);
  partial_.clear();
  complete_.clear();
  queued_ = 0;
  pending_dropped_ = 0;
}

std::vector<uint32_t> BatchAssembler::HeldSamples(uint64_t group_id) const {
  absl::MutexLock lock(&mu_);
  std::vector<uint32_t> out;
  if (auto it = partial_.find(group_id); it != partial_.end()) {
    for (const auto& [index, r] : it->second) out.push_back(index);
  }
  return out;
}

void BatchAssembler::MoveGroup(uint64_t from, uint64_t to) {
  absl::MutexLock lock(&mu_);
  auto it = partial_.find(from);
  if (it == partial_.end() || from == to) return;
  std::map<uint32_t, v1::Rollout> samples = std::move(it->second);
  partial_.erase(it);
  for (auto& [index, r] : samples) r.set_group_id(to);
  partial_[to] = std::move(samples);
}

std::vector<uint64_t> BatchAssembler::PartialGroups() const {
  absl::MutexLock lock(&mu_);
  std::vector<uint64_t> out;
  for (const auto& [id, samples] : partial_) out.push_back(id);
  return out;
}

void BatchAssembler::SetResumePoint(int64_t restored_version, int64_t resumed_version) {
  absl::MutexLock lock(&mu_);
  restored_version_ = restored_version;
  resumed_version_ = std::max(restored_version, resumed_version);
}

int64_t BatchAssembler::LineageVersion(int64_t version) const {
  absl::MutexLock lock(&mu_);
  return LineageVersionLocked(version);
}

int64_t BatchAssembler::LineageVersionLocked(int64_t version) const {
  if (version <= restored_version_) return version + (resumed_version_ - restored_version_);
  return std::max(version, resumed_version_);
}

void BatchAssembler::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

int64_t BatchAssembler::queued() const {
  absl::MutexLock lock(&mu_);
  return queued_;
}

BatchAssembler::Counters BatchAssembler::counters() const {
  absl::MutexLock lock(&mu_);
  return counters_;
}

std::vector<v1::Rollout> BatchAssembler::Snapshot() const {
  absl::MutexLock lock(&mu_);
  std::vector<v1::Rollout> out;
  for (const auto& [id, samples] : partial_) {
    for (const auto& [i, r] : samples) out.push_back(r);
  }
  for (const auto& [id, g] : complete_) out.insert(out.end(), g.begin(), g.end());
  return out;
}

BatchAssembler::Options BatchAssemblerOptions(const v1::RhythmConfig& c) {
  BatchAssembler::Options o;
  o.batch_groups = c.trainer().batch_groups();
  o.max_staleness = c.trainer().max_staleness();
  o.drop_zero_variance = c.credit().drop_zero_variance_groups();
  o.dynamic_sampling = c.trainer().dynamic_sampling();
  o.max_extra_rounds = c.trainer().dynamic_sampling_max_rounds();
  return o;
}

absl::Status ValidateBatchAssembly(const v1::RhythmConfig& c) {
  if (!c.trainer().dynamic_sampling()) return absl::OkStatus();
  if (!c.credit().drop_zero_variance_groups()) {
    return absl::InvalidArgumentError(
        "config: trainer.dynamic_sampling = true needs credit.drop_zero_variance_groups = true "
        "(it is false: no group is filtered, so there is nothing to sample more for)");
  }
  const int64_t full = int64_t{c.trainer().batch_groups()} * c.trainer().group_size();
  if (c.learner().queue_capacity() < full) {
    return absl::InvalidArgumentError(absl::StrCat(
        "config: learner.queue_capacity = ", c.learner().queue_capacity(),
        " is below trainer.batch_groups * trainer.group_size = ", c.trainer().batch_groups(), " * ",
        c.trainer().group_size(), " = ", full,
        ": with trainer.dynamic_sampling a full batch would never fit the queue"));
  }
  return absl::OkStatus();
}

}  // namespace rhythm::learner
