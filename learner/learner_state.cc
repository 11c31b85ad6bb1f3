#include "learner/learner_state.h"

#include <algorithm>
#include <set>

#include "absl/strings/str_cat.h"

namespace rhythm::learner {

LearnerState::LearnerState(PromptSource source, const Options& options, BatchAssembler& queue)
    : source_(std::move(source)),
      options_(options),
      queue_(queue),
      ledger_(options.ledger_window) {}

v1::OutstandingLease LearnerState::Grant(const std::string& actor_id, uint64_t prompt_index,
                                         const PromptSpec& spec, uint64_t lease_id,
                                         double now_unix_s) const {
  v1::OutstandingLease g;
  g.set_prompt_index(prompt_index);
  g.set_actor_id(actor_id);
  g.set_granted_unix_s(now_unix_s);
  v1::PromptLease* lease = g.mutable_lease();
  lease->set_lease_id(lease_id);
  lease->set_prompt_id(spec.prompt_id);
  lease->set_prompt_text(spec.text);
  for (uint32_t t : spec.token_ids) lease->add_prompt_token_ids(t);
  lease->set_answer(spec.answer);
  lease->set_group_size(options_.group_size);
  lease->set_deadline_unix_s(now_unix_s + options_.lease_timeout_s);
  return g;
}

std::vector<v1::JournalRecord> LearnerState::PlanGrants(const std::string& actor_id,
                                                        uint32_t max, double now_unix_s) const {
  std::vector<v1::JournalRecord> out;
  size_t reissued = 0;
  uint64_t next_index = next_index_, lease_id = next_lease_id_;
  // Groups to continue: a lease for the same prompt, asking only for the missing samples.
  for (size_t i = 0; i < continuations_.size() && out.size() < max; ++i) {
    const v1::GroupContinuation& c = continuations_[i];
    const std::vector<uint32_t> held = queue_.HeldSamples(c.group_id());
    v1::OutstandingLease* g = out.emplace_back().mutable_grant();
    *g = Grant(actor_id, c.prompt_index(), source_(c.prompt_index()), lease_id++, now_unix_s);
    g->set_continues_group(c.group_id());
    for (uint32_t s = 0; s < options_.group_size; ++s) {
      if (!std::binary_search(held.begin(), held.end(), s)) {
        g->mutable_lease()->add_sample_indices(s);
      }
    }
  }
  bool skipped_fresh = false;
  // Bounded, so a dataset of nothing but unusable prompts cannot spin here.
  for (int skipped = 0; out.size() < max && skipped < 10000;) {
    const bool from_reissue = reissued < reissue_.size();
    const uint64_t index = from_reissue ? reissue_[reissued++] : next_index++;
    const PromptSpec spec = source_(index);
    if (!spec.skip_reason.empty()) {
      if (options_.on_skip) options_.on_skip(index, spec);
      ++skipped;
      skipped_fresh = skipped_fresh || !from_reissue;
      continue;
    }
    *out.emplace_back().mutable_grant() = Grant(actor_id, index, spec, lease_id++, now_unix_s);
  }
  const uint64_t granted_past =
      out.empty() || !out.back().has_grant()
          ? next_index_
          : std::max(next_index_, out.back().grant().prompt_index() + 1);
  if (skipped_fresh && next_index > granted_past) {
    out.emplace_back().mutable_cursor()->set_next_prompt_index(next_index);
  }
  return out;
}

std::vector<v1::JournalRecord> LearnerState::PlanExpiries(
    double now_unix_s, const std::function<bool(const std::string&)>& silent) const {
  std::vector<v1::JournalRecord> out;
  for (const auto& [id, o] : outstanding_) {
    if (now_unix_s > o.lease().deadline_unix_s() || silent(o.actor_id())) {
      out.emplace_back().mutable_expiry()->set_lease_id(id);
    }
  }
  return out;
}

std::optional<v1::JournalRecord> LearnerState::PlanRenewal(const std::string& actor_id,
                                                          uint64_t lease_id,
                                                          double now_unix_s) const {
  auto it = outstanding_.find(lease_id);
  if (it == outstanding_.end() || it->second.actor_id() != actor_id) return std::nullopt;
  const v1::OutstandingLease& o = it->second;
  double deadline = now_unix_s + options_.lease_timeout_s;
  if (o.granted_unix_s() > 0) {
    deadline = std::min(deadline, o.granted_unix_s() + options_.lease_max_lifetime_s);
  }
  if (deadline - o.lease().deadline_unix_s() < options_.lease_timeout_s / 4) return std::nullopt;
  v1::JournalRecord r;
  r.mutable_renewal()->set_lease_id(lease_id);
  r.mutable_renewal()->set_deadline_unix_s(deadline);
  return r;
}

std::optional<v1::JournalRecord> LearnerState::PlanSession(const std::string& actor_id,
                                                          const std::string& run_id,
                                                          const std::string& identity) const {
  auto it = sessions_.find(actor_id);
  if (it != sessions_.end() && it->second.run_id() == run_id &&
      it->second.identity() == identity) {
    return std::nullopt;
  }
  v1::JournalRecord r;
  r.mutable_session()->set_actor_id(actor_id);
  r.mutable_session()->set_run_id(run_id);
  r.mutable_session()->set_identity(identity);
  return r;
}

std::optional<v1::JournalRecord> LearnerState::PlanRelease(uint64_t lease_id) const {
  if (!outstanding_.count(lease_id)) return std::nullopt;
  v1::JournalRecord r;
  r.mutable_expiry()->set_lease_id(lease_id);
  return r;
}

void LearnerState::ReleaseLease(uint64_t lease_id) {
  auto it = outstanding_.find(lease_id);
  if (it == outstanding_.end()) return;
  if (!queue_.HeldSamples(lease_id).empty()) {
    // Acked samples are held: the next lease of the prompt completes this group.
    v1::GroupContinuation& c = continuations_.emplace_back();
    c.set_prompt_index(it->second.prompt_index());
    c.set_group_id(lease_id);
  } else {
    reissue_.push_back(it->second.prompt_index());
  }
  outstanding_.erase(it);
}

LearnerState::RolloutOutcome LearnerState::Apply(const v1::JournalRecord& record) {
  switch (record.kind_case()) {
    case v1::JournalRecord::kRollout: {
      const v1::Rollout& r = record.rollout();
      if (Seen(r)) return RolloutOutcome::kDuplicate;
      ledger_.Insert(r.actor_id(), r.run_id(), r.rollout_id());
      // The lease may have expired while the rollout was becoming durable: its group is dead.
      if (!outstanding_.count(r.group_id())) return RolloutOutcome::kDeadGroup;
      switch (queue_.Add(r)) {
        case BatchAssembler::AddResult::kGroupComplete:
          outstanding_.erase(r.group_id());
          return RolloutOutcome::kGroupComplete;
        case BatchAssembler::AddResult::kDuplicateSample:
          return RolloutOutcome::kDuplicate;
        case BatchAssembler::AddResult::kQueued:
          return RolloutOutcome::kQueued;
      }
      return RolloutOutcome::kQueued;
    }
    case v1::JournalRecord::kGrant: {
      const v1::OutstandingLease& g = record.grant();
      outstanding_[g.lease().lease_id()] = g;
      next_lease_id_ = std::max(next_lease_id_, g.lease().lease_id() + 1);
      if (g.continues_group() != 0) {
        auto it = std::find_if(continuations_.begin(), continuations_.end(),
                               [&](const v1::GroupContinuation& c) {
                                 return c.group_id() == g.continues_group();
                               });
        if (it != continuations_.end()) continuations_.erase(it);
        queue_.MoveGroup(g.continues_group(), g.lease().lease_id());
      } else if (g.prompt_index() >= next_index_) {
        next_index_ = g.prompt_index() + 1;
      } else if (auto it = std::find(reissue_.begin(), reissue_.end(), g.prompt_index());
                 it != reissue_.end()) {
        reissue_.erase(it);
      }
      break;
    }
    case v1::JournalRecord::kExpiry:
      ReleaseLease(record.expiry().lease_id());
      break;
    case v1::JournalRecord::kRenewal:
      if (auto it = outstanding_.find(record.renewal().lease_id()); it != outstanding_.end()) {
        it->second.mutable_lease()->set_deadline_unix_s(record.renewal().deadline_unix_s());
      }
      break;
    case v1::JournalRecord::kSession: {
      const v1::ActorSession& s = record.session();
      auto it = sessions_.find(s.actor_id());
      if (it != sessions_.end() && it->second.run_id() != s.run_id()) {
        // The actor restarted: whatever its old run was generating is gone.
        std::vector<uint64_t> old;
        for (const auto& [id, o] : outstanding_) {
          if (o.actor_id() == s.actor_id()) old.push_back(id);
        }
        for (uint64_t id : old) ReleaseLease(id);
      }
      ledger_.ForgetActor(s.actor_id(), s.run_id());
      sessions_[s.actor_id()] = s;
      break;
    }
    case v1::JournalRecord::kPublication:
      max_published_ = std::max(max_published_, record.publication().version());
      break;
    case v1::JournalRecord::kCursor:
      next_index_ = std::max(next_index_, record.cursor().next_prompt_index());
      break;
    case v1::JournalRecord::KIND_NOT_SET:
      break;
  }
  return RolloutOutcome::kNotARollout;
}

const v1::OutstandingLease* LearnerState::FindLease(uint64_t lease_id) const {
  auto it = outstanding_.find(lease_id);
  return it == outstanding_.end() ? nullptr : &it->second;
}

bool LearnerState::Seen(const v1::Rollout& r) const {
  return ledger_.Seen(r.actor_id(), r.run_id(), r.rollout_id());
}

std::string LearnerState::RunOf(const std::string& actor_id) const {
  auto it = sessions_.find(actor_id);
  return it == sessions_.end() ? "" : it->second.run_id();
}

std::string LearnerState::IdentityOf(const std::string& actor_id) const {
  auto it = sessions_.find(actor_id);
  return it == sessions_.end() ? "" : it->second.identity();
}

int64_t LearnerState::LeasesHeldBy(const std::string& actor_id) const {
  int64_t n = 0;
  for (const auto& [id, o] : outstanding_) n += o.actor_id() == actor_id ? 1 : 0;
  return n;
}

std::vector<std::string> LearnerState::actors() const {
  std::set<std::string> out;
  for (const auto& [actor, session] : sessions_) out.insert(actor);
  for (const auto& [id, o] : outstanding_) out.insert(o.actor_id());
  return {out.begin(), out.end()};
}

v1::DurableState LearnerState::Snapshot() const {
  v1::DurableState s;
  s.set_log_seq(log_seq_);
  s.set_next_prompt_index(next_index_);
  s.set_next_lease_id(next_lease_id_);
  for (uint64_t p : reissue_) s.add_reissue_prompts(p);
  for (const v1::GroupContinuation& c : continuations_) *s.add_continuations() = c;
  for (const auto& [id, o] : outstanding_) *s.add_outstanding() = o;
  for (const auto& [actor, session] : sessions_) *s.add_sessions() = session;
  ledger_.ToProto(s.mutable_ledger());
  for (v1::Rollout& r : queue_.Snapshot()) *s.add_queued() = std::move(r);
  s.set_max_published_version(max_published_);
  return s;
}

absl::Status LearnerState::Restore(const v1::DurableState& s) {
  absl::StatusOr<RolloutLedger> ledger =
      RolloutLedger::FromProto(s.ledger(), options_.ledger_window);
  if (!ledger.ok()) return ledger.status();
  std::map<uint64_t, v1::OutstandingLease> outstanding;
  for (int i = 0; i < s.outstanding_size(); ++i) {
    const v1::OutstandingLease& o = s.outstanding(i);
    if (!outstanding.emplace(o.lease().lease_id(), o).second) {
      return absl::DataLossError(absl::StrCat("checkpoint state: outstanding[", i,
                                              "].lease.lease_id = ", o.lease().lease_id(),
                                              " appears twice"));
    }
  }
  log_seq_ = s.log_seq();
  next_index_ = s.next_prompt_index();
  next_lease_id_ = std::max<uint64_t>(1, s.next_lease_id());
  reissue_.assign(s.reissue_prompts().begin(), s.reissue_prompts().end());
  continuations_.assign(s.continuations().begin(), s.continuations().end());
  outstanding_ = std::move(outstanding);
  sessions_.clear();
  for (const v1::ActorSession& a : s.sessions()) sessions_[a.actor_id()] = a;
  ledger_ = *std::move(ledger);
  max_published_ = s.max_published_version();
  queue_.Clear();
  for (const v1::Rollout& r : s.queued()) queue_.Add(r);
  // A partial group with neither a lease nor a continuation can never complete: it would
  // hold queue room forever.
  std::set<uint64_t> continued;
  for (const v1::GroupContinuation& c : continuations_) continued.insert(c.group_id());
  for (uint64_t group : queue_.PartialGroups()) {
    if (!outstanding_.count(group) && !continued.count(group)) queue_.DropGroup(group);
  }
  return absl::OkStatus();
}

v1::DurableState LearnerState::FromLegacy(const v1::LearnerCheckpoint& c) {
  v1::DurableState s;
  s.set_log_seq(c.log_seq());
  s.set_next_prompt_index(c.next_prompt_index());
  s.set_next_lease_id(c.next_lease_id());
  *s.mutable_reissue_prompts() = c.reissue_prompts();
  *s.mutable_outstanding() = c.outstanding();
  *s.mutable_queued() = c.queued();
  s.set_max_published_version(c.version());
  // The legacy ledger: every key "<actor>/<run>/<id>" (actor and run ids hold no '/').
  RolloutLedger ledger(~uint64_t{0});
  for (const std::string& key : c.seen_rollouts()) {
    const size_t a = key.find('/'), b = key.rfind('/');
    if (a == std::string::npos || a == b) continue;
    ledger.Insert(key.substr(0, a), key.substr(a + 1, b - a - 1),
                  std::strtoull(key.c_str() + b + 1, nullptr, 10));
  }
  ledger.ToProto(s.mutable_ledger());
  return s;
}

}  // namespace rhythm::learner
