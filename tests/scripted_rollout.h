// A valid rollout for a lease, as a scripted client (a test, a benchmark) sends it instead of
// a real actor: a fixed 5-token response ending in <eos> (id 2), behaviour log-probs and
// entropies, and an attention summary (FAI defined on the first token only), at version 0.
#pragma once

#include <cstdint>
#include <string>

#include "rhythm/v1/learner_service.pb.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::testing {

v1::Rollout ScriptedRollout(const v1::PromptLease& lease, const std::string& actor_id,
                            const std::string& run_id, uint64_t rollout_id, uint32_t sample_index,
                            double reward);

}  // namespace rhythm::testing
