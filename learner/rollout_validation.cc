#include "learner/rollout_validation.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace rhythm::learner {
namespace {

ValidationResult Reject(v1::RejectReason reason, const std::string& message) {
  return {absl::InvalidArgumentError(message), reason};
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int e = -1;
      uint32_t m = mant;
      do {
        ++e;
        m <<= 1;
      } while ((m & 0x400) == 0);
      bits = sign | ((127 - 15 - e) << 23) | ((m & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t FloatToHalf(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (abs < 0x38800000u) {  // subnormal or zero in half
    const float magnitude = std::ldexp(std::fabs(f), 24);  // units of 2^-24
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(magnitude)));
  }
  // Normal: round mantissa to 10 bits, nearest even.
  const uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
  return static_cast<uint16_t>(sign | ((rounded - (112u << 23)) >> 13));
}

}  // namespace

std::vector<float> DecodeFp16(const std::string& bytes) {
  std::vector<float> out(bytes.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    const uint16_t h = static_cast<uint16_t>(static_cast<uint8_t>(bytes[2 * i]) |
                                             (static_cast<uint8_t>(bytes[2 * i + 1]) << 8));
    out[i] = HalfToFloat(h);
  }
  return out;
}

std::string EncodeFp16(const std::vector<float>& values) {
  std::string out(values.size() * 2, '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t h = FloatToHalf(values[i]);
    out[2 * i] = static_cast<char>(h & 0xff);
    out[2 * i + 1] = static_cast<char>(h >> 8);
  }
  return out;
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
    if (static_cast<int>(s.begin()) >= n) {
      return Reject(v1::REJECT_REASON_MALFORMED,
                    absl::StrCat(id, "version_spans[", i, "].begin = ", s.begin(),
                                 " is past the response (", n, " tokens)"));
    }
    if (s.version() > limits.current_version || s.version() < 0) {
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
    const std::vector<float> waad = DecodeFp16(s.waad_f16());
    for (int i = 0; i < n; ++i) {
      if (!std::isfinite(waad[i])) {
        return Reject(v1::REJECT_REASON_NON_FINITE,
                      absl::StrCat(id, "summary.waad[", i, "] = ", waad[i], " is not finite"));
      }
    }
    const std::vector<float> fai = DecodeFp16(s.fai_f16());
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
