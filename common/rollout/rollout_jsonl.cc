#include "common/rollout/rollout_jsonl.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/rollout/summary_codec.h"
#include "nlohmann/json.hpp"

namespace rhythm::common::rollout {
namespace {

using nlohmann::json;

absl::Status LineError(int64_t line, absl::string_view field, absl::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", field, ": ", problem));
}

// Reads a numeric array; nulls become NaN when allowed.
absl::Status ReadArray(const json& obj, const char* field, int64_t line, bool required,
                       bool allow_null, std::vector<double>* out) {
  auto it = obj.find(field);
  if (it == obj.end()) {
    return required ? LineError(line, field, "missing") : absl::OkStatus();
  }
  if (!it->is_array()) return LineError(line, field, "expected an array of numbers");
  out->reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    const json& v = (*it)[i];
    if (v.is_number()) {
      out->push_back(v.get<double>());
    } else if (v.is_null() && allow_null) {
      out->push_back(std::nan(""));
    } else {
      return LineError(line, absl::StrCat(field, "[", i, "]"),
                       absl::StrCat("expected a number", allow_null ? " or null" : "",
                                    ", got ", v.dump()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string ToRolloutLine(const v1::Rollout& r) {
  json j;
  j["group"] = r.group_id();
  j["rollout_id"] = r.rollout_id();
  j["actor_id"] = r.actor_id();
  j["run_id"] = r.run_id();
  j["reward"] = r.verifier().reward();
  json waad = json::array(), fai = json::array();
  if (r.has_summary()) {
    const SummaryFields summary = DecodeSummary(r.summary());
    for (float x : summary.waad) waad.push_back(x);
    for (float x : summary.fai) fai.push_back(std::isnan(x) ? json(nullptr) : json(x));
  }
  j["waad"] = waad;
  j["fai"] = fai;
  j["entropy"] = std::vector<float>(r.entropy().begin(), r.entropy().end());
  j["logprobs"] = std::vector<float>(r.behaviour_logprobs().begin(), r.behaviour_logprobs().end());
  j["prompt_ids"] = std::vector<uint32_t>(r.prompt_token_ids().begin(), r.prompt_token_ids().end());
  j["response_ids"] =
      std::vector<uint32_t>(r.response_token_ids().begin(), r.response_token_ids().end());
  return j.dump();
}

absl::StatusOr<RolloutLine> ParseRolloutLine(absl::string_view text, int64_t line) {
  json obj = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (obj.is_discarded()) return LineError(line, "json", "not valid JSON");
  if (!obj.is_object()) return LineError(line, "json", "expected an object");
  RolloutLine r;
  r.line = line;
  auto group = obj.find("group");
  if (group == obj.end()) return LineError(line, "group", "missing");
  if (!group->is_number_integer() && !group->is_string()) {
    return LineError(line, "group", absl::StrCat("expected an integer or a string, got ",
                                                 group->dump()));
  }
  r.group = group->dump();
  auto reward = obj.find("reward");
  if (reward == obj.end()) return LineError(line, "reward", "missing");
  if (!reward->is_number()) {
    return LineError(line, "reward", absl::StrCat("expected a number, got ", reward->dump()));
  }
  r.reward = reward->get<double>();
  if (!std::isfinite(r.reward)) {
    return LineError(line, "reward", absl::StrCat(r.reward, " is not finite"));
  }
  if (auto s = ReadArray(obj, "waad", line, true, false, &r.waad); !s.ok()) return s;
  if (auto s = ReadArray(obj, "fai", line, true, true, &r.fai); !s.ok()) return s;
  if (auto s = ReadArray(obj, "entropy", line, true, false, &r.entropy); !s.ok()) return s;
  if (auto s = ReadArray(obj, "logprobs", line, false, false, &r.logprobs); !s.ok()) return s;
  if (r.waad.empty()) return LineError(line, "waad", "empty response");
  const size_t n = r.waad.size();
  auto check_len = [&](const char* field, const std::vector<double>& v) {
    return v.size() == n ? absl::OkStatus()
                         : LineError(line, field,
                                     absl::StrCat("has ", v.size(), " values, waad has ", n));
  };
  if (auto s = check_len("fai", r.fai); !s.ok()) return s;
  if (auto s = check_len("entropy", r.entropy); !s.ok()) return s;
  if (!r.logprobs.empty()) {
    if (auto s = check_len("logprobs", r.logprobs); !s.ok()) return s;
  }
  if (auto it = obj.find("rollout_id"); it != obj.end()) {
    if (!it->is_number_unsigned()) {
      return LineError(line, "rollout_id", absl::StrCat("expected an id, got ", it->dump()));
    }
    r.rollout_id = it->get<uint64_t>();
  }
  for (auto [field, out] : {std::pair{"actor_id", &r.actor_id}, std::pair{"run_id", &r.run_id}}) {
    auto it = obj.find(field);
    if (it == obj.end()) continue;
    if (!it->is_string()) {
      return LineError(line, field, absl::StrCat("expected a string, got ", it->dump()));
    }
    *out = it->get<std::string>();
  }
  for (auto [field, out] :
       {std::pair{"prompt_ids", &r.prompt_ids}, std::pair{"response_ids", &r.response_ids}}) {
    std::vector<double> values;
    if (auto s = ReadArray(obj, field, line, false, false, &values); !s.ok()) return s;
    for (size_t i = 0; i < values.size(); ++i) {
      if (values[i] < 0 || values[i] != std::floor(values[i]) || values[i] > 2147483647.0) {
        return LineError(line, absl::StrCat(field, "[", i, "]"),
                         absl::StrCat(values[i], " is not a token id"));
      }
      out->push_back(static_cast<int32_t>(values[i]));
    }
  }
  return r;
}

}  // namespace rhythm::common::rollout
