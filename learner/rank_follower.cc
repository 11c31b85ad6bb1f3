#include "learner/rank_follower.h"

#include <utility>

#include "common/logging.h"
#include "common/rollout/engine.h"
#include "common/status.h"
#include "learner/trainer.h"

namespace rhythm::learner {

absl::Status RunRankFollower(const v1::RhythmConfig& c,
                             std::unique_ptr<common::model::Transformer> model, RankGroup& ranks) {
  RHYTHM_ASSIGN_OR_RETURN(
      std::unique_ptr<Trainer> trainer,
      Trainer::Create(*model, c.trainer(), c.credit(), c.runtime().seed(), 0,
                      c.generation().temperature(),
                      common::rollout::GenerationOptionsFromConfig(c.generation()).tap,
                      ActorSettings::FromConfig(c.generation()), &ranks));
  RHYTHM_LOG(Info) << "rhythm-learner: rank " << ranks.rank() << " of " << ranks.world_size()
                   << " following rank 0 (" << trainer->optimizer_state_numel()
                   << " AdamW state elements here)";
  absl::Status s = trainer->FollowRank0();
  if (s.ok()) {
    RHYTHM_LOG(Info) << "rhythm-learner: rank " << ranks.rank() << " stopped by rank 0 at version "
                     << trainer->version();
  }
  return s;
}

}  // namespace rhythm::learner
