// FaultAudit: after a learner run with faults, checks from what is on disk that nothing acked
// was lost or trained twice. It reads
//   - the journal (<run_dir>/rollout_log, learner/journal.h records), which spans every
//     incarnation of the learner: each resume appends to the same log;
//   - each incarnation's --dump-rollouts directory (step-<N>.jsonl: the batch of the step that
//     produced version N, written before the step; learner_server.cc DumpBatch);
//   - each incarnation's log (its stderr): "resumed <ckpt> (version V", "serving on port P,
//     version W", "step S version N";
//   - the final checkpoint (<run_dir>/checkpoints/LATEST), written by the last incarnation's
//     SIGTERM.
// Its oracle of what must have been trained is its own small simulation of the journal (lease
// grants, expiries, restarts releasing leases, groups completing), written from the README's
// rules, not the learner's LearnerState, so a bug there shows here. See fault_audit.cc for the
// lineage rule that decides which dumped steps survive. Functions, no state; not thread-safe
// only in that they read files a running learner writes (call them after it stopped).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "rhythm/v1/checkpoint.pb.h"
#include "rhythm/v1/journal.pb.h"

namespace rhythm::testing {

// Every record of <run_dir>/rollout_log in order, read through RolloutLog::Open (which, like the
// learner's own restart, cuts a torn tail: call it on a stopped learner's run). FAILED_PRECONDITION
// if the log was trimmed (first_seq != 1): the audit needs the whole history. Open's errors
// otherwise.
absl::StatusOr<std::vector<v1::JournalRecord>> ReadJournal(const std::string& run_dir);

// The checkpoint <run_dir>/checkpoints/LATEST names; NOT_FOUND / DATA_LOSS naming the file.
absl::StatusOr<v1::LearnerCheckpoint> ReadLatestCheckpoint(const std::string& run_dir);

// One learner process of the run, in start order (the first one started fresh).
struct Incarnation {
  std::string log;       // its stderr
  std::string dump_dir;  // its --dump-rollouts DIR
};

struct FaultAuditReport {
  // Rollout records in the journal: each was acked to its actor (or lost its ack on the wire).
  int64_t acked = 0;
  // Of those: trained exactly once in the surviving lineage; still queued in the final
  // checkpoint (a complete group waiting, or a partial one under an outstanding lease or
  // waiting for a lease that continues it); lost (never trained, not queued, or journaled
  // after its lease ended); trained more than once.
  int64_t trained = 0, queued = 0, lost = 0, duplicated = 0;
  // Journal facts (continuations: grants that complete a group whose lease had ended).
  int64_t grants = 0, expiries = 0, restarts = 0, publications = 0, continuations = 0;
  // Dumped steps in the surviving lineage, and dumped steps a crash threw away.
  int64_t lineage_steps = 0, discarded_steps = 0;
  // Per incarnation: training steps logged, and the version it started serving.
  std::vector<int64_t> steps_logged, serving_version;
  // Every violation found, one sentence each; empty = the run is consistent.
  std::vector<std::string> problems;

  // "acked A trained T queued Q lost L duplicated X ..."
  std::string Summary() const;
};

// Audits the run; `group_size` is trainer.group_size. Unreadable inputs are problems too.
FaultAuditReport AuditRun(const std::string& run_dir, const std::vector<Incarnation>& incarnations,
                          int group_size);

}  // namespace rhythm::testing
