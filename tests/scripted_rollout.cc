#include "tests/scripted_rollout.h"

#include <cmath>
#include <vector>

#include "common/rollout/summary_codec.h"

namespace rhythm::testing {

v1::Rollout ScriptedRollout(const v1::PromptLease& lease, const std::string& actor_id,
                            const std::string& run_id, uint64_t rollout_id, uint32_t sample_index,
                            double reward) {
  v1::Rollout r;
  r.set_rollout_id(rollout_id);
  r.set_actor_id(actor_id);
  r.set_run_id(run_id);
  r.set_prompt_id(lease.prompt_id());
  r.set_group_id(lease.lease_id());
  r.set_sample_index(sample_index);
  r.set_group_size(lease.group_size());
  r.add_version_spans()->set_version(0);
  for (uint32_t t : lease.prompt_token_ids()) r.add_prompt_token_ids(t);
  for (uint32_t t : {10u, 11u, 12u, 13u, 2u}) {
    r.add_response_token_ids(t);
    r.add_behaviour_logprobs(-4.6f);
    r.add_entropy(4.5f);
  }
  r.mutable_verifier()->set_reward(reward);
  common::rollout::SummaryFields summary;
  summary.waad = {1, 3, 1, 2, 1};
  summary.fai = {0.1f, NAN, NAN, NAN, NAN};
  *r.mutable_summary() = common::rollout::EncodeSummary(summary);
  return r;
}

}  // namespace rhythm::testing
