#include "common/rollout/rollout_proto.h"

namespace rhythm::common::rollout {

v1::FinishReason ToProto(FinishReason finish) {
  switch (finish) {
    case FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case FinishReason::kStopString:
      return v1::FINISH_REASON_STOP_STRING;
    case FinishReason::kLength:
      break;
  }
  return v1::FINISH_REASON_LENGTH;
}

void FillFromSample(const GeneratedSample& s, const TapOptions& resolved, v1::Rollout& r) {
  for (int32_t t : s.prompt_ids) r.add_prompt_token_ids(static_cast<uint32_t>(t));
  for (int32_t t : s.response_ids) r.add_response_token_ids(static_cast<uint32_t>(t));
  for (float lp : s.logprobs) r.add_behaviour_logprobs(lp);
  for (float e : s.entropy) r.add_entropy(e);
  r.set_finish_reason(ToProto(s.finish));
  if (s.summary) *r.mutable_summary() = EncodeSummary(ToSummaryFields(*s.summary, resolved));
}

}  // namespace rhythm::common::rollout
