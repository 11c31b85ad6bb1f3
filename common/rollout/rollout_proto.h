// A generated sample as the wire's v1::Rollout: the fields the sample itself determines (prompt
// and response token ids, behaviour log-probs, entropies, the finish reason and, with taps, the
// attention summary through the fp16 codec). The lease, the verifier and the versions are the
// caller's (the actor's RolloutProducer; tests that build rollouts from the engine). Pure.
#pragma once

#include "common/rollout/attention_summary.h"
#include "common/rollout/engine.h"
#include "rhythm/v1/rollout.pb.h"

namespace rhythm::common::rollout {

v1::FinishReason ToProto(FinishReason finish);

// Sets `r`'s token ids, behaviour log-probs, entropies, finish reason and (when the sample has
// one) summary, encoded with the taps it was computed with (`resolved`). Other fields untouched.
void FillFromSample(const GeneratedSample& sample, const TapOptions& resolved, v1::Rollout& r);

}  // namespace rhythm::common::rollout
