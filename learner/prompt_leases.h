// PromptLeases: the learner's dataset cursor and the prompts it has lent to actors.
//
// The learner owns the prompt stream: Lease() hands out the next training prompts (or ones whose
// earlier lease expired) to an actor; Complete() retires a lease once its whole group has been
// ingested; a lease not completed by its deadline, or whose actor stopped heartbeating, is
// re-issued under a new lease id (late rollouts for the old id are then refused), so no prompt
// is lost and none is trained twice. Time comes from an injected Clock. Thread-safe.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "rhythm/v1/learner_service.pb.h"

namespace rhythm::learner {

// Where prompts come from: the index-th training prompt, deterministic.
struct PromptSpec {
  uint64_t prompt_id = 0;
  std::string text;
  std::vector<uint32_t> token_ids;
  std::string answer;
  // Non-empty when the prompt cannot be generated for (e.g. "unencodable", "too_long"): it is
  // never lent, and Options::on_skip hears of it. `skip_detail` says why, for the log.
  std::string skip_reason;
  std::string skip_detail;
};
using PromptSource = std::function<PromptSpec(uint64_t index)>;

class PromptLeases {
 public:
  struct Options {
    uint32_t group_size = 8;
    absl::Duration lease_timeout = absl::Minutes(10);
    absl::Duration heartbeat_timeout = absl::Seconds(30);
    // Called (under the leases' lock) for every prompt skipped because of its skip_reason.
    std::function<void(uint64_t index, const PromptSpec&)> on_skip;
  };
  PromptLeases(PromptSource source, const Options& options, common::Clock& clock);

  // Up to `max` leases for `actor_id`: re-issued prompts first, then fresh ones.
  std::vector<v1::PromptLease> Lease(const std::string& actor_id, uint32_t max);
  // The same, with each lease's prompt index (what the learner's log records).
  struct Granted {
    uint64_t prompt_index;
    v1::PromptLease lease;
  };
  std::vector<Granted> Grant(const std::string& actor_id, uint32_t max);

  // Replaying the learner's log after a restart: a logged grant makes the lease outstanding
  // again (fresh deadline) and moves the cursor past it; a logged expiry re-queues its prompt.
  void ApplyGrant(uint64_t prompt_index, const std::string& actor_id, const v1::PromptLease& lease);
  void ApplyExpiry(uint64_t lease_id);

  // The lease if it is outstanding (for validating incoming rollouts).
  std::optional<v1::PromptLease> Find(uint64_t lease_id) const;

  // Retires a lease whose group is complete. false if it was not outstanding.
  bool Complete(uint64_t lease_id);

  // Records a heartbeat: the actor's leases get fresh deadlines.
  void Heartbeat(const std::string& actor_id);

  // Releases every lease of `actor_id` for re-issue (the actor restarted). Returns their ids.
  std::vector<uint64_t> ReleaseActor(const std::string& actor_id);

  // Moves leases past their deadline, or whose actor has been silent longer than the heartbeat
  // timeout, to the re-issue queue. Returns the expired lease ids (their partial groups are
  // dead: the caller drops them).
  std::vector<uint64_t> ExpireStale();

  int64_t outstanding() const;
  int64_t expired_total() const;

  // State for checkpoints: the cursor, the re-issue queue and the outstanding leases. Restored
  // leases stay outstanding with fresh deadlines, so actors that reconnect can finish them.
  struct OutstandingLease {
    uint64_t prompt_index = 0;
    std::string actor_id;
    v1::PromptLease lease;
  };
  struct State {
    uint64_t next_index = 0;
    uint64_t next_lease_id = 1;
    std::vector<uint64_t> reissue;
    std::vector<OutstandingLease> outstanding;
  };
  State Snapshot() const;
  void Restore(const State& state);

 private:
  struct Outstanding {
    uint64_t prompt_index;
    std::string actor_id;
    absl::Time deadline;
    v1::PromptLease lease;
  };
  v1::PromptLease MakeLease(const PromptSpec& spec) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const PromptSource source_;
  const Options options_;
  common::Clock& clock_;
  mutable absl::Mutex mu_;
  uint64_t next_index_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_lease_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::deque<uint64_t> reissue_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, Outstanding> outstanding_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Time> last_heartbeat_ ABSL_GUARDED_BY(mu_);
  int64_t expired_total_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace rhythm::learner
