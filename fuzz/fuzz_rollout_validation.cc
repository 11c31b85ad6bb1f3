// fuzz_rollout_validation: the learner's rollout validator (learner/rollout_validation.h).
//
// Feeds: the input bytes as a serialized rhythm.v1.Rollout (what an actor sends inside
// StreamRollouts); bytes that do not parse are skipped. Each parsed rollout is validated
// under two limit sets: a tiny vocabulary and version 0, and Qwen3's vocabulary at version 7.
// Asserts: no crash, abort, sanitizer report or hang; the result is OK with reason
// UNSPECIFIED, or INVALID_ARGUMENT with a named reason and a message starting "rollout <id>: ";
// an accepted rollout holds what the trainer relies on (checked here the slow, obvious way):
// ids inside the vocabulary, one finite log-prob <= 1e-4 and >= the bound and one finite
// entropy per token, a finite reward within the bound, version spans that start at 0,
// increase, lie inside the response and name versions in [0, current], and summary series of
// one fp16 value per token. Round trip: the re-serialized message parses to the same bytes and
// validates to the same result.
// Seeds: fuzz/corpus/rollout_validation/ (valid rollouts with and without a summary, and ones
// rejected for each of several reasons).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "fuzz/fuzz_check.h"
#include "google/protobuf/stubs/logging.h"
#include "learner/rollout_validation.h"
#include "rhythm/v1/rollout.pb.h"

namespace {

using rhythm::learner::ValidationLimits;
using rhythm::learner::ValidationResult;

void CheckAccepted(const rhythm::v1::Rollout& r, const ValidationLimits& l) {
  const int n = r.response_token_ids_size();
  FUZZ_CHECK(n > 0 && r.prompt_token_ids_size() > 0, "empty ids accepted");
  FUZZ_CHECK(!r.actor_id().empty() && !r.run_id().empty() && r.rollout_id() != 0, "ids");
  FUZZ_CHECK(r.sample_index() < r.group_size(), "sample_index");
  FUZZ_CHECK(r.behaviour_logprobs_size() == n && r.entropy_size() == n, "lengths");
  for (uint32_t id : r.prompt_token_ids()) FUZZ_CHECK(id < l.vocab_size, "prompt id");
  for (int i = 0; i < n; ++i) {
    FUZZ_CHECK(r.response_token_ids(i) < l.vocab_size, "response id");
    const float lp = r.behaviour_logprobs(i);
    FUZZ_CHECK(std::isfinite(lp) && lp <= 1e-4f && lp >= l.min_behaviour_logprob,
               absl::StrCat("log-prob ", lp));
    FUZZ_CHECK(std::isfinite(r.entropy(i)), "entropy");
  }
  const double reward = r.verifier().reward();
  FUZZ_CHECK(std::isfinite(reward) && std::fabs(reward) <= l.max_abs_reward,
             absl::StrCat("reward ", reward));
  FUZZ_CHECK(r.version_spans_size() > 0 && r.version_spans(0).begin() == 0, "first span");
  for (int i = 0; i < r.version_spans_size(); ++i) {
    const auto& s = r.version_spans(i);
    FUZZ_CHECK(s.begin() < static_cast<uint64_t>(n), "span begin");
    FUZZ_CHECK(i == 0 || s.begin() > r.version_spans(i - 1).begin(), "span order");
    FUZZ_CHECK(s.version() >= 0 && s.version() <= l.current_version, "span version");
  }
  if (r.has_summary()) {
    FUZZ_CHECK(r.summary().waad_f16().size() == 2 * static_cast<size_t>(n) &&
                   r.summary().fai_f16().size() == 2 * static_cast<size_t>(n),
               "summary length");
  }
}

void CheckResult(const rhythm::v1::Rollout& r, const ValidationResult& v,
                 const ValidationLimits& l) {
  if (v.ok()) {
    FUZZ_CHECK(v.reason == rhythm::v1::REJECT_REASON_UNSPECIFIED, "OK with a reason");
    CheckAccepted(r, l);
    return;
  }
  FUZZ_CHECK(v.status.code() == absl::StatusCode::kInvalidArgument, v.status.ToString());
  FUZZ_CHECK(v.reason != rhythm::v1::REJECT_REASON_UNSPECIFIED, "rejected without a reason");
  FUZZ_CHECK(absl::StartsWith(v.status.message(), absl::StrCat("rollout ", r.rollout_id(), ": ")),
             v.status.ToString());
}

}  // namespace

// Invalid UTF-8 in a string field is a parse failure, logged by protobuf each time: silenced.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  rhythm::v1::Rollout r;
  if (!r.ParseFromArray(data, static_cast<int>(size))) return 0;
  ValidationLimits tiny;
  tiny.vocab_size = 32;
  tiny.current_version = 0;
  tiny.max_abs_reward = 10;
  tiny.min_behaviour_logprob = -50;
  ValidationLimits qwen;
  qwen.vocab_size = 151936;
  qwen.current_version = 7;
  const std::string bytes = r.SerializeAsString();
  rhythm::v1::Rollout again;
  FUZZ_CHECK(again.ParseFromString(bytes), "re-serialized rollout does not parse");
  FUZZ_CHECK(again.SerializeAsString() == bytes, "serialization is not stable");
  for (const ValidationLimits& l : {tiny, qwen}) {
    const ValidationResult v = rhythm::learner::ValidateRollout(r, l);
    CheckResult(r, v, l);
    const ValidationResult w = rhythm::learner::ValidateRollout(again, l);
    FUZZ_CHECK(w.ok() == v.ok() && w.reason == v.reason && w.status.message() == v.status.message(),
               "the round-tripped rollout validates differently");
  }
  return 0;
}
