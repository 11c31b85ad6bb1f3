#include "learner/rollout_dump.h"

#include <cmath>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/rollout/summary_codec.h"
#include "nlohmann/json.hpp"

namespace rhythm::learner {

absl::Status DumpBatch(const std::string& dir, const std::vector<Group>& batch, int64_t step) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string path = absl::StrFormat("%s/step-%08d.jsonl", dir, step);
  std::ofstream out(path);
  for (const Group& g : batch) {
    for (const v1::Rollout& r : g) {
      nlohmann::json j;
      j["group"] = r.group_id();
      j["rollout_id"] = r.rollout_id();
      j["actor_id"] = r.actor_id();
      j["run_id"] = r.run_id();
      j["reward"] = r.verifier().reward();
      nlohmann::json waad = nlohmann::json::array(), fai = nlohmann::json::array();
      if (r.has_summary()) {
        const common::rollout::SummaryFields summary = common::rollout::DecodeSummary(r.summary());
        for (float x : summary.waad) waad.push_back(x);
        for (float x : summary.fai) {
          fai.push_back(std::isnan(x) ? nlohmann::json(nullptr) : nlohmann::json(x));
        }
      }
      j["waad"] = waad;
      j["fai"] = fai;
      j["entropy"] = std::vector<float>(r.entropy().begin(), r.entropy().end());
      j["logprobs"] =
          std::vector<float>(r.behaviour_logprobs().begin(), r.behaviour_logprobs().end());
      j["prompt_ids"] =
          std::vector<uint32_t>(r.prompt_token_ids().begin(), r.prompt_token_ids().end());
      j["response_ids"] =
          std::vector<uint32_t>(r.response_token_ids().begin(), r.response_token_ids().end());
      out << j.dump() << "\n";
    }
  }
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("cannot write rollout dump ", path));
  return absl::OkStatus();
}

}  // namespace rhythm::learner
