#include "learner/train_loop.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "learner/rollout_dump.h"
#include "learner/trainer.h"

namespace rhythm::learner {

TrainLoop::TrainLoop(Options options, BatchAssembler& queue, Trainer& trainer,
                     LearnerMetrics& metrics, std::atomic<int64_t>& version, Hooks hooks)
    : options_(std::move(options)),
      queue_(queue),
      trainer_(trainer),
      metrics_(metrics),
      version_(version),
      hooks_(std::move(hooks)) {}

void TrainLoop::Run(const std::atomic<bool>& stop) {
  const v1::RhythmConfig& c = options_.config;
  while (!stop.load()) {
    BatchAssembler::BatchInfo info;
    std::optional<std::vector<Group>> batch =
        queue_.NextBatch(version_.load(), absl::Milliseconds(200), &info);
    if (!batch) {
      // Data-parallel ranks: a rank that died or hangs is found while no batch is ready.
      if (absl::Status h = trainer_.Heartbeat(); !h.ok()) {
        hooks_.fail(h);
        return;
      }
      continue;
    }
    // Staleness along the weights' lineage (BatchAssembler::SetResumePoint), as the drop rule
    // counts it; the trainer's own figure is the raw version difference.
    double staleness = 0;
    for (const Group& g : *batch) {
      const double v = static_cast<double>(
          version_.load() - queue_.LineageVersion(BatchAssembler::OldestVersion(g)));
      metrics_.staleness.Observe(v);
      staleness += v / static_cast<double>(batch->size());
    }
    if (!options_.dump_dir.empty()) {
      if (absl::Status d = DumpBatch(options_.dump_dir, *batch, trainer_.version() + 1); !d.ok()) {
        RHYTHM_LOG(Warning) << "learner: " << d;
      }
    }
    absl::StatusOr<StepStats> s = trainer_.Step(*batch);
    if (!s.ok()) {
      hooks_.fail(
          absl::InternalError(absl::StrCat("training step failed: ", s.status().message())));
      return;
    }
    if (s->skipped()) {
      // The guard abandoned the step: the weights are as before, nothing is published, and
      // the batch is dropped (training on it again would poison the step again).
      metrics_.steps_skipped.Add({{"reason", s->skipped_reason}}).Increment();
      RHYTHM_LOG(Warning) << absl::StrFormat(
          "learner: step skipped (%s) at version %d: nothing trained or published; %d of the "
          "batch's %d rollouts have non-finite inputs or sit in the failing mini-batch: "
          "rollout ids %s",
          s->skipped_reason, s->version, s->offending_rollout_ids.size(), s->sequences,
          absl::StrJoin(s->offending_rollout_ids, ","));
      continue;
    }
    version_ = s->version;
    if (absl::Status ps = hooks_.publish(s->version); !ps.ok()) {
      hooks_.fail(absl::InternalError(
          absl::StrCat("journaling version ", s->version, ": ", ps.message())));
      return;
    }
    // The version gauge moves before the step counter, so a reader that sees N steps also
    // sees the version of step N.
    metrics_.policy_version.Set(static_cast<double>(s->version));
    const int64_t steps = ++steps_;
    metrics_.RecordStep(*s);
    metrics_.batch_groups.Set(static_cast<double>(info.groups));
    metrics_.groups_filtered.Set(info.filtered_fraction());
    metrics_.sampling_extra_rounds.Observe(static_cast<double>(info.extra_rounds));
    if (info.short_batch) metrics_.short_batches.Increment();
    if (s->fai_undefined_responses > 0 && !warned_fai_undefined_) {
      warned_fai_undefined_ = true;
      RHYTHM_LOG(Warning) << absl::StrFormat(
          "learner: %d of %d responses in step %d have FAI undefined at every token: they are "
          "shorter than generation.fai_band_lo + 1 = %d tokens, so anchor credit cannot act on "
          "them (counted in rhythm_learner_fai_undefined_responses_total; warned once)",
          s->fai_undefined_responses, s->sequences, steps, c.generation().fai_band_lo() + 1);
    }
    RHYTHM_LOG(Info) << absl::StrFormat(
        "learner: step %d version %d reward %.3f acc %.3f loss %.4f clip %.3f kl %.5f "
        "tokens/s %.0f staleness %.2f groups %d%s filtered %.2f",
        steps, s->version, s->reward_mean, s->accuracy, s->loss, s->clip_fraction, s->approx_kl,
        s->tokens / std::max(s->seconds, 1e-9), staleness, info.groups,
        info.short_batch ? " (short)" : "", info.filtered_fraction());
    const int every = c.learner().checkpoint_every();
    if (every > 0 && steps % every == 0) {
      if (absl::Status cs = hooks_.checkpoint(); !cs.ok()) {
        RHYTHM_LOG(Error) << "learner: checkpoint failed: " << cs;
      }
    }
    const int eval_every = c.learner().eval_every();
    if (hooks_.evaluate && eval_every > 0 && total_steps() % eval_every == 0) {
      hooks_.evaluate(s->version);
    }
    if (c.trainer().steps() > 0 && total_steps() >= c.trainer().steps()) {
      hooks_.finished();
      return;
    }
  }
}

}  // namespace rhythm::learner
