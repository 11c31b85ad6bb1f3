#include "learner/rollout_validation.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/rollout/summary_codec.h"

namespace rhythm::learner {
namespace {

ValidationResult Reject(v1::RejectReason reason, const std::string& message) {
  return {absl::InvalidArgumentError(message), reason};
}

}  // namespace

ValidationLimits ValidationLimits::FromConfig(const v1::LearnerConfig& learner, int64_t vocab_size,
                                              int64_t current_version) {
  ValidationLimits l;
  l.vocab_size = vocab_size;
  l.current_version = current_version;
  l.max_bytes = learner.max_message_bytes();
  l.max_abs_reward = learner.max_abs_reward();
  l.min_behaviour_logprob = learner.min_behaviour_logprob();
  return l;
}

ValidationResult ValidateRollout(const v1::Rollout& r, const ValidationLimits& limits) {
  const int64_t bytes = static_cast<int64_t>(r.ByteSizeLong());
  if (bytes > limits.max_bytes) {
    return Reject(v1::REJECT_REASON_OVERSIZED,
                  absl::StrCat("rollout ", r.rollout_id(), ": ", bytes,
                               " bytes exceeds the limit of ", limits.max_bytes));
  }
  const int n = r.response_token_ids_size();
  const std::string id = absl::StrCat("rollout ", r.rollout_id(), ": ");
  if (r.actor_id().empty() || r.run_id().empty()) {
    return Reject(v1::REJECT_REASON_MALFORMED, id + "actor_id and run_id must be set");
  }
  if (r.rollout_id() == 0) {
    return Reject(v1::REJECT_REASON_MALFORMED,
                  id + "rollout_id = 0 is reserved; an actor run numbers its rollouts from 1");
  }
  if (n == 0) return Reject(v1::REJECT_REASON_LENGTH_MISMATCH, id + "response_token_ids is empty");
  if (r.prompt_token_ids_size() == 0) {
    return Reject(v1::REJECT_REASON_LENGTH_MISMATCH, id + "prompt_token_ids is empty");
  }
  if (r.group_size() == 0 || r.sample_index() >= r.group_size()) {
    return Reject(v1::REJECT_REASON_MALFORMED,
                  absl::StrCat(id, "sample_index = ", r.sample_index(), " with group_size = ",
                               r.group_size()));
  }
  auto length = [&](const char* field, int size) -> ValidationResult {
    if (size == n) return {};
    return Reject(v1::REJECT_REASON_LENGTH_MISMATCH,
                  absl::StrCat(id, field, " has ", size, " values, response_token_ids has ", n));
  };
  if (auto v = length("behaviour_logprobs", r.behaviour_logprobs_size()); !v.ok()) return v;
  if (auto v = length("entropy", r.entropy_size()); !v.ok()) return v;
  for (int i = 0; i < r.prompt_token_ids_size(); ++i) {
    if (r.prompt_token_ids(i) >= limits.vocab_size) {
      return Reject(v1::REJECT_REASON_TOKEN_OUT_OF_VOCAB,
                    absl::StrCat(id, "prompt_token_ids[", i, "] = ", r.prompt_token_ids(i),
                                 " is outside the vocabulary (", limits.vocab_size, ")"));
    }
  }
  for (int i = 0; i < n; ++i) {
    if (r.response_token_ids(i) >= limits.vocab_size) {
      return Reject(v1::REJECT_REASON_TOKEN_OUT_OF_VOCAB,
                    absl::StrCat(id, "response_token_ids[", i, "] = ", r.response_token_ids(i),
                                 " is outside the vocabulary (", limits.vocab_size, ")"));
    }
    const float lp = r.behaviour_logprobs(i);
    if (!std::isfinite(lp) || lp > 1e-4f) {
      return Reject(v1::REJECT_REASON_NON_FINITE,
                    absl::StrCat(id, "behaviour_logprobs[", i, "] = ", lp,
                                 " must be finite and <= 0"));
    }
    if (lp < limits.min_behaviour_logprob) {
      return Reject(v1::REJECT_REASON_OUT_OF_RANGE,
                    absl::StrCat(id, "behaviour_logprobs[", i, "] = ", lp, " is below ",
                                 limits.min_behaviour_logprob, " (learner.min_behaviour_logprob)"));
    }
    if (!std::isfinite(r.entropy(i)) || r.entropy(i) < -1e-4f) {
      return Reject(v1::REJECT_REASON_NON_FINITE,
                    absl::StrCat(id, "entropy[", i, "] = ", r.entropy(i),
                                 " must be finite and >= 0"));
    }
  }
  if (!std::isfinite(r.verifier().reward())) {
    return Reject(v1::REJECT_REASON_NON_FINITE,
                  absl::StrCat(id, "verifier.reward = ", r.verifier().reward(), " is not finite"));
  }
  if (limits.max_abs_reward > 0 && std::abs(r.verifier().reward()) > limits.max_abs_reward) {
    return Reject(
        v1::REJECT_REASON_OUT_OF_RANGE,
        absl::StrCat(id, "verifier.reward = ", r.verifier().reward(),
                     " exceeds |reward| <= ", limits.max_abs_reward, " (learner.max_abs_reward)"));
  }
  if (r.version_spans_size() == 0 || r.version_spans(0).begin() != 0) {
    return Reject(v1::REJECT_REASON_MALFORMED, id + "version_spans must start at token 0");
  }
  for (int i = 0; i < r.version_spans_size(); ++i) {
    const auto& s = r.version_spans(i);
    if (i > 0 && s.begin() <= r.version_spans(i - 1).begin()) {
      return Reject(v1::REJECT_REASON_MALFORMED,
                    absl::StrCat(id, "version_spans[", i, "].begin = ", s.begin(),
                                 " does not increase"));
    }
    // Compared as 64-bit: an int cast would wrap a begin of 2^31 negative and pass it.
    if (static_cast<int64_t>(s.begin()) >= n) {
      return Reject(v1::REJECT_REASON_MALFORMED,
                    absl::StrCat(id, "version_spans[", i, "].begin = ", s.begin(),
                                 " is past the response (", n, " tokens)"));
    }
    if (s.version() < 0) {
      return Reject(
          v1::REJECT_REASON_MALFORMED,
          absl::StrCat(id, "version_spans[", i, "].version = ", s.version(), " is negative"));
    }
    if (s.version() > limits.current_version) {
      return Reject(v1::REJECT_REASON_FUTURE_VERSION,
                    absl::StrCat(id, "version_spans[", i, "].version = ", s.version(),
                                 " but the newest version is ", limits.current_version));
    }
  }
  if (r.has_summary()) {
    const v1::AttentionSummary& s = r.summary();
    if (static_cast<int>(s.waad_f16().size()) != 2 * n) {
      return Reject(v1::REJECT_REASON_SUMMARY_LENGTH,
                    absl::StrCat(id, "summary.waad_f16 has ", s.waad_f16().size() / 2,
                                 " values, response_token_ids has ", n));
    }
    if (static_cast<int>(s.fai_f16().size()) != 2 * n) {
      return Reject(v1::REJECT_REASON_SUMMARY_LENGTH,
                    absl::StrCat(id, "summary.fai_f16 has ", s.fai_f16().size() / 2,
                                 " values, response_token_ids has ", n));
    }
    const common::rollout::SummaryFields decoded = common::rollout::DecodeSummary(s);
    const std::vector<float>& waad = decoded.waad;
    for (int i = 0; i < n; ++i) {
      if (!std::isfinite(waad[i])) {
        return Reject(v1::REJECT_REASON_NON_FINITE,
                      absl::StrCat(id, "summary.waad[", i, "] = ", waad[i], " is not finite"));
      }
    }
    const std::vector<float>& fai = decoded.fai;
    for (int i = 0; i < n; ++i) {
      if (std::isinf(fai[i])) {
        return Reject(v1::REJECT_REASON_NON_FINITE,
                      absl::StrCat(id, "summary.fai[", i, "] = ", fai[i], " is not finite"));
      }
    }
  }
  return {};
}

}  // namespace rhythm::learner
