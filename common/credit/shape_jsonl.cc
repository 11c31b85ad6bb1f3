#include "common/credit/shape_jsonl.h"

#include <cmath>
#include <istream>
#include <map>
#include <ostream>

#include "ATen/ATen.h"
#include "absl/strings/str_cat.h"

namespace rhythm::common::credit {
namespace {

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
