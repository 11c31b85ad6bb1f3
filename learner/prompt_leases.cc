#include "learner/prompt_leases.h"

#include <algorithm>

namespace rhythm::learner {

PromptLeases::PromptLeases(PromptSource source, const Options& options, common::Clock& clock)
    : source_(std::move(source)), options_(options), clock_(clock) {}

v1::PromptLease PromptLeases::MakeLease(const PromptSpec& spec) {
  v1::PromptLease lease;
  lease.set_lease_id(next_lease_id_++);
  lease.set_prompt_id(spec.prompt_id);
  lease.set_prompt_text(spec.text);
  for (uint32_t t : spec.token_ids) lease.add_prompt_token_ids(t);
  lease.set_answer(spec.answer);
  lease.set_group_size(options_.group_size);
  return lease;
}

std::vector<v1::PromptLease> PromptLeases::Lease(const std::string& actor_id, uint32_t max) {
  std::vector<v1::PromptLease> out;
  for (Granted& g : Grant(actor_id, max)) out.push_back(std::move(g.lease));
  return out;
}

void PromptLeases::ApplyGrant(uint64_t prompt_index, const std::string& actor_id,
                              const v1::PromptLease& lease) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.Now();
  outstanding_[lease.lease_id()] = {prompt_index, actor_id, now + options_.lease_timeout, lease};
  last_heartbeat_[actor_id] = now;
  next_lease_id_ = std::max(next_lease_id_, lease.lease_id() + 1);
  if (prompt_index >= next_index_) {
    next_index_ = prompt_index + 1;
  } else {
    auto it = std::find(reissue_.begin(), reissue_.end(), prompt_index);
    if (it != reissue_.end()) reissue_.erase(it);
  }
}

void PromptLeases::ApplyExpiry(uint64_t lease_id) {
  absl::MutexLock lock(&mu_);
  auto it = outstanding_.find(lease_id);
  if (it == outstanding_.end()) return;
  reissue_.push_back(it->second.prompt_index);
  outstanding_.erase(it);
}

std::vector<PromptLeases::Granted> PromptLeases::Grant(const std::string& actor_id, uint32_t max) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.Now();
  last_heartbeat_[actor_id] = now;
  std::vector<Granted> out;
  // Bounded, so a dataset of nothing but unusable prompts cannot spin here.
  for (int skipped = 0; out.size() < max && skipped < 10000;) {
    uint64_t index;
    if (!reissue_.empty()) {
      index = reissue_.front();
      reissue_.pop_front();
    } else {
      index = next_index_++;
    }
    const PromptSpec spec = source_(index);
    if (!spec.skip_reason.empty()) {
      if (options_.on_skip) options_.on_skip(index, spec);
      ++skipped;
      continue;
    }
    v1::PromptLease lease = MakeLease(spec);
    const absl::Time deadline = now + options_.lease_timeout;
    lease.set_deadline_unix_s(absl::ToDoubleSeconds(deadline - absl::UnixEpoch()));
    outstanding_[lease.lease_id()] = {index, actor_id, deadline, lease};
    out.push_back({index, std::move(lease)});
  }
  return out;
}

std::optional<v1::PromptLease> PromptLeases::Find(uint64_t lease_id) const {
  absl::MutexLock lock(&mu_);
  auto it = outstanding_.find(lease_id);
  if (it == outstanding_.end()) return std::nullopt;
  return it->second.lease;
}

bool PromptLeases::Complete(uint64_t lease_id) {
  absl::MutexLock lock(&mu_);
  return outstanding_.erase(lease_id) > 0;
}

void PromptLeases::Heartbeat(const std::string& actor_id) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.Now();
  last_heartbeat_[actor_id] = now;
  for (auto& [id, o] : outstanding_) {
    if (o.actor_id == actor_id) o.deadline = std::max(o.deadline, now + options_.lease_timeout);
  }
}

std::vector<uint64_t> PromptLeases::ReleaseActor(const std::string& actor_id) {
  absl::MutexLock lock(&mu_);
  std::vector<uint64_t> released;
  for (auto it = outstanding_.begin(); it != outstanding_.end();) {
    if (it->second.actor_id == actor_id) {
      reissue_.push_back(it->second.prompt_index);
      released.push_back(it->first);
      it = outstanding_.erase(it);
    } else {
      ++it;
    }
  }
  return released;
}

std::vector<uint64_t> PromptLeases::ExpireStale() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_.Now();
  std::vector<uint64_t> expired;
  for (auto it = outstanding_.begin(); it != outstanding_.end();) {
    auto hb = last_heartbeat_.find(it->second.actor_id);
    const bool silent =
        hb == last_heartbeat_.end() || now - hb->second > options_.heartbeat_timeout;
    if (now > it->second.deadline || silent) {
      reissue_.push_back(it->second.prompt_index);
      expired.push_back(it->first);
      it = outstanding_.erase(it);
    } else {
      ++it;
    }
  }
  expired_total_ += static_cast<int64_t>(expired.size());
  return expired;
}

int64_t PromptLeases::outstanding() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(outstanding_.size());
}

int64_t PromptLeases::expired_total() const {
  absl::MutexLock lock(&mu_);
  return expired_total_;
}

PromptLeases::State PromptLeases::Snapshot() const {
  absl::MutexLock lock(&mu_);
  State s;
  s.next_index = next_index_;
  s.next_lease_id = next_lease_id_;
  s.reissue.assign(reissue_.begin(), reissue_.end());
  for (const auto& [id, o] : outstanding_)
    s.outstanding.push_back({o.prompt_index, o.actor_id, o.lease});
  return s;
}

void PromptLeases::Restore(const State& state) {
  absl::MutexLock lock(&mu_);
  next_index_ = state.next_index;
  next_lease_id_ = state.next_lease_id;
  reissue_.assign(state.reissue.begin(), state.reissue.end());
  outstanding_.clear();
  const absl::Time now = clock_.Now();
  for (const OutstandingLease& o : state.outstanding) {
    outstanding_[o.lease.lease_id()] = {o.prompt_index, o.actor_id, now + options_.lease_timeout,
                                        o.lease};
    last_heartbeat_[o.actor_id] = now;  // a grace period to reconnect
  }
}

}  // namespace rhythm::learner
