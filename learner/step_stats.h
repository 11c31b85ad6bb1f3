// StepStats: what one training step reports (learner/trainer.h computes it; the learner's
// metrics and log record it). A plain struct, no dependencies, so readers need not see torch.
#pragma once

#include <cstdint>

namespace rhythm::learner {

struct StepStats {
  int64_t version = 0;  // the version after this step
  int64_t sequences = 0;
  int64_t tokens = 0;   // response tokens trained on
  double loss = 0;
  double clip_fraction = 0;
  double mean_ratio = 0;
  double approx_kl = 0;
  double grad_norm = 0;  // before clipping, last mini-batch
  double lr = 0;
  double reward_mean = 0;
  double accuracy = 0;   // fraction of responses the verifier judged correct
  double entropy_mean = 0;
  double response_length_mean = 0;
  // Current version - oldest token version, per group, by raw numbers (the learner logs and
  // exports staleness along the lineage instead: learner/train_loop.h).
  double staleness_mean = 0;
  double preplan_token_fraction = 0, anchor_token_fraction = 0;
  double preplan_credit_fraction = 0, anchor_credit_fraction = 0;
  int64_t missing_summaries = 0;  // responses trained with gamma = 1 for lack of a summary
  // Share of response tokens whose FAI is defined (summaries present); responses whose FAI is
  // undefined at every token (too short for the FAI band: anchor credit cannot act on them).
  double fai_defined_fraction = 0;
  int64_t fai_undefined_responses = 0;
  double amplified_token_fraction = 0;  // share of response tokens with gamma > 1
  double seconds = 0;
};

}  // namespace rhythm::learner
