// A data-parallel learner rank above 0 (learner.rank > 0): no gRPC, no rollout log, no
// checkpoints; it trains its share of each batch rank 0 hands it (Trainer::FollowRank0) until
// rank 0 says stop.
#pragma once

#include <memory>

#include "absl/status/status.h"
#include "common/model/transformer.h"
#include "learner/rank_group.h"
#include "rhythm/v1/config.pb.h"

namespace rhythm::learner {

// Builds the trainer as the learner does (LearnerServer: the same trainer, credit, seed,
// temperature, taps and sampler settings) on `model` (of rank 0's shape; its weights, the
// frozen reference's and the AdamW shards come from rank 0, so a resumed run needs no copy of
// the checkpoint here) and follows rank 0. OK when rank 0 stopped the ranks; UNAVAILABLE when
// rank 0 or another rank died or hung past learner.rank_timeout_s.
absl::Status RunRankFollower(const v1::RhythmConfig& config,
                             std::unique_ptr<common::model::Transformer> model, RankGroup& ranks);

}  // namespace rhythm::learner
