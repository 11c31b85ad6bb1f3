// RolloutLedger: which rollouts the learner has already ingested, for exactly-once ingestion,
// in memory bounded by (runs x window) instead of one key per rollout ever received
// (docs/architecture.md §4.1).
//
// A rollout is named by (actor_id, run_id, rollout_id). Per (actor, run) the ledger keeps a
// watermark W (every id <= W counts as seen) and the set of ids above W that were inserted out
// of order:
//
//   ids:   1 2 3 4 5 6 7 8 9 10 11 12
//   seen:  x x x x   x x   x        x       W = 4, above = {6, 7, 9, 12}
//
// Compaction: while W + 1 is in the set, W advances (inserting 5 above makes W = 7, above =
// {9, 12}). Bound: whenever max_seen - W exceeds `window`, W jumps to max_seen - window and the
// ids at or below it leave the set, so a run holds at most `window` ids (max_seen - W <= window,
// and W + 1 is never held). An id that the jump passed over without its having been inserted
// (a hole) then counts as seen: the window is the promise that such an id is never sent again.
//
// Why that promise holds (the assumption the window rests on). As of this writing:
//   1. actor/actor.cc numbers rollouts 1, 2, 3, ... per actor process (`next_rollout_id_`
//      starts at 1, one increment per rollout, one generation thread), and every process has a
//      fresh random run_id (actor/main.cc), so a run's ids are dense and made in order.
//   2. The actor's RolloutStreamer writes each stream's rollouts in increasing id order: new
//      ones first-in first-out, and after a reconnect every unacked one first, oldest first.
//      A rollout leaves the actor's buffer only when acked (accepted, duplicate or rejected).
//   3. The learner reads a stream on one thread and Submits in the order read; its ingest queue
//      is FIFO and one ingest thread makes rollouts durable (and inserts them) in that order; a
//      failed append stops the learner, so nothing later becomes durable in that process. The
//      log replays in the same order on --resume.
// Hence when id M of a run is inserted, every smaller id of that run has been inserted too,
// or was rejected as invalid (never inserted; the actor drops it on the reject ack), or is a
// copy of one already inserted still travelling on an older stream. The only holes below the
// newest id are rejected rollouts, and they are what the window forgets. A rejected rollout
// whose reject ack was lost with its stream is resent; if the window passed it, it is answered
// "duplicate" instead of rejected again: the actor drops it either way and it was never
// trained on. So, under 1-3, the window's size does not matter for correctness; it is slack
// that keeps the ledger exact under any reordering of up to `window` ids within a run.
//
// What the window does NOT rest on: learner.credits_per_actor (default 64, per stream) and
// actor.max_unacked (default 1024) bound how MANY rollouts of a run can be in flight at once,
// not how far apart their ids are: one rollout stuck unacked while later ones are acked falls
// arbitrarily far behind. If 3 ever changes (several ingest threads, several streams of one run
// ingested in parallel), the window must be at least the largest id distance by which a
// rollout can become durable after a later one of its run; keep window >= actor.max_unacked
// and re-check this argument.
//
// Rollout id 0 is reserved: the actor never uses it (it numbers from 1), and with W = 0
// meaning "nothing seen" an id 0 cannot be told apart. Seen(.., 0) is true and Insert(.., 0)
// does nothing, so a rollout with id 0 must be rejected as malformed before the ledger is asked
// (rollout validation), or it would be acked as a duplicate and never trained on. (Answering
// false instead would ingest every resend of it again: worse.)
//
// Memory: runs() x window ids at most, plus one entry per run. Runs are forgotten only by
// ForgetActor; an actor whose actor_id changes with every restart (the default
// "<hostname>-<pid>") leaves its old runs behind, one small entry each.
//
// Thread-safety: none; the owner serialises access (the learner holds its state lock).
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/container/btree_set.h"
#include "absl/status/statusor.h"

namespace rhythm::v1 {
class RolloutLedgerState;
}  // namespace rhythm::v1

namespace rhythm::learner {

class RolloutLedger {
 public:
  // `window`: how far (in ids) below a run's newest inserted id an id may still be inserted
  // and told apart; see above. 0 makes the ledger accept ids only in increasing order.
  explicit RolloutLedger(uint64_t window = 4096);

  // True if (actor_id, run_id, rollout_id) was inserted, or lies at or below the run's
  // watermark (always true for rollout_id 0, which is reserved). An unknown run has seen
  // nothing.
  bool Seen(const std::string& actor_id, const std::string& run_id, uint64_t rollout_id) const;

  // Records the rollout as ingested. Idempotent; inserting an id at or below the watermark, or
  // id 0, changes nothing.
  void Insert(const std::string& actor_id, const std::string& run_id, uint64_t rollout_id);

  // Drops every run of `actor_id` other than `keep_run_id`: the actor restarted, and its old
  // process can never resend. (Only call it when that is true: a second live process with the
  // same actor_id would have its resends ingested again.)
  void ForgetActor(const std::string& actor_id, const std::string& keep_run_id);

  // Number of (actor, run) entries, and of ids held above watermarks (for a gauge and tests).
  int64_t runs() const;
  int64_t ids_held() const;
  uint64_t window() const { return window_; }

  // Writes the state, runs ordered by actor_id then run_id, `above` ascending. Replaces `out`.
  void ToProto(v1::RolloutLedgerState* out) const;

  // Rebuilds a ledger from ToProto's output under `window` (which may differ from the one it
  // was written with: a smaller window advances watermarks as Insert would; an `above` that
  // starts at watermark + 1 is compacted). DATA_LOSS, naming
  // the field and its value, for an empty actor_id or run_id, a duplicate (actor_id, run_id),
  // an `above` id at or below its watermark, or `above` not strictly increasing.
  static absl::StatusOr<RolloutLedger> FromProto(const v1::RolloutLedgerState& state,
                                                 uint64_t window);

 private:
  struct Run {
    uint64_t watermark = 0;
    absl::btree_set<uint64_t> above;  // every element > watermark + 1
  };
  // Restores the invariants after `run` gained ids: compaction, then the window bound.
  void Normalize(Run& run) const;

  uint64_t window_;
  // actor_id -> run_id -> run. Ordered, so ToProto's output is deterministic.
  std::map<std::string, std::map<std::string, Run>> actors_;
};

}  // namespace rhythm::learner
