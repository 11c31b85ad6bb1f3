// LearnerState: the learner's durable state as one state machine (docs/architecture.md §4).
//
//   decide (Plan*, const) ─▶ journal the records (fsync) ─▶ Apply each ─▶ tell the actor
//   restart: Restore(checkpoint's DurableState) ─▶ Apply every journal record after it
//
// The state: the dataset cursor and re-issue queue, the partial groups waiting to be continued
// (a lease that ends with acked samples in its group is not wasted: the next grant of its
// prompt asks only for the missing samples, so an acked rollout is never dropped for want of
// its group-mates), the outstanding leases with their hard deadlines, every actor's current run, the exactly-once ledger, the queued rollouts (held in
// the BatchAssembler it is given) and the highest version ever published. Apply is the only
// thing that changes it, and the live path and replay both go through Apply, so there is one
// code path; a checkpoint is Snapshot(). Apply depends on nothing but the state and the record
// (time enters only through the records' deadlines and the `now` the Plan functions are given).
//
// What is not here, on purpose: trained batches leave through BatchAssembler::NextBatch without
// a record (they are in the next checkpoint's weights; after a crash the journal replays them
// onto the older weights and they train again), and actor liveness (heartbeat times) is the
// server's volatile business: after a restart every actor gets a fresh grace period.
//
// Not thread-safe: the learner calls it under its state lock. The BatchAssembler is thread-safe
// on its own (the trainer thread takes batches from it without that lock).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "learner/batch_assembler.h"
#include "learner/prompt_source.h"
#include "learner/rollout_ledger.h"
#include "rhythm/v1/checkpoint.pb.h"
#include "rhythm/v1/journal.pb.h"

namespace rhythm::learner {

class LearnerState {
 public:
  struct Options {
    uint32_t group_size = 8;
    double lease_timeout_s = 600;
    double lease_max_lifetime_s = 3600;
    uint64_t ledger_window = 4096;
    // Called for every prompt a grant plan skips because of its skip_reason.
    std::function<void(uint64_t index, const PromptSpec&)> on_skip;
  };
  // `queue` (not owned) holds the queued rollouts; it must outlive this.
  LearnerState(PromptSource source, const Options& options, BatchAssembler& queue);

  // ---- Decisions: records to journal, then Apply. None changes the state. ----------------

  // Up to `max` grants for `actor_id`: groups to continue first (their missing samples only),
  // then re-issued prompts, then fresh ones (plus a cursor record when skipped prompts moved
  // the cursor past the last grant).
  std::vector<v1::JournalRecord> PlanGrants(const std::string& actor_id, uint32_t max,
                                            double now_unix_s) const;
  // Expiries for leases past their deadline or whose actor `silent` says is gone.
  std::vector<v1::JournalRecord> PlanExpiries(
      double now_unix_s, const std::function<bool(const std::string& actor_id)>& silent) const;
  // A renewal of `lease_id` held by `actor_id` to now + lease_timeout (capped at the lifetime),
  // or nothing when the lease is not the actor's or the move would be under a quarter of the
  // timeout (so a heartbeat every second does not fsync every second).
  std::optional<v1::JournalRecord> PlanRenewal(const std::string& actor_id, uint64_t lease_id,
                                               double now_unix_s) const;
  // A session record when `run_id` is not the actor's known run (Apply then releases the old
  // run's leases and forgets its ledger entries) or `identity` is not its recorded one, or
  // nothing. Whether `identity` may take actor_id is the caller's decision (IdentityOf).
  std::optional<v1::JournalRecord> PlanSession(const std::string& actor_id,
                                               const std::string& run_id,
                                               const std::string& identity = "") const;
  // The expiry record that gives up one lease (a sample of its group was rejected), or nothing
  // when it is not outstanding.
  std::optional<v1::JournalRecord> PlanRelease(uint64_t lease_id) const;

  // ---- The transition. --------------------------------------------------------------------

  // Applies one journaled record. Records that no longer apply (a rollout for a lease that
  // expired, an expiry of a lease already gone, a duplicate rollout) change nothing but the
  // ledger, exactly as they did live. Returns what happened to a rollout record.
  enum class RolloutOutcome { kNotARollout, kQueued, kGroupComplete, kDeadGroup, kDuplicate };
  RolloutOutcome Apply(const v1::JournalRecord& record);
  // The journal sequence number the state reflects (set by the caller after each append).
  void set_log_seq(uint64_t seq) { log_seq_ = seq; }
  uint64_t log_seq() const { return log_seq_; }

  // ---- Queries. ---------------------------------------------------------------------------

  const v1::OutstandingLease* FindLease(uint64_t lease_id) const;
  bool Seen(const v1::Rollout& r) const;
  // The actor's run, or "" if it never registered.
  std::string RunOf(const std::string& actor_id) const;
  // The identity that registered the actor ("" when none was authenticated, or never
  // registered).
  std::string IdentityOf(const std::string& actor_id) const;
  // Leases outstanding to the actor.
  int64_t LeasesHeldBy(const std::string& actor_id) const;
  int64_t max_published_version() const { return max_published_; }
  int64_t outstanding() const { return static_cast<int64_t>(outstanding_.size()); }
  std::vector<std::string> actors() const;
  const RolloutLedger& ledger() const { return ledger_; }

  // ---- Checkpoints. -----------------------------------------------------------------------

  v1::DurableState Snapshot() const;
  // Replaces the state (and the queue's contents). Partial groups with neither an outstanding
  // lease nor a continuation are dropped (they can never complete). INVALID_ARGUMENT/DATA_LOSS
  // naming the field for a state that cannot be right (a queued rollout of a different group
  // size, a bad ledger).
  absl::Status Restore(const v1::DurableState& state);
  // The DurableState a checkpoint written before it existed holds in its legacy fields.
  static v1::DurableState FromLegacy(const v1::LearnerCheckpoint& checkpoint);

 private:
  void ReleaseLease(uint64_t lease_id);
  // A whole-group lease of prompt `prompt_index` to `actor_id`, deadline one timeout from now.
  v1::OutstandingLease Grant(const std::string& actor_id, uint64_t prompt_index,
                             const PromptSpec& spec, uint64_t lease_id, double now_unix_s) const;

  const PromptSource source_;
  const Options options_;
  BatchAssembler& queue_;
  uint64_t log_seq_ = 0;
  uint64_t next_index_ = 0;
  uint64_t next_lease_id_ = 1;
  std::deque<uint64_t> reissue_;
  // Partial groups whose lease ended, waiting for a lease that completes them (granted first).
  std::deque<v1::GroupContinuation> continuations_;
  std::map<uint64_t, v1::OutstandingLease> outstanding_;
  std::map<std::string, v1::ActorSession> sessions_;
  RolloutLedger ledger_;
  int64_t max_published_ = -1;
};

}  // namespace rhythm::learner
