#include "common/credit/shape_jsonl.h"

#include <cmath>
#include <istream>
#include <map>
#include <ostream>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace rhythm::common::credit {
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

void AppendArray(std::string* out, const float* values, int64_t n) {
  out->push_back('[');
  for (int64_t i = 0; i < n; ++i) {
    if (i > 0) out->push_back(',');
    absl::StrAppend(out, values[i]);
  }
  out->push_back(']');
}

void AppendIndices(std::string* out, const std::vector<int64_t>& idx) {
  out->push_back('[');
  for (size_t i = 0; i < idx.size(); ++i) {
    if (i > 0) out->push_back(',');
    absl::StrAppend(out, idx[i]);
  }
  out->push_back(']');
}

at::Tensor ToTensor(const std::vector<double>& v) {
  return at::from_blob(const_cast<double*>(v.data()), {static_cast<int64_t>(v.size())},
                       at::kDouble);
}

}  // namespace

absl::StatusOr<ShapeRecord> ParseShapeRecord(absl::string_view text, int64_t line) {
  json obj = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (obj.is_discarded()) return LineError(line, "json", "not valid JSON");
  if (!obj.is_object()) return LineError(line, "json", "expected an object");
  ShapeRecord r;
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
  return r;
}

ShapeStats ShapeStream(std::istream& in, std::ostream& out, std::ostream& errors,
                       const ShapeOptions& options) {
  ShapeStats stats;
  std::vector<ShapeRecord> records;
  std::string text;
  int64_t line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    ++stats.lines;
    absl::StatusOr<ShapeRecord> r = ParseShapeRecord(text, line);
    if (!r.ok()) {
      ++stats.malformed;
      errors << r.status().message() << "\n";
      continue;
    }
    records.push_back(*std::move(r));
  }

  // Group advantages, one group at a time (groups may differ in size).
  std::map<std::string, std::vector<size_t>> groups;
  for (size_t i = 0; i < records.size(); ++i) groups[records[i].group].push_back(i);
  std::vector<double> advantage(records.size(), 0.0);
  std::vector<bool> zero_variance(records.size(), false);
  for (const auto& [key, members] : groups) {
    std::vector<double> rewards;
    for (size_t i : members) rewards.push_back(records[i].reward);
    absl::StatusOr<GroupAdvantages> adv = ComputeGroupAdvantages(
        ToTensor(rewards).unsqueeze(0), options.advantage);
    ++stats.groups;
    if (!adv.ok()) continue;  // cannot happen: rewards were checked finite while parsing
    const bool zv = adv->zero_variance[0].item<bool>();
    stats.zero_variance_groups += zv ? 1 : 0;
    const at::Tensor a = adv->advantages[0].to(at::kDouble).contiguous();
    for (size_t j = 0; j < members.size(); ++j) {
      advantage[members[j]] = a.data_ptr<double>()[j];
      zero_variance[members[j]] = zv;
    }
  }

  std::string buffer;
  for (size_t i = 0; i < records.size(); ++i) {
    const ShapeRecord& r = records[i];
    TokenCreditOptions credit_options = options.credit;
    credit_options.seed = MixSeed(options.credit.seed, static_cast<uint64_t>(r.line));
    absl::StatusOr<TokenCredit> credit = ComputeTokenCredit(
        {ToTensor(r.waad), ToTensor(r.fai), ToTensor(r.entropy)}, credit_options);
    if (!credit.ok()) {
      ++stats.malformed;
      errors << "line " << r.line << ": " << credit.status().message() << "\n";
      continue;
    }
    const at::Tensor shaped =
        ShapeAdvantages(credit->gamma.unsqueeze(0),
                        at::full({1}, advantage[i], at::kDouble), options.shape_negative)[0]
            .contiguous();
    const int64_t n = static_cast<int64_t>(r.waad.size());
    buffer.clear();
    absl::StrAppend(&buffer, "{\"line\":", r.line, ",\"group\":", r.group,
                    ",\"reward\":", r.reward, ",\"advantage\":", advantage[i],
                    ",\"zero_variance_group\":", zero_variance[i] ? "true" : "false",
                    ",\"gamma\":");
    AppendArray(&buffer, credit->gamma.data_ptr<float>(), n);
    buffer.append(",\"shaped\":");
    AppendArray(&buffer, shaped.data_ptr<float>(), n);
    buffer.append(",\"preplan\":");
    AppendIndices(&buffer, credit->preplan);
    buffer.append(",\"anchor\":");
    AppendIndices(&buffer, credit->anchor);
    buffer.append(",\"dominated\":");
    AppendIndices(&buffer, credit->dominated);
    buffer.append(",\"introductory\":");
    AppendIndices(&buffer, credit->introductory);
    buffer.append("}\n");
    out << buffer;
    ++stats.responses;
  }
  return stats;
}

}  // namespace rhythm::common::credit
