// StepStats: what one training step reports (learner/trainer.h computes it; the learner's
// metrics and log record it). A plain struct, no dependencies, so readers need not see torch.
#pragma once

#include <cstdint>
#include <limits>
#include <vector>

namespace rhythm::learner {

// How closely the actor's summary of one rollout (computed in its decode loop under the
// behaviour policy, sent as fp16) agrees with the learner's (recomputed under pi_old from the
// old-log-prob pass's attention maps), credit.summary_agreement only. NaN = undefined.
struct SummaryAgreement {
  // Trainer version before the step - the oldest version that generated the rollout's tokens
  // (raw version numbers, like StepStats::staleness_mean), at least 0.
  int64_t staleness = 0;
  // Spearman rank correlation of WAAD over the response tokens; NaN when either side is
  // constant (a one-token response).
  double waad_spearman = std::numeric_limits<double>::quiet_NaN();
  // The same for FAI over the tokens where both define it; NaN below two such tokens.
  double fai_spearman = std::numeric_limits<double>::quiet_NaN();
  // Jaccard of the token sets the configured strategy amplifies from each source (same seed):
  // 1 by construction for strategies that ignore the summary (none, random, entropy).
  double selection_jaccard = std::numeric_limits<double>::quiet_NaN();
  // max_t |actor_t - learner_t| / (2^-11 |learner_t| + 1e-5): <= 1 means the two differ by no
  // more than the fp16 rounding of the wire (common/rollout/summary_codec.h). FAI over the
  // tokens both define (0 when none); +inf when the sources disagree on where FAI is defined.
  double waad_fp16_error_ratio = 0;
  double fai_fp16_error_ratio = 0;
  // Whether both sources split the heads alike (the same local and global sets): when the
  // policy moved far enough to reorder two heads' mean distances, WAAD or FAI average other
  // heads and the error ratio is far above 1 though the rankings may still agree.
  bool same_heads = true;
};

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
  // Responses trained with gamma = 1 for lack of a summary (with summary_source = learner the
  // learner computes every one, so this stays 0).
  int64_t missing_summaries = 0;
  // Share of response tokens whose FAI is defined (summaries present); responses whose FAI is
  // undefined at every token (too short for the FAI band: anchor credit cannot act on them).
  double fai_defined_fraction = 0;
  int64_t fai_undefined_responses = 0;
  double amplified_token_fraction = 0;  // share of response tokens with gamma > 1
  // One entry per rollout that carried an actor summary, with credit.summary_agreement on.
  std::vector<SummaryAgreement> agreement;
  double seconds = 0;
};

}  // namespace rhythm::learner
